//! The sandbox against real namespaces and cgroups (as root): a hostile battery, Pythia's
//! cases, and bad input.

mod session;
mod spawner;
mod util;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use warren_core::limits::{LimitKind, Limits};
use warren_core::result::Status;
use warren_sandbox::{
    AbortHandle, CollectOutput, InputFile, Root, RunEvents, RunSpec, Sandbox, SandboxConfig,
    SpecError, Stream,
};

use util::*;

#[test]
fn hello_world_succeeds_with_usage() {
    let Some(sb) = sandbox() else { return };
    let r = sh(&sb, "echo hello; echo oops >&2", Limits::default());
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(out(&r), "hello\n");
    assert_eq!(r.stderr, b"oops\n");
    assert_eq!(r.exit_code, Some(0));
    assert!(r.usage.peak_memory_bytes > 0, "{:?}", r.usage);
    assert_eq!(r.usage.output_bytes, 11);
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let Some(sb) = sandbox() else { return };
    let r = sh(&sb, "exit 3", Limits::default());
    assert_eq!((r.status, r.exit_code), (Status::Failed, Some(3)));
    // The program is not the namespace's init: signals it sends itself act as usual.
    for (script, signal) in [("kill -TERM $$; sleep 1", 15), ("kill -9 $$", 9)] {
        let r = sh(&sb, script, Limits::default());
        assert_eq!(
            (r.status, r.signal, r.exit_code),
            (Status::Killed, Some(signal), None),
            "{script}: {r:?}"
        );
        assert_eq!(r.process_exit_code(), 128 + signal);
    }
    let r = run(
        &sb,
        &RunSpec::command(["python3", "-c", "import os; os.abort()"]),
    );
    assert_eq!(
        (r.status, r.signal),
        (Status::Killed, Some(libc::SIGABRT)),
        "{r:?}"
    );
    let r = sh(&sb, "sh -c 'kill -SEGV $$'; exit $?", Limits::default());
    assert_eq!(
        (r.status, r.exit_code),
        (Status::Failed, Some(128 + 11)),
        "{r:?}"
    );
}

#[test]
fn orphans_are_reaped_while_the_program_runs() {
    let Some(sb) = sandbox() else { return };
    // Ten orphaned children exit at once; none may stay a zombie in the process table.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.1 &) ; done; sleep 0.5; \
                  grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
    let r = sh(&sb, script, Limits::default());
    assert_eq!(out(&r).trim(), "0", "{r:?}");
}

#[test]
fn pythia_timeout_keeps_output_so_far() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        "echo Start; sleep 60",
        Limits {
            wall_time: ms(1000),
            ..Default::default()
        },
    );
    assert_eq!(r.status, Status::Timeout);
    assert_eq!(r.limit_hit, Some(LimitKind::WallTime));
    assert_eq!(out(&r), "Start\n");
    assert!(
        within(1000, 100).contains(&r.usage.wall_ms),
        "wall {}",
        r.usage.wall_ms
    );
}

#[test]
fn pythia_output_limits() {
    let Some(sb) = sandbox() else { return };
    for (limit, status, kept) in [
        (10, Status::Success, "abcde"),
        (5, Status::Success, "abcde"),
        (4, Status::Overflow, "abcd"),
        (3, Status::Overflow, "abc"),
    ] {
        let r = sh(
            &sb,
            "echo -n abcde",
            Limits {
                output: Some(limit),
                ..Default::default()
            },
        );
        assert_eq!(
            (r.status, out(&r).as_str()),
            (status, kept),
            "output limit {limit}"
        );
    }
}

#[test]
fn pythia_line_reading_loop_echoes_stdin() {
    let Some(sb) = sandbox() else { return };
    let r = run(
        &sb,
        &with_stdin(
            r#"while read x; do echo "Hello $x!"; done"#,
            b"me\npythia\n",
        ),
    );
    assert_eq!(r.status, Status::Success);
    assert_eq!(out(&r), "Hello me!\nHello pythia!\n");
}

#[test]
fn large_stdin_is_fed_completely() {
    let Some(sb) = sandbox() else { return };
    let input = vec![b'x'; 1 << 20];
    let r = run(&sb, &with_stdin("wc -c", &input));
    assert_eq!(out(&r).trim(), "1048576");
}

#[test]
fn yes_against_the_output_limit_is_stopped_at_once_with_exactly_the_limit() {
    let Some(sb) = sandbox() else { return };
    let started = Instant::now();
    let r = sh(
        &sb,
        "yes",
        Limits {
            output: Some(100_000),
            ..Default::default()
        },
    );
    assert!(started.elapsed() < Duration::from_secs(slowdown()));
    assert_eq!(r.status, Status::Overflow);
    assert_eq!(r.stdout.len(), 100_000);
    assert!(r.stdout.chunks(2).all(|c| c == b"y\n"));
}

