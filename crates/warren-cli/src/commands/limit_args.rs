//! The resource limit flags shared by `warren sandbox run`, `warren run` and `warren submit`.
//!
//! Durations are written like `1500ms`, `2s` or `1m` (a plain number is milliseconds); sizes like
//! `64M`, `1G` or a plain number of bytes. Parsing is done by clap through
//! [`warren_core::units`], so a malformed value is a usage error naming the flag; ranges are
//! checked by [`Limits::validate`] in [`LimitArgs::to_limits`].

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use warren_core::limits::Limits;
use warren_core::units::{parse_duration, parse_size};

/// Resource limits for one run. A limit left out is filled from the defaults of whoever runs it
/// (the sandbox's for a run by hand, the coordinator's for a task).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct LimitArgs {
    /// Wall-clock time limit for the whole process tree (e.g. `1500ms`, `2s`, `1m`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration_arg)]
    pub wall_time: Option<Duration>,
    /// CPU time limit (user + system) summed over the tree (e.g. `2s`).
    #[arg(long, value_name = "DUR", value_parser = parse_duration_arg)]
    pub cpu_time: Option<Duration>,
    /// Memory limit for the tree, without swap (e.g. `64M`, `1G`, or bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory: Option<u64>,
    /// Writable space for `/tmp` and the working directory (e.g. `64M`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub disk: Option<u64>,
    /// Captured stdout + stderr; passing it kills the tree and truncates the output (e.g. `1M`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub output: Option<u64>,
    /// Processes and threads alive at once in the tree.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// CPU share in milli-CPUs (1000 = one full core).
    #[arg(long, value_name = "MILLI")]
    pub cpus: Option<u64>,
    /// Block device bandwidth per second, for reading and for writing each (e.g. `10M`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub io: Option<u64>,
}

impl LimitArgs {
    /// The limits given on the command line, checked against the accepted ranges.
    pub fn to_limits(&self) -> anyhow::Result<Limits> {
        let limits = Limits {
            wall_time: self.wall_time,
            cpu_time: self.cpu_time,
            memory: self.memory,
            disk: self.disk,
            output: self.output,
            pids: self.pids,
            cpus: self.cpus,
            io: self.io,
        };
        if let Err(err) = limits.validate() {
            bail!("--{} {}", err.limit.name().replace('_', "-"), err.problem);
        }
        Ok(limits)
    }
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn parse(args: &[&str]) -> Result<Limits, String> {
        let argv = std::iter::once("probe").chain(args.iter().copied());
        let probe = Probe::try_parse_from(argv).map_err(|e| e.kind().to_string())?;
        probe.limits.to_limits().map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn every_flag_maps_to_its_limit() {
        let limits = parse(&[
            "--wall-time",
            "1500ms",
            "--cpu-time",
            "2s",
            "--memory",
            "64M",
            "--disk",
            "1G",
            "--output",
            "4096",
            "--pids",
            "16",
            "--cpus",
            "500",
            "--io",
            "8M",
        ]);
        assert_eq!(
            limits,
            Ok(Limits {
                wall_time: Some(Duration::from_millis(1500)),
                cpu_time: Some(Duration::from_secs(2)),
                memory: Some(64 << 20),
                disk: Some(1 << 30),
                output: Some(4096),
                pids: Some(16),
                cpus: Some(500),
                io: Some(8 << 20),
            })
        );
        assert_eq!(parse(&[]), Ok(Limits::default()));
    }

    #[test]
    fn malformed_values_are_usage_errors() {
        assert!(parse(&["--memory", "64Q"]).is_err());
        assert!(parse(&["--wall-time", "soon"]).is_err());
        assert!(parse(&["--pids", "-1"]).is_err());
    }

    #[test]
    fn out_of_range_values_name_the_limit() {
        let err = parse(&["--memory", "1K"]).err().unwrap_or_default();
        assert!(err.contains("--memory 1K is outside"), "{err}");
        let err = parse(&["--cpus", "1"]).err().unwrap_or_default();
        assert!(err.contains("--cpus"), "{err}");
        let err = parse(&["--wall-time", "0"]).err().unwrap_or_default();
        assert!(err.contains("--wall-time"), "{err}");
    }
}
