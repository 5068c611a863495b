//! Tasks as the HTTP API sees them: the spec a client submits, the lifecycle states (Boruta's), the
//! view the API returns, workers as the API lists them, and the pure state-transition rule.
//!
//! Times are [`Timestamp`]s (milliseconds since the Unix epoch, written as RFC 3339 in JSON); this
//! module never reads a clock: "now" is always a parameter.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bytes;
use crate::limits::Limits;
use crate::result::RunResult;

/// A task's id: assigned by the coordinator, increasing in submission order.
pub type TaskId = u64;

/// Most important priority (Boruta's scale: 1 is most important).
pub const PRIORITY_HIGHEST: u8 = 1;
/// Least important priority.
pub const PRIORITY_LOWEST: u8 = 16;
/// Priority of a task that does not name one.
pub const PRIORITY_DEFAULT: u8 = 8;

/// What a client submits with `POST /v1/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The program and its arguments (argv); the program is looked up in `PATH` without a `/`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Standard input as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Standard input as base64, for binary input (wins over `stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
    /// Files written to the working directory before the program starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// Environment variables (a minimal environment when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Named root filesystem on the worker; the host's system directories when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A Pythia task filesystem (name known to the worker), bound at `/task`; when set and
    /// `command` is empty, `/task/control` is run (Pythia's convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taskfs: Option<String>,
    /// Small task files sent with the task, materialised read-only at `/task` (instead of a
    /// `taskfs`); at most [`MAX_TASK_FILES_BYTES`] together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_files: Vec<FileSpec>,
    /// Limits; unset ones take the coordinator's configured defaults.
    #[serde(default)]
    pub limits: Limits,
    /// 1 (most important) ..= 16; [`PRIORITY_DEFAULT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Not started before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after: Option<Timestamp>,
    /// Start-by time: a task still waiting then ends TIMEOUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// Capabilities a worker must offer (`key=value`, all must match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caps: BTreeMap<String, String>,
    /// Who submitted it. Set by the coordinator from the caller's identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The owner's groups: only workers in at least one of them run it (any worker when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A file given with a task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path relative to the working directory.
    pub path: String,
    /// Contents as text.
    #[serde(default)]
    pub contents: String,
    /// Contents as base64, for binary files (wins over `contents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents_base64: Option<String>,
    /// Whether the file is executable.
    #[serde(default)]
    pub executable: bool,
}

impl FileSpec {
    /// The exact contents.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        bytes::decode(&self.contents, self.contents_base64.as_deref())
    }
}

/// A field of a request that is wrong, named as the client wrote it (`limits.memory`,
/// `files[2].path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct FieldError {
    /// The field, as a path into the JSON.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    /// A new error.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Largest number of arguments, variables or files in one task.
pub const MAX_LIST: usize = 65_536;

/// Largest total size of the task files sent with a task (`task_files`); larger ones belong in
/// a task filesystem on the worker.
pub const MAX_TASK_FILES_BYTES: usize = 4 << 20;

impl TaskSpec {
    /// The priority, with the default applied.
    pub fn effective_priority(&self) -> u8 {
        self.priority.unwrap_or(PRIORITY_DEFAULT)
    }

