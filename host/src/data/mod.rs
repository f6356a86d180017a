//! The data layer: Seneca's entity API (`sys:entity`) and cache API (`role:cache`) on native stores.
//!
//! The glue that serves the patterns calls two functions and knows nothing else:
//!
//! - [`entity()`]`(store, cmd, msg)` answers `sys:entity,cmd:save|load|list|remove` (and the legacy
//!   `role:entity`) exactly as Node Seneca's stores answer them over HTTP (shared/ENTITY.md).
//! - [`cache()`]`(cache, cmd, msg)` answers `role:cache,cmd:set|get|add|delete|incr|decr`.
//!
//! Stores are opened from a URL with [`open_store`] (`sqlite://PATH`, the default embedded store;
//! `memory://`; `postgres://…` with `?layout=document|columns`) and [`open_cache`] (`memory://`,
//! `redis://…`). Every store runs the same query semantics ([`entity::query`]): strict equality, arrays as
//! IN, operator objects in both spellings, `sort$` on every key with missing/null sorting greatest,
//! `skip$`, `limit$` (0 = none), `fields$`; SQL stores push what they can down to SQL and finish in
//! Rust what they cannot, so a reply never depends on the store behind it.
//!
//! # Layout
//! - [`actions`]: the APIs served as native actions, and who may reach them.
//! - [`mod@entity`]: the protocol (message fields → a store command → the reply shape) and the
//!   [`EntityStore`] trait; [`entity::query`], the pure query semantics (parse `q`, match, sort,
//!   page, project, ids); the stores [`entity::memory`], [`entity::sqlite`] (writer thread,
//!   readers, SQL) and [`entity::postgres`] (its `document` and `columns` layouts).
//! - [`mod@cache`]: the protocol and the [`CacheStore`] trait; the caches [`cache::memory`] and
//!   [`cache::redis`].

pub mod actions;
pub mod cache;
pub mod entity;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use actions::install;
pub use cache::{CacheStore, MemoryCache, RedisCache, cache};
pub use entity::memory::MemoryStore;
pub use entity::postgres::{PgLayout, PgStore};
pub use entity::query::{Filter, Query, Select, SortKey, Test};
pub use entity::sqlite::SqliteStore;
pub use entity::{Canon, EntityStore, Kind, Record, SaveOp, canon, entity};

use crate::error::{Code, clip};

/// Clips a JSON value for an error's details: strings are clipped, other long values summarised.
fn clip_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(clip(s).into_owned()),
        Value::Number(_) | Value::Bool(_) | Value::Null => v.clone(),
        other => Value::String(clip(&other.to_string()).into_owned()),
    }
}

/// Why a data action failed. Each variant has a [`Code`] (the Seneca error code callers match on,
/// with its HTTP status) and, where useful, [`details`](DataError::details). Messages quote
/// caller input clipped to ~120 characters.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A create named an id (`id$`) that is already stored; the stored record is untouched.
    #[error("entity {canon} with id {} already exists", clip(&.id.to_string()))]
    IdExists {
        /// The request's canon (`zone/base/name`), as Node's `details.type`.
        canon: String,
        /// The id that is taken.
        id: Value,
    },
    /// A malformed entity message: `ent`, `q`, `sort$`, an operator, a canon part…
    #[error("invalid entity message: {field}: {reason}")]
    EntityInvalid {
        /// The message field at fault (e.g. `q.price.$in`), clipped.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed cache message (`key` missing or not a string, `val` missing on set).
    #[error("invalid cache message: {field}: {reason}")]
    CacheInvalid {
        /// The message field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `add` of a key that is already cached.
    #[error("Key {} exists.", clip(.key))]
    KeyExists {
        /// The key, clipped.
        key: String,
    },
    /// `incr`/`decr` with a `val` that is not a number, or on a cached value that is not one.
    #[error("{cmd} of {}: {what} is not a number", clip(.key))]
    NotANumber {
        /// `incr` or `decr`.
        cmd: String,
        /// The key, clipped.
        key: String,
        /// `val` or `the cached value`.
        what: &'static str,
    },
    /// A cached value that is not JSON text (written by something else than a Seneca cache).
    #[error("the value cached under {} is not JSON", clip(.key))]
    NotJson {
        /// The key, clipped.
        key: String,
    },
    /// A save of a new entity kind in a store that already holds `limit` kinds (each a table
    /// and its indexes).
    #[error(
        "entity {canon} would be a new kind, and the store already holds {limit} kinds \
         ([data] max_kinds)"
    )]
    KindsFull {
        /// The new kind (`base/name`), clipped.
        canon: String,
        /// `[data] max_kinds`.
        limit: usize,
    },
    /// The store cannot be reached (down, restarting, pool exhausted); retrying later may work.
    #[error("{store} store unavailable: {reason}")]
    Unavailable {
        /// Which backend (`postgres`, `redis`, `sqlite`).
        store: &'static str,
        /// The driver's reason (logged; safe to send, it never carries credentials).
        reason: String,
    },
    /// The store answered with an error that is not the caller's fault.
    #[error("{store} store failed: {reason}")]
    Failed {
        /// Which backend.
        store: &'static str,
        /// The driver's reason.
        reason: String,
    },
    /// A command this API does not serve (`cmd:count`, `cmd:clear`, …), as Seneca's act_not_found.
    #[error("no {api} action for cmd:{}", clip(.cmd))]
    UnknownCmd {
        /// `entity` or `cache`.
        api: &'static str,
        /// The command asked for, clipped.
        cmd: String,
    },
    /// A store URL that cannot be opened (unknown scheme, bad parameter).
    #[error("cannot open store {url}: {reason}")]
    BadUrl {
        /// The URL with its password redacted.
        url: String,
        /// What is wrong, including the schemes accepted.
        reason: String,
    },
}

