//! The entity protocol: a `sys:entity` message → a store command → the reply Node Seneca sends.
//!
//! Message fields follow shared/ENTITY.md §3: `ent` (save), `q` (object, id array, id, or null),
//! `qent`, `name`/`base`/`zone`, and a top-level `id` for minimal foreign messages. Replies carry
//! the request's canon in `entity$` (§5): an entity object, an array for list, `null` for a load
//! miss and for remove (unless `load$:true`).
//!
//! The stores implement [`EntityStore`]: [`memory`], [`sqlite`] (the default), and [`postgres`]
//! (its document and columns layouts), all on the one query semantics of [`query`].

pub mod memory;
pub mod postgres;
pub mod query;
pub mod sqlite;

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use self::query::{Filter, Query, Test, is_scalar};
use crate::data::DataError;
use crate::runtime::BoxFuture;

pub use self::query::Record;

/// The entity type a message names: `zone/base/name`, each part optional (`-` when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canon {
    /// The zone: carried back in replies, never a storage namespace (ENTITY.md §6).
    pub zone: Option<String>,
    /// The base: with the name, selects the storage bucket.
    pub base: Option<String>,
    /// The entity name.
    pub name: Option<String>,
}

/// The storage bucket of an entity type: base and name (the zone does not isolate, E38).
/// An unset part is the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    /// The base, or `""`.
    pub base: String,
    /// The name, or `""`.
    pub name: String,
}

impl Canon {
    /// Parses a canon string: `zone/base/name`, `base/name` or `name`, `-` for an unset part.
    pub fn parse(s: &str) -> Result<Canon, DataError> {
        let part = |p: &str| (!p.is_empty() && p != "-").then(|| p.to_string());
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(n), None, ..) => Ok(Canon {
                name: part(n),
                ..Canon::default()
            }),
            (Some(b), Some(n), None, _) => Ok(Canon {
                base: part(b),
                name: part(n),
                ..Canon::default()
            }),
            (Some(z), Some(b), Some(n), None) => Ok(Canon {
                zone: part(z),
                base: part(b),
                name: part(n),
            }),
            _ => Err(DataError::invalid(
                "entity$",
                format!(
                    "canon {:?} has too many parts",
                    crate::error::clip(s).into_owned()
                ),
            )),
        }
    }

    /// The storage bucket.
    pub fn kind(&self) -> Kind {
        Kind {
            base: self.base.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Canon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn part(o: &Option<String>) -> &str {
            o.as_deref().unwrap_or("-")
        }
        f.write_str(part(&self.zone))?;
        f.write_str("/")?;
        f.write_str(part(&self.base))?;
        f.write_str("/")?;
        f.write_str(part(&self.name))
    }
}

/// The canon a message names: the `entity$` of `ent` (save) or `qent`/`ent` (others), each part
/// overridden by the top-level `zone`/`base`/`name` fields when present (foreign clients send
/// only those, E48).
pub fn canon(msg: &Map<String, Value>, cmd: &str) -> Result<Canon, DataError> {
    let holders: &[&str] = if cmd == "save" {
        &["ent"]
    } else {
        &["qent", "ent"]
    };
    let marker = holders
        .iter()
        .find_map(|h| msg.get(*h).and_then(|e| e.get("entity$")));
    let mut canon = match marker {
        Some(Value::String(s)) => Canon::parse(s)?,
        Some(Value::Object(o)) => Canon {
            zone: o.get("zone").and_then(Value::as_str).map(str::to_string),
            base: o.get("base").and_then(Value::as_str).map(str::to_string),
            name: o.get("name").and_then(Value::as_str).map(str::to_string),
        },
        _ => Canon::default(),
    };
    for (field, slot) in [
        ("zone", &mut canon.zone),
        ("base", &mut canon.base),
        ("name", &mut canon.name),
    ] {
        match msg.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => *slot = (!s.is_empty() && s != "-").then(|| s.clone()),
            Some(_) => return Err(DataError::invalid(field, "must be a string")),
        }
    }
    Ok(canon)
}

/// What a save does, resolved from the message.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveOp {
    /// `ent` had no `id`: insert under `id` (from `id$` or generated); `entity-id-exists` when
    /// taken. With `upsert` filters, first merge into the first record matching them, if any.
    Create {
        /// The new record's id (string or number, its JSON type kept).
        id: Value,
        /// The data fields (no `$` keys, no `id`).
        data: Record,
        /// `q.upsert$` as equality filters; empty for a plain create.
        upsert: Vec<Filter>,
    },
    /// `ent.id` was set: merge `data` into the stored record, or create it when missing (E15, E18).
    Update {
        /// The record's id.
        id: Value,
        /// The fields to merge (no `$` keys, no `id`).
        data: Record,
    },
}

