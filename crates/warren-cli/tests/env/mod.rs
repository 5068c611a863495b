//! `warren env build|list` for real: a busybox environment built from the host's packages, used
//! as a sandbox root, packed into an image `unsquashfs` reads, and listed. Needs root (the
//! sandbox), a static `/bin/busybox` (busybox-static) and, for images, squashfs-tools; each test
//! says SKIPPED and returns when one is absent.

use std::path::Path;
use std::process::{Command, Output};

use super::sandbox::root;
use super::tools;

fn warren(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting warren: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `warren env build busybox NAME --env-dir DIR EXTRA...`; `None` (after saying SKIPPED) when
/// a tool the build needs is absent here: a static `/bin/busybox`, and `mksquashfs` for
/// `--squashfs`. Any other failure is the build's own, for the caller to see.
fn build_busybox(dir: &Path, name: &str, extra: &[&str]) -> Option<Output> {
    if !tools::static_busybox() || (extra.contains(&"--squashfs") && !tools::squashfs_tools()) {
        return None;
    }
    let dir = dir.to_str().unwrap_or_default();
    let mut args = vec!["env", "build", "busybox", name, "--env-dir", dir];
    args.extend_from_slice(extra);
    Some(warren(&args))
}

/// The names in `dir`, sorted (hidden ones too: a build must leave none behind).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn busybox_environment_runs_shell_scripts_in_the_sandbox() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(out) = build_busybox(dir.path(), "bb", &[]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("built environment bb (directory"));
    assert_eq!(entries(dir.path()), ["bb"]);
    let env = dir.path().join("bb");
    for mount_point in ["proc", "dev", "tmp", "task", "etc"] {
        assert!(env.join(mount_point).is_dir(), "no /{mount_point}");
    }
    let passwd = std::fs::read_to_string(env.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    let hostname = std::fs::read_to_string(env.join("etc/hostname")).unwrap_or_default();
    assert_eq!(hostname, "warren\n");
    let env_path = env.to_str().unwrap_or_default();
    let run = warren(&[
        "sandbox", "run", "--root", env_path, "--", "/bin/sh", "-c", "echo hi",
    ]);
    assert_eq!(text(&run.stdout), "hi\n", "{}", text(&run.stderr));
    assert_eq!(run.status.code(), Some(0));
    // A script with `#!/bin/sh`, and applets found through PATH.
    let script =
        "printf '#!/bin/sh\\necho \"script $1\" | tr a-z A-Z\\n' > s && chmod +x s && ./s ok";
    let run = warren(&[
        "sandbox", "run", "--root", env_path, "--", "sh", "-c", script,
    ]);
    assert_eq!(text(&run.stdout), "SCRIPT OK\n", "{}", text(&run.stderr));

    // An existing environment is replaced only with --force.
    let again = build_busybox(dir.path(), "bb", &[]).unwrap_or_else(|| panic!("installed above"));
    assert_eq!(again.status.code(), Some(2));
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("environment `bb` already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    std::fs::write(env.join("marker"), b"old").unwrap_or_else(|e| panic!("{e}"));
    let forced =
        build_busybox(dir.path(), "bb", &["--force"]).unwrap_or_else(|| panic!("installed"));
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(
        !env.join("marker").exists(),
        "the old tree was not replaced"
    );
    assert_eq!(entries(dir.path()), ["bb"]);
}

#[test]
fn squashfs_images_are_listed_by_unsquashfs_and_by_env_list() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(out) = build_busybox(dir.path(), "tiny", &["--squashfs"]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(entries(dir.path()), ["tiny.sfs"]);
    let image = dir.path().join("tiny.sfs");
    let listing = Command::new("unsquashfs")
        .arg("-l")
        .arg(&image)
        .output()
        .unwrap_or_else(|e| panic!("unsquashfs (squashfs-tools) is needed: {e}"));
    let files = text(&listing.stdout);
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    for path in [
        "squashfs-root/bin/busybox",
        "squashfs-root/bin/sh",
        "squashfs-root/etc/passwd",
        "squashfs-root/tmp",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} not in:\n{files}");
    }
    // Next to a directory environment and something that is not one.
    std::fs::create_dir_all(dir.path().join("tree/bin")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("tree/bin/x"), [0u8; 10]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(dir.path().join("not valid")).unwrap_or_else(|e| panic!("{e}"));
    let dir_arg = dir.path().to_str().unwrap_or_default();
    let list = warren(&["env", "list", "--env-dir", dir_arg, "--json"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&list.stdout)));
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        v,
        serde_json::json!({
            "env_dir": dir_arg,
            "environments": [
                {"name": "host", "kind": "host", "path": "/", "size_bytes": null},
                {"name": "tiny", "kind": "squashfs", "path": image, "size_bytes": size},
                {"name": "tree", "kind": "directory", "path": dir.path().join("tree"), "size_bytes": 10},
            ]
        })
    );
    let table = warren(&["env", "list", "--env-dir", dir_arg]);
    let table = text(&table.stdout);
    assert!(table.starts_with("NAME  KIND       SIZE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("tree  directory  10  ")),
        "{table}"
    );
}

#[test]
fn failed_or_refused_builds_leave_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir_arg = dir.path().to_str().unwrap_or_default();
    // Refused before anything is made.
    let out = warren(&["env", "build", "busybox", "../up", "--env-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("environment name `../up`"),
        "{}",
        text(&out.stderr)
    );
    let out = warren(&["env", "build", "busybox", "host", "--env-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    // Fails after its temporary tree exists (a package name debootstrap would be given).
    let out = warren(&[
        "env",
        "build",
        "debian",
        "deb",
        "--packages",
        "python3,Not_A_Package",
        "--env-dir",
        dir_arg,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`Not_A_Package` is not a Debian package name"),
        "{}",
        text(&out.stderr)
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    // A directory given explicitly must exist to be listed.
    let missing = dir.path().join("missing");
    let out = warren(&[
        "env",
        "list",
        "--env-dir",
        missing.to_str().unwrap_or_default(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn worker_takes_env_dir_and_its_old_name() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap_or_default();
    for flag in ["--env-dir", "--environments"] {
        // Checked before anything starts: a directory given must exist.
        let out = warren(&["worker", "--connect", "127.0.0.1:1", flag, missing]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("--env-dir {missing}: not a directory")),
            "{flag}: {stderr}"
        );
    }
}
