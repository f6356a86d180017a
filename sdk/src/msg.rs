//! [`Msg`]: a message as the host sent it, read where an action looks. The keys an action asks
//! for are found in the JSON text itself; a JSON tree is built only for what needs one.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value, json};

use crate::{Error, Result};

/// A message: a JSON object with typed accessors.
///
/// A message that came from the host is kept as its JSON text: `str`, `i64`, `param` and the
/// other typed accessors read their key in place, so an action that reads two keys of a REST
/// request does not pay for parsing the rest into a tree. `get`, `body`, `as_map` and the like
/// build the tree once, the first time one of them is called. A key or string written with
/// escapes is read from the tree too, and a message nested deeper than a tree may be is refused
/// on arrival, as before.
#[derive(Clone, Default)]
pub struct Msg {
    /// The JSON text of the message as the host sent it, when it came as text (not through
    /// [`Msg::new`]): the typed accessors read their keys in it without building a tree.
    text: Option<String>,
    /// Where each top-level key's name and value lie in `text`, in order, found (and the text
    /// checked to be a JSON object, [`too_deep`] included) when the message arrived, so a
    /// lookup is a short scan of this list rather than of the text.
    index: Vec<Entry>,
    /// The message as a JSON tree: given to [`Msg::new`], or built from `text` the first time
    /// an accessor needs a `Value` (`get`, `body`, `as_map`...) or a key is not plain text.
    tree: OnceLock<Map<String, Value>>,
}

/// One top-level key of a message's text.
#[derive(Clone)]
struct Entry {
    /// The key's name, between its quotes (a name with escapes sends the message to its tree).
    key: Range<usize>,
    /// The key's value, as JSON text.
    value: Range<usize>,
}