#[test]
fn overflow_is_immediate_even_when_the_program_sleeps() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        "echo abcdefghijklmnop; sleep 20",
        Limits {
            output: Some(5),
            ..Default::default()
        },
    );
    assert_eq!((r.status, out(&r).as_str()), (Status::Overflow, "abcde"));
    assert!(r.usage.wall_ms < 2000 * slowdown());
}

/// Runs `script` against a CPU-time limit and checks it ends by that limit, within `tolerance`.
fn check_cpu_limit(script: &str, limit_ms: u64, tolerance_ms: u64) {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        script,
        Limits {
            cpu_time: ms(limit_ms),
            ..Default::default()
        },
    );
    assert_eq!(
        (r.status, r.limit_hit),
        (Status::Timeout, Some(LimitKind::CpuTime))
    );
    // User and system time are each reported in whole milliseconds, rounded down.
    let cpu = r.usage.cpu_user_ms + r.usage.cpu_sys_ms + 2;
    assert!(
        within(limit_ms, tolerance_ms).contains(&cpu),
        "cpu {cpu} ms (+2) for a {limit_ms} ms limit"
    );
}

#[test]
fn cpu_spin_against_the_cpu_limit() {
    check_cpu_limit("while :; do :; done", 300, 30);
}

#[test]
fn cpu_limit_counts_every_process_of_the_tree() {
    check_cpu_limit(
        "for i in 1 2 3 4; do (while :; do :; done) & done; wait",
        400,
        50,
    );
}

#[test]
fn cpu_spin_against_the_wall_limit() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        "while :; do :; done",
        Limits {
            wall_time: ms(300),
            ..Default::default()
        },
    );
    assert_eq!(
        (r.status, r.limit_hit),
        (Status::Timeout, Some(LimitKind::WallTime))
    );
    assert!(
        within(300, 20).contains(&r.usage.wall_ms),
        "wall {}",
        r.usage.wall_ms
    );
}

#[test]
fn sleep_forever_times_out() {
    let Some(sb) = sandbox() else { return };
    let r = run(&sb, &{
        let mut s = RunSpec::command(["sleep", "infinity"]);
        s.limits.wall_time = ms(200);
        s
    });
    assert_eq!(r.status, Status::Timeout);
}

#[test]
fn memory_hog_is_reported_as_memory_from_the_cgroup() {
    let Some(sb) = sandbox() else { return };
    // 100 MB in a shell variable, against 32 MB.
    let r = sh(
        &sb,
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        Limits {
            memory: Some(32 << 20),
            ..Default::default()
        },
    );
    assert_eq!(
        (r.status, r.limit_hit),
        (Status::Memory, Some(LimitKind::Memory)),
        "{r:?}"
    );
    assert!(r.usage.peak_memory_bytes <= 32 << 20);
}

#[test]
fn full_disk_is_an_error_for_the_writer_only() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        "cat /dev/zero > /tmp/x; echo Done",
        Limits {
            disk: Some(1 << 20),
            ..Default::default()
        },
    );
    assert_eq!(r.status, Status::Success);
    assert_eq!(out(&r), "Done\n");
    assert!(String::from_utf8_lossy(&r.stderr).contains("No space left"));
}

#[test]
fn shell_fork_bomb_is_contained() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        ":(){ :|:& };:",
        Limits {
            pids: Some(64),
            wall_time: ms(1500),
            ..Default::default()
        },
    );
    assert!(
        matches!(r.status, Status::Timeout | Status::Success | Status::Failed),
        "{r:?}"
    );
    assert!(r.usage.peak_pids <= 64, "peak pids {}", r.usage.peak_pids);
    // The host still forks.
    assert!(std::process::Command::new("true")
        .status()
        .is_ok_and(|s| s.success()));
}

#[test]
fn the_process_limit_counts_the_run_s_own_processes_only() {
    let Some(sb) = cold_sandbox() else { return };
    // The shell and its two sleeps: exactly three, so three fit and two do not. The run's init
    // is not one of them.
    let script = "sleep 0.3 & sleep 0.3 & wait; echo done";
    let limits = |pids| Limits {
        pids: Some(pids),
        ..Default::default()
    };
    let fits = sh(&sb, script, limits(3));
    assert_eq!(
        (fits.status, out(&fits).as_str()),
        (Status::Success, "done\n"),
        "{fits:?}"
    );
    assert_eq!(fits.usage.peak_pids, 3, "{fits:?}");
    let short = sh(&sb, script, limits(2));
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("fork"),
        "{short:?}"
    );
    assert_eq!(short.usage.peak_pids, 2, "{short:?}");
}

