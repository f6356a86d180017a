//! Seneca transports: what a client transport must do (`Remote`), the pins that route acts to
//! one (`ClientEntry`), and the history of message ids every listener shares so a message
//! seen before gets its earlier answer instead of running twice.

pub mod amqp;
pub mod http;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::message::{ActError, Message, Reply};
use crate::pattern::Pattern;

/// A boxed, sendable future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client transport knows about the act it forwards.
#[derive(Debug, Clone, Copy)]
pub struct RemoteCall<'a> {
    /// The transaction id, sent along so the remote side keeps it.
    pub tx: &'a str,
    /// When the act must have answered.
    pub deadline: Instant,
    /// The act's timeout, for `action_timeout` messages.
    pub timeout: Duration,
    /// The client pin that matched, for messages and routing keys.
    pub pin: &'a Pattern,
}

/// A client transport: sends acts to another Seneca-compatible service.
pub trait Remote: Send + Sync {
    /// Sends `msg` and waits for the answer (or the remote error) until `call.deadline`.
    fn act<'a>(
        &'a self,
        msg: &'a Message,
        call: RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// Where it sends, for logs and listings (`http://127.0.0.1:10102/act`).
    fn describe(&self) -> String;
}

/// A `[[client]]` pin: acts matching it go to `remote` when no plugin serves them.
pub struct ClientEntry {
    /// The pin (empty: catch-all).
    pub pin: Pattern,
    /// The transport.
    pub remote: Arc<dyn Remote>,
}

impl std::fmt::Debug for ClientEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.pin, self.remote.describe())
    }
}

/// A new Seneca instance id for this process: `<id>/<start ms>/<pid>/<version>/wasmeca`,
/// sent as `origin`/`accept` by every transport.
pub fn instance_id() -> Arc<str> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{}/{started}/{}/{}/wasmeca",
        crate::message::new_id(),
        std::process::id(),
        env!("CARGO_PKG_VERSION")
    )
    .into()
}

/// The outcome of one message id, shared by every delivery of that id.
type Outcome = Arc<OnceCell<Result<Reply, ActError>>>;

/// Message ids seen recently and their answers (Seneca's history cache). Bounded: entries
/// expire after their act's timeout, and the oldest go first beyond `capacity`.
pub struct History {
    /// Outcomes by id, with when they expire.
    entries: Mutex<Entries>,
    /// The most ids kept.
    capacity: usize,
}

/// [`History`]'s state.
#[derive(Default)]
struct Entries {
    /// id → (expiry, outcome).
    by_id: HashMap<String, (Instant, Outcome)>,
    /// Ids in insertion order, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
}

impl History {
    /// An empty history keeping at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity,
        }
    }

    /// Runs `act` for the first delivery of `id` within `ttl`; a later (or concurrent)
    /// delivery of the same id gets the same answer without running it again. The flag is true
    /// when the answer was reused.
    pub async fn once<F>(&self, id: &str, ttl: Duration, act: F) -> (Result<Reply, ActError>, bool)
    where
        F: Future<Output = Result<Reply, ActError>>,
    {
        let outcome = self.entry(id, ttl);
        let mut ran = false;
        let answer = outcome
            .get_or_init(|| {
                ran = true;
                act
            })
            .await
            .clone();
        (answer, !ran)
    }

    fn entry(&self, id: &str, ttl: Duration) -> Outcome {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Entries { by_id, order } = &mut *entries;
        while let Some((expiry, old)) = order.front() {
            if *expiry > now && order.len() < self.capacity {
                break;
            }
            if by_id.get(old).is_some_and(|(e, _)| e == expiry) {
                by_id.remove(old);
            }
            order.pop_front();
        }
        if let Some((expiry, outcome)) = by_id.get(id)
            && *expiry > now
        {
            return outcome.clone();
        }
        let expiry = now + ttl;
        let outcome = Outcome::default();
        by_id.insert(id.to_owned(), (expiry, outcome.clone()));
        order.push_back((expiry, id.to_owned()));
        outcome
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn reply(n: usize) -> Result<Reply, ActError> {
        Ok(Reply::from_value(&serde_json::json!({ "n": n })))
    }

    #[tokio::test]
    async fn a_seen_id_gets_the_cached_answer() {
        let history = History::new(100);
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
        let history = History::new(2);
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
    async fn concurrent_deliveries_run_once() {
        let history = Arc::new(History::new(10));
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
