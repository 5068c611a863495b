//! The incremental matcher: which waiting task starts on which worker.
//!
//! # The rule
//!
//! Walk the ready tasks in order: priority (1 first), then queue order (FIFO by acceptance; a
//! re-queued task is given an order ahead of every other, so it goes back to the front), then id.
//! Each task goes to the *least capable* available worker that fits it and has room: fewest
//! capabilities plus groups (Boruta's rule, which keeps rare workers free for the tasks that need
//! them), ties by most free slots, then by worker id. A task that fits no worker with room is
//! skipped and never blocks the tasks behind it.
//!
//! A worker fits a task when it offers every required capability with the same value (`id` and
//! `uuid` also match the worker's own id, so either pins one worker), offers the task's
//! environment (a plain Pythia pool, which names none, offers any), belongs to at least one of the
//! owner's groups (a task without groups may use any worker), runs commands if the task has one,
//! and its total memory and CPU cover the task's (a total of 0 means "not reported": no
//! constraint). It has room when the caller says it is available (IDLE or RUNNING), it has a free
//! slot, and the task's memory and CPU fit what its running tasks leave free.
//!
//! # How it stays fast
//!
//! Tasks with equal [`Requirements`] form one class, each an ordered queue of its ready tasks;
//! an index of every class's first task gives the walk order over classes. Every class knows the
//! workers that fit it and every worker the classes it fits, so a change costs work in proportion
//! to what it touches, never to the queue.
//!
//! After each [`Matcher::next_launches`] no ready task fits any worker with room (that is what
//! the walk guarantees); the matcher remembers which classes are in that "blocked" state, and only
//! a change that can unblock one marks it: a worker gaining room (a slot freed, resources
//! released, it became available, it changed or was added) marks that worker, a task arriving in
//! a class that is not blocked marks the class. The next walk visits, in walk order, only the
//! marked classes (against all their workers) and the classes a marked worker with a slot fits
//! (against the marked workers): every other pair had no room before and has none now. A worker
//! that fits many classes finds them by scanning the class heads in order from its *floor* (no
//! head before it fits the worker: scans raise it, a new head it fits lowers it), so a backlog it
//! cannot use costs it nothing; one that fits few, through a heap of its own classes' heads. The
//! walk stops once the marked workers are full and the marked classes are done. The result is
//! exactly that of the full walk over every task and worker, which the tests check against the
//! obvious implementation on random histories, in every walk order.
//!
//! Valid-after and deadline are two [`TimerQueue`]s: a task enters its class's queue when its
//! valid-after is reached and leaves it once its deadline has passed (it then stays, never
//! startable, until the caller removes it as TIMEOUT).
//!
//! # Use
//!
//! Report every change as it happens, then ask for the launches: a task accepted or re-queued
//! ([`Matcher::add_task`]), cancelled, timed out or invalid ([`Matcher::remove_task`]), a worker
//! registered or changed ([`Matcher::upsert_worker`]), a task ended or a worker changed state
//! ([`Matcher::update_load`]), a worker gone ([`Matcher::remove_worker`]); also call
//! [`Matcher::next_launches`] when the timer set for [`Matcher::next_ready_at`] fires.
//!
//! ```
//! use warren_core::matcher::{Matcher, Requirements, WaitingTask, WorkerLoad, WorkerProfile};
//! use warren_core::task::Timestamp;
//!
//! let mut matcher = Matcher::new();
//! let worker = WorkerProfile {
//!     id: "w1".into(),
//!     runs_commands: true,
//!     environments: Some(["busybox".to_string()].into()),
//!     ..WorkerProfile::default()
//! };
//! let idle = WorkerLoad { available: true, free_slots: 1, ..WorkerLoad::default() };
//! matcher.upsert_worker(worker, idle);
//! let needs = Requirements { needs_command: true, ..Requirements::default() };
//! for (id, priority) in [(1, 8), (2, 3)] {
//!     matcher.add_task(WaitingTask {
//!         id,
//!         priority,
//!         order: id as i64,
//!         requirements: needs.clone(),
//!         valid_after: None,
//!         deadline: None,
//!     });
//! }
//! let launches = matcher.next_launches(Timestamp::from_unix_ms(0));
//! assert_eq!((launches[0].task, launches[0].worker.as_str()), (2, "w1"));
//! // Task 2 ends: the slot is free again, and task 1 starts.
//! matcher.update_load("w1", idle);
//! assert_eq!(matcher.next_launches(Timestamp::from_unix_ms(1))[0].task, 1);
//! ```
//!
//! Pure and deterministic: time is a parameter, nothing is random, every collection iterated is
//! ordered.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;

use crate::environment;
use crate::task::{TaskId, TaskSpec, Timestamp};
use crate::timers::TimerQueue;

