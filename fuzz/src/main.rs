//! `wasmeca-fuzz`: runs the fuzz targets for N cases each, every target in a child process so
//! a stack overflow or a hang is caught too, narrowed down to the case that caused it, and
//! printed with its input.
//!
//! ```text
//! wasmeca-fuzz [--cases N] [--seed S] [--per-case-ms MS] [--hang-secs S] [TARGET...]
//! wasmeca-fuzz --list
//! wasmeca-fuzz --replay TARGET --seed S --case I
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmeca_fuzz::{Limits, TARGETS, Target, case_input, run_on_worker_stack, show, target};

/// The command line, parsed by hand (no flags beyond these).
struct Args {
    /// Cases per target.
    cases: u64,
    /// The run's seed.
    seed: u64,
    /// The per-case time limit.
    per_case: Duration,
    /// How long a child may go without a progress line before it counts as hung.
    hang: Duration,
    /// The targets to run (all when none are named).
    targets: Vec<&'static Target>,
    /// `--replay`: the case to regenerate and run.
    replay: Option<u64>,
    /// `--child FROM TO`: run this range and report on stdout (internal).
    child: Option<(u64, u64)>,
    /// `--list`.
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        cases: 1_000_000,
        seed: 14,
        per_case: Duration::from_secs(1),
        hang: Duration::from_secs(30),
        targets: Vec::new(),
        replay: None,
        child: None,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cases" => args.cases = number(it.next(), "--cases")?,
            "--seed" => args.seed = number(it.next(), "--seed")?,
            "--per-case-ms" => {
                args.per_case = Duration::from_millis(number(it.next(), "--per-case-ms")?);
            }
            "--hang-secs" => args.hang = Duration::from_secs(number(it.next(), "--hang-secs")?),
            "--case" => args.replay = Some(number(it.next(), "--case")?),
            "--replay" => {}
            "--child" => {
                let from = number(it.next(), "--child")?;
                let to = number(it.next(), "--child")?;
                args.child = Some((from, to));
            }
            "--list" => args.list = true,
            "-h" | "--help" => {
                return Err("usage: wasmeca-fuzz [--cases N] [--seed S] [--per-case-ms MS] \
                            [--hang-secs S] [TARGET...] | --list | --replay TARGET --seed S --case I"
                    .into());
            }
            name => args
                .targets
                .push(target(name).ok_or_else(|| format!("no target {name:?}; see --list"))?),
        }
    }
    if args.targets.is_empty() {
        args.targets = TARGETS.iter().collect();
    }
    Ok(args)
}

/// How a child run ended.
enum Outcome {
    /// Every case passed.
    Done {
        /// Cases run.
        cases: u64,
        /// Their wall time.
        elapsed: Duration,
        /// The slowest case.
        slowest: Duration,
    },
    /// A case broke a property or panicked.
    Failed {
        /// The case.
        case: u64,
        /// What went wrong.
        problem: String,
    },
    /// The child died (a stack overflow or an abort) or stopped making progress.
    Crashed {
        /// The last case it reported reaching.
        reached: u64,
        /// How it ended.
        how: String,
    },
}