#[test]
fn no_process_of_the_run_shows_the_host_s_network() {
    let Some(sb) = sandbox() else { return };
    // `/proc/net` is the reader's own namespace's; the init, pid 1, joins the network
    // namespace the run's process makes, and its entries are hidden from the program anyway.
    let r = sh(
        &sb,
        "tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' '; tail -n +3 /proc/net/dev | \
         cut -d: -f1 | tr -d ' '; test -e /proc/1/net; echo $?",
        Limits::default(),
    );
    assert_eq!(out(&r), "lo\nlo\n1\n", "{r:?}");
}

#[test]
fn the_run_s_init_is_outside_the_run_s_cgroups() {
    let Some(sb) = sandbox() else { return };
    // Read from the host while the run sleeps: every group of the sandbox's holds the run's
    // own processes (and the warm pool's prepared ones), never an init.
    let seen = std::thread::scope(|scope| {
        let run = scope.spawn(|| sh(&sb, "sleep 1", Limits::default()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen: Vec<String> = Vec::new();
        while !seen.iter().any(|name| name == "sleep") && Instant::now() < deadline {
            seen = processes_in_run_groups(sb.parent());
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = run
            .join()
            .unwrap_or_else(|_| panic!("the run's thread panicked"));
        assert_eq!(r.status, Status::Success, "{r:?}");
        seen
    });
    assert!(seen.iter().any(|name| name == "sleep"), "{seen:?}");
    assert!(!seen.iter().any(|name| name == "warren-init"), "{seen:?}");
}

/// The names of the processes in the run groups below `parent`, in every hierarchy.
fn processes_in_run_groups(parent: &str) -> Vec<String> {
    let mut names = Vec::new();
    for dir in parent_groups(parent) {
        let Ok(groups) = std::fs::read_dir(&dir) else {
            continue;
        };
        for group in groups.filter_map(Result::ok) {
            if !group.file_name().to_string_lossy().starts_with("run-") {
                continue;
            }
            let procs =
                std::fs::read_to_string(group.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                    names.push(comm.trim_end().to_string());
                }
            }
        }
    }
    names
}

#[test]
fn a_run_that_leaves_its_exiting_init_has_no_groups_left_when_it_returns() {
    let Some(sb) = sandbox_leaving_inits() else {
        return;
    };
    let r = sh(&sb, "echo hi", Limits::default());
    assert_eq!((r.status, out(&r).as_str()), (Status::Success, "hi\n"));
    // At once, not when the sandbox is dropped: the init's exit is not waited for.
    assert_no_leftovers(sb.parent());
    // A run ended by a limit waits for its init: the kernel takes the namespace down then.
    let timed_out = sh(
        &sb,
        "sleep 10",
        Limits {
            wall_time: ms(100),
            ..Default::default()
        },
    );
    assert_eq!(timed_out.status, Status::Timeout, "{timed_out:?}");
    assert_no_leftovers(sb.parent());
}

#[test]
fn c_fork_bomb_is_contained() {
    let Some(sb) = sandbox() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    let source = dir.path().join("bomb.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void){ for(;;) fork(); }\n",
    )
    .ok();
    let compiled = std::process::Command::new("cc")
        .arg("-o")
        .arg(dir.path().join("bomb"))
        .arg(&source)
        .status();
    if !compiled.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: no C compiler (cc) to build the fork bomb");
        return;
    }
    let mut spec = RunSpec::command(["/task/bomb"]);
    spec.task_dir = Some(dir.path().to_path_buf());
    spec.limits = Limits {
        pids: Some(32),
        wall_time: ms(1000),
        ..Default::default()
    };
    let r = run(&sb, &spec);
    assert_eq!(r.status, Status::Timeout, "{r:?}");
    assert!(r.usage.peak_pids <= 32);
}

#[test]
fn loopback_is_private_and_host_listeners_unreachable() {
    let Some(sb) = sandbox() else { return };
    let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
        return;
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    listener.set_nonblocking(true).ok();
    let r = run(
        &sb,
        &RunSpec::command([
            "bash",
            "-c",
            &format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected"),
        ]),
    );
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(!out(&r).contains("connected"));
    assert!(listener.accept().is_err(), "the host listener was reached");
    // Its own loopback works: a server and a client inside the run.
    let r = sh(
        &sb,
        "ip -o link show lo 2>/dev/null || cat /proc/net/dev",
        Limits::default(),
    );
    assert!(out(&r).contains("lo"));
}

#[test]
fn secrets_are_absent_and_root_is_read_only() {
    let Some(sb) = sandbox() else { return };
    for path in ["/root", "/home", "/etc/shadow", "/etc/ssh", "/var"] {
        let r = sh(&sb, &format!("ls {path}"), Limits::default());
        assert_eq!(r.status, Status::Failed, "{path} is visible");
    }
    for target in ["/x", "/usr/x", "/etc/passwd", "/bin/sh", "/task", "/dev/x"] {
        let r = sh(&sb, &format!("echo x > {target}"), Limits::default());
        assert_eq!(r.status, Status::Failed, "{target} is writable");
    }
    // The minimal /dev: its five devices work, and nothing else is there.
    let r = sh(
        &sb,
        "echo gone > /dev/null && head -c 3 /dev/zero | od -An -tx1 && \
         head -c 8 /dev/urandom | wc -c && head -c 8 /dev/random | wc -c && \
         ! echo x > /dev/full && ls /dev | tr '\\n' ' '",
        Limits::default(),
    );
    assert_eq!(
        out(&r),
        " 00 00 00\n8\n8\nfd full null random shm stderr stdin stdout urandom zero ",
        "{r:?}"
    );
    let r = sh(
        &sb,
        "echo x > /tmp/ok && cat /tmp/ok && pwd",
        Limits::default(),
    );
    assert_eq!(out(&r), "x\n/tmp\n");
}

#[test]
fn kill_all_inside_reaches_only_the_run() {
    let Some(sb) = sandbox() else { return };
    let Ok(mut host) = std::process::Command::new("sleep").arg("30").spawn() else {
        return;
    };
    let r = sh(
        &sb,
        "sleep 5 & kill -9 -1; wait; echo survived",
        Limits {
            wall_time: ms(3000),
            ..Default::default()
        },
    );
    assert_eq!(out(&r), "survived\n");
    assert!(
        r.usage.wall_ms < 2000 * slowdown(),
        "the inner sleep was not killed"
    );
    assert!(
        host.try_wait().is_ok_and(|s| s.is_none()),
        "a host process was killed"
    );
    let _ = host.kill();
    let _ = host.wait();
}

#[test]
fn daemons_that_double_fork_are_gone_at_the_end() {
    let Some(sb) = sandbox() else { return };
    let marker = format!("warren-daemon-marker-{}", std::process::id());
    let r = sh(
        &sb,
        &format!(
            "setsid sh -c 'sleep 1000; : {marker}' > /dev/null 2>&1 < /dev/null & echo started"
        ),
        Limits::default(),
    );
    assert_eq!(out(&r), "started\n");
    assert_eq!(host_processes_with(&marker), Vec::<u32>::new());
}

#[test]
fn mount_ptrace_and_namespaces_are_denied() {
    let Some(sb) = sandbox() else { return };
    let r = sh(&sb, "mount -t tmpfs none /tmp 2>&1", Limits::default());
    assert_ne!(r.status, Status::Success);
    let r = sh(&sb, "unshare -n true 2>&1", Limits::default());
    assert_ne!(r.status, Status::Success, "{}", out(&r));
    let r = run(&sb, &RunSpec::command(["python3", "-c", "import ctypes,sys; libc=ctypes.CDLL(None,use_errno=True); r=libc.ptrace(0,0,0,0); print(r, ctypes.get_errno())"]));
    if r.status == Status::Success {
        assert_eq!(out(&r).trim(), format!("-1 {}", libc::EPERM));
    }
    // clone3's flags cannot be inspected by a filter: it is refused as missing (ENOSYS), so C
    // libraries fall back to clone, whose flags are checked.
    let r = run(&sb, &RunSpec::command(["python3", "-c", "import ctypes; libc=ctypes.CDLL(None,use_errno=True); r=libc.syscall(435,0,0); print(r, ctypes.get_errno())"]));
    if r.status == Status::Success {
        assert_eq!(out(&r).trim(), format!("-1 {}", libc::ENOSYS));
    }
    // Threads (clone without namespace flags) still work.
    let r = run(&sb, &RunSpec::command(["python3", "-c", "import threading; t=threading.Thread(target=print, args=('thread',)); t.start(); t.join()"]));
    assert_eq!(out(&r), "thread\n", "{r:?}");
}

#[test]
fn proc_shows_only_the_run() {
    let Some(sb) = sandbox() else { return };
    // The shell (2), which expands the glob itself: nothing of the host's, and not the run's
    // init (1, another uid's, hidden).
    let r = sh(&sb, "cd /proc && echo [0-9]*", Limits::default());
    let pids: Vec<u32> = out(&r)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids, [2], "{}", out(&r));
    let r = sh(
        &sb,
        "cat /proc/1/cmdline /proc/1/cgroup; echo $?",
        Limits::default(),
    );
    assert_eq!(out(&r), "1\n", "the init's entries are not there: {r:?}");
}

