//! Environment discovery over real directories and files: what a worker lists, advertises and
//! resolves.

use std::path::Path;

use tokio::net::TcpListener;
use warren_proto::Message;
use warren_worker::environments::{
    advertised, list, resolve, scan, EnvError, Environment, EnvironmentKind,
};
use warren_worker::{InstantExecutorForBenchmarks, Worker};

fn write(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
}

/// An environments directory with one of each kind of entry (and the directory its symlinked
/// environment points to).
fn populated() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A tree: 100 + 20 bytes of regular files; the symlink is not followed (or counted).
    write(&d.join("busybox/bin/busybox"), 100);
    write(&d.join("busybox/etc/passwd"), 20);
    std::os::unix::fs::symlink("/usr/bin", d.join("busybox/usr")).unwrap();
    std::os::unix::fs::symlink("busybox", d.join("busybox/bin/sh")).unwrap();
    // An image.
    write(&d.join("debian.sfs"), 4096);
    // A directory and an image of the same name: the directory is used.
    write(&d.join("both/f"), 1);
    write(&d.join("both.sfs"), 7);
    // A symlink to a tree elsewhere is an environment.
    let elsewhere = tempfile::tempdir().unwrap();
    write(&elsewhere.path().join("f"), 3);
    std::os::unix::fs::symlink(elsewhere.path(), d.join("linked")).unwrap();
    // Skipped: invalid names, a build in progress, files that are not images, `host`.
    std::fs::create_dir(d.join("bad name")).unwrap();
    std::fs::create_dir(d.join("dir.sfs")).unwrap();
    write(&d.join("-x.sfs"), 1);
    std::fs::create_dir(d.join(".busybox.build-42")).unwrap();
    write(&d.join("notes.txt"), 5);
    std::fs::create_dir(d.join("host")).unwrap();
    (dir, elsewhere)
}

#[test]
fn scan_lists_trees_and_images_with_sizes() {
    let (dir, _elsewhere) = populated();
    let d = dir.path();
    let found = scan(d).unwrap();
    let summary: Vec<(&str, EnvironmentKind, Option<u64>)> = found
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.size_bytes))
        .collect();
    assert_eq!(
        summary,
        [
            ("both", EnvironmentKind::Directory, Some(1)),
            ("busybox", EnvironmentKind::Directory, Some(120)),
            ("debian", EnvironmentKind::Squashfs, Some(4096)),
            ("linked", EnvironmentKind::Directory, Some(3)),
        ]
    );
    assert_eq!(found[2].path, d.join("debian.sfs"));
    let all = list(Some(d)).unwrap();
    assert_eq!(all[0], Environment::host());
    assert_eq!(all.len(), 5);
    assert_eq!(list(None).unwrap(), [Environment::host()]);
    assert_eq!(
        advertised(Some(d)),
        ["host", "both", "busybox", "debian", "linked"]
    );
    assert_eq!(advertised(Some(&d.join("missing"))), ["host"]);
    assert_eq!(advertised(None), ["host"]);
    assert!(matches!(scan(&d.join("missing")), Err(EnvError::Io { .. })));
}

#[test]
fn resolve_finds_one_or_names_what_is_missing() {
    let (dir, _elsewhere) = populated();
    let d = dir.path();
    for (name, want) in [
        ("host", Ok((EnvironmentKind::Host, "/".into(), None))),
        (
            "busybox",
            Ok((EnvironmentKind::Directory, d.join("busybox"), None)),
        ),
        (
            "debian",
            Ok((EnvironmentKind::Squashfs, d.join("debian.sfs"), Some(4096))),
        ),
        (
            "both",
            Ok((EnvironmentKind::Directory, d.join("both"), None)),
        ),
        ("alpine", Err("no environment `alpine`")),
        ("notes.txt", Err("no environment `notes.txt`")),
        ("../etc", Err("environment name `../etc`")),
        ("", Err("is empty")),
        ("dir.sfs", Err("must not end in `.sfs`")),
    ] {
        let got = resolve(d, name);
        match (got, want) {
            (Ok(env), Ok((kind, path, size))) => {
                assert_eq!(
                    (env.name.as_str(), env.kind, env.path, env.size_bytes),
                    (name, kind, path, size)
                );
            }
            (Err(e), Err(text)) => {
                let message = e.to_string();
                assert!(message.contains(text), "{name}: {message}");
                if matches!(e, EnvError::NotFound { .. }) {
                    assert!(message.contains(&d.display().to_string()), "{message}");
                    assert!(
                        message.contains("host, both, busybox, debian, linked"),
                        "{message}"
                    );
                }
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
    let missing = d.join("missing");
    let e = resolve(&missing, "busybox").unwrap_err().to_string();
    assert!(
        e.contains("busybox") && e.contains("missing") && e.contains("offers: host"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_advertises_host_images_and_trees() {
    let (dir, _elsewhere) = populated();
    let state = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = warren_worker::Config::new(
        listener.local_addr().unwrap().to_string(),
        state.path().to_path_buf(),
    );
    config.environments_dir = Some(dir.path().to_path_buf());
    let worker = Worker::new(config, std::sync::Arc::new(InstantExecutorForBenchmarks)).unwrap();
    let handle = tokio::spawn(worker.run());
    let (mut reader, _writer) = super::accept(&listener).await;
    match super::recv(&mut reader).await {
        Some(Message::Register(register)) => assert_eq!(
            register.environments,
            ["host", "both", "busybox", "debian", "linked"]
        ),
        other => panic!("{other:?}"),
    }
    handle.abort();
}
