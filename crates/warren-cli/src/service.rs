//! `warren-service`: every `warren` command, the long-running roles (`server`, `worker`, `up`)
//! and `env` and `bench` among them. `warren` starts it for those by `exec`; it also runs the
//! others, so it works on its own as well.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use warren_cli::{commands, finish, Cli, Command};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(argv);
    let outcome = match cli.command.run_in_front().map_err(|service| *service) {
        Ok(outcome) => outcome,
        Err(Command::Bench(cmd)) => commands::bench::run(cmd),
        Err(Command::Server(args)) => commands::server::run(args),
        Err(Command::Worker(args)) => commands::worker::run(args),
        Err(Command::Up(args)) => commands::up::run(args),
        Err(Command::Env(cmd)) => commands::env::run(cmd),
        Err(other) => Err(anyhow::anyhow!("no service runs {other:?}")),
    };
    finish(outcome)
}
