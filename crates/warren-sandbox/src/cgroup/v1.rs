//! cgroup v1: one hierarchy per controller, each with its own files.

use std::io;
use std::path::{Path, PathBuf};

use warren_core::limits::Limits;

use super::{
    child_path, list_dirs, make_dir, make_run_dir, write_control, CgroupError, Group, Reclaim,
    StatFiles,
};

/// The v1 controllers Warren uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// Memory limit, usage, peak, OOM kills.
    Memory,
    /// Process limit and counts.
    Pids,
    /// CPU share (CFS quota).
    Cpu,
    /// CPU time accounting.
    Cpuacct,
    /// Block device bandwidth (throttling) and IO accounting.
    Blkio,
}

impl Controller {
    /// Controllers Warren makes groups in.
    pub const WANTED: [Controller; 5] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Blkio,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Blkio => "blkio",
        }
    }

    /// The controller with this kernel name.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::WANTED.into_iter().find(|c| c.name() == name)
    }

    /// Whether a run needs a group in this hierarchy. Each group costs a process migration
    /// (about 0.35 ms, paid while the run is prepared), so none is made that would do nothing:
    /// CPU accounting only when no cgroup2 tree gives it. Every run gets its own CPU group even
    /// without a CPU share, so that a run with many processes competes for CPU as one. A blkio
    /// group only for a run with an IO limit (see `CgroupHost::joined`).
    pub fn needed(self, has_v2: bool) -> bool {
        match self {
            Controller::Memory | Controller::Pids | Controller::Cpu => true,
            Controller::Cpuacct => !has_v2,
            Controller::Blkio => false,
        }
    }
}

/// Controllers mounted together in one v1 hierarchy (`cpu,cpuacct` on many hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controllers(u8);

impl Controllers {
    /// The set of `controllers`.
    pub fn of(controllers: &[Controller]) -> Controllers {
        Controllers(controllers.iter().fold(0, |bits, c| bits | c.bit()))
    }

    /// Adds one.
    pub fn insert(&mut self, controller: Controller) {
        self.0 |= controller.bit();
    }

    /// Whether `controller` is in the set.
    pub fn has(self, controller: Controller) -> bool {
        self.0 & controller.bit() != 0
    }

    /// The members, in [`Controller::WANTED`] order.
    pub fn iter(self) -> impl Iterator<Item = Controller> {
        Controller::WANTED.into_iter().filter(move |c| self.has(*c))
    }

    /// Whether a run needs a group in a hierarchy with these controllers.
    pub fn needed(self, has_v2: bool) -> bool {
        self.iter().any(|c| c.needed(has_v2))
    }
}

/// The parent group of runs in one v1 hierarchy.
#[derive(Debug)]
pub struct Hierarchy {
    controllers: Controllers,
    mount: PathBuf,
    parent: PathBuf,
    /// A run of this host has had a group here: the parent is there to remove.
    used: std::sync::atomic::AtomicBool,
}

impl Hierarchy {
    /// The parent group `mount/parent` of a hierarchy with `controllers`, made by the first run
    /// that needs it (its group's creation finds it missing and makes it), so a host that
    /// never runs anything makes none.
    pub fn new(controllers: Controllers, mount: &Path, parent: &str) -> Hierarchy {
        Hierarchy {
            controllers,
            mount: mount.to_path_buf(),
            parent: child_path(mount, parent),
            used: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The controllers of this hierarchy.
    pub fn controllers(&self) -> Controllers {
        self.controllers
    }

    /// Where the hierarchy is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Removes the parent group if it is empty and a run of this host has used it (a hierarchy
    /// runs never had a group in, like `blkio` without IO limits, is left alone).
    pub fn remove_parent(&self) {
        if self.used.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_dir(&self.parent);
        }
    }

    /// Makes a run's group.
    pub fn create(&self, name: &str) -> Result<V1Group, CgroupError> {
        let dir = child_path(&self.parent, name);
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
        make_run_dir(&dir, &|| make_dir(&self.parent))
            .map_err(|e| CgroupError::new(format!("creating {}", dir.display()), e))?;
        Ok(V1Group::new(self.controllers, dir))
    }
}

impl Reclaim for Hierarchy {
    fn children(&self) -> Vec<String> {
        list_dirs(&self.parent)
    }

