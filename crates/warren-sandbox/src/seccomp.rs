//! The system-call policy of a run, as one reviewed table, compiled once per sandbox host.
//!
//! Everything is allowed except what lets a process change the sandbox around it or reach the
//! kernel's most exposed interfaces. Denied calls fail with `EPERM`, so programs see an ordinary
//! permission error; `clone3` fails with `ENOSYS` instead, because its flags live in memory where
//! a filter cannot read them, and C libraries then fall back to `clone`, whose flags are checked.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use crate::sys::child::SeccompProgram;

/// Why a denied call is denied; the table below is the policy.
const DENIED: &[(&str, libc::c_long)] = &[
    // Changing the filesystem view.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // Creating or joining namespaces.
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    // Inspecting or controlling other processes.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    // Replacing or extending the kernel.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    // Kernel keyrings.
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // Interfaces with a record of privilege escalations.
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    // The machine itself.
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
];

/// `clone` flags that create namespaces: `clone` with any of them is denied.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// A compile failure of the policy (a bug, or an architecture seccompiler does not know).
#[derive(Debug, thiserror::Error)]
#[error("cannot compile the seccomp policy: {0}")]
pub struct PolicyError(String);

fn target_arch() -> Result<TargetArch, PolicyError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| PolicyError(format!("{e:?}")))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<SeccompProgram, PolicyError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        target_arch()?,
    )
    .map_err(|e| PolicyError(e.to_string()))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| PolicyError(e.to_string()))?;
    Ok(SeccompProgram::new(
        program
            .into_iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect(),
    ))
}

/// The run's filter. One program, because each installed filter costs a BPF compilation at
/// every run's start: the deny table compiled by seccompiler (`EPERM`), with the `clone3` rule
/// (`ENOSYS`) put in front of it by hand.
pub fn policy() -> Result<Vec<SeccompProgram>, PolicyError> {
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag as u64),
                flag as u64,
            )
            .map_err(|e| PolicyError(e.to_string()))?;
            SeccompRule::new(vec![condition]).map_err(|e| PolicyError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    let table = compile(denied, libc::EPERM)?;
    Ok(vec![SeccompProgram::new(with_clone3_refused(
        table.instructions(),
    ))])
}

/// Classic BPF opcodes used by the hand-written prefix (linux/filter.h).
mod bpf {
    /// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
    pub const LD_W_ABS: u16 = 0x20;
    /// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
    pub const JMP_JEQ_K: u16 = 0x15;
    /// `BPF_RET | BPF_K` (0x06 | 0x00).
    pub const RET_K: u16 = 0x06;
    /// `SECCOMP_RET_ERRNO`.
    pub const RET_ERRNO: u32 = 0x0005_0000;
    /// Offset of `nr` in `struct seccomp_data`.
    pub const NR_OFFSET: u32 = 0;
}

/// Puts "clone3 fails with ENOSYS" in front of `program`. The prefix loads the system call
/// number itself and the program's first instruction loads what it needs again, and classic
/// BPF jumps are relative, so the program is unchanged behind it.
fn with_clone3_refused(program: &[libc::sock_filter]) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut out = vec![
        op(bpf::LD_W_ABS, 0, 0, bpf::NR_OFFSET),
        op(bpf::JMP_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        op(bpf::RET_K, 0, 0, bpf::RET_ERRNO | libc::ENOSYS as u32),
    ];
    out.extend_from_slice(program);
    out
}

/// The names of the denied calls, for `warren sandbox check` and the docs.
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED
        .iter()
        .map(|&(name, _)| name)
        .chain(["clone with CLONE_NEW*", "clone3 (ENOSYS)"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_for_this_architecture() {
        let programs = policy();
        assert!(programs.is_ok(), "{:?}", programs.err());
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut numbers: Vec<_> = DENIED.iter().map(|&(_, nr)| nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED.len());
    }
}