/// What a task needs from a worker. Tasks with equal requirements share one queue in the matcher.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirements {
    /// Capabilities the worker must offer, each with this exact value.
    pub caps: BTreeMap<String, String>,
    /// The owner's groups: the worker must be in at least one. Empty: any worker.
    pub groups: BTreeSet<String>,
    /// The environment the worker must offer.
    pub environment: Option<String>,
    /// Whether it runs a command (only Warren workers can); a Pythia task (a taskfs only) also
    /// runs on plain Pythia pools.
    pub needs_command: bool,
    /// Memory it reserves, in bytes (its `limits.memory`; 0: none).
    pub memory: u64,
    /// CPU share it reserves, in milli-CPUs (its `limits.cpus`; 0: none).
    pub milli_cpus: u64,
}

impl Requirements {
    /// The requirements of `spec` (its limits as they will run, so with defaults applied) submitted
    /// by an owner in `owner_groups`.
    pub fn from_spec(spec: &TaskSpec, owner_groups: BTreeSet<String>) -> Requirements {
        Requirements {
            caps: spec.caps.clone(),
            groups: owner_groups,
            environment: spec.environment.clone(),
            needs_command: !spec.command.is_empty(),
            memory: spec.limits.memory.unwrap_or(0),
            milli_cpus: spec.limits.cpus.unwrap_or(0),
        }
    }
}

/// What a worker is: its identity and what it offers. Changes rarely (registration, groups).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerProfile {
    /// Its stable id.
    pub id: String,
    /// Its capabilities.
    pub caps: BTreeMap<String, String>,
    /// Its groups.
    pub groups: BTreeSet<String>,
    /// Environments it offers; `None` when it does not say (a plain Pythia pool): any.
    pub environments: Option<BTreeSet<String>>,
    /// Whether it runs commands (a Warren worker) or only Pythia tasks (a plain pool).
    pub runs_commands: bool,
    /// Memory it has, in bytes (0: not reported, no constraint).
    pub memory: u64,
    /// CPU it has, in milli-CPUs (0: not reported, no constraint).
    pub milli_cpus: u64,
}

impl WorkerProfile {
    /// Whether it offers capability `key=value`; `id` and `uuid` also match its own id.
    pub fn offers(&self, key: &str, value: &str) -> bool {
        match self.caps.get(key) {
            Some(v) => v == value,
            None => matches!(key, "id" | "uuid") && value == self.id,
        }
    }

    /// Whether it offers `environment` (`host` always; a plain pool, which does not say, any).
    pub fn offers_environment(&self, environment: &str) -> bool {
        environment == environment::HOST
            || self
                .environments
                .as_ref()
                .is_none_or(|offered| offered.contains(environment))
    }

    /// How capable it is (capabilities plus groups): the least capable fitting worker is chosen.
    pub fn score(&self) -> usize {
        self.caps.len() + self.groups.len()
    }

    /// Whether it could ever run a task with `req` (everything but its current load).
    pub fn fits(&self, req: &Requirements) -> bool {
        (self.runs_commands || !req.needs_command)
            && req.caps.iter().all(|(k, v)| self.offers(k, v))
            && req
                .environment
                .as_deref()
                .is_none_or(|e| self.offers_environment(e))
            && (req.groups.is_empty() || !req.groups.is_disjoint(&self.groups))
            && (self.memory == 0 || req.memory <= self.memory)
            && (self.milli_cpus == 0 || req.milli_cpus <= self.milli_cpus)
    }

    /// Whether a task with `req` fits what `load` leaves free now (a slot, memory, CPU).
    pub fn has_room(&self, load: &WorkerLoad, req: &Requirements) -> bool {
        load.available
            && load.free_slots > 0
            && (self.memory == 0 || req.memory <= self.memory.saturating_sub(load.reserved_memory))
            && (self.milli_cpus == 0
                || req.milli_cpus <= self.milli_cpus.saturating_sub(load.reserved_milli_cpus))
    }
}

/// What a worker is doing now. Changes with every launch and every end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Whether it takes new tasks: its state is IDLE or RUNNING
    /// ([`crate::worker_state::accepts_work`]).
    pub available: bool,
    /// Tasks it can still take (capacity minus running).
    pub free_slots: u32,
    /// Memory its running tasks reserve, in bytes.
    pub reserved_memory: u64,
    /// CPU its running tasks reserve, in milli-CPUs.
    pub reserved_milli_cpus: u64,
}

impl WorkerLoad {
    /// Whether `self` could take something `before` could not: more slots, fewer reservations,
    /// newly available.
    fn gained_room_over(&self, before: &WorkerLoad) -> bool {
        self.available
            && self.free_slots > 0
            && (!before.available
                || before.free_slots == 0
                || self.free_slots > before.free_slots
                || self.reserved_memory < before.reserved_memory
                || self.reserved_milli_cpus < before.reserved_milli_cpus)
    }

    /// This load with one more task, reserving `memory` bytes and `milli_cpus`.
    fn with_launch(mut self, memory: u64, milli_cpus: u64) -> WorkerLoad {
        self.free_slots = self.free_slots.saturating_sub(1);
        self.reserved_memory = self.reserved_memory.saturating_add(memory);
        self.reserved_milli_cpus = self.reserved_milli_cpus.saturating_add(milli_cpus);
        self
    }
}