    /// The exact standard input.
    pub fn stdin_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        bytes::decode(
            self.stdin.as_deref().unwrap_or(""),
            self.stdin_base64.as_deref(),
        )
    }

    /// Checks everything that can be checked without a worker, naming the first bad field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.command.is_empty() && self.taskfs.is_none() && self.task_files.is_empty() {
            return Err(FieldError::new(
                "command",
                "must name a program (a non-empty argv array), or the task must bring task \
                 files (`taskfs` or `task_files`) whose `control` file is run",
            ));
        }
        if self.taskfs.is_some() && !self.task_files.is_empty() {
            return Err(FieldError::new(
                "task_files",
                "cannot be combined with `taskfs`: /task is one or the other",
            ));
        }
        let mut task_bytes = 0usize;
        for (i, file) in self.task_files.iter().enumerate() {
            check_relative_path(&file.path)
                .map_err(|p| FieldError::new(format!("task_files[{i}].path"), p))?;
            let contents = file.bytes().map_err(|e| {
                FieldError::new(
                    format!("task_files[{i}].contents_base64"),
                    format!("not base64: {e}"),
                )
            })?;
            task_bytes += contents.len();
            if task_bytes > MAX_TASK_FILES_BYTES {
                return Err(FieldError::new(
                    "task_files",
                    format!(
                        "more than {} bytes together; put larger task files in a task \
                         filesystem (`taskfs`) on the workers",
                        MAX_TASK_FILES_BYTES
                    ),
                ));
            }
        }
        if self.command.len() > MAX_LIST {
            return Err(FieldError::new(
                "command",
                format!("more than {MAX_LIST} arguments"),
            ));
        }
        if let Some(first) = self.command.first() {
            if first.is_empty() {
                return Err(FieldError::new("command[0]", "the program name is empty"));
            }
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.contains('\0') {
                return Err(FieldError::new(
                    format!("command[{i}]"),
                    "contains a NUL byte",
                ));
            }
        }
        if let Some(encoded) = &self.stdin_base64 {
            bytes::from_base64(encoded)
                .map_err(|e| FieldError::new("stdin_base64", format!("not base64: {e}")))?;
        }
        if self.files.len() > MAX_LIST {
            return Err(FieldError::new(
                "files",
                format!("more than {MAX_LIST} files"),
            ));
        }
        for (i, file) in self.files.iter().enumerate() {
            check_relative_path(&file.path)
                .map_err(|p| FieldError::new(format!("files[{i}].path"), p))?;
            file.bytes().map_err(|e| {
                FieldError::new(
                    format!("files[{i}].contents_base64"),
                    format!("not base64: {e}"),
                )
            })?;
        }
        if self.env.len() > MAX_LIST {
            return Err(FieldError::new(
                "env",
                format!("more than {MAX_LIST} variables"),
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(FieldError::new(
                    format!("env.{key}"),
                    "a variable name must be non-empty, without `=` or NUL",
                ));
            }
            if value.contains('\0') {
                return Err(FieldError::new(
                    format!("env.{key}"),
                    "the value contains a NUL byte",
                ));
            }
        }
        if let Some(environment) = &self.environment {
            crate::environment::check_name(environment)
                .map_err(|p| FieldError::new("environment", p))?;
        }
        if let Some(taskfs) = &self.taskfs {
            check_name(taskfs).map_err(|p| FieldError::new("taskfs", p))?;
        }
        self.limits
            .validate()
            .map_err(|e| FieldError::new(format!("limits.{}", e.limit), e.problem))?;
        if let Some(p) = self.priority {
            if !(PRIORITY_HIGHEST..=PRIORITY_LOWEST).contains(&p) {
                return Err(FieldError::new(
                    "priority",
                    format!(
                        "{p} is outside {PRIORITY_HIGHEST} (most important)..{PRIORITY_LOWEST}"
                    ),
                ));
            }
        }
        if let (Some(after), Some(deadline)) = (self.valid_after, self.deadline) {
            if deadline <= after {
                return Err(FieldError::new(
                    "deadline",
                    "must be later than `valid_after`",
                ));
            }
        }
        for key in self.caps.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(FieldError::new(
                    format!("caps.{key}"),
                    "a capability name must be non-empty, without `=`",
                ));
            }
        }
        if let Some(owner) = &self.owner {
            if owner.is_empty() || owner.len() > 256 {
                return Err(FieldError::new("owner", "must be 1..256 characters"));
            }
        }
        check_groups(&self.groups).map_err(|(i, p)| FieldError::new(format!("groups[{i}]"), p))?;
        Ok(())
    }

    /// Checks the times against `now`: a deadline must be in the future (valid-after may be in
    /// the past: it only means "not before").
    pub fn validate_times(&self, now: Timestamp) -> Result<(), FieldError> {
        if let Some(deadline) = self.deadline {
            if deadline <= now {
                return Err(FieldError::new(
                    "deadline",
                    format!("{deadline} is not in the future"),
                ));
            }
        }
        Ok(())
    }
}

/// What `PATCH /v1/tasks/{id}` may change while a task is WAITING; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskUpdate {
    /// New priority, 1..=16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// New valid-after time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after: Option<Timestamp>,
    /// New deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// New required capabilities (replacing the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<BTreeMap<String, String>>,
}

