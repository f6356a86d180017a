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
mod msg;
mod plugin;

pub use data::{Entity, Query, cache, entity};
pub use msg::Msg;
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
    prior_text(&json_text(msg))
}

/// [`prior`] for a message already written as JSON text.
pub(crate) fn prior_text(msg: &str) -> Result<Value> {
    let answer = host::prior(msg).map_err(Error::from)?;
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
