//! The `warren` command line: one module per subcommand in `commands/`, each a short call into a
//! library crate, and the command tree both binaries parse.
//!
//! Two binaries share it. `warren` runs what a user or a script starts again and again and
//! waits for (`sandbox`, and the client commands talking to a coordinator) and links only what
//! those need; every other command (the service roles, environments, benchmarks) it hands to
//! `warren-service` beside it by `exec`, in the same process. A run of `warren sandbox run` is a
//! new process each time, and the start of a static binary grows with what it links: the
//! relocations of every library's tables and the pages they touch.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;

/// Warren: a distributed sandbox execution service.
#[derive(Debug, Parser)]
#[command(name = "warren", version)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command in a sandbox on this machine, or check what this host supports.
    #[command(subcommand)]
    Sandbox(commands::sandbox::SandboxCommand),
    /// Measure Warren against its baselines, side by side in one run.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Run a command as a task on the coordinator's workers, streaming its output live, and exit
    /// with its exit code. Ctrl-C cancels the task.
    Run(commands::run::RunArgs),
    /// Queue a task and print its id (`--wait`: wait and print the finished task).
    Submit(commands::submit::SubmitArgs),
    /// Show one task: its state, and its result once done.
    Status(commands::status::StatusArgs),
    /// Print a task's output (`--follow`: keep following it until the task ends).
    Logs(commands::logs::LogsArgs),
    /// Cancel tasks: a waiting task is dropped, a running one is aborted.
    Cancel(commands::cancel::CancelArgs),
    /// List tasks, newest first.
    Tasks(commands::tasks::TasksArgs),
    /// List the workers the coordinator knows.
    Workers(commands::workers::WorkersArgs),
    /// Start the coordinator: the durable queue, the HTTP API and the queue port.
    Server(commands::server::ServerArgs),
    /// Start a worker: connect to a coordinator and run its tasks in the sandbox.
    Worker(commands::worker::WorkerArgs),
    /// Start everything on this machine: the coordinator and one local worker, in one process.
    Up(commands::up::UpArgs),
    /// Build and list the environments (root filesystems) a worker offers.
    #[command(subcommand)]
    Env(commands::env::EnvCommand),
}

impl Command {
    /// Runs one of the commands the `warren` binary runs itself, or gives back one of the
    /// others, which are `warren-service`'s ([`SERVICE_COMMANDS`]).
    pub fn run_in_front(self) -> Result<anyhow::Result<u8>, Box<Command>> {
        Ok(match self {
            Command::Sandbox(cmd) => commands::sandbox::run(cmd),
            Command::Run(args) => commands::run::run(args),
            Command::Submit(args) => commands::submit::run(args),
            Command::Status(args) => commands::status::run(args),
            Command::Logs(args) => commands::logs::run(args),
            Command::Cancel(args) => commands::cancel::run(args),
            Command::Tasks(args) => commands::tasks::run(args),
            Command::Workers(args) => commands::workers::run(args),
            service @ (Command::Bench(_)
            | Command::Server(_)
            | Command::Worker(_)
            | Command::Up(_)
            | Command::Env(_)) => return Err(Box::new(service)),
        })
    }
}

/// The subcommands `warren-service` runs (the long-running roles, environments, benchmarks).
pub const SERVICE_COMMANDS: [&str; 5] = ["server", "worker", "up", "env", "bench"];

/// Whether `argv` asks for one of [`SERVICE_COMMANDS`]: its first argument names it.
pub fn is_service_command(argv: &[OsString]) -> bool {
    argv.get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| SERVICE_COMMANDS.contains(&a))
}

/// The process's exit code for a command's outcome; an error is printed once, here.
pub fn finish(outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("warren: {err:#}");
            ExitCode::from(commands::EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_service_command_is_a_subcommand_warren_hands_on() {
        let tree = Cli::command();
        for name in SERVICE_COMMANDS {
            assert!(tree.find_subcommand(name).is_some(), "{name}");
            let argv: Vec<OsString> = ["warren", name].map(OsString::from).to_vec();
            assert!(is_service_command(&argv), "{name}");
        }
        let sandbox: Vec<OsString> = ["warren", "sandbox", "run"].map(OsString::from).to_vec();
        assert!(!is_service_command(&sandbox));
    }
}