/// Runs cases `from..to` of `t` in a child process.
fn child(args: &Args, t: &Target, from: u64, to: u64) -> Outcome {
    let crashed = |how: String| Outcome::Crashed { reached: from, how };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return crashed(format!("cannot find this program: {e}")),
    };
    let spawned = Command::new(exe)
        .args(["--child", &from.to_string(), &to.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--per-case-ms", &args.per_case.as_millis().to_string()])
        .arg(t.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut process = match spawned {
        Ok(p) => p,
        Err(e) => return crashed(format!("cannot start a child: {e}")),
    };
    let Some(stdout) = process.stdout.take() else {
        return crashed("the child has no stdout".into());
    };
    let (lines, incoming) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut reached = from;
    loop {
        match incoming.recv_timeout(args.hang) {
            Ok(line) => {
                let mut words = line.splitn(4, ' ');
                match (words.next(), words.next(), words.next(), words.next()) {
                    (Some("at"), Some(case), _, _) => reached = case.parse().unwrap_or(reached),
                    (Some("done"), Some(cases), Some(us), Some(slow)) => {
                        let _ = process.wait();
                        return Outcome::Done {
                            cases: cases.parse().unwrap_or(0),
                            elapsed: Duration::from_micros(us.parse().unwrap_or(0)),
                            slowest: Duration::from_micros(slow.parse().unwrap_or(0)),
                        };
                    }
                    (Some("fail"), Some(case), Some(a), b) => {
                        let _ = process.wait();
                        let problem = format!("{a} {}", b.unwrap_or_default());
                        return Outcome::Failed {
                            case: case.parse().unwrap_or(from),
                            problem: problem.trim().to_owned(),
                        };
                    }
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = process.kill();
                let _ = process.wait();
                return Outcome::Crashed {
                    reached,
                    how: format!("no progress for {:?} (a hang)", args.hang),
                };
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.wait().map_or("unknown".into(), |s| s.to_string());
                return Outcome::Crashed {
                    reached,
                    how: format!("the process died ({status}; a stack overflow aborts)"),
                };
            }
        }
    }
}

/// Narrows a crash in `lo..hi` down to one case by running halves in child processes.
fn locate(args: &Args, t: &Target, mut lo: u64, mut hi: u64) -> (u64, String) {
    let mut how = String::from("crashed");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match child(args, t, lo, mid) {
            Outcome::Done { .. } => lo = mid,
            Outcome::Failed { case, problem } => return (case, problem),
            Outcome::Crashed { how: h, .. } => {
                how = h;
                hi = mid;
            }
        }
    }
    (lo, how)
}

/// Supervises one target; true if it passed.
fn supervise(args: &Args, t: &Target) -> bool {
    let started = Instant::now();
    let (case, problem) = match child(args, t, 0, args.cases) {
        Outcome::Done {
            cases,
            elapsed,
            slowest,
        } => {
            println!(
                "{:<9} {cases:>9} cases in {:>6.1} s = {:>8.0}/s, slowest case {:.2} ms: ok",
                t.name,
                elapsed.as_secs_f64(),
                cases as f64 / elapsed.as_secs_f64().max(1e-9),
                slowest.as_secs_f64() * 1000.0
            );
            return true;
        }
        Outcome::Failed { case, problem } => (case, problem),
        Outcome::Crashed { reached, how } => {
            eprintln!("{}: {how} after case {reached}; narrowing it down", t.name);
            locate(args, t, reached, args.cases)
        }
    };
    let input = case_input(t, args.seed, case);
    println!(
        "{}: FAILED after {:.1} s at case {case} (replay: wasmeca-fuzz --replay {} --seed {} --case {case})\n  {problem}\n  input ({} bytes): {}",
        t.name,
        started.elapsed().as_secs_f64(),
        t.name,
        args.seed,
        input.len(),
        show(&input)
    );
    false
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{:<9} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    let limits = Limits {
        per_case: args.per_case,
        wall: None,
    };
    if let Some((from, to)) = args.child {
        let t = args.targets[0];
        let report = run_on_worker_stack(t, args.seed, from..to, limits, |case| {
            println!("at {case}");
        });
        match report.failure {
            None => println!(
                "done {} {} {}",
                report.cases,
                report.elapsed.as_micros(),
                report.slowest.as_micros()
            ),
            Some(f) => println!("fail {} {}", f.case, f.problem.replace('\n', " ")),
        }
        return ExitCode::SUCCESS;
    }
    if let Some(case) = args.replay {
        let t = args.targets[0];
        println!(
            "{} case {case} seed {}: {}",
            t.name,
            args.seed,
            show(&case_input(t, args.seed, case))
        );
        let report = run_on_worker_stack(t, args.seed, case..case + 1, limits, |_| {});
        return match report.failure {
            None => {
                println!("passes");
                ExitCode::SUCCESS
            }
            Some(f) => {
                println!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    println!(
        "wasmeca-fuzz: {} cases per target, seed {}, per-case limit {:?}, {} KiB stack",
        args.cases,
        args.seed,
        args.per_case,
        wasmeca_fuzz::STACK / 1024
    );
    let mut ok = true;
    for t in &args.targets {
        ok &= supervise(&args, t);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
