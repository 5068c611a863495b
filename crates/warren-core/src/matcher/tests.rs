use super::*;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn worker(id: &str) -> WorkerProfile {
    WorkerProfile {
        id: id.into(),
        runs_commands: true,
        environments: Some(BTreeSet::new()),
        ..WorkerProfile::default()
    }
}

fn idle(slots: u32) -> WorkerLoad {
    WorkerLoad {
        available: true,
        free_slots: slots,
        ..WorkerLoad::default()
    }
}

fn task(id: TaskId, priority: u8) -> WaitingTask {
    WaitingTask {
        id,
        priority,
        order: id as i64,
        requirements: Requirements {
            needs_command: true,
            ..Requirements::default()
        },
        valid_after: None,
        deadline: None,
    }
}

fn launched(m: &mut Matcher, now: i64) -> Vec<(TaskId, String)> {
    m.next_launches(t(now))
        .into_iter()
        .map(|l| (l.task, l.worker))
        .collect()
}

fn one(task: TaskId, worker: &str) -> Vec<(TaskId, String)> {
    vec![(task, worker.to_string())]
}

/// Boruta's priority case: one single-slot worker, tasks 1..6 with priorities 7, 1, 2, 12, 3, 3.
#[test]
fn priorities_then_fifo_on_one_slot() {
    let mut m = Matcher::new();
    m.upsert_worker(worker("w"), idle(1));
    for (id, priority) in (1..).zip([7u8, 1, 2, 12, 3, 3]) {
        m.add_task(task(id, priority));
    }
    let mut started = Vec::new();
    for _ in 0..7 {
        let got = launched(&mut m, 0);
        assert!(got.len() <= 1, "{got:?}");
        started.extend(got.iter().map(|(id, _)| *id));
        // The slot frees again.
        m.update_load("w", WorkerLoad::default());
        m.update_load("w", idle(1));
    }
    assert_eq!(started, vec![2, 3, 5, 6, 1, 4]);
    assert_eq!(m.task_count(), 0);
    assert_eq!(m.class_count(), 0);
}

/// Boruta's least-capable case: three fitting IDLE workers taken from the least capable up, two
/// that do not fit never taken.
#[test]
fn least_capable_fitting_worker_first() {
    let mut m = Matcher::new();
    // A worker with these groups and capabilities c0=v .. c{n-1}=v.
    let profile = |id: &str, groups: &[&str], caps: usize| WorkerProfile {
        groups: set(groups),
        caps: (0..caps)
            .map(|i| (format!("c{i}"), "v".to_string()))
            .collect(),
        ..worker(id)
    };
    let five_groups = ["g0", "g1", "g2", "g3", "g4"];
    m.upsert_worker(profile("5g5c", &five_groups, 5), idle(1));
    m.upsert_worker(profile("1g7c", &["g0"], 7), idle(1));
    m.upsert_worker(profile("5g1c", &five_groups, 1), idle(1));
    m.upsert_worker(profile("2g0c", &["g0", "g1"], 0), idle(1));
    m.upsert_worker(profile("0g2c", &[], 2), idle(1));
    let request = |id| WaitingTask {
        requirements: Requirements {
            groups: set(&["g0"]),
            caps: map(&[("c0", "v")]),
            needs_command: true,
            ..Requirements::default()
        },
        ..task(id, 8)
    };
    let mut got = Vec::new();
    for id in 1..=4 {
        m.add_task(request(id));
        got.push(launched(&mut m, 0));
    }
    assert_eq!(
        got,
        vec![one(1, "5g1c"), one(2, "1g7c"), one(3, "5g5c"), vec![]]
    );
    assert_eq!(m.task_count(), 1);
}

