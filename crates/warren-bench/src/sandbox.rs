//! The sandbox's start-up cost against the kernel's floor and other tools, and its run rate.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warren_sandbox::{CollectOutput, RunSpec, Sandbox, SandboxConfig};

use crate::stats::{latency_table, Samples};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs of each variant.
    pub runs: usize,
    /// The `warren` binary, for the CLI variant.
    pub warren: PathBuf,
    /// Runs for each throughput figure.
    pub rate_runs: usize,
    /// Runs of each external variant one at a time, each after `pause` idle: the latency of
    /// a command typed now and then, which back-to-back runs hide (kernel work deferred to
    /// the next RCU grace period is still pending between them, for one).
    pub paused_runs: usize,
    /// The idle time before each of those runs.
    pub pause: Duration,
}

/// One external command variant: name, program, arguments.
struct External {
    name: String,
    argv: Vec<String>,
    /// Warren's own variant or the floor: the benchmark stops when it cannot run. A
    /// comparison tool that cannot run is left out instead.
    required: bool,
}

fn externals(warren: &std::path::Path) -> Vec<External> {
    let mut list = vec![
        External {
            name: "plain /bin/true".into(),
            argv: vec!["/bin/true".into()],
            required: true,
        },
        External {
            name: "unshare --fork --pid --net --mount --ipc --uts /bin/true".into(),
            argv: [
                "unshare",
                "--fork",
                "--pid",
                "--net",
                "--mount",
                "--ipc",
                "--uts",
                "/bin/true",
            ]
            .map(String::from)
            .to_vec(),
            required: false,
        },
    ];
    if which("bwrap") {
        list.push(External {
            name: "bwrap --ro-bind / / --unshare-all --die-with-parent /bin/true".into(),
            argv: [
                "bwrap",
                "--ro-bind",
                "/",
                "/",
                "--unshare-all",
                "--die-with-parent",
                "/bin/true",
            ]
            .map(String::from)
            .to_vec(),
            required: false,
        });
    }
    list.push(External {
        name: "warren sandbox run -- /bin/true".into(),
        argv: vec![
            warren.display().to_string(),
            "sandbox".into(),
            "run".into(),
            "--".into(),
            "/bin/true".into(),
        ],
        required: true,
    });
    list
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn time_external(argv: &[String]) -> Result<Duration, String> {
    let started = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(format!("{} exited with {status}", argv.join(" ")));
    }
    Ok(elapsed)
}

fn library_spec() -> RunSpec {
    let mut spec = RunSpec::command(["/bin/true"]);
    spec.limits.memory = Some(64 << 20);
    spec
}

fn time_library(sandbox: &Sandbox, spec: &RunSpec) -> Result<Duration, String> {
    let started = Instant::now();
    let result = sandbox
        .run(spec, &mut CollectOutput, None)
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if result.status != warren_core::result::Status::Success {
        return Err(format!(
            "library run ended {}: {:?}",
            result.status, result.message
        ));
    }
    Ok(elapsed)
}

