//! Pythia's own job cases, through the queue: `warren up` with a busybox environment and task
//! directories built here (`warren env build busybox`), and a plain Pythia frontend on the queue port that sends `launch`
//! and `abort` and reads `done`. Needs root (the sandbox) and a static `/bin/busybox`
//! (busybox-static); the image cases also need squashfs-tools. What is absent (checked directly,
//! never read from an error message) is said SKIPPED; everything else runs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{leftovers, tools};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Timing bounds stretch by `WARREN_TEST_SLOWDOWN` on emulated hosts.
pub fn slowdown() -> u32 {
    std::env::var("WARREN_TEST_SLOWDOWN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `warren up` on loopback with the environments and tasks directories of `dir` (when they
/// exist); stopped with SIGTERM (then killed, if it will not stop) when dropped.
pub struct Up {
    pub child: Child,
    pub queue: String,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Up {
    /// Starts `warren up --data-dir DIR/data` with `DIR/environments` and `DIR/tasks` when they
    /// exist, and waits for the addresses it prints.
    pub fn start(dir: tempfile::TempDir) -> Up {
        let log = match File::create(dir.path().join("log")) {
            Ok(f) => f,
            Err(e) => panic!("log file: {e}"),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http", "127.0.0.1:0", "--queue", "127.0.0.1:0"]);
        let envs = dir.path().join("environments");
        if envs.is_dir() {
            command.arg("--env-dir").arg(&envs);
        }
        let tasks = dir.path().join("tasks");
        if tasks.is_dir() {
            command.arg("--tasks-dir").arg(&tasks);
        }
        let mut child = match command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("starting warren up: {e}"),
        };
        let Some(stdout) = child.stdout.take() else {
            panic!("warren up has no stdout")
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut url, mut queue) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("http://") {
                    url = line[at..].split_whitespace().next().map(str::to_string);
                }
                let mut words = line.split_whitespace();
                if words.next() == Some("queue") {
                    queue = words.next().map(str::to_string);
                }
                if let (Some(url), Some(queue)) = (&url, &queue) {
                    let _ = tx.send((url.clone(), queue.clone()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((url, queue)) => Up {
                child,
                queue,
                url,
                dir,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "warren up printed no addresses within 60 s; its log:\n{}",
                    Up::read_log(dir.path())
                );
            }
        }
    }

    fn read_log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    }

    /// What `warren up` logged so far.
    pub fn log(&self) -> String {
        Up::read_log(self.dir.path())
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; its status, or `None`
    /// when it did not exit in time: then it is killed, and what it left is cleaned up.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        leftovers::terminate(&mut self.child, limit)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM: a clean stop unmounts the shared images.
        self.terminate(Duration::from_secs(20));
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            panic!("{}: {e}", parent.display());
        }
    }
    if let Err(e) = std::fs::write(path, contents) {
        panic!("{}: {e}", path.display());
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        panic!("{}: {e}", path.display());
    }
}

/// `warren env build busybox NAME --env-dir DIR [--squashfs]`; the tools it needs are here
/// (the caller checked), so any failure fails the test.
fn build_busybox(envs: &Path, name: &str, squashfs: bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .args(["env", "build", "busybox", name, "--env-dir"])
        .arg(envs);
    if squashfs {
        command.arg("--squashfs");
    }
    let out = match command.output() {
        Ok(out) => out,
        Err(e) => panic!("running warren env build: {e}"),
    };
    assert!(
        out.status.success(),
        "warren env build busybox {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mksquashfs(dir: &Path, image: &Path) {
    let status = Command::new("mksquashfs")
        .arg(dir)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "mksquashfs {} {}: {status:?}",
        dir.display(),
        image.display()
    );
}

/// Task directories: each a `control` and its scripts, as Pythia's test tasks are.
fn make_tasks(tasks: &Path) {
    let task = |name: &str, control: &str, scripts: &[(&str, &str)]| {
        write_file(&tasks.join(name).join("control"), control, 0o644);
        for (script, body) in scripts {
            write_file(
                &tasks.join(name).join(script),
                &format!("#!/bin/sh\n{body}\n"),
                0o755,
            );
        }
    };
    task(
        "hello-world",
        "/task/hello.sh\n",
        &[("hello.sh", "echo \"Hello world!\"")],
    );
    task(
        "hello-input",
        "/task/hello.sh\n",
        &[("hello.sh", "while read x; do echo \"Hello $x!\"; done")],
    );
    task(
        "timeout",
        "/task/run.sh\n",
        &[("run.sh", "echo Start; sleep 60")],
    );
    task("overflow", "/task/run.sh\n", &[("run.sh", "echo -n abcde")]);
    task(
        "overflow-kill",
        "/task/run.sh\n",
        &[("run.sh", "echo abcdefghijklmnop; sleep 20")],
    );
    task(
        "flooddisk",
        "/task/run.sh\n",
        &[(
            "run.sh",
            "cat /dev/zero > /tmp/flood 2>/dev/null; echo Done",
        )],
    );
    task(
        "forkbomb",
        "/task/bomb.sh\n/task/done.sh\n",
        &[
            (
                "bomb.sh",
                // `sleep` itself may find no process left to fork: the step's own status must
                // not depend on it, so it ends with the shell's builtin exit.
                "exec 2>/dev/null\necho Start\nbomb() { bomb | bomb & }\nbomb\nsleep 1\nexit 0",
            ),
            ("done.sh", "echo Done"),
        ],
    );
    // The worker step tries to read a file only the master's group may read, and to write to
    // the output; the master step then shows what got through.
    task(
        "protected",
        "!/task/steal.sh\n/task/report.sh\n",
        &[
            (
                "steal.sh",
                "cat /task/secret; cat /task/secret > /tmp/stolen; echo stolen; echo stolen >&2",
            ),
            (
                "report.sh",
                "echo \"public=$(cat /task/public)\"; echo \"master=$(cat /task/secret)\"; \
                 echo \"stolen=$(cat /tmp/stolen)\"",
            ),
        ],
    );
    const TASK_GROUP: u32 = 4243;
    let protected = tasks.join("protected");
    write_file(&protected.join("public"), "public", 0o644);
    write_file(&protected.join("secret"), "secret", 0o640);
    for path in [&protected, &protected.join("secret")] {
        if let Err(e) = std::os::unix::fs::chown(path, Some(0), Some(TASK_GROUP)) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// What the job cases run with: a busybox environment directory (`busybox`) and the task
/// directories; with `images`, also an image environment (`busybox-image.sfs`) and an image
/// task filesystem (`hello-world.sfs`). `None` (after saying SKIPPED) without root or a static
/// busybox.
pub fn prepare(images: bool) -> Option<tempfile::TempDir> {
    if !is_root() {
        eprintln!("SKIPPED: the Pythia job cases need root (the sandbox)");
        return None;
    }
    if !tools::static_busybox() {
        return None;
    }
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let envs = dir.path().join("environments");
    let tasks = dir.path().join("tasks");
    build_busybox(&envs, "busybox", false);
    make_tasks(&tasks);
    if images {
        // Images too, as Pythia ships them: an environment and a task filesystem.
        build_busybox(&envs, "busybox-image", true);
        mksquashfs(&tasks.join("hello-world"), &tasks.join("hello-world.sfs"));
    }
    Some(dir)
}

/// A plain Pythia frontend: JSON messages back to back on one connection.
pub struct Frontend {
    stream: TcpStream,
    dones: mpsc::Receiver<Value>,
}

impl Frontend {
    pub fn connect(queue: &str) -> Frontend {
        let stream = match TcpStream::connect(queue) {
            Ok(s) => s,
            Err(e) => panic!("connecting to {queue}: {e}"),
        };
        let reader = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let (tx, dones) = mpsc::channel();
        std::thread::spawn(move || {
            for message in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
                let Ok(message) = message else { break };
                if message["message"] == "done" {
                    let _ = tx.send(message);
                }
            }
        });
        Frontend { stream, dones }
    }

    pub fn send(&mut self, message: Value) {
        if let Err(e) = self.stream.write_all(message.to_string().as_bytes()) {
            panic!("sending {message}: {e}");
        }
    }

    pub fn launch(
        &mut self,
        id: &str,
        environment: &str,
        taskfs: &str,
        limits: Value,
        input: &str,
    ) {
        self.send(json!({
            "message": "launch",
            "id": id,
            "task": {"environment": environment, "taskfs": taskfs, "limits": limits},
            "input": input,
        }));
    }

    /// The `done` of each of `ids`, in any order.
    pub fn dones(&self, ids: &[&str], limit: Duration) -> HashMap<String, Value> {
        let deadline = Instant::now() + limit;
        let mut got = HashMap::new();
        while got.len() < ids.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.dones.recv_timeout(left) {
                Ok(done) => {
                    let id = done["id"].as_str().unwrap_or("").to_string();
                    got.insert(id, done);
                }
                Err(_) => panic!(
                    "only {} of {ids:?} done within {limit:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got
    }
}

pub fn limits(time: u64, output: u64) -> Value {
    json!({"time": time, "memory": 64, "disk": 50, "output": output})
}

/// The fork bomb's limits: its 100 processes are charged their kernel stacks, page tables and
/// slab besides their own pages, about 0.6 MB each, which passes 64 MB when forks pile up on a
/// loaded machine (then the step ends `memory` and the sequence stops, as it should).
fn bomb_limits() -> Value {
    json!({"time": 60, "memory": 256, "disk": 50, "output": 1024})
}

pub fn expect(dones: &HashMap<String, Value>, id: &str, status: &str, output: &str) {
    let Some(done) = dones.get(id) else {
        panic!("no done for {id}")
    };
    assert_eq!(
        (done["status"].as_str(), done["output"].as_str()),
        (Some(status), Some(output)),
        "{id}: {done}"
    );
}

/// `warren submit --pythia-task FILE --wait --json` against `up`: the finished task.
fn submit_pythia_task(up: &Up, task: &Value) -> Value {
    let file = up.dir.path().join("submitted.task");
    write_file(&file, &task.to_string(), 0o644);
    let out = match Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["submit", "--wait", "--json", "--pythia-task"])
        .arg(&file)
        .env("WARREN_SERVER", &up.url)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running warren submit: {e}"),
    };
    match serde_json::from_slice(&out.stdout) {
        Ok(task) => task,
        Err(e) => panic!(
            "warren submit printed no task ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn pythia_job_cases_through_the_queue() {
    // The image cases need squashfs-tools; the directory cases run without them.
    let images = tools::squashfs_tools();
    let Some(dir) = prepare(images) else { return };
    let up = Up::start(dir);
    let mut frontend = Frontend::connect(&up.queue);

    // Abort first, alone, so it is running when the abort arrives.
    frontend.launch("abort", "busybox", "timeout", limits(60, 1024), "");
    std::thread::sleep(Duration::from_secs(1));
    let aborted_at = Instant::now();
    frontend.send(json!({"message": "abort", "id": "abort"}));
    let done = frontend.dones(&["abort"], Duration::from_secs(30));
    assert!(
        aborted_at.elapsed() < Duration::from_secs(2),
        "the abort took {:?}",
        aborted_at.elapsed()
    );
    expect(&done, "abort", "abort", "Start\n");

    // The timeout alone too, so its end is measured from its start: at the 5 s limit, not at
    // the end of its `sleep 60`.
    let started = Instant::now();
    frontend.launch("timeout", "busybox", "timeout", limits(5, 1024), "");
    let done = frontend.dones(&["timeout"], Duration::from_secs(60));
    let took = started.elapsed();
    let margin = Duration::from_secs(5) * slowdown();
    assert!(
        took >= Duration::from_secs(5) && took <= Duration::from_secs(5) + margin,
        "the 5 s timeout ended after {took:?}"
    );
    expect(&done, "timeout", "timeout", "Start\n");

    let mut cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        (
            "hello-world",
            "busybox",
            "hello-world",
            limits(60, 1024),
            "",
        ),
        (
            "hello-input",
            "busybox",
            "hello-input",
            limits(60, 1024),
            "me\npythia\n",
        ),
        ("overflow-10", "busybox", "overflow", limits(60, 10), ""),
        ("overflow-6", "busybox", "overflow", limits(60, 6), ""),
        ("overflow-5", "busybox", "overflow", limits(60, 5), ""),
        ("overflow-4", "busybox", "overflow", limits(60, 4), ""),
        ("overflow-3", "busybox", "overflow", limits(60, 3), ""),
        ("flooddisk", "busybox", "flooddisk", limits(60, 1024), ""),
        ("forkbomb", "busybox", "forkbomb", bomb_limits(), ""),
        ("protected", "busybox", "protected", limits(60, 1024), ""),
    ];
    if images {
        cases.push((
            "hello-world-images",
            "busybox-image",
            "hello-world.sfs",
            limits(60, 1024),
            "",
        ));
    }
    for (id, environment, taskfs, limits, input) in &cases {
        frontend.launch(id, environment, taskfs, limits.clone(), input);
    }
    let ids: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let dones = frontend.dones(&ids, Duration::from_secs(120));
    expect(&dones, "hello-world", "success", "Hello world!\n");
    if images {
        expect(&dones, "hello-world-images", "success", "Hello world!\n");
    }
    expect(
        &dones,
        "hello-input",
        "success",
        "Hello me!\nHello pythia!\n",
    );
    expect(&dones, "overflow-10", "success", "abcde");
    expect(&dones, "overflow-6", "success", "abcde");
    expect(&dones, "overflow-5", "success", "abcde");
    expect(&dones, "overflow-4", "overflow", "abcd");
    expect(&dones, "overflow-3", "overflow", "abc");
    expect(&dones, "flooddisk", "success", "Done\n");
    expect(&dones, "forkbomb", "success", "Start\nDone\n");
    expect(
        &dones,
        "protected",
        "success",
        "public=public\nmaster=secret\nstolen=\n",
    );

    // The fork bomb once more through the API, for its usage: it did fork, and never past
    // Pythia's 100 processes.
    let bomb = submit_pythia_task(
        &up,
        &json!({"environment": "busybox", "taskfs": "forkbomb", "limits": bomb_limits()}),
    );
    let result = &bomb["result"];
    assert_eq!(result["status"], "success", "{bomb}");
    let peak = result["usage"]["peak_pids"].as_u64();
    assert!(
        peak.is_some_and(|p| (2..=warren_worker::MAX_PROCESSES).contains(&p)),
        "peak processes {peak:?}: {bomb}"
    );

    // Overflow with a sleeping writer is killed at once, not at its end.
    let started = Instant::now();
    frontend.launch(
        "overflow-kill",
        "busybox",
        "overflow-kill",
        limits(60, 5),
        "",
    );
    let done = frontend.dones(&["overflow-kill"], Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the overflow took {:?}",
        started.elapsed()
    );
    expect(&done, "overflow-kill", "overflow", "abcde");

    // An environment no worker offers, or a task this worker does not have: a clear answer,
    // not a crash.
    frontend.launch("no-env", "cobol", "hello-world", limits(60, 1024), "");
    frontend.launch("no-task", "busybox", "missing", limits(60, 1024), "");
    let dones = frontend.dones(&["no-env", "no-task"], Duration::from_secs(30));
    for (id, name) in [("no-env", "cobol"), ("no-task", "missing")] {
        let done = &dones[id];
        assert_eq!(done["status"], "fatal", "{done}");
        assert!(
            done["output"].as_str().is_some_and(|o| o.contains(name)),
            "{done}"
        );
    }
}
