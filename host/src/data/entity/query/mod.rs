//! Pure query semantics shared by every store: parse `q`, match records, sort, page, project.
//!
//! The reference is seneca-mem-store 9.4 (shared/ENTITY.md §4), with the recommended fixes:
//! `sort$` honours every key, missing/null sort as the greatest value, `limit$:0` means no limit.
//! Operators accept both spellings (`$gt` as mem-store, `gt$` as postgres-store). Where JS's
//! loose rules had to be pinned down (the same on every store):
//! - equality is `===`: number ≠ string, `null` matches a stored null but not a missing field,
//!   and an object or array is never equal to anything (JS compares them by reference);
//! - `$ne` is strict too (mem-store uses `==`, so `{$ne:"1"}` there also excludes the number 1);
//! - range operators compare numbers with numbers and strings with strings (by code point); any
//!   other pair — a missing field, a string against a number, null, a boolean — passes, as JS's
//!   comparisons with `undefined`/`NaN` do;
//! - sorting orders types number < string < boolean < array < object < null/missing, arrays and
//!   objects tie among themselves, and ties keep insertion order.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use crate::data::DataError;

/// The most values one query may hold (ids, `$in`/`$nin` items, filters, sort keys, fields).
/// Every store answers the same past it (`entity_invalid`, 400) rather than each failing its own
/// way: PostgreSQL takes at most 65,535 parameters in a statement (it answered 503, as if a
/// retry could help), SQLite 32,766.
pub const MAX_QUERY_VALUES: usize = 10_000;

/// One stored entity: its data fields plus `id` (never `entity$`).
pub type Record = Map<String, Value>;

/// A parsed `q`: which records, in which order, which page, which fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// The selection: ids in a given order, or conditions.
    pub select: Select,
    /// `sort$`, every key in order; empty keeps insertion order.
    pub sort: Vec<SortKey>,
    /// `skip$`: records dropped from the front after sorting.
    pub skip: usize,
    /// `limit$`: at most this many records; `None` is no limit (`limit$:0` included).
    pub limit: Option<usize>,
    /// `fields$`: keep only `id` and these fields in the reply.
    pub fields: Option<Vec<String>>,
}

/// Which records a query selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `q` was an array: these ids, in this order, misses skipped (E25).
    Ids(Vec<Value>),
    /// `q` was an object: every filter must hold (AND). Empty selects everything.
    Where(Vec<Filter>),
}

impl Default for Select {
    fn default() -> Self {
        Select::Where(Vec::new())
    }
}

/// One condition on one top-level field.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The field name (`id` included).
    pub field: String,
    /// What its value must satisfy.
    pub test: Test,
}

/// A condition on a field's value. Operands are always scalars (string, number, bool, null):
/// non-scalar operands are resolved at parse time (they can never be `===` to anything).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Present and `===` the operand (`{f: v}`, `eq$`).
    Eq(Value),
    /// Present and `===` one of them (`{f: [..]}`, `$in`); never empty.
    In(Vec<Value>),
    /// Missing, or `===` none of them (`$nin`).
    Nin(Vec<Value>),
    /// Missing, or not `===` the operand (`$ne`).
    Ne(Value),
    /// Compared with a number or string operand; values of another type pass.
    Range(RangeOp, Value),
    /// Nothing matches (an empty IN list, `eq$` with an object).
    Never,
}

/// A range operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    /// `$gt`/`gt$`: greater than.
    Gt,
    /// `$gte`/`gte$`: greater than or equal.
    Gte,
    /// `$lt`/`lt$`: less than.
    Lt,
    /// `$lte`/`lte$`: less than or equal.
    Lte,
}

impl RangeOp {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            RangeOp::Gt => ">",
            RangeOp::Gte => ">=",
            RangeOp::Lt => "<",
            RangeOp::Lte => "<=",
        }
    }

    /// Whether `ord` (value compared with operand) satisfies the operator.
    pub fn holds(self, ord: Ordering) -> bool {
        match self {
            RangeOp::Gt => ord == Ordering::Greater,
            RangeOp::Gte => ord != Ordering::Less,
            RangeOp::Lt => ord == Ordering::Less,
            RangeOp::Lte => ord != Ordering::Greater,
        }
    }
}

/// One `sort$` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field sorted on.
    pub field: String,
    /// Descending (`sort$` value < 0).
    pub desc: bool,
}

/// Whether a value can be `===` something: string, number, boolean or null.
pub fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

