//! Warren worker.
#![forbid(unsafe_code)]