impl Msg {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            text: None,
            index: Vec::new(),
            tree: OnceLock::from(map),
        }
    }

    /// A message from the JSON text the host sent: `None` when it is not a JSON object.
    pub(crate) fn from_text(text: String) -> Option<Self> {
        if too_deep(&text) {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(&text);
        let index = (Scan { text: &text }).deserialize(&mut de).ok()?;
        de.end().ok()?;
        let Some(index) = index else {
            // A key with escapes cannot be compared in place: read this one from its tree.
            let Ok(Value::Object(map)) = serde_json::from_str(&text) else {
                return None;
            };
            return Some(Self::new(map));
        };
        Some(Self {
            text: Some(text),
            index,
            tree: OnceLock::new(),
        })
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().get(key)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.string(&[key])
    }

    /// A number, also read from a numeric string (REST params and query values are strings).
    pub fn f64(&self, key: &str) -> Option<f64> {
        match self.scalar(&[key])? {
            Scalar::Number(n) => n.as_f64(),
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Bool(_) => None,
        }
    }

    /// An integer, also read from a numeric string.
    pub fn i64(&self, key: &str) -> Option<i64> {
        match self.scalar(&[key])? {
            Scalar::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Bool(_) => None,
        }
    }

    /// A boolean (`true`/`false`, or the strings `"true"`/`"false"`).
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.scalar(&[key])? {
            Scalar::Bool(b) => Some(b),
            Scalar::Str("true") => Some(true),
            Scalar::Str("false") => Some(false),
            _ => None,
        }
    }

    /// A number that must be there: else `invalid_input` naming the key.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.f64(key)
            .ok_or_else(|| missing(key, "a number", self.get(key)))
    }

    /// A string that must be there: else `invalid_input` naming the key.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.str(key)
            .ok_or_else(|| missing(key, "a string", self.get(key)))
    }

    /// The whole message as a typed value.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(T::deserialize(Value::Object(self.as_map().clone()))?)
    }

    /// The transaction id (`tx$`) this message belongs to.
    pub fn tx(&self) -> Option<&str> {
        self.str("tx$")
    }

    /// A path parameter from a REST route (`args.params.<name>`, seneca-web's shape).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.string(&["args", "params", name])
    }

    /// A query parameter from a REST route (`args.query.<name>`): a string, or an array of
    /// strings for repeated keys.
    pub fn query(&self, name: &str) -> Option<&Value> {
        self.get("args")?.get("query")?.get(name)
    }

    /// The request body from a REST route (`args.body`).
    pub fn body(&self) -> Option<&Value> {
        self.get("args")?.get("body")
    }

    /// The body as a typed value: `invalid_input` when it is missing or has the wrong shape.
    pub fn parse_body<T: DeserializeOwned>(&self) -> Result<T> {
        let body = self.body().cloned().unwrap_or(Value::Null);
        T::deserialize(body).map_err(|e| Error::invalid_input(format!("body: {e}")))
    }

    /// Calls the action this one overrode (Seneca's `this.prior(msg)`) with this message.
    pub fn prior(&self) -> Result<Value> {
        match &self.text {
            Some(text) => crate::prior_text(text),
            None => crate::prior(&Value::Object(self.as_map().clone())),
        }
    }

    /// The message as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        self.tree.get_or_init(|| self.parse_text())
    }

    /// The message as a JSON object, owned.
    pub fn into_map(mut self) -> Map<String, Value> {
        match self.tree.take() {
            Some(map) => map,
            None => self.parse_text(),
        }
    }

    /// The tree of `text`, checked to be a JSON object when the message arrived. (The scan
    /// does not check a number's range or that a `\u` escape of a surrogate has its pair;
    /// the host writes messages with serde_json, which never writes either, so a text that
    /// the scan let through and a tree refuses, read as an empty object, comes from no host.)
    fn parse_text(&self) -> Map<String, Value> {
        match self.text.as_deref().map(serde_json::from_str) {
            Some(Ok(Value::Object(map))) => map,
            _ => Map::new(),
        }
    }

    /// The JSON text of the value at `path`, read in place: `Err` when it must be read from the
    /// tree instead (the message has no text, or its tree is built, or a key on the way has
    /// escapes).
    fn raw(&self, path: &[&str]) -> std::result::Result<Option<&str>, InTree> {
        let text = match &self.text {
            Some(text) if self.tree.get().is_none() => text,
            _ => return Err(InTree),
        };
        let (first, rest) = path.split_first().ok_or(InTree)?;
        let Some(entry) = self
            .index
            .iter()
            .rev()
            .find(|e| &text[e.key.clone()] == *first)
        else {
            return Ok(None);
        };
        let mut value = &text[entry.value.clone()];
        for key in rest {
            match find(value, key)? {
                Some(inner) => value = inner,
                None => return Ok(None),
            }
        }
        Ok(Some(value))
    }

    /// The tree's value at `path`.
    fn tree_at(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(self.get(first)?, |value, key| value.get(key))
    }

    /// The string at `path`.
    fn string(&self, path: &[&str]) -> Option<&str> {
        match self.scalar(path)? {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The string, number or boolean at `path`.
    fn scalar(&self, path: &[&str]) -> Option<Scalar<'_>> {
        let value = match self.raw(path) {
            Ok(value) => value?,
            Err(InTree) => return Scalar::of(self.tree_at(path)?),
        };
        match value.as_bytes().first()? {
            b'"' => match serde_json::from_str(value) {
                Ok(s) => Some(Scalar::Str(s)),
                // Escapes: the string must be unescaped into the tree.
                Err(_) => Scalar::of(self.tree_at(path)?),
            },
            b't' | b'f' => serde_json::from_str(value).ok().map(Scalar::Bool),
            b'-' | b'0'..=b'9' => serde_json::from_str(value).ok().map(Scalar::Number),
            _ => None,
        }
    }
}

impl PartialEq for Msg {
    fn eq(&self, other: &Self) -> bool {
        self.as_map() == other.as_map()
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Msg").field(self.as_map()).finish()
    }
}

/// A value that must be read from the message's tree rather than its text.
struct InTree;

/// A string, number or boolean read from a message.
enum Scalar<'a> {
    /// A string (REST params and query values come as strings).
    Str(&'a str),
    /// A number, as JSON wrote it.
    Number(Number),
    /// `true` or `false`.
    Bool(bool),
}

impl<'a> Scalar<'a> {
    /// The scalar a tree's value is, if it is one.
    fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::Str(s)),
            Value::Number(n) => Some(Self::Number(n.clone())),
            Value::Bool(b) => Some(Self::Bool(*b)),
            _ => None,
        }
    }
}

/// Whether a tree of `text` would be refused for its depth: the scan skips over each value
/// without counting levels, where serde_json refuses a tree of more than 128. Only a text with
/// 127 brackets or more can be that deep (a short one is not looked at), and it is then read
/// whole to be sure.
fn too_deep(text: &str) -> bool {
    const LEVELS: usize = 127;
    if text.len() < 2 * LEVELS {
        return false;
    }
    let brackets = text.bytes().filter(|b| matches!(b, b'{' | b'[')).count();
    brackets >= LEVELS && serde_json::from_str::<Value>(text).is_err()
}

