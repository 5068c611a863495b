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
use warren_core::result::{RunResult, Status};
use warren_core::schedule::{self, Candidate, Slot};
use warren_core::stats::StatSample;
use warren_core::task::{
    transition, FieldError, TaskEvent, TaskId, TaskSpec, TaskState, TaskView, Timestamp,
    Transition, WorkerState, WorkerView,
};
use warren_proto::{
    Done, Launch, Message, MessageSender, PythiaStatus, PythiaTask, Register, RunTask,
};

use crate::clock::Clock;
use crate::hub::{Hub, HubEvent};
use crate::store::{ListQuery, Origin, Store, StoreError, TaskRecord, Write};
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
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_attempts: 3,
            max_waiting: 1_000_000,
            default_limits: Limits::sandbox_defaults(),
            orphan_grace: Duration::from_secs(90),
            reconnect_hold: Duration::from_secs(2),
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
}

struct WorkerEntry {
    view: WorkerView,
    conn: Option<WorkerConn>,
    running: HashSet<TaskId>,
}

struct Frontend {
    tx: MessageSender,
    ids: HashMap<String, TaskId>,
}

#[derive(Default)]
struct State {
    tasks: HashMap<TaskId, Active>,
    queue: BTreeSet<(u8, i64, TaskId)>,
    /// Times at which something waiting becomes startable or expires.
    timers: BTreeSet<(Timestamp, TaskId)>,
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
}

