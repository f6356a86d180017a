//! The Redis cache: @seneca/redis-cache's layout (raw key, JSON text value, `EX`), atomic add/incr.
//!
//! Shares keys with Node services using @seneca/redis-cache: the key as given (no prefix), the
//! value as `JSON.stringify(val)` text, `SET key json EX expire`. Better than Node on purpose:
//! `add` is one `SET … NX EX` (Node checks EXISTS then SETs), and incr/decr is atomic: one Lua
//! script for integers (the common counter), and for other numbers a compare-and-set (JavaScript's
//! float arithmetic in Rust, then a script that writes only if the value is still the one read),
//! both keeping the TTL, so a non-number answers `op_failed_nan` and a missing key is
//! never created (Node's INCR creates it). The connection is a redis-rs `ConnectionManager`,
//! connected lazily and reconnecting by itself: while Redis is down calls answer
//! `store_unavailable`.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Number, Value};

use super::{CacheStore, add_numbers};
use crate::data::{DataError, redact_url};
use crate::runtime::BoxFuture;

/// How many times a float incr retries its compare-and-set when the value changes under it.
const CAS_ATTEMPTS: usize = 64;

/// Integer incr in one atomic step: `{0}` missing, `{1, new}` done (TTL kept), `{2, old}` when the
/// old value or the step is not a safe integer (the caller then does a compare-and-set in Rust).
const INCR_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return {0, ''} end
if string.match(v, '^%-?%d+$') and string.match(ARGV[1], '^%-?%d+$') and #v < 16 and #ARGV[1] < 16 then
  local r = tonumber(v) + tonumber(ARGV[1])
  if r < 9007199254740992 and r > -9007199254740992 then
    local s = string.format('%d', r)
    redis.call('SET', KEYS[1], s, 'KEEPTTL')
    return {1, s}
  end
end
return {2, v}";

/// Writes ARGV[2] only if the key still holds ARGV[1], keeping its TTL.
const CAS_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0";

/// A Redis-backed cache.
pub struct RedisCache {
    /// The multiplexed, self-reconnecting connection (cloned per call; clones share it).
    conn: ConnectionManager,
    /// How long a set or added value lives; `None` forever.
    expire: Option<Duration>,
    /// The integer incr script (sent once, then run by its SHA).
    incr: ::redis::Script,
    /// The compare-and-set script for other numbers.
    cas: ::redis::Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("expire", &self.expire)
            .finish()
    }
}

/// Maps a driver error: connection trouble is `store_unavailable`, the rest `store_failed`.
fn redis_error(e: redis::RedisError) -> DataError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        DataError::Unavailable {
            store: "redis",
            reason: crate::error::clip(&e.to_string()).into_owned(),
        }
    } else {
        DataError::Failed {
            store: "redis",
            reason: crate::error::clip(&e.to_string()).into_owned(),
        }
    }
}

impl RedisCache {
    /// A cache on the Redis at `url`; values live `expire` (zero: no expiry). Must be called
    /// inside a Tokio runtime; connects on first use.
    pub fn open(url: &str, expire: Duration) -> Result<RedisCache, DataError> {
        let bad = |e: redis::RedisError| DataError::BadUrl {
            url: redact_url(url),
            reason: e.to_string(),
        };
        let client = redis::Client::open(url).map_err(bad)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
        Ok(RedisCache {
            conn,
            expire: (!expire.is_zero()).then_some(expire),
            incr: ::redis::Script::new(INCR_SCRIPT),
            cas: ::redis::Script::new(CAS_SCRIPT),
        })
    }

    /// `SET key json [NX] EX|PX expire`.
    fn set_cmd(&self, key: &str, val: &Value, nx: bool) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(val.to_string());
        if nx {
            cmd.arg("NX");
        }
        match self.expire {
            Some(d) if d.subsec_millis() == 0 => cmd.arg("EX").arg(d.as_secs()),
            Some(d) => cmd.arg("PX").arg(d.as_millis().max(1) as u64),
            None => &mut cmd,
        };
        cmd
    }

    async fn get_text(&self, key: &str) -> Result<Option<Vec<u8>>, DataError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }
}

impl CacheStore for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), DataError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)
        })
    }

    fn set<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<(), DataError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            self.set_cmd(key, val, false)
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Value>, DataError>> {
        Box::pin(async move {
            match self.get_text(key).await? {
                None => Ok(None),
                Some(text) => {
                    serde_json::from_slice(&text)
                        .map(Some)
                        .map_err(|_| DataError::NotJson {
                            key: crate::error::clip(key).into_owned(),
                        })
                }
            }
        })
    }

    fn add<'a>(&'a self, key: &'a str, val: &'a Value) -> BoxFuture<'a, Result<bool, DataError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let set: Option<String> = self
                .set_cmd(key, val, true)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            Ok(set.is_some())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DataError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)
        })
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: &'a Number,
    ) -> BoxFuture<'a, Result<Option<Value>, DataError>> {
        Box::pin(async move {
            let nan = || DataError::NotANumber {
                cmd: String::new(),
                key: key.to_string(),
                what: "the cached value",
            };
            let mut conn = self.conn.clone();
            let (state, text): (i64, Option<Vec<u8>>) = self
                .incr
                .key(key)
                .arg(by.to_string())
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut old_text = match (state, text) {
                (0, _) => return Ok(None),
                (1, Some(new)) => return serde_json::from_slice(&new).map(Some).map_err(|_| nan()),
                (_, Some(old)) => old,
                _ => {
                    return Err(DataError::Failed {
                        store: "redis",
                        reason: "unexpected incr reply".into(),
                    });
                }
            };
            for _ in 0..CAS_ATTEMPTS {
                let Ok(Value::Number(old)) = serde_json::from_slice::<Value>(&old_text) else {
                    return Err(nan());
                };
                let new = Value::Number(add_numbers(&old, by));
                let written: i64 = self
                    .cas
                    .key(key)
                    .arg(&old_text[..])
                    .arg(new.to_string())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                if written == 1 {
                    return Ok(Some(new));
                }
                match self.get_text(key).await? {
                    Some(text) => old_text = text,
                    None => return Ok(None),
                }
            }
            Err(DataError::Failed {
                store: "redis",
                reason: "incr kept racing with other writers".into(),
            })
        })
    }
}
