//! One module per subcommand.

pub mod limit_args;
pub mod sandbox;

/// Exit code for errors of Warren itself or of the command line (bad flags, unreachable server).
pub const EXIT_USAGE: u8 = 2;
