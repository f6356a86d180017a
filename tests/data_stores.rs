//! The data layer against real stores: the entity conformance script on memory, SQLite and both
//! PostgreSQL layouts; type round-trips; index use; durability across `kill -9`; a store going
//! down and coming back; and (in `cache_api`) the cache protocol on memory and Redis.

#[path = "data_stores/cache.rs"]
mod cache_api;
#[path = "data_stores/cases.rs"]
mod cases;
#[allow(dead_code)] // shared with tests/data.rs, which uses all of it
#[path = "data_stores/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};
use support::{PgSchema, Proxy, TempDir, pg_exec};
use wasmeca::data::{EntityStore, entity, open_store};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

async fn call(store: &dyn EntityStore, v: Value) -> Result<Value, wasmeca::data::DataError> {
    let m = obj(v);
    let cmd = m["cmd"].as_str().unwrap_or_default().to_string();
    entity(store, &cmd, &m).await
}

/// The seneca-postgres-store schema the columns layout serves in the conformance script.
const COLUMNS_DDL: &str = r#"
    CREATE TABLE {s}.shop_item (id jsonb PRIMARY KEY, name text, price numeric, color text, tags jsonb,
                                info jsonb, note text, "when" text, stock integer);
    CREATE TABLE {s}.other_item (id jsonb PRIMARY KEY, name text);
    CREATE TABLE {s}.item (id jsonb PRIMARY KEY, name text);
    CREATE TABLE {s}.raw_thing (id jsonb PRIMARY KEY, a integer);"#;

#[tokio::test]
async fn conformance_memory() {
    let store = open_store("memory://").await.unwrap();
    cases::run(&*store, cases::Mode::Document).await;
}

#[tokio::test]
async fn conformance_sqlite() {
    let dir = TempDir::new();
    let store = open_store(&format!("sqlite://{}", dir.file("e.db")))
        .await
        .unwrap();
    cases::run(&*store, cases::Mode::Document).await;
}

#[tokio::test]
async fn conformance_postgres_document() {
    let schema = PgSchema::new("").await;
    let store = open_store(&schema.url("document")).await.unwrap();
    cases::run(&*store, cases::Mode::Document).await;
}

#[tokio::test]
async fn conformance_postgres_columns() {
    let schema = PgSchema::new(COLUMNS_DDL).await;
    let store = open_store(&schema.url("columns")).await.unwrap();
    cases::run(&*store, cases::Mode::Columns).await;
}

/// Every JSON type comes back exactly as sent (and after reopening, for SQLite).
#[tokio::test]
async fn types_round_trip() {
    let dir = TempDir::new();
    let schema = PgSchema::new("").await;
    let sqlite = format!("sqlite://{}", dir.file("t.db"));
    let data = json!({
        "int": 42, "neg": -7, "big": 9007199254740993u64, "max": u64::MAX, "min": i64::MIN,
        "float": 1.25, "tiny": 1e-7, "huge": 1.5e300, "zero": 0, "t": true, "f": false, "nul": null,
        "s": "", "uni": "Zoë ✓ 日本 🍎", "esc": "quote\" backslash\\ tab\t", "arr": [1, 2.5, "x", null, [true], {"k": 1}],
        "obj": {"a": {"b": [1, "x", null]}, "empty": {}}, "empty_arr": []
    });
    for url in [
        "memory://".to_string(),
        sqlite.clone(),
        schema.url("document"),
    ] {
        let store = open_store(&url).await.unwrap();
        let mut ent = data.clone();
        ent["id$"] = json!("rt");
        let saved = call(
            &*store,
            json!({"cmd": "save", "base": "t", "name": "types", "ent": ent}),
        )
        .await
        .unwrap();
        let loaded = call(
            &*store,
            json!({"cmd": "load", "base": "t", "name": "types", "q": {"id": "rt"}}),
        )
        .await
        .unwrap();
        let mut expected = data.clone();
        expected["id"] = json!("rt");
        expected["entity$"] = json!("-/t/types");
        assert_eq!(saved, expected, "{url}");
        assert_eq!(loaded, expected, "{url}");
        for (field, value) in [
            ("big", json!(9007199254740993u64)),
            ("float", json!(1.25)),
            ("t", json!(true)),
            ("uni", json!("Zoë ✓ 日本 🍎")),
        ] {
            let found = call(
                &*store,
                json!({"cmd": "list", "base": "t", "name": "types", "q": {field: value}}),
            )
            .await
            .unwrap();
            assert_eq!(found.as_array().map(Vec::len), Some(1), "{url} {field}");
        }
    }
    drop(schema);
    let reopened = open_store(&sqlite).await.unwrap();
    let loaded = call(
        &*reopened,
        json!({"cmd": "load", "base": "t", "name": "types", "id": "rt"}),
    )
    .await
    .unwrap();
    assert_eq!(loaded["huge"], json!(1.5e300));
    assert_eq!(loaded["max"], json!(u64::MAX));
}

