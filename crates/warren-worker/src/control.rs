//! Runs a task's control file (`/task/control`) the way Pythia does: one sandboxed step per
//! line, in order, in one session (a shared `/tmp` of the disk limit, a master and a worker
//! user). Between steps every process is gone and System V IPC objects are removed (each step
//! is a run of its own, with its own IPC namespace).
//!
//! The task's limits are budgets for the whole sequence: wall and CPU time and output are what
//! is left of them for each step, so a task can never take longer or write more than asked;
//! memory applies to each step; a step has at most [`MAX_PROCESSES`] processes.
//!
//! How it ends: a master step that does not succeed stops the sequence and gives the task its
//! status (a non-zero exit is `failed` with that code); a worker step's own ending is ignored,
//! except that running out of the task's time, an abort, or a sandbox failure end the task
//! whoever runs.

use std::time::{Duration, Instant};

use warren_core::control::{ControlStep, ControlUser};
use warren_core::limits::{LimitKind, Limits};
use warren_core::result::{RunResult, Status, Usage};
use warren_core::stats::{decimate, StatSample};
use warren_sandbox::{AbortHandle, RunEvents, RunSpec, Sandbox, Stdin, StepUser, Stream};

/// Most processes a step may have at once (Pythia's limit).
pub const MAX_PROCESSES: u64 = 100;

/// What a control run needs besides its steps.
#[derive(Debug)]
pub struct ControlTask<'a> {
    /// Root, task directory, environment variables, input files and the task's limits; the
    /// argv and stdin are ignored (each step brings its own).
    pub base: &'a RunSpec,
    /// The task's input, given to every master step on its stdin.
    pub input: &'a [u8],
    /// The group owning the task files (master steps get it); 0 for none.
    pub task_group: u32,
}

/// Forwards a step's output and statistics, with sample times counted from the task's start.
struct StepEvents<'a> {
    inner: &'a mut dyn RunEvents,
    offset_ms: u64,
    samples: &'a mut Vec<StatSample>,
}

impl RunEvents for StepEvents<'_> {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        self.inner.output(stream, data);
    }

    fn stats(&mut self, sample: &StatSample) {
        let shifted = StatSample {
            t_ms: sample.t_ms + self.offset_ms,
            ..*sample
        };
        self.samples.push(shifted);
        self.inner.stats(&shifted);
    }
}

/// The limits of the next step: what is left of the task's budgets.
fn step_limits(task: &Limits, elapsed: Duration, cpu_used_ms: u64, output_used: u64) -> Limits {
    let left = |limit: Option<Duration>, used: Duration| {
        limit.map(|l| l.saturating_sub(used).max(Duration::from_millis(1)))
    };
    Limits {
        wall_time: left(task.wall_time, elapsed),
        cpu_time: left(task.cpu_time, Duration::from_millis(cpu_used_ms)),
        // An output limit cannot be 0; with nothing left, one byte more is the overflow.
        output: task.output.map(|l| l.saturating_sub(output_used).max(1)),
        pids: Some(task.pids.map_or(MAX_PROCESSES, |p| p.min(MAX_PROCESSES))),
        ..task.clone()
    }
}

