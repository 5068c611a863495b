//! Cgroups for runs, on pure v2, pure v1 and hybrid hosts.
//!
//! A run's cgroup is a set of [`Group`]s, one per hierarchy in use. Each hierarchy backend
//! (`v1`, one per controller; `v2`, one for the unified tree) answers only what its files can
//! tell, and the set takes the first answer: on a hybrid host the v2 group (no controllers)
//! provides placement by `CLONE_INTO_CGROUP`, CPU time and kill, and the v1 groups provide
//! memory and process limits. The run's process joins them by itself (see
//! [`crate::plan::ChildPlan::v1_mounts`] and [`crate::plan::ChildPlan::v2_mount`]).

pub mod detect;
pub mod v1;
pub mod v2;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

use warren_core::limits::Limits;

pub use detect::{CgroupMounts, Fs, Layout};

/// One hierarchy's cgroup for one run.
pub trait Group: Send + Sync + Debug {
    /// Writes the limits this hierarchy enforces.
    /// `disks` are the block devices (`MAJ:MIN`) the IO limit applies to.
    fn set_limits(&self, limits: &Limits, disks: &[String]) -> io::Result<()>;
    /// CPU time used: (user, system) microseconds.
    fn cpu_usec(&self) -> Option<(u64, u64)> {
        None
    }
    /// Memory in use now.
    fn memory_current(&self) -> Option<u64> {
        None
    }
    /// Highest memory use.
    fn memory_peak(&self) -> Option<u64> {
        None
    }
    /// OOM kills in the group.
    fn oom_kills(&self) -> Option<u64> {
        None
    }
    /// Processes alive now.
    fn pids_current(&self) -> Option<u64> {
        None
    }
    /// Most processes alive at once.
    fn pids_peak(&self) -> Option<u64> {
        None
    }
    /// Block IO: (read, written) bytes.
    fn io_bytes(&self) -> Option<(u64, u64)> {
        None
    }
    /// Kills every process in the group; `Ok(false)` when this hierarchy cannot.
    fn kill_all(&self) -> io::Result<bool>;
    /// Removes the group (it must be empty).
    fn remove(&self) -> io::Result<()>;
    /// The directory, for messages.
    fn path(&self) -> &Path;
}

/// All of one run's groups.
#[derive(Debug, Default)]
pub struct RunCgroups {
    groups: Vec<Box<dyn Group>>,
}

/// Usage figures read at one moment; `None` where no hierarchy can tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// CPU (user, system) microseconds.
    pub cpu_usec: Option<(u64, u64)>,
    /// Memory in use.
    pub memory: Option<u64>,
    /// Processes alive.
    pub pids: Option<u64>,
    /// Block IO bytes (read, written).
    pub io: Option<(u64, u64)>,
}

impl RunCgroups {
    fn first<T>(&self, f: impl Fn(&dyn Group) -> Option<T>) -> Option<T> {
        self.groups.iter().find_map(|g| f(g.as_ref()))
    }

    /// Writes `limits` to every group; the IO limit applies to `disks` (`MAJ:MIN`).
    pub fn set_limits(&self, limits: &Limits, disks: &[String]) -> Result<(), CgroupError> {
        for group in &self.groups {
            group.set_limits(limits, disks).map_err(|e| {
                CgroupError::new(format!("setting limits in {}", group.path().display()), e)
            })?;
        }
        Ok(())
    }

    /// Current usage.
    pub fn read(&self) -> Reading {
        Reading {
            cpu_usec: self.first(|g| g.cpu_usec()),
            memory: self.first(|g| g.memory_current()),
            pids: self.first(|g| g.pids_current()),
            io: self.first(|g| g.io_bytes()),
        }
    }

    /// Opens the files the run's final usage is read from (CPU time, peak memory and
    /// processes, OOM kills) by reading them once: called while the program runs, so the end
    /// of the run only re-reads them.
    pub fn open_usage_files(&self) {
        let _ = (
            self.cpu_usec(),
            self.memory_peak(),
            self.pids_peak(),
            self.oom_kills(),
        );
    }

    /// CPU time used so far: (user, system) microseconds, if known.
    pub fn cpu_usec(&self) -> Option<(u64, u64)> {
        self.first(|g| g.cpu_usec())
    }

    /// CPU time used so far, in microseconds (user + system), if known.
    pub fn cpu_total_usec(&self) -> Option<u64> {
        self.cpu_usec().map(|(u, s)| u + s)
    }

    /// Peak memory.
    pub fn memory_peak(&self) -> Option<u64> {
        self.first(|g| g.memory_peak())
    }

