//! PostgreSQL layout `columns`: seneca-postgres-store's existing tables, one column per field.
//!
//! As seneca-postgres-store 2.4 (shared/ENTITY.md §9): table `base_name` (or `name`), which this
//! store never creates; one column per top-level field with the same name; an `id` column; no
//! zone. Writes cast each value from its text form to the column's type (objects as JSON text;
//! arrays as JSON into json/jsonb columns, else as a Postgres array literal, as node-postgres
//! does); a field with no column is `entity_invalid`. Reads return every column (null when unset)
//! via `row_to_json`, and a string that parses as a JSON object comes back as that object.
//! Differences from postgres-store: numeric/bigint columns come back as numbers (not strings),
//! equality is strict (`{n:'1'}` misses an int column), a field with no column is missing in
//! queries (postgres-store: an SQL error), and ids are 6 characters as everywhere (not uuids).
//!
//! Pushdown: exact SQL per column type (a value of the wrong type for the column matches nothing);
//! `sort$` per column type, NULLs greatest; `skip$`/`limit$`. The unsorted order is the physical
//! order (`ctid`), as postgres-store's: insertion order until rows are updated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Object;
use serde_json::Value;

use super::{Param, PgStore, ident, jsonb_sort, pg_error, sql_page};
use crate::data::DataError;
use crate::data::entity::query::{Filter, Query, RangeOp, Select, Test};
use crate::data::entity::{Kind, Record, SaveOp};
use crate::error::clip;

/// How a column's values read and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cat {
    /// Numeric types: JSON numbers.
    Number,
    /// boolean.
    Bool,
    /// text, varchar, char: JSON strings (or objects, when the text is a JSON object).
    Text,
    /// Other scalar types (uuid, dates…): JSON strings in `to_json`'s form.
    Textual,
    /// json and jsonb: any JSON.
    Json,
    /// Array types: JSON arrays.
    Array,
}

/// One column.
#[derive(Debug, Clone)]
struct Col {
    /// The quoted column name.
    sql: String,
    /// The column's type as `format_type` names it, for casts from text.
    ty: String,
    /// How its values read and compare.
    cat: Cat,
}

/// One table's description, read from the catalog.
#[derive(Debug)]
struct Table {
    /// The qualified, quoted table name.
    sql: String,
    /// The plain name (`base_name`), for messages.
    label: String,
    /// Its columns by field name.
    cols: HashMap<String, Col>,
}

/// The catalog of tables seen so far (re-read after an undefined table/column error).
#[derive(Debug, Default)]
pub(crate) struct Columns {
    /// Table descriptions by kind.
    tables: Mutex<HashMap<Kind, Arc<Table>>>,
}

/// A column value's text for a `$n::text::type` cast, or `None` for SQL NULL.
fn to_text(v: &Value, cat: Cat) -> Option<String> {
    match (v, cat) {
        (Value::Null, _) => None,
        (_, Cat::Json) => Some(v.to_string()),
        (Value::String(s), _) => Some(s.clone()),
        (Value::Array(items), _) => Some(array_literal(items)),
        (other, _) => Some(other.to_string()),
    }
}

