//! The AMQP listener: one durable queue per pin (or one named queue), bound as Node's listener
//! binds it and following the plugin set; each delivery is decoded, acted through the ingress
//! step, answered on its reply queue and only then acknowledged; bad input is dead-lettered with
//! an error reply; a lost broker is reconnected with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{Command, Refusal, binding_key, now_ms, queue_name, refusal_reply};
use super::{
    BrokerError, Brokers, Handler, Handling, Lost, bind, consume_queue, declare_common,
    declare_queue, queue_arguments, remote_parent, supervise, wind_down, with_trace,
};
use crate::config::AmqpListen;
use crate::error::Code;
use crate::ingress::Ingress;
use crate::readiness::Flag;
use crate::registry::Registry;
use crate::telemetry::{self, span};

/// One queue the listener consumes, and the keys it is bound with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueuePlan {
    /// Queue name.
    name: String,
    /// Binding keys on the exchange.
    keys: Vec<String>,
}

/// The queues for the configured pins, or for every pattern of the loaded plugins.
fn plan(config: &AmqpListen, registry: &Registry) -> Vec<QueuePlan> {
    let pins: Vec<String> = if config.pins.is_empty() {
        // Every pattern served, as its plugin wrote it (queue names keep the written order).
        let set = registry.snapshot();
        let mut seen = HashSet::new();
        set.plugins()
            .iter()
            .filter(|p| !p.is_native())
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
struct Listener {
    /// Acts the commands (loop check, history, metric).
    ingress: Ingress,
    /// This host's instance id (`accept` in replies).
    me: String,
    /// Deliveries refused and dead-lettered, in `transport_requests`.
    refused: Counter,
    /// Cancelled when the host shuts down: a command whose call it interrupted goes back to
    /// the broker for another host instead of being answered `closed`.
    shutdown: CancellationToken,
    /// The largest command accepted, in bytes.
    max_message: usize,
    /// Up while it consumes; `/health/ready` reads it.
    ready: Flag,
}

/// Runs an AMQP listener until `shutdown`: connects to one of the broker's nodes, declares,
/// consumes, and on any broker failure reconnects (to the next node first) with backoff,
/// redeclares and resumes. Returns after the deliveries in flight are answered and
/// acknowledged; with an error when the broker and the configuration disagree (a queue of
/// another type), which no reconnection can mend.
pub async fn run_listener(
    config: AmqpListen,
    ingress: Ingress,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let brokers = Brokers::new(&config.url.clone().unwrap_or_default());
    let ready = ingress
        .router()
        .readiness()
        .flag(format!("AMQP listener on {brokers}"));
    let listener = Arc::new(Listener {
        me: ingress.router().instance_id().to_owned(),
        refused: ingress.router().metrics().transport("amqp", "refused"),
        ingress,
        shutdown: shutdown.clone(),
        max_message: config.max_message_bytes,
        ready,
    });
    let tracker = TaskTracker::new();
    let ended = supervise(
        "AMQP listener",
        &brokers,
        &shutdown,
        &listener.ready,
        || session(&brokers, &config, &listener, &tracker, &shutdown),
    )
    .await;
    tracker.close();
    // Deliveries in flight end within their (clamped) deadlines; a dead connection makes
    // their replies and acks fail fast, or time out below.
    tracker.wait().await;
    ended
}

/// How long publishing a reply and acknowledging its command may take before the command is
/// left to the broker to redeliver.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The queues being consumed, by name, with their consumer tags.
type Consuming = HashMap<String, (QueuePlan, ShortString)>;

/// One connection's life: returns `Ok` when shut down, `Err` when the broker went away.
async fn session(
    brokers: &Brokers,
    config: &AmqpListen,
    listener: &Arc<Listener>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), Lost> {
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let connection = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        connected = brokers.connect("listener", &config.exchange, timeout) => connected?,
    };
    let channel = connection.create_channel().await.map_err(Lost::at(false))?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(Lost::at(false))?;
    // No publisher confirms here: a reply and the ack that follows it travel on this one
    // channel, and the broker handles a channel's frames in order, so the command is never
    // acknowledged before its reply is in the broker's hands. (Replies go to transient reply
    // queues, so a confirm would promise nothing more, and it costs the broker a round trip.)
    declare_common(
        &channel,
        &config.exchange,
        &config.dead_letter_exchange,
        Some((
            &config.dead_letter_queue,
            config.queue_type.unwrap_or_default(),
        )),
    )
    .await
    .map_err(Lost::at(false))?;
    let stopped = CancellationToken::new();
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<lapin::Error>(1);
    let mut consuming = Consuming::new();
    let registry = listener.ingress.router().registry().clone();
    let mut changes = registry.subscribe();
    let result: lapin::Result<()> = loop {
        let wanted: HashSet<QueuePlan> = plan(config, &registry).into_iter().collect();
        let fresh = match follow(&channel, config, &mut consuming, wanted).await {
            Ok(fresh) => fresh,
            Err(e) => break Err(e),
        };
        for plan in fresh {
            let consumer = match consume(&channel, config, &plan).await {
                Ok(consumer) => consumer,
                Err(e) => return Err(Lost::at(true)(e)),
            };
            let tag = consumer.tag();
            let handling = Handling {
                handler: listener.clone(),
                channel: channel.clone(),
                tracker: tracker.clone(),
                stopped: stopped.clone(),
                failed: failed_tx.clone(),
            };
            tokio::spawn(handling.run(consumer));
            consuming.insert(plan.name.clone(), (plan, tag));
        }
        listener.ready.up();
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            Some(e) = failed.recv() => break Err(e),
            changed = changes.changed() => if changed.is_err() { break Ok(()) },
        }
    };
    stopped.cancel();
    if result.is_ok() {
        let tags = consuming.into_values().map(|(_, tag)| tag);
        wind_down(&connection, &channel, tags, tracker).await;
    }
    result.map_err(Lost::at(true))
}

