//! What the new process does between clone and exec, prepared entirely by the parent: every
//! path as a C string, every file's bytes, every pointer array. The child only walks it.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::child::SeccompProgram;

/// One filesystem operation, applied in order before `pivot_root`.
#[derive(Debug)]
pub enum Step {
    /// mount(2).
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Makes a mount tree read-only, nosuid, nodev.
    ReadOnly(CString),
    /// mkdir(2) with a mode.
    Mkdir(CString, libc::mode_t),
    /// A character device node.
    Device {
        path: CString,
        major: u32,
        minor: u32,
    },
    /// symlink(target, link).
    Symlink { target: CString, link: CString },
    /// A file with these contents and mode.
    File {
        path: CString,
        contents: Vec<u8>,
        mode: libc::mode_t,
    },
}

impl Step {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                ..
            } => format!(
                "mounting {} ({}) at {}",
                source.as_ref().map_or("-".to_string(), s),
                fstype.as_ref().map_or("bind".to_string(), s),
                s(target)
            ),
            Step::ReadOnly(t) => format!("making {} read-only", s(t)),
            Step::Mkdir(p, _) => format!("creating directory {}", s(p)),
            Step::Device { path, .. } => format!("creating device {}", s(path)),
            Step::Symlink { link, .. } => format!("creating symlink {}", s(link)),
            Step::File { path, .. } => format!("writing {}", s(path)),
        }
    }
}

/// Stages after the filesystem steps, for error reports (numbered after the steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// pivot_root into the new root.
    PivotRoot = 1 << 16,
    /// Taking over from the parent: its death signal, descriptors, the launch message.
    Handover,
    /// Network and host name.
    Network,
    /// A cgroup namespace rooted at the run's cgroup.
    CgroupNamespace,
    /// Moving into the run's groups of the v1 hierarchies.
    JoinCgroups,
    /// Input files.
    InputFiles,
    /// Standard streams and working directory.
    Stdio,
    /// Resource limits.
    Rlimits,
    /// Dropping to the run's user and clearing capabilities.
    Privileges,
    /// Installing the seccomp filter.
    Seccomp,
    /// execve.
    Exec,
    /// Setup did not reach exec in time (reported by the parent, not the child).
    SetupTimeout,
    /// Not a failure: the program was executed (time limits start).
    Executed,
    /// Not a failure: the program ended, with this raw wait status, and every other process
    /// of the run has been killed and reaped; only the init is left, and it exits next.
    ProgramExit,
}

impl Stage {
    /// All stages, to map a number back.
    pub const ALL: [Stage; 12] = [
        Stage::PivotRoot,
        Stage::Handover,
        Stage::Network,
        Stage::CgroupNamespace,
        Stage::JoinCgroups,
        Stage::InputFiles,
        Stage::Stdio,
        Stage::Rlimits,
        Stage::Privileges,
        Stage::Seccomp,
        Stage::Exec,
        Stage::SetupTimeout,
    ];

    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::PivotRoot => "switching to the new root",
            Stage::Handover => "taking over from the parent (descriptors, launch message)",
            Stage::Network => "setting up loopback and host name",
            Stage::CgroupNamespace => "entering the cgroup namespace",
            Stage::JoinCgroups => "moving into its cgroups",
            Stage::InputFiles => "setting up /tmp and the input files",
            Stage::Stdio => "setting up standard streams",
            Stage::Rlimits => "setting resource limits",
            Stage::Privileges => "dropping privileges",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Exec => "executing the program",
            Stage::SetupTimeout => "setting up (it did not finish in time)",
            Stage::Executed => "running the program",
            Stage::ProgramExit => "ending the program",
        }
    }
}

