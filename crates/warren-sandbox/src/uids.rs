//! Unprivileged uids for runs: each run alive on the host gets its own, so runs cannot signal
//! or trace each other. Allocation is shared between runner processes through `flock`s on
//! per-uid files, so several workers on one machine never hand out the same uid.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::sys;

/// Hands out uids `base..base+count`.
#[derive(Debug)]
pub struct UidPool {
    dir: PathBuf,
    base: u32,
    count: u32,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    next: u32,
    in_use: std::collections::HashSet<u32>,
}

/// A uid held for one run; released when dropped.
#[derive(Debug)]
pub struct UidLease {
    pool: Arc<UidPool>,
    /// The uid (also used as the gid).
    pub uid: u32,
    lock: File,
}

impl UidPool {
    /// A pool whose lock files live in `dir`.
    pub fn new(dir: PathBuf, base: u32, count: u32) -> std::io::Result<Arc<UidPool>> {
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(UidPool {
            dir,
            base,
            count: count.max(1),
            state: Mutex::new(PoolState::default()),
        }))
    }

    /// Takes a uid no other run on this host holds.
    pub fn acquire(self: &Arc<Self>) -> std::io::Result<UidLease> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..self.count {
            let offset = state.next;
            state.next = (state.next + 1) % self.count;
            let uid = self.base + offset;
            if state.in_use.contains(&uid) {
                continue;
            }
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(uid.to_string()))?;
            if sys::try_lock_exclusive(lock.as_fd())? {
                state.in_use.insert(uid);
                return Ok(UidLease {
                    pool: Arc::clone(self),
                    uid,
                    lock,
                });
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "all {} sandbox uids from {} are in use",
                self.count, self.base
            ),
        ))
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        let _ = sys::unlock(self.lock.as_fd());
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_use.remove(&self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_reused_after_release() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let Ok(pool) = UidPool::new(tmp.path().to_path_buf(), 1000, 2) else {
            panic!("pool")
        };
        let (Ok(a), Ok(b)) = (pool.acquire(), pool.acquire()) else {
            panic!("acquire")
        };
        assert_ne!(a.uid, b.uid);
        assert!(pool.acquire().is_err(), "only two uids");
        let freed = a.uid;
        drop(a);
        assert_eq!(pool.acquire().ok().map(|l| l.uid), Some(freed));
    }

    #[test]
    fn another_process_lock_is_respected() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let Ok(first) = UidPool::new(tmp.path().to_path_buf(), 5000, 2) else {
            panic!("pool")
        };
        let Ok(second) = UidPool::new(tmp.path().to_path_buf(), 5000, 2) else {
            panic!("pool")
        };
        let Ok(a) = first.acquire() else {
            panic!("acquire")
        };
        // flock locks belong to open file descriptions, so a second pool (as another process
        // would) cannot take the same uid.
        let Ok(b) = second.acquire() else {
            panic!("acquire")
        };
        assert_ne!(a.uid, b.uid);
    }
}
