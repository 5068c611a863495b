//! Pythia's HTTP frontends on the coordinator, so existing Pythia clients and task files work
//! unchanged, and Pythia task descriptions on `POST /v1/tasks`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/execute` `{"tid", "response"}` | pythia-core's frontend: the output (bytes) on success, an empty body otherwise; 400 bad JSON, 422 unknown task, 405 other methods |
//! | POST | `/api/execute` (`?async=true`) `{"tid", "input", "callback"}` | pythia-server: 200 `{"tid", "status", "output"}`; with `async`, 200 at once and the same JSON POSTed to `callback` later; 400 bad JSON, bad `async`, no callback, unknown task |
//! | GET | `/api/tasks` | `[{"taskid"}]`, one per `TASKS_DIR/*.task` |
//! | GET | `/api/tasks/{tid}` | the task file itself; 404 unknown |
//! | GET | `/api/environments` | `[{"envid", "name", "authors", "description"}]`, the environments workers offer |
//! | GET | `/api/health` | `{"running": true, "workers": connected}` |
//!
//! `tid` names `TASKS_DIR/<tid>.task` (`--tasks-dir`); a tid with a path separator, `..` or NUL
//! is refused before any file is opened. An answer about a task carries `Warren-Task-Id` and,
//! once it has one, its `Pythia-Status`. Executions are ordinary Warren tasks (owner `pythia-http`):
//! a client that goes away does not stop them, and their result is recorded like any other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use warren_core::pythia::{
    callback_backoff, callback_retryable, check_tid, execution_wait, go_string_field,
    parse_go_bool, pythia_field, CALLBACK_ATTEMPTS,
};
use warren_core::task::{TaskSpec, TaskView, WorkerState};
use warren_proto::{Done, PythiaStatus, PythiaTask};

use crate::api::{parse_spec, ApiError, ApiState};
use crate::service::{pythia_done, ServiceError};

/// Settings of the Pythia frontends.
#[derive(Debug, Clone)]
pub struct PythiaHttpConfig {
    /// Where `<tid>.task` files are; without it every tid is unknown.
    pub tasks_dir: Option<PathBuf>,
    /// How much longer than its time limit a blocking execution waits for its task.
    pub wait_margin: Duration,
    /// Pause before the second callback attempt (doubling after).
    pub callback_backoff: Duration,
    /// Longest one callback attempt may take.
    pub callback_timeout: Duration,
}

impl Default for PythiaHttpConfig {
    fn default() -> Self {
        PythiaHttpConfig {
            tasks_dir: None,
            wait_margin: Duration::from_secs(60),
            callback_backoff: Duration::from_millis(500),
            callback_timeout: Duration::from_secs(10),
        }
    }
}

/// The frontends' shared parts: the settings and the callback client (made on first use).
#[derive(Debug)]
pub struct PythiaFrontends {
    config: PythiaHttpConfig,
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// Who owns the tasks the frontends submit.
const OWNER: &str = "pythia-http";

impl PythiaFrontends {
    /// Frontends with these settings.
    pub fn new(config: PythiaHttpConfig) -> PythiaFrontends {
        PythiaFrontends {
            config,
            client: OnceLock::new(),
        }
    }

    /// The task file `tid` names, its name checked first.
    fn task_path(&self, tid: &str) -> Result<PathBuf, TaskFileError> {
        check_tid(tid).map_err(TaskFileError::BadTid)?;
        let dir = self
            .config
            .tasks_dir
            .as_deref()
            .ok_or(TaskFileError::NoTasksDir)?;
        Ok(dir.join(format!("{tid}.task")))
    }

