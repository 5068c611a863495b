//! Group commit: one thread owns the store's write connection; every change is sent to it, and it
//! applies everything queued at that moment in one transaction, then runs each change's
//! continuation (acknowledge a worker, answer an API call, publish the end of a task).

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::store::{Store, Write};

/// What runs after a change is committed (or failed to be), on the writer thread.
pub type AfterCommit = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    writes: Vec<Write>,
    then: Option<AfterCommit>,
}

/// Most changes applied in one transaction.
const MAX_BATCH: usize = 8192;

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer thread over `store`. It stops when every handle is dropped.
    pub fn start(mut store: Box<dyn Store>) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("warren-store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    commit(&mut *store, batch);
                }
            })?;
        Ok((Writer { tx }, handle))
    }

    /// Queues changes; `then` runs once they are committed.
    pub fn submit(&self, writes: Vec<Write>, then: Option<AfterCommit>) {
        if writes.is_empty() && then.is_none() {
            return;
        }
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { writes, then }) {
            tracing::error!(
                "store writer has stopped; {} changes not recorded",
                job.writes.len()
            );
            if let Some(then) = job.then {
                then(Err("the store writer has stopped".into()));
            }
        }
    }

    /// Queues changes and waits until they are committed.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            writes,
            Some(Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })),
        );
        rx.await
            .map_err(|_| "the store writer has stopped".to_string())?
    }
}

fn commit(store: &mut dyn Store, mut batch: Vec<Job>) {
    // Move (not copy) every change into one slice, remembering where each job's changes are.
    let mut ranges = Vec::with_capacity(batch.len());
    let mut all: Vec<Write> = Vec::new();
    for job in &mut batch {
        let start = all.len();
        all.append(&mut job.writes);
        ranges.push(start..all.len());
    }
    match store.apply(&all) {
        Ok(()) => {
            for job in batch {
                if let Some(then) = job.then {
                    then(Ok(()));
                }
            }
        }
        Err(err) if batch.len() > 1 => {
            // One bad change must not fail the others: retry each job alone.
            tracing::warn!(
                "group commit of {} changes failed ({err}); retrying one by one",
                batch.len()
            );
            for (job, range) in batch.into_iter().zip(ranges) {
                let outcome = store.apply(&all[range]).map_err(|e| e.to_string());
                if let Err(e) = &outcome {
                    tracing::error!("store write failed: {e}");
                }
                if let Some(then) = job.then {
                    then(outcome);
                }
            }
        }
        Err(err) => {
            tracing::error!("store write failed: {err}");
            for job in batch {
                if let Some(then) = job.then {
                    then(Err(err.to_string()));
                }
            }
        }
    }
}
