//! Keeping data the way Seneca apps do: an [`entity`] handle (`save`, `load`, `list`,
//! `remove`) over the host's `sys:entity` store, and the [`cache`] (`role:cache`). Both are thin
//! wrappers over [`act`](crate::act), so a plugin may also act the patterns itself.
//!
//! ```ignore
//! let items = wasmeca_sdk::entity("shop/item");
//! let apple = items.save(json!({"name": "apple", "price": 1.5}))?;
//! let red = items.list(json!({"color": "red", "sort$": {"price": -1}, "limit$": 10}))?;
//! wasmeca_sdk::cache::set("visits", json!(0))?;
//! let visits = wasmeca_sdk::cache::incr("visits", 1)?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::{Result, act_text};

/// An entity type, named by its canon: `name`, `base/name` or `zone/base/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The canon's zone, when it names one: messages leave an absent part out.
    zone: Option<String>,
    /// The canon's base, when it names one.
    base: Option<String>,
    /// The entity's name, which every message carries.
    name: String,
    /// The canon as Seneca writes it (`-/shop/item`), the `entity$` of what is saved.
    canon: String,
}

/// The entity type `canon`: `item`, `shop/item` or `zone/shop/item`.
pub fn entity(canon: &str) -> Entity {
    let pieces: Vec<&str> = canon.split('/').collect();
    let (zone, base, name) = match pieces.as_slice() {
        [name] => (None, None, *name),
        [base, name] => (None, Some(*base), *name),
        [zone, base, name, ..] => (Some(*zone), Some(*base), *name),
        [] => (None, None, ""),
    };
    fn part(p: Option<&str>) -> Option<&str> {
        p.filter(|p| !p.is_empty() && *p != "-")
    }
    let canon = format!(
        "{}/{}/{}",
        part(zone).unwrap_or("-"),
        part(base).unwrap_or("-"),
        name
    );
    Entity {
        zone: part(zone).map(str::to_owned),
        base: part(base).map(str::to_owned),
        name: name.to_owned(),
        canon,
    }
}

/// A `sys:entity` message as the store reads it (seneca-entity's fields), written straight to
/// JSON text rather than built as a map first.
#[derive(Serialize)]
struct StoreMessage<'a> {
    /// Always `entity`.
    sys: &'static str,
    /// `save`, `load`, `list` or `remove`.
    cmd: &'a str,
    /// The zone, when the canon names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    /// The base, when the canon names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<&'a str>,
    /// The entity's name.
    name: &'a str,
    /// The query (`{}` for a save).
    q: &'a Value,
    /// The entity template, naming the canon as seneca-entity's clients do.
    qent: Qent<'a>,
    /// What a save stores.
    #[serde(skip_serializing_if = "Option::is_none")]
    ent: Option<&'a Map<String, Value>>,
}

/// `qent`: `{"entity$": canon}`.
#[derive(Serialize)]
struct Qent<'a> {
    /// The canon.
    #[serde(rename = "entity$")]
    entity: &'a str,
}

impl Entity {
    /// The JSON text of the message for `cmd` with this type's parts, the query `q` and, for a
    /// save, the entity `ent`.
    fn message(&self, cmd: &str, q: &Value, ent: Option<&Map<String, Value>>) -> String {
        let msg = StoreMessage {
            sys: "entity",
            cmd,
            zone: self.zone.as_deref(),
            base: self.base.as_deref(),
            name: &self.name,
            q,
            qent: Qent {
                entity: &self.canon,
            },
            ent,
        };
        // Strings and JSON values always serialise.
        serde_json::to_string(&msg).unwrap_or_default()
    }

    /// Saves `data` (an object): a create when it has no `id` (an `id$` picks the id), else a
    /// merge into the stored record (created when unknown). Answers the stored entity.
    pub fn save(&self, data: Value) -> Result<Value> {
        self.save_as(data)
    }

    /// Like [`Entity::save`], the stored entity read as a `T` (without building a JSON tree
    /// first).
    pub fn save_as<T: DeserializeOwned>(&self, data: Value) -> Result<T> {
        let mut ent = match data {
            Value::Object(map) => map,
            other => {
                return Err(crate::Error::invalid_input(format!(
                    "an entity is a JSON object, not {other}"
                )));
            }
        };
        ent.insert("entity$".into(), json!(self.canon));
        act_text(&self.message("save", &json!({}), Some(&ent)))
    }

    /// The entity with this id, or the first matching a query object; `None` when there is
    /// none.
    pub fn load(&self, q: impl Into<Query>) -> Result<Option<Value>> {
        self.load_as(q)
    }

    /// Like [`Entity::load`], the entity read as a `T` (without building a JSON tree first).
    pub fn load_as<T: DeserializeOwned>(&self, q: impl Into<Query>) -> Result<Option<T>> {
        act_text(&self.message("load", &q.into().0, None))
    }

    /// The entities matching a query (`{}` for all; `sort$`, `skip$`, `limit$`, `fields$`).
    pub fn list(&self, q: Value) -> Result<Vec<Value>> {
        match act_text::<Value>(&self.message("list", &q, None))? {
            Value::Array(items) => Ok(items),
            Value::Null => Ok(Vec::new()),
            other => Err(crate::Error::new(
                "entity_invalid",
                format!("list answered {other}, not an array"),
            )),
        }
    }

