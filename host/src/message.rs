//! Messages (a JSON object plus Seneca's `x$` meta keys and wasmeca's `$version`/`$target`),
//! act ids (`mi/tx`) and Seneca-shaped errors. Pure, no I/O.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::pattern::{self, ParseError};

/// Seneca's default act timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 22_222;

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
            ActError::new(
                codes::INVALID_VERSION,
                format!("`$version: {raw}` is not a semver requirement ({e}); try \"1\", \"^1.2\" or \"=1.0.0\""),
            )
            .with_status(400)
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

/// An act's identity: a message id `mi` and the transaction id `tx` shared by every act the
/// same request causes. Displays as `mi/tx`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActId {
    /// This act's own id.
    pub mi: String,
    /// The transaction: inherited by nested acts, so one request can be followed in the logs.
    pub tx: String,
}

impl ActId {
    /// The id for a message: its own `id$`/`tx$` when given, else the inherited tx, else new ids.
    pub fn for_message(msg: &Message, inherited_tx: Option<&str>) -> Self {
        let (mi, tx) = msg.act_id();
        Self {
            mi: mi.map_or_else(new_id, str::to_owned),
            tx: tx.or(inherited_tx).map_or_else(new_id, str::to_owned),
        }
    }
}

impl fmt::Display for ActId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mi, self.tx)
    }
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
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
        Self(RawValue::from_string(text).unwrap_or_else(|_| null_raw()))
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

/// Error codes the host itself produces (plugins choose their own).
pub mod codes {
    /// No pattern matched and there was no usable `default$` (Seneca).
    pub const ACT_NOT_FOUND: &str = "act_not_found";
    /// `default$` was present but not an object or array (Seneca).
    pub const ACT_DEFAULT_BAD: &str = "act_default_bad";
    /// The act did not answer within `timeout$` (Seneca).
    pub const ACTION_TIMEOUT: &str = "action_timeout";
    /// The action answered something other than an object, an array or null (Seneca).
    pub const RESULT_NOT_OBJARR: &str = "result_not_objarr";
    /// Nested acts went deeper than the limit.
    pub const ACT_DEPTH_LIMIT: &str = "act_depth_limit";
    /// An action acted a plugin whose every instance is already busy on the same call chain.
    pub const ACT_REENTRANT: &str = "act_reentrant";
    /// The plugin trapped, panicked, ran out of memory or broke the contract.
    pub const PLUGIN_TRAP: &str = "plugin_trap";
    /// No loaded version satisfies the `$version` pin.
    pub const VERSION_NOT_FOUND: &str = "version_not_found";
    /// `$version` is not a semver requirement.
    pub const INVALID_VERSION: &str = "invalid_version";
    /// A message that is not a JSON object, or a text that does not parse.
    pub const INVALID_MESSAGE: &str = "invalid_message";
    /// The host is shutting down and takes no new work.
    pub const CLOSED: &str = "closed";
    /// A client transport could not reach the remote service.
    pub const UNREACHABLE: &str = "unreachable";
    /// `$target` names a service with no passing instance.
    pub const TARGET_UNAVAILABLE: &str = "target_unavailable";
    /// The input nests deeper than the parsers allow (128 levels).
    pub const TOO_DEEP: &str = "too_deep";
}

