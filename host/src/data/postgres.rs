//! The PostgreSQL entity store: a deadpool-postgres pool, and the `document` layout (default).
//!
//! Layout `document`: one table per database (or per `?schema=`), created on first use:
//! `wasmeca_entity(base text, name text, id jsonb, seq bigserial, data jsonb,
//! PRIMARY KEY (base, name, id))`, a GIN index on `data` (`jsonb_path_ops`) and a btree on
//! `(base, name, seq)` for insertion order. The GIN index has `fastupdate = off`: with GIN's
//! pending list, a burst of inserts makes every containment query scan the list linearly (4 ms
//! instead of 0.1 ms for 10 of 100,000 records) until autovacuum flushes it. `id` is jsonb so it
//! keeps its JSON type (`42` ≠ `"42"`); `data` is the record without `id`. The zone is not
//! stored: it does not isolate (ENTITY.md §6).
//!
//! Pushdown: everything. Equality and IN on a field are jsonb containment (`data @> '{"f":v}'`,
//! ORed for IN) — exact for scalar operands (jsonb compares numbers numerically and never equates
//! a string with a number; nested arrays do not "contain" scalars) and served by the GIN index.
//! `$ne`/`$nin` are `IS DISTINCT FROM`/`= ANY` on `data->'f'`; range operators compare jsonb
//! numbers, or strings `COLLATE "C"` (code point order, as Rust), under a `jsonb_typeof` guard so
//! other types pass. `sort$` is pushed as (type rank, number/boolean, string COLLATE "C"), then
//! `seq`, with `LIMIT`/`OFFSET`. Ids use the primary key. Every write is one statement, or a
//! transaction (upsert), so nothing is half-written.
//!
//! Layout `columns` ([`super::pg_columns`]) serves an existing seneca-postgres-store schema.
//!
//! Availability: the pool connects lazily and replaces broken connections, so a server that is
//! down makes each call fail fast with `store_unavailable`, and calls succeed again once it is back.
//! A server that stops answering without closing (a partition, a hung host) holds a call no longer
//! than the act's deadline (the router bounds every native call: `action_timeout`); a connection
//! whose call was cut off that way is closed rather than pooled ([`Lease`]), sockets carry TCP
//! keepalives and a user timeout, and statements a `statement_timeout` of the longest act
//! deadline, so the pool heals by itself when the partition does.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;

use super::entity::{EntityStore, Kind, Record, SaveOp};
use super::memory::with_id;
use super::pg_columns::Columns;
use super::query::{Filter, Query, RangeOp, Select, Test};
use super::{BoxFuture, DataError, redact_url};

