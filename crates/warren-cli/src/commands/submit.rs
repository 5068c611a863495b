//! `warren submit`: queue a task and print its id; `--wait` prints the finished task.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use warren_core::bytes;
use warren_core::pythia::pythia_field;
use warren_core::task::{TaskSpec, Timestamp};
use warren_proto::PythiaTask;

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::task_details;
use super::run::{exit_code, EXIT_CODES};
use super::task_args::{now, TaskArgs};

/// `warren submit [--wait] [limit flags] -- COMMAND...` or
/// `warren submit --pythia-task FILE [--input FILE] [--wait]`
#[derive(Debug, Args)]
#[command(after_long_help = EXIT_CODES)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Wait until the task has finished, print it, and exit with its exit code (as `warren run`).
    #[arg(long)]
    pub wait: bool,
    /// A Pythia task file (`{"environment", "taskfs", "limits"}`) to run instead of a command:
    /// its task filesystem's /task/control runs; limit flags override the file's limits.
    #[arg(long, value_name = "FILE")]
    pub pythia_task: Option<std::path::PathBuf>,
    /// With --pythia-task: a file the task reads on its standard input (`-` for this one's).
    #[arg(long, value_name = "FILE", requires = "pythia_task")]
    pub input: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub task: TaskArgs,
}

/// The task a Pythia task file describes, with the scheduling and limit flags of `task` applied.
pub fn pythia_spec(
    file: &Path,
    input: Option<&Path>,
    task: &TaskArgs,
    now: Timestamp,
) -> anyhow::Result<TaskSpec> {
    if !task.command.is_empty() {
        bail!(
            "--pythia-task runs the task filesystem's /task/control: it takes no command after `--`"
        );
    }
    for (given, flag) in [
        (task.taskfs.is_some(), "--taskfs"),
        (task.environment.is_some(), "--environment"),
        (task.stdin.is_some(), "--stdin (use --input)"),
    ] {
        if given {
            bail!("{flag} cannot be combined with --pythia-task: the task file defines it");
        }
    }
    let text = std::fs::read(file)
        .with_context(|| format!("--pythia-task: reading {}", file.display()))?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    let pythia: PythiaTask = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow!("{}: `{}`: {}", file.display(), e.path(), e.inner()))?;
    let input = match input {
        Some(path) if path == Path::new("-") => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
                .context("reading standard input for --input -")?;
            data
        }
        Some(path) => {
            std::fs::read(path).with_context(|| format!("--input: reading {}", path.display()))?
        }
        None => Vec::new(),
    };
    let encoded = bytes::encode(&input);
    let base = pythia.to_spec(if encoded.base64.is_some() {
        ""
    } else {
        &encoded.text
    });
    base.validate().map_err(|e| {
        anyhow!(
            "{}: `{}`: {}",
            file.display(),
            pythia_field(&e.field),
            e.problem
        )
    })?;
    let mut args = task.clone();
    args.taskfs = base.taskfs.clone();
    args.environment = base.environment.clone();
    let mut spec = args.to_spec(now)?;
    spec.stdin = base.stdin;
    spec.stdin_base64 = encoded.base64;
    let flags = std::mem::replace(&mut spec.limits, base.limits);
    let limits = &mut spec.limits;
    limits.wall_time = flags.wall_time.or(limits.wall_time);
    limits.cpu_time = flags.cpu_time.or(limits.cpu_time);
    limits.memory = flags.memory.or(limits.memory);
    limits.disk = flags.disk.or(limits.disk);
    limits.output = flags.output.or(limits.output);
    limits.pids = flags.pids.or(limits.pids);
    limits.cpus = flags.cpus.or(limits.cpus);
    spec.validate().context("invalid task")?;
    Ok(spec)
}

/// Submits the task, returning the process exit code.
pub fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let spec = match &args.pythia_task {
        Some(file) => pythia_spec(file, args.input.as_deref(), &args.task, now())?,
        None => args.task.to_spec(now())?,
    };
    let client = args.client.connect()?;
    block_on(async {
        if args.wait {
            let task = client
                .submit_and_wait(&spec)
                .await
                .context("running the task")?;
            if args.client.json {
                print_json(&task)?;
            } else {
                print!("{}", task_details(&task));
            }
            Ok(exit_code(&task))
        } else {
            let id = client.submit(&spec).await.context("submitting the task")?;
            if args.client.json {
                print_json(&serde_json::json!({ "id": id }))?;
            } else {
                println!("{id}");
            }
            Ok(0)
        }
    })?
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    fn spec(dir: &Path, task: &str, input: &[u8], flags: &[&str]) -> Result<TaskSpec, String> {
        let file = dir.join("t.task");
        let input_file = dir.join("input");
        std::fs::write(&file, task).map_err(|e| e.to_string())?;
        std::fs::write(&input_file, input).map_err(|e| e.to_string())?;
        let (file, input_file) = (file.display().to_string(), input_file.display().to_string());
        let argv = ["probe", "--pythia-task", &file, "--input", &input_file];
        let probe = Probe::try_parse_from(argv.iter().copied().chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        let args = probe.submit;
        let file = args.pythia_task.unwrap_or_default();
        pythia_spec(
            &file,
            args.input.as_deref(),
            &args.task,
            Timestamp::from_unix_ms(0),
        )
        .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn a_pythia_task_file_becomes_the_spec_with_flags_over_it() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let task = r#"{"environment": "busybox", "taskfs": "hello.sfs", "name": "extra fields are fine",
            "limits": {"time": 2, "memory": 64, "disk": 50, "output": 100}}"#;
        let got = spec(
            dir.path(),
            task,
            b"42\n",
            &["--memory", "128M", "--cap", "arch=x86_64"],
        );
        let Ok(got) = got else { panic!("{got:?}") };
        assert!(got.command.is_empty());
        assert_eq!(got.taskfs.as_deref(), Some("hello.sfs"));
        assert_eq!(got.environment.as_deref(), Some("busybox"));
        assert_eq!(got.stdin.as_deref(), Some("42\n"));
        assert_eq!(got.limits.wall_time.map(|d| d.as_secs()), Some(2));
        assert_eq!(got.limits.memory, Some(128 << 20));
        assert_eq!(got.limits.disk, Some(32 << 20));
        assert_eq!(got.limits.output, Some(100));
        assert_eq!(got.caps.get("arch").map(String::as_str), Some("x86_64"));

        let got = spec(dir.path(), task, &[0xff, 0], &[]);
        let Ok(got) = got else { panic!("{got:?}") };
        assert_eq!(
            (got.stdin.clone(), got.stdin_bytes().ok()),
            (None, Some(vec![0xff, 0]))
        );
    }

    #[test]
    fn pythia_task_mistakes_name_the_field() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        for (task, flags, needle) in [
            (
                r#"{"taskfs": "t", "limits": {"time": -1}}"#,
                &[][..],
                "`limits.time`",
            ),
            (r#"{"taskfs": ""}"#, &[][..], "`taskfs`"),
            (r#"{"taskfs": "../up"}"#, &[][..], "`taskfs`"),
            (r#"[]"#, &[][..], "t.task"),
            (r#"{"taskfs": "t"}"#, &["--", "echo"][..], "no command"),
            (
                r#"{"taskfs": "t"}"#,
                &["--environment", "e"][..],
                "--environment",
            ),
            (r#"{"taskfs": "t"}"#, &["--stdin", "-"][..], "--input"),
        ] {
            let err = spec(dir.path(), task, b"", flags).err().unwrap_or_default();
            assert!(err.contains(needle), "{task} {flags:?}: {err}");
        }
    }
}
