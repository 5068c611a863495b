//! [`Client`]: one coordinator, its endpoints as methods.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

use warren_core::task::{
    SetWorkerGroups, SetWorkerState, TaskId, TaskPage, TaskSpec, TaskState, TaskUpdate, TaskView,
    WorkerPage, WorkerState, WorkerView,
};

use crate::error::{describe, Error, Result};
use crate::output::Output;

/// The coordinator a client talks to when none is named.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// How long to wait for a TCP (and TLS) connection before calling the coordinator unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Client::wait`] and [`Output`] keep retrying while the coordinator is unreachable
/// (a restart), before they give up with the last error.
pub const RECONNECT_BUDGET: Duration = Duration::from_secs(60);

/// The longest error body quoted in an [`Error::Api`].
const MAX_QUOTED_BODY: usize = 512;

/// A client of one Warren coordinator. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Filters and paging for [`Client::tasks`] (`GET /v1/tasks`). Unset fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this owner.
    pub owner: Option<String>,
    /// Only tasks that ran on this worker.
    pub worker: Option<String>,
    /// At most this many tasks in the page.
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Oldest first instead of newest first (ascending, whatever the sort key).
    pub oldest_first: bool,
    /// Only these tasks.
    pub ids: Vec<TaskId>,
    /// Only tasks in one of these states (besides `state`).
    pub states: Vec<TaskState>,
    /// Only tasks of these priorities.
    pub priorities: Vec<u8>,
    /// Only tasks of at least one of these groups.
    pub groups: Vec<String>,
    /// Only tasks requiring these capabilities.
    pub caps: BTreeMap<String, String>,
    /// Sort key: `id`, `priority`, `deadline`, `valid_after` or `state`.
    pub sort: Option<String>,
    /// The page before this task id.
    pub before: Option<String>,
}

fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn caps_param(caps: &BTreeMap<String, String>) -> String {
    caps.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Filters and paging for [`Client::worker_page`] (`GET /v1/workers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerQuery {
    /// Only these workers.
    pub ids: Vec<String>,
    /// Only workers in one of these states.
    pub states: Vec<WorkerState>,
    /// Only workers in at least one of these groups.
    pub groups: Vec<String>,
    /// Only workers offering these capabilities.
    pub caps: BTreeMap<String, String>,
    /// Sort key: `id` or `state`.
    pub sort: Option<String>,
    /// Largest first.
    pub descending: bool,
    /// The page after this worker id.
    pub after: Option<String>,
    /// The page before this worker id.
    pub before: Option<String>,
    /// At most this many workers.
    pub limit: Option<u32>,
}

impl WorkerQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut add = |name, value: String| {
            if !value.is_empty() {
                pairs.push((name, value));
            }
        };
        add("ids", self.ids.join(","));
        add("state", joined(&self.states));
        add("groups", self.groups.join(","));
        add("caps", caps_param(&self.caps));
        add("sort", self.sort.clone().unwrap_or_default());
        add(
            "order",
            if self.descending {
                "desc".into()
            } else {
                String::new()
            },
        );
        add("after", self.after.clone().unwrap_or_default());
        add("before", self.before.clone().unwrap_or_default());
        add(
            "limit",
            self.limit.map(|l| l.to_string()).unwrap_or_default(),
        );
        pairs
    }
}

impl TaskQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let (Some(state), true) = (self.state, self.states.is_empty()) {
            pairs.push(("state", state.name().to_string()));
        }
        if let Some(owner) = &self.owner {
            pairs.push(("owner", owner.clone()));
        }
        if let Some(worker) = &self.worker {
            pairs.push(("worker", worker.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(after) = &self.after {
            pairs.push(("after", after.clone()));
        }
        if self.oldest_first {
            pairs.push(("order", "asc".to_string()));
        }
        let mut add = |name, value: String| {
            if !value.is_empty() {
                pairs.push((name, value));
            }
        };
        add("ids", joined(&self.ids));
        let mut states = self.states.clone();
        if !states.is_empty() {
            states.extend(self.state);
            add("state", joined(&states));
        }
        add("priority", joined(&self.priorities));
        add("groups", self.groups.join(","));
        add("caps", caps_param(&self.caps));
        add("sort", self.sort.clone().unwrap_or_default());
        add("before", self.before.clone().unwrap_or_default());
        pairs
    }
}

/// The answer to `POST /v1/tasks`.
#[derive(Deserialize)]
struct Created {
    id: TaskId,
}

/// `GET /v1/workers` answers a list, bare or under `workers`.
#[derive(Deserialize)]
#[serde(untagged)]
enum WorkerList {
    Bare(Vec<WorkerView>),
    Wrapped { workers: Vec<WorkerView> },
}

/// The error body of the API: `{"error": "...", "field": "..."}` (or `message`).
#[derive(Deserialize)]
struct ApiErrorBody {
    #[serde(default, alias = "message")]
    error: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

impl Client {
    /// A client of the coordinator at `server` (`http://host:port`, `https://...`, or a bare
    /// `host:port`, which means `http://`). A path in the URL is kept as a prefix of every
    /// endpoint.
    pub fn new(server: &str) -> Result<Client> {
        let base = parse_base(server)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("warren-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Unreachable {
                url: server.to_string(),
                reason: describe(&e),
                sent: false,
            })?;
        Ok(Client {
            http,
            base,
            token: None,
        })
    }

    /// The same client, sending `token` as a bearer token with every request (needed when the
    /// coordinator listens beyond loopback).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// The coordinator's base URL, as requests are built from it.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Submits a task (`POST /v1/tasks`); the coordinator answers once it is stored.
    ///
    /// The request carries an `Idempotency-Key`, so when the connection breaks after the request
    /// may have arrived, it is sent again (with back-off, for up to [`RECONNECT_BUDGET`]) without
    /// risk of creating the task twice. A coordinator that cannot be connected to at all is
    /// reported at once.
    pub async fn submit(&self, spec: &TaskSpec) -> Result<TaskId> {
        let created: Created = self.submit_once(spec, &[]).await?;
        Ok(created.id)
    }

    /// Submits a task and waits until it has finished (`POST /v1/tasks?wait=true`, then
    /// [`Client::wait`] for as long as the coordinator's bounded wait returns it unfinished).
    pub async fn submit_and_wait(&self, spec: &TaskSpec) -> Result<TaskView> {
        let view: TaskView = self.submit_once(spec, &[("wait", "true".into())]).await?;
        if view.state.is_terminal() {
            return Ok(view);
        }
        self.wait(view.id).await
    }

    /// `POST /v1/tasks` with one idempotency key across retries.
    async fn submit_once<T: DeserializeOwned>(
        &self,
        spec: &TaskSpec,
        query: &[(&str, String)],
    ) -> Result<T> {
        let key = idempotency_key();
        let request = describe_request(&Method::POST, "v1/tasks", query);
        let mut retry = Retry::new();
        loop {
            let builder = self
                .send(Method::POST, "v1/tasks", query, Some(spec))?
                .header("Idempotency-Key", &key);
            match self.decode(&request, builder).await {
                Err(err @ Error::Unreachable { sent: true, .. }) => retry.pause(err).await?,
                answer => return answer,
            }
        }
    }

    /// The task as it is now (`GET /v1/tasks/{id}`).
    pub async fn task(&self, id: TaskId) -> Result<TaskView> {
        self.call(Method::GET, &format!("v1/tasks/{id}"), &[], None::<&()>)
            .await
    }

    /// Waits until the task has finished and returns it (`GET /v1/tasks/{id}?wait=true`,
    /// repeated while the coordinator's bounded wait returns it unfinished).
    ///
    /// Rides out a coordinator restart: while the coordinator is unreachable or answers 502,
    /// 503 or 504, it retries with back-off for up to [`RECONNECT_BUDGET`] before giving up.
    pub async fn wait(&self, id: TaskId) -> Result<TaskView> {
        let path = format!("v1/tasks/{id}");
        let mut retry = Retry::new();
        loop {
            let answer: Result<TaskView> = self
                .call(Method::GET, &path, &[("wait", "true".into())], None::<&()>)
                .await;
            match answer {
                Ok(view) if view.state.is_terminal() => return Ok(view),
                Ok(_) => retry = Retry::new(),
                Err(err) if err.is_transient() => retry.pause(err).await?,
                Err(err) => return Err(err),
            }
        }
    }

    /// Follows the task's output from its first byte (`GET /v1/tasks/{id}/output`). The stream
    /// ends when the task ends; it works the same after the task has finished. A connection
    /// that breaks is re-opened (see [`Output`]) without repeating or losing a byte.
    pub async fn output(&self, id: TaskId) -> Result<Output> {
        Output::open(self.clone(), id, true).await
    }

    /// The output the task has written so far, without waiting for more
    /// (`GET /v1/tasks/{id}/output?follow=false`): for a finished task, all of it.
    pub async fn output_so_far(&self, id: TaskId) -> Result<Output> {
        Output::open(self.clone(), id, false).await
    }

    /// Opens the output stream of task `id`; used by [`Output`] to open and re-open it.
    pub(crate) async fn output_response(
        &self,
        id: TaskId,
        follow: bool,
    ) -> Result<(String, Response)> {
        let path = format!("v1/tasks/{id}/output");
        let query: &[(&str, String)] = if follow {
            &[]
        } else {
            &[("follow", "false".into())]
        };
        let request = describe_request(&Method::GET, &path, query);
        let builder = self
            .send(Method::GET, &path, query, None::<&()>)?
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.execute(&request, builder).await?;
        Ok((request, response))
    }

    /// Asks to cancel the task (`POST /v1/tasks/{id}/cancel`): a waiting task becomes
    /// CANCELLED; a running one is aborted by its worker and ends DONE with status `abort`.
    pub async fn cancel(&self, id: TaskId) -> Result<()> {
        let path = format!("v1/tasks/{id}/cancel");
        let request = format!("POST /{path}");
        let builder = self.send(Method::POST, &path, &[], None::<&()>)?;
        self.execute(&request, builder).await?;
        Ok(())
    }

    /// One page of tasks (`GET /v1/tasks`), newest first unless the coordinator says otherwise.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<TaskPage> {
        self.call(Method::GET, "v1/tasks", &query.pairs(), None::<&()>)
            .await
    }

    /// Every worker the coordinator knows (`GET /v1/workers`).
    pub async fn workers(&self) -> Result<Vec<WorkerView>> {
        let list: WorkerList = self
            .call(Method::GET, "v1/workers", &[], None::<&()>)
            .await?;
        Ok(match list {
            WorkerList::Bare(workers) | WorkerList::Wrapped { workers } => workers,
        })
    }

    /// One page of workers (`GET /v1/workers` with filters), with totals.
    /// A coordinator that predates pages answers a bare list: one page of it all.
    pub async fn worker_page(&self, query: &WorkerQuery) -> Result<WorkerPage> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Answer {
            Page(WorkerPage),
            Bare(Vec<WorkerView>),
        }
        let answer: Answer = self
            .call(Method::GET, "v1/workers", &query.pairs(), None::<&()>)
            .await?;
        Ok(match answer {
            Answer::Page(page) => page,
            Answer::Bare(workers) => WorkerPage {
                total: workers.len() as u64,
                remaining: 0,
                next: None,
                workers,
            },
        })
    }

    /// One worker (`GET /v1/workers/{id}`).
    pub async fn worker(&self, id: &str) -> Result<WorkerView> {
        let path = format!("v1/workers/{}", path_segment(id));
        self.call(Method::GET, &path, &[], None::<&()>).await
    }

    /// Sets a worker IDLE or MAINTENANCE (`PUT /v1/workers/{id}/state`); `message` goes to its
    /// maintenance hook.
    pub async fn set_worker_state(
        &self,
        id: &str,
        state: WorkerState,
        message: Option<String>,
    ) -> Result<WorkerView> {
        let path = format!("v1/workers/{}/state", path_segment(id));
        let body = SetWorkerState { state, message };
        self.call(Method::PUT, &path, &[], Some(&body)).await
    }

    /// Sets the groups a worker serves (`PUT /v1/workers/{id}/groups`).
    pub async fn set_worker_groups(&self, id: &str, groups: Vec<String>) -> Result<WorkerView> {
        let path = format!("v1/workers/{}/groups", path_segment(id));
        let body = SetWorkerGroups { groups };
        self.call(Method::PUT, &path, &[], Some(&body)).await
    }

    /// Forgets a worker in MAINTENANCE or FAILED (`DELETE /v1/workers/{id}`).
    pub async fn deregister_worker(&self, id: &str) -> Result<()> {
        let path = format!("v1/workers/{}", path_segment(id));
        let request = format!("DELETE /{path}");
        let builder = self.send(Method::DELETE, &path, &[], None::<&()>)?;
        self.execute(&request, builder).await?;
        Ok(())
    }

    /// Changes a WAITING task's priority, times or capabilities (`PATCH /v1/tasks/{id}`).
    pub async fn update(&self, id: TaskId, update: &TaskUpdate) -> Result<TaskView> {
        self.call(Method::PATCH, &format!("v1/tasks/{id}"), &[], Some(update))
            .await
    }

    /// Checks that the coordinator answers (`GET /healthz`).
    pub async fn health(&self) -> Result<()> {
        let builder = self.send(Method::GET, "healthz", &[], None::<&()>)?;
        self.execute("GET /healthz", builder).await?;
        Ok(())
    }

    /// The coordinator's version document (`GET /v1/version`), as it sends it.
    pub async fn version(&self) -> Result<serde_json::Value> {
        self.call(Method::GET, "v1/version", &[], None::<&()>).await
    }

    /// Sends a request and decodes its JSON answer.
    async fn call<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T> {
        let request = describe_request(&method, path, query);
        let builder = self.send(method, path, query, body)?;
        self.decode(&request, builder).await
    }

    /// Sends a request and decodes its JSON answer.
    async fn decode<T: DeserializeOwned>(
        &self,
        request: &str,
        builder: RequestBuilder,
    ) -> Result<T> {
        let response = self.execute(request, builder).await?;
        let bytes = response.bytes().await.map_err(|e| Error::Unreachable {
            url: self.url(),
            reason: format!("reading the answer to {request}: {}", describe(&e)),
            sent: true,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            request: request.to_string(),
            reason: format!("{e} in {}", quote(&bytes)),
        })
    }

    /// The base URL as users wrote it, for messages.
    fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// Builds a request for `path` below the base URL.
    fn send<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<RequestBuilder> {
        let url = self.base.join(path).map_err(|e| Error::InvalidUrl {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        let mut builder = self.http.request(method, url);
        if !query.is_empty() {
            builder = builder.query(query);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        Ok(builder)
    }

    /// Sends the request, turning transport failures and error statuses into [`Error`]s.
    async fn execute(&self, request: &str, builder: RequestBuilder) -> Result<Response> {
        let response = builder.send().await.map_err(|e| Error::Unreachable {
            url: self.url(),
            reason: describe(&e),
            sent: !e.is_connect(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(ApiErrorBody {
                error: Some(error),
                field: Some(field),
            }) if !error.contains(&format!("`{field}`")) => {
                format!("`{field}`: {error}")
            }
            Ok(ApiErrorBody {
                error: Some(error), ..
            }) => error,
            _ if body.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
            _ => quote(&body),
        };
        Err(Error::Api {
            request: request.to_string(),
            status: status.as_u16(),
            message,
        })
    }
}

/// Back-off between retries of a transient failure: 50 ms doubling to 2 s, for at most
/// [`RECONNECT_BUDGET`] from the first failure.
#[derive(Debug)]
pub(crate) struct Retry {
    started: Option<tokio::time::Instant>,
    delay: Duration,
}

impl Retry {
    pub(crate) fn new() -> Retry {
        Retry {
            started: None,
            delay: Duration::from_millis(50),
        }
    }

    /// Sleeps before the next attempt, or gives `err` back when the budget is spent.
    pub(crate) async fn pause(&mut self, err: Error) -> Result<()> {
        let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
        if started.elapsed() + self.delay > RECONNECT_BUDGET {
            return Err(err);
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
        Ok(())
    }
}

/// A key unique to one submission: this process, the time, and a counter.
fn idempotency_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("warren-{:x}-{nanos:x}-{count:x}", std::process::id())
}

fn describe_request(method: &Method, path: &str, query: &[(&str, String)]) -> String {
    let mut text = format!("{method} /{path}");
    for (i, (key, value)) in query.iter().enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        text.push_str(key);
        text.push('=');
        text.push_str(value);
    }
    text
}

/// A body as text for a message, shortened.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

fn parse_base(server: &str) -> Result<Url> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: server.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = server.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().map_or(true, str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A worker id as one path segment (ids are letters, digits and `-`, but a typo must not
/// change the path).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(server: &str, expected: Option<&str>) {
        let got = parse_base(server).ok().map(|u| u.to_string());
        assert_eq!(got.as_deref(), expected, "{server}");
    }

    #[test]
    fn base_urls() {
        check("http://127.0.0.1:7070", Some("http://127.0.0.1:7070/"));
        check("127.0.0.1:7070", Some("http://127.0.0.1:7070/"));
        check(
            "https://warren.example:8443/api",
            Some("https://warren.example:8443/api/"),
        );
        check("http://h/api/", Some("http://h/api/"));
        check(" http://h ", Some("http://h/"));
        check("", None);
        check("ftp://h", None);
        check("http://", None);
        check("http://h/?x=1", None);
        check("http://h:notaport", None);
    }

    #[test]
    fn endpoints_join_below_the_prefix() {
        let base = parse_base("http://h/api").ok();
        let joined = base
            .and_then(|b| b.join("v1/tasks/3").ok())
            .map(|u| u.to_string());
        assert_eq!(joined.as_deref(), Some("http://h/api/v1/tasks/3"));
    }

    #[test]
    fn queries_leave_out_unset_filters() {
        assert!(TaskQuery::default().pairs().is_empty());
        let query = TaskQuery {
            state: Some(TaskState::InProgress),
            limit: Some(5),
            after: Some("c1".into()),
            oldest_first: true,
            ..TaskQuery::default()
        };
        assert_eq!(
            describe_request(&Method::GET, "v1/tasks", &query.pairs()),
            "GET /v1/tasks?state=IN PROGRESS&limit=5&after=c1&order=asc"
        );
    }

    #[test]
    fn long_bodies_are_shortened() {
        assert_eq!(quote(b"  short \n"), "short");
        let long = "x".repeat(MAX_QUOTED_BODY + 10);
        assert_eq!(quote(long.as_bytes()).len(), MAX_QUOTED_BODY + 3);
    }
}
