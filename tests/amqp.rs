//! The AMQP transport against the real RabbitMQ on 127.0.0.1:5672: the seed scenario
//! (commands wait for a host), hosts sharing pins, SIGKILL and connection loss without lost
//! commands, bad input dead-lettered, fire-and-forget commands acted, the history cache, and interop with the npm
//! `seneca-amqp-transport` in both directions. Each test uses its own exchange and queue
//! names, and deletes them at the end.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use wasmeca::config::AmqpClientConfig as ClientConfig;
use wasmeca::pattern::Pattern;
use wasmeca::transport::amqp::{AmqpClient, Sent, queue_name, routing_key};
use wasmeca::{CancellationToken, Host, Message};
use wasmeca_tests::{NodeProcess, node_client, plugin};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn unique() -> String {
    wasmeca::message::new_id()
}

/// Names one test uses, deleted when it ends.
struct Names {
    /// The topic exchange.
    exchange: String,
    /// The listener's queue prefix.
    prefix: String,
    /// The listener's dead-letter exchange: the test's own, never the broker's shared
    /// `seneca.dlx`, whose queue holds whatever every earlier run dead-lettered.
    dlx: String,
    /// The listener's dead-letter queue, the test's own.
    dlq: String,
    /// Queues to delete at the end.
    queues: Vec<String>,
}

impl Names {
    fn new() -> Self {
        let id = unique();
        let dlq = format!("test.{id}.dlq");
        Self {
            exchange: format!("test.{id}.topic"),
            prefix: format!("test.{id}.add"),
            dlx: format!("test.{id}.dlx"),
            queues: vec![dlq.clone()],
            dlq,
        }
    }

    fn queue(&mut self, pin: &str) -> String {
        let name = queue_name(&self.prefix, &[pin]).expect("pin parses");
        self.queues.push(name.clone());
        name
    }

    async fn cleanup(&self) {
        let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await else {
            return;
        };
        let Ok(channel) = conn.create_channel().await else {
            return;
        };
        for queue in &self.queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&self.exchange, &self.dlx]
            .into_iter()
            .filter(|e| !e.is_empty())
        {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

impl Drop for Names {
    /// Deletes the test's queues and exchanges also when it fails (a panic skips the
    /// `cleanup().await` at its end).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let names = Names {
            exchange: self.exchange.clone(),
            prefix: self.prefix.clone(),
            dlx: self.dlx.clone(),
            dlq: self.dlq.clone(),
            queues: std::mem::take(&mut self.queues),
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(names.cleanup());
            }
        })
        .join();
    }
}

fn listen_toml(names: &Names, pins: &[&str]) -> String {
    let pins: Vec<String> = pins.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[[listen]]\ntype = \"amqp\"\nexchange = {:?}\nqueue_prefix = {:?}\npins = [{}]\nprefetch = 32\n\
         dead_letter_exchange = {:?}\ndead_letter_queue = {:?}\n",
        names.exchange,
        names.prefix,
        pins.join(", "),
        names.dlx,
        names.dlq
    )
}

/// A host listening on AMQP (and nothing else), with chaos named `name`.
async fn host(names: &Names, pins: &[&str], name: &str, extra: &str) -> (Host, CancellationToken) {
    let mut toml = String::from("[rest]\nlisten = \"off\"\n");
    toml.push_str(&listen_toml(names, pins));
    toml.push_str(extra);
    toml.push_str(&format!(
        "[[plugin]]\npath = {:?}\noptions = {{ name = {name:?} }}\n",
        plugin("chaos")
    ));
    toml.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin("salute")));
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The listener declares its queues asynchronously: wait until they exist.
    wait_for_queues(names, pins).await;
    (host, stop)
}

async fn wait_for_queues(names: &Names, pins: &[&str]) {
    for pin in pins {
        wait_for_consumers(names, pin, 0).await;
    }
}

/// Waits (up to 60 s, else fails) until the queue of `pin` exists with more than `more_than`
/// consumers.
async fn wait_for_consumers(names: &Names, pin: &str, more_than: u32) {
    let queue = queue_name(&names.prefix, &[pin]).expect("pin");
    wait_for_queue(&queue, more_than).await;
}

/// Waits (up to 60 s, else fails) until `queue` exists with more than `more_than` consumers.
async fn wait_for_queue(queue: &str, more_than: u32) {
    let what = format!("more than {more_than} consumers");
    wait_until(queue, &what, |_, consumers| consumers > more_than).await;
}

