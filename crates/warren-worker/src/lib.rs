//! Warren's worker: dials a coordinator (re-dialling with exponential back-off from 32 ms doubling
//! to 5 minutes, forever), registers its stable id, capacity, resources, capabilities and
//! environments, runs what it is launched through an [`Executor`] (the sandbox), streams output
//! and statistics back, and keeps each result until the coordinator acknowledges it, so a
//! coordinator restart loses nothing.
//!
//! ```no_run
//! # async fn example() -> Result<(), warren_worker::WorkerError> {
//! use std::sync::Arc;
//! use warren_worker::{Config, InstantExecutorForBenchmarks, Worker};
//! let config = Config::new("127.0.0.1:9000".into(), "/var/lib/warren-worker".into());
//! let worker = Worker::new(config, Arc::new(InstantExecutorForBenchmarks))?;
//! worker.run().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use warren_core::result::RunResult;
use warren_core::stats::StatSample;
use warren_core::task::{OutputStream, TaskSpec};
use warren_proto::{
    hook, spawn_writer, Done, Message, MessageReader, MessageSender, OutputData, Register,
};
use warren_sandbox::{AbortHandle, RunEvents, Stream};

mod control;
pub mod env_build;
pub mod environments;
mod executor;
mod hooks;

pub use control::{run_control, ControlTask, MAX_PROCESSES};
pub use executor::{
    resolve_named, run_spec, Executor, InstantExecutorForBenchmarks, Named, SandboxExecutor,
};
pub use hooks::{run_hook, Hooks, HOOK_OUTPUT_LIMIT};

/// First re-dial delay (Pythia's).
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(32);
/// Longest re-dial delay (Pythia's).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Exponential back-off: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the initial delay (after a successful session).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator's queue address (`host:port`).
    pub connect: String,
    /// Tasks run at once.
    pub capacity: u32,
    /// Holds the stable worker id.
    pub state_dir: PathBuf,
    /// Capabilities offered, besides the detected ones (`arch`, `os`), which these override.
    pub caps: BTreeMap<String, String>,
    /// Directory of environments (subdirectories and `NAME.sfs` images; see [`environments`]).
    pub environments_dir: Option<PathBuf>,
    /// Directory of Pythia task filesystems (each subdirectory is one, bound at `/task`).
    pub taskfs_dir: Option<PathBuf>,
    /// Join token, needed when the coordinator's queue port is beyond loopback.
    pub token: Option<String>,
    /// Keep-alive interval (a coordinator silent for three is dropped and re-dialled).
    pub keepalive: Duration,
    /// First re-dial delay.
    pub backoff_initial: Duration,
    /// Longest re-dial delay.
    pub backoff_max: Duration,
    /// Memory offered, bytes.
    pub memory_bytes: u64,
    /// CPU offered, milli-CPUs.
    pub milli_cpus: u64,
    /// When new to the coordinator, enter service at once (through PREPARE) instead of waiting
    /// in MAINTENANCE for an operator.
    pub idle: bool,
    /// The operator's hooks.
    pub hooks: Hooks,
}

impl Config {
    /// Defaults: capacity = CPUs, resources detected, Pythia's keep-alive and back-off.
    pub fn new(connect: String, state_dir: PathBuf) -> Config {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        Config {
            connect,
            capacity: cpus,
            state_dir,
            caps: BTreeMap::new(),
            environments_dir: None,
            taskfs_dir: None,
            token: None,
            keepalive: warren_proto::DEFAULT_KEEPALIVE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            memory_bytes: host_memory_bytes().unwrap_or(0),
            milli_cpus: u64::from(cpus) * 1000,
            idle: false,
            hooks: Hooks::default(),
        }
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The state directory or the id file failed.
    #[error("{path}: {source}")]
    State {
        /// The path.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// Capabilities every worker reports about its host.
pub fn detected_caps() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
        ("os".to_string(), std::env::consts::OS.to_string()),
    ])
}

