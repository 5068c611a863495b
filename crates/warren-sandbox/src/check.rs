//! What this host supports, for `warren sandbox check` and for errors that name what is missing.

use std::fmt;

use warren_core::limits::LimitKind;

use crate::cgroup::{CgroupHost, CgroupMounts, Layout};

/// A host's sandboxing facilities.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// Running as root.
    pub root: bool,
    /// Cgroup layout.
    pub layout: Layout,
    /// Controllers available to runs.
    pub controllers: Vec<String>,
    /// Runs are created directly in their cgroup2 group (`clone3` + `CLONE_INTO_CGROUP`).
    pub clone_into_cgroup: bool,
    /// The kernel supports seccomp filters.
    pub seccomp: bool,
    /// Limits that cannot be enforced here, with the reason.
    pub unenforceable: Vec<(LimitKind, String)>,
}

impl HostReport {
    /// Inspects a prepared cgroup host.
    pub fn inspect(cgroups: &CgroupHost) -> HostReport {
        let mut unenforceable = Vec::new();
        for (limit, controller) in [(LimitKind::Memory, "memory"), (LimitKind::Cpus, "cpu")] {
            if !cgroups.has_controller(controller) {
                unenforceable.push((limit, format!("no {controller} cgroup controller")));
            }
        }
        if !cgroups.has_v2() && !cgroups.has_controller("cpuacct") {
            unenforceable.push((
                LimitKind::CpuTime,
                "no cgroup accounts CPU time".to_string(),
            ));
        }
        if !cgroups.has_controller("pids") {
            unenforceable.push((
                LimitKind::Pids,
                "no pids controller: enforced per uid with RLIMIT_NPROC instead".to_string(),
            ));
        }
        HostReport {
            root: crate::sys::is_root(),
            layout: cgroups.layout(),
            controllers: cgroups.controllers(),
            clone_into_cgroup: cgroups.has_v2(),
            seccomp: seccomp_supported(),
            unenforceable,
        }
    }

    /// What can be learnt without preparing anything (e.g. when not root).
    pub fn probe(cgroup_root: &std::path::Path) -> HostReport {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = CgroupMounts::parse(&mountinfo, cgroup_root);
        let mut controllers: Vec<String> = mounts
            .v1
            .keys()
            .map(|c| format!("{} (v1)", c.name()))
            .collect();
        if let Some(v2) = &mounts.v2 {
            let available =
                std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            controllers.extend(available.split_whitespace().map(|c| format!("{c} (v2)")));
        }
        HostReport {
            root: crate::sys::is_root(),
            layout: mounts.layout(),
            controllers,
            clone_into_cgroup: mounts.v2.is_some(),
            seccomp: seccomp_supported(),
            unenforceable: Vec::new(),
        }
    }

    /// Whether runs can be made at all.
    pub fn usable(&self) -> bool {
        self.root && self.layout != Layout::None
    }
}

fn seccomp_supported() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        writeln!(
            f,
            "root (needed for namespaces, mounts, cgroups): {}",
            yes(self.root)
        )?;
        writeln!(f, "cgroups: {}", self.layout.name())?;
        writeln!(
            f,
            "controllers: {}",
            if self.controllers.is_empty() {
                "none".to_string()
            } else {
                self.controllers.join(", ")
            }
        )?;
        writeln!(f, "clone3 into cgroup: {}", yes(self.clone_into_cgroup))?;
        writeln!(f, "seccomp filters: {}", yes(self.seccomp))?;
        writeln!(f, "namespaces: pid, mount, ipc, uts, net, cgroup")?;
        writeln!(
            f,
            "denied system calls: {}",
            crate::seccomp::denied_names()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        if self.unenforceable.is_empty() {
            writeln!(
                f,
                "limits: wall_time, cpu_time, memory, disk, output, pids, cpus all enforced"
            )?;
        } else {
            for (limit, reason) in &self.unenforceable {
                writeln!(f, "limit {limit} NOT enforced: {reason}")?;
            }
        }
        Ok(())
    }
}
