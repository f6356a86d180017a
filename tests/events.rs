//! Events, through real plugins: an event reaches every observer whose pattern matches it (and
//! no ordinary action), carries its id and its publisher's `tx$`, is not an error with no
//! observer; the seed user plugin's creations reach the audit plugin; a plugin built against
//! `wasmeca:plugin@0.1.0` still loads and answers next to 0.2.0 ones. Then across hosts over
//! the real RabbitMQ on 127.0.0.1:5672 (and Redis on 6379, where observers of several hosts
//! record what they handled): each group handles every event once, through a SIGKILL and
//! while a group is down; a plain amqplib publisher reaches wasmeca observers; a failing
//! observer's event ends in the dead-letter queue with its reason; the CLI publishes. Each
//! AMQP test uses its own exchange and deletes it, its queues and its Redis keys at the end.

#[allow(dead_code)]
#[path = "data_stores/support.rs"]
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use support::REDIS;
use wasmeca::events::Bus;
use wasmeca::transport::amqp::{AmqpBus, EventQueue};
use wasmeca::{CancellationToken, Host, Message};
use wasmeca_tests::{NodeProcess, Process, plugin};

/// An in-process host (no listener) serving `plugins`, each `(name, options)`.
async fn host(plugins: &[(&str, Value)]) -> (Host, CancellationToken) {
    host_with("", plugins).await
}

