//! Pythia task files through the binary: `warren server --tasks-dir`, `warren up --tasks-dir`
//! (whose worker finds the task filesystems in the same directory) and
//! `warren submit --pythia-task FILE --input FILE`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::{json, Value};

use super::{is_root, Coordinator};

/// One HTTP/1.1 request to the coordinator at `url`: status and body.
fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert!(stream.write_all(request.as_bytes()).is_ok());
    let mut raw = String::new();
    assert!(stream.read_to_string(&mut raw).is_ok());
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// `DIR/hello.task` and its task filesystem `DIR/hello/` (its control file runs `hello.sh`,
/// which echoes its input), and an input file holding `42`; returns the task file's path and
/// the input's.
fn hello_task(dir: &Path) -> (String, String) {
    let task = json!({"environment": "", "taskfs": "hello", "limits": {"time": 10, "memory": 64, "disk": 50, "output": 1000}});
    assert!(std::fs::write(dir.join("hello.task"), task.to_string()).is_ok());
    assert!(std::fs::create_dir(dir.join("hello")).is_ok());
    assert!(std::fs::write(dir.join("hello/control"), "/task/hello.sh\n").is_ok());
    let script = dir.join("hello/hello.sh");
    assert!(std::fs::write(&script, "#!/bin/sh\necho \"got $(cat)\"\necho done >&2\n").is_ok());
    use std::os::unix::fs::PermissionsExt;
    assert!(std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).is_ok());
    let input = dir.join("input.txt");
    assert!(std::fs::write(&input, "42").is_ok());
    (
        dir.join("hello.task").display().to_string(),
        input.display().to_string(),
    )
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    }
}

#[test]
fn server_takes_a_tasks_dir_and_submit_takes_a_pythia_task_file() {
    let tasks = tempdir();
    let paths = hello_task(tasks.path());
    let dir = tasks.path().display().to_string();
    let coordinator = Coordinator::start("server", &["--tasks-dir", &dir]);

    let (status, body) = http(&coordinator.url, "GET", "/api/tasks", "");
    assert_eq!((status, body.as_str()), (200, r#"[{"taskid":"hello"}]"#));

    let (file, input) = (paths.0.as_str(), paths.1.as_str());
    let ran = coordinator.warren(&[
        "submit",
        "--json",
        "--pythia-task",
        file,
        "--input",
        input,
        "--priority",
        "2",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let id = ran.json()["id"].as_u64().unwrap_or_default().to_string();
    let view = coordinator.warren(&["status", "--json", &id]).json();
    assert_eq!(
        (&view["state"], &view["priority"], &view["command"]),
        (&json!("WAITING"), &json!(2), &json!([])),
        "{view}"
    );

    // Mistakes are refused before anything is sent, naming what is wrong.
    let bad = tasks.path().join("bad.task");
    assert!(std::fs::write(&bad, r#"{"taskfs": "hello", "limits": {"time": "soon"}}"#).is_ok());
    let bad = bad.display().to_string();
    for (args, needle) in [
        (
            vec!["submit", "--pythia-task", file, "--", "echo"],
            "no command",
        ),
        (vec!["submit", "--pythia-task", &bad], "limits.time"),
        (
            vec!["submit", "--pythia-task", file, "--taskfs", "x"],
            "--taskfs",
        ),
        (
            vec!["submit", "--input", input, "--", "cat"],
            "--pythia-task",
        ),
    ] {
        let ran = coordinator.warren(&args);
        assert_eq!(ran.code, Some(2), "{args:?}: {ran:?}");
        assert!(ran.stderr.contains(needle), "{args:?}: {ran:?}");
    }
    let ran = coordinator.warren(&["tasks", "--json"]);
    assert_eq!(
        ran.json()["tasks"].as_array().map(Vec::len),
        Some(1),
        "{ran:?}"
    );
}

#[test]
fn up_runs_pythia_tasks_from_its_tasks_dir() {
    if !is_root() {
        eprintln!("skipped: running tasks through `warren up` needs root for the sandbox");
        return;
    }
    let tasks = tempdir();
    let paths = hello_task(tasks.path());
    let dir = tasks.path().display().to_string();
    let coordinator = Coordinator::start("up", &["--capacity", "2", "--tasks-dir", &dir]);

    let (file, input) = (paths.0.as_str(), paths.1.as_str());
    let ran = coordinator.warren(&[
        "submit",
        "--pythia-task",
        file,
        "--input",
        input,
        "--wait",
        "--json",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let view: Value = ran.json();
    assert_eq!(
        (&view["state"], &view["result"]["status"]),
        (&json!("DONE"), &json!("success")),
        "{view}"
    );
    assert_eq!(
        (&view["result"]["stdout"], &view["result"]["stderr"]),
        (&json!("got 42\n"), &json!("done\n"))
    );

    let (status, body) = http(
        &coordinator.url,
        "POST",
        "/execute",
        r#"{"tid": "hello", "response": "%s"}"#,
    );
    assert_eq!((status, body.as_str()), (200, "got %s\ndone\n"));
    let (status, body) = http(
        &coordinator.url,
        "POST",
        "/api/execute",
        r#"{"tid": "hello", "input": "7"}"#,
    );
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"tid": "hello", "status": "success", "output": "got 7\ndone\n"})
        )
    );
}

#[test]
fn worker_takes_tasks_dir_as_another_name_for_taskfs_dir() {
    let dir = tempdir();
    let path = dir.path().display().to_string();
    let ran = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["worker", "--tasks-dir", &path, "--taskfs-dir", &path])
        .output();
    let Ok(ran) = ran else {
        panic!("running warren worker")
    };
    assert_eq!(ran.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ran.stderr).contains("--taskfs-dir"));
}

#[test]
fn a_missing_tasks_dir_is_refused_at_start() {
    let dir = tempdir();
    let missing = dir.path().join("missing").display().to_string();
    let data = dir.path().join("data").display().to_string();
    let ran = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["server", "--data-dir", &data, "--tasks-dir", &missing])
        .args(["--http", "127.0.0.1:0", "--queue", "127.0.0.1:0"])
        .output();
    let Ok(ran) = ran else {
        panic!("running warren server")
    };
    assert_eq!(ran.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        stderr.contains("--tasks-dir") && stderr.contains("not a directory"),
        "{stderr}"
    );
}
