//! The queue: live state in memory, every change written through the group-commit writer,
//! dispatch driven by events (a task arrives, a slot frees, a worker registers, a timer fires).
//!
//! Locking: one mutex over [`State`], held only for in-memory work (never across an await or a
//! database call). Messages to peers are queued on unbounded channels, so sending never blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use warren_core::environment;
use warren_core::limits::Limits;
use warren_core::matcher::{Matcher, Requirements, WaitingTask, WorkerLoad, WorkerProfile};
use warren_core::result::{RunResult, Status};
use warren_core::stats::StatSample;
use warren_core::task::{
    caps_satisfied, check_groups, transition, FieldError, HookRun, TaskEvent, TaskId, TaskSpec,
    TaskState, TaskUpdate, TaskView, Timestamp, Transition, WorkerState, WorkerView,
};
use warren_core::worker_state::{self, WorkerEvent, WorkerTransition, WorkerTransitionError};
use warren_proto::{
    hook, Done, HookReport, Launch, Message, MessageSender, PythiaStatus, PythiaTask, Register,
    RunTask,
};

use crate::clock::Clock;
use crate::hub::{Hub, HubEvent};
use crate::store::{ListPage, ListQuery, Origin, Store, StoreError, TaskRecord, Write};
use crate::writer::Writer;

/// Queue behaviour settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Runs allowed per task when workers are lost (default 3).
    pub max_attempts: u32,
    /// Most tasks WAITING at once; more are refused ("Queue full").
    pub max_waiting: usize,
    /// Limits for whatever a task leaves unset.
    pub default_limits: Limits,
    /// How long tasks left IN PROGRESS by a previous coordinator wait for their worker to come
    /// back before they are re-queued.
    pub orphan_grace: Duration,
    /// After a restart, how long dispatch waits for the workers that were connected before to
    /// come back and say what they still run (so nothing runs twice needlessly); it resumes as
    /// soon as they all have.
    pub reconnect_hold: Duration,
    /// How long a task no registered worker could ever run stays WAITING (for such a worker to
    /// register) before it becomes INVALID.
    pub invalid_after: Duration,
    /// How long a worker set to MAINTENANCE lets its running tasks finish before they are
    /// aborted and re-queued.
    pub drain_timeout: Duration,
}

/// A start-by deadline for tasks that give none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_attempts: 3,
            max_waiting: 1_000_000,
            default_limits: Limits::sandbox_defaults(),
            orphan_grace: Duration::from_secs(90),
            reconnect_hold: Duration::from_secs(2),
            invalid_after: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(300),
        }
    }
}

/// Why a request to the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is wrong.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// No such task.
    #[error("no task {0}")]
    NotFound(TaskId),
    /// No such worker.
    #[error("no worker `{0}`")]
    NoWorker(String),
    /// The task is in a state where this does not apply.
    #[error("{0}")]
    Conflict(String),
    /// Too many tasks waiting.
    #[error("queue full: {0} tasks are waiting")]
    QueueFull(usize),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e.to_string())
    }
}

struct Active {
    record: TaskRecord,
    hub: Arc<Hub>,
    /// The frontend connection and its own id, for tasks launched by a Pythia frontend.
    frontend: Option<(u64, String)>,
}

impl Active {
    /// A task of the API (no frontend) with a fresh output hub.
    fn new(record: TaskRecord) -> Active {
        Active {
            record,
            hub: Arc::new(Hub::default()),
            frontend: None,
        }
    }
}

struct WorkerConn {
    conn_id: u64,
    tx: MessageSender,
    /// A Warren worker (sent `-register`) rather than a plain Pythia pool.
    warren: bool,
    /// It answers `-prepare` and `-maintenance` with `-hook`.
    hooks: bool,
}

struct WorkerEntry {
    view: WorkerView,
    conn: Option<WorkerConn>,
    running: HashSet<TaskId>,
    /// While BUSY: the message its maintenance hook gets once its tasks have drained.
    maintenance_note: Option<String>,
    /// Tasks aborted on it by a drain and re-queued: their results from it are dropped.
    drained: HashSet<TaskId>,
    /// When its pending drain timeout ends (while BUSY with tasks still running). A drain timer
    /// that fires at another time is from an earlier BUSY period and does nothing.
    drain_at: Option<Timestamp>,
    /// Only a stand-in for the worker of tasks left IN PROGRESS, not a worker that registered:
    /// its first registration is that of a new worker.
    stand_in: bool,
}

impl WorkerEntry {
    fn new(view: WorkerView) -> WorkerEntry {
        WorkerEntry {
            view,
            conn: None,
            running: HashSet::new(),
            maintenance_note: None,
            drained: HashSet::new(),
            drain_at: None,
            stand_in: false,
        }
    }

    /// Whether it may be given tasks.
    fn in_service(&self) -> bool {
        self.conn.is_some() && matches!(self.view.state, WorkerState::Idle | WorkerState::Running)
    }
}

/// Something that happens at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A waiting task's valid-after time or deadline.
    Task(TaskId),
    /// A waiting task that no registered worker could run: INVALID if that still holds.
    Unsatisfiable(TaskId),
    /// A BUSY worker's drain timeout: its running tasks are aborted and re-queued.
    Drain(String),
    /// The hold on dispatch after a restart ends.
    Hold,
}

struct Frontend {
    tx: MessageSender,
    ids: HashMap<String, TaskId>,
}

#[derive(Default)]
struct State {
    tasks: HashMap<TaskId, Active>,
    queue: BTreeSet<(u8, i64, TaskId)>,
    /// Times at which something is due: a heap of deadlines the timer task sleeps until.
    timers: BTreeSet<(Timestamp, Timer)>,
    next_id: TaskId,
    next_front: i64,
    workers: BTreeMap<String, WorkerEntry>,
    frontends: HashMap<u64, Frontend>,
    next_conn: u64,
    /// Workers connected before a restart that have not reconnected yet.
    awaiting: HashSet<String>,
    /// Dispatch waits for them until then.
    hold_until: Option<Timestamp>,
    /// Idempotency keys of submissions not yet committed.
    submitting: HashSet<String>,
    /// The waiting tasks and the workers, indexed for matching.
    matcher: Matcher,
    /// Workers changed since the matcher last saw them.
    touched: BTreeSet<String>,
    /// Ids up to this one are reserved in the store (committed). A task of a Pythia frontend
    /// starts before its insert is committed (the protocol has no answer to wait for): with
    /// such an id, a worker that ran it cannot report its result for another task after a
    /// restart, since no later coordinator gives the id out again.
    ids_durable: TaskId,
    /// Ids up to this one are reserved or being reserved.
    ids_requested: TaskId,
    /// When the grace period of each waiting task no registered worker could run ends. A task
    /// that some worker could run again loses its entry (and timer), so a later grace period
    /// starts from scratch.
    invalid_at: HashMap<TaskId, Timestamp>,
}

/// What a change under the state lock leaves to do: writes for the store, and what follows
/// them.
#[derive(Default)]
struct Effects {
    writes: Vec<Write>,
    finished: Vec<TaskId>,
    /// Results to acknowledge to their worker once recorded.
    acks: Vec<(MessageSender, String)>,
    timers_changed: bool,
}

/// Task ids are reserved in the store this many at a time, ahead of use.
const ID_BLOCK: TaskId = 4096;
/// A new block is asked for when fewer ids than this are left in the reserved ones.
const ID_LOW_WATER: TaskId = 1024;