/// [`host`], with `extra` TOML sections (`[events]`, `[cache]`) first.
async fn host_with(extra: &str, plugins: &[(&str, Value)]) -> (Host, CancellationToken) {
    let mut toml = format!("listen = []\n[rest]\nlisten = \"off\"\n{extra}");
    for (name, options) in plugins {
        let options = toml::Value::try_from(options).expect("options as TOML");
        toml.push_str(&format!(
            "[[plugin]]\npath = {:?}\noptions = {options}\n",
            plugin(name)
        ));
    }
    let config = wasmeca_tests::test_config!(toml);
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
    let deadline = Instant::now() + Duration::from_secs(60);
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
async fn a_flood_in_memory_waits_for_room_then_is_refused_with_events_full() {
    // Observers run within the act timeout: long enough here for the flood on a slow machine.
    let (h, stop) = host_with(
        "[limits]\ntimeout_ms = 120000\n",
        &[("chaos", json!({"observe": ["evt:flood"], "record": false}))],
    )
    .await;
    let publish = |event: Value| {
        let router = h.router().clone();
        async move {
            let event = Message::new(event.as_object().cloned().expect("an object"));
            router.publish(event).await
        }
    };
    // The first event holds the plugin's only instance until the test opens the gate (once it
    // holds it, so that no later event slips through first); it and
    // the next 63 take the 64 delivery slots, one more waits for a slot, then the queue's
    // 10,000 places fill. Each publisher after that waits 100 ms for room and is refused.
    publish(json!({"evt": "flood", "until": "flood-gate"}))
        .await
        .expect("queued");
    eventually(
        &h,
        "the hold to begin",
        json!({"role": "cache", "cmd": "get", "key": "flood-gate:held"}),
        |a| !a["value"].is_null(),
    )
    .await;
    let capacity = wasmeca::events::LOCAL_QUEUE + 64;
    let mut accepted = 1;
    let mut refused = Vec::new();
    for n in 0..capacity + 5 {
        // Room for the first `capacity` however slowly the bus task runs; none for the rest.
        let wait = if n < capacity { 60_000 } else { 100 };
        match publish(json!({"evt": "flood", "n": n, "timeout$": wait})).await {
            Ok(_) => accepted += 1,
            Err(e) => refused.push(e.code),
        }
    }
    assert_eq!(
        accepted,
        capacity + 1,
        "the queue and the delivery slots hold {}",
        capacity + 1
    );
    assert_eq!(refused, vec!["events_full"; 5]);
    act(
        &h,
        json!({"role": "cache", "cmd": "set", "key": "flood-gate", "val": true}),
    )
    .await;
    // Nothing accepted is lost: the observer handles every one once the instance is free.
    eventually(
        &h,
        "every accepted event",
        json!({"chaos": "observed", "timeout$": 60000}),
        |a| a["observed"] == accepted,
    )
    .await;
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

// ---- Across hosts, over RabbitMQ ----

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The names one AMQP test uses (exchange, groups, Redis key prefix), deleted when it ends.
struct Broker {
    /// The test's own events exchange.
    exchange: String,
    /// Its groups, whose queues (and dead-letter queues) are deleted at the end.
    groups: Vec<String>,
    /// The prefix of the Redis keys its observers write.
    id: String,
}

impl Broker {
    fn new() -> Self {
        let id = wasmeca::message::new_id();
        Self {
            exchange: format!("test.{id}.events"),
            groups: Vec::new(),
            id,
        }
    }

    /// A group name of this test.
    fn group(&mut self, name: &str) -> String {
        let group = format!("{name}{}", self.id);
        self.groups.push(group.clone());
        group
    }

    fn queue(&self, group: &str) -> String {
        format!("{}.{group}", self.exchange)
    }

    /// The `[events]` and `[cache]` sections of a host in `group`.
    fn toml(&self, group: &str, extra: &str) -> String {
        format!(
            "[cache]\nurl = {REDIS:?}\n[events]\nurl = {AMQP:?}\nexchange = {:?}\ngroup = {group:?}\n{extra}",
            self.exchange
        )
    }

    /// A publisher to the test's exchange.
    fn bus(&self) -> AmqpBus {
        AmqpBus::new(EventQueue {
            url: wasmeca::config::Urls::parse(AMQP),
            queue_type: Default::default(),
            exchange: self.exchange.clone(),
            group: String::new(),
            retry: Default::default(),
            prefetch: 1,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Waits (up to 60 s) until `group`'s queue has `consumers` consumers.
    async fn wait_for_consumers(&self, group: &str, consumers: u32) {
        self.wait_for_consumer_count(group, |count| count >= consumers)
            .await;
    }

    /// Waits (up to 60 s, else fails) until the group's queue exists and its consumer count
    /// passes `check`.
    async fn wait_for_consumer_count(&self, group: &str, check: impl Fn(u32) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((_, count)) = self.queue_counts(group).await
                && check(count)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{group}'s consumers never reached the count awaited"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A queue's (messages, consumers), if it exists.
    async fn counts(&self, queue: &str) -> Option<(u32, u32)> {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .ok()?;
        let channel = conn.create_channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .ok()?;
        Some((q.message_count(), q.consumer_count()))
    }

    async fn queue_counts(&self, group: &str) -> Option<(u32, u32)> {
        self.counts(&self.queue(group)).await
    }

    /// Deletes the exchange, the groups' queues and the Redis keys.
    async fn cleanup(&self) {
        if let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await
            && let Ok(channel) = conn.create_channel().await
        {
            for group in &self.groups {
                for queue in [self.queue(group), format!("{}.dead", self.queue(group))] {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let keys = redis_keys(&format!("{}*", self.id)).await;
        if !keys.is_empty() {
            let mut redis = support::redis_conn().await;
            for chunk in keys.chunks(1000) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await;
            }
        }
    }
}

/// Every Redis key matching `pattern`.
async fn redis_keys(pattern: &str) -> Vec<String> {
    let mut redis = support::redis_conn().await;
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut redis)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Waits (up to `wait`) until `pattern` matches `count` Redis keys; answers how many it saw.
async fn wait_for_keys(pattern: &str, count: usize, wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    loop {
        let seen = redis_keys(pattern).await.len();
        if seen >= count || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A `wasmeca serve` process with `toml` (plugins and all), its log in the test's folder.
fn serve(dir: &std::path::Path, name: &str, toml: &str) -> Process {
    let config: PathBuf = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).expect("write the config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    Process(
        wasmeca_tests::wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .env("WASMECA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wasmeca starts"),
    )
}

/// The TOML of a chaos plugin observing `patterns`, recording under `mark`.
fn chaos_toml(patterns: &[&str], mark: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\noptions = {{ observe = {patterns:?}, mark = {mark:?} }}\n",
        plugin("chaos")
    )
}

/// Publishes `events` from the test with at most 200 in flight.
async fn publish_all(bus: Arc<AmqpBus>, events: impl Iterator<Item = Value>) {
    futures_util::stream::iter(events)
        .map(|event| {
            let bus = bus.clone();
            async move {
                let mut event = Message::new(event.as_object().cloned().expect("an object"));
                wasmeca::events::stamp(&mut event, None);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                bus.publish(event, deadline).await.expect("confirmed");
            }
        })
        .buffer_unordered(200)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_group_handles_every_event_though_a_host_is_killed_midway() {
    let mut broker = Broker::new();
    let (first, second) = (broker.group("billing"), broker.group("mailer"));
    let dir = std::env::temp_dir().join(format!("wasmeca-events-{}", broker.id));
    std::fs::create_dir_all(&dir).expect("dir");
    let (mark_a, mark_b) = (format!("{}a", broker.id), format!("{}b", broker.id));
    let toml = |group: &str, mark: &str| {
        format!(
            "listen = []\n[rest]\nlisten = \"off\"\n{}{}",
            broker.toml(group, ""),
            chaos_toml(&["evt:load"], mark)
        )
    };
    let mut killed = serve(&dir, "a1", &toml(&first, &mark_a));
    let _a2 = serve(&dir, "a2", &toml(&first, &mark_a));
    let _b = serve(&dir, "b", &toml(&second, &mark_b));
    broker.wait_for_consumers(&first, 2).await;
    broker.wait_for_consumers(&second, 1).await;
    let bus = Arc::new(broker.bus());
    const EVENTS: usize = 10_000;
    publish_all(
        bus.clone(),
        (0..3_000).map(|n| json!({"evt": "load", "n": n})),
    )
    .await;
    killed.0.kill().expect("SIGKILL the first host");
    let _ = killed.0.wait();
    publish_all(bus, (3_000..EVENTS).map(|n| json!({"evt": "load", "n": n}))).await;
    let wait = Duration::from_secs(180);
    let handled_a = wait_for_keys(&format!("{mark_a}:*"), EVENTS, wait).await;
    let handled_b = wait_for_keys(&format!("{mark_b}:*"), EVENTS, wait).await;
    assert_eq!(handled_a, EVENTS, "the first group handled every event");
    assert_eq!(handled_b, EVENTS, "the second group handled every event");
    for group in [&first, &second] {
        let dead = broker
            .counts(&format!("{}.dead", broker.queue(group)))
            .await;
        assert_eq!(
            dead.map(|c| c.0),
            Some(0),
            "nothing dead-lettered in {group}"
        );
    }
    broker.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_was_down_handles_the_events_published_meanwhile() {
    let mut broker = Broker::new();
    let group = broker.group("late");
    let mark = format!("{}late", broker.id);
    let options = json!({"observe": ["evt:missed"], "mark": mark});
    let extra = broker.toml(&group, "");
    // The group's queue is declared and bound the first time one of its hosts starts.
    let (h, stop) = host_with(&extra, &[("chaos", options.clone())]).await;
    broker.wait_for_consumers(&group, 1).await;
    stop.cancel();
    h.wait().await.expect("stopped");
    broker
        .wait_for_consumer_count(&group, |count| count == 0)
        .await;
    publish_all(
        Arc::new(broker.bus()),
        (0..500).map(|n| json!({"evt": "missed", "n": n})),
    )
    .await;
    assert_eq!(broker.queue_counts(&group).await.map(|c| c.0), Some(500));
    let (_h, stop) = host_with(&extra, &[("chaos", options)]).await;
    let handled = wait_for_keys(&format!("{mark}:*"), 500, Duration::from_secs(60)).await;
    assert_eq!(handled, 500);
    stop.cancel();
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_amqplib_publisher_reaches_wasmeca_observers() {
    let mut broker = Broker::new();
    let group = broker.group("node");
    let mark = format!("{}node", broker.id);
    let options = json!({"observe": ["evt:user,cmd:created"], "mark": mark});
    let (_h, stop) = host_with(&broker.toml(&group, ""), &[("chaos", options)]).await;
    broker.wait_for_consumers(&group, 1).await;
    let events = [
        json!({"evt": "user", "cmd": "created", "id": 7, "email": "a.b@example.com"}),
        json!({"evt": "user", "cmd": "removed", "id": 7}),
        json!({"cmd": "created", "evt": "user", "id": 8, "tx$": "nodetxnodetx"}),
    ];
    let mut args = vec!["--url", AMQP, "--exchange", &broker.exchange];
    let texts: Vec<String> = events.iter().map(Value::to_string).collect();
    for text in &texts {
        args.extend(["--event", text]);
    }
    let (_node, first) = NodeProcess::start("event-publish.js", &args);
    assert_eq!(first, json!({"published": 3}));
    // The observer recorded the two `created` events under their AMQP message ids, with the
    // publisher's tx where it gave one.
    let handled = wait_for_keys(&format!("{mark}:*"), 2, Duration::from_secs(30)).await;
    assert_eq!(handled, 2);
    let mut redis = support::redis_conn().await;
    let tx: Option<String> = redis::cmd("GET")
        .arg(format!("{mark}:node-2"))
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert!(
        tx.is_some_and(|t| t.contains("nodetxnodetx")),
        "the publisher's tx$ came through"
    );
    let removed: Option<String> = redis::cmd("GET")
        .arg(format!("{mark}:node-1"))
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(removed, None, "cmd:removed is not observed");
    stop.cancel();
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_observer_sends_its_event_to_the_dead_letter_queue_with_the_reason() {
    let mut broker = Broker::new();
    let group = broker.group("fragile");
    let options = json!({"observe": ["evt:fragile"], "mark": format!("{}f", broker.id)});
    let extra = broker.toml(&group, "attempts = 2\nretry_ms = 10\n");
    let (h, stop) = host_with(&extra, &[("chaos", options)]).await;
    broker.wait_for_consumers(&group, 1).await;
    publish_all(
        Arc::new(broker.bus()),
        [json!({"evt": "fragile", "fail": true, "n": 1})].into_iter(),
    )
    .await;
    // And one that is not JSON at all, straight to the exchange.
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            broker.exchange.as_str().into(),
            "evt.fragile".into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("sent");
    let dead = format!("{}.dead", broker.queue(&group));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "dead letters so far: {got:?}");
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
        {
            Some(message) => {
                let headers = message
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let text = |name: &str| match headers.inner().get(name) {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    Some(AMQPValue::FieldArray(items)) => items
                        .as_slice()
                        .iter()
                        .map(|item| match item {
                            AMQPValue::LongString(s) => s.to_string(),
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => format!("{other:?}"),
                };
                got.push((
                    String::from_utf8_lossy(&message.delivery.data).into_owned(),
                    text("x-wasmeca-reason"),
                    text("x-wasmeca-failures"),
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got.sort();
    let (body, reason, failures) = &got[0];
    assert!(body.contains("\"fail\":true"), "{body}");
    assert!(reason.contains("kept failing after 2 tries"), "{reason}");
    assert!(failures.contains("observer_failed"), "{failures}");
    let (body, reason, _) = &got[1];
    assert_eq!(body, "{not json");
    assert!(reason.contains("not JSON"), "{reason}");
    // Counted: two tries failed, one event dead-lettered.
    let metrics = h.router().metrics().encode();
    assert!(
        metrics
            .contains("wasmeca_events_total{pattern=\"evt:fragile\",outcome=\"dead_lettered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wasmeca_events_total{pattern=\"evt:fragile\",outcome=\"failed\"} 2"));
    stop.cancel();
    broker.cleanup().await;
}

#[test]
fn the_cli_publishes_and_each_group_handles_an_event_once() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut broker = Broker::new();
    let (first, second) = (broker.group("one"), broker.group("two"));
    let dir = std::env::temp_dir().join(format!("wasmeca-events-cli-{}", broker.id));
    std::fs::create_dir_all(&dir).expect("dir");
    let http = |port: u16| format!("listen = [{{ type = \"http\", port = {port} }}]\n");
    let ports: Vec<u16> = (0..3).map(|_| wasmeca_tests::free_port()).collect();
    let toml = |port: u16, group: &str| {
        format!(
            "{}[rest]\nlisten = \"off\"\n{}{}",
            http(port),
            broker.toml(group, ""),
            chaos_toml(&["evt:cli"], &format!("{}{group}", broker.id))
        )
    };
    let _a1 = serve(&dir, "a1", &toml(ports[0], &first));
    let _a2 = serve(&dir, "a2", &toml(ports[1], &first));
    let b = serve(&dir, "b", &toml(ports[2], &second));
    runtime.block_on(async {
        broker.wait_for_consumers(&first, 2).await;
        broker.wait_for_consumers(&second, 1).await;
    });
    let wasmeca = |args: &[&str]| {
        let out = wasmeca_tests::wasmeca_command!()
            .args(args)
            .output()
            .expect("wasmeca runs");
        assert!(
            out.status.success(),
            "wasmeca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // How many events the host on `port` observed (0 while it is not up yet).
    let observed = |port: u16| -> u64 {
        let url = format!("http://127.0.0.1:{port}/act");
        let out = wasmeca_tests::wasmeca_command!()
            .args(["act", "--url", &url, "chaos:observed"])
            .output()
            .expect("wasmeca runs");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|a| a["observed"].as_u64())
            .unwrap_or(0)
    };
    let amqp = format!("--amqp={AMQP}");
    let id = wasmeca(&[
        "publish",
        &amqp,
        "--exchange",
        &broker.exchange,
        "evt:cli,n:0",
    ]);
    assert_eq!(id.len(), 12, "the event's id: {id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while observed(ports[0]) + observed(ports[1]) + observed(ports[2]) < 2 {
        assert!(Instant::now() < deadline, "the event was not handled");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        observed(ports[0]) + observed(ports[1]),
        1,
        "once in the first group"
    );
    assert_eq!(observed(ports[2]), 1, "once in the second group");
    // The second group stops; three events are published through a host of the first.
    drop(b);
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker.queue_counts(&second).await.map(|c| c.1) != Some(0) {
            assert!(
                Instant::now() < deadline,
                "the second group's host did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let url = format!("http://127.0.0.1:{}/act", ports[0]);
    for n in 1..=3 {
        wasmeca(&["publish", "--url", &url, &format!("evt:cli,n:{n}")]);
    }
    let _b = serve(&dir, "b2", &toml(ports[2], &second));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = observed(ports[2]);
        if seen == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted group saw {seen} of 3"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    runtime.block_on(broker.cleanup());
    let _ = std::fs::remove_dir_all(&dir);
}