impl TaskUpdate {
    /// `spec` with this update applied (not yet validated).
    pub fn apply(&self, spec: &TaskSpec) -> TaskSpec {
        let mut spec = spec.clone();
        if let Some(p) = self.priority {
            spec.priority = Some(p);
        }
        if let Some(t) = self.valid_after {
            spec.valid_after = Some(t);
        }
        if let Some(t) = self.deadline {
            spec.deadline = Some(t);
        }
        if let Some(caps) = &self.caps {
            spec.caps = caps.clone();
        }
        spec
    }
}

/// Checks group names (the rule for names of environments), returning the index of the first bad
/// one and why.
pub fn check_groups(groups: &[String]) -> Result<(), (usize, String)> {
    if groups.len() > 256 {
        return Err((256, "more than 256 groups".into()));
    }
    for (i, group) in groups.iter().enumerate() {
        check_name(group).map_err(|p| (i, p))?;
    }
    Ok(())
}

fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') {
        return Err("must be relative to the working directory".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.split('/').any(|part| part == "..") {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name (letters, digits, `.`, `_`, `-`; not starting with `.`)"
        ))
    }
}

/// Whether a worker offering `offered` satisfies the capabilities `required` (every key present
/// with the same value).
pub fn caps_satisfied(
    required: &BTreeMap<String, String>,
    offered: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|(k, v)| offered.get(k) == Some(v))
}

/// A task's lifecycle state (Boruta's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    /// Queued, not yet started.
    #[serde(rename = "WAITING")]
    Waiting,
    /// Running on a worker.
    #[serde(rename = "IN PROGRESS")]
    InProgress,
    /// Finished: the result says how.
    #[serde(rename = "DONE")]
    Done,
    /// Cancelled by the user before it started.
    #[serde(rename = "CANCELLED")]
    Cancelled,
    /// Its deadline passed while it was waiting.
    #[serde(rename = "TIMEOUT")]
    Timeout,
    /// No worker that exists can satisfy it.
    #[serde(rename = "INVALID")]
    Invalid,
    /// Its worker failed (too many times): see the reason.
    #[serde(rename = "FAILED")]
    Failed,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::InProgress,
        TaskState::Done,
        TaskState::Cancelled,
        TaskState::Timeout,
        TaskState::Invalid,
        TaskState::Failed,
    ];

    /// The name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Waiting => "WAITING",
            TaskState::InProgress => "IN PROGRESS",
            TaskState::Done => "DONE",
            TaskState::Cancelled => "CANCELLED",
            TaskState::Timeout => "TIMEOUT",
            TaskState::Invalid => "INVALID",
            TaskState::Failed => "FAILED",
        }
    }

    /// Whether the task will never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Waiting | TaskState::InProgress)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskState {
    type Err = FieldError;

    /// Accepts the JSON names, case-insensitively, with `_` or `-` for the space.
    fn from_str(text: &str) -> Result<Self, FieldError> {
        let norm = text.trim().to_ascii_uppercase().replace(['_', '-'], " ");
        TaskState::ALL
            .into_iter()
            .find(|s| s.name() == norm)
            .ok_or_else(|| FieldError::new("state", format!("`{text}` is not a task state")))
    }
}

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// The coordinator launched it on a worker.
    Dispatch,
    /// A worker reported its result.
    Complete,
    /// The user asked to cancel it.
    Cancel,
    /// Its start-by deadline passed.
    DeadlinePassed,
    /// No worker that exists can satisfy it.
    Unsatisfiable,
    /// The worker running it was lost; `attempts` runs were started so far, `max_attempts` allowed.
    WorkerLost {
        /// Runs started so far (including the lost one).
        attempts: u32,
        /// Most runs allowed.
        max_attempts: u32,
    },
}

/// What the coordinator must do for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state.
    Enter(TaskState),
    /// Put it back at the front of the queue (WAITING).
    Requeue,
    /// Stay IN PROGRESS and tell the worker to abort it; its result (status abort) ends it.
    AbortOnWorker,
    /// Nothing changes (a repeated completion: completion is idempotent).
    Unchanged,
}

/// An event that makes no sense in the task's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the task is {state}: {event} applies only to a task that is {allowed}")]
pub struct TransitionError {
    /// The state the task is in.
    pub state: TaskState,
    /// What was attempted.
    pub event: &'static str,
    /// The states it applies in.
    pub allowed: &'static str,
}

