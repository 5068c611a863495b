//! Scheduling through the real coordinator: Boruta's priority and least-capable cases, owner
//! groups, updates of waiting tasks, and the listings' filters, sorting and pages.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

fn ids(page: &Value, key: &str) -> Vec<Value> {
    page[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect()
}

fn task_ids(page: &Value) -> Vec<u64> {
    ids(page, "tasks")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_on_a_single_slot_worker_start_in_borutas_order() {
    let c = start(|_| {}).await;
    // In MAINTENANCE until set IDLE, so the whole queue is there before anything starts.
    let mut w = maintenance_worker(&c, "one-slot", 1, &[]).await;
    let mut submitted = Vec::new();
    for priority in [7, 1, 2, 12, 3, 3] {
        submitted.push(submit(c.http(), json!({"command": ["true"], "priority": priority})).await);
    }
    let (status, _) = call(
        c.http(),
        "PUT",
        "/v1/workers/one-slot/state",
        Some(r#"{"state":"IDLE"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let mut started = Vec::new();
    for _ in 0..6 {
        let id = next_launch(&mut w).await;
        started.push(submitted.iter().position(|s| *s == id).unwrap() + 1);
        finish(&mut w, id).await;
    }
    assert_eq!(started, vec![2, 3, 5, 6, 1, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_goes_to_the_least_capable_worker_that_fits() {
    let c = start(|_| {}).await;
    let mut rich = hand_worker(
        c.queue(),
        "rich",
        1,
        &[("arch", "x86_64"), ("gpu", "1"), ("disk", "ssd")],
        true,
        false,
    )
    .await;
    let mut plain = hand_worker(c.queue(), "plain", 1, &[("arch", "x86_64")], true, false).await;
    workers_in_state(c.http(), 2, "IDLE").await;
    let first = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"arch": "x86_64"}}),
    )
    .await;
    assert_eq!(next_launch(&mut plain).await, first);
    // The plain worker is full: the next one that fits both goes to the rich one.
    let second = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"arch": "x86_64"}}),
    )
    .await;
    assert_eq!(next_launch(&mut rich).await, second);
    // Only the rich worker has a GPU: the task waits for it even though the plain one frees up.
    let gpu = submit(c.http(), json!({"command": ["true"], "caps": {"gpu": "1"}})).await;
    finish(&mut plain, first).await;
    until(c.http(), first, "DONE", |v| v["state"] == "DONE").await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{gpu}")).await;
    assert_eq!(view["state"], "WAITING", "{view}");
    finish(&mut rich, second).await;
    assert_eq!(next_launch(&mut rich).await, gpu);
    // `id` pins a worker by its id.
    let pinned = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"id": "plain"}}),
    )
    .await;
    assert_eq!(next_launch(&mut plain).await, pinned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_groups_limit_workers_and_a_group_change_starts_matching() {
    let c = start(|_| {}).await;
    let mut w = hand_worker(c.queue(), "lab-box", 1, &[], true, false).await;
    workers_in_state(c.http(), 1, "IDLE").await;
    let (status, view) = post(
        c.http(),
        "/v1/tasks",
        r#"{"command":["true"],"owner":"ann","groups":["lab"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(
        (view["owner"].clone(), view["groups"].clone()),
        (json!("ann"), json!(["lab"]))
    );
    let id = view["id"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{id}")).await;
    assert_eq!(
        view["state"], "WAITING",
        "no worker is in `lab` yet: {view}"
    );
    let (status, worker) = call(
        c.http(),
        "PUT",
        "/v1/workers/lab-box/groups",
        Some(r#"{"groups":["lab","ops","lab"]}"#),
    )
    .await;
    assert_eq!(
        (status, worker["groups"].clone()),
        (200, json!(["lab", "ops"]))
    );
    assert_eq!(next_launch(&mut w).await, id);
    // A task without groups may use any worker.
    let any = submit(c.http(), json!({"command": ["true"]})).await;
    finish(&mut w, id).await;
    assert_eq!(next_launch(&mut w).await, any);
    let (status, body) = call(
        c.http(),
        "PUT",
        "/v1/workers/lab-box/groups",
        Some(r#"{"groups":["no/slash"]}"#),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("groups[0]")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_with_bad_times_or_priorities_are_refused_naming_the_field() {
    let c = start(|_| {}).await;
    let cases = [
        (
            r#"{"command":["true"],"deadline":"2001-01-01T00:00:00Z"}"#,
            "deadline",
        ),
        (
            r#"{"command":["true"],"valid_after":"2999-01-02T00:00:00Z","deadline":"2999-01-01T00:00:00Z"}"#,
            "deadline",
        ),
        (r#"{"command":["true"],"priority":0}"#, "priority"),
        (r#"{"command":["true"],"priority":17}"#, "priority"),
        (r#"{"command":["true"],"groups":[""]}"#, "groups[0]"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(c.http(), "/v1/tasks", body).await;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!(field)),
            "{body}: {answer}"
        );
    }
    // Defaults: valid from now, deadline 30 days on.
    let (_, view) = post(c.http(), "/v1/tasks", r#"{"command":["true"]}"#).await;
    let valid_after: warren_core::task::Timestamp =
        view["valid_after"].as_str().unwrap().parse().unwrap();
    let deadline: warren_core::task::Timestamp =
        view["deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        deadline.unix_ms - valid_after.unix_ms,
        30 * 24 * 3600 * 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_a_waiting_task_and_conflicts_otherwise() {
    let c = start(|_| {}).await;
    let id = submit(c.http(), json!({"command": ["true"], "caps": {"gpu": "1"}})).await;
    let path = format!("/v1/tasks/{id}");
    let (status, view) = call(c.http(), "PATCH", &path, Some(r#"{"priority":3}"#)).await;
    assert_eq!(
        (status, view["priority"].clone()),
        (200, json!(3)),
        "{view}"
    );
    let far = "2999-01-01T00:00:00Z";
    let body = json!({"valid_after": "2998-01-01T00:00:00Z", "deadline": far}).to_string();
    let (status, view) = call(c.http(), "PATCH", &path, Some(&body)).await;
    assert_eq!(
        (status, view["deadline"].clone()),
        (200, json!("2999-01-01T00:00:00.000Z"))
    );
    for (body, field) in [
        (r#"{"deadline":"2001-01-01T00:00:00Z"}"#, "deadline"),
        (r#"{"valid_after":"2999-06-01T00:00:00Z"}"#, "deadline"),
        (r#"{"priority":0}"#, "priority"),
        (r#"{"command":["false"]}"#, "command"),
    ] {
        let (status, answer) = call(c.http(), "PATCH", &path, Some(body)).await;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!(field)),
            "{body}: {answer}"
        );
    }
    let (status, _) = call(
        c.http(),
        "PATCH",
        "/v1/tasks/9999",
        Some(r#"{"priority":3}"#),
    )
    .await;
    assert_eq!(status, 404);
    // New capabilities and valid-after: it starts on a worker that offers them.
    let mut w = hand_worker(c.queue(), "cpu-only", 1, &[("gpu", "0")], true, false).await;
    workers_in_state(c.http(), 1, "IDLE").await;
    let body = json!({"caps": {"gpu": "0"}, "valid_after": "2001-01-01T00:00:00Z"}).to_string();
    let (status, view) = call(c.http(), "PATCH", &path, Some(&body)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(next_launch(&mut w).await, id);
    let (status, answer) = call(c.http(), "PATCH", &path, Some(r#"{"priority":1}"#)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("IN PROGRESS"),
        "{answer}"
    );
    finish(&mut w, id).await;
    until(c.http(), id, "DONE", |v| v["state"] == "DONE").await;
    let (status, answer) = call(c.http(), "PATCH", &path, Some(r#"{"priority":1}"#)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("DONE"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_listing_filters_sorts_and_pages() {
    let c = start(|_| {}).await;
    // No worker: everything stays WAITING (or is cancelled below).
    let specs = [
        json!({"command": ["true"], "priority": 5, "owner": "ann", "groups": ["lab"]}),
        json!({"command": ["true"], "priority": 1, "owner": "bob", "caps": {"arch": "x86_64"}}),
        json!({"command": ["true"], "priority": 5, "owner": "ann"}),
        json!({"command": ["true"], "priority": 16, "owner": "bob", "groups": ["ops", "lab"]}),
        json!({"command": ["true"], "priority": 1, "owner": "cy", "deadline": "2999-01-01T00:00:00Z"}),
        json!({"command": ["true"], "priority": 8, "owner": "ann", "caps": {"arch": "x86_64"}}),
    ];
    let mut id = Vec::new();
    for spec in specs {
        id.push(submit(c.http(), spec).await);
    }
    let (status, _) = post(c.http(), &format!("/v1/tasks/{}/cancel", id[2]), "").await;
    assert_eq!(status, 200);
    let http = c.http();
    let list = move |query: String| async move { get(http, &format!("/v1/tasks?{query}")).await };
    let (_, page) = list("sort=priority&order=asc".into()).await;
    assert_eq!(
        task_ids(&page),
        vec![id[1], id[4], id[0], id[2], id[5], id[3]]
    );
    let (_, page) = list("sort=priority".into()).await;
    assert_eq!(
        task_ids(&page),
        vec![id[3], id[5], id[2], id[0], id[4], id[1]]
    );
    // Deadlines: the default (30 days) sorts before the far one.
    let (_, page) = list("sort=deadline&order=desc&limit=1".into()).await;
    assert_eq!(task_ids(&page), vec![id[4]]);
    let (_, page) = list("sort=state&order=asc&limit=6".into()).await;
    assert_eq!(*task_ids(&page).last().unwrap(), id[2]);
    // Pages: totals, remaining, and `next` to go on; `before` to go back.
    let (_, first) = list("sort=priority&order=asc&limit=2".into()).await;
    assert_eq!(
        (first["total"].clone(), first["remaining"].clone()),
        (json!(6), json!(4))
    );
    let next = first["next"].as_str().unwrap().to_string();
    let (_, second) = list(format!("sort=priority&order=asc&limit=2&after={next}")).await;
    assert_eq!(task_ids(&second), vec![id[0], id[2]]);
    assert_eq!(second["remaining"], 2);
    let (_, back) = list(format!("sort=priority&order=asc&limit=2&before={}", id[0])).await;
    assert_eq!(task_ids(&back), vec![id[1], id[4]]);
    // Filters.
    let check = |query: &'static str, want: Vec<u64>| async move {
        let (status, page) = list(format!("{query}&order=asc")).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(task_ids(&page), want, "{query}");
        assert_eq!(page["total"], want.len(), "{query}");
    };
    check("state=CANCELLED", vec![id[2]]).await;
    check(
        "state=WAITING,CANCELLED&owner=ann",
        vec![id[0], id[2], id[5]],
    )
    .await;
    check("priority=1,16", vec![id[1], id[3], id[4]]).await;
    check("groups=lab", vec![id[0], id[3]]).await;
    check("groups=ops,nothing", vec![id[3]]).await;
    check("caps=arch=x86_64", vec![id[1], id[5]]).await;
    let (_, page) = list(format!("ids={},{}&order=asc", id[3], id[1])).await;
    assert_eq!(task_ids(&page), vec![id[1], id[3]]);
    // Errors: an unknown sort key names it; a paginator that does not exist is 404.
    let (status, err) = list("sort=colour".into()).await;
    assert_eq!(
        (status, err["field"].clone()),
        (400, json!("sort")),
        "{err}"
    );
    assert!(err["error"].as_str().unwrap().contains("colour"), "{err}");
    let (status, err) = list("after=987654".into()).await;
    assert_eq!(status, 404, "{err}");
    let (status, _) = list("before=987654&sort=priority".into()).await;
    assert_eq!(status, 404);
    let (status, _) = list("limit=65535".into()).await;
    assert_eq!(status, 200);
    let (status, err) = list("limit=65536".into()).await;
    assert_eq!((status, err["field"].clone()), (400, json!("limit")));
    let (status, err) = list("after=1&before=2".into()).await;
    assert_eq!(status, 400, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_listing_filters_sorts_and_pages() {
    let c = start(|_| {}).await;
    let _a = hand_worker(c.queue(), "a-idle", 1, &[("gpu", "1")], true, false).await;
    let _b = hand_worker(c.queue(), "b-maint", 1, &[], false, false).await;
    let _c = hand_worker(c.queue(), "c-idle", 1, &[], true, false).await;
    workers_in_state(c.http(), 2, "IDLE").await;
    workers_in_state(c.http(), 1, "MAINTENANCE").await;
    let http = c.http();
    let list =
        move |query: &'static str| async move { get(http, &format!("/v1/workers?{query}")).await };
    let (_, page) = list("").await;
    assert_eq!(
        ids(&page, "workers"),
        vec![json!("a-idle"), json!("b-maint"), json!("c-idle")]
    );
    assert_eq!(page["total"], 3);
    let (_, page) = list("state=IDLE&order=desc").await;
    assert_eq!(
        ids(&page, "workers"),
        vec![json!("c-idle"), json!("a-idle")]
    );
    let (_, page) = list("sort=state").await;
    assert_eq!(ids(&page, "workers")[0], json!("b-maint"));
    let (_, page) = list("caps=gpu=1").await;
    assert_eq!(ids(&page, "workers"), vec![json!("a-idle")]);
    let (_, page) = list("limit=1&after=a-idle").await;
    assert_eq!(ids(&page, "workers"), vec![json!("b-maint")]);
    assert_eq!(
        (page["remaining"].clone(), page["next"].clone()),
        (json!(1), json!("b-maint"))
    );
    let (_, page) = list("before=c-idle").await;
    assert_eq!(
        ids(&page, "workers"),
        vec![json!("a-idle"), json!("b-maint")]
    );
    let (status, err) = list("sort=load").await;
    assert_eq!(
        (status, err["field"].clone()),
        (400, json!("sort")),
        "{err}"
    );
    let (status, _) = list("after=nobody").await;
    assert_eq!(status, 404);
    let (status, _) = get(c.http(), "/v1/workers/nobody").await;
    assert_eq!(status, 404);
}

fn unix_ms(view: &Value, field: &str) -> i64 {
    let text = view[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {view}"));
    text.parse::<warren_core::task::Timestamp>()
        .unwrap()
        .unix_ms
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A grace period ends only after the task has been unrunnable for all of it: one that some
/// worker could run for a while starts over when it becomes unrunnable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_starts_over_when_the_task_was_runnable_meanwhile() {
    const GRACE_MS: i64 = 1200;
    let c = start(|c| c.queue_config.invalid_after = Duration::from_millis(GRACE_MS as u64)).await;
    // A worker is known, so "no worker could run it" can be decided.
    let _other = maintenance_worker(&c, "plain", 1, &[]).await;
    let id = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"gpu": "a100"}}),
    )
    .await;
    // A worker that could run it registers (and stays in MAINTENANCE, so nothing starts) ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gpu = maintenance_worker(&c, "gpu", 1, &[("gpu", "a100")]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... and goes again: the task is unrunnable again from here.
    let (status, body) = call(c.http(), "DELETE", "/v1/workers/gpu", None).await;
    assert_eq!(status, 204, "{body}");
    drop(gpu);
    let unrunnable_again = now_ms();
    let view = until(c.http(), id, "INVALID", |v| v["state"] == "INVALID").await;
    assert!(
        unix_ms(&view, "finished_at") >= unrunnable_again + GRACE_MS - 100,
        "INVALID before a whole grace period of being unrunnable: {view}"
    );
    assert!(view["reason"].as_str().unwrap().contains("gpu"), "{view}");
}

/// A worker that registers again with other capabilities can leave waiting tasks that nothing
/// can run any more: they get their grace period and end INVALID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_a_changed_worker_no_longer_offers_become_invalid() {
    let c = start(|c| c.queue_config.invalid_after = Duration::from_millis(300)).await;
    let first = maintenance_worker(&c, "w", 1, &[("disk", "ssd")]).await;
    let id = submit(
        c.http(),
        json!({"command": ["true"], "caps": {"disk": "ssd"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{id}")).await;
    assert_eq!(view["state"], "WAITING", "a worker offers it: {view}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _second = hand_worker(c.queue(), "w", 1, &[("disk", "hdd")], false, false).await;
    worker_until(c.http(), "w", "re-registered", |v| {
        v["caps"]["disk"] == "hdd"
    })
    .await;
    let view = until(c.http(), id, "INVALID", |v| v["state"] == "INVALID").await;
    assert!(view["reason"].as_str().unwrap().contains("disk"), "{view}");
}

/// After a restart, the workers known from the store decide what can run: a waiting task none
/// of them offers gets its grace period and ends INVALID, without any worker reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_tasks_no_known_worker_offers_become_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let mut long_grace = config(dir.path());
    long_grace.queue_config.invalid_after = Duration::from_secs(3600);
    let first = warren_coordinator::Coordinator::start(long_grace)
        .await
        .unwrap();
    let w = hand_worker(
        first.queue_addr,
        "known",
        1,
        &[("arch", "x86_64")],
        false,
        false,
    )
    .await;
    worker_until(first.http_addr, "known", "MAINTENANCE", |v| {
        v["state"] == "MAINTENANCE"
    })
    .await;
    let id = submit(
        first.http_addr,
        json!({"command": ["true"], "caps": {"arch": "riscv"}}),
    )
    .await;
    drop(w);
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.stop();
    let mut short_grace = config(dir.path());
    short_grace.queue_config.invalid_after = Duration::from_millis(300);
    let second = warren_coordinator::Coordinator::start(short_grace)
        .await
        .unwrap();
    let view = until(second.http_addr, id, "INVALID", |v| v["state"] == "INVALID").await;
    assert!(view["reason"].as_str().unwrap().contains("arch"), "{view}");
    second.stop();
}

/// Boruta's least-capable case through the coordinator: with IDLE workers of (5 groups, 5
/// caps), (1 group, 7 caps) and (5 groups, 1 cap) that fit, and (2 groups, 0 caps) and (0
/// groups, 2 caps) that do not, successive single-slot requests take 5g1c, then 1g7c, then
/// 5g5c, then wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_requests_take_the_least_capable_fitting_worker_as_in_boruta() {
    let c = start(|_| {}).await;
    let caps = |n: usize| -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    };
    let shapes = [
        ("5g5c", 5, 5),
        ("1g7c", 1, 7),
        ("5g1c", 5, 1),
        ("2g0c", 2, 0),
        ("0g2c", 0, 2),
    ];
    let mut peers = Vec::new();
    for (name, groups, ncaps) in shapes {
        let owned = caps(ncaps);
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let peer = hand_worker(c.queue(), name, 1, &pairs, true, false).await;
        worker_until(c.http(), name, "registered", |v| v["id"] == name).await;
        let list: Vec<String> = (0..groups).map(|i| format!("g{i}")).collect();
        let (status, body) = call(
            c.http(),
            "PUT",
            &format!("/v1/workers/{name}/groups"),
            Some(&json!({ "groups": list }).to_string()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        peers.push((name, peer));
    }
    workers_in_state(c.http(), 5, "IDLE").await;
    let request = json!({"command": ["true"], "caps": {"k0": "v"}, "groups": ["g0"]});
    for expected in ["5g1c", "1g7c", "5g5c"] {
        let id = submit(c.http(), request.clone()).await;
        let view = until(c.http(), id, "IN PROGRESS", |v| v["state"] == "IN PROGRESS").await;
        assert_eq!(view["worker"], expected, "{view}");
    }
    let last = submit(c.http(), request).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = get(c.http(), &format!("/v1/tasks/{last}")).await;
    assert_eq!(view["state"], "WAITING", "no free worker fits: {view}");
    drop(peers);
}
