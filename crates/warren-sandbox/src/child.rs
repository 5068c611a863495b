//! The sandbox's two processes of a run between clone and exec.
//!
//! The **init** ([`child_main`]), cloned into the run's namespaces but not its cgroups: it starts
//! the run's process in the run's cgroup2 group at once, then walks the prepared filesystem
//! steps, `pivot_root`s and binds `/tmp` writable while that process makes the network
//! namespace, which the init then joins, setting the host name; and it stays as the PID
//! namespace's init: it reaps, and reports the program's end once the rest of the tree is
//! killed and reaped.
//!
//! The **run's process** ([`run_main`]), which becomes the program, shares the init's memory:
//! 1. **prepare** (may happen ahead of time, for a warm pool): make the network namespace with
//!    loopback up, move into the v1 groups (all made before the init was cloned), enter a
//!    cgroup namespace, empty the capability bounding set, set `no_new_privs`, install seccomp;
//!    then wait on the go pipe;
//! 2. **launch**: read the launch message (argv, env, files, rlimits); once the init says the
//!    root is ready, write the files, set stdio and rlimits, drop to the run's uid, execute the
//!    program.
//!
//! Both run in a copy of a possibly multi-threaded parent, so they only make system calls
//! through `sys::child`, which neither allocates nor locks.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::launch::{fill_pointers, Decoded};
use crate::plan::{ChildPlan, Stage, Step, MAX_V1_JOINS};
use crate::sys::child as sys;

/// Exit code of a child whose setup failed (the parent reads the real reason from the pipe).
pub const SETUP_FAILED: i32 = 127;

/// Largest launch message accepted (argv, env and input files together).
pub const MAX_LAUNCH: u64 = 1 << 30;

/// Reports `(stage, errno)` to the parent and exits.
fn fail(plan: &ChildPlan, stage: u32, errno: sys::Errno) -> ! {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&stage.to_ne_bytes());
    record[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys::write_all(plan.error_fd, &record);
    sys::exit(SETUP_FAILED)
}

fn apply(step: &Step) -> sys::Res {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys::mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Step::ReadOnly(target) => match sys::make_tree_readonly(target) {
            // Kernels before 5.12: remount the top of the tree read-only instead.
            Err(libc::ENOSYS) => remount_read_only(target),
            other => other,
        },
        Step::Mkdir(path, mode) => sys::mkdir(path, *mode),
        Step::Device { path, major, minor } => sys::mknod_char(path, 0o666, *major, *minor),
        Step::Symlink { target, link } => sys::symlink(target, link),
        Step::File {
            path,
            contents,
            mode,
        } => sys::write_file(path, contents, *mode),
    }
}

/// Makes the mount at `target` read-only, nosuid and nodev (this mount only, not below it).
fn remount_read_only(target: &std::ffi::CStr) -> sys::Res {
    let flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(None, target, None, flags, None)
}

/// Makes the new root read-only and nosuid. Not nodev: `/dev` is a directory of it, holding the
/// five device nodes made during set-up; a read-only root takes no new node, and every mount
/// below it (binds, `/proc`, `/tmp`) is nodev itself.
fn seal_root() -> sys::Res {
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
    sys::mount(None, c"/", None, flags, None)
}