/// The coordinator's queue service, shared by the HTTP API and the queue port.
pub struct Service {
    state: Mutex<State>,
    writer: Writer,
    reader: Mutex<Box<dyn Store>>,
    clock: Arc<dyn Clock>,
    config: QueueConfig,
    timers: Notify,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What workers are listed sorted by (then by id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkerSort {
    /// The id.
    #[default]
    Id,
    /// The state.
    State,
}

impl WorkerSort {
    /// Every key, as the API names them.
    pub const NAMES: [&'static str; 2] = ["id", "state"];

    /// The key named `name` in the API.
    pub fn parse(name: &str) -> Option<WorkerSort> {
        match name {
            "id" => Some(WorkerSort::Id),
            "state" => Some(WorkerSort::State),
            _ => None,
        }
    }
}

/// Where a page of workers starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerPaginator {
    /// Just after this worker.
    After(String),
    /// Just before this worker.
    Before(String),
}

/// A listing of workers: filters (all must hold; empty filters nothing), order, page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerQuery {
    /// Only these workers.
    pub ids: Vec<String>,
    /// Only workers in one of these states.
    pub states: Vec<WorkerState>,
    /// Only workers in at least one of these groups.
    pub groups: Vec<String>,
    /// Only workers offering all of these capabilities.
    pub caps: BTreeMap<String, String>,
    /// The order.
    pub sort: WorkerSort,
    /// Smallest first.
    pub ascending: bool,
    /// Where the page starts.
    pub paginator: Option<WorkerPaginator>,
    /// Most workers.
    pub limit: u32,
}

impl WorkerQuery {
    fn keeps(&self, w: &WorkerView) -> bool {
        (self.ids.is_empty() || self.ids.contains(&w.id))
            && (self.states.is_empty() || self.states.contains(&w.state))
            && (self.groups.is_empty() || w.groups.iter().any(|g| self.groups.contains(g)))
            && caps_satisfied(&self.caps, &w.caps)
    }
}

/// How a worker introduced itself.
#[derive(Debug, Clone)]
pub enum Hello {
    /// A Warren worker's `-register`.
    Warren(Register),
    /// A plain Pythia pool's `register-pool`.
    Pool {
        /// Its capacity.
        capacity: u32,
    },
}

/// Where to read a task's output from.
#[derive(Debug)]
pub enum OutputSource {
    /// Live (or recently ended) events.
    Live(Arc<Hub>),
    /// The task ended earlier: its view holds the result.
    Finished(Box<TaskView>),
}

fn view_of(record: &TaskRecord, result: Option<RunResult>) -> TaskView {
    TaskView {
        id: record.id,
        state: record.state,
        worker: record.worker.clone(),
        owner: Some(record.owner.clone()),
        priority: record.priority,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        attempts: record.attempts,
        reason: record.reason.clone(),
        command: record.spec.command.clone(),
        result,
        valid_after: record.spec.valid_after,
        deadline: record.spec.deadline,
        caps: record.spec.caps.clone(),
        groups: record.spec.groups.clone(),
    }
}

fn parse_id(id: &str) -> Option<TaskId> {
    id.parse().ok()
}

/// A Warren result (or its absence) as a Pythia frontend reads it.
pub fn pythia_done(
    id: String,
    result: Option<&RunResult>,
    state: TaskState,
    reason: Option<&str>,
) -> Done {
    match result {
        Some(r) => Done::from_result(id, r),
        None => {
            let status = match state {
                TaskState::Cancelled => PythiaStatus::Abort,
                TaskState::Invalid => PythiaStatus::Fatal,
                _ => PythiaStatus::Error,
            };
            Done {
                id,
                status: status.name().to_string(),
                output: reason.unwrap_or_default().to_string(),
            }
        }
    }
}

impl State {
    fn waiting(&self) -> usize {
        self.queue.len()
    }

    fn enqueue(&mut self, id: TaskId, now: Timestamp, fx: &mut Effects) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let r = &task.record;
        self.queue.insert((r.priority, r.queue_order, id));
        for t in task_times(&r.spec) {
            if t > now {
                self.timers.insert((t, Timer::Task(id)));
                fx.timers_changed = true;
            }
        }
        self.matcher.add_task(WaitingTask {
            id,
            priority: r.priority,
            order: r.queue_order,
            requirements: requirements(&r.spec),
            valid_after: r.spec.valid_after,
            deadline: r.spec.deadline,
        });
    }

    fn dequeue(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id) {
            let r = &task.record;
            self.queue.remove(&(r.priority, r.queue_order, id));
            for t in task_times(&r.spec) {
                self.timers.remove(&(t, Timer::Task(id)));
            }
        }
        self.cancel_invalid_timer(id);
        self.matcher.remove_task(id);
    }

    fn cancel_invalid_timer(&mut self, id: TaskId) {
        if let Some(at) = self.invalid_at.remove(&id) {
            self.timers.remove(&(at, Timer::Unsatisfiable(id)));
        }
    }

    fn start_invalid_timer(&mut self, id: TaskId, at: Timestamp, fx: &mut Effects) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.invalid_at.entry(id) {
            e.insert(at);
            self.timers.insert((at, Timer::Unsatisfiable(id)));
            fx.timers_changed = true;
        }
    }

    fn cancel_drain_timer(&mut self, worker: &str) {
        if let Some(at) = self.workers.get_mut(worker).and_then(|w| w.drain_at.take()) {
            self.timers.remove(&(at, Timer::Drain(worker.to_string())));
        }
    }

    /// Marks a worker for the matcher to see again (what it offers, its state or its load).
    fn touch(&mut self, worker: &str) {
        if !self.touched.contains(worker) {
            self.touched.insert(worker.to_string());
        }
    }

    /// A task launched through the matcher ended on `worker`, reserving `(memory, milli_cpus)`:
    /// its slot and reservations go back to the matcher without recounting the worker (the hot
    /// path of every completion).
    fn release(&mut self, worker: &str, (memory, cpus): (Option<u64>, Option<u64>)) {
        if self.touched.contains(worker) {
            return; // recounted whole before the next walk anyway
        }
        let (Some(w), Some(mut load)) = (self.workers.get(worker), self.matcher.load(worker))
        else {
            self.touch(worker);
            return;
        };
        load.available = w.in_service();
        load.free_slots = w.view.capacity.saturating_sub(w.running.len() as u32);
        load.reserved_memory = load.reserved_memory.saturating_sub(memory.unwrap_or(0));
        load.reserved_milli_cpus = load.reserved_milli_cpus.saturating_sub(cpus.unwrap_or(0));
        self.matcher.update_load(worker, load);
    }

    /// Tells the matcher about every worker changed since it last looked.
    fn sync_workers(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            let Some(w) = self.workers.get(&id) else {
                self.matcher.remove_worker(&id);
                continue;
            };
            let warren = w.conn.as_ref().is_none_or(|c| c.warren);
            let profile = WorkerProfile {
                id: id.clone(),
                caps: w.view.caps.clone(),
                groups: w.view.groups.iter().cloned().collect(),
                // `host` is offered by every worker, listed or not.
                environments: warren.then(|| {
                    w.view
                        .environments
                        .iter()
                        .cloned()
                        .chain([environment::HOST.to_string()])
                        .collect()
                }),
                runs_commands: warren,
                memory: w.view.memory_bytes,
                milli_cpus: w.view.milli_cpus,
            };
            let limits = |t: &TaskId| self.tasks.get(t).map(|t| &t.record.spec.limits);
            let load = WorkerLoad {
                available: w.in_service(),
                free_slots: w.view.capacity.saturating_sub(w.running.len() as u32),
                reserved_memory: w
                    .running
                    .iter()
                    .filter_map(limits)
                    .filter_map(|l| l.memory)
                    .sum(),
                reserved_milli_cpus: w
                    .running
                    .iter()
                    .filter_map(limits)
                    .filter_map(|l| l.cpus)
                    .sum(),
            };
            self.matcher.upsert_worker(profile, load);
        }
    }

    /// Ends a task that did not run to a result (CANCELLED, TIMEOUT, INVALID, FAILED) or ends it
    /// with a result (DONE). The in-memory entry goes when the change is committed.
    fn finish(
        &mut self,
        id: TaskId,
        state: TaskState,
        result: Option<RunResult>,
        reason: Option<String>,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        self.dequeue(id);
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let Some(worker) = task
            .record
            .worker
            .as_ref()
            .and_then(|w| self.workers.get_mut(w))
        {
            worker.running.remove(&id);
            if !self.touched.contains(&worker.view.id) {
                self.touched.insert(worker.view.id.clone());
            }
        }
        task.record.state = state;
        task.record.finished_at = Some(now);
        task.record.reason = reason.clone();
        fx.writes.push(Write::Finish {
            id,
            state,
            worker: task.record.worker.clone(),
            result: result.clone().map(Box::new),
            reason,
            finished_at: now,
        });
        task.record.result = result;
        fx.finished.push(id);
    }

    fn lose_task(
        &mut self,
        id: TaskId,
        why: &str,
        max_attempts: u32,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let attempts = task.record.attempts;
        let worker = task.record.worker.clone().unwrap_or_default();
        match transition(
            task.record.state,
            TaskEvent::WorkerLost {
                attempts,
                max_attempts,
            },
        ) {
            Ok(Transition::Requeue) => {
                let reason = format!("worker {worker} lost ({why}); re-queued after attempt {attempts} of {max_attempts}");
                self.requeue(id, reason, now, fx);
            }
            Ok(Transition::Enter(TaskState::Failed)) => {
                let reason =
                    format!("worker {worker} lost ({why}) on attempt {attempts} of {max_attempts}");
                self.finish(id, TaskState::Failed, None, Some(reason), now, fx);
            }
            _ => {}
        }
    }

    /// Puts a task that was IN PROGRESS back at the front of the queue.
    fn requeue(&mut self, id: TaskId, reason: String, now: Timestamp, fx: &mut Effects) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let Some(w) = task
            .record
            .worker
            .take()
            .and_then(|w| self.workers.get_mut(&w))
        {
            w.running.remove(&id);
            if !self.touched.contains(&w.view.id) {
                self.touched.insert(w.view.id.clone());
            }
        }
        self.next_front -= 1;
        let order = self.next_front;
        task.record.state = TaskState::Waiting;
        task.record.queue_order = order;
        task.record.reason = Some(reason.clone());
        fx.writes.push(Write::Requeue {
            id,
            queue_order: order,
            reason,
        });
        self.enqueue(id, now, fx);
    }

    fn send_to_worker(&self, worker: &str, message: Message) -> bool {
        match self.workers.get(worker).and_then(|w| w.conn.as_ref()) {
            Some(conn) => conn.tx.send(message),
            None => false,
        }
    }

    /// Matches waiting tasks to free slots and launches them.
    fn dispatch(&mut self, now: Timestamp, fx: &mut Effects) {
        self.sync_workers();
        if let Some(until) = self.hold_until {
            if now < until && !self.awaiting.is_empty() {
                return;
            }
            self.hold_until = None;
        }
        let launches = self.matcher.next_launches(now);
        for launch in launches {
            // Re-check before applying; what cannot be applied goes back to the matcher.
            let Some(task) = self.tasks.get(&launch.task) else {
                continue;
            };
            if transition(task.record.state, TaskEvent::Dispatch).is_err() {
                continue;
            }
            // A run aborted there that has not reported yet holds the task's id on that worker:
            // it starts there again only once that result is in.
            if self
                .workers
                .get(&launch.worker)
                .is_none_or(|w| w.conn.is_none() || w.drained.contains(&launch.task))
            {
                self.dequeue(launch.task);
                self.enqueue(launch.task, now, fx);
                self.touch(&launch.worker);
                continue;
            }
            self.dequeue(launch.task);
            let Some(worker) = self.workers.get_mut(&launch.worker) else {
                continue;
            };
            let Some(conn) = worker.conn.as_ref() else {
                continue;
            };
            let Some(task) = self.tasks.get_mut(&launch.task) else {
                continue;
            };
            task.record.state = TaskState::InProgress;
            task.record.worker = Some(launch.worker.clone());
            task.record.attempts += 1;
            task.record.started_at = Some(now);
            let message = if conn.warren {
                Message::RunTask(RunTask {
                    id: launch.task.to_string(),
                    spec: task.record.spec.clone(),
                })
            } else {
                Message::Launch(Launch {
                    id: launch.task.to_string(),
                    task: PythiaTask::from_spec(&task.record.spec),
                    input: task.record.spec.stdin.clone().unwrap_or_default(),
                })
            };
            conn.tx.send(message);
            worker.running.insert(launch.task);
            worker.view.running = worker.running.len() as u32;
            worker.view.state = WorkerState::Running;
            fx.writes.push(Write::Dispatch {
                id: launch.task,
                worker: launch.worker,
                attempts: task.record.attempts,
                started_at: now,
            });
        }
    }

    fn refresh_worker_states(&mut self) {
        for w in self.workers.values_mut() {
            w.view.running = w.running.len() as u32;
            if w.in_service() {
                w.view.state = if w.running.is_empty() {
                    WorkerState::Idle
                } else {
                    WorkerState::Running
                };
            }
        }
    }
}

