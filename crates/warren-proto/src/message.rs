//! The messages: Pythia's core (`keep-alive`, `register-pool`, `launch`, `done`, `abort`) and
//! Warren's additions, whose type names begin with a hyphen so a plain Pythia peer ignores them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_core::limits::Limits;
use warren_core::result::{RunResult, Status};
use warren_core::stats::StatSample;
use warren_core::task::{OutputStream, TaskSpec};

/// One protocol message.
// A launch carries a whole task spec and is by far the largest variant; messages live only
// between the socket and their handler, so the size is not worth a box on every access.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message")]
pub enum Message {
    /// Sent after an idle interval so the peer knows the connection is alive.
    #[serde(rename = "keep-alive")]
    KeepAlive,
    /// A pool offers `capacity` slots (Pythia).
    #[serde(rename = "register-pool")]
    RegisterPool {
        /// Tasks it runs at once.
        #[serde(default)]
        capacity: u32,
    },
    /// Run a Pythia task (queue -> pool, or frontend -> queue).
    #[serde(rename = "launch")]
    Launch(Launch),
    /// A Pythia task ended (pool -> queue, or queue -> frontend).
    #[serde(rename = "done")]
    Done(Done),
    /// Abort a task (queue -> pool, or frontend -> queue).
    #[serde(rename = "abort")]
    Abort {
        /// The task.
        #[serde(default)]
        id: String,
    },
    /// Warren: who a worker is, what it offers, what it still runs (worker -> coordinator,
    /// before `register-pool`).
    #[serde(rename = "-register")]
    Register(Register),
    /// Warren: run a Warren task (coordinator -> worker).
    #[serde(rename = "-launch")]
    RunTask(RunTask),
    /// Warren: a chunk of a running task's output, binary-safe (worker -> coordinator).
    #[serde(rename = "-output")]
    Output(OutputData),
    /// Warren: a statistics sample of a running task (worker -> coordinator).
    #[serde(rename = "-stats")]
    Stats {
        /// The task.
        id: String,
        /// The sample.
        sample: StatSample,
    },
    /// Warren: a task's full result (worker -> coordinator); repeated until acknowledged.
    #[serde(rename = "-done")]
    Finished {
        /// The task.
        id: String,
        /// Its result.
        result: RunResult,
    },
    /// Warren: a result is recorded durably; the worker may forget it (coordinator -> worker).
    #[serde(rename = "-ack")]
    Ack {
        /// The task.
        id: String,
    },
    /// Warren: the peer refuses the connection (bad token, bad registration), then closes it.
    #[serde(rename = "-refused")]
    Refused {
        /// Why, for a human.
        reason: String,
    },
    /// Warren: run the prepare hook, then report it with `-hook`; on success the worker is in
    /// service (coordinator -> worker).
    #[serde(rename = "-prepare")]
    Prepare,
    /// Warren: leave service and run the maintenance hook with this message, then report it with
    /// `-hook` (coordinator -> worker).
    #[serde(rename = "-maintenance")]
    Maintenance {
        /// The operator's message, given to the hook (`message` is the protocol's type tag).
        #[serde(default)]
        note: String,
    },
    /// Warren: a hook ran (worker -> coordinator).
    #[serde(rename = "-hook")]
    Hook(HookReport),
    /// Warren: the worker cannot run tasks, and why (worker -> coordinator).
    #[serde(rename = "-failure")]
    Failure {
        /// Why, for a human.
        reason: String,
    },
}

/// Warren's `-hook`: how one of a worker's hooks ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReport {
    /// Which hook: `prepare`, `health-check` or `maintenance`.
    pub hook: String,
    /// Whether it exited 0 within its timeout (a hook that is not configured succeeds).
    pub ok: bool,
    /// Its output, bounded.
    #[serde(default)]
    pub output: String,
    /// Why it failed (exit code, signal, timeout), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The names of the hooks in `-hook`.
pub mod hook {
    /// Run before a worker enters service.
    pub const PREPARE: &str = "prepare";
    /// Run periodically while a worker is idle.
    pub const HEALTH_CHECK: &str = "health-check";
    /// Run when a worker leaves service, with the operator's message.
    pub const MAINTENANCE: &str = "maintenance";
}

