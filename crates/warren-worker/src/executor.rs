//! What runs a launched task: the sandbox, or (for the dispatch benchmark only) nothing at all.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use warren_core::result::{RunResult, Status};
use warren_core::task::TaskSpec;
use warren_sandbox::{AbortHandle, InputFile, Root, RunEvents, RunSpec, Sandbox, Stdin};

/// Runs one task to its end, reporting output and statistics live through `events`.
/// Called on a blocking thread; many run at once.
pub trait Executor: Send + Sync + 'static {
    /// Runs `spec` until it ends or `abort` is triggered.
    fn run(&self, spec: &TaskSpec, events: &mut dyn RunEvents, abort: &AbortHandle) -> RunResult;

    /// Whether `run` blocks (the sandbox does: it waits for the program). One that never blocks
    /// is called directly on the connection's task instead of a blocking thread.
    fn blocks(&self) -> bool {
        true
    }
}

/// Runs tasks in Warren's sandbox.
#[derive(Debug)]
pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    environments_dir: Option<PathBuf>,
    taskfs_dir: Option<PathBuf>,
}

impl SandboxExecutor {
    /// An executor over `sandbox`. Environment `NAME` is the directory `environments_dir/NAME`
    /// (used read-only as `/`); Pythia task filesystem `NAME` is `taskfs_dir/NAME`, bound at
    /// `/task`.
    pub fn new(
        sandbox: Sandbox,
        environments_dir: Option<PathBuf>,
        taskfs_dir: Option<PathBuf>,
    ) -> SandboxExecutor {
        SandboxExecutor {
            sandbox: Arc::new(sandbox),
            environments_dir,
            taskfs_dir,
        }
    }
}

fn fatal(message: String) -> RunResult {
    let mut result = RunResult::crash(message);
    result.status = Status::Fatal;
    result
}

fn named_dir(base: Option<&Path>, name: &str, what: &str) -> Result<PathBuf, String> {
    let base = base.ok_or_else(|| {
        format!("this worker has no {what} directory, so it has no {what} `{name}`")
    })?;
    let path = base.join(name);
    if path.is_dir() {
        Ok(path)
    } else {
        Err(format!(
            "this worker has no {what} `{name}` ({} is not a directory)",
            path.display()
        ))
    }
}

/// The sandbox's view of a task.
pub fn run_spec(
    spec: &TaskSpec,
    environments_dir: Option<&Path>,
    taskfs_dir: Option<&Path>,
) -> Result<RunSpec, String> {
    let mut argv: Vec<OsString> = spec.command.iter().map(OsString::from).collect();
    let task_dir = match &spec.taskfs {
        Some(name) => Some(named_dir(taskfs_dir, name, "task filesystem")?),
        None => None,
    };
    if argv.is_empty() {
        // Pythia's convention: the task filesystem's control script is the program.
        argv.push("/task/control".into());
    }
    let root = match &spec.environment {
        Some(name) if name != "host" => {
            Root::Dir(named_dir(environments_dir, name, "environment")?)
        }
        _ => Root::Host,
    };
    let stdin = spec
        .stdin_bytes()
        .map_err(|e| format!("stdin_base64: {e}"))?;
    let mut files = Vec::with_capacity(spec.files.len());
    for (i, f) in spec.files.iter().enumerate() {
        let contents = f.bytes().map_err(|e| format!("files[{i}]: {e}"))?;
        files.push(InputFile {
            path: PathBuf::from(&f.path),
            contents,
            executable: f.executable,
        });
    }
    Ok(RunSpec {
        argv,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect(),
        limits: spec.limits.clone(),
        root,
        task_dir,
        stdin: if stdin.is_empty() {
            Stdin::Null
        } else {
            Stdin::Bytes(stdin)
        },
        files,
    })
}

impl Executor for SandboxExecutor {
    fn run(&self, spec: &TaskSpec, events: &mut dyn RunEvents, abort: &AbortHandle) -> RunResult {
        let run = match run_spec(
            spec,
            self.environments_dir.as_deref(),
            self.taskfs_dir.as_deref(),
        ) {
            Ok(run) => run,
            Err(message) => return fatal(message),
        };
        match self.sandbox.run(&run, events, Some(abort)) {
            Ok(result) => result,
            Err(e) => fatal(e.to_string()),
        }
    }
}

/// BENCHMARK ONLY: "runs" every task by succeeding at once, without starting anything. It exists
/// to measure the coordinator's dispatch rate with the sandbox left out; `warren worker` never
/// uses it.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstantExecutorForBenchmarks;

impl Executor for InstantExecutorForBenchmarks {
    fn blocks(&self) -> bool {
        false
    }

    fn run(
        &self,
        _spec: &TaskSpec,
        _events: &mut dyn RunEvents,
        _abort: &AbortHandle,
    ) -> RunResult {
        let mut result = RunResult::crash(String::new());
        result.status = Status::Success;
        result.exit_code = Some(0);
        result.message = None;
        result
    }
}