/// A Seneca-shaped error: code, message, optional details and HTTP status. This is what every
/// ingress answers with when an act fails, and what a plugin's `act` import returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ActError {
    /// Machine-readable code (`act_not_found`, or the plugin's own).
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Optional JSON with more detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<Value>>,
    /// HTTP status the plugin asked for; ingresses derive one from the code otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl ActError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
            status: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// Adds an HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Seneca's `act_not_found`.
    pub fn not_found(msg: &Message) -> Self {
        Self::new(
            codes::ACT_NOT_FOUND,
            format!(
                "No matching action pattern found for {}, and no default result provided (using a default$ property).",
                Value::Object(msg.clean())
            ),
        )
    }

    /// Seneca's `action_timeout`.
    pub fn timeout(pattern: &str, after: Duration) -> Self {
        Self::new(
            codes::ACTION_TIMEOUT,
            format!(
                "[TIMEOUT] Action {pattern} timed out after {} ms.",
                after.as_millis()
            ),
        )
        .with_details(
            serde_json::json!({ "pattern": pattern, "timeout": after.as_millis() as u64 }),
        )
    }

    /// The HTTP status for this error on REST: the plugin's own, else from the code.
    pub fn http_status(&self) -> u16 {
        self.status
            .filter(|s| (400..600).contains(s))
            .unwrap_or(match self.code.as_str() {
                codes::ACT_NOT_FOUND | codes::VERSION_NOT_FOUND => 404,
                codes::ACTION_TIMEOUT => 504,
                codes::INVALID_MESSAGE | codes::INVALID_VERSION | codes::TOO_DEEP => 400,
                codes::CLOSED | codes::UNREACHABLE | codes::TARGET_UNAVAILABLE => 503,
                _ => 500,
            })
    }

    /// The error as Seneca serialises it on the wire: its own fields plus `seneca`, `msg`,
    /// `message` and `name`.
    pub fn to_seneca_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("code".into(), self.code.clone().into());
        out.insert("seneca".into(), true.into());
        out.insert("msg".into(), self.message.clone().into());
        out.insert(
            "details".into(),
            self.details
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
        if let Some(status) = self.status {
            out.insert("status".into(), status.into());
            out.insert("statusCode".into(), status.into());
        }
        out.insert("message".into(), self.message.clone().into());
        out.insert("name".into(), "Error".into());
        Value::Object(out)
    }

    /// Reads an error in Seneca's wire shape (or wasmeca's own), as a remote peer sent it.
    pub fn from_seneca_json(value: &Value) -> Self {
        let field = |k: &str| value.get(k).and_then(Value::as_str);
        let status = ["statusCode", "status"]
            .iter()
            .find_map(|k| value.get(*k).and_then(Value::as_u64));
        Self {
            code: field("code").unwrap_or("act_execute").to_owned(),
            message: field("message")
                .or_else(|| field("msg"))
                .unwrap_or("remote error")
                .to_owned(),
            details: value
                .get("details")
                .filter(|d| !d.is_null())
                .cloned()
                .map(Box::new),
            status: status.and_then(|s| u16::try_from(s).ok()),
        }
    }
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
    fn act_id_from_meta_keys() {
        let id = ActId::for_message(
            &message(json!({"id$": "aaaaaaaaaaaa/bbbbbbbbbbbb"})),
            Some("cccccccccccc"),
        );
        assert_eq!(id.to_string(), "aaaaaaaaaaaa/bbbbbbbbbbbb");
        let id = ActId::for_message(
            &message(json!({"tx$": "tttttttttttt"})),
            Some("cccccccccccc"),
        );
        assert_eq!(id.tx, "tttttttttttt");
        let id = ActId::for_message(&message(json!({})), Some("cccccccccccc"));
        assert_eq!(id.tx, "cccccccccccc");
        assert_eq!(id.mi.len(), 12);
        let id = ActId::for_message(&message(json!({"actid$": "m/t"})), None);
        assert_eq!((id.mi.as_str(), id.tx.as_str()), ("m", "t"));
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
            (codes::INVALID_VERSION, 400)
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

    #[test]
    fn errors_have_seneca_shape_and_status() {
        let e = ActError::not_found(&message(json!({"cmd": "nope", "tx$": "x"})));
        assert_eq!(e.code, "act_not_found");
        assert!(
            e.message
                .starts_with("No matching action pattern found for {\"cmd\":\"nope\"}"),
            "{}",
            e.message
        );
        assert_eq!(e.http_status(), 404);
        assert_eq!(
            ActError::timeout("cmd:x", Duration::from_millis(5)).http_status(),
            504
        );
        assert_eq!(ActError::new("boom", "x").http_status(), 500);
        assert_eq!(
            ActError::new("missing", "x").with_status(404).http_status(),
            404
        );
        let wire = ActError::new("boom", "bad thing")
            .with_status(418)
            .to_seneca_json();
        assert_eq!(wire["seneca"], json!(true));
        assert_eq!(wire["statusCode"], json!(418));
        assert_eq!(wire["name"], json!("Error"));
        let back = ActError::from_seneca_json(&wire);
        assert_eq!(
            (back.code.as_str(), back.message.as_str(), back.status),
            ("boom", "bad thing", Some(418))
        );
    }
}