    /// The task file's bytes.
    async fn read(&self, tid: &str) -> Result<(PathBuf, Vec<u8>), TaskFileError> {
        let path = self.task_path(tid)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TaskFileError::Unknown(tid.to_string()))
            }
            Err(e) => Err(TaskFileError::Unreadable(path, e.to_string())),
        }
    }

    /// The task `tid` describes, as a Warren task with `input` on its standard input.
    async fn load(&self, tid: &str, input: &str) -> Result<TaskSpec, TaskFileError> {
        let (path, bytes) = self.read(tid).await?;
        let task = parse_pythia_task(&bytes).map_err(|(field, problem)| {
            TaskFileError::Invalid(path.clone(), format!("`{field}`: {problem}"))
        })?;
        let spec = task.to_spec(input);
        spec.validate().map_err(|e| {
            TaskFileError::Invalid(path, format!("`{}`: {}", pythia_field(&e.field), e.problem))
        })?;
        Ok(spec)
    }

    /// The ids of every `*.task` file, sorted.
    async fn list(&self) -> Result<Vec<String>, String> {
        let Some(dir) = self.config.tasks_dir.as_deref() else {
            return Ok(Vec::new());
        };
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let mut ids = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
        {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".task")) else {
                continue;
            };
            if check_tid(id).is_ok() && is_file(&entry.path()).await {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// How long a blocking execution of `spec` waits.
    fn wait_for(&self, state: &ApiState, spec: &TaskSpec) -> Duration {
        let wall_time = spec
            .limits
            .wall_time
            .or(state.service.config().default_limits.wall_time);
        execution_wait(wall_time, state.max_wait, self.config.wait_margin)
    }

    fn client(&self) -> Result<&reqwest::Client, &str> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    // Only the URL the caller gave: no redirects to elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(self.config.callback_timeout)
                    .connect_timeout(self.config.callback_timeout)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// POSTs `body` to `url`, trying again with back-off while the callback's server fails.
    async fn deliver(&self, url: reqwest::Url, body: Vec<u8>) {
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(%url, "no HTTP client for the callback: {e}");
                return;
            }
        };
        for attempt in 0..CALLBACK_ATTEMPTS {
            tokio::time::sleep(callback_backoff(attempt, self.config.callback_backoff)).await;
            let sent = client
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let attempt = attempt + 1;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    tracing::debug!(%url, attempt, "callback delivered");
                    return;
                }
                Ok(answer) if !callback_retryable(answer.status().as_u16()) => {
                    tracing::warn!(%url, attempt, status = %answer.status(), "callback refused; not retried");
                    return;
                }
                Ok(answer) => {
                    tracing::warn!(%url, attempt, status = %answer.status(), "callback failed")
                }
                Err(e) => tracing::warn!(%url, attempt, "callback failed: {e}"),
            }
        }
        tracing::error!(%url, "callback not delivered after {CALLBACK_ATTEMPTS} attempts");
    }
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// Why a tid does not give a task.
#[derive(Debug)]
enum TaskFileError {
    BadTid(String),
    NoTasksDir,
    Unknown(String),
    Unreadable(PathBuf, String),
    Invalid(PathBuf, String),
}

impl TaskFileError {
    /// The error, answered with `unknown` for a task that is not there (each frontend has its
    /// own code for that).
    fn into_api(self, unknown: StatusCode) -> ApiError {
        match self {
            TaskFileError::BadTid(problem) => {
                ApiError::new(unknown, format!("`tid`: {problem}"), Some("tid"))
            }
            TaskFileError::NoTasksDir => ApiError::new(
                unknown,
                "no task is known: the coordinator has no tasks directory (--tasks-dir)",
                Some("tid"),
            ),
            TaskFileError::Unknown(tid) => {
                ApiError::new(unknown, format!("no task `{tid}`"), Some("tid"))
            }
            TaskFileError::Unreadable(path, e) => {
                tracing::error!("reading {}: {e}", path.display());
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the task file cannot be read",
                    None,
                )
            }
            TaskFileError::Invalid(path, problem) => {
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
                tracing::error!("invalid task file {}: {problem}", path.display());
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("invalid task file {}: {problem}", file.unwrap_or_default()),
                    None,
                )
            }
        }
    }
}

/// A Pythia task description, or the field at fault and what is wrong with it.
fn parse_pythia_task(bytes: &[u8]) -> Result<PythiaTask, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        (field, e.into_inner().to_string())
    })
}

/// Routes that run or list tasks (behind the API's authentication, like `/v1`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/execute", post(execute))
        .route("/api/execute", post(api_execute))
        .route("/api/tasks", get(api_tasks))
        .route("/api/tasks/{tid}", get(api_task))
        .route("/api/environments", get(api_environments))
}

/// Routes open to anyone, like `/healthz`.
pub fn open_routes() -> Router<ApiState> {
    Router::new().route("/api/health", get(api_health))
}

