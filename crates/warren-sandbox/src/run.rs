//! The sandbox host and one run from start to result.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use warren_core::limits::{LimitError, LimitKind, Limits};
use warren_core::result::{decide, exit_codes, Exit, Observations, RunResult, Status, Usage};

use crate::api::{Root, RunEvents, RunSpec, SandboxConfig, Stdin};
use crate::cgroup::{CgroupHost, Layout, RunCgroups};
use crate::child::child_main;
use crate::launch::{Launch, LaunchFile};
use crate::mounts::HostMounts;
use crate::plan::{self, ChildPlan, RootEntry, Stage, Step};
use crate::pool::{Pool, Retired};
use crate::spawner::SpawnError;
use crate::supervise::{supervise, Supervision};
use crate::sys::child::SeccompProgram;
use crate::sys::{self, process::WaitStatus};
use crate::uids::{UidLease, UidPool};
use crate::{check::HostReport, seccomp};

/// The sandbox could not be set up on this host.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Not running as root.
    #[error(
        "the sandbox needs root (to create namespaces, cgroups and mounts); running as uid {0}"
    )]
    NotRoot(u32),
    /// A host facility is missing or failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup hierarchies could not be prepared.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// The seccomp policy did not compile.
    #[error(transparent)]
    Seccomp(#[from] seccomp::PolicyError),
}

/// The run's specification is invalid; nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// No command.
    #[error("no command given")]
    EmptyCommand,
    /// A limit out of range.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A limit this host cannot enforce.
    #[error("limit `{limit}` cannot be enforced on this host: {reason}")]
    Unenforceable {
        /// Which limit.
        limit: LimitKind,
        /// What is missing.
        reason: String,
    },
    /// A path given for the root or task files is not usable.
    #[error("{what} {path}: {problem}")]
    Path {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Text with a NUL byte, or otherwise unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Aborts a run from any thread: the run ends with status `abort` and the output so far.
/// Use one handle per run.
#[derive(Debug, Clone)]
pub struct AbortHandle {
    inner: Arc<AbortState>,
}

#[derive(Debug)]
struct AbortState {
    requested: AtomicBool,
    wake: Option<OwnedFd>,
}

impl Default for AbortHandle {
    fn default() -> Self {
        AbortHandle::new()
    }
}

impl AbortHandle {
    /// A new handle, not yet aborted.
    pub fn new() -> AbortHandle {
        AbortHandle {
            inner: Arc::new(AbortState {
                requested: AtomicBool::new(false),
                wake: sys::eventfd().ok(),
            }),
        }
    }

    /// Ends the run (at once if it is running, at its start otherwise).
    pub fn abort(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        if let Some(fd) = &self.inner.wake {
            let _ = sys::eventfd_signal(fd.as_fd());
        }
    }

    /// Whether `abort` was called.
    pub fn is_aborted(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }
}

/// A sandbox host: shared, `Send + Sync`, runs any number of runs at once from many threads.
///
/// With [`SandboxConfig::warm_runs`] above zero, a background thread keeps that many runs
/// *prepared* (cloned into their namespaces and cgroups, root filesystem assembled, waiting for
/// what to execute), so a run with the default root starts with only the per-run work left.
#[derive(Debug)]
pub struct Sandbox {
    host: Arc<Host>,
    pool: Option<Pool>,
}

/// Everything a run needs from the host, shared with the warm pool's thread.
#[derive(Debug)]
pub(crate) struct Host {
    config: SandboxConfig,
    cgroups: CgroupHost,
    uids: Arc<UidPool>,
    mounts: HostMounts,
    seccomp: Vec<SeccompProgram>,
    new_root: CString,
    host_entries: Vec<RootEntry>,
    host_etc: Vec<RootEntry>,
    last_capability: u32,
    cpus: usize,
    runner_id: String,
    /// Made when first asked for: a run does not need it.
    report: std::sync::OnceLock<HostReport>,
}

/// The parts of a run fixed when its child is prepared: its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The root directory (`/` for the host's system directories).
    pub root: PathBuf,
    /// Task files bound at `/task`.
    pub task_dir: Option<PathBuf>,
    /// Size of `/tmp` (the disk limit), in bytes.
    pub disk: u64,
    /// A host directory bound at `/tmp` instead of a tmpfs of the run's own (a session's).
    pub scratch: Option<PathBuf>,
    /// Who the run is; `None`: a uid of its own, taken when it is prepared.
    pub identity: Option<Identity>,
    /// Standard input, output and error are `/dev/null`.
    pub null_stdio: bool,
    /// The run has an IO limit: on a host whose IO controller is v1 `blkio`, it gets a group
    /// there too, joined with the others when it is prepared.
    pub io_limited: bool,
}

/// A run's identity when its caller chooses it (the steps of a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// uid and gid.
    pub uid: u32,
    /// A supplementary group (0: none).
    pub extra_gid: u32,
    /// The program's umask.
    pub umask: libc::mode_t,
}