/// The child's entry point: never returns. It becomes the run's init; the run's own process
/// is its child ([`run_main`]).
pub fn child_main(plan: &ChildPlan) -> ! {
    let stage = |s: Stage| s as u32;
    // Die with the thread that created us (or, for a run cloned by the spawner, with the
    // runner's thread that started the spawner). A parent that died before this took effect is
    // noticed at the go pipe, which then reads end of file.
    if let Err(e) = sys::kill_with_parent() {
        fail(plan, stage(Stage::Handover), e);
    }
    sys::set_name(c"warren-init");
    let keep = [
        plan.stdio[0],
        plan.stdio[1],
        plan.stdio[2],
        plan.go_fd,
        plan.error_fd,
    ];
    if let Err(e) = sys::close_all_except(&keep) {
        fail(plan, stage(Stage::Handover), e);
    }
    // The run's streams on 0, 1 and 2 from here on (the run's process keeps them there), so
    // that no descriptor opened below lands on one of them, to be replaced by them.
    let stdio = sys::dup2(plan.stdio[0], 0)
        .and_then(|()| sys::dup2(plan.stdio[1], 1))
        .and_then(|()| sys::dup2(plan.stdio[2], 2));
    if let Err(e) = stdio {
        fail(plan, stage(Stage::Stdio), e);
    }
    let _ = sys::reset_signals();
    // Modes in the plan are meant exactly; the program gets the usual 022 back before exec.
    sys::set_umask(0);
    // The cgroup hierarchies, while the host's paths are still reachable.
    let mut v1_mounts = [-1; MAX_V1_JOINS];
    for (slot, mount) in v1_mounts.iter_mut().zip(&plan.v1_mounts) {
        match sys::open_dir(mount) {
            Ok(fd) => *slot = fd,
            Err(e) => fail(plan, stage(Stage::JoinCgroups), e),
        }
    }
    let v2_mount = match plan.v2_mount.as_deref().map(sys::open_dir) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => fail(plan, stage(Stage::JoinCgroups), e),
        None => -1,
    };

    // The run's process starts at once, in the run's cgroup2 group (made before this process
    // was cloned). This process stays out of the run's groups, so they are empty, and can be
    // removed, as soon as the run's processes are gone, without waiting for this one's exit, in
    // which the kernel tears the namespaces down.
    let mut group = -1;
    if v2_mount >= 0 {
        match sys::open_dir_at(v2_mount, &plan.v2_group) {
            Ok(fd) => group = fd,
            Err(e) => fail(plan, stage(Stage::JoinCgroups), e),
        }
        sys::close(v2_mount);
    }
    // Closed by the run's process's exec (or exit): how this process learns it happened.
    let (executed_r, executed_w) = match sys::pipe_cloexec() {
        Ok(pipe) => pipe,
        Err(e) => fail(plan, stage(Stage::JoinCgroups), e),
    };
    let stack = match sys::map_stack(RUN_STACK) {
        Ok(s) => s,
        Err(e) => fail(plan, stage(Stage::JoinCgroups), e),
    };
    let start = RunStart {
        plan,
        v1_mounts,
        group,
        executed_r,
        move_into_group: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        root_ready: AtomicU32::new(0),
        network: AtomicU32::new(0),
        gave_up: AtomicBool::new(false),
    };
    let mut entry = None;
    let target = (group >= 0).then_some(group);
    let mut started =
        sys::clone_sharing_memory(stack, target, run_main, &start, &start.network, &mut entry);
    if let Err(e) = started {
        if target.is_some() && sys::cannot_clone_into_cgroup(e) {
            start.move_into_group.store(true, Ordering::SeqCst);
            started = sys::clone_sharing_memory(
                stack,
                None,
                run_main,
                &start,
                &start.network,
                &mut entry,
            );
        }
    }
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => fail(plan, stage(Stage::JoinCgroups), e),
    };
    sys::close(executed_w);
    for fd in start.v1_mounts.into_iter().chain([start.group]) {
        if fd >= 0 {
            sys::close(fd);
        }
    }

    for (index, step) in plan.steps.iter().enumerate() {
        if let Err(e) = apply(step) {
            fail(plan, index as u32, e);
        }
    }
    // The run's process joins its groups and confines itself meanwhile; this one makes the
    // root the run's own.
    let pivot = sys::chdir(&plan.new_root)
        .and_then(|()| sys::pivot_root(c".", c"."))
        .and_then(|()| sys::umount(c".", libc::MNT_DETACH))
        .and_then(|()| sys::chdir(c"/"))
        .and_then(|()| seal_root());
    if let Err(e) = pivot {
        fail(plan, stage(Stage::PivotRoot), e);
    }
    if plan.disk > 0 {
        if let Err(e) = writable_tmp() {
            fail(plan, stage(Stage::InputFiles), e);
        }
    }
    // Into the network namespace the run's process made, so that this process (whose `/proc`
    // entries the program can read) shows nothing of the host's network.
    // Killed before it got there (its memory limit, a SIGKILL of the host's), the run's
    // process is gone without a word: the kernel clears the word then.
    let network = sys::wait_for_change(&start.network, pid as u32);
    if network != NETWORK_MADE || start.gave_up.load(Ordering::SeqCst) {
        end_unexecuted();
    }
    if let Err(e) = sys::sethostname(&plan.hostname).and_then(|()| sys::join_network_of(pid)) {
        fail(plan, stage(Stage::Network), e);
    }
    sys::set_and_wake(&start.root_ready, 1);

    // End of file once the run's process has executed the program or given up.
    sys::read_to_end(start.executed_r);
    sys::close(start.executed_r);
    if start.failed.load(Ordering::SeqCst) {
        end_unexecuted();
    }
    report(plan, Stage::Executed, 0);
    // The program has its own copies of the streams; without these (and the descriptors they
    // were copied from) the pipes reach end of file as soon as the program's processes are
    // gone, so the parent is done with the output before this process has exited.
    sys::close_stdio(&plan.stdio);
    // What is left to do is waiting, reporting and one kill: CAP_KILL is the one capability
    // that needs (the tree runs as another uid). Nothing of the program's can reach this
    // process: other uid, no ptrace, and a namespace's init ignores signals from inside.
    let _ = sys::keep_only_capability(CAP_KILL);
    let _ = sys::set_not_dumpable();
    let status = loop {
        match sys::wait_any() {
            Ok((child, status)) if child == pid => break status,
            Ok(_) | Err(libc::EINTR) => {}
            Err(_) => sys::exit(SETUP_FAILED),
        }
    };
    // The rest of the tree goes before the end is reported, so the report means the run is
    // over: every other process of the namespace killed and reaped. Orphans are this
    // process's children, reparented before their parent's end is reported: with no child
    // left, nothing else of the run is alive. A process that forks meanwhile has SIGKILL
    // pending, and the kernel refuses its fork.
    if sys::any_child_left() {
        sys::kill_all_others();
        // Until ECHILD: nothing left.
        while let Ok(_) | Err(libc::EINTR) = sys::wait_any() {}
    }
    report(plan, Stage::ProgramExit, status);
    sys::exit(0)
}

