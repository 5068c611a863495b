//! Placeholder while the engine lands.
use warren_core::result::RunResult;

use crate::api::{RunEvents, RunSpec, SandboxConfig};

/// A sandbox host, shared by concurrent runs (`Send + Sync`).
#[derive(Debug)]
pub struct Sandbox {
    _config: SandboxConfig,
}

/// The sandbox could not be set up on this host.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SandboxError(String);

/// The run's specification is invalid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

/// Aborts a run from any thread.
#[derive(Debug, Clone, Default)]
pub struct AbortHandle;

impl AbortHandle {
    /// A handle not yet tied to a run.
    pub fn new() -> AbortHandle {
        AbortHandle
    }
    /// Ends the run with status `abort`.
    pub fn abort(&self) {}
}

impl Sandbox {
    /// Prepares the host.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Ok(Sandbox { _config: config })
    }
    /// Runs one spec to completion.
    pub fn run(
        &self,
        _spec: &RunSpec,
        _events: &mut dyn RunEvents,
        _abort: Option<&AbortHandle>,
    ) -> Result<RunResult, SpecError> {
        Ok(RunResult::crash("not implemented"))
    }
}
