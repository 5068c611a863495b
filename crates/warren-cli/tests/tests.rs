//! The `warren` binary's integration tests: one binary, one module per area.

mod bench;
mod client;
mod env;
mod leftovers;
mod pythia;
mod sandbox;
mod shutdown;
mod tools;
