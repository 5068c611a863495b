//! A running task's output and statistics, kept from the first byte and pushed to any number of
//! readers as it arrives.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use warren_core::stats::StatSample;
use warren_core::task::{OutputStream, TaskView};

/// One thing a reader receives.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// A chunk of output.
    Output(OutputStream, Arc<[u8]>),
    /// A statistics sample.
    Stats(StatSample),
}

/// The live record of one task's output.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    version: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<HubEvent>,
    end: Option<Box<TaskView>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            inner: Mutex::new(Inner::default()),
            version: watch::Sender::new(0),
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds an event and wakes readers (ignored once the task has ended).
    pub fn push(&self, event: HubEvent) {
        {
            let mut inner = self.lock();
            if inner.end.is_some() {
                return;
            }
            inner.events.push(event);
        }
        self.bump();
    }

    /// Marks the end, with the task's final view, and wakes readers.
    pub fn end(&self, view: TaskView) {
        self.lock().end = Some(Box::new(view));
        self.bump();
    }

    /// The final view, once ended.
    pub fn ended(&self) -> Option<TaskView> {
        self.lock().end.as_deref().cloned()
    }

    /// A subscription to changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Events from index `from` on, and the end when reached.
    pub fn since(&self, from: usize) -> (Vec<HubEvent>, Option<TaskView>) {
        let inner = self.lock();
        let events = inner
            .events
            .get(from..)
            .map(<[HubEvent]>::to_vec)
            .unwrap_or_default();
        (events, inner.end.as_deref().cloned())
    }

    /// Waits until the task ends or `timeout` passes; the final view when it ended.
    pub async fn wait_end(&self, timeout: std::time::Duration) -> Option<TaskView> {
        let mut rx = self.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(view) = self.ended() {
                    return Some(view);
                }
                if rx.changed().await.is_err() {
                    return self.ended();
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}
