//! Criterion benchmarks for the foundation: an in-process act through the salute plugin
//! against a raw component call with the same payload, pattern lookup among 1,000 patterns,
//! and plugin load with and without the compile cache. Run with
//! `cargo bench -p wasmeca --bench foundation`; figures go in BENCHMARKS.md.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use serde_json::{Map, Value, json};
use wasmeca::config::Limits;
use wasmeca::pattern::{Patrun, Pattern};
use wasmeca::runtime::RawInstance;
use wasmeca::{Message, PluginSource, Runtime};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("benchmark messages are objects"),
    }
}

fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
}

fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("wasmeca-bench-cache")
}

fn act(c: &mut Criterion) {
    let rt = one_thread();
    let salute = wasmeca_tests::plugin("salute");
    let runtime = Runtime::new(Some(cache_dir()), 64 << 20).expect("runtime");
    let router = wasmeca::assemble(
        runtime.clone(),
        &Limits::default(),
        Vec::new(),
        wasmeca::message::instance_id(),
    );
    rt.block_on(router.registry().load_all(&[PluginSource::new(&salute)]))
        .expect("salute loads");
    let compiled = runtime.compile_file(&salute).expect("compiles");
    let (mut raw, _) = rt
        .block_on(RawInstance::new(&runtime, &compiled, &"{}".to_owned()))
        .expect("instance");

    let msg = object(json!({"cmd": "salute", "name": "World"}));
    // What the plugin receives from an act: the message plus its tx$.
    let payload = r#"{"cmd":"salute","name":"World","tx$":"abcdefghijkl"}"#.to_owned();

    let mut group = c.benchmark_group("salute");
    group.throughput(Throughput::Elements(1));
    group.bench_function("act", |b| {
        b.to_async(&rt).iter(|| {
            let msg = Message::new(msg.clone());
            let router = &router;
            async move { router.act(msg).await.expect("answers") }
        })
    });
    group.bench_function("raw_component_call", |b| {
        b.iter(|| rt.block_on(raw.handle(0, &payload)).expect("answers"));
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut trie = Patrun::new();
    for i in 0..1000 {
        let p = Pattern::parse(&format!("role:r{},cmd:c{i},v:{}", i % 10, i % 3)).expect("parses");
        trie.add(&p, i);
    }
    trie.add(&Pattern::parse("role:r1,cmd:*").expect("parses"), 1000);
    let exact = object(json!({"role": "r7", "cmd": "c517", "v": 1, "name": "x", "tx$": "abc"}));
    let glob = object(json!({"role": "r1", "cmd": "nothing", "v": 2}));
    let miss = object(json!({"role": "r99", "cmd": "c1"}));
    assert_eq!(trie.find(&exact), Some(&517));
    assert_eq!(trie.find(&glob), Some(&1000));
    let mut group = c.benchmark_group("lookup_1000_patterns");
    group.throughput(Throughput::Elements(1));
    group.bench_function("exact", |b| b.iter(|| trie.find(&exact)));
    group.bench_function("glob", |b| b.iter(|| trie.find(&glob)));
    group.bench_function("miss", |b| b.iter(|| trie.find(&miss)));
    group.finish();
}

fn load(c: &mut Criterion) {
    let rt = one_thread();
    let salute = wasmeca_tests::plugin("salute");
    let cached = Runtime::new(Some(cache_dir()), 64 << 20).expect("runtime");
    cached.compile_file(&salute).expect("warms the cache");
    let uncached = Runtime::new(None, 64 << 20).expect("runtime");
    let mut group: BenchmarkGroup<WallTime> = c.benchmark_group("load_salute");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("compile_from_cache", |b| {
        b.iter(|| cached.compile_file(&salute).expect("loads"))
    });
    group.bench_function("compile_without_cache", |b| {
        b.iter(|| uncached.compile_file(&salute).expect("compiles"))
    });
    let router = wasmeca::assemble(
        cached.clone(),
        &Limits::default(),
        Vec::new(),
        wasmeca::message::instance_id(),
    );
    let source = PluginSource::new(&salute);
    group.bench_function("load_and_init_from_cache", |b| {
        b.iter(|| rt.block_on(router.registry().load(&source)).expect("loads"));
    });
    group.finish();
}

criterion_group!(benches, act, lookup, load);
criterion_main!(benches);
