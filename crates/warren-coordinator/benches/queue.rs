//! The queue benchmark, in one run, printed as Markdown:
//!
//! 1. the coordinator's dispatch rate with the sandbox left out (the benchmark-only instant
//!    executor), durable in SQLite (fsync on every group commit, and process-durable);
//! 2. as root: submit -> result latency of `/bin/true` through the HTTP API and through
//!    `warren run`, against `warren sandbox run -- /bin/true` and the sandbox library alone;
//! 3. as root: sandboxed trivial tasks per second end to end with 2 and 16 concurrent
//!    submitters, against the sandbox library's own rate with as many threads.
//!
//! `sudo WARREN_BIN=target/release/warren cargo bench -p warren-coordinator --bench queue`
//! (`BENCH_NO_FSYNC=1` runs the end-to-end rows without fsync; `BENCH_TASKS` sets the dispatch task count, default 20000; `BENCH_ONLY_DISPATCH=1` stops
//! after the dispatch rows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_coordinator::{Config, Coordinator, Durability};
use warren_core::task::TaskSpec;
use warren_sandbox::{CollectOutput, RunSpec, Sandbox, SandboxConfig, Spawner};
use warren_worker::{Executor, InstantExecutorForBenchmarks, SandboxExecutor, Worker};

fn config(dir: &std::path::Path, durability: Durability) -> Config {
    let mut config = Config::new(dir.to_path_buf());
    config.http = "127.0.0.1:0".parse().unwrap();
    config.queue = "127.0.0.1:0".parse().unwrap();
    config.durability = durability;
    config
}

fn start_worker(
    rt: &tokio::runtime::Runtime,
    queue: SocketAddr,
    capacity: u32,
    executor: Arc<dyn Executor>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config = warren_worker::Config::new(queue.to_string(), dir.path().to_path_buf());
    config.capacity = capacity;
    config.idle = true;
    let worker = Worker::new(config, executor).unwrap();
    rt.spawn(worker.run());
    dir
}

/// p50 and p99 of `POST /v1/tasks?wait=true` through a worker whose executor completes at once:
/// the queue's own share of a task's latency (HTTP, the insert's commit, dispatch, the worker's
/// round trip and the end), without a sandbox.
fn queue_latency(
    rt: &tokio::runtime::Runtime,
    durability: Durability,
    runs: usize,
) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = rt
        .block_on(Coordinator::start(config(dir.path(), durability)))
        .unwrap();
    let _worker = start_worker(
        rt,
        coordinator.queue_addr,
        4,
        Arc::new(InstantExecutorForBenchmarks),
    );
    let mut client = Http::connect(coordinator.http_addr);
    client.run_true(); // waits for the worker
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let t = Instant::now();
        client.run_true();
        if i >= runs / 10 {
            samples.push(t.elapsed());
        }
    }
    coordinator.stop();
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

