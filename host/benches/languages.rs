//! Per-language script (not a criterion bench): the same `cmd:salute` action written in Rust,
//! C, JavaScript and Python — component size, load from the compile cache (mmap + link),
//! load + instantiate + init, and an in-process act on one core.
//!
//! Needs the examples built (`cargo test -p wasmeca --test languages` builds them, or
//! `wasmeca build examples/<lang>/salute`). Run: `cargo bench -p wasmeca --bench languages`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmeca::config::Limits;
use wasmeca::{Message, PluginSource, Runtime};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let repo = wasmeca_tests::repo();
    let plugins: [(&str, PathBuf); 4] = [
        ("Rust (wasmeca-sdk)", wasmeca_tests::plugin("salute")),
        (
            "C (sdk/c)",
            repo.join("examples/c/salute-math/dist/salute-math.wasm"),
        ),
        (
            "JavaScript (sdk/js, StarlingMonkey)",
            repo.join("examples/js/salute/dist/salute.wasm"),
        ),
        (
            "Python (sdk/python, componentize-py)",
            repo.join("examples/python/salute/dist/salute.wasm"),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let cache = std::env::temp_dir().join("wasmeca-bench-cache");
    println!("| language | size | load from cache | load + init | act (one core) | acts/s |");
    println!("|---|---|---|---|---|---|");
    for (language, path) in plugins {
        if !path.exists() {
            println!("| {language} | not built: {} | | | | |", path.display());
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let runtime = Runtime::new(Some(cache.clone()), 256 << 20).expect("runtime");
        runtime
            .compile_file(&path)
            .expect("compiles (warms the cache)");
        let started = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            runtime.compile_file(&path).expect("loads");
        }
        let from_cache = started.elapsed() / rounds;
        let router = wasmeca::assemble(
            runtime,
            &Limits::default(),
            Vec::new(),
            wasmeca::message::instance_id(),
        );
        let source = PluginSource::new(&path);
        let started = Instant::now();
        for _ in 0..rounds {
            rt.block_on(router.registry().load(&source)).expect("loads");
        }
        let load_init = started.elapsed() / rounds;
        rt.block_on(router.registry().load_all(std::slice::from_ref(&source)))
            .expect("serves");
        let msg = json!({"cmd": "salute", "name": "World"});
        let act = || {
            let m = Message::new(msg.as_object().cloned().expect("object"));
            rt.block_on(router.act(m)).expect("answers");
        };
        for _ in 0..1000 {
            act();
        }
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_secs(3) {
            act();
            n += 1;
        }
        let per = started.elapsed() / n;
        println!(
            "| {language} | {} KB | {:.2} ms | {:.2} ms | {:.1} µs | {:.0} |",
            size / 1000,
            from_cache.as_secs_f64() * 1e3,
            load_init.as_secs_f64() * 1e3,
            per.as_secs_f64() * 1e6,
            1.0 / per.as_secs_f64()
        );
    }
}
