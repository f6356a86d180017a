//! The one step every listener (REST, Seneca HTTP, AMQP) takes with a message from outside,
//! after decoding it and before encoding the answer: the loop check (`transport$.track`), the
//! reply history (a message id seen before gets its earlier answer instead of running twice,
//! as Seneca's history cache does), the per-transport metric, and the act itself.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::error::{ActError, Code};
use crate::message::{Message, Reply};
use crate::router::Router;
use crate::telemetry::Span;

/// One listener's way into the router.
#[derive(Clone)]
pub struct Ingress {
    /// Acts the messages.
    router: Router,
    /// Answers by message id, shared by every listener of the host.
    history: Arc<History>,
    /// This listener's `ok` count in `transport_requests`, created once.
    ok: Counter,
    /// This listener's `error` count.
    error: Counter,
}

impl Ingress {
    /// The ingress of the listener named `transport` (`rest`, `http`, `amqp`).
    pub fn new(router: Router, history: Arc<History>, transport: &'static str) -> Self {
        let ok = router.metrics().transport(transport, "ok");
        let error = router.metrics().transport(transport, "error");
        Self {
            router,
            history,
            ok,
            error,
        }
    }

    /// The router behind it.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Acts `msg`, which came from the network, recording the act on the ingress's `span`:
    /// refused with `message_loop` when its track already holds this host; answered from the
    /// history when `id` was seen within the act's timeout.
    pub async fn act(
        &self,
        msg: Message,
        id: Option<&str>,
        span: &Span,
    ) -> Result<Reply, ActError> {
        let answer = self.answer(msg, id, span).await;
        match &answer {
            Ok(_) => self.ok.inc(),
            Err(_) => self.error.inc(),
        };
        answer
    }

    async fn answer(&self, msg: Message, id: Option<&str>, span: &Span) -> Result<Reply, ActError> {
        let me = self.router.instance_id();
        let track = msg
            .get("transport$")
            .and_then(|t| t.get("track"))
            .and_then(Value::as_array);
        if let Some(track) = track
            && track.iter().any(|t| t.as_str() == Some(me))
        {
            return Err(ActError::host(
                Code::MessageLoop,
                format!("the message has been through this host ({me}) already"),
            ));
        }
        let Some(id) = id else {
            return self.router.act_from(msg, true, Some(span)).await;
        };
        let ttl = self.router.limits().timeout_of(&msg);
        // Boxed: `once` keeps the act inside its own future a few times over, and every
        // listener's per-request future (boxed again by axum) would carry those bytes.
        let act = Box::pin(self.router.act_from(msg, true, Some(span)));
        let (answer, reused) = self.history.once(id, ttl, act).await;
        if reused {
            self.router.metrics().history_hit();
            tracing::debug!(id, "answered from the history");
        }
        answer
    }
}

/// The outcome of one message id, shared by every delivery of that id.
type Outcome = Arc<OnceCell<Result<Reply, ActError>>>;

/// Message ids seen recently and their answers (Seneca's history cache). Bounded three ways:
/// an entry expires after its act's timeout (as Seneca's does), and beyond `capacity` ids or
/// `max_bytes` of ids and answers the oldest go first, so a host under sustained load keeps
/// a steady size.
pub struct History {
    /// Outcomes by id, with when they expire.
    entries: Mutex<Entries>,
    /// The most ids kept.
    capacity: usize,
    /// The most bytes of ids and answers kept (estimated: their text plus a fixed overhead).
    max_bytes: usize,
}

/// What one remembered id costs besides its text and answer, in heap bytes: its map slot
/// (~85 with the table's spare room), its queue slot (~60), the shared cell holding the outcome
/// (~176 with its `Arc`), and allocation rounding of the two id copies (~32): an estimate, so
/// the byte budget comes close to what the process holds (BENCHMARKS.md: `/act` load, 35 MB).
const ENTRY_OVERHEAD: usize = 384;

/// One remembered id.
struct Remembered {
    /// When it stops answering.
    expiry: Instant,
    /// Its answer, once there is one.
    outcome: Outcome,
    /// What it costs, in bytes, counted in [`Entries::bytes`].
    bytes: usize,
}

/// [`History`]'s state.
#[derive(Default)]
struct Entries {
    /// id → its entry.
    by_id: HashMap<String, Remembered>,
    /// Ids in insertion order, with their expiry, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
    /// The sum of the entries' bytes.
    bytes: usize,
}