fn dispatch(rt: &tokio::runtime::Runtime, durability: Durability, tasks: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = rt
        .block_on(Coordinator::start(config(dir.path(), durability)))
        .unwrap();
    let service = Arc::clone(&coordinator.service);
    let spec = TaskSpec {
        command: vec!["/bin/true".into()],
        ..TaskSpec::default()
    };
    // Accept: many concurrent submitters, each waiting for its task to be durable.
    let started = Instant::now();
    let ids: Vec<u64> = rt.block_on(async {
        let per = tasks / 256;
        let mut handles = Vec::new();
        for _ in 0..256 {
            let (service, spec) = (Arc::clone(&service), spec.clone());
            handles.push(tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per);
                for _ in 0..per {
                    ids.push(
                        service
                            .submit(spec.clone(), "bench".into())
                            .await
                            .unwrap()
                            .id,
                    );
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    let accept_rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    // Dispatch: launch, complete and record every one, workers connected over TCP. Waiters
    // subscribe first, so the measurement includes no store reads.
    let waits: Vec<_> = ids
        .iter()
        .map(|&id| {
            let service = Arc::clone(&service);
            rt.spawn(async move { service.wait(id, Duration::from_secs(600)).await.unwrap() })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let _workers: Vec<_> = (0..4)
        .map(|_| {
            start_worker(
                rt,
                coordinator.queue_addr,
                256,
                Arc::new(InstantExecutorForBenchmarks),
            )
        })
        .collect();
    rt.block_on(async {
        for w in waits {
            assert_eq!(w.await.unwrap().state, warren_core::task::TaskState::Done);
        }
    });
    let dispatch_rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    coordinator.stop();
    (accept_rate, dispatch_rate)
}

/// A keep-alive HTTP/1.1 client: one connection, requests in sequence.
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Http {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn post(&mut self, path: &str, body: &str) -> (u16, String) {
        write!(self.writer, "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (code, String::from_utf8(body).unwrap())
    }

    fn run_true(&mut self) {
        let (code, body) = self.post("/v1/tasks?wait=true", r#"{"command":["/bin/true"]}"#);
        assert!(
            code == 200 && body.contains(r#""status":"success""#),
            "{code} {body}"
        );
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// p50 and p99 of `a` and of `b`, measured alternately (a, b, a, b, ...) so both see the same
/// machine load.
fn paired_latency(
    runs: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> [(Duration, Duration); 2] {
    for _ in 0..runs / 10 {
        a(); // warm up
        b();
    }
    let (mut sa, mut sb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let t = Instant::now();
        a();
        sa.push(t.elapsed());
        let t = Instant::now();
        b();
        sb.push(t.elapsed());
    }
    [
        (percentile(&mut sa, 0.5), percentile(&mut sa, 0.99)),
        (percentile(&mut sb, 0.5), percentile(&mut sb, 0.99)),
    ]
}

fn diff(a: Duration, b: Duration) -> String {
    let d = a.as_secs_f64() - b.as_secs_f64();
    format!(
        "{}{:.2} ms",
        if d < 0.0 { "-" } else { "+" },
        d.abs() * 1000.0
    )
}

fn rate<'a>(
    threads: usize,
    total: usize,
    f: impl Fn(usize) -> Box<dyn FnMut() + Send + 'a> + Sync,
) -> f64 {
    let per = total / threads;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let mut run = f(t);
            s.spawn(move || (0..per).for_each(|_| run()));
        }
    });
    (per * threads) as f64 / started.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn command(bin: &PathBuf, args: &[&str]) {
    let status = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{bin:?} {args:?}: {status}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks
    }
    // The sandboxes clone their runs from spawner processes forked now, while this process is
    // small and has one thread, as `warren up` and `warren worker` do: one for the worker's
    // sandbox, one for the library baseline.
    // BENCH_NO_SPAWNER=1 clones from this process instead, for comparison.
    let spawner = || {
        std::env::var_os("BENCH_NO_SPAWNER")
            .is_none()
            .then(|| Spawner::start().unwrap())
    };
    let (worker_spawner, baseline_spawner) = (spawner(), spawner());
    let tasks: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("## Queue, dispatch and end to end\n");
    println!("| measure | Warren | baseline | ratio |\n|---|---|---|---|");
    for (name, durability) in [
        ("fsync per group commit", Durability::Full),
        ("process-durable (`--no-fsync`)", Durability::Process),
    ] {
        let (accept, dispatch) = dispatch(&rt, durability, tasks);
        println!("| dispatch rate, {tasks} tasks, instant executor, SQLite {name} | {dispatch:.0} tasks/s | target 20000 tasks/s | {:.2} |", dispatch / 20_000.0);
        println!("| accept rate (POST path without HTTP), 256 concurrent submitters, SQLite {name} | {accept:.0} tasks/s | - | - |");
        let (p50, p99) = queue_latency(&rt, durability, 1000);
        println!("| submit -> result p50 / p99, instant executor (the queue's own latency), SQLite {name} | {} / {} | - | - |", ms(p50), ms(p99));
    }
    if std::env::var_os("BENCH_ONLY_DISPATCH").is_some() {
        return;
    }
    if !is_root() {
        println!("\n(end-to-end rows skipped: the sandbox needs root)");
        return;
    }
    // End to end with fsync on every commit, unless BENCH_NO_FSYNC is set.
    let e2e_durability = if std::env::var_os("BENCH_NO_FSYNC").is_some() {
        println!("| (end-to-end rows: coordinator with `--no-fsync`) | | | |");
        Durability::Process
    } else {
        Durability::Full
    };
    let sandbox = Sandbox::new(SandboxConfig {
        spawner: baseline_spawner,
        ..SandboxConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = rt
        .block_on(Coordinator::start(config(dir.path(), e2e_durability)))
        .unwrap();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let worker_sandbox = Sandbox::new(SandboxConfig {
        spawner: worker_spawner,
        ..SandboxConfig::default()
    })
    .unwrap();
    let executor = SandboxExecutor::new(worker_sandbox, None, None);
    let _worker = start_worker(
        &rt,
        coordinator.queue_addr,
        cpus.max(16),
        Arc::new(executor),
    );
    let http = coordinator.http_addr;
    // Wait for the worker.
    let mut client = Http::connect(http);
    client.run_true();
    let runs = 300;
    let spec = RunSpec::command(["/bin/true"]);
    let [(api50, api99), (bare50, bare99)] = paired_latency(
        runs,
        || client.run_true(),
        || {
            let r = sandbox.run(&spec, &mut CollectOutput, None).unwrap();
            assert_eq!(r.status, warren_core::result::Status::Success, "{r:?}");
        },
    );
    let row = |what: &str, w: Duration, b: Duration| {
        println!("| {what} | {} | {} | {} |", ms(w), ms(b), diff(w, b));
    };
    row(
        "submit -> result p50, `/bin/true`: HTTP API `POST ?wait=true` vs sandbox library",
        api50,
        bare50,
    );
    row("submit -> result p99, same", api99, bare99);
    match std::env::var_os("WARREN_BIN")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        Some(bin) => {
            let url = format!("http://{http}");
            let [(run50, run99), (sb50, sb99)] = paired_latency(
                100,
                || command(&bin, &["run", "--server", &url, "--", "/bin/true"]),
                || command(&bin, &["sandbox", "run", "--", "/bin/true"]),
            );
            row("submit -> result p50: `warren run -- /bin/true` vs `warren sandbox run -- /bin/true`", run50, sb50);
            row("submit -> result p99, same", run99, sb99);
        }
        None => println!("| `warren run` rows | skipped: set WARREN_BIN to a built `warren` | | |"),
    }
    for threads in [2usize, 16] {
        let total = 1000;
        let e2e = rate(threads, total, |_| {
            let mut c = Http::connect(http);
            Box::new(move || c.run_true())
        });
        let sandbox = &sandbox;
        let spec = &spec;
        let own = rate(threads, total, |_| {
            Box::new(move || {
                sandbox.run(spec, &mut CollectOutput, None).unwrap();
            })
        });
        println!("| sandboxed `/bin/true` per second end to end, {threads} submitters vs sandbox library with {threads} threads | {e2e:.0}/s | {own:.0}/s | {:.0}% |", 100.0 * e2e / own);
    }
    coordinator.stop();
}