/// The times at which a waiting task's startability changes: its valid-after time, and just past
/// its deadline.
fn task_times(spec: &TaskSpec) -> impl Iterator<Item = Timestamp> {
    [spec.valid_after, spec.deadline.map(|d| d.plus_ms(1))]
        .into_iter()
        .flatten()
}

/// What a task needs from a worker, for the matcher (the owner's groups are the task's).
fn requirements(spec: &TaskSpec) -> Requirements {
    Requirements::from_spec(spec, spec.groups.iter().cloned().collect())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Worker lifecycle: MAINTENANCE -> PREPARE -> IDLE <-> RUNNING, -> BUSY -> MAINTENANCE, and
/// FAILED from anywhere. Hooks run on the worker; one that does not run hooks (a plain pool, an
/// older worker) moves through PREPARE and BUSY at once.
impl State {
    fn persist_worker(&mut self, id: &str, fx: &mut Effects) {
        self.touch(id);
        if let Some(w) = self.workers.get(id) {
            // Plain pools get a new id per connection: nothing of theirs is worth keeping.
            if w.conn.as_ref().is_none_or(|c| c.warren) {
                fx.writes.push(Write::Worker(Box::new(w.view.clone())));
            }
        }
    }

    /// PREPARE: the worker runs its prepare hook, and is IDLE when it succeeds.
    fn begin_prepare(&mut self, id: &str, fx: &mut Effects) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        w.view.state = WorkerState::Prepare;
        w.view.reason = None;
        w.maintenance_note = None;
        match w.conn.as_ref() {
            Some(conn) if conn.hooks => {
                conn.tx.send(Message::Prepare);
            }
            _ => w.view.state = WorkerState::Idle,
        }
        self.refresh_worker_states();
        self.persist_worker(id, fx);
    }

    /// BUSY: no new work; what runs may finish within `drain`, then the maintenance hook runs
    /// with `note`, then MAINTENANCE.
    fn begin_maintenance(
        &mut self,
        id: &str,
        note: String,
        now: Timestamp,
        drain: Duration,
        fx: &mut Effects,
    ) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        w.view.state = WorkerState::Busy;
        w.view.reason = (!note.is_empty()).then(|| note.clone());
        w.maintenance_note = Some(note);
        let idle = w.running.is_empty();
        self.cancel_drain_timer(id);
        if idle {
            self.run_maintenance_hook(id, fx);
        } else {
            let at = now.plus_ms(ms(drain));
            if let Some(w) = self.workers.get_mut(id) {
                w.drain_at = Some(at);
            }
            self.timers.insert((at, Timer::Drain(id.to_string())));
            fx.timers_changed = true;
        }
        self.persist_worker(id, fx);
    }

    /// A BUSY worker has nothing running: its maintenance hook runs now.
    fn run_maintenance_hook(&mut self, id: &str, fx: &mut Effects) {
        // Drained or not, the hook is sent once: no drain timeout may send it again.
        self.cancel_drain_timer(id);
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let Some(note) = w.maintenance_note.clone() else {
            return;
        };
        match w.conn.as_ref() {
            Some(conn) if conn.hooks => {
                conn.tx.send(Message::Maintenance { note });
            }
            _ => {
                w.view.state = WorkerState::Maintenance;
                w.maintenance_note = None;
            }
        }
        self.persist_worker(id, fx);
    }

    /// The drain timeout of a BUSY worker passed: what it still runs is aborted there and
    /// re-queued (its result from there, if one comes, is dropped).
    fn drain(&mut self, id: &str, due: Timestamp, now: Timestamp, fx: &mut Effects) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        if w.drain_at != Some(due) {
            return; // an earlier BUSY period's timer, or its hook already ran
        }
        w.drain_at = None;
        if w.view.state != WorkerState::Busy || w.maintenance_note.is_none() {
            return;
        }
        let running: Vec<TaskId> = w.running.drain().collect();
        for task in running {
            w.drained.insert(task);
            if let Some(conn) = &w.conn {
                conn.tx.send(Message::Abort {
                    id: task.to_string(),
                });
            }
        }
        let drained: Vec<TaskId> = w.drained.iter().copied().collect();
        for task in drained {
            let reason = format!(
                "aborted on worker {id}, which went to maintenance (drain timeout); re-queued"
            );
            if self.tasks.get(&task).is_some_and(|t| {
                t.record.state == TaskState::InProgress && t.record.worker.as_deref() == Some(id)
            }) {
                self.requeue(task, reason, now, fx);
            }
        }
        self.refresh_worker_states();
        self.run_maintenance_hook(id, fx);
    }

    /// FAILED, with the reason kept; what it ran is handled as a lost worker's.
    fn fail_worker(
        &mut self,
        id: &str,
        reason: String,
        max_attempts: u32,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        // A worker that is still connected is told to stop what it ran; one that is gone may
        // come back still running it, and is then given it back.
        let connected = self.workers.get(id).is_some_and(|w| w.conn.is_some());
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        w.view.state = WorkerState::Failed;
        w.view.reason = Some(reason.clone());
        w.maintenance_note = None;
        let running: Vec<TaskId> = w.running.iter().copied().collect();
        for task in running {
            self.lose_task(task, &reason, max_attempts, now, fx);
            if !connected {
                continue;
            }
            // Whatever it still does with the task is no longer wanted.
            self.send_to_worker(
                id,
                Message::Abort {
                    id: task.to_string(),
                },
            );
            if let Some(w) = self.workers.get_mut(id) {
                w.drained.insert(task);
            }
        }
        self.refresh_worker_states();
        self.persist_worker(id, fx);
    }

    /// A hook ran on the worker.
    fn hook_ran(
        &mut self,
        id: &str,
        report: HookReport,
        cfg: &QueueConfig,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        let problem = report.problem.clone().unwrap_or_else(|| "failed".into());
        w.view.hooks.insert(
            report.hook.clone(),
            HookRun {
                ok: report.ok,
                output: report.output,
                problem: report.problem,
                at: Some(now),
            },
        );
        let event = match (report.hook.as_str(), report.ok) {
            (hook::PREPARE, true) => WorkerEvent::PrepareSucceeded,
            (hook::PREPARE, false) => WorkerEvent::PrepareFailed { reason: problem },
            (hook::MAINTENANCE, _) => WorkerEvent::MaintenanceHookDone,
            (hook::HEALTH_CHECK, false) => WorkerEvent::HealthCheckFailed { reason: problem },
            _ => {
                self.persist_worker(id, fx);
                return;
            }
        };
        // A late report (the worker moved on meanwhile) changes nothing but the hook's record.
        let _ = self.worker_event(id, event, None, cfg, now, fx);
        self.persist_worker(id, fx);
    }

    /// Applies the lifecycle rule ([`worker_state::transition`]) to an event and does what the
    /// new state means: PREPARE runs the prepare hook, BUSY drains (then `note` goes to the
    /// maintenance hook), FAILED keeps the reason and gives up its tasks.
    fn worker_event(
        &mut self,
        id: &str,
        event: WorkerEvent,
        note: Option<String>,
        cfg: &QueueConfig,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Result<WorkerTransition, WorkerTransitionError> {
        let current = self.workers.get(id).map(|w| w.view.state);
        let next = worker_state::transition(current, &event)?;
        match next {
            WorkerTransition::Unchanged | WorkerTransition::Remove => {}
            WorkerTransition::RunMaintenanceHook => self.run_maintenance_hook(id, fx),
            WorkerTransition::Enter(WorkerState::Prepare) => self.begin_prepare(id, fx),
            WorkerTransition::Enter(WorkerState::Busy) => {
                self.begin_maintenance(id, note.unwrap_or_default(), now, cfg.drain_timeout, fx)
            }
            WorkerTransition::Enter(WorkerState::Failed) => {
                let reason = note
                    .or_else(|| event.failure_reason())
                    .unwrap_or_else(|| event.name().to_string());
                self.fail_worker(id, reason, cfg.max_attempts, now, fx);
            }
            WorkerTransition::Enter(state) => {
                if let Some(w) = self.workers.get_mut(id) {
                    w.view.state = state;
                    match state {
                        WorkerState::Maintenance => {
                            w.view.reason = note.or_else(|| w.maintenance_note.take());
                            w.maintenance_note = None;
                        }
                        _ => w.view.reason = None,
                    }
                }
                self.refresh_worker_states();
                self.persist_worker(id, fx);
            }
        }
        Ok(next)
    }

    /// Why no registered worker could ever run `spec`: what none offers. `None` when one could,
    /// or when no worker is known yet (the first may still be starting).
    fn unsatisfiable(&self, spec: &TaskSpec) -> Option<String> {
        self.matcher.unsatisfiable(&requirements(spec))
    }

    /// Starts the grace period of a waiting task no registered worker could run (if it has none
    /// running): if that still holds when it ends, the task is INVALID. A task that some worker
    /// could run loses its grace period.
    fn watch_satisfiable(&mut self, id: TaskId, now: Timestamp, grace: Duration, fx: &mut Effects) {
        self.sync_workers();
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if task.record.state == TaskState::Waiting
            && self.unsatisfiable(&task.record.spec).is_some()
        {
            self.start_invalid_timer(id, now.plus_ms(ms(grace)), fx);
        } else {
            self.cancel_invalid_timer(id);
        }
    }

    /// After what the workers offer changed (a worker registered, went, or changed its
    /// capabilities or groups): every waiting task none of them could run has a grace period
    /// (from now, if it had none), and every task one of them could run has none.
    fn watch_all_satisfiable(&mut self, now: Timestamp, grace: Duration, fx: &mut Effects) {
        self.sync_workers();
        let unsatisfiable: HashSet<TaskId> = self
            .matcher
            .unsatisfiable_tasks()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let runnable: Vec<TaskId> = self
            .invalid_at
            .keys()
            .filter(|id| !unsatisfiable.contains(id))
            .copied()
            .collect();
        for id in runnable {
            self.cancel_invalid_timer(id);
        }
        let at = now.plus_ms(ms(grace));
        for id in unsatisfiable {
            self.start_invalid_timer(id, at, fx);
        }
    }
}

