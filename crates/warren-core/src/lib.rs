//! Warren's domain types and pure decision logic.
//!
//! Nothing in this crate performs I/O, reads a clock or draws random numbers: every function is a
//! deterministic function of its arguments, so the rules it encodes can be tested as tables.
//!
//! ```
//! use warren_core::units::{parse_duration, parse_size};
//! assert_eq!(parse_duration("1500ms").unwrap().as_millis(), 1500);
//! assert_eq!(parse_size("64M").unwrap(), 64 << 20);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bytes;
pub mod control;
pub mod environment;
pub mod limits;
pub mod matcher;
pub mod pythia;
pub mod result;
pub mod stats;
pub mod task;
pub mod timers;
pub mod units;
pub mod worker_state;