/// Runs `steps` to the end of the sequence or the first step that ends the task.
pub fn run_control(
    sandbox: &Sandbox,
    task: &ControlTask<'_>,
    steps: &[ControlStep],
    events: &mut dyn RunEvents,
    abort: &AbortHandle,
) -> RunResult {
    let limits = task.base.limits.with_defaults(&Limits::sandbox_defaults());
    let disk = limits.disk.unwrap_or(64 << 20);
    let session = match sandbox.session(disk, task.task_group) {
        Ok(s) => s,
        Err(e) => return RunResult::crash(format!("starting the control run: {e}")),
    };
    let started = Instant::now();
    let mut total = RunResult::crash(String::new());
    total.status = Status::Success;
    total.message = None;
    let mut usage = Usage::default();
    let mut samples = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let elapsed = started.elapsed();
        if limits.wall_time.is_some_and(|l| elapsed >= l) {
            total.status = Status::Timeout;
            total.limit_hit = Some(LimitKind::WallTime);
            break;
        }
        let output_used = (total.stdout.len() + total.stderr.len()) as u64;
        let step_limits = step_limits(
            &limits,
            elapsed,
            usage.cpu_user_ms + usage.cpu_sys_ms,
            output_used,
        );
        let user = match step.user {
            ControlUser::Master => StepUser::Master,
            ControlUser::Worker => StepUser::Worker,
        };
        let spec = RunSpec {
            argv: step
                .argv
                .iter()
                .map(|a| std::os::unix::ffi::OsStringExt::from_vec(a.clone()))
                .collect(),
            env: task.base.env.clone(),
            limits: step_limits,
            root: task.base.root.clone(),
            task_dir: task.base.task_dir.clone(),
            stdin: match user {
                StepUser::Master if !task.input.is_empty() => Stdin::Bytes(task.input.to_vec()),
                _ => Stdin::Null,
            },
            // Input files land in the shared /tmp once, before the first step.
            files: if index == 0 {
                task.base.files.clone()
            } else {
                Vec::new()
            },
        };
        let mut step_events = StepEvents {
            inner: events,
            offset_ms: elapsed.as_millis() as u64,
            samples: &mut samples,
        };
        let result = match session.run(&spec, user, &mut step_events, Some(abort)) {
            Ok(r) => r,
            Err(e) => RunResult::crash(format!("control line {}: {e}", step.line)),
        };
        usage.cpu_user_ms += result.usage.cpu_user_ms;
        usage.cpu_sys_ms += result.usage.cpu_sys_ms;
        usage.peak_memory_bytes = usage.peak_memory_bytes.max(result.usage.peak_memory_bytes);
        usage.peak_pids = usage.peak_pids.max(result.usage.peak_pids);
        usage.output_bytes += result.usage.output_bytes;
        let cut = append_output(&mut total, &result, limits.output, output_used);
        if cut && result.status == Status::Success {
            // The step wrote the one byte past a budget already spent.
            total.status = Status::Overflow;
            total.limit_hit = Some(LimitKind::Output);
            break;
        }
        // A worker step's own failure is the master's business; everything else ends the task.
        let ends_task = !matches!(
            (user, result.status),
            (_, Status::Success)
                | (
                    StepUser::Worker,
                    Status::Failed | Status::Killed | Status::Memory
                )
        );
        if user == StepUser::Master || ends_task {
            total.exit_code = result.exit_code;
            total.signal = result.signal;
        }
        if ends_task {
            total.status = result.status;
            total.limit_hit = result.limit_hit;
            total.message = Some(match result.message {
                Some(m) => format!("control line {} (`{}`): {m}", step.line, step.display()),
                None => format!("control line {} (`{}`)", step.line, step.display()),
            });
            break;
        }
    }
    usage.wall_ms = started.elapsed().as_millis() as u64;
    total.usage = usage;
    total.stats = decimate(&samples, sandbox.config().max_stat_points);
    total
}

/// Adds a step's output to the task's, never past the task's output limit; true when some of
/// it did not fit.
fn append_output(total: &mut RunResult, step: &RunResult, limit: Option<u64>, used: u64) -> bool {
    let mut room = limit.map_or(usize::MAX, |l| l.saturating_sub(used) as usize);
    let mut cut = false;
    for (into, from) in [
        (&mut total.stdout, &step.stdout),
        (&mut total.stderr, &step.stderr),
    ] {
        let take = from.len().min(room);
        into.extend_from_slice(&from[..take]);
        cut |= take < from.len();
        room -= take;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_gets_what_is_left_of_the_budgets() {
        let task = Limits {
            wall_time: Some(Duration::from_secs(5)),
            cpu_time: Some(Duration::from_secs(2)),
            output: Some(10),
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let first = step_limits(&task, Duration::ZERO, 0, 0);
        assert_eq!(first.wall_time, Some(Duration::from_secs(5)));
        assert_eq!(first.pids, Some(MAX_PROCESSES));
        assert_eq!(first.memory, Some(64 << 20));
        let later = step_limits(&task, Duration::from_secs(4), 1500, 7);
        assert_eq!(later.wall_time, Some(Duration::from_secs(1)));
        assert_eq!(later.cpu_time, Some(Duration::from_millis(500)));
        assert_eq!(later.output, Some(3));
        let spent = step_limits(&task, Duration::from_secs(9), 9000, 10);
        assert_eq!(spent.wall_time, Some(Duration::from_millis(1)));
        assert_eq!(spent.output, Some(1));
        let fewer = Limits {
            pids: Some(20),
            ..task.clone()
        };
        assert_eq!(step_limits(&fewer, Duration::ZERO, 0, 0).pids, Some(20));
        let more = Limits {
            pids: Some(5000),
            ..task
        };
        assert_eq!(
            step_limits(&more, Duration::ZERO, 0, 0).pids,
            Some(MAX_PROCESSES)
        );
    }
}