    fn open(&self, name: &str) -> Option<Box<dyn Group>> {
        let dir = child_path(&self.parent, name);
        dir.is_dir()
            .then(|| Box::new(V1Group::new(self.controllers, dir)) as Box<dyn Group>)
    }
}

/// A run's group in one v1 hierarchy.
#[derive(Debug)]
pub struct V1Group {
    controllers: Controllers,
    dir: PathBuf,
    stats: StatFiles,
}

/// CFS period used for CPU shares: 100 ms, the kernel's default.
const CFS_PERIOD_US: u64 = 100_000;

impl V1Group {
    fn new(controllers: Controllers, dir: PathBuf) -> V1Group {
        V1Group {
            controllers,
            stats: StatFiles::default(),
            dir,
        }
    }

    /// Writes the limits `controller` enforces.
    fn set_controller_limits(
        &self,
        controller: Controller,
        limits: &Limits,
        disks: &[String],
    ) -> io::Result<()> {
        match controller {
            Controller::Memory => {
                if let Some(memory) = limits.memory {
                    write_control(&self.dir.join("memory.limit_in_bytes"), &memory.to_string())?;
                    // Memory + swap equal to memory: no swap. Absent when swap accounting is off.
                    let memsw = self.dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write_control(&memsw, &memory.to_string())?;
                    }
                }
                Ok(())
            }
            Controller::Pids => match limits.pids {
                Some(pids) => write_control(&self.dir.join("pids.max"), &pids.to_string()),
                None => Ok(()),
            },
            Controller::Cpu => match limits.cpus {
                Some(milli) => {
                    write_control(
                        &self.dir.join("cpu.cfs_period_us"),
                        &CFS_PERIOD_US.to_string(),
                    )?;
                    let quota = (milli * CFS_PERIOD_US / 1000).max(1000);
                    write_control(&self.dir.join("cpu.cfs_quota_us"), &quota.to_string())
                }
                None => Ok(()),
            },
            Controller::Cpuacct => Ok(()),
            Controller::Blkio => {
                if let Some(bps) = limits.io {
                    // One device a write: the file takes a single `MAJ:MIN value` each time.
                    for disk in disks {
                        for file in [
                            "blkio.throttle.read_bps_device",
                            "blkio.throttle.write_bps_device",
                        ] {
                            write_control(&self.dir.join(file), &format!("{disk} {bps}"))?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl Group for V1Group {
    fn set_limits(&self, limits: &Limits, disks: &[String]) -> io::Result<()> {
        for controller in self.controllers.iter() {
            self.set_controller_limits(controller, limits, disks)?;
        }
        Ok(())
    }

    fn cpu_usec(&self) -> Option<(u64, u64)> {
        self.controllers.has(Controller::Cpuacct).then(|| {
            let user = self.stats.read_u64(&self.dir, "cpuacct.usage_user")?;
            let sys = self.stats.read_u64(&self.dir, "cpuacct.usage_sys")?;
            Some((user / 1000, sys / 1000))
        })?
    }

    fn memory_current(&self) -> Option<u64> {
        self.controllers
            .has(Controller::Memory)
            .then(|| self.stats.read_u64(&self.dir, "memory.usage_in_bytes"))?
    }

    fn memory_peak(&self) -> Option<u64> {
        self.controllers
            .has(Controller::Memory)
            .then(|| self.stats.read_u64(&self.dir, "memory.max_usage_in_bytes"))?
    }

    fn oom_kills(&self) -> Option<u64> {
        self.controllers.has(Controller::Memory).then(|| {
            self.stats
                .read_keyed(&self.dir, "memory.oom_control", "oom_kill")
        })?
    }

    fn pids_current(&self) -> Option<u64> {
        self.controllers
            .has(Controller::Pids)
            .then(|| self.stats.read_u64(&self.dir, "pids.current"))?
    }

    fn pids_peak(&self) -> Option<u64> {
        self.controllers
            .has(Controller::Pids)
            .then(|| self.stats.read_u64(&self.dir, "pids.peak"))?
    }

    fn io_bytes(&self) -> Option<(u64, u64)> {
        if !self.controllers.has(Controller::Blkio) {
            return None;
        }
        let text = self
            .stats
            .read(&self.dir, "blkio.throttle.io_service_bytes_recursive")
            .ok()?;
        Some(parse_io_service_bytes(&text))
    }

    fn kill_all(&self) -> io::Result<bool> {
        // v1 has no cgroup.kill: signal each member. A fork racing this is caught by the
        // caller's own kill of the PID namespace's init, which takes the whole namespace down.
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs"))?;
        for pid in procs
            .lines()
            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        {
            // A pid that has exited meanwhile just fails.
            let _ = crate::sys::kill(pid, libc::SIGKILL);
        }
        Ok(false)
    }

    fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// Sums the `Read` and `Write` lines of every device of `blkio.throttle.io_service_bytes*`.
fn parse_io_service_bytes(text: &str) -> (u64, u64) {
    let mut totals = (0, 0);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match op {
            "Read" => totals.0 += value,
            "Write" => totals.1 += value,
            _ => {}
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_service_bytes_sum_reads_and_writes_of_every_device() {
        let text = "254:0 Read 4096\n254:0 Write 512\n254:0 Sync 0\n7:0 Read 100\nTotal 4708\n";
        assert_eq!(parse_io_service_bytes(text), (4196, 512));
    }

    #[test]
    fn limits_are_written_to_the_right_files() {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(tmp) = tmp else { return };
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            cpus: Some(500),
            ..Default::default()
        };
        // One directory per hierarchy, as v1 mounts them.
        for dir in ["memory", "cpu"] {
            std::fs::create_dir_all(tmp.path().join(dir)).ok();
        }
        let mem = Hierarchy::new(
            Controllers::of(&[Controller::Memory]),
            &tmp.path().join("memory"),
            "warren",
        )
        .create("run-1");
        let Ok(mem) = mem else { panic!("create") };
        std::fs::write(mem.dir.join("memory.memsw.limit_in_bytes"), "").ok();
        assert!(mem.set_limits(&limits, &[]).is_ok());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(
            read(&mem.dir.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(&mem.dir.join("memory.memsw.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        let cpu = Hierarchy::new(
            Controllers::of(&[Controller::Cpu]),
            &tmp.path().join("cpu"),
            "warren",
        )
        .create("run-1");
        let Ok(cpu) = cpu else { panic!("create") };
        assert!(cpu.set_limits(&limits, &[]).is_ok());
        assert_eq!(read(&cpu.dir.join("cpu.cfs_quota_us")), "50000");
        std::fs::write(
            mem.dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .ok();
        assert_eq!(mem.oom_kills(), Some(2));
        assert_eq!(cpu.oom_kills(), None);
    }

    #[test]
    fn io_limits_go_to_the_blkio_throttle_files_and_its_parent_comes_with_the_first_group() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let mount = tmp.path().join("blkio");
        std::fs::create_dir_all(&mount).ok();
        let h = Hierarchy::new(Controllers::of(&[Controller::Blkio]), &mount, "warren");
        assert!(
            !mount.join("warren").exists(),
            "made before any run needs it"
        );
        let Ok(g) = h.create("run-1") else {
            panic!("group")
        };
        let limits = Limits {
            io: Some(4096),
            ..Default::default()
        };
        assert!(g.set_limits(&limits, &["7:0".to_string()]).is_ok());
        for file in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            assert_eq!(
                std::fs::read_to_string(g.dir.join(file)).ok().as_deref(),
                Some("7:0 4096"),
                "{file}"
            );
        }
        std::fs::write(
            g.dir.join("blkio.throttle.io_service_bytes_recursive"),
            "7:0 Read 8192\n7:0 Write 0\nTotal 8192\n",
        )
        .ok();
        assert_eq!(g.io_bytes(), Some((8192, 0)));
    }

    #[test]
    fn only_useful_groups_are_made() {
        assert!(Controller::Cpu.needed(true));
        assert!(!Controller::Cpuacct.needed(true));
        assert!(Controller::Cpuacct.needed(false));
        assert!(!Controller::Blkio.needed(false));
        let cpuacct = Controllers::of(&[Controller::Cpuacct]);
        assert!(!cpuacct.needed(true));
        assert!(Controllers::of(&[Controller::Cpu, Controller::Cpuacct]).needed(true));
    }

    #[test]
    fn controllers_mounted_together_share_one_group() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let mount = tmp.path().join("cpu,cpuacct");
        std::fs::create_dir_all(&mount).ok();
        let both = Controllers::of(&[Controller::Cpu, Controller::Cpuacct]);
        assert_eq!(
            both.iter().collect::<Vec<_>>(),
            [Controller::Cpu, Controller::Cpuacct]
        );
        let Ok(g) = Hierarchy::new(both, &mount, "warren").create("run-1") else {
            panic!("group")
        };
        let limits = Limits {
            cpus: Some(250),
            ..Default::default()
        };
        assert!(g.set_limits(&limits, &[]).is_ok());
        assert_eq!(
            std::fs::read_to_string(g.dir.join("cpu.cfs_quota_us"))
                .ok()
                .as_deref(),
            Some("25000")
        );
        std::fs::write(g.dir.join("cpuacct.usage_user"), "3000000\n").ok();
        std::fs::write(g.dir.join("cpuacct.usage_sys"), "1000000\n").ok();
        assert_eq!(g.cpu_usec(), Some((3000, 1000)));
        assert_eq!(g.memory_peak(), None);
    }
}
