//! Finding the cgroup hierarchies: from `/proc/self/cgroup` and a look at where they are usually
//! mounted, or, when that does not account for every one, from `/proc/self/mountinfo` (pure
//! parsers; the caller reads the files and looks at the filesystems, so tests can give any host).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::v1::Controller;

/// The kinds of host Warren knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One cgroup2 tree with the controllers.
    V2,
    /// Only v1 hierarchies.
    V1,
    /// v1 hierarchies for the controllers and a cgroup2 tree (usually without controllers).
    Hybrid,
    /// No cgroup filesystem mounted under the cgroup root.
    None,
}

impl Layout {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Layout::V2 => "cgroup v2",
            Layout::V1 => "cgroup v1",
            Layout::Hybrid => "hybrid (cgroup v1 controllers + cgroup2 tree)",
            Layout::None => "no cgroups",
        }
    }
}

/// What a directory is, for finding cgroup mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// The root of a cgroup2 mount.
    Cgroup2,
    /// A cgroup v1 mount.
    Cgroup1,
    /// Anything else, or nothing.
    Other,
}

/// The cgroup mounts found under the cgroup root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// Where the cgroup2 tree is mounted.
    pub v2: Option<PathBuf>,
    /// Where each v1 controller's hierarchy is mounted.
    pub v1: BTreeMap<Controller, PathBuf>,
}

