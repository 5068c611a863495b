//! Building environments into a worker's environments directory: a minimal one from Debian's
//! static busybox, or a Debian one with debootstrap, left as a directory `NAME` or packed into a
//! squashfs image `NAME.sfs`.
//!
//! A build happens in a hidden temporary directory next to the target (`.NAME.build-PID`, which
//! [`crate::environments`] never lists) and is renamed into place at the end, so a failed build
//! leaves nothing half-made. An existing environment is replaced only when asked to.
//!
//! The tools (busybox-static, debootstrap, squashfs-tools) are installed through apt when missing;
//! `progress` is told so. The command lines are pure functions, tested as tables.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use warren_core::environment::{self, HOST, IMAGE_SUFFIX};

use crate::environments::{Environment, EnvironmentKind};

/// What goes into the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// Debian's static busybox with its applets as symlinks, the sandbox's mount points and a
    /// minimal `/etc`.
    Busybox,
    /// A minimal Debian system (debootstrap's `minbase`) with these packages.
    Debian(Debian),
}

/// A Debian environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debian {
    /// The release (`bookworm`, `stable`, ...).
    pub suite: String,
    /// The archive; debootstrap's default when `None`.
    pub mirror: Option<String>,
    /// Packages added to `minbase`.
    pub packages: Vec<String>,
}

/// One build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The environments directory (created when missing).
    pub env_dir: PathBuf,
    /// The environment's name.
    pub name: String,
    /// What goes into it.
    pub recipe: Recipe,
    /// Pack it into `NAME.sfs` instead of leaving the directory `NAME`.
    pub squashfs: bool,
    /// Replace an existing environment of the same name (directory or image).
    pub force: bool,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The name, a package name or the recipe is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An environment of that name exists and `force` was not given.
    #[error("environment `{name}` already exists at {path} (--force replaces it)", path = .path.display())]
    Exists {
        /// The name.
        name: String,
        /// What is there.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A tool failed or could not be started.
    #[error("{0}")]
    Command(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Directories the sandbox mounts over (`/proc`, `/dev`, `/tmp`, `/task`) or expects (`/etc`),
/// with their modes: an environment has them, so it also works where it is mounted as `/` as is.
pub const MOUNT_POINTS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("task", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
];

/// Where busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The accounts of a busybox environment's `/etc`. Runs get a uid of their own (not listed), so
/// only the fixed accounts are.
pub const BUSYBOX_ACCOUNTS: &[(&str, &str)] = &[
    (
        "passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("group", "root:x:0:\nnogroup:x:65534:\n"),
];

/// What every built environment's `/etc` says about the machine: the sandbox's host name, not
/// the builder's (debootstrap copies the builder's).
pub const MACHINE_ETC: &[(&str, &str)] = &[
    (
        "hosts",
        "127.0.0.1\tlocalhost warren\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    ("hostname", "warren\n"),
];

/// Checks a Debian package name (policy: lowercase letters, digits, `+`, `-`, `.`; two or more
/// characters, starting with a letter or digit), optionally with `:ARCH`.
pub fn check_package_name(name: &str) -> Result<(), String> {
    let (package, arch) = match name.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (name, None),
    };
    let package_ok = package.len() >= 2
        && package
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if package_ok && arch_ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a Debian package name"))
    }
}

/// `apt-get install` of `packages`, never removing anything to make room (busybox-static
/// conflicts with busybox: apt then fails instead of removing it).
pub fn apt_install_argv(packages: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-remove",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(packages.iter().map(|p| p.to_string()));
    argv
}

/// debootstrap's command line for `recipe` into `target`: the `minbase` variant with the
/// packages included.
pub fn debootstrap_argv(recipe: &Debian, target: &Path) -> Result<Vec<OsString>, BuildError> {
    for package in &recipe.packages {
        check_package_name(package).map_err(BuildError::Invalid)?;
    }
    let suite_ok = !recipe.suite.is_empty()
        && !recipe.suite.starts_with('-')
        && recipe
            .suite
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !suite_ok {
        return Err(BuildError::Invalid(format!(
            "`{}` is not a Debian suite",
            recipe.suite
        )));
    }
    let mut argv: Vec<OsString> = vec!["debootstrap".into(), "--variant=minbase".into()];
    if !recipe.packages.is_empty() {
        argv.push(format!("--include={}", recipe.packages.join(",")).into());
    }
    argv.push(recipe.suite.clone().into());
    argv.push(target.as_os_str().to_owned());
    if let Some(mirror) = &recipe.mirror {
        if mirror.is_empty() || mirror.starts_with('-') {
            return Err(BuildError::Invalid(format!(
                "`{mirror}` is not a mirror URL"
            )));
        }
        argv.push(mirror.into());
    }
    Ok(argv)
}

/// mksquashfs's command line packing `tree` into `image`: every file owned by root (the tree
/// may hold files of the user who built it), a new image (never appended to), lz4 (fast to
/// write and to read).
pub fn mksquashfs_argv(tree: &Path, image: &Path) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "mksquashfs".into(),
        tree.as_os_str().to_owned(),
        image.as_os_str().to_owned(),
    ];
    for arg in ["-all-root", "-noappend", "-comp", "lz4", "-no-progress"] {
        argv.push(arg.into());
    }
    argv
}

