//! The matcher's decision latency with a deep queue: 100,000 waiting tasks over a mix of
//! requirement classes and 1,000 workers, every slot taken. Measured, each many times and
//! interleaved: a slot frees on a worker (which task starts there), a task arrives while its
//! workers are busy (it waits), a task arrives while a fitting worker is free (which worker), and
//! as the baseline the obvious scan of the queue in order for the freed slot.
//!
//! Deterministic: a seeded generator builds the same queue and the same decisions every run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rustix::time::{clock_gettime, ClockId};
use warren_core::matcher::{Launch, Matcher, Requirements, WaitingTask, WorkerLoad, WorkerProfile};
use warren_core::task::{TaskId, Timestamp};

use crate::stats::{ms, Samples};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tasks waiting.
    pub tasks: usize,
    /// Workers registered.
    pub workers: usize,
    /// Decisions of each kind.
    pub decisions: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// SplitMix64.
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
        self.next() % n.max(1)
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

const GIB: u64 = 1 << 30;
const TEAMS: u64 = 10;
/// The group of the on-call workers: no waiting task may use them, so they stay free for
/// the arrivals that find a free worker.
const ONCALL: &str = "oncall";

struct Worker {
    profile: WorkerProfile,
    capacity: u32,
    running: Vec<Requirements>,
}

impl Worker {
    fn load(&self) -> WorkerLoad {
        WorkerLoad {
            available: true,
            free_slots: self.capacity.saturating_sub(self.running.len() as u32),
            reserved_memory: self.running.iter().map(|r| r.memory).sum(),
            reserved_milli_cpus: self.running.iter().map(|r| r.milli_cpus).sum(),
        }
    }
}

fn team(rng: &mut Rng) -> String {
    format!("team{}", rng.below(TEAMS))
}

fn make_worker(rng: &mut Rng, i: usize, oncall: bool) -> Worker {
    let id = format!("w{i:04}");
    let mut caps = BTreeMap::new();
    let arch = if rng.percent() < 80 {
        "x86_64"
    } else {
        "aarch64"
    };
    caps.insert("arch".to_string(), arch.to_string());
    caps.insert("os".to_string(), "linux".to_string());
    if oncall {
        return Worker {
            profile: WorkerProfile {
                id,
                caps,
                groups: BTreeSet::from([ONCALL.to_string()]),
                environments: Some(BTreeSet::from(["busybox".to_string()])),
                runs_commands: true,
                memory: 16 * GIB,
                milli_cpus: 8_000,
            },
            capacity: 2,
            running: Vec::new(),
        };
    }
    match rng.percent() {
        0..=2 => {
            caps.insert("gpu".into(), "a100".into());
        }
        3..=9 => {
            caps.insert("gpu".into(), "t4".into());
        }
        _ => {}
    }
    if rng.percent() < 10 {
        caps.insert("kvm".into(), "1".into());
    }
    let groups: BTreeSet<String> = (0..1 + rng.below(3)).map(|_| team(rng)).collect();
    let pool = rng.percent() < 5;
    let mut environments = BTreeSet::from(["busybox".to_string()]);
    if rng.percent() < 50 {
        environments.insert("python3".into());
    }
    if rng.percent() < 30 {
        environments.insert("alpine".into());
    }
    let (memory, milli_cpus) = [
        (8 * GIB, 4_000),
        (16 * GIB, 8_000),
        (32 * GIB, 16_000),
        (64 * GIB, 32_000),
    ][rng.below(4) as usize];
    Worker {
        profile: WorkerProfile {
            id,
            caps,
            groups,
            environments: (!pool).then_some(environments),
            runs_commands: !pool,
            memory,
            milli_cpus,
        },
        capacity: 1 + rng.below(8) as u32,
        running: Vec::new(),
    }
}