/// The lifecycle rule: WAITING -> IN PROGRESS -> DONE, or CANCELLED / TIMEOUT / INVALID while
/// waiting, or back to WAITING / FAILED when the worker is lost.
pub fn transition(state: TaskState, event: TaskEvent) -> Result<Transition, TransitionError> {
    use TaskState::*;
    let refuse = |event, allowed| {
        Err(TransitionError {
            state,
            event,
            allowed,
        })
    };
    match (event, state) {
        (TaskEvent::Dispatch, Waiting) => Ok(Transition::Enter(InProgress)),
        (TaskEvent::Dispatch, _) => refuse("dispatch", "WAITING"),
        // A result is accepted whenever the task has not ended: a worker that kept running it
        // while the coordinator re-queued it still delivers a valid result.
        (TaskEvent::Complete, Waiting | InProgress) => Ok(Transition::Enter(Done)),
        (TaskEvent::Complete, _) => Ok(Transition::Unchanged),
        (TaskEvent::Cancel, Waiting) => Ok(Transition::Enter(Cancelled)),
        (TaskEvent::Cancel, InProgress) => Ok(Transition::AbortOnWorker),
        (TaskEvent::Cancel, _) => refuse("cancel", "WAITING or IN PROGRESS"),
        (TaskEvent::DeadlinePassed, Waiting) => Ok(Transition::Enter(Timeout)),
        (TaskEvent::DeadlinePassed, _) => Ok(Transition::Unchanged),
        (TaskEvent::Unsatisfiable, Waiting) => Ok(Transition::Enter(Invalid)),
        (TaskEvent::Unsatisfiable, _) => Ok(Transition::Unchanged),
        (
            TaskEvent::WorkerLost {
                attempts,
                max_attempts,
            },
            InProgress,
        ) => {
            if attempts < max_attempts {
                Ok(Transition::Requeue)
            } else {
                Ok(Transition::Enter(Failed))
            }
        }
        (TaskEvent::WorkerLost { .. }, _) => Ok(Transition::Unchanged),
    }
}

/// A task as `GET /v1/tasks/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// Its id.
    pub id: TaskId,
    /// Its state.
    pub state: TaskState,
    /// The worker running or that ran it.
    pub worker: Option<String>,
    /// Who submitted it.
    pub owner: Option<String>,
    /// Its priority (1 is most important).
    pub priority: u8,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When it last started on a worker.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Runs started so far (more than one after a lost worker).
    pub attempts: u32,
    /// Why it ended the way it did when the result does not say (FAILED, TIMEOUT, INVALID,
    /// CANCELLED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The result, once DONE.
    pub result: Option<RunResult>,
    /// Not started before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after: Option<Timestamp>,
    /// Start-by time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// Capabilities it requires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caps: BTreeMap<String, String>,
    /// Groups whose workers may run it (any worker when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// One page of `GET /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks, in the order asked for (newest first by default). Results are left out of
    /// listings (`result` is null); fetch one task for it.
    pub tasks: Vec<TaskView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
    /// Tasks matching the filters, on every page.
    #[serde(default)]
    pub total: u64,
    /// Tasks matching the filters beyond this page, in the direction read.
    #[serde(default)]
    pub remaining: u64,
}

/// A worker's state (Boruta's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkerState {
    /// Taken out of service by an operator.
    #[serde(rename = "MAINTENANCE")]
    Maintenance,
    /// Connected and running nothing.
    #[serde(rename = "IDLE")]
    Idle,
    /// Connected and running tasks.
    #[serde(rename = "RUNNING")]
    Running,
    /// Lost (connection closed or silent); stays so until it reconnects.
    #[serde(rename = "FAILED")]
    Failed,
    /// Being prepared (hooks running).
    #[serde(rename = "PREPARE")]
    Prepare,
    /// Doing work for the system.
    #[serde(rename = "BUSY")]
    Busy,
}

impl WorkerState {
    /// The name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Maintenance => "MAINTENANCE",
            WorkerState::Idle => "IDLE",
            WorkerState::Running => "RUNNING",
            WorkerState::Failed => "FAILED",
            WorkerState::Prepare => "PREPARE",
            WorkerState::Busy => "BUSY",
        }
    }
}

