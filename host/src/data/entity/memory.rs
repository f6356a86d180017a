//! The memory entity store: per-(base, name) buckets in insertion order, behind one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use serde_json::Value;

use super::query::{self, Filter, Query, Select, Test};
use super::{EntityStore, Kind, Record, SaveOp};
use crate::data::DataError;
use crate::runtime::BoxFuture;

/// An id as a hash key that keeps its JSON type ("42" ≠ 42) and equates 42 with 42.0, as `===`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IdKey {
    /// A string id.
    Str(String),
    /// A number id that is an integer (whatever its spelling: 42 or 42.0).
    Int(i128),
    /// Any other number id, by its bits (-0.0 folded into 0.0).
    Float(u64),
}

impl IdKey {
    /// The key of an id value; `None` for values that cannot be ids (objects, arrays, bool, null).
    pub(crate) fn of(v: &Value) -> Option<IdKey> {
        match v {
            Value::String(s) => Some(IdKey::Str(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return Some(IdKey::Int(i.into()));
                }
                if let Some(u) = n.as_u64() {
                    return Some(IdKey::Int(u.into()));
                }
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 1e30 {
                    Some(IdKey::Int(f as i128))
                } else {
                    Some(IdKey::Float(if f == 0.0 { 0 } else { f.to_bits() }))
                }
            }
            _ => None,
        }
    }
}

/// One (base, name) bucket: records by insertion sequence, and an id index into it.
#[derive(Debug, Default)]
struct Bucket {
    /// The next insertion sequence number: gives the unsorted (insertion) order.
    next: u64,
    /// Records keyed by insertion sequence, so iteration is insertion order.
    records: BTreeMap<u64, Record>,
    /// Id → sequence, for id lookups without a scan.
    ids: HashMap<IdKey, u64>,
}

impl Bucket {
    /// The sequence numbers a query's conditions can be narrowed to by an id equality, if any.
    fn candidates(&self, filters: &[Filter]) -> Option<Vec<u64>> {
        let by_id = filters.iter().find(|f| f.field == "id")?;
        let ids: Vec<&Value> = match &by_id.test {
            Test::Eq(v) => vec![v],
            Test::In(list) => list.iter().collect(),
            Test::Never => vec![],
            _ => return None,
        };
        let mut seqs: Vec<u64> = ids
            .into_iter()
            .filter_map(|v| self.ids.get(&IdKey::of(v)?).copied())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        Some(seqs)
    }

    /// Runs a query (without projection) over this bucket.
    fn select(&self, q: &Query) -> Vec<(u64, Record)> {
        let with_seq = |seq: u64| self.records.get(&seq).map(|r| (seq, r.clone()));
        let picked: Vec<(u64, Record)> = match &q.select {
            Select::Ids(ids) => ids
                .iter()
                .filter_map(|id| self.ids.get(&IdKey::of(id)?).copied())
                .filter_map(with_seq)
                .collect(),
            Select::Where(filters) => {
                let keep = |(_, r): &(u64, Record)| query::matches(r, filters);
                match self.candidates(filters) {
                    Some(seqs) => seqs.into_iter().filter_map(with_seq).filter(keep).collect(),
                    None => self
                        .records
                        .iter()
                        .map(|(s, r)| (*s, r.clone()))
                        .filter(keep)
                        .collect(),
                }
            }
        };
        let mut picked = picked;
        query::sort_by_record(&mut picked, |(_, r)| r, &q.sort);
        query::page(picked, q.skip, q.limit)
    }

    /// Inserts a new record; the caller checked the id is free.
    fn insert(&mut self, key: IdKey, record: Record) {
        let seq = self.next;
        self.next += 1;
        self.ids.insert(key, seq);
        self.records.insert(seq, record);
    }
}

