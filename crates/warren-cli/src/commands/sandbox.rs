//! `warren sandbox run|check`: one sandboxed run on this machine, and the host's capabilities.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_core::result::Status;
use warren_sandbox::{HostReport, Root, RunEvents, RunSpec, Sandbox, SandboxConfig, Stdin, Stream};

use super::limit_args::LimitArgs;

/// `warren sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run one command in a sandbox and report how it ended.
    ///
    /// Without --json, the program's output is streamed live and warren exits with the
    /// program's exit code; 128+N when it died of signal N; 124 timeout, 123 out of memory,
    /// 122 output limit, 121 aborted, 120 sandbox failure, 127 program not found.
    Run(Box<RunArgs>),
    /// Print what this host supports: cgroup layout, controllers, seccomp, enforceable limits.
    Check,
}

/// `warren sandbox run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    limits: LimitArgs,
    /// A directory tree to use as the root filesystem (default: the host's system directories).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// A directory of task files, bound read-only at /task.
    #[arg(long, value_name = "DIR")]
    task_dir: Option<PathBuf>,
    /// A file to feed as standard input (default: this terminal's standard input).
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Print one JSON object with the status, output, usage and statistics instead of
    /// streaming the output.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

/// Runs a sandbox subcommand, returning the process exit code.
pub fn run(cmd: SandboxCommand) -> anyhow::Result<u8> {
    match cmd {
        SandboxCommand::Check => check(),
        SandboxCommand::Run(args) => run_one(*args),
    }
}

fn check() -> anyhow::Result<u8> {
    let config = SandboxConfig {
        warm_runs: 0,
        ..SandboxConfig::default()
    };
    match Sandbox::new(config.clone()) {
        Ok(sandbox) => {
            print!("{}", sandbox.report());
            Ok(0)
        }
        Err(err) => {
            print!("{}", HostReport::probe(&config.cgroup_root));
            println!("sandbox NOT usable: {err}");
            Ok(1)
        }
    }
}

/// Streams output to this process's own stdout and stderr as it arrives.
struct Terminal;

impl RunEvents for Terminal {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(data),
        };
    }
}

/// Collects nothing live (the result holds the output).
struct Quiet;

impl RunEvents for Quiet {
    fn output(&mut self, _stream: Stream, _data: &[u8]) {}
}

fn run_one(args: RunArgs) -> anyhow::Result<u8> {
    let limits = args.limits.to_limits()?;
    let stdin = match &args.stdin {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("opening --stdin {}", path.display()))?;
            Stdin::Fd(OwnedFd::from(file))
        }
        None => match std::io::stdin().as_fd_owned() {
            Some(fd) => Stdin::Fd(fd),
            None => Stdin::Null,
        },
    };
    let spec = RunSpec {
        argv: args.command,
        limits,
        root: args.root.map_or(Root::Host, Root::Dir),
        task_dir: args.task_dir,
        stdin,
        ..RunSpec::default()
    };
    // One run: a warm pool would only prepare runs nobody takes.
    let config = SandboxConfig {
        warm_runs: 0,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config).context("preparing the sandbox")?;
    let result = if args.json {
        sandbox.run(&spec, &mut Quiet, None)?
    } else {
        sandbox.run(&spec, &mut Terminal, None)?
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).context("encoding the result")?
        );
    } else {
        let explain = match result.status {
            Status::Success => None,
            Status::Failed => result.message.clone(),
            _ => Some(match (&result.limit_hit, &result.message) {
                (Some(limit), _) => format!("{} ({limit} limit)", result.status),
                (None, Some(message)) => format!("{}: {message}", result.status),
                (None, None) => result.status.to_string(),
            }),
        };
        if let Some(text) = explain {
            eprintln!("warren: {text}");
        }
    }
    Ok(result.process_exit_code().clamp(0, 255) as u8)
}

/// Duplicates this process's stdin, so the run reads it live.
trait StdinExt {
    fn as_fd_owned(&self) -> Option<OwnedFd>;
}

impl StdinExt for std::io::Stdin {
    fn as_fd_owned(&self) -> Option<OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned().ok()
    }
}
