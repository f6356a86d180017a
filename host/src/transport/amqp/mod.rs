//! seneca-amqp-transport over lapin, wire-compatible with Node's `seneca-amqp-transport` 2
//! (SENECA.md §4): the names and envelopes ([`wire`]), the listener, which acknowledges a command
//! only after its reply is published, and the client; the events bus over the same broker; and
//! what they share: connecting, declaring, consuming, and reconnecting with backoff.

mod client;
mod events;
mod listener;
mod observe;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, ExchangeKind,
};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{AmqpClient, Sent};
pub use events::{AmqpBus, EventQueue};
pub use listener::run_listener;
pub use observe::run_events;
pub use wire::{binding_key, event_binding, event_routing_key, queue_name, routing_key};

use crate::config::{QueueType, Urls};
use crate::readiness::Flag;

/// Why the broker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused, or the connection failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// The TCP connection and AMQP handshake did not finish in time (a broker that accepts
    /// TCP but never speaks AMQP).
    #[error("no AMQP handshake within {0:?}")]
    Timeout(Duration),
    /// The broker answered a publish with a negative confirm (it could not take the message).
    #[error("the broker refused the message (negative publisher confirm)")]
    Nacked,
    /// A queue or exchange exists on the broker with other arguments than this host declares
    /// (a classic queue where `queue_type = "quorum"` asks for a quorum one, say). Trying again
    /// cannot help, so the transport stops with this error instead of reconnecting.
    #[error(
        "{0}. A queue keeps the arguments it was created with: delete it (`rabbitmqctl \
         delete_queue NAME`, once it is drained) or set [amqp] queue_type (or the listener's \
         queue_type) to what it is"
    )]
    Mismatch(String),
}

impl BrokerError {
    /// True when reconnecting cannot help (the configuration and the broker disagree).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Mismatch(_))
    }
}

/// How a broker session ended when it was not shut down.
struct Lost {
    /// Why.
    error: BrokerError,
    /// True when the session had connected and set itself up before it failed: the next
    /// attempt starts again from the shortest backoff.
    connected: bool,
}

impl Lost {
    /// Maps an error of a session that had (`true`) or had not connected yet; the broker's
    /// `PRECONDITION_FAILED` for an inequivalent argument is a [`BrokerError::Mismatch`].
    fn at(connected: bool) -> impl Fn(lapin::Error) -> Self {
        move |e| Self {
            error: classify(e),
            connected,
        }
    }
}

/// The broker's refusal of a declaration whose arguments differ from the existing queue's or
/// exchange's (406, "inequivalent arg ..."), as a [`BrokerError::Mismatch`]; anything else as
/// it is.
fn classify(e: lapin::Error) -> BrokerError {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        let message = amqp.get_message().as_str();
        if amqp.get_id() == 406 && message.contains("inequivalent arg") {
            return BrokerError::Mismatch(mismatch(message));
        }
    }
    e.into()
}

/// What a refused declaration means, in words: for a queue's type, which queue is which type
/// on the broker and which this host asked for (the broker says "none" for a queue declared
/// without `x-queue-type`, which is a classic one).
fn mismatch(message: &str) -> String {
    let between = |after: &str, before: char| {
        let start = message.find(after)? + after.len();
        let rest = &message[start..];
        Some(&rest[..rest.find(before)?])
    };
    if !message.contains("'x-queue-type'") {
        return format!("the broker refused a declaration: {message}");
    }
    let queue = between("for queue '", '\'').unwrap_or("?");
    let asked = between("received the value '", '\'')
        .or_else(|| between("received '", '\''))
        .unwrap_or(if message.contains("received none") {
            "classic"
        } else {
            "?"
        });
    let current = between("current is the value '", '\'')
        .or_else(|| between("current is '", '\''))
        .unwrap_or("classic");
    format!(
        "queue `{queue}` is a {current} queue on the broker, and this host declares it {asked} \
         (the broker said: {message})"
    )
}

impl From<BrokerError> for Lost {
    fn from(error: BrokerError) -> Self {
        Self {
            error,
            connected: false,
        }
    }
}

