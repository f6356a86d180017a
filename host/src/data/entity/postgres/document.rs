//! The PostgreSQL store's `document` layout (the default): one jsonb document table per
//! database (or `?schema=`), created on first use.
//!
//! The table: `wasmeca_entity(base text, name text, id jsonb, seq bigserial, data jsonb,
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

use deadpool_postgres::{GenericClient, Object};
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;

use super::{Param, PgStore, jsonb_sort, pg_error, sql_page};
use crate::data::DataError;
use crate::data::entity::memory::with_id;
use crate::data::entity::query::{Filter, Query, RangeOp, Select, Test};
use crate::data::entity::{Kind, Record, SaveOp};

impl PgStore {
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

    pub(super) async fn doc_save(
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

    pub(super) async fn doc_list(
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

    pub(super) async fn doc_remove(
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
