//! A stable-toolchain fuzzer for wasmeca's parsers of outside input (issue 14 item 9): seeded,
//! reproducible cases (structured, then mutated), run on a thread with a worker-sized stack,
//! checked for panics, slow cases and each target's own properties.
//!
//! Case `i` of a run with seed `s` is always the same input, so a failure found in a million
//! cases is replayed with `wasmeca-fuzz --replay <target> --seed <s> --case <i>`.

pub mod inputs;
pub mod targets;

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub use targets::{TARGETS, Target, target};

/// The stack cases run on: tokio's worker threads get 2 MiB, and so does every input here, so
/// input that overflows a worker overflows here too.
pub const STACK: usize = 2 * 1024 * 1024;

/// The input of case `case` of target `t` in a run seeded with `seed`.
pub fn case_input(t: &Target, seed: u64, case: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(mix(seed, case, t.name));
    let mut input = (t.generate)(&mut rng);
    if rng.bool() {
        inputs::mutate(&mut rng, &mut input);
    }
    input
}

/// One 64-bit seed per (run seed, case, target): a SplitMix64 step over the three.
fn mix(seed: u64, case: u64, name: &str) -> u64 {
    let mut z = seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        z = z.rotate_left(5) ^ u64::from(b);
    }
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A case slower than this three times running is a failure (an input that pins a core).
    pub per_case: Duration,
    /// Stop early when the run has taken this long (the smoke test's bound); `None`: run all.
    pub wall: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_case: Duration::from_secs(1),
            wall: None,
        }
    }
}

/// A case that broke a property.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case number (with the seed, it regenerates the input).
    pub case: u64,
    /// The input.
    pub input: Vec<u8>,
    /// What went wrong: the panic message, the broken property, or the time it took.
    pub problem: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "case {}: {}\n  input ({} bytes): {}",
            self.case,
            self.problem,
            self.input.len(),
            show(&self.input)
        )
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The slowest case's time, to see how far from the per-case limit the target is.
    pub slowest: Duration,
    /// The first failure, if any (the run stops there).
    pub failure: Option<Failure>,
}

impl Report {
    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Input bytes as a Rust byte-string literal, so a failure can be pasted into a test.
pub fn show(input: &[u8]) -> String {
    format!("b\"{}\"", input.escape_ascii())
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Runs one case, catching a panic.
pub fn run_case(t: &Target, input: &[u8]) -> Result<Duration, String> {
    let start = Instant::now();
    match catch_unwind(AssertUnwindSafe(|| (t.check)(input))) {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(property)) => Err(property),
        Err(payload) => Err(format!("panicked: {}", panic_text(&*payload))),
    }
}

/// Runs cases `range` of `t` on the calling thread, calling `progress(case)` about once a
/// second; stops at the first failure.
pub fn run_range(
    t: &'static Target,
    seed: u64,
    range: Range<u64>,
    limits: &Limits,
    mut progress: impl FnMut(u64),
) -> Report {
    let start = Instant::now();
    let mut last_progress = start;
    let mut slowest = Duration::ZERO;
    let mut cases = 0;
    let mut failure = None;
    for case in range {
        let input = case_input(t, seed, case);
        let mut outcome = run_case(t, &input);
        // A slow case on a busy machine may only have been descheduled: it fails only if it
        // is slow every time (cases are deterministic, so a real one always is).
        for _ in 0..2 {
            match outcome {
                Ok(took) if took > limits.per_case => outcome = run_case(t, &input),
                _ => break,
            }
        }
        cases += 1;
        let problem = match outcome {
            Ok(took) if took > limits.per_case => Some(format!(
                "took {took:?}, over the {:?} limit for one case",
                limits.per_case
            )),
            Ok(took) => {
                slowest = slowest.max(took);
                None
            }
            Err(problem) => Some(problem),
        };
        if let Some(problem) = problem {
            failure = Some(Failure {
                case,
                input,
                problem,
            });
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(case);
        }
        if limits.wall.is_some_and(|wall| start.elapsed() >= wall) {
            break;
        }
    }
    Report {
        target: t.name,
        cases,
        elapsed: start.elapsed(),
        slowest,
        failure,
    }
}

/// [`run_range`] on a fresh thread with a [`STACK`]-sized stack. A stack overflow still aborts
/// the process (nothing can catch it); the `wasmeca-fuzz` binary runs cases in a child process
/// and narrows such a crash down to its case.
pub fn run_on_worker_stack(
    t: &'static Target,
    seed: u64,
    range: Range<u64>,
    limits: Limits,
    progress: impl FnMut(u64) + Send + 'static,
) -> Report {
    std::thread::Builder::new()
        .name(format!("fuzz-{}", t.name))
        .stack_size(STACK)
        .spawn(move || run_range(t, seed, range, &limits, progress))
        .and_then(|h| {
            h.join()
                .map_err(|_| std::io::Error::other("the fuzz thread panicked outside a case"))
        })
        .unwrap_or_else(|e| Report {
            target: t.name,
            cases: 0,
            elapsed: Duration::ZERO,
            slowest: Duration::ZERO,
            failure: Some(Failure {
                case: 0,
                input: Vec::new(),
                problem: e.to_string(),
            }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_reproducible_and_differ() {
        let t = target("jsonic").expect("a target");
        assert_eq!(case_input(t, 1, 5), case_input(t, 1, 5));
        let distinct: std::collections::HashSet<Vec<u8>> =
            (0..200).map(|i| case_input(t, 1, i)).collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
    }

    #[test]
    fn a_panic_is_a_failure_with_its_input() {
        static PANICS: Target = Target {
            name: "panics",
            about: "panics on `!`",
            generate: |rng| vec![if rng.bool() { b'!' } else { b'.' }],
            check: |data| {
                assert!(data != b"!", "saw a bang");
                Ok(())
            },
        };
        let report = run_range(&PANICS, 3, 0..100, &Limits::default(), |_| {});
        let failure = report.failure.expect("a failure");
        assert!(failure.problem.contains("saw a bang"), "{failure}");
        assert_eq!(case_input(&PANICS, 3, failure.case), failure.input);
    }
}
