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

use deadpool_postgres::{Object, Transaction};
use serde_json::Value;

mod plan;

use super::{PgStore, ident, pg_error, sql_page};
use crate::data::DataError;
use crate::data::entity::query::{Filter, Query};
use crate::data::entity::{Kind, Record, SaveOp};
use crate::error::clip;
use plan::Plan;

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

/// A save's fields with the columns they go to.
type Assigned<'a> = Vec<(Col, &'a Value)>;

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
        let (cols, id_col) = table.columns_of(&data)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The record to merge into: by id (update), or the first upsert match.
        let target = if update {
            Some(Target::Id(id.clone()))
        } else if upsert.is_empty() {
            None
        } else {
            self.first_match(&tx, &table, kind, upsert).await?
        };
        if let Some(target) = target
            && let Some(rec) = self.merge(&tx, &table, kind, target, &cols).await?
        {
            tx.commit().await.map_err(pg_error)?;
            return Ok(rec);
        }
        // Insert: a create whose id is taken fails (checked first: the id column may not be unique).
        if !update && self.holds(&tx, &table, kind, &id).await? {
            return Err(DataError::IdExists {
                canon: String::new(),
                id,
            });
        }
        let rec = self
            .insert(&tx, &table, kind, &id, &id_col, &cols, update)
            .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(rec)
    }

    /// The first row an upsert's fields match, locked (one upsert at a time per table).
    async fn first_match(
        &self,
        tx: &Transaction<'_>,
        table: &Table,
        kind: &Kind,
        upsert: Vec<Filter>,
    ) -> Result<Option<Target>, DataError> {
        let t = &table.sql;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&t])
            .await
            .map_err(pg_error)?;
        let mut plan = Plan::new(table);
        plan.query(&Query::first(upsert));
        let sql = format!(
            "SELECT ctid::text FROM {t} WHERE {} ORDER BY ctid LIMIT 1 FOR UPDATE",
            plan.where_sql()
        );
        let found = tx
            .query_opt(&sql, &plan.refs())
            .await
            .map_err(|e| self.error(kind, e))?;
        Ok(found.map(|row| Target::Ctid(row.get(0))))
    }

    /// Writes `cols` into the target row; its record, or `None` when there is no such row.
    async fn merge(
        &self,
        tx: &Transaction<'_>,
        table: &Table,
        kind: &Kind,
        target: Target,
        cols: &[(Col, &Value)],
    ) -> Result<Option<Record>, DataError> {
        let t = &table.sql;
        let mut plan = Plan::new(table);
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
        rows.first().map(|row| read_row(row.get(0))).transpose()
    }

    /// Whether a row with `id` exists.
    async fn holds(
        &self,
        tx: &Transaction<'_>,
        table: &Table,
        kind: &Kind,
        id: &Value,
    ) -> Result<bool, DataError> {
        let mut plan = Plan::new(table);
        let cond = plan.eq("id", id);
        let sql = format!("SELECT 1 FROM {} WHERE {cond} LIMIT 1", table.sql);
        let found = tx
            .query_opt(&sql, &plan.refs())
            .await
            .map_err(|e| self.error(kind, e))?;
        Ok(found.is_some())
    }

    /// Inserts the record; a unique `id` column that refuses it is `IdExists` for a create.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        tx: &Transaction<'_>,
        table: &Table,
        kind: &Kind,
        id: &Value,
        id_col: &Col,
        cols: &[(Col, &Value)],
        update: bool,
    ) -> Result<Record, DataError> {
        let mut plan = Plan::new(table);
        let mut names = vec![id_col.sql.clone()];
        let mut values = vec![plan.cast(id, id_col)];
        for (col, v) in cols.iter().filter(|(col, _)| col.sql != id_col.sql) {
            names.push(col.sql.clone());
            values.push(plan.cast(v, col));
        }
        let sql = format!(
            "INSERT INTO {} AS e ({}) VALUES ({}) RETURNING row_to_json(e)::text",
            table.sql,
            names.join(", "),
            values.join(", ")
        );
        match tx.query_one(&sql, &plan.refs()).await {
            Ok(row) => read_row(row.get(0)),
            Err(e) if e.code().map(|c| c.code()) == Some("23505") && !update => {
                Err(DataError::IdExists {
                    canon: String::new(),
                    id: id.clone(),
                })
            }
            Err(e) => Err(self.error(kind, e)),
        }
    }
}

impl Table {
    /// The columns `data`'s fields go to (each must exist), and the id column.
    fn columns_of<'a>(&self, data: &'a Record) -> Result<(Assigned<'a>, Col), DataError> {
        let cols = data
            .iter()
            .map(|(field, v)| match self.cols.get(field) {
                Some(col) => Ok((col.clone(), v)),
                None => Err(DataError::invalid(
                    &format!("ent.{field}"),
                    format!("table {} has no column {}", clip(&self.label), clip(field)),
                )),
            })
            .collect::<Result<_, _>>()?;
        let id_col = self
            .cols
            .get("id")
            .cloned()
            .ok_or_else(|| DataError::Failed {
                store: "postgres",
                reason: format!("table {} has no id column", clip(&self.label)),
            })?;
        Ok((cols, id_col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