impl Shape {
    /// The shape the warm pool prepares: host root, no task files, the default disk size.
    pub fn default_host() -> Shape {
        Shape {
            root: PathBuf::from("/"),
            task_dir: None,
            disk: default_disk(),
            scratch: None,
            identity: None,
            null_stdio: false,
            io_limited: false,
        }
    }
}

/// The disk limit a run gets when none is given.
fn default_disk() -> u64 {
    Limits::sandbox_defaults().disk.unwrap_or(64 << 20)
}

/// A child cloned into its namespaces and cgroups with its root assembled, waiting for the
/// launch message. Dropped unused, it is killed and cleaned up.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub shape: Shape,
    pidfd: OwnedFd,
    cgroups: RunCgroups,
    lease: Option<UidLease>,
    stdout_r: Option<OwnedFd>,
    stderr_r: Option<OwnedFd>,
    stdin_w: Option<OwnedFd>,
    go_w: Option<OwnedFd>,
    error_r: OwnedFd,
    launched: bool,
}

impl Prepared {
    /// Whether the child is still waiting (it can die early, e.g. of a failed setup step).
    pub fn alive(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        matches!(sys::poll(&mut fds, Some(std::time::Duration::ZERO)), Ok(0))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.launched {
            self.go_w = None; // end of file on the go pipe: the child exits by itself
            let _ = sys::process::pidfd_signal(self.pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::process::wait_pidfd(self.pidfd.as_fd());
        }
    }
}

/// Numbers the runs of this process. Process-wide, not per `Sandbox`: several sandboxes of one
/// process share the runner id in their group names, and two runs must never share a group.
static RUN_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Namespaces the run's init is cloned into. The run's process makes the network namespace
/// (the init joins it) and enters the cgroup namespace itself, while the init sets up the root:
/// a network namespace is the dearest of them to make.
const NAMESPACES: libc::c_int =
    libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

/// Open files allowed to a run.
const OPEN_FILES: u64 = 4096;

impl Sandbox {
    /// Prepares the host: checks privileges, finds the cgroup layout, makes the parent cgroups,
    /// compiles the seccomp policy, reclaims what crashed runners left behind and starts the
    /// warm pool.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let host = Arc::new(Host::new(config)?);
        let pool = (host.config.warm_runs > 0)
            .then(|| Pool::start(Arc::clone(&host), host.config.warm_runs));
        Ok(Sandbox { host, pool })
    }

    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// `image` (a squashfs file) mounted read-only, shared with every other user of the same
    /// image; it is unmounted when the last holder drops it.
    pub fn mount_image(&self, image: &Path) -> Result<Arc<crate::MountedImage>, SandboxError> {
        self.host()
            .mounts()
            .image(image)
            .map_err(|source| SandboxError::Host {
                what: format!("mounting the image {}", image.display()),
                source,
            })
    }

    /// Ends the sandbox's service: unmounts every shared image and detaches its loop device,
    /// whether or not something still holds it, and mounts no image from then on; returns how
    /// many were mounted. Call it once runs have been aborted and have ended. The warm pool and
    /// the parent cgroups go when the sandbox is dropped.
    pub fn shutdown(&self) -> usize {
        self.host().mounts().release_images()
    }

