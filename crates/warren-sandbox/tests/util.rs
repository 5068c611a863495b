//! Helpers for the sandbox's integration tests.

use std::path::Path;
use std::time::Duration;

use warren_sandbox::{CollectOutput, RunResult, RunSpec, Sandbox, SandboxConfig, Spawner, Stdin};

/// A sandbox for one test; when dropped, it checks that nothing of its runs is left in any
/// cgroup hierarchy (its warm pool, if any, is shut down first).
pub struct TestSandbox {
    inner: Option<Sandbox>,
    parent: String,
}

impl std::ops::Deref for TestSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        match &self.inner {
            Some(s) => s,
            None => unreachable!("the sandbox is only taken in drop"),
        }
    }
}

impl TestSandbox {
    /// The parent cgroup of its runs.
    pub fn parent(&self) -> &str {
        &self.parent
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.inner = None;
        if !std::thread::panicking() {
            assert_no_leftovers(&self.parent);
        }
    }
}

/// A sandbox with a warm pool, or `None` with a message saying what is missing (these tests
/// need root). Each test gets its own parent cgroup, named after the test, so leftovers can be
/// checked while other tests run in the same process.
pub fn sandbox() -> Option<TestSandbox> {
    sandbox_with(SandboxConfig::default().warm_runs)
}

/// A sandbox that prepares every run when it is asked for (no warm pool).
pub fn cold_sandbox() -> Option<TestSandbox> {
    sandbox_with(0)
}

/// A sandbox without a warm pool whose state (mount points, uid leases) is under `state_dir`,
/// so that what a test leaves there on purpose is not reclaimed by another runner first.
pub fn cold_sandbox_in(state_dir: &Path) -> Option<TestSandbox> {
    sandbox_config(0, Some(state_dir), None)
}

fn sandbox_with(warm_runs: usize) -> Option<TestSandbox> {
    sandbox_config(warm_runs, None, None)
}

/// A sandbox without a warm pool that returns from a run without reaping its exiting init, as
/// `warren sandbox run` does.
pub fn sandbox_leaving_inits() -> Option<TestSandbox> {
    sandbox_configured(0, None, None, true)
}

/// A sandbox whose runs are cloned by a spawner process of its own, with or without a warm
/// pool.
pub fn sandbox_with_spawner(warm: bool) -> Option<TestSandbox> {
    let spawner = match Spawner::start() {
        Ok(spawner) => spawner,
        Err(e) => panic!("forking the spawner: {e}"),
    };
    let warm_runs = if warm {
        SandboxConfig::default().warm_runs
    } else {
        0
    };
    sandbox_config(warm_runs, None, Some(spawner))
}

fn sandbox_config(
    warm_runs: usize,
    state_dir: Option<&Path>,
    spawner: Option<Spawner>,
) -> Option<TestSandbox> {
    sandbox_configured(warm_runs, state_dir, spawner, false)
}

fn sandbox_configured(
    warm_runs: usize,
    state_dir: Option<&Path>,
    spawner: Option<Spawner>,
    leave_exiting_inits: bool,
) -> Option<TestSandbox> {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let parent = format!("warren-test-{test}-{warm_runs}");
    let defaults = SandboxConfig::default();
    let config = SandboxConfig {
        cgroup_parent: parent.clone(),
        warm_runs,
        state_dir: state_dir.map_or(defaults.state_dir.clone(), Path::to_path_buf),
        spawner,
        leave_exiting_inits,
        ..defaults
    };
    match Sandbox::new(config) {
        Ok(s) => Some(TestSandbox {
            inner: Some(s),
            parent,
        }),
        Err(e) => {
            eprintln!("SKIPPED: the sandbox is not usable here: {e}");
            None
        }
    }
}

/// Runs `sh -c script` with the given limits.
pub fn sh(sandbox: &Sandbox, script: &str, limits: warren_core::limits::Limits) -> RunResult {
    let mut spec = RunSpec::command(["sh", "-c", script]);
    spec.limits = limits;
    run(sandbox, &spec)
}

/// Runs a spec, failing the test on a spec error.
pub fn run(sandbox: &Sandbox, spec: &RunSpec) -> RunResult {
    let result = sandbox.run(spec, &mut CollectOutput, None);
    match result {
        Ok(r) => r,
        Err(e) => panic!("spec rejected: {e}"),
    }
}

/// A spec with bytes on stdin.
pub fn with_stdin(script: &str, input: &[u8]) -> RunSpec {
    let mut spec = RunSpec::command(["sh", "-c", script]);
    spec.stdin = Stdin::Bytes(input.to_vec());
    spec
}

/// Text of stdout.
pub fn out(result: &RunResult) -> String {
    String::from_utf8_lossy(&result.stdout).into_owned()
}

/// Milliseconds.
pub fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

/// The parent group `parent` wherever it is: in each v1 hierarchy under `/sys/fs/cgroup`, and
/// in a cgroup2 tree mounted there itself.
pub fn parent_groups(parent: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join(parent))
        .chain([root.join(parent)])
        .filter(|dir| dir.is_dir())
        .collect()
}

/// No run's cgroup is left under `parent`, in any hierarchy.
pub fn assert_no_leftovers(parent: &str) {
    for dir in parent_groups(parent) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with("run-"),
                    "cgroup {} left behind",
                    entry.path().display()
                );
            }
        }
    }
}

/// The pids of every process on the host now.
pub fn host_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Processes on the host whose command line contains `marker`.
pub fn host_processes_with(marker: &str) -> Vec<u32> {
    host_pids()
        .into_iter()
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// How much slower than real hardware this machine is: `WARREN_TEST_SLOWDOWN` (default 1), set
/// when the suite runs under software emulation. Only the precision bounds of timing tests
/// are stretched by it; what they assert stays the same.
pub fn slowdown() -> u64 {
    std::env::var("WARREN_TEST_SLOWDOWN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `base` plus a tolerance stretched by [`slowdown`].
pub fn within(base: u64, tolerance: u64) -> std::ops::RangeInclusive<u64> {
    base..=base + tolerance * slowdown()
}