/// Total memory from `/proc/meminfo`.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The worker's stable id: read from `state_dir/worker-id`, created there on first start as
/// `<hostname>-<8 random hex digits>`.
pub fn stable_id(state_dir: &Path) -> Result<String, WorkerError> {
    let path = state_dir.join("worker-id");
    let err = |source| WorkerError::State {
        path: path.display().to_string(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let mut random = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(err)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let id = format!(
        "{}-{suffix}",
        if host.is_empty() { "worker" } else { &host }
    );
    let tmp = state_dir.join("worker-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(id)
}

/// How a task was launched, so its result goes back in the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Warren,
    Pythia,
}

#[derive(Default)]
struct Shared {
    /// The current connection's sender, while connected.
    tx: Option<MessageSender>,
    running: HashMap<String, AbortHandle>,
    /// Results not yet acknowledged, in the form to send them.
    unacked: BTreeMap<String, Message>,
    /// Prepared and not sent to maintenance or failed since: health checks run while idle.
    in_service: bool,
    /// Runs in a row that the sandbox itself failed.
    crashes: CrashStreak,
    /// Set by [`Stopper::stop`]: nothing new starts, and aborted runs report nothing.
    stopping: bool,
}

/// Runs in a row the sandbox itself failed (`crash`) before the worker reports itself failed:
/// one crash can be the task's doing, several in a row are the machine's.
pub const CRASHES_BEFORE_FAILURE: u32 = 3;

/// Counts runs in a row that ended in `crash`, and says when to report the worker failed.
#[derive(Debug, Default)]
struct CrashStreak {
    in_a_row: u32,
}

impl CrashStreak {
    /// Records one run's end; gives the failure reason when this crash completes a streak.
    fn record(&mut self, result: &RunResult) -> Option<String> {
        if result.status != warren_core::result::Status::Crash {
            self.in_a_row = 0;
            return None;
        }
        self.in_a_row += 1;
        if self.in_a_row < CRASHES_BEFORE_FAILURE {
            return None;
        }
        self.in_a_row = 0;
        Some(format!(
            "the sandbox failed {CRASHES_BEFORE_FAILURE} runs in a row; the last: {}",
            result.message.as_deref().unwrap_or("no reason given")
        ))
    }
}

/// A worker.
pub struct Worker {
    id: String,
    config: Config,
    executor: Arc<dyn Executor>,
    shared: Arc<Mutex<Shared>>,
    /// Woken whenever a run ends.
    ended: Arc<tokio::sync::Notify>,
}

/// Stops a worker cleanly, from outside the future of [`Worker::run`]: see [`Stopper::stop`].
#[derive(Clone)]
pub struct Stopper {
    executor: Arc<dyn Executor>,
    shared: Arc<Mutex<Shared>>,
    ended: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").finish_non_exhaustive()
    }
}

impl Stopper {
    /// Starts nothing more, aborts every running task, waits up to `grace` for their runs to
    /// end (their results are not reported: the coordinator gives a lost worker's tasks to
    /// another or fails them, as their policy says), then shuts the executor down (the
    /// sandbox unmounts every shared image). Returns how many runs had not ended by then.
    pub async fn stop(&self, grace: Duration) -> usize {
        {
            let mut shared = lock(&self.shared);
            shared.stopping = true;
            for abort in shared.running.values() {
                abort.abort();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let left = loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so a run ending in between still wakes this.
            ended.as_mut().enable();
            let running = lock(&self.shared).running.len();
            if running == 0 {
                break 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break lock(&self.shared).running.len();
            }
        };
        if left > 0 {
            tracing::warn!("{left} run(s) had not ended {grace:?} after their abort");
        }
        self.executor.shutdown();
        left
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

struct SessionGuard {
    shared: Arc<Mutex<Shared>>,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.shared).tx = None;
        self.writer.abort();
    }
}

/// Forwards a run's live events to whatever connection is current.
struct Forward {
    id: String,
    shared: Arc<Mutex<Shared>>,
}

impl Forward {
    fn send(&self, message: Message) {
        if let Some(tx) = &lock(&self.shared).tx {
            tx.send(message);
        }
    }
}

impl RunEvents for Forward {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        let stream = match stream {
            Stream::Stdout => OutputStream::Stdout,
            Stream::Stderr => OutputStream::Stderr,
        };
        self.send(Message::Output(OutputData {
            id: self.id.clone(),
            stream,
            data: data.to_vec(),
        }));
    }

    fn stats(&mut self, sample: &StatSample) {
        self.send(Message::Stats {
            id: self.id.clone(),
            sample: *sample,
        });
    }
}

impl Worker {
    /// A worker with its stable id loaded (or created) from `config.state_dir`.
    pub fn new(config: Config, executor: Arc<dyn Executor>) -> Result<Worker, WorkerError> {
        let id = stable_id(&config.state_dir)?;
        Ok(Worker {
            id,
            config,
            executor,
            shared: Arc::default(),
            ended: Arc::default(),
        })
    }

    /// What stops this worker cleanly once its [`Worker::run`] future is dropped (or while it
    /// runs).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            executor: Arc::clone(&self.executor),
            shared: Arc::clone(&self.shared),
            ended: Arc::clone(&self.ended),
        }
    }

    /// Its stable id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Dials, serves, and re-dials forever.
    pub async fn run(self) {
        let health = self.config.hooks.health_check.clone().map(|command| {
            tokio::spawn(health_checks(
                Arc::clone(&self.shared),
                self.id.clone(),
                command,
                self.config.hooks.health_interval,
                self.config.hooks.timeout_of(hook::HEALTH_CHECK),
            ))
        });
        // The health checks end with the worker.
        let _health = health.map(AbortOnDrop);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        loop {
            match TcpStream::connect(&self.config.connect).await {
                Ok(stream) => {
                    let started = Instant::now();
                    let (why, refused) = self.session(stream).await;
                    if refused {
                        tracing::error!(coordinator = self.config.connect, "refused: {why}");
                    } else {
                        tracing::warn!(
                            coordinator = self.config.connect,
                            "connection ended: {why}"
                        );
                        if started.elapsed() >= Duration::from_secs(1) {
                            backoff.reset();
                        }
                    }
                }
                Err(e) => tracing::debug!(coordinator = self.config.connect, "dial failed: {e}"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn registration(&self, running: Vec<String>, finished: Vec<String>) -> Register {
        let mut caps = detected_caps();
        caps.extend(self.config.caps.clone());
        let environments = environments::advertised(self.config.environments_dir.as_deref());
        Register {
            id: self.id.clone(),
            capacity: self.config.capacity,
            memory_bytes: self.config.memory_bytes,
            milli_cpus: self.config.milli_cpus,
            caps,
            environments,
            token: self.config.token.clone(),
            running,
            finished,
            version: env!("CARGO_PKG_VERSION").to_string(),
            idle: self.config.idle,
            hooks: true,
        }
    }

    /// One connection: register, then serve until it ends. Returns why, and whether the
    /// coordinator refused the worker.
    async fn session(&self, stream: TcpStream) -> (String, bool) {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, writer) = spawn_writer(write, self.config.keepalive);
        // Whatever ends this session (its end, or the future being dropped) closes the
        // connection and stops live output going to it.
        let _guard = SessionGuard {
            shared: Arc::clone(&self.shared),
            writer,
        };
        {
            let mut shared = lock(&self.shared);
            let running = shared.running.keys().cloned().collect();
            let finished = shared.unacked.keys().cloned().collect();
            tx.send(Message::Register(self.registration(running, finished)));
            tx.send(Message::RegisterPool {
                capacity: self.config.capacity,
            });
            for result in shared.unacked.values() {
                tx.send(result.clone());
            }
            shared.tx = Some(tx.clone());
        }
        tracing::info!(
            worker = self.id,
            coordinator = self.config.connect,
            "registered"
        );
        let mut reader = MessageReader::new(read, self.config.keepalive);
        let outcome = loop {
            match reader.next().await {
                Ok(Some(Message::RunTask(task))) => self.start(task.id, task.spec, Form::Warren),
                Ok(Some(Message::Launch(launch))) => {
                    let spec = launch.task.to_spec(&launch.input);
                    self.start(launch.id, spec, Form::Pythia)
                }
                Ok(Some(Message::Abort { id })) => {
                    if let Some(handle) = lock(&self.shared).running.get(&id) {
                        handle.abort();
                    }
                }
                Ok(Some(Message::Ack { id })) => {
                    lock(&self.shared).unacked.remove(&id);
                }
                Ok(Some(Message::Refused { reason })) => break (reason, true),
                Ok(Some(Message::Prepare)) => self.hook(hook::PREPARE, None),
                Ok(Some(Message::Maintenance { note })) => {
                    lock(&self.shared).in_service = false;
                    self.hook(hook::MAINTENANCE, Some(note));
                }
                Ok(Some(_)) => {}
                Ok(None) => break ("closed by the coordinator".to_string(), false),
                Err(e) => break (e.to_string(), false),
            }
        };
        drop(tx);
        outcome
    }

    /// Runs a hook the coordinator asked for, and reports it on the connection current then.
    fn hook(&self, name: &'static str, message: Option<String>) {
        let command = match name {
            hook::PREPARE => self.config.hooks.prepare.clone(),
            _ => self.config.hooks.maintenance.clone(),
        };
        let shared = Arc::clone(&self.shared);
        let id = self.id.clone();
        let timeout = self.config.hooks.timeout_of(name);
        tokio::spawn(async move {
            let report = run_hook(name, command.as_deref(), message.as_deref(), &id, timeout).await;
            if !report.ok {
                tracing::warn!(hook = name, "hook failed: {:?}", report.problem);
            }
            let mut shared = lock(&shared);
            if name == hook::PREPARE {
                shared.in_service = report.ok;
            }
            if let Some(tx) = &shared.tx {
                tx.send(Message::Hook(report));
            }
        });
    }

    fn start(&self, id: String, spec: TaskSpec, form: Form) {
        let abort = AbortHandle::new();
        {
            let mut shared = lock(&self.shared);
            if shared.stopping {
                return; // stopping: the coordinator gives it to another worker
            }
            if shared.running.contains_key(&id) {
                return; // already running: a repeated launch
            }
            if let Some(result) = shared.unacked.get(&id) {
                // Already finished: the coordinator has not seen the result yet.
                if let Some(tx) = &shared.tx {
                    tx.send(result.clone());
                }
                return;
            }
            shared.running.insert(id.clone(), abort.clone());
        }
        let executor = Arc::clone(&self.executor);
        let executor_blocks = executor.blocks();
        let shared = Arc::clone(&self.shared);
        let ended = Arc::clone(&self.ended);
        let run = move || {
            let mut events = Forward {
                id: id.clone(),
                shared: Arc::clone(&shared),
            };
            let result: RunResult = executor.run(&spec, &mut events, &abort);
            let failure = lock(&shared).crashes.record(&result);
            let message = match form {
                Form::Warren => Message::Finished {
                    id: id.clone(),
                    result,
                },
                Form::Pythia => Message::Done(Done::from_result(id.clone(), &result)),
            };
            let mut shared = lock(&shared);
            shared.running.remove(&id);
            ended.notify_waiters();
            if shared.stopping {
                // Aborted by the stop, not by anyone who asked: not the task's outcome.
                return;
            }
            if let Some(tx) = &shared.tx {
                tx.send(message.clone());
            }
            if let Some(reason) = failure {
                tracing::error!("reporting this worker failed: {reason}");
                shared.in_service = false;
                if let Some(tx) = &shared.tx {
                    tx.send(Message::Failure { reason });
                }
            }
            if form == Form::Warren {
                shared.unacked.insert(id, message);
            }
        };
        if executor_blocks {
            tokio::task::spawn_blocking(run);
        } else {
            run();
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        lock(&self.shared).running.len()
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `interval`, while the worker is in service and runs nothing, runs the health check; a
/// failure is reported and takes the worker out of service until it is prepared again.
async fn health_checks(
    shared: Arc<Mutex<Shared>>,
    id: String,
    command: String,
    interval: Duration,
    timeout: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        {
            let shared = lock(&shared);
            if !shared.in_service || !shared.running.is_empty() || shared.tx.is_none() {
                continue;
            }
        }
        let report = run_hook(hook::HEALTH_CHECK, Some(&command), None, &id, timeout).await;
        let mut shared = lock(&shared);
        if !report.ok {
            tracing::warn!("health check failed: {:?}", report.problem);
            shared.in_service = false;
        }
        if let Some(tx) = &shared.tx {
            tx.send(Message::Hook(report));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_32ms_to_5_minutes() {
        let mut b = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let delays: Vec<u128> = (0..16).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(&delays[..5], &[32, 64, 128, 256, 512]);
        assert_eq!(delays[13], 262_144);
        assert_eq!(delays[14], 300_000);
        assert_eq!(delays[15], 300_000);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 32);
    }

    #[test]
    fn three_crashes_in_a_row_report_the_worker_failed() {
        let ended = |status| {
            let mut result = RunResult::crash("creating the cgroup: EACCES");
            result.status = status;
            result
        };
        use warren_core::result::Status::{Crash, Failed, Success};
        let mut streak = CrashStreak::default();
        let reports: Vec<bool> = [
            Crash, Crash, Success, Crash, Failed, Crash, Crash, Crash, Crash,
        ]
        .into_iter()
        .map(|status| streak.record(&ended(status)).is_some())
        .collect();
        assert_eq!(
            reports,
            [false, false, false, false, false, false, false, true, false]
        );
        let reason = (0..CRASHES_BEFORE_FAILURE)
            .filter_map(|_| streak.record(&ended(Crash)))
            .next();
        assert!(
            reason.as_deref().is_some_and(|r| r.contains("EACCES")),
            "{reason:?}"
        );
    }

    /// Runs until aborted (or, with `ignore_abort`, until `release` is set), and at most 20 s so
    /// that a failing test ends; counts runs and shutdowns.
    #[derive(Default)]
    struct UntilAborted {
        ignore_abort: bool,
        release: std::sync::atomic::AtomicBool,
        runs: std::sync::atomic::AtomicU32,
        shutdowns: std::sync::atomic::AtomicU32,
    }

    impl Executor for UntilAborted {
        fn run(&self, _: &TaskSpec, _: &mut dyn RunEvents, abort: &AbortHandle) -> RunResult {
            use std::sync::atomic::Ordering::SeqCst;
            self.runs.fetch_add(1, SeqCst);
            let give_up = Instant::now() + Duration::from_secs(20);
            while !(self.release.load(SeqCst) || (abort.is_aborted() && !self.ignore_abort))
                && Instant::now() < give_up
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut result = RunResult::crash("aborted".to_string());
            result.status = warren_core::result::Status::Abort;
            result
        }

        fn shutdown(&self) {
            self.shutdowns
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn worker_over(executor: Arc<UntilAborted>) -> (Worker, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = Config::new("127.0.0.1:1".into(), dir.path().to_path_buf());
        let worker = Worker::new(config, executor).unwrap_or_else(|e| panic!("{e}"));
        (worker, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_aborts_running_tasks_waits_for_them_and_shuts_the_executor_down() {
        use std::sync::atomic::Ordering::SeqCst;
        let executor = Arc::new(UntilAborted::default());
        let (worker, _dir) = worker_over(Arc::clone(&executor));
        for id in ["a", "b"] {
            worker.start(id.into(), TaskSpec::default(), Form::Warren);
        }
        assert_eq!(worker.running(), 2);
        let started = Instant::now();
        let left = worker.stopper().stop(Duration::from_secs(5)).await;
        assert_eq!(left, 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(worker.running(), 0);
        assert_eq!(executor.shutdowns.load(SeqCst), 1);
        // Aborted by the stop: not a result to keep for the coordinator.
        assert!(lock(&worker.shared).unacked.is_empty());
        // Nothing starts once stopping.
        worker.start("c".into(), TaskSpec::default(), Form::Warren);
        assert_eq!(worker.running(), 0);
        assert_eq!(executor.runs.load(SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_gives_up_on_runs_that_outlast_the_grace_and_still_shuts_down() {
        use std::sync::atomic::Ordering::SeqCst;
        let executor = Arc::new(UntilAborted {
            ignore_abort: true,
            ..UntilAborted::default()
        });
        let (worker, _dir) = worker_over(Arc::clone(&executor));
        worker.start("stuck".into(), TaskSpec::default(), Form::Pythia);
        let started = Instant::now();
        let left = worker.stopper().stop(Duration::from_millis(100)).await;
        let took = started.elapsed();
        executor.release.store(true, SeqCst);
        assert_eq!(left, 1);
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(executor.shutdowns.load(SeqCst), 1);
    }

    #[test]
    fn stable_id_survives_restarts() {
        let dir = std::env::temp_dir().join(format!("warren-worker-id-{}", std::process::id()));
        let first = stable_id(&dir).ok();
        let second = stable_id(&dir).ok();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(first.is_some());
        assert_eq!(first, second);
    }
}
