//! Write wasmeca plugins in Rust: add actions by pattern, read messages, act other patterns,
//! log, and declare seneca-web routes, in a few lines.
//!
//! ```ignore
//! use wasmeca_sdk::{Msg, Plugin, Result, json};
//!
//! fn plugin(_options: &Msg) -> Result<Plugin> {
//!     Ok(Plugin::new("salute", "1.0.0").add("cmd:salute", |_, msg| {
//!         let name = msg.str("name").unwrap_or("World");
//!         Ok(json!({ "message": format!("Hello {name}!") }))
//!     }))
//! }
//!
//! wasmeca_sdk::export!(plugin);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the plugin. The crate must be a `cdylib`.
//!
//! State: give the plugin a state with [`Plugin::with_state`]; every handler gets it as
//! `&mut S`, and it lives as long as the plugin instance (between calls, like a Node Seneca
//! plugin's closure variables). Data that must outlive the instance (restarts, redeploys) goes
//! in the host's entity store and cache: [`entity`] and [`cache`].

use std::fmt;

use serde::de::DeserializeOwned;
pub use serde_json::{self, Map, Value, json};

extern crate self as wasmeca_sdk;

#[doc(hidden)]
pub mod __private {
    #![allow(missing_docs, unsafe_code, clippy::all)]

    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "wasmeca_sdk::__private",
        runtime_path: "wasmeca_sdk::__private::wit_bindgen::rt",
    });

    pub use wit_bindgen;

    pub use super::{
        dispatch_handle as handle, dispatch_init as init, dispatch_observe as observe,
    };
}

use __private::wasmeca::plugin::{host, types};

mod data;
mod plugin;

pub use data::{Entity, Query, cache, entity};
pub use plugin::{Plugin, dispatch_handle, dispatch_init, dispatch_observe};

/// A result whose error is a wasmeca [`Error`].
pub type Result<T = Value, E = Error> = std::result::Result<T, E>;

/// An error as callers see it: a code, a message, optional details and an HTTP status for REST
/// callers. `act` returns these too, so `?` passes a failed nested act up unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// Machine-readable code, e.g. `not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Optional JSON details.
    pub details: Option<Box<Value>>,
    /// Optional HTTP status (REST and HTTP callers get it).
    pub status: Option<u16>,
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
            status: None,
        }
    }

    /// `invalid_input` with status 400: the message is missing something or has a bad value.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("invalid_input", message).with_status(400)
    }

    /// `not_found` with status 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message).with_status(404)
    }

    /// Adds JSON details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::invalid_input(e.to_string())
    }
}

impl From<types::Error> for Error {
    fn from(e: types::Error) -> Self {
        let details = e
            .details
            .map(|d| Box::new(serde_json::from_str(&d).unwrap_or(Value::String(d))));
        Self {
            code: e.code,
            message: e.message,
            details,
            status: e.status,
        }
    }
}

impl From<Error> for types::Error {
    fn from(e: Error) -> Self {
        Self {
            code: e.code,
            message: e.message,
            details: e.details.map(|d| d.to_string()),
            status: e.status,
        }
    }
}

/// A message: a JSON object with typed accessors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Msg(Map<String, Value>);

impl Msg {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// A number, also read from a numeric string (REST params and query values are strings).
    pub fn f64(&self, key: &str) -> Option<f64> {
        number(self.0.get(key)?)
    }

    /// An integer, also read from a numeric string.
    pub fn i64(&self, key: &str) -> Option<i64> {
        integer(self.0.get(key)?)
    }

    /// A boolean (`true`/`false`, or the strings `"true"`/`"false"`).
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => None,
        }
    }

    /// A number that must be there: else `invalid_input` naming the key.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.f64(key)
            .ok_or_else(|| missing(key, "a number", self.0.get(key)))
    }

    /// A string that must be there: else `invalid_input` naming the key.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.str(key)
            .ok_or_else(|| missing(key, "a string", self.0.get(key)))
    }

    /// The whole message as a typed value.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(T::deserialize(Value::Object(self.0.clone()))?)
    }

    /// The transaction id (`tx$`) this message belongs to.
    pub fn tx(&self) -> Option<&str> {
        self.str("tx$")
    }

    /// A path parameter from a REST route (`args.params.<name>`, seneca-web's shape).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.0.get("args")?.get("params")?.get(name)?.as_str()
    }

    /// A query parameter from a REST route (`args.query.<name>`): a string, or an array of
    /// strings for repeated keys.
    pub fn query(&self, name: &str) -> Option<&Value> {
        self.0.get("args")?.get("query")?.get(name)
    }

    /// The request body from a REST route (`args.body`).
    pub fn body(&self) -> Option<&Value> {
        self.0.get("args")?.get("body")
    }

    /// The body as a typed value: `invalid_input` when it is missing or has the wrong shape.
    pub fn parse_body<T: DeserializeOwned>(&self) -> Result<T> {
        let body = self.body().cloned().unwrap_or(Value::Null);
        T::deserialize(body).map_err(|e| Error::invalid_input(format!("body: {e}")))
    }

    /// Calls the action this one overrode (Seneca's `this.prior(msg)`) with this message.
    pub fn prior(&self) -> Result<Value> {
        prior(&Value::Object(self.0.clone()))
    }

    /// The message as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The message as a JSON object, owned.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn missing(key: &str, what: &str, got: Option<&Value>) -> Error {
    let message = match got {
        None => format!("`{key}` is missing; it must be {what}"),
        Some(v) => format!("`{key}` must be {what}, not {v}"),
    };
    Error::invalid_input(message).with_details(json!({ "field": key }))
}