impl Service {
    /// Builds the service from the store's contents. `writer_store` and `reader_store` are two
    /// handles on the same database (the writer thread owns the first).
    pub fn open(
        mut writer_store: Box<dyn Store>,
        reader_store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        config: QueueConfig,
    ) -> Result<(Arc<Service>, std::thread::JoinHandle<()>), ServiceError> {
        let now = clock.now();
        // Ids given out or reserved before stay unused; a block is reserved at once (see
        // `State::ids_durable`).
        let max_id = writer_store.max_task_id()?;
        let reserved = max_id + ID_BLOCK;
        writer_store.apply(&[Write::ReserveIds(reserved)])?;
        let mut state = State {
            next_id: max_id + 1,
            ids_durable: reserved,
            ids_requested: reserved,
            ..State::default()
        };
        let mut fx = Effects::default();
        for mut view in writer_store.workers()? {
            // Its state, groups, reason and hook output are kept; one that was serving is
            // awaited, and FAILED if it does not come back (see `expire_orphans`).
            if !matches!(view.state, WorkerState::Failed | WorkerState::Maintenance) {
                state.awaiting.insert(view.id.clone());
            }
            view.running = 0;
            state
                .workers
                .insert(view.id.clone(), WorkerEntry::new(view));
        }
        for record in writer_store.active_tasks()? {
            let id = record.id;
            state.next_front = state.next_front.min(record.queue_order);
            let origin = record.origin;
            let in_progress = record.state == TaskState::InProgress;
            let worker = record.worker.clone();
            state.tasks.insert(id, Active::new(record));
            if origin == Origin::Frontend {
                // Its frontend's connection died with the previous coordinator.
                let reason = "its Pythia frontend disconnected (coordinator restarted)".to_string();
                state.finish(id, TaskState::Cancelled, None, Some(reason), now, &mut fx);
            } else if in_progress {
                let worker = worker.unwrap_or_default();
                let entry = state
                    .workers
                    .entry(worker.clone())
                    .or_insert_with(|| WorkerEntry {
                        stand_in: true,
                        ..WorkerEntry::new(offline_view(&worker))
                    });
                entry.running.insert(id);
            } else {
                state.enqueue(id, now, &mut fx);
            }
        }
        let known: Vec<String> = state.workers.keys().cloned().collect();
        for id in known {
            state.touch(&id);
        }
        // The workers known from the store are registered workers: what none of them could run
        // starts its grace period now.
        state.watch_all_satisfiable(now, config.invalid_after, &mut fx);
        if !state.awaiting.is_empty() {
            let until = now.plus_ms(config.reconnect_hold.as_millis() as i64);
            state.hold_until = Some(until);
            state.timers.insert((until, Timer::Hold));
            fx.timers_changed = true;
        }
        let (writer, handle) = Writer::start(writer_store)
            .map_err(|e| ServiceError::Store(format!("starting the writer: {e}")))?;
        let service = Arc::new(Service {
            state: Mutex::new(state),
            writer,
            reader: Mutex::new(reader_store),
            clock,
            config,
            timers: Notify::new(),
        });
        service.apply(service.lock(), fx);
        Ok((service, handle))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Sends writes to the store, publishes ended tasks, and once committed drops them from
    /// memory and acknowledges their results to workers.
    ///
    /// Takes the lock the changes were made under and submits the writes before letting it go:
    /// the store must see changes in the order they happened in memory. Submitted after the
    /// lock, a dispatch could reach the writer after its task's end, and leave the task
    /// IN PROGRESS in the store for good.
    fn apply(self: &Arc<Self>, mut state: MutexGuard<'_, State>, fx: Effects) {
        if fx.timers_changed {
            self.timers.notify_one();
        }
        if fx.writes.is_empty() {
            return;
        }
        state.announce_ends(&fx.finished);
        let then: Option<crate::writer::AfterCommit> =
            if fx.finished.is_empty() && fx.acks.is_empty() {
                None
            } else {
                let service = Arc::clone(self);
                let finished = fx.finished;
                let acks = fx.acks;
                Some(Box::new(move |outcome| {
                    if let Err(e) = outcome {
                        // Not acknowledged: the worker keeps the result and delivers it again.
                        tracing::error!("recording the end of tasks {finished:?} failed: {e}");
                        return;
                    }
                    service.forget_ended(&finished);
                    for (tx, id) in acks {
                        tx.send(Message::Ack { id });
                    }
                }))
            };
        self.writer.submit(fx.writes, then);
        drop(state);
    }

    /// After an end is committed: the store answers for the task from now on.
    fn forget_ended(&self, ids: &[TaskId]) {
        let mut state = self.lock();
        for id in ids {
            state.tasks.remove(id);
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- the HTTP side ------------------------------------------------------------------

    /// Accepts a task: validated, stored, then queued. Returns its view (WAITING, or INVALID when
    /// no known worker could ever run it).
    pub async fn submit(
        self: &Arc<Self>,
        spec: TaskSpec,
        owner: String,
    ) -> Result<TaskView, ServiceError> {
        self.submit_once(spec, owner, None)
            .await
            .map(|(view, _)| view)
    }

    /// [`Service::submit`] with the client's idempotency key: a key already used returns that
    /// task (and `false`) instead of queueing another.
    pub async fn submit_once(
        self: &Arc<Self>,
        mut spec: TaskSpec,
        owner: String,
        key: Option<String>,
    ) -> Result<(TaskView, bool), ServiceError> {
        spec.validate()?;
        if let Some(key) = &key {
            if key.is_empty() || key.len() > 255 {
                return Err(FieldError::new("Idempotency-Key", "must be 1..255 characters").into());
            }
            if self.lock().submitting.contains(key) {
                return Err(ServiceError::Conflict(format!(
                    "a task with Idempotency-Key `{key}` is being submitted right now"
                )));
            }
            let service = Arc::clone(self);
            let lookup = key.clone();
            let existing =
                tokio::task::spawn_blocking(move || service.read_store(|s| s.task_by_key(&lookup)))
                    .await
                    .map_err(|e| ServiceError::Store(e.to_string()))??;
            if let Some(id) = existing {
                return Ok((self.task(id).await?, false));
            }
        }
        spec.limits = spec.limits.with_defaults(&self.config.default_limits);
        spec.limits
            .validate()
            .map_err(|e| FieldError::new(format!("limits.{}", e.limit), e.problem))?;
        let now = self.now();
        spec.validate_times(now)?;
        spec.valid_after.get_or_insert(now);
        let deadline = *spec
            .deadline
            .get_or_insert(now.plus_ms(ms(DEFAULT_DEADLINE)));
        if spec.valid_after.is_some_and(|after| after >= deadline) {
            return Err(FieldError::new("valid_after", "must be earlier than `deadline`").into());
        }
        spec.owner = Some(spec.owner.take().unwrap_or(owner));
        let record = {
            let mut state = self.lock();
            if state.waiting() >= self.config.max_waiting {
                return Err(ServiceError::QueueFull(state.waiting()));
            }
            if let Some(problem) = environment_not_offered(&state, &spec) {
                return Err(FieldError::new("environment", problem).into());
            }
            if let Some(key) = &key {
                if !state.submitting.insert(key.clone()) {
                    return Err(ServiceError::Conflict(format!(
                        "a task with Idempotency-Key `{key}` is being submitted right now"
                    )));
                }
            }
            let id = state.next_id;
            state.next_id += 1;
            let owner = spec.owner.clone().unwrap_or_default();
            TaskRecord {
                idempotency_key: key.clone(),
                ..TaskRecord::accepted(id, spec, owner, Origin::Api, now)
            }
        };
        let committed = self
            .writer
            .commit(vec![Write::Insert(Box::new(record.clone()))])
            .await;
        if let Some(key) = &key {
            self.lock().submitting.remove(key);
        }
        committed.map_err(ServiceError::Store)?;
        let view = view_of(&record, None);
        let mut fx = Effects::default();
        let mut state = self.lock();
        let id = record.id;
        state.tasks.insert(id, Active::new(record));
        state.enqueue(id, now, &mut fx);
        state.watch_satisfiable(id, now, self.config.invalid_after, &mut fx);
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
        Ok((view, true))
    }

    /// Asks the store for the next block of task ids when few reserved ones are left (under
    /// the state lock, so blocks are asked for in order).
    fn reserve_ids_ahead(self: &Arc<Self>, state: &mut State) {
        if state.next_id.saturating_add(ID_LOW_WATER) <= state.ids_requested {
            return;
        }
        let up_to = state.ids_requested.max(state.next_id) + ID_BLOCK;
        state.ids_requested = up_to;
        let service = Arc::clone(self);
        self.writer.submit(
            vec![Write::ReserveIds(up_to)],
            Some(Box::new(move |outcome| {
                let mut state = service.lock();
                match outcome {
                    Ok(()) => state.ids_durable = state.ids_durable.max(up_to),
                    Err(e) => {
                        tracing::error!("reserving task ids up to {up_to} failed: {e}");
                        state.ids_requested = state.ids_durable; // asked again by the next task
                    }
                }
            })),
        );
    }

    /// A task's current view.
    pub async fn task(self: &Arc<Self>, id: TaskId) -> Result<TaskView, ServiceError> {
        if let Some(view) = self.live_view(id) {
            return Ok(view);
        }
        let service = Arc::clone(self);
        let record = tokio::task::spawn_blocking(move || service.read_store(|s| s.task(id)))
            .await
            .map_err(|e| ServiceError::Store(e.to_string()))??;
        match record {
            Some(r) => {
                let result = r.result.clone();
                Ok(view_of(&r, result))
            }
            None => Err(ServiceError::NotFound(id)),
        }
    }

    fn live_view(&self, id: TaskId) -> Option<TaskView> {
        let state = self.lock();
        state
            .tasks
            .get(&id)
            .map(|t| view_of(&t.record, t.record.result.clone()))
    }

    fn read_store<T>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, ServiceError> {
        let mut store = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut **store)?)
    }

    /// Waits (at most `timeout`) for the task to end; its view either way.
    pub async fn wait(
        self: &Arc<Self>,
        id: TaskId,
        timeout: Duration,
    ) -> Result<TaskView, ServiceError> {
        let hub = self.lock().tasks.get(&id).map(|t| Arc::clone(&t.hub));
        if let Some(hub) = hub {
            if let Some(view) = hub.wait_end(timeout).await {
                return Ok(view);
            }
        }
        self.task(id).await
    }

    /// Where to read a task's output.
    pub async fn output(self: &Arc<Self>, id: TaskId) -> Result<OutputSource, ServiceError> {
        if let Some(hub) = self.lock().tasks.get(&id).map(|t| Arc::clone(&t.hub)) {
            return Ok(OutputSource::Live(hub));
        }
        Ok(OutputSource::Finished(Box::new(self.task(id).await?)))
    }

    /// Cancels a task: a waiting one ends CANCELLED; a running one is aborted on its worker and
    /// ends DONE with status abort.
    pub async fn cancel(self: &Arc<Self>, id: TaskId) -> Result<TaskView, ServiceError> {
        let now = self.now();
        let mut fx = Effects::default();
        let outcome = {
            let mut state = self.lock();
            let outcome = state.cancel(id, now, &mut fx);
            self.apply(state, fx);
            outcome
        };
        match outcome {
            Some(Ok(view)) => Ok(view),
            Some(Err(e)) => Err(ServiceError::Conflict(e)),
            None => {
                let view = self.task(id).await?;
                Err(ServiceError::Conflict(format!(
                    "task {id} is already {}: only a WAITING or IN PROGRESS task can be cancelled",
                    view.state
                )))
            }
        }
    }

    /// A page of tasks, and how many match in all and beyond the page.
    pub async fn list(
        self: &Arc<Self>,
        query: ListQuery,
    ) -> Result<(Vec<TaskView>, u64, u64), ServiceError> {
        let service = Arc::clone(self);
        let page = tokio::task::spawn_blocking(move || {
            let mut store = service.reader.lock().unwrap_or_else(|p| p.into_inner());
            store.list(&query)
        })
        .await
        .map_err(|e| ServiceError::Store(e.to_string()))?;
        let ListPage {
            records,
            total,
            remaining,
        } = match page {
            Err(StoreError::NoSuchTask(id)) => return Err(ServiceError::NotFound(id)),
            other => other?,
        };
        let state = self.lock();
        let views = records
            .iter()
            .map(|r| match state.tasks.get(&r.id) {
                // The live entry is ahead of the store by at most one commit.
                Some(t) => view_of(&t.record, None),
                None => view_of(r, None),
            })
            .collect();
        Ok((views, total, remaining))
    }

    /// Every known worker.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut state = self.lock();
        state.refresh_worker_states();
        state.workers.values().map(|w| w.view.clone()).collect()
    }

