//! Resource limits for one run, their validation and the defaults applied when one is unset.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{format_duration, format_size, serde_duration_ms, serde_size};

/// The limits a run may be given. `None` means "use the default" (see [`Limits::with_defaults`]).
///
/// In JSON, times are milliseconds or strings like `"2s"`, sizes are bytes or strings like `"64M"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock time from start to the end of the whole tree.
    #[serde(
        default,
        with = "serde_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub wall_time: Option<Duration>,
    /// CPU time (user + system) summed over every process of the tree.
    #[serde(
        default,
        with = "serde_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_time: Option<Duration>,
    /// Memory, without swap, for the whole tree (tmpfs pages written by the tree count too).
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Writable space: the size of the tmpfs holding `/tmp` and the working directory.
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Captured stdout + stderr; passing it kills the tree and keeps exactly this many bytes.
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub output: Option<u64>,
    /// Processes and threads alive at once in the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU share in milli-CPUs (1000 = one full core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    /// Block device bandwidth in bytes per second, for reading and for writing each, on every
    /// disk of the host (the tree's reads of the root and task files; `/tmp` is in memory).
    #[serde(default, with = "serde_size", skip_serializing_if = "Option::is_none")]
    pub io: Option<u64>,
}

/// One kind of limit, used to name it in errors and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Wall-clock time.
    WallTime,
    /// CPU time.
    CpuTime,
    /// Memory.
    Memory,
    /// Writable disk space.
    Disk,
    /// Captured output.
    Output,
    /// Number of processes.
    Pids,
    /// CPU share.
    Cpus,
    /// Block device bandwidth.
    Io,
}