#[test]
fn identity_is_unprivileged_with_no_capabilities() {
    let Some(sb) = sandbox() else { return };
    let r = sh(
        &sb,
        "id -u; grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; hostname",
        Limits::default(),
    );
    let text = out(&r);
    let uid: u32 = text
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(uid >= 1000, "uid {uid}");
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    assert!(text.ends_with("warren\n"));
}

#[test]
fn concurrent_runs_do_not_interfere() {
    let Some(sb) = sandbox() else { return };
    let results: Vec<(usize, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let sb = &sb;
                scope.spawn(move || {
                    let spec = RunSpec::command([
                        "sh",
                        "-c",
                        &format!("echo {i}; sleep 0.3; id -u; kill -9 -1"),
                    ]);
                    let r = sb.run(&spec, &mut CollectOutput, None);
                    (
                        i,
                        r.map(|r| format!("{}{:?} {:?}", out(&r), r.status, r.message))
                            .unwrap_or_else(|e| e.to_string()),
                    )
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    assert_eq!(results.len(), 20);
    let mut uids = std::collections::HashSet::new();
    for (i, text) in results {
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(i.to_string().as_str()),
            "run {i}: {text}"
        );
        assert!(
            uids.insert(lines.next().unwrap_or_default().to_string()),
            "uid shared"
        );
    }
}

struct Recorder {
    chunks: Vec<(Stream, Vec<u8>, Instant)>,
    samples: usize,
}

impl RunEvents for Recorder {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        self.chunks.push((stream, data.to_vec(), Instant::now()));
    }
    fn stats(&mut self, _sample: &warren_core::stats::StatSample) {
        self.samples += 1;
    }
}

#[test]
fn output_is_streamed_while_the_run_goes_on() {
    let Some(sb) = sandbox() else { return };
    let spec = RunSpec::command([
        "sh",
        "-c",
        "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three",
    ]);
    let mut rec = Recorder {
        chunks: Vec::new(),
        samples: 0,
    };
    let started = Instant::now();
    let r = sb.run(&spec, &mut rec, None).ok();
    assert_eq!(r.map(|r| r.status), Some(Status::Success));
    let texts: Vec<(Stream, &[u8])> = rec
        .chunks
        .iter()
        .map(|(s, d, _)| (*s, d.as_slice()))
        .collect();
    assert_eq!(
        texts,
        [
            (Stream::Stdout, &b"one\n"[..]),
            (Stream::Stderr, b"two\n"),
            (Stream::Stdout, b"three\n")
        ]
    );
    assert!(
        rec.chunks[0].2 - started < Duration::from_millis(200 * slowdown()),
        "first chunk was not live"
    );
    assert!(rec.samples >= 3, "{} statistics samples", rec.samples);
}

#[test]
fn statistics_are_decimated_to_the_bound() {
    let Some(sb) = sandbox() else { return };
    let r = sh(&sb, "sleep 1", Limits::default());
    assert!(!r.stats.is_empty() && r.stats.len() <= 100);
    assert!(r.stats.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
}

/// Aborts the run as soon as its first output arrives, and remembers when.
struct AbortOnOutput {
    handle: AbortHandle,
    aborted_at: Option<Instant>,
}

impl RunEvents for AbortOnOutput {
    fn output(&mut self, _stream: Stream, _data: &[u8]) {
        if self.aborted_at.is_none() {
            self.handle.abort();
            self.aborted_at = Some(Instant::now());
        }
    }
}

#[test]
fn abort_ends_the_run_at_once_with_output_so_far() {
    let Some(sb) = sandbox() else { return };
    let handle = AbortHandle::new();
    let spec = RunSpec::command(["sh", "-c", "echo Start; sleep 60"]);
    let mut events = AbortOnOutput {
        handle: handle.clone(),
        aborted_at: None,
    };
    let r = sb.run(&spec, &mut events, Some(&handle)).ok();
    let ended = Instant::now();
    assert_eq!(r.as_ref().map(|r| r.status), Some(Status::Abort));
    assert_eq!(r.map(|r| r.stdout), Some(b"Start\n".to_vec()));
    let aborted_at = events.aborted_at.unwrap_or(ended);
    assert!(
        ended - aborted_at < Duration::from_millis(100 * slowdown()),
        "abort took {:?}",
        ended - aborted_at
    );
}

#[test]
fn abort_from_another_thread() {
    let Some(sb) = sandbox() else { return };
    let abort = AbortHandle::new();
    let spec = RunSpec::command(["sleep", "60"]);
    let r = std::thread::scope(|scope| {
        let trigger = abort.clone();
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            trigger.abort();
        });
        sb.run(&spec, &mut CollectOutput, Some(&abort)).ok()
    });
    assert_eq!(r.map(|r| r.status), Some(Status::Abort));
}

