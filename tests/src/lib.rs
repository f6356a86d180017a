//! Test harness shared by the integration tests in `tests/`: where the compiled plugins are,
//! free ports, and the real Node Seneca peers (`tests/node`, installed with `npm ci` on first
//! use) started as child processes that are killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The folder holding every plugin built for the tests (seeds and fixtures).
fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("WASMECA_TEST_PLUGIN_DIR"))
}

/// The compiled plugin `name` (`salute`, `salute_v2`, `chaos`, ...).
pub fn plugin(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "plugin {} was not built", path.display());
    path
}

/// The compile cache every test shares, so each plugin is compiled once per machine.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("wasmeca-test-cache")
}

/// A fresh, empty folder for one host's default data store, so no test writes to the user's
/// data folder or sees another test's data.
pub fn data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wasmeca-test-data-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a data folder");
    dir
}

/// A [`Command`] for the `wasmeca` binary under test, using [`cache_dir`], a fresh
/// [`data_dir`], no quick start (a test that counts on an instance's state must not meet the
/// move to optimised code; quick start has tests of its own) and no inherited `RUST_LOG` or
/// data URLs. A macro because only the calling test
/// crate knows the binary's path.
#[macro_export]
macro_rules! wasmeca_command {
    () => {{
        let mut command = ::std::process::Command::new(env!("CARGO_BIN_EXE_wasmeca"));
        command
            .env("WASMECA_CACHE_DIR", $crate::cache_dir())
            .env("WASMECA_DATA_DIR", $crate::data_dir())
            .env("WASMECA_NO_QUICK_START", "true")
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("WASMECA_DATA_URL")
            .env_remove("WASMECA_CACHE_URL");
        command
    }};
}

/// A host configuration for an in-process test host, from TOML text: the shared compile cache
/// ([`cache_dir`]), no quick start (as [`wasmeca_command`]), and the entity store and the cache
/// in memory unless the TOML names its own,
/// so no test host reads or writes a user's data, a project's `.wasmeca/`, or another test's.
/// A macro because only the calling test crate links `wasmeca`.
#[macro_export]
macro_rules! test_config {
    ($toml:expr) => {{
        let toml: &str = &$toml;
        let mut config =
            ::wasmeca::Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        config.cache_dir = Some($crate::cache_dir());
        config.no_quick_start = true;
        config
            .data
            .url
            .get_or_insert_with(|| "memory://".to_owned());
        config
            .cache
            .url
            .get_or_insert_with(|| "memory://".to_owned());
        config
    }};
}

/// A child process (a `wasmeca serve`, say), killed on drop so a failing test leaves nothing
/// running.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seed plugins the demo serves.
pub const SEEDS: [&str; 6] = ["salute", "math", "account", "config", "user", "audit"];

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// A process's user + system CPU time so far, from /proc/PID/stat (in clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime); after the `)` they are the 12th and 13th.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The pid of the local RabbitMQ node (its Erlang VM, `beam.smp` running `rabbit`), to read the
/// broker's CPU beside a client's; `None` when none runs here.
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("beam.smp") && cmdline.contains("-s\0rabbit")
        })
}

/// The `name` line of a /proc file's `text` (`VmRSS:   1234 kB`), in bytes; 0 when absent.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A process's resident memory (VmRSS), in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&status, "VmRSS:")
}

/// A process's memory that the kernel cannot take back: resident (Rss) less the pages the
/// allocator has already released with `MADV_FREE` (LazyFree), which still count as resident
/// until the kernel needs them, in bytes (from /proc/PID/smaps_rollup).
pub fn held(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    kib_field(&rollup, "Rss:").saturating_sub(kib_field(&rollup, "LazyFree:"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// `tests/node`, with its packages installed (`npm ci` once, under a file lock so parallel
/// test binaries do not install at the same time).
pub fn node_dir() -> PathBuf {
    let dir = repo().join("tests").join("node");
    let lock = std::fs::File::create(repo().join("target").join("npm-ci.lock"))
        .expect("create the npm lock file");
    lock.lock().expect("lock the npm lock file");
    let stamp = dir.join("node_modules").join(".package-lock.json");
    let fresh = stamp.exists()
        && std::fs::metadata(dir.join("package-lock.json"))
            .and_then(|m| m.modified())
            .ok()
            .zip(std::fs::metadata(&stamp).and_then(|m| m.modified()).ok())
            .is_some_and(|(lock, installed)| installed >= lock);
    if !fresh {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js and npm must be installed)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    dir
}

/// A Node script started from `tests/node`; killed on drop.
pub struct NodeProcess {
    /// The process.
    child: Child,
    /// Its stdout lines as JSON.
    lines: mpsc::Receiver<Value>,
}

impl NodeProcess {
    /// Starts `node <script> <args>` and waits (up to 60 s) for its first JSON line, which
    /// it returns with the process.
    pub fn start(script: &str, args: &[&str]) -> (Self, Value) {
        let dir = node_dir();
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(&dir)
            .env("SENECA_QUIET", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        let mut process = Self { child, lines };
        let first = process
            .next(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{script} printed nothing"));
        (process, first)
    }

    /// The next JSON line, if one comes within `wait`.
    pub fn next(&mut self, wait: Duration) -> Option<Value> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Waits for the process to exit (up to `wait`) and returns every line it printed.
    pub fn finish(self, wait: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            out.push(line);
        }
        out
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Node client script to completion and returns its result lines (in input order).
pub fn node_client(script: &str, args: &[&str]) -> Vec<Value> {
    let dir = node_dir();
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .env("SENECA_QUIET", "true")
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{script} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{script} printed `{l}`, not JSON: {e}"))
        })
        .collect()
}

/// A Consul dev agent started by `tests/services/consul.sh` on free ports (installing Consul
/// on first use); stopped on drop.
pub struct ConsulAgent {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// Its HTTP port.
    pub port: u16,
    /// Its data dir (names the agent for `consul.sh stop`).
    data_dir: PathBuf,
}

fn consul_sh(args: &[&str]) -> String {
    let script = repo().join("tests").join("services").join("consul.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "consul.sh {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ConsulAgent {
    /// Starts an agent on `port` (a free one when `None`).
    pub fn start(port: Option<u16>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let data_dir = repo()
            .join("target")
            .join("tools")
            .join("consul-data")
            .join(format!("test-{port}"));
        let out = consul_sh(&[
            "start",
            "--http-port",
            &port.to_string(),
            "--data-dir",
            &data_dir.to_string_lossy(),
        ]);
        let addr = out
            .lines()
            .find_map(|l| l.strip_prefix("CONSUL_HTTP_ADDR="))
            .unwrap_or_else(|| panic!("consul.sh printed no address: {out}"))
            .to_owned();
        Self {
            addr,
            port,
            data_dir,
        }
    }

    /// Stops the agent (it forgets every registration, like any dev agent).
    pub fn stop(&self) {
        consul_sh(&["stop", "--data-dir", &self.data_dir.to_string_lossy()]);
    }

    /// Stops and starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        consul_sh(&[
            "start",
            "--http-port",
            &self.port.to_string(),
            "--data-dir",
            &self.data_dir.to_string_lossy(),
        ]);
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        let script = repo().join("tests").join("services").join("consul.sh");
        let _ = Command::new("bash")
            .arg(script)
            .args(["stop", "--data-dir", &self.data_dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
