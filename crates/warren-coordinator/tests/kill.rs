//! A coordinator process SIGKILLed several times while 1000 tasks go through it.
//!
//! The coordinator runs in a child process: this same test binary, re-executed with
//! `WARREN_TEST_CHILD_COORDINATOR` set, runs only [`child_coordinator`], which serves until it is
//! killed. Workers run in this process and survive the kills, re-dialling with back-off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warren_core::result::{RunResult, Status};
use warren_core::task::TaskSpec;
use warren_sandbox::{AbortHandle, RunEvents};
use warren_worker::Executor;

use crate::util::{get, spawn_worker, try_request};

const CHILD_ENV: &str = "WARREN_TEST_CHILD_COORDINATOR";

/// Not a test of its own: the body of the child coordinator process.
#[test]
fn child_coordinator() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, http, queue) = {
        let mut parts = spec.split(',');
        let dir = parts.next().unwrap().to_string();
        let http: SocketAddr = parts.next().unwrap().parse().unwrap();
        let queue: SocketAddr = parts.next().unwrap().parse().unwrap();
        (dir, http, queue)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut config = warren_coordinator::Config::new(dir.into());
        config.http = http;
        config.queue = queue;
        config.keepalive = Duration::from_millis(200);
        config.queue_config.orphan_grace = Duration::from_millis(600);
        let coordinator = warren_coordinator::Coordinator::start(config)
            .await
            .unwrap();
        coordinator.wait().await;
    });
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn spawn_child(dir: &std::path::Path, http: SocketAddr, queue: SocketAddr) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill::child_coordinator",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{},{http},{queue}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn healthy(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(http).await.is_ok()
            && get(http, "/healthz").await.0 == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "coordinator never came up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Succeeds after a moment, counting how often each task ran.
#[derive(Default)]
struct CountingExecutor {
    runs: Mutex<HashMap<String, u32>>,
    total: AtomicU64,
}

impl Executor for CountingExecutor {
    fn run(&self, spec: &TaskSpec, _events: &mut dyn RunEvents, _abort: &AbortHandle) -> RunResult {
        std::thread::sleep(Duration::from_millis(2));
        let key = spec.command.join(" ");
        *self.runs.lock().unwrap().entry(key.clone()).or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut result = RunResult::crash(String::new());
        result.status = Status::Success;
        result.message = None;
        result.exit_code = Some(0);
        result.stdout = key.into_bytes();
        result
    }
}

/// Submits with the raw client; `None` when the coordinator died before answering.
async fn try_submit(http: SocketAddr, n: usize) -> Option<u64> {
    let body = json!({"command": ["task", n.to_string()]}).to_string();
    let attempt = tokio::time::timeout(Duration::from_secs(5), async move {
        // The key makes a retry of a submission whose answer was lost return the same task.
        let key = format!("task-{n}");
        let (status, body) = try_request(
            http,
            "POST",
            "/v1/tasks",
            Some(&body),
            &[("Idempotency-Key", &key)],
        )
        .await?;
        (status == 201 || status == 200)
            .then(|| serde_json::from_str::<Value>(&body).ok()?["id"].as_u64())
            .flatten()
    });
    attempt.await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_sigkilled_during_1000_tasks_loses_nothing() {
    const TASKS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (http, queue) = (free_port(), free_port());
    let mut child = spawn_child(dir.path(), http, queue);
    healthy(http).await;
    let exec = Arc::new(CountingExecutor::default());
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(spawn_worker(queue, 8, exec.clone(), |config| {
            config.keepalive = Duration::from_millis(200);
            config.backoff_initial = Duration::from_millis(5);
            config.backoff_max = Duration::from_millis(100);
        }));
    }
    // Submit from 8 concurrent clients; a submission cut by a kill is retried.
    let accepted = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
    let next = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for _ in 0..8 {
        let (accepted, next) = (accepted.clone(), next.clone());
        submitters.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                if n >= TASKS {
                    return;
                }
                loop {
                    match try_submit(http, n).await {
                        Some(id) => {
                            accepted.lock().unwrap().insert(id, n);
                            break;
                        }
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }));
    }
    // Kill it three times while tasks flow.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_child(dir.path(), http, queue);
        healthy(http).await;
    }
    for s in submitters {
        s.await.unwrap();
    }
    // Every task the API accepted ends DONE, exactly once, with its own result.
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), TASKS);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<u64> = accepted.keys().copied().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let (status, view) = get(http, &format!("/v1/tasks/{id}")).await;
            if status == 200 && view["state"] == "DONE" {
                assert_eq!(
                    view["result"]["stdout"],
                    format!("task {}", accepted[&id]),
                    "{view}"
                );
            } else {
                assert_eq!(status, 200, "{view}");
                let state = &view["state"];
                assert!(
                    state == "WAITING" || state == "IN PROGRESS",
                    "ended without its result: {view}"
                );
                still.push(id);
            }
        }
        pending = still;
        if Instant::now() >= deadline {
            let (_, first) = get(http, &format!("/v1/tasks/{}", pending[0])).await;
            let (_, workers) = get(http, "/v1/workers").await;
            panic!(
                "{} tasks never finished: {:?}; the first: {first}; workers: {workers}",
                pending.len(),
                &pending[..pending.len().min(10)]
            );
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Nothing else is stuck: every stored task (including submissions cut by a kill) ended.
    let (_, waiting) = get(http, "/v1/tasks?state=WAITING").await;
    let (_, running) = get(http, "/v1/tasks?state=IN%20PROGRESS").await;
    assert_eq!(waiting["tasks"], json!([]));
    assert_eq!(running["tasks"], json!([]));
    // Retried submissions carry the same Idempotency-Key: one stored task per command.
    let mut stored: HashMap<String, u32> = HashMap::new();
    let mut after = String::new();
    loop {
        let (_, page) = get(http, &format!("/v1/tasks?order=asc&limit=1000{after}")).await;
        for t in page["tasks"].as_array().unwrap() {
            assert_eq!(t["state"], "DONE", "{t}");
            let command: Vec<&str> = t["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            *stored.entry(command.join(" ")).or_default() += 1;
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let runs = exec.runs.lock().unwrap();
    let needless: u32 = runs
        .iter()
        .map(|(cmd, n)| n.saturating_sub(stored.get(cmd).copied().unwrap_or(0)))
        .sum();
    let resubmitted: u32 = stored.values().map(|n| n - 1).sum();
    eprintln!(
        "1000 tasks through 3 SIGKILLs: {} runs, {resubmitted} submissions stored twice, {needless} needless re-runs",
        exec.total.load(Ordering::SeqCst)
    );
    assert_eq!(needless, 0, "tasks ran more than once without need");
    assert_eq!(resubmitted, 0, "a retried submission was stored twice");
    child.kill().unwrap();
    child.wait().unwrap();
    for (_, handle, _) in workers {
        handle.abort();
    }
}
