//! A store in memory, for tests of the queue logic. Same behaviour as SQLite, no durability.
//! Clones share the same data (as two connections to one database do).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use warren_core::task::{TaskId, TaskState, WorkerView};

use super::{ListPage, ListQuery, Store, StoreError, TaskRecord, Write};

/// Everything in maps.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: BTreeMap<TaskId, TaskRecord>,
    workers: BTreeMap<String, WorkerView>,
    reserved_ids: TaskId,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mut this = self.lock();
        let this = &mut *this;
        for write in writes {
            match write {
                Write::Insert(record) => {
                    this.tasks.insert(record.id, (**record).clone());
                }
                Write::Dispatch {
                    id,
                    worker,
                    attempts,
                    started_at,
                } => {
                    if let Some(t) = this.tasks.get_mut(id) {
                        t.state = TaskState::InProgress;
                        t.worker = Some(worker.clone());
                        t.attempts = *attempts;
                        t.started_at = Some(*started_at);
                    }
                }
                Write::Requeue {
                    id,
                    queue_order,
                    reason,
                } => {
                    if let Some(t) = this.tasks.get_mut(id) {
                        t.state = TaskState::Waiting;
                        t.worker = None;
                        t.queue_order = *queue_order;
                        t.reason = Some(reason.clone());
                    }
                }
                Write::Finish {
                    id,
                    state,
                    worker,
                    result,
                    reason,
                    finished_at,
                } => {
                    if let Some(t) = this.tasks.get_mut(id) {
                        t.state = *state;
                        if worker.is_some() {
                            t.worker = worker.clone();
                        }
                        t.result = result.as_deref().cloned();
                        t.reason = reason.clone();
                        t.finished_at = Some(*finished_at);
                    }
                }
                Write::Worker(view) => {
                    this.workers.insert(view.id.clone(), (**view).clone());
                }
                Write::RemoveWorker(id) => {
                    this.workers.remove(id);
                }
                Write::ReserveIds(up_to) => {
                    this.reserved_ids = this.reserved_ids.max(*up_to);
                }
                Write::Update { id, priority, spec } => {
                    if let Some(t) = this.tasks.get_mut(id) {
                        t.priority = *priority;
                        t.spec = (**spec).clone();
                    }
                }
            }
        }
        Ok(())
    }

    fn active_tasks(&mut self) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(self
            .lock()
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .cloned()
            .collect())
    }

    fn task(&mut self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.lock().tasks.get(&id).cloned())
    }

    fn task_by_key(&mut self, key: &str) -> Result<Option<TaskId>, StoreError> {
        Ok(self
            .lock()
            .tasks
            .values()
            .find(|t| t.idempotency_key.as_deref() == Some(key))
            .map(|t| t.id))
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage, StoreError> {
        let this = self.lock();
        let value = match q.paginator {
            Some(p) => Some(
                this.tasks
                    .get(&p.id())
                    .map(|r| q.sort.value(r))
                    .ok_or(StoreError::NoSuchTask(p.id()))?,
            ),
            None => None,
        };
        Ok(super::select(this.tasks.values(), value, q))
    }

    fn max_task_id(&mut self) -> Result<TaskId, StoreError> {
        let this = self.lock();
        let assigned = this.tasks.keys().next_back().copied().unwrap_or(0);
        Ok(assigned.max(this.reserved_ids))
    }

    fn workers(&mut self) -> Result<Vec<WorkerView>, StoreError> {
        Ok(self.lock().workers.values().cloned().collect())
    }
}