impl DataError {
    /// The wire code callers match on (`err.data.payload.code` on a Node client).
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The host's code for it, which carries its HTTP status.
    pub fn kind(&self) -> Code {
        match self {
            DataError::IdExists { .. } => Code::EntityIdExists,
            DataError::EntityInvalid { .. } => Code::EntityInvalid,
            DataError::KindsFull { .. } => Code::EntityKindsFull,
            DataError::CacheInvalid { .. } => Code::CacheInvalid,
            DataError::KeyExists { .. } => Code::KeyExists,
            DataError::NotANumber { .. } => Code::OpFailedNan,
            DataError::NotJson { .. } => Code::NotJson,
            DataError::Unavailable { .. } => Code::StoreUnavailable,
            DataError::Failed { .. } => Code::StoreFailed,
            DataError::UnknownCmd { .. } => Code::ActNotFound,
            DataError::BadUrl { .. } => Code::StoreUrlInvalid,
        }
    }

    /// The HTTP status: 503 when the store is down, 400 for invalid input, 500 otherwise (as
    /// Node); the code's.
    pub fn status(&self) -> u16 {
        match self.kind() {
            // Seneca's act_not_found is a 500 from a store, as Node answers it.
            Code::ActNotFound => 500,
            code => code.status(),
        }
    }

    /// Structured details for the error body (Node sends `details`), or `null`.
    pub fn details(&self) -> Value {
        match self {
            DataError::IdExists { canon, id } => json!({"type": canon, "id": clip_value(id)}),
            DataError::EntityInvalid { field, .. } | DataError::CacheInvalid { field, .. } => {
                json!({"field": field})
            }
            DataError::KeyExists { key } | DataError::NotJson { key } => json!({"key": key}),
            DataError::KindsFull { canon, limit } => json!({"type": canon, "max_kinds": limit}),
            DataError::NotANumber { cmd, key, what } => {
                json!({"op": cmd, "key": key, "what": what})
            }
            DataError::Unavailable { store, .. } | DataError::Failed { store, .. } => {
                json!({"store": store})
            }
            DataError::UnknownCmd { api, cmd } => json!({"api": api, "cmd": cmd}),
            DataError::BadUrl { url, .. } => json!({"url": url}),
        }
    }

    /// An [`EntityInvalid`](DataError::EntityInvalid) naming `field` (clipped).
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DataError::EntityInvalid {
            field: clip(field).into_owned(),
            reason: reason.into(),
        }
    }
}

/// The URL with any password replaced by `***`, for errors and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return clip(url).into_owned();
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..auth_end];
    let redacted = match auth.rfind('@') {
        Some(at) => match auth[..at].find(':') {
            Some(colon) => format!("{}:***{}", &auth[..colon], &auth[at..]),
            None => auth.to_string(),
        },
        None => auth.to_string(),
    };
    clip(&format!(
        "{}://{}{}",
        &url[..scheme_end],
        redacted,
        &rest[auth_end..]
    ))
    .into_owned()
}

