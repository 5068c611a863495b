//! The client commands against the real coordinator: `warren server` (no worker: tasks stay
//! WAITING, which needs no privileges) and `warren up` (a local worker running tasks in the
//! sandbox, which needs root), each started from the built binary on ports of 127.0.0.1 it
//! picks itself.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod pythia;

/// Longest any one `warren` command may take before the test fails (instead of hanging).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A coordinator process, stopped when dropped.
struct Coordinator {
    child: Child,
    url: String,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    /// Starts `warren ROLE` (`server` or `up`) and waits for the URL it prints.
    fn start(role: &str, extra: &[&str]) -> Coordinator {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("tempdir: {e}"),
        };
        let data_dir = dir.path().join("data");
        let log = match File::create(dir.path().join("log")) {
            Ok(f) => f,
            Err(e) => panic!("log file: {e}"),
        };
        let mut child = match Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg(role)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--http", "127.0.0.1:0", "--queue", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("starting warren {role}: {e}"),
        };
        let Some(stdout) = child.stdout.take() else {
            panic!("no stdout")
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("http://") {
                    let url: String = line[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(url);
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
                panic!("warren {role} printed no URL within 60 s; its log:\n{log}");
            }
        };
        Coordinator {
            child,
            url,
            data_dir,
            _dir: dir,
        }
    }

    /// Runs `warren ARGS` against this coordinator.
    fn warren(&self, args: &[&str]) -> Ran {
        self.warren_with(args, |_| {})
    }

    fn warren_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Ran {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        adjust(&mut command);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("running warren {args:?}: {e}"),
        };
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(COMMAND_LIMIT) {
            Ok(Ok(out)) => Ran {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Ok(Err(e)) => panic!("waiting for warren {args:?}: {e}"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("warren {args:?} did not finish within {COMMAND_LIMIT:?}");
            }
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .args(args)
            .env("WARREN_SERVER", &self.url)
            .env_remove("WARREN_API_TOKEN")
            .env_remove("WARREN_API_TOKEN_FILE")
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM: `warren up` then aborts its runs and removes their cgroups and mounts; one
        // that does not stop is killed and what it left removed.
        crate::leftovers::terminate(&mut self.child, Duration::from_secs(20));
    }
}

#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_default()
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Sends SIGINT to `child` (with kill(1): this crate has no unsafe code).
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "kill -INT {}",
        child.id()
    );
}

/// Reads from `child`'s stdout until `needle` has been seen; kills the child and fails after
/// `limit`. Gives the rest of its stdout, read to the end, once `needle` was seen.
fn read_until(
    child: &mut Child,
    needle: &'static [u8],
    limit: Duration,
) -> mpsc::Receiver<Vec<u8>> {
    let Some(mut stdout) = child.stdout.take() else {
        panic!("no stdout")
    };
    let (seen_tx, seen_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 256];
        let at = loop {
            if let Some(at) = seen.windows(needle.len()).position(|w| w == needle) {
                break at;
            }
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        };
        let _ = seen_tx.send(());
        let mut rest = seen.split_off(at + needle.len());
        let _ = stdout.read_to_end(&mut rest);
        let _ = rest_tx.send(rest);
    });
    if seen_rx.recv_timeout(limit).is_err() {
        let _ = child.kill();
        panic!(
            "no {:?} on stdout within {limit:?}",
            String::from_utf8_lossy(needle)
        );
    }
    rest_rx
}

