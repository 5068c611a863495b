//! `warren worker`: connects to a coordinator and runs what it is given in the sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use warren_sandbox::{Sandbox, SandboxConfig, Spawner};
use warren_worker::{Config, Hooks, SandboxExecutor, Stopper, Worker};

use super::server::{default_data_dir, init_logging, runtime};

/// Flags of `warren worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator's queue address.
    #[arg(long, value_name = "ADDR", default_value = warren_coordinator::DEFAULT_QUEUE)]
    pub connect: String,
    /// Tasks run at once [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Keep-alive interval; a coordinator silent for three is re-dialled.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// Another name for --taskfs-dir (Pythia keeps task files and task filesystems together).
    #[arg(long, value_name = "DIR", conflicts_with = "taskfs_dir")]
    pub tasks_dir: Option<PathBuf>,
    /// When new to the coordinator, enter service at once (prepare hook, then IDLE) instead of
    /// waiting in MAINTENANCE for `warren workers set-state ID idle`.
    #[arg(long)]
    pub idle: bool,
    #[command(flatten)]
    pub hooks: HookArgs,
    #[command(flatten)]
    pub common: WorkerCommon,
}

/// The operator's hooks: commands run with `sh -c` on this host, as this user.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// Run before entering service; the worker becomes IDLE only if it exits 0.
    #[arg(long, value_name = "CMD")]
    pub prepare_hook: Option<String>,
    /// Run periodically while idle; a failure makes the worker FAILED.
    #[arg(long, value_name = "CMD")]
    pub health_check: Option<String>,
    /// Time between health checks.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Run when leaving service, with the operator's message as `$1` and `WARREN_MESSAGE`.
    #[arg(long, value_name = "CMD")]
    pub maintenance_hook: Option<String>,
    /// Longest any hook may run; then its whole process group is killed and it fails.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub hook_timeout: Duration,
    /// Longest the prepare hook may run [default: --hook-timeout].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub prepare_timeout: Option<Duration>,
    /// Longest a health check may run [default: --hook-timeout].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub health_check_timeout: Option<Duration>,
    /// Longest the maintenance hook may run [default: --hook-timeout].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub maintenance_timeout: Option<Duration>,
}

impl HookArgs {
    /// The hooks these flags describe.
    pub fn hooks(&self) -> anyhow::Result<Hooks> {
        anyhow::ensure!(
            !self.health_interval.is_zero(),
            "--health-interval must be more than 0"
        );
        Ok(Hooks {
            prepare: self.prepare_hook.clone(),
            health_check: self.health_check.clone(),
            health_interval: self.health_interval,
            maintenance: self.maintenance_hook.clone(),
            timeout: self.hook_timeout,
            prepare_timeout: self.prepare_timeout,
            health_check_timeout: self.health_check_timeout,
            maintenance_timeout: self.maintenance_timeout,
        })
    }
}

/// Worker flags `warren up` shares.
#[derive(Debug, Args)]
pub struct WorkerCommon {
    /// Directory holding the worker's stable id [default: DATA_DIR/worker].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A capability offered, `key=value` (repeatable); `arch` and `os` are detected.
    #[arg(long = "cap", value_name = "KEY=VALUE")]
    pub caps: Vec<String>,
    /// A file of capabilities, one `key=value` a line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub caps_file: Option<PathBuf>,
    /// Directory of environments: each subdirectory `NAME` and each squashfs image `NAME.sfs` is
    /// one, used read-only as `/`; `host` is always offered [default: DATA_DIR/environments].
    #[arg(long = "env-dir", alias = "environments", value_name = "DIR")]
    pub env_dir: Option<PathBuf>,
    /// Directory of Pythia task filesystems: each subdirectory is one, bound at `/task`.
    #[arg(long, value_name = "DIR")]
    pub taskfs_dir: Option<PathBuf>,
    /// File holding the join token (needed when the queue listens beyond loopback).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The join token itself.
    #[arg(long, env = "WARREN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    warren_core::units::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_caps(
    pairs: &[String],
    file: Option<&PathBuf>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut caps = BTreeMap::new();
    let mut add = |line: &str, origin: &str| -> anyhow::Result<()> {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            return Ok(());
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                caps.insert(k.trim().to_string(), v.trim().to_string());
                Ok(())
            }
            _ => bail!("{origin}: `{line}` is not key=value"),
        }
    };
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            add(line, &format!("{}:{}", path.display(), n + 1))?;
        }
    }
    for pair in pairs {
        add(pair, "--cap")?;
    }
    Ok(caps)
}