/// Equality lists use an index: the SQLite expression index is created and chosen; the
/// PostgreSQL containment form uses the GIN index.
#[tokio::test]
async fn pushdown_uses_indexes() {
    let dir = TempDir::new();
    let path = dir.file("i.db");
    let store = open_store(&format!("sqlite://{path}")).await.unwrap();
    for i in 0..200 {
        let ent = json!({"color": if i % 20 == 0 { "red" } else { "blue" }, "n": i});
        call(
            &*store,
            json!({"cmd": "save", "base": "b", "name": "idx", "ent": ent}),
        )
        .await
        .unwrap();
    }
    let red = call(&*store, json!({"cmd": "list", "base": "b", "name": "idx", "q": {"color": "red", "sort$": {"n": -1}, "limit$": 3}})).await.unwrap();
    assert_eq!(
        red.as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].clone())
            .collect::<Vec<_>>(),
        [json!(180), json!(160), json!(140)]
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let plan: Vec<String> = conn
        .prepare("EXPLAIN QUERY PLAN SELECT seq FROM wasmeca_e1 WHERE (json_extract(data, '$.\"color\"') = 'red' AND json_type(data, '$.\"color\"') = 'text')")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter()
            .any(|p| p.contains("USING INDEX wasmeca_e1__color")),
        "{plan:?}"
    );

    let schema = PgSchema::new("").await;
    let pg = open_store(&schema.url("document")).await.unwrap();
    call(
        &*pg,
        json!({"cmd": "save", "base": "b", "name": "idx", "ent": {"color": "red"}}),
    )
    .await
    .unwrap();
    pg_exec(&format!(
        "INSERT INTO \"{0}\".wasmeca_entity (base, name, id, data)
         SELECT 'b', 'idx', to_jsonb(g), jsonb_build_object('color', 'c' || g) FROM generate_series(1, 20000) g;
         ANALYZE \"{0}\".wasmeca_entity",
        schema.name
    ))
    .await;
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let sql = format!(
        "EXPLAIN SELECT id, data FROM \"{}\".wasmeca_entity WHERE base = 'b' AND name = 'idx' AND data @> '{{\"color\":\"red\"}}'::jsonb",
        schema.name
    );
    let plan: Vec<String> = client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("wasmeca_entity_data")),
        "{plan:?}"
    );
}

