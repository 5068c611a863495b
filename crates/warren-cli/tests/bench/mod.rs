//! `warren bench matcher` for real, small: the report's tables, and the matcher agreeing with the
//! baseline scan on every freed slot it checks.

use std::process::{Command, Output};

fn warren(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting warren: {e}"))
}

#[test]
fn bench_matcher_reports_decisions_that_agree_with_the_baseline() {
    let out = warren(&[
        "bench",
        "matcher",
        "--tasks",
        "3000",
        "--workers",
        "60",
        "--decisions",
        "100",
        "--seed",
        "3",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    for needle in [
        "| a slot frees on a busy worker: which task starts there | 100 |",
        "| decision | p50 ms | p99 ms | max ms | p99 / 1 ms |",
        "A task started on the freed slot in 100 of 100 decisions",
        "the baseline scan chose the same task in 10 of 10",
        "The free on-call worker was chosen in 100 of 100",
    ] {
        assert!(report.contains(needle), "{needle}: {report}");
    }
}

#[test]
fn bench_matcher_refuses_too_few_workers() {
    let out = warren(&["bench", "matcher", "--workers", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
}
