//! The HTTP API. Handlers only parse, call the [`Service`], and map errors.
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/v1/tasks` (`?wait=true&timeout=30s`, header `Idempotency-Key`; a task spec, or `{"pythia_task", "input"}`) | 201 + task view (200 + finished view with `wait`; 200 + the first task for a repeated key) |
//! | GET | `/v1/tasks` (filters `?ids=&state=&priority=&owner=&worker=&groups=&caps=k=v,...`; `sort=id\|priority\|deadline\|valid_after\|state`, `order=asc\|desc`; `after=ID` or `before=ID`, `limit=` up to 65535) | `{"tasks": [...], "next": cursor, "total", "remaining"}` |
//! | GET | `/v1/tasks/{id}` (`?wait=true&timeout=`) | task view |
//! | PATCH | `/v1/tasks/{id}` (`{"priority", "valid_after", "deadline", "caps"}`, any of them) | task view; 409 unless WAITING |
//! | GET | `/v1/tasks/{id}/output` (`?follow=false`: what is there now, then close) | server-sent events: `output` ([`OutputChunk`]), `stats` ([`StatSample`]), then one `end` (task view) |
//! | POST | `/v1/tasks/{id}/cancel` | task view |
//! | GET | `/v1/workers` (`?ids=&state=&groups=&caps=&sort=id\|state&order=&after=&before=&limit=`) | `{"workers": [...], "next", "total", "remaining"}` |
//! | GET | `/v1/workers/{id}` | worker view |
//! | PUT | `/v1/workers/{id}/state` (`{"state": "IDLE"\|"MAINTENANCE", "message"?}`) | worker view; 409 naming the current and allowed states |
//! | PUT | `/v1/workers/{id}/groups` (`{"groups": [...]}`) | worker view |
//! | DELETE | `/v1/workers/{id}` (only in MAINTENANCE or FAILED) | 204 |
//! | GET | `/healthz`, `/v1/version` | status |
//! | | `/execute`, `/api/...` | Pythia's HTTP frontends ([`crate::pythia_http`]) |
//!
//! Errors are JSON `{"error": message, "field": name-or-null}` with a 4xx status naming the field,
//! or 500 with a generic message (the real one is logged).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use warren_core::task::{
    FieldError, OutputChunk, SetWorkerGroups, SetWorkerState, TaskId, TaskPage, TaskSpec,
    TaskState, TaskUpdate, TaskView, WorkerPage, WorkerView,
};
use warren_core::units::parse_duration;

use crate::hub::HubEvent;
use crate::service::{
    OutputSource, Service, ServiceError, WorkerPaginator, WorkerQuery, WorkerSort,
};
use crate::store::{ListQuery, Paginator, SortKey};

/// What the API's handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The queue.
    pub service: Arc<Service>,
    /// Bearer token API clients must present; `None` on loopback-only listeners.
    pub token: Option<Arc<str>>,
    /// Largest request body.
    pub max_body: usize,
    /// Longest `?wait=true`.
    pub max_wait: Duration,
    /// Pythia's HTTP frontends (`/execute`, `/api/...`).
    pub pythia: Arc<crate::pythia_http::PythiaFrontends>,
}

/// An API error: status, message, and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with any status.
    pub(crate) fn new(
        status: StatusCode,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: field.map(String::from),
        }
    }

    /// The `{"error", "field"}` body.
    pub(crate) fn body_json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: &self.message,
            field: self.field.as_deref(),
        })
        .unwrap_or_default()
    }

    /// A 400 naming `field`.
    pub(crate) fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            field: self.field.as_deref(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Field(f) => ApiError::bad(f.field.clone(), f.to_string()),
            ServiceError::NotFound(_) | ServiceError::NoWorker(_) => ApiError {
                status: StatusCode::NOT_FOUND,
                message: e.to_string(),
                field: None,
            },
            ServiceError::Conflict(_) => ApiError {
                status: StatusCode::CONFLICT,
                message: e.to_string(),
                field: None,
            },
            ServiceError::QueueFull(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                field: None,
            },
            ServiceError::Store(detail) => {
                tracing::error!("store error answering a request: {detail}");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error".into(),
                    field: None,
                }
            }
        }
    }
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let max_body = state.max_body;
    let v1 = Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/{id}", get(task).patch(update))
        .route("/v1/tasks/{id}/output", get(output))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/workers", get(workers))
        .merge(crate::pythia_http::routes())
        .route("/v1/workers/{id}", get(worker).delete(deregister))
        .route("/v1/workers/{id}/state", put(set_worker_state))
        .route("/v1/workers/{id}/groups", put(set_worker_groups))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/version", get(version))
        .merge(crate::pythia_http::open_routes())
        .merge(crate::dashboard::routes())
        .merge(v1)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_none_or(|p| !constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "a valid bearer token is required (Authorization: Bearer <token from DATA_DIR/api-token>)"
                    .into(),
                field: Some("Authorization".into()),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        field: None,
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "api": "v1" }))
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad("id", format!("`{raw}` is not a task id")))
}

/// Reads `?wait=true&timeout=...`.
fn wait_param(
    params: &HashMap<String, String>,
    max: Duration,
) -> Result<Option<Duration>, ApiError> {
    let wait = match params.get("wait").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "wait",
                format!("`{other}` is not true or false"),
            ))
        }
    };
    if !wait {
        return Ok(None);
    }
    let timeout = match params.get("timeout") {
        Some(t) => parse_duration(t).map_err(|e| ApiError::bad("timeout", e.to_string()))?,
        None => max,
    };
    Ok(Some(timeout.min(max)))
}

pub(crate) fn parse_spec(body: &[u8]) -> Result<TaskSpec, ApiError> {
    parse_body(body, "the task")
}

/// A JSON body, errors naming the field.
fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" {
            unknown_field(&inner.to_string()).unwrap_or_else(|| "body".into())
        } else {
            path
        };
        ApiError::bad(field.clone(), format!("`{field}`: {inner}"))
    })?;
    de.end()
        .map_err(|e| ApiError::bad("body", format!("trailing data after {what}: {e}")))?;
    Ok(value)
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

async fn submit(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status,
                message: format!("the body is larger than {} bytes", state.max_body),
                field: Some("body".into()),
            }
        } else {
            ApiError {
                status,
                message: e.body_text(),
                field: Some("body".into()),
            }
        }
    })?;
    let wait = wait_param(&params, state.max_wait)?;
    let spec = crate::pythia_http::parse_task_body(&body)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad("Idempotency-Key", "must be visible ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let (view, created) = state.service.submit_once(spec, "local".into(), key).await?;
    match wait {
        Some(timeout) => {
            let view = state.service.wait(view.id, timeout).await?;
            Ok((StatusCode::OK, Json(view)).into_response())
        }
        // A repeated key answers 200 with the task it made the first time.
        None if !created => Ok((StatusCode::OK, Json(view)).into_response()),
        None => Ok((StatusCode::CREATED, Json(view)).into_response()),
    }
}

async fn task(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&id)?;
    let view = match wait_param(&params, state.max_wait)? {
        Some(timeout) => state.service.wait(id, timeout).await?,
        None => state.service.task(id).await?,
    };
    Ok(Json(view))
}

async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(state.service.cancel(task_id(&id)?).await?))
}

/// A comma-separated list parameter (repeatable items, empty items ignored).
fn list_param<T>(
    params: &HashMap<String, String>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse(item).map_err(|problem| ApiError::bad(name, problem)))
        .collect()
}

fn caps_param(
    params: &HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    list_param(params, "caps", |pair| match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('"') => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{pair}` is not key=value")),
    })
    .map(|pairs| pairs.into_iter().collect())
}

