//! One conformance suite, run against every store implementation.

use warren_coordinator::store::{
    Durability, ListPage, ListQuery, MemoryStore, Origin, Paginator, SortKey, SqliteStore, Store,
    StoreError, TaskRecord, Write,
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

fn page_ids(page: &ListPage) -> Vec<u64> {
    ids(&page.records)
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
    assert_eq!(
        page_ids(&store.list(&q(&|_| {})).unwrap()),
        vec![5, 4, 3, 2, 1]
    );
    assert!(store
        .list(&q(&|_| {}))
        .unwrap()
        .records
        .iter()
        .all(|r| r.result.is_none()));
    let first = store.list(&q(&|q| q.limit = 2)).unwrap();
    assert_eq!(
        (page_ids(&first), first.total, first.remaining),
        (vec![5, 4], 5, 3)
    );
    let second = store
        .list(&q(&|q| {
            q.limit = 2;
            q.paginator = Some(Paginator::After(4))
        }))
        .unwrap();
    assert_eq!(
        (page_ids(&second), second.total, second.remaining),
        (vec![3, 2], 5, 1)
    );
    let back = store
        .list(&q(&|q| {
            q.limit = 2;
            q.paginator = Some(Paginator::Before(3))
        }))
        .unwrap();
    assert_eq!((page_ids(&back), back.remaining), (vec![5, 4], 0));
    assert_eq!(
        page_ids(
            &store
                .list(&q(&|q| {
                    q.ascending = true;
                    q.paginator = Some(Paginator::After(3))
                }))
                .unwrap()
        ),
        vec![4, 5]
    );
    assert!(matches!(
        store.list(&q(&|q| q.paginator = Some(Paginator::After(99)))),
        Err(StoreError::NoSuchTask(99))
    ));
    assert_eq!(
        page_ids(&store.list(&q(&|q| q.owner = Some("ann".into()))).unwrap()),
        vec![4, 2]
    );
    assert_eq!(
        page_ids(
            &store
                .list(&q(&|q| q.states = vec![TaskState::Waiting]))
                .unwrap()
        ),
        vec![4, 3, 2]
    );
    assert_eq!(
        page_ids(&store.list(&q(&|q| q.worker = Some("w1".into()))).unwrap()),
        vec![1]
    );
    // An update of a waiting task's scheduling fields.
    let mut spec = store.task(3).unwrap().unwrap().spec;
    spec.priority = Some(2);
    store
        .apply(&[Write::Update {
            id: 3,
            priority: 2,
            spec: Box::new(spec.clone()),
        }])
        .unwrap();
    let three = store.task(3).unwrap().unwrap();
    assert_eq!((three.priority, three.spec), (2, spec));
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
        groups: vec!["lab".into()],
        hooks: Default::default(),
    };
    store
        .apply(&[Write::Worker(Box::new(view.clone()))])
        .unwrap();
    view.state = WorkerState::Failed;
    store
        .apply(&[Write::Worker(Box::new(view.clone()))])
        .unwrap();
    assert_eq!(store.workers().unwrap(), vec![view]);
    store.apply(&[Write::RemoveWorker("w1".into())]).unwrap();
    assert_eq!(store.workers().unwrap(), vec![]);
}

/// Tasks that differ in every sortable and filterable field, with ties.
fn varied(n: u64) -> Vec<TaskRecord> {
    (1..=n)
        .map(|i| {
            let mut r = record(i, ["ann", "bob", "cy"][(i % 3) as usize]);
            r.priority = [3, 8, 8, 1, 16][(i % 5) as usize];
            r.state = TaskState::ALL[(i % 4) as usize];
            r.spec.deadline =
                (i % 3 != 0).then(|| Timestamp::from_unix_ms(1_000_000 + (i % 4) as i64 * 1000));
            r.spec.valid_after =
                (i % 2 == 0).then(|| Timestamp::from_unix_ms(500 + (i % 6) as i64));
            if i % 4 == 1 {
                r.spec.groups = vec!["lab".into()];
            }
            if i % 3 == 1 {
                r.spec.groups.push("ops".into());
            }
            if i % 2 == 1 {
                r.spec.caps.insert("arch".into(), "x86_64".into());
            }
            if i % 5 == 2 {
                r.spec.caps.insert("gpu.kind".into(), "a100".into());
            }
            r
        })
        .collect()
}

