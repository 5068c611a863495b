//! The flags that describe a task, shared by `warren run` and `warren submit`, and their
//! translation into the API's task spec.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Args;
use warren_core::bytes;
use warren_core::task::{FileSpec, TaskSpec, Timestamp};
use warren_core::units::parse_duration;

use super::limit_args::LimitArgs;

/// What to run, with what, under which limits, and when.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    /// A file whose contents the program reads on its standard input (`-` for this one's).
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// An environment variable for the program; `KEY` alone passes this one's value.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A file copied into the program's working directory, as REMOTE (default: its own name).
    #[arg(long = "file", value_name = "LOCAL[:REMOTE]")]
    pub files: Vec<String>,
    /// The named root filesystem on the worker (default: the host's system directories).
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
    /// A Pythia task filesystem known to the worker, bound at /task.
    #[arg(long, value_name = "NAME")]
    pub taskfs: Option<String>,
    /// Priority from 1 (most important) to 16 (default 8).
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Start-by time: RFC 3339 (`2026-11-22T12:00:00Z`) or a delay from now (`+10m`, `90s`);
    /// a task still waiting then ends TIMEOUT.
    #[arg(long, value_name = "TIME")]
    pub deadline: Option<String>,
    /// Do not start before this time: RFC 3339 or a delay from now (`+10m`).
    #[arg(long, value_name = "TIME")]
    pub valid_after: Option<String>,
    /// A capability the worker must offer (repeatable; all must match).
    #[arg(long = "cap", value_name = "KEY=VALUE")]
    pub caps: Vec<String>,
    /// Who the task is for (default: the coordinator's name for the caller).
    #[arg(long, value_name = "NAME")]
    pub owner: Option<String>,
    /// A group of the owner (repeatable): only workers in one of them run it.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl TaskArgs {
    /// The task spec these flags describe, checked as the coordinator will check it.
    /// `now` resolves delays like `+10m`.
    pub fn to_spec(&self, now: Timestamp) -> anyhow::Result<TaskSpec> {
        if self.command.is_empty() && self.taskfs.is_none() {
            bail!("no command given: put it after `--`, e.g. `warren run -- echo hello`");
        }
        let mut spec = TaskSpec {
            command: self.command.clone(),
            limits: self.limits.to_limits()?,
            environment: self.environment.clone(),
            taskfs: self.taskfs.clone(),
            priority: self.priority,
            owner: self.owner.clone(),
            groups: self.groups.clone(),
            ..TaskSpec::default()
        };
        if let Some(path) = &self.stdin {
            let data = read_input(path)?;
            let encoded = bytes::encode(&data);
            match encoded.base64 {
                Some(base64) => spec.stdin_base64 = Some(base64),
                None => spec.stdin = Some(encoded.text),
            }
        }
        for pair in &self.env {
            let (key, value) = match pair.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => {
                    let value = std::env::var(pair).with_context(|| {
                        format!("--env {pair}: no `=` and no such variable in this environment")
                    })?;
                    (pair.clone(), value)
                }
            };
            spec.env.insert(key, value);
        }
        spec.caps = key_values("--cap", &self.caps)?;
        for file in &self.files {
            spec.files.push(file_spec(file)?);
        }
        spec.deadline = self
            .deadline
            .as_deref()
            .map(|t| parse_time("--deadline", t, now))
            .transpose()?;
        spec.valid_after = self
            .valid_after
            .as_deref()
            .map(|t| parse_time("--valid-after", t, now))
            .transpose()?;
        spec.validate().context("invalid task")?;
        Ok(spec)
    }
}

/// The current time, for [`TaskArgs::to_spec`].
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_ms(ms)
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input for --stdin -")?;
    } else {
        data =
            std::fs::read(path).with_context(|| format!("--stdin: reading {}", path.display()))?;
    }
    Ok(data)
}

fn key_values(flag: &str, pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                map.insert(key.to_string(), value.to_string());
            }
            _ => bail!("{flag} {pair}: expected KEY=VALUE"),
        }
    }
    Ok(map)
}

