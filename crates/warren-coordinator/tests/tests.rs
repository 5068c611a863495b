//! The coordinator over real sockets on 127.0.0.1 with a real SQLite file: the HTTP API, Pythia
//! pools and frontends written here, workers lost and coordinators restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kill;
mod lifecycle;
mod pythia_http;
mod scheduling;
mod store;
mod util;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use util::*;
use warren_coordinator::Coordinator;
use warren_core::result::{RunResult, Status};
use warren_proto::{Done, Launch, Message, PythiaTask, Register};
use warren_worker::InstantExecutorForBenchmarks;

fn host() -> Arc<HostProcessExecutor> {
    Arc::new(HostProcessExecutor::default())
}

/// The ids of a task page, in its order.
fn task_ids(page: &serde_json::Value) -> Vec<u64> {
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_runs_end_to_end_with_live_output_to_many_readers() {
    let c = start(|_| {}).await;
    let (_id, _w, _d) = spawn_worker(c.queue(), 2, host(), |_| {});
    workers_in_state(c.http(), 1, "IDLE").await;
    let id = submit(
        c.http(),
        json!({"command": ["sh", "-c", "echo one; sleep 0.4; echo two >&2"]}),
    )
    .await;
    // Two readers from the first byte, at once.
    let (a, b) = (
        tokio::spawn(sse(c.http(), id)),
        tokio::spawn(sse(c.http(), id)),
    );
    // Live: "one" is readable while the task still runs.
    let live = until(c.http(), id, "IN PROGRESS", |v| v["state"] == "IN PROGRESS").await;
    assert!(live["started_at"].is_string());
    // `follow=false` answers at once with what is there, without an end while it runs.
    let started = Instant::now();
    let (status, now) = request(
        c.http(),
        "GET",
        &format!("/v1/tasks/{id}/output?follow=false"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(parse_sse(&now).iter().all(|(e, _)| e == "output"), "{now}");
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    for events in [&a, &b] {
        let outputs: Vec<(&str, &str)> = events
            .iter()
            .filter(|(e, _)| e == "output")
            .map(|(_, d)| (d["stream"].as_str().unwrap(), d["text"].as_str().unwrap()))
            .collect();
        assert_eq!(
            outputs,
            vec![("stdout", "one\n"), ("stderr", "two\n")],
            "{events:?}"
        );
        let (last, end) = events.last().unwrap();
        assert_eq!(last, "end");
        assert_eq!(end["state"], "DONE");
        assert_eq!(end["result"]["status"], "success");
    }
    // The same stream works after the end.
    let replay = sse(c.http(), id).await;
    assert_eq!(replay.len(), 3, "{replay:?}");
    assert_eq!(replay[0].1["text"], "one\n");
    let (status, view) = get(c.http(), &format!("/v1/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["result"]["stdout"], "one\n");
    assert_eq!(view["result"]["stderr"], "two\n");
    assert!(view["finished_at"].as_str().unwrap().ends_with('Z'));
    // ?wait=true answers with the finished task.
    let (status, done) = post(
        c.http(),
        "/v1/tasks?wait=true",
        r#"{"command":["sh","-c","exit 3"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "DONE");
    assert_eq!(done["result"]["status"], "failed");
    assert_eq!(done["result"]["exit_code"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejects_bad_input_naming_the_field() {
    let c = start(|config| config.max_body = 4096).await;
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"command": ["true"]"#, 400, "body"),
        (r#"not json"#, 400, "body"),
        (r#"{"command": "true"}"#, 400, "command"),
        (r#"{"command": []}"#, 400, "command"),
        (
            r#"{"command": ["true"], "limits": {"memory": 5}}"#,
            400,
            "limits.memory",
        ),
        (
            r#"{"command": ["true"], "limits": {"wall_time": "2 parsecs"}}"#,
            400,
            "limits.wall_time",
        ),
        (
            r#"{"command": ["true"], "limits": {"cpus": 1}}"#,
            400,
            "limits.cpus",
        ),
        (r#"{"command": ["true"], "priority": 99}"#, 400, "priority"),
        (
            r#"{"command": ["true"], "files": [{"path": "/etc/passwd"}]}"#,
            400,
            "files[0].path",
        ),
        (r#"{"command": ["true"], "comand": 1}"#, 400, "comand"),
        (
            r#"{"command": ["true"], "deadline": "soon"}"#,
            400,
            "deadline",
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) = post(c.http(), "/v1/tasks", body).await;
        assert_eq!(got, *status, "{body}: {answer}");
        assert_eq!(answer["field"], *field, "{body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let big = format!(r#"{{"command": ["echo", "{}"]}}"#, "x".repeat(8192));
    let (got, answer) = post(c.http(), "/v1/tasks", &big).await;
    assert_eq!(got, 413, "{answer}");
    assert_eq!(answer["field"], "body");
    assert_eq!(get(c.http(), "/v1/tasks/999").await.0, 404);
    assert_eq!(get(c.http(), "/v1/tasks/abc").await.0, 400);
    assert_eq!(
        get(c.http(), "/v1/tasks?colour=red").await.1["field"],
        "colour"
    );
    assert_eq!(
        get(c.http(), "/v1/tasks?state=SLEEPING").await.1["field"],
        "state"
    );
    assert_eq!(get(c.http(), "/v1/tasks?limit=0").await.1["field"], "limit");
    assert_eq!(
        get(c.http(), "/healthz").await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(get(c.http(), "/v1/version").await.1["api"], "v1");
    // Nothing half-written: no task was stored.
    assert_eq!(get(c.http(), "/v1/tasks").await.1["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_task_files_are_bounded_together() {
    use warren_core::task::MAX_TASK_FILES_BYTES;
    let c = start(|_| {}).await;
    // Files of `sizes` bytes, one as text and the rest as base64 (counted decoded).
    let body = |sizes: &[usize]| {
        let files: Vec<serde_json::Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let path = format!("part{i}");
                if i == 0 {
                    json!({"path": path, "contents": "a".repeat(size)})
                } else {
                    let encoded = warren_core::bytes::to_base64(&vec![0xffu8; size]);
                    json!({"path": path, "contents_base64": encoded})
                }
            })
            .collect();
        json!({"task_files": files}).to_string()
    };
    let half = MAX_TASK_FILES_BYTES / 2;
    // Exactly at the bound: accepted (and waits, with no worker).
    let (status, view) = post(c.http(), "/v1/tasks", &body(&[half, half])).await;
    assert_eq!(status, 201, "{view}");
    // One byte past it, wherever the byte is: refused, naming the field and the bound.
    for sizes in [[half, half + 1], [half + 1, half]] {
        let (status, answer) = post(c.http(), "/v1/tasks", &body(&sizes)).await;
        assert_eq!(status, 400, "{sizes:?}: {answer}");
        assert_eq!(answer["field"], "task_files", "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(&MAX_TASK_FILES_BYTES.to_string()), "{error}");
    }
    // Only the task within the bound was stored.
    let (_, page) = get(c.http(), "/v1/tasks").await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_makes_one_task() {
    let c = start(|_| {}).await;
    let body = r#"{"command":["true"]}"#;
    let key = [("Idempotency-Key", "build-42")];
    let (first, a) = request(c.http(), "POST", "/v1/tasks", Some(body), &key).await;
    let (second, b) = request(c.http(), "POST", "/v1/tasks", Some(body), &key).await;
    assert_eq!((first, second), (201, 200), "{a} {b}");
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(a["id"], b["id"]);
    let other = [("Idempotency-Key", "build-43")];
    assert_eq!(
        request(c.http(), "POST", "/v1/tasks", Some(body), &other)
            .await
            .0,
        201
    );
    let (_, page) = get(c.http(), "/v1/tasks").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let long = "k".repeat(300);
    let (status, answer) = request(
        c.http(),
        "POST",
        "/v1/tasks",
        Some(body),
        &[("Idempotency-Key", &long)],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("Idempotency-Key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_keyset_pagination() {
    let c = start(|_| {}).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            submit(
                c.http(),
                json!({"command": ["true"], "owner": if i % 2 == 0 { "ann" } else { "bob" }}),
            )
            .await,
        );
    }
    let (_, page) = get(c.http(), "/v1/tasks?limit=3").await;
    let first: Vec<u64> = task_ids(&page);
    assert_eq!(first, vec![ids[6], ids[5], ids[4]]);
    let next = page["next"].as_str().unwrap();
    let (_, page) = get(c.http(), &format!("/v1/tasks?limit=3&after={next}")).await;
    let second: Vec<u64> = task_ids(&page);
    assert_eq!(second, vec![ids[3], ids[2], ids[1]]);
    let (_, page) = get(c.http(), "/v1/tasks?owner=bob&order=asc").await;
    let bobs: Vec<u64> = task_ids(&page);
    assert_eq!(bobs, vec![ids[1], ids[3], ids[5]]);
    assert!(page["next"].is_null());
    let (_, page) = get(c.http(), "/v1/tasks?state=WAITING&limit=100").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 7);
    let (_, page) = get(c.http(), "/v1/tasks?state=DONE").await;
    assert_eq!(page["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_waiting_and_running_tasks() {
    let c = start(|_| {}).await;
    let waiting = submit(c.http(), json!({"command": ["true"]})).await;
    let (status, view) = post(c.http(), &format!("/v1/tasks/{waiting}/cancel"), "").await;
    assert_eq!(status, 200, "{view}");
    until(c.http(), waiting, "CANCELLED", |v| {
        v["state"] == "CANCELLED"
    })
    .await;
    let (status, answer) = post(c.http(), &format!("/v1/tasks/{waiting}/cancel"), "").await;
    assert_eq!(status, 409, "{answer}");
    // The refusal names the state the task is in and the states a cancel applies to.
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("CANCELLED") && message.contains("WAITING or IN PROGRESS"),
        "{answer}"
    );
    let (_w, _h, _d) = spawn_worker(c.queue(), 1, host(), |_| {});
    let running = submit(c.http(), json!({"command": ["sleep", "30"]})).await;
    until(c.http(), running, "IN PROGRESS", |v| {
        v["state"] == "IN PROGRESS"
    })
    .await;
    let started = Instant::now();
    let (status, _) = post(c.http(), &format!("/v1/tasks/{running}/cancel"), "").await;
    assert_eq!(status, 200);
    let done = until(c.http(), running, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["status"], "abort");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A plain Pythia pool: registers with capacity, answers each launch with done after a while,
/// and records the most launches it held at once.
async fn pythia_pool(
    queue: std::net::SocketAddr,
    capacity: u32,
    hold: Duration,
) -> tokio::task::JoinHandle<usize> {
    let mut pool = Peer::connect(queue).await;
    pool.send_raw(format!(r#"{{"message":"register-pool","capacity":{capacity}}}"#).as_bytes())
        .await;
    tokio::spawn(async move {
        let mut held: Vec<(Instant, String)> = Vec::new();
        let mut most = 0;
        loop {
            let wait = held
                .first()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3));
            tokio::select! {
                message = pool.reader.next() => match message {
                    Ok(Some(Message::Launch(l))) => {
                        held.push((Instant::now() + hold, l.id));
                        most = most.max(held.len());
                    }
                    Ok(Some(Message::Abort { id })) => {
                        held.retain(|(_, h)| h != &id);
                        let done = format!(r#"{{"message":"done","id":"{id}","status":"abort","output":""}}"#);
                        pool.send_raw(done.as_bytes()).await;
                    }
                    Ok(Some(_)) => {}
                    _ => return most,
                },
                _ = tokio::time::sleep(wait) => {
                    if held.is_empty() { return most; }
                    let (_, id) = held.remove(0);
                    // Go's encoder: back to back, no newline.
                    let done = format!(r#"{{"message":"done","id":"{id}","status":"success","output":"ok:{id}"}}"#);
                    pool.send_raw(done.as_bytes()).await;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pythia_pool_gets_launches_never_beyond_its_capacity() {
    let c = start(|_| {}).await;
    let pool = pythia_pool(c.queue(), 2, Duration::from_millis(60)).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            submit(
                c.http(),
                json!({"taskfs": "hello", "environment": "busybox", "limits": {"wall_time": "3s"}}),
            )
            .await,
        );
    }
    for id in &ids {
        let view = until(c.http(), *id, "DONE", |v| v["state"] == "DONE").await;
        assert_eq!(view["result"]["status"], "success");
        assert_eq!(view["result"]["stdout"], format!("ok:{id}"));
    }
    // A Warren command task never goes to a plain pool.
    let cmd = submit(c.http(), json!({"command": ["true"]})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(c.http(), &format!("/v1/tasks/{cmd}")).await.1["state"],
        "WAITING"
    );
    let most = pool.await.unwrap();
    assert_eq!(most, 2, "the pool held {most} launches at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pythia_frontend_gets_done_with_its_own_ids() {
    let c = start(|_| {}).await;
    let _pool = pythia_pool(c.queue(), 1, Duration::from_millis(100)).await;
    let mut frontend = Peer::connect(c.queue()).await;
    let launch = |id: &str| {
        Message::Launch(Launch {
            id: id.into(),
            task: PythiaTask {
                environment: "busybox".into(),
                taskfs: "t".into(),
                ..PythiaTask::default()
            },
            input: "in".into(),
        })
    };
    frontend.send(&launch("a")).await;
    frontend.send(&launch("b")).await;
    frontend.send(&launch("a")).await;
    let mut dones = Vec::new();
    for _ in 0..3 {
        match frontend.recv().await {
            Some(Message::Done(d)) => dones.push(d),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        dones[0],
        Done {
            id: "a".into(),
            status: "fatal".into(),
            output: "Job already launched".into()
        }
    );
    let mut rest: Vec<(String, String)> = dones[1..]
        .iter()
        .map(|d| (d.id.clone(), d.status.clone()))
        .collect();
    rest.sort();
    assert_eq!(
        rest,
        vec![
            ("a".into(), "success".into()),
            ("b".into(), "success".into())
        ]
    );
    assert!(dones[1].output.starts_with("ok:"));
    // Ids may be reused once done.
    frontend.send(&launch("a")).await;
    assert!(
        matches!(frontend.recv().await, Some(Message::Done(d)) if d.id == "a" && d.status == "success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_error() {
    let c = start(|config| config.queue_config.max_waiting = 1).await;
    let mut frontend = Peer::connect(c.queue()).await;
    let launch = |id: &str| {
        Message::Launch(Launch {
            id: id.into(),
            task: PythiaTask {
                taskfs: "t".into(),
                ..PythiaTask::default()
            },
            input: String::new(),
        })
    };
    frontend.send(&launch("x")).await;
    frontend.send(&launch("y")).await;
    assert_eq!(
        frontend.recv().await,
        Some(Message::Done(Done {
            id: "y".into(),
            status: "error".into(),
            output: "Queue full".into()
        }))
    );
    let (status, answer) = post(c.http(), "/v1/tasks", r#"{"command":["true"]}"#).await;
    assert_eq!(status, 503, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frontend_gone_drops_waiting_and_aborts_running() {
    let c = start(|_| {}).await;
    // A pool that holds its one launch for a long time and answers aborts.
    let pool = pythia_pool(c.queue(), 1, Duration::from_secs(30)).await;
    let mut frontend = Peer::connect(c.queue()).await;
    for id in ["run", "wait"] {
        frontend
            .send(&Message::Launch(Launch {
                id: id.into(),
                task: PythiaTask {
                    taskfs: "t".into(),
                    ..PythiaTask::default()
                },
                input: String::new(),
            }))
            .await;
    }
    // Wait until the first runs on the pool.
    let running = loop {
        let (_, page) = get(c.http(), "/v1/tasks?state=IN%20PROGRESS").await;
        if let Some(t) = page["tasks"].as_array().and_then(|t| t.first()) {
            break t["id"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(frontend);
    let done = until(c.http(), running, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["status"], "abort");
    // The waiting task's cancellation is committed on its own schedule: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let (_, page) = get(c.http(), "/v1/tasks?state=CANCELLED").await;
        if page["tasks"].as_array().is_some_and(|t| !t.is_empty())
            || tokio::time::Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(get(c.http(), "/healthz").await.0, 200);
    drop(pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_queue_port_closes_only_that_connection() {
    let c = start(|_| {}).await;
    let mut bad = Peer::connect(c.queue()).await;
    bad.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(bad.recv().await, None);
    let mut good = Peer::connect(c.queue()).await;
    good.send_raw(br#"{"message":"register-pool","capacity":1}"#)
        .await;
    workers_in_state(c.http(), 1, "IDLE").await;
    assert_eq!(get(c.http(), "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_lost_mid_task_its_task_completes_on_another() {
    let c = start(|_| {}).await;
    let exec = host();
    let (first, first_handle, _d1) = spawn_worker(c.queue(), 1, exec.clone(), |_| {});
    workers_in_state(c.http(), 1, "IDLE").await;
    let id = submit(
        c.http(),
        json!({"command": ["sh", "-c", "sleep 0.5; echo finished"]}),
    )
    .await;
    let view = until(c.http(), id, "IN PROGRESS", |v| v["state"] == "IN PROGRESS").await;
    assert_eq!(view["worker"], first);
    first_handle.abort();
    let (second, _h2, _d2) = spawn_worker(c.queue(), 1, exec.clone(), |_| {});
    let done = until(c.http(), id, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["worker"], second);
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["stdout"], "finished\n");
    let workers = workers_in_state(c.http(), 1, "FAILED").await;
    let lost = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == first)
        .unwrap()
        .clone();
    assert_eq!(lost["state"], "FAILED");
    assert!(lost["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_lost_on_the_last_attempt_fails_the_task() {
    let c = start(|config| config.queue_config.max_attempts = 1).await;
    let (_w, handle, _d) = spawn_worker(c.queue(), 1, host(), |_| {});
    let id = submit(c.http(), json!({"command": ["sleep", "5"]})).await;
    until(c.http(), id, "IN PROGRESS", |v| v["state"] == "IN PROGRESS").await;
    handle.abort();
    let failed = until(c.http(), id, "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        failed["reason"].as_str().unwrap().contains("lost"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_worker_is_dropped_after_three_keepalive_intervals() {
    let c = start(|config| config.keepalive = Duration::from_millis(100)).await;
    let mut peer = Peer::connect(c.queue()).await;
    peer.send(&Message::Register(Register {
        id: "quiet".into(),
        capacity: 1,
        idle: true,
        ..Register::default()
    }))
    .await;
    peer.send(&Message::RegisterPool { capacity: 1 }).await;
    workers_in_state(c.http(), 1, "IDLE").await;
    let since = Instant::now();
    // The coordinator keeps sending keep-alives to it; it answers nothing.
    workers_in_state(c.http(), 1, "FAILED").await;
    let silent = since.elapsed();
    assert!(
        silent >= Duration::from_millis(250) && silent < Duration::from_secs(2),
        "{silent:?}"
    );
    // It sent keep-alives after an idle interval.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), peer.reader.next())
            .await
            .unwrap()
            .unwrap(),
        Some(Message::KeepAlive)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_is_idempotent_and_survives_reconnects() {
    let c = start(|_| {}).await;
    let register = |running: Vec<String>, finished: Vec<String>| {
        Message::Register(Register {
            id: "hand".into(),
            capacity: 1,
            running,
            finished,
            idle: true,
            ..Register::default()
        })
    };
    let mut w = Peer::connect(c.queue()).await;
    w.send(&register(vec![], vec![])).await;
    w.send(&Message::RegisterPool { capacity: 1 }).await;
    let id = submit(c.http(), json!({"command": ["echo", "x"]})).await;
    let Some(Message::RunTask(task)) = w.recv().await else {
        panic!("no launch")
    };
    assert_eq!(task.id, id.to_string());
    assert_eq!(
        task.spec.limits.output,
        Some(64 << 20),
        "defaults are resolved before launch"
    );
    // The connection drops with the task running; the worker comes back still running it.
    drop(w);
    let mut w = Peer::connect(c.queue()).await;
    w.send(&register(vec![id.to_string()], vec![])).await;
    w.send(&Message::RegisterPool { capacity: 1 }).await;
    let mut result = RunResult::crash(String::new());
    result.status = Status::Success;
    result.exit_code = Some(0);
    result.message = None;
    result.stdout = b"x\n".to_vec();
    let done = Message::Finished {
        id: id.to_string(),
        result: result.clone(),
    };
    w.send(&done).await;
    assert_eq!(w.recv().await, Some(Message::Ack { id: id.to_string() }));
    w.send(&done).await;
    assert_eq!(w.recv().await, Some(Message::Ack { id: id.to_string() }));
    let view = until(c.http(), id, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(view["attempts"], 1, "taken back, not run twice: {view}");
    assert_eq!(view["result"]["stdout"], "x\n");
    let (_, page) = get(c.http(), "/v1/tasks").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_coordinator_dispatches_what_was_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let first = Coordinator::start(config(dir.path())).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit(first.http_addr, json!({"command": ["echo", i.to_string()]})).await);
    }
    first.stop();
    let second = Coordinator::start(config(dir.path())).await.unwrap();
    let exec = Arc::new(InstantExecutorForBenchmarks);
    let (_w, _h, _d) = spawn_worker(second.queue_addr, 4, exec, |_| {});
    for id in &ids {
        until(second.http_addr, *id, "DONE", |v| v["state"] == "DONE").await;
    }
    let fresh = submit(second.http_addr, json!({"command": ["true"]})).await;
    assert!(
        fresh > *ids.last().unwrap(),
        "ids keep increasing across restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_when_configured() {
    let c = start(|config| config.require_tokens = true).await;
    let token = c.coordinator.join_token.clone();
    // A worker without the token is refused with a reason.
    let mut w = Peer::connect(c.queue()).await;
    w.send(&Message::Register(Register {
        id: "w".into(),
        capacity: 1,
        ..Register::default()
    }))
    .await;
    match w.recv().await {
        Some(Message::Refused { reason }) => assert!(reason.contains("token"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A plain pool cannot present one.
    let mut pool = Peer::connect(c.queue()).await;
    pool.send_raw(br#"{"message":"register-pool","capacity":1}"#)
        .await;
    assert!(matches!(pool.recv().await, Some(Message::Refused { .. })));
    // With it, the worker is accepted.
    let (_id, _h, _d) = spawn_worker(c.queue(), 1, host(), |config| {
        config.token = Some(token.clone())
    });
    // The API wants the bearer token.
    let (status, body) = request(c.http(), "GET", "/v1/workers", None, &[]).await;
    assert_eq!(status, 401, "{body}");
    let bearer = format!("Bearer {}", c.coordinator.api_token);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = request(
            c.http(),
            "GET",
            "/v1/workers",
            None,
            &[("Authorization", &bearer)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body.contains("IDLE") {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(c.http(), "/healthz").await.0, 200);
    let token_file = std::fs::metadata(c.dir.path().join("join-token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(token_file.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_valid_after_and_invalid_caps() {
    let c = start(|c| c.queue_config.invalid_after = Duration::from_millis(300)).await;
    let soon = warren_core::task::Timestamp::from_unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            + 200,
    );
    let expires = submit(
        c.http(),
        json!({"command": ["true"], "deadline": soon.to_string()}),
    )
    .await;
    let view = until(c.http(), expires, "TIMEOUT", |v| v["state"] == "TIMEOUT").await;
    assert!(view["reason"].as_str().unwrap().contains("deadline"));
    let later = submit(
        c.http(),
        json!({"command": ["true"], "valid_after": soon.plus_ms(300).to_string()}),
    )
    .await;
    let exec = host();
    let (_w, _h, _d) = spawn_worker(c.queue(), 2, exec, |config| {
        config.caps.insert("gpu".into(), "none".into());
    });
    workers_in_state(c.http(), 1, "IDLE").await;
    let started = Instant::now();
    let done = until(c.http(), later, "DONE", |v| v["state"] == "DONE").await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "started before valid_after: {done}"
    );
    let (status, invalid) = post(
        c.http(),
        "/v1/tasks",
        r#"{"command":["true"],"caps":{"gpu":"a100"}}"#,
    )
    .await;
    assert_eq!(status, 201);
    // WAITING through the grace period, for a worker that could run it, then INVALID.
    assert_eq!(invalid["state"], "WAITING");
    let id = invalid["id"].as_u64().unwrap();
    let view = until(c.http(), id, "INVALID", |v| v["state"] == "INVALID").await;
    assert!(
        view["reason"].as_str().unwrap().contains("gpu=a100"),
        "{view}"
    );
    let ok = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"gpu": "none", "os": "linux"}}),
    )
    .await;
    until(c.http(), ok, "DONE", |v| v["state"] == "DONE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn priority_orders_the_queue() {
    let c = start(|_| {}).await;
    let task = |priority: Option<u8>| json!({"command": ["sleep", "0.02"], "priority": priority});
    let low = submit(c.http(), task(Some(16))).await;
    let high = submit(c.http(), task(Some(1))).await;
    let mid = submit(c.http(), task(None)).await;
    let (_w, _h, _d) = spawn_worker(c.queue(), 1, host(), |_| {});
    let mut order = Vec::new();
    for id in [low, high, mid] {
        let v = until(c.http(), id, "DONE", |v| v["state"] == "DONE").await;
        order.push((v["started_at"].as_str().unwrap().to_string(), id));
    }
    order.sort();
    let ids: Vec<u64> = order.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, vec![high, mid, low]);
    let unique: HashSet<u64> = ids.into_iter().collect();
    assert_eq!(unique.len(), 3);
    let _ = Ordering::SeqCst;
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The whole path with the real sandbox: client -> coordinator -> worker -> sandbox -> back,
/// output streamed live, limits enforced, cancel aborting a sandboxed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandboxed_tasks_end_to_end() {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (namespaces, cgroups, mounts)");
        return;
    }
    let c = start(|_| {}).await;
    let sandbox = warren_sandbox::Sandbox::new(warren_sandbox::SandboxConfig::default()).unwrap();
    let exec = Arc::new(warren_worker::SandboxExecutor::new(sandbox, None, None));
    let (_w, _h, _d) = spawn_worker(c.queue(), 4, exec, |_| {});
    workers_in_state(c.http(), 1, "IDLE").await;
    let id = submit(
        c.http(),
        json!({"command": ["sh", "-c", "echo first; sleep 0.5; echo second >&2; exit 3"], "limits": {"wall_time": "10s"}}),
    )
    .await;
    let reader = tokio::spawn(sse(c.http(), id));
    // Live: the first line is there while the task still runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = request(
            c.http(),
            "GET",
            &format!("/v1/tasks/{id}/output?follow=false"),
            None,
            &[],
        )
        .await;
        let events = parse_sse(&now);
        if events
            .iter()
            .any(|(e, d)| e == "output" && d["text"] == "first\n")
        {
            assert!(
                events.iter().all(|(e, _)| e != "end"),
                "ended too early: {now}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no live output: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = reader.await.unwrap();
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(end["result"]["status"], "failed", "{end}");
    assert_eq!(end["result"]["exit_code"], 3);
    assert_eq!(end["result"]["stdout"], "first\n");
    assert_eq!(end["result"]["stderr"], "second\n");
    // A limit is enforced by the sandbox and reported through the queue.
    let (_, view) = post(
        c.http(),
        "/v1/tasks?wait=true",
        r#"{"command":["sleep","5"],"limits":{"wall_time":"200ms"}}"#,
    )
    .await;
    assert_eq!(view["result"]["status"], "timeout", "{view}");
    assert_eq!(view["result"]["limit_hit"], "wall_time");
    // Cancel aborts a sandboxed run.
    let long = submit(c.http(), json!({"command": ["sleep", "30"]})).await;
    until(c.http(), long, "IN PROGRESS", |v| {
        v["state"] == "IN PROGRESS"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(c.http(), &format!("/v1/tasks/{long}/cancel"), "").await;
    let done = until(c.http(), long, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["status"], "abort", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_environment_no_worker_offers_is_refused_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let first = Coordinator::start(config(dir.path())).await.unwrap();
    // No worker known yet: accepted, it may still come.
    let early = submit(
        first.http_addr,
        json!({"command": ["true"], "environment": "busybox"}),
    )
    .await;
    let envs = tempfile::tempdir().unwrap();
    std::fs::create_dir(envs.path().join("busybox")).unwrap();
    std::fs::write(envs.path().join("deb.sfs"), b"image").unwrap();
    let offered = envs.path().to_path_buf();
    let (_w, handle, _d) = spawn_worker(first.queue_addr, 2, host(), |config| {
        config.environments_dir = Some(offered);
    });
    let workers = workers_in_state(first.http_addr, 1, "IDLE").await;
    assert_eq!(
        workers["workers"][0]["environments"],
        json!(["host", "busybox", "deb"])
    );
    until(first.http_addr, early, "DONE", |v| v["state"] == "DONE").await;
    let refused = |addr, environment: &'static str| async move {
        let body = json!({"command": ["true"], "environment": environment}).to_string();
        post(addr, "/v1/tasks", &body).await
    };
    let (status, body) = refused(first.http_addr, "alpine").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "environment");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.ends_with("no worker offers environment `alpine`; offered: busybox, deb, host"),
        "{message}"
    );
    let (status, body) = refused(first.http_addr, "../etc").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("environment")));
    for environment in ["deb", "host"] {
        let id = submit(
            first.http_addr,
            json!({"command": ["true"], "environment": environment}),
        )
        .await;
        until(first.http_addr, id, "DONE", |v| v["state"] == "DONE").await;
    }
    // Known only from the store after a restart, the worker still decides what is offered.
    handle.abort();
    first.stop();
    let second = Coordinator::start(config(dir.path())).await.unwrap();
    let (status, body) = refused(second.http_addr, "alpine").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("environment")),
        "{body}"
    );
    let (status, body) = refused(second.http_addr, "busybox").await;
    assert_eq!(status, 201, "{body}");
}

/// Two workers connected, one offering environment `busybox` and one offering only `host`: every
/// task naming `busybox` runs on the first, even while it is busy and the other idles; a task
/// for `host` may go to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_naming_an_environment_go_only_to_workers_offering_it() {
    let c = start(|_| {}).await;
    let envs = tempfile::tempdir().unwrap();
    std::fs::create_dir(envs.path().join("busybox")).unwrap();
    let offered = envs.path().to_path_buf();
    let with_busybox = host();
    let (offering, _h1, _d1) = spawn_worker(c.queue(), 1, with_busybox.clone(), |config| {
        config.environments_dir = Some(offered);
    });
    let plain_executor = host();
    let (plain, _h2, _d2) = spawn_worker(c.queue(), 1, plain_executor.clone(), |_| {});
    let workers = workers_in_state(c.http(), 2, "IDLE").await;
    let offers = |id: &str| {
        workers["workers"]
            .as_array()
            .and_then(|all| all.iter().find(|w| w["id"] == id))
            .map(|w| w["environments"].clone())
    };
    assert_eq!(
        offers(&offering),
        Some(json!(["host", "busybox"])),
        "{workers}"
    );
    assert_eq!(offers(&plain), Some(json!(["host"])), "{workers}");

    // One slot each: the busybox tasks queue for the offering worker while the other is free.
    let mut busybox = Vec::new();
    for _ in 0..4 {
        busybox.push(
            submit(
                c.http(),
                json!({"command": ["sleep", "0.2"], "environment": "busybox"}),
            )
            .await,
        );
    }
    let on_host = submit(
        c.http(),
        json!({"command": ["true"], "environment": "host"}),
    )
    .await;
    let host_view = until(c.http(), on_host, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(host_view["worker"], json!(plain), "{host_view}");
    for id in busybox {
        let view = until(c.http(), id, "DONE", |v| v["state"] == "DONE").await;
        assert_eq!(view["result"]["status"], "success", "{view}");
        assert_eq!(view["worker"], json!(offering), "{view}");
    }
    assert_eq!(with_busybox.runs.load(Ordering::SeqCst), 4);
    assert_eq!(plain_executor.runs.load(Ordering::SeqCst), 1);
}

/// A worker that answers each launch at once races the dispatch that launched it: the store
/// must still see the dispatch before the end, or the task stays IN PROGRESS there for good
/// (and `GET` answers from the store once the end is committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instant_results_are_stored_after_their_dispatch() {
    const TASKS: u64 = 320;
    let c = start(|_| {}).await;
    let mut worker = hand_worker(c.queue(), "instant", 64, &[], true, false).await;
    let answering = tokio::spawn(async move {
        for _ in 0..TASKS {
            let id = next_launch(&mut worker).await;
            finish(&mut worker, id).await;
        }
        worker
    });
    let http = c.http();
    let submitters: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..TASKS / 8 {
                    ids.push(submit(http, json!({"command": ["true"]})).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in submitters {
        ids.extend(s.await.unwrap());
    }
    let _worker = answering.await.unwrap();
    for id in &ids {
        until(http, *id, "DONE", |v| v["state"] == "DONE").await;
    }
    // What the store holds, read through a connection of its own.
    use warren_coordinator::store::{Durability, SqliteStore, Store};
    let path = c.dir.path().join("warren.db");
    let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
    for id in &ids {
        let record = store.task(*id).unwrap().unwrap();
        assert_eq!(
            record.state,
            warren_core::task::TaskState::Done,
            "task {id} in the store"
        );
    }
}

/// A Pythia frontend's task starts before its insert is committed, so a worker can know an id
/// the store never got: a restarted coordinator never gives such an id out again, and a result
/// reported for it ends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_a_worker_may_know_are_never_given_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = Coordinator::start(config(dir.path())).await.unwrap();
    let stored = submit(first.http_addr, json!({"command": ["true"]})).await;
    first.stop();
    let second = Coordinator::start(config(dir.path())).await.unwrap();
    // A worker that ran the next id before the restart reports its result.
    let unstored = stored + 1;
    let mut peer = Peer::connect(second.queue_addr).await;
    peer.send(&Message::Register(Register {
        id: "knows-more".into(),
        capacity: 1,
        idle: true,
        finished: vec![unstored.to_string()],
        ..Register::default()
    }))
    .await;
    let mut result = RunResult::crash(String::new());
    result.status = Status::Success;
    result.message = None;
    peer.send(&Message::Finished {
        id: unstored.to_string(),
        result,
    })
    .await;
    let fresh = submit(second.http_addr, json!({"command": ["false"]})).await;
    assert!(fresh > unstored, "id {fresh} given out again");
    let (_, view) = get(second.http_addr, &format!("/v1/tasks/{fresh}")).await;
    assert_ne!(
        view["state"], "DONE",
        "ended by another task's result: {view}"
    );
    second.stop();
}