#[test]
fn ties_by_most_free_slots_then_id() {
    let mut m = Matcher::new();
    m.upsert_worker(worker("b"), idle(1));
    m.upsert_worker(worker("a"), idle(1));
    m.upsert_worker(worker("c"), idle(2));
    for id in 1..=4 {
        m.add_task(task(id, 8));
    }
    assert_eq!(
        launched(&mut m, 0),
        vec![
            (1, "c".to_string()),
            (2, "a".to_string()),
            (3, "b".to_string()),
            (4, "c".to_string()),
        ]
    );
}

#[test]
fn requeued_task_goes_to_the_front_of_its_priority() {
    let mut m = Matcher::new();
    m.add_task(task(1, 8));
    m.add_task(task(2, 8));
    m.add_task(WaitingTask {
        order: -1,
        ..task(3, 8)
    });
    m.add_task(task(4, 7));
    m.upsert_worker(worker("w"), idle(2));
    assert_eq!(
        launched(&mut m, 0),
        vec![(4, "w".to_string()), (3, "w".to_string())]
    );
}

/// One requirement at a time: which of a few workers the task may use.
#[test]
fn requirements_table() {
    let gpu = WorkerProfile {
        caps: map(&[("gpu", "a100"), ("arch", "x86_64")]),
        groups: set(&["ml"]),
        environments: Some(set(&["python3"])),
        memory: 64 << 30,
        milli_cpus: 16_000,
        ..worker("gpu")
    };
    let small = WorkerProfile {
        caps: map(&[("arch", "x86_64")]),
        groups: set(&["ci"]),
        environments: Some(set(&["busybox"])),
        memory: 4 << 30,
        milli_cpus: 2_000,
        ..worker("small")
    };
    let unreported = WorkerProfile {
        caps: map(&[("arch", "aarch64")]),
        ..worker("unreported")
    };
    let pool = WorkerProfile {
        id: "pool".into(),
        environments: None,
        runs_commands: false,
        ..WorkerProfile::default()
    };
    let all = [&gpu, &small, &unreported, &pool];
    let base = Requirements {
        needs_command: true,
        ..Requirements::default()
    };
    let check = |req: Requirements, expected: &[&str]| {
        let got: Vec<&str> = all
            .iter()
            .filter(|w| w.fits(&req))
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(got, expected, "{req:?}");
    };
    check(base.clone(), &["gpu", "small", "unreported"]);
    check(
        Requirements {
            needs_command: false,
            ..base.clone()
        },
        &["gpu", "small", "unreported", "pool"],
    );
    check(
        Requirements {
            caps: map(&[("arch", "x86_64")]),
            ..base.clone()
        },
        &["gpu", "small"],
    );
    check(
        Requirements {
            caps: map(&[("arch", "x86_64"), ("gpu", "a100")]),
            ..base.clone()
        },
        &["gpu"],
    );
    check(
        Requirements {
            caps: map(&[("gpu", "t4")]),
            ..base.clone()
        },
        &[],
    );
    // `id` and `uuid` pin one worker unless it defines them itself.
    check(
        Requirements {
            caps: map(&[("id", "small")]),
            ..base.clone()
        },
        &["small"],
    );
    check(
        Requirements {
            caps: map(&[("uuid", "unreported")]),
            needs_command: false,
            ..base.clone()
        },
        &["unreported"],
    );
    check(
        Requirements {
            environment: Some("python3".into()),
            ..base.clone()
        },
        &["gpu"],
    );
    check(
        Requirements {
            environment: Some("busybox".into()),
            needs_command: false,
            ..base.clone()
        },
        &["small", "pool"],
    );
    // `host` is offered by every worker, listed or not.
    check(
        Requirements {
            environment: Some("host".into()),
            ..base.clone()
        },
        &["gpu", "small", "unreported"],
    );
    check(
        Requirements {
            groups: set(&["ci", "nightly"]),
            ..base.clone()
        },
        &["small"],
    );
    check(
        Requirements {
            groups: set(&["nobody"]),
            ..base.clone()
        },
        &[],
    );
    // Resources against totals; a worker reporting 0 is not constrained.
    check(
        Requirements {
            memory: 8 << 30,
            ..base.clone()
        },
        &["gpu", "unreported"],
    );
    check(
        Requirements {
            memory: 4 << 30,
            milli_cpus: 2_000,
            ..base.clone()
        },
        &["gpu", "small", "unreported"],
    );
    check(
        Requirements {
            milli_cpus: 32_000,
            ..base
        },
        &["unreported"],
    );
}

