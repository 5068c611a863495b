//! The outcome of a run: its status, how it ended, what it used, and the rule that decides the
//! status when several causes coincide.
//!
//! # Precedence
//!
//! A run can end for more than one reason at once (the output limit is passed while the wall
//! clock runs out; the caller aborts a run that is being killed for memory). The status is decided
//! in this order, first match wins:
//!
//! 1. `crash`: the sandbox itself failed; nothing else can be trusted.
//! 2. The first cause the sandbox *acted on* by killing the tree, in the order it acted:
//!    `abort` (the caller asked), `overflow` (output limit), `timeout` (wall or CPU time). Later
//!    causes are consequences of that kill, never the reason.
//! 3. `timeout` when the CPU time used is over the CPU limit at the end even though the run
//!    finished before the sandbox could act (the limit is a limit, however close the finish).
//! 4. `memory` when the kernel's OOM killer acted inside the run's cgroup and the run did not
//!    succeed. Read from the cgroup's counters, never guessed from exit code 137.
//! 5. `killed` when the main process died of a signal.
//! 6. `failed` for a non-zero exit code, `success` for zero.

use serde::{Deserialize, Serialize};

use crate::bytes;
use crate::limits::LimitKind;
use crate::stats::StatSample;

/// How a run ended, as reported to users (Pythia's statuses, made exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exited with code 0.
    Success,
    /// Exited with a non-zero code.
    Failed,
    /// Died of a signal that no limit caused.
    Killed,
    /// Wall or CPU time limit.
    Timeout,
    /// Out of memory (the cgroup's OOM counter moved).
    Memory,
    /// Output limit: killed at once, output truncated to the limit.
    Overflow,
    /// Aborted by the caller.
    Abort,
    /// The sandbox itself failed.
    Crash,
    /// A temporary failure outside the program: may be retried.
    Error,
    /// The task is invalid: never retried.
    Fatal,
}

impl Status {
    /// The lowercase name used in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Killed => "killed",
            Status::Timeout => "timeout",
            Status::Memory => "memory",
            Status::Overflow => "overflow",
            Status::Abort => "abort",
            Status::Crash => "crash",
            Status::Error => "error",
            Status::Fatal => "fatal",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the sandbox killed a run's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillCause {
    /// The caller aborted the run.
    Abort,
    /// Output passed its limit.
    Output,
    /// Wall-clock time ran out.
    WallTime,
    /// CPU time ran out.
    CpuTime,
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It died of this signal.
    Signal(i32),
}

/// What the sandbox observed about a finished run: the inputs of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observations {
    /// The sandbox failed to set up or supervise the run, with the reason.
    pub crash: Option<String>,
    /// The first reason the sandbox killed the tree, if it did.
    pub first_kill: Option<KillCause>,
    /// How the main process ended (absent after a crash before it started).
    pub exit: Option<Exit>,
    /// OOM kills counted in the run's cgroup.
    pub oom_kills: u64,
    /// CPU time used was over the CPU limit at the end.
    pub cpu_over_limit: bool,
}

/// The decision: status and which limit, if any, caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The status.
    pub status: Status,
    /// The limit that was hit, when a limit decided the status.
    pub limit_hit: Option<LimitKind>,
}

/// Applies the precedence documented on this module.
pub fn decide(obs: &Observations) -> Verdict {
    let verdict = |status, limit_hit| Verdict { status, limit_hit };
    if obs.crash.is_some() {
        return verdict(Status::Crash, None);
    }
    match obs.first_kill {
        Some(KillCause::Abort) => return verdict(Status::Abort, None),
        Some(KillCause::Output) => return verdict(Status::Overflow, Some(LimitKind::Output)),
        Some(KillCause::WallTime) => return verdict(Status::Timeout, Some(LimitKind::WallTime)),
        Some(KillCause::CpuTime) => return verdict(Status::Timeout, Some(LimitKind::CpuTime)),
        None => {}
    }
    if obs.cpu_over_limit {
        return verdict(Status::Timeout, Some(LimitKind::CpuTime));
    }
    let succeeded = obs.exit == Some(Exit::Code(0));
    if obs.oom_kills > 0 && !succeeded {
        return verdict(Status::Memory, Some(LimitKind::Memory));
    }
    match obs.exit {
        Some(Exit::Code(0)) => verdict(Status::Success, None),
        Some(Exit::Code(_)) => verdict(Status::Failed, None),
        Some(Exit::Signal(_)) => verdict(Status::Killed, None),
        None => verdict(Status::Crash, None),
    }
}

