//! The AMQP listener: one durable queue per pin (or one named queue), bound as Node's listener
//! binds it and following the plugin set; each delivery is decoded, acted through the ingress
//! step, answered on its reply queue and only then acknowledged; bad input is dead-lettered with
//! an error reply; a lost broker is reconnected with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use prometheus_client::metrics::counter::Counter;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{Command, binding_key, now_ms, queue_name, redact, refusal_reply};
use super::{connection_properties, declare_common, queue_arguments};
use crate::config::AmqpListen;
use crate::error::Code;
use crate::ingress::Ingress;
use crate::message;
use crate::registry::Registry;

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
}

/// Runs an AMQP listener until `shutdown`: connects, declares, consumes, and on any broker
/// failure reconnects with backoff, redeclares and resumes. Returns after the deliveries in
/// flight are answered and acknowledged.
pub async fn run_listener(config: AmqpListen, ingress: Ingress, shutdown: CancellationToken) {
    let url = crate::config::amqp_url(config.url.as_deref());
    let listener = Arc::new(Listener {
        me: ingress.router().instance_id().to_owned(),
        refused: ingress.router().metrics().transport("amqp", "refused"),
        ingress,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = session(&url, &config, &listener, &tracker, &shutdown, &mut backoff).await;
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

/// The queues being consumed, by name, with their consumer tags.
type Consuming = HashMap<String, (QueuePlan, ShortString)>;

/// One connection's life: returns `Ok` when shut down, `Err` when the broker went away.
async fn session(
    url: &str,
    config: &AmqpListen,
    listener: &Arc<Listener>,
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
    let stopped = CancellationToken::new();
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<lapin::Error>(1);
    let mut consuming = Consuming::new();
    let registry = listener.ingress.router().registry().clone();
    let mut changes = registry.subscribe();
    let mut first = true;
    let result = loop {
        let wanted: HashSet<QueuePlan> = plan(config, &registry).into_iter().collect();
        for plan in follow(&channel, config, &mut consuming, wanted).await? {
            let consumer = consume(&channel, config, &plan).await?;
            let tag = consumer.tag();
            let handling = Handling {
                listener: listener.clone(),
                channel: channel.clone(),
                tracker: tracker.clone(),
                stopped: stopped.clone(),
                failed: failed_tx.clone(),
            };
            tokio::spawn(handling.run(consumer));
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
    stopped.cancel();
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
    let tag: ShortString = format!("wasmeca-{}-{}", std::process::id(), message::new_id()).into();
    let consumer = channel
        .basic_consume(
            plan.name.as_str().into(),
            tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %plan.name, keys = ?plan.keys, "AMQP listening");
    Ok(consumer)
}

/// One consumer's loop: each delivery handled in its own task, tracked so shutdown waits.
struct Handling {
    /// The listener.
    listener: Arc<Listener>,
    /// Where replies and acks go.
    channel: Channel,
    /// Tracks the delivery tasks.
    tracker: TaskTracker,
    /// Cancelled when the session ends.
    stopped: CancellationToken,
    /// Where a broken consumer reports, so the session reconnects.
    failed: tokio::sync::mpsc::Sender<lapin::Error>,
}

impl Handling {
    async fn run(self, mut consumer: Consumer) {
        loop {
            let next = tokio::select! {
                () = self.stopped.cancelled() => break,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (listener, channel) = (self.listener.clone(), self.channel.clone());
                    self.tracker
                        .spawn(async move { listener.handle(&channel, delivery).await });
                }
                Some(Err(e)) => {
                    let _ = self.failed.try_send(e);
                    break;
                }
                None => break,
            }
        }
    }
}

impl Listener {
    /// Handles one delivery: act it and reply, then acknowledge; refuse bad input to the
    /// dead-letter queue (replying with the error when there is a reply queue).
    async fn handle(&self, channel: &Channel, delivery: Delivery) {
        let received = now_ms();
        let reply_to = delivery.properties.reply_to().clone();
        let correlation = delivery.properties.correlation_id().clone();
        let command = match Command::decode(&delivery.data) {
            Ok(command) => command,
            Err(refusal) => {
                tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: {}", refusal.reason);
                if let Some(queue) = &reply_to {
                    let body = refusal_reply(&delivery.data, &refusal);
                    let _ = publish_reply(channel, queue, correlation, &body).await;
                }
                self.dead_letter(&delivery).await;
                return;
            }
        };
        if reply_to.is_none() && command.sync {
            tracing::warn!(routing_key = %delivery.routing_key, "AMQP message dead-lettered: it has no replyTo property");
            self.dead_letter(&delivery).await;
            return;
        }
        let answer = self.ingress.act(command.msg, command.id.as_deref()).await;
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
        if let Some(queue) = &reply_to {
            let body = command
                .echo
                .reply(&answer, &self.me, received, &delivery.data);
            if let Err(e) = publish_reply(channel, queue, correlation, &body).await {
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
/// channel, so the broker sees the reply first).
async fn publish_reply(
    channel: &Channel,
    queue: &ShortString,
    correlation: Option<ShortString>,
    body: &[u8],
) -> Result<(), lapin::Error> {
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    if let Some(correlation) = correlation {
        properties = properties.with_correlation_id(correlation);
    }
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
