//! The client over real sockets on 127.0.0.1: against a coordinator stand-in speaking the HTTP
//! API as specified (this file), and against the real coordinator (`real.rs`).

mod real;
mod util;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use warren_client::{Chunk, Client, Error, OutputStream, TaskQuery, TaskSpec, TaskState};
use warren_core::result::Status;
use warren_core::task::OutputChunk;

use util::{closed_port_url, result_json, serve, task_json};

/// Everything the stand-in saw, for the test to check.
#[derive(Default)]
struct Seen {
    bodies: Vec<serde_json::Value>,
    queries: Vec<String>,
    auth: Vec<Option<String>>,
    waits: u32,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn client_of(router: Router) -> Client {
    let url = serve(router).await;
    match Client::new(&url) {
        Ok(client) => client,
        Err(e) => panic!("Client::new({url}): {e}"),
    }
}

#[tokio::test]
async fn submit_posts_the_spec_and_returns_the_id() {
    let seen = Shared::default();
    let router = Router::new()
        .route(
            "/v1/tasks",
            post(
                |State(seen): State<Shared>,
                 headers: HeaderMap,
                 Json(body): Json<serde_json::Value>| async move {
                    let mut s = lock(&seen);
                    s.bodies.push(body);
                    s.auth.push(
                        headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    );
                    (
                        StatusCode::CREATED,
                        Json(serde_json::json!({"id": 42, "state": "WAITING"})),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let client = client_of(router).await.with_token("s3cret");
    let mut spec = TaskSpec {
        command: vec!["echo".into(), "hi".into()],
        ..TaskSpec::default()
    };
    spec.limits.memory = Some(64 << 20);
    spec.limits.wall_time = Some(Duration::from_millis(1500));
    spec.priority = Some(3);
    spec.env.insert("A".into(), "b".into());
    let id = client.submit(&spec).await;
    assert_eq!(id.ok(), Some(42));
    let s = lock(&seen);
    assert_eq!(s.bodies.len(), 1);
    let body = &s.bodies[0];
    assert_eq!(body["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(body["limits"]["memory"], 64 << 20);
    assert_eq!(body["limits"]["wall_time"], 1500);
    assert_eq!(body["priority"], 3);
    assert_eq!(body["env"]["A"], "b");
    // What the client sends is what the coordinator accepts.
    let back: Result<TaskSpec, _> = serde_json::from_value(body.clone());
    assert_eq!(back.ok(), Some(spec));
    assert_eq!(s.auth, vec![Some("Bearer s3cret".to_string())]);
}

#[tokio::test]
async fn task_and_wait_decode_the_view_and_wait_past_the_bounded_wait() {
    let seen = Shared::default();
    let router = Router::new()
        .route(
            "/v1/tasks/{id}",
            get(
                |State(seen): State<Shared>,
                 Path(id): Path<u64>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let mut s = lock(&seen);
                    if q.get("wait").map(String::as_str) != Some("true") {
                        return Json(task_json(id, "IN PROGRESS", None));
                    }
                    s.waits += 1;
                    // The coordinator's wait is bounded: the first two answer still running.
                    if s.waits < 3 {
                        Json(task_json(id, "IN PROGRESS", None))
                    } else {
                        Json(task_json(id, "DONE", Some(result_json("failed", Some(3)))))
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let client = client_of(router).await;
    let view = client.task(7).await;
    let view = match view {
        Ok(view) => view,
        Err(e) => panic!("task: {e}"),
    };
    assert_eq!(
        (view.id, view.state, view.result.is_none()),
        (7, TaskState::InProgress, true)
    );
    assert_eq!(lock(&seen).waits, 0);

    let done = match client.wait(7).await {
        Ok(view) => view,
        Err(e) => panic!("wait: {e}"),
    };
    assert_eq!(done.state, TaskState::Done);
    assert_eq!(lock(&seen).waits, 3);
    let result = done.result.as_ref();
    assert_eq!(result.map(|r| r.status), Some(Status::Failed));
    assert_eq!(result.map(|r| r.process_exit_code()), Some(3));
    assert_eq!(result.map(|r| r.stdout.clone()), Some(b"hi\n".to_vec()));
}

#[tokio::test]
async fn submit_and_wait_uses_the_wait_parameter() {
    let router = Router::new().route(
        "/v1/tasks",
        post(
            |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                if q.get("wait").map(String::as_str) == Some("true") {
                    (
                        StatusCode::OK,
                        Json(task_json(5, "DONE", Some(result_json("success", Some(0))))),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({"error": "expected wait=true"})),
                    )
                }
            },
        ),
    );
    let client = client_of(router).await;
    let spec = TaskSpec {
        command: vec!["true".into()],
        ..TaskSpec::default()
    };
    let view = client
        .submit_and_wait(&spec)
        .await
        .map_err(|e| e.to_string());
    assert_eq!(view.map(|v| (v.id, v.state)), Ok((5, TaskState::Done)));
}

fn sse_event(chunk: &OutputChunk) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event("output")
        .data(serde_json::to_string(chunk).unwrap_or_default()))
}

/// The next chunk, failing the test when none comes within 10 s.
async fn next(output: &mut warren_client::Output) -> Option<Chunk> {
    match tokio::time::timeout(Duration::from_secs(10), output.next()).await {
        Ok(Ok(chunk)) => chunk,
        Ok(Err(e)) => panic!("next: {e}"),
        Err(_) => panic!("no chunk within 10 s"),
    }
}

#[tokio::test]
async fn output_is_delivered_live_and_binary_safe_and_ends_with_the_task() {
    // The test decides when each chunk is pushed, so a chunk that only arrives when the stream
    // ends would hang the test instead of passing it.
    let (push, pushed) = tokio::sync::mpsc::unbounded_channel::<Option<OutputChunk>>();
    let pushed = Arc::new(tokio::sync::Mutex::new(Some(pushed)));
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(move || {
            let pushed = pushed.clone();
            async move {
                let receiver = pushed.lock().await.take();
                let stream = futures_util::stream::unfold(receiver, |receiver| async move {
                    let mut receiver = receiver?;
                    match receiver.recv().await {
                        Some(Some(chunk)) => Some((sse_event(&chunk), Some(receiver))),
                        Some(None) => {
                            Some((Ok(Event::default().event("end").data("{}")), Some(receiver)))
                        }
                        None => None,
                    }
                });
                Sse::new(stream)
            }
        }),
    );
    let client = client_of(router).await;
    let mut output = match client.output(1).await {
        Ok(output) => output,
        Err(e) => panic!("output: {e}"),
    };
    let _ = push.send(Some(OutputChunk::new(OutputStream::Stdout, b"first\n")));
    assert_eq!(
        next(&mut output).await,
        Some(Chunk {
            stream: OutputStream::Stdout,
            data: b"first\n".to_vec()
        })
    );
    let binary = vec![0xff, 0x00, b'x', 0xc3];
    let _ = push.send(Some(OutputChunk::new(OutputStream::Stderr, &binary)));
    assert_eq!(
        next(&mut output).await,
        Some(Chunk {
            stream: OutputStream::Stderr,
            data: binary
        })
    );
    // The end event finishes the output even though the connection stays open.
    let _ = push.send(None);
    assert_eq!(next(&mut output).await, None);
    assert_eq!(next(&mut output).await, None);
}

#[tokio::test]
async fn output_as_json_lines_is_understood_too() {
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(|| async {
            let lines = [
                OutputChunk::new(OutputStream::Stdout, b"a"),
                OutputChunk::new(OutputStream::Stderr, b"b\n"),
            ]
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
            ([("content-type", "application/x-ndjson")], lines)
        }),
    );
    let client = client_of(router).await;
    let chunks = match client.output(1).await {
        Ok(output) => output.collect().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(
        chunks,
        Ok(vec![
            Chunk {
                stream: OutputStream::Stdout,
                data: b"a".to_vec()
            },
            Chunk {
                stream: OutputStream::Stderr,
                data: b"b\n".to_vec()
            },
        ])
    );
}

#[tokio::test]
async fn a_broken_output_chunk_is_a_protocol_error() {
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(|| async {
            let events = vec![Ok::<_, Infallible>(
                Event::default().event("output").data("{not json"),
            )];
            Sse::new(futures_util::stream::iter(events))
        }),
    );
    let client = client_of(router).await;
    let result = match client.output(1).await {
        Ok(output) => output.collect().await,
        Err(e) => Err(e),
    };
    assert!(matches!(result, Err(Error::Protocol { .. })), "{result:?}");
}

#[tokio::test]
async fn refusals_carry_the_coordinators_message() {
    let router = Router::new()
        .route(
            "/v1/tasks",
            post(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"error": "1K is outside 1M..16T", "field": "limits.memory"})),
                )
            }),
        )
        .route("/v1/tasks/{id}", get(|| async { (StatusCode::NOT_FOUND, "no task 9\n") }))
        .route(
            "/v1/tasks/{id}/cancel",
            post(|| async {
                (StatusCode::CONFLICT, Json(serde_json::json!({"error": "the task is DONE: cancel does not apply"})))
            }),
        );
    let client = client_of(router).await;
    let spec = TaskSpec {
        command: vec!["true".into()],
        ..TaskSpec::default()
    };
    let err = client.submit(&spec).await.err();
    assert_eq!(err.as_ref().and_then(Error::status), Some(400));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("`limits.memory`: 1K is outside 1M..16T"),
        "{text}"
    );
    assert!(text.contains("POST /v1/tasks"), "{text}");

    let err = client.task(9).await.err();
    assert_eq!(err.as_ref().and_then(Error::status), Some(404));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("no task 9"), "{text}");

    let err = client
        .cancel(9)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("409") && err.contains("cancel does not apply"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_coordinator_is_named() {
    let url = closed_port_url().await;
    let client = match Client::new(&url) {
        Ok(client) => client,
        Err(e) => panic!("{e}"),
    };
    let err = client.task(1).await.err();
    assert!(err.as_ref().is_some_and(Error::is_unreachable), "{err:?}");
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains(&url) && text.contains("cannot reach"),
        "{text}"
    );
}