impl Query {
    /// Parses `q` as the stores receive it: `null`/absent (everything), an array (ids), a string
    /// or number (that id), or an object of filters and `$` directives (unknown ones ignored).
    pub fn parse(q: Option<&Value>) -> Result<Query, DataError> {
        let obj = match q {
            None | Some(Value::Null) => return Ok(Query::default()),
            Some(Value::Array(ids)) => {
                bounded("q", ids.len())?;
                let ids = ids
                    .iter()
                    .filter(|v| matches!(v, Value::String(_) | Value::Number(_)));
                return Ok(Query {
                    select: Select::Ids(ids.cloned().collect()),
                    ..Query::default()
                });
            }
            Some(id @ (Value::String(_) | Value::Number(_))) => {
                let test = Test::Eq(id.clone());
                let select = Select::Where(vec![Filter {
                    field: "id".into(),
                    test,
                }]);
                return Ok(Query {
                    select,
                    ..Query::default()
                });
            }
            Some(Value::Object(obj)) => obj,
            Some(_) => {
                return Err(DataError::invalid(
                    "q",
                    "must be an object, an array of ids or an id",
                ));
            }
        };
        let mut query = Query::default();
        let mut filters = Vec::new();
        for (key, v) in obj {
            if !key.contains('$') {
                parse_filter(key, v, &mut filters)?;
                continue;
            }
            match key.as_str() {
                "sort$" => query.sort = parse_sort(v)?,
                "skip$" => query.skip = count(v, "skip$")?.unwrap_or(0),
                "limit$" => query.limit = count(v, "limit$")?.filter(|n| *n > 0),
                "fields$" => query.fields = parse_fields(v)?,
                _ => {} // all$, load$, upsert$, native$…: not filters
            }
        }
        let values: usize = filters.iter().map(|f| f.test.size()).sum::<usize>()
            + query.sort.len()
            + query.fields.as_ref().map_or(0, Vec::len);
        bounded("q", values)?;
        query.select = Select::Where(filters);
        Ok(query)
    }

    /// The first record (insertion order) matching every filter: how upsert finds its target.
    pub fn first(filters: Vec<Filter>) -> Query {
        Query {
            select: Select::Where(filters),
            limit: Some(1),
            ..Query::default()
        }
    }

    /// The id of a query that is a lone `id` equality and no sort (the load-by-id path).
    pub fn lone_id(&self) -> Option<&Value> {
        match (self.filters(), self.sort.is_empty()) {
            (
                [
                    Filter {
                        field,
                        test: Test::Eq(id),
                    },
                ],
                true,
            ) if field == "id" => Some(id),
            _ => None,
        }
    }

    /// The filters, or none for an id list.
    pub fn filters(&self) -> &[Filter] {
        match &self.select {
            Select::Where(f) => f,
            Select::Ids(_) => &[],
        }
    }

    /// Runs the whole pipeline over records in insertion order: filter, sort, skip, limit.
    /// (Used as is by the memory store, and by SQL stores for what SQL could not do.)
    pub fn run(&self, records: impl Iterator<Item = Record>) -> Vec<Record> {
        let filters = self.filters();
        let mut out: Vec<Record> = records.filter(|r| matches(r, filters)).collect();
        sort_records(&mut out, &self.sort);
        page(out, self.skip, self.limit)
    }
}

/// Refuses a query of more than [`MAX_QUERY_VALUES`] values.
fn bounded(field: &str, values: usize) -> Result<(), DataError> {
    if values > MAX_QUERY_VALUES {
        return Err(DataError::invalid(
            field,
            format!(
                "holds {values} values (ids, $in/$nin items, filters); at most \
                 {MAX_QUERY_VALUES} fit in one query: split it"
            ),
        ));
    }
    Ok(())
}

impl Test {
    /// How many values the condition holds (one per list item).
    fn size(&self) -> usize {
        match self {
            Test::In(v) | Test::Nin(v) => v.len().max(1),
            _ => 1,
        }
    }
}

/// Adds the filters for one non-directive key of `q`.
fn parse_filter(field: &str, v: &Value, out: &mut Vec<Filter>) -> Result<(), DataError> {
    let mut push = |test| {
        out.push(Filter {
            field: field.to_string(),
            test,
        })
    };
    match v {
        Value::Array(items) => push(in_list(items, Test::In)),
        Value::Object(ops) => {
            for (op, operand) in ops {
                let name = op.trim_start_matches('$').trim_end_matches('$');
                if !(op.starts_with('$') || op.ends_with('$')) {
                    continue; // nested equality is not supported: it matches everything (E30)
                }
                let range = |r| match operand {
                    Value::Number(_) | Value::String(_) => Some(Test::Range(r, operand.clone())),
                    _ => None, // mem-store ignores null operands; others compare as NaN
                };
                let list = |make: fn(Vec<Value>) -> Test| match operand {
                    Value::Null => Ok(None),
                    Value::Array(items) => Ok(Some(in_list(items, make))),
                    _ => Err(DataError::invalid(
                        &format!("q.{field}.{op}"),
                        "must be an array",
                    )),
                };
                let test = match name {
                    "eq" if is_scalar(operand) => Some(Test::Eq(operand.clone())),
                    "eq" => Some(Test::Never),
                    "ne" if operand.is_null() || !is_scalar(operand) => None,
                    "ne" => Some(Test::Ne(operand.clone())),
                    "gt" => range(RangeOp::Gt),
                    "gte" => range(RangeOp::Gte),
                    "lt" => range(RangeOp::Lt),
                    "lte" => range(RangeOp::Lte),
                    "in" => list(Test::In)?,
                    "nin" => list(Test::Nin)?,
                    _ => None, // unknown operators are ignored (E29)
                };
                if let Some(test) = test {
                    push(test);
                }
            }
        }
        scalar => push(Test::Eq(scalar.clone())),
    }
    Ok(())
}