/// Resources a run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock milliseconds from start to the end of the tree.
    pub wall_ms: u64,
    /// User CPU milliseconds summed over the tree.
    pub cpu_user_ms: u64,
    /// System CPU milliseconds summed over the tree.
    pub cpu_sys_ms: u64,
    /// Peak memory of the tree, in bytes.
    pub peak_memory_bytes: u64,
    /// Peak number of processes (0 where the host cannot tell).
    pub peak_pids: u64,
    /// Bytes of stdout + stderr the program wrote (kept or not).
    pub output_bytes: u64,
}

/// The full result of a run, as `warren sandbox run --json` prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RunResultJson", try_from = "RunResultJson")]
pub struct RunResult {
    /// How it ended.
    pub status: Status,
    /// Exit code of the main process, when it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended the main process, when one did.
    pub signal: Option<i32>,
    /// The limit that decided the status, if any.
    pub limit_hit: Option<LimitKind>,
    /// A human explanation when the status needs one (a crash, a program not found).
    pub message: Option<String>,
    /// What it used.
    pub usage: Usage,
    /// Captured stdout (at most the output limit, together with stderr).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Sampled statistics, decimated.
    pub stats: Vec<StatSample>,
}

impl RunResult {
    /// A result for a run that never started, or whose sandbox failed.
    pub fn crash(message: impl Into<String>) -> RunResult {
        RunResult {
            status: Status::Crash,
            exit_code: None,
            signal: None,
            limit_hit: None,
            message: Some(message.into()),
            usage: Usage::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stats: Vec::new(),
        }
    }

    /// The exit code `warren sandbox run` and `warren run` end with for this result:
    /// the program's own code; 128 + signal when killed; otherwise one code per status
    /// (see [`exit_codes`]).
    pub fn process_exit_code(&self) -> i32 {
        match self.status {
            Status::Success | Status::Failed => self.exit_code.unwrap_or(exit_codes::CRASH),
            Status::Killed => 128 + self.signal.unwrap_or(0),
            Status::Timeout => exit_codes::TIMEOUT,
            Status::Memory => exit_codes::MEMORY,
            Status::Overflow => exit_codes::OVERFLOW,
            Status::Abort => exit_codes::ABORT,
            Status::Crash | Status::Error | Status::Fatal => exit_codes::CRASH,
        }
    }
}

/// Exit codes of the CLI for statuses that are not the program's own exit.
pub mod exit_codes {
    /// Wall or CPU time limit (as GNU `timeout`).
    pub const TIMEOUT: i32 = 124;
    /// Out of memory.
    pub const MEMORY: i32 = 123;
    /// Output limit.
    pub const OVERFLOW: i32 = 122;
    /// Aborted.
    pub const ABORT: i32 = 121;
    /// The sandbox (or Warren) failed, or the task was invalid.
    pub const CRASH: i32 = 120;
    /// The program could not be executed (not found, not executable), as a shell reports it.
    pub const NOT_FOUND: i32 = 127;
}

#[derive(Serialize, Deserialize)]
struct RunResultJson {
    status: Status,
    exit_code: Option<i32>,
    signal: Option<i32>,
    limit_hit: Option<LimitKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    usage: Usage,
    stdout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout_base64: Option<String>,
    stderr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr_base64: Option<String>,
    #[serde(default)]
    stats: Vec<StatSample>,
}

impl From<RunResult> for RunResultJson {
    fn from(r: RunResult) -> Self {
        let out = bytes::encode(&r.stdout);
        let err = bytes::encode(&r.stderr);
        RunResultJson {
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal,
            limit_hit: r.limit_hit,
            message: r.message,
            usage: r.usage,
            stdout: out.text,
            stdout_base64: out.base64,
            stderr: err.text,
            stderr_base64: err.base64,
            stats: r.stats,
        }
    }
}

