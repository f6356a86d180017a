//! seneca-amqp-transport over lapin, wire-compatible with Node's `seneca-amqp-transport` 2
//! (SENECA.md §4): the topic exchange, queue names and binding keys, the request and reply
//! envelopes; a listener that acknowledges a command only after its reply is published,
//! dead-letters bad input with the reason logged, answers a repeated message id from the
//! history, and reconnects on its own; and a client that publishes persistent, confirmed
//! commands and matches replies by envelope id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BoxFuture, History, Remote, RemoteCall};
use crate::config::{AmqpClient as ClientConfig, AmqpListen};
use crate::message::{self, ActError, Message, Reply, codes};
use crate::pattern::{self, Pattern, PatternError, match_string};
use crate::router::Router;

// ---------------------------------------------------------------------------------------------
// Names (pure)
// ---------------------------------------------------------------------------------------------

/// Escapes a word of a binding or routing key the way seneca-amqp-transport does.
fn escape(word: &str) -> String {
    word.replace('.', "[:dot:]")
}

/// The binding key of a pin: keys sorted, `key.value` joined by `.`, dots escaped, `*` kept
/// (AMQP's one-word wildcard): `role:user,cmd:*` → `cmd.*.role.user`.
pub fn binding_key(pin: &str) -> Result<String, PatternError> {
    let pattern = Pattern::parse(pin)?;
    Ok(pattern
        .pairs()
        .iter()
        .map(|(k, v)| format!("{}.{}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("."))
}

/// The queue Node's listener derives from its pins: `<prefix>.` then `key:value` parts grouped
/// by key in written order, several values of one key joined with `_`, and `*` written `any`
/// when a key has one value: `role:user,cmd:*` → `seneca.add.role:user.cmd:any`.
pub fn queue_name(prefix: &str, pins: &[&str]) -> Result<String, PatternError> {
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for pin in pins {
        for (key, value) in pattern::parse_jsonic_pairs(pin)? {
            if value.is_null() || key.ends_with('$') {
                continue;
            }
            let value = match_string(Some(&value)).into_owned();
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => keys.push((key, vec![value])),
            }
        }
    }
    let parts = keys
        .into_iter()
        .map(|(key, values)| match values.as_slice() {
            [one] if one == "*" => format!("{key}:any"),
            _ => format!("{key}:{}", values.join("_")),
        });
    Ok(std::iter::once(prefix.to_owned())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("."))
}

/// The routing key Node's client publishes with: the matched pin's keys, sorted, with the
/// message's values (the pin's value when the message's is falsy):
/// pin `cmd:*,role:user` and `{cmd: "create", role: "user"}` → `cmd.create.role.user`.
pub fn routing_key(pin: &Pattern, msg: &Map<String, Value>) -> String {
    let falsy = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    pin.pairs()
        .iter()
        .map(|(key, pinned)| {
            let value = match msg.get(key) {
                Some(v) if !falsy(v) => match_string(Some(v)).into_owned(),
                _ => pinned.clone(),
            };
            format!("{}.{}", escape(key), escape(&value))
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Broker connection options: lapin's own recovery off (the transports reconnect and redeclare
/// themselves), a name the RabbitMQ UI shows.
fn connection_properties(role: &str, exchange: &str) -> ConnectionProperties {
    let name = format!("wasmeca {role} {exchange} {}", std::process::id());
    ConnectionProperties::default().with_connection_name(name.into())
}

/// Declares what both sides need: the topic exchange, the dead-letter exchange and its queue.
async fn declare_common(
    channel: &Channel,
    exchange: &str,
    dlx: &str,
    dlq: Option<&str>,
) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    if let Some(dlq) = dlq {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(dlq.into(), options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                dlq.into(),
                dlx.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Queue arguments as Node declares them (they must match, or the broker refuses a queue that
/// Node and wasmeca share).
fn queue_arguments(dlx: &str, ttl_ms: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dlx)),
    );
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
    args
}

// ---------------------------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------------------------

/// One queue the listener consumes, and the keys it is bound with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueuePlan {
    /// Queue name.
    name: String,
    /// Binding keys on the exchange.
    keys: Vec<String>,
}

/// The queues for the configured pins, or for every pattern of the loaded plugins.
fn plan(config: &AmqpListen, router: &Router) -> Vec<QueuePlan> {
    let pins: Vec<String> = if config.pins.is_empty() {
        // Every pattern served, as its plugin wrote it (queue names keep the written order).
        let set = router.plugins();
        let mut seen = HashSet::new();
        set.plugins()
            .iter()
            .flat_map(|p| p.actions.iter())
            .filter(|a| !a.pattern.is_empty() && seen.insert(a.pattern.clone()))
            .map(|a| a.source.clone())
            .collect()
    } else {
        config.pins.clone()
    };
    let key = |pin: &str| {
        binding_key(pin)
            .map_err(|e| tracing::error!("AMQP pin {e}"))
            .ok()
    };
    match &config.name {
        Some(name) => {
            let keys = pins.iter().filter_map(|p| key(p)).collect();
            vec![QueuePlan {
                name: name.clone(),
                keys,
            }]
        }
        None => pins
            .iter()
            .filter_map(|pin| {
                let name = queue_name(&config.queue_prefix, &[pin]).ok()?;
                Some(QueuePlan {
                    name,
                    keys: vec![key(pin)?],
                })
            })
            .collect(),
    }
}

/// What a listener's delivery handlers share.
struct ListenerCtx {
    /// Acts the commands.
    router: Router,
    /// Answers by envelope id.
    history: Arc<History>,
    /// This host's instance id (`accept` in replies).
    me: String,
}

/// Runs an AMQP listener until `shutdown`: connects, declares, consumes, and on any broker
/// failure reconnects with backoff, redeclares and resumes. Returns after the deliveries in
/// flight are answered and acknowledged.
pub async fn run_listener(
    config: AmqpListen,
    router: Router,
    history: Arc<History>,
    shutdown: CancellationToken,
) {
    let url = crate::config::amqp_url(config.url.as_deref());
    let ctx = Arc::new(ListenerCtx {
        me: router.instance_id().to_owned(),
        router,
        history,
    });
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = listen_session(&url, &config, &ctx, &tracker, &shutdown, &mut backoff).await;
        if shutdown.is_cancelled() {
            break;
        }
        if let Err(e) = outcome {
            tracing::warn!(
                "AMQP listener on {}: {e}; reconnecting in {backoff:?}",
                redact(&url)
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    tracker.close();
    tracker.wait().await;
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// One connection's life: returns `Ok` when shut down, `Err` when the broker went away.
async fn listen_session(
    url: &str,
    config: &AmqpListen,
    ctx: &Arc<ListenerCtx>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> lapin::Result<()> {
    let connection =
        Connection::connect(url, connection_properties("listener", &config.exchange)).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    // No publisher confirms here: a reply and the ack that follows it travel on this one
    // channel, and the broker handles a channel's frames in order, so the command is never
    // acknowledged before its reply is in the broker's hands. (Replies go to transient reply
    // queues, so a confirm would promise nothing more, and it costs the broker a round trip.)
    declare_common(
        &channel,
        &config.exchange,
        &config.dead_letter_exchange,
        Some(&config.dead_letter_queue),
    )
    .await?;
    let session = CancellationToken::new();
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<lapin::Error>(1);
    let mut consuming: HashMap<String, (QueuePlan, ShortString)> = HashMap::new();
    let mut changes: watch::Receiver<u64> = ctx.router.subscribe();
    let mut first = true;
    let result = loop {
        let wanted: HashSet<QueuePlan> = plan(config, &ctx.router).into_iter().collect();
        // Unbind and stop consuming queues whose patterns went away (the queues stay: commands
        // already in them wait for a listener that serves them).
        let gone: Vec<String> = consuming
            .iter()
            .filter(|(_, (p, _))| !wanted.contains(p))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((plan, tag)) = consuming.remove(&name) {
                channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await?;
                for key in &plan.keys {
                    channel
                        .queue_unbind(
                            name.as_str().into(),
                            config.exchange.as_str().into(),
                            key.as_str().into(),
                            FieldTable::default(),
                        )
                        .await?;
                }
                tracing::info!(queue = %name, "AMQP queue unbound");
            }
        }
        for plan in wanted {
            if consuming.get(&plan.name).is_some_and(|(p, _)| *p == plan) {
                continue;
            }
            if let Some((old, tag)) = consuming.remove(&plan.name) {
                channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await?;
                for key in old.keys.iter().filter(|k| !plan.keys.contains(k)) {
                    channel
                        .queue_unbind(
                            plan.name.as_str().into(),
                            config.exchange.as_str().into(),
                            key.as_str().into(),
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(
                    plan.name.as_str().into(),
                    options,
                    queue_arguments(&config.dead_letter_exchange, 60_000),
                )
                .await?;
            for key in &plan.keys {
                channel
                    .queue_bind(
                        plan.name.as_str().into(),
                        config.exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            let tag: ShortString =
                format!("wasmeca-{}-{}", std::process::id(), message::new_id()).into();
            let consumer = channel
                .basic_consume(
                    plan.name.as_str().into(),
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(queue = %plan.name, keys = ?plan.keys, "AMQP listening");
            let (ctx, channel, tracker, session, failed_tx) = (
                ctx.clone(),
                channel.clone(),
                tracker.clone(),
                session.clone(),
                failed_tx.clone(),
            );
            tokio::spawn(async move {
                let mut consumer = consumer;
                loop {
                    let next = tokio::select! {
                        () = session.cancelled() => break,
                        next = consumer.next() => next,
                    };
                    match next {
                        Some(Ok(delivery)) => {
                            let (ctx, channel) = (ctx.clone(), channel.clone());
                            tracker.spawn(async move { handle(&ctx, &channel, delivery).await });
                        }
                        Some(Err(e)) => {
                            let _ = failed_tx.try_send(e);
                            break;
                        }
                        None => break,
                    }
                }
            });
            consuming.insert(plan.name.clone(), (plan, tag));
        }
        if first {
            *backoff = Duration::from_millis(100);
            first = false;
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            Some(e) = failed.recv() => break Err(e),
            changed = changes.changed() => if changed.is_err() { break Ok(()) },
        }
    };
    session.cancel();
    if result.is_ok() {
        // Stop taking new commands; those delivered but not started are returned to the queue
        // when the channel closes. Finish the ones running, then close.
        for (_, tag) in consuming.values() {
            let _ = channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await;
        }
        tracker.close();
        tracker.wait().await;
        tracker.reopen();
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
    }
    result
}

/// Why a delivery is refused (dead-lettered).
struct Refusal {
    /// Error code for the reply.
    code: &'static str,
    /// Why, for the log and the reply.
    reason: String,
}

/// Handles one delivery: act it and reply, then acknowledge; refuse bad input to the
/// dead-letter queue (replying with the error when there is a reply queue).
async fn handle(ctx: &ListenerCtx, channel: &Channel, delivery: Delivery) {
    let reply_to = delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|q| q.as_str().to_owned());
    let correlation = delivery.properties.correlation_id().clone();
    let envelope: Result<Map<String, Value>, Refusal> =
        match serde_json::from_slice::<Value>(&delivery.data) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(Refusal {
                code: "invalid_json",
                reason: format!("the envelope is {other}, not an object"),
            }),
            Err(e) => Err(Refusal {
                code: "invalid_json",
                reason: format!("the envelope is not JSON: {e}"),
            }),
        };
    let checked = envelope.and_then(|env| {
        match env.get("kind").and_then(Value::as_str) {
            Some("act") => {}
            other => {
                return Err(Refusal {
                    code: "invalid_kind_act",
                    reason: format!(
                        "the envelope's kind is {}, not \"act\"",
                        other.map_or("missing".into(), |k| format!("{k:?}"))
                    ),
                });
            }
        }
        if !env.get("act").is_some_and(Value::is_object) {
            return Err(Refusal {
                code: "invalid_act",
                reason: "the envelope has no `act` object".into(),
            });
        }
        Ok(env)
    });
    let input = || {
        serde_json::from_slice::<Value>(&delivery.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned()))
    };
    let env = match checked {
        Ok(env) => env,
        Err(refusal) => {
            tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: {}", refusal.reason);
            if let Some(queue) = &reply_to {
                let error = ActError::new(refusal.code, refusal.reason).to_seneca_json();
                let body = json!({ "input": input(), "error": error });
                let _ = publish_reply(channel, queue, correlation.clone(), &body).await;
            }
            ctx.router.metrics().transport("amqp", "refused");
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: false,
                    multiple: false,
                })
                .await;
            return;
        }
    };
    let sync = env.get("sync").and_then(Value::as_bool);
    if reply_to.is_none() && sync != Some(false) {
        tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: it has no replyTo property");
        ctx.router.metrics().transport("amqp", "refused");
        let _ = delivery
            .acker
            .nack(BasicNackOptions {
                requeue: false,
                multiple: false,
            })
            .await;
        return;
    }
    let received = now_ms();
    let id = env.get("id").and_then(Value::as_str).map(str::to_owned);
    let origin = env.get("origin").cloned().unwrap_or(Value::Null);
    let track: Vec<Value> = env
        .get("track")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let client_sent = env
        .get("time")
        .and_then(|t| t.get("client_sent"))
        .cloned()
        .unwrap_or(json!(0));
    let Some(Value::Object(mut act)) = env.get("act").cloned() else {
        return;
    };
    if let Some(id) = &id {
        act.insert(message::ID.into(), Value::String(id.clone()));
    }
    act.insert(
        "transport$".into(),
        json!({ "track": track, "origin": origin, "time": { "client_sent": client_sent } }),
    );
    let msg = Message::new(act.clone());
    let answer = if track.iter().any(|t| t.as_str() == Some(ctx.me.as_str())) {
        Err(ActError::new(
            "message_loop",
            "the message has been through this host already",
        ))
    } else {
        match &id {
            Some(id) => {
                let ttl = msg
                    .timeout()
                    .unwrap_or_else(|| ctx.router.limits().timeout());
                let (answer, reused) = ctx.history.once(id, ttl, ctx.router.act(msg)).await;
                if reused {
                    tracing::debug!(id = %id, "AMQP command answered from the history cache");
                }
                answer
            }
            None => ctx.router.act(msg).await,
        }
    };
    ctx.router
        .metrics()
        .transport("amqp", if answer.is_ok() { "ok" } else { "error" });
    if let Some(queue) = reply_to {
        let mut reply = Map::new();
        for key in ["id", "origin", "track", "sync"] {
            if let Some(v) = env.get(key) {
                reply.insert(key.into(), v.clone());
            }
        }
        reply.insert("kind".into(), json!("res"));
        reply.insert("accept".into(), Value::String(ctx.me.clone()));
        reply.insert(
            "time".into(),
            json!({ "client_sent": client_sent, "listen_recv": received, "listen_sent": now_ms() }),
        );
        match answer {
            Ok(res) => {
                reply.insert(
                    "res".into(),
                    serde_json::to_value(&res).unwrap_or(Value::Null),
                );
            }
            Err(e) => {
                // Node sets both: a client must check `error` first.
                let error = e.to_seneca_json();
                reply.insert("res".into(), error.clone());
                reply.insert("error".into(), error);
                reply.insert("input".into(), Value::Object(act));
            }
        }
        if let Err(e) = publish_reply(channel, &queue, correlation, &Value::Object(reply)).await {
            // Not acknowledged: the broker redelivers it, and the history answers it again.
            tracing::warn!(
                "AMQP reply to {queue} not confirmed ({e}); the command will be redelivered"
            );
            return;
        }
    }
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(
            "AMQP ack failed ({e}); the command will be redelivered and answered from the history"
        );
    }
}

/// Publishes a reply to a reply queue (before the caller acknowledges the command, on the same
/// channel, so the broker sees the reply first).
async fn publish_reply(
    channel: &Channel,
    queue: &str,
    correlation: Option<ShortString>,
    body: &Value,
) -> Result<(), String> {
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    if let Some(correlation) = correlation {
        properties = properties.with_correlation_id(correlation);
    }
    let payload = body.to_string();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            properties,
        )
        .await
        .map_err(|e| e.to_string())?;
    // Without confirms this resolves at once; it is awaited so the publish is done before the ack.
    confirm.await.map(|_| ()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A connection with its publishing channel and reply queue.
struct ClientSession {
    /// Kept so the connection lives as long as the session.
    _connection: Connection,
    /// Publishes commands (publisher confirms on).
    channel: Channel,
    /// `seneca.act.<8 hex>`: exclusive, auto-deleted, consumed without acks.
    reply_queue: String,
    /// Set when the reply consumer stops (the connection failed).
    dead: CancellationToken,
}

/// Shared state of an AMQP client.
struct ClientInner {
    /// Broker URL.
    url: String,
    /// Exchange, reply-queue prefix, dead-letter exchange, timeout.
    config: ClientConfig,
    /// This host's instance id (`origin` of every envelope).
    origin: Arc<str>,
    /// One correlation id for every message of this client, as Node's client does; replies are
    /// matched by envelope id.
    correlation: String,
    /// The live session, if connected.
    session: tokio::sync::Mutex<Option<Arc<ClientSession>>>,
    /// Replies awaited, by envelope id.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
}

/// `[[client]] type = "amqp"`: sends acts through RabbitMQ to whichever listener consumes the
/// routing key (Node's or wasmeca's).
#[derive(Clone)]
pub struct AmqpClient(Arc<ClientInner>);

/// What a publish found out.
pub enum Sent {
    /// The broker routed it; here is the reply (or `None` when not waiting for one).
    Routed(Option<Result<Reply, ActError>>),
    /// No queue is bound for the routing key (nothing was delivered anywhere).
    Unroutable,
}

fn uuid_v4() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][fastrand::usize(..4)],
        &hex[17..20],
        &hex[20..32]
    )
}

impl AmqpClient {
    /// A client; it connects on first use and again after any failure.
    pub fn new(config: ClientConfig, origin: Arc<str>) -> Self {
        let url = crate::config::amqp_url(config.url.as_deref());
        Self(Arc::new(ClientInner {
            url,
            config,
            origin,
            correlation: uuid_v4(),
            session: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }))
    }

    async fn session(&self) -> Result<Arc<ClientSession>, ActError> {
        let mut guard = self.0.session.lock().await;
        if let Some(session) = guard.as_ref().filter(|s| !s.dead.is_cancelled()) {
            return Ok(session.clone());
        }
        let unreachable = |e: lapin::Error| {
            ActError::new(
                codes::UNREACHABLE,
                format!("AMQP broker {}: {e}", redact(&self.0.url)),
            )
        };
        let connection = Connection::connect(
            &self.0.url,
            connection_properties("client", &self.0.config.exchange),
        )
        .await
        .map_err(unreachable)?;
        let channel = connection.create_channel().await.map_err(unreachable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unreachable)?;
        let config = &self.0.config;
        declare_common(
            &channel,
            &config.exchange,
            &config.dead_letter_exchange,
            None,
        )
        .await
        .map_err(unreachable)?;
        let reply_queue = format!("{}.{}", config.queue_prefix, &uuid_v4()[..8]);
        let options = QueueDeclareOptions {
            durable: true,
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(
                reply_queue.as_str().into(),
                options,
                queue_arguments(&config.dead_letter_exchange, 10_000),
            )
            .await
            .map_err(unreachable)?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut consumer = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                consume,
                FieldTable::default(),
            )
            .await
            .map_err(unreachable)?;
        let dead = CancellationToken::new();
        let session = Arc::new(ClientSession {
            _connection: connection,
            channel,
            reply_queue,
            dead: dead.clone(),
        });
        let inner = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                inner.deliver(&delivery.data);
            }
            dead.cancel();
            // Replies can no longer arrive for what is pending: fail them now.
            let waiting: Vec<_> = inner
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .collect();
            for (_, waiter) in waiting {
                let _ = waiter.send(json!({ "kind": "res", "error": ActError::new(codes::UNREACHABLE, "the AMQP connection was lost before the reply came").to_seneca_json() }));
            }
        });
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Publishes `msg` with `routing_key` and, when `wait`, waits for the reply until `deadline`.
    pub async fn send(
        &self,
        msg: &Message,
        tx: &str,
        routing_key: &str,
        deadline: Instant,
        wait: bool,
    ) -> Result<Sent, ActError> {
        let session = self.session().await?;
        let id = format!("{}/{tx}", message::new_id());
        let origin = &*self.0.origin;
        let envelope = json!({
            "id": id,
            "kind": "act",
            "origin": origin,
            "track": [origin],
            "time": { "client_sent": now_ms() },
            "act": msg.clean(),
            "sync": wait,
        });
        let reply = if wait {
            let (tx, rx) = oneshot::channel();
            self.0
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), tx);
            Some(rx)
        } else {
            None
        };
        let forget = || {
            self.0
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        let properties = BasicProperties::default()
            .with_reply_to(session.reply_queue.as_str().into())
            .with_content_type("application/json".into())
            .with_correlation_id(self.0.correlation.as_str().into())
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let payload = envelope.to_string();
        let lost = |e: lapin::Error| {
            session.dead.cancel();
            ActError::new(
                codes::UNREACHABLE,
                format!("AMQP broker {}: {e}", redact(&self.0.url)),
            )
        };
        let confirm = session
            .channel
            .basic_publish(
                self.0.config.exchange.as_str().into(),
                routing_key.into(),
                options,
                payload.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| {
                forget();
                lost(e)
            })?;
        match confirm.await.map_err(|e| {
            forget();
            lost(e)
        })? {
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                forget();
                return Ok(Sent::Unroutable);
            }
            Confirmation::Nack(None) => {
                forget();
                return Err(ActError::new(
                    codes::UNREACHABLE,
                    "the AMQP broker refused the command",
                ));
            }
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
        }
        let Some(reply) = reply else {
            return Ok(Sent::Routed(None));
        };
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(envelope)) => Ok(Sent::Routed(Some(read_reply(&envelope)))),
            Ok(Err(_)) => Err(ActError::new(codes::UNREACHABLE, "the AMQP client stopped")),
            Err(_) => {
                forget();
                Err(ActError::timeout(
                    routing_key,
                    deadline.saturating_duration_since(Instant::now()),
                ))
            }
        }
    }
}

