//! What runs a launched task: the sandbox, or (for the dispatch benchmark only) nothing at all.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use warren_core::control::parse as parse_control;
use warren_core::result::{RunResult, Status};
use warren_core::task::TaskSpec;
use warren_sandbox::{
    AbortHandle, InputFile, MountedImage, Root, RunEvents, RunSpec, Sandbox, Stdin,
};

use crate::control::{run_control, ControlTask};
use crate::environments::{self, Environment, EnvironmentKind};

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

    /// The end of service, once every run has been aborted and has ended (or was given up on):
    /// release what runs shared (the sandbox's image mounts). Nothing runs after it.
    fn shutdown(&self) {}
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
    /// or the squashfs image `environments_dir/NAME.sfs` (used read-only as `/`); task
    /// filesystem `NAME` is the directory or image `taskfs_dir/NAME` (or `NAME.sfs`), bound
    /// read-only at `/task`. Images are mounted once and shared while in use.
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

/// Largest control file read.
const MAX_CONTROL_BYTES: u64 = 1 << 20;

/// Where a named environment or task filesystem is on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A directory tree.
    Dir(PathBuf),
    /// A squashfs image, mounted when used.
    Image(PathBuf),
}

/// Finds task filesystem `name` in `base`: the directory `base/name`, the image `base/name`
/// (named with its `.sfs`, as Pythia names them), or the image `base/name.sfs`.
pub fn resolve_named(base: Option<&Path>, name: &str, what: &str) -> Result<Named, String> {
    let base = base.ok_or_else(|| {
        format!("this worker has no {what} directory, so it has no {what} `{name}`")
    })?;
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(format!("`{name}` is not a valid {what} name"));
    }
    let plain = base.join(name);
    if plain.is_dir() {
        return Ok(Named::Dir(plain));
    }
    if plain.is_file() {
        return Ok(Named::Image(plain));
    }
    let image = base.join(format!("{name}.sfs"));
    if image.is_file() {
        return Ok(Named::Image(image));
    }
    Err(format!(
        "this worker has no {what} `{name}` (neither {} nor {} exists)",
        plain.display(),
        image.display()
    ))
}

/// The filesystems a task runs with, held (images mounted, inline task files written) until
/// the run ends.
#[derive(Debug, Default)]
struct Materials {
    root: Root,
    task_dir: Option<PathBuf>,
    task_group: u32,
    images: Vec<Arc<MountedImage>>,
    inline: Option<tempfile::TempDir>,
}

impl SandboxExecutor {
    fn directory(
        &self,
        named: Named,
        what: &str,
    ) -> Result<(PathBuf, Option<Arc<MountedImage>>), String> {
        match named {
            Named::Dir(dir) => Ok((dir, None)),
            Named::Image(image) => {
                let mounted = self
                    .sandbox
                    .mount_image(&image)
                    .map_err(|e| format!("{what}: {e}"))?;
                Ok((mounted.path().to_path_buf(), Some(mounted)))
            }
        }
    }

    fn materials(&self, spec: &TaskSpec) -> Result<Materials, String> {
        let mut materials = Materials::default();
        if let Some(name) = spec.environment.as_deref() {
            let environment = match self.environments_dir.as_deref() {
                Some(dir) => environments::resolve(dir, name).map_err(|e| e.to_string())?,
                None if name == warren_core::environment::HOST => Environment::host(),
                None => {
                    return Err(format!(
                    "this worker has no environments directory, so it has no environment `{name}`"
                ))
                }
            };
            let named = match environment.kind {
                EnvironmentKind::Host => None,
                EnvironmentKind::Directory => Some(Named::Dir(environment.path)),
                EnvironmentKind::Squashfs => Some(Named::Image(environment.path)),
            };
            if let Some(named) = named {
                let (dir, image) = self.directory(named, "environment")?;
                materials.root = Root::Dir(dir);
                materials.images.extend(image);
            }
        }
        if let Some(name) = &spec.taskfs {
            let named = resolve_named(self.taskfs_dir.as_deref(), name, "task filesystem")?;
            let (dir, image) = self.directory(named, "task filesystem")?;
            // Task files readable by their group and not by others are the master's alone.
            materials.task_group = std::fs::metadata(&dir).map_or(0, |m| m.gid());
            materials.task_dir = Some(dir);
            materials.images.extend(image);
        } else if !spec.task_files.is_empty() {
            let dir = inline_task_dir(spec)?;
            materials.task_dir = Some(dir.path().to_path_buf());
            materials.inline = Some(dir);
        }
        Ok(materials)
    }

