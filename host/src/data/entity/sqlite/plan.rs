//! The SQL the SQLite store's writer and readers share: finding a kind's table, reading rows,
//! ids and numbers as SQL values, and WHERE conditions planned from a query's filters.

use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use serde_json::{Number, Value};

use crate::data::DataError;
use crate::data::entity::query::{self, Query, RangeOp, Select, Test};
use crate::data::entity::{Kind, Record};

/// The table number of `kind` in the catalog, if it has one.
pub(super) fn find_table(conn: &Connection, kind: &Kind) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT tbl FROM wasmeca_kind WHERE base = ?1 AND name = ?2")?
        .query_row((kind.base.as_str(), kind.name.as_str()), |r| r.get(0))
        .optional()
}

/// The rows of table `t` with these ids, in their order, misses skipped: SQL errors outside,
/// a record that does not read inside.
pub(super) fn rows_by_id(
    conn: &Connection,
    t: i64,
    ids: &[Value],
) -> rusqlite::Result<Result<Vec<(i64, Record)>, DataError>> {
    let sql = format!("SELECT seq, id, data FROM wasmeca_e{t} WHERE id = ?1");
    let mut st = conn.prepare_cached(&sql)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match st.query_row([id_param(id)], read_row).optional()? {
            Some(Ok(row)) => out.push(row),
            Some(Err(e)) => return Ok(Err(e)),
            None => {}
        }
    }
    Ok(Ok(out))
}

/// The ids a query looks up through the unique index: an id list, or a lone scalar `id`
/// equality (the load-by-id path).
pub(super) fn id_lookup(q: &Query) -> Option<&[Value]> {
    match &q.select {
        Select::Ids(ids) => Some(ids.as_slice()),
        Select::Where(_) => q
            .lone_id()
            .filter(|id| !id.is_null() && query::is_scalar(id))
            .map(std::slice::from_ref),
    }
}

/// Reads `(seq, id, data)` into a record.
pub(super) fn read_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<(i64, Record), DataError>> {
    let seq: i64 = row.get(0)?;
    let id = match row.get_ref(1)? {
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        _ => Value::Null,
    };
    let data = row.get_ref(2)?.as_str()?;
    Ok(serde_json::from_str::<Record>(data)
        .map_err(failed)
        .map(|mut rec| {
            rec.insert("id".into(), id);
            (seq, rec)
        }))
}

/// An id as an SQL value of its own storage class.
pub(super) fn id_param(id: &Value) -> Sql {
    match id {
        Value::String(s) => Sql::Text(s.clone()),
        Value::Number(n) => num_param(n),
        _ => Sql::Null,
    }
}

pub(super) fn num_param(n: &Number) -> Sql {
    match n.as_i64() {
        Some(i) => Sql::Integer(i),
        None => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Where a field lives in a table.
pub(super) enum Field {
    /// The `id` column.
    Id,
    /// A JSON path literal into `data`, e.g. `'$."price"'`.
    Data(String),
}

impl Field {
    /// The field, or `None` when its name cannot be a JSON path literal (filtered in Rust).
    pub(super) fn of(name: &str) -> Option<Field> {
        if name == "id" {
            return Some(Field::Id);
        }
        let plain = !name.is_empty()
            && !name
                .chars()
                .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control());
        plain.then(|| Field::Data(format!("'$.\"{name}\"'")))
    }

    /// The SQL expression naming the value's JSON type (`json_type` names; NULL when missing).
    pub(super) fn ty(&self) -> String {
        match self {
            Field::Id => "typeof(id)".into(),
            Field::Data(p) => format!("json_type(data, {p})"),
        }
    }

    /// The SQL expression of the value (numbers, text, 1/0 for booleans).
    pub(super) fn val(&self) -> String {
        match self {
            Field::Id => "id".into(),
            Field::Data(p) => format!("json_extract(data, {p})"),
        }
    }
}

/// WHERE conditions and their parameters, built from filters.
#[derive(Default)]
pub(super) struct Plan {
    /// SQL conditions, ANDed.
    pub(super) conds: Vec<String>,
    /// Positional parameters, in order of their `?`.
    pub(super) params: Vec<Sql>,
}

impl Plan {
    /// A strict-equality condition (true/false/NULL; NULL only when the field is missing).
    pub(super) fn eq(&mut self, f: &Field, v: &Value) -> String {
        let (ty, val) = (f.ty(), f.val());
        match v {
            Value::String(s) => {
                self.params.push(Sql::Text(s.clone()));
                format!("({val} = ? AND {ty} = 'text')")
            }
            Value::Number(n) => {
                self.params.push(num_param(n));
                format!("({val} = ? AND {ty} IN ('integer','real'))")
            }
            Value::Bool(b) => format!("({val} = {} AND {ty} = '{b}')", u8::from(*b)),
            Value::Null => format!("({val} IS NULL AND {ty} = 'null')"),
            _ => "0".into(),
        }
    }

    /// Strict equality with any of `list`: the strings in one `IN`, the numbers in another
    /// (an `OR` per value would pass SQLite's expression depth of 1,000 long before a query's
    /// bound of values), booleans and null one term each.
    pub(super) fn any(&mut self, f: &Field, list: &[Value]) -> String {
        let (ty, val) = (f.ty(), f.val());
        let mut terms = Vec::new();
        let texts: Vec<Sql> = list
            .iter()
            .filter_map(|v| v.as_str().map(|s| Sql::Text(s.to_owned())))
            .collect();
        let numbers: Vec<Sql> = list
            .iter()
            .filter_map(|v| v.as_number().map(num_param))
            .collect();
        for (values, types) in [(texts, "= 'text'"), (numbers, "IN ('integer','real')")] {
            if values.is_empty() {
                continue;
            }
            let marks = vec!["?"; values.len()].join(",");
            self.params.extend(values);
            terms.push(format!("({val} IN ({marks}) AND {ty} {types})"));
        }
        for other in list.iter().filter(|v| v.is_boolean() || v.is_null()) {
            terms.push(self.eq(f, other));
        }
        if terms.is_empty() {
            "0".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    pub(super) fn filter(&mut self, f: &Field, test: &Test) {
        let cond = match test {
            Test::Eq(v) => self.eq(f, v),
            Test::In(list) => self.any(f, list),
            Test::Nin(list) => format!("NOT COALESCE({}, 0)", self.any(f, list)),
            Test::Ne(v) => format!("NOT COALESCE({}, 0)", self.eq(f, v)),
            Test::Range(op, operand) => {
                let types = match operand {
                    Value::Number(n) => {
                        self.params.push(num_param(n));
                        "'integer','real'"
                    }
                    Value::String(s) => {
                        self.params.push(Sql::Text(s.clone()));
                        "'text'"
                    }
                    _ => return,
                };
                let (ty, val, op) = (f.ty(), f.val(), RangeOp::sql(*op));
                format!("(CASE WHEN {ty} IN ({types}) THEN {val} {op} ? ELSE 1 END)")
            }
            Test::Never => "0".into(),
        };
        self.conds.push(cond);
    }
}

/// A `store_failed` error with a clipped reason.
pub(super) fn failed(e: impl std::fmt::Display) -> DataError {
    DataError::Failed {
        store: "sqlite",
        reason: crate::error::clip(&e.to_string()).into_owned(),
    }
}

/// A driver error: busy/locked (after the busy timeout) is `store_unavailable`.
pub(super) fn sql_error(e: rusqlite::Error) -> DataError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DataError::Unavailable {
            store: "sqlite",
            reason: crate::error::clip(&e.to_string()).into_owned(),
        },
        _ => failed(e),
    }
}
