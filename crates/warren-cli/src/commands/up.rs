//! `warren up`: the coordinator and one local worker in one process, embedded store.

use anyhow::Context;
use clap::Args;
use warren_coordinator::Coordinator;

use super::server::{init_logging, runtime, ServerArgs};
use super::worker::{sandbox_worker, start_spawner, stop, WorkerCommon, RUNTIME_GRACE};

/// Flags of `warren up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Tasks the local worker runs at once [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    #[command(flatten)]
    pub worker: WorkerCommon,
}

/// Runs `warren up` until Ctrl-C or SIGTERM; then stops the worker cleanly (runs aborted, shared
/// images unmounted) before exiting.
pub fn run(args: UpArgs) -> anyhow::Result<u8> {
    let spawner = start_spawner()?;
    init_logging();
    let config = args.server.config()?;
    let runtime = runtime()?;
    let outcome = runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let coordinator = Coordinator::start(config)
            .await
            .context("starting the coordinator")?;
        let mut worker_config = args.worker.config(
            coordinator.queue_addr.to_string(),
            args.capacity,
            args.server.keepalive,
            data_dir.join("worker"),
            data_dir.join("environments"),
        )?;
        // The tasks directory holds the task filesystems its task files name, as in Pythia.
        if worker_config.taskfs_dir.is_none() {
            worker_config.taskfs_dir = args.server.tasks_dir.clone();
        }
        // The local worker serves at once: `warren up` needs no other step.
        worker_config.idle = true;
        if worker_config.token.is_none() {
            worker_config.token = Some(coordinator.join_token.clone());
        }
        let worker = sandbox_worker(worker_config, spawner)?;
        let url = format!("http://{}", coordinator.http_addr);
        println!("Warren is up: {url}");
        println!(
            "  queue {}  data {}  worker {}",
            coordinator.queue_addr,
            data_dir.display(),
            worker.id()
        );
        println!("  try: WARREN_SERVER={url} warren run -- echo hello");
        let stopper = worker.stopper();
        tokio::select! {
            _ = coordinator.wait() => {}
            _ = worker.run() => {}
            _ = super::shutdown_signal() => {}
        }
        // The worker's connection is closed by now; what ran is aborted and what it mounted
        // released before the process goes.
        stop(stopper).await;
        Ok(0)
    });
    runtime.shutdown_timeout(RUNTIME_GRACE);
    outcome
}