/// `LOCAL[:REMOTE]`: the whole argument is the local path when such a file exists, else it is
/// split at its last `:`.
fn file_spec(arg: &str) -> anyhow::Result<FileSpec> {
    let (local, remote) = match arg.rsplit_once(':') {
        Some((local, remote)) if !Path::new(arg).exists() => (local, Some(remote)),
        _ => (arg, None),
    };
    let local = Path::new(local);
    let contents = std::fs::read(local)
        .with_context(|| format!("--file {arg}: reading {}", local.display()))?;
    let remote = match remote {
        Some(remote) if !remote.is_empty() => remote.to_string(),
        _ => local
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("--file {arg}: give the name to use with :REMOTE"))?,
    };
    let executable = is_executable(local);
    let encoded = bytes::encode(&contents);
    Ok(FileSpec {
        path: remote,
        contents: if encoded.base64.is_some() {
            String::new()
        } else {
            encoded.text
        },
        contents_base64: encoded.base64,
        executable,
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

const EXAMPLE_TIME: &str = "2026-11-22T12:00:00Z";

/// An RFC 3339 time, or a delay from `now` (`+10m`, `90s`).
fn parse_time(flag: &str, text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    let delay = text.strip_prefix('+').unwrap_or(text);
    match parse_duration(delay) {
        Ok(delay) => Ok(now.plus_ms(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => {
            bail!("{flag} {text}: expected an RFC 3339 time ({EXAMPLE_TIME}) or a delay (+10m)")
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        task: TaskArgs,
    }

    const NOW: Timestamp = Timestamp::from_unix_ms(1_000_000);

    fn spec(args: &[&str]) -> Result<TaskSpec, String> {
        let argv = std::iter::once("probe").chain(args.iter().copied());
        let probe = Probe::try_parse_from(argv).map_err(|e| e.to_string())?;
        probe.task.to_spec(NOW).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn owner_and_groups_become_the_spec() {
        let got = spec(&[
            "--owner", "ann", "--group", "lab", "--group", "ops", "--", "true",
        ]);
        let got = got.map(|s| (s.owner, s.groups));
        assert_eq!(
            got,
            Ok((
                Some("ann".to_string()),
                vec!["lab".to_string(), "ops".to_string()]
            ))
        );
        assert!(spec(&["--group", "a/b", "--", "true"]).is_err_and(|e| e.contains("groups[0]")));
    }

    #[test]
    fn flags_become_the_spec() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else {
            panic!("tempdir: {dir:?}")
        };
        let script = dir.path().join("run.sh");
        let input = dir.path().join("input.bin");
        assert!(std::fs::write(&script, "#!/bin/sh\necho hi\n").is_ok());
        assert!(std::fs::write(&input, [0xffu8, 0, 1]).is_ok());
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
        }
        let script_arg = format!("{}:bin/go", script.display());
        let input_arg = input.display().to_string();
        let got = spec(&[
            "--memory",
            "64M",
            "--wall-time",
            "2s",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--cap",
            "arch=x86_64",
            "--priority",
            "2",
            "--file",
            &script_arg,
            "--file",
            &input_arg,
            "--stdin",
            &input_arg,
            "--deadline",
            "+10s",
            "--valid-after",
            "1970-01-01T00:00:01Z",
            "--",
            "sh",
            "-c",
            "echo $A",
        ]);
        let got = match got {
            Ok(spec) => spec,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got.command, ["sh", "-c", "echo $A"]);
        assert_eq!(got.limits.memory, Some(64 << 20));
        assert_eq!(got.limits.wall_time.map(|d| d.as_millis()), Some(2000));
        assert_eq!(got.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(got.caps.get("arch").map(String::as_str), Some("x86_64"));
        assert_eq!(got.priority, Some(2));
        assert_eq!(got.files.len(), 2);
        assert_eq!(
            (got.files[0].path.as_str(), got.files[0].executable),
            ("bin/go", true)
        );
        assert_eq!(got.files[0].contents, "#!/bin/sh\necho hi\n");
        assert_eq!(
            (got.files[1].path.as_str(), got.files[1].executable),
            ("input.bin", false)
        );
        assert_eq!(got.files[1].bytes().ok(), Some(vec![0xff, 0, 1]));
        assert_eq!(got.stdin_bytes().ok(), Some(vec![0xff, 0, 1]));
        assert_eq!(got.deadline, Some(Timestamp::from_unix_ms(1_010_000)));
        assert_eq!(got.valid_after, Some(Timestamp::from_unix_ms(1000)));
    }

    fn check_error(args: &[&str], needle: &str) {
        let err = spec(args).err().unwrap_or_default();
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    #[test]
    fn mistakes_are_named() {
        check_error(&[], "no command given");
        check_error(&["--priority", "17", "--", "true"], "priority");
        check_error(&["--cap", "arch", "--", "true"], "--cap arch");
        check_error(
            &["--env", "WARREN_TEST_SURELY_UNSET_VARIABLE", "--", "true"],
            "--env",
        );
        check_error(
            &["--deadline", "soonish", "--", "true"],
            "--deadline soonish",
        );
        check_error(
            &["--file", "/surely/not/here", "--", "true"],
            "/surely/not/here",
        );
        check_error(&["--memory", "1K", "--", "true"], "memory");
        check_error(&["--stdin", "/surely/not/here", "--", "true"], "--stdin");
        check_error(
            &["--valid-after", "+1h", "--deadline", "+1m", "--", "true"],
            "deadline",
        );
    }
}