#[test]
fn free_resources_and_slots_decide_room() {
    let w = WorkerProfile {
        memory: 8 << 30,
        milli_cpus: 4_000,
        ..worker("w")
    };
    let req = |memory: u64, milli_cpus| Requirements {
        memory,
        milli_cpus,
        needs_command: true,
        ..Requirements::default()
    };
    let load = |available, free_slots, reserved_memory: u64, reserved_milli_cpus| WorkerLoad {
        available,
        free_slots,
        reserved_memory,
        reserved_milli_cpus,
    };
    let check = |l: WorkerLoad, r: Requirements, expected: bool| {
        assert_eq!(w.has_room(&l, &r), expected, "{l:?} {r:?}");
    };
    check(load(true, 1, 0, 0), req(8 << 30, 4_000), true);
    check(load(false, 1, 0, 0), req(0, 0), false);
    check(load(true, 0, 0, 0), req(0, 0), false);
    check(load(true, 2, 6 << 30, 0), req(2 << 30, 0), true);
    check(load(true, 2, 6 << 30, 0), req(3 << 30, 0), false);
    check(load(true, 2, 0, 3_500), req(0, 500), true);
    check(load(true, 2, 0, 3_500), req(0, 501), false);
    let unreported = worker("u");
    assert!(unreported.has_room(&load(true, 1, 1 << 40, 1 << 20), &req(1 << 40, 1 << 20)));

    // The matcher reserves what it launches: the second 6G task waits for the first to end.
    let mut m = Matcher::new();
    m.upsert_worker(w.clone(), idle(4));
    for id in 1..=3 {
        m.add_task(WaitingTask {
            requirements: req(6 << 30, 1_000),
            ..task(id, 8)
        });
    }
    m.add_task(WaitingTask {
        requirements: req(1 << 30, 1_000),
        ..task(4, 9)
    });
    assert_eq!(
        launched(&mut m, 0),
        vec![(1, "w".to_string()), (4, "w".to_string())]
    );
    assert_eq!(
        m.load("w"),
        Some(WorkerLoad {
            available: true,
            free_slots: 2,
            reserved_memory: 7 << 30,
            reserved_milli_cpus: 2_000,
        })
    );
    assert_eq!(launched(&mut m, 0), vec![]);
    // Task 1 ends: its reservation is released.
    m.update_load("w", load(true, 3, 1 << 30, 1_000));
    assert_eq!(launched(&mut m, 0), one(2, "w"));
}

#[test]
fn valid_after_and_deadline() {
    let mut m = Matcher::new();
    m.upsert_worker(worker("w"), idle(10));
    m.add_task(WaitingTask {
        valid_after: Some(t(100)),
        ..task(1, 1)
    });
    m.add_task(WaitingTask {
        deadline: Some(t(50)),
        ..task(2, 1)
    });
    m.add_task(WaitingTask {
        valid_after: Some(t(20)),
        deadline: Some(t(30)),
        ..task(3, 1)
    });
    assert_eq!(m.next_ready_at(), Some(t(20)));
    assert_eq!(launched(&mut m, 60), vec![]);
    assert_eq!(m.next_ready_at(), Some(t(100)));
    assert_eq!(launched(&mut m, 99), vec![]);
    assert_eq!(launched(&mut m, 100), one(1, "w"));
    // Expired tasks stay until the caller removes them (its deadline timer ends them TIMEOUT).
    assert_eq!(m.task_count(), 2);
    assert!(m.remove_task(2));
    assert!(m.remove_task(3));
    assert!(!m.remove_task(3));
    assert_eq!(m.class_count(), 0);

    let mut m = Matcher::new();
    m.upsert_worker(worker("w"), idle(10));
    m.add_task(WaitingTask {
        deadline: Some(t(50)),
        ..task(1, 1)
    });
    assert_eq!(launched(&mut m, 50), one(1, "w"));
}