impl WorkerState {
    /// Every state.
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Maintenance,
        WorkerState::Idle,
        WorkerState::Running,
        WorkerState::Failed,
        WorkerState::Prepare,
        WorkerState::Busy,
    ];
}

impl FromStr for WorkerState {
    type Err = FieldError;

    /// Accepts the JSON names, case-insensitively.
    fn from_str(text: &str) -> Result<Self, FieldError> {
        let norm = text.trim().to_ascii_uppercase();
        WorkerState::ALL
            .into_iter()
            .find(|s| s.name() == norm)
            .ok_or_else(|| FieldError::new("state", format!("`{text}` is not a worker state")))
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A worker as `GET /v1/workers` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Its stable id (a plain Pythia pool gets one per connection: `pool-<n>`).
    pub id: String,
    /// Its state.
    pub state: WorkerState,
    /// Tasks it runs at once.
    pub capacity: u32,
    /// Tasks it runs now.
    pub running: u32,
    /// Memory it offers, in bytes (0 when not reported).
    pub memory_bytes: u64,
    /// CPU it offers, in milli-CPUs (0 when not reported).
    pub milli_cpus: u64,
    /// Its capabilities (given and detected, e.g. `arch`, `os`).
    pub caps: BTreeMap<String, String>,
    /// Environments it offers.
    pub environments: Vec<String>,
    /// Where it connected from.
    pub address: Option<String>,
    /// When it (last) registered.
    pub connected_at: Option<Timestamp>,
    /// When it was last heard from.
    pub last_seen: Option<Timestamp>,
    /// Why it is FAILED, or the message it was put in MAINTENANCE with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Groups it serves (tasks of these groups, and tasks without groups).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The last run of each of its hooks (`prepare`, `health-check`, `maintenance`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, HookRun>,
}

impl WorkerView {
    /// What a worker registering again as `now` offers otherwise than this view says: its
    /// capabilities, environments (as a set) or resources (capacity, memory, CPU), by name, in
    /// that order. A worker that comes back changed waits for an operator.
    pub fn offer_changes(&self, now: &WorkerView) -> Vec<&'static str> {
        let sorted = |environments: &[String]| {
            let mut environments = environments.to_vec();
            environments.sort();
            environments.dedup();
            environments
        };
        let mut changes = Vec::new();
        if self.caps != now.caps {
            changes.push("capabilities");
        }
        if sorted(&self.environments) != sorted(&now.environments) {
            changes.push("environments");
        }
        if (self.capacity, self.memory_bytes, self.milli_cpus)
            != (now.capacity, now.memory_bytes, now.milli_cpus)
        {
            changes.push("resources");
        }
        changes
    }
}

/// One page of `GET /v1/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPage {
    /// The workers, in the order asked for (by id by default).
    pub workers: Vec<WorkerView>,
    /// Pass as `after` to get the next page; null on the last page.
    #[serde(default)]
    pub next: Option<String>,
    /// Workers matching the filters.
    #[serde(default)]
    pub total: u64,
    /// Workers matching the filters beyond this page.
    #[serde(default)]
    pub remaining: u64,
}

/// The body of `PUT /v1/workers/{id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWorkerState {
    /// `IDLE` or `MAINTENANCE`.
    pub state: WorkerState,
    /// For MAINTENANCE: the message its maintenance hook gets, kept as its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The body of `PUT /v1/workers/{id}/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWorkerGroups {
    /// The groups it serves from now on (replacing the old ones).
    pub groups: Vec<String>,
}

/// One run of a worker's hook, as the worker reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// Whether it exited 0 within its timeout.
    pub ok: bool,
    /// Its output (standard output then standard error), bounded.
    pub output: String,
    /// Why it failed (exit code, signal, timeout), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// When the coordinator heard of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// One chunk of a task's output, as the `GET /v1/tasks/{id}/output` stream carries it (one
/// server-sent event `output` per chunk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// `stdout` or `stderr`.
    pub stream: OutputStream,
    /// The bytes as text (lossy when not UTF-8).
    pub text: String,
    /// The exact bytes, base64, present only when `text` is not exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl OutputChunk {
    /// A chunk holding these bytes.
    pub fn new(stream: OutputStream, data: &[u8]) -> OutputChunk {
        let t = bytes::encode(data);
        OutputChunk {
            stream,
            text: t.text,
            base64: t.base64,
        }
    }

    /// The exact bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        bytes::decode(&self.text, self.base64.as_deref())
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A point in time: milliseconds since the Unix epoch, UTC. RFC 3339 in JSON
/// (`2026-11-22T11:05:32.123Z`); parsing accepts any offset and fractions of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub unix_ms: i64,
}