/// Everything the child needs to prepare; the rest comes in the launch message.
#[derive(Debug)]
pub struct ChildPlan {
    /// Where the new root is assembled (a directory in the host's filesystem, mounted over
    /// only inside the run's private mount namespace).
    pub new_root: CString,
    /// Filesystem steps, applied in order.
    pub steps: Vec<Step>,
    /// Host name inside the run.
    pub hostname: Vec<u8>,
    /// Read end of the go pipe: one byte once the parent has made the run's cgroups, then the
    /// launch message once it knows what to run.
    pub go_fd: RawFd,
    /// Write end of the close-on-exec pipe for failure reports.
    pub error_fd: RawFd,
    /// Descriptors for the program's stdin, stdout, stderr.
    pub stdio: [RawFd; 3],
    /// The run's uid and gid.
    pub uid: u32,
    /// A supplementary group of the run (0: none).
    pub extra_gid: u32,
    /// The program's umask.
    pub umask: libc::mode_t,
    /// Size of the writable `/tmp` (the disk limit, the size of the root's tmpfs, whose `/tmp`
    /// directory the child binds writable), in bytes; 0 when `/tmp` is a shared
    /// directory bound by the filesystem steps instead of a tmpfs of the run's own.
    pub disk: u64,
    /// Highest capability number to drop from the bounding set.
    pub last_capability: u32,
    /// Seccomp programs, installed in order.
    pub seccomp: Vec<SeccompProgram>,
    /// Where the v1 hierarchies the run has groups in are mounted (at most [`MAX_V1_JOINS`]).
    /// The init opens them before `pivot_root`; the run's process moves itself into
    /// `v1_tasks` below each: a thread moving itself skips the kernel's global lock for
    /// migrations, whose first taking after a quiet moment waits for an RCU grace period (10
    /// to 20 ms here). The parent moving it would take that lock.
    pub v1_mounts: Vec<CString>,
    /// The run group's `tasks` file, relative to each of `v1_mounts`.
    pub v1_tasks: CString,
    /// Where the cgroup2 tree is mounted, if the run has a group in it. The init opens it
    /// before `pivot_root`, and `v2_group` below it once the parent has made the groups, to
    /// start the run's process there (`CLONE_INTO_CGROUP`, which takes no migration lock).
    pub v2_mount: Option<CString>,
    /// The run's cgroup2 group, relative to `v2_mount`.
    pub v2_group: CString,
}

/// Most v1 hierarchies a run joins by itself (memory, pids, cpu, cpuacct, blkio).
pub const MAX_V1_JOINS: usize = 5;

/// Makes a C string from a path or text; interior NULs are refused by the caller's validation.
pub fn cstring(bytes: impl AsRef<[u8]>) -> Result<CString, String> {
    CString::new(bytes.as_ref().to_vec()).map_err(|_| {
        format!(
            "{:?} contains a NUL byte",
            String::from_utf8_lossy(bytes.as_ref())
        )
    })
}

/// The C string of `root` joined with `rel` (rel may start with `/`).
pub fn under(root: &CStr, rel: &str) -> CString {
    let mut bytes = root.to_bytes().to_vec();
    if !rel.starts_with('/') {
        bytes.push(b'/');
    }
    bytes.extend_from_slice(rel.as_bytes());
    CString::new(bytes).unwrap_or_default()
}

/// One top-level entry of a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory bound read-only from this host path.
    Dir(String, PathBuf),
    /// A file bound read-only from this host path.
    File(String, PathBuf),
    /// A symlink with this target.
    Symlink(String, PathBuf),
}

/// Host system directories offered by the default root.
pub const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Files and directories of the host's `/etc` that programs need to start (the dynamic
/// linker's cache, Debian's alternatives links); nothing that identifies or authenticates.
pub const HOST_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
];

/// Names the sandbox mounts itself; a root directory's own entries with these names are hidden.
pub const RESERVED: &[&str] = &["proc", "dev", "tmp", "task"];