/// The first wait before reconnecting.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts: a broker that comes back is used again
/// within about this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a broker operation at shutdown (cancel, close) may take on a connection that may be
/// dead before it is given up on.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A broker's nodes (a RabbitMQ cluster, or one broker), and which to try first: the one that
/// answered last, or once its connection is lost, the one after it, so a host whose node died
/// is on another node after one connection attempt.
pub struct Brokers {
    /// The nodes' URLs, in the configured order.
    urls: Vec<String>,
    /// The node connected to last.
    current: AtomicUsize,
    /// The node to try first.
    first: AtomicUsize,
}

impl Brokers {
    /// The nodes of `urls` (RabbitMQ's default on loopback when there are none).
    pub fn new(urls: &Urls) -> Self {
        let urls = crate::config::amqp_urls(Some(urls)).0;
        Self {
            urls,
            current: AtomicUsize::new(0),
            first: AtomicUsize::new(0),
        }
    }

    /// Connects as `role` (named in the RabbitMQ UI with the exchange) to the first node that
    /// answers, each attempt given `timeout`; the last failure when none does.
    async fn connect(
        &self,
        role: &str,
        exchange: &str,
        timeout: Duration,
    ) -> Result<Connection, BrokerError> {
        let first = self.first.load(Ordering::Relaxed);
        let mut failure = None;
        for k in 0..self.urls.len() {
            let node = (first + k) % self.urls.len();
            match connect(&self.urls[node], role, exchange, timeout).await {
                Ok(connection) => {
                    self.current.store(node, Ordering::Relaxed);
                    self.first.store(node, Ordering::Relaxed);
                    if self.urls.len() > 1 {
                        tracing::info!(
                            "AMQP {role} connected to {}",
                            wire::redact(&self.urls[node])
                        );
                    }
                    return Ok(connection);
                }
                Err(e) => {
                    tracing::debug!(
                        "AMQP {role}: {} does not answer: {e}",
                        wire::redact(&self.urls[node])
                    );
                    failure = Some(e);
                }
            }
        }
        Err(failure.unwrap_or(BrokerError::Timeout(timeout)))
    }

    /// The connection to the current node was lost: the next attempt starts with the node
    /// after it (which is the same node when there is only one).
    fn lost(&self) {
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.urls.len().max(1);
        self.first.store(next, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Brokers {
    /// The nodes, passwords redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.urls.iter().map(|u| wire::redact(u)).collect();
        f.write_str(&nodes.join(", "))
    }
}

/// Runs `session` until `shutdown`, starting it again with backoff whenever the broker is lost
/// (each failure logged as `what` on `brokers`, and lowering `ready`, which the session raises
/// once it consumes); returns the error that made it stop for good (a
/// [fatal](BrokerError::is_fatal) one), if any.
async fn supervise<F, Fut>(
    what: &str,
    brokers: &Brokers,
    shutdown: &CancellationToken,
    ready: &Flag,
    mut session: F,
) -> Result<(), BrokerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Lost>>,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = session().await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if let Err(lost) = outcome {
            ready.down(lost.error.to_string());
            if lost.error.is_fatal() {
                tracing::error!("{what} on {brokers}: {}", lost.error);
                return Err(lost.error);
            }
            if lost.connected {
                backoff = MIN_BACKOFF;
                brokers.lost();
            }
            tracing::warn!(
                "{what} on {brokers}: {}; reconnecting in {backoff:?}",
                lost.error
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What a consumer does with each delivery.
trait Handler: Send + Sync + 'static {
    /// Handles one delivery, acknowledging (or refusing) it on `channel`.
    fn handle(
        self: Arc<Self>,
        channel: Channel,
        delivery: Delivery,
    ) -> impl Future<Output = ()> + Send;
}

/// One consumer's loop: each delivery handled in its own task, tracked so shutdown waits.
struct Handling<H> {
    /// What handles the deliveries.
    handler: Arc<H>,
    /// Where replies and acks go.
    channel: Channel,
    /// Tracks the delivery tasks.
    tracker: TaskTracker,
    /// Cancelled when the session ends.
    stopped: CancellationToken,
    /// Where a broken consumer reports, so the session reconnects.
    failed: tokio::sync::mpsc::Sender<lapin::Error>,
}

impl<H: Handler> Handling<H> {
    /// Takes deliveries from `consumer` until the session stops or the consumer fails.
    async fn run(self, mut consumer: Consumer) {
        loop {
            let next = tokio::select! {
                () = self.stopped.cancelled() => break,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (handler, channel) = (self.handler.clone(), self.channel.clone());
                    let large = delivery.data.len() >= crate::runtime::LARGE_BODY;
                    // Boxed here, once: the handling is kilobytes that tokio's spawn would
                    // otherwise copy at each of its layers, for every delivery.
                    self.tracker.spawn(Box::pin(async move {
                        handler.handle(channel, delivery).await;
                        if large {
                            crate::runtime::give_back_large();
                        }
                    }));
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

/// Connects to the broker at `url` as `role` (named in the RabbitMQ UI with the exchange),
/// giving up after `timeout`. lapin's own recovery is off: the transports reconnect and
/// redeclare themselves.
async fn connect(
    url: &str,
    role: &str,
    exchange: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let name = format!("wasmeca {role} {exchange} {}", std::process::id());
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(url, properties)).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(BrokerError::Timeout(timeout)),
    }
}

/// Declares a durable topic exchange.
async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
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
        .await
}

/// Starts consuming `queue` (with acknowledgements) under a tag naming this process.
async fn consume_queue(channel: &Channel, queue: &str) -> lapin::Result<Consumer> {
    let tag = format!(
        "wasmeca-{}-{}",
        std::process::id(),
        crate::message::new_id()
    );
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Ends a session that is shutting down: stops the consumers `tags` (what was delivered but
/// not started goes back to its queue when the channel closes), waits for the deliveries
/// running, then closes. Each broker step is bounded, so a dead connection never holds the
/// shutdown.
async fn wind_down(
    connection: &Connection,
    channel: &Channel,
    tags: impl IntoIterator<Item = ShortString>,
    tracker: &TaskTracker,
) {
    let bounded = |step| tokio::time::timeout(CLOSE_TIMEOUT, step);
    for tag in tags {
        let _ = bounded(channel.basic_cancel(tag, BasicCancelOptions::default())).await;
    }
    tracker.close();
    tracker.wait().await;
    tracker.reopen();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "bye".into())).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "bye".into())).await;
}

/// Declares a durable queue of `queue_type` with `arguments`.
async fn declare_queue(
    channel: &Channel,
    queue: &str,
    queue_type: QueueType,
    mut arguments: FieldTable,
) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    // Classic is RabbitMQ's default: left unsaid, so a queue declared by an older wasmeca or by
    // Node without the argument stays equivalent.
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from(queue_type.as_str())),
        );
    }
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .map(drop)
}