/// Brings the consumed queues in line with `wanted`: stops consuming (and unbinds) queues whose
/// patterns went away — the queues stay, so commands already in them wait for a listener that
/// serves them — and returns the plans that need a consumer (new, or bound differently).
async fn follow(
    channel: &Channel,
    config: &AmqpListen,
    consuming: &mut Consuming,
    wanted: HashSet<QueuePlan>,
) -> lapin::Result<Vec<QueuePlan>> {
    let gone: Vec<String> = consuming
        .iter()
        .filter(|(_, (p, _))| !wanted.contains(p))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some((old, tag)) = consuming.remove(&name) {
            channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await?;
            let kept = wanted
                .iter()
                .find(|p| p.name == name)
                .map_or(&[][..], |p| &p.keys[..]);
            for key in old.keys.iter().filter(|k| !kept.contains(k)) {
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
    Ok(wanted
        .into_iter()
        .filter(|plan| !consuming.contains_key(&plan.name))
        .collect())
}

/// Declares and binds a plan's queue and starts consuming it.
async fn consume(
    channel: &Channel,
    config: &AmqpListen,
    plan: &QueuePlan,
) -> lapin::Result<Consumer> {
    declare_queue(
        channel,
        &plan.name,
        config.queue_type.unwrap_or_default(),
        queue_arguments(&config.dead_letter_exchange, 60_000),
    )
    .await?;
    for key in &plan.keys {
        bind(channel, &plan.name, &config.exchange, key).await?;
    }
    let consumer = consume_queue(channel, &plan.name).await?;
    tracing::info!(queue = %plan.name, keys = ?plan.keys, "AMQP listening");
    Ok(consumer)
}

impl Handler for Listener {
    async fn handle(self: Arc<Self>, channel: Channel, delivery: Delivery) {
        self.answer(&channel, delivery).await
    }
}

impl Listener {
    /// Handles one delivery: act it and reply (when it has a reply queue), then acknowledge;
    /// refuse bad input to the dead-letter queue (replying with the error when it can).
    async fn answer(&self, channel: &Channel, mut delivery: Delivery) {
        let received = now_ms();
        let reply_to = delivery.properties.reply_to().clone();
        let correlation = delivery.properties.correlation_id().clone();
        // Replies are as persistent as the commands they answer.
        let persistent = *delivery.properties.delivery_mode() == Some(2);
        let reply = |body: Vec<u8>| {
            let correlation = correlation.clone();
            let queue = reply_to.clone();
            async move {
                match &queue {
                    Some(queue) => {
                        publish_reply(channel, queue, correlation, persistent, &body).await
                    }
                    None => Ok(()),
                }
            }
        };
        if delivery.data.len() > self.max_message {
            let size = delivery.data.len();
            // Freed before anything else: the body is never held twice, nor echoed back.
            delivery.data = Vec::new();
            let refusal = Refusal {
                code: Code::MessageTooLarge,
                reason: format!(
                    "the message is {size} bytes, over the listener's {}-byte limit (max_message_bytes)",
                    self.max_message
                ),
            };
            tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: {}", refusal.reason);
            let _ = reply(refusal_reply(b"", &refusal)).await;
            self.dead_letter(&delivery).await;
            return;
        }
        let command = match Command::decode(&delivery.data) {
            Ok(command) => command,
            Err(refusal) => {
                tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: {}", refusal.reason);
                let _ = reply(refusal_reply(&delivery.data, &refusal)).await;
                self.dead_letter(&delivery).await;
                return;
            }
        };
        // A delivery whose channel died before it started (its node went away while it waited
        // for its turn) is the broker's again: it is redelivered, here or to another host, and
        // running it now would run it twice.
        if !channel.status().connected() {
            return;
        }
        // A command without a reply queue (Node's fire-and-forget act, or a plain publisher)
        // is acted and acknowledged; nobody is waiting for its answer.
        let span = span!(
            parent: &remote_parent(&delivery.properties, command.msg.act_id().1),
            format!("process {}", delivery.routing_key),
            Consumer,
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", delivery.exchange.to_string()),
            KeyValue::new(
                "messaging.rabbitmq.destination.routing_key",
                delivery.routing_key.to_string()
            ),
        );
        if let Some(id) = &command.id {
            span.tag(KeyValue::new("messaging.message.id", id.clone()));
        }
        let act = self.ingress.act(command.msg, command.id.as_deref(), &span);
        let answer = telemetry::traced!(&span, act);
        if let Err(e) = &answer
            && e.is(Code::Closed)
            && self.shutdown.is_cancelled()
        {
            // This host stopped before answering: the broker gives the command to another.
            tracing::info!(routing_key = %delivery.routing_key, "AMQP command returned to the broker: {}", e.message);
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await;
            return;
        }
        let body = command
            .echo
            .reply(&answer, &self.me, received, &delivery.data);
        let answered = async {
            reply(body).await?;
            delivery.acker.ack(BasicAckOptions::default()).await
        };
        let process = span;
        let span = match process.context() {
            Some(parent) => span!(
                parent: parent,
                "publish reply",
                Producer,
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "send"),
            ),
            None => telemetry::Span::none(),
        };
        if let Some(queue) = &reply_to {
            span.tag(KeyValue::new(
                "messaging.destination.name",
                queue.to_string(),
            ));
        }
        let answered = tokio::time::timeout(REPLY_TIMEOUT, answered);
        match telemetry::inside!(&span, answered) {
            Ok(Ok(_)) => {}
            // Not acknowledged: the broker redelivers it, and the history answers it again.
            Ok(Err(e)) => tracing::warn!(
                "AMQP reply or ack failed ({e}); the command will be redelivered and answered from the history"
            ),
            Err(_) => tracing::warn!(
                "AMQP reply and ack took over {REPLY_TIMEOUT:?}; the command will be redelivered"
            ),
        }
    }

    /// Refuses a delivery to the dead-letter exchange.
    async fn dead_letter(&self, delivery: &Delivery) {
        self.refused.inc();
        let _ = delivery
            .acker
            .nack(BasicNackOptions {
                requeue: false,
                multiple: false,
            })
            .await;
    }
}

/// Publishes a reply to a reply queue (before the caller acknowledges the command, on the same
/// channel, so the broker sees the reply first), persistent when its command was.
async fn publish_reply(
    channel: &Channel,
    queue: &ShortString,
    correlation: Option<ShortString>,
    persistent: bool,
    body: &[u8],
) -> Result<(), lapin::Error> {
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    if persistent {
        properties = properties.with_delivery_mode(2);
    }
    if let Some(correlation) = correlation {
        properties = properties.with_correlation_id(correlation);
    }
    // The trace goes back with the answer: the reply's span is the current one here.
    let properties = with_trace(properties);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?;
    // Without confirms this resolves at once; it is awaited so the publish is done before the ack.
    confirm.await.map(|_| ())
}
