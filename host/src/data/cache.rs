//! The cache protocol (`role:cache,cmd:set|get|add|delete|incr|decr`), its trait, and the memory cache.
//!
//! Replies follow shared/ENTITY.md §7's recommendation, identical whatever the backend:
//! set/add/delete → `{"key":K}`; get → `{"value":V}` (`{"value":null}` for a missing key);
//! add of an existing key → `key_exists`; incr/decr → `{"value":new}`, `val` defaults to 1,
//! a missing key → `{"value":false}` and nothing is created, a non-number `val` or cached value →
//! `op_failed_nan`. `clear` is not served: @seneca/redis-cache runs FLUSHALL for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Number, Value, json};

use super::{BoxFuture, DataError};

/// @seneca/cache's default `max`: entries kept before the least recently used are evicted.
pub const DEFAULT_MAX_ENTRIES: usize = 9999;

/// A key-value cache of JSON values. Implementations expire entries after the cache's `expire`.
pub trait CacheStore: Send + Sync {
    /// The backend's name (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Stores `val` under `key`, replacing any value, with a fresh expiry.
    fn set<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<(), DataError>>;

    /// The value under `key`, or `None`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, DataError>>;

    /// Stores `val` only if `key` is absent, atomically; `false` when it was present.
    fn add<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<bool, DataError>>;

    /// Deletes `key` (absent is fine).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DataError>>;

    /// Adds `by` to the number under `key`, atomically, keeping its expiry. `None` when the key
    /// is missing (nothing is created); [`DataError::NotANumber`] when the value is not a number.
    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: &'a Number,
    ) -> BoxFuture<'a, Result<Option<Value>, DataError>>;
}

/// Answers one cache command as Node's caches do (see the module doc); any other command,
/// `clear` included, is `act_not_found`.
///
/// Unlike @seneca/redis-cache, whose INCR creates a missing key (and answers `false`), incr/decr
/// on a missing key never creates it, on every backend: the memory semantics, so behaviour does
/// not depend on the cache URL.
pub async fn cache(
    cache: &dyn CacheStore,
    cmd: &str,
    msg: &Map<String, Value>,
) -> Result<Value, DataError> {
    if !matches!(cmd, "set" | "get" | "add" | "delete" | "incr" | "decr") {
        return Err(DataError::UnknownCmd {
            api: "cache",
            cmd: super::clip(cmd),
        });
    }
    let key = match msg.get("key") {
        Some(Value::String(k)) => k.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(DataError::CacheInvalid {
                field: "key".into(),
                reason: "must be a string".into(),
            });
        }
    };
    let val = || {
        msg.get("val").ok_or_else(|| DataError::CacheInvalid {
            field: "val".into(),
            reason: "is required".into(),
        })
    };
    match cmd {
        "set" => cache.set(&key, val()?).await.map(|()| json!({"key": key})),
        "get" => Ok(json!({"value": cache.get(&key).await?})),
        "add" => match cache.add(&key, val()?).await? {
            true => Ok(json!({"key": key})),
            false => Err(DataError::KeyExists {
                key: super::clip(&key),
            }),
        },
        "delete" => cache.delete(&key).await.map(|()| json!({"key": key})),
        _ => {
            let nan = |what| DataError::NotANumber {
                cmd: cmd.to_string(),
                key: super::clip(&key),
                what,
            };
            let by = match msg.get("val") {
                None | Some(Value::Null) => Number::from(1),
                Some(Value::Number(n)) => n.clone(),
                Some(_) => return Err(nan("val")),
            };
            let by = if cmd == "decr" { negate(&by) } else { by };
            match cache.incr(&key, &by).await {
                Ok(new) => Ok(json!({"value": new.unwrap_or(Value::Bool(false))})),
                Err(DataError::NotANumber { what, .. }) => Err(nan(what)),
                Err(e) => Err(e),
            }
        }
    }
}

/// `-n`, exact for integers.
fn negate(n: &Number) -> Number {
    match n.as_i64().and_then(i64::checked_neg) {
        Some(i) => Number::from(i),
        None => float(-n.as_f64().unwrap_or(0.0)),
    }
}

/// A float as JavaScript would print it: integral values within 2^53 as integers (`3`, not `3.0`).
fn float(f: f64) -> Number {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Number::from(f as i64)
    } else {
        Number::from_f64(f).unwrap_or_else(|| Number::from(0))
    }
}

/// `a + b` as JavaScript computes it, exact for integers that do not overflow.
pub fn add_numbers(a: &Number, b: &Number) -> Number {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if x.checked_add(y).is_some_and(|s| s.abs() < 1 << 53) => {
            Number::from(x + y)
        }
        _ => float(a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN)),
    }
}

/// One cached value.
#[derive(Debug)]
struct Entry {
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
    map: HashMap<String, Entry>,
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
            Entry {
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

    #[test]
    fn js_arithmetic() {
        assert_eq!(
            add_numbers(&Number::from(10), &Number::from(1)),
            Number::from(11)
        );
        assert_eq!(
            Value::Number(add_numbers(&float(1.5), &float(1.5))),
            json!(3)
        );
        assert_eq!(
            Value::Number(add_numbers(&float(0.1), &float(0.2))),
            json!(0.30000000000000004)
        );
        assert_eq!(
            Value::Number(add_numbers(&Number::from(i64::MAX), &Number::from(1))),
            json!(9223372036854775808.0)
        );
        assert_eq!(negate(&Number::from(2)), Number::from(-2));
    }

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