/// `POST /v1/tasks` with `{"pythia_task": {...}, "input": "...", ...}`: the Warren task it stands
/// for; any other body is a [`TaskSpec`]. The rest of the object may carry the scheduling
/// fields of a task spec; a command, task filesystem, environment, limits or standard input
/// beside a Pythia task are refused (the Pythia task defines them).
pub(crate) fn parse_task_body(body: &[u8]) -> Result<TaskSpec, ApiError> {
    const KEY: &[u8] = b"\"pythia_task\"";
    if !body.windows(KEY.len()).any(|w| w == KEY) {
        return parse_spec(body);
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return parse_spec(body);
    };
    let Some(task) = object.remove("pythia_task") else {
        return parse_spec(body);
    };
    const DEFINED: [&str; 7] = [
        "command",
        "taskfs",
        "task_files",
        "environment",
        "limits",
        "stdin",
        "stdin_base64",
    ];
    if let Some(field) = DEFINED.iter().find(|f| object.contains_key(**f)) {
        let why = match *field {
            "command" => "a Pythia task has no command: its task filesystem's /task/control runs; send either `command` or `pythia_task`".to_string(),
            "stdin" | "stdin_base64" => format!("a Pythia task reads `input`; send `input` instead of `{field}`"),
            _ => format!("the Pythia task defines its own `{field}`; set it inside `pythia_task`"),
        };
        return Err(ApiError::bad(*field, format!("`{field}`: {why}")));
    }
    let input = match object.remove("input") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::bad("input", "`input`: must be a string")),
    };
    let task_bytes = serde_json::to_vec(&task).unwrap_or_default();
    let task = parse_pythia_task(&task_bytes).map_err(|(field, problem)| {
        let field = if field.is_empty() {
            "pythia_task".to_string()
        } else {
            format!("pythia_task.{field}")
        };
        ApiError::bad(field.clone(), format!("`{field}`: {problem}"))
    })?;
    let rest = parse_spec(&serde_json::to_vec(&Value::Object(object)).unwrap_or_default())?;
    let mut spec = task.to_spec(&input);
    spec.files = rest.files;
    spec.env = rest.env;
    spec.priority = rest.priority;
    spec.valid_after = rest.valid_after;
    spec.deadline = rest.deadline;
    spec.caps = rest.caps;
    spec.owner = rest.owner;
    spec.validate().map_err(|e| {
        let field = match e.field.as_str() {
            "taskfs" | "environment" => format!("pythia_task.{}", e.field),
            f if f.starts_with("limits.") => format!("pythia_task.{}", pythia_field(f)),
            f => pythia_field(f),
        };
        ApiError::bad(field.clone(), format!("`{field}`: {}", e.problem))
    })?;
    Ok(spec)
}

/// A request's body, or 413/400 naming it.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError::new(e.status(), e.body_text(), Some("body")))
}

/// How much of a body Pythia's Go servers read: `json.Unmarshal` (pythia-core) wants exactly
/// one value, `json.Decoder` (pythia-server) reads the first and ignores what follows.
#[derive(Clone, Copy)]
enum GoDecode {
    Whole,
    FirstValue,
}

/// A request body as pythia's Go servers decode one into a struct of strings: `null` is
/// empty, anything but an object is refused, keys match case-insensitively.
fn go_request(bytes: &[u8], decode: GoDecode) -> Result<Map<String, Value>, ApiError> {
    let value = match decode {
        GoDecode::Whole => serde_json::from_slice::<Value>(bytes),
        GoDecode::FirstValue => serde_json::Deserializer::from_slice(bytes)
            .into_iter::<Value>()
            .next()
            .unwrap_or_else(|| serde_json::from_slice::<Value>(b"")),
    };
    match value {
        Ok(Value::Object(object)) => Ok(object),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ApiError::bad("body", "the body must be a JSON object")),
        Err(e) => Err(ApiError::bad("body", format!("the body is not JSON: {e}"))),
    }
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    go_string_field(object, name).map_err(|e| ApiError::bad(name, format!("`{name}`: {e}")))
}

