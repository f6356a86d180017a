//! Consuming events from RabbitMQ: [`run_events`] consumes this host's group queue, bound with
//! the keys of the observers its plugins declare, runs the observers and acknowledges only
//! after they ran. An event an observer keeps failing on goes to the group's dead-letter queue
//! with the reason; one this host already handled is skipped; a lost broker is reconnected as
//! the RPC listener's is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{OVERFLOW_KEY, event_binding};
use super::{
    BrokerError, Brokers, Handler, Handling, Lost, bind, consume_queue, declare_exchange,
    declare_queue, remote_parent, supervise, wind_down,
};
use crate::events::{self, Failure};
use crate::message::{self, Message};
use crate::readiness::Flag;
use crate::router::Router;
use crate::telemetry::{self, span};

use super::events::EventQueue;

/// The largest event taken from the broker, in bytes; a larger one is dead-lettered unread.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// How many handled event ids a host remembers, to skip a redelivered event it already
/// handled (its acknowledgement was lost with the connection).
const REMEMBERED: usize = 100_000;

/// Where an event this host claimed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// This host claimed it just now: handle it.
    Mine,
    /// Another delivery of it is being handled here (its first copy, whose channel died,
    /// say): wait for that one's outcome.
    Running,
    /// Handled here already: acknowledge it without running it again.
    Done,
}

/// The ids of the events this host handled lately (and whether their handling has finished),
/// oldest first out.
#[derive(Default)]
struct Handled {
    /// The ids, each with true once its handling finished.
    ids: HashMap<String, bool>,
    /// The same ids in the order they came, to forget the oldest.
    order: VecDeque<String>,
}

impl Handled {
    /// Claims `id` for handling, or says where it is.
    fn claim(&mut self, id: &str) -> Claim {
        match self.ids.get(id) {
            Some(true) => return Claim::Done,
            Some(false) => return Claim::Running,
            None => {}
        }
        self.ids.insert(id.to_owned(), false);
        self.order.push_back(id.to_owned());
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        Claim::Mine
    }

    /// The claim's handling finished: every observer ran (or the event is dead-lettered).
    fn finish(&mut self, id: &str) {
        if let Some(done) = self.ids.get_mut(id) {
            *done = true;
        }
    }

    /// Gives a claim back: the event goes back to the broker, to be handled later.
    fn release(&mut self, id: &str) {
        self.ids.remove(id);
    }
}

/// Counters of what the consumer did with the events it took.
struct Received {
    /// Every observer ran.
    handled: Counter,
    /// No observer of this host matched (a binding wider than the patterns, or one left by a
    /// plugin gone).
    unobserved: Counter,
    /// Already handled here.
    duplicate: Counter,
    /// Sent to the dead-letter queue.
    dead_lettered: Counter,
    /// Given back to the broker at shutdown.
    requeued: Counter,
}

/// The group queue's consumer.
struct Consumer {
    /// The settings.
    queue: EventQueue,
    /// Whose observers run.
    router: Router,
    /// Events handled lately.
    handled: Mutex<Handled>,
    /// What happened to each event.
    received: Received,
    /// Cancelled when the host shuts down: an event whose observers it cut short goes back to
    /// the broker.
    shutdown: CancellationToken,
    /// Up while it consumes; `/health/ready` reads it.
    ready: Flag,
}

/// Consumes this host's group queue until `shutdown`: declares the exchange, the queue and its
/// dead-letter queue, binds the observers' keys (and more as plugins come), and on any broker
/// failure reconnects (to the next node first) with backoff. Returns after the events in
/// flight are handled; with an error when a queue exists with other arguments (its type).
pub async fn run_events(
    queue: EventQueue,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    let metrics = router.metrics();
    let received = Received {
        handled: metrics.event_received("handled"),
        unobserved: metrics.event_received("unobserved"),
        duplicate: metrics.event_received("duplicate"),
        dead_lettered: metrics.event_received("dead_lettered"),
        requeued: metrics.event_received("requeued"),
    };
    let brokers = Brokers::new(&queue.url);
    let ready = router
        .readiness()
        .flag(format!("AMQP events consumer on {brokers}"));
    let consumer = Arc::new(Consumer {
        queue,
        router,
        handled: Mutex::new(Handled::default()),
        received,
        shutdown: shutdown.clone(),
        ready,
    });
    let tracker = TaskTracker::new();
    let ended = supervise(
        "AMQP events consumer",
        &brokers,
        &shutdown,
        &consumer.ready,
        || session(&brokers, &consumer, &tracker, &shutdown),
    )
    .await;
    tracker.close();
    tracker.wait().await;
    ended
}

