//! `chaos@1.0.0`: a plugin that misbehaves on request, so the tests can check that the host
//! answers with an error within the deadline or cap, replaces the instance, and keeps serving.
//! Options: `{"fail_init": true}` makes init fail; `{"bad_pattern": true}` declares a pattern
//! that does not parse; `{"observe": ["evt:x", ...]}` adds observers, which count the events
//! they get, record each in the host's cache under `<mark>:<event id>` (`mark` defaults to the
//! name, with the event's `tx$` as the value; not with `{"record": false}`), spin for the
//! event's `ms` (and, with `until: KEY`, after setting `KEY:held` in the host's cache, until
//! the cache holds `KEY`), and fail on an event with `fail: true`; `chaos:observed` answers
//! the count, and `chaos:publish` publishes its `event`. `{"init_act": MSG}` acts MSG during
//! init (failing init with its error); `{"observe_act": MSG}` has every observer act MSG.

use std::time::{Duration, Instant};

use wasmeca_sdk::{Error, Msg, Plugin, Result, Value, json};

/// Per-instance state.
struct Chaos {
    /// Calls answered by this instance (shows whether an instance was replaced).
    calls: u64,
    /// `options.name`: tells hosts apart in multi-host tests.
    name: String,
    /// Events its observers handled.
    observed: u64,
    /// `options.mark`: the prefix of the cache keys observed events are recorded under.
    mark: String,
}

