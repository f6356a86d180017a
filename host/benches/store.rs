//! Data-layer benchmarks: save and load by id on memory, SQLite and PostgreSQL (through
//! `data::entity`, message parsing included); an equality list returning 10 of 100,000 records on
//! SQLite and PostgreSQL; PostgreSQL load by id against a bare tokio-postgres `SELECT` by primary key.
//!
//! `cargo bench --bench store` (PostgreSQL on 127.0.0.1:5432, database `test`; a schema of its own,
//! dropped at the end).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use wasmeca::data::{EntityStore, entity, open_store};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const RECORDS: usize = 100_000;

fn msg(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

async fn pg_exec(sql: &str) {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.expect("sql");
    drop(client);
    let _ = task.await;
}

/// Saves `n` records `{grp: i / 10, n: i, pad}` with ids `r<i>`.
async fn seed(store: &dyn EntityStore, n: usize) {
    for i in 0..n {
        let ent = json!({"id$": format!("r{i}"), "grp": i / 10, "n": i, "pad": "some text to make it a record"});
        entity(
            store,
            "save",
            &msg(json!({"base": "bench", "name": "item", "ent": ent})),
        )
        .await
        .expect("seed");
    }
}

fn save_and_load(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &Arc<dyn EntityStore>,
) {
    rt.block_on(seed(&**store, 1000));
    let mut g = c.benchmark_group(name.to_string());
    g.measurement_time(Duration::from_secs(4));
    let create = msg(
        json!({"cmd": "save", "base": "bench", "name": "item", "ent": {"grp": -1, "pad": "x"}}),
    );
    g.bench_function("save (create, generated id)", |b| {
        b.to_async(rt)
            .iter(|| async { entity(&**store, "save", &create).await.expect("save") })
    });
    let update = msg(
        json!({"cmd": "save", "base": "bench", "name": "item", "ent": {"id": "r7", "pad": "y"}}),
    );
    g.bench_function("save (merge update)", |b| {
        b.to_async(rt)
            .iter(|| async { entity(&**store, "save", &update).await.expect("update") })
    });
    let mut i = 0usize;
    g.bench_function("load by id", |b| {
        b.to_async(rt).iter(|| {
            i = (i + 7919) % 1000;
            let load = msg(json!({"base": "bench", "name": "item", "q": {"id": format!("r{i}")}}));
            let store = store.clone();
            async move {
                let got = entity(&*store, "load", &load).await.expect("load");
                assert!(got.is_object());
            }
        })
    });
    g.finish();
}

fn equality_list(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &Arc<dyn EntityStore>,
) {
    let mut g = c.benchmark_group(format!("{name} 100k"));
    g.measurement_time(Duration::from_secs(4));
    let mut k = 0usize;
    g.bench_function("list {grp: k} → 10 of 100,000", |b| {
        b.to_async(rt).iter(|| {
            k = (k + 997) % (RECORDS / 10);
            let list = msg(json!({"base": "bench", "name": "item", "q": {"grp": k}}));
            let store = store.clone();
            async move {
                let got = entity(&*store, "list", &list).await.expect("list");
                assert_eq!(got.as_array().map(Vec::len), Some(10));
            }
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let memory = rt.block_on(open_store("memory://")).expect("memory");
    save_and_load(c, &rt, "memory", &memory);

    let dir = std::env::temp_dir().join(format!("wasmeca-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bench.db");
    let sqlite = rt
        .block_on(open_store(&format!("sqlite://{}", path.display())))
        .expect("sqlite");
    save_and_load(c, &rt, "sqlite", &sqlite);
    let sqlite100k = rt
        .block_on(open_store(&format!(
            "sqlite://{}",
            dir.join("100k.db").display()
        )))
        .expect("sqlite");
    rt.block_on(seed(&*sqlite100k, RECORDS));
    equality_list(c, &rt, "sqlite", &sqlite100k);

    let schema = format!("wasmeca_bench_{}", std::process::id());
    rt.block_on(pg_exec(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )));
    let pg = rt
        .block_on(open_store(&format!("{PG}?schema={schema}")))
        .expect("postgres");
    save_and_load(c, &rt, "postgres", &pg);

    // The same primary-key SELECT with the bare driver: one connection, a prepared statement
    // (`LIMIT 1`: measured here as the bare driver's fastest form of the look-up).
    let (client, stmt) = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            "host=127.0.0.1 user=postgres dbname=test",
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(conn);
        let sql = format!(
            "SELECT id, data FROM {schema}.wasmeca_entity WHERE base = $1 AND name = $2 AND id = $3 LIMIT 1"
        );
        let stmt = client.prepare(&sql).await.expect("prepare");
        (client, stmt)
    });
    let mut g = c.benchmark_group("postgres");
    g.measurement_time(Duration::from_secs(4));
    let mut i = 0usize;
    g.bench_function("bare tokio-postgres SELECT by primary key", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % 1000;
            let id = json!(format!("r{i}"));
            let (client, stmt) = (&client, &stmt);
            async move {
                let row = client
                    .query_opt(stmt, &[&"bench", &"item", &id])
                    .await
                    .expect("select");
                let data: Value = row.expect("row").get(1);
                assert!(data.is_object());
            }
        })
    });
    g.finish();

    // 100k records for the equality list, inserted in bulk in the store's own layout.
    let schema100k = format!("{schema}_100k");
    rt.block_on(pg_exec(&format!(
        "DROP SCHEMA IF EXISTS {schema100k} CASCADE; CREATE SCHEMA {schema100k}"
    )));
    let pg100k = rt
        .block_on(open_store(&format!("{PG}?schema={schema100k}")))
        .expect("postgres");
    rt.block_on(async {
        entity(&*pg100k, "list", &msg(json!({"base": "bench", "name": "item"}))).await.expect("create table");
        pg_exec(&format!(
            "INSERT INTO {schema100k}.wasmeca_entity (base, name, id, data)
             SELECT 'bench', 'item', to_jsonb('r' || g), jsonb_build_object('grp', g / 10, 'n', g, 'pad', 'some text to make it a record')
             FROM generate_series(0, {}) g; ANALYZE {schema100k}.wasmeca_entity",
            RECORDS - 1
        ))
        .await;
    });
    equality_list(c, &rt, "postgres", &pg100k);

    drop((memory, sqlite, sqlite100k, pg, pg100k, client));
    rt.block_on(pg_exec(&format!(
        "DROP SCHEMA {schema} CASCADE; DROP SCHEMA {schema100k} CASCADE"
    )));
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(store, benches);
criterion_main!(store);
