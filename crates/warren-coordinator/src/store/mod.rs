//! Durable state behind one trait, so the queue logic does not know which database holds it.
//!
//! The coordinator keeps the live queue in memory and writes every change through [`Store::apply`]
//! (one transaction per batch: group commit); it reads the store at start-up to rebuild the queue
//! and to answer questions about finished tasks.

use std::collections::BTreeMap;
use std::fmt;

use warren_core::result::RunResult;
use warren_core::task::{TaskId, TaskSpec, TaskState, Timestamp, WorkerView};

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{Durability, SqliteStore};

/// Where a task came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The HTTP API: lives until it ends, across restarts.
    Api,
    /// A Pythia frontend connection: dropped when that connection goes.
    Frontend,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Frontend => "frontend",
        }
    }

    fn parse(name: &str) -> Origin {
        if name == "frontend" {
            Origin::Frontend
        } else {
            Origin::Api
        }
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// Its state.
    pub state: TaskState,
    /// What it runs, limits resolved.
    pub spec: TaskSpec,
    /// Who submitted it.
    pub owner: String,
    /// 1..16.
    pub priority: u8,
    /// Order within its priority (smaller first; re-queued tasks get negative orders).
    pub queue_order: i64,
    /// The worker running or that ran it.
    pub worker: Option<String>,
    /// Runs started.
    pub attempts: u32,
    /// Accepted at.
    pub created_at: Timestamp,
    /// Last started at.
    pub started_at: Option<Timestamp>,
    /// Ended at.
    pub finished_at: Option<Timestamp>,
    /// Why it ended without a result, or why it was re-queued.
    pub reason: Option<String>,
    /// Its result, once DONE.
    pub result: Option<RunResult>,
    /// Where it came from.
    pub origin: Origin,
    /// The client's key for this submission (`Idempotency-Key`): one task per key.
    pub idempotency_key: Option<String>,
}

impl TaskRecord {
    /// A task just accepted: WAITING, in the queue in the order of its id, never run.
    pub fn accepted(
        id: TaskId,
        spec: TaskSpec,
        owner: String,
        origin: Origin,
        created_at: Timestamp,
    ) -> TaskRecord {
        TaskRecord {
            id,
            state: TaskState::Waiting,
            priority: spec.effective_priority(),
            owner,
            spec,
            queue_order: id as i64,
            worker: None,
            attempts: 0,
            created_at,
            started_at: None,
            finished_at: None,
            reason: None,
            result: None,
            origin,
            idempotency_key: None,
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new task.
    Insert(Box<TaskRecord>),
    /// Started on a worker.
    Dispatch {
        /// The task.
        id: TaskId,
        /// The worker.
        worker: String,
        /// Runs started, including this one.
        attempts: u32,
        /// When.
        started_at: Timestamp,
    },
    /// Back to WAITING (its worker was lost).
    Requeue {
        /// The task.
        id: TaskId,
        /// Its new place in the queue.
        queue_order: i64,
        /// Why.
        reason: String,
    },
    /// Ended.
    Finish {
        /// The task.
        id: TaskId,
        /// Terminal state.
        state: TaskState,
        /// The worker that ran it, if any.
        worker: Option<String>,
        /// The result, when DONE.
        result: Option<Box<RunResult>>,
        /// Why, when not DONE.
        reason: Option<String>,
        /// When.
        finished_at: Timestamp,
    },
    /// A worker's latest description.
    Worker(Box<WorkerView>),
    /// A worker deregistered.
    RemoveWorker(String),
    /// Task ids up to this one are given out or may be: a coordinator started later never
    /// gives them out again (a worker may know one of a task whose insert never committed).
    ReserveIds(TaskId),
    /// A waiting task's scheduling fields changed (priority, times, capabilities).
    Update {
        /// The task.
        id: TaskId,
        /// Its new priority.
        priority: u8,
        /// Its new spec.
        spec: Box<TaskSpec>,
    },
}

/// What a listing is sorted by (then by id, which makes the order total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// The id (submission order).
    #[default]
    Id,
    /// The priority (1 first when ascending).
    Priority,
    /// The deadline (tasks without one first when ascending).
    Deadline,
    /// The valid-after time (tasks without one first when ascending).
    ValidAfter,
    /// The state, in lifecycle order (WAITING first when ascending).
    State,
}

impl SortKey {
    /// Every key, as the API names them.
    pub const NAMES: [&'static str; 5] = ["id", "priority", "deadline", "valid_after", "state"];

    /// The key named `name` in the API.
    pub fn parse(name: &str) -> Option<SortKey> {
        Some(match name {
            "id" => SortKey::Id,
            "priority" => SortKey::Priority,
            "deadline" => SortKey::Deadline,
            "valid_after" => SortKey::ValidAfter,
            "state" => SortKey::State,
            _ => return None,
        })
    }
}

/// Where a page starts: just after, or just before, a task (in the listing's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paginator {
    /// The page follows this task.
    After(TaskId),
    /// The page precedes this task.
    Before(TaskId),
}

impl Paginator {
    /// The task it names.
    pub fn id(self) -> TaskId {
        match self {
            Paginator::After(id) | Paginator::Before(id) => id,
        }
    }
}

/// A task's value for a sort key, comparable the same way in SQL and in memory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    /// An integer key (id, priority, state's position).
    Int(i64),
    /// A time (RFC 3339, fixed width, so text order is time order; empty when absent).
    Text(String),
}

impl fmt::Display for SortValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SortValue::Int(v) => write!(f, "{v}"),
            SortValue::Text(v) => f.write_str(v),
        }
    }
}

/// The position of a state in lifecycle order.
pub fn state_rank(state: TaskState) -> i64 {
    TaskState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or(TaskState::ALL.len()) as i64
}