fn make_task(rng: &mut Rng, id: TaskId, now: i64, workers: usize) -> WaitingTask {
    let mut caps = BTreeMap::new();
    match rng.percent() {
        0..=74 => {}
        75..=89 => {
            caps.insert("arch".into(), "x86_64".into());
        }
        90..=92 => {
            caps.insert("arch".into(), "aarch64".into());
        }
        93..=96 => {
            caps.insert("gpu".into(), "t4".into());
        }
        97..=98 => {
            caps.insert("gpu".into(), "a100".into());
        }
        _ => {
            caps.insert("id".into(), format!("w{:04}", rng.below(workers as u64)));
        }
    }
    let mut groups = BTreeSet::from([team(rng)]);
    if rng.percent() < 20 {
        groups.insert(team(rng));
    }
    let environment = match rng.percent() {
        0..=44 => None,
        45..=79 => Some("busybox"),
        80..=94 => Some("python3"),
        _ => Some("alpine"),
    };
    let (memory, milli_cpus) = match rng.percent() {
        0..=39 => (0, 0),
        40..=69 => (GIB / 2, 500),
        70..=89 => (2 * GIB, 1_000),
        90..=97 => (8 * GIB, 4_000),
        _ => (32 * GIB, 16_000),
    };
    let mut priority = if rng.percent() < 60 {
        8
    } else {
        1 + rng.below(16) as u8
    };
    // A backlog of urgent work for scarce machines: at the front of the queue, and of no use to
    // most workers whose slots free.
    if rng.percent() < 3 {
        priority = 2;
        caps.insert("gpu".into(), "a100".into());
    }
    WaitingTask {
        id,
        priority,
        order: id as i64,
        requirements: Requirements {
            caps,
            groups,
            environment: environment.map(String::from),
            needs_command: rng.percent() < 97,
            memory,
            milli_cpus,
        },
        valid_after: (rng.percent() < 1)
            .then(|| Timestamp::from_unix_ms(now + 1 + rng.below(20_000) as i64)),
        deadline: None,
    }
}

/// The state the benchmark keeps beside the matcher: who runs what, and the queue in walk
/// order for the baseline.
struct World {
    workers: Vec<Worker>,
    index: BTreeMap<String, usize>,
    queue: BTreeMap<(u8, i64, TaskId), WaitingTask>,
    keys: BTreeMap<TaskId, (u8, i64, TaskId)>,
}

impl World {
    fn enqueue(&mut self, task: &WaitingTask) {
        let key = (task.priority, task.order, task.id);
        self.keys.insert(task.id, key);
        self.queue.insert(key, task.clone());
    }

    fn apply(&mut self, launches: &[Launch]) {
        for launch in launches {
            let Some(&w) = self.index.get(&launch.worker) else {
                continue;
            };
            let key = self.keys.remove(&launch.task);
            if let Some(task) = key.and_then(|k| self.queue.remove(&k)) {
                self.workers[w].running.push(task.requirements);
            }
        }
    }

