//! cgroup v2: one unified tree. On hybrid hosts the same code runs on a tree without
//! controllers, where it still tracks processes, counts CPU time and kills.

use std::io;
use std::path::{Path, PathBuf};

use warren_core::limits::Limits;

use super::{
    child_path, list_dirs, make_dir, make_run_dir, read_text, write_control, CgroupError, Group,
    Reclaim, StatFiles,
};

/// Controllers Warren enables for its runs when the tree has them.
const WANTED: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// Makes the parent group if it is missing and, when `enable` is set, hands the wanted
/// controllers down to it; returns the controllers children get. While another runner is alive
/// the parent is there already, and ready: then this only reads that.
fn prepare_parent(root: &Path, dir: &Path, enable: bool) -> Result<Vec<String>, CgroupError> {
    let subtree = dir.join("cgroup.subtree_control");
    let mut enabled = match read_text(&subtree) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dir(dir)
                .map_err(|e| CgroupError::new(format!("creating {}", dir.display()), e))?;
            String::new()
        }
        Err(e) => {
            return Err(CgroupError::new(
                format!("reading {}", subtree.display()),
                e,
            ))
        }
    };
    if enable {
        let offered = read_text(&root.join("cgroup.controllers")).unwrap_or_default();
        let missing: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|c| has_word(&offered, c) && !has_word(&enabled, c))
            .collect();
        if !missing.is_empty() {
            for level in [root, dir] {
                for controller in &missing {
                    // A controller can be refused (e.g. a threaded subtree); the limits it
                    // would enforce are then reported as unavailable instead of failing every
                    // run.
                    let _ = write_control(
                        &level.join("cgroup.subtree_control"),
                        &format!("+{controller}"),
                    );
                }
            }
            enabled = read_text(&subtree).unwrap_or_default();
        }
    }
    Ok(enabled.split_whitespace().map(str::to_string).collect())
}

/// Whether the space-separated `list` has `word`.
fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

/// The parent group of runs in the cgroup2 tree.
#[derive(Debug)]
pub struct Hierarchy {
    root: PathBuf,
    parent: PathBuf,
    enable: bool,
    controllers: Vec<String>,
}

impl Hierarchy {
    /// Makes `root/parent` and, when `enable` is set, hands the wanted controllers down to it.
    pub fn new(root: &Path, parent: &str, enable: bool) -> Result<Hierarchy, CgroupError> {
        let dir = child_path(root, parent);
        let controllers = prepare_parent(root, &dir, enable)?;
        Ok(Hierarchy {
            root: root.to_path_buf(),
            parent: dir,
            enable,
            controllers,
        })
    }

    /// Controllers runs get.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Where the tree is mounted.
    pub fn mount(&self) -> &Path {
        &self.root
    }

    /// Removes the parent group if it is empty.
    pub fn remove_parent(&self) {
        let _ = std::fs::remove_dir(&self.parent);
    }

    /// Makes a run's group.
    pub fn create(&self, name: &str) -> Result<V2Group, CgroupError> {
        let dir = child_path(&self.parent, name);
        let remake = || {
            prepare_parent(&self.root, &self.parent, self.enable)
                .map(|_| ())
                .map_err(|e| e.source)
        };
        make_run_dir(&dir, &remake)
            .map_err(|e| CgroupError::new(format!("creating {}", dir.display()), e))?;
        Ok(V2Group::new(dir, &self.controllers))
    }
}

impl Reclaim for Hierarchy {
    fn children(&self) -> Vec<String> {
        list_dirs(&self.parent)
    }

    fn open(&self, name: &str) -> Option<Box<dyn Group>> {
        let dir = child_path(&self.parent, name);
        dir.is_dir()
            .then(|| Box::new(V2Group::new(dir, &self.controllers)) as Box<dyn Group>)
    }
}

/// A run's group in the cgroup2 tree.
#[derive(Debug)]
pub struct V2Group {
    dir: PathBuf,
    stats: StatFiles,
    /// Which of memory, pids, io are enabled here; files of the others are never read.
    has: [bool; 3],
}

impl V2Group {
    fn new(dir: PathBuf, controllers: &[String]) -> V2Group {
        let has = ["memory", "pids", "io"].map(|c| controllers.iter().any(|e| e == c));
        V2Group {
            stats: StatFiles::default(),
            dir,
            has,
        }
    }