    /// How many images are mounted now.
    pub fn mounted_images(&self) -> usize {
        self.host().mounts().mounted_images()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SandboxConfig {
        &self.host.config
    }

    /// What this host supports.
    pub fn report(&self) -> &HostReport {
        self.host
            .report
            .get_or_init(|| HostReport::inspect(&self.host.cgroups))
    }

    /// Blocks until the warm pool holds all the runs it keeps (at once when there is no pool),
    /// or `timeout` passes; true when it is full. For benchmarks and tests that must not
    /// measure the pool's own work.
    pub fn wait_until_warm(&self, timeout: std::time::Duration) -> bool {
        self.pool
            .as_ref()
            .is_none_or(|pool| pool.wait_full(timeout))
    }

    /// The cgroup layout found.
    pub fn layout(&self) -> Layout {
        self.host.cgroups.layout()
    }

    /// Runs `spec` to completion on the calling thread, reporting output and statistics to
    /// `events` as they happen. An invalid spec is an error and starts nothing; everything that
    /// happens once started, including failures of the sandbox itself, is in the result.
    pub fn run(
        &self,
        spec: &RunSpec,
        events: &mut dyn RunEvents,
        abort: Option<&AbortHandle>,
    ) -> Result<RunResult, SpecError> {
        self.run_as(spec, events, abort, None)
    }

    /// [`Sandbox::run`], for a session's step when `step` is given: its identity, its shared
    /// `/tmp`, and whether its standard streams are `/dev/null`.
    pub(crate) fn run_as(
        &self,
        spec: &RunSpec,
        events: &mut dyn RunEvents,
        abort: Option<&AbortHandle>,
        step: Option<(Identity, &Path, bool)>,
    ) -> Result<RunResult, SpecError> {
        let host = &self.host;
        let limits = spec.limits.with_defaults(&Limits::sandbox_defaults());
        limits.validate()?;
        // The block devices an IO limit applies to, read once for the check and the launch.
        let disks = match limits.io {
            Some(_) => crate::cgroup::block_devices(),
            None => Vec::new(),
        };
        host.check_enforceable(&limits, &disks)?;
        let root = match &spec.root {
            Root::Host => PathBuf::from("/"),
            Root::Dir(dir) => existing_dir("root directory", dir)?,
        };
        let task_dir = spec
            .task_dir
            .as_deref()
            .map(|d| existing_dir("task directory", d))
            .transpose()?;
        let program = spec.argv.first().ok_or(SpecError::EmptyCommand)?;
        if program.is_empty() {
            return Err(SpecError::EmptyCommand);
        }
        for file in &spec.files {
            if !plan::safe_relative(&file.path) {
                return Err(SpecError::Path {
                    what: "input file",
                    path: file.path.clone(),
                    problem: "must be a relative path without `..`".into(),
                });
            }
        }
        let env = effective_env(&spec.env);
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let Some(resolved) = plan::resolve_program(program, &path_var, &root) else {
            return Ok(not_found(program));
        };
        let launch = host
            .launch_message(spec, &limits, &resolved, &env)
            .map_err(SpecError::Invalid)?;
        if abort.is_some_and(AbortHandle::is_aborted) {
            let mut result = RunResult::crash("aborted before it started");
            result.status = Status::Abort;
            result.message = None;
            return Ok(result);
        }
        let shape = Shape {
            root,
            task_dir,
            disk: limits.disk.unwrap_or_else(default_disk),
            scratch: step.map(|(_, scratch, _)| scratch.to_path_buf()),
            identity: step.map(|(identity, _, _)| identity),
            null_stdio: step.is_some_and(|(_, _, null)| null),
            io_limited: limits.io.is_some(),
        };
        let stdin_fd = match &spec.stdin {
            Stdin::Fd(fd) => match fd.try_clone() {
                Ok(fd) => Some(fd),
                Err(e) => return Ok(RunResult::crash(format!("duplicating stdin: {e}"))),
            },
            Stdin::Null | Stdin::Bytes(_) => None,
        };
        let warm = match (&self.pool, &stdin_fd) {
            (Some(pool), None) => pool.take(&shape),
            _ => None,
        };
        let prepared = match warm {
            Some(p) => p,
            None => match host.prepare(&shape, stdin_fd) {
                Ok(p) => p,
                Err(message) => return Ok(RunResult::crash(message)),
            },
        };
        let stdin_bytes = match &spec.stdin {
            Stdin::Bytes(bytes) => Some(bytes.clone()),
            _ => None,
        };
        match host.launch(
            prepared,
            &launch,
            &limits,
            &disks,
            stdin_bytes,
            events,
            abort,
            spec,
            self.pool.as_ref(),
        ) {
            Ok(result) => Ok(result),
            Err(message) => Ok(RunResult::crash(message)),
        }
    }
}

impl Host {
    pub(crate) fn mounts(&self) -> &HostMounts {
        &self.mounts
    }

    pub(crate) fn uids(&self) -> &Arc<UidPool> {
        &self.uids
    }

