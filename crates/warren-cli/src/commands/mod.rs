//! One module per subcommand.

pub mod bench;
pub mod cancel;
pub mod client_args;
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