    /// Like [`Entity::list`], each entity read as a `T` (without building a JSON tree first).
    pub fn list_as<T: DeserializeOwned>(&self, q: Value) -> Result<Vec<T>> {
        let found: Option<Vec<T>> = act_text(&self.message("list", &q, None))?;
        Ok(found.unwrap_or_default())
    }

    /// Removes the entity with this id (or the first matching a query object; every match with
    /// `all$: true`) and answers the removed one (`None` when there was none).
    pub fn remove(&self, q: impl Into<Query>) -> Result<Option<Value>> {
        self.remove_as(q)
    }

    /// Like [`Entity::remove`], the removed entity read as a `T`.
    pub fn remove_as<T: DeserializeOwned>(&self, q: impl Into<Query>) -> Result<Option<T>> {
        let mut q = q.into().0;
        if let Value::Object(map) = &mut q {
            map.entry("load$").or_insert(json!(true));
        }
        act_text(&self.message("remove", &q, None))
    }
}

/// What `load` and `remove` take: an id (a string or a number) or a query object.
#[derive(Debug, Clone, PartialEq)]
pub struct Query(Value);

impl From<Value> for Query {
    fn from(q: Value) -> Self {
        match q {
            q @ Value::Object(_) => Self(q),
            id => Self(json!({ "id": id })),
        }
    }
}

impl From<&str> for Query {
    fn from(id: &str) -> Self {
        Self(json!({ "id": id }))
    }
}

impl From<i64> for Query {
    fn from(id: i64) -> Self {
        Self(json!({ "id": id }))
    }
}

/// The host's cache (`role:cache`): values of any JSON type under string keys, with the expiry
/// the host is configured with.
pub mod cache {
    use serde_json::{Value, json};

    use crate::{Result, act};

    fn cache(cmd: &str, key: &str, val: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "role": "cache", "cmd": cmd, "key": key });
        if let Some(val) = val {
            msg["val"] = val;
        }
        act(msg)
    }

    /// Stores `val` under `key`.
    pub fn set(key: &str, val: Value) -> Result<()> {
        cache("set", key, Some(val)).map(drop)
    }

    /// The value under `key`, if there is one.
    pub fn get(key: &str) -> Result<Option<Value>> {
        let answer = cache("get", key, None)?;
        Ok(answer.get("value").filter(|v| !v.is_null()).cloned())
    }

    /// Stores `val` under `key` unless the key is taken (then the error is `key_exists`).
    pub fn add(key: &str, val: Value) -> Result<()> {
        cache("add", key, Some(val)).map(drop)
    }

    /// Adds `by` to the number under `key` and answers the new value; `None` when the key is
    /// missing (nothing is created). A value that is not a number is `op_failed_nan`.
    pub fn incr(key: &str, by: f64) -> Result<Option<f64>> {
        let answer = cache("incr", key, Some(json!(by)))?;
        Ok(answer.get("value").and_then(Value::as_f64))
    }

    /// Subtracts `by` from the number under `key`, as [`incr`] adds.
    pub fn decr(key: &str, by: f64) -> Result<Option<f64>> {
        let answer = cache("decr", key, Some(json!(by)))?;
        Ok(answer.get("value").and_then(Value::as_f64))
    }

    /// Forgets `key` (missing keys too).
    pub fn delete(key: &str) -> Result<()> {
        cache("delete", key, None).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canons_name_their_parts() {
        let e = entity("shop/item");
        assert_eq!(e.canon, "-/shop/item");
        assert_eq!(
            (e.zone.as_deref(), e.base.as_deref(), e.name.as_str()),
            (None, Some("shop"), "item")
        );
        assert_eq!(entity("user").canon, "-/-/user");
        assert_eq!(entity("z1/shop/item").zone.as_deref(), Some("z1"));
        let msg: Value =
            serde_json::from_str(&e.message("list", &json!({"color": "red"}), None)).unwrap();
        assert_eq!(
            msg,
            json!({"sys": "entity", "cmd": "list", "base": "shop", "name": "item",
                   "q": {"color": "red"}, "qent": {"entity$": "-/shop/item"}})
        );
        let ent = json!({"id": 1, "entity$": "-/-/user"});
        let msg: Value =
            serde_json::from_str(&entity("user").message("save", &json!({}), ent.as_object()))
                .unwrap();
        assert_eq!(
            msg,
            json!({"sys": "entity", "cmd": "save", "name": "user", "q": {},
                   "qent": {"entity$": "-/-/user"}, "ent": {"id": 1, "entity$": "-/-/user"}})
        );
    }

    #[test]
    fn ids_and_objects_are_queries() {
        assert_eq!(Query::from(7).0, json!({"id": 7}));
        assert_eq!(Query::from("a1").0, json!({"id": "a1"}));
        assert_eq!(Query::from(json!({"name": "x"})).0, json!({"name": "x"}));
        assert_eq!(Query::from(json!(42)).0, json!({"id": 42}));
    }
}