/// Binds `queue` to `exchange` with `key`.
async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares what both sides need: the topic exchange, the dead-letter exchange and (for a
/// listener) its queue, of `queue_type`.
async fn declare_common(
    channel: &Channel,
    exchange: &str,
    dlx: &str,
    dlq: Option<(&str, QueueType)>,
) -> lapin::Result<()> {
    declare_exchange(channel, exchange).await?;
    declare_exchange(channel, dlx).await?;
    if let Some((dlq, queue_type)) = dlq {
        declare_queue(channel, dlq, queue_type, FieldTable::default()).await?;
        bind(channel, dlq, dlx, "#").await?;
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

/// `properties` carrying the current span's trace context in W3C `traceparent`/`tracestate`
/// headers (as they were when telemetry is off).
fn with_trace(properties: BasicProperties) -> BasicProperties {
    let context = crate::telemetry::carry_current();
    if context.is_empty() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (name, value) in context {
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    properties.with_headers(headers)
}

/// The parent of a delivery's span: the trace its headers carry, else the one its Seneca `tx`
/// stands for, else none (a new trace).
fn remote_parent(properties: &BasicProperties, tx: Option<&str>) -> opentelemetry::Context {
    let header = |name: &str| match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        _ => None,
    };
    crate::telemetry::remote(header, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_type_mismatch_names_the_queue_and_both_types() {
        let said = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'seneca.add.cmd:salute' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";
        let text = mismatch(said);
        assert!(
            text.starts_with("queue `seneca.add.cmd:salute` is a classic queue on the broker, and this host declares it quorum"),
            "{text}"
        );
        let said = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received none but current is the value 'quorum' of type 'longstr'";
        assert!(
            mismatch(said).starts_with(
                "queue `q` is a quorum queue on the broker, and this host declares it classic"
            ),
            "{}",
            mismatch(said)
        );
        let other = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/'";
        assert!(mismatch(other).contains(other));
    }
}