impl TryFrom<RunResultJson> for RunResult {
    type Error = String;

    fn try_from(j: RunResultJson) -> Result<Self, String> {
        let stdout = bytes::decode(&j.stdout, j.stdout_base64.as_deref())
            .map_err(|e| format!("stdout_base64: {e}"))?;
        let stderr = bytes::decode(&j.stderr, j.stderr_base64.as_deref())
            .map_err(|e| format!("stderr_base64: {e}"))?;
        Ok(RunResult {
            status: j.status,
            exit_code: j.exit_code,
            signal: j.signal,
            limit_hit: j.limit_hit,
            message: j.message,
            usage: j.usage,
            stdout,
            stderr,
            stats: j.stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Observations {
        Observations {
            crash: None,
            first_kill: None,
            exit: Some(Exit::Code(0)),
            oom_kills: 0,
            cpu_over_limit: false,
        }
    }

    fn check(o: Observations, status: Status, limit: Option<LimitKind>) {
        assert_eq!(
            decide(&o),
            Verdict {
                status,
                limit_hit: limit
            },
            "{o:?}"
        );
    }

    #[test]
    fn precedence_table() {
        use KillCause::*;
        check(obs(), Status::Success, None);
        check(
            Observations {
                exit: Some(Exit::Code(3)),
                ..obs()
            },
            Status::Failed,
            None,
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                ..obs()
            },
            Status::Killed,
            None,
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                oom_kills: 1,
                ..obs()
            },
            Status::Memory,
            Some(LimitKind::Memory),
        );
        check(
            Observations {
                exit: Some(Exit::Code(1)),
                oom_kills: 2,
                ..obs()
            },
            Status::Memory,
            Some(LimitKind::Memory),
        );
        // A helper was OOM-killed but the program recovered and succeeded.
        check(
            Observations {
                oom_kills: 1,
                ..obs()
            },
            Status::Success,
            None,
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                first_kill: Some(WallTime),
                oom_kills: 1,
                ..obs()
            },
            Status::Timeout,
            Some(LimitKind::WallTime),
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                first_kill: Some(CpuTime),
                ..obs()
            },
            Status::Timeout,
            Some(LimitKind::CpuTime),
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                first_kill: Some(Output),
                ..obs()
            },
            Status::Overflow,
            Some(LimitKind::Output),
        );
        check(
            Observations {
                exit: Some(Exit::Signal(9)),
                first_kill: Some(Abort),
                oom_kills: 3,
                ..obs()
            },
            Status::Abort,
            None,
        );
        check(
            Observations {
                cpu_over_limit: true,
                ..obs()
            },
            Status::Timeout,
            Some(LimitKind::CpuTime),
        );
        check(
            Observations {
                crash: Some("x".into()),
                first_kill: Some(Abort),
                ..obs()
            },
            Status::Crash,
            None,
        );
        check(
            Observations {
                exit: None,
                ..obs()
            },
            Status::Crash,
            None,
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let mut r = RunResult::crash("x");
        let mut codes = std::collections::HashSet::new();
        for status in [
            Status::Timeout,
            Status::Memory,
            Status::Overflow,
            Status::Abort,
            Status::Crash,
        ] {
            r.status = status;
            assert!(codes.insert(r.process_exit_code()), "{status}");
        }
        r.status = Status::Killed;
        r.signal = Some(9);
        assert_eq!(r.process_exit_code(), 137);
        r.status = Status::Failed;
        r.exit_code = Some(3);
        assert_eq!(r.process_exit_code(), 3);
    }

    #[test]
    fn json_is_binary_safe() {
        let mut r = RunResult::crash("m");
        r.stdout = b"plain\n".to_vec();
        r.stderr = vec![0xff, 0xfe, 0];
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["stdout"], "plain\n");
        assert!(json.get("stdout_base64").is_none());
        assert!(json["stderr_base64"].is_string());
        assert_eq!(json["status"], "crash");
        assert!(json["usage"]["wall_ms"].is_u64());
        let back: Option<RunResult> = serde_json::from_value(json).ok();
        assert_eq!(back, Some(r));
    }
}
