//! Hot-reload script (not a criterion bench): how long from a plugin file landing in a watched
//! folder to its first served request (with a cold compile cache and a warm one), and act
//! latency while the salute file is swapped every 100 ms against steady state.
//!
//! Run: `cargo bench -p wasmeca --bench reload`. Figures go in BENCHMARKS.md.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmeca::{CancellationToken, Config, Host, Message};

fn pct(mut v: Vec<u128>, p: f64) -> u128 {
    v.sort_unstable();
    v[((v.len() as f64) * p) as usize]
}

async fn landing(folder: &std::path::Path, cache: &std::path::Path, file: &str) -> Duration {
    let toml = format!(
        "watch = true\nlisten = []\n[rest]\nlisten = \"off\"\n[[plugin]]\npath = {folder:?}\n"
    );
    let mut config = Config::from_toml(&toml).expect("config");
    config.cache_dir = Some(cache.to_owned());
    let host = Host::start(&config, CancellationToken::new())
        .await
        .expect("host");
    let bytes = std::fs::read(wasmeca_tests::plugin(file)).expect("built");
    let tmp = folder.join("landing.tmp");
    std::fs::write(&tmp, &bytes).expect("write");
    let started = Instant::now();
    std::fs::rename(&tmp, folder.join(format!("{file}.wasm"))).expect("land");
    let msg = json!({"cmd": "salute"});
    loop {
        let m = Message::new(msg.as_object().cloned().expect("object"));
        if host.router().act(m).await.is_ok() {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let base = std::env::temp_dir().join(format!(
        "wasmeca-reload-bench-{}",
        wasmeca::message::new_id()
    ));
    rt.block_on(async {
        let cache = base.join("cache");
        let (cold_dir, warm_dir) = (base.join("cold"), base.join("warm"));
        std::fs::create_dir_all(&cold_dir).expect("dir");
        std::fs::create_dir_all(&warm_dir).expect("dir");
        let cold = landing(&cold_dir, &cache, "salute").await;
        let warm = landing(&warm_dir, &cache, "salute").await;
        println!("| file landed (renamed into the watched folder) → first answer | time |");
        println!("|---|---|");
        println!(
            "| salute, never compiled before (cold cache) | {} ms |",
            cold.as_millis()
        );
        println!(
            "| salute, compiled before (warm cache) | {} ms |",
            warm.as_millis()
        );

        // Latency while swapping.
        let dir = base.join("swap");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("salute.wasm");
        let (v1, v2) = (
            std::fs::read(wasmeca_tests::plugin("salute")).expect("v1"),
            std::fs::read(wasmeca_tests::plugin("salute_v2")).expect("v2"),
        );
        std::fs::write(&file, &v1).expect("write");
        let toml = format!(
            "watch = true\nlisten = []\n[rest]\nlisten = \"off\"\n[[plugin]]\npath = {dir:?}\n"
        );
        let mut config = Config::from_toml(&toml).expect("config");
        config.cache_dir = Some(cache.clone());
        let host = Host::start(&config, CancellationToken::new())
            .await
            .expect("host");
        let msg = json!({"cmd": "salute"});
        let run = |swapping: bool| {
            let (host, msg, file, v1, v2) = (&host, &msg, &file, &v1, &v2);
            async move {
                let mut samples = Vec::new();
                let mut failures = 0;
                let started = Instant::now();
                let mut last_swap = Instant::now();
                let mut flip = false;
                while started.elapsed() < Duration::from_secs(3) {
                    if swapping && last_swap.elapsed() > Duration::from_millis(100) {
                        let tmp = file.with_extension("tmp");
                        std::fs::write(&tmp, if flip { v1 } else { v2 }).expect("write");
                        std::fs::rename(&tmp, file).expect("swap");
                        flip = !flip;
                        last_swap = Instant::now();
                    }
                    let m = Message::new(msg.as_object().cloned().expect("object"));
                    let t = Instant::now();
                    if host.router().act(m).await.is_err() {
                        failures += 1;
                    }
                    samples.push(t.elapsed().as_micros());
                }
                (samples, failures)
            }
        };
        let (steady, steady_fail) = run(false).await;
        let (swaps, swap_fail) = run(true).await;
        println!();
        println!("| in-process act of cmd:salute | acts | p50 | p99 | max | failed |");
        println!("|---|---|---|---|---|---|");
        for (name, s, f) in [
            ("steady", steady, steady_fail),
            ("file swapped every 100 ms", swaps, swap_fail),
        ] {
            let n = s.len();
            let max = s.iter().max().copied().unwrap_or(0);
            println!(
                "| {name} | {n} | {} µs | {} µs | {max} µs | {f} |",
                pct(s.clone(), 0.5),
                pct(s, 0.99)
            );
        }
    });
    let _ = std::fs::remove_dir_all(&base);
}