/// Things to do once the state lock is released.
#[derive(Default)]
struct Effects {
    writes: Vec<Write>,
    finished: Vec<TaskId>,
    /// Results to acknowledge to their worker once recorded.
    acks: Vec<(MessageSender, String)>,
    timers_changed: bool,
}

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

    fn enqueue(&mut self, id: TaskId, fx: &mut Effects) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let r = &task.record;
        self.queue.insert((r.priority, r.queue_order, id));
        for t in [r.spec.valid_after, r.spec.deadline.map(|d| d.plus_ms(1))]
            .into_iter()
            .flatten()
        {
            self.timers.insert((t, id));
            fx.timers_changed = true;
        }
    }

    fn dequeue(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id) {
            let r = &task.record;
            self.queue.remove(&(r.priority, r.queue_order, id));
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
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.running.remove(&id);
                }
                self.next_front -= 1;
                let order = self.next_front;
                let reason = format!("worker {worker} lost ({why}); re-queued after attempt {attempts} of {max_attempts}");
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.record.state = TaskState::Waiting;
                    task.record.worker = None;
                    task.record.queue_order = order;
                    task.record.reason = Some(reason.clone());
                }
                fx.writes.push(Write::Requeue {
                    id,
                    queue_order: order,
                    reason,
                });
                self.enqueue(id, fx);
            }
            Ok(Transition::Enter(TaskState::Failed)) => {
                let reason =
                    format!("worker {worker} lost ({why}) on attempt {attempts} of {max_attempts}");
                self.finish(id, TaskState::Failed, None, Some(reason), now, fx);
            }
            _ => {}
        }
    }

    fn send_to_worker(&self, worker: &str, message: Message) -> bool {
        match self.workers.get(worker).and_then(|w| w.conn.as_ref()) {
            Some(conn) => conn.tx.send(message),
            None => false,
        }
    }

    /// Matches waiting tasks to free slots and launches them.
    fn dispatch(&mut self, now: Timestamp, fx: &mut Effects) {
        if self.queue.is_empty() {
            return;
        }
        if let Some(until) = self.hold_until {
            if now < until && !self.awaiting.is_empty() {
                return;
            }
            self.hold_until = None;
        }
        let launches = {
            let slots: Vec<Slot<'_>> = self
                .workers
                .values()
                .filter_map(|w| {
                    let conn = w.conn.as_ref()?;
                    let free = w.view.capacity.saturating_sub(w.running.len() as u32);
                    (free > 0 && w.view.state != WorkerState::Maintenance).then_some(Slot {
                        worker: w.view.id.as_str(),
                        free,
                        caps: &w.view.caps,
                        environments: conn.warren.then_some(w.view.environments.as_slice()),
                        runs_commands: conn.warren,
                    })
                })
                .collect();
            if slots.is_empty() {
                return;
            }
            let free: u64 = slots.iter().map(|s| u64::from(s.free)).sum();
            // A window of the queue's head: enough to fill every slot even when some tasks at
            // the head cannot run anywhere right now.
            let window = (free as usize).saturating_mul(4).saturating_add(32);
            let candidates: Vec<Candidate<'_>> = self
                .queue
                .iter()
                .take(window)
                .filter_map(|(_, _, id)| self.tasks.get(id))
                .map(|t| Candidate {
                    id: t.record.id,
                    priority: t.record.priority,
                    order: t.record.queue_order,
                    caps: &t.record.spec.caps,
                    environment: t.record.spec.environment.as_deref(),
                    needs_command: !t.record.spec.command.is_empty(),
                    valid_after: t.record.spec.valid_after,
                    deadline: t.record.spec.deadline,
                })
                .collect();
            schedule::plan(&candidates, &slots, now)
        };
        for launch in launches {
            // Re-check before applying.
            let Some(task) = self.tasks.get(&launch.task) else {
                continue;
            };
            if transition(task.record.state, TaskEvent::Dispatch).is_err() {
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
            if w.conn.is_some() && matches!(w.view.state, WorkerState::Idle | WorkerState::Running)
            {
                w.view.state = if w.running.is_empty() {
                    WorkerState::Idle
                } else {
                    WorkerState::Running
                };
            }
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
        let mut state = State {
            next_id: writer_store.max_task_id()? + 1,
            ..State::default()
        };
        let mut fx = Effects::default();
        for mut view in writer_store.workers()? {
            if view.state != WorkerState::Failed {
                state.awaiting.insert(view.id.clone());
            }
            view.state = WorkerState::Failed;
            view.running = 0;
            view.reason = Some("not connected since the coordinator started".into());
            state.workers.insert(
                view.id.clone(),
                WorkerEntry {
                    view,
                    conn: None,
                    running: HashSet::new(),
                },
            );
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
                        view: offline_view(&worker),
                        conn: None,
                        running: HashSet::new(),
                    });
                entry.running.insert(id);
            } else {
                state.enqueue(id, &mut fx);
            }
        }
        if !state.awaiting.is_empty() {
            let until = now.plus_ms(config.reconnect_hold.as_millis() as i64);
            state.hold_until = Some(until);
            // Task id 0 is never assigned: this timer only wakes dispatch.
            state.timers.insert((until, 0));
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
        service.apply(fx);
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
    fn apply(self: &Arc<Self>, fx: Effects) {
        if fx.timers_changed {
            self.timers.notify_one();
        }
        if fx.writes.is_empty() {
            return;
        }
        self.announce_ends(&fx.finished);
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
    }

    /// After an end is committed: drop the task from memory, wake its readers, answer its
    /// frontend.
    /// Publishes ends at once: wakes readers and waiters, answers Pythia frontends. The task
    /// stays in memory (so `GET` shows it ended) until its end is committed. Publishing before the
    /// commit is safe: a result stays on its worker until acknowledged after the commit, so a
    /// coordinator killed in between gets the same result again.
    fn announce_ends(&self, ids: &[TaskId]) {
        let mut state = self.lock();
        for id in ids {
            let Some(task) = state.tasks.get(id) else {
                continue;
            };
            let view = view_of(&task.record, task.record.result.clone());
            let hub = Arc::clone(&task.hub);
            if let Some((conn, their_id)) = task.frontend.clone() {
                if let Some(fe) = state.frontends.get_mut(&conn) {
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
            let invalid = unsatisfiable(&state, &spec);
            TaskRecord {
                id,
                state: if invalid.is_some() {
                    TaskState::Invalid
                } else {
                    TaskState::Waiting
                },
                priority: spec.effective_priority(),
                owner: spec.owner.clone().unwrap_or(owner),
                spec,
                queue_order: id as i64,
                worker: None,
                attempts: 0,
                created_at: now,
                started_at: None,
                finished_at: invalid.as_ref().map(|_| now),
                reason: invalid,
                result: None,
                origin: Origin::Api,
                idempotency_key: key.clone(),
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
        if record.state == TaskState::Waiting {
            let mut fx = Effects::default();
            {
                let mut state = self.lock();
                let id = record.id;
                state.tasks.insert(id, Active::new(record));
                state.enqueue(id, &mut fx);
                state.dispatch(now, &mut fx);
            }
            self.apply(fx);
        }
        Ok((view, true))
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
            state.cancel(id, now, &mut fx)
        };
        self.apply(fx);
        match outcome {
            Some(Ok(view)) => Ok(view),
            Some(Err(e)) => Err(ServiceError::Conflict(e)),
            None => {
                let view = self.task(id).await?;
                Err(ServiceError::Conflict(format!(
                    "task {id} is already {}",
                    view.state
                )))
            }
        }
    }

    /// A page of tasks.
    pub async fn list(self: &Arc<Self>, query: ListQuery) -> Result<Vec<TaskView>, ServiceError> {
        let service = Arc::clone(self);
        let records = tokio::task::spawn_blocking(move || service.read_store(|s| s.list(&query)))
            .await
            .map_err(|e| ServiceError::Store(e.to_string()))??;
        let state = self.lock();
        Ok(records
            .iter()
            .map(|r| match state.tasks.get(&r.id) {
                // The live entry is ahead of the store by at most one commit.
                Some(t) => view_of(&t.record, None),
                None => view_of(r, None),
            })
            .collect())
    }

    /// Every known worker.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut state = self.lock();
        state.refresh_worker_states();
        state.workers.values().map(|w| w.view.clone()).collect()
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
        {
            let mut state = self.lock();
            while let Some(&(t, id)) = state.timers.first() {
                if t > now {
                    break;
                }
                state.timers.pop_first();
                let expired = state.tasks.get(&id).is_some_and(|task| {
                    task.record.state == TaskState::Waiting
                        && task.record.spec.deadline.is_some_and(|d| d < now)
                });
                if expired {
                    let reason = "its deadline passed while it was waiting".to_string();
                    state.finish(id, TaskState::Timeout, None, Some(reason), now, &mut fx);
                }
            }
            state.dispatch(now, &mut fx);
        }
        self.apply(fx);
    }

    /// Re-queues tasks left IN PROGRESS by a previous coordinator whose worker has not come back.
    pub fn expire_orphans(self: &Arc<Self>) {
        let now = self.now();
        let mut fx = Effects::default();
        {
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
            state.dispatch(now, &mut fx);
        }
        self.apply(fx);
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
        let id;
        {
            let mut state = self.lock();
            let (view, warren, running, finished) = match hello {
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
                    };
                    (view, true, reg.running, reg.finished)
                }
                Hello::Pool { capacity } => {
                    let mut view = offline_view(&format!("pool-{conn_id}"));
                    view.state = WorkerState::Idle;
                    view.capacity = capacity;
                    view.address = Some(addr.to_string());
                    view.connected_at = Some(now);
                    view.last_seen = Some(now);
                    (view, false, Vec::new(), Vec::new())
                }
            };
            id = view.id.clone();
            state.awaiting.remove(&id);
            let entry = state
                .workers
                .entry(id.clone())
                .or_insert_with(|| WorkerEntry {
                    view: view.clone(),
                    conn: None,
                    running: HashSet::new(),
                });
            entry.view = view;
            entry.conn = Some(WorkerConn {
                conn_id,
                tx: tx.clone(),
                warren,
            });
            // Reconcile what it says it runs with what the queue thinks it runs.
            let claimed: HashSet<TaskId> = running
                .iter()
                .chain(finished.iter())
                .filter_map(|s| parse_id(s))
                .collect();
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
                match known {
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
            state.refresh_worker_states();
            if warren {
                if let Some(w) = state.workers.get(&id) {
                    fx.writes.push(Write::Worker(Box::new(w.view.clone())));
                }
            }
            state.dispatch(now, &mut fx);
        }
        self.apply(fx);
        id
    }

    /// A message from a registered worker.
    pub fn worker_message(self: &Arc<Self>, worker: &str, conn_id: u64, message: Message) {
        let now = self.now();
        let mut fx = Effects::default();
        {
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
                other => tracing::debug!(
                    worker,
                    kind = other.kind(),
                    "ignoring message from a worker"
                ),
            }
            state.dispatch(now, &mut fx);
        }
        self.apply(fx);
    }

    /// A worker's connection ended (closed, silent, or broken).
    pub fn worker_lost(self: &Arc<Self>, worker: &str, conn_id: u64, why: &str) {
        let now = self.now();
        let mut fx = Effects::default();
        {
            let mut state = self.lock();
            let Some(entry) = state.workers.get_mut(worker) else {
                return;
            };
            if entry.conn.as_ref().is_none_or(|c| c.conn_id != conn_id) {
                return; // an older connection of a worker that has already reconnected
            }
            let warren = entry.conn.as_ref().is_some_and(|c| c.warren);
            entry.conn = None;
            entry.view.state = WorkerState::Failed;
            entry.view.reason = Some(why.to_string());
            let running: Vec<TaskId> = entry.running.iter().copied().collect();
            let view = entry.view.clone();
            for id in running {
                state.lose_task(id, why, self.config.max_attempts, now, &mut fx);
            }
            if warren {
                fx.writes.push(Write::Worker(Box::new(view)));
            } else {
                state.workers.remove(worker);
            }
            state.dispatch(now, &mut fx);
        }
        tracing::warn!(worker, "worker lost: {why}");
        self.apply(fx);
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
        {
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
            let record = TaskRecord {
                id: next_id,
                state: TaskState::Waiting,
                priority: spec.effective_priority(),
                owner: format!("pythia-frontend-{conn_id}"),
                spec,
                queue_order: next_id as i64,
                worker: None,
                attempts: 0,
                created_at: now,
                started_at: None,
                finished_at: None,
                reason: None,
                result: None,
                origin: Origin::Frontend,
                idempotency_key: None,
            };
            fx.writes.push(Write::Insert(Box::new(record.clone())));
            state.tasks.insert(
                next_id,
                Active {
                    record,
                    hub: Arc::new(Hub::default()),
                    frontend: Some((conn_id, launch.id)),
                },
            );
            state.enqueue(next_id, &mut fx);
            state.dispatch(now, &mut fx);
        }
        self.apply(fx);
    }

    /// A frontend's `abort`.
    pub fn frontend_abort(self: &Arc<Self>, conn_id: u64, their_id: &str) {
        let now = self.now();
        let mut fx = Effects::default();
        {
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
        }
        self.apply(fx);
    }

    /// A frontend disconnected: its waiting tasks are dropped and its running ones aborted.
    pub fn frontend_closed(self: &Arc<Self>, conn_id: u64) {
        let now = self.now();
        let mut fx = Effects::default();
        {
            let mut state = self.lock();
            let Some(fe) = state.frontends.remove(&conn_id) else {
                return;
            };
            for id in fe.ids.values().copied() {
                let _ = state.cancel(id, now, &mut fx);
            }
        }
        self.apply(fx);
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

/// Why no worker that exists can ever run `spec`; `None` when one can, or when no worker is known
/// yet (the first may still be starting).
fn unsatisfiable(state: &State, spec: &TaskSpec) -> Option<String> {
    if state.workers.is_empty() || (spec.caps.is_empty() && spec.environment.is_none()) {
        return None;
    }
    let candidate = Candidate {
        id: 0,
        priority: spec.effective_priority(),
        order: 0,
        caps: &spec.caps,
        environment: spec.environment.as_deref(),
        needs_command: !spec.command.is_empty(),
        valid_after: None,
        deadline: None,
    };
    let any = state.workers.values().any(|w| {
        let warren = w.conn.as_ref().is_none_or(|c| c.warren);
        let environments = warren.then_some(w.view.environments.as_slice());
        schedule::fits(&candidate, &w.view.caps, environments, warren)
    });
    (!any)
        .then(|| "no known worker offers the capabilities and environment it requires".to_string())
}

impl State {
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
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.remove(&id);
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
            Ok(_) => Err(format!("task {id} is {state}")),
            Err(e) => Err(e.to_string()),
        })
    }
}
