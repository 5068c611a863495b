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
        /// Runs of the CLI and its baselines one at a time after an idle pause (0: none).
        #[arg(long, default_value_t = 100)]
        paused_runs: usize,
        /// The idle pause before each of those runs, in milliseconds.
        #[arg(long, default_value_t = 50)]
        pause_ms: u64,
    },
    /// Matcher decision latency: a slot frees, a task arrives, with a deep queue and many workers.
    Matcher {
        /// Tasks waiting.
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// Workers registered.
        #[arg(long, default_value_t = 1_000)]
        workers: usize,
        /// Decisions of each kind.
        #[arg(long, default_value_t = 10_000)]
        decisions: usize,
        /// Seed of the generator that builds the queue and the decisions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Runs a benchmark and prints its Markdown report.
pub fn run(cmd: BenchCommand) -> anyhow::Result<u8> {
    match cmd {
        BenchCommand::Sandbox {
            runs,
            rate_runs,
            paused_runs,
            pause_ms,
        } => {
            // This runs in warren-service; the command line measured is `warren`, beside it.
            let warren = std::env::current_exe()
                .context("finding the warren binary")?
                .with_file_name("warren");
            let options = warren_bench::sandbox::Options {
                runs,
                warren,
                rate_runs,
                paused_runs,
                pause: std::time::Duration::from_millis(pause_ms),
            };
            let report = warren_bench::sandbox::run(&options).map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(0)
        }
        BenchCommand::Matcher {
            tasks,
            workers,
            decisions,
            seed,
        } => {
            if workers < 2 || tasks == 0 {
                anyhow::bail!("--workers must be at least 2 and --tasks at least 1");
            }
            let options = warren_bench::matcher::Options {
                tasks,
                workers,
                decisions,
                seed,
            };
            let report = warren_bench::matcher::run(&options).map_err(anyhow::Error::msg)?;
            println!("{report}");
            Ok(0)
        }
    }
}
