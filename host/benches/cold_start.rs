//! Cold-start script (not a criterion bench): how long from `wasmeca serve` starting with the six
//! seed plugins to its first answer over `/act`, with an empty compile cache (quick start: Winch's
//! code first, and how long until Cranelift's has replaced it; and with `--no-quick-start`) and
//! with one that `wasmeca compile` filled beforehand (as the image does), each run several times
//! in turn; and the memory the host holds 2 s after its plugins are on optimised code.
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

/// What one start measured.
struct Started {
    /// From the start to the first answer.
    first: Duration,
    /// From the start until the cache holds Cranelift's code of every seed (quick start
    /// compiles it behind the first answers), when asked for.
    optimised: Duration,
    /// The host's memory (Rss less LazyFree) 2 s after that, in MB.
    held_mb: f64,
}

/// Starts a host on `cache` (with `flags`) and measures it; `optimised` names Cranelift's
/// artifacts (their file names end so), to wait for all of them.
fn first_answer(
    seeds: &[PathBuf],
    cache: &Path,
    flags: &[&str],
    optimised: Option<&str>,
) -> Started {
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
    let artifacts = |ending: &str| {
        std::fs::read_dir(cache).map_or(0, |dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(ending))
                .count()
        })
    };
    if let Some(ending) = optimised {
        while artifacts(ending) < seeds.len() {
            waited("optimised code");
        }
    }
    let all = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let held_mb = wasmeca_tests::held(child.id()) as f64 / 1e6;
    let _ = child.kill();
    let _ = child.wait();
    Started {
        first: took,
        optimised: all,
        held_mb,
    }
}

fn main() {
    let seeds: Vec<PathBuf> = SEEDS.iter().map(|s| wasmeca_tests::plugin(s)).collect();
    let dir = std::env::temp_dir().join(format!("wasmeca-cold-start-{}", std::process::id()));
    let (empty, filled) = (dir.join("empty"), dir.join("filled"));
    let slow = dir.join("slow");
    let (mut cold, mut behind, mut slow_cold, mut warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cold_mb, mut slow_mb, mut warm_mb) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(&dir);
        // `wasmeca compile` first: its artifacts' names end as Cranelift's of every cache do.
        let compiled = Instant::now();
        let status = wasmeca(&filled)
            .arg("compile")
            .args(&seeds)
            .status()
            .expect("wasmeca compile runs");
        assert!(status.success());
        let compile = compiled.elapsed();
        let ending = std::fs::read_dir(&filled)
            .expect("the filled cache")
            .find_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                Some(name[name.rfind('-')?..].to_owned())
            })
            .expect("an artifact");
        let quick = first_answer(&seeds, &empty, &[], Some(&ending));
        cold.push(quick.first);
        behind.push(quick.optimised);
        cold_mb.push(quick.held_mb);
        let slow = first_answer(&seeds, &slow, &["--no-quick-start"], None);
        slow_cold.push(slow.first);
        slow_mb.push(slow.held_mb);
        let filled = first_answer(&seeds, &filled, &[], None);
        warm.push(filled.first);
        warm_mb.push(filled.held_mb);
        let ms = |v: &Vec<Duration>| v.last().map_or(0, Duration::as_millis);
        let mb = |v: &Vec<f64>| v.last().copied().unwrap_or(0.0);
        println!(
            "empty cache {:>5} ms (optimised {:>5} ms; {:.1} MB) | --no-quick-start {:>5} ms \
             ({:.1} MB) | wasmeca compile {:>5} ms, then {:>4} ms ({:.1} MB)",
            ms(&cold),
            ms(&behind),
            mb(&cold_mb),
            ms(&slow_cold),
            mb(&slow_mb),
            compile.as_millis(),
            ms(&warm),
            mb(&warm_mb)
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_millis()
    };
    let median_mb = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {ROUNDS}: start to first answer {} ms with an empty compile cache (every seed \
         on optimised code at {} ms), {} ms with --no-quick-start, {} ms after `wasmeca compile`; \
         memory held 2 s later: {:.1} MB, {:.1} MB, {:.1} MB",
        median(&mut cold),
        median(&mut behind),
        median(&mut slow_cold),
        median(&mut warm),
        median_mb(&mut cold_mb),
        median_mb(&mut slow_mb),
        median_mb(&mut warm_mb)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