    fn new(config: SandboxConfig) -> Result<Host, SandboxError> {
        if !sys::is_root() {
            let uid = sys::effective_uid();
            return Err(SandboxError::NotRoot(uid));
        }
        let host = |what: &str| {
            let what = what.to_string();
            move |source| SandboxError::Host { what, source }
        };
        let runner_id =
            runner_id(std::process::id()).unwrap_or_else(|| std::process::id().to_string());
        let mounts = crate::cgroup::find_mounts(&config.cgroup_root)
            .map_err(host("finding the cgroup mounts"))?;
        let cgroups = CgroupHost::new(&mounts, &config.cgroup_parent)?;
        let root_dir = config.state_dir.join("root");
        std::fs::create_dir_all(&root_dir)
            .map_err(host(&format!("creating {}", root_dir.display())))?;
        let uids = UidPool::new(
            config.state_dir.join("uids"),
            config.uid_base,
            config.uid_count,
        )
        .map_err(host(&format!(
            "creating {}",
            config.state_dir.join("uids").display()
        )))?;
        let seccomp = seccomp::policy()?;
        let host_entries =
            plan::root_entries(Path::new("/"), Some(plan::HOST_DIRS)).map_err(host("listing /"))?;
        let host_etc = plan::root_entries(Path::new("/etc"), Some(plan::HOST_ETC))
            .map_err(host("listing /etc"))?;
        let new_root =
            plan::cstring(root_dir.as_os_str().as_bytes()).map_err(|e| SandboxError::Host {
                what: "state directory".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
        let mounts = HostMounts::new(&config.state_dir, &runner_id);
        // Before this runner makes any group of its own: a parent without child groups, the
        // usual case, then costs one `statx` to check (`has_subdirectories`).
        cgroups.reclaim(&|name| runner_is_gone(name));
        mounts
            .prepare(&|name| runner_is_gone(name))
            .map_err(host("preparing the mount directories"))?;
        let built = Host {
            mounts,
            cgroups,
            uids,
            seccomp,
            new_root,
            host_entries,
            host_etc,
            last_capability: sys::last_capability(),
            cpus: sys::available_cpus(),
            runner_id,
            report: std::sync::OnceLock::new(),
            config,
        };
        Ok(built)
    }

    /// Whether this host can enforce `limits`; `disks` are the block devices an IO limit would
    /// apply to.
    fn check_enforceable(&self, limits: &Limits, disks: &[String]) -> Result<(), SpecError> {
        let need = |limit: LimitKind, ok: bool, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(SpecError::Unenforceable {
                    limit,
                    reason: reason.to_string(),
                })
            }
        };
        if limits.memory.is_some() {
            need(
                LimitKind::Memory,
                self.cgroups.has_controller("memory"),
                "no memory cgroup controller",
            )?;
        }
        if limits.cpus.is_some() {
            need(
                LimitKind::Cpus,
                self.cgroups.has_controller("cpu"),
                "no cpu cgroup controller",
            )?;
        }
        if limits.cpu_time.is_some() {
            need(
                LimitKind::CpuTime,
                self.cgroups.has_v2() || self.cgroups.has_controller("cpuacct"),
                "no cgroup accounts CPU time (neither a cgroup2 tree nor cpuacct)",
            )?;
        }
        if limits.io.is_some() {
            need(
                LimitKind::Io,
                self.cgroups.can_limit_io(),
                "no cgroup controller limits IO (neither io in the cgroup2 tree nor blkio)",
            )?;
            need(
                LimitKind::Io,
                !disks.is_empty(),
                "this host has no block device (/sys/block) to limit",
            )?;
        }
        Ok(())
    }

    /// Clones a child for `shape` into fresh cgroups and lets it assemble its root; it then
    /// waits for [`Host::launch`]. `stdin` is used as the program's stdin when given; otherwise
    /// a pipe is made, fed or closed at launch.
    pub(crate) fn prepare(
        &self,
        shape: &Shape,
        stdin: Option<OwnedFd>,
    ) -> Result<Prepared, String> {
        let lease = match shape.identity {
            Some(_) => None,
            None => Some(
                self.uids
                    .acquire()
                    .map_err(|e| format!("allocating a uid: {e}"))?,
            ),
        };
        let identity = match (&shape.identity, &lease) {
            (Some(identity), _) => *identity,
            (None, Some(lease)) => Identity {
                uid: lease.uid,
                extra_gid: 0,
                umask: 0o022,
            },
            (None, None) => return Err("no uid for the run".to_string()),
        };
        let name = format!(
            "run-{}-{}",
            self.runner_id,
            RUN_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
        let (stdout_r, stdout_w) = sys::pipe().map_err(io("creating the stdout pipe"))?;
        let (stderr_r, stderr_w) = sys::pipe().map_err(io("creating the stderr pipe"))?;
        let (error_r, error_w) = sys::pipe().map_err(io("creating the report pipe"))?;
        let (go_r, go_w) = sys::pipe().map_err(io("creating the go pipe"))?;
        let (stdin_child, stdin_w) = match stdin {
            Some(fd) => (fd, None),
            None => {
                let (r, w) = sys::pipe().map_err(io("creating the stdin pipe"))?;
                (r, Some(w))
            }
        };
        // A step whose streams are /dev/null gets the device itself; the pipes then only ever
        // read end of file.
        let null = if shape.null_stdio {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map_err(io("opening /dev/null"))?,
            )
        } else {
            None
        };
        let mut steps = Vec::new();
        self.filesystem_steps(shape, identity.uid, &mut steps)
            .map_err(|e| format!("preparing the run: {e}"))?;
        // Every group before the clone: the init starts the run's process in the cgroup2 one
        // at once, and that process moves itself into the v1 ones. Made after the clone, they
        // were not made meanwhile: the kernel starts the new init on this CPU, so it waited
        // for this process to block.
        let cgroups = self
            .cgroups
            .create(&name, shape.io_limited)
            .map_err(|e| e.to_string())?;
        let child_plan = ChildPlan {
            new_root: self.new_root.clone(),
            steps,
            hostname: b"warren".to_vec(),
            go_fd: go_r.as_raw_fd(),
            error_fd: error_w.as_raw_fd(),
            stdio: match &null {
                Some(null) => [null.as_raw_fd(); 3],
                None => [
                    stdin_child.as_raw_fd(),
                    stdout_w.as_raw_fd(),
                    stderr_w.as_raw_fd(),
                ],
            },
            uid: identity.uid,
            extra_gid: identity.extra_gid,
            umask: identity.umask,
            disk: if shape.scratch.is_some() {
                0
            } else {
                shape.disk
            },
            last_capability: self.last_capability,
            seccomp: self.seccomp.clone(),
            v1_mounts: self
                .cgroups
                .v1_mounts(shape.io_limited)
                .into_iter()
                .map(|mount| plan::cstring(mount.as_os_str().as_bytes()))
                .collect::<Result<_, _>>()?,
            v1_tasks: plan::cstring(self.cgroups.tasks_below_mount(&name).as_os_str().as_bytes())?,
            v2_mount: self
                .cgroups
                .v2_mount()
                .map(|mount| plan::cstring(mount.as_os_str().as_bytes()))
                .transpose()?,
            v2_group: plan::cstring(self.cgroups.group_below_mount(&name).as_os_str().as_bytes())?,
        };
        let through_spawner = self
            .config
            .spawner
            .as_ref()
            .map(|spawner| spawner.spawn(NAMESPACES, &child_plan));
        let spawned = match through_spawner {
            Some(Ok(spawned)) => spawned,
            Some(Err(SpawnError::Refused(e))) => {
                return Err(format!("creating the sandboxed process: {e}"))
            }
            // No spawner, or one that is gone: clone from here.
            None | Some(Err(SpawnError::Unreachable)) => {
                sys::process::spawn(NAMESPACES, false, child_main, &child_plan)
                    .map_err(io("creating the sandboxed process"))?
            }
        };
        drop((stdout_w, stderr_w, error_w, stdin_child, go_r, null));
        // The child assembles its root meanwhile, and runs nothing of the user's before the
        // launch message. On an error, dropping the result kills the child and removes what
        // was made.
        Ok(Prepared {
            shape: shape.clone(),
            pidfd: spawned.pidfd,
            cgroups,
            lease,
            stdout_r: Some(stdout_r),
            stderr_r: Some(stderr_r),
            stdin_w,
            go_w: Some(go_w),
            error_r,
            launched: false,
        })
    }

