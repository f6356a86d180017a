//! Events: publish once, and every observer whose pattern matches hears it. An event is a
//! message stamped with an id (`event$`) and its publisher's `tx$`; a [`Bus`] accepts it (the
//! in-memory [`LocalBus`] here, or a broker adapter), and [`deliver`] runs this host's matching
//! observers on it, each once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ActError, Code};
use crate::message::{self, Message};
use crate::registry::{Observer, WeakRegistry};
use crate::runtime::{BoxFuture, CallCtx};
use crate::telemetry::{self, span};

/// Meta key: an event's id.
pub const EVENT_ID: &str = "event$";

/// Where published events go.
pub trait Bus: Send + Sync {
    /// Accepts a stamped event: resolves once it is queued in this host, or confirmed by the
    /// broker, or fails at `deadline`.
    fn publish(&self, event: Message, deadline: Instant) -> BoxFuture<'_, Result<(), ActError>>;

    /// What it is, for logs (`in memory`, `amqp://…@host (exchange wasmeca.events)`).
    fn describe(&self) -> String;

    /// Resolves once every event this host accepted has been handled by this host's
    /// observers, including the events they published in turn (`wasmeca test` runs each call
    /// after the events of the calls before it). A bus that cannot know (a broker's, where
    /// other hosts observe) resolves at once.
    fn settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
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

/// How many times an observer is tried on one event before it is given up on, and how long
/// to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// The wait before the second try; it doubles for each try after.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(100),
        }
    }
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
            let span = span!(
                format!("observe {}", observer.pattern),
                Internal,
                KeyValue::new("seneca.pattern", observer.pattern.to_string()),
                KeyValue::new("wasmeca.plugin", observer.plugin.ident.clone()),
                KeyValue::new("messaging.message.id", id_of(event).to_owned()),
            );
            let outcome = telemetry::traced!(&span, observer.observe(event, ctx));
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

/// [`deliver`], then tries the observers that failed again (only those) as `retry` says,
/// until none fails, the tries are used up, or `stop` is cancelled; returns the failures of
/// the last try.
pub async fn deliver_with_retries(
    observers: Vec<Arc<Observer>>,
    event: &Message,
    timeout: Duration,
    retry: Retry,
    stop: &CancellationToken,
) -> Vec<Failure> {
    let mut failures = deliver(observers, event, timeout).await;
    let mut wait = retry.backoff;
    for _ in 1..retry.attempts.max(1) {
        if failures.is_empty() || stop.is_cancelled() {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = wait.saturating_mul(2);
        let again = failures.into_iter().map(|f| f.observer).collect();
        failures = deliver(again, event, timeout).await;
    }
    failures
}

/// How many events the in-memory bus holds waiting for their observers.
pub const LOCAL_QUEUE: usize = 10_000;

/// How many events the in-memory bus delivers at once.
const LOCAL_CONCURRENCY: usize = 64;

/// Events within one host, in memory: a bounded queue and a task that delivers each event to
/// the host's observers, concurrently with the publisher. When the queue is full, `publish`
/// waits for room (so a flood slows its publishers instead of exhausting memory), up to the
/// publisher's deadline, then fails with `events_full`. Not durable: events queued when the
/// host stops are lost.
pub struct LocalBus {
    /// Whose observers hear the events.
    registry: WeakRegistry,
    /// How long one observer may take on one event.
    timeout: Duration,
    /// How failing observers are retried.
    retry: Retry,
    /// The queue, made (and its task started) on the first publish, inside the async runtime.
    queue: OnceLock<mpsc::Sender<(Message, Context, Handled)>>,
    /// Events accepted and not yet handled, so [`Bus::settled`] knows when the bus is quiet.
    pending: Arc<Pending>,
}

/// A count of events in flight, and a wake-up for whoever waits for it to reach zero.
#[derive(Default)]
struct Pending {
    /// Events accepted and not yet handled by every observer.
    count: std::sync::atomic::AtomicUsize,
    /// Woken each time the count reaches zero.
    quiet: tokio::sync::Notify,
}

impl Pending {
    fn add(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn done(&self) {
        if self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.quiet.notify_waiters();
        }
    }

    async fn settled(&self) {
        loop {
            let quiet = self.quiet.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            quiet.await;
        }
    }
}

/// Counts one event as handled when dropped, however its delivery ends.
struct Handled(Arc<Pending>);

impl Drop for Handled {
    fn drop(&mut self) {
        self.0.done();
    }
}

impl LocalBus {
    /// A bus delivering to the observers of `registry`, each within `timeout`, retrying as
    /// `retry` says; its task runs from the first publish until the registry is gone.
    pub fn new(registry: WeakRegistry, timeout: Duration, retry: Retry) -> Self {
        Self {
            registry,
            timeout,
            retry,
            queue: OnceLock::new(),
            pending: Arc::default(),
        }
    }

    /// The queue, starting its task the first time.
    fn queue(&self) -> &mpsc::Sender<(Message, Context, Handled)> {
        self.queue.get_or_init(|| {
            let (queue, events) = mpsc::channel::<(Message, Context, Handled)>(LOCAL_QUEUE);
            tokio::spawn(run_local(
                events,
                self.registry.clone(),
                self.timeout,
                self.retry,
            ));
            queue
        })
    }
}

/// The in-memory bus's task: takes each event off the queue and delivers it, at most
/// [`LOCAL_CONCURRENCY`] at once.
async fn run_local(
    mut events: mpsc::Receiver<(Message, Context, Handled)>,
    registry: WeakRegistry,
    timeout: Duration,
    retry: Retry,
) {
    let running = Arc::new(Semaphore::new(LOCAL_CONCURRENCY));
    // Nothing stops the retries early: the queue is not durable, and nothing drains it.
    let stop = CancellationToken::new();
    while let Some((event, published, handled)) = events.recv().await {
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
        let stop = stop.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let _handled = handled;
            let span = span!(
                parent: &published,
                "process event",
                Consumer,
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.message.id", id_of(&event).to_owned()),
            );
            let delivered = deliver_with_retries(observers, &event, timeout, retry, &stop);
            for failure in telemetry::inside!(&span, delivered) {
                failure.observer.metrics.dropped();
                tracing::error!(
                    plugin = %failure.observer.plugin.key(),
                    pattern = %failure.observer.pattern,
                    code = %failure.error.code,
                    event = id_of(&event),
                    "observer gave up on the event after {} tries (in memory there is no \
                     dead-letter queue): {}; the event was {}",
                    retry.attempts,
                    failure.error.message,
                    crate::error::clip(&event.to_json())
                );
            }
        });
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Message, deadline: Instant) -> BoxFuture<'_, Result<(), ActError>> {
        Box::pin(async move {
            // The publish's span goes along, the parent of the delivery's.
            let published = if telemetry::on() {
                Context::current()
            } else {
                Context::new()
            };
            self.pending.add();
            let handled = Handled(self.pending.clone());
            let queued = self.queue().send((event, published, handled));
            match tokio::time::timeout_at(deadline, queued).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(ActError::host(
                    Code::Closed,
                    "the host is shutting down; the event was not queued",
                )),
                Err(_) => Err(ActError::host(
                    Code::EventsFull,
                    format!(
                        "the in-memory event queue stayed full ({LOCAL_QUEUE} events waiting for \
                         their observers) until the publisher's deadline"
                    ),
                )),
            }
        })
    }

    fn describe(&self) -> String {
        "in memory".into()
    }

    fn settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pending.settled())
    }
}