/// What apt leaves in a new Debian tree that an environment does not need (package caches and
/// lists), relative to the tree.
pub const DEBIAN_CACHES: &[&str] = &["var/cache/apt", "var/lib/apt/lists"];

/// The suite a Debian environment defaults to: the host's own release when the host is Debian
/// (from `/etc/os-release`), else `stable`.
pub fn default_suite(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    match (field("ID"), field("VERSION_CODENAME")) {
        (Some(id), Some(codename)) if id == "debian" && !codename.is_empty() => codename,
        _ => "stable".to_string(),
    }
}

/// The symlinks (paths relative to the root) for busybox's applets, from `busybox --list-full`
/// (`usr/bin/awk`) or `busybox --list` (`awk`, placed in `bin`). Anything that is not a plain
/// relative path, and busybox itself, is left out.
pub fn applet_links(listing: &str) -> Vec<PathBuf> {
    let mut links: Vec<PathBuf> = listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.contains('/') {
                PathBuf::from(l.trim_start_matches('/'))
            } else {
                Path::new("bin").join(l)
            }
        })
        .filter(|p| p.components().all(|c| matches!(c, Component::Normal(_))))
        .filter(|p| p != Path::new("bin/busybox"))
        .collect();
    links.sort();
    links.dedup();
    links
}

/// Whether an ELF file is statically linked (has no program interpreter); `None` if it is not
/// an ELF file this reads (64- or 32-bit, little-endian).
pub fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let (phoff, phentsize, phnum) = match bytes.get(4)? {
        2 => (
            usize::try_from(u64_at(0x20)?).ok()?,
            u16_at(0x36)?,
            u16_at(0x38)?,
        ),
        1 => (u32_at(0x1c)? as usize, u16_at(0x2a)?, u16_at(0x2c)?),
        _ => return None,
    };
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// Mount points at or below `prefix`, deepest first, from `/proc/self/mountinfo`'s text.
pub fn mounts_under(mountinfo: &str, prefix: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(prefix))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- I/O ------------------------------------------------------------------------------------

