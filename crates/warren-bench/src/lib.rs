//! Warren's benchmarks, each measured side by side with its baselines in one run.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod matcher;
pub mod sandbox;
pub mod stats;
