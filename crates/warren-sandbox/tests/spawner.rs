//! Runs cloned by a spawner process: the same results, children of the runner, and a spawner
//! that is gone is passed over.

#![allow(clippy::expect_used)] // a failed expectation is the test failing

use std::time::Duration;

use warren_core::limits::Limits;
use warren_core::result::Status;
use warren_sandbox::{AbortHandle, CollectOutput, RunSpec, Spawner};

use crate::util::*;

/// `(ppid, comm)` of a process, from `/proc/PID/stat`.
fn parent_and_name(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let ppid = stat[close + 2..].split(' ').nth(1)?.parse().ok()?;
    Some((ppid, name))
}

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    host_pids()
        .into_iter()
        .filter_map(|pid| {
            let (ppid, name) = parent_and_name(pid)?;
            (ppid == parent).then_some((pid, name))
        })
        .collect()
}

/// The spawner `sandbox_with_spawner` gave the sandbox.
fn spawner_of(sandbox: &warren_sandbox::Sandbox) -> Spawner {
    sandbox
        .config()
        .spawner
        .clone()
        .expect("the helper sets a spawner")
}

#[test]
fn runs_through_a_spawner_give_the_same_results_as_runs_cloned_here() {
    for warm in [true, false] {
        let Some(sb) = sandbox_with_spawner(warm) else {
            return;
        };
        let r = sh(&sb, "echo hello; echo oops >&2; exit 3", Limits::default());
        assert_eq!(
            (r.status, r.exit_code, out(&r).as_str(), r.stderr.as_slice()),
            (Status::Failed, Some(3), "hello\n", b"oops\n".as_slice()),
            "warm {warm}: {r:?}"
        );
        let r = run(
            &sb,
            &with_stdin("while read l; do echo \"$l\"; done", b"a\nb\n"),
        );
        assert_eq!(out(&r), "a\nb\n", "warm {warm}: {r:?}");
        let r = sh(&sb, "kill -9 $$", Limits::default());
        assert_eq!((r.status, r.signal), (Status::Killed, Some(9)), "{r:?}");
        let r = sh(
            &sb,
            "echo Start; sleep 60",
            Limits {
                wall_time: ms(300),
                ..Limits::default()
            },
        );
        assert_eq!((r.status, out(&r).as_str()), (Status::Timeout, "Start\n"));
        let r = run(&sb, &RunSpec::command(["/no/such/program"]));
        assert_eq!(
            (r.status, r.exit_code),
            (Status::Failed, Some(127)),
            "{r:?}"
        );
    }
}

#[test]
fn a_spawned_run_is_a_child_of_the_runner_not_of_the_spawner() {
    let Some(sb) = sandbox_with_spawner(false) else {
        return;
    };
    let spawner = spawner_of(&sb);
    let abort = AbortHandle::new();
    // An argument no other test's run has: other tests of this process may have runs too.
    let marker = "29.75";
    let during = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            sb.run(
                &RunSpec::command(["sleep", marker]),
                &mut CollectOutput,
                Some(&abort),
            )
        });
        // Wait until the run's init is there, then look at who its parent is.
        let me = std::process::id();
        let runs_this = |init: u32| {
            children_of(init)
                .iter()
                .any(|(pid, _)| host_processes_with(marker).contains(pid))
        };
        let mut seen = Vec::new();
        for _ in 0..500 {
            seen = children_of(me)
                .into_iter()
                .filter(|(pid, name)| name == "warren-init" && runs_this(*pid))
                .collect();
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let of_spawner = children_of(spawner.pid());
        abort.abort();
        let result = run.join().expect("the run's thread panicked");
        (seen, of_spawner, result)
    });
    let (inits, of_spawner, result) = during;
    assert_eq!(
        inits.len(),
        1,
        "the run's init among this process's children"
    );
    assert_eq!(of_spawner, Vec::new(), "the spawner has no children");
    let result = result.expect("the run is accepted");
    assert_eq!(result.status, Status::Abort, "{result:?}");
    assert!(spawner.is_alive());
}

#[test]
fn a_killed_spawner_is_passed_over_and_runs_go_on() {
    let Some(sb) = sandbox_with_spawner(false) else {
        return;
    };
    let spawner = spawner_of(&sb);
    assert_eq!(out(&sh(&sb, "echo one", Limits::default())), "one\n");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &spawner.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    for _ in 0..3 {
        let r = sh(&sb, "echo two", Limits::default());
        assert_eq!(
            (r.status, out(&r).as_str()),
            (Status::Success, "two\n"),
            "{r:?}"
        );
    }
    assert!(!spawner.is_alive(), "the dead spawner is noticed");
}

#[test]
fn the_spawner_ends_with_its_last_handle() {
    let Some(sb) = sandbox_with_spawner(true) else {
        return;
    };
    let pid = spawner_of(&sb).pid();
    assert_eq!(out(&sh(&sb, "echo one", Limits::default())), "one\n");
    assert_eq!(
        parent_and_name(pid),
        Some((std::process::id(), "warren-spawner".to_string()))
    );
    drop(sb);
    // Dropping the last handle closes its socket and reaps it.
    assert_eq!(parent_and_name(pid), None, "spawner {pid} is still there");
}

#[test]
fn a_spawner_can_be_started_without_a_sandbox_and_dropped() {
    let spawner = Spawner::start().expect("forking the spawner");
    let pid = spawner.pid();
    assert!(parent_and_name(pid).is_some());
    let copy = spawner.clone();
    drop(spawner);
    assert!(parent_and_name(pid).is_some(), "a clone still holds it");
    drop(copy);
    assert_eq!(parent_and_name(pid), None);
}
