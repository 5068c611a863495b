//! The warm pool: runs prepared ahead of time by a background thread, so that a run with the
//! common shape (host root, no task files) only has its per-run work left when it is asked for.
//! The same thread finishes ended runs off the path that returns their results: it waits for
//! the run's init to exit, removes the run's cgroups and frees its uid.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cgroup::RunCgroups;
use crate::run::{Host, Prepared, Shape};
use crate::sys;
use crate::uids::UidLease;

/// What is left of a run whose result has been returned.
#[derive(Debug)]
pub struct Retired {
    /// A pidfd of the run's init when it may still be exiting (it reported the program's end,
    /// with every other process of the run already gone); `None` once it has been reaped.
    pub init: Option<OwnedFd>,
    /// The run's groups, removed once the init is gone.
    pub cgroups: RunCgroups,
    /// The run's uid, free for another run once the init is gone.
    pub lease: Option<UidLease>,
}

impl Retired {
    /// Reaps the init, removes the groups (a group that cannot be removed is left for the next
    /// runner's reclaim: its name says which runner made it) and frees the uid.
    fn finish(mut self) {
        if let Some(init) = self.init.take() {
            let _ = sys::process::wait_pidfd(init.as_fd());
        }
        let _ = self.cgroups.remove();
        drop(self.lease.take());
    }
}

/// Keeps up to `want` prepared runs of [`Shape::default_host`].
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    want: usize,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Prepared>,
    retired: Vec<Retired>,
}

/// Pause after a failed preparation (no uid free, a cgroup refused) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pool {
    /// Starts the refilling thread. The prepared children's parent is that thread, so they are
    /// killed by the kernel (PR_SET_PDEATHSIG) if it ever ends without cleaning up.
    pub fn start(host: Arc<Host>, want: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
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
        let mut state = self.shared.lock();
        let mut found = None;
        while let Some(prepared) = state.ready.pop() {
            if prepared.alive() {
                found = Some(prepared);
                break;
            }
        }
        drop(state);
        self.shared.changed.notify_all();
        found
    }

    /// Hands an ended run over to be finished in the background.
    pub fn retire(&self, retired: Retired) {
        self.shared.lock().retired.push(retired);
        self.shared.changed.notify_all();
    }

    /// Blocks until the pool holds all the runs it keeps and has removed every retired group,
    /// or `timeout` passes; true when it got there.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.ready.len() < self.shared.want || !state.retired.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

fn refill(host: &Host, shared: &Shared) {
    let shape = Shape::default_host();
    loop {
        let retired = {
            let mut state = shared.lock();
            while !shared.stop.load(Ordering::SeqCst)
                && state.ready.len() >= shared.want
                && state.retired.is_empty()
            {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            std::mem::take(&mut state.retired)
        };
        if shared.stop.load(Ordering::SeqCst) {
            finish_all(retired);
            return;
        }
        let wanted = shared.lock().ready.len() < shared.want;
        if wanted {
            match host.prepare(&shape, None) {
                Ok(prepared) => shared.lock().ready.push(prepared),
                Err(_) => {
                    let state = shared.lock();
                    let _ = shared.changed.wait_timeout(state, RETRY_AFTER);
                }
            }
        }
        // After the refill, which the next run may be waiting for.
        finish_all(retired);
        shared.changed.notify_all();
    }
}

/// Finishes ended runs.
fn finish_all(retired: Vec<Retired>) {
    for run in retired {
        run.finish();
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
        let mut state = self.shared.lock();
        state.ready.clear();
        finish_all(std::mem::take(&mut state.retired));
    }
}