/// A task waiting to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingTask {
    /// The task.
    pub id: TaskId,
    /// 1 (most important) ..= 16.
    pub priority: u8,
    /// Queue order within a priority (smaller first; a re-queued task gets one smaller than any).
    pub order: i64,
    /// What it needs.
    pub requirements: Requirements,
    /// Not started before this time.
    pub valid_after: Option<Timestamp>,
    /// Not started after this time (the caller's timer ends it TIMEOUT then).
    pub deadline: Option<Timestamp>,
}

/// One decision: start `task` on `worker`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Launch {
    /// The task.
    pub task: TaskId,
    /// The worker, by id.
    pub worker: String,
}

type ClassId = u32;
type WorkerIdx = u32;
/// A task's place in the walk: (priority, order, id).
type QueueKey = (u8, i64, TaskId);
/// A class's first ready task, as the walk orders classes.
type Head = (QueueKey, ClassId);
/// After every head.
const PAST_LAST: Head = ((u8::MAX, i64::MAX, TaskId::MAX), ClassId::MAX);

#[derive(Debug)]
struct Class {
    req: Requirements,
    /// Ready tasks (valid-after reached, deadline not passed) in walk order.
    ready: BTreeSet<QueueKey>,
    /// Tasks of the class in any phase (ready, before valid-after, past deadline).
    members: usize,
    /// Registered workers that fit it (any state).
    fitting: Bits,
    /// The last walk found no room for its head on any fitting worker, and nothing since gave
    /// one of them room (that would have marked the worker).
    blocked: bool,
}

#[derive(Debug)]
struct WorkerEntry {
    profile: WorkerProfile,
    load: WorkerLoad,
    score: usize,
    /// Classes it fits.
    classes: BTreeSet<ClassId>,
    /// No class head before this one fits it: where a scan for it starts. Raised by scans,
    /// lowered when a head it fits appears before it.
    floor: Head,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before its valid-after.
    Pending,
    Ready,
    /// Past its deadline: never startable again; stays until the caller removes it.
    Expired,
}

#[derive(Debug, Clone, Copy)]
struct TaskEntry {
    class: ClassId,
    key: QueueKey,
    phase: Phase,
}

/// Where a scan of the class heads looks: after `after`, before `until`.
#[derive(Debug, Clone, Copy)]
struct Span {
    after: Option<Head>,
    until: Option<Head>,
}

/// Why a scan of the class heads stopped without a head to try.
#[derive(Debug)]
enum ScanEnd {
    /// It passed the last head.
    Exhausted,
    /// It looked at its budget of heads without finding one; this is the next.
    GaveUp(Head),
}

/// Heads one scan looks at before its workers switch to heaps of their own classes: a worker
/// whose floor is a class it fits but has no room for (memory, CPU) would otherwise pass every
/// head behind it.
const SCAN_BUDGET: usize = 128;

/// How a walk finds the next class to try while a worker that gained room still has a slot.
/// Every order gives the same launches; they differ only in cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalkOrder {
    /// Per worker: a scan when it fits at least an eighth of the classes with ready tasks, a heap
    /// otherwise.
    #[default]
    Auto,
    /// Every worker scans the class heads in order from its floor (switching to a heap after
    /// 128 heads without one it can take).
    Scan,
    /// Every worker walks a heap of the heads of the classes it fits.
    Heap,
}

/// The waiting tasks and registered workers, indexed for fast decisions. See the module
/// documentation for the rule and how it is kept.
#[derive(Debug, Default)]
pub struct Matcher {
    classes: Slab<Class>,
    class_of: BTreeMap<Requirements, ClassId>,
    /// The first ready task of every class with one, in walk order.
    heads: BTreeSet<(QueueKey, ClassId)>,
    tasks: BTreeMap<TaskId, TaskEntry>,
    /// Tasks before their valid-after.
    pending: TimerQueue<TaskId>,
    /// Deadlines of tasks not yet expired.
    deadlines: TimerQueue<TaskId>,
    workers: Slab<WorkerEntry>,
    worker_idx: BTreeMap<String, WorkerIdx>,
    /// Workers that gained room since the last walk.
    dirty_workers: BTreeSet<WorkerIdx>,
    /// Classes to check against all their workers in the next walk.
    dirty_classes: BTreeSet<ClassId>,
    order: WalkOrder,
    /// Heads a scan looks at before giving up ([`SCAN_BUDGET`] unless a test sets it).
    scan_budget: Option<usize>,
    /// Class heads the last walk looked at.
    visited: usize,
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// An empty matcher whose scans give up after `budget` heads, to test the switch to heaps.
    #[cfg(test)]
    fn with_scan_budget(order: WalkOrder, budget: usize) -> Matcher {
        Matcher {
            order,
            scan_budget: Some(budget),
            ..Matcher::default()
        }
    }

    /// An empty matcher that always walks in `order` (for benchmarks and tests; [`Matcher::new`]
    /// chooses per walk).
    pub fn with_walk_order(order: WalkOrder) -> Matcher {
        Matcher {
            order,
            ..Matcher::default()
        }
    }