    /// The launch message for `spec`.
    fn launch_message(
        &self,
        spec: &RunSpec,
        limits: &Limits,
        program: &Path,
        env: &[(OsString, OsString)],
    ) -> Result<Launch, String> {
        let no_nul = |what: &str, bytes: &[u8]| {
            if bytes.contains(&0) {
                Err(format!(
                    "{what} {:?} contains a NUL byte",
                    String::from_utf8_lossy(bytes)
                ))
            } else {
                Ok(bytes.to_vec())
            }
        };
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0), (libc::RLIMIT_NOFILE, OPEN_FILES)];
        let disk = limits.disk.unwrap_or_else(default_disk);
        // Past the tmpfs size, so a full disk is ENOSPC for the writer and never SIGXFSZ.
        rlimits.push((libc::RLIMIT_FSIZE, disk + (1 << 20)));
        if let Some(pids) = limits.pids {
            // The uid is the run's own (the init's is not), so this bounds the run even without
            // a pids controller.
            rlimits.push((libc::RLIMIT_NPROC, pids));
        }
        let mut files: Vec<LaunchFile> = Vec::new();
        for file in &spec.files {
            let mut prefix = PathBuf::from("/tmp");
            if let Some(parent) = file.path.parent() {
                for part in parent.components() {
                    prefix.push(part);
                    let path = prefix.as_os_str().as_bytes().to_vec();
                    if !files.iter().any(|f| f.path == path) {
                        files.push(LaunchFile {
                            path,
                            mode: libc::S_IFDIR | 0o755,
                            contents: Vec::new(),
                        });
                    }
                }
            }
            let path = no_nul(
                "input file",
                Path::new("/tmp").join(&file.path).as_os_str().as_bytes(),
            )?;
            files.push(LaunchFile {
                path,
                mode: if file.executable { 0o755 } else { 0o644 },
                contents: file.contents.clone(),
            });
        }
        let argv = spec
            .argv
            .iter()
            .map(|a| no_nul("argument", a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let env = env
            .iter()
            .map(|(k, v)| {
                if k.as_bytes().contains(&b'=') || k.is_empty() {
                    return Err(format!(
                        "environment variable name {:?} is empty or contains '='",
                        k.to_string_lossy()
                    ));
                }
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                no_nul("environment variable", &kv)
            })
            .collect::<Result<_, _>>()?;
        Ok(Launch {
            rlimits,
            program: no_nul("program", program.as_os_str().as_bytes())?,
            argv,
            env,
            files,
        })
    }

    /// Gives a prepared child its run and supervises it to the end.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        mut prepared: Prepared,
        launch: &Launch,
        limits: &Limits,
        disks: &[String],
        stdin_bytes: Option<Vec<u8>>,
        events: &mut dyn RunEvents,
        abort: Option<&AbortHandle>,
        spec: &RunSpec,
        pool: Option<&Pool>,
    ) -> Result<RunResult, String> {
        // Until the message is sent, dropping `prepared` on an error kills and reaps the child.
        // The run's init is not in the groups: they hold the run's own processes only.
        prepared
            .cgroups
            .set_limits(limits, disks)
            .map_err(|e| e.to_string())?;
        let message = launch.encode();
        let started = Instant::now();
        prepared.launched = true;
        // The go pipe's write end stays open until the run has ended: the run's init, once it
        // has changed its uid, checks it to know that this process did not die meanwhile.
        if let Some(go) = &prepared.go_w {
            let mut framed = (message.len() as u64).to_ne_bytes().to_vec();
            framed.extend_from_slice(&message);
            // A child that died in its setup closes the pipe; its report says why, below.
            let _ = sys::write_all_nosigpipe(go.as_fd(), &framed);
        }
        let stdin_feed = match (prepared.stdin_w.take(), stdin_bytes) {
            (Some(w), Some(bytes)) if !bytes.is_empty() => Some((w, bytes)),
            _ => None, // dropping the write end gives the program end of file
        };
        let parallelism = limits.cpus.map_or(self.cpus as f64, |m| {
            (m as f64 / 1000.0).min(self.cpus as f64)
        });
        let abort_fd = abort.and_then(|a| a.inner.wake.as_ref().map(|fd| fd.as_fd()));
        let requested = || abort.is_some_and(AbortHandle::is_aborted);
        let (Some(stdout_r), Some(stderr_r)) = (prepared.stdout_r.take(), prepared.stderr_r.take())
        else {
            return Err("output pipes already taken".to_string());
        };
        let supervised = supervise(
            Supervision {
                pidfd: prepared.pidfd.as_fd(),
                outputs: [stdout_r, stderr_r],
                stdin: stdin_feed,
                abort: abort_fd,
                cgroups: &prepared.cgroups,
                limits,
                parallelism,
                stats_interval: self.config.stats_interval,
                max_stat_points: self.config.max_stat_points,
                started,
                report: prepared.error_r.as_fd(),
            },
            events,
            &requested,
        );
        let ended = supervised.ended.unwrap_or_else(Instant::now);
        let executed = supervised.executed.unwrap_or(started);
        let setup_failure = supervised.setup_failure;

        let (cpu_user, cpu_sys) = cgroups_cpu(&prepared.cgroups);
        let usage = Usage {
            wall_ms: ended.saturating_duration_since(executed).as_millis() as u64,
            cpu_user_ms: cpu_user / 1000,
            cpu_sys_ms: cpu_sys / 1000,
            peak_memory_bytes: prepared.cgroups.memory_peak().unwrap_or(0),
            peak_pids: prepared
                .cgroups
                .pids_peak()
                .unwrap_or(supervised.sampled_peak_pids),
            output_bytes: supervised.output_bytes,
        };
        let oom_kills = prepared.cgroups.oom_kills();
        // Once the init has reported the program's end, nothing of the run is left but the init
        // itself, exiting, outside the run's groups: the usage above is final, the groups are
        // empty and the uid is free. Otherwise (a limit, an abort, a failed setup) the run is
        // over once the init has exited: the kernel has then taken the namespace down.
        let init_status = match supervised.program_status {
            Some(_) => None,
            None => Some(
                sys::process::wait_pidfd(prepared.pidfd.as_fd())
                    .map_err(|e| format!("waiting for the run: {e}"))?,
            ),
        };
        let mut cgroups = std::mem::take(&mut prepared.cgroups);
        let lease = prepared.lease.take();
        let removal = match pool {
            // Its thread removes the groups, reaps an exiting init and frees the uid, off
            // this path.
            Some(pool) => {
                let init = match init_status {
                    Some(_) => None,
                    None => Some(
                        prepared
                            .pidfd
                            .try_clone()
                            .map_err(|e| format!("keeping the run's pidfd: {e}"))?,
                    ),
                };
                pool.retire(Retired {
                    init,
                    cgroups,
                    lease,
                });
                Ok(())
            }
            None => {
                let removed = cgroups.remove();
                drop(lease);
                if init_status.is_none() && !self.config.leave_exiting_inits {
                    let _ = sys::process::wait_pidfd(prepared.pidfd.as_fd());
                }
                removed
            }
        };

        // The program's own ending, as its init saw it; the init's when the init was killed
        // first (a limit, an abort), which is a SIGKILL for the whole tree.
        let exit = match (supervised.program_status, init_status) {
            (Some(raw), _) if libc::WIFEXITED(raw) => Exit::Code(libc::WEXITSTATUS(raw)),
            (Some(raw), _) if libc::WIFSIGNALED(raw) => Exit::Signal(libc::WTERMSIG(raw)),
            (_, Some(WaitStatus::Exited(code))) => Exit::Code(code),
            (_, Some(WaitStatus::Signaled(signal))) => Exit::Signal(signal),
            // Not reached: the init is waited for unless it reported the program's end, and
            // waiting without WUNTRACED reports only exits and deaths by a signal.
            (_, None) => Exit::Signal(libc::SIGKILL),
        };
        let mut message = None;
        let mut crash = None;
        if let Some((stage, errno)) = setup_failure {
            if stage == Stage::Exec as u32 {
                // Like a shell: 126 for a program that cannot be executed, 127 for one not found.
                let code = if errno == libc::ENOENT {
                    exit_codes::NOT_FOUND
                } else {
                    126
                };
                let mut result =
                    result_base(Status::Failed, usage, supervised.stdout, supervised.stderr);
                result.exit_code = Some(code);
                result.message = Some(format!(
                    "cannot execute {}: {}",
                    program_name(spec),
                    sys::errno_text(errno)
                ));
                return Ok(result);
            }
            crash = Some(format!(
                "sandbox setup failed {}: {}",
                self.describe_stage(stage, &prepared.shape),
                sys::errno_text(errno)
            ));
        }
        if let Err(e) = removal {
            message = Some(format!("cleanup: {e}"));
        }
        let cpu_over_limit = limits
            .cpu_time
            .is_some_and(|l| (cpu_user + cpu_sys) > l.as_micros() as u64);
        let verdict = decide(&Observations {
            crash: crash.clone(),
            first_kill: supervised.first_kill,
            exit: Some(exit),
            oom_kills,
            cpu_over_limit,
        });
        let mut result = result_base(verdict.status, usage, supervised.stdout, supervised.stderr);
        result.limit_hit = verdict.limit_hit;
        result.stats = supervised.stats;
        match exit {
            Exit::Code(code) => result.exit_code = Some(code),
            Exit::Signal(signal) => result.signal = Some(signal),
        }
        result.message = crash.or(message);
        Ok(result)
    }