/// Builds the environment `request` describes and returns it (measured). `progress` receives a
/// line for each step worth telling (installing tools, running debootstrap, packing).
pub fn build(
    request: &BuildRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Environment, BuildError> {
    let name = request.name.as_str();
    environment::check_name(name).map_err(BuildError::Invalid)?;
    if name == HOST {
        return Err(BuildError::Invalid(
            "`host` is the host's own system directories; it cannot be built".into(),
        ));
    }
    let env_dir = &request.env_dir;
    std::fs::create_dir_all(env_dir).map_err(io(env_dir))?;
    let tree_target = env_dir.join(name);
    let image_target = env_dir.join(format!("{name}{IMAGE_SUFFIX}"));
    let existing: Vec<PathBuf> = [&tree_target, &image_target]
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .cloned()
        .collect();
    if let (Some(path), false) = (existing.first(), request.force) {
        return Err(BuildError::Exists {
            name: name.to_string(),
            path: path.clone(),
        });
    }
    let pid = std::process::id();
    let tree = env_dir.join(format!(".{name}.build-{pid}"));
    let mut cleanup = Cleanup(vec![tree.clone()]);
    remove_path(&tree)?;
    std::fs::create_dir(&tree).map_err(io(&tree))?;
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).map_err(io(&tree))?;
    match &request.recipe {
        Recipe::Busybox => build_busybox(&tree, progress)?,
        Recipe::Debian(debian) => build_debian(debian, &tree, progress)?,
    }
    write_etc(&tree, MACHINE_ETC)?;
    for (dir, mode) in MOUNT_POINTS {
        let path = tree.join(dir);
        if path.symlink_metadata().is_err() {
            std::fs::create_dir(&path).map_err(io(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .map_err(io(&path))?;
        }
    }
    let (built, target, kind) = if request.squashfs {
        ensure_tool("mksquashfs", "squashfs-tools", progress)?;
        let image = env_dir.join(format!(".{name}{IMAGE_SUFFIX}.build-{pid}"));
        cleanup.0.push(image.clone());
        remove_path(&image)?;
        progress(&format!("packing {name} into a squashfs image"));
        run_captured(&mksquashfs_argv(&tree, &image), "mksquashfs")?;
        remove_path(&tree)?;
        (image, image_target, EnvironmentKind::Squashfs)
    } else {
        (tree, tree_target, EnvironmentKind::Directory)
    };
    // Replace: move what exists aside, put the new one in place, then remove the old.
    let mut aside = Vec::new();
    for (i, old) in existing.iter().enumerate() {
        let moved = env_dir.join(format!(".{name}.old-{pid}-{i}"));
        remove_path(&moved)?;
        std::fs::rename(old, &moved).map_err(io(old))?;
        aside.push((old.clone(), moved));
    }
    if let Err(e) = std::fs::rename(&built, &target) {
        for (old, moved) in &aside {
            let _ = std::fs::rename(moved, old);
        }
        return Err(io(&target)(e));
    }
    cleanup.0.clear();
    for (_, moved) in &aside {
        remove_path(moved)?;
    }
    let size_bytes = match kind {
        EnvironmentKind::Squashfs => std::fs::metadata(&target).map_err(io(&target))?.len(),
        _ => crate::environments::tree_size(&target)
            .map_err(|e| BuildError::Command(format!("measuring the new environment: {e}")))?,
    };
    Ok(Environment {
        name: name.to_string(),
        kind,
        path: target,
        size_bytes: Some(size_bytes),
    })
}

/// Removes what a failed build left (its temporary tree and image).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            if let Err(e) = remove_path(path) {
                tracing::warn!("removing the unfinished build: {e}");
            }
        }
    }
}

/// Removes a file or a tree, first unmounting anything mounted inside it (a failed debootstrap
/// can leave its `/proc` mounted), so nothing outside the tree is ever deleted.
fn remove_path(path: &Path) -> Result<(), BuildError> {
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(());
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(io(path));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for mount in mounts_under(&mountinfo, path) {
        let status = Command::new("umount")
            .arg("--lazy")
            .arg(&mount)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(BuildError::Command(format!(
                "{} is still mounted; unmount it, then remove {}",
                mount.display(),
                path.display()
            )));
        }
    }
    std::fs::remove_dir_all(path).map_err(io(path))
}

fn build_busybox(tree: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), BuildError> {
    let busybox = Path::new(BUSYBOX);
    let is_static = || {
        std::fs::read(busybox)
            .ok()
            .and_then(|b| elf_is_static(&b))
            .unwrap_or(false)
    };
    if !is_static() {
        progress("installing busybox-static through apt (a static /bin/busybox is missing)");
        apt_install(&["busybox-static"])?;
        if !is_static() {
            return Err(BuildError::Command(format!(
                "{BUSYBOX} is still not a static busybox after installing busybox-static"
            )));
        }
    }
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
        let path = tree.join(dir);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
    }
    let copy = tree.join("bin/busybox");
    std::fs::copy(busybox, &copy).map_err(io(&copy))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).map_err(io(&copy))?;
    let listing = match run_captured(&[busybox.into(), "--list-full".into()], "busybox") {
        Ok(out) => out,
        Err(_) => run_captured(&[busybox.into(), "--list".into()], "busybox")?,
    };
    let links = applet_links(&listing);
    if links.is_empty() {
        return Err(BuildError::Command(
            "busybox listed no applets (`busybox --list`)".into(),
        ));
    }
    for link in links {
        let path = tree.join(&link);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::os::unix::fs::symlink(BUSYBOX, &path).map_err(io(&path))?;
    }
    write_etc(tree, BUSYBOX_ACCOUNTS)
}