    /// Adds a waiting task (accepted, re-queued, or restored at start). Replaces a task with the
    /// same id. It is ready from its valid-after on; [`Matcher::next_ready_at`] says when.
    pub fn add_task(&mut self, task: WaitingTask) {
        self.remove_task(task.id);
        let class = self.class_for(&task.requirements);
        if let Some(c) = self.classes.get_mut(&class) {
            c.members += 1;
        }
        let key = (task.priority, task.order, task.id);
        self.tasks.insert(
            task.id,
            TaskEntry {
                class,
                key,
                phase: Phase::Pending,
            },
        );
        if let Some(deadline) = task.deadline {
            // Expired once `now` is past it: due at the next millisecond.
            self.deadlines.schedule(task.id, deadline.plus_ms(1));
        }
        match task.valid_after {
            Some(at) => self.pending.schedule(task.id, at),
            None => self.make_ready(task.id),
        }
    }

    /// Removes a waiting task (cancelled, timed out, invalid, or started elsewhere). Returns
    /// whether it was here.
    pub fn remove_task(&mut self, id: TaskId) -> bool {
        let Some(entry) = self.tasks.remove(&id) else {
            return false;
        };
        match entry.phase {
            Phase::Ready => self.ready_remove(entry.class, entry.key),
            Phase::Pending => {
                self.pending.cancel(&id);
            }
            Phase::Expired => {}
        }
        self.deadlines.cancel(&id);
        if let Some(class) = self.classes.get_mut(&entry.class) {
            class.members = class.members.saturating_sub(1);
        }
        self.drop_class_if_empty(entry.class);
        true
    }

    /// Whether `id` is waiting here.
    pub fn contains_task(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
    }

    /// Tasks waiting (ready, before their valid-after, or past their deadline and not yet
    /// removed).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Requirement classes with waiting tasks.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The earliest valid-after still ahead: call [`Matcher::next_launches`] then.
    pub fn next_ready_at(&self) -> Option<Timestamp> {
        self.pending.next_due()
    }

    /// Adds a worker or replaces what it offers and its load (registration, re-registration,
    /// groups changed, any state change).
    pub fn upsert_worker(&mut self, profile: WorkerProfile, load: WorkerLoad) {
        let idx = match self.worker_idx.get(&profile.id) {
            Some(&idx) => idx,
            None => {
                let idx = self.workers.vacant();
                self.worker_idx.insert(profile.id.clone(), idx);
                idx
            }
        };
        let unchanged = self.workers.get(&idx).is_some_and(|w| w.profile == profile);
        if unchanged {
            self.set_load(idx, load);
            return;
        }
        // What it fits may have changed: index it afresh, and let every class it fits look at it.
        self.unindex_worker(idx);
        let classes: BTreeSet<ClassId> = self
            .classes
            .iter()
            .filter(|(_, c)| profile.fits(&c.req))
            .map(|(id, _)| id)
            .collect();
        for c in &classes {
            if let Some(class) = self.classes.get_mut(c) {
                class.fitting.insert(idx);
            }
        }
        let score = profile.score();
        // Its first scan then starts at the first head it fits, not at the front of the queue.
        let floor = self
            .heads
            .iter()
            .find(|(_, c)| classes.contains(c))
            .copied()
            .unwrap_or(PAST_LAST);
        self.workers.insert(
            idx,
            WorkerEntry {
                profile,
                load,
                score,
                classes,
                floor,
            },
        );
        if load.available && load.free_slots > 0 {
            self.dirty_workers.insert(idx);
        }
    }

    /// Sets what a worker is doing now (its state changed, a task ended, a launch was refused).
    /// Returns false for a worker that is not registered.
    pub fn update_load(&mut self, worker: &str, load: WorkerLoad) -> bool {
        match self.worker_idx.get(worker) {
            Some(&idx) => {
                self.set_load(idx, load);
                true
            }
            None => false,
        }
    }

    /// The load the matcher holds for `worker` (its own launches included).
    pub fn load(&self, worker: &str) -> Option<WorkerLoad> {
        let idx = self.worker_idx.get(worker)?;
        self.workers.get(idx).map(|w| w.load)
    }

    /// Removes a worker (deregistered). Returns whether it was registered.
    pub fn remove_worker(&mut self, worker: &str) -> bool {
        let Some(idx) = self.worker_idx.remove(worker) else {
            return false;
        };
        self.unindex_worker(idx);
        self.workers.remove(&idx);
        self.dirty_workers.remove(&idx);
        true
    }

    /// Registered workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// How many class heads the last [`Matcher::next_launches`] looked at: what a decision cost.
    pub fn last_walk_visits(&self) -> usize {
        self.visited
    }