fn plugin(options: &Msg) -> Result<Plugin<Chaos>> {
    if options.bool("fail_init") == Some(true) {
        return Err(Error::new("bad_options", "fail_init was set"));
    }
    // `init_act`: a message acted during init (a seed, a migration); init fails with its error.
    if let Some(msg) = options.get("init_act") {
        wasmeca_sdk::act(msg.clone())?;
    }
    let name = options.str("name").unwrap_or("chaos").to_owned();
    let mark = options.str("mark").unwrap_or(&name).to_owned();
    let mut plugin = Plugin::with_state(
        "chaos",
        "1.0.0",
        Chaos {
            calls: 0,
            name,
            observed: 0,
            mark,
        },
    )
    .add("chaos:ok", |s, _| {
        s.calls += 1;
        Ok(json!({ "ok": true, "calls": s.calls }))
    })
    .add("chaos:trap", |_, _| -> Result<Value> {
        core::arch::wasm32::unreachable()
    })
    .add("chaos:panic", |_, _| -> Result<Value> {
        panic!("boom on purpose")
    })
    .add("chaos:loop", |_, _| -> Result<Value> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    })
    .add("chaos:alloc", |_, _| -> Result<Value> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    })
    .add("chaos:slow", |_, msg| {
        let from_query = msg
            .query("ms")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok());
        let ms = msg.f64("ms").or(from_query).unwrap_or(100.0) as u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            std::hint::black_box(start);
        }
        Ok(json!({ "slept": ms }))
    })
    .add("chaos:whoami", |s, msg| {
        s.calls += 1;
        let from_query = msg
            .query("ms")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok());
        let ms = msg.f64("ms").or(from_query).unwrap_or(0.0) as u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            std::hint::black_box(start);
        }
        Ok(json!({ "name": s.name, "calls": s.calls, "n": msg.get("n") }))
    })
    .add("chaos:number", |_, _| Ok(42))
    // (Not `chaos:null`: jsonic reads null, which drops the key and makes a catch-all.)
    .add("chaos:nothing", |_, _| Ok(Value::Null))
    .add("chaos:fail", |_, _| -> Result<Value> {
        Err(Error::new("boom", "bad thing")
            .with_status(418)
            .with_details(json!({ "why": "asked to" })))
    })
    .add("chaos:echo", |_, msg| {
        Ok(Value::Object(msg.as_map().clone()))
    })
    .add("chaos:relay", |_, msg| {
        // Acts `inner` (from the message, or a REST request's body) and answers with this
        // message's tx and the inner answer; first computes for `ms` (default 0), so the call
        // runs past epoch ticks before it waits on the nested act.
        let start = Instant::now();
        let ms = msg.f64("ms").unwrap_or(0.0) as u64;
        while start.elapsed() < Duration::from_millis(ms) {
            std::hint::black_box(start);
        }
        let inner = msg
            .get("inner")
            .or_else(|| msg.body().and_then(|b| b.get("inner")))
            .cloned()
            .unwrap_or(json!({}));
        wasmeca_sdk::info!("chaos relays {inner}");
        let answer = wasmeca_sdk::act(inner)?;
        Ok(json!({ "tx": msg.tx(), "inner": answer }))
    })
    .add("chaos:recurse", |_, msg| {
        let depth = msg.i64("depth").unwrap_or(0);
        let inner = wasmeca_sdk::act(json!({ "chaos": "recurse", "depth": depth + 1 }))?;
        Ok(json!({ "depth": depth, "inner": inner }))
    })
    .add("chaos:log", |_, msg| {
        wasmeca_sdk::info!("chaos says {}", msg.str("text").unwrap_or("hello"));
        println!("chaos prints to stdout");
        Ok(json!({ "logged": true }))
    });
    let observed: Vec<String> = options
        .get("observe")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // `record: false` only counts (what the events benchmark measures); `record: "count"`
    // counts each event's handlings in the cache (`incr`), so a fault test sees duplicates.
    let record = options.bool("record") != Some(false);
    let count = options.str("record") == Some("count");
    // `observe_act`: a message each observer acts for every event; the observer fails with its
    // error.
    let observe_act = options.get("observe_act").cloned();
    for pattern in &observed {
        let observe_act = observe_act.clone();
        plugin = plugin.observe(pattern, move |s, event| {
            if event.bool("fail") == Some(true) {
                return Err(Error::new("observer_failed", "this event asks to fail"));
            }
            if let Some(msg) = &observe_act {
                wasmeca_sdk::act(msg.clone())?;
            }
            let start = Instant::now();
            let ms = event.f64("ms").unwrap_or(0.0) as u64;
            while start.elapsed() < Duration::from_millis(ms) {
                std::hint::black_box(start);
            }
            if let Some(gate) = event.str("until") {
                // Held until a test sets the cache key `gate`: a hold that ends when the test
                // says so, not after a time a slow machine may overrun. `<gate>:held` tells the
                // test the hold has begun.
                let held = format!("{gate}:held");
                wasmeca_sdk::act(json!({ "role": "cache", "cmd": "set", "key": held, "val": true }))?;
                while wasmeca_sdk::act(json!({ "role": "cache", "cmd": "get", "key": gate }))?
                    ["value"]
                    .is_null()
                {
                    let pause = Instant::now();
                    while pause.elapsed() < Duration::from_millis(5) {
                        std::hint::black_box(pause);
                    }
                }
            }
            if count {
                let id = event.str("event$").unwrap_or("-").to_owned();
                counted(&format!("{}:{id}", s.mark))?;
            } else if record {
                let id = event.str("event$").unwrap_or("-").to_owned();
                let tx = event.str("tx$").unwrap_or("-").to_owned();
                wasmeca_sdk::act(json!({ "role": "cache", "cmd": "set", "key": format!("{}:{id}", s.mark), "val": tx }))?;
            }
            s.observed += 1;
            Ok(())
        });
    }
    plugin = plugin
        .add("chaos:observed", |s, _| {
            Ok(json!({ "observed": s.observed, "name": s.name }))
        })
        // Counts this command in the cache under `key` (`incr`) and answers the count: a
        // command run twice (by two hosts, say) answers 2 the second time, and the cache holds
        // how often each one ran.
        .add("chaos:count", |s, msg| {
            let count = counted(msg.str("key").unwrap_or("chaos:count"))?;
            Ok(json!({ "count": count, "by": s.name }))
        })
        .add("chaos:publish", |_, msg| {
            wasmeca_sdk::publish(msg.get("event").cloned().unwrap_or(json!({})))?;
            Ok(json!({ "published": true, "tx": msg.tx() }))
        });
    if options.bool("bad_pattern") == Some(true) {
        plugin = plugin.add("chaos:bad,,x", |_, _| Ok(json!({})));
    }
    Ok(plugin)
}

/// Adds one to the count under `key` in the cache (created at 0 first: Seneca's `incr` of a
/// missing key creates nothing) and answers the new count.
fn counted(key: &str) -> Result<f64> {
    match wasmeca_sdk::cache::add(key, json!(0)) {
        Err(e) if e.code != "key_exists" => return Err(e),
        _ => {}
    }
    wasmeca_sdk::cache::incr(key, 1.0)?
        .ok_or_else(|| Error::new("count_lost", format!("{key} went missing")))
}

wasmeca_sdk::export!(plugin);
