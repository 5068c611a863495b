//! Helpers: a coordinator on 127.0.0.1 with port 0, a tiny HTTP client, raw protocol peers, and
//! an executor that runs real (unsandboxed) processes so these tests run without root.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_coordinator::{Config, Coordinator};
use warren_core::result::{RunResult, Status};
use warren_core::task::TaskSpec;
use warren_proto::{encode, Message, MessageReader};
use warren_sandbox::{AbortHandle, RunEvents, Stream};
use warren_worker::{Executor, Worker};

pub struct TestCoordinator {
    pub coordinator: Coordinator,
    pub dir: tempfile::TempDir,
}

impl TestCoordinator {
    pub fn http(&self) -> SocketAddr {
        self.coordinator.http_addr
    }

    pub fn queue(&self) -> SocketAddr {
        self.coordinator.queue_addr
    }
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir.to_path_buf());
    config.http = "127.0.0.1:0".parse().unwrap();
    config.queue = "127.0.0.1:0".parse().unwrap();
    config.keepalive = Duration::from_secs(5);
    config.queue_config.orphan_grace = Duration::from_millis(500);
    config.durability = warren_coordinator::Durability::Process;
    config
}

pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestCoordinator {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    adjust(&mut config);
    let coordinator = Coordinator::start(config).await.unwrap();
    TestCoordinator { coordinator, dir }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body (chunked decoded).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    try_request(addr, method, path, body, headers)
        .await
        .expect("HTTP request failed")
}

/// [`request`], `None` when the connection fails.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let (status, body) = parse_response(&raw);
    (status != 0).then_some((status, body))
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = request(addr, "GET", path, None, &[]).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = request(addr, "POST", path, Some(body), &[]).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub async fn submit(addr: SocketAddr, spec: Value) -> u64 {
    let (status, body) = post(addr, "/v1/tasks", &spec.to_string()).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_u64().unwrap()
}

/// Polls a task until `pred` holds (tests only; the coordinator itself never polls).
pub async fn until(addr: SocketAddr, id: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(addr, &format!("/v1/tasks/{id}")).await;
        if pred(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Server-sent events of a task's output: (event, data) pairs, until the stream ends.
pub async fn sse(addr: SocketAddr, id: u64) -> Vec<(String, Value)> {
    let (status, body) = request(addr, "GET", &format!("/v1/tasks/{id}/output"), None, &[]).await;
    assert_eq!(status, 200, "{body}");
    parse_sse(&body)
}

pub fn parse_sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    event = e.to_string();
                } else if let Some(d) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(d);
                }
            }
            (!event.is_empty()).then(|| (event, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// A raw protocol peer (a Pythia pool or frontend written in the test, or a hand-driven worker).
pub struct Peer {
    pub reader: MessageReader<tokio::net::tcp::OwnedReadHalf>,
    pub writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (r, w) = stream.into_split();
        Peer {
            reader: MessageReader::new(r, Duration::from_secs(30)),
            writer: w,
        }
    }

    pub async fn send(&mut self, message: &Message) {
        self.writer.write_all(&encode(message)).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// The next message other than keep-alive, within 10 s.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.reader.next())
                .await
                .expect("timed out");
            match next {
                Ok(Some(Message::KeepAlive)) => continue,
                Ok(other) => return other,
                Err(_) => return None,
            }
        }
    }
}

/// Runs real processes on the host (no sandbox), forwarding output live. For tests without root.
#[derive(Debug, Default)]
pub struct HostProcessExecutor {
    pub runs: std::sync::atomic::AtomicU64,
}

enum Piece {
    Out(Stream, Vec<u8>),
    Closed,
}