/// An IN/NIN list of its scalar items (objects and arrays can never be `===`).
fn in_list(items: &[Value], make: fn(Vec<Value>) -> Test) -> Test {
    let scalars: Vec<Value> = items.iter().filter(|v| is_scalar(v)).cloned().collect();
    match make(scalars) {
        Test::In(v) if v.is_empty() => Test::Never,
        t => t,
    }
}

/// `sort$`: an object of `field: 1|-1` (a value < 0 is descending), every key in order.
fn parse_sort(v: &Value) -> Result<Vec<SortKey>, DataError> {
    let Value::Object(keys) = v else {
        return match v {
            Value::Null => Ok(Vec::new()),
            _ => Err(DataError::invalid(
                "sort$",
                "must be an object like {\"field\": -1}",
            )),
        };
    };
    keys.iter()
        .map(|(field, dir)| {
            let n = match dir {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            let n =
                n.ok_or_else(|| DataError::invalid(&format!("sort$.{field}"), "must be 1 or -1"))?;
            Ok(SortKey {
                field: field.clone(),
                desc: n < 0.0,
            })
        })
        .collect()
}

/// `skip$`/`limit$`: a non-negative count (numeric strings accepted, fractions floored);
/// null or a negative number is absent.
fn count(v: &Value, name: &str) -> Result<Option<usize>, DataError> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let n = n.ok_or_else(|| DataError::invalid(name, "must be a number"))?;
    // The float-to-int cast saturates, so a huge count is simply "everything".
    Ok((n >= 0.0).then(|| n.floor() as usize))
}

/// `fields$`: an array of field names (non-strings ignored).
fn parse_fields(v: &Value) -> Result<Option<Vec<String>>, DataError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => Ok(Some(
            items
                .iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect(),
        )),
        _ => Err(DataError::invalid(
            "fields$",
            "must be an array of field names",
        )),
    }
}

/// Orders two JSON numbers exactly when both are integers, else as f64.
pub fn num_cmp(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// JavaScript's `===` on JSON values: scalars by value (1 === 1.0), objects and arrays never.
pub fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Ordering::Equal,
        _ => false,
    }
}

/// Whether one value passes one test (`None` = the field is missing).
pub fn test_value(test: &Test, v: Option<&Value>) -> bool {
    let eq = |q: &Value| v.is_some_and(|v| strict_eq(v, q));
    match test {
        Test::Eq(q) => eq(q),
        Test::In(list) => list.iter().any(eq),
        Test::Nin(list) => !list.iter().any(eq),
        Test::Ne(q) => !eq(q),
        Test::Range(op, operand) => match (v, operand) {
            (Some(Value::Number(x)), Value::Number(y)) => op.holds(num_cmp(x, y)),
            (Some(Value::String(x)), Value::String(y)) => op.holds(x.as_str().cmp(y)),
            _ => true,
        },
        Test::Never => false,
    }
}

/// Whether a record passes every filter.
pub fn matches(record: &Record, filters: &[Filter]) -> bool {
    filters
        .iter()
        .all(|f| test_value(&f.test, record.get(&f.field)))
}

/// The sort rank of a value's type: number < string < boolean < array < object < null/missing.
pub fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        Some(Value::Number(_)) => 0,
        Some(Value::String(_)) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Array(_)) => 3,
        Some(Value::Object(_)) => 4,
        Some(Value::Null) | None => 5,
    }
}

/// Ascending order of two field values (missing/null greatest; arrays and objects tie).
pub fn sort_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => num_cmp(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Sorts records stably on every key in order.
pub fn sort_records(records: &mut [Record], keys: &[SortKey]) {
    sort_by_record(records, |r| r, keys);
}

/// Sorts items that carry a record (e.g. with a sequence number) stably on every key in order.
pub fn sort_by_record<T>(items: &mut [T], record: impl Fn(&T) -> &Record, keys: &[SortKey]) {
    if keys.is_empty() {
        return;
    }
    items.sort_by(|a, b| {
        let (a, b) = (record(a), record(b));
        keys.iter()
            .map(|k| {
                let o = sort_cmp(a.get(&k.field), b.get(&k.field));
                if k.desc { o.reverse() } else { o }
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

/// Applies `skip$` then `limit$`.
pub fn page<T>(mut items: Vec<T>, skip: usize, limit: Option<usize>) -> Vec<T> {
    if skip > 0 {
        items.drain(..skip.min(items.len()));
    }
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    items
}

/// Applies `fields$`: keeps `id` and the listed fields.
pub fn project(mut record: Record, fields: &[String]) -> Record {
    record.retain(|k, _| k == "id" || fields.iter().any(|f| f == k));
    record
}

#[cfg(test)]
mod tests;
