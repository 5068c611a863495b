//! The worker against a coordinator written in the test (raw protocol on 127.0.0.1), and the
//! sandbox executor for real when running as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod environments;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use warren_core::result::Status;
use warren_core::task::TaskSpec;
use warren_proto::{encode, Message, MessageReader, RunTask};
use warren_worker::{Config, Executor, InstantExecutorForBenchmarks, Worker};

fn config(addr: String, dir: &std::path::Path) -> Config {
    let mut config = Config::new(addr, dir.to_path_buf());
    config.capacity = 3;
    config.keepalive = Duration::from_secs(5);
    config
}

async fn accept(
    listener: &TcpListener,
) -> (
    MessageReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (r, w) = stream.into_split();
    (MessageReader::new(r, Duration::from_secs(5)), w)
}

async fn recv(reader: &mut MessageReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Message::KeepAlive) => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redials_with_doubling_backoff_until_the_coordinator_appears() {
    // Reserve a port, then leave it closed for a while.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(addr.to_string(), dir.path());
    config.backoff_initial = Duration::from_millis(32);
    config.backoff_max = Duration::from_millis(256);
    let worker = Worker::new(config, Arc::new(InstantExecutorForBenchmarks)).unwrap();
    let id = worker.id().to_string();
    let started = Instant::now();
    let handle = tokio::spawn(worker.run());
    // Dials at about 0, 32, 96, 224, 480, 736 ms...: open the port at 600 ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let (mut reader, _w) = accept(&listener).await;
    let connected = started.elapsed();
    // The next dial after 600 ms comes at most one capped delay (256 ms) later.
    assert!(
        connected < Duration::from_millis(600 + 256 + 150),
        "{connected:?}"
    );
    match recv(&mut reader).await {
        Some(Message::Register(reg)) => {
            assert_eq!(reg.id, id);
            assert_eq!(reg.capacity, 3);
            assert_eq!(
                reg.caps.get("os").map(String::as_str),
                Some(std::env::consts::OS)
            );
            assert_eq!(
                reg.caps.get("arch").map(String::as_str),
                Some(std::env::consts::ARCH)
            );
            assert!(reg.milli_cpus >= 1000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        recv(&mut reader).await,
        Some(Message::RegisterPool { capacity: 3 })
    );
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_kept_until_acknowledged_across_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(listener.local_addr().unwrap().to_string(), dir.path());
    config.backoff_initial = Duration::from_millis(5);
    let worker = Worker::new(config, Arc::new(InstantExecutorForBenchmarks)).unwrap();
    let handle = tokio::spawn(worker.run());
    let (mut reader, mut writer) = accept(&listener).await;
    assert!(matches!(
        recv(&mut reader).await,
        Some(Message::Register(_))
    ));
    assert!(matches!(
        recv(&mut reader).await,
        Some(Message::RegisterPool { .. })
    ));
    let spec = TaskSpec {
        command: vec!["/bin/true".into()],
        ..TaskSpec::default()
    };
    writer
        .write_all(&encode(&Message::RunTask(RunTask {
            id: "7".into(),
            spec: spec.clone(),
        })))
        .await
        .unwrap();
    match recv(&mut reader).await {
        Some(Message::Finished { id, result }) => {
            assert_eq!(id, "7");
            assert_eq!(result.status, Status::Success);
        }
        other => panic!("{other:?}"),
    }
    // The "coordinator" goes away without acknowledging.
    drop((reader, writer));
    let (mut reader, mut writer) = accept(&listener).await;
    match recv(&mut reader).await {
        Some(Message::Register(reg)) => {
            assert_eq!(reg.finished, vec!["7".to_string()]);
            assert!(reg.running.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        recv(&mut reader).await,
        Some(Message::RegisterPool { .. })
    ));
    assert!(matches!(recv(&mut reader).await, Some(Message::Finished { id, .. }) if id == "7"));
    // A repeated launch of a finished task resends its result instead of running it again.
    writer
        .write_all(&encode(&Message::RunTask(RunTask {
            id: "7".into(),
            spec,
        })))
        .await
        .unwrap();
    assert!(matches!(recv(&mut reader).await, Some(Message::Finished { id, .. }) if id == "7"));
    writer
        .write_all(&encode(&Message::Ack { id: "7".into() }))
        .await
        .unwrap();
    // Acknowledged: the next registration no longer lists it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop((reader, writer));
    let (mut reader, _writer) = accept(&listener).await;
    match recv(&mut reader).await {
        Some(Message::Register(reg)) => assert!(reg.finished.is_empty(), "{reg:?}"),
        other => panic!("{other:?}"),
    }
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythia_launch_is_answered_with_done() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(listener.local_addr().unwrap().to_string(), dir.path());
    let worker = Worker::new(config, Arc::new(InstantExecutorForBenchmarks)).unwrap();
    let handle = tokio::spawn(worker.run());
    let (mut reader, mut writer) = accept(&listener).await;
    recv(&mut reader).await;
    recv(&mut reader).await;
    writer.write_all(br#"{"message":"launch","id":"p1","task":{"environment":"busybox","taskfs":"t","limits":{"time":5,"memory":32,"disk":10,"output":100}},"input":""}"#).await.unwrap();
    match recv(&mut reader).await {
        Some(Message::Done(done)) => {
            assert_eq!(done.id, "p1");
            assert_eq!(done.status, "success");
        }
        other => panic!("{other:?}"),
    }
    handle.abort();
}

/// Stands for a machine whose sandbox fails every run (a cgroup it cannot create, say): the
/// worker's reaction is what is tested, not the sandbox.
struct SandboxAlwaysFails;

impl Executor for SandboxAlwaysFails {
    fn blocks(&self) -> bool {
        false
    }

    fn run(
        &self,
        _spec: &TaskSpec,
        _events: &mut dyn warren_sandbox::RunEvents,
        _abort: &warren_sandbox::AbortHandle,
    ) -> warren_core::result::RunResult {
        warren_core::result::RunResult::crash("creating the run's cgroup: Permission denied")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_sandbox_keeps_failing_reports_itself_failed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(listener.local_addr().unwrap().to_string(), dir.path());
    let worker = Worker::new(config, Arc::new(SandboxAlwaysFails)).unwrap();
    let handle = tokio::spawn(worker.run());
    let (mut reader, mut writer) = accept(&listener).await;
    recv(&mut reader).await;
    recv(&mut reader).await;
    let mut seen = Vec::new();
    for n in 0..warren_worker::CRASHES_BEFORE_FAILURE {
        writer
            .write_all(&encode(&Message::RunTask(RunTask {
                id: n.to_string(),
                spec: TaskSpec {
                    command: vec!["/bin/true".into()],
                    ..TaskSpec::default()
                },
            })))
            .await
            .unwrap();
        seen.push(recv(&mut reader).await);
    }
    assert!(
        seen.iter()
            .all(|m| matches!(m, Some(Message::Finished { result, .. }) if result.status == Status::Crash)),
        "{seen:?}"
    );
    match recv(&mut reader).await {
        Some(Message::Failure { reason }) => {
            assert!(reason.contains("Permission denied"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    handle.abort();
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn sandbox_executor_runs_tasks_for_real() {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root (namespaces, cgroups, mounts)");
        return;
    }
    let sandbox = warren_sandbox::Sandbox::new(warren_sandbox::SandboxConfig::default()).unwrap();
    let taskfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(taskfs.path().join("hello")).unwrap();
    std::fs::write(taskfs.path().join("hello/control"), "/task/hello.sh\n").unwrap();
    let script = taskfs.path().join("hello/hello.sh");
    std::fs::write(&script, "#!/bin/sh\nread x\necho \"control got $x\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let executor =
        warren_worker::SandboxExecutor::new(sandbox, None, Some(taskfs.path().to_path_buf()));
    let abort = warren_sandbox::AbortHandle::new();
    let spec: TaskSpec = serde_json::from_str(
        r#"{"command":["sh","-c","cat input.txt; echo $GREETING; exit 4"],"env":{"GREETING":"hi"},
            "files":[{"path":"input.txt","contents":"from a file\n"}],"limits":{"wall_time":"10s"}}"#,
    )
    .unwrap();
    let result = executor.run(&spec, &mut warren_sandbox::CollectOutput, &abort);
    assert_eq!(result.status, Status::Failed, "{result:?}");
    assert_eq!(result.exit_code, Some(4));
    assert_eq!(String::from_utf8_lossy(&result.stdout), "from a file\nhi\n");
    // Pythia style: /task/control of the task filesystem, input on stdin.
    let pythia = warren_proto::PythiaTask {
        taskfs: "hello".into(),
        ..Default::default()
    }
    .to_spec("42\n");
    let result = executor.run(&pythia, &mut warren_sandbox::CollectOutput, &abort);
    assert_eq!(
        String::from_utf8_lossy(&result.stdout),
        "control got 42\n",
        "{result:?}"
    );
    // Task files sent with the task: a worker step's failure is ignored, a master step's
    // stops the sequence with its exit code and names the line.
    let inline: TaskSpec = serde_json::from_str(
        r##"{"task_files":[
              {"path":"control","contents":"sh -c 'echo one'\n!sh -c 'exit 3'\n/task/bin/two 'a b'\nsh -c 'exit 5'\nsh -c 'echo never'\n"},
              {"path":"bin/two","contents":"#!/bin/sh\necho \"two: $1\"\n","executable":true}],
            "limits":{"wall_time":"10s"}}"##,
    )
    .unwrap();
    let result = executor.run(&inline, &mut warren_sandbox::CollectOutput, &abort);
    assert_eq!(String::from_utf8_lossy(&result.stdout), "one\ntwo: a b\n");
    assert_eq!(result.status, Status::Failed, "{result:?}");
    assert_eq!(result.exit_code, Some(5));
    assert!(
        result
            .message
            .as_deref()
            .is_some_and(|m| m.contains("control line 4")),
        "{result:?}"
    );
    // A control file that cannot be parsed is fatal and names the line.
    let bad: TaskSpec = serde_json::from_str(
        r#"{"task_files":[{"path":"control","contents":"echo ok\necho 'open\n"}]}"#,
    )
    .unwrap();
    let result = executor.run(&bad, &mut warren_sandbox::CollectOutput, &abort);
    assert_eq!(result.status, Status::Fatal, "{result:?}");
    assert!(
        result
            .message
            .as_deref()
            .is_some_and(|m| m.contains("line 2") && m.contains("unbalanced quotes")),
        "{result:?}"
    );
    // An environment the worker does not have is fatal, not a crash.
    let missing = TaskSpec {
        command: vec!["true".into()],
        environment: Some("alpine".into()),
        ..TaskSpec::default()
    };
    let result = executor.run(&missing, &mut warren_sandbox::CollectOutput, &abort);
    assert_eq!(result.status, Status::Fatal, "{result:?}");
}
