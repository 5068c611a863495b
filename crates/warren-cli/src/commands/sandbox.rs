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
#[derive(Debug, PartialEq, Eq, Args)]
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

impl RunArgs {
    /// `warren sandbox run ...` read straight from `argv` when every argument is one this
    /// parser knows to mean exactly what clap would make of it: long flags with valid values,
    /// each at most once, then `--` and the command. Anything else (help, a short or unknown
    /// flag, a repeated flag, a value clap would refuse) is `None`, and clap parses the whole
    /// command line as usual, errors and help included. Building clap's command tree for every
    /// subcommand costs about 0.3 ms, a tenth of a whole sandboxed run.
    pub fn from_argv(argv: &[std::ffi::OsString]) -> Option<RunArgs> {
        use warren_core::units::{parse_duration, parse_size};
        let [_, sandbox, run, rest @ ..] = argv else {
            return None;
        };
        if sandbox != "sandbox" || run != "run" {
            return None;
        }
        let mut args = RunArgs {
            limits: LimitArgs::default(),
            root: None,
            task_dir: None,
            stdin: None,
            json: false,
            command: Vec::new(),
        };
        let mut i = 0;
        loop {
            let arg = rest.get(i)?.to_str()?;
            i += 1;
            if arg == "--" {
                break;
            }
            let (name, inline) = match arg.strip_prefix("--")?.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg.strip_prefix("--")?, None),
            };
            if name == "json" {
                if inline.is_some() || args.json {
                    return None;
                }
                args.json = true;
                continue;
            }
            let value = match inline {
                Some(value) => value,
                None => {
                    i += 1;
                    rest.get(i - 1)?.to_str()?
                }
            };
            // clap refuses empty values and takes none that start with '-'.
            if value.is_empty() || value.starts_with('-') {
                return None;
            }
            fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
                match (slot.is_some(), value) {
                    (false, Some(value)) => {
                        *slot = Some(value);
                        Some(())
                    }
                    _ => None,
                }
            }
            let l = &mut args.limits;
            match name {
                "wall-time" => set(&mut l.wall_time, parse_duration(value).ok())?,
                "cpu-time" => set(&mut l.cpu_time, parse_duration(value).ok())?,
                "memory" => set(&mut l.memory, parse_size(value).ok())?,
                "disk" => set(&mut l.disk, parse_size(value).ok())?,
                "output" => set(&mut l.output, parse_size(value).ok())?,
                "pids" => set(&mut l.pids, value.parse().ok())?,
                "cpus" => set(&mut l.cpus, value.parse().ok())?,
                "io" => set(&mut l.io, parse_size(value).ok())?,
                "root" => set(&mut args.root, Some(PathBuf::from(value)))?,
                "task-dir" => set(&mut args.task_dir, Some(PathBuf::from(value)))?,
                "stdin" => set(&mut args.stdin, Some(PathBuf::from(value)))?,
                _ => return None,
            }
        }
        args.command = rest[i..].to_vec();
        (!args.command.is_empty()).then_some(args)
    }
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

/// Runs `warren sandbox run` with arguments already parsed.
pub fn run_one(args: RunArgs) -> anyhow::Result<u8> {
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
    // One run: a warm pool would only prepare runs nobody takes, and the run's exiting init is
    // left to the kernel's teardown of its namespaces once everything else of the run is gone.
    let config = SandboxConfig {
        warm_runs: 0,
        leave_exiting_inits: true,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(subcommand)]
        top: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        #[command(subcommand)]
        Sandbox(SandboxCommand),
    }

    fn by_clap(argv: &[std::ffi::OsString]) -> Option<RunArgs> {
        match Probe::try_parse_from(argv).ok()?.top {
            Top::Sandbox(SandboxCommand::Run(args)) => Some(*args),
            Top::Sandbox(SandboxCommand::Check) => None,
        }
    }

    #[test]
    fn the_quick_parse_agrees_with_clap_or_leaves_it_to_clap() {
        let lines = [
            "sandbox run -- /bin/true",
            "sandbox run --json -- sh -c 'echo'",
            "sandbox run --wall-time 2s --memory 64M -- python3 -c x",
            "sandbox run --wall-time=1500ms --cpu-time 2s --memory=1G --disk 64M --output 4 \
             --pids 16 --cpus 500 --io 8M --root /srv/r --task-dir /t --stdin /in --json -- a -- b",
            "sandbox run --pids +5 -- x",
            "sandbox run --output 10 -- --json",
            "sandbox run -- --help",
            "sandbox run --memory 64Q -- x",
            "sandbox run --memory -- x",
            "sandbox run --pids -1 -- x",
            "sandbox run --memory 1M --memory 2M -- x",
            "sandbox run --json --json -- x",
            "sandbox run --json=true -- x",
            "sandbox run --help",
            "sandbox run -h -- x",
            "sandbox run --root= -- x",
            "sandbox run --root -x -- x",
            "sandbox run --mem 1M -- x",
            "sandbox run --",
            "sandbox run /bin/true",
            "sandbox run",
            "sandbox check",
            "sandbox run --wall-time 0 -- x",
            "sandbox run --cpus 1 -- x",
            "sandbox run --io 1 -- x",
        ];
        let mut quick = 0;
        for line in lines {
            let argv: Vec<std::ffi::OsString> = std::iter::once("warren")
                .chain(line.split(' '))
                .map(Into::into)
                .collect();
            if let Some(args) = RunArgs::from_argv(&argv) {
                quick += 1;
                assert_eq!(Some(args), by_clap(&argv), "{line}");
            }
        }
        assert_eq!(quick, 10, "the common command lines take the quick path");
    }
}
