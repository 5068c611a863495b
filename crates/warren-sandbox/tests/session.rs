//! Sessions (steps sharing `/tmp`, master and worker users) and shared squashfs images.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use warren_core::result::Status;
use warren_sandbox::{CollectOutput, RunSpec, Session, Stdin, StepUser};

use crate::util::*;

fn step(session: &Session<'_>, user: StepUser, script: &str) -> warren_sandbox::RunResult {
    let spec = RunSpec::command(["sh", "-c", script]);
    match session.run(&spec, user, &mut CollectOutput, None) {
        Ok(r) => r,
        Err(e) => panic!("step rejected: {e}"),
    }
}

/// Host processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    host_pids()
        .into_iter()
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .collect()
}

fn is_mounted(dir: &Path) -> bool {
    let wanted = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// The loop devices whose backing file is `image`.
fn loop_devices_of(image: &Path) -> Vec<std::path::PathBuf> {
    warren_sandbox::loop_devices_backed_by(image)
}

#[test]
fn steps_share_tmp_and_nothing_else() {
    let Some(sb) = cold_sandbox() else { return };
    let session = match sb.session(8 << 20, 0) {
        Ok(s) => s,
        Err(e) => panic!("opening a session: {e}"),
    };
    let scratch = session.scratch().to_path_buf();
    assert!(
        is_mounted(&scratch),
        "the shared /tmp is a mount of its own"
    );

    // A daemon and an IPC object made by one step are gone before the next.
    let first = step(
        &session,
        StepUser::Master,
        "echo kept > /tmp/kept; (setsid sleep 1000 &); ipcmk -M 4096 >/dev/null; ipcs -m | grep -c 0x",
    );
    assert_eq!(first.status, Status::Success, "{first:?}");
    assert_eq!(out(&first), "1\n", "the step saw its own segment");
    assert!(
        processes_of(session.uid(StepUser::Master)).is_empty(),
        "a step's daemon outlived it"
    );
    let second = step(
        &session,
        StepUser::Master,
        "cat /tmp/kept; ipcs -m | grep -c 0x; df -k /tmp | tail -1 | awk '{print $2}'",
    );
    assert_eq!(out(&second), "kept\n0\n8192\n", "{second:?}");
    drop(session);
    assert!(
        !is_mounted(&scratch),
        "the shared /tmp is unmounted with its session"
    );
    assert!(!scratch.exists(), "its mount point is removed");
}

#[test]
fn master_and_worker_are_apart() {
    let Some(sb) = cold_sandbox() else { return };
    let Ok(task) = tempfile::tempdir() else {
        return;
    };
    // Task files: one for everybody, one only the task files' group (the master) may read.
    const TASK_GROUP: u32 = 4242;
    let public = task.path().join("public");
    let secret = task.path().join("secret");
    std::fs::write(&public, "public\n").ok();
    std::fs::write(&secret, "secret\n").ok();
    for (path, mode) in [(&public, 0o644), (&secret, 0o640)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ok();
        std::os::unix::fs::chown(path, Some(0), Some(TASK_GROUP)).ok();
    }
    std::fs::set_permissions(task.path(), std::fs::Permissions::from_mode(0o755)).ok();
    let session = match sb.session(4 << 20, TASK_GROUP) {
        Ok(s) => s,
        Err(e) => panic!("opening a session: {e}"),
    };
    assert_ne!(session.uid(StepUser::Master), session.uid(StepUser::Worker));

    let run = |user, script: &str, stdin: &[u8]| {
        let mut spec = RunSpec::command(["sh", "-c", script]);
        spec.task_dir = Some(task.path().to_path_buf());
        spec.stdin = Stdin::Bytes(stdin.to_vec());
        match session.run(&spec, user, &mut CollectOutput, None) {
            Ok(r) => r,
            Err(e) => panic!("step rejected: {e}"),
        }
    };
    let master = run(
        StepUser::Master,
        "cat /task/secret; read line; echo \"in: $line\"; echo private > /tmp/master-file",
        b"hello\n",
    );
    assert_eq!(out(&master), "secret\nin: hello\n", "{master:?}");

    // The worker reads nothing of the master's, writes nothing anyone sees on the output,
    // and gets no input.
    let worker = run(
        StepUser::Worker,
        "cat /task/public > /tmp/w-public; cat /task/secret > /tmp/w-secret; \
         cat /tmp/master-file > /tmp/w-master; read line; echo \"[$line]\" > /tmp/w-input; \
         echo stolen; echo stolen >&2; echo shared > /tmp/worker-file",
        b"input for the master only\n",
    );
    assert!(
        worker.stdout.is_empty() && worker.stderr.is_empty(),
        "{worker:?}"
    );
    let check = run(
        StepUser::Master,
        "cat /tmp/w-public; wc -c < /tmp/w-secret; wc -c < /tmp/w-master; cat /tmp/w-input; cat /tmp/worker-file",
        b"",
    );
    assert_eq!(out(&check), "public\n0\n0\n[]\nshared\n", "{check:?}");
}

/// A squashfs image of `dir`, or `None` (with the reason printed) when this host cannot make
/// or mount one.
fn squashfs_image(dir: &Path, image: &Path) -> Option<()> {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("squashfs") || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: no squashfs or loop devices in this kernel");
        return None;
    }
    match Command::new("mksquashfs")
        .arg(dir)
        .arg(image)
        .args(["-all-root", "-noappend", "-quiet", "-no-progress"])
        .status()
    {
        Ok(s) if s.success() => Some(()),
        Ok(s) => panic!("mksquashfs failed: {s}"),
        Err(e) => {
            eprintln!(
                "SKIPPED: mksquashfs is not usable here ({e}); apt-get install squashfs-tools"
            );
            None
        }
    }
}