/// Which table layout a PostgreSQL store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgLayout {
    /// One jsonb document table for every entity type (default; created on first use).
    Document,
    /// seneca-postgres-store's layout: an existing table `base_name` with a column per field.
    Columns,
}

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// The PostgreSQL store.
pub struct PgStore {
    /// The connection pool (lazy, self-healing).
    pub(crate) pool: Pool,
    /// The layout served.
    layout: PgLayout,
    /// The schema to use, already quoted (`"name".`), or empty for the search path.
    pub(crate) schema: String,
    /// The schema's plain name (for catalog look-ups), or empty.
    pub(crate) schema_name: String,
    /// Set once the document table exists (retried after a failure, e.g. while the server is down).
    ready: tokio::sync::OnceCell<()>,
    /// The columns layout's table catalog.
    columns: Columns,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("layout", &self.layout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A pooled connection lent to one store call ([`PgStore::lease`]).
struct Lease(Option<Object>);

impl Lease {
    /// The connection.
    fn client(&mut self) -> &mut Object {
        // Only `settle` and `drop` take it out.
        self.0
            .as_mut()
            .expect("a lease holds its connection until settled")
    }

    /// The call ended (with an answer or an error from the server): the connection may be
    /// reused.
    fn settle(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Dropped mid-call: its reply may still come. Closing the connection (by dropping
            // the client) is the only way to be sure the next user does not read it.
            drop(Object::take(object));
        }
    }
}

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a driver error: connection trouble is `store_unavailable`, the rest `store_failed`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> DataError {
    let reason = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_string());
    let reason = super::clip(&reason); // driver messages may quote the caller's values
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let down = match e.code().map(|c| c.code()) {
        Some(code) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        None => e.is_closed() || io || reason.contains("timeout") || reason.contains("connect"),
    };
    if down {
        DataError::Unavailable {
            store: "postgres",
            reason,
        }
    } else {
        DataError::Failed {
            store: "postgres",
            reason,
        }
    }
}

impl PgStore {
    /// A store for `url` (`postgres://…`, `?layout=document|columns`, `?schema=NAME`; the other
    /// parameters go to tokio-postgres). Nothing is contacted until the first call.
    pub fn open(url: &str) -> Result<PgStore, DataError> {
        let bad = |reason: String| DataError::BadUrl {
            url: redact_url(url),
            reason,
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut layout, mut schema, mut schema_name, mut rest) =
            (PgLayout::Document, String::new(), String::new(), Vec::new());
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=').unwrap_or((kv, "")) {
                ("layout", "document") => layout = PgLayout::Document,
                ("layout", "columns") => layout = PgLayout::Columns,
                ("layout", other) => {
                    return Err(bad(format!(
                        "layout must be document or columns, not {other:?}"
                    )));
                }
                ("schema", name) if !name.is_empty() => {
                    schema = format!("{}.", ident(name));
                    schema_name = name.to_string();
                }
                _ => rest.push(kv),
            }
        }
        let pg_url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config =
            tokio_postgres::Config::from_str(&pg_url).map_err(|e| bad(e.to_string()))?;
        let given = |key: &str| rest.iter().any(|kv| kv.split('=').next() == Some(key));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that goes silent (a partition, a hung host) must not keep a connection
        // forever: keepalives find a peer that is gone, and the user timeout drops a
        // connection whose sent data stays unacknowledged.
        if !given("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(10));
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if !given("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(20));
        }
        // No statement outlives the longest deadline an act may have: past it, nobody waits
        // for the answer, and the server should stop working on it.
        if !given("options") {
            config.options(format!(
                "-c statement_timeout={}",
                crate::message::MAX_TIMEOUT_MS
            ));
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(PgStore {
            pool,
            layout,
            schema,
            schema_name,
            ready: tokio::sync::OnceCell::new(),
            columns: Columns::default(),
        })
    }

    /// The layout served.
    pub fn layout(&self) -> PgLayout {
        self.layout
    }

    /// A pooled connection for one store call: if the call is dropped before it settles the
    /// lease (its deadline passed while the server said nothing), the connection leaves the
    /// pool instead of going back with a query still in flight, so a partition that heals
    /// leaves no stuck connection behind.
    async fn lease(&self) -> Result<Lease, DataError> {
        let object = self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg_error(e),
            other => DataError::Unavailable {
                store: "postgres",
                reason: other.to_string(),
            },
        })?;
        Ok(Lease(Some(object)))
    }

    /// The document table, qualified.
    fn table(&self) -> String {
        format!("{}wasmeca_entity", self.schema)
    }

    /// Makes sure the document table exists (once per store).
    async fn ensure_table(&self, client: &Object) -> Result<(), DataError> {
        self.ready
            .get_or_try_init(|| async {
                let t = self.table();
                let schema = self.schema.trim_end_matches('.');
                let create_schema =
                    if schema.is_empty() { String::new() } else { format!("CREATE SCHEMA IF NOT EXISTS {schema};") };
                // The advisory lock serialises concurrent first uses (CREATE … IF NOT EXISTS races).
                let ddl = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(hashtext('wasmeca_entity')); {create_schema}
                     CREATE TABLE IF NOT EXISTS {t} (base text NOT NULL, name text NOT NULL, id jsonb NOT NULL,
                         seq bigserial NOT NULL, data jsonb NOT NULL, PRIMARY KEY (base, name, id));
                     CREATE INDEX IF NOT EXISTS wasmeca_entity_data ON {t} USING gin (data jsonb_path_ops)
                         WITH (fastupdate = off);
                     CREATE INDEX IF NOT EXISTS wasmeca_entity_seq ON {t} (base, name, seq); COMMIT;"
                );
                let done = client.batch_execute(&ddl).await.map_err(pg_error);
                if done.is_err() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                done
            })
            .await?;
        Ok(())
    }

    async fn doc_save(
        &self,
        client: &mut Object,
        kind: &Kind,
        op: SaveOp,
    ) -> Result<Record, DataError> {
        self.ensure_table(client).await?;
        let t = self.table();
        let (base, name) = (kind.base.clone(), kind.name.clone());
        match op {
            SaveOp::Update { id, data } => {
                let sql = format!(
                    "INSERT INTO {t} AS e (base, name, id, data) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (base, name, id) DO UPDATE SET data = e.data || EXCLUDED.data RETURNING data"
                );
                let st = client.prepare_cached(&sql).await.map_err(pg_error)?;
                let row = client
                    .query_one(&st, &[&base, &name, &id, &Value::Object(data)])
                    .await
                    .map_err(pg_error)?;
                Ok(with_id(id, object(row.get(0))))
            }
            SaveOp::Create { id, data, upsert } if upsert.is_empty() => {
                insert(&*client, &t, kind, id, data).await
            }
            SaveOp::Create { id, data, upsert } => {
                // Upsert: find the first match and merge into it, else insert; serialised per kind.
                let tx = client.transaction().await.map_err(pg_error)?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    &[&format!("{t}/{base}/{name}")],
                )
                .await
                .map_err(pg_error)?;
                let q = Query::first(upsert);
                let mut plan = DocPlan::new(kind);
                plan.query(&q);
                let conds = plan.conds.join(" AND ");
                let p = plan.param(Box::new(Value::Object(data.clone())));
                let sql = format!(
                    "WITH m AS (SELECT base, name, id FROM {t} WHERE {conds} ORDER BY seq LIMIT 1 FOR UPDATE)
                     UPDATE {t} AS e SET data = e.data || {p}::jsonb FROM m
                     WHERE e.base = m.base AND e.name = m.name AND e.id = m.id RETURNING e.id, e.data"
                );
                let rows = tx.query(&sql, &plan.refs()).await.map_err(pg_error)?;
                let rec = match rows.first() {
                    Some(row) => with_id(row.get(0), object(row.get(1))),
                    None => insert(&tx, &t, kind, id, data).await?,
                };
                tx.commit().await.map_err(pg_error)?;
                Ok(rec)
            }
        }
    }

    async fn doc_list(
        &self,
        client: &Object,
        kind: &Kind,
        q: &Query,
    ) -> Result<Vec<Record>, DataError> {
        self.ensure_table(client).await?;
        let mut plan = DocPlan::new(kind);
        plan.query(q);
        let sql = format!(
            "SELECT id, data FROM {} WHERE {} ORDER BY {}{}",
            self.table(),
            plan.conds.join(" AND "),
            plan.order(),
            sql_page(q)
        );
        let st = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&st, &plan.refs()).await.map_err(pg_error)?;
        Ok(rows
            .into_iter()
            .map(|r| with_id(r.get(0), object(r.get(1))))
            .collect())
    }

    async fn doc_remove(
        &self,
        client: &Object,
        kind: &Kind,
        q: &Query,
        all: bool,
    ) -> Result<Option<Record>, DataError> {
        self.ensure_table(client).await?;
        let mut q = q.clone();
        if !all {
            q.limit = Some(1);
        }
        let mut plan = DocPlan::new(kind);
        plan.query(&q);
        let t = self.table();
        let sql = format!(
            "WITH v AS (SELECT id FROM {t} WHERE {} ORDER BY {}{} FOR UPDATE)
             DELETE FROM {t} WHERE base = $1 AND name = $2 AND id IN (SELECT id FROM v) RETURNING id, data",
            plan.conds.join(" AND "),
            plan.order(),
            sql_page(&q)
        );
        let rows = client.query(&sql, &plan.refs()).await.map_err(pg_error)?;
        Ok(if all {
            None
        } else {
            rows.into_iter()
                .next()
                .map(|r| with_id(r.get(0), object(r.get(1))))
        })
    }
}

