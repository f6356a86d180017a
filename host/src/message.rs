//! Messages (a JSON object plus Seneca's `x$` meta keys and wasmeca's `$version`/`$target`),
//! act and instance ids, and answers ([`Reply`]). Pure, no I/O.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{ActError, Code};
use crate::pattern::{self, ParseError};

/// Seneca's default act timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 22_222;

/// The longest `timeout$` a message may ask for by default, in milliseconds (two minutes).
pub const MAX_TIMEOUT_MS: u64 = 120_000;

/// Meta key: result when nothing matches.
pub const DEFAULT: &str = "default$";
/// Meta key: per-act timeout in milliseconds.
pub const TIMEOUT: &str = "timeout$";
/// Meta key: transaction id, inherited by nested acts.
pub const TX: &str = "tx$";
/// Meta key: full act id `mi/tx`.
pub const ID: &str = "id$";
/// Meta key (legacy spelling of `id$`).
pub const ACTID: &str = "actid$";
/// wasmeca meta key: a semver requirement picking the plugin version.
pub const VERSION: &str = "$version";
/// wasmeca meta key: the Consul service that must answer.
pub const TARGET: &str = "$target";

/// Keys Seneca removes before an action sees the message.
const HIDDEN_FROM_ACTIONS: [&str; 6] = [ID, ACTID, "caller$", "meta$", "prior$", "parents$"];

/// A message: a JSON object whose keys ending in `$` are meta (they never take part in
/// matching) and whose `$version`/`$target` keys steer routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Message(Map<String, Value>);