    /// A page of workers.
    pub fn worker_page(
        &self,
        query: &WorkerQuery,
    ) -> Result<(Vec<WorkerView>, u64, u64), ServiceError> {
        let mut state = self.lock();
        state.refresh_worker_states();
        if let Some(p) = &query.paginator {
            let id = match p {
                WorkerPaginator::After(id) | WorkerPaginator::Before(id) => id,
            };
            if !state.workers.contains_key(id) {
                return Err(ServiceError::NoWorker(id.clone()));
            }
        }
        let key = |w: &WorkerView| match query.sort {
            WorkerSort::Id => (0, w.id.clone()),
            WorkerSort::State => (w.state as u8, w.id.clone()),
        };
        let mut matching: Vec<&WorkerView> = state
            .workers
            .values()
            .map(|w| &w.view)
            .filter(|w| query.keeps(w))
            .collect();
        let total = matching.len() as u64;
        matching.sort_by_key(|w| key(w));
        if !query.ascending {
            matching.reverse();
        }
        let limit = query.limit as usize;
        let place = |id: &str| {
            state
                .workers
                .get(id)
                .map(|w| key(&w.view))
                .unwrap_or_default()
        };
        let beyond = |w: &&WorkerView, pivot: &(u8, String), later: bool| {
            let ord = key(w).cmp(pivot);
            let ord = if query.ascending { ord } else { ord.reverse() };
            (ord == std::cmp::Ordering::Greater) == later && ord != std::cmp::Ordering::Equal
        };
        let (page, remaining) = match &query.paginator {
            None => {
                let rest = matching.len().saturating_sub(limit);
                (matching.into_iter().take(limit).collect::<Vec<_>>(), rest)
            }
            Some(WorkerPaginator::After(id) | WorkerPaginator::Before(id)) => {
                let later = matches!(query.paginator, Some(WorkerPaginator::After(_)));
                let pivot = place(id);
                let side: Vec<_> = matching
                    .into_iter()
                    .filter(|w| beyond(w, &pivot, later))
                    .collect();
                let rest = side.len().saturating_sub(limit);
                // The page is the side's end nearest the pivot.
                let page = if later {
                    side.into_iter().take(limit).collect()
                } else {
                    side.into_iter().skip(rest).collect()
                };
                (page, rest)
            }
        };
        Ok((page.into_iter().cloned().collect(), total, remaining as u64))
    }

    /// One worker.
    pub fn worker(&self, id: &str) -> Result<WorkerView, ServiceError> {
        let mut state = self.lock();
        state.refresh_worker_states();
        state
            .workers
            .get(id)
            .map(|w| w.view.clone())
            .ok_or_else(|| ServiceError::NoWorker(id.to_string()))
    }