#[test]
fn input_files_and_task_dir_are_in_place() {
    let Some(sb) = sandbox() else { return };
    let Ok(task) = tempfile::tempdir() else {
        return;
    };
    std::fs::write(task.path().join("check.sh"), "echo checked").ok();
    let mut spec = RunSpec::command([
        "sh",
        "-c",
        "cat data/in.txt; ./run.sh; sh /task/check.sh; echo no > /task/x",
    ]);
    spec.files = vec![
        InputFile {
            path: "data/in.txt".into(),
            contents: b"input\n".to_vec(),
            executable: false,
        },
        InputFile {
            path: "run.sh".into(),
            contents: b"#!/bin/sh\necho script\n".to_vec(),
            executable: true,
        },
    ];
    spec.task_dir = Some(task.path().to_path_buf());
    let r = run(&sb, &spec);
    assert_eq!(out(&r), "input\nscript\nchecked\n");
    assert_eq!(r.status, Status::Failed, "/task must be read-only");
}

#[test]
fn a_directory_tree_can_be_the_root() {
    let Some(sb) = sandbox() else { return };
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    // A tiny tree of its own: the host's sh and cat with the libraries `ldd` names, copied.
    for program in ["/bin/sh", "/bin/cat"] {
        let Ok(ldd) = std::process::Command::new("ldd").arg(program).output() else {
            eprintln!("SKIPPED: no ldd to build a root tree");
            return;
        };
        let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
        let libraries = text
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_string);
        for file in libraries.chain([program.to_string()]) {
            let target = root.path().join(file.trim_start_matches('/'));
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            std::fs::copy(&file, &target).ok();
        }
    }
    std::fs::write(root.path().join("marker"), "in the tree\n").ok();
    let mut spec = RunSpec::command([
        "/bin/sh",
        "-c",
        "cat /marker; echo $PWD; cat /etc/hostname || echo no-etc",
    ]);
    spec.root = Root::Dir(root.path().to_path_buf());
    let r = run(&sb, &spec);
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(out(&r), "in the tree\n/tmp\nno-etc\n");
    // The tree is read-only inside the run.
    spec.argv = ["/bin/sh", "-c", "echo x > /marker"]
        .map(Into::into)
        .to_vec();
    assert_eq!(run(&sb, &spec).status, Status::Failed);
    assert_eq!(
        std::fs::read_to_string(root.path().join("marker"))
            .ok()
            .as_deref(),
        Some("in the tree\n")
    );
}