/// Waits (up to 60 s, else fails, saying `what` it waited for) until `queue` exists and
/// `holds(ready messages, consumers)`.
async fn wait_until(queue: &str, what: &str, holds: impl Fn(u32, u32) -> bool) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let channel = conn.create_channel().await.expect("channel");
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await;
        if declared.is_ok_and(|q| holds(q.message_count(), q.consumer_count())) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{queue}: no {what} after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client(names: &Names) -> AmqpClient {
    let config = ClientConfig {
        exchange: names.exchange.clone(),
        ..ClientConfig::default()
    };
    AmqpClient::new(config, wasmeca::message::instance_id())
}

fn msg(v: Value) -> Message {
    Message::new(v.as_object().cloned().expect("object"))
}

/// Acts `m` through `client` with the routing key of `pin`, waiting up to `secs`.
async fn act(
    client: &AmqpClient,
    pin: &str,
    m: Value,
    secs: u64,
) -> Result<Value, wasmeca::ActError> {
    let pin: Pattern = pin.parse().expect("pin");
    let m = msg(m);
    let key = routing_key(&pin, &m);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    match client
        .send(&m, &wasmeca::message::new_id(), &key, deadline, true)
        .await?
    {
        Sent::Routed(Some(answer)) => answer.map(|r| r.to_value()),
        Sent::Routed(None) => panic!("no reply awaited"),
        Sent::Unroutable => panic!("no queue bound for {key}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_scenario_commands_sent_while_no_host_runs_are_answered_when_one_starts() {
    let mut names = Names::new();
    names.queue("chaos:whoami");
    // A host declares the durable queue, then stops.
    let (first, stop) = host(&names, &["chaos:whoami"], "first", "").await;
    stop.cancel();
    first.wait().await.expect("stops");
    // Commands published now wait in the queue.
    let c = client(&names);
    let mut pending = Vec::new();
    for n in 0..20 {
        let c = c.clone();
        pending.push(tokio::spawn(async move {
            act(&c, "chaos:whoami", json!({"chaos": "whoami", "n": n}), 60).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pending.iter().all(|t| !t.is_finished()),
        "nobody is listening yet"
    );
    let (_second, stop) = host(&names, &["chaos:whoami"], "second", "").await;
    let mut seen = HashSet::new();
    for task in pending {
        let answer = task.await.expect("task").expect("answered");
        assert_eq!(answer["name"], "second");
        seen.insert(answer["n"].as_i64().expect("n"));
    }
    assert_eq!(seen.len(), 20, "every command answered once");
    stop.cancel();
    names.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_share_the_load_and_stopping_one_loses_nothing() {
    let mut names = Names::new();
    names.queue("chaos:whoami");
    let (a, stop_a) = host(&names, &["chaos:whoami"], "a", "").await;
    let (_b, stop_b) = host(&names, &["chaos:whoami"], "b", "").await;
    wait_for_consumers(&names, "chaos:whoami", 1).await;
    let c = client(&names);
    let send = |from: i64, to: i64| {
        (from..to)
            .map(|n| {
                let c = c.clone();
                tokio::spawn(async move {
                    act(
                        &c,
                        "chaos:whoami",
                        json!({"chaos": "whoami", "n": n, "ms": 5}),
                        60,
                    )
                    .await
                })
            })
            .collect::<Vec<_>>()
    };
    let mut by_host = std::collections::HashMap::<String, usize>::new();
    // Both hosts consume the same queue: the broker shares the commands between them.
    for task in send(0, 100) {
        let answer = task.await.expect("task").expect("answered");
        *by_host
            .entry(answer["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert!(
        by_host.get("a").copied().unwrap_or(0) > 0 && by_host.get("b").copied().unwrap_or(0) > 0,
        "{by_host:?}"
    );
    // Stop one while commands are in flight: every command is still answered.
    let second = send(100, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_a.cancel();
    for task in second {
        let answer = task.await.expect("task").expect("every command answered");
        *by_host
            .entry(answer["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    a.wait().await.expect("a stops cleanly");
    assert_eq!(by_host.values().sum::<usize>(), 200);
    stop_b.cancel();
    names.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_host_loses_no_command() {
    let mut names = Names::new();
    names.queue("chaos:whoami");
    // Host A is a real process, so it can be SIGKILLed.
    let dir = std::env::temp_dir().join(format!("wasmeca-amqp-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config: PathBuf = dir.join("wasmeca.toml");
    let toml = format!(
        "[rest]\nlisten = \"off\"\n{}[[plugin]]\npath = {:?}\noptions = {{ name = \"killed\" }}\n",
        listen_toml(&names, &["chaos:whoami"]),
        plugin("chaos")
    );
    std::fs::write(&config, toml).expect("write config");
    let mut killed = wasmeca_tests::wasmeca_command!()
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wasmeca starts");
    wait_for_queues(&names, &["chaos:whoami"]).await;
    let (_survivor, stop) = host(&names, &["chaos:whoami"], "survivor", "").await;
    let c = client(&names);
    let mut tasks = Vec::new();
    let answered_by_killed = Arc::new(AtomicUsize::new(0));
    for n in 0..150 {
        let c = c.clone();
        let answered_by_killed = answered_by_killed.clone();
        tasks.push(tokio::spawn(async move {
            let answer = act(
                &c,
                "chaos:whoami",
                json!({"chaos": "whoami", "n": n, "ms": 20}),
                90,
            )
            .await;
            if answer.as_ref().is_ok_and(|a| a["name"] == "killed") {
                answered_by_killed.fetch_add(1, Ordering::Relaxed);
            }
            answer
        }));
    }
    // SIGKILL once the host has answered some commands, with more of them in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answered_by_killed.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the host to be killed never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-KILL", &killed.id().to_string()])
        .status()
        .expect("kill");
    let _ = killed.wait();
    let mut seen = HashSet::new();
    let mut by_host = std::collections::HashMap::<String, usize>::new();
    for task in tasks {
        let answer = task
            .await
            .expect("task")
            .expect("every command answered, by the survivor if need be");
        seen.insert(answer["n"].as_i64().expect("n"));
        *by_host
            .entry(answer["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 150, "{by_host:?}");
    assert!(
        by_host.get("killed").copied().unwrap_or(0) > 0,
        "the killed host had started: {by_host:?}"
    );
    stop.cancel();
    names.cleanup().await;
}

/// Regression (fault run): `timeout$: 1e308` on a looping command held the listener's
/// delivery forever and SIGTERM never completed. Now the call is cut at the drain timeout, the
/// host exits, and the command goes back to the broker for another host.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_looping_command_exits_within_the_drain_timeout_and_returns_it() {
    let mut names = Names::new();
    let queue = names.queue("chaos:loop");
    let dir = std::env::temp_dir().join(format!("wasmeca-amqp-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config: PathBuf = dir.join("wasmeca.toml");
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[limits]\ndrain_timeout_ms = 1000\nmax_timeout_ms = 600000\n{}[[plugin]]\npath = {:?}\n",
        listen_toml(&names, &["chaos:loop"]),
        plugin("chaos")
    );
    std::fs::write(&config, toml).expect("write config");
    let mut host = wasmeca_tests::wasmeca_command!()
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wasmeca starts");
    wait_for_queues(&names, &["chaos:loop"]).await;
    let c = client(&names);
    let key = routing_key(
        &Pattern::parse("chaos:loop").expect("pin"),
        &Default::default(),
    );
    let msg = Message::new(
        json!({"chaos": "loop", "timeout$": 1e308})
            .as_object()
            .cloned()
            .expect("object"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let sent = c.send(&msg, "looptx", &key, deadline, false).await;
    assert!(matches!(sent, Ok(Sent::Routed(None))), "published");
    // Let the host take it (nothing left ready in the queue) and start looping.
    wait_until(&queue, "its command taken", |ready, _| ready == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .expect("kill");
    let status = loop {
        if let Some(status) = host.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the host did not exit within the drain timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    // The command is back in its queue, marked redelivered, for another host.
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    let got = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic_get")
        .expect("the command is back in its queue");
    assert!(got.delivery.redelivered, "it was delivered before");
    let envelope: Value = serde_json::from_slice(&got.delivery.data).expect("JSON");
    assert_eq!(envelope["act"]["chaos"], "loop");
    let _ = std::fs::remove_dir_all(&dir);
    names.cleanup().await;
}

/// Closes the broker side of every connection whose name contains `marker`.
fn close_connections(marker: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--quiet",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(marker)) {
        let pid = line.split_whitespace().next().unwrap_or("");
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test closes it"])
            .status();
        if status.is_ok_and(|s| s.success()) {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_connection_is_recovered_and_commands_are_answered() {
    let mut names = Names::new();
    names.queue("chaos:whoami");
    let (host_a, stop) = host(&names, &["chaos:whoami"], "recovering", "").await;
    let c = client(&names);
    assert_eq!(
        act(&c, "chaos:whoami", json!({"chaos": "whoami"}), 20)
            .await
            .expect("before")["name"],
        "recovering"
    );
    let marker = format!("wasmeca listener {} ", names.exchange);
    assert!(
        close_connections(&marker) >= 1,
        "the listener's connection was found and closed"
    );
    // Commands sent right away wait in the queue until the listener is back, which takes
    // about a second at most (the reconnection backoff is capped at 1 s).
    let closed = std::time::Instant::now();
    let answer = act(&c, "chaos:whoami", json!({"chaos": "whoami", "n": 1}), 30)
        .await
        .expect("after");
    assert_eq!(answer["name"], "recovering");
    assert!(
        closed.elapsed() < Duration::from_secs(3),
        "the listener took {:?} to come back",
        closed.elapsed()
    );
    stop.cancel();
    host_a.wait().await.expect("stops");
    names.cleanup().await;
}

/// Publishes raw bytes with the given properties to `exchange`/`key`.
async fn publish_raw(exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
}

/// An exclusive reply queue of the test's own on a new connection (kept open by the caller):
/// the connection, its channel and the queue's name.
async fn reply_queue() -> (Connection, lapin::Channel, String) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    let replies = format!("test.{}.replies", unique());
    let exclusive = lapin::options::QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(replies.as_str().into(), exclusive, FieldTable::default())
        .await
        .expect("reply queue");
    (conn, channel, replies)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_with_an_error_and_dead_lettered_and_the_host_keeps_consuming() {
    let mut names = Names::new();
    names.queue("chaos:echo");
    let (h, stop) = host(&names, &["chaos:echo"], "bad", "").await;
    // A reply queue of our own to see the error replies.
    let (_conn, channel, replies) = reply_queue().await;
    let marker = unique();
    let with_reply = |n: &str| {
        BasicProperties::default()
            .with_reply_to(replies.as_str().into())
            .with_message_id(format!("{marker}-{n}").into())
    };
    let key = "chaos.echo";
    publish_raw(&names.exchange, key, b"{not json", with_reply("json")).await;
    publish_raw(
        &names.exchange,
        key,
        br#"{"id":"x/y","kind":"act"}"#,
        with_reply("noact"),
    )
    .await;
    publish_raw(
        &names.exchange,
        key,
        br#"{"id":"x/z","kind":"res","act":{"chaos":"echo"}}"#,
        with_reply("kind"),
    )
    .await;
    let no_reply = BasicProperties::default().with_message_id(format!("{marker}-noreply").into());
    publish_raw(
        &names.exchange,
        key,
        br#"{"id":"x/w","kind":"act","act":{"chaos":"echo"}}"#,
        no_reply,
    )
    .await;

    // Three error replies; the fire-and-forget command (no reply address) is acted.
    let mut codes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(m) = channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            let body: Value = serde_json::from_slice(&m.delivery.data).expect("reply is JSON");
            assert!(body.get("input").is_some(), "{body}");
            codes.push(body["error"]["code"].as_str().unwrap_or("").to_owned());
            if codes.len() == 3 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    codes.sort();
    assert_eq!(codes, ["invalid_act", "invalid_json", "invalid_kind_act"]);

    // The three are in the listener's dead-letter queue (the test's own).
    let mut found = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while found.len() < 3 && std::time::Instant::now() < deadline {
        match channel
            .basic_get(names.dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(m) => {
                let id = m
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                assert!(
                    id.starts_with(&marker),
                    "a stranger in this test's DLQ: {id}"
                );
                found.insert(id);
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(!found.contains(&format!("{marker}-noreply")), "{found:?}");
    let acted = || {
        h.router().metrics().encode().lines().any(|l| {
            l.starts_with("wasmeca_acts_total")
                && l.contains("chaos:echo")
                && l.contains("\"ok\"")
                && l.ends_with(" 1")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !acted() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command without a reply address was acted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The host kept consuming: action errors and unknown patterns are error replies.
    let c = client(&names);
    let e = act(&c, "chaos:echo", json!({"chaos": "echo", "x": 1}), 20)
        .await
        .expect("answered");
    assert_eq!(e["x"], 1);
    stop.cancel();
    names.cleanup().await;
}

/// Regression (fault run): a 100 MB AMQP body came back as a 100 MB error reply and left the
/// host at 645 MB (and later at 260 MB RSS, 130 MB of it held, until the host next had work).
/// A command over `max_message_bytes` is dead-lettered with the reason, its error reply is
/// small, replies are as persistent as their commands, and the memory is given back at once:
/// the host holds within 20 MB of what it held before.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_command_is_dead_lettered_without_echo_and_replies_keep_persistence() {
    let mut names = Names::new();
    names.queue("chaos:echo");
    let dlq = names.dlq.clone();
    let dir = std::env::temp_dir().join(format!("wasmeca-amqp-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config: PathBuf = dir.join("wasmeca.toml");
    let listen = listen_toml(&names, &["chaos:echo"]);
    let toml = format!(
        "[rest]\nlisten = \"off\"\n{listen}[[plugin]]\npath = {:?}\n",
        plugin("chaos")
    );
    std::fs::write(&config, toml).expect("write config");
    // The plugin compiled once beforehand, as any host after its first start finds it: this
    // test measures what a huge command leaves behind, not cranelift's peak, which the
    // allocator keeps after a cold compile (BENCHMARKS.md, "Memory after a cold compile").
    let warmed = wasmeca_tests::wasmeca_command!()
        .arg("act")
        .arg(plugin("chaos"))
        .arg("chaos:ok")
        .output()
        .expect("wasmeca act runs");
    assert!(warmed.status.success(), "{warmed:?}");
    let host = wasmeca_tests::Process(
        wasmeca_tests::wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wasmeca starts"),
    );
    let pid = host.0.id();
    wait_for_queues(&names, &["chaos:echo"]).await;
    let (_conn, channel, replies) = reply_queue().await;
    let persistent = |id: &str| {
        BasicProperties::default()
            .with_reply_to(replies.as_str().into())
            .with_delivery_mode(2)
            .with_message_id(id.into())
    };
    // An ordinary persistent command: its reply is persistent too.
    let ok = json!({"id": "p/q", "kind": "act", "origin": "t", "act": {"chaos": "echo", "n": 1}});
    publish_raw(
        &names.exchange,
        "chaos.echo",
        ok.to_string().as_bytes(),
        persistent("ok"),
    )
    .await;
    // What the host holds before the huge command, once it has answered one.
    let mut before = u64::MAX;
    for _ in 0..100 {
        if let Some(m) = channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            let body: Value = serde_json::from_slice(&m.delivery.data).expect("JSON");
            assert_eq!(body["res"]["n"], 1, "{body}");
            assert_eq!(
                *m.delivery.properties.delivery_mode(),
                Some(2),
                "persistent"
            );
            before = wasmeca_tests::held(pid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(before < u64::MAX, "the ordinary command was answered");
    eprintln!(
        "host memory held before the 100 MB command: {} MB",
        before >> 20
    );
    // 100 MB of garbage.
    let huge = vec![b'x'; 100 << 20];
    publish_raw(&names.exchange, "chaos.echo", &huge, persistent("huge")).await;
    drop(huge);
    let mut got = Vec::new();
    for _ in 0..1_000 {
        if let Some(m) = channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            got.push(m);
            break;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(got.len(), 1, "the huge command answered");
    // Given back at once, not when the host next has work: within a few MB of before (pages
    // the allocator released lazily, MADV_FREE, still count in RSS until the kernel wants
    // them; `held` leaves them out).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = wasmeca_tests::held(pid);
    eprintln!(
        "right after the refusal: host RSS {} MB, held {} MB",
        wasmeca_tests::rss(pid) >> 20,
        after >> 20
    );
    assert!(
        after < before + (20 << 20),
        "a refused 100 MB command left the host holding {} MB, from {} MB",
        after >> 20,
        before >> 20
    );
    for m in &got {
        assert!(
            m.delivery.data.len() < 20_000,
            "a reply of {} bytes",
            m.delivery.data.len()
        );
        assert_eq!(
            *m.delivery.properties.delivery_mode(),
            Some(2),
            "persistent like its command"
        );
    }
    let bodies: Vec<Value> = got
        .iter()
        .map(|m| serde_json::from_slice(&m.delivery.data).expect("JSON"))
        .collect();
    let refused = bodies
        .iter()
        .find(|b| b["error"]["code"] == "message_too_large")
        .expect("the huge one is refused");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("104857600 bytes"),
        "{refused}"
    );
    // It is in the dead-letter queue.
    let mut dead = None;
    for _ in 0..200 {
        dead = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get");
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = dead.expect("dead-lettered");
    assert_eq!(dead.delivery.data.len(), 100 << 20);
    drop(dead);
    // The host keeps consuming, and stays where it was: lapin holds the whole body (growing
    // its buffer by doubling, so the peak is about twice the body), the listener frees it
    // before anything else and has the allocator return it to the OS at once (its purges are
    // otherwise delayed until the threads that held it allocate again).
    let c = client(&names);
    let mut resident = u64::MAX;
    for round in 0..20 {
        for x in 0..50 {
            let answer = act(&c, "chaos:echo", json!({"chaos": "echo", "x": x}), 20)
                .await
                .expect("answered");
            assert_eq!(answer["x"], x);
        }
        resident = wasmeca_tests::held(pid);
        eprintln!(
            "round {round}: host RSS {} MB, of it held (not lazily freed) {} MB",
            wasmeca_tests::rss(pid) >> 20,
            resident >> 20
        );
        if resident < before + (20 << 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    eprintln!(
        "host memory held after the 100 MB command: {} MB ({peak})",
        resident >> 20
    );
    assert!(
        resident < before + (20 << 20),
        "host holds {} MB",
        resident >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
    names.cleanup().await;
}

/// Regression (fault run): a broker that accepts TCP but never speaks AMQP hung both
/// `act --amqp` and the listener. Connecting gives up after its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_broker_hangs_neither_the_client_nor_the_listener() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (accepted, accepts) = std::sync::mpsc::channel();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = silent.accept() {
            kept.push(stream);
            let _ = accepted.send(());
            if kept.len() > 20 {
                break;
            }
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let started = std::time::Instant::now();
    let out = wasmeca_tests::wasmeca_command!()
        .args(["act", &format!("--amqp={url}"), "cmd:salute"])
        .output()
        .expect("act runs");
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "act --amqp took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no AMQP handshake within"), "{stderr}");
    // A host listening there still stops at once.
    let dir = std::env::temp_dir().join(format!("wasmeca-amqp-{}", unique()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config: PathBuf = dir.join("wasmeca.toml");
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"amqp\"\nurl = {url:?}\npins = [\"cmd:salute\"]\nconnect_timeout_ms = 60000\n[[plugin]]\npath = {:?}\n",
        plugin("salute")
    );
    std::fs::write(&config, toml).expect("write config");
    while accepts.try_recv().is_ok() {} // the act's connection
    let mut host = wasmeca_tests::wasmeca_command!()
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wasmeca starts");
    // Once the host has connected to the silent broker it is past installing its signal
    // handlers (a SIGTERM before that would kill it by default, not test it).
    accepts
        .recv_timeout(Duration::from_secs(60))
        .expect("the host connects to the silent broker");
    Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .expect("kill");
    let signalled = std::time::Instant::now();
    let status = loop {
        if let Some(status) = host.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(4),
            "the host hung on a silent broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    drop(std::net::TcpStream::connect(("127.0.0.1", port)));
    let _ = held;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_and_unknown_patterns_are_replies_and_a_repeated_id_is_answered_from_history() {
    let mut names = Names::new();
    names.queue("chaos:*");
    let (_h, stop) = host(&names, &["chaos:*"], "errors", "").await;
    let c = client(&names);
    let fail = act(&c, "chaos:*", json!({"chaos": "fail"}), 20)
        .await
        .expect_err("an error reply");
    assert_eq!((fail.code.as_str(), fail.status), ("boom", Some(418)));
    let unknown = act(&c, "chaos:*", json!({"chaos": "nobody"}), 20)
        .await
        .expect_err("an error reply");
    assert_eq!(unknown.code, "act_not_found");
    assert_eq!(
        act(&c, "chaos:*", json!({"chaos": "ok"}), 20)
            .await
            .expect("still serving")["ok"],
        true
    );

    // The same envelope id twice: the second reply is the cached first.
    let (_conn, channel, replies) = reply_queue().await;
    let envelope = json!({"id": format!("{}/{}", unique(), unique()), "kind": "act", "origin": "test", "act": {"chaos": "whoami"}});
    let props = || BasicProperties::default().with_reply_to(replies.as_str().into());
    publish_raw(
        &names.exchange,
        "chaos.whoami",
        envelope.to_string().as_bytes(),
        props(),
    )
    .await;
    publish_raw(
        &names.exchange,
        "chaos.whoami",
        envelope.to_string().as_bytes(),
        props(),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..300 {
        if let Some(m) = channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            got.push(serde_json::from_slice::<Value>(&m.delivery.data).expect("JSON"));
            if got.len() == 2 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["res"], got[1]["res"], "the same answer");
    assert_eq!(got[0]["kind"], "res");
    assert_eq!(got[0]["id"], envelope["id"]);
    let calls = got[0]["res"]["calls"].as_i64().expect("calls");
    let next = act(&c, "chaos:*", json!({"chaos": "whoami"}), 20)
        .await
        .expect("answered");
    assert_eq!(
        next["calls"].as_i64(),
        Some(calls + 1),
        "the repeated id did not run the action again"
    );
    stop.cancel();
    names.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_seneca_amqp_transport_interoperates_both_ways() {
    // Node's scripts use Seneca's exchange: keep the queue names unique.
    let id = unique();
    let mut cleanup = Names {
        exchange: String::new(),
        prefix: String::new(),
        dlx: String::new(),
        dlq: String::new(),
        queues: Vec::new(),
    };

    // 1. A Node client acts against a wasmeca listener.
    let wasmeca_queue = format!("test.{id}.wasmeca");
    cleanup.queues.push(wasmeca_queue.clone());
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"amqp\"\nname = {wasmeca_queue:?}\npins = [\"role:math,cmd:*\", \"cmd:salute\"]\n\
         [[plugin]]\npath = {:?}\n[[plugin]]\npath = {:?}\n",
        plugin("math"),
        plugin("salute")
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    wait_for_queue(&wasmeca_queue, 0).await;
    let msgs = json!([
        {"role": "math", "cmd": "sum", "left": 1, "right": 2},
        {"cmd": "salute", "name": "Zoë"},
        {"role": "math", "cmd": "divide", "left": 1, "right": 2}
    ])
    .to_string();
    let lines = tokio::task::spawn_blocking(move || {
        node_client(
            "amqp-client.js",
            &[
                "--url",
                URL,
                "--pin",
                "role:math,cmd:*",
                "--pin",
                "cmd:salute",
                "--msgs",
                &msgs,
                "--timeout",
                "15000",
            ],
        )
    })
    .await
    .expect("node");
    assert_eq!(lines[0]["result"], json!({"answer": 3}), "{lines:?}");
    assert_eq!(lines[1]["result"]["message"], "Hello Zoë!");
    assert_eq!(lines[2]["ok"], false);
    assert_eq!(lines[2]["error"]["code"], "act_not_found", "{}", lines[2]);
    stop.cancel();
    host.wait().await.expect("stops");

    // 2. wasmeca's client acts against a Node listener.
    let node_queue = format!("test.{id}.node");
    cleanup.queues.push(node_queue.clone());
    let (_node, ready) = tokio::task::spawn_blocking(move || {
        NodeProcess::start(
            "amqp-listen.js",
            &[
                "--url",
                URL,
                "--pin",
                "role:math,cmd:*",
                "--name",
                &node_queue,
            ],
        )
    })
    .await
    .expect("node");
    assert_eq!(ready["ready"], true);
    let toml = "listen = []\n[rest]\nlisten = \"off\"\n[[client]]\ntype = \"amqp\"\npin = \"role:math,cmd:*\"\n";
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let caller = Host::start(&config, stop.clone()).await.expect("host");
    let answer = caller
        .router()
        .act(msg(
            json!({"role": "math", "cmd": "product", "left": 6, "right": 7}),
        ))
        .await;
    assert_eq!(
        answer.expect("Node answered").to_value(),
        json!({"answer": 42})
    );
    stop.cancel();
    caller.wait().await.expect("stops");
    cleanup.cleanup().await;
}

/// Runs the `wasmeca` binary to completion.
fn wasmeca(args: &[&str]) -> std::process::Output {
    wasmeca_tests::wasmeca_command!()
        .args(args)
        .output()
        .expect("wasmeca runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_serves_with_amqp_and_acts_over_amqp() {
    // `serve --amqp` uses Seneca's own exchange and queue names: chaos's patterns are served
    // there by no other test.
    let served = wasmeca_tests::Process(
        wasmeca_tests::wasmeca_command!()
            .args(["serve", "--amqp", "--rest", "off", "--http", "off"])
            .arg(plugin("chaos"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let seneca = Names {
        exchange: "seneca.topic".into(),
        prefix: "seneca.add".into(),
        dlx: String::new(),
        dlq: String::new(),
        queues: Vec::new(),
    };
    wait_for_queues(&seneca, &["chaos:whoami", "chaos:fail"]).await;

    let out = tokio::task::spawn_blocking(|| wasmeca(&["act", "--amqp", "chaos:whoami,n:7"]))
        .await
        .expect("act");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["n"], 7, "{answer}");

    // A plugin error is printed as Seneca's error and the exit code says so.
    let out = tokio::task::spawn_blocking(|| wasmeca(&["act", "--amqp", "chaos:fail"]))
        .await
        .expect("act");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(error["code"], "boom", "{error}");
    assert_eq!(error["details"]["why"], "asked to", "{error}");

    // Nobody listens: the error says so instead of waiting for the timeout.
    let out = tokio::task::spawn_blocking(|| {
        wasmeca(&["act", "--amqp", &format!("nobody{}:here", unique())])
    })
    .await
    .expect("act");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no AMQP queue on seneca.topic is bound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    drop(served);
    // Delete the queues the host declared under Seneca's names.
    let listed = Command::new("rabbitmqctl")
        .args(["list_queues", "name", "--quiet", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl runs");
    let mut cleanup = seneca;
    cleanup.exchange.clear();
    cleanup.queues = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|q| q.starts_with("seneca.add.chaos:"))
        .map(str::to_owned)
        .collect();
    cleanup.cleanup().await;
}

/// The type of each queue on the broker, by name (`rabbitmqctl list_queues name type`).
fn queue_types() -> std::collections::HashMap<String, String> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "name", "type", "-q", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Issue 18 item 1: with `[amqp] queue_type = "quorum"` the command queue and the dead-letter
/// queue are quorum queues; an unchanged Node seneca-amqp-transport listener given the quorum
/// arguments (tests/node/common.js, `amqpOptions`) consumes the same command queue beside
/// wasmeca, and a Node client given the dead-letter queue's is answered by both. A queue that
/// already exists as a classic one stops the host with an error that names it and both types,
/// instead of reconnecting forever.
#[tokio::test(flavor = "multi_thread")]
async fn quorum_queues_are_shared_with_node_and_a_type_mismatch_stops_the_host() {
    let mut names = Names::new();
    let queue = format!("{}.cmd:salute", names.prefix);
    names.queues.push(queue.clone());
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[amqp]\nqueue_type = \"quorum\"\n[[listen]]\ntype = \"amqp\"\n\
         name = {queue:?}\nexchange = {:?}\ndead_letter_exchange = {:?}\ndead_letter_queue = {:?}\n\
         pins = [\"cmd:salute\"]\n[[plugin]]\npath = {:?}\n",
        names.exchange,
        names.dlx,
        names.dlq,
        plugin("salute")
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    wait_for_queue(&queue, 0).await;
    let types = tokio::task::spawn_blocking(queue_types)
        .await
        .expect("types");
    assert_eq!(
        types.get(&queue).map(String::as_str),
        Some("quorum"),
        "{types:?}"
    );
    assert_eq!(
        types.get(&names.dlq).map(String::as_str),
        Some("quorum"),
        "{types:?}"
    );

    let shared = [
        "--url",
        URL,
        "--exchange",
        &names.exchange,
        "--dlx",
        &names.dlx,
        "--dlq",
        &names.dlq,
        "--quorum",
        "true",
    ];
    let mut listen_args = shared.to_vec();
    listen_args.extend(["--pin", "cmd:salute", "--name", &queue]);
    let (node_listener, ready) =
        tokio::task::block_in_place(|| NodeProcess::start("amqp-listen.js", &listen_args));
    assert_eq!(ready["ready"], true, "{ready}");
    wait_for_queue(&queue, 1).await;
    let msgs: Vec<Value> = (0..40)
        .map(|i| json!({"cmd": "salute", "name": format!("q{i}")}))
        .collect();
    let msgs = Value::Array(msgs).to_string();
    let mut client_args: Vec<String> = shared.iter().map(|s| (*s).to_owned()).collect();
    client_args
        .extend(["--pin", "cmd:salute", "--concurrency", "8", "--msgs", &msgs].map(str::to_owned));
    let lines = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = client_args.iter().map(String::as_str).collect();
        node_client("amqp-client.js", &args)
    })
    .await
    .expect("node client");
    assert_eq!(lines.len(), 40, "{lines:?}");
    let answers: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["ok"], true, "{l}");
            l["result"]["message"].as_str().unwrap_or("")
        })
        .collect();
    let by_node = answers.iter().filter(|a| a.ends_with("from Node!")).count();
    assert!(
        by_node > 0 && by_node < 40,
        "both listeners share the quorum queue: {by_node} of 40 answered by Node"
    );
    drop(node_listener);
    stop.cancel();
    host.wait().await.expect("the host stops cleanly");

    // A classic queue where the configuration asks for a quorum one: as a Node listener
    // declared it before the cluster moved to quorum queues (its arguments, no type).
    let classic = format!("{}.classic", names.prefix);
    let mut node_args = FieldTable::default();
    node_args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString(names.dlx.as_str().into()),
    );
    node_args.insert(
        "x-message-ttl".into(),
        lapin::types::AMQPValue::LongInt(60_000),
    );
    names.queues.push(classic.clone());
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            classic.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            node_args,
        )
        .await
        .expect("a classic queue");
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[amqp]\nqueue_type = \"quorum\"\n[[listen]]\ntype = \"amqp\"\n\
         name = {classic:?}\nexchange = {:?}\ndead_letter_exchange = {:?}\ndead_letter_queue = {:?}\n\
         pins = [\"cmd:salute\"]\n[[plugin]]\npath = {:?}\n",
        names.exchange,
        names.dlx,
        names.dlq,
        plugin("salute")
    );
    let config = wasmeca_tests::test_config!(toml);
    let host = Host::start(&config, CancellationToken::new())
        .await
        .expect("host");
    let ended = tokio::time::timeout(Duration::from_secs(30), host.wait())
        .await
        .expect("the host stops by itself instead of reconnecting");
    let error = ended.expect_err("it stops with an error").to_string();
    for word in [classic.as_str(), "quorum", "classic", "queue_type"] {
        assert!(error.contains(word), "`{word}` missing from: {error}");
    }
    names.cleanup().await;
}
