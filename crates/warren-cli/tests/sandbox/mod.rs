//! `warren sandbox run|check` as other tools use them: the JSON contract and the exit codes.
//! Needs root (namespaces, cgroups); each test says SKIPPED and returns otherwise.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Whether this runs as root; says SKIPPED otherwise.
pub fn root() -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if euid.as_deref() == Some("0") {
        true
    } else {
        eprintln!("SKIPPED: warren sandbox needs root");
        false
    }
}

fn warren(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = match Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("starting warren: {e}"),
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("waiting for warren: {e}"),
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn json_result_has_the_contract_fields() {
    if !root() {
        return;
    }
    let out = warren(
        &[
            "sandbox",
            "run",
            "--json",
            "--memory",
            "64M",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(code(&out), 3);
    let v = json(&out);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["exit_code"], 3);
    assert!(v["signal"].is_null());
    assert!(v["limit_hit"].is_null());
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    for field in [
        "wall_ms",
        "cpu_user_ms",
        "cpu_sys_ms",
        "peak_memory_bytes",
        "peak_pids",
    ] {
        assert!(v["usage"][field].is_u64(), "usage.{field} in {v}");
    }
    assert!(v["stats"].is_array());
}

#[test]
fn binary_output_is_base64_beside_the_text() {
    if !root() {
        return;
    }
    let out = warren(
        &["sandbox", "run", "--json", "--", "printf", "\\377\\000ok"],
        b"",
    );
    let v = json(&out);
    assert_eq!(v["status"], "success");
    assert_eq!(v["stdout_base64"], "/wBvaw==");
}

#[test]
fn exit_codes_name_the_limit() {
    if !root() {
        return;
    }
    let cases: [(&[&str], i32); 5] = [
        (&["--wall-time", "200ms", "--", "sleep", "5"], 124),
        (
            &[
                "--cpu-time",
                "200ms",
                "--",
                "sh",
                "-c",
                "while :; do :; done",
            ],
            124,
        ),
        (&["--output", "3", "--", "echo", "abcdef"], 122),
        (&["--", "sh", "-c", "kill -9 $$"], 137),
        (&["--", "no-such-program-anywhere"], 127),
    ];
    for (args, expected) in cases {
        let mut all = vec!["sandbox", "run"];
        all.extend_from_slice(args);
        let out = warren(&all, b"");
        assert_eq!(
            code(&out),
            expected,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn output_is_streamed_and_stdin_passed_through() {
    if !root() {
        return;
    }
    let out = warren(
        &[
            "sandbox",
            "run",
            "--",
            "sh",
            "-c",
            "while read x; do echo \"Hello $x!\"; done",
        ],
        b"me\npythia\n",
    );
    assert_eq!(code(&out), 0);
    assert_eq!(out.stdout, b"Hello me!\nHello pythia!\n");
}

#[test]
fn bad_input_is_a_clear_error() {
    if !root() {
        return;
    }
    let out = warren(&["sandbox", "run", "--memory", "0", "--", "true"], b"");
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory"));
    let out = warren(
        &["sandbox", "run", "--root", "/no/such/dir", "--", "true"],
        b"",
    );
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/dir"));
    let out = warren(
        &["sandbox", "run", "--wall-time", "soon", "--", "true"],
        b"",
    );
    assert_eq!(code(&out), 2);
}

#[test]
fn check_reports_the_host() {
    if !root() {
        return;
    }
    let out = warren(&["sandbox", "check"], b"");
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cgroups:") && text.contains("seccomp"),
        "{text}"
    );
}