impl Timestamp {
    /// The time `unix_ms` milliseconds after the epoch.
    pub const fn from_unix_ms(unix_ms: i64) -> Timestamp {
        Timestamp { unix_ms }
    }

    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp {
            unix_ms: self.unix_ms.saturating_add(ms),
        }
    }
}

/// A time that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time like 2026-11-22T11:05:32Z")]
pub struct TimestampError(String);

// Days from 1970-01-01 to the civil date (proleptic Gregorian), and back (Howard Hinnant's
// algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unix_ms.rem_euclid(1000);
        let secs = self.unix_ms.div_euclid(1000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, TimestampError> {
        let bad = || TimestampError(text.to_string());
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = b.get(range).ok_or_else(bad)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(part
                .iter()
                .fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        let mut i = 19;
        let mut ms = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            let frac = &text[start..i.min(start + 3)];
            ms = num(start..start + frac.len())? * 10i64.pow(3 - frac.len() as u32);
        }
        let offset_min = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let off = oh * 60 + om;
                if *sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_min * 60;
        Ok(Timestamp {
            unix_ms: secs * 1000 + ms,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_s_offer_changes_by_part() {
        let before = WorkerView {
            id: "w".into(),
            state: WorkerState::Idle,
            capacity: 2,
            running: 0,
            memory_bytes: 1 << 30,
            milli_cpus: 2000,
            caps: [("arch".to_string(), "x86_64".to_string())].into(),
            environments: vec!["python".into(), "gcc".into()],
            address: None,
            connected_at: None,
            last_seen: None,
            reason: None,
            groups: Vec::new(),
            hooks: BTreeMap::new(),
        };
        let mut now = before.clone();
        now.environments = vec!["gcc".into(), "python".into()];
        now.running = 1;
        now.state = WorkerState::Running;
        assert!(
            before.offer_changes(&now).is_empty(),
            "order and state are no change"
        );
        now.capacity = 3;
        assert_eq!(before.offer_changes(&now), ["resources"]);
        now.caps.insert("disk".into(), "ssd".into());
        now.environments.push("rust".into());
        assert_eq!(
            before.offer_changes(&now),
            ["capabilities", "environments", "resources"]
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let check = |text: &str, ms: Option<i64>| {
            assert_eq!(
                text.parse::<Timestamp>().ok().map(|t| t.unix_ms),
                ms,
                "{text}"
            );
        };
        check("1970-01-01T00:00:00Z", Some(0));
        check("1970-01-01T00:00:01.5Z", Some(1500));
        check("2026-11-22T11:05:32.123Z", Some(1_795_345_532_123));
        check("2026-11-22T12:05:32.123+01:00", Some(1_795_345_532_123));
        check("1969-12-31T23:59:59.999Z", Some(-1));
        check("2000-02-29T00:00:00.123456789Z", Some(951_782_400_123));
        check("2026-13-01T00:00:00Z", None);
        check("2026-11-22 11:05:32", None);
        check("yesterday", None);
        check("2026-11-22T11:05:32.Z", None);
        for ms in [
            0i64,
            -1,
            1_795_345_532_123,
            951_782_400_123,
            4_102_444_800_000,
        ] {
            let t = Timestamp::from_unix_ms(ms);
            assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
        }
        assert_eq!(
            Timestamp::from_unix_ms(1_795_345_532_123).to_string(),
            "2026-11-22T11:05:32.123Z"
        );
    }

    #[test]
    fn states_serialize_as_boruta_names() {
        for state in TaskState::ALL {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(state.name().parse::<TaskState>().ok(), Some(state));
        }
        assert_eq!(
            "in_progress".parse::<TaskState>().ok(),
            Some(TaskState::InProgress)
        );
        assert!("RUNNING".parse::<TaskState>().is_err());
    }

    #[test]
    fn transitions_table() {
        use TaskEvent as E;
        use TaskState::*;
        let check = |state, event, expected: Option<Transition>| {
            assert_eq!(transition(state, event).ok(), expected, "{state} {event:?}");
        };
        let lost = |attempts| E::WorkerLost {
            attempts,
            max_attempts: 3,
        };
        check(Waiting, E::Dispatch, Some(Transition::Enter(InProgress)));
        check(InProgress, E::Dispatch, None);
        check(Done, E::Dispatch, None);
        check(InProgress, E::Complete, Some(Transition::Enter(Done)));
        check(Waiting, E::Complete, Some(Transition::Enter(Done)));
        check(Done, E::Complete, Some(Transition::Unchanged));
        check(Failed, E::Complete, Some(Transition::Unchanged));
        check(Waiting, E::Cancel, Some(Transition::Enter(Cancelled)));
        check(InProgress, E::Cancel, Some(Transition::AbortOnWorker));
        check(Done, E::Cancel, None);
        check(Cancelled, E::Cancel, None);
        check(Waiting, E::DeadlinePassed, Some(Transition::Enter(Timeout)));
        check(InProgress, E::DeadlinePassed, Some(Transition::Unchanged));
        check(Waiting, E::Unsatisfiable, Some(Transition::Enter(Invalid)));
        check(InProgress, lost(1), Some(Transition::Requeue));
        check(InProgress, lost(2), Some(Transition::Requeue));
        check(InProgress, lost(3), Some(Transition::Enter(Failed)));
        check(Waiting, lost(1), Some(Transition::Unchanged));
        check(Done, lost(1), Some(Transition::Unchanged));
    }

    /// Every state against every event. Codes: `W` WAITING, `P` IN PROGRESS, `D` DONE, `C`
    /// CANCELLED, `T` TIMEOUT, `V` INVALID, `F` FAILED enter that state; `q` re-queue, `a` abort
    /// on the worker, `=` unchanged, `!` refused.
    #[test]
    fn transitions_for_every_state_and_event() {
        use TaskState::*;
        let events = [
            TaskEvent::Dispatch,
            TaskEvent::Complete,
            TaskEvent::Cancel,
            TaskEvent::DeadlinePassed,
            TaskEvent::Unsatisfiable,
            TaskEvent::WorkerLost {
                attempts: 1,
                max_attempts: 3,
            },
            TaskEvent::WorkerLost {
                attempts: 3,
                max_attempts: 3,
            },
        ];
        let code = |state| match state {
            Waiting => "W",
            InProgress => "P",
            Done => "D",
            Cancelled => "C",
            Timeout => "T",
            Invalid => "V",
            Failed => "F",
        };
        // Columns: dispatch, complete, cancel, deadline passed, unsatisfiable, worker lost with
        // attempts left, worker lost on the last attempt.
        let table = [
            (Waiting, "P D C T V = ="),
            (InProgress, "! D a = = q F"),
            (Done, "! = ! = = = ="),
            (Cancelled, "! = ! = = = ="),
            (Timeout, "! = ! = = = ="),
            (Invalid, "! = ! = = = ="),
            (Failed, "! = ! = = = ="),
        ];
        assert_eq!(table.len(), TaskState::ALL.len());
        for (state, row) in table {
            let codes: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(codes.len(), events.len());
            for (event, expected) in events.iter().zip(codes) {
                let got = match transition(state, *event) {
                    Ok(Transition::Enter(s)) => code(s),
                    Ok(Transition::Requeue) => "q",
                    Ok(Transition::AbortOnWorker) => "a",
                    Ok(Transition::Unchanged) => "=",
                    Err(_) => "!",
                };
                assert_eq!(got, expected, "{state} {event:?}");
            }
        }
    }

    fn spec(json: &str) -> Result<TaskSpec, String> {
        let spec: TaskSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.field)?;
        Ok(spec)
    }

    #[test]
    fn inline_task_files_are_bounded_together_in_decoded_bytes() {
        let with_files = |sizes: &[usize], base64: bool| {
            let task_files = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| FileSpec {
                    path: format!("dir/file{i}"),
                    contents: if base64 {
                        String::new()
                    } else {
                        "x".repeat(size)
                    },
                    contents_base64: base64.then(|| crate::bytes::to_base64(&vec![7u8; size])),
                    executable: false,
                })
                .collect();
            TaskSpec {
                task_files,
                ..TaskSpec::default()
            }
            .validate()
            .map_err(|e| (e.field, e.problem))
        };
        let max = MAX_TASK_FILES_BYTES;
        for base64 in [false, true] {
            assert_eq!(with_files(&[max], base64), Ok(()), "base64 {base64}");
            assert_eq!(
                with_files(&[max / 2, max - max / 2], base64),
                Ok(()),
                "base64 {base64}"
            );
            for sizes in [vec![max + 1], vec![max, 1], vec![1, max / 2, max / 2]] {
                let got = with_files(&sizes, base64);
                assert!(
                    matches!(&got, Err((field, message))
                        if field == "task_files" && message.contains(&max.to_string())),
                    "{sizes:?} base64 {base64}: {got:?}"
                );
            }
        }
        // The bound counts what the files hold, not their encoding: base64 of `max` bytes is
        // longer than `max` and still fits.
        assert!(crate::bytes::to_base64(&vec![7u8; max]).len() > max);
    }

    #[test]
    fn spec_validation_names_the_field() {
        let check = |json: &str, field: Option<&str>| {
            let got = spec(json).err();
            match field {
                None => assert_eq!(got, None, "{json}"),
                Some(f) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(f)),
                    "{json}: {got:?}"
                ),
            }
        };
        check(r#"{"command":["true"]}"#, None);
        check(
            r#"{"command":["true"],"limits":{"wall_time":"2s","memory":"64M"},"priority":1}"#,
            None,
        );
        check(r#"{"command":[]}"#, Some("command"));
        check(r#"{}"#, Some("command"));
        check(r#"{"command":[""]}"#, Some("command[0]"));
        check(r#"{"command":"true"}"#, Some("invalid type"));
        check(
            r#"{"command":["true"],"limits":{"memory":1}}"#,
            Some("limits.memory"),
        );
        check(
            r#"{"command":["true"],"limits":{"memory":"64Q"}}"#,
            Some("unknown unit"),
        );
        check(r#"{"command":["true"],"priority":17}"#, Some("priority"));
        check(r#"{"command":["true"],"priority":0}"#, Some("priority"));
        check(
            r#"{"command":["true"],"files":[{"path":"../x"}]}"#,
            Some("files[0].path"),
        );
        check(
            r#"{"command":["true"],"files":[{"path":"a","contents_base64":"!!"}]}"#,
            Some("files[0].contents_base64"),
        );
        check(r#"{"command":["true"],"env":{"A=B":"c"}}"#, Some("env.A=B"));
        check(
            r#"{"command":["true"],"environment":"../etc"}"#,
            Some("environment"),
        );
        check(r#"{"command":["true"],"comand":["x"]}"#, Some("comand"));
        check(
            r#"{"command":["true"],"valid_after":"2026-01-01T00:00:00Z","deadline":"2025-01-01T00:00:00Z"}"#,
            Some("deadline"),
        );
        check(
            r#"{"command":["true"],"deadline":"tomorrow"}"#,
            Some("RFC 3339"),
        );
        check(r#"{"taskfs":"hello"}"#, None);
        check(
            r#"{"command":["true"],"environment":"a/b"}"#,
            Some("environment"),
        );
        check(
            r#"{"command":["true"],"environment":""}"#,
            Some("environment"),
        );
        check(r#"{"command":["true"],"environment":"busybox"}"#, None);
    }

    #[test]
    fn caps_match_all_keys() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(caps_satisfied(&map(&[]), &map(&[("arch", "x86_64")])));
        assert!(caps_satisfied(
            &map(&[("arch", "x86_64")]),
            &map(&[("arch", "x86_64"), ("os", "linux")])
        ));
        assert!(!caps_satisfied(
            &map(&[("arch", "aarch64")]),
            &map(&[("arch", "x86_64")])
        ));
        assert!(!caps_satisfied(&map(&[("gpu", "1")]), &map(&[])));
    }

    #[test]
    fn output_chunks_are_binary_safe() {
        let c = OutputChunk::new(OutputStream::Stderr, &[0xff, b'a']);
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert!(json.contains("\"stream\":\"stderr\""), "{json}");
        let back: Option<OutputChunk> = serde_json::from_str(&json).ok();
        assert_eq!(back.and_then(|c| c.bytes().ok()), Some(vec![0xff, b'a']));
    }
}