    /// The baseline: the first task in walk order that may start on worker `w` now.
    fn scan_for(&self, w: usize, now: Timestamp) -> Option<TaskId> {
        let worker = &self.workers[w];
        let load = worker.load();
        self.queue
            .values()
            .find(|t| {
                t.valid_after.is_none_or(|a| a <= now)
                    && worker.profile.fits(&t.requirements)
                    && worker.profile.has_room(&load, &t.requirements)
            })
            .map(|t| t.id)
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

/// The time this thread has spent on a CPU, so that a decision can be measured apart from the
/// time the machine's other work took the CPU away from it.
fn thread_cpu_time() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// One kind of decision: wall time, on-CPU time, and class heads looked at, per decision.
struct Kind {
    name: &'static str,
    wall: Samples,
    cpu: Samples,
    visits: Vec<usize>,
}

impl Kind {
    fn new(name: &'static str) -> Kind {
        Kind {
            name,
            wall: Samples::default(),
            cpu: Samples::default(),
            visits: Vec::new(),
        }
    }

    /// Runs `f` once, recording its wall and CPU time (less the clock's own cost).
    fn measure<T>(&mut self, overhead: Duration, f: impl FnOnce() -> T) -> T {
        let cpu_before = thread_cpu_time();
        let started = Instant::now();
        let out = f();
        self.wall.durations.push(started.elapsed());
        let cpu = thread_cpu_time().saturating_sub(cpu_before);
        self.cpu.durations.push(cpu.saturating_sub(overhead));
        out
    }
}

fn max(s: &Samples) -> Duration {
    s.durations.iter().max().copied().unwrap_or_default()
}

fn visits_quantile(visits: &[usize], q: f64) -> usize {
    let mut sorted = visits.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Builds the queue and workers, fills every slot, then measures the decisions. Returns a
/// Markdown report.
pub fn run(options: &Options) -> Result<String, String> {
    let mut rng = Rng(options.seed);
    let mut now = 1_800_000_000_000i64;
    let oncall_count = (options.workers / 50).max(1);
    let mut world = World {
        workers: (0..options.workers)
            .map(|i| make_worker(&mut rng, i, i >= options.workers - oncall_count))
            .collect(),
        index: BTreeMap::new(),
        queue: BTreeMap::new(),
        keys: BTreeMap::new(),
    };
    for (i, w) in world.workers.iter().enumerate() {
        world.index.insert(w.profile.id.clone(), i);
    }
    let mut matcher = Matcher::new();
    let mut next_id: TaskId = 1;
    let ((), build) = timed(|| {
        for w in &world.workers {
            matcher.upsert_worker(w.profile.clone(), w.load());
        }
        for _ in 0..options.tasks {
            let task = make_task(&mut rng, next_id, now, options.workers);
            next_id += 1;
            world.enqueue(&task);
            matcher.add_task(task);
        }
    });
    let (initial, fill) = timed(|| matcher.next_launches(Timestamp::from_unix_ms(now)));
    world.apply(&initial);
    // Keep the queue as deep as asked once the slots are filled.
    for _ in 0..initial.len() {
        let task = make_task(&mut rng, next_id, now, options.workers);
        next_id += 1;
        world.enqueue(&task);
        matcher.add_task(task);
    }
    let settled = matcher.next_launches(Timestamp::from_unix_ms(now));
    world.apply(&settled);

    // What reading the CPU clock itself costs, taken off every CPU figure.
    let mut calibration = Kind::new("calibration");
    for _ in 0..1_000 {
        calibration.measure(Duration::ZERO, || ());
    }
    let overhead = calibration.cpu.median();

    let mut freed = Kind::new("a slot frees on a busy worker: which task starts there");
    let mut waits = Kind::new("a task arrives, its workers all busy: it waits");
    let mut placed = Kind::new("a task arrives, a fitting worker is free: which worker");
    let mut scan = Kind::new("baseline: scan the queue in order for the freed slot (every 10th)");
    let (mut freed_launched, mut scan_agreed, mut placed_launched) = (0usize, 0usize, 0usize);
    let busy: Vec<usize> = (0..world.workers.len())
        .filter(|&w| !world.workers[w].running.is_empty())
        .collect();
    if busy.is_empty() {
        return Err("no worker runs anything after the initial fill".into());
    }
    for d in 0..options.decisions {
        now += 1;
        let at = Timestamp::from_unix_ms(now);

        // A task ends on a busy worker: which task starts there?
        let w = busy[rng.below(busy.len() as u64) as usize];
        let worker = &mut world.workers[w];
        if !worker.running.is_empty() {
            let ended = rng.below(worker.running.len() as u64) as usize;
            worker.running.swap_remove(ended);
        }
        let load = worker.load();
        let id = worker.profile.id.clone();
        let expected = if d % 10 == 0 {
            Some(scan.measure(overhead, || world.scan_for(w, at)))
        } else {
            None
        };
        let launches = freed.measure(overhead, || {
            matcher.update_load(&id, load);
            matcher.next_launches(at)
        });
        freed.visits.push(matcher.last_walk_visits());
        let here: Vec<TaskId> = launches
            .iter()
            .filter(|l| l.worker == id)
            .map(|l| l.task)
            .collect();
        freed_launched += here.len().min(1);
        if let Some(found) = expected {
            if here.first().copied() == found {
                scan_agreed += 1;
            }
        }
        world.apply(&launches);

        // An ordinary task arrives: its workers are all busy.
        let task = make_task(&mut rng, next_id, now, options.workers);
        next_id += 1;
        world.enqueue(&task);
        let launches = waits.measure(overhead, || {
            matcher.add_task(task);
            matcher.next_launches(at)
        });
        waits.visits.push(matcher.last_walk_visits());
        world.apply(&launches);

        // An on-call task arrives: an on-call worker is free. It ends at once (not measured).
        let mut task = make_task(&mut rng, next_id, now, options.workers);
        next_id += 1;
        task.requirements.caps.clear();
        task.requirements.groups = BTreeSet::from([ONCALL.to_string()]);
        task.requirements.environment = None;
        task.requirements.memory = GIB / 2;
        task.requirements.milli_cpus = 500;
        task.valid_after = None;
        world.enqueue(&task);
        let launches = placed.measure(overhead, || {
            matcher.add_task(task);
            matcher.next_launches(at)
        });
        placed.visits.push(matcher.last_walk_visits());
        placed_launched += launches.len().min(1);
        world.apply(&launches);
        for launch in &launches {
            if let Some(&w) = world.index.get(&launch.worker) {
                let worker = &mut world.workers[w];
                worker.running.pop();
                matcher.update_load(&launch.worker, worker.load());
            }
        }
    }

    let running: usize = world.workers.iter().map(|w| w.running.len()).sum();
    let slots: u32 = world.workers.iter().map(|w| w.capacity).sum();
    let mut report = format!(
        "Matcher decisions: {} tasks waiting in {} requirement classes, {} workers \
         ({} on-call, kept free), {} of {} slots running (seed {}).\n\n\
         Set-up: queue and workers indexed in {} ms; the first walk filled {} slots in {} ms.\n\n",
        matcher.task_count(),
        matcher.class_count(),
        matcher.worker_count(),
        oncall_count,
        running,
        slots,
        options.seed,
        ms(build),
        initial.len(),
        ms(fill),
    );
    report.push_str(
        "Wall time per decision (what the caller waits; on a loaded machine it includes time the \
         CPU spent on other processes):\n\n",
    );
    report.push_str("| decision | runs | p50 ms | p99 ms | max ms | p99 / 1 ms |\n");
    report.push_str("|---|---:|---:|---:|---:|---:|\n");
    for k in [&freed, &waits, &placed, &scan] {
        report.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} |\n",
            k.name,
            k.wall.durations.len(),
            ms(k.wall.median()),
            ms(k.wall.p99()),
            ms(max(&k.wall)),
            k.wall.p99().as_secs_f64() / 0.001,
        ));
    }
    {
        report.push_str(&format!(
            "\nOn-CPU time per decision (the thread's CPU clock, less the {} ms the clocks \
             themselves cost), and the class heads each walk looked at:\n\n",
            ms(overhead)
        ));
        report.push_str("| decision | p50 ms | p99 ms | max ms | p99 / 1 ms ");
        report.push_str("| heads p50 | heads p99 | heads max |\n");
        report.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for k in [&freed, &waits, &placed, &scan] {
            let heads = if k.visits.is_empty() {
                "| - | - | - |".to_string()
            } else {
                format!(
                    "| {} | {} | {} |",
                    visits_quantile(&k.visits, 0.5),
                    visits_quantile(&k.visits, 0.99),
                    k.visits.iter().max().copied().unwrap_or(0)
                )
            };
            report.push_str(&format!(
                "| {} | {} | {} | {} | {:.3} {}\n",
                k.name,
                ms(k.cpu.median()),
                ms(k.cpu.p99()),
                ms(max(&k.cpu)),
                k.cpu.p99().as_secs_f64() / 0.001,
                heads,
            ));
        }
    }
    report.push_str(&format!(
        "\nA task started on the freed slot in {freed_launched} of {} decisions; the baseline \
         scan chose the same task in {scan_agreed} of {}. The free on-call worker was chosen in \
         {placed_launched} of {}.\n",
        freed.wall.durations.len(),
        scan.wall.durations.len(),
        placed.wall.durations.len(),
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run: the matcher and the baseline agree on every freed slot, and the on-call
    /// arrivals find their free worker.
    #[test]
    fn small_run_agrees_with_the_baseline() {
        let report = run(&Options {
            tasks: 3_000,
            workers: 60,
            decisions: 200,
            seed: 7,
        });
        let report = report.unwrap_or_else(|e| e);
        assert!(
            report.contains("the baseline scan chose the same task in 20 of 20"),
            "{report}"
        );
        assert!(
            report.contains("The free on-call worker was chosen in 200 of 200"),
            "{report}"
        );
    }
}
