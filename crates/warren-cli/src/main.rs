//! `warren`: one binary for every role. Each subcommand lives in `commands/<verb>.rs` and is a
//! short call into a library crate; this file only parses arguments and maps errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// Warren: a distributed sandbox execution service.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one command in a sandbox on this machine, or check what this host supports.
    #[command(subcommand)]
    Sandbox(commands::sandbox::SandboxCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Sandbox(cmd) => commands::sandbox::run(cmd),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("warren: {err:#}");
            ExitCode::from(commands::EXIT_USAGE)
        }
    }
}