/// A Postgres array literal as node-postgres writes one: every element quoted, NULL bare.
fn array_literal(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".into(),
            Value::Array(inner) => array_literal(inner),
            Value::String(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            other => format!(
                "\"{}\"",
                other.to_string().replace('\\', "\\\\").replace('"', "\\\"")
            ),
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// A row as a record: every column, strings holding a JSON object turned into that object.
fn read_row(text: &str) -> Result<Record, DataError> {
    let mut rec: Record = serde_json::from_str(text).map_err(|e| DataError::Failed {
        store: "postgres",
        reason: e.to_string(),
    })?;
    for v in rec.values_mut() {
        if let Value::String(s) = v
            && s.starts_with('{')
            && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(s)
        {
            *v = Value::Object(o);
        }
    }
    Ok(rec)
}

/// SQL for one query on one table.
struct Plan<'t> {
    /// The table.
    table: &'t Table,
    /// Conditions, ANDed.
    conds: Vec<String>,
    /// ORDER BY terms, before `ctid`.
    order: Vec<String>,
    /// Parameters `$1…`.
    params: Vec<Param>,
}

impl<'t> Plan<'t> {
    fn new(table: &'t Table) -> Self {
        Plan {
            table,
            conds: Vec::new(),
            order: Vec::new(),
            params: Vec::new(),
        }
    }

    fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }

    /// A value cast to a column's type: `$n::text::type`.
    fn cast(&mut self, v: &Value, col: &Col) -> String {
        let p = self.param(Box::new(to_text(v, col.cat)));
        format!("{p}::text::{}", col.ty)
    }

    /// Strict equality with a scalar, as SQL that is true, false or NULL (NULL = no match).
    fn eq(&mut self, field: &str, v: &Value) -> String {
        let Some(col) = self.table.cols.get(field).cloned() else {
            return "false".into();
        };
        let c = &col.sql;
        match (v, col.cat) {
            (Value::Null, _) => format!("{c} IS NULL"),
            (_, Cat::Json) => format!(
                "{c}::jsonb = {}::text::jsonb",
                self.param(Box::new(v.to_string()))
            ),
            (Value::Number(_), Cat::Number) | (Value::Bool(_), Cat::Bool) => {
                format!("{c} = {}", self.cast(v, &col))
            }
            // A text that is a JSON object reads back as an object: never equal to a string.
            (Value::String(s), Cat::Text)
                if matches!(serde_json::from_str(s), Ok(Value::Object(_))) =>
            {
                "false".into()
            }
            (Value::String(s), Cat::Text) => {
                format!("{c} = {}::text", self.param(Box::new(s.clone())))
            }
            (Value::String(s), Cat::Textual) => {
                format!(
                    "(to_json({c}) #>> '{{}}') = {}::text",
                    self.param(Box::new(s.clone()))
                )
            }
            _ => "false".into(),
        }
    }

    fn any(&mut self, field: &str, list: &[Value]) -> String {
        let terms: Vec<String> = list.iter().map(|v| self.eq(field, v)).collect();
        if terms.is_empty() {
            "false".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    fn range(&mut self, field: &str, op: RangeOp, operand: &Value) -> String {
        let Some(col) = self.table.cols.get(field).cloned() else {
            return "true".into();
        };
        let (c, op) = (&col.sql, op.sql());
        match (operand, col.cat) {
            (Value::Number(_), Cat::Number) => {
                format!("COALESCE({c} {op} {}, true)", self.cast(operand, &col))
            }
            (Value::String(s), Cat::Text) => {
                format!(
                    "COALESCE({c} COLLATE \"C\" {op} {}::text, true)",
                    self.param(Box::new(s.clone()))
                )
            }
            (Value::String(s), Cat::Textual) => {
                let p = self.param(Box::new(s.clone()));
                format!("COALESCE((to_json({c}) #>> '{{}}') COLLATE \"C\" {op} {p}::text, true)")
            }
            (Value::Number(_), Cat::Json) => {
                let p = self.param(Box::new(operand.to_string()));
                format!(
                    "(CASE WHEN jsonb_typeof({c}::jsonb) = 'number' THEN {c}::jsonb {op} {p}::text::jsonb ELSE true END)"
                )
            }
            (Value::String(s), Cat::Json) => {
                let p = self.param(Box::new(s.clone()));
                format!(
                    "(CASE WHEN jsonb_typeof({c}::jsonb) = 'string' THEN ({c}::jsonb #>> '{{}}') COLLATE \"C\" {op} {p}::text ELSE true END)"
                )
            }
            _ => "true".into(),
        }
    }

    fn filter(&mut self, f: &Filter) {
        let cond = match &f.test {
            Test::Eq(v) => self.eq(&f.field, v),
            Test::In(list) => self.any(&f.field, list),
            Test::Nin(list) => format!("NOT COALESCE({}, false)", self.any(&f.field, list)),
            Test::Ne(v) => format!("NOT COALESCE({}, false)", self.eq(&f.field, v)),
            Test::Range(op, operand) => self.range(&f.field, *op, operand),
            Test::Never => "false".into(),
        };
        self.conds.push(cond);
    }

    fn query(&mut self, q: &Query) {
        match &q.select {
            Select::Ids(ids) => {
                let terms: Vec<String> = ids.iter().map(|id| self.eq("id", id)).collect();
                let cases: Vec<String> = terms
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("WHEN {t} THEN {i}"))
                    .collect();
                self.conds.push(if terms.is_empty() {
                    "false".into()
                } else {
                    format!("({})", terms.join(" OR "))
                });
                if !cases.is_empty() {
                    self.order.push(format!("CASE {} END", cases.join(" ")));
                }
            }
            Select::Where(filters) => filters.iter().for_each(|f| self.filter(f)),
        }
        for k in &q.sort {
            let Some(col) = self.table.cols.get(&k.field) else {
                continue;
            };
            let (c, dir) = (&col.sql, if k.desc { "DESC" } else { "ASC" });
            let nulls = if k.desc { "NULLS FIRST" } else { "NULLS LAST" };
            self.order.push(match col.cat {
                Cat::Number | Cat::Bool => format!("{c} {dir} {nulls}"),
                Cat::Text => format!("{c} COLLATE \"C\" {dir} {nulls}"),
                Cat::Textual => format!("(to_json({c}) #>> '{{}}') COLLATE \"C\" {dir} {nulls}"),
                Cat::Array => format!("({c} IS NULL) {dir}"),
                Cat::Json => jsonb_sort(&format!("{c}::jsonb"), dir),
            });
        }
    }

    fn where_sql(&self) -> String {
        if self.conds.is_empty() {
            "true".into()
        } else {
            self.conds.join(" AND ")
        }
    }

    fn order_sql(&self) -> String {
        let mut terms = self.order.clone();
        terms.push("ctid".into());
        terms.join(", ")
    }
}

/// The row a save merges into.
enum Target {
    /// The row with this id (an update).
    Id(Value),
    /// The row at this physical address (the first upsert match, locked).
    Ctid(String),
}

impl Columns {
    /// The catalog, even if a panic poisoned its lock (it is only a cache).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Kind, Arc<Table>>> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The description of a kind's table, read from the catalog on first use.
    async fn table(
        &self,
        store: &PgStore,
        client: &Object,
        kind: &Kind,
    ) -> Result<Arc<Table>, DataError> {
        if let Some(t) = self.lock().get(kind) {
            return Ok(t.clone());
        }
        let label = if kind.base.is_empty() {
            kind.name.clone()
        } else {
            format!("{}_{}", kind.base, kind.name)
        };
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, t.typcategory::text
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
                 WHERE c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped
                   AND (n.nspname = $2 OR ($2 = '' AND pg_table_is_visible(c.oid)))",
                &[&label, &store.schema_name],
            )
            .await
            .map_err(pg_error)?;
        if rows.is_empty() {
            return Err(DataError::Failed {
                store: "postgres",
                reason: format!(
                    "table {} does not exist (layout=columns creates no tables)",
                    clip(&label)
                ),
            });
        }
        let cols = rows
            .iter()
            .map(|r| {
                let (name, ty, typname, cat): (String, String, String, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let cat = match (typname.as_str(), cat.as_str()) {
                    ("json" | "jsonb", _) => Cat::Json,
                    (_, "N") => Cat::Number,
                    (_, "B") => Cat::Bool,
                    (_, "S") => Cat::Text,
                    (_, "A") => Cat::Array,
                    _ => Cat::Textual,
                };
                (
                    name.clone(),
                    Col {
                        sql: ident(&name),
                        ty,
                        cat,
                    },
                )
            })
            .collect();
        let table = Arc::new(Table {
            sql: format!("{}{}", store.schema, ident(&label)),
            label,
            cols,
        });
        self.lock().insert(kind.clone(), table.clone());
        Ok(table)
    }

    /// Maps an error, forgetting the kind's table description when the schema changed under us.
    fn error(&self, kind: &Kind, e: tokio_postgres::Error) -> DataError {
        if matches!(e.code().map(|c| c.code()), Some("42703" | "42P01")) {
            self.lock().remove(kind);
        }
        pg_error(e)
    }

    /// [`EntityStore::list`](super::EntityStore::list) on the kind's table.
    pub(crate) async fn list(
        &self,
        store: &PgStore,
        client: &Object,
        kind: &Kind,
        q: &Query,
    ) -> Result<Vec<Record>, DataError> {
        let table = self.table(store, client, kind).await?;
        let mut plan = Plan::new(&table);
        plan.query(q);
        let sql = format!(
            "SELECT row_to_json(e)::text FROM {} e WHERE {} ORDER BY {}{}",
            table.sql,
            plan.where_sql(),
            plan.order_sql(),
            sql_page(q)
        );
        let rows = client
            .query(&sql, &plan.refs())
            .await
            .map_err(|e| self.error(kind, e))?;
        rows.iter().map(|r| read_row(r.get(0))).collect()
    }

    /// [`EntityStore::remove`](super::EntityStore::remove): one `DELETE … WHERE ctid IN (…)`.
    pub(crate) async fn remove(
        &self,
        store: &PgStore,
        client: &Object,
        kind: &Kind,
        q: &Query,
        all: bool,
    ) -> Result<Option<Record>, DataError> {
        let table = self.table(store, client, kind).await?;
        let mut q = q.clone();
        if !all {
            q.limit = Some(1);
        }
        let mut plan = Plan::new(&table);
        plan.query(&q);
        let t = &table.sql;
        let sql = format!(
            "DELETE FROM {t} e WHERE ctid IN (SELECT ctid FROM {t} WHERE {} ORDER BY {}{} FOR UPDATE)
             RETURNING row_to_json(e)::text",
            plan.where_sql(),
            plan.order_sql(),
            sql_page(&q)
        );
        let rows = client
            .query(&sql, &plan.refs())
            .await
            .map_err(|e| self.error(kind, e))?;
        match rows.first() {
            Some(row) if !all => Ok(Some(read_row(row.get(0))?)),
            _ => Ok(None),
        }
    }

    /// [`EntityStore::save`](super::EntityStore::save): UPDATE then INSERT, in one transaction.
    pub(crate) async fn save(
        &self,
        store: &PgStore,
        client: &mut Object,
        kind: &Kind,
        op: SaveOp,
    ) -> Result<Record, DataError> {
        let table = self.table(store, client, kind).await?;
        let (id, data, upsert, update) = match op {
            SaveOp::Create { id, data, upsert } => (id, data, upsert, false),
            SaveOp::Update { id, data } => (id, data, Vec::new(), true),
        };
        let cols: Vec<(Col, &Value)> = data
            .iter()
            .map(|(field, v)| match table.cols.get(field) {
                Some(col) => Ok((col.clone(), v)),
                None => Err(DataError::invalid(
                    &format!("ent.{field}"),
                    format!("table {} has no column {}", clip(&table.label), clip(field)),
                )),
            })
            .collect::<Result<_, _>>()?;
        let id_col = table
            .cols
            .get("id")
            .cloned()
            .ok_or_else(|| DataError::Failed {
                store: "postgres",
                reason: format!("table {} has no id column", clip(&table.label)),
            })?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let t = &table.sql;
        // The record to merge into: by id (update), or the first upsert match.
        let target: Option<Target> = if update {
            Some(Target::Id(id.clone()))
        } else if !upsert.is_empty() {
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&t])
                .await
                .map_err(pg_error)?;
            let q = Query::first(upsert);
            let mut plan = Plan::new(&table);
            plan.query(&q);
            let sql = format!(
                "SELECT ctid::text FROM {t} WHERE {} ORDER BY ctid LIMIT 1 FOR UPDATE",
                plan.where_sql()
            );
            let found = tx
                .query_opt(&sql, &plan.refs())
                .await
                .map_err(|e| self.error(kind, e))?;
            found.map(|row| Target::Ctid(row.get(0)))
        } else {
            None
        };
        let mut plan = Plan::new(&table);
        if let Some(target) = target {
            let cond = match target {
                Target::Ctid(ctid) => format!("ctid = {}::text::tid", plan.param(Box::new(ctid))),
                Target::Id(v) => plan.eq("id", &v),
            };
            let sets: Vec<String> = cols
                .iter()
                .map(|(col, v)| format!("{} = {}", col.sql, plan.cast(v, col)))
                .collect();
            let sql = if sets.is_empty() {
                format!("SELECT row_to_json(e)::text FROM {t} e WHERE {cond} LIMIT 1")
            } else {
                format!(
                    "UPDATE {t} e SET {} WHERE {cond} RETURNING row_to_json(e)::text",
                    sets.join(", ")
                )
            };
            let rows = tx
                .query(&sql, &plan.refs())
                .await
                .map_err(|e| self.error(kind, e))?;
            if let Some(row) = rows.first() {
                let rec = read_row(row.get(0))?;
                tx.commit().await.map_err(pg_error)?;
                return Ok(rec);
            }
            plan = Plan::new(&table);
        }
        // Insert: a create whose id is taken fails (checked first: the id column may not be unique).
        if !update {
            let cond = plan.eq("id", &id);
            let sql = format!("SELECT 1 FROM {t} WHERE {cond} LIMIT 1");
            if tx
                .query_opt(&sql, &plan.refs())
                .await
                .map_err(|e| self.error(kind, e))?
                .is_some()
            {
                return Err(DataError::IdExists {
                    canon: String::new(),
                    id,
                });
            }
            plan = Plan::new(&table);
        }
        let mut names = vec![id_col.sql.clone()];
        let mut values = vec![plan.cast(&id, &id_col)];
        for (col, v) in cols.iter().filter(|(col, _)| col.sql != id_col.sql) {
            names.push(col.sql.clone());
            values.push(plan.cast(v, col));
        }
        let sql = format!(
            "INSERT INTO {t} AS e ({}) VALUES ({}) RETURNING row_to_json(e)::text",
            names.join(", "),
            values.join(", ")
        );
        let row = match tx.query_one(&sql, &plan.refs()).await {
            Ok(row) => row,
            Err(e) if e.code().map(|c| c.code()) == Some("23505") && !update => {
                return Err(DataError::IdExists {
                    canon: String::new(),
                    id,
                });
            }
            Err(e) => return Err(self.error(kind, e)),
        };
        let rec = read_row(row.get(0))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_postgres_array_literals() {
        assert_eq!(
            array_literal(&[json!(1), json!("a\"b"), json!(null)]),
            r#"{"1","a\"b",NULL}"#
        );
        assert_eq!(array_literal(&[json!([1, 2])]), r#"{{"1","2"}}"#);
        assert_eq!(to_text(&json!([1, 2]), Cat::Json).as_deref(), Some("[1,2]"));
        assert_eq!(
            to_text(&json!({"a": 1}), Cat::Text).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(to_text(&json!(null), Cat::Json), None);
    }

    #[test]
    fn json_object_text_reads_as_object() {
        let rec =
            read_row(r#"{"id":"a","info":"{\"looks\":\"json\"}","s":"{nope","n":1.5}"#).unwrap();
        assert_eq!(
            Value::Object(rec),
            json!({"id": "a", "info": {"looks": "json"}, "s": "{nope", "n": 1.5})
        );
    }
}