/// The init's end when the run's process left without executing the program: it reported why
/// (or the run was given up). Reaps it and exits.
fn end_unexecuted() -> ! {
    let _ = sys::wait_any();
    sys::exit(SETUP_FAILED)
}

/// What the run's process sets [`RunStart::network`] to once the run's network namespace is
/// made (no pid is this large).
const NETWORK_MADE: u32 = u32::MAX;

/// The capability to signal processes of other users.
const CAP_KILL: u32 = 5;

/// Stack for the run's process until it executes the program.
const RUN_STACK: usize = 256 * 1024;

/// What the init shares with the run's process, in their one memory (`CLONE_VM`); both run at
/// once, so what either writes is atomic.
struct RunStart<'a> {
    plan: &'a ChildPlan,
    /// The v1 hierarchies' mount points (-1 for none).
    v1_mounts: [RawFd; MAX_V1_JOINS],
    /// The run's cgroup2 group (-1 for none).
    group: RawFd,
    /// The init's end of the pipe the run's process closes by executing the program.
    executed_r: RawFd,
    /// The clone could not start the process in `group`: it moves itself there.
    move_into_group: AtomicBool,
    /// Set from the run's process's start until just before its exec: still set once that
    /// process is gone means it never executed the program (it gave up, or was killed).
    failed: AtomicBool,
    /// Raised by the init once the root, `/tmp` and the network are the run's.
    root_ready: AtomicU32,
    /// The run's process's pid while it sets up (the kernel writes it at the clone), then
    /// [`NETWORK_MADE`] once it has made the run's network namespace or given up; 0, written by
    /// the kernel, once it has exited or executed the program.
    network: AtomicU32,
    /// Set by the run's process when it gives up before the exec (unlike `failed`, never
    /// set while it is still on its way to the exec).
    gave_up: AtomicBool,
}