impl Message {
    /// The type name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::KeepAlive => "keep-alive",
            Message::RegisterPool { .. } => "register-pool",
            Message::Launch(_) => "launch",
            Message::Done(_) => "done",
            Message::Abort { .. } => "abort",
            Message::Register(_) => "-register",
            Message::RunTask(_) => "-launch",
            Message::Output(_) => "-output",
            Message::Stats { .. } => "-stats",
            Message::Finished { .. } => "-done",
            Message::Ack { .. } => "-ack",
            Message::Refused { .. } => "-refused",
            Message::Prepare => "-prepare",
            Message::Maintenance { .. } => "-maintenance",
            Message::Hook(_) => "-hook",
            Message::Failure { .. } => "-failure",
        }
    }

    /// Whether `kind` is a message type this crate knows.
    pub fn is_known(kind: &str) -> bool {
        matches!(
            kind,
            "keep-alive"
                | "register-pool"
                | "launch"
                | "done"
                | "abort"
                | "-register"
                | "-launch"
                | "-output"
                | "-stats"
                | "-done"
                | "-ack"
                | "-refused"
                | "-prepare"
                | "-maintenance"
                | "-hook"
                | "-failure"
        )
    }
}

/// Pythia's `launch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The task id (chosen by whoever launches).
    #[serde(default)]
    pub id: String,
    /// What to run.
    #[serde(default)]
    pub task: PythiaTask,
    /// Standard input.
    #[serde(default)]
    pub input: String,
}

/// Pythia's task: an environment, a task filesystem whose `control` is run, and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythiaTask {
    /// The environment (root filesystem) name.
    #[serde(default)]
    pub environment: String,
    /// The task filesystem name.
    #[serde(default)]
    pub taskfs: String,
    /// Its limits.
    #[serde(default)]
    pub limits: PythiaLimits,
}

impl PythiaTask {
    /// The Warren task this Pythia task stands for: `/task/control` of the task filesystem, run
    /// in the environment, with `input` on standard input. Zero limits stay unset.
    pub fn to_spec(&self, input: &str) -> TaskSpec {
        let l = self.limits;
        let nonzero = |v: u64| (v > 0).then_some(v);
        TaskSpec {
            stdin: (!input.is_empty()).then(|| input.to_string()),
            environment: (!self.environment.is_empty()).then(|| self.environment.clone()),
            taskfs: Some(self.taskfs.clone()),
            limits: Limits {
                wall_time: nonzero(l.time).map(Duration::from_secs),
                memory: nonzero(l.memory).map(|m| m.saturating_mul(1 << 20)),
                // Pythia sizes the task's tmpfs as a share of the VM's memory.
                disk: nonzero(l.disk)
                    .zip(nonzero(l.memory))
                    .map(|(percent, mb)| mb.saturating_mul(1 << 20).saturating_mul(percent) / 100),
                output: nonzero(l.output),
                ..Limits::default()
            },
            ..TaskSpec::default()
        }
    }

    /// The Pythia form of a Warren task (limits rounded up to Pythia's units).
    pub fn from_spec(spec: &TaskSpec) -> PythiaTask {
        let l = &spec.limits;
        PythiaTask {
            environment: spec.environment.clone().unwrap_or_default(),
            taskfs: spec.taskfs.clone().unwrap_or_default(),
            limits: PythiaLimits {
                time: l
                    .wall_time
                    .map(|d| d.as_millis().div_ceil(1000) as u64)
                    .unwrap_or(0),
                memory: l.memory.map(|m| m.div_ceil(1 << 20)).unwrap_or(0),
                disk: l
                    .disk
                    .zip(l.memory.filter(|m| *m > 0))
                    .map(|(d, m)| (d.saturating_mul(100)).div_ceil(m))
                    .unwrap_or(0),
                output: l.output.unwrap_or(0),
            },
        }
    }
}

/// Pythia's limits: time in seconds, memory in megabytes, disk in percent of the memory, output
/// in bytes; 0 is unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythiaLimits {
    /// Seconds of wall time.
    #[serde(default)]
    pub time: u64,
    /// Megabytes of memory.
    #[serde(default)]
    pub memory: u64,
    /// Writable disk (the tmpfs), in percent of `memory`.
    #[serde(default)]
    pub disk: u64,
    /// Bytes of output.
    #[serde(default)]
    pub output: u64,
}