/// Inserts a new document; `IdExists` when the id is taken (nothing is written then).
async fn insert(
    client: &impl GenericClient,
    t: &str,
    kind: &Kind,
    id: Value,
    data: Record,
) -> Result<Record, DataError> {
    let sql = format!(
        "INSERT INTO {t} (base, name, id, data) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING seq"
    );
    let st = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let data = Value::Object(data);
    let inserted = client
        .query_opt(&st, &[&kind.base, &kind.name, &id, &data])
        .await
        .map_err(pg_error)?;
    match (inserted, data) {
        (Some(_), Value::Object(data)) => Ok(with_id(id, data)),
        _ => Err(DataError::IdExists {
            canon: String::new(),
            id,
        }),
    }
}

/// `LIMIT`/`OFFSET` for a query (nothing when absent).
pub(crate) fn sql_page(q: &Query) -> String {
    let mut s = String::new();
    if let Some(limit) = q.limit {
        s += &format!(" LIMIT {}", limit.min(i64::MAX as usize));
    }
    if q.skip > 0 {
        s += &format!(" OFFSET {}", q.skip.min(i64::MAX as usize));
    }
    s
}

/// ORDER BY terms for a jsonb expression in [`super::query::sort_cmp`]'s order: type rank
/// (missing/null greatest), then numbers and booleans, then strings by code point.
pub(crate) fn jsonb_sort(x: &str, dir: &str) -> String {
    format!(
        "CASE jsonb_typeof({x}) WHEN 'number' THEN 0 WHEN 'string' THEN 1 WHEN 'boolean' THEN 2 \
         WHEN 'array' THEN 3 WHEN 'object' THEN 4 ELSE 5 END {dir}, \
         CASE WHEN jsonb_typeof({x}) IN ('number', 'boolean') THEN {x} END {dir}, \
         (CASE WHEN jsonb_typeof({x}) = 'string' THEN {x} #>> '{{}}' END) COLLATE \"C\" {dir}"
    )
}