/// Where `part` (a slice of `text`) lies in it.
fn span(text: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - text.as_ptr() as usize;
    start..start + part.len()
}

/// Finds where a message's top-level keys and values lie in its text.
struct Scan<'t> {
    /// The whole text, which the keys and values found are slices of.
    text: &'t str,
}

impl<'de> DeserializeSeed<'de> for Scan<'de> {
    /// Each key and value, in order; `None` when a key has escapes (it cannot be compared in
    /// place, so the message is read as a tree).
    type Value = Option<Vec<Entry>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Scan<'de> {
    type Value = Option<Vec<Entry>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut entries = Some(Vec::with_capacity(map.size_hint().unwrap_or(8)));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<&RawValue>()?;
            match (key, &mut entries) {
                (Key::Plain(key), Some(entries)) => entries.push(Entry {
                    key: span(self.text, key),
                    value: span(self.text, value.get()),
                }),
                _ => entries = None,
            }
        }
        Ok(entries)
    }
}

/// A key of a JSON object: borrowed from the text, or marked as written with escapes.
enum Key<'t> {
    /// The key's text, which has no escapes.
    Plain(&'t str),
    /// A key with escapes, which only a tree can compare.
    Escaped,
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads a [`Key`].
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> std::result::Result<Key<'de>, E> {
        Ok(Key::Plain(key))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Key<'de>, E> {
        Ok(Key::Escaped)
    }
}

/// The value under `key` in `object` (a JSON text): `Ok(None)` when `object` is not an object
/// or has no such key, `Err` when a key has escapes.
fn find<'t>(object: &'t str, key: &str) -> std::result::Result<Option<&'t str>, InTree> {
    let mut de = serde_json::Deserializer::from_str(object);
    match (Find { key }).deserialize(&mut de) {
        Ok(Found::Value(value)) => Ok(value.map(RawValue::get)),
        Ok(Found::Escaped) => Err(InTree),
        Err(_) => Ok(None),
    }
}

/// Looks for one key in a JSON object.
struct Find<'k> {
    /// The key looked for.
    key: &'k str,
}

/// What [`Find`] found.
enum Found<'t> {
    /// The key's value (the last, if it is there twice, as a tree would keep), or none.
    Value(Option<&'t RawValue>),
    /// A key with escapes: the object must be read as a tree.
    Escaped,
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = Found<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Found<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found<'de>, A::Error> {
        let (mut found, mut escaped) = (None, false);
        // Every entry is read to the end: the deserializer checks the object is closed.
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key {
                Key::Plain(k) if k == self.key => found = Some(map.next_value::<&RawValue>()?),
                other => {
                    escaped |= matches!(other, Key::Escaped);
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if escaped {
            Found::Escaped
        } else {
            Found::Value(found)
        })
    }
}

