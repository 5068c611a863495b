//! `warren`: the command line. It runs the sandbox and client commands itself and hands the
//! others to `warren-service`, the binary beside it (see the library's documentation).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use clap::Parser;
use warren_cli::{commands, finish, is_service_command, Cli};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The common `sandbox run` command line skips building the whole command tree.
    if let Some(args) = commands::sandbox::RunArgs::from_argv(&argv) {
        return finish(commands::sandbox::run_one(args));
    }
    if is_service_command(&argv) {
        return finish(exec_service(&argv));
    }
    let cli = Cli::parse_from(&argv);
    match cli.command.run_in_front() {
        Ok(outcome) => finish(outcome),
        Err(_) => finish(exec_service(&argv)),
    }
}

/// Replaces this process with `warren-service` and the same arguments; returns only on failure.
fn exec_service(argv: &[OsString]) -> anyhow::Result<u8> {
    let service = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("finding the warren binary: {e}"))?
        .with_file_name("warren-service");
    let mut command = std::process::Command::new(&service);
    if let Some(name) = argv.first() {
        command.arg0(name);
    }
    let error = command.args(argv.iter().skip(1)).exec();
    anyhow::bail!(
        "starting {} (it runs `warren {}`; it belongs beside the warren binary): {error}",
        service.display(),
        argv.get(1)
            .map_or(String::new(), |a| a.to_string_lossy().into_owned())
    )
}
