//! The client commands (`warren run`, `submit`, `status`, `logs`, `cancel`, `tasks`,
//! `workers`) as a user runs them: the real binary against a coordinator stand-in.

mod real;
mod standin;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;
use standin::{result, start, task, Script, TASK_ID};

/// What one `warren` invocation did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn warren_command(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    command
        .args(args)
        .env("WARREN_SERVER", server)
        .env_remove("WARREN_API_TOKEN")
        .env_remove("WARREN_API_TOKEN_FILE")
        .stdin(Stdio::null());
    command
}

/// Runs `warren ARGS` against `server` without blocking the stand-in's runtime.
async fn warren(server: &str, args: &[&str]) -> Ran {
    let mut command = warren_command(server, args);
    let output = tokio::task::spawn_blocking(move || command.output()).await;
    match output {
        Ok(Ok(out)) => Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("running warren: {e}"),
        Err(e) => panic!("joining: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_both_streams_and_exits_with_the_programs_code() {
    let server = start(Script::finishing(task(
        "DONE",
        Some(result("failed", Some(3), None, None)),
        None,
    )))
    .await;
    let ran = warren(
        &server.url,
        &[
            "run",
            "--memory",
            "64M",
            "--wall-time",
            "2s",
            "--env",
            "A=1",
            "--priority",
            "2",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert_eq!(ran.stdout, "out\n");
    // A plain non-zero exit speaks for itself: no note from Warren.
    assert_eq!(ran.stderr, "err\n");
    let seen = server.seen();
    assert_eq!(seen.submitted.len(), 1);
    let spec = &seen.submitted[0];
    assert_eq!(spec["command"], json!(["sh", "-c", "exit 3"]));
    assert_eq!(
        spec["limits"],
        json!({"memory": 64 << 20, "wall_time": 2000})
    );
    assert_eq!(spec["env"], json!({"A": "1"}));
    assert_eq!(spec["priority"], 2);
    assert!(
        seen.requests
            .iter()
            .any(|r| r == &format!("GET /v1/tasks/{TASK_ID}/output")),
        "{:?}",
        seen.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exit_codes_follow_status_and_state() {
    let cases = [
        (
            task("DONE", Some(result("success", Some(0), None, None)), None),
            0,
            "",
        ),
        (
            task("DONE", Some(result("killed", None, Some(9), None)), None),
            137,
            "killed (signal 9)",
        ),
        (
            task(
                "DONE",
                Some(result("timeout", None, Some(9), Some("wall_time"))),
                None,
            ),
            124,
            "timeout (wall_time)",
        ),
        (
            task(
                "DONE",
                Some(result("memory", None, Some(9), Some("memory"))),
                None,
            ),
            123,
            "memory (memory)",
        ),
        (
            task(
                "DONE",
                Some(result("overflow", None, Some(9), Some("output"))),
                None,
            ),
            122,
            "overflow (output)",
        ),
        (
            task("DONE", Some(result("abort", None, Some(9), None)), None),
            121,
            "abort",
        ),
        (
            task("DONE", Some(result("crash", None, None, None)), None),
            120,
            "crash",
        ),
        (
            task("CANCELLED", None, Some("cancelled by alice")),
            121,
            "CANCELLED: cancelled by alice",
        ),
        (
            task("TIMEOUT", None, Some("deadline passed")),
            124,
            "TIMEOUT: deadline passed",
        ),
        (
            task("INVALID", None, Some("no worker offers gpu=1")),
            120,
            "INVALID: no worker offers gpu=1",
        ),
        (
            task("FAILED", None, Some("worker lost 3 times")),
            120,
            "FAILED: worker lost 3 times",
        ),
    ];
    for (finished, code, note) in cases {
        let server = start(Script::finishing(finished)).await;
        let ran = warren(&server.url, &["run", "--", "true"]).await;
        assert_eq!(ran.code, Some(code), "{ran:?}");
        assert!(ran.stderr.contains(note), "{note:?} in {ran:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_running_task_and_waits_for_its_end() {
    let mut script = Script::finishing(task(
        "DONE",
        Some(result("abort", None, Some(9), None)),
        None,
    ));
    script.runs_until_cancelled = true;
    let server = start(script).await;
    let mut command = warren_command(&server.url, &["run", "--", "sleep", "1000"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let interrupted = tokio::task::spawn_blocking(move || -> Result<Ran, String> {
        let mut child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        // The first output arrives while the task is still running: it was streamed live.
        let mut first = [0u8; 4];
        stdout
            .read_exact(&mut first)
            .map_err(|e| format!("reading the live output: {e}"))?;
        if &first != b"out\n" {
            return Err(format!("unexpected output {first:?}"));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !status.success() {
            return Err("kill -INT failed".into());
        }
        let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        Ok(Ran {
            code: out.status.code(),
            stdout: format!("out\n{rest}"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    })
    .await;
    let ran = match interrupted {
        Ok(Ok(ran)) => ran,
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("joining: {e}"),
    };
    assert_eq!(ran.code, Some(121), "{ran:?}");
    assert!(
        ran.stderr.contains(&format!("cancelling task {TASK_ID}")),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("abort"), "{ran:?}");
    assert_eq!(server.seen().cancels, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_json_prints_the_finished_task() {
    let server = start(Script::finishing(task(
        "DONE",
        Some(result("success", Some(0), None, None)),
        None,
    )))
    .await;
    let ran = warren(&server.url, &["run", "--json", "--", "true"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let view: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_default();
    assert_eq!(view["state"], "DONE");
    assert_eq!(view["result"]["stdout"], "out\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_warren_itself_exit_2_and_say_what_is_wrong() {
    // Nothing listens on this port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        let addr = listener.and_then(|l| l.local_addr());
        match addr {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("bind: {e}"),
        }
    };
    let ran = warren(&closed, &["run", "--", "true"]).await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr
            .contains(&format!("cannot reach the Warren coordinator at {closed}")),
        "{ran:?}"
    );

    let mut script = Script::finishing(task("DONE", None, None));
    script.refuse_submit = Some((
        StatusCode::BAD_REQUEST,
        json!({"error": "no worker offers environment `nope`", "field": "environment"}),
    ));
    let server = start(script).await;
    let ran = warren(
        &server.url,
        &["submit", "--environment", "nope", "--", "true"],
    )
    .await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("400") && ran.stderr.contains("`environment`: no worker offers"),
        "{ran:?}"
    );

    let ran = warren(&server.url, &["status", "7"]).await;
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("no task 7"), "{ran:?}");

    // Bad flags never reach the coordinator.
    let before = server.seen().requests.len();
    for args in [
        &["run", "--memory", "1K", "--", "true"][..],
        &["run"],
        &["run", "--priority", "0", "--", "true"],
    ] {
        let ran = warren(&server.url, args).await;
        assert_eq!(ran.code, Some(2), "{args:?}: {ran:?}");
        assert!(
            ran.stderr.starts_with("warren: ") || ran.stderr.contains("error:"),
            "{ran:?}"
        );
    }
    assert_eq!(server.seen().requests.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_prints_the_id_and_wait_prints_the_finished_task() {
    let server = start(Script::finishing(task(
        "DONE",
        Some(result("failed", Some(5), None, None)),
        None,
    )))
    .await;
    let ran = warren(&server.url, &["submit", "--", "true"]).await;
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "42\n"),
        "{ran:?}"
    );
    let ran = warren(&server.url, &["submit", "--json", "--", "true"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ran.stdout).ok(),
        Some(json!({"id": 42}))
    );

    let ran = warren(&server.url, &["submit", "--wait", "--", "true"]).await;
    assert_eq!(ran.code, Some(5), "{ran:?}");
    assert!(ran.stdout.contains("DONE: failed (exit code 5)"), "{ran:?}");
    assert!(server
        .seen()
        .requests
        .iter()
        .any(|r| r == "POST /v1/tasks?wait=true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_cancel_tasks_and_workers() {
    let server = start(Script::finishing(task(
        "DONE",
        Some(result("success", Some(0), None, None)),
        None,
    )))
    .await;
    let url = server.url.clone();

    let ran = warren(&url, &["status", "42"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    for needle in [
        "task:      42",
        "state:     DONE: success",
        "command:   sh -c 'echo hi'",
        "worker:    w1",
        "peak memory 2M",
    ] {
        assert!(ran.stdout.contains(needle), "{needle:?} in {}", ran.stdout);
    }
    let ran = warren(&url, &["status", "--json", "42"]).await;
    let view: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_default();
    assert_eq!(
        (view["id"].clone(), view["state"].clone()),
        (json!(42), json!("DONE"))
    );

    let ran = warren(&url, &["logs", "42"]).await;
    assert_eq!(
        (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
        (Some(0), "out\n", "err\n")
    );
    let ran = warren(&url, &["logs", "--follow", "--json", "42"]).await;
    let lines: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"stream": "stdout", "text": "out\n"}),
            json!({"stream": "stderr", "text": "err\n"})
        ]
    );
    {
        let seen = server.seen();
        assert!(
            seen.requests
                .iter()
                .any(|r| r == "GET /v1/tasks/42/output?follow=false"),
            "{:?}",
            seen.requests
        );
        assert!(
            seen.requests.iter().any(|r| r == "GET /v1/tasks/42/output"),
            "{:?}",
            seen.requests
        );
    }

    let ran = warren(&url, &["cancel", "42"]).await;
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "task 42: DONE\n"),
        "{ran:?}"
    );
    assert_eq!(server.seen().cancels, 1);

    let ran = warren(&url, &["tasks", "--state", "in_progress", "--limit", "2"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{ran:?}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "STATE", "PRI", "WORKER", "AGE", "COMMAND"],
        "{ran:?}"
    );
    // Every row has a cell under every heading (a state with a space stays one cell).
    assert!(
        lines[2].starts_with("42  WAITING        8    w1"),
        "{ran:?}"
    );
    assert!(
        lines[1].contains("DONE")
            && lines[1].contains("success")
            && lines[1].contains("sh -c 'echo hi'")
    );
    assert!(ran.stderr.contains("warren tasks --after 41"), "{ran:?}");
    assert!(server
        .seen()
        .requests
        .iter()
        .any(|r| r == "GET /v1/tasks?state=IN+PROGRESS&limit=2"));

    let ran = warren(&url, &["workers"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.starts_with("ID  STATE    TASKS"), "{ran:?}");
    assert!(
        ran.stdout.contains("w1  RUNNING  1/4    8G      4"),
        "{ran:?}"
    );
    assert!(ran.stdout.contains("arch=x86_64,os=linux"), "{ran:?}");
    let ran = warren(&url, &["workers", "--json"]).await;
    let workers: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_default();
    assert_eq!(workers[0]["capacity"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_flag_wins_over_the_environment() {
    let server = start(Script::finishing(task(
        "DONE",
        Some(result("success", Some(0), None, None)),
        None,
    )))
    .await;
    let started = Instant::now();
    let ran = warren(
        "http://127.0.0.1:1",
        &["status", "--server", &server.url, "42"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