fn write_etc(tree: &Path, files: &[(&str, &str)]) -> Result<(), BuildError> {
    let etc = tree.join("etc");
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    for (file, contents) in files {
        let path = etc.join(file);
        std::fs::write(&path, contents).map_err(io(&path))?;
    }
    Ok(())
}

fn build_debian(
    recipe: &Debian,
    tree: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let argv = debootstrap_argv(recipe, tree)?;
    ensure_tool("debootstrap", "debootstrap", progress)?;
    progress(&format!(
        "running debootstrap ({} minbase{})",
        recipe.suite,
        if recipe.packages.is_empty() {
            String::new()
        } else {
            format!(" + {}", recipe.packages.join(","))
        }
    ));
    let program = find_program("debootstrap")
        .ok_or_else(|| BuildError::Command("debootstrap is not installed".into()))?;
    // debootstrap's own output is the progress: to stderr, so stdout stays for the result.
    let status = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| BuildError::Command(format!("starting debootstrap: {e}")))?;
    if !status.success() {
        return Err(BuildError::Command(format!(
            "debootstrap failed ({status}); its log is above"
        )));
    }
    for cache in DEBIAN_CACHES {
        let dir = tree.join(cache);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // apt expects its `partial` directories and lock files; the rest is cache.
            let keep = entry.file_name() == "partial" || entry.file_name() == "lock";
            if !keep {
                remove_path(&path)?;
            }
        }
    }
    // The builder's name server: runs have only loopback.
    remove_path(&tree.join("etc/resolv.conf"))
}

/// Finds `program` in `PATH` and the system directories (`sbin` is often not in `PATH`).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn ensure_tool(
    program: &str,
    package: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    if find_program(program).is_some() {
        return Ok(());
    }
    progress(&format!(
        "installing {package} through apt ({program} is missing)"
    ));
    apt_install(&[package])?;
    find_program(program).map(|_| ()).ok_or_else(|| {
        BuildError::Command(format!(
            "{program} is still missing after installing {package}"
        ))
    })
}

fn apt_install(packages: &[&str]) -> Result<(), BuildError> {
    let update: Vec<OsString> = ["apt-get", "update", "-q"].map(OsString::from).to_vec();
    run_captured(&update, "apt-get update")?;
    let install: Vec<OsString> = apt_install_argv(packages)
        .into_iter()
        .map(OsString::from)
        .collect();
    run_captured(&install, "apt-get install").map(|_| ())
}