#[tokio::test]
async fn garbage_answers_are_protocol_errors() {
    let router = Router::new().route(
        "/v1/tasks/{id}",
        get(|| async { "<html>proxy error</html>" }),
    );
    let client = client_of(router).await;
    let err = client.task(1).await.err();
    assert!(matches!(err, Some(Error::Protocol { .. })), "{err:?}");
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("proxy error"), "{text}");
}

#[tokio::test]
async fn listings_pass_filters_and_decode_pages() {
    let seen = Shared::default();
    let worker = serde_json::json!({
        "id": "w1", "state": "IDLE", "capacity": 4, "running": 0, "memory_bytes": 1073741824u64,
        "milli_cpus": 4000, "caps": {"arch": "x86_64"}, "environments": [], "address": "127.0.0.1:5000",
        "connected_at": "2026-11-22T11:00:00Z", "last_seen": "2026-11-22T11:05:00Z",
    });
    let bare = Router::new()
        .route(
            "/v1/tasks",
            get(
                |State(seen): State<Shared>, uri: axum::http::Uri| async move {
                    lock(&seen)
                        .queries
                        .push(uri.query().unwrap_or_default().to_string());
                    Json(serde_json::json!({"tasks": [task_json(3, "WAITING", None)], "next": "3"}))
                },
            ),
        )
        .route(
            "/v1/workers",
            get({
                let worker = worker.clone();
                || async move { Json(serde_json::json!([worker])) }
            }),
        )
        .with_state(seen.clone());
    let client = client_of(bare).await;
    let query = TaskQuery {
        state: Some(TaskState::InProgress),
        worker: Some("w1".into()),
        limit: Some(10),
        ..TaskQuery::default()
    };
    let page = client.tasks(&query).await.map_err(|e| e.to_string());
    assert_eq!(
        page.as_ref().map(|p| (p.tasks.len(), p.next.clone())),
        Ok((1, Some("3".into())))
    );
    assert_eq!(
        lock(&seen).queries,
        vec!["state=IN+PROGRESS&worker=w1&limit=10".to_string()]
    );
    let workers = client.workers().await.map_err(|e| e.to_string());
    assert_eq!(
        workers.map(|w| w.iter().map(|w| w.id.clone()).collect::<Vec<_>>()),
        Ok(vec!["w1".to_string()])
    );

    let wrapped = Router::new().route(
        "/v1/workers",
        get(move || {
            let worker = worker.clone();
            async move { Json(serde_json::json!({"workers": [worker]})) }
        }),
    );
    let client = client_of(wrapped).await;
    assert_eq!(client.workers().await.map(|w| w.len()).ok(), Some(1));
}