    /// The launches to make now: the walk of the module documentation over every change since the
    /// last call. Launched tasks leave the matcher and their workers' loads count them (so a
    /// later [`Matcher::update_load`] must count them too); if the caller cannot apply one, it
    /// adds the task back and sets the worker's load.
    pub fn next_launches(&mut self, now: Timestamp) -> Vec<Launch> {
        for id in self.pending.pop_due(now) {
            self.make_ready(id);
        }
        for id in self.deadlines.pop_due(now) {
            self.expire(id);
        }
        self.visited = 0;
        if self.dirty_workers.is_empty() && self.dirty_classes.is_empty() {
            return Vec::new();
        }
        let dirty_workers = std::mem::take(&mut self.dirty_workers);
        let dirty_classes = std::mem::take(&mut self.dirty_classes);
        let has_slot = |w: &WorkerEntry| w.load.available && w.load.free_slots > 0;
        // Marked workers that can still take a task: while there is one, any class it fits may
        // start a task; once there is none, only the marked classes can.
        let mut open: BTreeSet<WorkerIdx> = dirty_workers
            .iter()
            .copied()
            .filter(|w| self.workers.get(w).is_some_and(has_slot))
            .collect();
        let mut marked: BTreeSet<(QueueKey, ClassId)> = dirty_classes
            .iter()
            .filter_map(|&c| Some((*self.classes.get(&c)?.ready.first()?, c)))
            .collect();
        // Two ways to find the classes the open workers fit, merged in walk order: a worker
        // that fits many classes scans the class heads in order from its floor (the first it
        // can take is usually the first it looks at); one that fits few has its classes' heads
        // put in a heap (so a worker nothing fits costs nothing).
        let scans = |w: &WorkerEntry| match self.order {
            WalkOrder::Scan => true,
            WalkOrder::Heap => false,
            WalkOrder::Auto => w.classes.len().saturating_mul(8) >= self.heads.len(),
        };
        let mut scanning: BTreeSet<WorkerIdx> = BTreeSet::new();
        // One heap per worker that does not scan, dropped once the worker is full.
        let mut heaps: BTreeMap<WorkerIdx, BinaryHeap<Reverse<Head>>> = BTreeMap::new();
        for &w in &open {
            if let Some(worker) = self.workers.get(&w) {
                if scans(worker) {
                    scanning.insert(w);
                } else {
                    let heads = worker
                        .classes
                        .iter()
                        .filter_map(|&c| Some(Reverse((*self.classes.get(&c)?.ready.first()?, c))));
                    heaps.insert(w, heads.collect());
                }
            }
        }
        // Heads that appear during the walk, for the scanning workers once the scan has passed
        // the last head.
        let mut spill: BinaryHeap<Reverse<Head>> = BinaryHeap::new();
        let mut visited = 0;
        let mut cursor: Option<(QueueKey, ClassId)> = None;
        let mut scanned_all = false;
        let mut launches = Vec::new();
        loop {
            let spilled = if scanned_all && !scanning.is_empty() {
                spill.peek().map(|Reverse(h)| *h)
            } else {
                None
            };
            let from_heap = heaps
                .values()
                .filter_map(|heap| heap.peek().map(|Reverse(h)| *h))
                .chain(spilled)
                .min();
            let other = match (from_heap, marked.first().copied()) {
                (Some(h), Some(m)) => Some(h.min(m)),
                (h, m) => h.or(m),
            };
            let from_scan = if scanning.is_empty() || scanned_all {
                None
            } else {
                match Self::scan_heads(
                    &self.heads,
                    &self.classes,
                    &mut self.workers,
                    Span {
                        after: cursor,
                        until: other,
                    },
                    (&open, &scanning),
                    self.scan_budget.unwrap_or(SCAN_BUDGET),
                    &mut visited,
                ) {
                    Ok(found) => found,
                    // Heads that appear past the end from now on are in the spill heap.
                    Err(ScanEnd::Exhausted) => {
                        scanned_all = true;
                        None
                    }
                    // Every head before `next` was looked at: the scanning workers' classes with
                    // a head from there on go into heaps of their own.
                    Err(ScanEnd::GaveUp(next)) => {
                        for w in std::mem::take(&mut scanning) {
                            let Some(worker) = self.workers.get(&w) else {
                                continue;
                            };
                            let heads = worker.classes.iter().filter_map(|&c| {
                                let head = (*self.classes.get(&c)?.ready.first()?, c);
                                (head >= next).then_some(Reverse(head))
                            });
                            heaps.insert(w, heads.collect());
                        }
                        continue;
                    }
                }
            };
            let Some((key, c)) = from_scan.or(other) else {
                break;
            };
            // Every source yields in walk order, so each is past this point now.
            for heap in heaps.values_mut().chain([&mut spill]) {
                while heap.peek().is_some_and(|Reverse(h)| *h <= (key, c)) {
                    heap.pop();
                }
            }
            cursor = Some((key, c));
            visited += 1;
            let is_marked = marked.remove(&(key, c));
            let Some(class) = self.classes.get(&c) else {
                continue;
            };
            if class.ready.first() != Some(&key) {
                // Not the class's head any more. Never so by construction (an entry in both the
                // heap and the marked set is taken from both at once); checked so that no slip
                // can start a task twice.
                continue;
            }
            let best = if is_marked {
                self.best_worker(class, class.fitting.iter())
            } else {
                self.best_worker(
                    class,
                    open.iter().copied().filter(|w| class.fitting.contains(w)),
                )
            };
            let Some(w) = best else {
                // Every worker that could have room for it was just tried.
                if let Some(class) = self.classes.get_mut(&c) {
                    class.blocked = true;
                }
                continue;
            };
            let (memory, milli_cpus) = (class.req.memory, class.req.milli_cpus);
            self.ready_remove(c, key);
            let next_head = self
                .classes
                .get(&c)
                .and_then(|class| class.ready.first().copied());
            if let Some(next) = next_head {
                if is_marked {
                    marked.insert((next, c));
                }
                spill.push(Reverse((next, c)));
                if let Some(class) = self.classes.get(&c) {
                    for (w, heap) in heaps.iter_mut() {
                        if class.fitting.contains(w) {
                            heap.push(Reverse((next, c)));
                        }
                    }
                }
            }
            if let Some(worker) = self.workers.get_mut(&w) {
                worker.load = worker.load.with_launch(memory, milli_cpus);
                if !has_slot(worker) {
                    open.remove(&w);
                    scanning.remove(&w);
                    heaps.remove(&w);
                }
                launches.push(Launch {
                    task: key.2,
                    worker: worker.profile.id.clone(),
                });
            }
            self.tasks.remove(&key.2);
            self.deadlines.cancel(&key.2);
            if let Some(class) = self.classes.get_mut(&c) {
                class.members = class.members.saturating_sub(1);
            }
            self.drop_class_if_empty(c);
        }
        self.visited = visited;
        launches
    }

