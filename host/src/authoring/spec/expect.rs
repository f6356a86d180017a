//! What a message spec expects, held against what a call answered: back references to earlier
//! calls (`` `name:out.id` ``) filled in, and seneca-msg-test's match — partial, literal and
//! type-exact — with every difference named by its path. Pure, no I/O.

use std::fmt;

use serde_json::{Map, Value};

/// One place where an answer differs from what the spec expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Where, from the answer's root: `out.user.name`, `out[1].id`, `err.code`.
    pub path: String,
    /// What the spec expects there.
    pub expected: Value,
    /// What the answer has there; `None` when the key or item is missing.
    pub got: Option<Value>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.got {
            None => write!(
                f,
                "{}: expected {}, missing",
                self.path,
                shown(&self.expected)
            ),
            Some(got) => write!(
                f,
                "{}: expected {}, got {}",
                self.path,
                shown(&self.expected),
                shown(got)
            ),
        }
    }
}

/// A value for a difference line: its JSON, with its type when a same-looking value of another
/// type would otherwise read the same (`1` against `"1"`).
fn shown(value: &Value) -> String {
    let text = crate::error::clip(&value.to_string()).into_owned();
    match value {
        Value::Object(_) | Value::Array(_) => text,
        _ => format!("{text} ({})", crate::message::json_kind(value)),
    }
}

/// Holds `got` against `expected` as seneca-msg-test does (optioner with
/// `must_match_literals`): every key of an expected object must be in the answer and match,
/// extra keys in the answer are fine; an expected array matches by index (extra items are fine,
/// as extra keys are); a literal must be equal and of the same JSON type (`1` is not `"1"`;
/// `1` and `1.0` are the same number). Returns every difference, under `root`.
pub fn differences(root: &str, expected: &Value, got: &Value) -> Vec<Difference> {
    let mut found = Vec::new();
    walk(root.to_owned(), expected, Some(got), &mut found);
    found
}

fn walk(path: String, expected: &Value, got: Option<&Value>, found: &mut Vec<Difference>) {
    let differ = |found: &mut Vec<Difference>| {
        found.push(Difference {
            path: path.clone(),
            expected: expected.clone(),
            got: got.cloned(),
        });
    };
    match (expected, got) {
        (_, None) => differ(found),
        (Value::Object(want), Some(Value::Object(have))) => {
            for (key, value) in want {
                walk(key_path(&path, key), value, have.get(key), found);
            }
        }
        (Value::Array(want), Some(Value::Array(have))) => {
            for (i, value) in want.iter().enumerate() {
                walk(format!("{path}[{i}]"), value, have.get(i), found);
            }
        }
        (Value::Number(want), Some(Value::Number(have))) => {
            if want.as_f64() != have.as_f64() {
                differ(found);
            }
        }
        (want, Some(have)) => {
            if want != have {
                differ(found);
            }
        }
    }
}

/// `path.key`, or `path["odd key"]` when the key is not a plain name.
fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_owned()))
    }
}

/// A back reference that cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// No earlier call has this name.
    #[error("`{reference}` names no earlier call (named calls so far: {known})")]
    NoCall {
        /// The reference as written.
        reference: String,
        /// The names that exist, so a typo shows.
        known: String,
    },
    /// The call is there, but not the path in its record.
    #[error("`{reference}`: the call has nothing at `{path}`")]
    NoValue {
        /// The reference as written.
        reference: String,
        /// The path that led nowhere.
        path: String,
    },
    /// A reference that is not `name:path`.
    #[error(
        "`{0}` is not a reference: write `name:out.id` (a call's name, then a path into its `out`, `err`, `msg` or `params`)"
    )]
    Malformed(String),
}