#[tokio::test]
async fn a_path_prefix_in_the_url_is_kept() {
    let router = Router::new()
        .route("/warren/healthz", get(|| async { "ok" }))
        .route(
            "/warren/v1/version",
            get(|| async { Json(serde_json::json!({"version": "0.1.0"})) }),
        );
    let url = serve(router).await;
    let client = match Client::new(&format!("{url}/warren")) {
        Ok(client) => client,
        Err(e) => panic!("{e}"),
    };
    assert!(client.health().await.is_ok());
    assert_eq!(
        client.version().await.ok().map(|v| v["version"].clone()),
        Some(serde_json::json!("0.1.0"))
    );
    // Without the prefix the same coordinator answers 404, which is an error.
    let bare = Client::new(&url).map_err(|e| e.to_string());
    let health = match bare {
        Ok(client) => client.health().await.err().and_then(|e| e.status()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(health, Some(404));
}

#[tokio::test]
async fn output_streams_to_several_readers_independently() {
    // Two readers of the same task each get the whole output (the coordinator replays it).
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(|| async {
            let events = ["one ", "two"]
                .iter()
                .map(|t| sse_event(&OutputChunk::new(OutputStream::Stdout, t.as_bytes())))
                .collect::<Vec<_>>();
            Sse::new(
                futures_util::stream::iter(events).chain(futures_util::stream::once(async {
                    Ok(Event::default().event("end").data("{}"))
                })),
            )
            .into_response()
        }),
    );
    let client = client_of(router).await;
    let (a, b) = tokio::join!(client.output(2), client.output(2));
    for output in [a, b] {
        let chunks = match output {
            Ok(output) => output.collect().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let text: Result<Vec<u8>, String> =
            chunks.map(|c| c.into_iter().flat_map(|c| c.data).collect());
        assert_eq!(text, Ok(b"one two".to_vec()));
    }
}

#[tokio::test]
async fn a_broken_output_stream_is_reopened_without_repeating_or_losing_bytes() {
    let connections = Arc::new(Mutex::new(0u32));
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(move || {
            let connections = connections.clone();
            async move {
                let n = {
                    let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
                    *c += 1;
                    *c
                };
                let chunk = |stream, data: &[u8]| {
                    Ok::<_, std::io::Error>(Event::default().event("output").data(
                        serde_json::to_string(&OutputChunk::new(stream, data)).unwrap_or_default(),
                    ))
                };
                if n == 1 {
                    // The first connection breaks after two chunks have gone out.
                    let events = vec![
                        chunk(OutputStream::Stdout, b"ab"),
                        chunk(OutputStream::Stderr, b"X"),
                    ];
                    let broken = futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(std::io::Error::other("coordinator went away"))
                    });
                    return Sse::new(futures_util::stream::iter(events).chain(broken).boxed());
                }
                let events = {
                    // The coordinator replays from the first byte, cut differently.
                    vec![
                        chunk(OutputStream::Stdout, b"abcd"),
                        chunk(OutputStream::Stderr, b"XY"),
                        chunk(OutputStream::Stdout, b"e"),
                        Ok(Event::default().event("end").data("{}")),
                    ]
                };
                Sse::new(futures_util::stream::iter(events).boxed())
            }
        }),
    );
    let client = client_of(router).await;
    let chunks = match client.output(1).await {
        Ok(output) => output.collect().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let chunk = |stream, data: &[u8]| Chunk {
        stream,
        data: data.to_vec(),
    };
    assert_eq!(
        chunks,
        Ok(vec![
            chunk(OutputStream::Stdout, b"ab"),
            chunk(OutputStream::Stderr, b"X"),
            chunk(OutputStream::Stdout, b"cd"),
            chunk(OutputStream::Stderr, b"Y"),
            chunk(OutputStream::Stdout, b"e"),
        ])
    );
}

