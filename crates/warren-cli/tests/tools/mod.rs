//! Which host tools the tests that build environments need are here, found directly (the
//! executable itself), so that a test skips only when a tool is really absent and fails on
//! anything else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `program` as an executable file in `PATH` or the system directories, if there is one.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `/bin/busybox` is a static busybox (what busybox-static installs, and what `warren
/// env build busybox` copies); says SKIPPED when it is not.
pub fn static_busybox() -> bool {
    let path = Path::new(warren_worker::env_build::BUSYBOX);
    let is_static = std::fs::read(path)
        .ok()
        .and_then(|bytes| warren_worker::env_build::elf_is_static(&bytes))
        == Some(true);
    if !is_static {
        eprintln!(
            "SKIPPED: {} is not a static busybox (apt-get install busybox-static)",
            path.display()
        );
    }
    is_static
}

/// Whether squashfs-tools' `mksquashfs` and `unsquashfs` are here; says SKIPPED when not.
pub fn squashfs_tools() -> bool {
    let missing: Vec<&str> = ["mksquashfs", "unsquashfs"]
        .into_iter()
        .filter(|p| find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} missing (apt-get install squashfs-tools)",
            missing.join(" and ")
        );
    }
    missing.is_empty()
}
