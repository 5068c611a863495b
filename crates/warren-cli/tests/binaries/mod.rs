//! The two binaries: `warren` runs the sandbox and client commands itself and hands the others
//! to `warren-service` beside it.

use std::path::PathBuf;
use std::process::Command;

/// A copy of `warren` alone in a directory of its own (hard-linked when the filesystem allows).
fn lone_warren(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lone-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let copy = dir.join("warren");
    let original = env!("CARGO_BIN_EXE_warren");
    if std::fs::hard_link(original, &copy).is_err() {
        std::fs::copy(original, &copy).unwrap_or_else(|e| panic!("copying warren: {e}"));
    }
    copy
}

#[test]
fn service_commands_reach_warren_service_and_a_missing_one_is_named() {
    let beside = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["up", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("starting warren: {e}"));
    let help = String::from_utf8_lossy(&beside.stdout);
    assert!(beside.status.success(), "{beside:?}");
    assert!(help.contains("Usage: warren up"), "{help}");

    let lone = lone_warren("missing-service");
    for args in [
        &["up", "--help"][..],
        &["bench", "matcher"],
        &["env", "list"],
    ] {
        let out = Command::new(&lone)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("starting warren: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("warren-service"), "{args:?}: {err}");
    }
    // What warren runs itself needs nothing beside it.
    let out = Command::new(&lone)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("starting warren: {e}"));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up "));
    let _ = std::fs::remove_dir_all(lone.parent().unwrap_or(&lone));
}
