//! AMQP load script (not a criterion bench): RPC round trips per second with 16 in flight (`IN_FLIGHT`),
//! through RabbitMQ on 127.0.0.1:5672, side by side in one run, with each listener's CPU per
//! round trip (from /proc/PID/stat; every listener is its own process):
//!
//! 1. wasmeca's client → a `wasmeca serve` process (AMQP listener, salute plugin);
//! 2. the same client → a raw lapin echo server (consume, publish the reply, ack; this binary
//!    with `--echo`) on a queue declared as wasmeca's (durable, dead-letter exchange, TTL): the
//!    broker's and the client's own cost, the ceiling for any listener; and the same echo on a
//!    transient queue, where the broker does not store the persistent commands;
//! 3. the same client → Node's seneca-amqp-transport listener (`tests/node/amqp-listen.js`,
//!    with `socketOptions.noDelay`);
//! 4. Node's client → Node's listener (`amqp-client.js --concurrency 16`), Node on both ends,
//!    both with noDelay.
//!
//! Run: `cargo bench -p wasmeca --bench amqp_load` (`LOAD_SECONDS`, default 10; `ONLY=TEXT`
//! runs the paths whose name contains TEXT). Figures go in BENCHMARKS.md.

use std::process::{Child, Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use wasmeca::Message;
use wasmeca::config::AmqpClientConfig as ClientConfig;
use wasmeca::pattern::Pattern;
use wasmeca::transport::amqp::{AmqpClient, Sent, routing_key};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Round trips kept in flight by each client (`IN_FLIGHT`, default 16).
fn in_flight() -> usize {
    std::env::var("IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Round trips per second through `client` for `seconds`, after a warm-up; with the number
/// answered, the errors, and the CPU the listener process `pid` spent per round trip (µs).
async fn drive(
    client: &AmqpClient,
    exchange_pin: &str,
    msg: Value,
    seconds: u64,
    pid: u32,
) -> (f64, u64, u64, f64) {
    let pin: Pattern = exchange_pin.parse().expect("pin");
    let msg = Message::new(msg.as_object().cloned().expect("object"));
    let key = routing_key(&pin, &msg);
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight() {
        let (client, msg, key) = (client.clone(), msg.clone(), key.clone());
        let (stop, counting, done, errors) =
            (stop.clone(), counting.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let ok = matches!(
                    client
                        .send(&msg, "benchbenchbe", &key, deadline, true)
                        .await,
                    Ok(Sent::Routed(Some(Ok(_))))
                );
                if counting.load(Ordering::Relaxed) {
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed)
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed)
                    };
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let (started, cpu_before) = (Instant::now(), wasmeca_tests::cpu_time(pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = wasmeca_tests::cpu_time(pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    let cpu_us = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    (
        n as f64 / elapsed,
        n,
        errors.load(Ordering::Relaxed),
        cpu_us,
    )
}

/// A raw lapin echo listener: answers every envelope with its `act` as `res`, acking after the
/// reply is published (as wasmeca does), with the same prefetch. Its queue is declared as
/// wasmeca's listener declares its own (durable, with Seneca's dead-letter exchange and TTL),
/// so the broker stores the persistent commands for both; or, when `transient`, as a
/// non-durable queue the broker keeps in memory only (the yardstick before issue 22).
async fn echo(exchange: String, queue: String, transient: bool) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_qos(64, BasicQosOptions::default())
        .await
        .expect("qos");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let mut arguments = FieldTable::default();
    if !transient {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("seneca.dlx".into()),
        );
        arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    }
    let options = QueueDeclareOptions {
        durable: !transient,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, arguments)
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "cmd.salute".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "echo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    while let Some(Ok(delivery)) = consumer.next().await {
        let channel = channel.clone();
        tokio::spawn(async move {
            let env: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
            let reply =
                json!({"id": env["id"], "kind": "res", "origin": env["origin"], "res": env["act"]});
            if let Some(to) = delivery.properties.reply_to().clone() {
                let props = BasicProperties::default().with_correlation_id(
                    delivery
                        .properties
                        .correlation_id()
                        .clone()
                        .unwrap_or_default(),
                );
                let _ = channel
                    .basic_publish(
                        "".into(),
                        to,
                        BasicPublishOptions::default(),
                        reply.to_string().as_bytes(),
                        props,
                    )
                    .await;
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        });
    }
}

/// Whether the path `name` runs (`ONLY` unset, or a part of its name).
fn chosen(name: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| name.contains(&only))
}

fn client(exchange: &str) -> AmqpClient {
    AmqpClient::new(
        ClientConfig {
            exchange: exchange.to_owned(),
            ..Default::default()
        },
        wasmeca::message::instance_id(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--echo") {
        let rt = tokio::runtime::Runtime::new().expect("tokio");
        let transient = args.get(i + 3).is_some_and(|a| a == "transient");
        rt.block_on(echo(args[i + 1].clone(), args[i + 2].clone(), transient));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let id = wasmeca::message::new_id();
    let (wasmeca_exchange, echo_exchange) =
        (format!("bench.{id}.wasmeca"), format!("bench.{id}.echo"));
    let config = std::env::temp_dir().join(format!("wasmeca-amqp-bench-{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"amqp\"\nexchange = {wasmeca_exchange:?}\nqueue_prefix = \"bench.{id}.add\"\n\
             [[plugin]]\npath = {:?}\n",
            wasmeca_tests::plugin("salute")
        ),
    )
    .expect("config");
    let wasmeca = Server(
        wasmeca_tests::wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("wasmeca runs"),
    );
    let node_queue = format!("bench.{id}.node");
    let node_dir = wasmeca_tests::node_dir();
    let node = Server(
        Command::new("node")
            .args([
                "amqp-listen.js",
                "--url",
                URL,
                "--pin",
                "cmd:salute",
                "--name",
                &node_queue,
                "--nodelay",
                "true",
            ])
            .current_dir(&node_dir)
            .env("SENECA_QUIET", "true")
            .stdout(Stdio::null())
            .spawn()
            .expect("node runs"),
    );
    let echo_queue = format!("bench.{id}.echo");
    let echo_server = Server(
        Command::new(std::env::current_exe().expect("own path"))
            .args(["--echo", &echo_exchange, &echo_queue, "durable"])
            .spawn()
            .expect("echo runs"),
    );
    let transient_exchange = format!("bench.{id}.transient");
    let transient_queue = format!("bench.{id}.transient");
    let transient_server = Server(
        Command::new(std::env::current_exe().expect("own path"))
            .args(["--echo", &transient_exchange, &transient_queue, "transient"])
            .spawn()
            .expect("echo runs"),
    );
    let salute = json!({"cmd": "salute", "name": "Bench"});
    println!(
        "| path ({} in flight) | round trips/s | answered | errors | listener CPU/round trip |",
        in_flight()
    );
    println!("|---|---|---|---|---|");
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(3)).await; // the listeners declare their queues
        for (name, exchange, pid) in [
            (
                "wasmeca client → wasmeca listener (salute)",
                wasmeca_exchange.as_str(),
                wasmeca.0.id(),
            ),
            (
                "wasmeca client → raw lapin echo (queue declared as wasmeca's)",
                echo_exchange.as_str(),
                echo_server.0.id(),
            ),
            (
                "wasmeca client → raw lapin echo (transient queue)",
                transient_exchange.as_str(),
                transient_server.0.id(),
            ),
            (
                "wasmeca client → Node seneca-amqp-transport listener",
                "seneca.topic",
                node.0.id(),
            ),
        ] {
            if !chosen(name) {
                continue;
            }
            let (rate, n, errors, cpu) = drive(
                &client(exchange),
                "cmd:salute",
                salute.clone(),
                seconds,
                pid,
            )
            .await;
            println!("| {name} | {rate:.0} | {n} | {errors} | {cpu:.0} µs |");
        }
    });
    // Node on both ends: amqp-client.js with 16 in flight over a fixed number of messages.
    let count = 2000;
    let node_to_node = format!("Node client → Node listener ({count} acts, incl. start-up)");
    if chosen(&node_to_node) {
        node_client(&node_dir, &node_to_node, &salute, count);
    }
    rt.block_on(async {
        if let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await
            && let Ok(channel) = conn.create_channel().await
        {
            for queue in [
                echo_queue,
                transient_queue,
                node_queue,
                format!("bench.{id}.add.cmd:salute"),
            ] {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    });
}

/// Node's client against Node's listener, 16 in flight, `count` messages; prints its row.
fn node_client(node_dir: &std::path::Path, name: &str, msg: &Value, count: usize) {
    let msgs = Value::Array((0..count).map(|_| msg.clone()).collect()).to_string();
    let started = Instant::now();
    let out = Command::new("node")
        .args([
            "amqp-client.js",
            "--url",
            URL,
            "--pin",
            "cmd:salute",
            "--concurrency",
            "16",
            "--nodelay",
            "true",
            "--msgs",
            &msgs,
        ])
        .current_dir(node_dir)
        .env("SENECA_QUIET", "true")
        .output()
        .expect("node client runs");
    let elapsed = started.elapsed().as_secs_f64();
    let ok = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"ok\":true"))
        .count();
    println!(
        "| {name} | {:.0} | {ok} | {} | |",
        ok as f64 / elapsed,
        count - ok
    );
}