/// The run's process: in the run's cgroups, it takes everything the program must never get
/// back while nothing of the run is known yet (that work is then done ahead of time for a warm
/// run), waits for the launch message, and executes the program. Runs on its own stack, in the
/// init's memory, while the init sets up the root.
fn run_main(start: &RunStart<'_>) -> ! {
    let plan = start.plan;
    let stage = |s: Stage| s as u32;
    // Every way out but a successful exec is a failure: set until just before exec.
    mark_failed(start, true);
    sys::close(start.executed_r);
    sys::set_name(c"warren-run");
    // The run's network first, since the init waits for it: loopback only.
    if let Err(e) = sys::unshare(libc::CLONE_NEWNET).and_then(|()| sys::loopback_up()) {
        give_up(start, stage(Stage::Network), e);
    }
    sys::set_and_wake(&start.network, NETWORK_MADE);
    for mount in start.v1_mounts.into_iter().filter(|fd| *fd >= 0) {
        // "0": the writing thread itself, which is this whole process.
        if let Err(e) = sys::write_at(mount, &plan.v1_tasks, b"0") {
            give_up(start, stage(Stage::JoinCgroups), e);
        }
    }
    if start.move_into_group.load(Ordering::SeqCst) {
        if let Err(e) = sys::write_at(start.group, c"cgroup.procs", b"0") {
            give_up(start, stage(Stage::JoinCgroups), e);
        }
    }
    // Rooted at the run's own cgroup, now that the process is in it.
    if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
        give_up(start, stage(Stage::CgroupNamespace), e);
    }
    let mut confined = Ok(());
    for cap in 0..=plan.last_capability {
        confined = confined.and_then(|()| sys::drop_bounding_capability(cap));
    }
    if let Err(e) = confined.and_then(|()| sys::set_no_new_privs()) {
        give_up(start, stage(Stage::Privileges), e);
    }
    // From here on mount, namespaces and the rest of the deny table are refused to this process
    // too; what remains to do (files, stdio, rlimits, the uid change, exec) needs none of them.
    for program in &plan.seccomp {
        if let Err(e) = program.install() {
            give_up(start, stage(Stage::Seccomp), e);
        }
    }

    // Prepared: wait for the launch message. End of file means the run was given up.
    let mut length = [0u8; 8];
    match sys::read_exact(plan.go_fd, &mut length) {
        Ok(true) => {}
        Ok(false) => give_up(start, stage(Stage::Handover), 0),
        Err(e) => give_up(start, stage(Stage::Handover), e),
    }
    let length = u64::from_ne_bytes(length);
    if length > MAX_LAUNCH {
        give_up(start, stage(Stage::Handover), libc::E2BIG);
    }
    let message = match sys::map_anonymous(length as usize) {
        Ok(m) => m,
        Err(e) => give_up(start, stage(Stage::Handover), e),
    };
    if let Err(e) =
        sys::read_exact(plan.go_fd, message)
            .and_then(|full| if full { Ok(()) } else { Err(libc::EPIPE) })
    {
        give_up(start, stage(Stage::Handover), e);
    }
    let base = message.as_ptr() as usize;
    let (argv_at, envp_at) = match fill_pointers(message, base) {
        Ok(at) => at,
        Err(e) => give_up(start, stage(Stage::Handover), e),
    };
    let message: &[u8] = message;
    let launch = match Decoded::parse(message) {
        Ok(l) => l,
        Err(e) => give_up(start, stage(Stage::Handover), e),
    };

    // The files go to the run's `/tmp`, and the program runs in the run's root.
    sys::wait_for_change(&start.root_ready, 0);
    let gid = plan.uid;
    for i in 0..launch.file_count() {
        let written = launch.file(i).and_then(|(path, mode, contents)| {
            if mode & libc::S_IFMT == libc::S_IFDIR {
                sys::mkdir(path, mode & 0o7777)?;
            } else {
                sys::write_file(path, contents, mode & 0o7777)?;
            }
            sys::chown(path, plan.uid, gid)
        });
        if let Err(e) = written {
            give_up(start, stage(Stage::InputFiles), e);
        }
    }

    sys::set_umask(plan.umask);
    // The streams are on 0, 1 and 2 already: the init put them there before the clone.
    if let Err(e) = sys::chdir(c"/tmp") {
        give_up(start, stage(Stage::Stdio), e);
    }
    for i in 0..launch.rlimit_count() {
        if let Err(e) = launch
            .rlimit(i)
            .and_then(|(resource, value)| sys::setrlimit(resource, value))
        {
            give_up(start, stage(Stage::Rlimits), e);
        }
    }
    // No parent-death signal is needed here: this process's parent is the init, and the
    // init's death takes the whole PID namespace down.
    let privileges = sys::become_user(plan.uid, gid, plan.extra_gid)
        .and_then(|()| sys::clear_capabilities())
        .and_then(|()| sys::cloexec_from(3));
    if let Err(e) = privileges {
        give_up(start, stage(Stage::Privileges), e);
    }
    let program = match launch.program() {
        Ok(p) => p,
        Err(e) => give_up(start, stage(Stage::Exec), e),
    };
    mark_failed(start, false);
    let e = sys::execute(program, message, argv_at, envp_at);
    mark_failed(start, true);
    give_up(start, stage(Stage::Exec), e)
}

/// The run's process's way out before the exec: marked failed, and the init released from
/// waiting for it (it reaps this process and exits). `errno` 0: no report (the run was given
/// up, or the parent is gone).
fn give_up(start: &RunStart<'_>, stage: u32, errno: sys::Errno) -> ! {
    mark_failed(start, true);
    start.gave_up.store(true, Ordering::SeqCst);
    sys::set_and_wake(&start.network, NETWORK_MADE);
    if errno == 0 {
        sys::exit(SETUP_FAILED)
    }
    fail(start.plan, stage, errno)
}

/// Records in the memory shared with the init whether the run's process is leaving without
/// having executed the program. Atomic: the init reads it once this process is gone, which the
/// compiler cannot know, so a plain store could be dropped as never read.
fn mark_failed(start: &RunStart<'_>, failed: bool) {
    start.failed.store(failed, Ordering::SeqCst);
}

/// Sends one record to the parent on the report pipe.
fn report(plan: &ChildPlan, what: Stage, value: i32) {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&(what as u32).to_ne_bytes());
    record[4..].copy_from_slice(&value.to_ne_bytes());
    let _ = sys::write_all(plan.error_fd, &record);
}

/// Makes the root's `/tmp` directory the run's writable `/tmp`: a mount of its own (bound onto
/// itself), read-write, nosuid and nodev, in the root's tmpfs, whose size is the disk limit.
fn writable_tmp() -> sys::Res {
    sys::mount(Some(c"/tmp"), c"/tmp", None, libc::MS_BIND, None)?;
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(None, c"/tmp", None, flags, None)
}
