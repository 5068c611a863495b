//! One conformance suite, run against every store implementation.

use warren_coordinator::store::{
    Durability, ListQuery, MemoryStore, Origin, SqliteStore, Store, TaskRecord, Write,
};
use warren_core::result::{RunResult, Status};
use warren_core::task::{TaskSpec, TaskState, Timestamp, WorkerState, WorkerView};

fn record(id: u64, owner: &str) -> TaskRecord {
    TaskRecord {
        id,
        state: TaskState::Waiting,
        spec: TaskSpec {
            command: vec!["echo".into(), id.to_string()],
            ..TaskSpec::default()
        },
        owner: owner.into(),
        priority: 8,
        queue_order: id as i64,
        worker: None,
        attempts: 0,
        created_at: Timestamp::from_unix_ms(1000 + id as i64),
        started_at: None,
        finished_at: None,
        reason: None,
        result: None,
        origin: Origin::Api,
        idempotency_key: None,
    }
}

fn ids(records: &[TaskRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

fn conformance(store: &mut dyn Store) {
    assert_eq!(store.max_task_id().unwrap(), 0);
    let writes: Vec<Write> = (1..=5)
        .map(|i| Write::Insert(Box::new(record(i, if i % 2 == 0 { "ann" } else { "bob" }))))
        .collect();
    store.apply(&writes).unwrap();
    assert_eq!(store.max_task_id().unwrap(), 5);
    assert_eq!(store.task(3).unwrap(), Some(record(3, "bob")));
    assert_eq!(store.task(9).unwrap(), None);
    let t = Timestamp::from_unix_ms(5000);
    let mut result = RunResult::crash("x");
    result.status = Status::Success;
    store
        .apply(&[
            Write::Dispatch {
                id: 1,
                worker: "w1".into(),
                attempts: 1,
                started_at: t,
            },
            Write::Dispatch {
                id: 2,
                worker: "w2".into(),
                attempts: 1,
                started_at: t,
            },
            Write::Requeue {
                id: 2,
                queue_order: -1,
                reason: "lost".into(),
            },
            Write::Finish {
                id: 1,
                state: TaskState::Done,
                worker: None,
                result: Some(Box::new(result.clone())),
                reason: None,
                finished_at: t.plus_ms(5),
            },
            Write::Finish {
                id: 5,
                state: TaskState::Cancelled,
                worker: None,
                result: None,
                reason: Some("c".into()),
                finished_at: t,
            },
        ])
        .unwrap();
    let one = store.task(1).unwrap().unwrap();
    assert_eq!(
        (one.state, one.worker.as_deref(), one.attempts),
        (TaskState::Done, Some("w1"), 1)
    );
    assert_eq!(one.result, Some(result));
    assert_eq!(one.finished_at, Some(t.plus_ms(5)));
    let two = store.task(2).unwrap().unwrap();
    assert_eq!(
        (two.state, two.worker, two.queue_order),
        (TaskState::Waiting, None, -1)
    );
    assert_eq!(ids(&store.active_tasks().unwrap()), vec![2, 3, 4]);
    // Listings: newest first by default, filters, keyset pagination, no results.
    let q = |f: &dyn Fn(&mut ListQuery)| {
        let mut query = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        f(&mut query);
        query
    };
    assert_eq!(ids(&store.list(&q(&|_| {})).unwrap()), vec![5, 4, 3, 2, 1]);
    assert!(store
        .list(&q(&|_| {}))
        .unwrap()
        .iter()
        .all(|r| r.result.is_none()));
    assert_eq!(ids(&store.list(&q(&|q| q.limit = 2)).unwrap()), vec![5, 4]);
    assert_eq!(
        ids(&store
            .list(&q(&|q| {
                q.limit = 2;
                q.after = Some(4)
            }))
            .unwrap()),
        vec![3, 2]
    );
    assert_eq!(
        ids(&store
            .list(&q(&|q| {
                q.ascending = true;
                q.after = Some(3)
            }))
            .unwrap()),
        vec![4, 5]
    );
    assert_eq!(
        ids(&store.list(&q(&|q| q.owner = Some("ann".into()))).unwrap()),
        vec![4, 2]
    );
    assert_eq!(
        ids(&store
            .list(&q(&|q| q.state = Some(TaskState::Waiting)))
            .unwrap()),
        vec![4, 3, 2]
    );
    assert_eq!(
        ids(&store.list(&q(&|q| q.worker = Some("w1".into()))).unwrap()),
        vec![1]
    );
    // Workers: upserted by id.
    let mut view = WorkerView {
        id: "w1".into(),
        state: WorkerState::Idle,
        capacity: 2,
        running: 0,
        memory_bytes: 1,
        milli_cpus: 1000,
        caps: [("arch".to_string(), "x86_64".to_string())].into(),
        environments: vec![],
        address: None,
        connected_at: Some(t),
        last_seen: None,
        reason: None,
    };
    store
        .apply(&[Write::Worker(Box::new(view.clone()))])
        .unwrap();
    view.state = WorkerState::Failed;
    store
        .apply(&[Write::Worker(Box::new(view.clone()))])
        .unwrap();
    assert_eq!(store.workers().unwrap(), vec![view]);
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warren.db");
    conformance(&mut SqliteStore::open(&path, Durability::Full).unwrap());
    // Everything is on disk for the next opener.
    let mut reopened = SqliteStore::open(&path, Durability::Full).unwrap();
    assert_eq!(reopened.max_task_id().unwrap(), 5);
    assert_eq!(ids(&reopened.active_tasks().unwrap()), vec![2, 3, 4]);
}

#[test]
fn memory_store_conforms() {
    conformance(&mut MemoryStore::new());
}