/// A value's JSON text, written straight into its buffer (`Value::to_string` goes through
/// `fmt::Display`, a dynamic call per token: several thousand instructions more per message).
fn json_text(value: &Value) -> String {
    // A JSON value always serialises.
    serde_json::to_string(value).unwrap_or_default()
}

/// Acts a message: the host routes it to whichever plugin (or remote service) serves the best
/// matching pattern, and returns the answer. The message inherits the current `tx$`.
///
/// ```ignore
/// let sum = wasmeca_sdk::act(json!({"role": "math", "cmd": "sum", "left": 1, "right": 2}))?;
/// ```
pub fn act(msg: Value) -> Result<Value> {
    act_text(&json_text(&msg))
}

/// [`act`] for a message already written as JSON text, its answer read straight into a `T`.
pub(crate) fn act_text<T: serde::de::DeserializeOwned>(msg: &str) -> Result<T> {
    let answer = host::act(msg).map_err(Error::from)?;
    Ok(serde_json::from_str(&answer)?)
}

/// Publishes an event: every observer whose pattern matches it hears it (in this host, and in
/// every service observing it when the host has a broker). Returns once the event is accepted;
/// no observer anywhere is not an error. The event inherits the current `tx$`.
///
/// ```ignore
/// wasmeca_sdk::publish(json!({"evt": "user", "cmd": "created", "id": 7}))?;
/// ```
pub fn publish(event: Value) -> Result<()> {
    host::publish(&json_text(&event)).map_err(Error::from)
}

/// Calls the action the current one overrode (Seneca's `prior`); with none, the answer is the
/// message's `default$` or null.
pub fn prior(msg: &Value) -> Result<Value> {
    let answer = host::prior(&json_text(msg)).map_err(Error::from)?;
    Ok(serde_json::from_str(&answer)?)
}

/// Writes to the host's log, tagged with this plugin and the current transaction.
pub mod log {
    use super::{host, types::Level};

    /// Logs at trace level.
    pub fn trace(text: impl AsRef<str>) {
        host::log(Level::Trace, text.as_ref());
    }
    /// Logs at debug level.
    pub fn debug(text: impl AsRef<str>) {
        host::log(Level::Debug, text.as_ref());
    }
    /// Logs at info level.
    pub fn info(text: impl AsRef<str>) {
        host::log(Level::Info, text.as_ref());
    }
    /// Logs at warn level.
    pub fn warn(text: impl AsRef<str>) {
        host::log(Level::Warn, text.as_ref());
    }
    /// Logs at error level.
    pub fn error(text: impl AsRef<str>) {
        host::log(Level::Error, text.as_ref());
    }
}

/// Logs a formatted line at info level: `info!("loaded {n} users")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(format!($($arg)*)) };
}

/// Logs a formatted line at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(format!($($arg)*)) };
}

/// Logs a formatted line at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Msg {
        match v {
            Value::Object(m) => Msg::new(m),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn typed_accessors() {
        let m = msg(
            json!({"a": 1, "b": "2", "c": "x", "d": true, "e": 1.5, "args": {"params": {"id": "7"}, "query": {"q": ["1", "2"]}, "body": {"name": "n"}}}),
        );
        assert_eq!(m.i64("a"), Some(1));
        assert_eq!(m.i64("b"), Some(2));
        assert_eq!(m.f64("e"), Some(1.5));
        assert_eq!(m.i64("e"), None);
        assert_eq!(m.str("c"), Some("x"));
        assert_eq!(m.bool("d"), Some(true));
        assert_eq!(m.param("id"), Some("7"));
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
