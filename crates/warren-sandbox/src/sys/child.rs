//! System calls made by the new process between clone and exec. Nothing here allocates: every
//! argument is prepared by the parent, and failures come back as a raw errno.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// A raw errno value.
pub type Errno = i32;

/// The result of a child-side call.
pub type Res = Result<(), Errno>;

fn errno() -> Errno {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn check(ret: libc::c_long) -> Res {
    check_value(ret).map(|_| ())
}

/// A call's non-negative result (a descriptor, a pid), or its errno.
fn check_value(ret: libc::c_long) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as libc::c_int)
    }
}

fn ptr_or_null(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// mount(2).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Res {
    // SAFETY: every pointer is null or a NUL-terminated string borrowed for the call.
    check(unsafe {
        libc::mount(
            ptr_or_null(source),
            target.as_ptr(),
            ptr_or_null(fstype),
            flags,
            ptr_or_null(data).cast(),
        )
    } as libc::c_long)
}

/// Kernel `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the mount at `target` and every mount below it read-only, nosuid and nodev
/// (mount_setattr with AT_RECURSIVE). Returns ENOSYS on kernels before 5.12.
pub fn make_tree_readonly(target: &CStr) -> Res {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `target` is NUL-terminated and `attr` is a valid mount_attr of the size passed,
    // both borrowed for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// umount2(2).
pub fn umount(target: &CStr, flags: libc::c_int) -> Res {
    // SAFETY: `target` is NUL-terminated.
    check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Res {
    // SAFETY: both paths are NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
}

/// chdir(2).
pub fn chdir(path: &CStr) -> Res {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::chdir(path.as_ptr()) } as libc::c_long)
}

/// mkdir(2); an existing directory is not an error.
pub fn mkdir(path: &CStr, mode: libc::mode_t) -> Res {
    // SAFETY: `path` is NUL-terminated.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) } as libc::c_long) {
        Err(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// mknod(2) for a character device.
pub fn mknod_char(path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> Res {
    // SAFETY: `path` is NUL-terminated; makedev is pure arithmetic.
    check(unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    } as libc::c_long)
}

/// symlink(2).
pub fn symlink(target: &CStr, link: &CStr) -> Res {
    // SAFETY: both paths are NUL-terminated.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } as libc::c_long)
}

/// umask(2).
pub fn set_umask(mask: libc::mode_t) {
    // SAFETY: umask cannot fail and takes no pointers.
    unsafe { libc::umask(mask) };
}

/// lchown(2).
pub fn chown(path: &CStr, uid: libc::uid_t, gid: libc::gid_t) -> Res {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::lchown(path.as_ptr(), uid, gid) } as libc::c_long)
}

/// Creates (or truncates) a file with `mode` and writes `contents` to it.
pub fn write_file(path: &CStr, contents: &[u8], mode: libc::mode_t) -> Res {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            mode,
        )
    };
    let fd = check_value(fd as libc::c_long)?;
    let result = write_all(fd, contents);
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    result
}

/// Opens the directory `path` as a handle for `*at` calls only (`O_PATH`).
pub fn open_dir(path: &CStr) -> Result<RawFd, Errno> {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check_value(fd as libc::c_long)
}

/// Writes `contents` to the existing file `path` below the directory `dir`.
pub fn write_at(dir: RawFd, path: &CStr, contents: &[u8]) -> Res {
    // SAFETY: `path` is NUL-terminated; `dir` is a descriptor the caller owns.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    let fd = check_value(fd as libc::c_long)?;
    let result = write_all(fd, contents);
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    result
}

/// Closes `fd`.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it again.
    unsafe { libc::close(fd) };
}

/// Writes all of `data` to `fd`.
pub fn write_all(fd: RawFd, mut data: &[u8]) -> Res {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length for the call.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Fills `buf` from `fd`; `Ok(false)` when the stream ended before the first byte.
pub fn read_exact(fd: RawFd, buf: &mut [u8]) -> Result<bool, Errno> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length for the duration of the call.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(errno());
        }
        if n == 0 {
            return if done == 0 {
                Ok(false)
            } else {
                Err(libc::EPIPE)
            };
        }
        done += n as usize;
    }
    Ok(true)
}

/// Maps `len` bytes of fresh zeroed memory for the rest of the process's life (until exec
/// replaces the address space). The allocator is off limits in the child; mmap is a system call.
pub fn map_anonymous(len: usize) -> Result<&'static mut [u8], Errno> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(errno());
    }
    // SAFETY: the mapping is `len` readable and writable bytes, owned by nothing else, and never
    // unmapped: it lives until exec or exit.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
}