#[test]
fn a_task_no_free_worker_fits_does_not_block_those_behind() {
    let mut m = Matcher::new();
    m.upsert_worker(worker("w"), idle(1));
    m.add_task(WaitingTask {
        requirements: Requirements {
            caps: map(&[("gpu", "a100")]),
            needs_command: true,
            ..Requirements::default()
        },
        ..task(1, 1)
    });
    m.add_task(task(2, 16));
    assert_eq!(launched(&mut m, 0), one(2, "w"));
    // A GPU worker arrives: the waiting GPU task takes it.
    m.upsert_worker(
        WorkerProfile {
            caps: map(&[("gpu", "a100")]),
            ..worker("g")
        },
        idle(1),
    );
    assert_eq!(launched(&mut m, 0), one(1, "g"));
}

#[test]
fn unavailable_and_changed_workers() {
    let mut m = Matcher::new();
    let down = WorkerLoad {
        available: false,
        ..idle(1)
    };
    m.upsert_worker(worker("w"), down);
    m.add_task(task(1, 8));
    assert_eq!(launched(&mut m, 0), vec![]);
    // It becomes IDLE.
    m.update_load("w", idle(1));
    assert_eq!(launched(&mut m, 0), one(1, "w"));
    // Its capabilities change so it fits a waiting task.
    let arm = Requirements {
        caps: map(&[("arch", "aarch64")]),
        needs_command: true,
        ..Requirements::default()
    };
    m.add_task(WaitingTask {
        requirements: arm.clone(),
        ..task(2, 8)
    });
    m.update_load("w", idle(1));
    assert_eq!(launched(&mut m, 0), vec![]);
    m.upsert_worker(
        WorkerProfile {
            caps: map(&[("arch", "aarch64")]),
            ..worker("w")
        },
        idle(1),
    );
    assert_eq!(launched(&mut m, 0), one(2, "w"));
    assert!(m.remove_worker("w"));
    assert!(!m.remove_worker("w"));
    assert!(!m.update_load("w", idle(1)));
    assert_eq!(m.worker_count(), 0);
}

