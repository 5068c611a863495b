//! A client for Warren's HTTP API.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod sse;

pub use error::{Error, Result};
