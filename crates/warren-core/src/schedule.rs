//! The matcher: a pure function from a snapshot of waiting tasks and workers with free slots to a
//! plan of launches. The coordinator builds the snapshot, calls [`plan`], then re-checks and
//! applies the plan.
//!
//! Order: priority (1 first), then queue order (FIFO; re-queued tasks get an order ahead of every
//! other task so they go back to the front). A task is placed on the eligible worker with the most
//! free slots, which spreads load; a task no free worker can take does not block the tasks behind
//! it.

use std::collections::BTreeMap;

use crate::environment;
use crate::task::{caps_satisfied, TaskId, Timestamp};

/// A waiting task as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The task.
    pub id: TaskId,
    /// 1 (most important) ..= 16.
    pub priority: u8,
    /// Queue order within a priority (smaller first).
    pub order: i64,
    /// Capabilities it requires.
    pub caps: &'a BTreeMap<String, String>,
    /// The environment it needs, if any.
    pub environment: Option<&'a str>,
    /// Whether it runs a command (only Warren workers can); a Pythia task (taskfs only) runs on
    /// plain Pythia pools too.
    pub needs_command: bool,
    /// Not before this time.
    pub valid_after: Option<Timestamp>,
    /// Start-by time.
    pub deadline: Option<Timestamp>,
    /// Groups whose workers may run it (any worker when empty).
    pub groups: &'a [String],
}

/// A worker with room, as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The worker.
    pub worker: &'a str,
    /// Tasks it can still take now.
    pub free: u32,
    /// Its capabilities.
    pub caps: &'a BTreeMap<String, String>,
    /// Environments it offers; `None` when it does not say (a plain Pythia pool): any.
    pub environments: Option<&'a [String]>,
    /// Whether it runs commands (a Warren worker) or only Pythia tasks (a plain pool).
    pub runs_commands: bool,
    /// Groups it serves.
    pub groups: &'a [String],
}

/// One launch of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The task.
    pub task: TaskId,
    /// The worker, by id.
    pub worker: String,
}

/// Whether `task` may run on `slot` at all (ignoring free slots).
pub fn fits(
    task: &Candidate<'_>,
    worker_caps: &BTreeMap<String, String>,
    environments: Option<&[String]>,
    runs_commands: bool,
    worker_groups: &[String],
) -> bool {
    (runs_commands || !task.needs_command)
        && (task.groups.is_empty() || task.groups.iter().any(|g| worker_groups.contains(g)))
        && caps_satisfied(task.caps, worker_caps)
        && task
            .environment
            .is_none_or(|env| environment::offered(env, environments))
}

/// Whether the task may start at `now` (valid-after reached, deadline not passed).
pub fn startable(task: &Candidate<'_>, now: Timestamp) -> bool {
    task.valid_after.is_none_or(|t| t <= now) && task.deadline.is_none_or(|t| now <= t)
}