/// `order=asc|desc` and `limit=` (1..=65535, 100 by default).
/// The `sort` parameter: `default` when absent, a 400 naming the known keys when unknown.
fn sort_key<K>(
    params: &HashMap<String, String>,
    default: K,
    parse: impl Fn(&str) -> Option<K>,
    names: &[&str],
) -> Result<K, ApiError> {
    match params.get("sort") {
        None => Ok(default),
        Some(name) => parse(name).ok_or_else(|| {
            ApiError::bad(
                "sort",
                format!("unknown sort key `{name}` (known: {})", names.join(", ")),
            )
        }),
    }
}

fn order_and_limit(
    params: &HashMap<String, String>,
    ascending_default: bool,
) -> Result<(bool, u32), ApiError> {
    let ascending = match params.get("order").map(String::as_str) {
        None => ascending_default,
        Some("desc") => false,
        Some("asc") => true,
        Some(o) => return Err(ApiError::bad("order", format!("`{o}` is not asc or desc"))),
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=65_535).contains(l))
            .ok_or_else(|| ApiError::bad("limit", format!("`{l}` is not a number in 1..65535")))?,
    };
    Ok((ascending, limit))
}

fn check_known(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad(
            unknown.clone(),
            format!(
                "unknown parameter `{unknown}` (known: {})",
                known.join(", ")
            ),
        ));
    }
    if params.contains_key("after") && params.contains_key("before") {
        return Err(ApiError::bad(
            "before",
            "give `after` or `before`, not both",
        ));
    }
    Ok(())
}