    /// Why no registered worker could ever run a task with `req`, or `None` when one could (or
    /// when no worker is registered yet: the first may still be starting).
    pub fn unsatisfiable(&self, req: &Requirements) -> Option<String> {
        unsatisfiable(req, self.workers.values().map(|w| &w.profile))
    }

    /// Every waiting task no registered worker can run, with the reason: to end them INVALID
    /// after a worker is removed or changed. Empty while no worker is registered.
    pub fn unsatisfiable_tasks(&self) -> Vec<(TaskId, String)> {
        if self.workers.is_empty() {
            return Vec::new();
        }
        let reasons: BTreeMap<ClassId, String> = self
            .classes
            .iter()
            .filter(|(_, class)| class.fitting.is_empty())
            .filter_map(|(c, class)| Some((c, self.unsatisfiable(&class.req)?)))
            .collect();
        if reasons.is_empty() {
            return Vec::new();
        }
        self.tasks
            .iter()
            .filter_map(|(&id, t)| Some((id, reasons.get(&t.class)?.clone())))
            .collect()
    }

    /// The first class head in `span` that some worker of `open` fits and has room for (`None`
    /// when the span's end comes first). It starts at the lowest floor of the `scanning` workers
    /// and moves floors up past what it passed. The heads passed over stay blocked: none of
    /// their workers that could have gained room has any for them.
    fn scan_heads(
        heads: &BTreeSet<Head>,
        classes: &Slab<Class>,
        workers: &mut Slab<WorkerEntry>,
        span: Span,
        (open, scanning): (&BTreeSet<WorkerIdx>, &BTreeSet<WorkerIdx>),
        budget: usize,
        visited: &mut usize,
    ) -> Result<Option<Head>, ScanEnd> {
        let floor = scanning
            .iter()
            .filter_map(|w| workers.get(w))
            .map(|w| w.floor)
            .min()
            .unwrap_or(PAST_LAST);
        let lower = match span.after {
            Some(after) if after >= floor => Bound::Excluded(after),
            _ => Bound::Included(floor),
        };
        // Scanning workers whose floor this scan can move: every head from their floor on is
        // looked at (a head before the cursor, between their floor and it, may fit them). Kept
        // while no head passed so far fits them.
        let mut unfound: Vec<WorkerIdx> = scanning
            .iter()
            .copied()
            .filter(|w| {
                workers.get(w).is_some_and(|w| match lower {
                    Bound::Excluded(after) => w.floor > after,
                    _ => true,
                })
            })
            .collect();
        let mut result = Err(ScanEnd::Exhausted);
        let mut stop = PAST_LAST;
        for (looked, &head) in heads.range((lower, Bound::Unbounded)).enumerate() {
            if span.until.is_some_and(|u| head >= u) {
                result = Ok(None);
                stop = head;
                break;
            }
            if looked == budget {
                result = Err(ScanEnd::GaveUp(head));
                stop = head;
                break;
            }
            *visited += 1;
            let Some(class) = classes.get(&head.1) else {
                continue;
            };
            unfound.retain(|w| {
                if !class.fitting.contains(w) {
                    return true;
                }
                if let Some(worker) = workers.get_mut(w) {
                    worker.floor = worker.floor.max(head);
                }
                false
            });
            let room = open.iter().any(|w| {
                class.fitting.contains(w)
                    && workers
                        .get(w)
                        .is_some_and(|w| w.profile.has_room(&w.load, &class.req))
            });
            if room {
                result = Ok(Some(head));
                stop = head;
                break;
            }
        }
        for w in unfound {
            if let Some(worker) = workers.get_mut(&w) {
                worker.floor = worker.floor.max(stop);
            }
        }
        result
    }