    /// An operator sets a worker IDLE (from MAINTENANCE, through PREPARE) or MAINTENANCE (from
    /// IDLE, RUNNING, PREPARE or FAILED, through BUSY); `note` goes to the maintenance hook.
    pub fn set_worker_state(
        self: &Arc<Self>,
        id: &str,
        target: WorkerState,
        note: Option<String>,
    ) -> Result<WorkerView, ServiceError> {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let view = {
            state.refresh_worker_states();
            let w = state
                .workers
                .get(id)
                .ok_or_else(|| ServiceError::NoWorker(id.to_string()))?;
            let current = w.view.state;
            let connected = w.conn.is_some();
            let event = match target {
                WorkerState::Idle => WorkerEvent::AdminSetIdle,
                WorkerState::Maintenance => WorkerEvent::AdminSetMaintenance,
                other => {
                    return Err(FieldError::new(
                        "state",
                        format!("a worker can be set IDLE or MAINTENANCE, not {other}"),
                    )
                    .into())
                }
            };
            let next = worker_state::transition(Some(current), &event)
                .map_err(|e| ServiceError::Conflict(format!("worker `{id}`: {e}")))?;
            match next {
                WorkerTransition::Enter(WorkerState::Prepare) if !connected => {
                    return Err(ServiceError::Conflict(format!(
                        "worker `{id}` is {current} and not connected: it cannot be prepared"
                    )))
                }
                WorkerTransition::Enter(WorkerState::Busy) if !connected => {
                    // Nothing runs there and no hook can run: straight to MAINTENANCE.
                    if let Some(w) = state.workers.get_mut(id) {
                        w.view.state = WorkerState::Maintenance;
                        w.view.reason = note;
                    }
                    state.persist_worker(id, &mut fx);
                }
                _ => {
                    state
                        .worker_event(id, event, note, &self.config, now, &mut fx)
                        .map_err(|e| ServiceError::Conflict(format!("worker `{id}`: {e}")))?;
                }
            }
            state.dispatch(now, &mut fx);
            state.refresh_worker_states();
            state.workers.get(id).map(|w| w.view.clone())
        };
        self.apply(state, fx);
        view.ok_or_else(|| ServiceError::NoWorker(id.to_string()))
    }

    /// Sets the groups a worker serves (at any time); matching runs again.
    pub fn set_worker_groups(
        self: &Arc<Self>,
        id: &str,
        mut groups: Vec<String>,
    ) -> Result<WorkerView, ServiceError> {
        check_groups(&groups).map_err(|(i, p)| FieldError::new(format!("groups[{i}]"), p))?;
        groups.sort();
        groups.dedup();
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let view = {
            let w = state
                .workers
                .get_mut(id)
                .ok_or_else(|| ServiceError::NoWorker(id.to_string()))?;
            w.view.groups = groups;
            state.persist_worker(id, &mut fx);
            state.watch_all_satisfiable(now, self.config.invalid_after, &mut fx);
            state.dispatch(now, &mut fx);
            state.refresh_worker_states();
            state.workers.get(id).map(|w| w.view.clone())
        };
        self.apply(state, fx);
        view.ok_or_else(|| ServiceError::NoWorker(id.to_string()))
    }

