//! The new process's life between clone and exec: walk the prepared plan, then exec.
//! Runs in a copy of a possibly multi-threaded parent, so it only makes system calls through
//! `sys::child`, which neither allocates nor locks.

use crate::plan::{ChildPlan, Stage, Step};
use crate::sys::child as sys;

/// Exit code of a child whose setup failed (the parent reads the real reason from the pipe).
pub const SETUP_FAILED: i32 = 127;

/// Reports `(stage, errno)` to the parent and exits.
fn fail(plan: &ChildPlan, stage: u32, errno: sys::Errno) -> ! {
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&stage.to_ne_bytes());
    report[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys::write_all(plan.error_fd, &report);
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
            Err(libc::ENOSYS) => sys::mount(
                None,
                target,
                None,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                None,
            ),
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

/// The child's entry point: never returns.
pub fn child_main(plan: &ChildPlan) -> ! {
    let stage = |s: Stage| s as u32;
    // Die with the thread that supervises us. A parent that died before this took effect is
    // noticed at the sync pipe, which then reads end of file.
    if let Err(e) = sys::kill_with_parent() {
        fail(plan, stage(Stage::Sync), e);
    }
    let _ = sys::reset_signals();
    // Modes in the plan are meant exactly; the program gets the usual 022 back before exec.
    sys::set_umask(0);

    for (index, step) in plan.steps.iter().enumerate() {
        if let Err(e) = apply(step) {
            fail(plan, index as u32, e);
        }
    }
    let pivot = sys::chdir(&plan.new_root)
        .and_then(|()| sys::pivot_root(c".", c"."))
        .and_then(|()| sys::umount(c".", libc::MNT_DETACH))
        .and_then(|()| sys::chdir(c"/"))
        .and_then(|()| {
            sys::mount(
                None,
                c"/",
                None,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                None,
            )
        });
    if let Err(e) = pivot {
        fail(plan, stage(Stage::PivotRoot), e);
    }
    if let Err(e) = sys::sethostname(plan.hostname).and_then(|()| sys::loopback_up()) {
        fail(plan, stage(Stage::Network), e);
    }

    if let Some(fd) = plan.sync_fd {
        match sys::read_byte(fd) {
            Ok(true) => {}
            // The parent closed the pipe without a go: it gave up on this run.
            Ok(false) => sys::exit(SETUP_FAILED),
            Err(e) => fail(plan, stage(Stage::Sync), e),
        }
    }
    // Rooted at the run's own cgroup, now that the process is in it.
    if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
        fail(plan, stage(Stage::CgroupNamespace), e);
    }

    let gid = plan.uid;
    for dir in &plan.input_dirs {
        if let Err(e) = sys::mkdir(dir, 0o755).and_then(|()| sys::chown(dir, plan.uid, gid)) {
            fail(plan, stage(Stage::InputFiles), e);
        }
    }
    for (path, contents, mode) in &plan.input_files {
        if let Err(e) =
            sys::write_file(path, contents, *mode).and_then(|()| sys::chown(path, plan.uid, gid))
        {
            fail(plan, stage(Stage::InputFiles), e);
        }
    }

    sys::set_umask(0o022);
    let stdio = sys::chdir(&plan.workdir)
        .and_then(|()| sys::dup2(plan.stdio[0], 0))
        .and_then(|()| sys::dup2(plan.stdio[1], 1))
        .and_then(|()| sys::dup2(plan.stdio[2], 2));
    if let Err(e) = stdio {
        fail(plan, stage(Stage::Stdio), e);
    }
    for &(resource, value) in &plan.rlimits {
        if let Err(e) = sys::setrlimit(resource, value) {
            fail(plan, stage(Stage::Rlimits), e);
        }
    }

    let mut privileges = Ok(());
    for cap in 0..=plan.last_capability {
        privileges = privileges.and_then(|()| sys::drop_bounding_capability(cap));
    }
    let privileges = privileges
        .and_then(|()| sys::become_user(plan.uid, gid))
        .and_then(|()| sys::clear_capabilities())
        .and_then(|()| sys::set_no_new_privs())
        .and_then(|()| sys::cloexec_from(3));
    if let Err(e) = privileges {
        fail(plan, stage(Stage::Privileges), e);
    }
    for program in &plan.seccomp {
        if let Err(e) = program.install() {
            fail(plan, stage(Stage::Seccomp), e);
        }
    }
    let errno = sys::execve(&plan.program, &plan.argv_ptrs, &plan.envp_ptrs);
    fail(plan, stage(Stage::Exec), errno)
}