async fn workers(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<WorkerPage>, ApiError> {
    const KNOWN: [&str; 9] = [
        "ids", "state", "groups", "caps", "sort", "order", "after", "before", "limit",
    ];
    check_known(&params, &KNOWN)?;
    let (ascending, limit) = order_and_limit(&params, true)?;
    let sort = sort_key(
        &params,
        WorkerSort::Id,
        WorkerSort::parse,
        &WorkerSort::NAMES,
    )?;
    let paginator = match (params.get("after"), params.get("before")) {
        (Some(id), _) => Some(WorkerPaginator::After(id.clone())),
        (None, Some(id)) => Some(WorkerPaginator::Before(id.clone())),
        (None, None) => None,
    };
    let query = WorkerQuery {
        ids: list_param(&params, "ids", |id| Ok(id.to_string()))?,
        states: list_param(&params, "state", |s| {
            s.parse().map_err(|e: FieldError| e.problem)
        })?,
        groups: list_param(&params, "groups", |g| Ok(g.to_string()))?,
        caps: caps_param(&params)?,
        sort,
        ascending,
        paginator,
        limit,
    };
    let (workers, total, remaining): (Vec<WorkerView>, u64, u64) =
        state.service.worker_page(&query)?;
    let next = (remaining > 0)
        .then(|| workers.last().map(|w| w.id.clone()))
        .flatten();
    Ok(Json(WorkerPage {
        workers,
        next,
        total,
        remaining,
    }))
}

async fn worker(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerView>, ApiError> {
    Ok(Json(state.service.worker(&id)?))
}

async fn set_worker_state(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WorkerView>, ApiError> {
    let request: SetWorkerState = parse_body(&body, "the state")?;
    Ok(Json(state.service.set_worker_state(
        &id,
        request.state,
        request.message,
    )?))
}

async fn set_worker_groups(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WorkerView>, ApiError> {
    let request: SetWorkerGroups = parse_body(&body, "the groups")?;
    Ok(Json(state.service.set_worker_groups(&id, request.groups)?))
}

async fn deregister(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.deregister_worker(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&id)?;
    let update: TaskUpdate = parse_body(&body, "the update")?;
    Ok(Json(state.service.update(id, update).await?))
}

async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<TaskPage>, ApiError> {
    const KNOWN: [&str; 12] = [
        "ids", "state", "priority", "owner", "worker", "groups", "caps", "sort", "order", "after",
        "before", "limit",
    ];
    check_known(&params, &KNOWN)?;
    // Newest first unless asked otherwise, as before sorting existed.
    let (ascending, limit) = order_and_limit(&params, false)?;
    let sort = sort_key(&params, SortKey::Id, SortKey::parse, &SortKey::NAMES)?;
    let id_param = |name: &str| -> Result<Option<TaskId>, ApiError> {
        params
            .get(name)
            .map(|a| {
                a.parse()
                    .map_err(|_| ApiError::bad(name, format!("`{a}` is not a task id")))
            })
            .transpose()
    };
    let paginator = match (id_param("after")?, id_param("before")?) {
        (Some(id), _) => Some(Paginator::After(id)),
        (None, Some(id)) => Some(Paginator::Before(id)),
        (None, None) => None,
    };
    let query = ListQuery {
        ids: list_param(&params, "ids", |id| {
            id.parse().map_err(|_| format!("`{id}` is not a task id"))
        })?,
        states: list_param(&params, "state", |s| {
            s.parse::<TaskState>().map_err(|e| e.problem)
        })?,
        priorities: list_param(&params, "priority", |p| {
            p.parse::<u8>()
                .ok()
                .filter(|p| (1..=16).contains(p))
                .ok_or_else(|| format!("`{p}` is not a priority in 1..16"))
        })?,
        owner: params.get("owner").cloned(),
        worker: params.get("worker").cloned(),
        groups: list_param(&params, "groups", |g| Ok(g.to_string()))?,
        caps: caps_param(&params)?,
        sort,
        ascending,
        paginator,
        limit,
    };
    let (tasks, total, remaining) = state.service.list(query).await?;
    let next = (remaining > 0 && !matches!(paginator, Some(Paginator::Before(_))))
        .then(|| tasks.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(TaskPage {
        tasks,
        next,
        total,
        remaining,
    }))
}

fn output_event(event: &HubEvent) -> Event {
    match event {
        HubEvent::Output(stream, data) => {
            let chunk = OutputChunk::new(*stream, data);
            Event::default()
                .event("output")
                .data(serde_json::to_string(&chunk).unwrap_or_default())
        }
        HubEvent::Stats(sample) => Event::default()
            .event("stats")
            .data(serde_json::to_string(sample).unwrap_or_default()),
    }
}

fn end_event(view: &TaskView) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::to_string(view).unwrap_or_default())
}

async fn output(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = task_id(&id)?;
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(ApiError::bad(
                "follow",
                format!("`{other}` is not true or false"),
            ))
        }
    };
    let source = state.service.output(id).await?;
    enum Cursor {
        Live {
            hub: Arc<crate::hub::Hub>,
            rx: tokio::sync::watch::Receiver<u64>,
            next: usize,
        },
        Replay(Vec<Event>),
        Done,
    }
    let start = match source {
        OutputSource::Live(hub) if !follow => {
            // What it has written so far; the `end` event only when it has ended.
            let (events, end) = hub.since(0);
            let mut events: Vec<Event> = events.iter().map(output_event).collect();
            events.extend(end.as_ref().map(end_event));
            events.reverse();
            Cursor::Replay(events)
        }
        OutputSource::Live(hub) => {
            let rx = hub.subscribe();
            Cursor::Live { hub, rx, next: 0 }
        }
        OutputSource::Finished(view) => {
            let mut events = Vec::new();
            if let Some(result) = &view.result {
                use warren_core::task::OutputStream;
                for (stream, data) in [
                    (OutputStream::Stdout, &result.stdout),
                    (OutputStream::Stderr, &result.stderr),
                ] {
                    if !data.is_empty() {
                        events.push(output_event(&HubEvent::Output(
                            stream,
                            data.as_slice().into(),
                        )));
                    }
                }
            }
            events.push(end_event(&view));
            events.reverse();
            Cursor::Replay(events)
        }
    };
    let events = stream::unfold(start, |cursor| async move {
        match cursor {
            Cursor::Done => None,
            Cursor::Replay(mut events) => {
                let event = events.pop()?;
                Some((vec![event], Cursor::Replay(events)))
            }
            Cursor::Live { hub, mut rx, next } => loop {
                rx.borrow_and_update();
                let (new, end) = hub.since(next);
                if !new.is_empty() {
                    let next = next + new.len();
                    let batch = new.iter().map(output_event).collect();
                    return Some((batch, Cursor::Live { hub, rx, next }));
                }
                if let Some(view) = end {
                    return Some((vec![end_event(&view)], Cursor::Done));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            },
        }
    })
    .flat_map(|batch| stream::iter(batch.into_iter().map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