    /// Forgets a worker in MAINTENANCE or FAILED. A connected one is told so and disconnected;
    /// if it registers again, it is new (MAINTENANCE).
    pub fn deregister_worker(self: &Arc<Self>, id: &str) -> Result<(), ServiceError> {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        state.refresh_worker_states();
        let w = state
            .workers
            .get(id)
            .ok_or_else(|| ServiceError::NoWorker(id.to_string()))?;
        worker_state::transition(Some(w.view.state), &WorkerEvent::Deregister)
            .map_err(|e| ServiceError::Conflict(format!("worker `{id}`: {e}")))?;
        if !w.running.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "worker `{id}` still has {} task(s) assigned: wait for them to be re-queued",
                w.running.len()
            )));
        }
        if let Some(w) = state.workers.remove(id) {
            if let Some(conn) = w.conn {
                conn.tx.send(Message::Refused {
                    reason: "deregistered by an operator".into(),
                });
            }
        }
        state.awaiting.remove(id);
        state.touch(id);
        fx.writes.push(Write::RemoveWorker(id.to_string()));
        state.watch_all_satisfiable(now, self.config.invalid_after, &mut fx);
        self.apply(state, fx);
        Ok(())
    }

    /// Changes a WAITING task's priority, valid-after time, deadline or capabilities; any other
    /// state is a conflict.
    pub async fn update(
        self: &Arc<Self>,
        id: TaskId,
        update: TaskUpdate,
    ) -> Result<TaskView, ServiceError> {
        let now = self.now();
        let mut fx = Effects::default();
        let outcome = {
            let mut state = self.lock();
            let outcome = match state.tasks.get(&id) {
                None => None,
                Some(task) if task.record.state != TaskState::Waiting => {
                    Some(Err(ServiceError::Conflict(format!(
                        "task {id} is {}: only a WAITING task can be changed",
                        task.record.state
                    ))))
                }
                Some(task) => {
                    let spec = update.apply(&task.record.spec);
                    let checked = spec.validate().and_then(|()| match update.deadline {
                        Some(_) => spec.validate_times(now),
                        None => Ok(()),
                    });
                    match checked {
                        Err(e) => Some(Err(e.into())),
                        Ok(()) => {
                            state.dequeue(id);
                            let view = state.tasks.get_mut(&id).map(|t| {
                                t.record.priority = spec.effective_priority();
                                t.record.spec = spec.clone();
                                fx.writes.push(Write::Update {
                                    id,
                                    priority: t.record.priority,
                                    spec: Box::new(spec),
                                });
                                view_of(&t.record, None)
                            });
                            state.enqueue(id, now, &mut fx);
                            state.watch_satisfiable(id, now, self.config.invalid_after, &mut fx);
                            state.dispatch(now, &mut fx);
                            view.map(Ok)
                        }
                    }
                }
            };
            self.apply(state, fx);
            outcome
        };
        match outcome {
            Some(result) => result,
            None => {
                let view = self.task(id).await?;
                Err(ServiceError::Conflict(format!(
                    "task {id} is {}: only a WAITING task can be changed",
                    view.state
                )))
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    /// Runs forever: expires deadlines and starts tasks whose valid-after time arrives.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.lock().timers.first().map(|(t, _)| *t);
            let notified = self.timers.notified();
            match next {
                Some(t) => {
                    let wait = (t.unix_ms - self.now().unix_ms).max(0) as u64;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
            self.tick();
        }
    }

    /// Expires what is due and dispatches.
    pub fn tick(self: &Arc<Self>) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        while let Some((t, timer)) = state.timers.first().cloned() {
            if t > now {
                break;
            }
            state.timers.pop_first();
            match timer {
                Timer::Task(id) => {
                    let expired = state.tasks.get(&id).is_some_and(|task| {
                        task.record.state == TaskState::Waiting
                            && task.record.spec.deadline.is_some_and(|d| d < now)
                    });
                    if expired {
                        let reason = "its deadline passed while it was waiting".to_string();
                        state.finish(id, TaskState::Timeout, None, Some(reason), now, &mut fx);
                    }
                }
                Timer::Unsatisfiable(id) => {
                    if state.invalid_at.get(&id) != Some(&t) {
                        continue; // a grace period that ended early: the task became runnable
                    }
                    state.invalid_at.remove(&id);
                    state.sync_workers();
                    let invalid = state
                        .tasks
                        .get(&id)
                        .filter(|t| t.record.state == TaskState::Waiting)
                        .and_then(|t| state.unsatisfiable(&t.record.spec));
                    if let Some(reason) = invalid {
                        state.finish(id, TaskState::Invalid, None, Some(reason), now, &mut fx);
                    }
                }
                Timer::Drain(worker) => state.drain(&worker, t, now, &mut fx),
                Timer::Hold => {}
            }
        }
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
    }

    /// Re-queues tasks left IN PROGRESS by a previous coordinator whose worker has not come back.
    pub fn expire_orphans(self: &Arc<Self>) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let orphans: Vec<TaskId> = state
            .workers
            .values()
            .filter(|w| w.conn.is_none())
            .flat_map(|w| w.running.iter().copied())
            .collect();
        for id in orphans {
            state.lose_task(
                id,
                "did not reconnect after the coordinator restarted",
                self.config.max_attempts,
                now,
                &mut fx,
            );
        }
        let absent: Vec<String> = state
            .workers
            .values()
            .filter(|w| {
                w.conn.is_none()
                    && !matches!(w.view.state, WorkerState::Failed | WorkerState::Maintenance)
            })
            .map(|w| w.view.id.clone())
            .collect();
        for id in absent {
            let reason = "did not reconnect after the coordinator restarted".to_string();
            state.fail_worker(&id, reason, self.config.max_attempts, now, &mut fx);
        }
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
    }

    // ---- the queue port: workers -----------------------------------------------------------

    /// A new connection id.
    pub fn next_conn(&self) -> u64 {
        let mut state = self.lock();
        state.next_conn += 1;
        state.next_conn
    }

    /// A worker (Warren) or pool (Pythia) registered on connection `conn_id`. Returns its id.
    pub fn worker_connected(
        self: &Arc<Self>,
        hello: Hello,
        conn_id: u64,
        tx: MessageSender,
        addr: SocketAddr,
    ) -> String {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let (view, warren, hooks, idle, running, finished) = match hello {
            Hello::Warren(reg) => {
                let view = WorkerView {
                    id: reg.id.clone(),
                    state: WorkerState::Idle,
                    capacity: reg.capacity,
                    running: 0,
                    memory_bytes: reg.memory_bytes,
                    milli_cpus: reg.milli_cpus,
                    caps: reg.caps,
                    environments: reg.environments,
                    address: Some(addr.to_string()),
                    connected_at: Some(now),
                    last_seen: Some(now),
                    reason: None,
                    groups: Vec::new(),
                    hooks: BTreeMap::new(),
                };
                (view, true, reg.hooks, reg.idle, reg.running, reg.finished)
            }
            Hello::Pool { capacity } => {
                let mut view = offline_view(&format!("pool-{conn_id}"));
                view.state = WorkerState::Idle;
                view.capacity = capacity;
                view.address = Some(addr.to_string());
                view.connected_at = Some(now);
                view.last_seen = Some(now);
                (view, false, false, true, Vec::new(), Vec::new())
            }
        };
        let id = view.id.clone();
        state.awaiting.remove(&id);
        let mut view = view;
        let previous = state.workers.get(&id).filter(|w| !w.stand_in).map(|w| {
            // What the coordinator decided about it outlives its connections.
            view.groups = w.view.groups.clone();
            view.hooks = w.view.hooks.clone();
            view.reason = w.view.reason.clone();
            view.state = w.view.state;
            (
                w.view.state,
                w.view.offer_changes(&view),
                w.maintenance_note.clone(),
            )
        });
        let entry = state
            .workers
            .entry(id.clone())
            .or_insert_with(|| WorkerEntry::new(view.clone()));
        entry.view = view;
        entry.stand_in = false;
        entry.conn = Some(WorkerConn {
            conn_id,
            tx: tx.clone(),
            warren,
            hooks,
        });
        // Reconcile what it says it runs with what the queue thinks it runs.
        let claimed: HashSet<TaskId> = running
            .iter()
            .chain(finished.iter())
            .filter_map(|s| parse_id(s))
            .collect();
        // Aborted runs it no longer has will never report.
        entry.drained.retain(|t| claimed.contains(t));
        let assigned: Vec<TaskId> = entry.running.iter().copied().collect();
        for task in assigned {
            if !claimed.contains(&task) {
                state.lose_task(
                    task,
                    "it reconnected without the task",
                    self.config.max_attempts,
                    now,
                    &mut fx,
                );
            }
        }
        for raw in running.iter().chain(finished.iter()) {
            let Some(task_id) = parse_id(raw) else {
                continue;
            };
            let known = state
                .tasks
                .get(&task_id)
                .map(|t| (t.record.state, t.record.worker.clone()));
            let drained = state
                .workers
                .get(&id)
                .is_some_and(|w| w.drained.contains(&task_id));
            match known {
                Some((TaskState::Waiting, _)) if drained => {
                    // Aborted there by a drain: that copy is to stop.
                    tx.send(Message::Abort { id: raw.clone() });
                }
                Some((TaskState::Waiting, _)) => {
                    // Re-queued while it was away, but still running there: take it back.
                    state.dequeue(task_id);
                    if let Some(t) = state.tasks.get_mut(&task_id) {
                        t.record.state = TaskState::InProgress;
                        t.record.worker = Some(id.clone());
                        t.record.attempts = t.record.attempts.max(1);
                        fx.writes.push(Write::Dispatch {
                            id: task_id,
                            worker: id.clone(),
                            attempts: t.record.attempts,
                            started_at: t.record.started_at.unwrap_or(now),
                        });
                    }
                    if let Some(w) = state.workers.get_mut(&id) {
                        w.running.insert(task_id);
                    }
                }
                Some((TaskState::InProgress, Some(w))) if w == id => {
                    if let Some(w) = state.workers.get_mut(&id) {
                        w.running.insert(task_id);
                    }
                }
                Some((TaskState::InProgress, _)) | None if running.contains(raw) => {
                    // Running elsewhere now, or already ended: stop this copy.
                    tx.send(Message::Abort { id: raw.clone() });
                }
                _ => {}
            }
        }
        let register = WorkerEvent::Register {
            caps_changed: previous.as_ref().is_some_and(|p| !p.1.is_empty()),
            // A plain pool (a new id on every connection) cannot wait for an operator.
            straight_to_idle: idle || !warren,
        };
        let previous_state = previous.as_ref().map(|p| p.0);
        let note = match &previous {
            Some((_, changes, _)) if !changes.is_empty() => {
                Some(format!("its {} changed", changes.join(" and ")))
            }
            Some((_, _, note)) => note.clone(),
            None => None,
        };
        // The rule is applied to the state it had before this registration.
        if let (Some(w), None) = (state.workers.get_mut(&id), previous_state) {
            w.view.state = WorkerState::Maintenance;
            w.view.reason = Some("new: waiting for an operator to set it IDLE".into());
        }
        let result = match previous_state {
            None => worker_state::transition(None, &register),
            Some(_) => Ok(WorkerTransition::Unchanged),
        };
        match result {
            Ok(WorkerTransition::Enter(WorkerState::Prepare)) => state.begin_prepare(&id, &mut fx),
            Ok(_) => {}
            Err(e) => tracing::warn!(worker = id, "registration: {e}"),
        }
        if previous_state.is_some() {
            let _ = state.worker_event(&id, register, note, &self.config, now, &mut fx);
        }
        state.refresh_worker_states();
        state.persist_worker(&id, &mut fx);
        state.watch_all_satisfiable(now, self.config.invalid_after, &mut fx);
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
        id
    }

    /// A message from a registered worker.
    pub fn worker_message(self: &Arc<Self>, worker: &str, conn_id: u64, message: Message) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let Some(entry) = state.workers.get_mut(worker) else {
            return;
        };
        let Some(conn) = entry.conn.as_ref().filter(|c| c.conn_id == conn_id) else {
            return;
        };
        let tx = conn.tx.clone();
        entry.view.last_seen = Some(now);
        match message {
            Message::Done(done) => {
                let result = done.to_result();
                state.complete(worker, &done.id, result, tx, now, &mut fx);
            }
            Message::Finished { id, result } => {
                state.complete(worker, &id, result, tx, now, &mut fx)
            }
            Message::Output(out) => {
                if let Some(task) = parse_id(&out.id).and_then(|id| state.tasks.get(&id)) {
                    task.hub.push(HubEvent::Output(out.stream, out.data.into()));
                }
            }
            Message::Stats { id, sample } => {
                if let Some(task) = parse_id(&id).and_then(|id| state.tasks.get(&id)) {
                    push_stats(&task.hub, sample);
                }
            }
            Message::KeepAlive => return, // `last_seen` is all it changes
            Message::Hook(report) => state.hook_ran(worker, report, &self.config, now, &mut fx),
            Message::Failure { reason } => {
                let event = WorkerEvent::ReportedFailure { reason };
                let _ = state.worker_event(worker, event, None, &self.config, now, &mut fx);
            }
            other => tracing::debug!(
                worker,
                kind = other.kind(),
                "ignoring message from a worker"
            ),
        }
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
    }

    /// A worker's connection ended (closed, silent, or broken).
    pub fn worker_lost(self: &Arc<Self>, worker: &str, conn_id: u64, why: &str) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let Some(entry) = state.workers.get_mut(worker) else {
            return;
        };
        if entry.conn.as_ref().is_none_or(|c| c.conn_id != conn_id) {
            return; // an older connection of a worker that has already reconnected
        }
        let warren = entry.conn.as_ref().is_some_and(|c| c.warren);
        entry.conn = None;
        // One in MAINTENANCE stays there (an operator's decision); any other is FAILED.
        let reason = Some(format!("heartbeats missed: {why}"));
        let _ = state.worker_event(
            worker,
            WorkerEvent::HeartbeatsMissed,
            reason,
            &self.config,
            now,
            &mut fx,
        );
        // Whatever state it is in, what it ran is lost with the connection.
        let running: Vec<TaskId> = state
            .workers
            .get(worker)
            .map(|w| w.running.iter().copied().collect())
            .unwrap_or_default();
        for id in running {
            state.lose_task(id, why, self.config.max_attempts, now, &mut fx);
        }
        if warren {
            state.persist_worker(worker, &mut fx);
        } else {
            state.workers.remove(worker);
            state.touch(worker);
            state.watch_all_satisfiable(now, self.config.invalid_after, &mut fx);
        }
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
        tracing::warn!(worker, "worker lost: {why}");
    }

    // ---- the queue port: Pythia frontends ----------------------------------------------------

    /// A frontend connection started (its first `launch` arrived).
    pub fn frontend_opened(&self, conn_id: u64, tx: MessageSender) {
        self.lock().frontends.insert(
            conn_id,
            Frontend {
                tx,
                ids: HashMap::new(),
            },
        );
    }

    /// A frontend's `launch`.
    pub fn frontend_launch(self: &Arc<Self>, conn_id: u64, launch: Launch) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let waiting = state.waiting();
        let next_id = state.next_id;
        let Some(fe) = state.frontends.get_mut(&conn_id) else {
            return;
        };
        let refuse = |status: PythiaStatus, output: &str| {
            Message::Done(Done {
                id: launch.id.clone(),
                status: status.name().into(),
                output: output.into(),
            })
        };
        if fe.ids.contains_key(&launch.id) {
            fe.tx
                .send(refuse(PythiaStatus::Fatal, "Job already launched"));
            return;
        }
        if waiting >= self.config.max_waiting {
            fe.tx.send(refuse(PythiaStatus::Error, "Queue full"));
            return;
        }
        let mut spec = launch.task.to_spec(&launch.input);
        spec.limits = spec.limits.with_defaults(&self.config.default_limits);
        if let Err(e) = spec.validate() {
            fe.tx.send(refuse(PythiaStatus::Fatal, &e.to_string()));
            return;
        }
        if let Some(problem) = environment_not_offered(&state, &spec) {
            if let Some(fe) = state.frontends.get(&conn_id) {
                fe.tx.send(refuse(PythiaStatus::Fatal, &problem));
            }
            return;
        }
        let Some(fe) = state.frontends.get_mut(&conn_id) else {
            return;
        };
        fe.ids.insert(launch.id.clone(), next_id);
        state.next_id += 1;
        if next_id > state.ids_durable {
            tracing::warn!("task {next_id} of a Pythia frontend starts before its id is reserved");
        }
        self.reserve_ids_ahead(&mut state);
        let record = TaskRecord::accepted(
            next_id,
            spec,
            format!("pythia-frontend-{conn_id}"),
            Origin::Frontend,
            now,
        );
        fx.writes.push(Write::Insert(Box::new(record.clone())));
        state.tasks.insert(
            next_id,
            Active {
                record,
                hub: Arc::new(Hub::default()),
                frontend: Some((conn_id, launch.id)),
            },
        );
        state.enqueue(next_id, now, &mut fx);
        state.dispatch(now, &mut fx);
        self.apply(state, fx);
    }

    /// A frontend's `abort`.
    pub fn frontend_abort(self: &Arc<Self>, conn_id: u64, their_id: &str) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let Some(id) = state
            .frontends
            .get(&conn_id)
            .and_then(|fe| fe.ids.get(their_id))
            .copied()
        else {
            return;
        };
        let _ = state.cancel(id, now, &mut fx);
        self.apply(state, fx);
    }

    /// A frontend disconnected: its waiting tasks are dropped and its running ones aborted.
    pub fn frontend_closed(self: &Arc<Self>, conn_id: u64) {
        let now = self.now();
        let mut fx = Effects::default();
        let mut state = self.lock();
        let Some(fe) = state.frontends.remove(&conn_id) else {
            return;
        };
        for id in fe.ids.values().copied() {
            let _ = state.cancel(id, now, &mut fx);
        }
        self.apply(state, fx);
    }
}