/// A jsonb document as a record (a non-object is an empty record: never written by this store).
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// SQL for a query on the document table: conditions, order and their parameters.
struct DocPlan {
    /// Conditions ANDed (the first two select the kind).
    conds: Vec<String>,
    /// ORDER BY terms, before the final `seq`.
    order: Vec<String>,
    /// Parameters `$1…`.
    params: Vec<Param>,
}

impl DocPlan {
    fn new(kind: &Kind) -> DocPlan {
        DocPlan {
            conds: vec!["base = $1".into(), "name = $2".into()],
            order: Vec::new(),
            params: vec![Box::new(kind.base.clone()), Box::new(kind.name.clone())],
        }
    }

    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// The jsonb expression of a field: the id column or `data->'f'`.
    fn field(&mut self, name: &str) -> String {
        if name == "id" {
            "id".into()
        } else {
            format!("(data->{}::text)", self.param(Box::new(name.to_string())))
        }
    }

    fn query(&mut self, q: &Query) {
        match &q.select {
            Select::Ids(ids) => {
                let p = self.param(Box::new(ids.clone()));
                self.conds.push(format!("id = ANY({p}::jsonb[])"));
                self.order.push(format!("array_position({p}::jsonb[], id)"));
            }
            Select::Where(filters) => {
                let mut contained = Map::new();
                for f in filters {
                    match &f.test {
                        Test::Eq(v) if f.field != "id" && !contained.contains_key(&f.field) => {
                            contained.insert(f.field.clone(), v.clone());
                        }
                        _ => self.filter(f),
                    }
                }
                if !contained.is_empty() {
                    let p = self.param(Box::new(Value::Object(contained)));
                    self.conds.push(format!("data @> {p}::jsonb"));
                }
            }
        }
        for k in &q.sort {
            let x = self.field(&k.field);
            let dir = if k.desc { "DESC" } else { "ASC" };
            self.order.push(jsonb_sort(&x, dir));
        }
    }