/// The memory store: what mem-store is, with the query semantics of every other store.
/// Never held across an await: every operation is a short critical section.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Every bucket, by (base, name).
    buckets: RwLock<HashMap<Kind, Bucket>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Saves synchronously (see [`EntityStore::save`]).
    fn save_now(&self, kind: &Kind, op: SaveOp) -> Result<Record, DataError> {
        let mut buckets = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(kind.clone()).or_default();
        match op {
            SaveOp::Update { id, data } => {
                let key = IdKey::of(&id)
                    .ok_or_else(|| DataError::invalid("ent.id", "not a string or number"))?;
                if let Some(rec) = bucket
                    .ids
                    .get(&key)
                    .and_then(|seq| bucket.records.get_mut(seq))
                {
                    rec.extend(data);
                    return Ok(rec.clone());
                }
                let rec = with_id(id, data);
                bucket.insert(key, rec.clone());
                Ok(rec)
            }
            SaveOp::Create { id, data, upsert } => {
                if !upsert.is_empty() {
                    let found = bucket
                        .records
                        .values_mut()
                        .find(|r| query::matches(r, &upsert));
                    if let Some(rec) = found {
                        rec.extend(data);
                        return Ok(rec.clone());
                    }
                }
                let key = IdKey::of(&id)
                    .ok_or_else(|| DataError::invalid("ent.id$", "not a string or number"))?;
                if bucket.ids.contains_key(&key) {
                    return Err(DataError::IdExists {
                        canon: String::new(),
                        id,
                    });
                }
                let rec = with_id(id, data);
                bucket.insert(key, rec.clone());
                Ok(rec)
            }
        }
    }

    /// Lists synchronously.
    fn list_now(&self, kind: &Kind, q: &Query) -> Vec<Record> {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get(kind) else {
            return Vec::new();
        };
        bucket.select(q).into_iter().map(|(_, r)| r).collect()
    }

    /// Removes synchronously.
    fn remove_now(&self, kind: &Kind, q: &Query, all: bool) -> Option<Record> {
        let mut buckets = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.get_mut(kind)?;
        let mut picked = bucket.select(q);
        if !all {
            picked.truncate(1);
        }
        let mut first = None;
        for (seq, rec) in picked {
            bucket.records.remove(&seq);
            if let Some(key) = rec.get("id").and_then(IdKey::of) {
                bucket.ids.remove(&key);
            }
            first.get_or_insert(rec);
        }
        if all { None } else { first }
    }
}

/// A record from its id and data.
pub(crate) fn with_id(id: Value, mut data: Record) -> Record {
    data.insert("id".into(), id);
    data
}

impl EntityStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn save<'a>(&'a self, kind: &'a Kind, op: SaveOp) -> BoxFuture<'a, Result<Record, DataError>> {
        Box::pin(async move { self.save_now(kind, op) })
    }

    fn list<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, DataError>> {
        Box::pin(async move { Ok(self.list_now(kind, q)) })
    }

    fn remove<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
        all: bool,
    ) -> BoxFuture<'a, Result<Option<Record>, DataError>> {
        Box::pin(async move { Ok(self.remove_now(kind, q, all)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    #[test]
    fn id_keys_keep_json_types() {
        assert_ne!(IdKey::of(&json!(42)), IdKey::of(&json!("42")));
        assert_eq!(IdKey::of(&json!(42)), IdKey::of(&json!(42.0)));
        assert_eq!(IdKey::of(&json!(0.0)), IdKey::of(&json!(-0.0)));
        assert_ne!(IdKey::of(&json!(1.5)), IdKey::of(&json!(1)));
        assert_eq!(IdKey::of(&json!(true)), None);
    }

    #[test]
    fn update_merges_and_keeps_position() {
        let s = MemoryStore::new();
        let k = Kind {
            base: "b".into(),
            name: "n".into(),
        };
        let data = |v: Value| v.as_object().unwrap().clone();
        s.save_now(
            &k,
            SaveOp::Create {
                id: json!("a"),
                data: data(json!({"x": 1})),
                upsert: vec![],
            },
        )
        .unwrap();
        s.save_now(
            &k,
            SaveOp::Create {
                id: json!("b"),
                data: data(json!({"x": 2})),
                upsert: vec![],
            },
        )
        .unwrap();
        let merged = s
            .save_now(
                &k,
                SaveOp::Update {
                    id: json!("a"),
                    data: data(json!({"y": 3})),
                },
            )
            .unwrap();
        assert_eq!(Value::Object(merged), json!({"id": "a", "x": 1, "y": 3}));
        let all = s.list_now(&k, &Query::default());
        assert_eq!(
            all.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
            [json!("a"), json!("b")]
        );
        let dup = s.save_now(
            &k,
            SaveOp::Create {
                id: json!("b"),
                data: Map::new(),
                upsert: vec![],
            },
        );
        assert_eq!(dup.unwrap_err().code(), "entity-id-exists");
    }
}