/// One way of narrowing a listing.
type Filter = dyn Fn(&mut ListQuery);

#[test]
fn sqlite_listing_sorts_filters_and_pages_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(&dir.path().join("warren.db"), Durability::Process).unwrap();
    let mut memory = MemoryStore::new();
    let records = varied(40);
    let writes: Vec<Write> = records
        .iter()
        .cloned()
        .map(|r| Write::Insert(Box::new(r)))
        .collect();
    sqlite.apply(&writes).unwrap();
    memory.apply(&writes).unwrap();
    let filters: Vec<Box<Filter>> = vec![
        Box::new(|_| {}),
        Box::new(|q| q.states = vec![TaskState::Waiting, TaskState::Done]),
        Box::new(|q| q.priorities = vec![8, 1]),
        Box::new(|q| q.groups = vec!["lab".into()]),
        Box::new(|q| q.groups = vec!["lab".into(), "ops".into()]),
        Box::new(|q| {
            q.caps.insert("gpu.kind".into(), "a100".into());
        }),
        Box::new(|q| {
            q.caps.insert("arch".into(), "x86_64".into());
            q.owner = Some("bob".into());
        }),
        Box::new(|q| q.ids = vec![3, 9, 12, 40]),
    ];
    let sorts = [
        SortKey::Id,
        SortKey::Priority,
        SortKey::Deadline,
        SortKey::ValidAfter,
        SortKey::State,
    ];
    let mut checked = 0;
    for filter in &filters {
        for sort in sorts {
            for ascending in [false, true] {
                for limit in [3, 100] {
                    let mut query = ListQuery {
                        sort,
                        ascending,
                        limit,
                        ..ListQuery::default()
                    };
                    filter(&mut query);
                    let full = memory
                        .list(&ListQuery {
                            limit: 1000,
                            ..query.clone()
                        })
                        .unwrap();
                    // Every page, from the start and from every task as paginator, both ways.
                    let mut paginators = vec![None];
                    for r in records.iter().step_by(3) {
                        paginators.push(Some(Paginator::After(r.id)));
                        paginators.push(Some(Paginator::Before(r.id)));
                    }
                    for paginator in paginators {
                        let q = ListQuery {
                            paginator,
                            ..query.clone()
                        };
                        let want = memory.list(&q).unwrap();
                        let got = sqlite.list(&q).unwrap();
                        assert_eq!(got, want, "{q:?}");
                        checked += 1;
                    }
                    // Walking forward with `after` visits every task once, in order.
                    let mut walked = Vec::new();
                    let mut page = sqlite.list(&query).unwrap();
                    loop {
                        walked.extend(page_ids(&page));
                        if page.remaining == 0 {
                            break;
                        }
                        let last = *walked.last().unwrap();
                        page = sqlite
                            .list(&ListQuery {
                                paginator: Some(Paginator::After(last)),
                                ..query.clone()
                            })
                            .unwrap();
                    }
                    assert_eq!(walked, page_ids(&full), "{query:?}");
                }
            }
        }
    }
    assert!(checked > 4_000);
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

/// Reserved ids count as given out, and a reservation never shrinks.
fn reservations(store: &mut dyn Store) {
    store.apply(&[Write::ReserveIds(100)]).unwrap();
    assert_eq!(store.max_task_id().unwrap(), 100);
    store
        .apply(&[
            Write::Insert(Box::new(record(7, "ann"))),
            Write::ReserveIds(50),
        ])
        .unwrap();
    assert_eq!(store.max_task_id().unwrap(), 100);
    store
        .apply(&[Write::Insert(Box::new(record(150, "ann")))])
        .unwrap();
    assert_eq!(store.max_task_id().unwrap(), 150);
    store.apply(&[Write::ReserveIds(4096)]).unwrap();
    assert_eq!(store.max_task_id().unwrap(), 4096);
}

#[test]
fn reserved_ids_count_as_given_out_in_every_store() {
    reservations(&mut MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warren.db");
    reservations(&mut SqliteStore::open(&path, Durability::Full).unwrap());
    let mut reopened = SqliteStore::open(&path, Durability::Full).unwrap();
    assert_eq!(reopened.max_task_id().unwrap(), 4096);
}