    /// The least capable worker of `candidates` with room for `class`'s tasks: fewest
    /// capabilities plus groups, then most free slots, then by id.
    fn best_worker(
        &self,
        class: &Class,
        candidates: impl Iterator<Item = WorkerIdx>,
    ) -> Option<WorkerIdx> {
        let mut best: Option<(&WorkerEntry, WorkerIdx)> = None;
        for idx in candidates {
            let Some(w) = self.workers.get(&idx) else {
                continue;
            };
            if !w.profile.has_room(&w.load, &class.req) {
                continue;
            }
            let better = match best {
                None => true,
                Some((b, _)) => {
                    (w.score, Reverse(w.load.free_slots), &w.profile.id)
                        < (b.score, Reverse(b.load.free_slots), &b.profile.id)
                }
            };
            if better {
                best = Some((w, idx));
            }
        }
        best.map(|(_, idx)| idx)
    }

    fn class_for(&mut self, req: &Requirements) -> ClassId {
        if let Some(&c) = self.class_of.get(req) {
            return c;
        }
        let c = self.classes.vacant();
        let mut fitting = Bits::default();
        for (idx, w) in self.workers.iter_mut() {
            if w.profile.fits(req) {
                fitting.insert(idx);
                w.classes.insert(c);
            }
        }
        self.classes.insert(
            c,
            Class {
                req: req.clone(),
                ready: BTreeSet::new(),
                members: 0,
                fitting,
                blocked: false,
            },
        );
        self.class_of.insert(req.clone(), c);
        c
    }

    /// Moves a task before its valid-after into its class's ready queue.
    fn make_ready(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if task.phase != Phase::Pending {
            return;
        }
        task.phase = Phase::Ready;
        let (c, key) = (task.class, task.key);
        let Some(class) = self.classes.get_mut(&c) else {
            return;
        };
        let old_head = class.ready.first().copied();
        class.ready.insert(key);
        // A blocked class stays blocked with one more task: its workers still have no room.
        if !class.blocked {
            self.dirty_classes.insert(c);
        }
        if old_head.is_none_or(|h| key < h) {
            if let Some(h) = old_head {
                self.heads.remove(&(h, c));
            }
            self.insert_head((key, c));
        }
    }

    /// Indexes a class's new first task, and lowers the floor of every worker it fits that had
    /// its floor past it.
    fn insert_head(&mut self, head: Head) {
        self.heads.insert(head);
        if let Some(class) = self.classes.get(&head.1) {
            for w in class.fitting.iter() {
                if let Some(worker) = self.workers.get_mut(&w) {
                    if head < worker.floor {
                        worker.floor = head;
                    }
                }
            }
        }
    }

    /// A task's deadline passed: it can never start; it waits for the caller to remove it.
    fn expire(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let (phase, c, key) = (task.phase, task.class, task.key);
        task.phase = Phase::Expired;
        match phase {
            Phase::Ready => self.ready_remove(c, key),
            Phase::Pending => {
                self.pending.cancel(&id);
            }
            Phase::Expired => {}
        }
    }

    fn ready_remove(&mut self, c: ClassId, key: QueueKey) {
        let Some(class) = self.classes.get_mut(&c) else {
            return;
        };
        let was_head = class.ready.first() == Some(&key);
        class.ready.remove(&key);
        let next = class.ready.first().copied();
        if next.is_none() {
            class.blocked = false;
        }
        if was_head {
            self.heads.remove(&(key, c));
            if let Some(next) = next {
                self.insert_head((next, c));
            }
        }
    }

    fn drop_class_if_empty(&mut self, c: ClassId) {
        if self.classes.get(&c).is_none_or(|class| class.members != 0) {
            return;
        }
        if let Some(class) = self.classes.remove(&c) {
            for w in class.fitting.iter() {
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.classes.remove(&c);
                }
            }
            self.class_of.remove(&class.req);
        }
        self.dirty_classes.remove(&c);
    }

    fn set_load(&mut self, idx: WorkerIdx, load: WorkerLoad) {
        if let Some(w) = self.workers.get_mut(&idx) {
            if load.gained_room_over(&w.load) {
                self.dirty_workers.insert(idx);
            }
            w.load = load;
        }
    }

    fn unindex_worker(&mut self, idx: WorkerIdx) {
        if let Some(w) = self.workers.get_mut(&idx) {
            for c in std::mem::take(&mut w.classes) {
                if let Some(class) = self.classes.get_mut(&c) {
                    class.fitting.remove(&idx);
                }
            }
        }
    }
}

