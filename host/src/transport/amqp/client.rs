//! The AMQP client (`[[client]] type = "amqp"`, `wasmeca act --amqp`): publishes persistent,
//! confirmed commands to the topic exchange with Node's routing keys, and matches replies on its
//! exclusive reply queue by envelope id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use opentelemetry::KeyValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::wire::{read_reply, request, routing_key, uuid_v4};
use super::{Brokers, declare_common, queue_arguments, with_trace};
use crate::config::AmqpClientConfig as ClientConfig;
use crate::error::{ActError, Code};
use crate::message::{self, Message, Reply};
use crate::remote::{Remote, RemoteCall};
use crate::runtime::BoxFuture;
use crate::telemetry::{self, span};

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
    /// The broker's nodes.
    brokers: Brokers,
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

impl AmqpClient {
    /// A client; it connects on first use and again after any failure.
    pub fn new(config: ClientConfig, origin: Arc<str>) -> Self {
        let brokers = Brokers::new(&config.url.clone().unwrap_or_default());
        Self(Arc::new(ClientInner {
            brokers,
            config,
            origin,
            correlation: uuid_v4(),
            session: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }))
    }

    async fn session(&self) -> Result<Arc<ClientSession>, ActError> {
        let mut guard = self.0.session.lock().await;
        match guard.as_ref() {
            Some(session) if !session.dead.is_cancelled() => return Ok(session.clone()),
            // Its node went away: try the next one first.
            Some(_) => self.0.brokers.lost(),
            None => {}
        }
        let unreachable = |e: lapin::Error| {
            ActError::host(
                Code::Unreachable,
                format!("AMQP broker {}: {e}", self.0.brokers),
            )
        };
        let timeout = Duration::from_millis(self.0.config.connect_timeout_ms);
        let connection = self
            .0
            .brokers
            .connect("client", &self.0.config.exchange, timeout)
            .await
            .map_err(|e| {
                ActError::host(
                    Code::Unreachable,
                    format!("AMQP broker {}: {e}", self.0.brokers),
                )
            })?;
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
        let (reply_queue, consumer) = reply_queue(&channel, config).await.map_err(unreachable)?;
        let dead = CancellationToken::new();
        let session = Arc::new(ClientSession {
            _connection: connection,
            channel,
            reply_queue,
            dead: dead.clone(),
        });
        tokio::spawn(self.0.clone().take_replies(consumer, dead));
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Publishes `msg` with `routing_key` and, when `wait`, waits for the reply until `deadline`;
    /// the command carries the trace context of the span it is sent in.
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
        let payload = request(msg, &id, &self.0.origin, wait);
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
        let properties = with_trace(properties);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let lost = |e: lapin::Error| {
            session.dead.cancel();
            ActError::host(
                Code::Unreachable,
                format!("AMQP broker {}: {e}", self.0.brokers),
            )
        };
        let confirm = session
            .channel
            .basic_publish(
                self.0.config.exchange.as_str().into(),
                routing_key.into(),
                options,
                &payload,
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
                return Err(ActError::host(
                    Code::Unreachable,
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
            Ok(Err(_)) => Err(ActError::host(Code::Unreachable, "the AMQP client stopped")),
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

/// Declares this client's reply queue (exclusive, auto-deleted, named like Node's) and
/// consumes it without acks.
async fn reply_queue(
    channel: &Channel,
    config: &ClientConfig,
) -> Result<(String, lapin::Consumer), lapin::Error> {
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
        .await?;
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "".into(),
            consume,
            FieldTable::default(),
        )
        .await?;
    Ok((reply_queue, consumer))
}

impl ClientInner {
    /// Hands each reply to its waiter until the consumer ends (the connection went); then the
    /// session is dead and what still waits fails at once: no reply can come for it.
    async fn take_replies(self: Arc<Self>, mut consumer: lapin::Consumer, dead: CancellationToken) {
        while let Some(Ok(delivery)) = consumer.next().await {
            self.deliver(&delivery.data);
        }
        dead.cancel();
        let waiting: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, waiter) in waiting {
            let lost = ActError::host(
                Code::Unreachable,
                "the AMQP connection was lost before the reply came",
            );
            let _ = waiter.send(json!({ "kind": "res", "error": lost.to_seneca_json() }));
        }
    }

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
            // The messaging conventions' producer span: the command out and its reply back.
            let span = span!(
                format!("publish {key}"),
                Producer,
                KeyValue::new("messaging.system", "rabbitmq"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", self.0.config.exchange.clone()),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    key.to_string()
                ),
            );
            let sent = async {
                match self.send(msg, call.tx, &key, deadline, true).await? {
                    Sent::Routed(Some(answer)) => answer,
                    Sent::Routed(None) => Ok(Reply::from_value(&Value::Null)),
                    Sent::Unroutable => Err(ActError::host(
                        Code::Unreachable,
                        format!(
                            "no AMQP queue is bound for routing key {key} on {}",
                            self.0.config.exchange
                        ),
                    )),
                }
            };
            telemetry::traced!(&span, sent)
        })
    }

    fn describe(&self) -> String {
        format!("{} (exchange {})", self.0.brokers, self.0.config.exchange)
    }
}