/// A store of entities, one bucket per [`Kind`]. Implementations run [`query`] semantics
/// exactly; [`entity`] turns their records into replies.
pub trait EntityStore: Send + Sync {
    /// The backend's name for logs and errors (`memory`, `sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Answers when the store can be used now (a readiness probe asks): a round trip to a
    /// server; an embedded store always can.
    fn ping(&self) -> BoxFuture<'_, Result<(), DataError>> {
        Box::pin(async { Ok(()) })
    }

    /// Saves and returns the stored record (all its fields, `id` included). A create whose id is
    /// taken fails with [`DataError::IdExists`] (its `canon` may be left empty: the caller fills it).
    fn save<'a>(&'a self, kind: &'a Kind, op: SaveOp) -> BoxFuture<'a, Result<Record, DataError>>;

    /// The records `q` selects, filtered, sorted, skipped and limited (not projected).
    fn list<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, DataError>>;

    /// Removes the first record `q` selects, or every one with `all`. Returns the removed record
    /// when one was removed without `all`, else `None`.
    fn remove<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
        all: bool,
    ) -> BoxFuture<'a, Result<Option<Record>, DataError>>;
}

/// Answers one entity command (`save`, `load`, `list`, `remove`) as Node Seneca does; any other
/// command is `act_not_found`. `msg` is the whole message.
pub async fn entity(
    store: &dyn EntityStore,
    cmd: &str,
    msg: &Map<String, Value>,
) -> Result<Value, DataError> {
    if !matches!(cmd, "save" | "load" | "list" | "remove") {
        return Err(DataError::UnknownCmd {
            api: "entity",
            cmd: crate::error::clip(cmd).into_owned(),
        });
    }
    let canon = canon(msg, cmd)?;
    let kind = canon.kind();
    let reply = |rec: Record| to_entity(rec, &canon);
    if cmd == "save" {
        return save(store, &kind, &canon, msg).await.map(reply);
    }
    // The query as sent (borrowed), or `{id}` when only a top-level `id` names the record.
    let raw_q: Option<Cow<'_, Value>> = match msg.get("q") {
        None | Some(Value::Null) => msg.get("id").filter(|id| !id.is_null()).map(|id| {
            let mut q = Map::new();
            q.insert("id".into(), id.clone());
            Cow::Owned(Value::Object(q))
        }),
        Some(q) => Some(Cow::Borrowed(q)),
    };
    let mut q = Query::parse(raw_q.as_deref())?;
    let directive = |name: &str| {
        raw_q
            .as_deref()
            .and_then(|q| q.get(name))
            .is_some_and(truthy)
    };
    let fields = q.fields.take();
    let shape = |rec: Record| match &fields {
        Some(f) => reply(query::project(rec, f)),
        None => reply(rec),
    };
    tracing::trace!(target: "wasmeca::data", cmd, canon = %canon, backend = store.backend(), "entity");
    match cmd {
        "load" => {
            q.limit = Some(1);
            let mut found = store.list(&kind, &q).await?;
            Ok(if found.is_empty() {
                Value::Null
            } else {
                shape(found.swap_remove(0))
            })
        }
        "list" => {
            let found = store.list(&kind, &q).await?;
            Ok(Value::Array(found.into_iter().map(shape).collect()))
        }
        _ => {
            let all = directive("all$");
            let load = raw_q.as_deref().and_then(|q| q.get("load$")) == Some(&Value::Bool(true));
            let removed = store.remove(&kind, &q, all).await?;
            Ok(match removed {
                Some(rec) if load && !all => shape(rec),
                _ => Value::Null,
            })
        }
    }
}

/// JavaScript truthiness of a directive's value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// An id as the stores accept it: a string or a number (its JSON type kept, E05).
fn valid_id(v: &Value, field: &str) -> Result<Value, DataError> {
    match v {
        Value::String(_) | Value::Number(_) => Ok(v.clone()),
        _ => Err(DataError::invalid(
            field,
            "an id must be a string or a number",
        )),
    }
}

/// How often a generated id is retried when it collides with a stored one.
const ID_ATTEMPTS: usize = 8;

/// The save command: create (generated id or `id$`), update-merge, or upsert.
async fn save(
    store: &dyn EntityStore,
    kind: &Kind,
    canon: &Canon,
    msg: &Map<String, Value>,
) -> Result<Record, DataError> {
    let Some(Value::Object(ent)) = msg.get("ent") else {
        return Err(DataError::invalid(
            "ent",
            "save needs the entity object in `ent`",
        ));
    };
    // The Node listener rebuilds `ent` with make$, which drops every `$` key but id$ (E16).
    let data: Record = ent
        .iter()
        .filter(|(k, _)| !k.contains('$') && k.as_str() != "id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let taken = |e: DataError| match e {
        DataError::IdExists { id, .. } => DataError::IdExists {
            canon: canon.to_string(),
            id,
        },
        e => e,
    };
    if let Some(id) = ent.get("id").filter(|id| !id.is_null()) {
        let id = valid_id(id, "ent.id")?;
        return store
            .save(kind, SaveOp::Update { id, data })
            .await
            .map_err(taken);
    }
    let upsert = upsert_filters(msg.get("q"), &data);
    if let Some(id) = ent.get("id$").filter(|id| !id.is_null()) {
        let id = valid_id(id, "ent.id$")?;
        return store
            .save(kind, SaveOp::Create { id, data, upsert })
            .await
            .map_err(taken);
    }
    let mut attempt = 0;
    loop {
        let op = SaveOp::Create {
            id: Value::String(new_id()),
            data: data.clone(),
            upsert: upsert.clone(),
        };
        match store.save(kind, op).await {
            Err(DataError::IdExists { .. }) if attempt + 1 < ID_ATTEMPTS => attempt += 1,
            other => return other.map_err(taken),
        }
    }
}