fn push_stats(hub: &Hub, sample: StatSample) {
    hub.push(HubEvent::Stats(sample));
}

fn offline_view(id: &str) -> WorkerView {
    WorkerView {
        id: id.to_string(),
        state: WorkerState::Failed,
        capacity: 0,
        running: 0,
        memory_bytes: 0,
        milli_cpus: 0,
        caps: BTreeMap::new(),
        environments: Vec::new(),
        address: None,
        connected_at: None,
        last_seen: None,
        reason: Some("not connected".into()),
        groups: Vec::new(),
        hooks: BTreeMap::new(),
    }
}

/// Why `spec`'s environment is refused: no known worker (connected, or known from the store)
/// offers it. `None` when one does, when it is `host`, or when no worker is known yet.
fn environment_not_offered(state: &State, spec: &TaskSpec) -> Option<String> {
    let name = spec.environment.as_deref()?;
    if state.workers.is_empty() {
        return None;
    }
    let lists = state.workers.values().map(|w| {
        let warren = w.conn.as_ref().is_none_or(|c| c.warren);
        warren.then_some(w.view.environments.as_slice())
    });
    let mut all = Vec::new();
    for list in lists {
        if environment::offered(name, list) {
            return None;
        }
        all.extend(list.unwrap_or_default().iter().map(String::as_str));
    }
    Some(environment::not_offered_message(name, all))
}

impl State {
    /// Publishes ends at once: wakes readers and waiters, answers Pythia frontends. The task
    /// stays in memory (so `GET` shows it ended) until its end is committed. Publishing before the
    /// commit is safe: a result stays on its worker until acknowledged after the commit, so a
    /// coordinator killed in between gets the same result again.
    fn announce_ends(&mut self, ids: &[TaskId]) {
        for id in ids {
            let Some(task) = self.tasks.get(id) else {
                continue;
            };
            let view = view_of(&task.record, task.record.result.clone());
            let hub = Arc::clone(&task.hub);
            if let Some((conn, their_id)) = task.frontend.clone() {
                if let Some(fe) = self.frontends.get_mut(&conn) {
                    fe.ids.remove(&their_id);
                    let done = pythia_done(
                        their_id,
                        view.result.as_ref(),
                        view.state,
                        view.reason.as_deref(),
                    );
                    fe.tx.send(Message::Done(done));
                }
            }
            hub.end(view);
        }
    }

    fn complete(
        &mut self,
        worker: &str,
        raw_id: &str,
        result: RunResult,
        tx: MessageSender,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let Some(id) = parse_id(raw_id) else {
            tx.send(Message::Ack {
                id: raw_id.to_string(),
            });
            return;
        };
        if self
            .workers
            .get_mut(worker)
            .is_some_and(|w| w.drained.remove(&id))
        {
            // Aborted there by a drain or a failure and re-queued: this result is not the task's.
            tx.send(Message::Ack {
                id: raw_id.to_string(),
            });
            return;
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            // Already ended and recorded: completion is idempotent.
            tx.send(Message::Ack {
                id: raw_id.to_string(),
            });
            return;
        };
        match transition(task.record.state, TaskEvent::Complete) {
            Ok(Transition::Enter(TaskState::Done)) => {}
            // Its end is being recorded; the first report's acknowledgement covers this one.
            _ => return,
        }
        let previous = task.record.worker.replace(worker.to_string());
        if let Some(other) = previous.filter(|w| w != worker) {
            // It was re-dispatched elsewhere meanwhile: that copy is no longer needed.
            if let Some(w) = self.workers.get_mut(&other) {
                w.running.remove(&id);
            }
            self.touch(&other);
            self.send_to_worker(
                &other,
                Message::Abort {
                    id: raw_id.to_string(),
                },
            );
        }
        let raw = raw_id.to_string();
        fx.writes.push(Write::Finish {
            id,
            state: TaskState::Done,
            worker: Some(worker.to_string()),
            result: Some(Box::new(result.clone())),
            reason: None,
            finished_at: now,
        });
        self.dequeue(id);
        if let Some(task) = self.tasks.get_mut(&id) {
            task.record.state = TaskState::Done;
            task.record.finished_at = Some(now);
            task.record.result = Some(result);
        }
        let reserved = self
            .tasks
            .get(&id)
            .map(|t| (t.record.spec.limits.memory, t.record.spec.limits.cpus));
        if let Some(w) = self.workers.get_mut(worker) {
            let was_running = w.running.remove(&id);
            if was_running {
                self.release(worker, reserved.unwrap_or_default());
            } else {
                self.touch(worker);
            }
        }
        if let Some(w) = self.workers.get_mut(worker) {
            if w.view.state == WorkerState::Busy && w.running.is_empty() {
                // The last task of a draining worker ended.
                self.run_maintenance_hook(worker, fx);
            }
        }
        fx.finished.push(id);
        fx.acks.push((tx, raw));
    }

    fn cancel(
        &mut self,
        id: TaskId,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Option<Result<TaskView, String>> {
        let task = self.tasks.get(&id)?;
        let state = task.record.state;
        Some(match transition(state, TaskEvent::Cancel) {
            Ok(Transition::Enter(TaskState::Cancelled)) => {
                self.finish(
                    id,
                    TaskState::Cancelled,
                    None,
                    Some("cancelled while waiting".into()),
                    now,
                    fx,
                );
                Ok(self.tasks.get(&id).map(|t| view_of(&t.record, None))?)
            }
            Ok(Transition::AbortOnWorker) => {
                let worker = task.record.worker.clone().unwrap_or_default();
                if !self.send_to_worker(&worker, Message::Abort { id: id.to_string() }) {
                    // Its worker is away: nothing can deliver the abort, so end it here.
                    let mut result = RunResult::crash("aborted while its worker was disconnected");
                    result.status = Status::Abort;
                    self.finish(id, TaskState::Done, Some(result), None, now, fx);
                }
                Ok(self
                    .tasks
                    .get(&id)
                    .map(|t| view_of(&t.record, t.record.result.clone()))?)
            }
            Ok(_) => Err(format!(
                "task {id} is {state}: only a WAITING or IN PROGRESS task can be cancelled"
            )),
            Err(e) => Err(e.to_string()),
        })
    }
}
