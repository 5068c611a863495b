//! Every system call the sandbox makes that std does not wrap, each wrapped once as a safe
//! function. This module is the only place with `unsafe` in Warren.
//!
//! Functions in [`child`] run between `clone3` and `execve` in the new process, which may have
//! been cloned from a multi-threaded parent: they must not allocate, lock or unwind, so they
//! take pre-built C strings and return a raw errno.

pub mod child;
pub mod mount;
pub mod process;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The calling thread's errno as an `io::Error`.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Turns a `-1`-on-error return value into a `Result`.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(ret)
    }
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes a descriptor non-blocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and set the file status flags of a descriptor we borrow.
    unsafe {
        let flags = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) as libc::c_long)?;
        check(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags as libc::c_int | libc::O_NONBLOCK,
        ) as libc::c_long)?;
    }
    Ok(())
}

/// An eventfd used as a cross-thread wake-up (close-on-exec, non-blocking).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd =
        check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } as libc::c_long)?;
    // SAFETY: eventfd succeeded, so the descriptor is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Adds one to an eventfd counter, waking whoever polls it.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes exactly the 8 bytes of `one`, which lives across the call.
    check(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) } as libc::c_long)?;
    Ok(())
}

/// Reads from a descriptor into `buf`, returning the byte count (0 at end of file).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = check(
        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long,
    )?;
    Ok(n as usize)
}

/// Reads from a descriptor into the spare capacity of `buf`, which it first empties, and
/// returns the byte count (0 at end of file). Unlike [`read`] into a zeroed buffer, no page
/// of `buf` is touched but those the kernel writes.
pub fn read_into_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes for the duration of the call;
    // read(2) writes at most that many.
    let n = check(
        unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) }
            as libc::c_long,
    )? as usize;
    // SAFETY: the kernel initialised the first `n` bytes, and `n` is at most the capacity.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Writes `buf` to a descriptor, returning the byte count written.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = check(
        unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) } as libc::c_long,
    )?;
    Ok(n as usize)
}

/// Writes as much of `buf` as the descriptor takes without raising SIGPIPE when the reader is
/// gone (the caller may not ignore SIGPIPE); returns the byte count, or EPIPE.
pub fn write_nosigpipe(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: all-zero is a valid sigset_t; sigemptyset/sigaddset only write to the set we own.
    let mut pipe_only: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::sigemptyset(&mut pipe_only);
        libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
    }
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid; this changes only the calling thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &pipe_only, &mut old) };
    let result = write(fd, buf);
    if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EPIPE)) {
        // Consume the SIGPIPE this thread now has pending, so unblocking does not deliver it.
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `pipe_only` and `zero` are valid for the call; no siginfo is wanted.
        unsafe { libc::sigtimedwait(&pipe_only, std::ptr::null_mut(), &zero) };
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

/// Writes all of `buf` (blocking), without SIGPIPE; stops at the first error.
pub fn write_all_nosigpipe(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write_nosigpipe(fd, buf) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits for events on `fds` for at most `timeout` (forever when `None`), with nanosecond
/// precision (ppoll uses a high-resolution timer). Returns how many descriptors are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs; `ts_ptr` is null or points to
    // `ts`, which outlives the call; a null signal mask leaves the mask unchanged.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    match check(n as libc::c_long) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true when the lock was taken, false when another holder has it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes no pointers.
    let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match check(ret as libc::c_long) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases a `flock`.
pub fn unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: flock takes no pointers.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) } as libc::c_long)?;
    Ok(())
}

/// kill(2).
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    check(unsafe { libc::kill(pid, signal) } as libc::c_long)?;
    Ok(())
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// The number of CPUs this process may run on (its affinity mask; std's
/// `available_parallelism` also reads cgroup quota files, which costs more than the answer is
/// worth here: a CPU-time check scheduled for more parallelism only comes earlier).
pub fn available_cpus() -> usize {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed, for this process (0).
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if ret != 0 {
        return std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    // SAFETY: `set` was filled by the kernel above.
    let count = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(count).unwrap_or(1).max(1)
}

/// The highest capability number the kernel knows: the last one `PR_CAPBSET_READ` accepts
/// (what `/proc/sys/kernel/cap_last_cap` says, without a file to open).
pub fn last_capability() -> u32 {
    // SAFETY: PR_CAPBSET_READ takes a number and no pointers.
    let known = |cap: u32| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong) } >= 0;
    // Capabilities are numbered densely from 0; 40 is CAP_CHECKPOINT_RESTORE (Linux 5.9).
    let (mut low, mut high) = (0u32, 63u32);
    if !known(low) {
        return 40;
    }
    while low < high {
        let mid = (low + high).div_ceil(2);
        if known(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}

/// The human text of an errno value.
pub fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// Reads a whole `/proc` file with few large reads: these files report size 0, and a
/// `read_to_string` that starts small makes the kernel render the file in many pieces.
pub fn read_proc_file(path: &std::path::Path) -> io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(16 << 10);
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The filesystem type (`f_type` of statfs) of the filesystem `path` is on.
pub fn filesystem_type(path: &std::path::Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is a valid place for the kernel to fill.
    let ret = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `stat`.
    Ok(unsafe { stat.assume_init() }.f_type)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_capability_is_the_one_the_kernel_reports() {
        let reported = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        assert_eq!(Some(super::last_capability()), reported);
    }
}