#[test]
fn a_program_that_does_not_exist_fails_like_a_shell() {
    let Some(sb) = sandbox() else { return };
    let r = run(&sb, &RunSpec::command(["no-such-program-here"]));
    assert_eq!((r.status, r.exit_code), (Status::Failed, Some(127)));
    assert!(r.message.unwrap_or_default().contains("not found"));
    let r = run(&sb, &RunSpec::command(["/etc/passwd"]));
    assert_eq!(
        (r.status, r.exit_code),
        (Status::Failed, Some(126)),
        "{r:?}"
    );
}

#[test]
fn bad_specs_are_clear_errors() {
    let Some(sb) = sandbox() else { return };
    let err = |spec: RunSpec| {
        sb.run(&spec, &mut CollectOutput, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(err(RunSpec::default()), SpecError::EmptyCommand.to_string());
    let mut spec = RunSpec::command(["true"]);
    spec.limits.memory = Some(0);
    assert!(err(spec).contains("memory"));
    let mut spec = RunSpec::command(["true"]);
    spec.limits.wall_time = Some(Duration::ZERO);
    assert!(err(spec).contains("wall_time"));
    let mut spec = RunSpec::command(["true"]);
    spec.root = Root::Dir("/no/such/root".into());
    assert!(err(spec).contains("/no/such/root"));
    let mut spec = RunSpec::command(["true"]);
    spec.files = vec![InputFile {
        path: "../escape".into(),
        contents: Vec::new(),
        executable: false,
    }];
    assert!(err(spec).contains("../escape"));
}

#[test]
fn leftovers_of_a_crashed_runner_are_reclaimed() {
    let Some(first) = cold_sandbox() else { return };
    // v1 parents are made by a runner's first run.
    assert_eq!(
        sh(&first, "true", Limits::default()).status,
        Status::Success
    );
    let parent = first.config().cgroup_parent.clone();
    // Wherever the first sandbox made its parent group (v1 hierarchies, the cgroup2 tree).
    let made = plant_stale_groups(&parent, "run-999999999.1-0");
    assert!(!made.is_empty());
    let second = cold_sandbox();
    for dir in &made {
        assert!(!dir.exists(), "{} was not reclaimed", dir.display());
    }
    drop(second);
    drop(first);
}

#[test]
fn parent_groups_go_with_the_last_runner() {
    let parent = format!("warren-test-parents-{}", std::process::id());
    let config = SandboxConfig {
        cgroup_parent: parent.clone(),
        warm_runs: 0,
        ..SandboxConfig::default()
    };
    let sb = match Sandbox::new(config) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let r = sh(&sb, "true", Limits::default());
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert!(
        !parent_groups(&parent).is_empty(),
        "the run made its parents"
    );
    drop(sb);
    assert_no_leftovers(&parent);
    let left = parent_groups(&parent);
    for dir in &left {
        let _ = std::fs::remove_dir(dir);
    }
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
}

/// Makes a group named like a dead runner's under every parent group `parent` has.
fn plant_stale_groups(parent: &str, stale: &str) -> Vec<std::path::PathBuf> {
    parent_groups(parent)
        .into_iter()
        .map(|p| p.join(stale))
        .filter(|dir| std::fs::create_dir(dir).is_ok())
        .collect()
}

#[test]
fn a_new_runner_reclaims_a_dead_runner_s_groups_beside_others() {
    let Some(first) = cold_sandbox() else { return };
    // A run makes the parent groups; below them, then, a dead runner's group and one that is
    // no run's (not a runner's name, so never reclaimed): the parents are read, not told
    // empty by their link count, and only the dead runner's group goes.
    assert_eq!(
        sh(&first, "true", Limits::default()).status,
        Status::Success
    );
    let parent = first.config().cgroup_parent.clone();
    let made = plant_stale_groups(&parent, "run-999999998.1-0");
    assert!(!made.is_empty());
    let kept = plant_stale_groups(&parent, "someone-elses");
    let Ok(second) = warren_sandbox::Sandbox::new(warren_sandbox::SandboxConfig {
        cgroup_parent: parent.clone(),
        warm_runs: 0,
        ..Default::default()
    }) else {
        return;
    };
    for dir in &made {
        assert!(!dir.exists(), "{} was not reclaimed", dir.display());
    }
    for dir in &kept {
        assert!(dir.exists(), "{} was removed", dir.display());
        let _ = std::fs::remove_dir(dir);
    }
    let r = sh(&second, "true", Limits::default());
    assert_eq!(r.status, Status::Success, "{r:?}");
    drop(second);
    drop(first);
}

#[test]
fn the_quick_cgroup_mount_lookup_agrees_with_mountinfo_here() {
    // This host and the cgroup v2 VM mount their hierarchies in the usual places.
    let root = std::path::Path::new("/sys/fs/cgroup");
    let (Ok(quick), Ok(reference)) = (
        warren_sandbox::cgroup::find_usual_mounts(root),
        warren_sandbox::cgroup::mounts_from_mountinfo(root),
    ) else {
        panic!("reading /proc/self");
    };
    assert_eq!(quick, Some(reference));
}

#[test]
fn sandbox_check_names_the_layout() {
    let Some(sb) = sandbox() else { return };
    let text = sb.report().to_string();
    assert!(text.contains("cgroups:"), "{text}");
    let mut buf = String::new();
    let _ =
        std::fs::File::open("/proc/self/mountinfo").and_then(|mut f| f.read_to_string(&mut buf));
    if buf.contains(" - cgroup2 ") && buf.contains(" - cgroup ") {
        assert!(text.contains("hybrid"), "{text}");
    }
}

#[test]
fn runs_prepared_on_demand_behave_like_warm_ones() {
    let Some(sb) = cold_sandbox() else { return };
    let r = sh(
        &sb,
        "echo -n abcde",
        Limits {
            output: Some(4),
            ..Default::default()
        },
    );
    assert_eq!((r.status, out(&r).as_str()), (Status::Overflow, "abcd"));
    let r = run(
        &sb,
        &with_stdin(
            r#"while read x; do echo "Hello $x!"; done"#,
            b"me\npythia\n",
        ),
    );
    assert_eq!(out(&r), "Hello me!\nHello pythia!\n");
    let r = sh(
        &sb,
        "echo Start; sleep 60",
        Limits {
            wall_time: ms(1000 * slowdown()),
            ..Default::default()
        },
    );
    assert_eq!((r.status, out(&r).as_str()), (Status::Timeout, "Start\n"));
    let r = run(&sb, &RunSpec::command(["/etc/passwd"]));
    assert_eq!((r.status, r.exit_code), (Status::Failed, Some(126)));
}

#[test]
fn warm_runs_are_fresh_each_time() {
    let Some(sb) = sandbox() else { return };
    // Files, processes and uids of one run are never seen by the next, even from the pool.
    let first = sh(
        &sb,
        "echo secret > /tmp/left; sleep 30 & id -u",
        Limits::default(),
    );
    let second = sh(
        &sb,
        "cat /tmp/left 2>/dev/null; ps -e -o comm= 2>/dev/null | grep -c sleep; id -u",
        Limits::default(),
    );
    let text = out(&second);
    assert!(!text.contains("secret"), "{text}");
    assert!(text.starts_with("0\n"), "{text}");
    assert_ne!(
        out(&first).trim(),
        text.lines().last().unwrap_or_default(),
        "uid reused while the first run's processes could live"
    );
}

#[test]
fn tmp_has_the_disk_size_whether_warm_or_not() {
    let Some(sb) = sandbox() else { return };
    // What /tmp has free is the disk limit (the root's own files live in the same tmpfs).
    let free_kib = |r: &warren_sandbox::RunResult| out(r).trim().parse::<u64>().unwrap_or(0);
    let free = "df -k /tmp | tail -n 1 | awk '{print $4}'";
    // The default disk size comes from the warm pool, another size is prepared on demand.
    let r = sh(&sb, free, Limits::default());
    assert_eq!(free_kib(&r), 64 * 1024, "{r:?}");
    let r = sh(
        &sb,
        free,
        Limits {
            disk: Some(2 << 20),
            ..Default::default()
        },
    );
    assert_eq!(free_kib(&r), 2 * 1024, "{r:?}");
    // The smallest disk limit, one page: the run starts, and one page is all it can write.
    let r = sh(
        &sb,
        "head -c 4096 /dev/zero > /tmp/a && echo one; head -c 1 /dev/zero > /tmp/b || echo full",
        Limits {
            disk: Some(4096),
            ..Default::default()
        },
    );
    assert_eq!(out(&r), "one\nfull\n", "{r:?}");
}

#[test]
fn two_sandboxes_in_one_process_never_share_a_group() {
    // Both use one parent cgroup and the same runner id in their group names.
    let parent = format!("warren-test-shared-{}", std::process::id());
    let config = || warren_sandbox::SandboxConfig {
        cgroup_parent: parent.clone(),
        ..Default::default()
    };
    let (Ok(first), Ok(second)) = (
        warren_sandbox::Sandbox::new(config()),
        warren_sandbox::Sandbox::new(config()),
    ) else {
        eprintln!("SKIPPED: the sandbox is not usable here");
        return;
    };
    // Each keeps two runs prepared: four groups, none shared.
    for sb in [&first, &second] {
        assert!(sb.wait_until_warm(Duration::from_secs(10 * slowdown())));
    }
    let groups = parent_groups(&parent)
        .into_iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(groups, 4, "prepared runs share cgroups");
    std::thread::scope(|scope| {
        for sb in [&first, &second] {
            scope.spawn(move || {
                for _ in 0..10 {
                    let r = sb
                        .run(&RunSpec::command(["true"]), &mut CollectOutput, None)
                        .ok();
                    assert_eq!(r.as_ref().map(|r| r.status), Some(Status::Success), "{r:?}");
                }
            });
        }
    });
    drop((first, second));
    assert_no_leftovers(&parent);
}

/// A regular file of 4 MiB or more under `/usr/lib` on a block device, and that device's
/// `MAJ:MIN` (reads of it can be limited only when it is on one).
fn file_on_a_disk() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .or_else(|_| std::fs::read_dir("/usr/lib"))
        .ok()?;
    let file = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() >= 4 << 20))?;
    let dev = std::fs::metadata(&file).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::path::Path::new(&format!("/sys/dev/block/{major}:{minor}"))
        .exists()
        .then_some(file)
}