/// One connection's life: returns `Ok` when shut down, `Err` when the broker went away.
async fn session(
    brokers: &Brokers,
    consumer: &Arc<Consumer>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), Lost> {
    let q = &consumer.queue;
    let connection = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        connected = brokers.connect("events", &q.exchange, q.connect_timeout) => connected?,
    };
    let (queue, dead) = (q.queue(), q.dead_letter_queue());
    let setup = async {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(q.prefetch, BasicQosOptions::default())
            .await?;
        // Dead-lettering publishes an event before acknowledging it: confirmed, so a failing
        // event is never acknowledged before the dead-letter queue holds it.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchange(&channel, &q.exchange).await?;
        declare_queue(&channel, &queue, q.queue_type, FieldTable::default()).await?;
        declare_queue(&channel, &dead, q.queue_type, FieldTable::default()).await?;
        bind(&channel, &queue, &q.exchange, OVERFLOW_KEY).await?;
        Ok::<_, lapin::Error>(channel)
    };
    let channel = setup.await.map_err(Lost::at(false))?;
    let registry = consumer.router.registry().clone();
    let mut changes = registry.subscribe();
    let mut bound = HashSet::new();
    let stopped = CancellationToken::new();
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<lapin::Error>(1);
    let mut tag = None;
    let result: lapin::Result<()> = 'session: loop {
        // Bindings are only ever added: another host of the group may still run an observer
        // this one dropped, and a binding nobody uses costs one acknowledged delivery.
        let keys: Vec<String> = registry
            .snapshot()
            .observers()
            .iter()
            .map(|o| event_binding(&o.pattern))
            .filter(|k| !bound.contains(k))
            .collect();
        for key in keys {
            if let Err(e) = bind(&channel, &queue, &q.exchange, &key).await {
                break 'session Err(e);
            }
            tracing::info!(queue = %queue, key = %key, "events bound");
            bound.insert(key);
        }
        if tag.is_none() {
            let stream = match consume_queue(&channel, &queue).await {
                Ok(stream) => stream,
                Err(e) => break 'session Err(e),
            };
            tag = Some(stream.tag());
            let handling = Handling {
                handler: consumer.clone(),
                channel: channel.clone(),
                tracker: tracker.clone(),
                stopped: stopped.clone(),
                failed: failed_tx.clone(),
            };
            tokio::spawn(handling.run(stream));
            tracing::info!(queue = %queue, group = %q.group, "consuming events");
        }
        consumer.ready.up();
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            Some(e) = failed.recv() => break Err(e),
            changed = changes.changed() => if changed.is_err() { break Ok(()) },
        }
    };
    stopped.cancel();
    if result.is_ok() {
        wind_down(&connection, &channel, tag, tracker).await;
    }
    result.map_err(Lost::at(true))
}

impl Handler for Consumer {
    async fn handle(self: Arc<Self>, channel: Channel, delivery: Delivery) {
        self.observe(&channel, delivery).await
    }
}

/// Reads an event: a JSON object (of at most [`MAX_EVENT_BYTES`]).
fn decode(data: &[u8]) -> Result<Message, String> {
    if data.len() > MAX_EVENT_BYTES {
        return Err(format!(
            "the event is {} bytes, over the {MAX_EVENT_BYTES}-byte limit",
            data.len()
        ));
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(map)) => Ok(Message::new(map)),
        Ok(other) => Err(format!(
            "an event is a JSON object; this is {}",
            crate::message::json_kind(&other)
        )),
        Err(e) => Err(format!("the event is not JSON: {e}")),
    }
}

