//! Cold-start script (not a criterion bench): how long from `wasmeca serve` starting with the six
//! seed plugins to its first answer over `/act`, with an empty compile cache (quick start: Winch's
//! code first, and how long until Cranelift's has replaced it; and with `--no-quick-start`) and
//! with one that `wasmeca compile` filled beforehand (as the image does), each run several times
//! in turn.
//!
//! Run: `cargo bench -p wasmeca --bench cold_start`. Figures go in BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEEDS: [&str; 6] = ["salute", "math", "account", "config", "user", "audit"];
const ROUNDS: usize = 5;

fn wasmeca(cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmeca"));
    command
        .env("WASMECA_CACHE_DIR", cache)
        .env("WASMECA_DATA_URL", "memory://")
        .env("WASMECA_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// POSTs `cmd:salute` to `/act`; true when it answered 200.
fn answered(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let body = r#"{"cmd":"salute"}"#;
    let request = format!(
        "POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut reply = String::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
}

/// Starts a host on `cache` (with `flags`) and answers the time to its first answer, and, with
/// `optimised`, the time until the cache holds Cranelift's code of every seed (quick start
/// compiles it behind the first answers).
fn first_answer(
    seeds: &[PathBuf],
    cache: &Path,
    flags: &[&str],
    optimised: bool,
) -> (Duration, Duration) {
    let port = wasmeca_tests::free_port();
    let started = Instant::now();
    let mut child = wasmeca(cache)
        .arg("serve")
        .args(seeds)
        .args(["--rest", "off", "--http", &format!("127.0.0.1:{port}")])
        .args(flags)
        .spawn()
        .expect("wasmeca serve starts");
    let waited = |what: &str| {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {what} in 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    while !answered(port) {
        waited("answer");
    }
    let took = started.elapsed();
    let artifacts = || {
        std::fs::read_dir(cache).map_or(0, |dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
    };
    while optimised && artifacts() < seeds.len() {
        waited("optimised code");
    }
    let all = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (took, all)
}

fn main() {
    let seeds: Vec<PathBuf> = SEEDS.iter().map(|s| wasmeca_tests::plugin(s)).collect();
    let dir = std::env::temp_dir().join(format!("wasmeca-cold-start-{}", std::process::id()));
    let (empty, filled) = (dir.join("empty"), dir.join("filled"));
    let slow = dir.join("slow");
    let (mut cold, mut behind, mut slow_cold, mut warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(&dir);
        let (first, all) = first_answer(&seeds, &empty, &[], true);
        cold.push(first);
        behind.push(all);
        slow_cold.push(first_answer(&seeds, &slow, &["--no-quick-start"], false).0);
        let compiled = Instant::now();
        let status = wasmeca(&filled)
            .arg("compile")
            .args(&seeds)
            .status()
            .expect("wasmeca compile runs");
        assert!(status.success());
        let compile = compiled.elapsed();
        warm.push(first_answer(&seeds, &filled, &[], false).0);
        let ms = |v: &Vec<Duration>| v.last().map_or(0, Duration::as_millis);
        println!(
            "empty cache {:>5} ms (optimised {:>5} ms) | --no-quick-start {:>5} ms | \
             wasmeca compile {:>5} ms, then {:>4} ms",
            ms(&cold),
            ms(&behind),
            ms(&slow_cold),
            compile.as_millis(),
            ms(&warm)
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_millis()
    };
    println!(
        "median of {ROUNDS}: start to first answer {} ms with an empty compile cache (every seed \
         on optimised code at {} ms), {} ms with --no-quick-start, {} ms after `wasmeca compile`",
        median(&mut cold),
        median(&mut behind),
        median(&mut slow_cold),
        median(&mut warm)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