    fn read_if(&self, enabled: usize, name: &'static str) -> Option<u64> {
        if self.has[enabled] {
            self.stats.read_u64(&self.dir, name)
        } else {
            None
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a limit when its controller is enabled here (the file exists); on a hybrid host
    /// the v1 hierarchies enforce it instead.
    fn write_if_present(&self, name: &str, value: &str) -> io::Result<()> {
        let path = self.file(name);
        if path.exists() {
            write_control(&path, value)
        } else {
            Ok(())
        }
    }
}

/// CPU bandwidth period: 100 ms.
const PERIOD_US: u64 = 100_000;

impl Group for V2Group {
    fn set_limits(&self, limits: &Limits, disks: &[String]) -> io::Result<()> {
        if let Some(memory) = limits.memory {
            self.write_if_present("memory.max", &memory.to_string())?;
            self.write_if_present("memory.swap.max", "0")?;
        }
        if let Some(pids) = limits.pids {
            self.write_if_present("pids.max", &pids.to_string())?;
        }
        if let Some(milli) = limits.cpus {
            let quota = (milli * PERIOD_US / 1000).max(1000);
            self.write_if_present("cpu.max", &format!("{quota} {PERIOD_US}"))?;
        }
        if let Some(bps) = limits.io {
            for disk in disks {
                self.write_if_present("io.max", &format!("{disk} rbps={bps} wbps={bps}"))?;
            }
        }
        Ok(())
    }

    fn cpu_usec(&self) -> Option<(u64, u64)> {
        let text = self.stats.read(&self.dir, "cpu.stat").ok()?;
        Some((
            super::keyed_value(&text, "user_usec")?,
            super::keyed_value(&text, "system_usec")?,
        ))
    }

    fn memory_current(&self) -> Option<u64> {
        self.read_if(0, "memory.current")
    }

    fn memory_peak(&self) -> Option<u64> {
        self.read_if(0, "memory.peak")
    }

    fn oom_kills(&self) -> Option<u64> {
        self.has[0].then(|| {
            self.stats
                .read_keyed(&self.dir, "memory.events", "oom_kill")
        })?
    }

    fn pids_current(&self) -> Option<u64> {
        self.read_if(1, "pids.current")
    }

    fn pids_peak(&self) -> Option<u64> {
        self.read_if(1, "pids.peak")
    }

    fn io_bytes(&self) -> Option<(u64, u64)> {
        if !self.has[2] {
            return None;
        }
        let text = self.stats.read(&self.dir, "io.stat").ok()?;
        Some(parse_io_stat(&text))
    }

    fn kill_all(&self) -> io::Result<bool> {
        let path = self.file("cgroup.kill");
        if !path.exists() {
            return Ok(false);
        }
        write_control(&path, "1")?;
        Ok(true)
    }

    fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// Sums `rbytes` and `wbytes` over every device line of io.stat.
fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut totals = (0, 0);
    for field in text.split_whitespace() {
        if let Some(v) = field
            .strip_prefix("rbytes=")
            .and_then(|v| v.parse::<u64>().ok())
        {
            totals.0 += v;
        } else if let Some(v) = field
            .strip_prefix("wbytes=")
            .and_then(|v| v.parse::<u64>().ok())
        {
            totals.1 += v;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=7 rios=1 wios=1\n";
        assert_eq!(parse_io_stat(text), (105, 27));
        assert_eq!(parse_io_stat(""), (0, 0));
    }

    #[test]
    fn a_ready_parent_is_only_read() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let root = tmp.path();
        let parent = root.join("warren");
        std::fs::create_dir_all(&parent).ok();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .ok();
        std::fs::write(root.join("cgroup.subtree_control"), "").ok();
        std::fs::write(
            parent.join("cgroup.subtree_control"),
            "cpu io memory pids\n",
        )
        .ok();
        let Ok(h) = Hierarchy::new(root, "warren", true) else {
            panic!("hierarchy")
        };
        assert_eq!(h.controllers(), ["cpu", "io", "memory", "pids"]);
        let written = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(written(&root.join("cgroup.subtree_control")), "");

        // One controller missing below: every wanted one is handed down again.
        std::fs::write(parent.join("cgroup.subtree_control"), "memory\n").ok();
        assert!(Hierarchy::new(root, "warren", true).is_ok());
        assert!(written(&root.join("cgroup.subtree_control")).starts_with('+'));
    }

    #[test]
    fn limits_only_where_the_controller_is() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let Ok(h) = Hierarchy::new(tmp.path(), "warren", false) else {
            panic!("hierarchy")
        };
        let Ok(g) = h.create("run-1") else {
            panic!("group")
        };
        std::fs::write(g.file("pids.max"), "").ok();
        let limits = Limits {
            memory: Some(1 << 30),
            pids: Some(7),
            ..Default::default()
        };
        assert!(g.set_limits(&limits, &[]).is_ok());
        assert_eq!(
            std::fs::read_to_string(g.file("pids.max")).ok().as_deref(),
            Some("7")
        );
        assert!(!g.file("memory.max").exists());
        std::fs::write(
            g.file("cpu.stat"),
            "usage_usec 30\nuser_usec 20\nsystem_usec 10\n",
        )
        .ok();
        assert_eq!(g.cpu_usec(), Some((20, 10)));
        // The IO limit: one line a device, read and write bandwidth together.
        std::fs::write(g.file("io.max"), "").ok();
        let io = Limits {
            io: Some(1 << 20),
            ..Default::default()
        };
        assert!(g.set_limits(&io, &["254:0".to_string()]).is_ok());
        assert_eq!(
            std::fs::read_to_string(g.file("io.max")).ok().as_deref(),
            Some("254:0 rbps=1048576 wbps=1048576")
        );
    }
}