    fn filter(&mut self, f: &Filter) {
        let id = f.field == "id";
        let cond = match &f.test {
            Test::Eq(v) if id => format!("id = {}::jsonb", self.param(Box::new(v.clone()))),
            Test::Eq(v) => {
                let one = Value::Object(Map::from_iter([(f.field.clone(), v.clone())]));
                format!("data @> {}::jsonb", self.param(Box::new(one)))
            }
            Test::In(list) if id => {
                format!("id = ANY({}::jsonb[])", self.param(Box::new(list.clone())))
            }
            Test::In(list) => {
                let terms: Vec<String> = list
                    .iter()
                    .map(|v| {
                        let one = Value::Object(Map::from_iter([(f.field.clone(), v.clone())]));
                        format!("data @> {}::jsonb", self.param(Box::new(one)))
                    })
                    .collect();
                format!("({})", terms.join(" OR "))
            }
            Test::Nin(list) => {
                let x = self.field(&f.field);
                format!(
                    "NOT COALESCE({x} = ANY({}::jsonb[]), false)",
                    self.param(Box::new(list.clone()))
                )
            }
            Test::Ne(v) => {
                let x = self.field(&f.field);
                format!(
                    "{x} IS DISTINCT FROM {}::jsonb",
                    self.param(Box::new(v.clone()))
                )
            }
            Test::Range(op, operand) => {
                let x = self.field(&f.field);
                let op = RangeOp::sql(*op);
                match operand {
                    Value::String(s) => {
                        let p = self.param(Box::new(s.clone()));
                        format!(
                            "(CASE WHEN jsonb_typeof({x}) = 'string' THEN ({x} #>> '{{}}') COLLATE \"C\" {op} {p}::text ELSE true END)"
                        )
                    }
                    _ => {
                        let p = self.param(Box::new(operand.clone()));
                        format!(
                            "(CASE WHEN jsonb_typeof({x}) = 'number' THEN {x} {op} {p}::jsonb ELSE true END)"
                        )
                    }
                }
            }
            Test::Never => "false".into(),
        };
        self.conds.push(cond);
    }

    fn order(&self) -> String {
        let mut terms = self.order.clone();
        terms.push("seq".into());
        terms.join(", ")
    }
}

impl EntityStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn save<'a>(&'a self, kind: &'a Kind, op: SaveOp) -> BoxFuture<'a, Result<Record, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let saved = match self.layout {
                PgLayout::Document => self.doc_save(client, kind, op).await,
                PgLayout::Columns => self.columns.save(self, client, kind, op).await,
            };
            lease.settle();
            saved
        })
    }

    fn list<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let listed = match self.layout {
                PgLayout::Document => self.doc_list(client, kind, q).await,
                PgLayout::Columns => self.columns.list(self, client, kind, q).await,
            };
            lease.settle();
            listed
        })
    }

    fn remove<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
        all: bool,
    ) -> BoxFuture<'a, Result<Option<Record>, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let removed = match self.layout {
                PgLayout::Document => self.doc_remove(client, kind, q, all).await,
                PgLayout::Columns => self.columns.remove(self, client, kind, q, all).await,
            };
            lease.settle();
            removed
        })
    }
}