impl LimitKind {
    /// The name used in JSON, flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::WallTime => "wall_time",
            LimitKind::CpuTime => "cpu_time",
            LimitKind::Memory => "memory",
            LimitKind::Disk => "disk",
            LimitKind::Output => "output",
            LimitKind::Pids => "pids",
            LimitKind::Cpus => "cpus",
            LimitKind::Io => "io",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit outside the range Warren accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{limit}`: {problem}")]
pub struct LimitError {
    /// Which limit.
    pub limit: LimitKind,
    /// What is wrong with it, with the accepted range.
    pub problem: String,
}

/// Accepted ranges. Values outside them are mistakes (a unit forgotten, a zero), not requests.
pub mod bounds {
    use std::time::Duration;

    /// Shortest wall or CPU time limit.
    pub const MIN_TIME: Duration = Duration::from_millis(1);
    /// Longest wall or CPU time limit: 30 days.
    pub const MAX_TIME: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Smallest memory limit: below this no program can even be loaded.
    pub const MIN_MEMORY: u64 = 1 << 20;
    /// Largest memory or disk limit: 16 TiB.
    pub const MAX_BYTES: u64 = 16 << 40;
    /// Smallest disk limit (one page).
    pub const MIN_DISK: u64 = 4096;
    /// Largest number of processes.
    pub const MAX_PIDS: u64 = 4 << 20;
    /// Smallest CPU share: 1% of a core.
    pub const MIN_CPUS: u64 = 10;
    /// Largest CPU share: 1024 cores.
    pub const MAX_CPUS: u64 = 1024 * 1000;
    /// Smallest block device bandwidth: one page per second.
    pub const MIN_IO: u64 = 4096;
}

impl Limits {
    /// Checks every limit that is set against [`bounds`], naming the first that is out of range.
    pub fn validate(&self) -> Result<(), LimitError> {
        use bounds::*;
        let err = |limit, problem: String| Err(LimitError { limit, problem });
        for (kind, value) in [
            (LimitKind::WallTime, self.wall_time),
            (LimitKind::CpuTime, self.cpu_time),
        ] {
            if let Some(d) = value {
                if d < MIN_TIME || d > MAX_TIME {
                    return err(
                        kind,
                        format!("{} is outside 1ms..30 days", format_duration(d)),
                    );
                }
            }
        }
        if let Some(m) = self.memory {
            if !(MIN_MEMORY..=MAX_BYTES).contains(&m) {
                return err(
                    LimitKind::Memory,
                    format!("{} is outside 1M..16T", format_size(m)),
                );
            }
        }
        if let Some(d) = self.disk {
            if !(MIN_DISK..=MAX_BYTES).contains(&d) {
                return err(
                    LimitKind::Disk,
                    format!("{} is outside 4K..16T", format_size(d)),
                );
            }
        }
        if let Some(o) = self.output {
            if o == 0 || o > MAX_BYTES {
                return err(
                    LimitKind::Output,
                    format!("{} is outside 1 byte..16T", format_size(o)),
                );
            }
        }
        if let Some(p) = self.pids {
            if p == 0 || p > MAX_PIDS {
                return err(LimitKind::Pids, format!("{p} is outside 1..{MAX_PIDS}"));
            }
        }
        if let Some(c) = self.cpus {
            if !(MIN_CPUS..=MAX_CPUS).contains(&c) {
                return err(
                    LimitKind::Cpus,
                    format!("{c} milli-CPUs is outside {MIN_CPUS}..{MAX_CPUS}"),
                );
            }
        }
        if let Some(io) = self.io {
            if !(MIN_IO..=MAX_BYTES).contains(&io) {
                return err(
                    LimitKind::Io,
                    format!("{} per second is outside 4K..16T", format_size(io)),
                );
            }
        }
        Ok(())
    }

    /// Fills every unset limit from `defaults`.
    pub fn with_defaults(&self, defaults: &Limits) -> Limits {
        Limits {
            wall_time: self.wall_time.or(defaults.wall_time),
            cpu_time: self.cpu_time.or(defaults.cpu_time),
            memory: self.memory.or(defaults.memory),
            disk: self.disk.or(defaults.disk),
            output: self.output.or(defaults.output),
            pids: self.pids.or(defaults.pids),
            cpus: self.cpus.or(defaults.cpus),
            io: self.io.or(defaults.io),
        }
    }

    /// Defaults for a run by hand: no time or memory limit, but bounded disk, output and
    /// processes, so a mistake cannot fill the host.
    pub fn sandbox_defaults() -> Limits {
        Limits {
            wall_time: None,
            cpu_time: None,
            memory: None,
            disk: Some(64 << 20),
            output: Some(64 << 20),
            pids: Some(1024),
            cpus: None,
            io: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(limits: Limits, expected: Result<(), LimitKind>) {
        assert_eq!(
            limits.validate().map_err(|e| e.limit),
            expected,
            "{limits:?}"
        );
    }

    #[test]
    fn validation_names_the_limit() {
        check(Limits::default(), Ok(()));
        check(Limits::sandbox_defaults(), Ok(()));
        check(
            Limits {
                wall_time: Some(Duration::ZERO),
                ..Default::default()
            },
            Err(LimitKind::WallTime),
        );
        check(
            Limits {
                cpu_time: Some(Duration::from_secs(1 << 30)),
                ..Default::default()
            },
            Err(LimitKind::CpuTime),
        );
        check(
            Limits {
                memory: Some(1),
                ..Default::default()
            },
            Err(LimitKind::Memory),
        );
        check(
            Limits {
                memory: Some(64 << 20),
                ..Default::default()
            },
            Ok(()),
        );
        check(
            Limits {
                disk: Some(0),
                ..Default::default()
            },
            Err(LimitKind::Disk),
        );
        check(
            Limits {
                output: Some(0),
                ..Default::default()
            },
            Err(LimitKind::Output),
        );
        check(
            Limits {
                output: Some(3),
                ..Default::default()
            },
            Ok(()),
        );
        check(
            Limits {
                pids: Some(0),
                ..Default::default()
            },
            Err(LimitKind::Pids),
        );
        check(
            Limits {
                cpus: Some(5),
                ..Default::default()
            },
            Err(LimitKind::Cpus),
        );
        check(
            Limits {
                cpus: Some(500),
                ..Default::default()
            },
            Ok(()),
        );
        check(
            Limits {
                io: Some(100),
                ..Default::default()
            },
            Err(LimitKind::Io),
        );
        check(
            Limits {
                io: Some(10 << 20),
                ..Default::default()
            },
            Ok(()),
        );
    }

    #[test]
    fn json_accepts_numbers_and_strings() {
        let limits: Limits = serde_json::from_str(
            r#"{"wall_time":"2s","cpu_time":1500,"memory":"64M","output":10}"#,
        )
        .unwrap_or_default();
        assert_eq!(limits.wall_time, Some(Duration::from_secs(2)));
        assert_eq!(limits.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(limits.memory, Some(64 << 20));
        assert_eq!(limits.output, Some(10));
        let err = serde_json::from_str::<Limits>(r#"{"memory":"64Q"}"#)
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("unknown unit"));
        let err = serde_json::from_str::<Limits>(r#"{"memroy":1}"#)
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("memroy"));
    }

    #[test]
    fn io_reads_as_a_size_per_second() {
        let limits: Result<Limits, _> = serde_json::from_str(r#"{"io": "8M"}"#);
        assert_eq!(limits.ok().and_then(|l| l.io), Some(8 << 20));
        let err = Limits {
            io: Some(1),
            ..Default::default()
        }
        .validate();
        assert!(err.is_err_and(|e| e.to_string().contains("limit `io`")));
    }

    #[test]
    fn defaults_fill_only_unset() {
        let set = Limits {
            output: Some(5),
            ..Default::default()
        };
        let filled = set.with_defaults(&Limits::sandbox_defaults());
        assert_eq!(filled.output, Some(5));
        assert_eq!(filled.disk, Some(64 << 20));
    }
}