/// Pythia's `done`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The task id.
    #[serde(default)]
    pub id: String,
    /// One of Pythia's statuses (see [`PythiaStatus`]).
    #[serde(default)]
    pub status: String,
    /// The output (stdout and stderr as Pythia captures them).
    #[serde(default)]
    pub output: String,
}

impl Done {
    /// A Warren result as a Pythia peer reads it: the status mapped, stdout then stderr as the
    /// output.
    pub fn from_result(id: String, result: &RunResult) -> Done {
        let mut output = String::from_utf8_lossy(&result.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&result.stderr));
        // Pythia's output is what the task wrote; only a task that could not run at all
        // (error, fatal) or a sandbox that failed says why instead.
        let explains = matches!(result.status, Status::Crash | Status::Error | Status::Fatal);
        if let (true, true, Some(message)) = (explains, output.is_empty(), &result.message) {
            output = message.clone();
        }
        Done {
            id,
            status: PythiaStatus::from_status(result.status).name().to_string(),
            output,
        }
    }

    /// A Pythia `done` as a Warren result.
    pub fn to_result(&self) -> RunResult {
        let status = PythiaStatus::parse(&self.status).to_status();
        let mut result = RunResult::crash(String::new());
        result.status = status;
        result.message = None;
        result.exit_code = (status == Status::Success).then_some(0);
        result.stdout = self.output.clone().into_bytes();
        result.usage.output_bytes = result.stdout.len() as u64;
        result
    }
}

/// Pythia's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythiaStatus {
    /// The task ran to its end.
    Success,
    /// It ran out of time.
    Timeout,
    /// It wrote more than its output limit.
    Overflow,
    /// It was aborted.
    Abort,
    /// The sandbox crashed.
    Crash,
    /// A temporary failure: may be retried.
    Error,
    /// The task is invalid: never retried.
    Fatal,
}

impl PythiaStatus {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            PythiaStatus::Success => "success",
            PythiaStatus::Timeout => "timeout",
            PythiaStatus::Overflow => "overflow",
            PythiaStatus::Abort => "abort",
            PythiaStatus::Crash => "crash",
            PythiaStatus::Error => "error",
            PythiaStatus::Fatal => "fatal",
        }
    }

    /// Parses a wire name; an unknown one is read as `error` (temporary), the safe reading.
    pub fn parse(name: &str) -> PythiaStatus {
        match name {
            "success" => PythiaStatus::Success,
            "timeout" => PythiaStatus::Timeout,
            "overflow" => PythiaStatus::Overflow,
            "abort" => PythiaStatus::Abort,
            "crash" => PythiaStatus::Crash,
            "fatal" => PythiaStatus::Fatal,
            _ => PythiaStatus::Error,
        }
    }

    /// How a Warren status reads to a Pythia peer. Pythia has no exit codes: a program that ran
    /// to its end (whatever its code) is `success`, a signal or an OOM kill is `crash`.
    pub fn from_status(status: Status) -> PythiaStatus {
        match status {
            Status::Success | Status::Failed => PythiaStatus::Success,
            Status::Timeout => PythiaStatus::Timeout,
            Status::Overflow => PythiaStatus::Overflow,
            Status::Abort => PythiaStatus::Abort,
            Status::Killed | Status::Memory | Status::Crash => PythiaStatus::Crash,
            Status::Error => PythiaStatus::Error,
            Status::Fatal => PythiaStatus::Fatal,
        }
    }

    /// The Warren status a Pythia status stands for.
    pub fn to_status(self) -> Status {
        match self {
            PythiaStatus::Success => Status::Success,
            PythiaStatus::Timeout => Status::Timeout,
            PythiaStatus::Overflow => Status::Overflow,
            PythiaStatus::Abort => Status::Abort,
            PythiaStatus::Crash => Status::Crash,
            PythiaStatus::Error => Status::Error,
            PythiaStatus::Fatal => Status::Fatal,
        }
    }
}

