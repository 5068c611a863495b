//! The warm pool: runs prepared ahead of time by a background thread, so that a run with the
//! common shape (host root, no task files) only has its per-run work left when it is asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::run::{Host, Prepared, Shape};

/// Keeps up to `want` prepared runs of [`Shape::default_host`].
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    ready: Mutex<Vec<Prepared>>,
    changed: Condvar,
    stop: AtomicBool,
    want: usize,
}

/// Pause after a failed preparation (no uid free, a cgroup refused) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Pool {
    /// Starts the refilling thread. The prepared children's parent is that thread, so they are
    /// killed by the kernel (PR_SET_PDEATHSIG) if it ever ends without cleaning up.
    pub fn start(host: Arc<Host>, want: usize) -> Pool {
        let shared = Arc::new(Shared {
            ready: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            want,
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("warren-warm-pool".into())
            .spawn(move || refill(&host, &worker))
            .ok();
        Pool { shared, thread }
    }

    /// A prepared run of `shape`, if one is ready and still alive.
    pub fn take(&self, shape: &Shape) -> Option<Prepared> {
        if *shape != Shape::default_host() {
            return None;
        }
        let mut ready = self.shared.ready.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        while let Some(prepared) = ready.pop() {
            if prepared.alive() {
                found = Some(prepared);
                break;
            }
        }
        drop(ready);
        self.shared.changed.notify_all();
        found
    }
}

impl Pool {
    /// Blocks until the pool holds all the runs it keeps, or `timeout` passes; true when full.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut ready = self.shared.ready.lock().unwrap_or_else(|p| p.into_inner());
        while ready.len() < self.shared.want {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            ready = self
                .shared
                .changed
                .wait_timeout(ready, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

fn refill(host: &Host, shared: &Shared) {
    let shape = Shape::default_host();
    loop {
        {
            let mut ready = shared.ready.lock().unwrap_or_else(|p| p.into_inner());
            while !shared.stop.load(Ordering::SeqCst) && ready.len() >= shared.want {
                ready = shared
                    .changed
                    .wait(ready)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match host.prepare(&shape, None) {
            Ok(prepared) => {
                shared
                    .ready
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(prepared);
                shared.changed.notify_all();
            }
            Err(_) => {
                let ready = shared.ready.lock().unwrap_or_else(|p| p.into_inner());
                let _ = shared.changed.wait_timeout(ready, RETRY_AFTER);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Dropping the prepared runs kills their children and removes their cgroups.
        self.shared
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