/// The plan: which waiting tasks start now, and where.
pub fn plan(tasks: &[Candidate<'_>], slots: &[Slot<'_>], now: Timestamp) -> Vec<Launch> {
    let mut free: Vec<u32> = slots.iter().map(|s| s.free).collect();
    let mut total: u64 = free.iter().map(|&f| u64::from(f)).sum();
    let mut order: Vec<&Candidate<'_>> = tasks.iter().collect();
    order.sort_by_key(|t| (t.priority, t.order, t.id));
    let mut launches = Vec::new();
    for task in order {
        if total == 0 {
            break;
        }
        if !startable(task, now) {
            continue;
        }
        let best = slots
            .iter()
            .enumerate()
            .filter(|(i, s)| free[*i] > 0 && fits(task, s.caps, s.environments, s.runs_commands, s.groups))
            .max_by_key(|(i, _)| (free[*i], std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        if let Some(i) = best {
            free[i] -= 1;
            total -= 1;
            launches.push(Launch {
                task: task.id,
                worker: slots[i].worker.to_string(),
            });
        }
    }
    launches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(tasks: &[Candidate<'_>], slots: &[Slot<'_>], now: i64, expected: &[(TaskId, &str)]) {
        let got = plan(tasks, slots, Timestamp::from_unix_ms(now));
        let got: Vec<(TaskId, &str)> = got.iter().map(|l| (l.task, l.worker.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn priority_then_fifo_and_capacity() {
        let none = caps(&[]);
        let t = |id, priority, order| Candidate {
            id,
            priority,
            order,
            caps: &none,
            environment: None,
            needs_command: true,
            valid_after: None,
            deadline: None,
            groups: &[],
        };
        let w = |worker, free| Slot {
            worker,
            free,
            caps: &none,
            environments: Some(&[]),
            runs_commands: true,
            groups: &[],
        };
        check(
            &[t(1, 8, 1), t(2, 8, 2), t(3, 1, 3)],
            &[w("a", 2)],
            0,
            &[(3, "a"), (1, "a")],
        );
        // A re-queued task (smaller order) goes first within its priority.
        check(&[t(1, 8, 1), t(2, 8, -5)], &[w("a", 1)], 0, &[(2, "a")]);
        // Spread over the worker with most room.
        check(
            &[t(1, 8, 1), t(2, 8, 2), t(3, 8, 3)],
            &[w("a", 1), w("b", 2)],
            0,
            &[(1, "b"), (2, "a"), (3, "b")],
        );
        check(&[t(1, 8, 1)], &[w("a", 0)], 0, &[]);
        check(&[], &[w("a", 3)], 0, &[]);
    }

    #[test]
    fn caps_environment_kind_and_time_window() {
        let none = caps(&[]);
        let arm = caps(&[("arch", "aarch64")]);
        let x86 = caps(&[("arch", "x86_64")]);
        let envs = ["busybox".to_string()];
        let base = Candidate {
            id: 1,
            priority: 8,
            order: 1,
            caps: &none,
            environment: None,
            needs_command: true,
            valid_after: None,
            deadline: None,
            groups: &[],
        };
        let warren = Slot {
            worker: "w",
            free: 4,
            caps: &x86,
            environments: Some(&envs),
            runs_commands: true,
            groups: &[],
        };
        let pool = Slot {
            worker: "pool",
            free: 4,
            caps: &none,
            environments: None,
            runs_commands: false,
            groups: &[],
        };
        // An arm task is skipped without blocking the x86 one behind it.
        check(
            &[
                Candidate { caps: &arm, ..base },
                Candidate {
                    id: 2,
                    order: 2,
                    caps: &x86,
                    ..base
                },
            ],
            &[warren],
            0,
            &[(2, "w")],
        );
        check(
            &[Candidate {
                environment: Some("busybox"),
                ..base
            }],
            &[pool, warren],
            0,
            &[(1, "w")],
        );
        check(
            &[Candidate {
                environment: Some("alpine"),
                ..base
            }],
            &[warren],
            0,
            &[],
        );
        // `host` is offered by every Warren worker, listed or not.
        check(
            &[Candidate {
                environment: Some("host"),
                ..base
            }],
            &[warren],
            0,
            &[(1, "w")],
        );
        check(&[base], &[pool], 0, &[]);
        check(
            &[Candidate {
                needs_command: false,
                ..base
            }],
            &[pool],
            0,
            &[(1, "pool")],
        );
        check(
            &[Candidate {
                valid_after: Some(Timestamp::from_unix_ms(10)),
                ..base
            }],
            &[warren],
            9,
            &[],
        );
        check(
            &[Candidate {
                valid_after: Some(Timestamp::from_unix_ms(10)),
                ..base
            }],
            &[warren],
            10,
            &[(1, "w")],
        );
        check(
            &[Candidate {
                deadline: Some(Timestamp::from_unix_ms(10)),
                ..base
            }],
            &[warren],
            11,
            &[],
        );
    }
}