impl History {
    /// An empty history keeping at most `capacity` ids and `max_bytes` of them and their
    /// answers.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity,
            max_bytes,
        }
    }

    /// Runs `act` for the first delivery of `id` within `ttl`; a later (or concurrent)
    /// delivery of the same id gets the same answer without running it again. The flag is true
    /// when the answer was reused.
    pub async fn once<F>(&self, id: &str, ttl: Duration, act: F) -> (Result<Reply, ActError>, bool)
    where
        F: Future<Output = Result<Reply, ActError>>,
    {
        let (expiry, outcome) = self.entry(id, ttl);
        let mut ran = false;
        let answer = outcome
            .get_or_init(|| {
                ran = true;
                act
            })
            .await
            .clone();
        if ran {
            let size = match &answer {
                Ok(reply) => reply.as_str().len(),
                Err(e) => e.message.len() + e.code.len(),
            };
            self.count(id, expiry, size);
        }
        (answer, !ran)
    }

    /// The entry of `id` (a new one unless a live one exists), after dropping the expired and
    /// those beyond the bounds.
    fn entry(&self, id: &str, ttl: Duration) -> (Instant, Outcome) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut *entries;
        while let Some((expiry, old)) = entries.order.front() {
            let full = entries.order.len() >= self.capacity || entries.bytes > self.max_bytes;
            if *expiry > now && !full {
                break;
            }
            if entries.by_id.get(old).is_some_and(|e| e.expiry == *expiry)
                && let Some(gone) = entries.by_id.remove(old)
            {
                entries.bytes -= gone.bytes;
            }
            entries.order.pop_front();
        }
        if let Some(entry) = entries.by_id.get(id)
            && entry.expiry > now
        {
            return (entry.expiry, entry.outcome.clone());
        }
        let expiry = now + ttl;
        let outcome = Outcome::default();
        let bytes = 2 * id.len() + ENTRY_OVERHEAD;
        entries.bytes += bytes;
        let fresh = Remembered {
            expiry,
            outcome: outcome.clone(),
            bytes,
        };
        if let Some(replaced) = entries.by_id.insert(id.to_owned(), fresh) {
            entries.bytes -= replaced.bytes;
        }
        entries.order.push_back((expiry, id.to_owned()));
        (expiry, outcome)
    }

    /// Adds the `size` of its answer to the entry of `id` made at `expiry`, if it is still
    /// there.
    fn count(&self, id: &str, expiry: Instant, size: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut *entries;
        if let Some(entry) = entries.by_id.get_mut(id)
            && entry.expiry == expiry
        {
            entry.bytes += size;
            entries.bytes += size;
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The estimated bytes of the ids and answers remembered.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn reply(n: usize) -> Result<Reply, ActError> {
        Ok(Reply::from_value(&serde_json::json!({ "n": n })))
    }

    #[tokio::test]
    async fn a_seen_id_gets_the_cached_answer() {
        let history = History::new(100, 1 << 20);
        let runs = AtomicUsize::new(0);
        let run = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            reply(n)
        };
        let (first, reused) = history.once("a/b", Duration::from_secs(5), run()).await;
        assert!(!reused);
        let (second, reused) = history.once("a/b", Duration::from_secs(5), run()).await;
        assert!(reused);
        assert_eq!(first.unwrap(), second.unwrap());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let (_, reused) = history.once("c/d", Duration::from_secs(5), run()).await;
        assert!(!reused);
    }

    #[tokio::test(start_paused = true)]
    async fn ids_expire_and_the_oldest_go_beyond_capacity() {
        let history = History::new(2, 1 << 20);
        let _ = history
            .once("1", Duration::from_millis(100), async { reply(1) })
            .await;
        tokio::time::advance(Duration::from_millis(200)).await;
        let (_, reused) = history
            .once("1", Duration::from_millis(100), async { reply(2) })
            .await;
        assert!(!reused, "expired entries run again");
        let _ = history
            .once("2", Duration::from_secs(9), async { reply(3) })
            .await;
        let _ = history
            .once("3", Duration::from_secs(9), async { reply(4) })
            .await;
        assert!(history.len() <= 2, "{}", history.len());
    }

    #[tokio::test]
    async fn the_oldest_go_beyond_the_byte_budget() {
        let history = History::new(1000, 4096);
        let big = || async {
            Ok(Reply::from_value(
                &serde_json::json!({ "x": "y".repeat(1000) }),
            ))
        };
        for n in 0..10 {
            let _ = history
                .once(&n.to_string(), Duration::from_secs(60), big())
                .await;
        }
        // Each entry costs about 1.2 KB: the budget keeps the newest few.
        assert!(history.len() < 10, "{}", history.len());
        assert!(history.bytes() <= 4096 + 1300, "{}", history.bytes());
        let (_, reused) = history.once("9", Duration::from_secs(60), big()).await;
        assert!(reused, "the newest is kept");
        let (_, reused) = history.once("0", Duration::from_secs(60), big()).await;
        assert!(!reused, "the oldest went");
    }

    #[tokio::test]
    async fn concurrent_deliveries_run_once() {
        let history = Arc::new(History::new(10, 1 << 20));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (history, runs) = (history.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                history
                    .once("same", Duration::from_secs(5), async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        reply(7)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0.unwrap().to_value()["n"], 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
