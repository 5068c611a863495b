//! The client against the real coordinator, started in this process on 127.0.0.1, with a real
//! worker connected over the queue protocol. The worker's executor is a scripted stand-in for
//! the sandbox (which needs root), so these run anywhere; the real sandbox is covered by the
//! `warren` binary's tests.

use std::sync::Arc;
use std::time::Duration;

use warren_client::{Client, OutputStream, TaskQuery, TaskSpec, TaskState};
use warren_coordinator::{Config, Coordinator};
use warren_core::result::{RunResult, Status};
use warren_sandbox::{AbortHandle, RunEvents, Stream};
use warren_worker::Executor;

/// Runs `command` as a tiny script instead of a program:
/// - `["exit", N]`: writes `out\n` to stdout and `err\n` to stderr, exits with N;
/// - `["hold", TEXT]`: writes TEXT to stdout, then runs until it is aborted.
struct Scripted;

impl Executor for Scripted {
    fn run(
        &self,
        spec: &warren_core::task::TaskSpec,
        events: &mut dyn RunEvents,
        abort: &AbortHandle,
    ) -> RunResult {
        let mut result = RunResult::crash("");
        result.message = None;
        let arg = spec.command.get(1).cloned().unwrap_or_default();
        match spec.command.first().map(String::as_str) {
            Some("exit") => {
                events.output(Stream::Stdout, b"out\n");
                events.output(Stream::Stderr, b"err\n");
                let code = arg.parse().unwrap_or(0);
                result.status = if code == 0 {
                    Status::Success
                } else {
                    Status::Failed
                };
                result.exit_code = Some(code);
                result.stdout = b"out\n".to_vec();
                result.stderr = b"err\n".to_vec();
            }
            Some("hold") => {
                events.output(Stream::Stdout, arg.as_bytes());
                // The executor interface offers no wake-up; a short sleep is enough for a test.
                while !abort.is_aborted() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                result.status = Status::Abort;
                result.signal = Some(9);
                result.stdout = arg.into_bytes();
            }
            _ => {
                result.status = Status::Fatal;
                result.message = Some(format!("no script {:?}", spec.command));
            }
        }
        result
    }
}

struct Cluster {
    client: Client,
    _coordinator: Coordinator,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut config = Config::new(dir.path().join("data"));
    config.http = ([127, 0, 0, 1], 0).into();
    config.queue = ([127, 0, 0, 1], 0).into();
    let coordinator = match Coordinator::start(config).await {
        Ok(c) => c,
        Err(e) => panic!("starting the coordinator: {e}"),
    };
    let mut worker_config = warren_worker::Config::new(
        coordinator.queue_addr.to_string(),
        dir.path().join("worker"),
    );
    worker_config.capacity = 2;
    worker_config.idle = true;
    let worker = match warren_worker::Worker::new(worker_config, Arc::new(Scripted)) {
        Ok(w) => w,
        Err(e) => panic!("starting the worker: {e}"),
    };
    tokio::spawn(worker.run());
    let client = match Client::new(&format!("http://{}", coordinator.http_addr)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    Cluster {
        client,
        _coordinator: coordinator,
        _dir: dir,
    }
}

fn spec(command: &[&str]) -> TaskSpec {
    TaskSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..TaskSpec::default()
    }
}

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within 60 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_streams_ends_and_is_listed() {
    let c = cluster().await;
    let id = match within("submit", c.client.submit(&spec(&["exit", "3"]))).await {
        Ok(id) => id,
        Err(e) => panic!("submit: {e}"),
    };
    let mut output = match within("output", c.client.output(id)).await {
        Ok(o) => o,
        Err(e) => panic!("output: {e}"),
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    while let Some(chunk) = within("next", output.next())
        .await
        .unwrap_or_else(|e| panic!("next: {e}"))
    {
        match chunk.stream {
            OutputStream::Stdout => out.extend(chunk.data),
            OutputStream::Stderr => err.extend(chunk.data),
        }
    }
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let finished = output.finished().cloned();
    assert_eq!(finished.as_ref().map(|t| t.state), Some(TaskState::Done));
    assert_eq!(
        finished
            .as_ref()
            .and_then(|t| t.result.as_ref())
            .map(|r| r.process_exit_code()),
        Some(3)
    );

    let waited = within("wait", c.client.wait(id))
        .await
        .map(|t| (t.state, t.worker.is_some()));
    assert_eq!(waited.ok(), Some((TaskState::Done, true)));

    // After the end the output is replayed in full, followed or not.
    for follow in [true, false] {
        let output = if follow {
            c.client.output(id).await
        } else {
            c.client.output_so_far(id).await
        };
        let chunks = match output {
            Ok(o) => within("replay", o.collect())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let bytes: Result<usize, String> = chunks.map(|c| c.iter().map(|c| c.data.len()).sum());
        assert_eq!(bytes, Ok(8), "follow {follow}");
    }

    let done = TaskQuery {
        state: Some(TaskState::Done),
        ..TaskQuery::default()
    };
    // An end is published as soon as the worker reports it and committed just after; the
    // listing reads what is committed, so it may lag by a commit: wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = within("tasks", c.client.tasks(&done))
            .await
            .map(|p| p.tasks.iter().map(|t| t.id).collect::<Vec<_>>());
        if page.as_ref().is_ok_and(|ids| !ids.is_empty()) || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(page.ok(), Some(vec![id]));
    let workers = within("workers", c.client.workers())
        .await
        .map(|w| w.iter().map(|w| w.capacity).collect::<Vec<_>>());
    assert_eq!(workers.ok(), Some(vec![2]));

    let finished = within(
        "submit and wait",
        c.client.submit_and_wait(&spec(&["exit", "0"])),
    )
    .await;
    assert_eq!(
        finished.ok().and_then(|t| t.result).map(|r| r.status),
        Some(Status::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_aborts_it_on_its_worker() {
    let c = cluster().await;
    let id = match within("submit", c.client.submit(&spec(&["hold", "started\n"]))).await {
        Ok(id) => id,
        Err(e) => panic!("submit: {e}"),
    };
    let mut output = match within("output", c.client.output(id)).await {
        Ok(o) => o,
        Err(e) => panic!("output: {e}"),
    };
    // The first chunk arrives while the task is running.
    let first = within("first chunk", output.next())
        .await
        .ok()
        .flatten()
        .map(|c| c.data);
    assert_eq!(first, Some(b"started\n".to_vec()));
    let running = within("task", c.client.task(id)).await.map(|t| t.state);
    assert_eq!(running.ok(), Some(TaskState::InProgress));

    assert!(within("cancel", c.client.cancel(id)).await.is_ok());
    let rest = within("rest", output.next())
        .await
        .map_err(|e| e.to_string());
    assert_eq!(rest, Ok(None));
    let task = within("wait", c.client.wait(id)).await;
    let ended = task.ok().map(|t| (t.state, t.result.map(|r| r.status)));
    assert_eq!(ended, Some((TaskState::Done, Some(Status::Abort))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_coordinators_refusals_name_the_field() {
    let c = cluster().await;
    let mut bad = spec(&["exit", "0"]);
    bad.limits.memory = Some(1);
    let err = within("submit", c.client.submit(&bad)).await.err();
    assert_eq!(err.as_ref().and_then(|e| e.status()), Some(400));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("limits.memory"), "{text}");
    // The field is named once, not repeated by the client.
    assert_eq!(text.matches("limits.memory").count(), 1, "{text}");

    let err = within("task", c.client.task(999_999)).await.err();
    assert_eq!(err.as_ref().and_then(|e| e.status()), Some(404));
}