impl CgroupMounts {
    /// Parses mountinfo text, keeping cgroup mounts at or below `cgroup_root`.
    pub fn parse(mountinfo: &str, cgroup_root: &Path) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            if !mount_point.starts_with(cgroup_root) {
                continue;
            }
            let mut fields = right.split_whitespace();
            let fstype = fields.next().unwrap_or("");
            let super_options = fields.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => {
                    // Prefer the mount at the root itself, then the shortest path.
                    let better = mounts
                        .v2
                        .as_ref()
                        .is_none_or(|old| mount_point.as_os_str().len() < old.as_os_str().len());
                    if better {
                        mounts.v2 = Some(mount_point);
                    }
                }
                "cgroup" => {
                    for option in super_options.split(',') {
                        if let Some(controller) = Controller::from_name(option) {
                            mounts
                                .v1
                                .entry(controller)
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// Finds the mounts from `/proc/self/cgroup` (which hierarchies this process is in, with
    /// their controllers) and `probe`, which says what filesystem a directory is: the cgroup2
    /// tree at `cgroup_root` or `cgroup_root/unified`, each v1 hierarchy at `cgroup_root/`
    /// followed by its controller list (`cpu,cpuacct`) or one of its controllers. A few
    /// `statfs` calls instead of mountinfo, whose text grows with every mount of the host.
    /// `None` when a hierarchy Warren would use is not found so: mountinfo decides then.
    pub fn from_proc_cgroup(
        proc_cgroup: &str,
        cgroup_root: &Path,
        probe: &dyn Fn(&Path) -> Fs,
    ) -> Option<CgroupMounts> {
        let mut mounts = CgroupMounts::default();
        let mut has_v2 = false;
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(_path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            if controllers.is_empty() {
                has_v2 = true;
                continue;
            }
            let used: Vec<Controller> = controllers
                .split(',')
                .filter_map(Controller::from_name)
                .collect();
            // Named hierarchies (`name=systemd`) and controllers Warren does not use.
            if used.is_empty() {
                continue;
            }
            let mount = std::iter::once(controllers)
                .chain(controllers.split(','))
                .map(|name| cgroup_root.join(name))
                .find(|dir| probe(dir) == Fs::Cgroup1)?;
            for controller in used {
                mounts.v1.insert(controller, mount.clone());
            }
        }
        if has_v2 {
            let unified = cgroup_root.join("unified");
            mounts.v2 = Some(if probe(cgroup_root) == Fs::Cgroup2 {
                cgroup_root.to_path_buf()
            } else if probe(&unified) == Fs::Cgroup2 {
                unified
            } else {
                return None;
            });
        }
        Some(mounts)
    }

    /// Which layout these mounts make.
    pub fn layout(&self) -> Layout {
        match (self.v2.is_some(), self.v1.is_empty()) {
            (true, true) => Layout::V2,
            (true, false) => Layout::Hybrid,
            (false, false) => Layout::V1,
            (false, true) => Layout::None,
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str =
        "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    const V1_COMBINED: &str = "\
30 23 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
31 23 0:26 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
";

    fn root() -> &'static Path {
        Path::new("/sys/fs/cgroup")
    }

    #[test]
    fn hybrid_host() {
        let m = CgroupMounts::parse(HYBRID, root());
        assert_eq!(m.layout(), Layout::Hybrid);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1.get(&Controller::Memory).map(PathBuf::as_path),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.v1.get(&Controller::Pids).map(PathBuf::as_path),
            Some(Path::new("/sys/fs/cgroup/pids"))
        );
    }

    #[test]
    fn pure_v2_and_v1_hosts() {
        let m = CgroupMounts::parse(V2, root());
        assert_eq!(m.layout(), Layout::V2);
        let m = CgroupMounts::parse(V1_COMBINED, root());
        assert_eq!(m.layout(), Layout::V1);
        assert_eq!(m.v1.get(&Controller::Cpuacct), m.v1.get(&Controller::Cpu));
        assert_eq!(CgroupMounts::parse("", root()).layout(), Layout::None);
        // Mounts elsewhere are not ours to use.
        assert_eq!(
            CgroupMounts::parse(V2, Path::new("/elsewhere")).layout(),
            Layout::None
        );
    }

    /// A probe that knows the mounts of `mountinfo`.
    fn probe_of(mountinfo: &'static str) -> impl Fn(&Path) -> Fs {
        move |dir: &Path| {
            let m = CgroupMounts::parse(mountinfo, Path::new("/"));
            if m.v2.as_deref() == Some(dir) {
                Fs::Cgroup2
            } else if m.v1.values().any(|p| p == dir) {
                Fs::Cgroup1
            } else {
                Fs::Other
            }
        }
    }

    #[test]
    fn proc_cgroup_and_a_probe_find_what_mountinfo_finds() {
        let hybrid = "12:pids:/user.slice\n7:memory:/user.slice\n4:cpuacct:/\n3:cpu:/\n\
                      1:name=systemd:/init.scope\n0::/init.scope\n";
        assert_eq!(
            CgroupMounts::from_proc_cgroup(hybrid, root(), &probe_of(HYBRID)),
            Some(CgroupMounts::parse(HYBRID, root()))
        );
        assert_eq!(
            CgroupMounts::from_proc_cgroup(
                "0::/user.slice/session-1.scope\n",
                root(),
                &probe_of(V2)
            ),
            Some(CgroupMounts::parse(V2, root()))
        );
        let combined = "3:memory:/\n2:cpu,cpuacct:/\n";
        let found = CgroupMounts::from_proc_cgroup(combined, root(), &probe_of(V1_COMBINED));
        assert_eq!(found, Some(CgroupMounts::parse(V1_COMBINED, root())));
        assert_eq!(found.map(|m| m.layout()), Some(Layout::V1));
    }

    #[test]
    fn a_hierarchy_not_where_expected_is_left_to_mountinfo() {
        // memory is mounted somewhere else than /sys/fs/cgroup/memory.
        let moved = "7:memory:/\n0::/\n";
        let probe = |dir: &Path| match dir.to_str() {
            Some("/sys/fs/cgroup/unified") => Fs::Cgroup2,
            _ => Fs::Other,
        };
        assert_eq!(CgroupMounts::from_proc_cgroup(moved, root(), &probe), None);
        // A cgroup2 tree that is neither at the root nor at unified.
        assert_eq!(
            CgroupMounts::from_proc_cgroup("0::/\n", root(), &|_: &Path| Fs::Other),
            None
        );
        // Garbage.
        assert_eq!(
            CgroupMounts::from_proc_cgroup("nonsense\n", root(), &|_: &Path| Fs::Other),
            None
        );
        // Controllers Warren does not use need no mount.
        let unused = "5:devices:/\n1:name=systemd:/\n";
        assert_eq!(
            CgroupMounts::from_proc_cgroup(unused, root(), &|_: &Path| Fs::Other),
            Some(CgroupMounts::default())
        );
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
