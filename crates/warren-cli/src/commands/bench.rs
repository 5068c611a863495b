//! `warren bench ...`: benchmarks measured side by side with their baselines.

use anyhow::Context;
use clap::Subcommand;

/// `warren bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sandbox start-up against plain /bin/true, unshare, bwrap and the CLI; runs per second.
    Sandbox {
        /// Runs of each variant.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Runs for each runs-per-second figure.
        #[arg(long, default_value_t = 1000)]
        rate_runs: usize,
    },
}

/// Runs a benchmark and prints its Markdown report.
pub fn run(cmd: BenchCommand) -> anyhow::Result<u8> {
    match cmd {
        BenchCommand::Sandbox { runs, rate_runs } => {
            let warren = std::env::current_exe().context("finding the warren binary")?;
            let options = warren_bench::sandbox::Options {
                runs,
                warren,
                rate_runs,
            };
            let report = warren_bench::sandbox::run(&options).map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(0)
        }
    }
}