/// Loads by id run on the caller's thread on read-only connections: they see every answered
/// save, this store's and another writer's.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_loads_by_id_see_every_answered_save() {
    let dir = TempDir::new();
    let path = dir.file("r.db");
    let store = open_store(&format!("sqlite://{path}")).await.unwrap();
    let missing = json!({"cmd": "load", "base": "b", "name": "r", "q": {"id": "a"}});
    assert_eq!(
        call(&*store, missing).await.unwrap(),
        Value::Null,
        "before the first save"
    );
    let load = |store: std::sync::Arc<dyn EntityStore>| async move {
        call(
            &*store,
            json!({"cmd": "load", "base": "b", "name": "r", "q": {"id": "a"}}),
        )
        .await
        .unwrap()["v"]
            .clone()
    };
    let save =
        |v: i64| json!({"cmd": "save", "base": "b", "name": "r", "ent": {"id": "a", "v": v}});
    call(&*store, save(1)).await.unwrap();
    assert_eq!(load(store.clone()).await, 1);
    for v in 2..50 {
        call(&*store, save(v)).await.unwrap();
        assert_eq!(load(store.clone()).await, v, "the load after save {v}");
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(r#"UPDATE wasmeca_e1 SET data = '{"v":"other"}' WHERE id = 'a'"#)
        .unwrap();
    assert_eq!(
        load(store.clone()).await,
        "other",
        "another writer's commit"
    );
    // An id list, read in one transaction, in the order asked, misses skipped.
    call(
        &*store,
        json!({"cmd": "save", "base": "b", "name": "r", "ent": {"id": 7, "v": 7}}),
    )
    .await
    .unwrap();
    let both = call(
        &*store,
        json!({"cmd": "list", "base": "b", "name": "r", "q": [7, "nope", "a"]}),
    )
    .await
    .unwrap();
    let ids: Vec<Value> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!(7), json!("a")]);
    // Databases a read-only connection cannot share still answer (the writer serves them).
    for url in ["sqlite://:memory:", "sqlite://file::memory:"] {
        let private = open_store(url).await.unwrap();
        call(&*private, save(1)).await.unwrap();
        assert_eq!(load(private.clone()).await, 1, "{url}");
    }
}

/// Child side of the kill -9 test: saves records, reporting each one only after it is answered.
#[tokio::test]
async fn kill9_child() {
    let Ok(path) = std::env::var("WASMECA_KILL9_DB") else {
        return;
    };
    let store = open_store(&format!("sqlite://{path}")).await.unwrap();
    for i in 0.. {
        let ent = json!({"n": i, "pad": "x".repeat(100)});
        let saved = call(
            &*store,
            json!({"cmd": "save", "base": "k", "name": "nine", "ent": ent}),
        )
        .await
        .unwrap();
        println!("SAVED {}", saved["id"].as_str().unwrap());
        if i > 100_000 {
            break;
        }
    }
}

/// A save answered before `kill -9` of the process is on disk afterwards.
#[test]
fn sqlite_answered_save_survives_kill_9() {
    let dir = TempDir::new();
    let path = dir.file("k.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("WASMECA_KILL9_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(id) = line.unwrap().strip_prefix("SAVED ") {
            answered.push(id.to_string());
            if answered.len() == 300 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-save of the next record
    child.wait().unwrap();
    assert_eq!(answered.len(), 300);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open_store(&format!("sqlite://{path}")).await.unwrap();
        let found = call(
            &*store,
            json!({"cmd": "list", "base": "k", "name": "nine", "q": answered}),
        )
        .await
        .unwrap();
        assert_eq!(found.as_array().unwrap().len(), 300);
    });
}

