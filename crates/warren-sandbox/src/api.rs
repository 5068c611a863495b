//! The public surface of the sandbox: what a run is given and what it reports.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use warren_core::limits::Limits;
use warren_core::stats::StatSample;

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The program's standard output.
    Stdout,
    /// The program's standard error.
    Stderr,
}

/// What the program reads on its standard input.
#[derive(Debug, Default)]
pub enum Stdin {
    /// `/dev/null`.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// This file descriptor, as it is (a terminal, a pipe, a file): read live by the program.
    Fd(OwnedFd),
}

/// The root filesystem a run sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Root {
    /// The host's system directories (`/usr`, `/bin`, `/lib*`, `/sbin`) read-only, and a
    /// minimal `/etc`.
    #[default]
    Host,
    /// This directory tree, read-only, as `/`.
    Dir(PathBuf),
}

/// A file materialised in the working directory before the program starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path relative to the working directory; no `..`, not absolute.
    pub path: PathBuf,
    /// Contents.
    pub contents: Vec<u8>,
    /// Whether the file is executable.
    pub executable: bool,
}

/// Everything about one run.
#[derive(Debug, Default)]
pub struct RunSpec {
    /// The program and its arguments; the program is looked up in `PATH` when it has no `/`.
    pub argv: Vec<OsString>,
    /// Environment variables; when empty a minimal one (`PATH`, `HOME`, `TMPDIR`, `LANG`) is used.
    pub env: Vec<(OsString, OsString)>,
    /// Limits; unset ones take [`Limits::sandbox_defaults`].
    pub limits: Limits,
    /// The root filesystem.
    pub root: Root,
    /// A directory bound read-only at `/task`.
    pub task_dir: Option<PathBuf>,
    /// Standard input.
    pub stdin: Stdin,
    /// Files written to the working directory before the program starts.
    pub files: Vec<InputFile>,
}

impl RunSpec {
    /// A run of `argv` with every other setting at its default.
    pub fn command<I, S>(argv: I) -> RunSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        RunSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            ..RunSpec::default()
        }
    }
}

/// Receives what happens during a run, as it happens, on the thread that called
/// [`Sandbox::run`](crate::Sandbox::run).
pub trait RunEvents {
    /// A chunk of output, in the order the program wrote it to that stream. Binary-safe.
    /// Chunks never pass the output limit: the last one is cut at it.
    fn output(&mut self, stream: Stream, data: &[u8]);

    /// A statistics sample (taken every [`SandboxConfig::stats_interval`]).
    fn stats(&mut self, _sample: &StatSample) {}
}

/// Collects nothing live; useful when only the final result matters (it holds the output).
#[derive(Debug, Default)]
pub struct CollectOutput;

impl RunEvents for CollectOutput {
    fn output(&mut self, _stream: Stream, _data: &[u8]) {}
}

/// Configuration of a sandbox host; the defaults suit one runner per machine.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where the sandbox keeps its per-host state (mount points, id locks).
    pub state_dir: PathBuf,
    /// The cgroup filesystem root (`/sys/fs/cgroup`); a parameter so tests can use a fake tree.
    pub cgroup_root: PathBuf,
    /// Name of the cgroup under which every run's cgroup is made, in each hierarchy.
    pub cgroup_parent: String,
    /// First uid/gid given to runs; run `i` of those alive at once gets `uid_base + i`.
    pub uid_base: u32,
    /// How many distinct uids to use (the most runs alive at once).
    pub uid_count: u32,
    /// Interval between statistics samples.
    pub stats_interval: Duration,
    /// Most statistics points kept in a result (decimated beyond that).
    pub max_stat_points: usize,
    /// Runs kept prepared ahead of time (namespaces, cgroups and root ready) for runs with the
    /// host root and no task files; 0 prepares each run when it is asked for.
    pub warm_runs: usize,
    /// Return from a run as soon as its init has reported the end (every process of the run
    /// killed and reaped, its cgroups removed), without reaping the init, which is then
    /// exiting: in that exit the kernel tears the run's namespaces down, which takes a few
    /// tenths of a millisecond. For a runner that exits right after its run (`warren sandbox
    /// run`): the exiting init is reaped by whoever inherits it. Without it (and without a warm
    /// pool, whose thread reaps), the run waits for the init.
    pub leave_exiting_inits: bool,
    /// A spawner process to clone runs from ([`crate::Spawner::start`], called early): for a
    /// runner that is a large multi-threaded process, so cloning a run does not copy its page
    /// tables nor make its memory copy-on-write. `None` clones from this process, which suits
    /// a small one (`warren sandbox run`). A spawner that stopped answering is passed over.
    pub spawner: Option<crate::Spawner>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            state_dir: PathBuf::from("/run/warren"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "warren".to_string(),
            uid_base: 200_000,
            uid_count: 10_000,
            stats_interval: Duration::from_millis(100),
            max_stat_points: 100,
            warm_runs: 2,
            leave_exiting_inits: false,
            spawner: None,
        }
    }
}
