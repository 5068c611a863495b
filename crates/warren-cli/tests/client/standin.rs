//! A coordinator stand-in for the client commands: it speaks the HTTP API as specified
//! it, on 127.0.0.1, and plays one scripted task per test.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_core::task::{OutputChunk, OutputStream};

/// How the scripted task behaves.
#[derive(Clone)]
pub struct Script {
    /// Output pushed as soon as a reader connects.
    pub output: Vec<(OutputStream, Vec<u8>)>,
    /// The task as `GET /v1/tasks/{id}` returns it once finished.
    pub finished: Value,
    /// Whether the task keeps running (and its output open) until it is cancelled; it then
    /// ends as `finished`.
    pub runs_until_cancelled: bool,
    /// The answer to `POST /v1/tasks` instead of 201 `{"id": 42}`.
    pub refuse_submit: Option<(StatusCode, Value)>,
}

/// What the stand-in saw.
#[derive(Default)]
pub struct Seen {
    /// Bodies of `POST /v1/tasks`.
    pub submitted: Vec<Value>,
    /// Query strings of every request, with its path.
    pub requests: Vec<String>,
    /// Number of `POST /v1/tasks/{id}/cancel`.
    pub cancels: u32,
}

#[derive(Clone)]
struct StandIn {
    script: Script,
    seen: Arc<Mutex<Seen>>,
    cancelled: watch::Sender<bool>,
}

/// The stand-in's address and what it saw.
pub struct Running {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
}

impl Running {
    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub const TASK_ID: u64 = 42;

/// A task view in `state`.
pub fn task(state: &str, result: Option<Value>, reason: Option<&str>) -> Value {
    json!({
        "id": TASK_ID,
        "state": state,
        "worker": "w1",
        "owner": "alice",
        "priority": 8,
        "created_at": "2026-11-22T11:05:32.123Z",
        "started_at": "2026-11-22T11:05:32.200Z",
        "finished_at": "2026-11-22T11:05:33.000Z",
        "attempts": 1,
        "reason": reason,
        "command": ["sh", "-c", "echo hi"],
        "result": result,
    })
}

/// A run result.
pub fn result(
    status: &str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    limit: Option<&str>,
) -> Value {
    json!({
        "status": status,
        "exit_code": exit_code,
        "signal": signal,
        "limit_hit": limit,
        "usage": {"wall_ms": 12, "cpu_user_ms": 1, "cpu_sys_ms": 2, "peak_memory_bytes": 2097152,
                  "peak_pids": 1, "output_bytes": 6},
        "stdout": "out\n",
        "stderr": "err\n",
        "stats": [],
    })
}

impl Script {
    /// A task that writes `out\n` to stdout and `err\n` to stderr and ends `finished`.
    pub fn finishing(finished: Value) -> Script {
        Script {
            output: vec![
                (OutputStream::Stdout, b"out\n".to_vec()),
                (OutputStream::Stderr, b"err\n".to_vec()),
            ],
            finished,
            runs_until_cancelled: false,
            refuse_submit: None,
        }
    }
}

/// Serves `script` on a fresh port of 127.0.0.1.
pub async fn start(script: Script) -> Running {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (cancelled, _) = watch::channel(false);
    let state = StandIn {
        script,
        seen: seen.clone(),
        cancelled,
    };
    let router = Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/{id}", get(view))
        .route("/v1/tasks/{id}/output", get(output))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/workers", get(workers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .with_state(state);
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind 127.0.0.1:0: {e}"),
    };
    let url = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => panic!("local_addr: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Running { url, seen }
}

async fn record(
    State(s): State<StandIn>,
    uri: Uri,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), uri);
    s.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(line);
    next.run(request).await
}

impl StandIn {
    fn current(&self) -> Value {
        if self.script.runs_until_cancelled && !*self.cancelled.borrow() {
            task("IN PROGRESS", None, None)
        } else {
            self.script.finished.clone()
        }
    }
}

async fn submit(
    State(s): State<StandIn>,
    Query(q): Query<Vec<(String, String)>>,
    Json(body): Json<Value>,
) -> Response {
    s.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .submitted
        .push(body);
    if let Some((status, body)) = &s.script.refuse_submit {
        return (*status, Json(body.clone())).into_response();
    }
    if q.iter().any(|(k, v)| k == "wait" && v == "true") {
        return Json(s.current()).into_response();
    }
    (StatusCode::CREATED, Json(json!({"id": TASK_ID}))).into_response()
}

async fn view(State(s): State<StandIn>, Path(id): Path<u64>) -> Response {
    if id != TASK_ID {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no task {id}")})),
        )
            .into_response();
    }
    Json(s.current()).into_response()
}

async fn output(State(s): State<StandIn>, Path(_id): Path<u64>) -> impl IntoResponse {
    let chunks: Vec<Result<Event, Infallible>> = s
        .script
        .output
        .iter()
        .map(|(stream, data)| {
            let chunk = OutputChunk::new(*stream, data);
            Ok(Event::default()
                .event("output")
                .data(serde_json::to_string(&chunk).unwrap_or_default()))
        })
        .collect();
    let wait_for_cancel = s.script.runs_until_cancelled;
    let mut cancelled = s.cancelled.subscribe();
    let end = futures_util::stream::once(async move {
        if wait_for_cancel {
            let _ = cancelled.wait_for(|c| *c).await;
        }
        Ok(Event::default().event("end").data("{}"))
    });
    use futures_util::StreamExt;
    Sse::new(futures_util::stream::iter(chunks).chain(end))
}

async fn cancel(State(s): State<StandIn>, Path(_id): Path<u64>) -> Response {
    s.seen.lock().unwrap_or_else(|p| p.into_inner()).cancels += 1;
    s.cancelled.send_replace(true);
    StatusCode::ACCEPTED.into_response()
}

async fn list(State(s): State<StandIn>) -> Response {
    Json(json!({"tasks": [s.current(), task("WAITING", None, None)], "next": "41"})).into_response()
}

async fn workers() -> Response {
    Json(json!([{
        "id": "w1", "state": "RUNNING", "capacity": 4, "running": 1, "memory_bytes": 8589934592u64,
        "milli_cpus": 4000, "caps": {"arch": "x86_64", "os": "linux"}, "environments": [],
        "address": "127.0.0.1:40000", "connected_at": "2026-11-22T11:00:00Z",
        "last_seen": "2026-11-22T11:05:00Z",
    }]))
    .into_response()
}
