//! Pythia's HTTP frontends over real sockets: `/execute` (pythia-core), `/api/execute` with its
//! callbacks and the `/api` listings (pythia-server), and Pythia tasks on `POST /v1/tasks`.
//! Task files live in a real tasks directory; a worker runs each task filesystem's `control`
//! file on the host (and, as root, in the real sandbox).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post as route_post;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use warren_core::result::RunResult;
use warren_core::task::TaskSpec;
use warren_sandbox::{AbortHandle, RunEvents};
use warren_worker::Executor;

use crate::util::*;

/// Runs a Pythia task's one-line `control` file on the host, with `/task` standing for the task
/// filesystem's directory: a stand-in for the worker's control runner that needs no root.
#[derive(Debug)]
struct ControlScripts {
    dir: PathBuf,
    host: HostProcessExecutor,
}

impl Executor for ControlScripts {
    fn run(&self, spec: &TaskSpec, events: &mut dyn RunEvents, abort: &AbortHandle) -> RunResult {
        let mut spec = spec.clone();
        if let (true, Some(taskfs)) = (spec.command.is_empty(), &spec.taskfs) {
            let fs = self.dir.join(taskfs);
            let text = std::fs::read(fs.join("control")).unwrap_or_default();
            let steps = warren_core::control::parse(&text).unwrap_or_default();
            let [step] = steps.as_slice() else {
                return RunResult::crash("the stand-in runs one-line control files only");
            };
            spec.command = step
                .argv
                .iter()
                .map(|arg| {
                    let arg = String::from_utf8_lossy(arg);
                    match arg.strip_prefix("/task/") {
                        Some(rest) => fs.join(rest).display().to_string(),
                        None => arg.into_owned(),
                    }
                })
                .collect();
        }
        self.host.run(&spec, events, abort)
    }
}

/// A coordinator with a tasks directory, and one worker running its control files.
struct Pythia {
    c: TestCoordinator,
    tasks: PathBuf,
    /// Holds the tasks directory and files beside it.
    root: tempfile::TempDir,
    _worker: (String, tokio::task::JoinHandle<()>, tempfile::TempDir),
}

impl Pythia {
    fn http(&self) -> SocketAddr {
        self.c.http()
    }

    /// Writes `TASKS/<tid>.task` and the task filesystem `TASKS/<tid>/` running `script`.
    fn task(&self, tid: &str, task: Value, script: &str) {
        write_task(&self.tasks, tid, task, script);
    }

    /// A file beside the tasks directory whose appearance lets a waiting script end.
    fn gate(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// `TASKS/<tid>.task`, and the task filesystem `TASKS/<tid>/` whose control file runs
/// `/task/run.sh`, which is `script`.
fn write_task(tasks: &Path, tid: &str, task: Value, script: &str) {
    std::fs::write(tasks.join(format!("{tid}.task")), task.to_string()).unwrap();
    let fs = tasks.join(tid);
    std::fs::create_dir_all(&fs).unwrap();
    std::fs::write(fs.join("control"), "/task/run.sh\n").unwrap();
    let script_path = fs.join("run.sh");
    std::fs::write(&script_path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn pythia_task(taskfs: &str) -> Value {
    json!({"environment": "", "taskfs": taskfs, "limits": {"time": 10, "memory": 64, "disk": 50, "output": 4096}})
}

async fn pythia(adjust: impl FnOnce(&mut warren_coordinator::Config)) -> Pythia {
    let root = tempfile::tempdir().unwrap();
    let tasks = root.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let dir = tasks.clone();
    let c = start(|config| {
        config.pythia.tasks_dir = Some(dir);
        config.pythia.callback_backoff = Duration::from_millis(50);
        adjust(config);
    })
    .await;
    let executor = Arc::new(ControlScripts {
        dir: tasks.clone(),
        host: HostProcessExecutor::default(),
    });
    let worker = spawn_worker(c.queue(), 4, executor, |_| {});
    workers_in_state(c.http(), 1, "IDLE").await;
    let p = Pythia {
        c,
        tasks,
        root,
        _worker: worker,
    };
    // Echoes its input, then writes format directives to stderr (they must come out verbatim).
    p.task(
        "echo",
        pythia_task("echo"),
        "#!/bin/sh\ncat\necho 'to stderr %s %d %%' >&2\n",
    );
    p.task("crash", pythia_task("crash"), "#!/bin/sh\nkill -9 $$\n");
    p
}

/// A raw HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The head, lower-cased.
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply { status, head, body }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end]).unwrap_or("0").trim();
        let n = usize::from_str_radix(size, 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + n]);
        body = &body[end + 2 + n + 2..];
    }
    out
}