#[test]
fn against_a_coordinator_without_workers_tasks_wait_and_can_be_cancelled() {
    let coordinator = Coordinator::start("server", &[]);

    let ran = coordinator.warren(&["submit", "--priority", "3", "--", "echo", "hi"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let id = ran.text().trim().to_string();
    assert!(id.parse::<u64>().is_ok(), "{ran:?}");

    let ran = coordinator.warren(&["status", "--json", &id]);
    let view = ran.json();
    assert_eq!(
        (view["state"].as_str(), view["priority"].as_u64()),
        (Some("WAITING"), Some(3)),
        "{ran:?}"
    );
    assert_eq!(view["command"], serde_json::json!(["echo", "hi"]));

    let ran = coordinator.warren(&["tasks", "--state", "waiting"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let row = format!("{id} ");
    assert!(
        ran.text()
            .lines()
            .any(|l| l.starts_with(&row) && l.contains("WAITING")),
        "{ran:?}"
    );
    let ran = coordinator.warren(&["tasks", "--json", "--state", "done"]);
    assert_eq!(ran.json()["tasks"], serde_json::json!([]), "{ran:?}");

    let ran = coordinator.warren(&["workers", "--json"]);
    assert_eq!(ran.json(), serde_json::json!([]), "{ran:?}");

    // Paging: newest first by default, oldest first on request, continued with --after.
    let ran = coordinator.warren(&["submit", "--", "echo", "second"]);
    let second = ran.text().trim().to_string();
    let first_of = |ran: &Ran| ran.json()["tasks"][0]["id"].to_string();
    let ran = coordinator.warren(&["tasks", "--json", "--limit", "1"]);
    assert_eq!(first_of(&ran), second, "{ran:?}");
    let next = ran.json()["next"].as_str().unwrap_or_default().to_string();
    let ran = coordinator.warren(&["tasks", "--json", "--limit", "1", "--after", &next]);
    assert_eq!(first_of(&ran), id, "{ran:?}");
    let ran = coordinator.warren(&["tasks", "--json", "--limit", "1", "--oldest-first"]);
    assert_eq!(first_of(&ran), id, "{ran:?}");
    let ran = coordinator.warren(&["tasks", "--limit", "1"]);
    assert!(ran.stderr.contains("more: warren tasks --after"), "{ran:?}");
    let ran = coordinator.warren(&["cancel", &second]);
    assert_eq!(ran.code, Some(0), "{ran:?}");

    let ran = coordinator.warren(&["cancel", &id]);
    assert_eq!(
        (ran.code, ran.text()),
        (Some(0), format!("task {id}: CANCELLED\n")),
        "{ran:?}"
    );
    let ran = coordinator.warren(&["cancel", &id]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("409") && ran.stderr.contains("CANCELLED"),
        "{ran:?}"
    );

    let ran = coordinator.warren(&["status", "987654"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("404"), "{ran:?}");

    // `warren run` of a task no worker takes: Ctrl-C cancels it while it waits.
    let mut command = coordinator.command(&["run", "--", "true"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!("spawn: {e}"),
    };
    let started = Instant::now();
    let waiting = loop {
        let ran = coordinator.warren(&["tasks", "--json", "--state", "waiting"]);
        if ran.json()["tasks"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            break true;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(waiting, "warren run submitted nothing");
    interrupt(&child);
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => panic!("wait: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(121), "{stderr}");
    assert!(
        stderr.contains("cancelling task") && stderr.contains("is CANCELLED"),
        "{stderr}"
    );
}

#[test]
fn a_coordinator_requiring_a_token_refuses_clients_without_it() {
    let coordinator = Coordinator::start("server", &["--require-token"]);
    let ran = coordinator.warren(&["tasks"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("401") && ran.stderr.contains("bearer token"),
        "{ran:?}"
    );

    let token_file = coordinator.data_dir.join("api-token");
    assert!(
        Path::new(&token_file).exists(),
        "no {}",
        token_file.display()
    );
    let token_arg = token_file.display().to_string();
    let ran = coordinator.warren(&["tasks", "--token-file", &token_arg]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let token = std::fs::read_to_string(&token_file).unwrap_or_default();
    let ran = coordinator.warren_with(&["workers"], |c| {
        c.env("WARREN_API_TOKEN", token.trim());
    });
    assert_eq!(ran.code, Some(0), "{ran:?}");
}

/// `warren up` runs tasks in the sandbox, which needs root.
fn up() -> Option<Coordinator> {
    if !is_root() {
        eprintln!("skipped: running tasks through `warren up` needs root for the sandbox");
        return None;
    }
    Some(Coordinator::start("up", &["--capacity", "2"]))
}

#[test]
fn run_through_a_real_worker_streams_output_and_exits_with_the_tasks_code() {
    let Some(coordinator) = up() else { return };

    let ran = coordinator.warren(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(
        (ran.code, ran.text().as_str(), ran.stderr.as_str()),
        (Some(3), "out\n", "err\n"),
        "{ran:?}"
    );

    let ran = coordinator.warren(&["run", "--", "printf", r"\377\000x"]);
    assert_eq!(
        (ran.code, ran.stdout.as_slice()),
        (Some(0), &[0xff, 0, b'x'][..]),
        "{ran:?}"
    );

    let ran = coordinator.warren(&["run", "--wall-time", "300ms", "--", "sleep", "10"]);
    assert_eq!(ran.code, Some(124), "{ran:?}");
    assert!(ran.stderr.contains("timeout (wall_time)"), "{ran:?}");

    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let input = dir.path().join("input.txt");
    let data = dir.path().join("data.txt");
    assert!(std::fs::write(&input, "from stdin\n").is_ok());
    assert!(std::fs::write(&data, "from a file\n").is_ok());
    let input = input.display().to_string();
    let data = format!("{}:sub/data.txt", data.display());
    let ran = coordinator.warren(&[
        "run",
        "--stdin",
        &input,
        "--file",
        &data,
        "--env",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        "cat; cat sub/data.txt; echo $GREETING",
    ]);
    assert_eq!(
        (ran.code, ran.text()),
        (Some(0), "from stdin\nfrom a file\nhello\n".to_string()),
        "{ran:?}"
    );
}

#[test]
fn submit_status_logs_and_ctrl_c_through_a_real_worker() {
    let Some(coordinator) = up() else { return };

    let ran = coordinator.warren(&[
        "submit",
        "--wait",
        "--json",
        "--",
        "sh",
        "-c",
        "echo done; exit 4",
    ]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    let view = ran.json();
    assert_eq!(
        (view["state"].as_str(), view["result"]["status"].as_str()),
        (Some("DONE"), Some("failed")),
        "{ran:?}"
    );
    let id = view["id"].as_u64().unwrap_or_default().to_string();

    let ran = coordinator.warren(&["logs", &id]);
    assert_eq!(
        (ran.code, ran.text()),
        (Some(0), "done\n".to_string()),
        "{ran:?}"
    );
    let ran = coordinator.warren(&["status", &id]);
    assert!(ran.text().contains("DONE: failed (exit code 4)"), "{ran:?}");
    let ran = coordinator.warren(&["workers"]);
    assert!(
        ran.text().lines().nth(1).is_some_and(|l| l.contains("/2")),
        "{ran:?}"
    );

    // Output arrives while the task runs, and Ctrl-C aborts it on its worker.
    let mut command =
        coordinator.command(&["run", "--", "sh", "-c", "echo first; sleep 60; echo never"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!("spawn: {e}"),
    };
    let started = Instant::now();
    let rest = read_until(&mut child, b"first\n", Duration::from_secs(60));
    interrupt(&child);
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => panic!("wait: {e}"),
    };
    let rest = rest
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(121), "{stderr}");
    assert!(stderr.contains("ended: abort"), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// `warren workers show|groups|set-state|deregister` against `warren up`'s own worker.
#[test]
fn an_operator_changes_groups_and_state_and_deregisters_a_worker() {
    let Some(coordinator) = up() else { return };
    // `warren up` prints its addresses before its own worker has registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let listed = coordinator.warren(&["workers", "--json"]).json();
        let id = listed[0]["id"].as_str().unwrap_or_default().to_string();
        if !id.is_empty() {
            break id;
        }
        assert!(Instant::now() < deadline, "no worker listed: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let show = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = coordinator
                .warren(&["workers", "show", &id, "--json"])
                .json();
            if pred(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "worker never {what}: {view}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    show("IDLE", &|v| v["state"] == "IDLE");

    let ran = coordinator.warren(&["workers", "groups", &id, "lab, ops", "--json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        ran.json()["groups"],
        serde_json::json!(["lab", "ops"]),
        "{ran:?}"
    );

    // Deregistering a worker in service is refused, naming its state and what would allow it.
    let ran = coordinator.warren(&["workers", "deregister", &id]);
    assert_ne!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stderr.contains("IDLE") && ran.stderr.contains("MAINTENANCE"),
        "{ran:?}"
    );

    let ran = coordinator.warren(&[
        "workers",
        "set-state",
        &id,
        "maintenance",
        "--message",
        "new disk",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let view = show("MAINTENANCE", &|v| v["state"] == "MAINTENANCE");
    assert_eq!(view["reason"], "new disk", "{view}");
    assert_eq!(view["groups"], serde_json::json!(["lab", "ops"]), "{view}");
    let ran = coordinator.warren(&["workers", "set-state", &id, "running"]);
    assert_ne!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stderr.contains("idle or maintenance"), "{ran:?}");

    let ran = coordinator.warren(&["workers", "set-state", &id, "idle"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    show("IDLE again", &|v| v["state"] == "IDLE");
    coordinator.warren(&["workers", "set-state", &id, "maintenance"]);
    show("MAINTENANCE again", &|v| v["state"] == "MAINTENANCE");
    let ran = coordinator.warren(&["workers", "deregister", &id]);
    assert_eq!(
        (ran.code, ran.text()),
        (Some(0), format!("worker {id} deregistered\n")),
        "{ran:?}"
    );
}
