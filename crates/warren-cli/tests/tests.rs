//! The `warren` binary's integration tests: one binary, one module per area.

mod client;
mod pythia;
mod sandbox;
