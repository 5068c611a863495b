//! `warren up` stopped with SIGTERM: running tasks are aborted promptly, shared squashfs images
//! are unmounted and their loop devices detached before the process exits, and no process,
//! cgroup or mount point of it is left. Needs root (the sandbox); the image case also needs a
//! static busybox and squashfs-tools. Each says SKIPPED and returns when one is absent.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::leftovers::{clean_up, descendants, leftovers, mount_points, start_time};

use super::pythia::{self, expect, limits, slowdown, Frontend, Up};
use super::sandbox::root;
use super::tools;

/// Waits up to `limit` for a process below `root` whose command line is `wanted`; all
/// processes below `root` then.
fn wait_for_process(up: &Up, wanted: &str, limit: Duration) -> BTreeMap<u32, (String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let below = descendants(up.child.id());
        if below.values().any(|(_, cmd)| cmd == wanted) {
            return below;
        }
        assert!(
            Instant::now() < deadline,
            "no `{wanted}` below warren up within {limit:?}: {below:?}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The loop devices backed by `image`.
fn loop_devices_of(image: &Path) -> Vec<String> {
    warren_sandbox::loop_devices_backed_by(image)
        .iter()
        .map(|device| device.display().to_string())
        .collect()
}

/// Mount points (field 5 of `/proc/self/mountinfo`) of mounts from any of `sources`.
fn mounts_from(sources: &[String]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let source = rest.split(' ').nth(1)?;
            sources
                .iter()
                .any(|s| s == source)
                .then(|| fields.split(' ').nth(4).map(str::to_string))?
        })
        .collect()
}

/// SIGTERM, and the time the process took to exit (it must exit, with 0, within `limit`).
fn terminate(up: &mut Up, limit: Duration) -> Duration {
    let asked = Instant::now();
    let status = up.terminate(limit);
    let took = asked.elapsed();
    match status {
        Some(status) => assert!(status.success(), "warren up: {status}\n{}", up.log()),
        None => panic!(
            "warren up had not exited {limit:?} after SIGTERM (killed)\n{}",
            up.log()
        ),
    }
    took
}

#[test]
fn sigterm_unmounts_the_shared_images_and_leaves_nothing() {
    if !tools::squashfs_tools() {
        return;
    }
    let Some(dir) = pythia::prepare(true) else {
        return;
    };
    let images = [
        dir.path().join("environments/busybox-image.sfs"),
        dir.path().join("tasks/hello-world.sfs"),
    ];
    let mut up = Up::start(dir);
    let pid = up.child.id();
    let mut frontend = Frontend::connect(&up.queue);
    // A task from an image environment and an image task filesystem, to its end.
    frontend.launch(
        "images",
        "busybox-image",
        "hello-world.sfs",
        limits(60, 1024),
        "",
    );
    let done = frontend.dones(&["images"], Duration::from_secs(60));
    expect(&done, "images", "success", "Hello world!\n");
    // And one still running on the image environment when the signal comes.
    frontend.launch("long", "busybox-image", "timeout", limits(60, 1024), "");
    let had = wait_for_process(&up, "sleep 60", Duration::from_secs(30));
    let devices = loop_devices_of(&images[0]);
    assert_eq!(devices.len(), 1, "the image environment's loop device");
    let mounted = mounts_from(&devices);
    assert_eq!(mounted.len(), 1, "the image environment mounted once");

    let took = terminate(&mut up, Duration::from_secs(10) * slowdown());
    assert!(
        took < Duration::from_secs(5) * slowdown(),
        "warren up took {took:?} to stop"
    );
    let still_mounted = mount_points();
    for point in &mounted {
        assert!(
            !still_mounted.contains(point),
            "{point} is still mounted after warren up exited"
        );
    }
    for image in &images {
        assert_eq!(
            loop_devices_of(image),
            Vec::<String>::new(),
            "loop devices still backed by {}",
            image.display()
        );
    }
    assert_eq!(
        leftovers(pid, up.dir.path(), &had),
        Vec::<String>::new(),
        "left behind"
    );
}

/// `warren up` in a fresh directory with `sleep 600` running as a task: it, its pid, and every
/// process below it then.
fn up_with_a_long_task() -> (Up, u32, BTreeMap<u32, (String, String)>) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let up = Up::start(dir);
    let pid = up.child.id();
    let had = run_a_long_task(&up);
    (up, pid, had)
}

/// Submits `sh -c 'sleep 600'` to `up` and waits until it runs; every process below `up` then.
fn run_a_long_task(up: &Up) -> BTreeMap<u32, (String, String)> {
    let submitted = match Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "submit",
            "--wall-time",
            "10m",
            "--",
            "sh",
            "-c",
            "sleep 600",
        ])
        .env("WARREN_SERVER", &up.url)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running warren submit: {e}"),
    };
    assert!(
        submitted.status.success(),
        "warren submit: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    wait_for_process(up, "sleep 600", Duration::from_secs(30))
}

/// Waits up to `limit` until none of `had` is alive; those still alive then.
fn still_alive_after(had: &BTreeMap<u32, (String, String)>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let alive: Vec<String> = had
            .iter()
            .filter(|(&p, (start, _))| start_time(p).as_ref() == Some(start))
            .map(|(p, (_, cmd))| format!("{p} `{cmd}`"))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_long_task_running_exits_promptly_leaving_no_processes() {
    if !root() {
        return;
    }
    let (mut up, pid, had) = up_with_a_long_task();

    let took = terminate(&mut up, Duration::from_secs(20) * slowdown());
    assert!(
        took < Duration::from_secs(5) * slowdown(),
        "warren up took {took:?} to stop with a task running"
    );
    assert_eq!(
        leftovers(pid, up.dir.path(), &had),
        Vec::<String>::new(),
        "left behind"
    );
}

/// A runner that is killed outright cannot clean up, but its runs must not outlive it: every
/// run's init asks for SIGKILL when the runner goes, and asks again after its uid change (which
/// clears that request). Its cgroups are left for the next runner to reclaim.
#[test]
fn sigkill_takes_the_running_tasks_and_the_spawner_with_it() {
    if !root() {
        return;
    }
    let (mut up, pid, had) = up_with_a_long_task();
    assert!(
        had.values().any(|(_, cmd)| cmd.contains("warren up")),
        "the spawner and the runs' inits are copies of warren up: {had:?}"
    );
    let _ = up.child.kill();
    let _ = up.child.wait();
    let alive = still_alive_after(&had, Duration::from_secs(5) * slowdown());
    clean_up(pid, &had);
    assert_eq!(
        alive,
        Vec::<String>::new(),
        "alive after warren up was killed"
    );
}

/// The same for `warren sandbox run`, whose run is cloned by the command itself.
#[test]
fn a_killed_sandbox_run_command_takes_its_run_with_it() {
    if !root() {
        return;
    }
    let mut command = match Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["sandbox", "run", "--wall-time", "10m", "--", "sleep", "599"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("running warren sandbox run: {e}"),
    };
    let pid = command.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let had = loop {
        let below = descendants(pid);
        if below.values().any(|(_, cmd)| cmd == "sleep 599") {
            break below;
        }
        if Instant::now() > deadline {
            let _ = command.kill();
            let _ = command.wait();
            panic!("no `sleep 599` below warren sandbox run: {below:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = command.kill();
    let _ = command.wait();
    let alive = still_alive_after(&had, Duration::from_secs(5) * slowdown());
    clean_up(pid, &had);
    assert_eq!(
        alive,
        Vec::<String>::new(),
        "alive after the command was killed"
    );
}
