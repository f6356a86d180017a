//! The entity conformance script: the captures E01–E53 (request → expected reply), replayed in
//! order against a store, with wasmeca's recommended semantics where Node's are undefined.
//!
//! `@name` strings in requests and expected replies stand for generated ids: bound by the first
//! reply that has one at that place, substituted everywhere after.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use wasmeca::data::{EntityStore, entity};

/// Which store the script runs on (the columns layout differs in ways the doc explains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Memory, SQLite, PostgreSQL document layout: the full script.
    Document,
    /// PostgreSQL columns layout: every column comes back (nulls are stripped before comparing),
    /// unset and null are the same, and the unsorted order is physical (compared as a set).
    Columns,
}

/// One request and what must come back.
struct Step {
    /// The capture or case name, for failure messages.
    name: &'static str,
    /// The request body.
    req: Value,
    /// The reply, or the error code.
    expect: Result<Value, &'static str>,
    /// Skipped in the columns layout (missing vs null).
    doc_only: bool,
    /// An unsorted list: in the columns layout, compared as a set.
    unordered: bool,
}

fn step(name: &'static str, req: Value, expect: Result<Value, &'static str>) -> Step {
    Step {
        name,
        req,
        expect,
        doc_only: false,
        unordered: false,
    }
}

impl Step {
    fn doc_only(mut self) -> Self {
        self.doc_only = true;
        self
    }
    fn unordered(mut self) -> Self {
        self.unordered = true;
        self
    }
}

/// A message as seneca-entity 28 sends it for `-/shop/item` (or another canon).
fn msg(cmd: &str, canon: &str, q: Value, ent: Option<Value>) -> Value {
    let parts: Vec<&str> = canon.split('/').collect();
    let mut m = json!({"cmd": cmd, "q": q, "sys": "entity", "custom$": {}});
    let mut e = Map::new();
    e.insert("entity$".into(), json!(canon));
    if let Some(Value::Object(fields)) = ent {
        e.extend(fields);
    } else {
        m["qent"] = json!({"entity$": canon});
    }
    m["ent"] = Value::Object(e);
    for (part, key) in parts.iter().zip(["zone", "base", "name"]) {
        if *part != "-" {
            m[key] = json!(part);
        }
    }
    m
}

fn save(ent: Value) -> Value {
    msg("save", "-/shop/item", json!({}), Some(ent))
}
fn load(q: Value) -> Value {
    msg("load", "-/shop/item", q, None)
}
fn list(q: Value) -> Value {
    msg("list", "-/shop/item", q, None)
}
fn remove(q: Value) -> Value {
    msg("remove", "-/shop/item", q, None)
}

/// An entity reply for `-/shop/item`.
fn item(v: Value) -> Value {
    let mut v = v;
    v["entity$"] = json!("-/shop/item");
    v
}

fn apple() -> Value {
    item(
        json!({"name": "apple", "price": 1.5, "color": "red", "tags": ["fruit", "red"], "info": {"origin": "NZ", "organic": true}, "note": null, "id": "@apple"}),
    )
}
fn banana() -> Value {
    item(json!({"name": "banana", "price": 0.75, "color": "brown", "id": "banana-1", "stock": 7}))
}
fn cherry() -> Value {
    item(json!({"name": "cherry", "price": 3, "color": "red", "id": "@cherry"}))
}
fn fig() -> Value {
    item(json!({"name": "fig", "price": 2, "id": 42}))
}
fn grape() -> Value {
    item(
        json!({"name": "grape", "color": "green", "when": "1970-01-01T00:00:00.000Z", "id": "@grape"}),
    )
}
fn zoe() -> Value {
    item(json!({"name": "Zoë ✓ 日本 🍎", "color": "ünïcode", "id": "@zoe"}))
}
fn ghost() -> Value {
    item(json!({"id": "ghost-1", "name": "ghost"}))
}