impl Executor for HostProcessExecutor {
    fn run(&self, spec: &TaskSpec, events: &mut dyn RunEvents, abort: &AbortHandle) -> RunResult {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        let Some((program, args)) = spec.command.split_first() else {
            return RunResult::crash("no command");
        };
        let stdin = spec.stdin_bytes().unwrap_or_default();
        let mut child = match Command::new(program)
            .args(args)
            .stdin(if stdin.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return RunResult::crash(e.to_string()),
        };
        if let Some(mut pipe) = child.stdin.take() {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&stdin);
            });
        }
        let (tx, rx) = mpsc::channel();
        for (stream, mut pipe) in [
            (
                Stream::Stdout,
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            ),
            (Stream::Stderr, Box::new(child.stderr.take().unwrap())),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let _ = tx.send(Piece::Out(stream, buf[..n].to_vec()));
                        }
                    }
                }
                let _ = tx.send(Piece::Closed);
            });
        }
        drop(tx);
        let (mut stdout, mut stderr, mut closed, mut aborted) = (Vec::new(), Vec::new(), 0, false);
        while closed < 2 {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(Piece::Out(stream, data)) => {
                    events.output(stream, &data);
                    match stream {
                        Stream::Stdout => stdout.extend_from_slice(&data),
                        Stream::Stderr => stderr.extend_from_slice(&data),
                    }
                }
                Ok(Piece::Closed) => closed += 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if abort.is_aborted() && !aborted {
                aborted = true;
                let _ = child.kill();
            }
        }
        let status = child.wait().unwrap();
        let mut result = RunResult::crash(String::new());
        result.message = None;
        result.exit_code = status.code();
        use std::os::unix::process::ExitStatusExt;
        result.signal = status.signal();
        result.status = if aborted {
            Status::Abort
        } else if status.code() == Some(0) {
            Status::Success
        } else if status.code().is_some() {
            Status::Failed
        } else {
            Status::Killed
        };
        result.usage.wall_ms = started.elapsed().as_millis() as u64;
        result.usage.output_bytes = (stdout.len() + stderr.len()) as u64;
        result.stdout = stdout;
        result.stderr = stderr;
        result
    }
}

/// Starts an in-process worker; abort the handle to make it vanish (its connection closes).
pub fn spawn_worker(
    queue: SocketAddr,
    capacity: u32,
    executor: Arc<dyn Executor>,
    adjust: impl FnOnce(&mut warren_worker::Config),
) -> (String, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = warren_worker::Config::new(queue.to_string(), dir.path().to_path_buf());
    config.capacity = capacity;
    config.keepalive = Duration::from_secs(5);
    config.backoff_initial = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(200);
    config.idle = true;
    adjust(&mut config);
    let worker = Worker::new(config, executor).unwrap();
    let id = worker.id().to_string();
    (id, tokio::spawn(worker.run()), dir)
}

/// Waits until the coordinator lists `n` workers in `state`.
pub async fn workers_in_state(addr: SocketAddr, n: usize, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(addr, "/v1/workers").await;
        let count = body["workers"]
            .as_array()
            .map(|w| w.iter().filter(|w| w["state"] == state).count())
            .unwrap_or(0);
        if count >= n {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "never {n} workers {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Any method with a JSON body; the answer parsed as JSON when it is.
pub async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body) = request(addr, method, path, body, &[]).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Polls a worker until `pred` holds (tests only).
pub async fn worker_until(
    addr: SocketAddr,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = get(addr, &format!("/v1/workers/{id}")).await;
        if pred(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "worker {id} never became {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A hand worker (neither idle nor with hooks) registered and seen in MAINTENANCE, where it
/// waits for an operator: known to the coordinator, running nothing.
pub async fn maintenance_worker(
    c: &TestCoordinator,
    id: &str,
    capacity: u32,
    caps: &[(&str, &str)],
) -> Peer {
    let peer = hand_worker(c.queue(), id, capacity, caps, false, false).await;
    worker_until(c.http(), id, "MAINTENANCE", |v| v["state"] == "MAINTENANCE").await;
    peer
}

/// A hand-driven Warren worker: registers `id` with `caps`, `capacity` slots, asking to go IDLE
/// at once or not, answering hooks itself or not.
pub async fn hand_worker(
    queue: SocketAddr,
    id: &str,
    capacity: u32,
    caps: &[(&str, &str)],
    idle: bool,
    hooks: bool,
) -> Peer {
    let mut peer = Peer::connect(queue).await;
    peer.send(&Message::Register(warren_proto::Register {
        id: id.into(),
        capacity,
        caps: caps
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        idle,
        hooks,
        ..warren_proto::Register::default()
    }))
    .await;
    peer.send(&Message::RegisterPool { capacity }).await;
    peer
}

/// The next `-launch` a hand-driven worker gets: the task id.
pub async fn next_launch(peer: &mut Peer) -> u64 {
    loop {
        match peer.recv().await {
            Some(Message::RunTask(task)) => return task.id.parse().unwrap(),
            Some(_) => continue,
            None => panic!("connection closed while waiting for a launch"),
        }
    }
}

/// A hand-driven worker reports a task done (success).
pub async fn finish(peer: &mut Peer, id: u64) {
    let mut result = RunResult::crash(String::new());
    result.status = Status::Success;
    result.exit_code = Some(0);
    result.message = None;
    peer.send(&Message::Finished {
        id: id.to_string(),
        result,
    })
    .await;
}
