//! The memory cache, like @seneca/cache: at most `max` entries (least recently used evicted),
//! each living `expire` after it was set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Number, Value};

use super::{CacheStore, add_numbers};
use crate::data::DataError;
use crate::runtime::BoxFuture;

/// One cached value.
#[derive(Debug)]
struct Cached {
    /// The value as set.
    value: Value,
    /// When it stops being served; `None` never.
    expires: Option<Instant>,
    /// The access tick it was last used at, for least-recently-used eviction.
    used: u64,
}

/// The mutable state of a [`MemoryCache`].
#[derive(Debug, Default)]
struct Entries {
    /// The values by key.
    map: HashMap<String, Cached>,
    /// The access clock: bumped on every use.
    tick: u64,
}

/// A memory cache like @seneca/cache: at most `max` entries (least recently used evicted), each
/// living `expire` after it was set.
#[derive(Debug)]
pub struct MemoryCache {
    /// The entries, behind a short lock (never held across an await).
    entries: Mutex<Entries>,
    /// The most entries kept.
    max: usize,
    /// How long a set value lives; `None` forever.
    expire: Option<Duration>,
}

impl MemoryCache {
    /// A cache of at most `max` entries (at least 1) living `expire` each (zero: forever).
    pub fn new(max: usize, expire: Duration) -> Self {
        MemoryCache {
            entries: Mutex::default(),
            max: max.max(1),
            expire: (!expire.is_zero()).then_some(expire),
        }
    }

    /// Runs `f` on the live entry under `key` (expired ones are removed first).
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Entries, bool) -> T) -> T {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.tick += 1;
        let now = Instant::now();
        if e.map
            .get(key)
            .is_some_and(|en| en.expires.is_some_and(|t| t <= now))
        {
            e.map.remove(key);
        }
        let live = e.map.contains_key(key);
        f(&mut e, live)
    }

    /// Stores a value, evicting when full.
    fn put(&self, e: &mut Entries, key: &str, value: Value) {
        if e.map.len() >= self.max && !e.map.contains_key(key) {
            self.evict(e);
        }
        let expires = self.expire.map(|d| Instant::now() + d);
        let used = e.tick;
        e.map.insert(
            key.to_string(),
            Cached {
                value,
                expires,
                used,
            },
        );
    }

    /// Drops expired entries, then the least recently used tenth, so eviction is amortised.
    fn evict(&self, e: &mut Entries) {
        let now = Instant::now();
        e.map.retain(|_, en| en.expires.is_none_or(|t| t > now));
        if e.map.len() < self.max {
            return;
        }
        let mut ticks: Vec<u64> = e.map.values().map(|en| en.used).collect();
        let cut = (self.max / 10).max(1).min(ticks.len() - 1);
        let (_, nth, _) = ticks.select_nth_unstable(cut);
        let nth = *nth;
        e.map.retain(|_, en| en.used > nth);
    }
}

impl CacheStore for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn set<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<(), DataError>> {
        Box::pin(async move {
            self.with(key, |e, _| self.put(e, key, val.clone()));
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, DataError>> {
        Box::pin(async move {
            Ok(self.with(key, |e, _| {
                let tick = e.tick;
                e.map.get_mut(key).map(|en| {
                    en.used = tick;
                    en.value.clone()
                })
            }))
        })
    }

    fn add<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<bool, DataError>> {
        Box::pin(async move {
            Ok(self.with(key, |e, live| {
                if !live {
                    self.put(e, key, val.clone());
                }
                !live
            }))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DataError>> {
        Box::pin(async move {
            self.with(key, |e, _| e.map.remove(key));
            Ok(())
        })
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: &'a Number,
    ) -> BoxFuture<'a, Result<Option<Value>, DataError>> {
        Box::pin(async move {
            self.with(key, |e, _| {
                let tick = e.tick;
                let Some(en) = e.map.get_mut(key) else {
                    return Ok(None);
                };
                let Value::Number(old) = &en.value else {
                    return Err(DataError::NotANumber {
                        cmd: String::new(),
                        key: key.to_string(),
                        what: "the cached value",
                    });
                };
                en.value = Value::Number(add_numbers(old, by));
                en.used = tick;
                Ok(Some(en.value.clone()))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache::cache;
    use serde_json::json;

    #[tokio::test]
    async fn errors_never_echo_unbounded_input() {
        let c = MemoryCache::new(10, Duration::ZERO);
        let msg = json!({"key": "k".repeat(10_000), "val": "v"})
            .as_object()
            .unwrap()
            .clone();
        cache(&c, "add", &msg).await.unwrap();
        let e = cache(&c, "add", &msg).await.unwrap_err();
        assert_eq!(e.code(), "key_exists");
        assert!(e.to_string().len() < 200 && e.details().to_string().len() < 200);
        let e = cache(&c, &"x".repeat(10_000), &msg).await.unwrap_err();
        assert!(e.to_string().len() < 200 && e.details().to_string().len() < 200);
    }

    #[test]
    fn evicts_least_recently_used_and_expires() {
        let c = MemoryCache::new(10, Duration::ZERO);
        for i in 0..10 {
            c.with(&format!("k{i}"), |e, _| {
                c.put(e, &format!("k{i}"), json!(i))
            });
        }
        c.with("k0", |e, _| {
            e.map.get_mut("k0").map(|en| en.used = u64::MAX)
        }); // k0 is hot
        c.with("new", |e, _| c.put(e, "new", json!(1)));
        let e = c.entries.lock().unwrap();
        assert!(e.map.len() <= 10 && e.map.contains_key("k0") && e.map.contains_key("new"));
        drop(e);
        let short = MemoryCache::new(5, Duration::from_millis(1));
        short.with("a", |e, _| short.put(e, "a", json!(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.with("a", |_, live| live));
    }
}