    fn describe_stage(&self, stage: u32, shape: &Shape) -> String {
        if let Some(s) = Stage::ALL.iter().find(|s| **s as u32 == stage) {
            return format!("while {}", s.describe());
        }
        // Filesystem steps are numbered by their index; rebuild the list to name the step.
        let mut steps = Vec::new();
        let _ = self.filesystem_steps(shape, 0, &mut steps);
        steps.get(stage as usize).map_or_else(
            || format!("at step {stage}"),
            |s| format!("while {}", s.describe()),
        )
    }

    fn filesystem_steps(
        &self,
        shape: &Shape,
        uid: u32,
        steps: &mut Vec<Step>,
    ) -> Result<(), String> {
        let root = &self.new_root;
        steps.push(Step::Mount {
            source: None,
            target: c"/".into(),
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        });
        // The root's tmpfs is mounted first; its size depends on the files the rest writes.
        let mount_at = steps.len();
        if shape.root == Path::new("/") {
            plan::place_entries(root, &self.host_entries, steps)?;
            let etc = plan::under(root, "etc");
            steps.push(Step::Mkdir(etc.clone(), 0o755));
            for (name, contents) in plan::etc_files(uid) {
                steps.push(Step::File {
                    path: plan::under(&etc, name),
                    contents: contents.into_bytes(),
                    mode: 0o644,
                });
            }
            plan::place_entries(&etc, &self.host_etc, steps)?;
        } else {
            let entries = plan::root_entries(&shape.root, None)
                .map_err(|e| format!("listing {}: {e}", shape.root.display()))?;
            plan::place_entries(root, &entries, steps)?;
        }
        plan::system_mounts(root, steps);
        if let Some(scratch) = &shape.scratch {
            plan::bind_scratch(root, scratch, steps)?;
        }
        if let Some(dir) = &shape.task_dir {
            let entry = RootEntry::Dir("task".into(), dir.clone());
            plan::place_entries(root, std::slice::from_ref(&entry), steps)?;
        }
        // One tmpfs for the root and the run's `/tmp` (a directory of it, bound writable when
        // the root is sealed read-only): each filesystem made costs its set-up and, when the
        // run ends, its teardown. Its size is the disk limit plus the pages of the files the
        // steps write (the root's `/etc`), so `/tmp` has the disk limit free. Device nodes
        // allowed: `/dev` is part of it too (see `child::seal_root`).
        let written: u64 = steps[mount_at..]
            .iter()
            .map(|step| match step {
                Step::File { contents, .. } => (contents.len() as u64).div_ceil(4096) * 4096,
                _ => 0,
            })
            .sum();
        let (size, inodes) = match shape.scratch {
            Some(_) => (written + (1 << 20), 4096),
            None => (
                shape.disk + written,
                (shape.disk / 4096).clamp(1024, 1 << 20) + 256,
            ),
        };
        steps.insert(
            mount_at,
            Step::Mount {
                source: Some(c"tmpfs".into()),
                target: root.clone(),
                fstype: Some(c"tmpfs".into()),
                flags: libc::MS_NOSUID,
                data: Some(plan::cstring(format!(
                    "size={size},nr_inodes={inodes},mode=755"
                ))?),
            },
        );
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stop the pool (its prepared children are killed) before the host's cgroup parents go.
        self.pool = None;
    }
}

