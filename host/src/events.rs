//! Events: publish once, and every observer whose pattern matches hears it. An event is a
//! message stamped with an id (`event$`) and its publisher's `tx$`; a [`Bus`] accepts it (the
//! in-memory [`LocalBus`] here, or a broker adapter), and [`deliver`] runs this host's matching
//! observers on it, each once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::error::{ActError, Code};
use crate::message::{self, Message};
use crate::registry::{Observer, WeakRegistry};
use crate::runtime::{BoxFuture, CallCtx};

/// Meta key: an event's id.
pub const EVENT_ID: &str = "event$";

/// Where published events go.
pub trait Bus: Send + Sync {
    /// Accepts a stamped event: resolves once it is queued in this host, or confirmed by the
    /// broker.
    fn publish(&self, event: Message) -> BoxFuture<'_, Result<(), ActError>>;

    /// What it is, for logs (`in memory`, `amqp://…@host (exchange wasmeca.events)`).
    fn describe(&self) -> String;
}

/// Gives `event` its id (unless it has one) and transaction (its own `tx$`, else `tx`, else a
/// new one), without the keys actions never see; returns the id.
pub fn stamp(event: &mut Message, tx: Option<&str>) -> String {
    event.strip_hidden();
    let id = match event.get(EVENT_ID).and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => message::new_id(),
    };
    event.insert(EVENT_ID.into(), Value::String(id.clone()));
    if event.get(message::TX).and_then(Value::as_str).is_none() {
        let tx = tx.map_or_else(message::new_id, str::to_owned);
        event.insert(message::TX.into(), Value::String(tx));
    }
    id
}

/// The id of a stamped event.
pub fn id_of(event: &Message) -> &str {
    event.get(EVENT_ID).and_then(Value::as_str).unwrap_or("-")
}

/// An observer that failed on an event.
#[derive(Debug)]
pub struct Failure {
    /// Which observer.
    pub observer: Arc<Observer>,
    /// Why.
    pub error: ActError,
}

/// Runs every observer in `observers` on `event` at once, each within `timeout`; returns
/// those that failed.
pub async fn deliver(
    observers: Vec<Arc<Observer>>,
    event: &Message,
    timeout: Duration,
) -> Vec<Failure> {
    let tx: Arc<str> = event
        .get(message::TX)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .into();
    let runs = observers.into_iter().map(|observer| {
        let tx = tx.clone();
        let ctx = CallCtx::root(tx.clone(), Instant::now() + timeout);
        async move {
            let outcome = observer.observe(event, ctx).await;
            outcome.err().map(|error| {
                tracing::warn!(
                    plugin = %observer.plugin.key(),
                    pattern = %observer.pattern,
                    tx = &*tx,
                    code = %error.code,
                    event = id_of(event),
                    "observer failed: {}",
                    error.message
                );
                Failure { observer, error }
            })
        }
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// How many events the in-memory bus holds waiting for their observers.
pub const LOCAL_QUEUE: usize = 10_000;

/// How many events the in-memory bus delivers at once.
const LOCAL_CONCURRENCY: usize = 64;

/// Events within one host, in memory: a bounded queue and a task that delivers each event to
/// the host's observers, concurrently with the publisher. When the queue is full, `publish`
/// waits for room (so a flood slows its publishers instead of exhausting memory), up to the
/// publisher's deadline. Not durable: events queued when the host stops are lost.
pub struct LocalBus {
    /// The queue.
    queue: mpsc::Sender<Message>,
}

impl LocalBus {
    /// A bus delivering to the observers of `registry`, each within `timeout`; its task runs
    /// on the current tokio runtime until the registry is gone.
    pub fn start(registry: WeakRegistry, timeout: Duration) -> Self {
        let (queue, mut events) = mpsc::channel::<Message>(LOCAL_QUEUE);
        tokio::spawn(async move {
            let running = Arc::new(Semaphore::new(LOCAL_CONCURRENCY));
            while let Some(event) = events.recv().await {
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                let observers = registry.snapshot().observers_of(&event);
                drop(registry);
                if observers.is_empty() {
                    continue;
                }
                let Ok(turn) = running.clone().acquire_owned().await else {
                    break;
                };
                tokio::spawn(async move {
                    let _turn = turn;
                    deliver(observers, &event, timeout).await;
                });
            }
        });
        Self { queue }
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Message) -> BoxFuture<'_, Result<(), ActError>> {
        Box::pin(async move {
            self.queue.send(event).await.map_err(|_| {
                ActError::host(
                    Code::Closed,
                    "the host is shutting down; the event was not queued",
                )
            })
        })
    }

    fn describe(&self) -> String {
        "in memory".into()
    }
}