/// Lists what a root directory offers: its top-level entries (for the host, only
/// [`HOST_DIRS`]), each classified by how it is placed in the new root.
pub fn root_entries(dir: &Path, only: Option<&[&str]>) -> std::io::Result<Vec<RootEntry>> {
    let mut entries = Vec::new();
    if let Some(names) = only {
        // A few known names: one lstat each costs less than listing the whole directory
        // (the host's `/etc` has well over a hundred entries).
        for name in names.iter().filter(|n| !RESERVED.contains(n)) {
            let path = dir.join(name);
            let kind = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta.file_type(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            entries.push(classify(name.to_string(), path, kind)?);
        }
        entries.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
        return Ok(entries);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        entries.push(classify(name, entry.path(), entry.file_type()?)?);
    }
    entries.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
    Ok(entries)
}

fn classify(name: String, path: PathBuf, kind: std::fs::FileType) -> std::io::Result<RootEntry> {
    Ok(if kind.is_symlink() {
        RootEntry::Symlink(name, std::fs::read_link(&path)?)
    } else if kind.is_dir() {
        RootEntry::Dir(name, path)
    } else {
        RootEntry::File(name, path)
    })
}

fn entry_name(e: &RootEntry) -> &str {
    match e {
        RootEntry::Dir(n, _) | RootEntry::File(n, _) | RootEntry::Symlink(n, _) => n,
    }
}

/// Binds `src` (with everything mounted below it) at `target`, then makes the tree read-only.
fn bind_read_only(src: &Path, target: CString, steps: &mut Vec<Step>) -> Result<(), String> {
    steps.push(Step::Mount {
        source: Some(cstring(src.as_os_str().as_bytes())?),
        target: target.clone(),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
    });
    steps.push(Step::ReadOnly(target));
    Ok(())
}

/// Steps that place `entries` under `base` (a directory inside the new root).
pub fn place_entries(
    base: &CStr,
    entries: &[RootEntry],
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    for entry in entries {
        match entry {
            RootEntry::Dir(name, src) => {
                let target = under(base, name);
                steps.push(Step::Mkdir(target.clone(), 0o755));
                bind_read_only(src, target, steps)?;
            }
            RootEntry::File(name, src) => {
                let target = under(base, name);
                // A small file is copied (read afresh for each run): writing a few bytes costs
                // the child less than a bind and its remount, two mount operations. The
                // copy is in the root's tmpfs, read-only with the root.
                if let Some((contents, mode)) = small_file(src) {
                    steps.push(Step::File {
                        path: target,
                        contents,
                        mode,
                    });
                    continue;
                }
                steps.push(Step::File {
                    path: target.clone(),
                    contents: Vec::new(),
                    mode: 0o644,
                });
                bind_read_only(src, target, steps)?;
            }
            RootEntry::Symlink(name, link_target) => {
                steps.push(Step::Symlink {
                    target: cstring(link_target.as_os_str().as_bytes())?,
                    link: under(base, name),
                });
            }
        }
    }
    Ok(())
}

/// Largest file [`place_entries`] copies instead of binding.
const COPIED_FILE: u64 = 4096;

/// The contents and permission bits of `path` if it is a regular file of at most
/// [`COPIED_FILE`] bytes that can be read.
fn small_file(path: &Path) -> Option<(Vec<u8>, libc::mode_t)> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > COPIED_FILE {
        return None;
    }
    let contents = std::fs::read(path).ok()?;
    // Changed meanwhile: bound instead, whatever it holds now.
    if contents.len() as u64 > COPIED_FILE {
        return None;
    }
    Some((contents, meta.permissions().mode() & 0o755))
}