fn steps() -> Vec<Step> {
    let all = || json!([apple(), banana(), cherry(), fig(), grape(), zoe(), ghost()]);
    vec![
        step("E01 create, generated id", save(json!({"name": "apple", "price": 1.5, "color": "red", "tags": ["fruit", "red"], "info": {"origin": "NZ", "organic": true}, "note": null})), Ok(apple())),
        step("E02 create with id$", save(json!({"name": "banana", "price": 0.5, "color": "yellow", "id$": "banana-1"})), Ok(item(json!({"name": "banana", "price": 0.5, "color": "yellow", "id": "banana-1"})))),
        step("E03 id$ taken", save(json!({"name": "dup", "id$": "banana-1"})), Err("entity-id-exists")),
        step("E03 existing untouched", load(json!({"id": "banana-1"})), Ok(item(json!({"name": "banana", "price": 0.5, "color": "yellow", "id": "banana-1"})))),
        step("E04 zone canon", msg("save", "z1/shop/item", json!({}), Some(json!({"name": "cherry", "price": 3, "color": "red"}))), Ok(json!({"entity$": "z1/shop/item", "name": "cherry", "price": 3, "color": "red", "id": "@cherry"}))),
        step("E05 numeric id$", save(json!({"name": "fig", "price": 2, "id$": 42})), Ok(fig())),
        step("E06 no price, a date", save(json!({"name": "grape", "color": "green", "when": "1970-01-01T00:00:00.000Z"})), Ok(grape())),
        step("E07 unicode", save(json!({"name": "Zoë ✓ 日本 🍎", "color": "ünïcode"})), Ok(zoe())),
        step("E08 load by id", load(json!({"id": "@apple"})), Ok(apple())),
        step("E09 load by query", load(json!({"name": "banana"})), Ok(item(json!({"name": "banana", "price": 0.5, "color": "yellow", "id": "banana-1"})))),
        step("E10 load miss", load(json!({"id": "nope-404"})), Ok(json!(null))),
        step("E11 numeric id", load(json!({"id": 42})), Ok(fig())),
        step("E12 string '42' misses 42", load(json!({"id": "42"})), Ok(json!(null))),
        step("E14 update", save(json!({"name": "banana", "price": 0.75, "color": "yellow", "id": "banana-1"})), Ok(item(json!({"name": "banana", "price": 0.75, "color": "yellow", "id": "banana-1"})))),
        step("E15 partial update merges", save(json!({"id": "banana-1", "color": "gold"})), Ok(item(json!({"name": "banana", "price": 0.75, "color": "gold", "id": "banana-1"})))),
        step("E16 merge$ dropped", save(json!({"id": "banana-1", "color": "brown", "merge$": false})), Ok(item(json!({"name": "banana", "price": 0.75, "color": "brown", "id": "banana-1"})))),
        step("E17 upsert$", msg("save", "-/shop/item", json!({"upsert$": ["name"]}), Some(json!({"name": "banana", "stock": 7}))), Ok(banana())),
        step("E18 update of a missing id creates", save(json!({"id": "ghost-1", "name": "ghost"})), Ok(ghost())),
        // Insertion order (mem-store lists integer-like ids first: §4.7).
        step("E19 list q:null", list(json!(null)), Ok(all())).unordered(),
        step("E20 list {}", list(json!({})), Ok(all())).unordered(),
        step("list all$ ignored", list(json!({"all$": true})), Ok(all())).unordered(),
        step("E21 equality", list(json!({"color": "red"})), Ok(json!([apple(), cherry()]))).unordered(),
        step("E22 two equalities", list(json!({"color": "red", "price": 1.5})), Ok(json!([apple()]))),
        step("E23 number ≠ string", list(json!({"price": "1.5"})), Ok(json!([]))),
        step("E24 array is IN", list(json!({"name": ["apple", "fig", "nope"]})), Ok(json!([apple(), fig()]))).unordered(),
        step("E25 array of ids, given order", list(json!(["banana-1", "@apple", "nope"])), Ok(json!([banana(), apple()]))),
        step("E26 by id", list(json!({"id": "banana-1"})), Ok(json!([banana()]))),
        step("E27 $gte/$lt, missing passes", list(json!({"price": {"$gte": 1, "$lt": 3}})), Ok(json!([apple(), fig(), grape(), zoe(), ghost()]))).unordered(),
        step("E28 $ne and $in", list(json!({"color": {"$ne": "red"}, "name": {"$in": ["banana", "grape", "apple"]}})), Ok(json!([banana(), grape()]))).unordered(),
        step("E29 gt$ (suffix spelling)", list(json!({"price": {"gt$": 1}})), Ok(json!([apple(), cherry(), fig(), grape(), zoe(), ghost()]))).unordered(),
        step("E30 nested equality matches all", list(json!({"info": {"origin": "NZ", "organic": true}})), Ok(all())).unordered(),
        step("E31 null matches stored null only", list(json!({"note": null})), Ok(json!([apple()]))).doc_only(),
        step("IN [null]", list(json!({"note": [null]})), Ok(json!([apple()]))).doc_only(),
        step("$nin, missing passes", list(json!({"color": {"$nin": ["red", "brown"]}})), Ok(json!([fig(), grape(), zoe(), ghost()]))).unordered(),
        step("eq$", list(json!({"price": {"eq$": 2}})), Ok(json!([fig()]))),
        step("string range by code point", list(json!({"name": {"$gt": "f", "lt$": "g"}})), Ok(json!([fig()]))),
        step("E32 sort desc, skip, limit", list(json!({"sort$": {"price": -1}, "limit$": 2, "skip$": 1})), Ok(json!([zoe(), ghost()]))),
        step("E33 sort asc, missing last", list(json!({"sort$": {"price": 1}})), Ok(json!([banana(), apple(), fig(), cherry(), grape(), zoe(), ghost()]))),
        step("E34 every sort key", list(json!({"sort$": {"color": 1, "price": -1}})), Ok(json!([banana(), grape(), cherry(), apple(), zoe(), ghost(), fig()]))),
        step("E35 limit$:0 is no limit", list(json!({"limit$": 0})), Ok(all())).unordered(),
        step("load = first of the pipeline", load(json!({"sort$": {"price": 1}, "skip$": 1})), Ok(apple())),
        step("E36 fields$", list(json!({"color": "red", "fields$": ["name"]})), Ok(json!([item(json!({"name": "apple", "id": "@apple"})), item(json!({"name": "cherry", "id": "@cherry"}))]))).unordered(),
        step("E37 base isolates", msg("list", "-/other/item", json!({}), None), Ok(json!([]))),
        step("E38 zone ignored, request canon", msg("list", "z2/shop/item", json!({"name": "cherry"}), None), Ok(json!([{"entity$": "z2/shop/item", "name": "cherry", "price": 3, "color": "red", "id": "@cherry"}]))),
        step("E39 no base is another bucket", msg("list", "-/-/item", json!({}), None), Ok(json!([]))),
        step("bad sort$", list(json!({"sort$": 5})), Err("entity_invalid")),
        step("bad $in", list(json!({"name": {"$in": "apple"}})), Err("entity_invalid")),
        // A query no store can run (PostgreSQL takes 65,535 parameters, SQLite 32,766) is the
        // caller's error on every store, not a retryable 503 or a 500.
        step("$in of 70,000", list(json!({"id": {"$in": (0..70_000).collect::<Vec<u32>>()}})), Err("entity_invalid")),
        step("70,000 ids", list(json!((0..70_000).map(|i| i.to_string()).collect::<Vec<String>>())), Err("entity_invalid")),
        step("$in of 10,000 fits", list(json!({"id": {"$in": (0..10_000).map(|i| format!("none-{i}")).collect::<Vec<String>>()}})), Ok(json!([]))),
        step("E40 remove by id", remove(json!({"id": "@apple"})), Ok(json!(null))),
        step("E40 removed", load(json!({"id": "@apple"})), Ok(json!(null))),
        step("E41 remove a miss", remove(json!({"id": "nope-404"})), Ok(json!(null))),
        step("E42 remove load$", remove(json!({"id": "ghost-1", "load$": true})), Ok(ghost())),
        step("plum 1", save(json!({"name": "plum", "color": "purple", "id$": "plum-1"})), Ok(item(json!({"name": "plum", "color": "purple", "id": "plum-1"})))),
        step("plum 2", save(json!({"name": "plum", "color": "purple", "id$": "plum-2"})), Ok(item(json!({"name": "plum", "color": "purple", "id": "plum-2"})))),
        step("E43 remove removes the first match only", remove(json!({"color": "purple", "load$": true})), Ok(item(json!({"name": "plum", "color": "purple", "id": "plum-1"})))),
        step("E43 cherry", remove(json!({"color": "red"})), Ok(json!(null))),
        step("E44 list after removes", list(json!({})), Ok(json!([banana(), fig(), grape(), zoe(), item(json!({"name": "plum", "color": "purple", "id": "plum-2"}))]))).unordered(),
        step("remove all$ with limit$", remove(json!({"all$": true, "sort$": {"name": -1}, "limit$": 2})), Ok(json!(null))),
        // plum and grape went (names descending by code point: lowercase after "Zoë").
        step("two removed", list(json!({"sort$": {"name": 1}})), Ok(json!([zoe(), banana(), fig()]))),
        step("E45 remove all$", remove(json!({"all$": true})), Ok(json!(null))),
        step("E46 list after remove all$", list(json!({})), Ok(json!([]))),
        step("E48 raw save", json!({"sys": "entity", "cmd": "save", "base": "raw", "name": "thing", "ent": {"a": 1}}), Ok(json!({"entity$": "-/raw/thing", "a": 1, "id": "@raw"}))),
        step("E49 raw id$", json!({"sys": "entity", "cmd": "save", "base": "raw", "name": "thing", "ent": {"id$": "r1", "a": 2}}), Ok(json!({"entity$": "-/raw/thing", "a": 2, "id": "r1"}))),
        step("E50 raw list", json!({"sys": "entity", "cmd": "list", "base": "raw", "name": "thing"}), Ok(json!([{"entity$": "-/raw/thing", "a": 1, "id": "@raw"}, {"entity$": "-/raw/thing", "a": 2, "id": "r1"}]))).unordered(),
        step("E51 raw load, top-level id", json!({"sys": "entity", "cmd": "load", "base": "raw", "name": "thing", "id": "r1"}), Ok(json!({"entity$": "-/raw/thing", "a": 2, "id": "r1"}))),
        step("E52 role:entity", json!({"role": "entity", "cmd": "list", "base": "raw", "name": "thing", "q": {}}), Ok(json!([{"entity$": "-/raw/thing", "a": 1, "id": "@raw"}, {"entity$": "-/raw/thing", "a": 2, "id": "r1"}]))).unordered(),
        step("E53 unknown cmd", json!({"sys": "entity", "cmd": "count", "base": "raw", "name": "thing"}), Err("act_not_found")),
        step("save without ent", json!({"sys": "entity", "cmd": "save", "base": "raw", "name": "thing"}), Err("entity_invalid")),
        step("bad id type", json!({"sys": "entity", "cmd": "save", "base": "raw", "name": "thing", "ent": {"id": {"x": 1}}}), Err("entity_invalid")),
        step("$ keys dropped", json!({"sys": "entity", "cmd": "save", "base": "raw", "name": "thing", "ent": {"id$": "r2", "a": 3, "x$": 1}}), Ok(json!({"entity$": "-/raw/thing", "a": 3, "id": "r2"}))),
    ]
}