/// Values by small reusable ids: lookups by index instead of by search. Iterates in id order,
/// so it stays deterministic; a freed id is reused by the next insertion.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The id the next new value gets.
    fn vacant(&self) -> u32 {
        self.free.last().copied().unwrap_or(self.slots.len() as u32)
    }

    /// Puts `value` at `id`: a [`Slab::vacant`] id, or one in use (replaced).
    fn insert(&mut self, id: u32, value: T) {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        if let Some(pos) = self.free.iter().rposition(|&f| f == id) {
            self.free.swap_remove(pos);
        }
        if let Some(slot) = self.slots.get_mut(i) {
            if slot.replace(value).is_none() {
                self.len += 1;
            }
        }
    }

    fn get(&self, id: &u32) -> Option<&T> {
        self.slots.get(*id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: &u32) -> Option<&mut T> {
        self.slots.get_mut(*id as usize)?.as_mut()
    }

    fn remove(&mut self, id: &u32) -> Option<T> {
        let value = self.slots.get_mut(*id as usize)?.take()?;
        self.free.push(*id);
        self.len -= 1;
        Some(value)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        (0u32..)
            .zip(&self.slots)
            .filter_map(|(id, slot)| Some((id, slot.as_ref()?)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        (0u32..)
            .zip(&mut self.slots)
            .filter_map(|(id, slot)| Some((id, slot.as_mut()?)))
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A set of worker ids as bits: membership in one step on the walk's hot path.
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, i: u32) {
        let word = (i / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1 << (i % 64);
        }
    }

    fn remove(&mut self, i: &u32) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }

    fn contains(&self, i: &u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The ids in increasing order.
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..).zip(&self.0).flat_map(|(word, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(word * 64 + bit)
            })
        })
    }
}

/// Why none of `workers` could ever run a task with `req` (its state and load aside), naming what
/// no worker offers; `None` when one could, or when there are no workers at all (the first may
/// still be starting).
///
/// Each requirement is checked alone first (`no worker offers capability gpu=a100`); when each is
/// met somewhere but no single worker meets them all, the reason says so and names them.
pub fn unsatisfiable<'a>(
    req: &Requirements,
    workers: impl IntoIterator<Item = &'a WorkerProfile>,
) -> Option<String> {
    let workers: Vec<&WorkerProfile> = workers.into_iter().collect();
    if workers.is_empty() || workers.iter().any(|w| w.fits(req)) {
        return None;
    }
    let mut missing = Vec::new();
    if req.needs_command && !workers.iter().any(|w| w.runs_commands) {
        missing.push("no worker runs commands (only plain Pythia pools are registered)".into());
    }
    let absent: Vec<String> = req
        .caps
        .iter()
        .filter(|(k, v)| !workers.iter().any(|w| w.offers(k, v)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match absent.len() {
        0 => {}
        1 => missing.push(format!("no worker offers capability {}", absent[0])),
        _ => missing.push(format!(
            "no worker offers capabilities {}",
            absent.join(", ")
        )),
    }
    if let Some(env) = &req.environment {
        if !workers.iter().any(|w| w.offers_environment(env)) {
            let offered = workers
                .iter()
                .filter_map(|w| w.environments.as_ref())
                .flatten()
                .map(String::as_str);
            missing.push(environment::not_offered_message(env, offered));
        }
    }
    if !req.groups.is_empty() && workers.iter().all(|w| req.groups.is_disjoint(&w.groups)) {
        missing.push(format!(
            "no worker is in any of the groups {}",
            list(&req.groups)
        ));
    }
    type Amount = fn(&WorkerProfile) -> u64;
    type Show = fn(u64) -> String;
    let resources: [(&str, u64, Amount, Show); 2] = [
        ("memory", req.memory, |w| w.memory, human_bytes),
        ("CPU share", req.milli_cpus, |w| w.milli_cpus, human_cpus),
    ];
    for (name, needed, has, show) in resources {
        // A worker that does not report the resource (0) is not constrained by it.
        if needed > 0 && workers.iter().all(|w| has(w) != 0 && has(w) < needed) {
            let largest = workers.iter().map(|w| has(w)).max().unwrap_or(0);
            missing.push(format!(
                "{name} {} is more than any worker has (largest {})",
                show(needed),
                show(largest)
            ));
        }
    }
    if !missing.is_empty() {
        return Some(missing.join("; "));
    }
    Some(format!(
        "no single worker meets all of {} together, though each is met by some worker",
        describe(req).join(", ")
    ))
}

/// The requirements of `req` that narrow the choice of worker, one phrase each.
fn describe(req: &Requirements) -> Vec<String> {
    let mut parts = Vec::new();
    if req.needs_command {
        parts.push("running a command".to_string());
    }
    parts.extend(req.caps.iter().map(|(k, v)| format!("capability {k}={v}")));
    if let Some(env) = &req.environment {
        parts.push(format!("environment {env}"));
    }
    if !req.groups.is_empty() {
        parts.push(format!("one of the groups {}", list(&req.groups)));
    }
    if req.memory > 0 {
        parts.push(format!("memory {}", human_bytes(req.memory)));
    }
    if req.milli_cpus > 0 {
        parts.push(format!("CPU share {}", human_cpus(req.milli_cpus)));
    }
    parts
}

fn list(items: &BTreeSet<String>) -> String {
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    format!("[{}]", items.join(", "))
}

/// `64 GiB`, `1.5 GiB`, `512 MiB`, `1000 bytes`.
fn human_bytes(bytes: u64) -> String {
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// `4 CPUs`, `1 CPU`, `0.5 CPUs`.
fn human_cpus(milli: u64) -> String {
    let cpus = milli as f64 / 1000.0;
    if milli == 1000 {
        "1 CPU".to_string()
    } else {
        format!("{cpus} CPUs")
    }
}

#[cfg(test)]
mod tests;