/// The schemes [`open_store`] accepts, for its error message.
const STORE_SCHEMES: &str =
    "sqlite://PATH, memory://, postgres://… or postgresql://… (?layout=document|columns)";

/// Opens an entity store from its URL: `sqlite://PATH` (a file, created if missing; `sqlite://:memory:`
/// for a private in-memory database), `memory://`, `postgres://…`/`postgresql://…` (tokio-postgres
/// connection URL; extra parameters `layout=document|columns` and `schema=NAME`). PostgreSQL is
/// not contacted here: a server that is down makes each call answer `store_unavailable` until it is back.
pub async fn open_store(url: &str) -> Result<Arc<dyn EntityStore>, DataError> {
    open_store_with(url, crate::config::DEFAULT_MAX_KINDS).await
}

/// [`open_store`], the store holding at most `max_kinds` entity kinds where each kind is a
/// table of its own (SQLite); memory and PostgreSQL make none.
pub async fn open_store_with(
    url: &str,
    max_kinds: usize,
) -> Result<Arc<dyn EntityStore>, DataError> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "memory" if url.contains("://") => Ok(Arc::new(MemoryStore::new())),
        "sqlite" if url.contains("://") => {
            let path = &url["sqlite://".len()..];
            Ok(Arc::new(SqliteStore::open(path, max_kinds).await?))
        }
        "postgres" | "postgresql" if url.contains("://") => Ok(Arc::new(PgStore::open(url)?)),
        _ => Err(DataError::BadUrl {
            url: redact_url(url),
            reason: format!("unknown scheme; accepted: {STORE_SCHEMES}"),
        }),
    }
}

/// Opens a cache from its URL: `memory://` (`?max=N` entries, default 9999) or `redis://…`
/// (`rediss://` too). `expire` is how long a set or added value lives (Redis `EX`, memory max age);
/// zero means no expiry. Redis is contacted lazily: when it is down each call answers
/// `store_unavailable`, and the next call after it is back succeeds.
pub async fn open_cache(url: &str, expire: Duration) -> Result<Arc<dyn CacheStore>, DataError> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "memory" if url.contains("://") => {
            let max = url
                .split_once('?')
                .and_then(|(_, qs)| qs.split('&').find_map(|kv| kv.strip_prefix("max=")))
                .map(|n| n.parse::<usize>())
                .transpose()
                .map_err(|_| DataError::BadUrl {
                    url: redact_url(url),
                    reason: "max must be a number of entries".into(),
                })?
                .unwrap_or(cache::DEFAULT_MAX_ENTRIES);
            Ok(Arc::new(MemoryCache::new(max, expire)))
        }
        "redis" | "rediss" if url.contains("://") => Ok(Arc::new(RedisCache::open(url, expire)?)),
        _ => Err(DataError::BadUrl {
            url: redact_url(url),
            reason: "unknown scheme; accepted: memory:// or redis://…".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1/"),
            "redis://:***@127.0.0.1/"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("mongo://a:b@c"), "mongo://a:***@c");
    }

    #[test]
    fn codes_and_statuses() {
        let e = DataError::Unavailable {
            store: "postgres",
            reason: "down".into(),
        };
        assert_eq!((e.code(), e.status()), ("store_unavailable", 503));
        let e = DataError::invalid("sort$", "must be an object");
        assert_eq!((e.code(), e.status()), ("entity_invalid", 400));
        assert_eq!(e.details(), json!({"field": "sort$"}));
        let e = DataError::IdExists {
            canon: "-/shop/item".into(),
            id: json!("banana-1"),
        };
        assert_eq!((e.code(), e.status()), ("entity-id-exists", 500));
        assert_eq!(
            e.details(),
            json!({"type": "-/shop/item", "id": "banana-1"})
        );
    }

    #[tokio::test]
    async fn unknown_scheme_names_url_and_schemes() {
        let Err(e) = open_store("mongodb://me:pw@host/db").await else {
            panic!("opened")
        };
        let text = e.to_string();
        assert!(text.contains("mongodb://me:***@host/db"), "{text}");
        assert!(
            text.contains("sqlite://") && text.contains("postgres://"),
            "{text}"
        );
        assert!(!text.contains("pw@"));
        let Err(e) = open_cache("memcached://x", Duration::from_secs(1)).await else {
            panic!()
        };
        assert!(e.to_string().contains("redis://"));
    }
}