#[tokio::test]
async fn wait_rides_out_a_restarting_coordinator_but_not_a_refusal() {
    let answers = Arc::new(Mutex::new(0u32));
    let router = Router::new()
        .route(
            "/v1/tasks/1",
            get(move || {
                let answers = answers.clone();
                async move {
                    let n = {
                        let mut a = answers.lock().unwrap_or_else(|p| p.into_inner());
                        *a += 1;
                        *a
                    };
                    if n <= 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
                    } else {
                        Json(task_json(1, "DONE", Some(result_json("success", Some(0)))))
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/v1/tasks/2",
            get(|| async { (StatusCode::NOT_FOUND, "no task 2") }),
        );
    let client = client_of(router).await;
    let done = client
        .wait(1)
        .await
        .map(|v| v.state)
        .map_err(|e| e.to_string());
    assert_eq!(done, Ok(TaskState::Done));
    let started = std::time::Instant::now();
    let refused = client.wait(2).await.err().and_then(|e| e.status());
    assert_eq!(refused, Some(404));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_end_event_carries_the_finished_task() {
    let router = Router::new().route(
        "/v1/tasks/{id}/output",
        get(|| async {
            let view = task_json(3, "DONE", Some(result_json("failed", Some(4))));
            let events = vec![
                sse_event(&OutputChunk::new(OutputStream::Stdout, b"x")),
                Ok(Event::default().event("stats").data(r#"{"t_ms":1}"#)),
                Ok(Event::default().event("end").data(view.to_string())),
            ];
            Sse::new(futures_util::stream::iter(events))
        }),
    );
    let client = client_of(router).await;
    let mut output = match client.output(3).await {
        Ok(output) => output,
        Err(e) => panic!("{e}"),
    };
    assert!(output.finished().is_none());
    assert_eq!(next(&mut output).await.map(|c| c.data), Some(b"x".to_vec()));
    assert_eq!(next(&mut output).await, None);
    let finished = output.finished().map(|t| {
        (
            t.id,
            t.state,
            t.result.as_ref().map(|r| r.process_exit_code()),
        )
    });
    assert_eq!(finished, Some((3, TaskState::Done, Some(4))));
}

#[tokio::test]
async fn a_submission_cut_off_is_sent_again_with_the_same_idempotency_key() {
    let keys = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = keys.clone();
    let router = Router::new().route(
        "/v1/tasks",
        post(move |headers: HeaderMap| {
            let keys = seen.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let first = {
                    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
                    keys.push(key);
                    keys.len() == 1
                };
                if first {
                    // The connection breaks before an answer goes out.
                    let broken = futures_util::stream::once(async {
                        Err::<axum::body::Bytes, _>(std::io::Error::other("coordinator killed"))
                    });
                    return axum::body::Body::from_stream(broken).into_response();
                }
                (StatusCode::OK, Json(task_json(8, "WAITING", None))).into_response()
            }
        }),
    );
    let client = client_of(router).await;
    let spec = TaskSpec {
        command: vec!["true".into()],
        ..TaskSpec::default()
    };
    let id = client.submit(&spec).await.map_err(|e| e.to_string());
    assert_eq!(id, Ok(8));
    let _ = client.submit(&spec).await;
    let keys = keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(!keys[0].is_empty() && keys[0] == keys[1], "{keys:?}");
    // A new submission gets a new key.
    assert_ne!(keys[1], keys[2]);
}

#[tokio::test]
async fn a_coordinator_that_is_down_is_reported_at_once() {
    let url = closed_port_url().await;
    let client = match Client::new(&url) {
        Ok(client) => client,
        Err(e) => panic!("{e}"),
    };
    let started = std::time::Instant::now();
    let spec = TaskSpec {
        command: vec!["true".into()],
        ..TaskSpec::default()
    };
    let err = client.submit(&spec).await.err();
    assert!(
        matches!(err, Some(Error::Unreachable { sent: false, .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