async fn post_json(addr: SocketAddr, path: &str, body: Value) -> Reply {
    http(addr, "POST", path, body.to_string().as_bytes()).await
}

/// The tasks the frontends submitted, newest first.
async fn frontend_tasks(addr: SocketAddr) -> Vec<Value> {
    let (status, page) = get(addr, "/v1/tasks?owner=pythia-http").await;
    assert_eq!(status, 200, "{page}");
    page["tasks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execute_answers_as_pythia_cores_frontend() {
    let p = pythia(|_| {}).await;
    // A task file outside the tasks directory, which no tid may reach.
    std::fs::write(
        p.root.path().join("outside.task"),
        pythia_task("echo").to_string(),
    )
    .unwrap();

    let r = http(p.http(), "GET", "/execute", b"").await;
    assert_eq!(r.status, 405, "{r:?}");
    // pythia-core's json.Unmarshal wants exactly one value.
    for body in [&b"{not json"[..], b"", b"{\"tid\": \"echo\"} {}"] {
        let r = http(p.http(), "POST", "/execute", body).await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    let r = post_json(p.http(), "/execute", json!({"tid": 5})).await;
    assert_eq!(
        (r.status, &r.json()["field"]),
        (400, &json!("tid")),
        "{r:?}"
    );

    let r = post_json(p.http(), "/execute", json!({"tid": "nope"})).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.text().starts_with("Error 422: Unprocessable Entity {"),
        "{r:?}"
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    for tid in ["../outside", "..", "a/../../outside", "nul\u{0}"] {
        let r = post_json(p.http(), "/execute", json!({ "tid": tid })).await;
        assert_eq!(r.status, 422, "{tid:?}: {r:?}");
        assert!(r.text().contains("\"field\":\"tid\""), "{tid:?}: {r:?}");
    }
    assert!(frontend_tasks(p.http()).await.is_empty());

    // `response` is the task's input; the output is stdout then stderr, byte for byte, format
    // directives and all. Field names match as Go's decoder matches them.
    let r = post_json(
        p.http(),
        "/execute",
        json!({"Tid": "echo", "response": "hello %s %n\n"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello %s %n\nto stderr %s %d %%\n");
    assert_eq!(r.header("pythia-status"), Some("success"));
    let id = r.header("warren-task-id").unwrap().to_string();
    let (_, view) = get(p.http(), &format!("/v1/tasks/{id}")).await;
    assert_eq!(
        (&view["state"], &view["owner"]),
        (&json!("DONE"), &json!("pythia-http")),
        "{view}"
    );

    // Anything but a success answers an empty body, as pythia-core does.
    let r = post_json(p.http(), "/execute", json!({"tid": "crash"})).await;
    assert_eq!(
        (r.status, r.text().as_str(), r.header("pythia-status")),
        (200, "", Some("crash")),
        "{r:?}"
    );
    assert_eq!(frontend_tasks(p.http()).await.len(), 2);
}

/// A callback receiver on 127.0.0.1: answers `statuses` in turn (then 200) and passes each
/// body on.
async fn callback_server(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Value>) {
    #[derive(Clone)]
    struct Receiver {
        statuses: Arc<Vec<u16>>,
        hits: Arc<AtomicUsize>,
        tx: mpsc::UnboundedSender<Value>,
    }
    async fn receive(State(r): State<Receiver>, body: String) -> StatusCode {
        let hit = r.hits.fetch_add(1, Ordering::SeqCst);
        let _ =
            r.tx.send(serde_json::from_str(&body).unwrap_or(Value::String(body)));
        let status = r.statuses.get(hit).copied().unwrap_or(200);
        StatusCode::from_u16(status).unwrap()
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Receiver {
        statuses: Arc::new(statuses),
        hits: Arc::new(AtomicUsize::new(0)),
        tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/result", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/result", route_post(receive))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

async fn next_callback(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no callback within 20 s")
        .expect("callback server gone")
}

/// A script that waits for `gate` to exist, then says so.
fn gated(gate: &Path) -> String {
    format!(
        "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.02; done\necho opened\n",
        gate.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_execute_answers_as_pythia_server_synchronously() {
    let p = pythia(|_| {}).await;
    let r = post_json(
        p.http(),
        "/api/execute",
        json!({"tid": "echo", "input": "x\n"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"tid": "echo", "status": "success", "output": "x\nto stderr %s %d %%\n"})
    );
    let r = post_json(p.http(), "/api/execute", json!({"tid": "crash"})).await;
    assert_eq!(r.json()["status"], "crash", "{r:?}");
    // pythia-server's json.Decoder reads the first value and leaves the rest.
    let r = http(
        p.http(),
        "POST",
        "/api/execute",
        br#"{"tid": "echo", "input": "t\n"} and more"#,
    )
    .await;
    assert_eq!(r.json()["output"], "t\nto stderr %s %d %%\n", "{r:?}");

    // An environment no worker offers: Pythia's `fatal`, saying why.
    let mut busybox = pythia_task("echo");
    busybox["environment"] = json!("busybox");
    p.task("busybox", busybox, "#!/bin/sh\n");
    let r = post_json(p.http(), "/api/execute", json!({"tid": "busybox"})).await;
    assert_eq!(r.json()["status"], "fatal", "{r:?}");
    assert!(
        r.json()["output"].as_str().unwrap().contains("environment"),
        "{r:?}"
    );

    // Refusals: 400 naming the field, before any task exists.
    let before = frontend_tasks(p.http()).await.len();
    for (path, body, field) in [
        ("/api/execute", json!({"tid": "nope"}), "tid"),
        ("/api/execute", json!({"tid": "../tasks/echo"}), "tid"),
        ("/api/execute", json!({"tid": ["echo"]}), "tid"),
        ("/api/execute?async=maybe", json!({"tid": "echo"}), "async"),
        (
            "/api/execute?async=true",
            json!({"tid": "echo"}),
            "callback",
        ),
        (
            "/api/execute?async=1",
            json!({"tid": "echo", "callback": "file:///etc/passwd"}),
            "callback",
        ),
    ] {
        let r = post_json(p.http(), path, body.clone()).await;
        assert_eq!(
            (r.status, &r.json()["field"]),
            (400, &json!(field)),
            "{path} {body}: {r:?}"
        );
    }
    for body in [&b"[1]"[..], b"", b"{\"tid\": "] {
        let r = http(p.http(), "POST", "/api/execute", body).await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    let r = http(p.http(), "GET", "/api/execute", b"").await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(frontend_tasks(p.http()).await.len(), before);

    // A broken task file is the server's fault: 500, naming the file's field.
    std::fs::write(
        p.tasks.join("broken.task"),
        r#"{"taskfs": "echo", "limits": {"time": "soon"}}"#,
    )
    .unwrap();
    let r = post_json(p.http(), "/api/execute", json!({"tid": "broken"})).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text().contains("limits.time"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_execute_async_posts_the_result_to_the_callback() {
    let p = pythia(|_| {}).await;
    let gate = p.gate("open");
    p.task("gated", pythia_task("gated"), &gated(&gate));
    let (url, mut calls) = callback_server(Vec::new()).await;
    let r = post_json(
        p.http(),
        "/api/execute?async=true",
        json!({"tid": "gated", "input": "", "callback": url}),
    )
    .await;
    // Answered while the task cannot have ended: its gate is still shut.
    assert_eq!((r.status, r.text().as_str()), (200, ""), "{r:?}");
    assert_eq!(r.header("pythia-status"), None);
    let id: u64 = r.header("warren-task-id").unwrap().parse().unwrap();
    let (_, view) = get(p.http(), &format!("/v1/tasks/{id}")).await;
    assert!(
        view["state"] == "WAITING" || view["state"] == "IN PROGRESS",
        "{view}"
    );
    assert!(calls.try_recv().is_err());
    std::fs::write(&gate, "").unwrap();
    assert_eq!(
        next_callback(&mut calls).await,
        json!({"tid": "gated", "status": "success", "output": "opened\n"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_callback_is_retried_with_backoff_and_a_refusing_one_is_not() {
    let p = pythia(|_| {}).await;
    // Fails twice (503, then 500), then takes it.
    let (url, mut calls) = callback_server(vec![503, 500]).await;
    let r = post_json(
        p.http(),
        "/api/execute?async=T",
        json!({"tid": "echo", "input": "again\n", "callback": url}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let expected =
        json!({"tid": "echo", "status": "success", "output": "again\nto stderr %s %d %%\n"});
    for _ in 0..3 {
        assert_eq!(next_callback(&mut calls).await, expected);
    }
    // Delivered on the third attempt: nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(calls.try_recv().is_err());

    // A refusal (404) is final.
    let (url, mut calls) = callback_server(vec![404]).await;
    let r = post_json(
        p.http(),
        "/api/execute?async=true",
        json!({"tid": "echo", "callback": url}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    next_callback(&mut calls).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(calls.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_goes_away_does_not_lose_its_task() {
    let p = pythia(|_| {}).await;
    let gate = p.gate("open");
    p.task("gated", pythia_task("gated"), &gated(&gate));
    let mut stream = TcpStream::connect(p.http()).await.unwrap();
    let body = json!({"tid": "gated"}).to_string();
    let head = format!(
        "POST /api/execute HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let tasks = frontend_tasks(p.http()).await;
        if let Some(task) = tasks.first() {
            break task["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the task never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(stream);
    std::fs::write(&gate, "").unwrap();
    let done = until(p.http(), id, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["stdout"], "opened\n", "{done}");
}

/// A blocking execution waits for its task's time limit plus the margin, then answers Pythia's
/// temporary `error` naming the task, which goes on and is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_execution_waits_a_bounded_time_and_the_task_goes_on() {
    let p = pythia(|config| config.pythia.wait_margin = Duration::from_millis(200)).await;
    let gate = p.gate("open");
    // The host executor does not enforce the 1 s limit: only the wait bound ends the call.
    let mut task = pythia_task("gated");
    task["limits"]["time"] = json!(1);
    p.task("gated", task, &gated(&gate));
    let r = post_json(p.http(), "/api/execute", json!({"tid": "gated"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "error", "{r:?}");
    let id: u64 = r.header("warren-task-id").unwrap().parse().unwrap();
    assert!(
        r.json()["output"]
            .as_str()
            .unwrap()
            .contains(&format!("/v1/tasks/{id}")),
        "{r:?}"
    );
    std::fs::write(&gate, "").unwrap();
    let done = until(p.http(), id, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["stdout"], "opened\n", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_lists_tasks_environments_and_health_as_pythia_server() {
    let p = pythia(|_| {}).await;
    // Not tasks: another file, a directory named like a task file.
    std::fs::write(p.tasks.join("notes.txt"), "").unwrap();
    std::fs::create_dir(p.tasks.join("dir.task")).unwrap();
    let (status, tasks) = get(p.http(), "/api/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(tasks, json!([{"taskid": "crash"}, {"taskid": "echo"}]));

    let r = http(p.http(), "GET", "/api/tasks/echo", b"").await;
    assert_eq!((r.status, r.json()), (200, pythia_task("echo")), "{r:?}");
    let r = http(p.http(), "GET", "/api/tasks/nope", b"").await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = http(p.http(), "GET", "/api/tasks/..%2Fsecret", b"").await;
    assert_eq!(
        (r.status, &r.json()["field"]),
        (400, &json!("tid")),
        "{r:?}"
    );

    // Environments are those the workers offer.
    let host_env = json!({"envid": "host", "name": "host", "authors": [], "description": ""});
    let (status, envs) = get(p.http(), "/api/environments").await;
    assert_eq!((status, envs), (200, json!([host_env])));
    let envs_dir = tempfile::tempdir().unwrap();
    for name in ["python3", "busybox"] {
        std::fs::create_dir(envs_dir.path().join(name)).unwrap();
    }
    let dir = envs_dir.path().to_path_buf();
    let _second = spawn_worker(p.c.queue(), 1, host(), move |config| {
        config.environments_dir = Some(dir);
    });
    workers_in_state(p.http(), 2, "IDLE").await;
    let (_, envs) = get(p.http(), "/api/environments").await;
    assert_eq!(
        envs,
        json!([
            {"envid": "busybox", "name": "busybox", "authors": [], "description": ""},
            host_env,
            {"envid": "python3", "name": "python3", "authors": [], "description": ""},
        ])
    );

    let r = http(p.http(), "GET", "/api/health", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"running": true, "workers": 2}));
    assert_eq!(http(p.http(), "POST", "/api/health", b"").await.status, 405);
}

fn host() -> Arc<HostProcessExecutor> {
    Arc::new(HostProcessExecutor::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_that_run_tasks_need_the_token_when_tokens_are_required() {
    let tasks = tempfile::tempdir().unwrap();
    let dir = tasks.path().to_path_buf();
    let c = start(|config| {
        config.pythia.tasks_dir = Some(dir);
        config.require_tokens = true;
    })
    .await;
    write_task(tasks.path(), "echo", pythia_task("echo"), "#!/bin/sh\n");
    for (method, path) in [
        ("POST", "/execute"),
        ("POST", "/api/execute"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/echo"),
        ("GET", "/api/environments"),
    ] {
        let r = http(c.http(), method, path, br#"{"tid": "echo"}"#).await;
        assert_eq!(r.status, 401, "{method} {path}: {r:?}");
    }
    assert_eq!(http(c.http(), "GET", "/api/health", b"").await.status, 200);
    let bearer = format!("Bearer {}", c.coordinator.api_token);
    let (status, body) = request(
        c.http(),
        "GET",
        "/api/tasks",
        None,
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"[{"taskid":"echo"}]"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pythia_tasks_on_v1_tasks() {
    let p = pythia(|_| {}).await;
    let (status, view) = post(
        p.http(),
        "/v1/tasks?wait=true",
        &json!({"pythia_task": pythia_task("echo"), "input": "abc\n", "priority": 3}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "DONE", "{view}");
    assert_eq!(view["priority"], 3);
    assert_eq!(view["result"]["stdout"], "abc\n", "{view}");
    assert_eq!(view["result"]["stderr"], "to stderr %s %d %%\n");

    let mut bad_time = pythia_task("echo");
    bad_time["limits"]["time"] = json!("soon");
    let mut no_taskfs = pythia_task("echo");
    no_taskfs["taskfs"] = json!("");
    let mut escaping = pythia_task("echo");
    escaping["taskfs"] = json!("../echo");
    for (body, field) in [
        (
            json!({"pythia_task": pythia_task("echo"), "command": ["true"]}),
            "command",
        ),
        (
            json!({"pythia_task": pythia_task("echo"), "stdin": "x"}),
            "stdin",
        ),
        (
            json!({"pythia_task": pythia_task("echo"), "limits": {"memory": "1G"}}),
            "limits",
        ),
        (
            json!({"pythia_task": pythia_task("echo"), "task_files": [{"path": "control"}]}),
            "task_files",
        ),
        (json!({"pythia_task": bad_time}), "pythia_task.limits.time"),
        (json!({"pythia_task": no_taskfs}), "pythia_task.taskfs"),
        (json!({"pythia_task": escaping}), "pythia_task.taskfs"),
        (json!({"pythia_task": "echo"}), "pythia_task"),
        (
            json!({"pythia_task": pythia_task("echo"), "input": 5}),
            "input",
        ),
        (
            json!({"pythia_task": pythia_task("echo"), "bogus": 1}),
            "bogus",
        ),
    ] {
        let (status, answer) = post(p.http(), "/v1/tasks", &body.to_string()).await;
        assert_eq!(
            (status, &answer["field"]),
            (400, &json!(field)),
            "{body}: {answer}"
        );
    }
    // A plain task spec is untouched by the Pythia form, even when it mentions it.
    let (status, view) = post(
        p.http(),
        "/v1/tasks?wait=true",
        &json!({"command": ["echo", "\"pythia_task\""]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["result"]["stdout"], "\"pythia_task\"\n", "{view}");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The real path: the worker runs `/task/control` from the task filesystem in the sandbox, and
/// Pythia's statuses come back through `/api/execute`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandboxed_pythia_tasks_report_pythias_statuses() {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (namespaces, cgroups, mounts)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tasks = root.path().to_path_buf();
    let dir = tasks.clone();
    let c = start(|config| config.pythia.tasks_dir = Some(dir)).await;
    let sandbox = warren_sandbox::Sandbox::new(warren_sandbox::SandboxConfig::default()).unwrap();
    let exec = Arc::new(warren_worker::SandboxExecutor::new(
        sandbox,
        None,
        Some(tasks.clone()),
    ));
    let (_w, _h, _d) = spawn_worker(c.queue(), 2, exec, |_| {});
    workers_in_state(c.http(), 1, "IDLE").await;
    let limits =
        |time: u64, output: u64| json!({"time": time, "memory": 64, "disk": 50, "output": output});
    let file = |taskfs: &str, limits: Value| json!({"environment": "", "taskfs": taskfs, "limits": limits});
    write_task(
        &tasks,
        "echo",
        file("echo", limits(10, 1000)),
        "#!/bin/sh\ncat\necho err >&2\n",
    );
    write_task(
        &tasks,
        "slow",
        file("slow", limits(1, 1000)),
        "#!/bin/sh\necho started\nsleep 5\n",
    );
    write_task(
        &tasks,
        "chatty",
        file("chatty", limits(10, 10)),
        "#!/bin/sh\necho 0123456789abcdef\n",
    );
    for (tid, input, status, output) in [
        ("echo", "in\n", "success", "in\nerr\n"),
        // Pythia's timeout: the output so far.
        ("slow", "", "timeout", "started\n"),
        ("chatty", "", "overflow", "0123456789"),
    ] {
        let r = post_json(
            c.http(),
            "/api/execute",
            json!({"tid": tid, "input": input}),
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (200, json!({"tid": tid, "status": status, "output": output})),
            "{tid}: {r:?}"
        );
    }
}
