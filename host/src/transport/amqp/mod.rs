//! seneca-amqp-transport over lapin, wire-compatible with Node's `seneca-amqp-transport` 2
//! (SENECA.md §4): the names and envelopes ([`wire`]), the listener, which acknowledges a command
//! only after its reply is published, and the client; the events bus over the same broker; and
//! what they share: connecting, declaring, consuming, and reconnecting with backoff.

mod client;
mod events;
mod listener;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{AmqpClient, Sent};
pub use events::{AmqpBus, EventQueue, run_events};
pub use listener::run_listener;
pub use wire::{binding_key, event_binding, event_routing_key, queue_name, routing_key};

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
    /// Maps an error of a session that had (`true`) or had not connected yet.
    fn at(connected: bool) -> impl Fn(lapin::Error) -> Self {
        move |e| Self {
            error: e.into(),
            connected,
        }
    }
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

/// Runs `session` until `shutdown`, starting it again with backoff whenever the broker is lost
/// (each failure logged as `what` on the redacted `url`).
async fn supervise<F, Fut>(what: &str, url: &str, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Lost>>,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = session().await;
        if shutdown.is_cancelled() {
            break;
        }
        if let Err(lost) = outcome {
            if lost.connected {
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(
                "{what} on {}: {}; reconnecting in {backoff:?}",
                wire::redact(url),
                lost.error
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
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
                    self.tracker.spawn(handler.handle(channel, delivery));
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

/// Declares a durable queue with `arguments`.
async fn declare_queue(channel: &Channel, queue: &str, arguments: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
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

/// Declares what both sides need: the topic exchange, the dead-letter exchange and its queue.
async fn declare_common(
    channel: &Channel,
    exchange: &str,
    dlx: &str,
    dlq: Option<&str>,
) -> lapin::Result<()> {
    declare_exchange(channel, exchange).await?;
    declare_exchange(channel, dlx).await?;
    if let Some(dlq) = dlq {
        declare_queue(channel, dlq, FieldTable::default()).await?;
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
