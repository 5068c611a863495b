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
mod supervise;
mod sys;
mod uids;

pub use api::*;
pub use check::HostReport;
pub use mounts::{MountedImage, SharedScratch};
pub use run::{AbortHandle, Sandbox, SandboxError, SpecError};
pub use session::{Session, StepUser};
pub use warren_core::result::RunResult;