/// Fills in the back references in `value`: a string that is one `` `name:path` `` becomes the
/// value there (of whatever type); references inside a longer string are written into it (a
/// string as itself, anything else as JSON). `calls` holds each named earlier call's record.
pub fn resolve(value: &Value, calls: &Map<String, Value>) -> Result<Value, ReferenceError> {
    Ok(match value {
        Value::String(text) if text.contains('`') => fill(text, calls)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, calls))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, calls)?)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn fill(text: &str, calls: &Map<String, Value>) -> Result<Value, ReferenceError> {
    let parts: Vec<&str> = text.split('`').collect();
    // An even number of parts means an unclosed backtick: plain text, as inks leaves it.
    if parts.len().is_multiple_of(2) {
        return Ok(Value::String(text.to_owned()));
    }
    if let [before, reference, after] = parts.as_slice()
        && before.is_empty()
        && after.is_empty()
    {
        return lookup(reference, calls).cloned();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            match lookup(part, calls)? {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
    }
    Ok(Value::String(out))
}

/// The value a `name:path` reference points at.
fn lookup<'a>(reference: &str, calls: &'a Map<String, Value>) -> Result<&'a Value, ReferenceError> {
    let (name, path) = reference
        .split_once(':')
        .ok_or_else(|| ReferenceError::Malformed(reference.to_owned()))?;
    let call = calls
        .get(name.trim())
        .ok_or_else(|| ReferenceError::NoCall {
            reference: reference.to_owned(),
            known: if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
    let no_value = || ReferenceError::NoValue {
        reference: reference.to_owned(),
        path: path.to_owned(),
    };
    let mut at = call;
    for step in steps(path).ok_or_else(|| ReferenceError::Malformed(reference.to_owned()))? {
        at = match step {
            Step::Key(key) => at.get(key),
            Step::Index(i) => at.get(i),
        }
        .ok_or_else(no_value)?;
    }
    Ok(at)
}

/// One step of a path: a key or an array index.
enum Step<'a> {
    /// `.key`
    Key(&'a str),
    /// `[3]`
    Index(usize),
}

/// `out[1].id` as steps; `None` when it does not parse.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut found = Vec::new();
    for segment in path.trim().split('.') {
        let (key, mut rest) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        if !key.is_empty() {
            found.push(Step::Key(key));
        } else if rest.is_empty() {
            return None;
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let (index, after) = inner.split_once(']')?;
            found.push(Step::Index(index.trim().parse().ok()?));
            rest = after;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "create": {"out": {"id": "u1", "n": 7, "tags": ["a", "b"]}, "params": {"name": "Ann"}},
            "list-0": {"out": [{"id": 1}, {"id": 2}]},
        }) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn a_whole_reference_keeps_the_type_and_an_inner_one_is_written_in() {
        let calls = calls();
        assert_eq!(
            resolve(
                &json!({"id": "`create:out.id`", "n": "`create:out.n`"}),
                &calls
            ),
            Ok(json!({"id": "u1", "n": 7}))
        );
        assert_eq!(
            resolve(
                &json!(["`list-0:out[1].id`", "`create:out.tags[0]`"]),
                &calls
            ),
            Ok(json!([2, "a"]))
        );
        assert_eq!(
            resolve(&json!("user `create:out.id` has `create:out.n`"), &calls),
            Ok(json!("user u1 has 7"))
        );
        assert_eq!(
            resolve(&json!("`create:params.name`"), &calls),
            Ok(json!("Ann"))
        );
        // An unclosed backtick is plain text.
        assert_eq!(resolve(&json!("it`s"), &calls), Ok(json!("it`s")));
    }

    #[test]
    fn a_reference_that_leads_nowhere_says_which_and_why() {
        let calls = calls();
        assert_eq!(
            resolve(&json!("`creat:out.id`"), &calls),
            Err(ReferenceError::NoCall {
                reference: "creat:out.id".into(),
                known: "create, list-0".into()
            })
        );
        assert_eq!(
            resolve(&json!("`list-0:out[5].id`"), &calls),
            Err(ReferenceError::NoValue {
                reference: "list-0:out[5].id".into(),
                path: "out[5].id".into()
            })
        );
        assert_eq!(
            resolve(&json!("`create.out.id`"), &calls),
            Err(ReferenceError::Malformed("create.out.id".into()))
        );
        assert_eq!(
            resolve(&json!("`create:out[x]`"), &calls),
            Err(ReferenceError::Malformed("create:out[x]".into()))
        );
    }

    #[test]
    fn extra_keys_and_items_are_fine_missing_ones_are_not() {
        let got = json!({"id": 1, "name": "甲", "extra": true, "list": [1, 2, 3]});
        assert!(differences("out", &json!({"name": "甲", "list": [1, 2]}), &got).is_empty());
        assert_eq!(
            differences("out", &json!({"nick": "x", "list": [1, 2, 3, 4]}), &got),
            vec![
                Difference {
                    path: "out.list[3]".into(),
                    expected: json!(4),
                    got: None
                },
                Difference {
                    path: "out.nick".into(),
                    expected: json!("x"),
                    got: None
                },
            ]
        );
    }

    #[test]
    fn literals_match_by_value_and_json_type() {
        let got = json!({"id": 1, "n": 1.0, "s": "1", "none": null, "deep": {"a": [{"b": false}]}});
        assert!(
            differences(
                "out",
                &json!({"id": 1.0, "n": 1, "s": "1", "none": null, "deep": {"a": [{"b": false}]}}),
                &got
            )
            .is_empty()
        );
        let found = differences(
            "out",
            &json!({"id": "1", "s": 1, "none": 0, "deep": {"a": [{"b": true}]}}),
            &got,
        );
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "out.deep.a[0].b: expected true (a boolean), got false (a boolean)",
                "out.id: expected \"1\" (a string), got 1 (a number)",
                "out.none: expected 0 (a number), got null (null)",
                "out.s: expected 1 (a number), got \"1\" (a string)",
            ]
        );
    }

    #[test]
    fn a_whole_answer_of_the_wrong_shape_is_one_difference() {
        assert_eq!(
            differences("out", &json!([{"id": 1}]), &json!({"id": 1})),
            vec![Difference {
                path: "out".into(),
                expected: json!([{"id": 1}]),
                got: Some(json!({"id": 1}))
            }]
        );
        assert_eq!(
            differences("out", &json!({"a b": 1}), &json!({}))
                .first()
                .map(|d| d.path.clone()),
            Some("out[\"a b\"]".to_owned())
        );
    }
}