/// Measures every variant, interleaved run by run so that noise hits them alike, and the
/// library's rate sequentially and with 2 and 8 runs in parallel. Returns a Markdown report.
pub fn run(options: &Options) -> Result<String, String> {
    let sandbox = Sandbox::new(SandboxConfig::default()).map_err(|e| e.to_string())?;
    let cold = Sandbox::new(SandboxConfig {
        warm_runs: 0,
        ..SandboxConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let spec = library_spec();
    // A comparison tool that cannot run here (bwrap without permission to make namespaces, as
    // in some VMs) is left out and said so.
    let mut left_out = Vec::new();
    let externals: Vec<External> = externals(&options.warren)
        .into_iter()
        .filter_map(|e| match time_external(&e.argv) {
            Ok(_) => Some(Ok(e)),
            Err(why) if e.required => Some(Err(why)),
            Err(why) => {
                left_out.push(format!("{}: left out, it fails here ({why})", e.name));
                None
            }
        })
        .collect::<Result<_, _>>()?;
    let warm_name = "library, warm pool: /bin/true, all isolation, 64M memory limit";
    let cold_name = "library, prepared on demand: same";
    let mut samples = samples_of(&externals);
    samples.push(Samples::new(cold_name));
    samples.push(Samples::new(warm_name));
    sandbox.wait_until_warm(Duration::from_secs(5));
    // Warm-up: page cache, cgroup parents, lazy kernel structures.
    for _ in 0..20 {
        time_library(&sandbox, &spec)?;
        time_library(&cold, &spec)?;
        for e in &externals {
            time_external(&e.argv)?;
        }
    }
    let n = samples.len();
    for round in 0..options.runs {
        // Each round starts at the next variant: a sandboxed run leaves kernel work behind (its
        // network namespace is torn down by a kernel worker afterwards), which lands on
        // whatever runs next; rotating, each variant follows each other one equally often.
        for k in 0..externals.len() {
            let i = (round + k) % externals.len();
            samples[i]
                .durations
                .push(time_external(&externals[i].argv)?);
        }
        samples[n - 2].durations.push(time_library(&cold, &spec)?);
        samples[n - 1]
            .durations
            .push(time_library(&sandbox, &spec)?);
        // The pool refills in the background; let it finish so that its work is not measured
        // as part of the next variant.
        sandbox.wait_until_warm(Duration::from_secs(5));
    }
    let mut report = String::new();
    report.push_str(&format!(
        "Sandbox start-up, {} runs each, interleaved, each round starting at the next command \
         (layout: {}):\n\n",
        options.runs,
        sandbox.layout().name()
    ));
    report.push_str(&latency_table(&samples, "plain /bin/true"));
    for note in &left_out {
        report.push_str(&format!("\n{note}\n"));
    }
    if let Some(ratio) = cli_ratio(&samples, "bwrap") {
        report.push_str(&format!("\nCLI vs bwrap (medians): {ratio:.2}x\n"));
    }
    if let Some(ratio) = cli_ratio(&samples, "unshare") {
        report.push_str(&format!("CLI vs unshare (medians): {ratio:.2}x\n"));
    }
    if options.paused_runs > 0 {
        report.push_str(&paused(&externals, options)?);
    }
    report.push_str(&format!(
        "\nSandboxed runs per second ({} runs each):\n\n| parallel | runs/s |\n|---:|---:|\n",
        options.rate_runs
    ));
    for parallel in [1, 2, 8] {
        let rate = rate(&sandbox, &spec, parallel, options.rate_runs)?;
        report.push_str(&format!("| {parallel} | {rate:.0} |\n"));
    }
    Ok(report)
}

/// One empty set of samples per external variant.
fn samples_of(externals: &[External]) -> Vec<Samples> {
    externals.iter().map(|e| Samples::new(&e.name)).collect()
}

/// The CLI's median over that of the variant whose name starts with `baseline`, when both ran.
fn cli_ratio(samples: &[Samples], baseline: &str) -> Option<f64> {
    let median = |prefix: &str| {
        samples
            .iter()
            .find(|s| s.name.starts_with(prefix))
            .map(|s| s.median().as_secs_f64())
    };
    Some(median("warren sandbox run")? / median(baseline)?)
}

/// The external variants one run at a time, each after an idle pause, interleaved.
fn paused(externals: &[External], options: &Options) -> Result<String, String> {
    let mut samples = samples_of(externals);
    for _ in 0..options.paused_runs {
        for (e, s) in externals.iter().zip(&mut samples) {
            std::thread::sleep(options.pause);
            s.durations.push(time_external(&e.argv)?);
        }
    }
    let mut report = format!(
        "\nOne run at a time, each after {} ms idle, {} runs each, interleaved:\n\n",
        options.pause.as_millis(),
        options.paused_runs
    );
    report.push_str(&latency_table(&samples, "plain /bin/true"));
    if let Some(ratio) = cli_ratio(&samples, "bwrap") {
        report.push_str(&format!(
            "\nCLI vs bwrap after a pause (medians): {ratio:.2}x\n"
        ));
    }
    Ok(report)
}

fn rate(sandbox: &Sandbox, spec: &RunSpec, parallel: usize, runs: usize) -> Result<f64, String> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let errors: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallel)
            .map(|_| {
                scope.spawn(|| {
                    while next.fetch_add(1, Ordering::Relaxed) < runs {
                        time_library(sandbox, spec)?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok().and_then(Result::err))
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(runs as f64 / started.elapsed().as_secs_f64())
}
