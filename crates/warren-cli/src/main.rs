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

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The common `sandbox run` command line skips building the whole command tree.
    if let Some(args) = commands::sandbox::RunArgs::from_argv(&argv) {
        return finish(commands::sandbox::run_one(args));
    }
    let cli = Cli::parse_from(argv);
    let outcome = match cli.command {
        Command::Sandbox(cmd) => commands::sandbox::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Run(args) => commands::run::run(args),
        Command::Submit(args) => commands::submit::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Logs(args) => commands::logs::run(args),
        Command::Cancel(args) => commands::cancel::run(args),
        Command::Tasks(args) => commands::tasks::run(args),
        Command::Workers(args) => commands::workers::run(args),
        Command::Server(args) => commands::server::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Up(args) => commands::up::run(args),
        Command::Env(cmd) => commands::env::run(cmd),
    };
    finish(outcome)
}

fn finish(outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("warren: {err:#}");
            ExitCode::from(commands::EXIT_USAGE)
        }
    }
}