/// A squashfs image `name` holding `hello.txt`, in a directory of its own (kept while the test
/// holds it); `None` when images cannot be made here.
fn image_with_hello(name: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let work = tempfile::tempdir().ok()?;
    let contents = work.path().join("contents");
    std::fs::create_dir(&contents).ok();
    std::fs::write(contents.join("hello.txt"), "from the image\n").ok();
    let image = work.path().join(name);
    squashfs_image(&contents, &image)?;
    Some((work, image))
}

#[test]
fn images_are_mounted_once_shared_and_unmounted_after_use() {
    let Some(sb) = cold_sandbox() else { return };
    let Some((work, image)) = image_with_hello("task.sfs") else {
        return;
    };
    let first = match sb.mount_image(&image) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let second = match sb.mount_image(&image) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(first.path(), second.path(), "one mount for both users");
    assert_eq!(sb.mounted_images(), 1);
    assert_eq!(loop_devices_of(&image).len(), 1, "one loop device");
    let mut spec = RunSpec::command(["sh", "-c", "cat /task/hello.txt; touch /task/x"]);
    spec.task_dir = Some(first.path().to_path_buf());
    let r = run(&sb, &spec);
    assert_eq!(out(&r), "from the image\n");
    assert_eq!(r.status, Status::Failed, "the image is read-only");

    let mount_point = first.path().to_path_buf();
    drop(first);
    assert!(is_mounted(&mount_point), "still used by the second holder");
    drop(second);
    assert!(!is_mounted(&mount_point), "unmounted after its last user");
    assert_eq!(
        loop_devices_of(&image),
        Vec::<std::path::PathBuf>::new(),
        "loop device detached"
    );
    assert_eq!(sb.mounted_images(), 0);

    // Not an image: a clear error naming it.
    let not_image = work.path().join("plain.sfs");
    std::fs::write(&not_image, "not squashfs").ok();
    match sb.mount_image(&not_image) {
        Ok(_) => panic!("a plain file mounted as an image"),
        Err(e) => assert!(e.to_string().contains("plain.sfs"), "{e}"),
    }
}

#[test]
fn shutdown_unmounts_images_still_held_and_mounts_no_more() {
    let Some(sb) = cold_sandbox() else { return };
    let Some((_work, image)) = image_with_hello("held.sfs") else {
        return;
    };
    let held = match sb.mount_image(&image) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let mount_point = held.path().to_path_buf();
    assert!(is_mounted(&mount_point));
    assert_eq!(loop_devices_of(&image).len(), 1);

    assert_eq!(sb.shutdown(), 1, "one image was mounted");
    assert!(!is_mounted(&mount_point), "unmounted though still held");
    assert!(!mount_point.exists(), "its mount point removed");
    assert_eq!(
        loop_devices_of(&image),
        Vec::<std::path::PathBuf>::new(),
        "loop device detached"
    );
    assert_eq!(sb.mounted_images(), 0);
    match sb.mount_image(&image) {
        Ok(_) => panic!("an image mounted after shutdown"),
        Err(e) => assert!(e.to_string().contains("shutting down"), "{e}"),
    }
    // The holder letting go later finds nothing left to do.
    drop(held);
    assert_eq!(sb.shutdown(), 0);
}

#[test]
fn mounts_of_a_crashed_runner_are_reclaimed() {
    // A state directory of its own: any other runner starting meanwhile (tests run in parallel
    // processes) would reclaim the leftovers made here before the second sandbox does.
    let Ok(own_state) = tempfile::tempdir() else {
        return;
    };
    let Some(first) = cold_sandbox_in(own_state.path()) else {
        return;
    };
    // What a runner that died mid-session leaves: a mounted scratch tmpfs and an image's mount
    // point, named after a runner process that no longer exists.
    let state = first.config().state_dir.clone();
    let scratch = state.join("scratch/run-999999999.1-7");
    let image = state.join("images/run-999999999.1-8");
    for dir in [&scratch, &image] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            panic!("{}: {e}", dir.display());
        }
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "leftover"])
        .arg(&scratch)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting the leftover tmpfs");
    let second = cold_sandbox_in(own_state.path());
    assert!(
        !is_mounted(&scratch),
        "the leftover mount was not reclaimed"
    );
    assert!(
        !scratch.exists() && !image.exists(),
        "leftover mount points remain"
    );
    drop(second);
    drop(first);
}
