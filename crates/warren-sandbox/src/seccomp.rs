//! The system-call policy of a run, as one reviewed table, compiled once per sandbox host.
//!
//! Everything is allowed except what lets a process change the sandbox around it or reach the
//! kernel's most exposed interfaces. Denied calls fail with `EPERM`, so programs see an ordinary
//! permission error; `clone3` fails with `ENOSYS` instead, because its flags live in memory where
//! a filter cannot read them, and C libraries then fall back to `clone`, whose flags are checked.

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

/// A compile failure of the policy (an architecture it has no audit number for).
#[derive(Debug, thiserror::Error)]
#[error("cannot compile the seccomp policy: {0}")]
pub struct PolicyError(String);

/// Classic BPF (linux/filter.h, linux/seccomp.h).
mod bpf {
    /// `BPF_LD | BPF_W | BPF_ABS`.
    pub const LD_W_ABS: u16 = 0x20;
    /// `BPF_JMP | BPF_JEQ | BPF_K`.
    pub const JEQ: u16 = 0x15;
    /// `BPF_JMP | BPF_JGE | BPF_K`.
    pub const JGE: u16 = 0x35;
    /// `BPF_JMP | BPF_JSET | BPF_K`.
    pub const JSET: u16 = 0x45;
    /// `BPF_RET | BPF_K`.
    pub const RET: u16 = 0x06;
    /// `SECCOMP_RET_KILL_PROCESS`.
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    /// `SECCOMP_RET_ERRNO`.
    pub const ERRNO: u32 = 0x0005_0000;
    /// `SECCOMP_RET_ALLOW`.
    pub const ALLOW: u32 = 0x7fff_0000;
    /// Offsets in `struct seccomp_data`: the call number, the architecture, the low 32 bits of
    /// the first argument (little-endian).
    pub const NR: u32 = 0;
    pub const ARCH: u32 = 4;
    pub const ARG0_LOW: u32 = 16;
}

/// What the filter does with one system call number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Fails with this errno.
    Errno(i32),
    /// `clone`: `EPERM` when its flags (the first argument; every `CLONE_NEW*` flag is in the
    /// low 32 bits) ask for a namespace, allowed otherwise.
    CloneFlags(u32),
}

/// The audit architecture of this build (`AUDIT_ARCH_*`, linux/audit.h): calls made through
/// any other ABI (e.g. 32-bit x86 on x86_64) kill the process, as the table does not cover them.
fn audit_arch() -> Result<u32, PolicyError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xc000_003e),
        "aarch64" => Ok(0xc000_00b7),
        "riscv64" => Ok(0xc000_00f3),
        other => Err(PolicyError(format!(
            "no audit architecture known for {other}"
        ))),
    }
}

