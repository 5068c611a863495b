//! `warren sandbox run|check`.

use clap::Subcommand;

/// `warren sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Print what this host supports.
    Check,
}

/// Runs a sandbox subcommand, returning the process exit code.
pub fn run(_cmd: SandboxCommand) -> anyhow::Result<u8> {
    Ok(0)
}