/// Replaces `@name` strings by their bound values.
fn subst(v: &Value, vars: &HashMap<String, Value>) -> Value {
    match v {
        Value::String(s) if s.starts_with('@') => {
            vars.get(&s[1..]).cloned().unwrap_or_else(|| v.clone())
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| subst(x, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), subst(x, vars))).collect())
        }
        other => other.clone(),
    }
}

/// Binds unbound `@name` strings of `expected` to what `got` has at the same place.
fn bind(expected: &Value, got: &Value, vars: &mut HashMap<String, Value>) {
    match (expected, got) {
        (Value::String(s), g) if s.starts_with('@') && !vars.contains_key(&s[1..]) => {
            let id = g.as_str().expect("a generated id is a string");
            assert!(
                id.len() == 6
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                "id {id}"
            );
            assert!(!id.bytes().all(|b| b.is_ascii_digit()), "all-digit id {id}");
            vars.insert(s[1..].to_string(), g.clone());
        }
        (Value::Array(e), Value::Array(g)) => e.iter().zip(g).for_each(|(e, g)| bind(e, g, vars)),
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                if let Some(gv) = g.get(k) {
                    bind(ev, gv, vars);
                }
            }
        }
        _ => {}
    }
}

/// The columns layout's view: entity fields that are null removed; unordered lists sorted by id.
fn normalise(v: &Value, mode: Mode, unordered: bool) -> Value {
    if mode == Mode::Document {
        return v.clone();
    }
    let strip = |e: &Value| match e {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), x.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(strip).collect();
            if unordered {
                items.sort_by_key(|e| e.get("id").map(Value::to_string).unwrap_or_default());
            }
            Value::Array(items)
        }
        other => strip(other),
    }
}

/// Replays the whole script on a store; panics naming the first step that differs.
pub async fn run(store: &dyn EntityStore, mode: Mode) {
    let mut vars = HashMap::new();
    for s in steps() {
        if s.doc_only && mode == Mode::Columns {
            continue;
        }
        let req = subst(&s.req, &vars);
        let Value::Object(req) = req else {
            panic!("{}: request is not an object", s.name)
        };
        let cmd = req["cmd"].as_str().unwrap_or_default().to_string();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            entity(store, &cmd, &req),
        )
        .await
        .unwrap_or_else(|_| panic!("{} ({mode:?}) timed out", s.name));
        match (&s.expect, got) {
            (Ok(expected), Ok(got)) => {
                bind(expected, &got, &mut vars);
                let expected = normalise(&subst(expected, &vars), mode, s.unordered);
                let got = normalise(&got, mode, s.unordered);
                assert_eq!(
                    got,
                    expected,
                    "{} ({:?}, {})",
                    s.name,
                    mode,
                    store.backend()
                );
            }
            (Err(code), Err(e)) => assert_eq!(e.code(), *code, "{}: {e}", s.name),
            (expected, got) => panic!("{} ({mode:?}): expected {expected:?}, got {got:?}", s.name),
        }
    }
}