/// Runs a tool with its output captured; a failure carries the end of what it said.
fn run_captured(argv: &[OsString], what: &str) -> Result<String, BuildError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| BuildError::Command(format!("{what}: empty command")))?;
    let program = find_program(&program.to_string_lossy()).unwrap_or_else(|| program.into());
    let output = Command::new(&program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            BuildError::Command(format!("starting {what} ({}): {e}", program.display()))
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = said.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(BuildError::Command(format!(
        "{what} failed ({}):\n{}",
        output.status,
        tail.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn debootstrap_command_lines() {
        let target = Path::new("/envs/.py.build-7");
        let recipe = |packages: &[&str], mirror: Option<&str>| Debian {
            suite: "bookworm".into(),
            mirror: mirror.map(str::to_string),
            packages: packages.iter().map(|p| p.to_string()).collect(),
        };
        let ok = |r: Debian| debootstrap_argv(&r, target).map(|a| strings(&a)).ok();
        assert_eq!(
            ok(recipe(&["python3", "libc6:amd64"], None)),
            Some(vec![
                "debootstrap".to_string(),
                "--variant=minbase".into(),
                "--include=python3,libc6:amd64".into(),
                "bookworm".into(),
                "/envs/.py.build-7".into(),
            ])
        );
        assert_eq!(
            ok(recipe(&[], Some("http://deb.debian.org/debian"))),
            Some(vec![
                "debootstrap".to_string(),
                "--variant=minbase".into(),
                "bookworm".into(),
                "/envs/.py.build-7".into(),
                "http://deb.debian.org/debian".into(),
            ])
        );
        for bad in [
            recipe(&["Python3"], None),
            recipe(&["--foo"], None),
            recipe(&["a"], None),
            recipe(&["x,y"], None),
            recipe(&[], Some("--no-check-gpg")),
            Debian {
                suite: "--keyring=x".into(),
                ..recipe(&[], None)
            },
        ] {
            assert!(ok(bad.clone()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn package_names() {
        for (name, ok) in [
            ("python3", true),
            ("g++", true),
            ("libstdc++6", true),
            ("python3.11", true),
            ("libc6:amd64", true),
            ("0ad", true),
            ("a", false),
            ("Python", false),
            ("-x", false),
            ("x y", false),
            ("libc6:", false),
            ("", false),
        ] {
            assert_eq!(check_package_name(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn other_command_lines() {
        assert_eq!(
            strings(&mksquashfs_argv(Path::new("/e/.t"), Path::new("/e/.t.sfs"))),
            [
                "mksquashfs",
                "/e/.t",
                "/e/.t.sfs",
                "-all-root",
                "-noappend",
                "-comp",
                "lz4",
                "-no-progress"
            ]
        );
        assert_eq!(
            apt_install_argv(&["busybox-static"]),
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--no-remove",
                "busybox-static"
            ]
        );
    }

    #[test]
    fn suites_follow_a_debian_host() {
        for (text, want) in [
            ("ID=debian\nVERSION_CODENAME=bookworm\n", "bookworm"),
            (
                "PRETTY_NAME=\"x\"\nID=\"debian\"\nVERSION_CODENAME=\"trixie\"",
                "trixie",
            ),
            ("ID=ubuntu\nVERSION_CODENAME=noble\n", "stable"),
            ("ID=debian\n", "stable"),
            ("", "stable"),
        ] {
            assert_eq!(default_suite(text), want, "{text}");
        }
    }

    #[test]
    fn applets_become_links() {
        assert_eq!(
            applet_links("bin/sh\nusr/bin/awk\nbin/busybox\n\n/sbin/init\n../escape\n"),
            [
                PathBuf::from("bin/sh"),
                PathBuf::from("sbin/init"),
                PathBuf::from("usr/bin/awk")
            ]
        );
        assert_eq!(
            applet_links("sh\nls\nsh\n"),
            [PathBuf::from("bin/ls"), PathBuf::from("bin/sh")]
        );
    }

    #[test]
    fn elf_linking() {
        // A 64-bit header with one program header at 0x40.
        let elf = |p_type: u32| {
            let mut b = vec![0u8; 0x40 + 0x38];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[0x20] = 0x40;
            b[0x36] = 0x38;
            b[0x38] = 1;
            b[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
            b
        };
        assert_eq!(elf_is_static(&elf(1)), Some(true));
        assert_eq!(elf_is_static(&elf(3)), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(&elf(3)[..0x41]), None);
        // The real thing, where the host has them.
        if let Ok(bytes) = std::fs::read("/bin/sh") {
            assert!(elf_is_static(&bytes).is_some());
        }
    }

    #[test]
    fn mounts_below_a_tree() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:5 / /envs/.d.build-1/proc rw - proc proc rw
41 22 0:6 / /envs/.d.build-1/dev/pts rw - devpts devpts rw
42 22 0:7 / /envs/.d.build-1/sp\\040ace rw - tmpfs t rw
43 22 0:8 / /envs/.d.build-10 rw - tmpfs t rw
";
        assert_eq!(
            mounts_under(info, Path::new("/envs/.d.build-1")),
            [
                PathBuf::from("/envs/.d.build-1/dev/pts"),
                PathBuf::from("/envs/.d.build-1/proc"),
                PathBuf::from("/envs/.d.build-1/sp ace"),
            ]
        );
    }
}