fn cgroups_cpu(cgroups: &RunCgroups) -> (u64, u64) {
    cgroups.cpu_usec().unwrap_or((0, 0))
}

fn result_base(status: Status, usage: Usage, stdout: Vec<u8>, stderr: Vec<u8>) -> RunResult {
    let mut result = RunResult::crash("");
    result.status = status;
    result.message = None;
    result.usage = usage;
    result.stdout = stdout;
    result.stderr = stderr;
    result
}

fn program_name(spec: &RunSpec) -> String {
    spec.argv
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn not_found(program: &OsStr) -> RunResult {
    let mut result = result_base(Status::Failed, Usage::default(), Vec::new(), Vec::new());
    result.exit_code = Some(exit_codes::NOT_FOUND);
    result.message = Some(format!("{}: command not found", program.to_string_lossy()));
    result
}

fn existing_dir(what: &'static str, dir: &Path) -> Result<PathBuf, SpecError> {
    let err = |problem: String| SpecError::Path {
        what,
        path: dir.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("is not a directory".into()));
    }
    if dir.as_os_str().as_bytes().contains(&0) {
        return Err(err("contains a NUL byte".into()));
    }
    std::fs::canonicalize(dir).map_err(|e| err(e.to_string()))
}

/// The environment a run sees: the caller's, or a minimal one.
fn effective_env(given: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = given.to_vec();
    let defaults = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
    ];
    for (key, value) in defaults {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.into(), value.into()));
        }
    }
    env
}

