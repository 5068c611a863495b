//! Durable state behind one trait, so the queue logic does not know which database holds it.
//!
//! The coordinator keeps the live queue in memory and writes every change through [`Store::apply`]
//! (one transaction per batch: group commit); it reads the store at start-up to rebuild the queue
//! and to answer questions about finished tasks.

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
}

/// A listing request (keyset pagination on the id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only this worker.
    pub worker: Option<String>,
    /// Continue after this id (in the listing's order).
    pub after: Option<TaskId>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Most rows.
    pub limit: u32,
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
    /// A page of tasks, without their results.
    fn list(&mut self, query: &ListQuery) -> Result<Vec<TaskRecord>, StoreError>;
    /// The largest id ever assigned (0 when none).
    fn max_task_id(&mut self) -> Result<TaskId, StoreError>;
    /// Every worker ever registered.
    fn workers(&mut self) -> Result<Vec<WorkerView>, StoreError>;
}