/// `q.upsert$` as equality filters: only when every listed field (names without `$`) is in the
/// data with a scalar value (mem-store matches with `===`, so an object value never matches).
fn upsert_filters(q: Option<&Value>, data: &Record) -> Vec<Filter> {
    let Some(Value::Array(fields)) = q.and_then(|q| q.get("upsert$")) else {
        return Vec::new();
    };
    let fields: Vec<&str> = fields
        .iter()
        .filter_map(Value::as_str)
        .filter(|f| !f.contains('$'))
        .collect();
    let filters: Option<Vec<Filter>> = fields
        .iter()
        .map(|f| {
            let v = data.get(*f).filter(|v| is_scalar(v))?;
            Some(Filter {
                field: (*f).to_string(),
                test: Test::Eq(v.clone()),
            })
        })
        .collect();
    filters.unwrap_or_default()
}

/// A new entity id as mem-store makes them: 6 characters of `[0-9a-z]`, never all digits (an
/// all-digit id would look like a number to Node clients and to mem-store's key order).
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    loop {
        // RandomState is seeded randomly per process and differs per instance: a cheap source of
        // unpredictable bits without a rand dependency (ids are unique-ish, not secret).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut bits = h.finish();
        let id: String = (0..6)
            .map(|_| {
                let c = ALPHABET[(bits % 36) as usize] as char;
                bits /= 36;
                c
            })
            .collect();
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// A stored record as Node sends an entity: its fields plus `entity$` (mandatory, §5).
pub fn to_entity(mut record: Record, canon: &Canon) -> Value {
    record.insert("entity$".into(), Value::String(canon.to_string()));
    Value::Object(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn canon_strings() {
        assert_eq!(
            Canon::parse("-/shop/item").unwrap().to_string(),
            "-/shop/item"
        );
        assert_eq!(
            Canon::parse("shop/item").unwrap().to_string(),
            "-/shop/item"
        );
        assert_eq!(Canon::parse("item").unwrap().to_string(), "-/-/item");
        let z = Canon::parse("z1/shop/item").unwrap();
        assert_eq!(
            (z.zone.as_deref(), z.kind()),
            (
                Some("z1"),
                Kind {
                    base: "shop".into(),
                    name: "item".into()
                }
            )
        );
        assert!(Canon::parse("a/b/c/d").is_err());
    }

    #[test]
    fn canon_from_messages() {
        // E04: zone in entity$ and at top level.
        let m = msg(
            json!({"ent": {"entity$": "z1/shop/item"}, "name": "item", "base": "shop", "zone": "z1"}),
        );
        assert_eq!(canon(&m, "save").unwrap().to_string(), "z1/shop/item");
        // E48: a foreign message with only top-level fields.
        let m = msg(json!({"base": "raw", "name": "thing", "ent": {"a": 1}}));
        assert_eq!(canon(&m, "save").unwrap().to_string(), "-/raw/thing");
        // E39: name only.
        let m = msg(json!({"qent": {"entity$": "-/-/item"}, "name": "item"}));
        assert_eq!(canon(&m, "list").unwrap().to_string(), "-/-/item");
        assert!(canon(&msg(json!({"name": 3})), "list").is_err());
    }

    #[test]
    fn upsert_needs_every_field() {
        let data = msg(json!({"name": "banana", "stock": 7, "info": {}}));
        let f = upsert_filters(Some(&json!({"upsert$": ["name"]})), &data);
        assert_eq!(
            f,
            [Filter {
                field: "name".into(),
                test: Test::Eq(json!("banana"))
            }]
        );
        assert!(upsert_filters(Some(&json!({"upsert$": ["name", "nope"]})), &data).is_empty());
        assert!(upsert_filters(Some(&json!({"upsert$": ["info"]})), &data).is_empty());
        assert!(upsert_filters(Some(&json!({"upsert$": "name"})), &data).is_empty());
    }

    #[test]
    fn truthiness() {
        assert!(
            truthy(&json!(true)) && truthy(&json!(1)) && truthy(&json!("y")) && truthy(&json!({}))
        );
        assert!(
            !truthy(&json!(false))
                && !truthy(&json!(0))
                && !truthy(&json!(""))
                && !truthy(&json!(null))
        );
    }

    #[test]
    fn ids_are_six_base36_chars_never_all_digits() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = new_id();
            assert_eq!(id.len(), 6);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            );
            assert!(!id.bytes().all(|b| b.is_ascii_digit()));
            seen.insert(id);
        }
        assert!(seen.len() > 9_990, "ids repeat too often: {}", seen.len());
    }
}