/// A runner process's identity: its pid, start time and PID namespace (`PID.START.NS`), so a
/// recycled pid is never taken for the runner that used it before, and a runner in another PID
/// namespace (a container sharing the host's cgroups) is never judged by a pid of this one's.
fn runner_id(pid: u32) -> Option<String> {
    let stat = sys::read_proc_file(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_time = after_name.split_whitespace().nth(19)?;
    let namespace = pid_namespace(&format!("/proc/{pid}/ns/pid"))?;
    Some(format!("{pid}.{start_time}.{namespace}"))
}

/// The inode number that names the PID namespace behind `link` (`pid:[4026531836]`).
fn pid_namespace(link: &str) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    target
        .to_str()?
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// This process's PID namespace, read once.
fn own_pid_namespace() -> Option<u64> {
    static OWN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| pid_namespace("/proc/self/ns/pid"))
}

/// Run cgroups are named `run-<runner id>-<sequence>`: a group whose runner process no longer
/// exists (its pid is gone, or now belongs to a process started at another time) was left by a
/// runner that crashed. A runner of another PID namespace cannot be looked up here: its groups
/// are left for a runner of its own namespace.
fn runner_is_gone(name: &str) -> bool {
    let Some(id) = name
        .strip_prefix("run-")
        .and_then(|rest| rest.split('-').next())
    else {
        return false;
    };
    let parts: Vec<&str> = id.split('.').collect();
    let Some(pid) = parts.first().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let alive = |current: &str| match parts.len() {
        3 => current == id,
        // From before the namespace was part of the id: a runner of this namespace.
        2 => current.starts_with(&format!("{id}.")),
        // No start time: whoever has the pid now is another process.
        _ => false,
    };
    if let Some(namespace) = parts.get(2) {
        match namespace.parse::<u64>() {
            Ok(namespace) if Some(namespace) == own_pid_namespace() => {}
            _ => return false,
        }
    }
    !runner_id(pid).is_some_and(|current| alive(&current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_group_names() {
        let me = runner_id(std::process::id()).unwrap_or_default();
        let namespace = own_pid_namespace().unwrap_or_default();
        let pid = std::process::id();
        assert!(!runner_is_gone("something-else"));
        assert!(
            !runner_is_gone(&format!("run-{me}-3")),
            "this process is alive"
        );
        assert!(
            runner_is_gone(&format!("run-{pid}.1.{namespace}-3")),
            "same pid, other start"
        );
        assert!(runner_is_gone(&format!("run-999999999.5.{namespace}-1")));
        assert!(
            !runner_is_gone(&format!("run-999999999.5.{}-1", namespace + 1)),
            "a runner of another PID namespace is not judged by this one's pids"
        );
        assert!(
            !runner_is_gone(&format!("run-{pid}.1.x-3")),
            "not a runner id"
        );
        // Names from before the namespace was part of the id.
        let (pid_and_start, _) = me.rsplit_once('.').unwrap_or_default();
        assert!(!runner_is_gone(&format!("run-{pid_and_start}-3")));
        assert!(runner_is_gone(&format!("run-{pid}.1-3")));
        assert!(runner_is_gone("run-999999999.5-1"));
        assert!(
            runner_is_gone("run-15240-0"),
            "a name without start time is from a dead runner"
        );
        assert!(
            runner_is_gone(&format!("run-{pid}-0")),
            "even when its pid is alive now"
        );
    }

    #[test]
    fn default_environment_fills_gaps_only() {
        let env = effective_env(&[("PATH".into(), "/x".into())]);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.iter().any(|(k, v)| k == "PATH" && v == "/x"));
        assert!(env.iter().any(|(k, _)| k == "HOME"));
    }
}
