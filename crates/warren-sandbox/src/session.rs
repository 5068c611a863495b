//! Sessions: several runs in turn that share one `/tmp` and two fixed identities, for tasks
//! made of steps (a Pythia control script). Each step is a run of its own, so between steps
//! every process is gone and the step's System V IPC objects went with its IPC namespace;
//! only the files in the shared `/tmp` carry over.
//!
//! Two users, as Pythia has them: the *master* (the task's own scripts) reads its input, writes
//! the output, may read task files its group can read, and creates private files (umask 077);
//! the *worker* (untrusted code the master runs) has `/dev/null` for its standard streams,
//! no access to the task files' group, and creates files others can read (umask 000).

use std::path::Path;

use crate::api::{RunEvents, RunSpec};
use crate::mounts::SharedScratch;
use crate::run::{AbortHandle, Identity, Sandbox, SandboxError, SpecError};
use crate::uids::UidLease;
use warren_core::result::RunResult;

/// Who a step of a session runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUser {
    /// The task's own scripts: the run's input and output, the task files' group.
    Master,
    /// Untrusted work: `/dev/null` for stdin, stdout and stderr, a uid of its own.
    Worker,
}

/// A shared `/tmp` and two uids held for as long as the session lives.
#[derive(Debug)]
pub struct Session<'a> {
    sandbox: &'a Sandbox,
    scratch: SharedScratch,
    master: UidLease,
    worker: UidLease,
    task_group: u32,
}

impl Sandbox {
    /// Opens a session whose steps share a `/tmp` of `disk` bytes. Master steps get
    /// `task_group` (the group owning the task files; 0 for none) as a supplementary group, so
    /// task files readable by that group and not by others are the master's alone.
    pub fn session(&self, disk: u64, task_group: u32) -> Result<Session<'_>, SandboxError> {
        let host = |what: &str| {
            let what = what.to_string();
            move |source| SandboxError::Host { what, source }
        };
        let scratch = self
            .host()
            .mounts()
            .scratch(disk)
            .map_err(host("mounting the session's /tmp"))?;
        let master = self
            .host()
            .uids()
            .acquire()
            .map_err(host("allocating the master uid"))?;
        let worker = self
            .host()
            .uids()
            .acquire()
            .map_err(host("allocating the worker uid"))?;
        Ok(Session {
            sandbox: self,
            scratch,
            master,
            worker,
            task_group,
        })
    }
}

impl Session<'_> {
    /// Runs one step as `user` (for a worker step, `spec.stdin` is ignored: its streams are
    /// `/dev/null`). The step's `/tmp` is the session's, whatever `spec.limits.disk` says.
    pub fn run(
        &self,
        spec: &RunSpec,
        user: StepUser,
        events: &mut dyn RunEvents,
        abort: Option<&AbortHandle>,
    ) -> Result<RunResult, SpecError> {
        let identity = match user {
            StepUser::Master => Identity {
                uid: self.master.uid,
                extra_gid: self.task_group,
                umask: 0o077,
            },
            StepUser::Worker => Identity {
                uid: self.worker.uid,
                extra_gid: 0,
                umask: 0,
            },
        };
        self.sandbox.run_as(
            spec,
            events,
            abort,
            Some((identity, self.scratch.path(), user == StepUser::Worker)),
        )
    }

    /// The uid a step of `user` runs as.
    pub fn uid(&self, user: StepUser) -> u32 {
        match user {
            StepUser::Master => self.master.uid,
            StepUser::Worker => self.worker.uid,
        }
    }

    /// The shared `/tmp` on the host.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }
}
