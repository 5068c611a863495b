//! Warren's sandbox: runs one process tree isolated in namespaces, limited by cgroups, metered,
//! with its output streamed to the caller while it runs.
//!
//! Usable without the rest of Warren (as root):
//!
//! ```no_run
//! use warren_sandbox::{Sandbox, SandboxConfig, RunSpec, CollectOutput};
//! let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
//! let spec = RunSpec::command(["/bin/echo", "hello"]);
//! let result = sandbox.run(&spec, &mut CollectOutput, None).unwrap();
//! assert_eq!(result.stdout, b"hello\n");
//! ```
#![deny(missing_docs)]

mod api;
pub mod cgroup;
mod check;
mod child;
mod launch;
mod mounts;
mod plan;
mod pool;
mod run;
mod seccomp;
mod session;
mod spawner;
mod supervise;
mod sys;
mod uids;

pub use api::*;
pub use check::HostReport;
pub use mounts::{loop_devices_backed_by, MountedImage};
pub use run::{AbortHandle, Sandbox, SandboxError, SpecError};
pub use session::{Session, StepUser};
pub use spawner::Spawner;
pub use warren_core::result::RunResult;

/// Sends SIGKILL to every process of the process group `pgid` (for commands Warren starts on
/// the host in their own group, such as a worker's hooks).
pub fn kill_process_group(pgid: u32) -> std::io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    sys::kill(-pgid, libc::SIGKILL)
}