/// sethostname(2).
pub fn sethostname(name: &[u8]) -> Res {
    // SAFETY: `name` is valid for reads of its length.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } as libc::c_long)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> Res {
    // SAFETY: socket takes no pointers.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(errno());
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own for the duration of the call.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req as *mut libc::ifreq) };
    let result = check(ret as libc::c_long);
    // SAFETY: `sock` was opened above and is closed once.
    unsafe { libc::close(sock) };
    result
}

/// unshare(2).
pub fn unshare(flags: libc::c_int) -> Res {
    // SAFETY: unshare takes no pointers.
    check(unsafe { libc::unshare(flags) } as libc::c_long)
}

/// dup2(2); when `old == new`, clears close-on-exec instead.
pub fn dup2(old: RawFd, new: RawFd) -> Res {
    if old == new {
        // SAFETY: F_SETFD with 0 only clears FD_CLOEXEC on a descriptor number.
        return check(unsafe { libc::fcntl(old, libc::F_SETFD, 0) } as libc::c_long);
    }
    // SAFETY: dup2 takes no pointers.
    check(unsafe { libc::dup2(old, new) } as libc::c_long)
}

/// setrlimit(2) with equal soft and hard limits.
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> Res {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit borrowed for the call.
    check(unsafe { libc::setrlimit(resource, &limit) } as libc::c_long)
}

/// Sets the supplementary groups to `extra_gid` alone (none when it is 0) and the real,
/// effective and saved ids.
///
/// Raw system calls, not glibc's wrappers: those broadcast the change to every thread glibc
/// knows of, and in a process cloned from a multi-threaded parent those threads do not exist,
/// so the wrapper would wait for them forever.
pub fn become_user(uid: libc::uid_t, gid: libc::gid_t, extra_gid: libc::gid_t) -> Res {
    let groups = [extra_gid];
    let count: libc::c_long = if extra_gid == 0 { 0 } else { 1 };
    // SAFETY: `groups` holds `count` valid gids and outlives the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, count, groups.as_ptr()) })?;
    // SAFETY: setresgid/setresuid take integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

/// Removes capability `cap` from the bounding set.
pub fn drop_bounding_capability(cap: u32) -> Res {
    // SAFETY: PR_CAPBSET_DROP takes an integer argument only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    match check(ret as libc::c_long) {
        Err(libc::EINVAL) => Ok(()), // a capability this kernel does not know
        other => other,
    }
}

/// Sets the effective and permitted capability sets to `low_bits` (capabilities 0 to 31; none
/// above) and clears the inheritable set.
fn set_capabilities(low_bits: u32) -> Res {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [
        Data {
            effective: low_bits,
            permitted: low_bits,
            inheritable: 0,
        },
        none,
    ];
    // SAFETY: `header` and the two-element `data` array are what capset expects for version 3,
    // both borrowed for the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) })
}

/// Clears the permitted, effective, inheritable and ambient capability sets.
pub fn clear_capabilities() -> Res {
    set_capabilities(0)?;
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } as libc::c_long)
}

/// Sets `no_new_privs`: exec can never grant privileges again (setuid bits, file capabilities).
pub fn set_no_new_privs() -> Res {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long)
}

/// Names the calling thread (what `ps` and `/proc/PID/comm` show), cut to 15 bytes.
pub fn set_name(name: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which the kernel
    // copies; `name` outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Asks for SIGKILL when the thread that created this process exits.
pub fn kill_with_parent() -> Res {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } as libc::c_long)
}

/// Unblocks every signal and restores the default action of every catchable one (ignored
/// dispositions survive exec, and the parent may ignore SIGPIPE, as Rust programs do).
pub fn reset_signals() -> Res {
    // SAFETY: all-zero is a valid (empty) sigset_t, filled by sigemptyset.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t we own.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is valid; the old mask is not wanted.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    check(ret as libc::c_long)?;
    for signal in 1..32 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is a valid disposition for every catchable signal.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    Ok(())
}

/// Closes every descriptor except those in `keep` (at most 8). The child is a copy of a parent
/// that may be preparing other runs on other threads: without this it would hold their pipes
/// open while it waits, and they would never see end of file.
pub fn close_all_except(keep: &[RawFd]) -> Res {
    let mut sorted = [-1 as RawFd; 8];
    let count = keep.len().min(8);
    sorted[..count].copy_from_slice(&keep[..count]);
    let sorted = &mut sorted[..count];
    sorted.sort_unstable(); // in place on a stack array: no allocation
    let mut next: libc::c_uint = 0;
    for &fd in sorted.iter() {
        if fd < 0 {
            continue;
        }
        let fd = fd as libc::c_uint;
        if fd > next {
            // SAFETY: close_range takes no pointers; closing descriptors this process does not
            // need is the point.
            check(unsafe {
                libc::syscall(libc::SYS_close_range, next, fd - 1, 0 as libc::c_uint)
            })?;
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            next,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    })
}

