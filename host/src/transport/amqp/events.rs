//! Events over RabbitMQ: where they travel ([`EventQueue`], from `[events]`), and [`AmqpBus`],
//! which publishes each event, persistent and confirmed, to a durable topic exchange with the
//! event's pairs as its routing key. `observe.rs` consumes them.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::Instant;

use super::wire::event_routing_key;
use super::{BrokerError, Brokers, MAX_BACKOFF, MIN_BACKOFF, declare_exchange, with_trace};
use crate::Config;
use crate::config::{QueueType, Urls};
use crate::error::{ActError, Code};
use crate::events::{self, Bus, Retry};
use crate::message::Message;
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
        // The trace goes along in the headers: the router publishes inside the event's span.
        let properties = with_trace(properties);
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