#[test]
fn unsatisfiable_names_what_no_worker_offers() {
    let gpu = WorkerProfile {
        caps: map(&[("gpu", "a100")]),
        groups: set(&["ml"]),
        environments: Some(set(&["python3"])),
        memory: 16 << 30,
        milli_cpus: 8_000,
        ..worker("gpu")
    };
    let ci = WorkerProfile {
        caps: map(&[("arch", "x86_64")]),
        groups: set(&["ci"]),
        environments: Some(set(&["busybox"])),
        memory: 8 << 30,
        milli_cpus: 2_000,
        ..worker("ci")
    };
    let pool = WorkerProfile {
        id: "pool".into(),
        environments: None,
        runs_commands: false,
        ..WorkerProfile::default()
    };
    let base = Requirements {
        needs_command: true,
        ..Requirements::default()
    };
    let check = |workers: &[&WorkerProfile], req: Requirements, expected: Option<&str>| {
        assert_eq!(
            unsatisfiable(&req, workers.iter().copied()).as_deref(),
            expected,
            "{req:?}"
        );
    };
    let both = [&gpu, &ci];
    check(&both, base.clone(), None);
    check(&[], base.clone(), None);
    check(
        &both,
        Requirements {
            caps: map(&[("gpu", "t4")]),
            ..base.clone()
        },
        Some("no worker offers capability gpu=t4"),
    );
    check(
        &both,
        Requirements {
            caps: map(&[("gpu", "t4"), ("fpga", "x")]),
            ..base.clone()
        },
        Some("no worker offers capabilities fpga=x, gpu=t4"),
    );
    check(
        &both,
        Requirements {
            environment: Some("alpine".into()),
            ..base.clone()
        },
        Some("no worker offers environment `alpine`; offered: busybox, host, python3"),
    );
    // A plain pool offers any environment, but runs no command.
    check(
        &[&ci, &pool],
        Requirements {
            environment: Some("alpine".into()),
            needs_command: false,
            ..base.clone()
        },
        None,
    );
    check(
        &[&pool],
        base.clone(),
        Some("no worker runs commands (only plain Pythia pools are registered)"),
    );
    check(
        &both,
        Requirements {
            groups: set(&["x", "y"]),
            ..base.clone()
        },
        Some("no worker is in any of the groups [x, y]"),
    );
    check(
        &both,
        Requirements {
            memory: 64 << 30,
            ..base.clone()
        },
        Some("memory 64 GiB is more than any worker has (largest 16 GiB)"),
    );
    check(
        &both,
        Requirements {
            milli_cpus: 8_500,
            ..base.clone()
        },
        Some("CPU share 8.5 CPUs is more than any worker has (largest 8 CPUs)"),
    );
    check(
        &both,
        Requirements {
            caps: map(&[("gpu", "t4")]),
            memory: (1 << 40) + (1 << 39),
            ..base.clone()
        },
        Some(
            "no worker offers capability gpu=t4; \
             memory 1.5 TiB is more than any worker has (largest 16 GiB)",
        ),
    );
    // Each alone is met somewhere, never together.
    check(
        &both,
        Requirements {
            caps: map(&[("gpu", "a100")]),
            environment: Some("busybox".into()),
            groups: set(&["ci"]),
            ..base.clone()
        },
        Some(
            "no single worker meets all of running a command, capability gpu=a100, \
             environment busybox, one of the groups [ci] together, though each is met by some \
             worker",
        ),
    );

    // The matcher's view: tasks of a class no worker fits any more.
    let mut m = Matcher::new();
    m.upsert_worker(gpu.clone(), idle(0));
    m.upsert_worker(ci.clone(), idle(0));
    m.add_task(WaitingTask {
        requirements: Requirements {
            caps: map(&[("gpu", "a100")]),
            ..base.clone()
        },
        ..task(1, 8)
    });
    m.add_task(task(2, 8));
    assert_eq!(m.unsatisfiable_tasks(), vec![]);
    m.remove_worker("gpu");
    assert_eq!(
        m.unsatisfiable_tasks(),
        vec![(1, "no worker offers capability gpu=a100".to_string())]
    );
    m.remove_worker("ci");
    assert_eq!(m.unsatisfiable_tasks(), vec![]);
}

#[test]
fn requirements_from_a_spec() {
    let spec: TaskSpec = serde_json::from_str(
        r#"{"command":["true"],"environment":"busybox","caps":{"arch":"x86_64"},
            "limits":{"memory":"1G","cpus":500}}"#,
    )
    .unwrap_or_default();
    assert_eq!(
        Requirements::from_spec(&spec, set(&["ci"])),
        Requirements {
            caps: map(&[("arch", "x86_64")]),
            groups: set(&["ci"]),
            environment: Some("busybox".into()),
            needs_command: true,
            memory: 1 << 30,
            milli_cpus: 500,
        }
    );
}

// ---- The fast matcher against the obvious walk, on random histories. ----