/// A PostgreSQL that is down answers store_unavailable (503) on every call, without panicking,
/// and the store recovers by itself when the server is back.
#[tokio::test]
async fn postgres_down_then_back() {
    let schema = PgSchema::new("").await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?schema={}",
        proxy.port, schema.name
    );
    let store = open_store(&url).await.unwrap();
    let list = json!({"cmd": "list", "base": "d", "name": "down", "q": {}});
    call(
        &*store,
        json!({"cmd": "save", "base": "d", "name": "down", "ent": {"id$": "a"}}),
    )
    .await
    .unwrap();
    proxy.cut();
    for _ in 0..3 {
        let e = call(&*store, list.clone()).await.unwrap_err();
        assert_eq!((e.code(), e.status()), ("store_unavailable", 503), "{e}");
        let e = call(
            &*store,
            json!({"cmd": "save", "base": "d", "name": "down", "ent": {"id$": "b"}}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), "store_unavailable");
    }
    proxy.restore().await;
    let back = call(&*store, list).await.unwrap();
    assert_eq!(back, json!([{"entity$": "-/d/down", "id": "a"}]));

    let never = open_store("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap();
    let e = call(&*never, json!({"cmd": "load", "name": "x", "id": "a"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "store_unavailable");
}

/// The columns layout reads and writes seneca-postgres-store's conventions.
#[tokio::test]
async fn postgres_columns_conventions() {
    let schema = PgSchema::new(
        "CREATE TABLE {s}.wx_foo (id text PRIMARY KEY, label text, n integer, obj text, list text, flag boolean);
         INSERT INTO {s}.wx_foo (id, label, obj) VALUES ('node1', 'from node', '{\"looks\":\"json\"}');",
    )
    .await;
    let store = open_store(&schema.url("columns")).await.unwrap();
    let base = json!({"cmd": "save", "base": "wx", "name": "foo"});
    let mut save = base.clone();
    save["ent"] = json!({"id$": "w1", "label": "mine", "n": 3, "obj": {"a": [1]}, "list": [1, "b"], "flag": true});
    let saved = call(&*store, save).await.unwrap();
    assert_eq!(
        saved,
        json!({"entity$": "-/wx/foo", "id": "w1", "label": "mine", "n": 3, "obj": {"a": [1]}, "list": "{\"1\",\"b\"}", "flag": true})
    );
    let node = call(
        &*store,
        json!({"cmd": "load", "base": "wx", "name": "foo", "id": "node1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        node,
        json!({"entity$": "-/wx/foo", "id": "node1", "label": "from node", "n": null, "obj": {"looks": "json"}, "list": null, "flag": null})
    );
    let strict = call(
        &*store,
        json!({"cmd": "list", "base": "wx", "name": "foo", "q": {"n": "3"}}),
    )
    .await
    .unwrap();
    assert_eq!(strict, json!([]));
    let mut bad = base.clone();
    bad["ent"] = json!({"nope": 1});
    assert_eq!(
        call(&*store, bad).await.unwrap_err().code(),
        "entity_invalid"
    );
    let e = call(
        &*store,
        json!({"cmd": "list", "base": "wx", "name": "nothere"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "store_failed");
    assert!(e.to_string().contains("wx_nothere"), "{e}");
}

/// Many concurrent generated-id creates on SQLite and PostgreSQL: all stored, ids distinct.
#[tokio::test]
async fn concurrent_creates() {
    let dir = TempDir::new();
    let schema = PgSchema::new("").await;
    for url in [
        format!("sqlite://{}", dir.file("c.db")),
        schema.url("document"),
    ] {
        let store = open_store(&url).await.unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    call(
                        &*store,
                        json!({"cmd": "save", "name": "c", "ent": {"i": i}}),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap()["id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 200);
        let all = call(
            &*store,
            json!({"cmd": "list", "name": "c", "q": {"sort$": {"i": 1}}}),
        )
        .await
        .unwrap();
        let is: Vec<i64> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["i"].as_i64().unwrap())
            .collect();
        assert_eq!(is, (0..200).collect::<Vec<_>>(), "{url}");
    }
}

/// A store that makes a table per entity kind holds at most `max_kinds` of them (issue 17
/// item 9): one more is `entity_kinds_full` (507) naming it, kinds it has keep working, and the
/// bound holds after a restart.
#[tokio::test]
async fn sqlite_holds_at_most_max_kinds() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.file("k.db"));
    let save = |name: &str| json!({"sys": "entity", "cmd": "save", "base": "b", "name": name, "ent": {"v": 1}});
    let store = wasmeca::data::open_store_with(&url, 3).await.unwrap();
    for name in ["k1", "k2", "k3"] {
        call(&*store, save(name))
            .await
            .expect("a kind within the bound");
    }
    let full = call(&*store, save("k4")).await.expect_err("a fourth kind");
    assert_eq!(
        (full.code(), full.status()),
        ("entity_kinds_full", 507),
        "{full}"
    );
    assert!(
        full.to_string().contains("b/k4") && full.to_string().contains("max_kinds"),
        "{full}"
    );
    call(&*store, save("k2")).await.expect("a kind it holds");
    drop(store);
    let again = wasmeca::data::open_store_with(&url, 3).await.unwrap();
    let full = call(&*again, save("k5"))
        .await
        .expect_err("still full after a restart");
    assert_eq!(full.code(), "entity_kinds_full");
    let listed = call(
        &*again,
        json!({"sys": "entity", "cmd": "list", "base": "b", "name": "k4"}),
    )
    .await
    .expect("a list of a kind it does not hold");
    assert_eq!(listed, json!([]), "a refused kind left nothing behind");
}
