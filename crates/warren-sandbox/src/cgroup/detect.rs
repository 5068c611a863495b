//! Finding the cgroup hierarchies from `/proc/self/mountinfo` (a pure parser; the text is read
//! by the caller so tests can give any host).

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

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
