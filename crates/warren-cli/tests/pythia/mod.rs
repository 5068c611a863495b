//! Pythia's own job cases, through the queue: `warren up` with a busybox environment and task
//! directories built here (`warren env build busybox`), and a plain Pythia frontend on the queue port that sends `launch`
//! and `abort` and reads `done`. Needs root (the sandbox), busybox-static and, for the image
//! cases, squashfs-tools; says SKIPPED otherwise.

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

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `warren up` with an environments and a tasks directory; killed when dropped.
struct Up {
    child: Child,
    queue: String,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        // SIGTERM: a clean stop unmounts the shared images.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// `warren env build busybox NAME --env-dir DIR [--squashfs]`, or `None` (with the reason
/// printed) when busybox-static cannot be had here.
fn build_busybox(envs: &Path, name: &str, squashfs: bool) -> Option<()> {
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
    if out.status.success() {
        return Some(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("busybox-static") || stderr.contains("mksquashfs") {
        eprintln!("SKIPPED: warren env build could not run here: {stderr}");
        return None;
    }
    panic!("warren env build busybox {name} failed: {stderr}");
}

fn mksquashfs(dir: &Path, image: &Path) -> bool {
    Command::new("mksquashfs")
        .arg(dir)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .is_ok_and(|s| s.success())
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

fn start_up() -> Option<Up> {
    if !is_root() {
        eprintln!("SKIPPED: the Pythia job cases need root (the sandbox)");
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let envs = dir.path().join("environments");
    let tasks = dir.path().join("tasks");
    build_busybox(&envs, "busybox", false)?;
    // Images too, as Pythia ships them: an environment and a task filesystem.
    build_busybox(&envs, "busybox-image", true)?;
    make_tasks(&tasks);
    if !mksquashfs(&tasks.join("hello-world"), &tasks.join("hello-world.sfs")) {
        eprintln!("SKIPPED: mksquashfs is not usable here (apt-get install squashfs-tools)");
        return None;
    }
    let log = File::create(dir.path().join("log")).ok()?;
    let mut child = match Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http", "127.0.0.1:0", "--queue", "127.0.0.1:0"])
        .arg("--env-dir")
        .arg(&envs)
        .arg("--tasks-dir")
        .arg(&tasks)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("starting warren up: {e}"),
    };
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            if words.next() == Some("queue") {
                if let Some(addr) = words.next() {
                    let _ = tx.send(addr.to_string());
                }
            }
        }
    });
    let queue = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(queue) => queue,
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            panic!("warren up printed no queue address within 60 s; its log:\n{log}");
        }
    };
    Some(Up {
        child,
        queue,
        _dir: dir,
    })
}

/// A plain Pythia frontend: JSON messages back to back on one connection.
struct Frontend {
    stream: TcpStream,
    dones: mpsc::Receiver<Value>,
}

impl Frontend {
    fn connect(queue: &str) -> Frontend {
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

    fn send(&mut self, message: Value) {
        if let Err(e) = self.stream.write_all(message.to_string().as_bytes()) {
            panic!("sending {message}: {e}");
        }
    }

    fn launch(&mut self, id: &str, environment: &str, taskfs: &str, limits: Value, input: &str) {
        self.send(json!({
            "message": "launch",
            "id": id,
            "task": {"environment": environment, "taskfs": taskfs, "limits": limits},
            "input": input,
        }));
    }

    /// The `done` of each of `ids`, in any order.
    fn dones(&self, ids: &[&str], limit: Duration) -> HashMap<String, Value> {
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

fn limits(time: u64, output: u64) -> Value {
    json!({"time": time, "memory": 64, "disk": 50, "output": output})
}

fn expect(dones: &HashMap<String, Value>, id: &str, status: &str, output: &str) {
    let Some(done) = dones.get(id) else {
        panic!("no done for {id}")
    };
    assert_eq!(
        (done["status"].as_str(), done["output"].as_str()),
        (Some(status), Some(output)),
        "{id}: {done}"
    );
}

#[test]
fn pythia_job_cases_through_the_queue() {
    let Some(up) = start_up() else { return };
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

    let cases: &[(&str, &str, &str, Value, &str)] = &[
        (
            "hello-world",
            "busybox",
            "hello-world",
            limits(60, 1024),
            "",
        ),
        (
            "hello-world-images",
            "busybox-image",
            "hello-world.sfs",
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
        ("timeout", "busybox", "timeout", limits(5, 1024), ""),
        ("overflow-10", "busybox", "overflow", limits(60, 10), ""),
        ("overflow-6", "busybox", "overflow", limits(60, 6), ""),
        ("overflow-5", "busybox", "overflow", limits(60, 5), ""),
        ("overflow-4", "busybox", "overflow", limits(60, 4), ""),
        ("overflow-3", "busybox", "overflow", limits(60, 3), ""),
        ("flooddisk", "busybox", "flooddisk", limits(60, 1024), ""),
        ("forkbomb", "busybox", "forkbomb", limits(60, 1024), ""),
        ("protected", "busybox", "protected", limits(60, 1024), ""),
    ];
    for (id, environment, taskfs, limits, input) in cases {
        frontend.launch(id, environment, taskfs, limits.clone(), input);
    }
    let ids: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let dones = frontend.dones(&ids, Duration::from_secs(120));
    expect(&dones, "hello-world", "success", "Hello world!\n");
    expect(&dones, "hello-world-images", "success", "Hello world!\n");
    expect(
        &dones,
        "hello-input",
        "success",
        "Hello me!\nHello pythia!\n",
    );
    expect(&dones, "timeout", "timeout", "Start\n");
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