    /// Peak processes.
    pub fn pids_peak(&self) -> Option<u64> {
        self.first(|g| g.pids_peak())
    }

    /// OOM kills.
    pub fn oom_kills(&self) -> u64 {
        self.first(|g| g.oom_kills()).unwrap_or(0)
    }

    /// Kills everything in the run's groups (best effort, every hierarchy that can).
    pub fn kill_all(&self) {
        for group in &self.groups {
            if let Ok(true) = group.kill_all() {
                return;
            }
        }
    }

    /// Removes every group, waiting briefly for the kernel to release exited processes.
    pub fn remove(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for group in self.groups.drain(..) {
            if let Err(e) = remove_when_empty(group.as_ref()) {
                first_error.get_or_insert(io::Error::new(
                    e.kind(),
                    format!("removing {}: {e}", group.path().display()),
                ));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        if !self.groups.is_empty() {
            self.kill_all();
            let _ = self.remove();
        }
    }
}

/// rmdir fails with EBUSY while the kernel still counts a dying process; that lasts
/// microseconds after the last process is reaped, so a short bounded retry is enough.
fn remove_when_empty(group: &dyn Group) -> io::Result<()> {
    let mut delay = std::time::Duration::from_micros(50);
    for attempt in 0..40 {
        match group.remove() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 39 => {
                if attempt == 20 {
                    let _ = group.kill_all();
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The host's cgroup mounts under `cgroup_root`: from `/proc/self/cgroup` and `statfs` where
/// they are in the usual places ([`CgroupMounts::from_proc_cgroup`]), else from mountinfo.
pub fn find_mounts(cgroup_root: &Path) -> io::Result<CgroupMounts> {
    match find_usual_mounts(cgroup_root)? {
        Some(mounts) => Ok(mounts),
        None => mounts_from_mountinfo(cgroup_root),
    }
}

/// The host's cgroup mounts when they are in the usual places under `cgroup_root`.
pub fn find_usual_mounts(cgroup_root: &Path) -> io::Result<Option<CgroupMounts>> {
    let probe = |dir: &Path| match crate::sys::filesystem_type(dir) {
        Ok(libc::CGROUP2_SUPER_MAGIC) => Fs::Cgroup2,
        Ok(libc::CGROUP_SUPER_MAGIC) => Fs::Cgroup1,
        _ => Fs::Other,
    };
    let proc_cgroup = crate::sys::read_proc_file(Path::new("/proc/self/cgroup"))?;
    Ok(CgroupMounts::from_proc_cgroup(
        &proc_cgroup,
        cgroup_root,
        &probe,
    ))
}

/// The host's cgroup mounts under `cgroup_root`, from `/proc/self/mountinfo`.
pub fn mounts_from_mountinfo(cgroup_root: &Path) -> io::Result<CgroupMounts> {
    let mountinfo = crate::sys::read_proc_file(Path::new("/proc/self/mountinfo"))?;
    Ok(CgroupMounts::parse(&mountinfo, cgroup_root))
}

/// Where runs' cgroups are made on this host, and how. Runs' groups go under one parent group
/// (`warren`) in each hierarchy, made by the first run that needs it and removed by the last
/// runner to leave it empty.
#[derive(Debug)]
pub struct CgroupHost {
    /// The parent group's name, the same in every hierarchy.
    parent: String,
    layout: Layout,
    v2: Option<v2::Hierarchy>,
    v1: Vec<v1::Hierarchy>,
}

/// The cgroup setup failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CgroupError {
    what: String,
    #[source]
    source: io::Error,
}

impl CgroupError {
    pub(crate) fn new(what: impl Into<String>, source: io::Error) -> CgroupError {
        CgroupError {
            what: what.into(),
            source,
        }
    }
}

impl CgroupHost {
    /// Prepares the parent cgroup `parent` in every hierarchy the layout uses.
    pub fn new(mounts: &CgroupMounts, parent: &str) -> Result<CgroupHost, CgroupError> {
        let layout = mounts.layout();
        let v2 = match &mounts.v2 {
            Some(root) if layout != Layout::V1 => {
                Some(v2::Hierarchy::new(root, parent, layout == Layout::V2)?)
            }
            _ => None,
        };
        // One hierarchy per mount point: controllers mounted together (`cpu,cpuacct`) share
        // their groups.
        let mut by_mount: Vec<(&Path, v1::Controllers)> = Vec::new();
        if layout != Layout::V2 {
            for (controller, mount) in &mounts.v1 {
                match by_mount.iter_mut().find(|(m, _)| m == mount) {
                    Some((_, controllers)) => controllers.insert(*controller),
                    None => by_mount.push((mount, v1::Controllers::of(&[*controller]))),
                }
            }
        }
        let v1 = by_mount
            .into_iter()
            .map(|(mount, controllers)| v1::Hierarchy::new(controllers, mount, parent))
            .collect();
        Ok(CgroupHost {
            parent: parent.to_string(),
            layout,
            v2,
            v1,
        })
    }

    /// The layout found.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Which controllers can enforce limits, by name (for `warren sandbox check`).
    pub fn controllers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .v1
            .iter()
            .flat_map(|h| h.controllers().iter())
            .map(|c| format!("{} (v1)", c.name()))
            .collect();
        if let Some(v2) = &self.v2 {
            names.extend(v2.controllers().iter().map(|c| format!("{c} (v2)")));
        }
        names
    }

    /// Whether a controller for `resource` ("memory", "pids", "cpu", "io") is available.
    pub fn has_controller(&self, resource: &str) -> bool {
        self.v1
            .iter()
            .any(|h| h.controllers().iter().any(|c| c.name() == resource))
            || self
                .v2
                .as_ref()
                .is_some_and(|h| h.controllers().iter().any(|c| c == resource))
    }

    /// Whether runs are tracked in a cgroup2 tree (clone into it, kill through it).
    pub fn has_v2(&self) -> bool {
        self.v2.is_some()
    }

    /// Whether block device bandwidth can be limited: the cgroup2 tree's `io` controller, or a
    /// v1 `blkio` hierarchy.
    pub fn can_limit_io(&self) -> bool {
        self.v2
            .as_ref()
            .is_some_and(|h| h.controllers().iter().any(|c| c == "io"))
            || self.blkio().is_some()
    }

    /// The v1 `blkio` hierarchy, if the host has one.
    fn blkio(&self) -> Option<&v1::Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers().has(v1::Controller::Blkio))
    }

    /// The v1 hierarchies a run has a group in, each once: those [`v1::Controller::needed`]
    /// names, and for a run with an IO limit (`io_limited`), `blkio`'s. A blkio group is made
    /// only for such runs, since each group costs the run a `mkdir`, a move and an `rmdir`;
    /// where the cgroup2 tree has the `io` controller, its one group limits IO instead.
    fn joined(&self, io_limited: bool) -> impl Iterator<Item = &v1::Hierarchy> {
        let has_v2 = self.v2.is_some();
        self.v1.iter().filter(move |h| {
            h.controllers().needed(has_v2)
                || (io_limited && h.controllers().has(v1::Controller::Blkio))
        })
    }

    /// Creates a run's groups, named `name` in every hierarchy, before its init is cloned: the
    /// init starts the run's process in the cgroup2 group (`CLONE_INTO_CGROUP`), and that
    /// process moves itself into the v1 ones. Limits are applied later with
    /// [`RunCgroups::set_limits`].
    pub fn create(&self, name: &str, io_limited: bool) -> Result<RunCgroups, CgroupError> {
        let mut run = RunCgroups::default();
        if let Some(v2) = &self.v2 {
            run.groups.push(Box::new(v2.create(name)?));
        }
        for h in self.joined(io_limited) {
            run.groups.push(Box::new(h.create(name)?));
        }
        Ok(run)
    }

    /// Where the v1 hierarchies a run has groups in are mounted, in the order of the v1 groups
    /// [`CgroupHost::create`] makes. The run's init opens them before `pivot_root`, and the
    /// run's process moves itself into its groups below them
    /// ([`CgroupHost::tasks_below_mount`]): the mount points are there before any run's group
    /// or parent group is.
    pub fn v1_mounts(&self, io_limited: bool) -> Vec<&Path> {
        self.joined(io_limited).map(v1::Hierarchy::mount).collect()
    }

    /// Where the cgroup2 tree runs have a group in is mounted, if they have one there.
    pub fn v2_mount(&self) -> Option<&Path> {
        self.v2.as_ref().map(v2::Hierarchy::mount)
    }

    /// The run's group `name`, relative to the mount point of its hierarchy (the same below
    /// every mount).
    pub fn group_below_mount(&self, name: &str) -> PathBuf {
        Path::new(&self.parent).join(name)
    }

    /// The `tasks` file of the run's group `name`, relative to a v1 hierarchy's mount point.
    pub fn tasks_below_mount(&self, name: &str) -> PathBuf {
        self.group_below_mount(name).join("tasks")
    }

    /// Kills and removes run groups left by runners that are no longer alive. `is_stale` gets a
    /// group's name and says whether its runner is gone.
    pub fn reclaim(&self, is_stale: &dyn Fn(&str) -> bool) -> usize {
        let mut reclaimed = 0;
        let mut hierarchies: Vec<&dyn Reclaim> =
            self.v1.iter().map(|h| h as &dyn Reclaim).collect();
        if let Some(v2) = &self.v2 {
            hierarchies.insert(0, v2);
        }
        // The same runners' groups are found in every hierarchy: ask about each runner once.
        let mut known: Vec<(String, bool)> = Vec::new();
        let mut stale = |name: &str| {
            let runner = name.rsplit_once('-').map_or(name, |(runner, _)| runner);
            if let Some((_, gone)) = known.iter().find(|(r, _)| r == runner) {
                return *gone;
            }
            let gone = is_stale(name);
            known.push((runner.to_string(), gone));
            gone
        };
        for h in hierarchies {
            for name in h.children() {
                if stale(&name) {
                    if let Some(group) = h.open(&name) {
                        let _ = group.kill_all();
                        if remove_when_empty(group.as_ref()).is_ok() {
                            reclaimed += 1;
                        }
                    }
                }
            }
        }
        reclaimed
    }
}

impl Drop for CgroupHost {
    /// Removes the parent groups when no run of any runner is left in them (rmdir fails with
    /// EBUSY otherwise, which is the wanted outcome while another runner is alive).
    fn drop(&mut self) {
        if let Some(v2) = &self.v2 {
            v2.remove_parent();
        }
        for h in &self.v1 {
            h.remove_parent();
        }
    }
}

/// Finding and reopening groups under a hierarchy's parent.
pub trait Reclaim {
    /// Names of the groups under the parent.
    fn children(&self) -> Vec<String>;
    /// Reopens an existing group.
    fn open(&self, name: &str) -> Option<Box<dyn Group>>;
}

pub(crate) fn list_dirs(dir: &Path) -> Vec<String> {
    if !has_subdirectories(dir) {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `dir` may have subdirectories: false when it is not there, or its link count says it
/// has none.
/// cgroupfs and tmpfs count a directory's subdirectories in its links (2 plus one each), so
/// the common case, nothing below, costs one `statx` instead of opening and reading the
/// directory; file systems that do not count them report 1, and are read.
pub(crate) fn has_subdirectories(dir: &Path) -> bool {
    match std::fs::metadata(dir) {
        Ok(meta) => !links_show_no_subdirectories(&meta),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Whether a directory's link count says it has no subdirectory (see [`has_subdirectories`]).
pub(crate) fn links_show_no_subdirectories(dir: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.nlink() == 2
}

/// The host's block devices in use (`MAJ:MIN` of every entry of `/sys/block` with a size: disks,
/// attached loop devices), which an IO limit applies to.
pub fn block_devices() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut devices: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| read_u64(&e.path().join("size")).is_some_and(|sectors| sectors > 0))
        .filter_map(|e| {
            let dev = read_small(&e.path().join("dev")).ok()?;
            let dev = dev.trim();
            dev.split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
                .then(|| dev.to_string())
        })
        .collect();
    devices.sort();
    devices
}

/// Reads a whole small file as a trimmed string.
pub(crate) fn read_text(path: &Path) -> io::Result<String> {
    read_small(path).map(|s| s.trim().to_string())
}

/// Reads a small control file with one open, reads and close: cgroup files report size 0, so
/// the size probe `read_to_string` makes first would be wasted on every sample.
pub(crate) fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    read_control(|buf, _| file.read(buf))
}

/// A control file's whole text, read into a page-sized buffer by `read(buffer, offset)` from
/// offset 0: the text comes whole in one read when it fits, ending with a newline, so there is
/// no second read just to see the end of file.
fn read_control(mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>) -> io::Result<String> {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        let n = read(&mut buf[len..], len as u64)?;
        len += n;
        if n == 0 || len == buf.len() || buf[..len].ends_with(b"\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// A group's statistics files, each opened on its first read and kept: a control file makes its
/// text afresh when read from offset 0, so every later read (samples, the CPU-time checks, the
/// final usage) is one `pread`, and the opens can be done before the run ends
/// ([`RunCgroups::open_usage_files`]) rather than on the path to its result.
#[derive(Debug, Default)]
pub(crate) struct StatFiles {
    open: std::sync::Mutex<Vec<(&'static str, std::fs::File)>>,
}

impl StatFiles {
    /// The text of the control file `name` of the group directory `dir` now.
    pub(crate) fn read(&self, dir: &Path, name: &'static str) -> io::Result<String> {
        use std::os::unix::fs::FileExt;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let file = match open.iter().position(|(n, _)| *n == name) {
            Some(i) => &open[i].1,
            None => {
                let file = std::fs::File::open(dir.join(name))?;
                open.push((name, file));
                &open[open.len() - 1].1
            }
        };
        read_control(|buf, offset| file.read_at(buf, offset))
    }

    /// The number the control file `name` of `dir` holds.
    pub(crate) fn read_u64(&self, dir: &Path, name: &'static str) -> Option<u64> {
        self.read(dir, name).ok()?.trim().parse().ok()
    }

    /// The value of `key` in the keyed control file `name` of `dir`.
    pub(crate) fn read_keyed(&self, dir: &Path, name: &'static str, key: &str) -> Option<u64> {
        keyed_value(&self.read(dir, name).ok()?, key)
    }
}

/// Reads a file holding one number.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_text(path).ok()?.parse().ok()
}

/// Reads `key value` lines (cpu.stat, memory.events, memory.oom_control) and returns `key`'s value.
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// Writes a control file, naming it in the error.
pub(crate) fn write_control(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

/// Creates a directory; an existing one is fine.
pub(crate) fn make_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Makes a run's group directory. Another runner removes the shared parent when it shuts down
/// and finds it empty; when that races with this, `remake_parent` restores it and we try again.
pub(crate) fn make_run_dir(
    dir: &Path,
    remake_parent: &dyn Fn() -> io::Result<()>,
) -> io::Result<()> {
    // Strict: a run's group must be new. One that exists is another run's, never to be shared.
    let mut made = std::fs::create_dir(dir);
    for _ in 0..10 {
        match &made {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                made = remake_parent().and_then(|()| std::fs::create_dir(dir));
            }
            _ => break,
        }
    }
    made
}

pub(crate) fn child_path(parent: &Path, name: &str) -> PathBuf {
    parent.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_stat_file_is_read_afresh_each_time() {
        let dir = std::env::temp_dir().join(format!("warren-statfiles-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("creating {}: {e}", dir.display());
        }
        let write = |text: &str| {
            // In place, as the kernel regenerates a control file: the same file, new text.
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .create(true)
                .open(dir.join("pids.peak"))
                .and_then(|mut f| f.write_all(text.as_bytes()));
            assert!(written.is_ok(), "{written:?}");
        };
        let stats = StatFiles::default();
        write("1\n");
        assert_eq!(stats.read_u64(&dir, "pids.peak"), Some(1));
        write("22\n");
        assert_eq!(stats.read_u64(&dir, "pids.peak"), Some(22));
        write("oom 0\noom_kill 3\n");
        assert_eq!(stats.read_keyed(&dir, "pids.peak", "oom_kill"), Some(3));
        assert_eq!(stats.read_u64(&dir, "missing"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keyed_values() {
        let text = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(keyed_value(text, "user_usec"), Some(1000));
        assert_eq!(keyed_value(text, "usage_usec"), Some(1500));
        assert_eq!(keyed_value(text, "nope"), None);
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
    }

    #[test]
    fn controllers_mounted_together_get_one_group_a_run() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let together = tmp.path().join("cpu,cpuacct");
        let memory = tmp.path().join("memory");
        for dir in [&together, &memory] {
            std::fs::create_dir_all(dir).ok();
        }
        let mounts = CgroupMounts {
            v2: None,
            v1: [
                (v1::Controller::Cpu, together.clone()),
                (v1::Controller::Cpuacct, together.clone()),
                (v1::Controller::Memory, memory.clone()),
            ]
            .into_iter()
            .collect(),
        };
        let Ok(host) = CgroupHost::new(&mounts, "warren") else {
            panic!("host")
        };
        assert!(host.has_controller("cpuacct") && host.has_controller("cpu"));
        let Ok(mut run) = host.create("run-1", false) else {
            panic!("a run's groups, made once in the shared hierarchy")
        };
        assert_eq!(run.groups.len(), 2);
        assert!(together.join("warren/run-1").is_dir());
        assert_eq!(host.v1_mounts(false).len(), 2);
        assert_eq!(
            host.tasks_below_mount("run-1"),
            Path::new("warren/run-1/tasks")
        );
        assert!(run.remove().is_ok());
        assert!(!together.join("warren/run-1").exists());
        // The last runner out removes the parents.
        drop(host);
        assert!(!together.join("warren").exists() && !memory.join("warren").exists());
    }
}