/// Marks every descriptor from `first` up close-on-exec.
pub fn cloexec_from(first: RawFd) -> Res {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes no pointers; with CLOSE_RANGE_CLOEXEC it closes nothing now.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    })
}

/// A seccomp BPF program ready to install: the parent builds it, the child installs it.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    filters: Vec<libc::sock_filter>,
}

impl SeccompProgram {
    /// Wraps instructions produced by the policy compiler.
    pub fn new(filters: Vec<libc::sock_filter>) -> SeccompProgram {
        SeccompProgram { filters }
    }

    /// The instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.filters
    }

    /// Installs the filter on the calling thread. Requires `no_new_privs` (or CAP_SYS_ADMIN).
    pub fn install(&self) -> Res {
        let prog = libc::sock_fprog {
            len: self.filters.len() as libc::c_ushort,
            filter: self.filters.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points into `self.filters`, which lives across the call; the kernel
        // copies the program before returning.
        check(unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        } as libc::c_long)
    }
}

/// Opens the directory `path` below the directory `dir` for reading (a cgroup directory to
/// clone into, or whose files to write).
pub fn open_dir_at(dir: RawFd, path: &CStr) -> Result<RawFd, Errno> {
    // SAFETY: `path` is NUL-terminated; `dir` is a descriptor the caller owns.
    let fd = unsafe {
        libc::openat(
            dir,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check_value(fd as libc::c_long)
}

/// Maps a stack of `len` bytes (rounded up to pages) with an inaccessible page below it, so
/// that overflowing it faults instead of writing over other memory. Like [`map_anonymous`], it
/// lives until exec or exit.
pub fn map_stack(len: usize) -> Result<&'static mut [u8], Errno> {
    const PAGE: usize = 4096;
    let len = len.div_ceil(PAGE) * PAGE;
    let whole = map_anonymous(len + PAGE)?;
    // SAFETY: the first page of the mapping just made, which nothing uses yet.
    let guarded = unsafe { libc::mprotect(whole.as_mut_ptr().cast(), PAGE, libc::PROT_NONE) };
    if guarded < 0 {
        return Err(errno());
    }
    Ok(&mut whole[PAGE..])
}

/// Kernel `struct clone_args`, version 2 (with `cgroup`).
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

/// What [`clone_sharing_memory`]'s new process runs: `child(data)`, which never returns.
struct Entry<T> {
    child: fn(&T) -> !,
    data: *const T,
}

extern "C" fn enter<T>(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Entry<T>` `clone_sharing_memory` made; the caller of that function
    // keeps it and `*data` alive for as long as the child can use them (until it execs or
    // exits), and `data` is only read through a shared reference.
    let entry = unsafe { &*arg.cast::<Entry<T>>() };
    // SAFETY: as above.
    (entry.child)(unsafe { &*entry.data })
}

/// clone3 with `args`, the new process running `entry(arg)` on the stack the arguments name.
/// Written out because clone3 has no libc wrapper that takes a function, and a new process on
/// a new stack cannot return from a system call's wrapper: it starts with nothing to return to.
#[cfg(target_arch = "x86_64")]
fn clone3_on_stack(
    args: &mut CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: `args` is a valid clone_args of the size passed, naming a stack the caller owns
    // (16-byte aligned top). In the parent this is an ordinary system call: rax is its result,
    // rcx and r11 are what `syscall` clobbers, and memory is clobbered (no `nomem`). The new
    // process starts after `syscall` with the same registers and the new stack: it calls
    // `entry(arg)` (r12 and r13 survive the call) with the stack aligned as the ABI wants, and
    // exits with its return value; it never reaches code after this block.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, 60", // SYS_exit
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Elsewhere, clone3 on a new stack is not written out: the caller falls back to clone.
#[cfg(not(target_arch = "x86_64"))]
fn clone3_on_stack(
    _args: &mut CloneArgs,
    _entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
) -> libc::c_long {
    -(libc::ENOSYS as libc::c_long)
}

/// Whether `errno`, from [`clone_sharing_memory`] with a cgroup, means the kernel cannot start a process
/// in a cgroup (clone3 or its `cgroup` field unknown, or clone3 hidden by a seccomp policy),
/// rather than a failure to create one.
pub fn cannot_clone_into_cgroup(errno: Errno) -> bool {
    matches!(errno, libc::ENOSYS | libc::E2BIG | libc::EINVAL)
}

/// Starts a child sharing this process's memory (`CLONE_VM`) that runs `child(data)` on `stack`
/// and never returns, and gets its pid. Both then run at once in one memory: `data` is shared,
/// so what either writes goes through atomics, and so is the thread-local `errno` (one
/// thread's storage in two processes), so a failed call reads its errno at once. With
/// `cgroup`, a cgroup2 directory, the child starts in that group (`CLONE_INTO_CGROUP`), which
/// takes none of the locks moving a process does.
///
/// The kernel keeps `presence` for the caller: the child's pid from before this returns until
/// the child exits or executes a program, then 0, with a wake-up of whoever waits on it
/// (`CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID`, what threads are joined by). The child may
/// set it to another non-zero value meanwhile: see [`wait_for_change`].
///
/// `entry` must stay alive, and `stack` unused by anything else, until the child has executed
/// a program or exited: the caller waits for that before it returns or touches either.
pub fn clone_sharing_memory<T>(
    stack: &mut [u8],
    cgroup: Option<RawFd>,
    child: fn(&T) -> !,
    data: &T,
    presence: &std::sync::atomic::AtomicU32,
    entry: &mut Option<ChildEntry<T>>,
) -> Result<libc::pid_t, Errno> {
    let entry = entry.insert(ChildEntry(Entry {
        child,
        data: data as *const T,
    }));
    let arg = (&entry.0 as *const Entry<T>)
        .cast_mut()
        .cast::<libc::c_void>();
    // The stack grows down from the end of `stack`, kept 16-byte aligned as the ABI requires.
    let base = stack.as_mut_ptr() as usize;
    let top = (base + stack.len()) & !15;
    let presence = presence.as_ptr();
    let tracked = libc::CLONE_VM | libc::CLONE_PARENT_SETTID | libc::CLONE_CHILD_CLEARTID;
    if let Some(fd) = cgroup {
        let mut args = CloneArgs {
            flags: tracked as u64 | CLONE_INTO_CGROUP,
            child_tid: presence as u64,
            parent_tid: presence as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: base as u64,
            stack_size: (top - base) as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        let ret = clone3_on_stack(&mut args, enter::<T>, arg);
        return if ret < 0 {
            Err((-ret) as Errno)
        } else {
            Ok(ret as libc::pid_t)
        };
    }
    // SAFETY: CLONE_VM: the child runs `enter::<T>` on `stack`, which the caller owns and
    // nothing else uses, with `entry` kept alive by the caller (see above). `presence` is an
    // aligned u32 in this memory that the caller keeps alive as long as the child lives.
    let pid = unsafe {
        libc::clone(
            enter::<T>,
            top as *mut libc::c_void,
            tracked | libc::SIGCHLD,
            arg,
            presence,
            std::ptr::null_mut::<libc::c_void>(),
            presence,
        )
    };
    check_value(pid as libc::c_long)
}

/// Where [`clone_sharing_memory`] keeps what its child starts from; the caller holds it.
pub struct ChildEntry<T>(Entry<T>);

/// Blocks while `word` holds `value`, and returns what it holds then: how the processes of one
/// memory wait for each other. Waits on the shared futex, the one the kernel wakes when it
/// clears a `presence` word (see [`clone_sharing_memory`]); whoever changes `word` otherwise
/// wakes it with [`set_and_wake`].
pub fn wait_for_change(word: &std::sync::atomic::AtomicU32, value: u32) -> u32 {
    use std::sync::atomic::Ordering;
    loop {
        let now = word.load(Ordering::SeqCst);
        if now != value {
            return now;
        }
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 that outlives the call, no timeout; it
        // returns at once if the value is no longer `value`.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                value,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

/// Stores `value` in `word` and wakes whoever waits on it in [`wait_for_change`].
pub fn set_and_wake(word: &std::sync::atomic::AtomicU32, value: u32) {
    use std::sync::atomic::Ordering;
    word.store(value, Ordering::SeqCst);
    // SAFETY: FUTEX_WAKE on a valid, aligned u32; it only wakes waiters.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Moves this process into the network namespace of the process `pid` (a child of it, so
/// the pid cannot have been reused).
pub fn join_network_of(pid: libc::pid_t) -> Res {
    // SAFETY: pidfd_open takes integer arguments only.
    let fd = check_value(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: setns takes integer arguments only; `fd` is the pidfd just opened.
    let result = check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) } as libc::c_long);
    close(fd);
    result
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe_cloexec() -> Result<(RawFd, RawFd), Errno> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    Ok((fds[0], fds[1]))
}

/// Reads from `fd` until end of file; the bytes read are discarded.
pub fn read_to_end(fd: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for writes of its length for the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && errno() != libc::EINTR) {
            return;
        }
    }
}

/// Executes `program` with the `argv`/`envp` arrays [`crate::launch::fill_pointers`] built at
/// these byte offsets of `message`; returns only on failure, with the errno.
pub fn execute(program: &CStr, message: &[u8], argv_at: usize, envp_at: usize) -> Errno {
    if !argv_at.is_multiple_of(8)
        || !envp_at.is_multiple_of(8)
        || argv_at >= message.len()
        || envp_at >= message.len()
    {
        return libc::EINVAL;
    }
    let base = message.as_ptr();
    // SAFETY: both offsets are inside `message` and 8-byte aligned (checked above; the message
    // is page-aligned from mmap), where null-terminated pointer arrays into `message` were
    // built; `message` lives until exec replaces this process.
    unsafe {
        libc::execve(
            program.as_ptr(),
            base.add(argv_at).cast(),
            base.add(envp_at).cast(),
        )
    };
    errno()
}

/// Keeps only capability `cap` (below 32), effective and permitted; clears the rest. A subset
/// of what the process had, so its parent-death signal stays (other credential changes clear it).
pub fn keep_only_capability(cap: u32) -> Res {
    set_capabilities(1u32.checked_shl(cap).unwrap_or(0))
}

/// Makes the process non-dumpable: no core, and `/proc/PID` files and ptrace-like access only
/// for its own uid with CAP_SYS_PTRACE.
pub fn set_not_dumpable() -> Res {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long)
}

/// Waits for any child; returns its pid and raw wait status.
pub fn wait_any() -> Result<(libc::pid_t, i32), Errno> {
    let mut status = 0;
    // SAFETY: `status` is a valid int for the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
    Ok((check_value(pid as libc::c_long)?, status))
}

/// Whether this process has a child, alive or not yet reaped (reaps one that has ended).
pub fn any_child_left() -> bool {
    let mut status = 0;
    // SAFETY: `status` is a valid int for the call; WNOHANG never blocks.
    let ret = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
    ret >= 0 || errno() != libc::ECHILD
}

/// Closes descriptors 0, 1 and 2 and `originals`, the ones they were copied from.
pub fn close_stdio(originals: &[RawFd; 3]) {
    for fd in [0, 1, 2].iter().chain(originals) {
        // SAFETY: close takes no pointers; a descriptor already closed gives EBADF.
        unsafe { libc::close(*fd) };
    }
}

/// `kill(-1, SIGKILL)`: every process this one may signal but itself; for a PID namespace's
/// init, every other process of the namespace.
pub fn kill_all_others() {
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Ends the process at once, without running destructors or atexit handlers.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn exit_at_once(_: &AtomicU32) -> ! {
        exit(0)
    }

    /// Says 5, waits for the parent's 6, exits.
    fn answer_then_exit(word: &AtomicU32) -> ! {
        set_and_wake(word, 5);
        wait_for_change(word, 5);
        exit(0)
    }

    /// Starts `child` sharing this memory, with `presence` as its presence word. What it
    /// starts from is leaked: the child may read it until it exits.
    fn start(child: fn(&AtomicU32) -> !, presence: &'static AtomicU32) -> libc::pid_t {
        let Ok(stack) = map_stack(64 << 10) else {
            panic!("mapping a stack")
        };
        let entry = Box::leak(Box::new(None));
        let pid = clone_sharing_memory(stack, None, child, presence, presence, entry)
            .unwrap_or_else(|e| panic!("clone: errno {e}"));
        assert!(pid > 0);
        pid
    }

    #[test]
    fn a_child_that_exits_without_a_word_clears_its_presence() {
        let presence = Box::leak(Box::new(AtomicU32::new(0)));
        let pid = start(exit_at_once, presence);
        assert_eq!(wait_for_change(presence, pid as u32), 0);
        let _ = crate::sys::process::wait_pid(pid);
    }

    #[test]
    fn a_presence_word_carries_the_child_s_word_until_it_exits() {
        let presence = Box::leak(Box::new(AtomicU32::new(0)));
        let pid = start(answer_then_exit, presence);
        assert_eq!(wait_for_change(presence, pid as u32), 5);
        set_and_wake(presence, 6);
        assert_eq!(
            wait_for_change(presence, 6),
            0,
            "cleared at the child's exit"
        );
        let _ = crate::sys::process::wait_pid(pid);
    }
}