/// Warren's `-register`: a worker's identity and resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The worker's stable id.
    pub id: String,
    /// Tasks it runs at once.
    pub capacity: u32,
    /// Memory it offers, bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// CPU it offers, milli-CPUs.
    #[serde(default)]
    pub milli_cpus: u64,
    /// Capabilities (given and detected).
    #[serde(default)]
    pub caps: BTreeMap<String, String>,
    /// Environments it offers.
    #[serde(default)]
    pub environments: Vec<String>,
    /// The join token, required when the queue port listens beyond loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Tasks it is still running (after a reconnect).
    #[serde(default)]
    pub running: Vec<String>,
    /// Tasks that finished while it was away; their `-done` follows the registration.
    #[serde(default)]
    pub finished: Vec<String>,
    /// Warren version of the worker.
    #[serde(default)]
    pub version: String,
    /// Asks to enter service (through PREPARE to IDLE) when new to the coordinator, instead of
    /// waiting in MAINTENANCE for an operator.
    #[serde(default)]
    pub idle: bool,
    /// Answers `-prepare` and `-maintenance` with `-hook`. A worker that does not (an older one)
    /// has its state changes applied by the coordinator alone.
    #[serde(default)]
    pub hooks: bool,
}

/// Warren's `-launch`: a Warren task with its limits already resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    /// The task id.
    pub id: String,
    /// What to run.
    pub spec: TaskSpec,
}

/// Warren's `-output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputData {
    /// The task.
    pub id: String,
    /// Which stream.
    pub stream: OutputStream,
    /// The bytes, base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use warren_core::bytes;

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bytes::to_base64(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        bytes::from_base64(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_messages_round_trip_and_old_registrations_read_as_before() {
        let messages = [
            Message::Prepare,
            Message::Maintenance {
                note: "new disk".into(),
            },
            Message::Hook(HookReport {
                hook: hook::HEALTH_CHECK.into(),
                ok: false,
                output: "sick\n".into(),
                problem: Some("exited with code 1".into()),
            }),
            Message::Failure {
                reason: "fan".into(),
            },
        ];
        for message in messages {
            let json = serde_json::to_string(&message).unwrap_or_default();
            assert!(
                json.contains(&format!("\"message\":\"{}\"", message.kind())),
                "{json}"
            );
            assert!(Message::is_known(message.kind()));
            let back: Option<Message> = serde_json::from_str(&json).ok();
            assert_eq!(back, Some(message));
        }
        // A registration from a worker that predates the lifecycle: neither flag.
        let old = r#"{"message":"-register","id":"w","capacity":2}"#;
        match serde_json::from_str::<Message>(old).ok() {
            Some(Message::Register(reg)) => assert!(!reg.idle && !reg.hooks),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pythia_limits_map_to_warren_units_and_back() {
        let task = PythiaTask {
            environment: "busybox".into(),
            taskfs: "forkbomb.sfs".into(),
            limits: PythiaLimits {
                time: 60,
                memory: 32,
                disk: 50,
                output: 1024,
            },
        };
        let spec = task.to_spec("in");
        assert_eq!(spec.limits.wall_time, Some(Duration::from_secs(60)));
        assert_eq!(spec.limits.memory, Some(32 << 20));
        assert_eq!(spec.limits.disk, Some(16 << 20), "50% of the memory");
        assert_eq!(spec.limits.output, Some(1024));
        assert_eq!(PythiaTask::from_spec(&spec), task);
        // Without a memory limit there is nothing to take a share of: the default disk.
        let no_memory = PythiaTask {
            limits: PythiaLimits {
                memory: 0,
                ..task.limits
            },
            ..task
        };
        assert_eq!(no_memory.to_spec("").limits.disk, None);
    }

    #[test]
    fn pythia_output_is_what_the_task_wrote_unless_it_could_not_run() {
        let mut timeout = RunResult::crash("control line 1 (`/task/run.sh`)");
        timeout.status = Status::Timeout;
        assert_eq!(Done::from_result("a".into(), &timeout).output, "");
        timeout.stdout = b"Start\n".to_vec();
        assert_eq!(Done::from_result("a".into(), &timeout).output, "Start\n");
        let mut fatal = RunResult::crash("this worker has no task filesystem `x`");
        fatal.status = Status::Fatal;
        let done = Done::from_result("b".into(), &fatal);
        assert_eq!(
            (done.status.as_str(), done.output.as_str()),
            ("fatal", "this worker has no task filesystem `x`")
        );
    }
}
