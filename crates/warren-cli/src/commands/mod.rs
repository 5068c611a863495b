//! One module per subcommand.

pub mod bench;
pub mod cancel;
pub mod client_args;
pub mod env;
pub mod limit_args;
pub mod logs;
pub mod render;
pub mod run;
pub mod sandbox;
pub mod server;
pub mod status;
pub mod submit;
pub mod task_args;
pub mod tasks;
pub mod up;
pub mod worker;
pub mod workers;

/// Exit code for errors of Warren itself or of the command line (bad flags, unreachable server).
pub const EXIT_USAGE: u8 = 2;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so that a service stopped by a service manager shuts
/// down as cleanly as one stopped at a terminal (prepared sandboxes killed, cgroups removed).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
