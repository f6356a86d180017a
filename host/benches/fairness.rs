//! Fairness load script (not a criterion bench; issue 14 item 3): an unrelated plugin's latency
//! and throughput while every instance of another plugin loops until its deadline.
//!
//! A `wasmeca serve` process with Seneca's HTTP listener serves `chaos` (8 instances) and
//! `salute`. 4 kept-alive clients act `cmd:salute` back to back for `LOAD_SECONDS` (default 5)
//! while the host is idle, then again while 8 other clients keep `chaos:loop` (each runs until
//! its 1 s deadline, then is sent again) in flight on every chaos instance. The table gives
//! salutes/s, p50, p99, max and failures in both phases, and the p99 ratio (target: ≤ 5×).
//!
//! Run: `cargo bench -p wasmeca --bench fairness`. Figures go in BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca_tests::{Process, free_port, plugin, wasmeca_command};

/// Salute clients, each with one request in flight.
const CLIENTS: usize = 4;
/// Looping clients: one per chaos instance.
const LOOPERS: usize = 8;

/// One kept-alive connection to the HTTP listener.
struct Client {
    /// Reads the responses.
    reader: BufReader<TcpStream>,
    /// Writes the requests.
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// `POST /act` with `msg`; the status and the body.
    fn act(&mut self, msg: &Value) -> std::io::Result<(u16, String)> {
        let body = msg.to_string();
        write!(
            self.writer,
            "POST /act HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What one phase measured.
struct Phase {
    /// Salutes answered per second.
    rate: f64,
    /// Latencies, sorted.
    samples: Vec<Duration>,
    /// Salutes that failed.
    failed: u64,
}

impl Phase {
    fn at(&self, q: f64) -> Duration {
        self.samples[((self.samples.len() as f64 * q) as usize).min(self.samples.len() - 1)]
    }
}

/// Salutes back to back from [`CLIENTS`] connections for `seconds`.
fn salutes(port: u16, seconds: u64) -> Phase {
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let failed = failed.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let mut samples = Vec::new();
                let msg = json!({"cmd": "salute", "name": "Fair"});
                while started.elapsed() < Duration::from_secs(seconds) {
                    let sent = Instant::now();
                    match client.act(&msg) {
                        Ok((200, body)) if body.contains("Hello Fair") => {
                            samples.push(sent.elapsed());
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            client = Client::connect(port);
                        }
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("salute thread"))
        .collect();
    samples.sort();
    Phase {
        rate: samples.len() as f64 / started.elapsed().as_secs_f64(),
        samples,
        failed: failed.load(Ordering::Relaxed),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` runs benches once without --bench: nothing to do.
    }
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let port = free_port();
    let config = std::env::temp_dir().join(format!("wasmeca-fairness-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = {port}\n\
             [[plugin]]\npath = {:?}\ninstances = {LOOPERS}\n[[plugin]]\npath = {:?}\n",
            plugin("chaos"),
            plugin("salute")
        ),
    )
    .expect("config");
    let _host = Process(
        wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("wasmeca runs"),
    );
    let ready = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(ready.elapsed() < Duration::from_secs(30), "host not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = salutes(port, 1); // warm-up
    let idle = salutes(port, seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let loops = Arc::new(AtomicU64::new(0));
    let loopers: Vec<_> = (0..LOOPERS)
        .map(|_| {
            let (stop, loops) = (stop.clone(), loops.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let msg = json!({"chaos": "loop", "timeout$": 1_000});
                while !stop.load(Ordering::Relaxed) {
                    match client.act(&msg) {
                        Ok((_, body)) if body.contains("action_timeout") => {
                            loops.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => client = Client::connect(port),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // every instance is looping
    let storm = salutes(port, seconds);
    stop.store(true, Ordering::Relaxed);
    for looper in loopers {
        looper.join().expect("looper");
    }
    println!("| `cmd:salute`, {CLIENTS} clients | salutes/s | p50 | p99 | max | failed |");
    println!("|---|---|---|---|---|---|");
    for (name, phase) in [
        ("idle", &idle),
        ("8 chaos instances looping to their deadline", &storm),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            phase.rate,
            phase.at(0.5).as_secs_f64() * 1e3,
            phase.at(0.99).as_secs_f64() * 1e3,
            phase.at(1.0).as_secs_f64() * 1e3,
            phase.failed
        );
    }
    println!(
        "\np99 during the loops / idle p99: {:.1}× (target ≤ 5×); loops timed out meanwhile: {}",
        storm.at(0.99).as_secs_f64() / idle.at(0.99).as_secs_f64(),
        loops.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_file(&config);
}
