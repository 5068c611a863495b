//! Creating the sandboxed process and waiting for it, from the parent's side.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::check;

/// A child created by [`spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, as seen from the parent's PID namespace.
    pub pid: libc::pid_t,
    /// A pidfd for it: readable once it has exited.
    pub pidfd: OwnedFd,
}

/// Creates a child process in new namespaces (`namespaces` is a set of `CLONE_NEW*` flags) and
/// runs `child(data)` in it. The child never returns: `child` must end by `execve` or `_exit`.
///
/// With `sibling`, the child is made a child of the caller's parent (`CLONE_PARENT`), which
/// then waits for it and receives its exit signal: how the spawner process creates runs for
/// the runner that started it.
///
/// The child is a copy of this process with only the calling thread: `child` must only make
/// system calls (no allocation, no locks), since another thread may have held a lock at the
/// moment of the copy.
pub fn spawn<T>(
    namespaces: libc::c_int,
    sibling: bool,
    child: fn(&T) -> !,
    data: &T,
) -> io::Result<Spawned> {
    let mut pidfd: RawFd = -1;
    // A sibling's exit signal is the caller's own (the kernel refuses any other).
    let (parent_flag, exit_signal) = if sibling {
        (libc::CLONE_PARENT, 0)
    } else {
        (0, libc::SIGCHLD)
    };
    let flags = (namespaces | parent_flag) as libc::c_ulong
        | libc::CLONE_PIDFD as libc::c_ulong
        | exit_signal as libc::c_ulong;
    // SAFETY: fork-like clone (no CLONE_VM, null stack so the child continues on a copy of this
    // stack, exactly like fork); with CLONE_PIDFD the kernel writes the pidfd to the third
    // argument, `pidfd`, which outlives the call. The child only calls `child`, which never
    // returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut RawFd,
            0usize,
            0usize,
        )
    };
    let pid = check(ret)?;
    if pid == 0 {
        child(data);
    }
    // SAFETY: the kernel has just created this pidfd for us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: pid as libc::pid_t,
        pidfd,
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

/// Forks this process: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// The child has only the calling thread. It may allocate (glibc's `fork` leaves the allocator
/// usable in the child) but must not take any other lock another thread could have held, and
/// must end with [`super::child::exit`], never by returning into the parent's code.
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: fork takes no arguments; the contract above is the caller's.
    let pid = check(unsafe { libc::fork() } as libc::c_long)?;
    Ok((pid != 0).then_some(pid as libc::pid_t))
}

/// Reaps the child `pid` (blocks until it has exited).
pub fn wait_pid(pid: libc::pid_t) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for the call.
        match check(unsafe { libc::waitpid(pid, &mut status, 0) } as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Makes this process ignore `signal` (inherited by children until they reset it).
pub fn ignore_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition and takes no handler code.
    if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connected pair of Unix sequenced-packet sockets (message boundaries kept), close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as socketpair requires.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } as libc::c_long)?;
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Most descriptors one message carries.
pub const MAX_PASSED_FDS: usize = 8;

/// Room for the control message of [`MAX_PASSED_FDS`] descriptors, aligned for `cmsghdr`.
type ControlBuffer = [u64; 8];

/// Sends one message with copies of `fds` attached (SCM_RIGHTS), without SIGPIPE. A number
/// that is not an open descriptor fails the send with EBADF.
pub fn send_with_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let mut control: ControlBuffer = [0; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr (no name, no control); the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
        let (space, len) = unsafe { (libc::CMSG_SPACE(payload), libc::CMSG_LEN(payload)) };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer is 64 bytes, aligned for cmsghdr, and `space` (at most
        // CMSG_SPACE of 8 descriptors, 48 bytes) fits in it, so the first header and its data
        // are inside the buffer; the descriptors are copied as plain ints.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = len as usize;
            let slots = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                slots.add(i).write_unaligned(*fd);
            }
        }
    }
    loop {
        // SAFETY: `msg` points to `iov` (over `data`) and to `control`, all alive for the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match check(sent as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) if n as usize != data.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "message cut short",
                ))
            }
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one message into `buf` and the descriptors attached to it (close-on-exec).
/// Returns the message's length; 0 means the other end is closed. A message or a set of
/// descriptors larger than the room given is an error.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control: ControlBuffer = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<ControlBuffer>();
    let received = loop {
        // SAFETY: `msg` points to `iov` (over `buf`) and to `control`, all alive and writable
        // for the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check(n as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) => break n as usize,
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to `msg_controllen`; CMSG_FIRSTHDR/NXTHDR stay
    // within it, and each SCM_RIGHTS payload holds that many descriptors, now ours.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let payload = (*header).cmsg_len - (data as usize - header as usize);
                let count = payload / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = data.cast::<RawFd>().add(i).read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or descriptors cut short",
        ));
    }
    Ok((received, fds))
}