#[test]
fn io_limit_slows_reads_of_the_disk_to_its_bandwidth() {
    let Some(sb) = cold_sandbox() else { return };
    let Some(file) = file_on_a_disk() else {
        eprintln!("SKIPPED: no large file under /usr/lib on a block device here");
        return;
    };
    // 2 MiB read past the page cache, at 512 KiB per second: about 4 s, against a fraction
    // of a second unlimited.
    let script = format!(
        "dd if={} of=/dev/null bs=256k count=8 iflag=direct 2>&1",
        file.display()
    );
    let free = sh(&sb, &script, Limits::default());
    assert_eq!(free.status, Status::Success, "{}", out(&free));
    let limited = sh(
        &sb,
        &script,
        Limits {
            io: Some(512 << 10),
            ..Default::default()
        },
    );
    assert_eq!(limited.status, Status::Success, "{}", out(&limited));
    assert!(
        limited.usage.wall_ms >= 2500,
        "2 MiB at 512K/s took {} ms (unlimited: {} ms)",
        limited.usage.wall_ms,
        free.usage.wall_ms
    );
    assert!(
        free.usage.wall_ms * 2 < limited.usage.wall_ms,
        "unlimited {} ms, limited {} ms",
        free.usage.wall_ms,
        limited.usage.wall_ms
    );
    // Out of range: named.
    let err = match sb.run(
        &{
            let mut spec = warren_sandbox::RunSpec::command(["true"]);
            spec.limits.io = Some(1);
            spec
        },
        &mut warren_sandbox::CollectOutput,
        None,
    ) {
        Ok(r) => panic!("an io limit of 1 byte/s was accepted: {r:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("io"), "{err}");
}
