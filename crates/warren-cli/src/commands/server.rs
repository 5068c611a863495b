//! `warren server`: the coordinator alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use warren_coordinator::{Config, Coordinator, Durability};

/// Flags shared by `warren server` and `warren up`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Directory holding the database (warren.db) and the token files
    /// [default: /var/lib/warren as root, else ~/.local/share/warren].
    #[arg(long, value_name = "DIR", env = "WARREN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API address.
    #[arg(long, value_name = "ADDR", default_value = warren_coordinator::DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Queue address, where workers and Pythia pools and frontends connect.
    #[arg(long, value_name = "ADDR", default_value = warren_coordinator::DEFAULT_QUEUE)]
    pub queue: SocketAddr,
    /// Keep-alive interval on the queue port; a peer silent for three is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// Runs allowed per task when its workers are lost, before it is FAILED.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_attempts: u32,
    /// Most tasks waiting at once; more are refused ("Queue full").
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_waiting: usize,
    /// Largest API request body.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub max_body: u64,
    /// Commit without waiting for the disk on every commit: survives the process being killed,
    /// not the machine losing power.
    #[arg(long)]
    pub no_fsync: bool,
    /// Require tokens from workers and API clients even on loopback listeners (they are always
    /// required beyond loopback).
    #[arg(long)]
    pub require_token: bool,
    /// Directory of Pythia task files: `POST /execute` and `/api/execute` run `DIR/<tid>.task`.
    #[arg(long, value_name = "DIR")]
    pub tasks_dir: Option<PathBuf>,
    /// How long a task no registered worker could ever run waits (for such a worker) before it
    /// becomes INVALID.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub invalid_after: Duration,
    /// How long a worker set to MAINTENANCE lets its running tasks finish before they are
    /// aborted and re-queued.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Limits for whatever a task leaves unset.
    #[command(flatten)]
    pub defaults: DefaultLimits,
}

/// Default limits for tasks.
#[derive(Debug, Args)]
pub struct DefaultLimits {
    /// Default wall-time limit (none when unset).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_wall_time: Option<Duration>,
    /// Default memory limit (none when unset).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub default_memory: Option<u64>,
    /// Default output limit.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub default_output: u64,
    /// Default CPU-time limit (none when unset).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub default_cpu_time: Option<Duration>,
    /// Default limit on processes alive at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub default_pids: u64,
    /// Default CPU share in milli-CPUs (none when unset).
    #[arg(long, value_name = "MILLI_CPUS")]
    pub default_cpus: Option<u64>,
    /// Default writable disk.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub default_disk: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    warren_core::units::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    warren_core::units::parse_size(text).map_err(|e| e.to_string())
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `/var/lib/warren` for root, `$XDG_DATA_HOME/warren` or `~/.local/share/warren` otherwise.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/warren");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("warren");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/warren"),
        None => PathBuf::from(".warren"),
    }
}

impl ServerArgs {
    /// The coordinator's configuration.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::new(self.data_dir.clone().unwrap_or_else(default_data_dir));
        config.http = self.http;
        config.queue = self.queue;
        config.keepalive = self.keepalive;
        anyhow::ensure!(self.max_attempts >= 1, "--max-attempts must be at least 1");
        config.queue_config.max_attempts = self.max_attempts;
        config.queue_config.max_waiting = self.max_waiting;
        config.queue_config.orphan_grace = self.keepalive.saturating_mul(3);
        config.queue_config.invalid_after = self.invalid_after;
        config.queue_config.drain_timeout = self.drain_timeout;
        config.queue_config.default_limits.wall_time = self.defaults.default_wall_time;
        config.queue_config.default_limits.memory = self.defaults.default_memory;
        config.queue_config.default_limits.output = Some(self.defaults.default_output);
        config.queue_config.default_limits.disk = Some(self.defaults.default_disk);
        config.queue_config.default_limits.cpu_time = self.defaults.default_cpu_time;
        config.queue_config.default_limits.pids = Some(self.defaults.default_pids);
        config.queue_config.default_limits.cpus = self.defaults.default_cpus;
        config
            .queue_config
            .default_limits
            .validate()
            .with_context(|| "the --default-* limits")?;
        config.max_body = usize::try_from(self.max_body).context("--max-body is too large")?;
        config.require_tokens = self.require_token;
        if let Some(dir) = &self.tasks_dir {
            anyhow::ensure!(
                dir.is_dir(),
                "--tasks-dir {}: not a directory",
                dir.display()
            );
        }
        config.pythia.tasks_dir = self.tasks_dir.clone();
        if self.no_fsync {
            config.durability = Durability::Process;
        }
        Ok(config)
    }
}

/// Sets up logging to stderr (`RUST_LOG` filters; info by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded runtime for the long-running roles.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `warren server` until Ctrl-C.
pub fn run(args: ServerArgs) -> anyhow::Result<u8> {
    init_logging();
    let config = args.config()?;
    runtime()?.block_on(async move {
        let data_dir = config.data_dir.clone();
        let coordinator = Coordinator::start(config)
            .await
            .context("starting the coordinator")?;
        println!(
            "Warren coordinator: API http://{}  queue {}  data {}",
            coordinator.http_addr,
            coordinator.queue_addr,
            data_dir.display()
        );
        tokio::select! {
            _ = coordinator.wait() => {}
            _ = super::shutdown_signal() => {}
        }
        Ok(0)
    })
}