    fn run_control_file(
        &self,
        spec: &TaskSpec,
        materials: &Materials,
        run: &RunSpec,
        events: &mut dyn RunEvents,
        abort: &AbortHandle,
    ) -> RunResult {
        let Some(task_dir) = &materials.task_dir else {
            return fatal("the task has no command and no task files to run".to_string());
        };
        let path = task_dir.join("control");
        let text = match std::fs::File::open(&path).and_then(|f| {
            let mut text = Vec::new();
            f.take(MAX_CONTROL_BYTES + 1).read_to_end(&mut text)?;
            Ok(text)
        }) {
            Ok(text) if text.len() as u64 > MAX_CONTROL_BYTES => {
                return fatal(format!(
                    "/task/control is larger than {MAX_CONTROL_BYTES} bytes"
                ))
            }
            Ok(text) => text,
            Err(e) => {
                return fatal(format!(
                    "the task has no command, and its task files have no control file to run: \
                     /task/control: {e}"
                ))
            }
        };
        let steps = match parse_control(&text) {
            Ok(steps) => steps,
            Err(e) => return fatal(format!("/task/{e}")),
        };
        let input = match spec.stdin_bytes() {
            Ok(input) => input,
            Err(e) => return fatal(format!("stdin_base64: {e}")),
        };
        let task = ControlTask {
            base: run,
            input: &input,
            task_group: materials.task_group,
        };
        run_control(&self.sandbox, &task, &steps, events, abort)
    }
}

/// Writes a task's inline task files into a fresh directory, read-only for the run.
fn inline_task_dir(spec: &TaskSpec) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("warren-task-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the task files: {e}"))?;
    let world_readable = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("task files: {}: {e}", path.display()))
    };
    world_readable(dir.path(), 0o755)?;
    for (i, file) in spec.task_files.iter().enumerate() {
        let contents = file
            .bytes()
            .map_err(|e| format!("task_files[{i}].contents_base64: {e}"))?;
        let relative = Path::new(&file.path);
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "task_files[{i}].path: must be relative, without `..`"
            ));
        }
        let path = dir.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("task files: {}: {e}", parent.display()))?;
            let mut at = parent;
            while at != dir.path() {
                world_readable(at, 0o755)?;
                at = at.parent().unwrap_or(dir.path());
            }
        }
        std::fs::write(&path, &contents)
            .map_err(|e| format!("task files: {}: {e}", path.display()))?;
        world_readable(&path, if file.executable { 0o755 } else { 0o644 })?;
    }
    Ok(dir)
}

/// The sandbox's view of a task (argv, environment variables, input, files, limits), with
/// the host root and no task files: [`SandboxExecutor`] fills those in from the worker's
/// directories.
pub fn run_spec(spec: &TaskSpec) -> Result<RunSpec, String> {
    let argv: Vec<OsString> = spec.command.iter().map(OsString::from).collect();
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
        root: Root::Host,
        task_dir: None,
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
        let mut run = match run_spec(spec) {
            Ok(run) => run,
            Err(message) => return fatal(message),
        };
        let materials = match self.materials(spec) {
            Ok(m) => m,
            Err(message) => return fatal(message),
        };
        run.root = materials.root.clone();
        run.task_dir = materials.task_dir.clone();
        if run.argv.is_empty() {
            return self.run_control_file(spec, &materials, &run, events, abort);
        }
        match self.sandbox.run(&run, events, Some(abort)) {
            Ok(result) => result,
            Err(e) => fatal(e.to_string()),
        }
    }

    fn shutdown(&self) {
        let released = self.sandbox.shutdown();
        if released > 0 {
            tracing::info!("unmounted {released} shared image(s) still mounted at shutdown");
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
