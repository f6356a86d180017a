//! A short, bounded run of every fuzz target (issue 14 item 9), so a parser regression that
//! panics, overflows the stack, hangs or breaks a pattern's round trip fails the build. The long
//! runs are `cargo run --release -p wasmeca-fuzz` (BENCHMARKS.md).

use std::time::Duration;

use wasmeca_fuzz::{Limits, TARGETS, run_on_worker_stack, show};

/// Cases per target: enough to reach every generator branch, few enough for a debug build.
const CASES: u64 = 3_000;

/// Each target stops after this long even if it has cases left (about four seconds in all).
const WALL: Duration = Duration::from_millis(700);

#[test]
fn every_target_survives_a_short_run() {
    let mut failures = Vec::new();
    for t in TARGETS {
        // A new seed every day would find new things but make CI flaky; a fixed seed keeps a
        // failure reproducible (`wasmeca-fuzz --replay <target> --seed 2024 --case <i>`).
        let limits = Limits {
            per_case: Duration::from_secs(2),
            wall: Some(WALL),
        };
        let report = run_on_worker_stack(t, 2024, 0..CASES, limits, |_| {});
        eprintln!(
            "{}: {} cases in {:?} ({:.0}/s), slowest {:?}",
            t.name,
            report.cases,
            report.elapsed,
            report.rate(),
            report.slowest
        );
        assert!(
            report.cases >= 100 || report.failure.is_some(),
            "{} ran {} cases",
            t.name,
            report.cases
        );
        if let Some(f) = report.failure {
            failures.push(format!("{}: {f}", t.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The inputs that broke something once, run every time.
#[test]
fn known_bad_inputs_stay_fixed() {
    let cases: &[(&str, &[u8])] = &[
        ("jsonic", b"cmd:\"a b\""),
        ("jsonic", b"a:\"\\ud83d\\ude00\""),
        ("jsonic", b"a:\"\\ud83d\""),
        ("jsonic", b"a:1 /* open"),
        ("jsonic", b"a:[x,y]"),
    ];
    for (name, input) in cases {
        let t = wasmeca_fuzz::target(name).expect("a target");
        if let Err(problem) = wasmeca_fuzz::run_case(t, input) {
            panic!("{name} {}: {problem}", show(input));
        }
    }
}
