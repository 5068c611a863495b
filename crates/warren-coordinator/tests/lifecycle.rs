//! Worker lifecycle through the real coordinator: the state endpoints against hand-driven
//! workers, real workers running their hooks (failing, hanging, health checks, maintenance
//! messages), draining on maintenance, re-registration, and persistence across a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warren_coordinator::Coordinator;
use warren_proto::{HookReport, Message};

use crate::util::*;

async fn set_state(c: &TestCoordinator, id: &str, body: &str) -> (u16, Value) {
    call(
        c.http(),
        "PUT",
        &format!("/v1/workers/{id}/state"),
        Some(body),
    )
    .await
}

/// The next message of a kind the test drives, skipping launches of nothing.
async fn expect(peer: &mut Peer, kind: &str) -> Message {
    loop {
        let message = peer.recv().await.expect("connection closed");
        if message.kind() == kind {
            return message;
        }
    }
}

fn hook_report(hook: &str, ok: bool, output: &str, problem: Option<&str>) -> Message {
    Message::Hook(HookReport {
        hook: hook.into(),
        ok,
        output: output.into(),
        problem: problem.map(String::from),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_state_endpoints_follow_the_lifecycle() {
    let c = start(|_| {}).await;
    let mut w = hand_worker(c.queue(), "hand", 1, &[], false, true).await;
    let view = worker_until(c.http(), "hand", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    assert!(
        view["reason"].as_str().unwrap().contains("operator"),
        "{view}"
    );
    // MAINTENANCE -> PREPARE (the prepare hook runs on the worker) -> IDLE.
    let (status, view) = set_state(&c, "hand", r#"{"state":"IDLE"}"#).await;
    assert_eq!(
        (status, view["state"].clone()),
        (200, json!("PREPARE")),
        "{view}"
    );
    expect(&mut w, "-prepare").await;
    w.send(&hook_report("prepare", true, "ready\n", None)).await;
    let view = worker_until(c.http(), "hand", "IDLE", |v| v["state"] == "IDLE").await;
    assert_eq!(view["hooks"]["prepare"]["output"], "ready\n", "{view}");
    // Refused transitions name the current state and what it allows.
    let (status, err) = set_state(&c, "hand", r#"{"state":"IDLE"}"#).await;
    assert_eq!(status, 409, "{err}");
    let message = err["error"].as_str().unwrap();
    assert!(
        message.contains("IDLE") && message.contains("MAINTENANCE"),
        "{message}"
    );
    let (status, err) = call(c.http(), "DELETE", "/v1/workers/hand", None).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("IDLE"), "{err}");
    let (status, err) = set_state(&c, "hand", r#"{"state":"RUNNING"}"#).await;
    assert_eq!(
        (status, err["field"].clone()),
        (400, json!("state")),
        "{err}"
    );
    let (status, err) = set_state(&c, "hand", r#"{"state":"idle"}"#).await;
    assert_eq!(status, 400, "{err}");
    // IDLE -> BUSY -> maintenance hook with the message -> MAINTENANCE.
    let (status, view) = set_state(
        &c,
        "hand",
        r#"{"state":"MAINTENANCE","message":"disk swap"}"#,
    )
    .await;
    assert_eq!(
        (status, view["state"].clone()),
        (200, json!("BUSY")),
        "{view}"
    );
    match expect(&mut w, "-maintenance").await {
        Message::Maintenance { note } => assert_eq!(note, "disk swap"),
        other => panic!("{other:?}"),
    }
    w.send(&hook_report("maintenance", true, "stopped\n", None))
        .await;
    let view = worker_until(c.http(), "hand", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    assert_eq!(view["reason"], "disk swap", "{view}");
    // Setting MAINTENANCE again changes nothing.
    let (status, view) = set_state(&c, "hand", r#"{"state":"MAINTENANCE"}"#).await;
    assert_eq!((status, view["state"].clone()), (200, json!("MAINTENANCE")));
    // A failing prepare hook: FAILED with its reason kept.
    set_state(&c, "hand", r#"{"state":"IDLE"}"#).await;
    expect(&mut w, "-prepare").await;
    w.send(&hook_report(
        "prepare",
        false,
        "no disk\n",
        Some("exited with code 3"),
    ))
    .await;
    let view = worker_until(c.http(), "hand", "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{view}"
    );
    // A failure it reports itself, once back in service.
    set_state(&c, "hand", r#"{"state":"MAINTENANCE"}"#).await;
    expect(&mut w, "-maintenance").await;
    w.send(&hook_report("maintenance", true, "", None)).await;
    worker_until(c.http(), "hand", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    set_state(&c, "hand", r#"{"state":"IDLE"}"#).await;
    expect(&mut w, "-prepare").await;
    w.send(&hook_report("prepare", true, "", None)).await;
    worker_until(c.http(), "hand", "IDLE", |v| v["state"] == "IDLE").await;
    w.send(&Message::Failure {
        reason: "fan stopped".into(),
    })
    .await;
    let view = worker_until(c.http(), "hand", "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"].as_str().unwrap().contains("fan stopped"),
        "{view}"
    );
    // Deregistered from FAILED: gone, and told so.
    let (status, _) = call(c.http(), "DELETE", "/v1/workers/hand", None).await;
    assert_eq!(status, 204);
    let (status, _) = get(c.http(), "/v1/workers/hand").await;
    assert_eq!(status, 404);
    let (status, _) = set_state(&c, "nobody", r#"{"state":"IDLE"}"#).await;
    assert_eq!(status, 404);
}

/// Worker `re` gone (FAILED) and back with `capacity` and `caps`, which differ from before:
/// its connection and its view once it is in MAINTENANCE.
async fn back_changed(
    c: &TestCoordinator,
    gone: Peer,
    capacity: u32,
    caps: &[(&str, &str)],
) -> (Peer, Value) {
    drop(gone);
    worker_until(c.http(), "re", "FAILED", |v| v["state"] == "FAILED").await;
    let w = hand_worker(c.queue(), "re", capacity, caps, true, false).await;
    let view = worker_until(c.http(), "re", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    (w, view)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_changed_goes_to_maintenance_and_failed_unchanged_back_to_idle() {
    let c = start(|_| {}).await;
    let w = hand_worker(c.queue(), "re", 1, &[("disk", "hdd")], true, false).await;
    worker_until(c.http(), "re", "IDLE", |v| v["state"] == "IDLE").await;
    drop(w);
    let view = worker_until(c.http(), "re", "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"].as_str().unwrap().contains("closed"),
        "{view}"
    );
    // Back unchanged: PREPARE, then IDLE.
    let w = hand_worker(c.queue(), "re", 1, &[("disk", "hdd")], false, false).await;
    worker_until(c.http(), "re", "IDLE", |v| v["state"] == "IDLE").await;
    // Back with other capabilities: BUSY, then MAINTENANCE, waiting for an operator.
    let (w, view) = back_changed(&c, w, 1, &[("disk", "ssd")]).await;
    assert!(
        view["reason"].as_str().unwrap().contains("capabilities"),
        "{view}"
    );
    assert_eq!(view["caps"]["disk"], "ssd");
    // Taken back by an operator, then back with another capacity: the same.
    set_state(&c, "re", r#"{"state":"IDLE"}"#).await;
    worker_until(c.http(), "re", "IDLE", |v| v["state"] == "IDLE").await;
    let (_w, view) = back_changed(&c, w, 2, &[("disk", "ssd")]).await;
    let reason = view["reason"].as_str().unwrap();
    assert!(
        reason.contains("resources") && !reason.contains("capabilities"),
        "{view}"
    );
    assert_eq!(view["capacity"], 2, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_state_groups_and_hook_output_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Coordinator::start(config(dir.path())).await.unwrap();
    let (http, queue) = (first.http_addr, first.queue_addr);
    let mut w = hand_worker(queue, "kept", 1, &[], true, true).await;
    expect(&mut w, "-prepare").await;
    w.send(&hook_report("prepare", true, "prepared once\n", None))
        .await;
    worker_until(http, "kept", "IDLE", |v| v["state"] == "IDLE").await;
    call(
        http,
        "PUT",
        "/v1/workers/kept/groups",
        Some(r#"{"groups":["lab"]}"#),
    )
    .await;
    call(
        http,
        "PUT",
        "/v1/workers/kept/state",
        Some(r#"{"state":"MAINTENANCE","message":"moving racks"}"#),
    )
    .await;
    expect(&mut w, "-maintenance").await;
    w.send(&hook_report("maintenance", true, "parked\n", None))
        .await;
    worker_until(http, "kept", "MAINTENANCE", |v| v["state"] == "MAINTENANCE").await;
    drop(w);
    // Let the last changes reach the store, then restart on the same database.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.stop();
    let second = Coordinator::start(config(dir.path())).await.unwrap();
    let (_, view) = get(second.http_addr, "/v1/workers/kept").await;
    assert_eq!(view["state"], "MAINTENANCE", "{view}");
    assert_eq!(view["reason"], "moving racks");
    assert_eq!(view["groups"], json!(["lab"]));
    assert_eq!(view["hooks"]["prepare"]["output"], "prepared once\n");
    assert_eq!(view["hooks"]["maintenance"]["output"], "parked\n");
    second.stop();
}

fn hook_worker(
    c: &TestCoordinator,
    capacity: u32,
    hooks: warren_worker::Hooks,
) -> (String, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    spawn_worker(
        c.queue(),
        capacity,
        std::sync::Arc::new(HostProcessExecutor::default()),
        |config| {
            config.hooks = hooks;
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_worker_hooks_fail_hang_check_health_and_get_the_message() {
    let c = start(|_| {}).await;
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path().display().to_string();
    // A prepare hook that fails: FAILED, its output and exit kept.
    let (failing, h1, _d1) = hook_worker(
        &c,
        1,
        warren_worker::Hooks {
            prepare: Some("echo no network; exit 3".into()),
            ..warren_worker::Hooks::default()
        },
    );
    let view = worker_until(c.http(), &failing, "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"].as_str().unwrap().contains("code 3"),
        "{view}"
    );
    assert_eq!(view["hooks"]["prepare"]["output"], "no network\n", "{view}");
    h1.abort();
    // A prepare hook that hangs, with a child of its own: killed whole at its timeout.
    let (hanging, h2, _d2) = hook_worker(
        &c,
        1,
        warren_worker::Hooks {
            prepare: Some(format!("sleep 60 & echo $! > {s}/child; sleep 60")),
            // Its own timeout, under the 5 minutes every other hook gets.
            prepare_timeout: Some(Duration::from_millis(500)),
            ..warren_worker::Hooks::default()
        },
    );
    let view = worker_until(c.http(), &hanging, "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"].as_str().unwrap().contains("timed out"),
        "{view}"
    );
    let child = std::fs::read_to_string(scratch.path().join("child")).unwrap();
    let proc_dir = format!("/proc/{}", child.trim());
    let gone = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&proc_dir).exists()
        && !std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            Instant::now() < gone,
            "the hook's child {proc_dir} outlived its timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h2.abort();
    // A health check that starts failing while idle: FAILED with its reason.
    std::fs::write(scratch.path().join("healthy"), "").unwrap();
    let (checked, h3, _d3) = hook_worker(
        &c,
        1,
        warren_worker::Hooks {
            health_check: Some(format!("test -e {s}/healthy || {{ echo sick; exit 1; }}")),
            health_interval: Duration::from_millis(100),
            maintenance: Some("echo \"message=$1 env=$WARREN_MESSAGE\"".into()),
            ..warren_worker::Hooks::default()
        },
    );
    worker_until(c.http(), &checked, "IDLE", |v| v["state"] == "IDLE").await;
    worker_until(c.http(), &checked, "health-checked", |v| {
        v["hooks"]["health-check"]["ok"] == true
    })
    .await;
    std::fs::remove_file(scratch.path().join("healthy")).unwrap();
    let view = worker_until(c.http(), &checked, "FAILED", |v| v["state"] == "FAILED").await;
    assert!(
        view["reason"].as_str().unwrap().contains("health check"),
        "{view}"
    );
    assert_eq!(view["hooks"]["health-check"]["output"], "sick\n", "{view}");
    // Maintenance: its hook gets the operator's message.
    let path = format!("/v1/workers/{checked}/state");
    let (status, _) = call(
        c.http(),
        "PUT",
        &path,
        Some(r#"{"state":"MAINTENANCE","message":"new kernel"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let view = worker_until(c.http(), &checked, "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    assert_eq!(
        view["hooks"]["maintenance"]["output"], "message=new kernel env=new kernel\n",
        "{view}"
    );
    h3.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_drains_then_aborts_and_requeues_what_is_left() {
    let c = start(|c| c.queue_config.drain_timeout = Duration::from_millis(1500)).await;
    let (id, _h, _d) = spawn_worker(
        c.queue(),
        2,
        std::sync::Arc::new(HostProcessExecutor::default()),
        |_| {},
    );
    workers_in_state(c.http(), 1, "IDLE").await;
    let short = submit(c.http(), json!({"command": ["sleep", "0.5"]})).await;
    let long = submit(c.http(), json!({"command": ["sleep", "60"]})).await;
    for task in [short, long] {
        until(c.http(), task, "IN PROGRESS", |v| {
            v["state"] == "IN PROGRESS"
        })
        .await;
    }
    let path = format!("/v1/workers/{id}/state");
    let (status, view) = call(c.http(), "PUT", &path, Some(r#"{"state":"MAINTENANCE"}"#)).await;
    assert_eq!(
        (status, view["state"].clone()),
        (200, json!("BUSY")),
        "{view}"
    );
    // No new work while BUSY.
    let queued = submit(c.http(), json!({"command": ["true"]})).await;
    // The short one finishes within the drain timeout.
    let done = until(c.http(), short, "DONE", |v| v["state"] == "DONE").await;
    assert_eq!(done["result"]["status"], "success", "{done}");
    // The long one is aborted at the timeout and put back in the queue.
    let view = until(c.http(), long, "re-queued", |v| v["state"] == "WAITING").await;
    assert!(
        view["reason"].as_str().unwrap().contains("maintenance"),
        "{view}"
    );
    worker_until(c.http(), &id, "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{queued}")).await;
    assert_eq!(view["state"], "WAITING", "{view}");
    // Back in service, both run; the aborted run's result did not end the task.
    call(c.http(), "PUT", &path, Some(r#"{"state":"IDLE"}"#)).await;
    until(c.http(), queued, "DONE", |v| v["state"] == "DONE").await;
    until(c.http(), long, "IN PROGRESS", |v| {
        v["state"] == "IN PROGRESS"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{long}")).await;
    assert_eq!(
        (view["state"].clone(), view["attempts"].clone()),
        (json!("IN PROGRESS"), json!(2)),
        "the second run is the task's, not the aborted first: {view}"
    );
    let (status, _) = post(c.http(), &format!("/v1/tasks/{long}/cancel"), "").await;
    assert_eq!(status, 200);
    until(c.http(), long, "DONE", |v| v["state"] == "DONE").await;
}

/// The next message of `kind` within `within`.
async fn within(peer: &mut Peer, kind: &str, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, expect(peer, kind)).await.ok()
}

/// The hand-driven worker `d` answers its prepare hook and is IDLE.
async fn prepared(c: &TestCoordinator, w: &mut Peer) {
    expect(w, "-prepare").await;
    w.send(&hook_report("prepare", true, "", None)).await;
    worker_until(c.http(), "d", "IDLE", |v| v["state"] == "IDLE").await;
}

/// The hand-driven worker `d` reports its maintenance hook done and is in MAINTENANCE.
async fn maintenance_done(c: &TestCoordinator, w: &mut Peer) {
    w.send(&hook_report("maintenance", true, "", None)).await;
    worker_until(c.http(), "d", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
}

/// A drain timeout belongs to one BUSY period: the maintenance hook is sent once per period
/// (not again when the timeout passes while it runs), and an earlier period's timeout does not
/// cut a later one short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_belongs_to_its_own_busy_period() {
    const DRAIN: Duration = Duration::from_millis(1500);
    let c = start(|c| c.queue_config.drain_timeout = DRAIN).await;
    let mut w = hand_worker(c.queue(), "d", 1, &[], true, true).await;
    prepared(&c, &mut w).await;

    // First period: a task is running when maintenance is asked for; it ends at once, so the
    // hook runs, and it outlasts the drain timeout.
    let first = submit(c.http(), json!({"command": ["true"]})).await;
    assert_eq!(next_launch(&mut w).await, first);
    let (status, view) = set_state(&c, "d", r#"{"state":"MAINTENANCE"}"#).await;
    assert_eq!((status, view["state"].clone()), (200, json!("BUSY")));
    finish(&mut w, first).await;
    expect(&mut w, "-maintenance").await;
    let again = within(&mut w, "-maintenance", DRAIN + Duration::from_millis(500)).await;
    assert!(
        again.is_none(),
        "the maintenance hook was sent twice: {again:?}"
    );
    maintenance_done(&c, &mut w).await;

    // Second period, started well inside what would have been a stale timeout of a third.
    set_state(&c, "d", r#"{"state":"IDLE"}"#).await;
    prepared(&c, &mut w).await;
    let second = submit(c.http(), json!({"command": ["sleep", "60"]})).await;
    assert_eq!(next_launch(&mut w).await, second);
    set_state(&c, "d", r#"{"state":"MAINTENANCE"}"#).await;
    finish(&mut w, second).await;
    expect(&mut w, "-maintenance").await;
    maintenance_done(&c, &mut w).await;
    set_state(&c, "d", r#"{"state":"IDLE"}"#).await;
    prepared(&c, &mut w).await;
    let third = submit(c.http(), json!({"command": ["sleep", "60"]})).await;
    assert_eq!(next_launch(&mut w).await, third);
    // The second period's timeout would fall inside this one, had it not been dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_since = Instant::now();
    set_state(&c, "d", r#"{"state":"MAINTENANCE"}"#).await;
    expect(&mut w, "abort").await;
    assert!(
        busy_since.elapsed() >= DRAIN - Duration::from_millis(100),
        "aborted {:?} into a drain of {DRAIN:?}",
        busy_since.elapsed()
    );
}