/// Submits `spec` as the task `tid` names. A task the queue refuses (an environment no worker
/// offers, say) is Pythia's `fatal` saying why, as on the queue port.
async fn submit(
    state: &ApiState,
    tid: &str,
    spec: TaskSpec,
) -> Result<Result<TaskView, Done>, ApiError> {
    match state.service.submit(spec, OWNER.into()).await {
        Ok(view) => Ok(Ok(view)),
        Err(ServiceError::Field(e)) => Ok(Err(Done {
            id: tid.to_string(),
            status: PythiaStatus::Fatal.name().into(),
            output: e.to_string(),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Submits `spec` and waits, bounded, for its end: the task (unless it was refused) and its end
/// as Pythia reports it. The task belongs to the queue: if the caller goes away it still runs
/// and is recorded.
async fn run(
    state: &ApiState,
    tid: &str,
    spec: TaskSpec,
) -> Result<(Option<TaskView>, Done), ApiError> {
    let bound = state.pythia.wait_for(state, &spec);
    let view = match submit(state, tid, spec).await? {
        Ok(view) if view.state.is_terminal() => view,
        Ok(view) => state.service.wait(view.id, bound).await?,
        Err(refused) => return Ok((None, refused)),
    };
    let done = outcome(tid, &view, bound);
    Ok((Some(view), done))
}

/// A task's end as Pythia reports it; a task still going after `bound` is an `error` (Pythia's
/// temporary failure) saying where to follow it.
fn outcome(tid: &str, view: &TaskView, bound: Duration) -> Done {
    if !view.state.is_terminal() {
        return Done {
            id: tid.to_string(),
            status: PythiaStatus::Error.name().into(),
            output: format!(
                "task {} has not ended after {} s; it goes on: GET /v1/tasks/{}",
                view.id,
                bound.as_secs(),
                view.id
            ),
        };
    }
    pythia_done(
        tid.to_string(),
        view.result.as_ref(),
        view.state,
        view.reason.as_deref(),
    )
}

/// Adds `Warren-Task-Id` when there is a task and, once it has a Pythia status, `Pythia-Status`.
fn with_headers(mut response: Response, view: Option<&TaskView>, status: Option<&str>) -> Response {
    let headers = response.headers_mut();
    if let Some(view) = view {
        headers.insert("warren-task-id", HeaderValue::from(view.id));
    }
    if let Some(value) = status.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert("pythia-status", value);
    }
    response
}

/// pythia-core's `/execute`: `{"tid", "response"}`, where `response` is the task's input.
async fn execute(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, Execute422> {
    let raw = body(raw).map_err(Execute422::Plain)?;
    let request = go_request(&raw, GoDecode::Whole).map_err(Execute422::Plain)?;
    let tid = string_field(&request, "tid").map_err(Execute422::Plain)?;
    let input = string_field(&request, "response").map_err(Execute422::Plain)?;
    let spec = state.pythia.load(&tid, &input).await.map_err(|e| match e {
        e @ (TaskFileError::BadTid(_) | TaskFileError::NoTasksDir | TaskFileError::Unknown(_)) => {
            Execute422::Unknown(e.into_api(StatusCode::UNPROCESSABLE_ENTITY))
        }
        e => Execute422::Plain(e.into_api(StatusCode::UNPROCESSABLE_ENTITY)),
    })?;
    let (view, done) = run(&state, &tid, spec).await.map_err(Execute422::Plain)?;
    // Only a success carries the output, written as the exact bytes the task wrote.
    let result = view.as_ref().and_then(|v| v.result.as_ref());
    let response = match (done.status.as_str(), result) {
        ("success", Some(result)) => {
            let mut output = result.stdout.clone();
            output.extend_from_slice(&result.stderr);
            let kind = if std::str::from_utf8(&output).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, kind)], Body::from(output)).into_response()
        }
        _ => StatusCode::OK.into_response(),
    };
    Ok(with_headers(response, view.as_ref(), Some(&done.status)))
}

/// `/execute`'s errors: an unknown task is pythia-core's 422 page, the rest plain API errors.
enum Execute422 {
    Unknown(ApiError),
    Plain(ApiError),
}

impl IntoResponse for Execute422 {
    fn into_response(self) -> Response {
        match self {
            Execute422::Plain(e) => e.into_response(),
            Execute422::Unknown(e) => {
                let mut text = b"Error 422: Unprocessable Entity ".to_vec();
                text.extend_from_slice(&e.body_json());
                text.push(b'\n');
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
                    text,
                )
                    .into_response()
            }
        }
    }
}

/// pythia-server's answer (and callback body).
#[derive(Serialize)]
struct Submission<'a> {
    tid: &'a str,
    status: &'a str,
    output: &'a str,
}