/// On x86_64, numbers with this bit set are x32 calls: the same calls under other numbers, so
/// they are all refused rather than checked against the table.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every number the filter does not allow outright, sorted.
fn verdicts() -> Vec<(u32, Verdict)> {
    let clone_mask = NAMESPACE_FLAGS.iter().fold(0u32, |m, &f| m | f as u32);
    let mut table: Vec<(u32, Verdict)> = DENIED
        .iter()
        .map(|&(_, nr)| (nr as u32, Verdict::Errno(libc::EPERM)))
        .chain([
            (libc::SYS_clone as u32, Verdict::CloneFlags(clone_mask)),
            (libc::SYS_clone3 as u32, Verdict::Errno(libc::ENOSYS)),
        ])
        .collect();
    table.sort_unstable_by_key(|&(nr, _)| nr);
    table
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The instructions of one verdict, with the call number in the accumulator.
fn leaf(verdict: Verdict) -> Vec<libc::sock_filter> {
    match verdict {
        Verdict::Errno(e) => vec![op(bpf::RET, 0, 0, bpf::ERRNO | e as u32)],
        Verdict::CloneFlags(mask) => vec![
            op(bpf::LD_W_ABS, 0, 0, bpf::ARG0_LOW),
            op(bpf::JSET, 0, 1, mask),
            op(bpf::RET, 0, 0, bpf::ERRNO | libc::EPERM as u32),
            op(bpf::RET, 0, 0, bpf::ALLOW),
        ],
    }
}

/// A search tree over `table` (sorted), every path ending in a return: about ten instructions
/// run per call instead of one comparison per table entry. That matters at install time too,
/// when the kernel runs the filter over every call number to cache which ones it allows.
fn tree(table: &[(u32, Verdict)]) -> Result<Vec<libc::sock_filter>, PolicyError> {
    let jump = |len: usize| {
        u8::try_from(len).map_err(|_| PolicyError("a jump longer than BPF allows".into()))
    };
    if table.len() <= 3 {
        let mut code = Vec::new();
        for &(nr, verdict) in table {
            let body = leaf(verdict);
            code.push(op(bpf::JEQ, 0, jump(body.len())?, nr));
            code.extend(body);
        }
        code.push(op(bpf::RET, 0, 0, bpf::ALLOW));
        return Ok(code);
    }
    let (low, high) = table.split_at(table.len() / 2);
    let split = high[0].0;
    let low = tree(low)?;
    let high = tree(high)?;
    let mut code = vec![op(bpf::JGE, jump(low.len())?, 0, split)];
    code.extend(low);
    code.extend(high);
    Ok(code)
}

/// The run's filter, built once per sandbox host: the architecture check, then a search tree
/// over the table (`EPERM`; `clone` with namespace flags `EPERM`; `clone3` `ENOSYS`),
/// everything else allowed.
pub fn policy() -> Result<Vec<SeccompProgram>, PolicyError> {
    let mut code = vec![
        op(bpf::LD_W_ABS, 0, 0, bpf::ARCH),
        op(bpf::JEQ, 1, 0, audit_arch()?),
        op(bpf::RET, 0, 0, bpf::KILL_PROCESS),
        op(bpf::LD_W_ABS, 0, 0, bpf::NR),
    ];
    if std::env::consts::ARCH == "x86_64" {
        code.push(op(bpf::JGE, 0, 1, X32_SYSCALL_BIT));
        code.push(op(bpf::RET, 0, 0, bpf::ERRNO | libc::EPERM as u32));
    }
    code.extend(tree(&verdicts())?);
    Ok(vec![SeccompProgram::new(code)])
}

/// The names of the denied calls, for `warren sandbox check` and the docs.
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED
        .iter()
        .map(|&(name, _)| name)
        .chain(["clone with CLONE_NEW*", "clone3 (ENOSYS)"])
        .chain((std::env::consts::ARCH == "x86_64").then_some("every x32 call"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_for_this_architecture() {
        let programs = policy();
        assert!(programs.is_ok(), "{:?}", programs.err());
    }

    /// Runs a classic BPF program the way the kernel does, for the instructions used here.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                bpf::LD_W_ABS => {
                    let at = i.k as usize;
                    a = u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                }
                bpf::JEQ => pc += jump(a == i.k),
                bpf::JGE => pc += jump(a >= i.k),
                bpf::JSET => pc += jump(a & i.k != 0),
                bpf::RET => return i.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn the_filter_does_what_the_table_says_for_every_call() {
        let Ok(arch) = audit_arch() else { return };
        let programs = policy().unwrap_or_default();
        let program = programs[0].instructions();
        assert!(program.len() < 200, "{} instructions", program.len());
        let errno = |e: i32| bpf::ERRNO | e as u32;
        let denied: Vec<u32> = DENIED.iter().map(|&(_, nr)| nr as u32).collect();
        for nr in 0..1024u32 {
            for arg0 in [
                0u64,
                libc::SIGCHLD as u64,
                0x11 | libc::CLONE_NEWNET as u64,
                1 << 40,
            ] {
                let expected = if nr == libc::SYS_clone3 as u32 {
                    errno(libc::ENOSYS)
                } else if nr == libc::SYS_clone as u32 {
                    let flags = NAMESPACE_FLAGS.iter().any(|&f| arg0 & f as u64 != 0);
                    if flags {
                        errno(libc::EPERM)
                    } else {
                        bpf::ALLOW
                    }
                } else if denied.contains(&nr) {
                    errno(libc::EPERM)
                } else {
                    bpf::ALLOW
                };
                assert_eq!(
                    run(program, arch, nr, arg0),
                    expected,
                    "call {nr}, arg {arg0:#x}"
                );
            }
            assert_eq!(run(program, 0x4000_0003, nr, 0), bpf::KILL_PROCESS);
        }
        if std::env::consts::ARCH == "x86_64" {
            for nr in [0, libc::SYS_mount as u32, 512] {
                assert_eq!(
                    run(program, arch, X32_SYSCALL_BIT | nr, 0),
                    errno(libc::EPERM)
                );
            }
        }
        for flag in NAMESPACE_FLAGS {
            let cloned = run(program, arch, libc::SYS_clone as u32, *flag as u64);
            assert_eq!(cloned, errno(libc::EPERM), "clone with {flag:#x}");
        }
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut numbers: Vec<_> = DENIED.iter().map(|&(_, nr)| nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED.len());
    }
}
