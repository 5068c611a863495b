//! What a `warren up` process has below it, and what it left behind once gone: its processes,
//! mounts, cgroups and state directories (a runner names its run cgroups and mount points
//! `run-<pid>.<start time>-<sequence>`). [`clean_up`] removes what a process that had to be
//! killed left, so a failing test leaves nothing either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A process's start time (`/proc/PID/stat` field 22), so a recycled pid is not taken for it.
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_string)
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process below `root` now: pid to (start time, command line).
pub fn descendants(root: u32) -> BTreeMap<u32, (String, String)> {
    let parents: BTreeMap<u32, u32> = all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    parents
        .keys()
        .filter(|&&pid| {
            let mut at = pid;
            for _ in 0..64 {
                match parents.get(&at) {
                    Some(&up) if up == root => return true,
                    Some(&up) if up > 1 => at = up,
                    _ => return false,
                }
            }
            false
        })
        .filter_map(|&pid| Some((pid, (start_time(pid)?, cmdline(pid)))))
        .collect()
}

pub fn mount_points() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// Directories named `run-<pid>.…` (what a runner with that pid names its cgroups and mount
/// points) under `dir`, to `depth` levels.
fn named_after(dir: &Path, prefix: &str, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path);
        } else if depth > 1 {
            named_after(&path, prefix, depth - 1, found);
        }
    }
}

/// What a stopped `warren up` (pid `pid`, data in `dir`) left behind: any of the processes it
/// had, any process started from its command line (prepared sandboxes are copies of it), any
/// mount point, cgroup or state directory of its runs.
pub fn leftovers(pid: u32, dir: &Path, had: &BTreeMap<u32, (String, String)>) -> Vec<String> {
    let mut left = Vec::new();
    for (&p, (start, cmd)) in had {
        if start_time(p).as_ref() == Some(start) {
            left.push(format!("process {p} `{cmd}`"));
        }
    }
    let marker = dir.to_string_lossy().into_owned();
    for p in all_pids() {
        let cmd = cmdline(p);
        if cmd.contains(&marker) && !had.contains_key(&p) {
            left.push(format!("process {p} `{cmd}`"));
        }
    }
    let prefix = format!("run-{pid}.");
    for point in mount_points() {
        if point.contains(&format!("/{prefix}")) || point.starts_with(&marker) {
            left.push(format!("mount {point}"));
        }
    }
    let mut dirs = Vec::new();
    named_after(Path::new("/sys/fs/cgroup"), &prefix, 4, &mut dirs);
    named_after(Path::new("/run/warren"), &prefix, 2, &mut dirs);
    left.extend(dirs.iter().map(|d| format!("directory {}", d.display())));
    left
}

/// Stops `child` (a `warren` process) with SIGTERM and waits up to `limit` for it to exit; its
/// status, or `None` when it did not exit in time: then it is killed, and what it left is
/// cleaned up ([`clean_up`]).
pub fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let had = descendants(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    clean_up(pid, &had);
    None
}

/// After `pid` was killed: kills what it had below it (`had`, taken while it ran) and is still
/// there, then unmounts and removes its mount points and removes its run cgroups.
pub fn clean_up(pid: u32, had: &BTreeMap<u32, (String, String)>) {
    for (&p, (start, _)) in had {
        if start_time(p).as_ref() == Some(start) {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .status();
        }
    }
    // A killed run's init takes its namespace down; give the kernel a moment to empty it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && had
            .iter()
            .any(|(&p, (start, _))| start_time(p).as_ref() == Some(start))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let prefix = format!("run-{pid}.");
    let mut dirs = Vec::new();
    named_after(Path::new("/run/warren"), &prefix, 2, &mut dirs);
    for dir in &dirs {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
        let _ = std::fs::remove_dir(dir);
    }
    let mut groups = Vec::new();
    named_after(Path::new("/sys/fs/cgroup"), &prefix, 4, &mut groups);
    for group in &groups {
        let _ = std::fs::remove_dir(group);
    }
}
