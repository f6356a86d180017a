//! SQL for one query on one seneca-postgres-store table: conditions, order and paging on its
//! columns, with values cast from text as node-postgres sends them.

use serde_json::Value;

use super::super::{Param, jsonb_sort};
use super::{Cat, Col, Table};
use crate::data::entity::query::{Filter, Query, RangeOp, Select, Test};

/// A column value's text for a `$n::text::type` cast, or `None` for SQL NULL.
pub(super) fn to_text(v: &Value, cat: Cat) -> Option<String> {
    match (v, cat) {
        (Value::Null, _) => None,
        (_, Cat::Json) => Some(v.to_string()),
        (Value::String(s), _) => Some(s.clone()),
        (Value::Array(items), _) => Some(array_literal(items)),
        (other, _) => Some(other.to_string()),
    }
}

/// A Postgres array literal as node-postgres writes one: every element quoted, NULL bare.
pub(super) fn array_literal(items: &[Value]) -> String {
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

/// SQL for one query on one table.
pub(super) struct Plan<'t> {
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
    pub(super) fn new(table: &'t Table) -> Self {
        Plan {
            table,
            conds: Vec::new(),
            order: Vec::new(),
            params: Vec::new(),
        }
    }

    pub(super) fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    pub(super) fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }

    /// A value cast to a column's type: `$n::text::type`.
    pub(super) fn cast(&mut self, v: &Value, col: &Col) -> String {
        let p = self.param(Box::new(to_text(v, col.cat)));
        format!("{p}::text::{}", col.ty)
    }

    /// Strict equality with a scalar, as SQL that is true, false or NULL (NULL = no match).
    pub(super) fn eq(&mut self, field: &str, v: &Value) -> String {
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

    pub(super) fn any(&mut self, field: &str, list: &[Value]) -> String {
        let terms: Vec<String> = list.iter().map(|v| self.eq(field, v)).collect();
        if terms.is_empty() {
            "false".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    pub(super) fn range(&mut self, field: &str, op: RangeOp, operand: &Value) -> String {
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

    pub(super) fn filter(&mut self, f: &Filter) {
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

    pub(super) fn query(&mut self, q: &Query) {
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

    pub(super) fn where_sql(&self) -> String {
        if self.conds.is_empty() {
            "true".into()
        } else {
            self.conds.join(" AND ")
        }
    }

    pub(super) fn order_sql(&self) -> String {
        let mut terms = self.order.clone();
        terms.push("ctid".into());
        terms.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    pub(super) fn node_postgres_array_literals() {
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
}