impl ClientInner {
    /// A reply arrived: hand it to whoever waits for its envelope id.
    fn deliver(&self, data: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Value>(data) else {
            tracing::warn!("AMQP reply is not JSON; ignored");
            return;
        };
        if envelope.get("kind").and_then(Value::as_str) != Some("res")
            || envelope.get("origin").and_then(Value::as_str) != Some(&*self.origin)
        {
            tracing::debug!("AMQP reply for another client ignored");
            return;
        }
        let Some(id) = envelope.get("id").and_then(Value::as_str) else {
            return;
        };
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(envelope);
            }
            None => tracing::debug!(id, "AMQP reply nobody waits for (timed out?)"),
        }
    }
}

/// A reply envelope as an answer: `error` first, then `res`.
fn read_reply(envelope: &Value) -> Result<Reply, ActError> {
    if let Some(error) = envelope.get("error").filter(|e| !e.is_null()) {
        return Err(ActError::from_seneca_json(error));
    }
    let res = envelope.get("res").cloned().unwrap_or(Value::Null);
    Ok(match res {
        v @ (Value::Object(_) | Value::Array(_)) => Reply::from_value(&v),
        _ => Reply::from_value(&Value::Null),
    })
}

impl Remote for AmqpClient {
    fn act<'a>(
        &'a self,
        msg: &'a Message,
        call: RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        Box::pin(async move {
            let key = routing_key(call.pin, msg);
            let timeout = Duration::from_millis(self.0.config.timeout_ms);
            let deadline = call.deadline.min(Instant::now() + timeout);
            match self.send(msg, call.tx, &key, deadline, true).await? {
                Sent::Routed(Some(answer)) => answer,
                Sent::Routed(None) => Ok(Reply::from_value(&Value::Null)),
                Sent::Unroutable => Err(ActError::new(
                    codes::UNREACHABLE,
                    format!(
                        "no AMQP queue is bound for routing key {key} on {}",
                        self.0.config.exchange
                    ),
                )),
            }
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} (exchange {})",
            redact(&self.0.url),
            self.0.config.exchange
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_keys_sort_keys_and_escape_dots() {
        assert_eq!(binding_key("cmd:salute").unwrap(), "cmd.salute");
        assert_eq!(binding_key("role:user,cmd:*").unwrap(), "cmd.*.role.user");
        assert_eq!(binding_key("v:1.0,host:a.b").unwrap(), "host.a[:dot:]b.v.1");
    }

    #[test]
    fn queue_names_keep_the_written_order() {
        assert_eq!(
            queue_name("seneca.add", &["cmd:salute"]).unwrap(),
            "seneca.add.cmd:salute"
        );
        assert_eq!(
            queue_name("seneca.add", &["role:user,cmd:*"]).unwrap(),
            "seneca.add.role:user.cmd:any"
        );
        assert_eq!(
            queue_name("seneca.add", &["role:user,cmd:*", "cmd:salute"]).unwrap(),
            "seneca.add.role:user.cmd:*_salute"
        );
    }

    #[test]
    fn routing_keys_take_the_message_values() {
        let pin = Pattern::parse("role:user,cmd:*").unwrap();
        let msg = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            routing_key(
                &pin,
                &msg(json!({"role": "user", "cmd": "create", "name": "x"}))
            ),
            "cmd.create.role.user"
        );
        assert_eq!(
            routing_key(&pin, &msg(json!({"role": "user", "cmd": ""}))),
            "cmd.*.role.user"
        );
        assert_eq!(routing_key(&Pattern::default(), &msg(json!({"a": 1}))), "");
    }

    #[test]
    fn replies_check_error_before_res() {
        let err =
            read_reply(&json!({"res": {}, "error": {"code": "act_not_found", "message": "no"}}))
                .unwrap_err();
        assert_eq!(err.code, "act_not_found");
        assert_eq!(
            read_reply(&json!({"res": {"a": 1}})).unwrap().to_value(),
            json!({"a": 1})
        );
        assert!(read_reply(&json!({"res": 3})).unwrap().is_null());
    }

    #[test]
    fn correlation_ids_are_uuid_v4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://…@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
    }
}
