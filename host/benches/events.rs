//! Events load script (not a criterion bench): events per second, from the first publish to
//! the last observed, side by side in one run:
//!
//! 1. in process: `Router::publish` → the in-memory bus → the chaos plugin's counting
//!    observer, with 64 publishers;
//! 2. over RabbitMQ on 127.0.0.1:5672: `Router::publish` with the AMQP bus (persistent,
//!    confirmed, 200 in flight) → the host's group consumer (prefetch 64, ack after the
//!    observer) → the same observer;
//! 3. raw lapin on the same broker, the ceiling for 2: the same bodies published persistent and
//!    confirmed (200 in flight) to a topic exchange, consumed from a durable queue (prefetch
//!    64, ack each), nothing else done; once bound `#`, once bound as wasmeca binds the
//!    observer's pattern (`#.evt.bench.#`).
//!
//! Each RabbitMQ path also prints the CPU it cost per event, in this process and in the broker.
//!
//! Run: `cargo bench -p wasmeca --bench events` (`EVENTS`, default 20000). Figures go in
//! BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use wasmeca::{CancellationToken, Host, Message};

/// The host runs in this process: with the allocator of the `wasmeca` binary, as it runs in
/// production (glibc's malloc cost it ~10 % of its CPU here).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The event every run publishes, numbered.
fn event(n: usize) -> Value {
    json!({"evt": "bench", "cmd": "tick", "n": n, "at": "2026-12-02T00:00:00Z"})
}

/// A host with the chaos plugin counting `evt:bench` events, its events over `events` TOML.
async fn host(events: &str) -> (Host, CancellationToken) {
    let toml = format!(
        "listen = []\n[rest]\nlisten = \"off\"\n[cache]\nurl = \"memory://\"\n{events}[[plugin]]\npath = {:?}\noptions = {{ observe = [\"evt:bench\"], record = false }}\n",
        wasmeca_tests::plugin("chaos")
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    (host, stop)
}

/// How many events the chaos observer counted.
async fn observed(host: &Host) -> u64 {
    let msg = Message::new(
        json!({"chaos": "observed"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    host.router()
        .act(msg)
        .await
        .map(|r| r.to_value()["observed"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

/// Publishes `count` events through the host's router, `in_flight` at once, and waits until
/// the observer counted them all; events per second.
async fn publish_and_observe(host: &Host, count: usize, in_flight: usize) -> f64 {
    let before = observed(host).await;
    let start = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|n| {
            let router = host.router().clone();
            async move {
                let msg = Message::new(event(n).as_object().cloned().unwrap_or_default());
                router.publish(msg).await.expect("published");
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
    while observed(host).await < before + count as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// The raw lapin ceiling: the same bodies published and consumed, the queue bound with
/// `binding`; events per second.
async fn raw(count: usize, binding: &str) -> f64 {
    let id = wasmeca::message::new_id();
    let (exchange, queue) = (format!("bench.{id}.raw"), format!("bench.{id}.raw.q"));
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let publisher = conn.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    publisher
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let consumer_conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let consumer = consumer_conn.create_channel().await.expect("channel");
    consumer
        .basic_qos(64, BasicQosOptions::default())
        .await
        .expect("qos");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    consumer
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .expect("queue");
    consumer
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let mut deliveries = consumer
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let got = Arc::new(AtomicU64::new(0));
    let counting = got.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            let acker = delivery.acker.clone();
            tokio::spawn(async move {
                let _ = acker.ack(BasicAckOptions::default()).await;
            });
            if counting.fetch_add(1, Ordering::Relaxed) + 1 == count as u64 {
                break;
            }
        }
    });
    let start = Instant::now();
    futures_util::stream::iter(0..count)
        .map(|n| {
            let publisher = publisher.clone();
            let exchange = exchange.clone();
            async move {
                let mut msg = event(n);
                msg["event$"] = json!(wasmeca::message::new_id());
                let body = msg.to_string().into_bytes();
                let properties = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2);
                publisher
                    .basic_publish(
                        exchange.as_str().into(),
                        "at.x.cmd.tick.evt.bench.n.1".into(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
            }
        })
        .buffer_unordered(200)
        .collect::<Vec<()>>()
        .await;
    consuming.await.expect("consumer");
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let _ = publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = publisher
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    rate
}

/// CPU spent from `start` by this process (publishers and consumers, and for wasmeca's path the
/// host) and by the RabbitMQ node: where an event's time goes when the broker shares the cores.
struct Cpu {
    /// This process's CPU at the start.
    own: Duration,
    /// The broker's pid, and its CPU at the start.
    broker: Option<(u32, Duration)>,
}

impl Cpu {
    fn start() -> Self {
        Self {
            own: wasmeca_tests::cpu_time(std::process::id()),
            broker: wasmeca_tests::broker_pid().map(|pid| (pid, wasmeca_tests::cpu_time(pid))),
        }
    }

    /// CPU per event since the start, this process's and the broker's.
    fn per(&self, events: usize) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
        let own = per(wasmeca_tests::cpu_time(std::process::id()) - self.own);
        let broker = self.broker.map_or_else(
            || "?".to_owned(),
            |(pid, at)| format!("{:.0}", per(wasmeca_tests::cpu_time(pid) - at)),
        );
        format!("(CPU per event: here {own:.0} µs, broker {broker} µs)")
    }
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!("{count} events each");
    let (h, stop) = host("").await;
    publish_and_observe(&h, 2_000, 64).await; // warm-up
    let rate = publish_and_observe(&h, count, 64).await;
    println!("in process (memory bus):   {rate:>9.0} events/s");
    stop.cancel();
    h.wait().await.expect("stopped");

    let id = wasmeca::message::new_id();
    let exchange = format!("bench.{id}.events");
    let events = format!("[events]\nurl = {URL:?}\nexchange = {exchange:?}\ngroup = \"bench\"\n");
    let (h, stop) = host(&events).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the consumer binds
    publish_and_observe(&h, 2_000, 200).await; // warm-up
    let cpu = Cpu::start();
    let amqp = publish_and_observe(&h, count, 200).await;
    println!(
        "over RabbitMQ (wasmeca):   {amqp:>9.0} events/s  {}",
        cpu.per(count)
    );
    stop.cancel();
    h.wait().await.expect("stopped");
    if let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await
        && let Ok(channel) = conn.create_channel().await
    {
        for queue in [
            format!("{exchange}.bench"),
            format!("{exchange}.bench.dead"),
        ] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }

    // Bound `#` (every event), and bound as wasmeca binds the observer `evt:bench`: a topic
    // binding with `#` around its words costs the broker more to match than `#` alone.
    let mut ceilings = Vec::new();
    for (name, binding) in [("#", "#"), ("as wasmeca's", "#.evt.bench.#")] {
        raw(2_000, binding).await; // warm-up
        let cpu = Cpu::start();
        let ceiling = raw(count, binding).await;
        println!(
            "raw lapin, bound {name:<12} {ceiling:>9.0} events/s  {}",
            cpu.per(count)
        );
        ceilings.push((name, ceiling));
    }
    for (name, ceiling) in ceilings {
        println!(
            "wasmeca over RabbitMQ / raw lapin bound {name}: {:.0} %",
            100.0 * amqp / ceiling
        );
    }
}