/// The rule as written: every task in order, each to the least capable worker with room.
fn reference(
    tasks: &BTreeMap<TaskId, WaitingTask>,
    workers: &mut BTreeMap<String, (WorkerProfile, WorkerLoad)>,
    now: Timestamp,
) -> Vec<Launch> {
    let mut order: Vec<&WaitingTask> = tasks.values().collect();
    order.sort_by_key(|t| (t.priority, t.order, t.id));
    let mut launches = Vec::new();
    for task in order {
        let startable =
            task.valid_after.is_none_or(|a| a <= now) && task.deadline.is_none_or(|d| now <= d);
        if !startable {
            continue;
        }
        let best = workers
            .values()
            .filter(|(p, l)| p.fits(&task.requirements) && p.has_room(l, &task.requirements))
            .min_by_key(|(p, l)| (p.score(), Reverse(l.free_slots), p.id.clone()))
            .map(|(p, _)| p.id.clone());
        if let Some(id) = best {
            if let Some((_, load)) = workers.get_mut(&id) {
                *load = load.with_launch(task.requirements.memory, task.requirements.milli_cpus);
            }
            launches.push(Launch {
                task: task.id,
                worker: id,
            });
        }
    }
    launches
}

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const GIB: u64 = 1 << 30;

fn random_requirements(rng: &mut Rng) -> Requirements {
    let mut caps = BTreeMap::new();
    if rng.chance(30) {
        caps.insert("arch".into(), rng.pick(&["x86_64", "aarch64"]).to_string());
    }
    if rng.chance(15) {
        caps.insert("gpu".into(), rng.pick(&["a100", "t4"]).to_string());
    }
    if rng.chance(5) {
        caps.insert("id".into(), format!("w{}", rng.below(8)));
    }
    let mut groups = BTreeSet::new();
    if rng.chance(30) {
        groups.insert(rng.pick(&["g1", "g2", "g3"]).to_string());
        if rng.chance(30) {
            groups.insert(rng.pick(&["g1", "g2", "g3"]).to_string());
        }
    }
    Requirements {
        caps,
        groups,
        environment: rng
            .chance(25)
            .then(|| rng.pick(&["busybox", "python3"]).to_string()),
        needs_command: rng.chance(85),
        memory: *rng.pick(&[0, 0, GIB, 4 * GIB, 12 * GIB]),
        milli_cpus: *rng.pick(&[0, 0, 500, 1_000, 4_000]),
    }
}

fn random_profile(rng: &mut Rng, id: String) -> WorkerProfile {
    let mut caps = BTreeMap::new();
    caps.insert("arch".into(), rng.pick(&["x86_64", "aarch64"]).to_string());
    if rng.chance(30) {
        caps.insert("gpu".into(), rng.pick(&["a100", "t4"]).to_string());
    }
    for extra in 0..rng.below(3) {
        caps.insert(format!("extra{extra}"), "1".into());
    }
    let groups = ["g1", "g2", "g3"]
        .iter()
        .filter(|_| rng.chance(40))
        .map(|g| g.to_string())
        .collect();
    let pool = rng.chance(10);
    WorkerProfile {
        id,
        caps,
        groups,
        environments: (!pool).then(|| {
            ["busybox", "python3"]
                .iter()
                .filter(|_| rng.chance(50))
                .map(|e| e.to_string())
                .collect()
        }),
        runs_commands: !pool,
        memory: *rng.pick(&[0, 8 * GIB, 16 * GIB]),
        milli_cpus: *rng.pick(&[0, 2_000, 8_000]),
    }
}

fn random_load(rng: &mut Rng) -> WorkerLoad {
    WorkerLoad {
        available: rng.chance(80),
        free_slots: rng.below(4) as u32,
        reserved_memory: *rng.pick(&[0, 0, GIB, 6 * GIB]),
        reserved_milli_cpus: *rng.pick(&[0, 0, 1_000, 1_500]),
    }
}

