//! The `warren` binaries' integration tests: one binary, one module per area.

mod bench;
mod binaries;
mod client;
mod env;
mod leftovers;
mod pythia;
mod sandbox;
mod shutdown;
mod tools;