impl Message {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Parses a message written as JSON or jsonic (`cmd:salute,name:World`).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        pattern::parse_message(text).map(Self)
    }

    /// The message as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// `timeout$` as a duration, if the message sets a usable one.
    pub fn timeout(&self) -> Option<Duration> {
        let ms = self.0.get(TIMEOUT)?;
        let ms = ms
            .as_u64()
            .or_else(|| ms.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
        Some(Duration::from_millis(ms))
    }

    /// `default$`, if set.
    pub fn default_result(&self) -> Option<&Value> {
        self.0.get(DEFAULT)
    }

    /// The act id the message carries: `id$`/`actid$` set both parts, `tx$` only the tx.
    pub fn act_id(&self) -> (Option<&str>, Option<&str>) {
        let full = self
            .0
            .get(ID)
            .or_else(|| self.0.get(ACTID))
            .and_then(Value::as_str);
        if let Some((mi, tx)) = full.and_then(|id| id.split_once('/')) {
            return (Some(mi), Some(tx));
        }
        (None, self.0.get(TX).and_then(Value::as_str))
    }

    /// The `$version` pin as a semver requirement; `"2"` means `^2`.
    pub fn version_req(&self) -> Result<Option<semver::VersionReq>, ActError> {
        let Some(raw) = self.0.get(VERSION) else {
            return Ok(None);
        };
        let text = match raw {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Null => return Ok(None),
            other => other.to_string(),
        };
        semver::VersionReq::parse(text.trim()).map(Some).map_err(|e| {
            ActError::host(
                Code::InvalidVersion,
                format!("`$version: {raw}` is not a semver requirement ({e}); try \"1\", \"^1.2\" or \"=1.0.0\""),
            )
        })
    }

    /// The `$target` service name, if set.
    pub fn target(&self) -> Option<&str> {
        self.0.get(TARGET).and_then(Value::as_str)
    }

    /// Removes the keys an action must not see (`id$`, `meta$`, ...), as Seneca does.
    pub fn strip_hidden(&mut self) {
        for key in HIDDEN_FROM_ACTIONS {
            self.0.remove(key);
        }
    }

    /// True if any key is meta: ending in `$` (Seneca's) or starting with it (`$version`,
    /// `$target`).
    pub fn has_meta(&self) -> bool {
        self.0
            .keys()
            .any(|k| k.ends_with('$') || k.starts_with('$'))
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // A map of JSON values always serialises.
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// The message without any key ending in `$` (Seneca's `clean`), as transports send it.
    pub fn clean(&self) -> Map<String, Value> {
        self.0
            .iter()
            .filter(|(k, _)| !k.ends_with('$'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Deref for Message {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Message {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<Map<String, Value>> for Message {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// A fresh 12-character id of `[0-9a-z]`, as Seneca makes them.
pub fn new_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // 36^12 fits in a u64: one uniform random number below it spells all 12 characters.
    const SPACE: u64 = 4_738_381_338_321_616_896;
    let mut n = fastrand::u64(..SPACE);
    let mut id = String::with_capacity(12);
    for _ in 0..12 {
        id.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    id
}

/// An act's answer: JSON text that is an object, an array or null. It stays text, so it
/// passes from the plugin to every ingress (and back into plugins' nested acts) without being
/// parsed and printed again, and keeps the key order the plugin wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Reply(Box<RawValue>);

impl Reply {
    /// Checks plugin output: valid JSON, and an object, an array or null; `Err` names what
    /// it is instead ("a number", "text that is not JSON").
    pub fn from_json(text: String) -> Result<Self, &'static str> {
        let raw = RawValue::from_string(text).map_err(|_| "text that is not JSON")?;
        match raw.get().as_bytes().first() {
            Some(b'{' | b'[' | b'n') => Ok(Self(raw)),
            Some(b'"') => Err("a string"),
            Some(b't' | b'f') => Err("a boolean"),
            _ => Err("a number"),
        }
    }

    /// A reply holding `value` (which the caller knows is an object, an array or null).
    pub fn from_value(value: &Value) -> Self {
        // Written by serde_json, so not parsed again to check it is JSON.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| null_raw()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON text, owned (no copy).
    pub fn into_string(self) -> String {
        Box::<str>::from(self.0).into_string()
    }

    /// The answer parsed.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// True for a `null` answer (REST answers it with 204).
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn null_raw() -> Box<RawValue> {
    // "null" is valid JSON.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null parses"))
}

/// "an array", "a string", ... for messages about JSON values.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A new Seneca instance id for this process: `<id>/<start ms>/<pid>/<version>/wasmeca`,
/// sent as `origin`/`accept` by every transport and in Consul's meta.
pub fn instance_id() -> Arc<str> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{}/{started}/{}/{}/wasmeca",
        new_id(),
        std::process::id(),
        env!("CARGO_PKG_VERSION")
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> Message {
        match v {
            Value::Object(m) => Message::new(m),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn ids_are_twelve_base36_chars() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), 12);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                "{id}"
            );
        }
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn act_ids_from_meta_keys() {
        let m = message(json!({"id$": "aaaaaaaaaaaa/bbbbbbbbbbbb", "tx$": "x"}));
        assert_eq!(m.act_id(), (Some("aaaaaaaaaaaa"), Some("bbbbbbbbbbbb")));
        assert_eq!(
            message(json!({"tx$": "tttttttttttt"})).act_id(),
            (None, Some("tttttttttttt"))
        );
        assert_eq!(
            message(json!({"actid$": "m/t"})).act_id(),
            (Some("m"), Some("t"))
        );
        assert_eq!(message(json!({})).act_id(), (None, None));
    }

    #[test]
    fn instance_ids_name_this_process() {
        let id = instance_id();
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts.len(), 5, "{id}");
        assert_eq!(parts[0].len(), 12);
        assert_eq!(parts[2], std::process::id().to_string());
        assert_eq!(parts[4], "wasmeca");
    }

    #[test]
    fn meta_accessors() {
        let m = message(
            json!({"timeout$": 50, "default$": {"x": 1}, "$version": "2", "$target": "config"}),
        );
        assert_eq!(m.timeout(), Some(Duration::from_millis(50)));
        assert_eq!(m.default_result(), Some(&json!({"x": 1})));
        assert!(
            m.version_req()
                .unwrap()
                .unwrap()
                .matches(&semver::Version::new(2, 3, 0))
        );
        assert!(
            !m.version_req()
                .unwrap()
                .unwrap()
                .matches(&semver::Version::new(1, 0, 0))
        );
        assert_eq!(m.target(), Some("config"));
        let pinned = message(json!({"$version": 1}));
        assert!(
            pinned
                .version_req()
                .unwrap()
                .unwrap()
                .matches(&semver::Version::new(1, 9, 9))
        );
        let bad = message(json!({"$version": "banana"}))
            .version_req()
            .unwrap_err();
        assert_eq!(
            (bad.code.as_str(), bad.http_status()),
            (Code::InvalidVersion.as_str(), 400)
        );
    }

    #[test]
    fn clean_and_strip() {
        let mut m =
            message(json!({"a": 1, "tx$": "t", "id$": "m/t", "meta$": {}, "$version": "1"}));
        assert_eq!(Value::Object(m.clean()), json!({"a": 1, "$version": "1"}));
        m.strip_hidden();
        assert_eq!(
            Value::Object(m.into_map()),
            json!({"a": 1, "tx$": "t", "$version": "1"})
        );
    }

    #[test]
    fn replies_must_be_objects_arrays_or_null() {
        assert_eq!(
            Reply::from_json(r#"{"b":1,"a":2}"#.into())
                .unwrap()
                .as_str(),
            r#"{"b":1,"a":2}"#
        );
        assert!(Reply::from_json("[1]".into()).is_ok());
        assert!(Reply::from_json("null".into()).unwrap().is_null());
        assert_eq!(Reply::from_json("42".into()).unwrap_err(), "a number");
        assert_eq!(Reply::from_json("-1".into()).unwrap_err(), "a number");
        assert_eq!(Reply::from_json("\"x\"".into()).unwrap_err(), "a string");
        assert_eq!(Reply::from_json("true".into()).unwrap_err(), "a boolean");
        assert_eq!(
            Reply::from_json("{oops".into()).unwrap_err(),
            "text that is not JSON"
        );
        assert_eq!(
            Reply::from_value(&json!({"a": [1]})).to_value(),
            json!({"a": [1]})
        );
    }
}
