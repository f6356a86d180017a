//! Events over RabbitMQ. [`AmqpBus`] publishes each event, persistent and confirmed, to a
//! durable topic exchange with the event's pairs as its routing key; [`run_events`] consumes
//! this host's group queue, bound with the keys of the observers its plugins declare, runs the
//! observers and acknowledges only after they ran. An event an observer keeps failing on goes to
//! the group's dead-letter queue with the reason; one this host already handled is skipped; a
//! lost broker is reconnected as the RPC listener's is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::{OVERFLOW_KEY, event_binding, event_routing_key};
use super::{
    BrokerError, Brokers, Handler, Handling, Lost, MAX_BACKOFF, MIN_BACKOFF, bind, consume_queue,
    declare_exchange, declare_queue, supervise, wind_down,
};
use crate::Config;
use crate::config::{QueueType, Urls};
use crate::error::{ActError, Code};
use crate::events::{self, Bus, Failure, Retry};
use crate::message::Message;
use crate::router::Router;
use crate::runtime::BoxFuture;

/// Where events travel on the broker, and how this host consumes them; from `[events]`.
#[derive(Debug, Clone)]
pub struct EventQueue {
    /// The broker's nodes.
    pub url: Urls,
    /// The type of the group queue and its dead-letter queue (`[amqp] queue_type`).
    pub queue_type: QueueType,
    /// The durable topic exchange events are published to.
    pub exchange: String,
    /// The group this host consumes as (its queue is `<exchange>.<group>`).
    pub group: String,
    /// How a failing observer is retried before the event is dead-lettered.
    pub retry: Retry,
    /// Events handled at once.
    pub prefetch: u16,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl EventQueue {
    /// The events settings of `config`, when it sends events over a broker.
    pub fn of(config: &Config) -> Option<Self> {
        let events = &config.events;
        Some(Self {
            url: config.broker(Some(events.url.as_ref()?)),
            queue_type: config.amqp.queue_type,
            exchange: events.exchange.clone(),
            group: config.event_group(),
            retry: config.event_retry(),
            prefetch: events.prefetch,
            connect_timeout: Duration::from_millis(events.connect_timeout_ms),
        })
    }

    /// The group's queue: every host of the group consumes it, so each event is handled once
    /// per group.
    pub fn queue(&self) -> String {
        format!("{}.{}", self.exchange, self.group)
    }

    /// Where the group's events go when an observer keeps failing on them.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue())
    }
}

/// The largest event taken from the broker, in bytes; a larger one is dead-lettered unread.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// How many handled event ids a host remembers, to skip a redelivered event it already
/// handled (its acknowledgement was lost with the connection).
const REMEMBERED: usize = 100_000;

/// A publishing connection, replaced when it fails.
struct Publisher {
    /// Kept so the connection lives as long as its channel.
    _connection: Connection,
    /// Publisher confirms on.
    channel: Channel,
}

/// Publishes events to the broker: each persistent, routed by its pairs, and accepted once
/// the broker confirms it.
pub struct AmqpBus {
    /// The broker, the exchange and the connect timeout.
    queue: EventQueue,
    /// The broker's nodes, and which to try first.
    brokers: Brokers,
    /// The live publishing connection, if any; made on first use and after a failure.
    publisher: tokio::sync::Mutex<Option<Arc<Publisher>>>,
}

impl AmqpBus {
    /// A bus publishing to the exchange of `queue`; it connects on first use.
    pub fn new(queue: EventQueue) -> Self {
        Self {
            brokers: Brokers::new(&queue.url),
            queue,
            publisher: tokio::sync::Mutex::new(None),
        }
    }

