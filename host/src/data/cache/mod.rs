//! The cache protocol (`role:cache,cmd:set|get|add|delete|incr|decr`) and the trait the caches
//! ([`memory`], [`redis`]) implement.
//!
//! Replies follow shared/ENTITY.md §7's recommendation, identical whatever the backend:
//! set/add/delete → `{"key":K}`; get → `{"value":V}` (`{"value":null}` for a missing key);
//! add of an existing key → `key_exists`; incr/decr → `{"value":new}`, `val` defaults to 1,
//! a missing key → `{"value":false}` and nothing is created, a non-number `val` or cached value →
//! `op_failed_nan`. `clear` is not served: @seneca/redis-cache runs FLUSHALL for it.

pub mod memory;
pub mod redis;

use serde_json::{Map, Number, Value, json};

use super::DataError;
use crate::runtime::BoxFuture;

pub use memory::MemoryCache;
pub use redis::RedisCache;

/// @seneca/cache's default `max`: entries kept before the least recently used are evicted.
pub const DEFAULT_MAX_ENTRIES: usize = 9999;

/// A key-value cache of JSON values. Implementations expire entries after the cache's `expire`.
pub trait CacheStore: Send + Sync {
    /// The backend's name (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Answers when the cache can be used now (a readiness probe asks): a round trip to a
    /// server; an in-process cache always can.
    fn ping(&self) -> BoxFuture<'_, Result<(), DataError>> {
        Box::pin(async { Ok(()) })
    }

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
            cmd: crate::error::clip(cmd).into_owned(),
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
                key: crate::error::clip(&key).into_owned(),
            }),
        },
        "delete" => cache.delete(&key).await.map(|()| json!({"key": key})),
        _ => {
            let nan = |what| DataError::NotANumber {
                cmd: cmd.to_string(),
                key: crate::error::clip(&key).into_owned(),
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
}
