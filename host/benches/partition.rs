//! Partition script (not a criterion bench): a host whose PostgreSQL sits behind a proxy that
//! goes silent for a while (connections stay open, no byte moves: a partition or a hung server),
//! under a steady `/act` load of entity loads and saves. Prints what the callers saw before,
//! during and after: answers by status, the slowest answer, and how long after the partition
//! heals every call succeeds again.
//!
//! Run: `cargo bench -p wasmeca --bench partition` (`PARTITION_SECONDS`, default 45;
//! `CALLERS`, default 32 concurrent callers; `TIMEOUT_MS`, the host's act timeout, default
//! Seneca's 22222). Figures go in BENCHMARKS.md.

#[allow(dead_code)]
#[path = "../../tests/data_stores/support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{PgSchema, Proxy};
use wasmeca::{CancellationToken, Host};

/// One answer a caller got: when it was asked (since the start), how long it took, its status.
type Seen = (Duration, Duration, u16);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `POST /act` with `msg`: the status.
async fn post(http: &reqwest::Client, url: &str, msg: &serde_json::Value) -> Option<u16> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok()?;
    Some(status)
}

#[tokio::main]
async fn main() {
    let partition = Duration::from_secs(env("PARTITION_SECONDS", 45));
    let callers = env("CALLERS", 32) as usize;
    let timeout_ms = env("TIMEOUT_MS", 22_222);
    let schema = PgSchema::new("").await;
    let pg = Proxy::start("127.0.0.1:5432").await;
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = 0\n[data]\nexpose = true\n\
         url = \"postgres://postgres@127.0.0.1:{}/test?schema={}\"\n[limits]\ntimeout_ms = {timeout_ms}\n",
        pg.port, schema.name
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    let url = format!("http://{}/act", host.http_addrs()[0]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    for i in 0..100 {
        let save = json!({"sys": "entity", "cmd": "save", "base": "p", "name": "part", "ent": {"id$": format!("u{i}"), "n": i}});
        let status = post(&http, &url, &save).await.expect("save");
        assert_eq!(status, 200, "seeding");
    }

    let started = Instant::now();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let running = CancellationToken::new();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (http, url, seen, running) = (http.clone(), url.clone(), seen.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !running.is_cancelled() {
                i += callers;
                let msg = if i % 4 == 0 {
                    json!({"sys": "entity", "cmd": "save", "base": "p", "name": "part", "ent": {"id": format!("u{}", i % 100), "n": i}})
                } else {
                    json!({"sys": "entity", "cmd": "load", "base": "p", "name": "part", "id": format!("u{}", i % 100)})
                };
                let asked = started.elapsed();
                let status = post(&http, &url, &msg).await.unwrap_or(0);
                seen.lock().expect("lock").push((asked, started.elapsed() - asked, status));
            }
        }));
    }
    let before = Duration::from_secs(5);
    tokio::time::sleep(before).await;
    pg.mute();
    let muted_at = started.elapsed();
    tokio::time::sleep(partition).await;
    pg.unmute();
    let healed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(20)).await;
    running.cancel();
    for t in tasks {
        let _ = t.await;
    }
    stop.cancel();

    let seen = seen.lock().expect("lock").clone();
    let phase = |from: Duration, to: Duration| -> Vec<&Seen> {
        seen.iter()
            .filter(|(asked, _, _)| *asked >= from && *asked < to)
            .collect()
    };
    let end = started.elapsed();
    println!(
        "PostgreSQL muted for {partition:?} under {callers} callers (act timeout {timeout_ms} ms)"
    );
    for (name, list) in [
        ("before", phase(Duration::ZERO, muted_at)),
        ("muted", phase(muted_at, healed_at)),
        ("after", phase(healed_at, end)),
    ] {
        let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
        for (_, _, status) in &list {
            *by_status.entry(*status).or_default() += 1;
        }
        let slowest = list
            .iter()
            .map(|(_, took, _)| *took)
            .max()
            .unwrap_or_default();
        println!(
            "{name:>7}: {} answers {by_status:?}, slowest {} ms",
            list.len(),
            slowest.as_millis()
        );
    }
    let slowest = seen
        .iter()
        .map(|(_, took, _)| *took)
        .max()
        .unwrap_or_default();
    println!("slowest answer overall: {} ms", slowest.as_millis());
    // When, after the heal, answers turned good for good: the end of the last failed one.
    let last_failure = seen
        .iter()
        .filter(|(_, _, status)| *status != 200)
        .map(|(asked, took, _)| *asked + *took)
        .max();
    let first_ok = seen
        .iter()
        .filter(|(asked, _, status)| *asked >= healed_at && *status == 200)
        .map(|(asked, took, _)| *asked + *took)
        .min();
    if let Some(first) = first_ok {
        println!(
            "first good answer {} ms after the heal",
            first.saturating_sub(healed_at).as_millis()
        );
    }
    match last_failure {
        Some(last) => println!(
            "every answer good from {} ms after the heal",
            last.saturating_sub(healed_at).as_millis()
        ),
        None => println!("no failed answer at all"),
    }
    drop(host);
}