impl Consumer {
    /// Handles one delivery: runs every matching observer (retrying those that fail), then
    /// acknowledges; dead-letters it when it cannot be read or an observer kept failing.
    async fn observe(&self, channel: &Channel, delivery: Delivery) {
        let mut event = match decode(&delivery.data) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(routing_key = %delivery.routing_key, "event dead-lettered: {reason}");
                self.dead_letter(channel, &delivery, &reason, &[]).await;
                return;
            }
        };
        // A plain publisher's event has no `event$`: its AMQP message id stands in.
        if event.get(events::EVENT_ID).is_none()
            && let Some(id) = delivery.properties.message_id()
        {
            event.insert(events::EVENT_ID.into(), Value::String(id.to_string()));
        }
        let id = events::stamp(&mut event, None);
        // A delivery whose channel died before it started is the broker's again (it is
        // redelivered, here or to another host of the group): running it would run it twice.
        if !channel.status().connected() {
            return;
        }
        if !self.claim(&id).await {
            tracing::debug!(event = %id, "event already handled here; acknowledged");
            self.received.duplicate.inc();
            ack(&delivery).await;
            return;
        }
        let observers = self.router.registry().snapshot().observers_of(&event);
        if observers.is_empty() {
            self.finish(&id);
            self.received.unobserved.inc();
            ack(&delivery).await;
            return;
        }
        let timeout = self.router.limits().timeout;
        let tx = event.get(message::TX).and_then(Value::as_str);
        // Named by the exchange, not the routing key: an event's key carries its values.
        let span = span!(
            parent: &remote_parent(&delivery.properties, tx),
            format!("process {}", delivery.exchange),
            Consumer,
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", delivery.exchange.to_string()),
            KeyValue::new("messaging.consumer.group.name", self.queue.group.clone()),
            KeyValue::new("messaging.message.id", id.to_string()),
        );
        let delivered = events::deliver_with_retries(
            observers,
            &event,
            timeout,
            self.queue.retry,
            &self.shutdown,
        );
        let failures = telemetry::inside!(&span, delivered);
        if failures.is_empty() {
            self.finish(&id);
            self.received.handled.inc();
            ack(&delivery).await;
        } else if self.shutdown.is_cancelled() {
            // Cut short by the shutdown: another host of the group (or this one, restarted)
            // handles it.
            self.release(&id);
            self.received.requeued.inc();
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            let _ = delivery.acker.nack(requeue).await;
        } else {
            let reason = format!(
                "{} observer(s) kept failing after {} tries",
                failures.len(),
                self.queue.retry.attempts
            );
            if self
                .dead_letter(channel, &delivery, &reason, &failures)
                .await
            {
                self.finish(&id);
                for failure in &failures {
                    failure.observer.metrics.dead_lettered();
                }
            } else {
                self.release(&id);
            }
        }
    }

    /// Claims `id` for handling here; false when it was handled here already. While its first
    /// delivery is still being handled here, waits for that one's outcome: acknowledging this
    /// one now would lose the event if that handling then failed. Bounded: a first handling
    /// that never ended (it cannot: its observers have deadlines) would not hold this forever.
    async fn claim(&self, id: &str) -> bool {
        let patience =
            Instant::now() + self.router.limits().timeout * (self.queue.retry.attempts + 1);
        loop {
            let claim = self
                .handled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .claim(id);
            match claim {
                Claim::Mine => return true,
                Claim::Done => return false,
                Claim::Running if Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Claim::Running => return true,
            }
        }
    }

    /// Marks `id` handled: a redelivery of it is acknowledged without running.
    fn finish(&self, id: &str) {
        self.handled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(id);
    }

    /// Forgets that `id` was claimed, so its redelivery is handled.
    fn release(&self, id: &str) {
        self.handled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(id);
    }

    /// Publishes the delivery as it came to the group's dead-letter queue, with `reason` and
    /// the `failures` in its headers, then acknowledges it; true when that worked (else the
    /// delivery is returned to the broker).
    async fn dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        reason: &str,
        failures: &[Failure],
    ) -> bool {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut headers = FieldTable::default();
        headers.insert("x-wasmeca-reason".into(), text(reason));
        headers.insert("x-wasmeca-group".into(), text(&self.queue.group));
        headers.insert(
            "x-wasmeca-routing-key".into(),
            text(delivery.routing_key.as_str()),
        );
        let observers: Vec<AMQPValue> = failures
            .iter()
            .map(|f| {
                text(&format!(
                    "{} {}: {}: {}",
                    f.observer.plugin.key(),
                    f.observer.pattern,
                    f.error.code,
                    crate::error::clip(&f.error.message)
                ))
            })
            .collect();
        headers.insert(
            "x-wasmeca-failures".into(),
            AMQPValue::FieldArray(FieldArray::from(observers)),
        );
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(id) = delivery.properties.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        let dead = self.queue.dead_letter_queue();
        let moved = async {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    ShortString::from(dead.as_str()),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await?
                .await?;
            if matches!(confirm, Confirmation::Nack(_)) {
                return Err(BrokerError::Nacked);
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            Ok::<_, BrokerError>(())
        };
        match moved.await {
            Ok(()) => {
                self.received.dead_lettered.inc();
                tracing::error!(
                    queue = %dead,
                    routing_key = %delivery.routing_key,
                    "event dead-lettered: {reason}"
                );
                true
            }
            Err(e) => {
                tracing::warn!("dead-lettering an event failed ({e}); it goes back to the broker");
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                let _ = delivery.acker.nack(requeue).await;
                false
            }
        }
    }
}

/// Acknowledges a delivery; a failure (the connection went) leaves it to the broker to
/// redeliver, and the handled ids skip it then.
async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!("acknowledging an event failed ({e}); it will be redelivered and skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_ids_are_remembered_then_forgotten_oldest_first() {
        let mut handled = Handled::default();
        assert_eq!(handled.claim("a"), Claim::Mine);
        assert_eq!(
            handled.claim("a"),
            Claim::Running,
            "its handling has not finished"
        );
        handled.release("a");
        assert_eq!(handled.claim("a"), Claim::Mine, "released: handled again");
        handled.finish("a");
        assert_eq!(handled.claim("a"), Claim::Done);
        for i in 0..REMEMBERED {
            assert_eq!(handled.claim(&i.to_string()), Claim::Mine);
        }
        assert_eq!(
            handled.claim("a"),
            Claim::Mine,
            "the oldest id is forgotten past the limit"
        );
        assert!(handled.ids.len() <= REMEMBERED + 1);
    }

    #[test]
    fn events_are_json_objects() {
        assert!(decode(br#"{"evt":"user"}"#).is_ok());
        assert!(decode(b"[1]").unwrap_err().contains("array"));
        assert!(decode(b"{").unwrap_err().contains("not JSON"));
    }
}
