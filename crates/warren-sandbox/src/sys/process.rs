//! Creating the sandboxed process and waiting for it, from the parent's side.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::check;

/// Kernel `struct clone_args` (linux/sched.h), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A child created by [`spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, as seen from the parent's PID namespace.
    pub pid: libc::pid_t,
    /// A pidfd for it: readable once it has exited.
    pub pidfd: OwnedFd,
    /// Whether it was created directly inside the requested cgroup.
    pub in_cgroup: bool,
}

/// Creates a child process in new namespaces (`namespaces` is a set of `CLONE_NEW*` flags),
/// directly inside the cgroup2 directory `cgroup` when given and the kernel allows it, and runs
/// `child(data)` in it. The child never returns: `child` must end by `execve` or `_exit`.
///
/// The child is a copy of this process with only the calling thread: `child` must only make
/// system calls (no allocation, no locks), since another thread may have held a lock at the
/// moment of the copy.
pub fn spawn<T>(
    namespaces: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    child: fn(&T) -> !,
    data: &T,
) -> io::Result<Spawned> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: namespaces as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; `pidfd` outlives the call and is
    // where the kernel writes the new pidfd. Without CLONE_VM the child gets a copy of this
    // address space and continues on a copy of this stack, exactly like fork; it only calls
    // `child`, which never returns.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let mut in_cgroup = cgroup.is_some();
    if ret < 0 {
        let err = io::Error::last_os_error();
        let errno = err.raw_os_error();
        // clone3 missing (old kernel, or a seccomp policy hiding it), or CLONE_INTO_CGROUP
        // refused: fall back to clone, and let the caller move the child.
        if errno != Some(libc::ENOSYS)
            && errno != Some(libc::EINVAL)
            && errno != Some(libc::EOPNOTSUPP)
        {
            return Err(err);
        }
        in_cgroup = false;
        let flags = namespaces as libc::c_ulong
            | libc::CLONE_PIDFD as libc::c_ulong
            | libc::SIGCHLD as libc::c_ulong;
        // SAFETY: fork-like clone (no CLONE_VM, null stack so the child continues on a copy of
        // this stack); with CLONE_PIDFD the kernel writes the pidfd to the third argument,
        // `pidfd`, which outlives the call.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags,
                0usize,
                &mut pidfd as *mut RawFd,
                0usize,
                0usize,
            )
        };
    }
    let pid = check(ret)?;
    if pid == 0 {
        child(data);
    }
    // SAFETY: the kernel has just created this pidfd for us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: pid as libc::pid_t,
        pidfd,
        in_cgroup,
    })
}

/// Sends a signal through a pidfd (never hits a recycled pid).
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed and means "as kill(2) would send it".
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// Reaps the exited child behind `pidfd` (blocks until it has exited).
pub fn wait_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<WaitStatus> {
    const P_PIDFD: libc::idtype_t = 3;
    loop {
        // SAFETY: all-zero is a valid siginfo_t; the kernel fills it on success.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t that outlives the call.
        let ret = unsafe {
            libc::waitid(
                P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid succeeded with WEXITED, so the kernel filled the SIGCHLD fields read here.
        let status = unsafe { info.si_status() };
        return Ok(match info.si_code {
            libc::CLD_EXITED => WaitStatus::Exited(status),
            _ => WaitStatus::Signaled(status),
        });
    }
}
