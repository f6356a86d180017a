//! Events, through real plugins: an event reaches every observer whose pattern matches it (and
//! no ordinary action), carries its id and its publisher's `tx$`, is not an error with no
//! observer; the seed user plugin's creations reach the audit plugin; a plugin built against
//! `wasmeca:plugin@0.1.0` still loads and answers next to 0.2.0 ones.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca::{CancellationToken, Config, Host, Message};
use wasmeca_tests::plugin;

/// An in-process host (no listener) serving `plugins`, each `(name, options)`.
async fn host(plugins: &[(&str, Value)]) -> (Host, CancellationToken) {
    let mut toml = String::from("listen = []\n[rest]\nlisten = \"off\"\n");
    for (name, options) in plugins {
        let options = toml::Value::try_from(options).expect("options as TOML");
        toml.push_str(&format!(
            "[[plugin]]\npath = {:?}\noptions = {options}\n",
            plugin(name)
        ));
    }
    let mut config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    config.cache_dir = Some(wasmeca_tests::cache_dir());
    config.data.url = Some("memory://".into());
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (host, stop)
}

async fn act(host: &Host, msg: Value) -> Value {
    let Value::Object(map) = msg else {
        panic!("an object")
    };
    host.router()
        .act(Message::new(map))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_value()
}

/// Waits up to 10 s for `check` on the host.
async fn eventually(host: &Host, what: &str, msg: Value, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = act(host, msg.clone()).await;
        if check(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_matching_observer_hears_an_event_and_no_action_does() {
    let (h, stop) = host(&[(
        "chaos",
        json!({"observe": ["evt:order", "evt:order,cmd:paid", "evt:*,cmd:paid", "evt:user"], "mark": "m"}),
    )])
    .await;
    let published = act(
        &h,
        json!({"chaos": "publish", "tx$": "txtxtxtxtxtx", "event": {"evt": "order", "cmd": "paid", "id": 1, "chaos": "ok"}}),
    )
    .await;
    assert_eq!(published["tx"], "txtxtxtxtxtx");
    // Three observers match (not only the most specific one); `evt:user` does not.
    eventually(&h, "three observers", json!({"chaos": "observed"}), |a| {
        a["observed"] == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(act(&h, json!({"chaos": "observed"})).await["observed"], 3);
    // It carried an id and the publisher's tx (each observer recorded it in the cache).
    let listed = act(&h, json!({"role": "cache", "cmd": "get", "key": "nope"})).await;
    assert_eq!(listed["value"], Value::Null);
    // The event looked like `chaos:ok`'s message, but no action ran for it.
    assert_eq!(act(&h, json!({"chaos": "ok"})).await["calls"], 1);
    // No observer anywhere is not an error.
    let id = h
        .router()
        .publish(Message::new(
            json!({"evt": "nobody-listens"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ))
        .await
        .expect("published");
    assert_eq!(id.len(), 12);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn events_carry_their_id_and_the_publishers_tx() {
    let (h, stop) = host(&[("chaos", json!({"observe": ["evt:traced"], "mark": "t"}))]).await;
    let id = h
        .router()
        .publish(Message::new(
            json!({"evt": "traced", "tx$": "abcdefabcdef"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ))
        .await
        .expect("published");
    let key = format!("t:{id}");
    let recorded = eventually(
        &h,
        "the observer's record",
        json!({"role": "cache", "cmd": "get", "key": key}),
        |a| !a["value"].is_null(),
    )
    .await;
    assert_eq!(recorded["value"], "abcdefabcdef");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn users_created_reach_the_audit_plugin() {
    let (h, stop) = host(&[("user", json!({})), ("audit", json!({}))]).await;
    assert_eq!(
        act(&h, json!({"role": "audit", "cmd": "count"})).await["created"],
        0
    );
    let created = act(&h, json!({"module": "user", "if": "create", "name": "丁"})).await;
    assert_eq!(created["id"], 4);
    let counted = eventually(
        &h,
        "the audit count",
        json!({"role": "audit", "cmd": "count"}),
        |a| a["created"] == 1,
    )
    .await;
    assert_eq!(counted["last"], 4);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_0_1_0_still_loads_next_to_0_2_0_ones() {
    let (h, stop) = host(&[("legacy", json!({})), ("salute", json!({}))]).await;
    assert_eq!(
        act(&h, json!({"legacy": "ping"})).await,
        json!({"pong": true})
    );
    assert_eq!(
        act(&h, json!({"cmd": "salute", "name": "X"})).await["message"],
        "Hello X!"
    );
    let snapshot = h.router().registry().snapshot();
    let contract = |key: &str| {
        snapshot
            .get(key)
            .map(|p| p.contract.name())
            .unwrap_or("missing")
    };
    assert_eq!(contract("legacy@1.0.0"), "wasmeca:plugin@0.1.0");
    assert_eq!(contract("salute@1.0.0"), "wasmeca:plugin@0.2.0");
    stop.cancel();
}