/// pythia-server's `/api/execute`.
async fn api_execute(
    State(state): State<ApiState>,
    Query(params): Query<std::collections::HashMap<String, String>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let request = go_request(&raw, GoDecode::FirstValue)?;
    let tid = string_field(&request, "tid")?;
    let input = string_field(&request, "input")?;
    let callback = string_field(&request, "callback")?;
    let asynchronous = match params.get("async").map(String::as_str) {
        None | Some("") => false,
        Some(text) => parse_go_bool(text).ok_or_else(|| {
            ApiError::bad("async", format!("`async`: `{text}` is not true or false"))
        })?,
    };
    let callback = if asynchronous {
        if callback.is_empty() {
            return Err(ApiError::bad(
                "callback",
                "`callback`: an asynchronous execution needs the URL its result is POSTed to",
            ));
        }
        Some(callback_url(&callback)?)
    } else {
        None
    };
    let spec = state
        .pythia
        .load(&tid, &input)
        .await
        .map_err(|e| e.into_api(StatusCode::BAD_REQUEST))?;
    let Some(url) = callback else {
        let (view, done) = run(&state, &tid, spec).await?;
        let answer = Json(Submission {
            tid: &tid,
            status: &done.status,
            output: &done.output,
        })
        .into_response();
        return Ok(with_headers(answer, view.as_ref(), Some(&done.status)));
    };
    let bound = state.pythia.wait_for(&state, &spec);
    let submitted = submit(&state, &tid, spec).await?;
    let view = submitted.as_ref().ok().cloned();
    let service = Arc::clone(&state.service);
    let pythia = Arc::clone(&state.pythia);
    tokio::spawn(async move {
        let done = match submitted {
            Err(refused) => refused,
            Ok(view) => match service.wait(view.id, bound).await {
                Ok(view) => outcome(&tid, &view, bound),
                Err(e) => Done {
                    id: tid.clone(),
                    status: PythiaStatus::Error.name().into(),
                    output: e.to_string(),
                },
            },
        };
        let body = serde_json::to_vec(&Submission {
            tid: &tid,
            status: &done.status,
            output: &done.output,
        })
        .unwrap_or_default();
        pythia.deliver(url, body).await;
    });
    Ok(with_headers(
        StatusCode::OK.into_response(),
        view.as_ref(),
        None,
    ))
}

/// A callback URL: absolute, http or https.
fn callback_url(text: &str) -> Result<reqwest::Url, ApiError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| ApiError::bad("callback", format!("`callback`: not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::bad(
            "callback",
            "`callback`: must be an http:// or https:// URL",
        ));
    }
    Ok(url)
}

#[derive(Serialize)]
struct TaskEntry {
    taskid: String,
}

async fn api_tasks(State(state): State<ApiState>) -> Result<Json<Vec<TaskEntry>>, ApiError> {
    let ids = state.pythia.list().await.map_err(|e| {
        tracing::error!("listing the tasks directory: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the tasks directory cannot be read",
            None,
        )
    })?;
    Ok(Json(
        ids.into_iter().map(|taskid| TaskEntry { taskid }).collect(),
    ))
}

async fn api_task(
    State(state): State<ApiState>,
    UrlPath(tid): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (_, bytes) = state.pythia.read(&tid).await.map_err(|e| match e {
        TaskFileError::BadTid(_) => e.into_api(StatusCode::BAD_REQUEST),
        e => e.into_api(StatusCode::NOT_FOUND),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

#[derive(Serialize)]
struct EnvironmentEntry {
    envid: String,
    name: String,
    authors: Vec<String>,
    description: String,
}

async fn api_environments(State(state): State<ApiState>) -> Json<Vec<EnvironmentEntry>> {
    let mut names: Vec<String> = state
        .service
        .workers()
        .into_iter()
        .flat_map(|w| w.environments)
        .collect();
    names.sort();
    names.dedup();
    Json(
        names
            .into_iter()
            .map(|name| EnvironmentEntry {
                envid: name.clone(),
                name,
                authors: Vec::new(),
                description: String::new(),
            })
            .collect(),
    )
}

async fn api_health(State(state): State<ApiState>) -> Json<Value> {
    let connected = state
        .service
        .workers()
        .iter()
        .filter(|w| w.state != WorkerState::Failed)
        .count();
    // The queue is this process: it runs whenever this answers.
    Json(serde_json::json!({ "running": true, "workers": connected }))
}