    /// The live publisher, connecting (and declaring the exchange) when there is none.
    async fn publisher(&self) -> Result<Arc<Publisher>, BrokerError> {
        let mut live = self.publisher.lock().await;
        if let Some(publisher) = live.as_ref().filter(|p| p.channel.status().connected()) {
            return Ok(publisher.clone());
        }
        let q = &self.queue;
        if live.is_some() {
            // Its node went away: try the next one first.
            self.brokers.lost();
        }
        let connection = self
            .brokers
            .connect("publisher", &q.exchange, q.connect_timeout)
            .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchange(&channel, &q.exchange).await?;
        let publisher = Arc::new(Publisher {
            _connection: connection,
            channel,
        });
        *live = Some(publisher.clone());
        Ok(publisher)
    }

    /// Drops `failed` so the next publish reconnects (unless another publish already did).
    async fn forget(&self, failed: &Arc<Publisher>) {
        let mut live = self.publisher.lock().await;
        if live.as_ref().is_some_and(|p| Arc::ptr_eq(p, failed)) {
            *live = None;
            // Its node may be gone: try the next one first.
            self.brokers.lost();
        }
    }

    /// One try: publish and wait for the broker's confirm.
    async fn try_publish(&self, key: &str, id: &str, body: &[u8]) -> Result<(), BrokerError> {
        let publisher = self.publisher().await?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(id.into());
        let published = async {
            let confirm = publisher
                .channel
                .basic_publish(
                    self.queue.exchange.as_str().into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?;
            match confirm.await? {
                Confirmation::Nack(_) => Err(BrokerError::Nacked),
                Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            }
        };
        let outcome = published.await;
        if outcome.is_err() {
            self.forget(&publisher).await;
        }
        outcome
    }
}

impl Bus for AmqpBus {
    fn publish(&self, event: Message, deadline: Instant) -> BoxFuture<'_, Result<(), ActError>> {
        Box::pin(async move {
            let key = event_routing_key(&event);
            let id = events::id_of(&event).to_owned();
            let body = event.to_json().into_bytes();
            let mut wait = MIN_BACKOFF;
            loop {
                let error =
                    match tokio::time::timeout_at(deadline, self.try_publish(&key, &id, &body))
                        .await
                    {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "no confirm before the publisher's deadline".to_owned(),
                    };
                // Tried again until the deadline: a broker restarting is waited for.
                if Instant::now() + wait >= deadline {
                    return Err(ActError::host(
                        Code::Unreachable,
                        format!(
                            "the event was not accepted by the broker {} ({error})",
                            self.brokers
                        ),
                    ));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        })
    }

    fn describe(&self) -> String {
        format!("{} (exchange {})", self.brokers, self.queue.exchange)
    }
}

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
    let consumer = Arc::new(Consumer {
        queue,
        router,
        handled: Mutex::new(Handled::default()),
        received,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    let ended = supervise("AMQP events consumer", &brokers, &shutdown, || {
        session(&brokers, &consumer, &tracker, &shutdown)
    })
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
        // Bounded: a first handling that never ends (it cannot: its observers have deadlines)
        // would not hold this delivery forever.
        let patience =
            Instant::now() + self.router.limits().timeout * (self.queue.retry.attempts + 1);
        loop {
            let claim = self
                .handled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .claim(&id);
            match claim {
                Claim::Mine => break,
                Claim::Done => {
                    tracing::debug!(event = %id, "event already handled here; acknowledged");
                    self.received.duplicate.inc();
                    ack(&delivery).await;
                    return;
                }
                // Its first delivery is still being handled here: acknowledging this one now
                // would lose the event if that handling then fails; wait for its outcome.
                Claim::Running if Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Claim::Running => break,
            }
        }
        let observers = self.router.registry().snapshot().observers_of(&event);
        if observers.is_empty() {
            self.finish(&id);
            self.received.unobserved.inc();
            ack(&delivery).await;
            return;
        }
        let timeout = self.router.limits().timeout;
        let failures = events::deliver_with_retries(
            observers,
            &event,
            timeout,
            self.queue.retry,
            &self.shutdown,
        )
        .await;
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