/// Steps that bind the host directory `scratch` read-write (nosuid, nodev) at `/tmp`, for runs
/// that share one scratch directory; after [`system_mounts`], which makes the mount point.
pub fn bind_scratch(root: &CStr, scratch: &Path, steps: &mut Vec<Step>) -> Result<(), String> {
    let target = under(root, "tmp");
    steps.push(Step::Mount {
        source: Some(cstring(scratch.as_os_str().as_bytes())?),
        target: target.clone(),
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    steps.push(Step::Mount {
        source: None,
        target,
        fstype: None,
        flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
        data: None,
    });
    Ok(())
}

/// Steps for `/proc`, `/dev` and the mount point of `/tmp`.
pub fn system_mounts(root: &CStr, steps: &mut Vec<Step>) {
    let s = |t: &str| Some(CString::new(t).unwrap_or_default());
    let proc = under(root, "proc");
    steps.push(Step::Mkdir(proc.clone(), 0o555));
    // `hidepid=2`: a process of another uid is not there at all. The program sees its own
    // processes only, not the run's init (uid 0), whose entries would tell the runner's
    // command line and where its cgroups are on the host.
    steps.push(Step::Mount {
        source: s("proc"),
        target: proc,
        fstype: s("proc"),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: s("hidepid=2"),
    });
    // A directory of the root, read-only with it once set up: no tmpfs of its own to make
    // and tear down for five nodes and five links.
    let dev = under(root, "dev");
    steps.push(Step::Mkdir(dev.clone(), 0o755));
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        steps.push(Step::Device {
            path: under(&dev, name),
            major: 1,
            minor,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("shm", "/tmp"),
    ] {
        steps.push(Step::Symlink {
            target: CString::new(target).unwrap_or_default(),
            link: under(&dev, name),
        });
    }
    // Bound writable once the root is sealed (or a scratch directory is bound there).
    steps.push(Step::Mkdir(under(root, "tmp"), 0o1777));
}

/// Whether a relative input-file path stays inside the working directory.
pub fn safe_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && !path.as_os_str().as_bytes().contains(&0)
}

/// The minimal `/etc` files written for the host root.
pub fn etc_files(uid: u32) -> Vec<(&'static str, String)> {
    vec![
        ("passwd", format!("root:x:0:0:root:/root:/bin/sh\nwarren:x:{uid}:{uid}:warren run:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")),
        ("group", format!("root:x:0:\nwarren:x:{uid}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1\tlocalhost warren\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()),
        ("hostname", "warren\n".to_string()),
        ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n".to_string()),
    ]
}

/// Finds `program` the way a shell would: as given when it contains `/`, else in each `PATH`
/// directory, looking inside `root` (the run's root as seen from the host).
pub fn resolve_program(program: &OsStr, path_var: &OsStr, root: &Path) -> Option<PathBuf> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    for dir in path_var
        .as_bytes()
        .split(|&b| b == b':')
        .filter(|d| !d.is_empty())
    {
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        let on_host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        if let Ok(meta) = std::fs::metadata(&on_host) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Some(candidate);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        for (path, ok) in [
            ("a.txt", true),
            ("dir/b", true),
            ("../x", false),
            ("/etc/passwd", false),
            ("", false),
            ("a/../../b", false),
            ("./a", false),
        ] {
            assert_eq!(safe_relative(Path::new(path)), ok, "{path}");
        }
    }

    #[test]
    fn programs_resolve_inside_the_root() {
        let root = Path::new("/");
        assert_eq!(
            resolve_program(
                OsStr::new("sh"),
                OsStr::new("/nonexistent:/bin:/usr/bin"),
                root
            ),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve_program(
                OsStr::new("no-such-program-anywhere"),
                OsStr::new("/bin:/usr/bin"),
                root
            ),
            None
        );
        assert_eq!(
            resolve_program(OsStr::new("./x"), OsStr::new(""), root),
            Some(PathBuf::from("./x"))
        );
    }

    #[test]
    fn entries_are_placed_by_kind() {
        let base = CString::new("/r").unwrap_or_default();
        let mut steps = Vec::new();
        let entries = vec![
            RootEntry::Symlink("bin".into(), "usr/bin".into()),
            RootEntry::Dir("usr".into(), "/usr".into()),
        ];
        assert!(place_entries(&base, &entries, &mut steps).is_ok());
        let described: Vec<String> = steps.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "creating symlink /r/bin",
                "creating directory /r/usr",
                "mounting /usr (bind) at /r/usr",
                "making /r/usr read-only"
            ]
        );
    }

    #[test]
    fn small_files_are_copied_and_large_ones_bound() {
        let dir = std::env::temp_dir().join(format!("warren-place-{}", std::process::id()));
        let small = dir.join("small.conf");
        let large = dir.join("large.cache");
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&small, b"include x\n"))
            .and_then(|()| std::fs::write(&large, vec![0u8; COPIED_FILE as usize + 1]));
        assert!(made.is_ok(), "{made:?}");
        let base = CString::new("/r").unwrap_or_default();
        let mut steps = Vec::new();
        let entries = vec![
            RootEntry::File("small.conf".into(), small),
            RootEntry::File("large.cache".into(), large),
        ];
        assert!(place_entries(&base, &entries, &mut steps).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(&steps[0], Step::File { contents, .. } if contents.as_slice() == b"include x\n"),
            "{:?}",
            steps[0]
        );
        let described: Vec<String> = steps[1..].iter().map(Step::describe).collect();
        let bind = format!(
            "mounting {} (bind) at /r/large.cache",
            dir.join("large.cache").display()
        );
        assert_eq!(
            described,
            [
                "writing /r/large.cache",
                bind.as_str(),
                "making /r/large.cache read-only"
            ]
        );
    }
}
