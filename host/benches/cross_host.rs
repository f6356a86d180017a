//! Cross-host script (not a criterion bench), with a real Consul dev agent
//! (`tests/services/consul.sh`): the latency of an act that host C forwards to host A over
//! loopback against the same act answered locally, and how long Consul takes to show every
//! peer a host that starts and one that is SIGKILLed (check interval 1 s).
//!
//! Run: `cargo bench -p wasmeca --bench cross_host`. Figures go in BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wasmeca::{CancellationToken, Config, Host, Message};
use wasmeca_tests::{ConsulAgent, free_port, plugin};

fn toml(consul: &str, plugins: &[&str], port: u16) -> String {
    let mut t = format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = {port}\n\
         [consul]\naddress = {consul:?}\ncheck_interval_ms = 1000\ncheck_timeout_ms = 500\n"
    );
    for p in plugins {
        t.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin(p)));
    }
    t
}

async fn host(consul: &str, plugins: &[&str]) -> Host {
    let mut config = Config::from_toml(&toml(consul, plugins, 0)).expect("config");
    config.cache_dir = Some(std::env::temp_dir().join("wasmeca-bench-cache"));
    Host::start(&config, CancellationToken::new())
        .await
        .expect("host")
}

/// p50 and p99 of `n` sequential acts of `msg` on `host`, in µs.
async fn latency(host: &Host, msg: serde_json::Value, n: usize) -> (u128, u128) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let m = Message::new(msg.as_object().cloned().expect("object"));
        let started = Instant::now();
        host.router().act(m).await.expect("answered");
        samples.push(started.elapsed().as_micros());
    }
    samples.sort_unstable();
    (samples[n / 2], samples[n * 99 / 100])
}

async fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let agent = ConsulAgent::start(None);
    rt.block_on(async {
        let a = host(&agent.addr, &["salute"]).await;
        let c = host(&agent.addr, &["math"]).await;
        until("C to see A", || c.router().peer_ids().len() == 1).await;
        let salute = json!({"cmd": "salute", "name": "Bench"});
        let _ = latency(&c, salute.clone(), 200).await; // warm the connection pool and caches
        let (local50, local99) = latency(&a, salute.clone(), 2000).await;
        let (cross50, cross99) = latency(&c, salute, 2000).await;
        println!("| act | p50 | p99 |");
        println!("|---|---|---|");
        println!("| local (host A answers its own act) | {local50} µs | {local99} µs |");
        println!("| cross-host (C → A over Seneca HTTP, loopback) | {cross50} µs | {cross99} µs |");

        // A host starting: from its start until C's table has it.
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wasmeca-bench-{}", wasmeca::message::new_id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("wasmeca.toml");
        std::fs::write(&config, toml(&agent.addr, &["salute_v2"], port)).expect("config");
        let started = Instant::now();
        let mut b: Child = wasmeca_tests::wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .env("WASMECA_CACHE_DIR", std::env::temp_dir().join("wasmeca-bench-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wasmeca starts");
        until("C to see B", || c.router().peer_ids().len() == 2).await;
        let appeared = started.elapsed();
        // A host dying: from SIGKILL until C's table no longer has it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = Instant::now();
        Command::new("kill").args(["-KILL", &b.id().to_string()]).status().expect("kill");
        let _ = b.wait();
        until("C to drop B", || c.router().peer_ids().len() == 1).await;
        let gone = killed.elapsed();
        println!();
        println!("| event | until every peer's table shows it |");
        println!("|---|---|");
        println!("| `wasmeca serve` process started (incl. its start-up and first registration) | {} ms |", appeared.as_millis());
        println!("| host SIGKILLed (Consul check interval 1 s, timeout 0.5 s) | {} ms |", gone.as_millis());
    });
}