fn random_task(rng: &mut Rng, id: TaskId, now: i64) -> WaitingTask {
    WaitingTask {
        id,
        priority: 1 + rng.below(4) as u8,
        // Mostly FIFO, sometimes re-queued to the front.
        order: if rng.chance(10) {
            -(id as i64)
        } else {
            id as i64
        },
        requirements: random_requirements(rng),
        valid_after: rng.chance(20).then(|| t(now - 5 + rng.below(40) as i64)),
        deadline: rng.chance(15).then(|| t(now + rng.below(60) as i64)),
    }
}

#[test]
fn incremental_matcher_equals_the_full_walk_on_random_histories() {
    for order in [WalkOrder::Auto, WalkOrder::Scan, WalkOrder::Heap] {
        random_histories(order, || Matcher::with_walk_order(order));
    }
    // Scans that give up early and switch to heaps.
    for budget in [1, 3] {
        random_histories(WalkOrder::Scan, || {
            Matcher::with_scan_budget(WalkOrder::Scan, budget)
        });
    }
}

fn random_histories(order: WalkOrder, new: impl Fn() -> Matcher) {
    let mut checked_launches = 0usize;
    for seed in 0..200u64 {
        let mut rng = Rng(seed);
        let mut m = new();
        let mut tasks: BTreeMap<TaskId, WaitingTask> = BTreeMap::new();
        let mut workers: BTreeMap<String, (WorkerProfile, WorkerLoad)> = BTreeMap::new();
        let mut now = 0i64;
        let mut next_id: TaskId = 1;
        for step in 0..150 {
            match rng.below(100) {
                0..=44 => {
                    let task = random_task(&mut rng, next_id, now);
                    next_id += 1;
                    tasks.insert(task.id, task.clone());
                    m.add_task(task);
                }
                45..=52 => {
                    if let Some(&id) = tasks.keys().nth(rng.below(tasks.len() as u64 + 1) as usize)
                    {
                        tasks.remove(&id);
                        assert!(m.remove_task(id));
                    }
                }
                53..=74 => {
                    let id = format!("w{}", rng.below(8));
                    let load = random_load(&mut rng);
                    if let Some(entry) = workers.get_mut(&id) {
                        entry.1 = load;
                        assert!(m.update_load(&id, load));
                    }
                }
                75..=84 => {
                    let id = format!("w{}", rng.below(8));
                    let profile = random_profile(&mut rng, id.clone());
                    let load = random_load(&mut rng);
                    workers.insert(id, (profile.clone(), load));
                    m.upsert_worker(profile, load);
                }
                85..=87 => {
                    // Groups change: same worker, same load, one group more or less.
                    let id = format!("w{}", rng.below(8));
                    if let Some((profile, load)) = workers.get_mut(&id) {
                        let g = rng.pick(&["g1", "g2", "g3"]).to_string();
                        if !profile.groups.remove(&g) {
                            profile.groups.insert(g);
                        }
                        m.upsert_worker(profile.clone(), *load);
                    }
                }
                88..=89 => {
                    let id = format!("w{}", rng.below(8));
                    assert_eq!(m.remove_worker(&id), workers.remove(&id).is_some());
                }
                _ => now += rng.below(15) as i64,
            }
            if rng.chance(60) {
                let expected = reference(&tasks, &mut workers.clone(), t(now));
                let got = m.next_launches(t(now));
                assert_eq!(got, expected, "{order:?} seed {seed} step {step}");
                for launch in &got {
                    if let Some(task) = tasks.remove(&launch.task) {
                        if let Some((_, load)) = workers.get_mut(&launch.worker) {
                            *load = load.with_launch(
                                task.requirements.memory,
                                task.requirements.milli_cpus,
                            );
                        }
                    }
                }
                checked_launches += got.len();
                for (id, (_, load)) in &workers {
                    assert_eq!(m.load(id), Some(*load), "seed {seed} step {step}");
                }
                assert_eq!(m.task_count(), tasks.len());
            }
        }
    }
    // The histories exercise the matcher, not only its refusals.
    assert!(checked_launches > 2_000, "{order:?}: {checked_launches}");
}