impl SortKey {
    /// `record`'s value for this key.
    pub fn value(self, record: &TaskRecord) -> SortValue {
        let time =
            |t: Option<Timestamp>| SortValue::Text(t.map(|t| t.to_string()).unwrap_or_default());
        match self {
            SortKey::Id => SortValue::Int(record.id as i64),
            SortKey::Priority => SortValue::Int(i64::from(record.priority)),
            SortKey::Deadline => time(record.spec.deadline),
            SortKey::ValidAfter => time(record.spec.valid_after),
            SortKey::State => SortValue::Int(state_rank(record.state)),
        }
    }
}

/// A listing request: filters (all must hold; an empty list filters nothing), an order, and
/// keyset pagination on (sort key, id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only these tasks.
    pub ids: Vec<TaskId>,
    /// Only tasks in one of these states.
    pub states: Vec<TaskState>,
    /// Only tasks of one of these priorities.
    pub priorities: Vec<u8>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only this worker.
    pub worker: Option<String>,
    /// Only tasks of at least one of these groups.
    pub groups: Vec<String>,
    /// Only tasks requiring all of these capabilities (same values).
    pub caps: BTreeMap<String, String>,
    /// The order.
    pub sort: SortKey,
    /// Smallest first instead of largest first.
    pub ascending: bool,
    /// Where the page starts.
    pub paginator: Option<Paginator>,
    /// Most rows.
    pub limit: u32,
}

impl ListQuery {
    /// Whether `record` passes the filters.
    pub fn keeps(&self, record: &TaskRecord) -> bool {
        (self.ids.is_empty() || self.ids.contains(&record.id))
            && (self.states.is_empty() || self.states.contains(&record.state))
            && (self.priorities.is_empty() || self.priorities.contains(&record.priority))
            && self.owner.as_ref().is_none_or(|o| &record.owner == o)
            && self
                .worker
                .as_ref()
                .is_none_or(|w| record.worker.as_ref() == Some(w))
            && (self.groups.is_empty()
                || record.spec.groups.iter().any(|g| self.groups.contains(g)))
            && self
                .caps
                .iter()
                .all(|(k, v)| record.spec.caps.get(k) == Some(v))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The tasks, without their results, in the order asked for.
    pub records: Vec<TaskRecord>,
    /// Tasks passing the filters.
    pub total: u64,
    /// Tasks passing the filters beyond this page, in the direction read.
    pub remaining: u64,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back.
    #[error("corrupt record {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A listing's paginator names a task that does not exist.
    #[error("no task {0}")]
    NoSuchTask(TaskId),
    /// Creating the data directory or file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Durable state. Implementations: [`SqliteStore`] (the default), [`MemoryStore`] (tests).
pub trait Store: Send {
    /// Applies the writes in one transaction: all or nothing.
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    /// Tasks WAITING or IN PROGRESS, in id order.
    fn active_tasks(&mut self) -> Result<Vec<TaskRecord>, StoreError>;
    /// One task.
    fn task(&mut self, id: TaskId) -> Result<Option<TaskRecord>, StoreError>;
    /// The task submitted with this idempotency key, if any.
    fn task_by_key(&mut self, key: &str) -> Result<Option<TaskId>, StoreError>;
    /// A page of tasks, without their results; [`StoreError::NoSuchTask`] when the paginator
    /// names a task that does not exist.
    fn list(&mut self, query: &ListQuery) -> Result<ListPage, StoreError>;
    /// The largest id ever assigned or reserved ([`Write::ReserveIds`]; 0 when none).
    fn max_task_id(&mut self) -> Result<TaskId, StoreError>;
    /// Every worker ever registered.
    fn workers(&mut self) -> Result<Vec<WorkerView>, StoreError>;
}

/// A listing over records in memory, the reference the SQL listing must agree with.
pub fn select<'a>(
    records: impl Iterator<Item = &'a TaskRecord>,
    paginator_value: Option<SortValue>,
    query: &ListQuery,
) -> ListPage {
    let key = |r: &TaskRecord| (query.sort.value(r), r.id);
    let mut matching: Vec<&TaskRecord> = records.filter(|r| query.keeps(r)).collect();
    let total = matching.len() as u64;
    matching.sort_by_key(|r| key(r));
    if !query.ascending {
        matching.reverse();
    }
    // From here on, `matching` is in the listing's order.
    let position = |r: &TaskRecord| -> std::cmp::Ordering {
        let (value, id) = (
            paginator_value.clone().unwrap_or(SortValue::Int(0)),
            query.paginator.map(Paginator::id).unwrap_or(0),
        );
        let ord = key(r).cmp(&(value, id));
        if query.ascending {
            ord
        } else {
            ord.reverse()
        }
    };
    let limit = query.limit as usize;
    let (records, beyond) = match query.paginator {
        None => {
            let beyond = matching.len().saturating_sub(limit);
            (matching.into_iter().take(limit).collect::<Vec<_>>(), beyond)
        }
        Some(Paginator::After(_)) => {
            let after: Vec<&TaskRecord> = matching
                .into_iter()
                .filter(|r| position(r) == std::cmp::Ordering::Greater)
                .collect();
            let beyond = after.len().saturating_sub(limit);
            (after.into_iter().take(limit).collect(), beyond)
        }
        Some(Paginator::Before(_)) => {
            let before: Vec<&TaskRecord> = matching
                .into_iter()
                .filter(|r| position(r) == std::cmp::Ordering::Less)
                .collect();
            let beyond = before.len().saturating_sub(limit);
            (before.into_iter().skip(beyond).collect(), beyond)
        }
    };
    ListPage {
        records: records
            .into_iter()
            .map(|r| TaskRecord {
                result: None,
                ..r.clone()
            })
            .collect(),
        total,
        remaining: beyond as u64,
    }
}