/// `invalid_input` for a key that is missing or of the wrong kind.
fn missing(key: &str, what: &str, got: Option<&Value>) -> Error {
    let message = match got {
        None => format!("`{key}` is missing; it must be {what}"),
        Some(v) => format!("`{key}` must be {what}, not {v}"),
    };
    Error::invalid_input(message).with_details(json!({ "field": key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same message twice: as the host sends it (text) and built from a tree.
    fn both(text: &str) -> [Msg; 2] {
        let Ok(Value::Object(map)) = serde_json::from_str(text) else {
            panic!("not an object: {text}");
        };
        [
            Msg::from_text(text.to_owned()).expect("an object"),
            Msg::new(map),
        ]
    }

    #[test]
    fn typed_accessors_read_text_and_tree_alike() {
        let text = r#"{"a": 1, "b": "2", "c": "x", "d": true, "e": 1.5, "f": 2.0, "g": "false",
            "args": {"params": {"id": "7"}, "query": {"q": ["1", "2"]}, "body": {"name": "n"}}}"#;
        for m in both(text) {
            assert_eq!(m.i64("a"), Some(1));
            assert_eq!(m.i64("b"), Some(2));
            assert_eq!(m.f64("e"), Some(1.5));
            assert_eq!(m.i64("e"), None);
            assert_eq!(m.i64("f"), Some(2));
            assert_eq!(m.i64("c"), None);
            assert_eq!(m.str("c"), Some("x"));
            assert_eq!(m.str("a"), None);
            assert_eq!(m.bool("d"), Some(true));
            assert_eq!(m.bool("g"), Some(false));
            assert_eq!(m.bool("a"), None);
            assert_eq!(m.param("id"), Some("7"));
            assert_eq!(m.param("nope"), None);
            assert_eq!(m.query("q"), Some(&json!(["1", "2"])));
            assert_eq!(m.body(), Some(&json!({"name": "n"})));
            let e = m.require_f64("c").unwrap_err();
            assert_eq!((e.code.as_str(), e.status), ("invalid_input", Some(400)));
            assert!(e.message.contains("`c` must be a number"), "{}", e.message);
            assert!(
                m.require_str("zz")
                    .unwrap_err()
                    .message
                    .contains("`zz` is missing")
            );
        }
    }

    #[test]
    fn escapes_and_repeated_keys_read_as_a_tree_would() {
        let text = r#"{"s": "a\"b\u00e9", "k\u0065y": "v", "n": 1, "n": 2,
            "args": {"params": {"i\u0064": "7"}}, "deep": {"x": 1, "x": "last"}}"#;
        let [m, tree] = both(text);
        assert_eq!(m.str("s"), Some("a\"bé"));
        assert_eq!(m.str("key"), Some("v"));
        assert_eq!(m.i64("n"), Some(2));
        assert_eq!(m.param("id"), Some("7"));
        assert_eq!(m, tree);
        let plain = Msg::from_text(
            r#"{"n": 1, "n": 2, "args": {"params": {"id": "1", "id": "9"}}}"#.into(),
        )
        .expect("an object");
        assert_eq!((plain.i64("n"), plain.param("id")), (Some(2), Some("9")));
        // A nested key with escapes: the lookup goes to the tree and still finds it.
        let nested = Msg::from_text(r#"{"args": {"params": {"i\u0064": "7", "x": 1}}}"#.into())
            .expect("an object");
        assert_eq!(nested.param("id"), Some("7"));
    }

    #[test]
    fn a_message_nested_deeper_than_a_tree_may_be_is_refused() {
        let nested = |depth: usize| {
            format!(
                r#"{{"cmd": "x", "args": {{"params": {{"id": "7"}}, "body": {}1{}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        // 125 arrays in `body` make 127 levels in all: a tree reads it; 126 make 128, and 127
        // make 129, past serde_json's 128 (a REST body can be 127 deep).
        for depth in [10, 125, 126, 127, 200] {
            let text = nested(depth);
            let tree = serde_json::from_str::<Value>(&text).ok();
            let m = Msg::from_text(text);
            assert_eq!(m.is_some(), tree.is_some(), "{depth} levels");
            if let Some(m) = m {
                assert_eq!((m.str("cmd"), m.param("id")), (Some("x"), Some("7")));
                assert!(m.body().is_some(), "{depth} levels");
            }
        }
        // Many brackets side by side are not depth.
        let wide = format!(r#"{{"cmd": "x", "list": [{}]}}"#, vec!["[]"; 300].join(","));
        let m = Msg::from_text(wide).expect("an object");
        assert_eq!(m.str("cmd"), Some("x"));
        assert!(m.tree.get().is_none(), "read in place");
    }

    #[test]
    fn only_a_json_object_is_a_message() {
        for bad in ["[1]", "\"x\"", "1", "{", "{} x", "{\"a\": }", ""] {
            assert!(Msg::from_text(bad.to_owned()).is_none(), "{bad}");
        }
        let m = Msg::from_text(" { } ".to_owned()).expect("an empty object");
        assert_eq!((m.str("a"), m.as_map().len()), (None, 0));
    }

    #[test]
    fn a_tree_built_late_is_the_whole_message() {
        let text = r#"{"cmd": "x", "args": {"params": {}, "body": {"name": "n"}}, "tx$": "t"}"#;
        let m = Msg::from_text(text.to_owned()).expect("an object");
        assert_eq!(m.tx(), Some("t"));
        assert_eq!(m.get("cmd"), Some(&json!("x")));
        // Read again once the tree is there.
        assert_eq!((m.str("cmd"), m.tx()), (Some("x"), Some("t")));
        let copy = m.clone();
        let Value::Object(expected) = serde_json::from_str(text).expect("json") else {
            unreachable!()
        };
        assert_eq!(m.into_map(), expected);
        assert_eq!(copy.into_map(), expected);
        let fresh = Msg::from_text(text.to_owned()).expect("an object");
        assert_eq!(fresh.into_map(), expected);
        #[derive(serde::Deserialize)]
        struct Cmd {
            cmd: String,
        }
        let m = Msg::from_text(text.to_owned()).expect("an object");
        assert_eq!(m.parse::<Cmd>().expect("parses").cmd, "x");
    }
}