impl WorkerCommon {
    /// The worker's configuration for a coordinator at `connect`.
    pub fn config(
        &self,
        connect: String,
        capacity: Option<u32>,
        keepalive: Duration,
        default_state: PathBuf,
        default_env_dir: PathBuf,
    ) -> anyhow::Result<Config> {
        let mut config = Config::new(connect, self.state_dir.clone().unwrap_or(default_state));
        if let Some(capacity) = capacity {
            anyhow::ensure!(capacity >= 1, "--capacity must be at least 1");
            config.capacity = capacity;
        }
        config.caps = parse_caps(&self.caps, self.caps_file.as_ref())?;
        config.environments_dir = Some(match &self.env_dir {
            Some(dir) => {
                anyhow::ensure!(dir.is_dir(), "--env-dir {}: not a directory", dir.display());
                dir.clone()
            }
            // Made by `warren env build`; until then only `host` is offered.
            None => default_env_dir,
        });
        config.taskfs_dir = self.taskfs_dir.clone();
        config.keepalive = keepalive;
        config.token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the join token from {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(config)
    }
}

/// Starts the process that clones the worker's runs. Called first thing, while this process is
/// small and has one thread: see [`Spawner`].
pub fn start_spawner() -> anyhow::Result<Spawner> {
    Spawner::start().context("starting the sandbox's spawner process")
}

/// Builds a worker that runs tasks in the sandbox, its runs cloned by `spawner`.
pub fn sandbox_worker(config: Config, spawner: Spawner) -> anyhow::Result<Worker> {
    let sandbox = Sandbox::new(SandboxConfig {
        spawner: Some(spawner),
        ..SandboxConfig::default()
    })
    .context("setting up the sandbox")?;
    let executor = SandboxExecutor::new(
        sandbox,
        config.environments_dir.clone(),
        config.taskfs_dir.clone(),
    );
    Worker::new(config, Arc::new(executor)).context("loading the worker's id")
}

/// How long a stopping worker waits for its aborted runs to end before it unmounts the images
/// they hold anyway.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long the runtime waits, once everything is stopped, for its blocking threads (a run that
/// did not end within [`STOP_GRACE`]) before the process exits regardless.
pub const RUNTIME_GRACE: Duration = Duration::from_secs(5);

/// Stops a worker whose `run` future has been dropped: aborts its runs, waits for them, and
/// unmounts the shared images (see [`Stopper::stop`]).
pub async fn stop(stopper: Stopper) {
    // What had not ended is logged; the process goes regardless.
    let _left = stopper.stop(STOP_GRACE).await;
}

/// Runs `warren worker` until Ctrl-C.
pub fn run(args: WorkerArgs) -> anyhow::Result<u8> {
    let spawner = start_spawner()?;
    init_logging();
    let mut config = args.common.config(
        args.connect.clone(),
        args.capacity,
        args.keepalive,
        default_data_dir().join("worker"),
        super::env::default_env_dir(),
    )?;
    if config.taskfs_dir.is_none() {
        config.taskfs_dir = args.tasks_dir.clone();
    }
    config.idle = args.idle;
    config.hooks = args.hooks.hooks()?;
    let worker = sandbox_worker(config, spawner)?;
    println!(
        "Warren worker {} connecting to {}",
        worker.id(),
        args.connect
    );
    let runtime = runtime()?;
    runtime.block_on(async move {
        let stopper = worker.stopper();
        tokio::select! {
            _ = worker.run() => {}
            _ = super::shutdown_signal() => {}
        }
        // The connection is closed by now; what ran is aborted and what it mounted released.
        stop(stopper).await;
    });
    runtime.shutdown_timeout(RUNTIME_GRACE);
    Ok(0)
}
