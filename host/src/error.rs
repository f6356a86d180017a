//! Errors as callers see them: [`ActError`], Seneca's wire shape (code, message, details,
//! status) that every ingress answers with, and [`Code`], the one list of codes the host itself
//! answers with, each with the HTTP status it gets. Pure, no I/O.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Declares [`Code`]: each variant with its wire code, its HTTP status, and whether Seneca's HTTP
/// transport answers it with 500 as Node does (Seneca's own codes, except where the caller is at
/// fault: those are a 4xx on every ingress).
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal, $seneca:literal;)*) => {
        /// The codes of the errors the host itself answers with; plugins choose their own.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, for lookups by text.
            const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The code on the wire (`act_not_found`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The HTTP status REST answers it with.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// True where Seneca's HTTP transport answers with 500, as Node does.
            const fn seneca(self) -> bool {
                match self {
                    $(Code::$variant => $seneca,)*
                }
            }
        }
    };
}

codes! {
    /// No pattern matched and there was no usable `default$` (Seneca).
    ActNotFound = "act_not_found", 404, true;
    /// `default$` was present but not an object or array (Seneca).
    ActDefaultBad = "act_default_bad", 500, true;
    /// The act did not answer within `timeout$` (Seneca).
    ActionTimeout = "action_timeout", 504, true;
    /// The action answered something other than an object, an array or null (Seneca).
    ResultNotObjarr = "result_not_objarr", 500, true;
    /// A remote action failed without a code of its own (Seneca's wrapper code).
    ActExecute = "act_execute", 500, true;
    /// A body or envelope that is not the JSON expected (Seneca's code; the caller's fault, so
    /// 400 on every ingress where Node's HTTP transport answers 500).
    InvalidJson = "invalid_json", 400, false;
    /// The message came back to a host it already went through (Seneca).
    MessageLoop = "message_loop", 500, true;
    /// An AMQP envelope whose `kind` is not `act` (seneca-amqp-transport).
    InvalidKindAct = "invalid_kind_act", 400, false;
    /// An AMQP envelope without an `act` object.
    InvalidAct = "invalid_act", 400, false;
    /// Nested acts went deeper than the limit.
    ActDepthLimit = "act_depth_limit", 500, false;
    /// An action acted a plugin whose every instance is already busy on the same call chain.
    ActReentrant = "act_reentrant", 500, false;
    /// The plugin trapped, panicked, ran out of memory or broke the contract.
    PluginTrap = "plugin_trap", 500, false;
    /// The plugin answered more than `[limits] max_result_bytes`.
    ResultTooLarge = "result_too_large", 500, false;
    /// Loading the plugin would take the sum of instance memory caps over the host's budget.
    MemoryBudget = "memory_budget", 507, false;
    /// No loaded version satisfies the `$version` pin.
    VersionNotFound = "version_not_found", 404, false;
    /// `$version` is not a semver requirement.
    InvalidVersion = "invalid_version", 400, false;
    /// A message that is not a JSON object, or a text that does not parse.
    InvalidMessage = "invalid_message", 400, false;
    /// The input nests deeper than the parsers allow (128 levels).
    TooDeep = "too_deep", 400, false;
    /// The host is shutting down and takes no new work.
    Closed = "closed", 503, false;
    /// The in-memory event queue stayed full until the publisher's deadline.
    EventsFull = "events_full", 503, false;
    /// A client transport or peer could not be reached.
    Unreachable = "unreachable", 503, false;
    /// `$target` names a service with no passing instance, or discovery is off.
    TargetUnavailable = "target_unavailable", 503, false;
    /// `$target` names a service this host may not send to (not a wasmeca host, and not in
    /// `[consul] targets`).
    TargetForbidden = "target_forbidden", 403, false;
    /// No REST route for this path.
    NotFound = "not_found", 404, false;
    /// A REST route exists for this path, but not for this method.
    MethodNotAllowed = "method_not_allowed", 405, false;
    /// A caller the data store does not let in: the network when `[data] expose` is off, or a
    /// plugin outside the bases its `[[plugin]] data` allows.
    EntityForbidden = "entity_forbidden", 403, false;
    /// A request body over the configured limit.
    BodyTooLarge = "body_too_large", 413, false;
    /// A request body that did not arrive within `[http] body_timeout_ms` of its headers.
    BodyTimeout = "body_timeout", 408, false;
    /// A request body that broke off (the client went away, or sent a malformed chunk).
    InvalidBody = "invalid_body", 400, false;
    /// An AMQP command over the listener's `max_message_bytes`.
    MessageTooLarge = "message_too_large", 413, false;
    /// A request body of a type the gateway cannot read.
    UnsupportedMediaType = "unsupported_media_type", 415, false;
    /// A create named an id (`id$`) that is already stored (seneca-entity's code).
    EntityIdExists = "entity-id-exists", 500, false;
    /// A malformed entity message: `ent`, `q`, `sort$`, an operator, a canon part.
    EntityInvalid = "entity_invalid", 400, false;
    /// A save that would make the store hold more entity kinds (base and name pairs, each a
    /// table) than `[data] max_kinds` allows.
    EntityKindsFull = "entity_kinds_full", 507, false;
    /// A malformed cache message (`key` missing or not a string, `val` missing on set).
    CacheInvalid = "cache_invalid", 400, false;
    /// A cache `add` of a key that is already cached (@seneca/cache's code).
    KeyExists = "key_exists", 500, false;
    /// A cache `incr`/`decr` with or of something that is not a number (@seneca/cache's code).
    OpFailedNan = "op_failed_nan", 500, false;
    /// A cached value that is not JSON text.
    NotJson = "not_json", 500, false;
    /// The entity store or the cache cannot be reached; retrying later may work.
    StoreUnavailable = "store_unavailable", 503, false;
    /// The store answered with an error that is not the caller's fault.
    StoreFailed = "store_failed", 500, false;
    /// A store URL that cannot be opened.
    StoreUrlInvalid = "store_url_invalid", 500, false;
}

impl Code {
    /// The code whose wire text is `code`, if the host has one.
    pub fn of(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text quoted in an error message, cut after 120 characters so an error never echoes an
/// unbounded input.
pub fn clip(text: &str) -> Cow<'_, str> {
    const SHOWN: usize = 120;
    match text.char_indices().nth(SHOWN) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}… ({} more bytes)", &text[..at], text.len() - at)),
    }
}

/// `error` and the causes beneath it, joined by `: `. A client library's top error says what
/// failed ("error sending request for url (...)"), only its sources say why (the connection
/// was refused, no trusted CA signed the certificate); a cause whose text the line holds
/// already is not said twice.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = source.source();
    }
    line
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

impl AsRef<ActError> for ActError {
    fn as_ref(&self) -> &ActError {
        self
    }
}

impl ActError {
    /// An error with any code (a plugin's or a remote service's) and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: None,
            status: None,
        }
    }

    /// An error the host itself answers with.
    pub fn host(code: Code, message: impl Into<String>) -> Self {
        Self::new(code.as_str(), message)
    }

    /// True if the error has this host code.
    pub fn is(&self, code: Code) -> bool {
        self.code == code.as_str()
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

    /// Seneca's `act_not_found`, naming the message (without its meta keys).
    pub fn not_found(clean: &Map<String, Value>) -> Self {
        let shown = clip(&Value::Object(clean.clone()).to_string()).into_owned();
        Self::host(
            Code::ActNotFound,
            format!(
                "No matching action pattern found for {shown}, and no default result provided (using a default$ property)."
            ),
        )
    }

    /// Seneca's `action_timeout`.
    pub fn timeout(pattern: &str, after: Duration) -> Self {
        Self::host(
            Code::ActionTimeout,
            format!(
                "[TIMEOUT] Action {pattern} timed out after {} ms.",
                after.as_millis()
            ),
        )
        .with_details(
            serde_json::json!({ "pattern": pattern, "timeout": after.as_millis() as u64 }),
        )
    }

    /// The explicit status, when it is one an HTTP answer can carry.
    fn explicit_status(&self) -> Option<u16> {
        self.status.filter(|s| (400..600).contains(s))
    }

    /// The HTTP status for this error on REST: the plugin's own, else the code's, else 500.
    pub fn http_status(&self) -> u16 {
        self.explicit_status()
            .or_else(|| Code::of(&self.code).map(Code::status))
            .unwrap_or(500)
    }

    /// The HTTP status for this error on Seneca's HTTP transport: the plugin's own, else 500
    /// for Seneca's own codes (as Node answers them), else the code's, else 500.
    pub fn transport_status(&self) -> u16 {
        self.explicit_status()
            .or_else(|| {
                Code::of(&self.code)
                    .filter(|c| !c.seneca())
                    .map(Code::status)
            })
            .unwrap_or(500)
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
            code: field("code")
                .unwrap_or(Code::ActExecute.as_str())
                .to_owned(),
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

    #[test]
    fn codes_have_their_text_and_status_and_are_found_by_text() {
        for code in Code::ALL {
            assert_eq!(Code::of(code.as_str()), Some(*code));
            assert!((400..600).contains(&code.status()), "{code}");
        }
        assert_eq!(Code::of("nope"), None);
        assert_eq!(Code::ActNotFound.to_string(), "act_not_found");
    }

    #[test]
    fn errors_have_seneca_shape_and_status() {
        let e = ActError::not_found(json!({"cmd": "nope"}).as_object().unwrap());
        assert!(e.is(Code::ActNotFound));
        assert!(
            e.message
                .starts_with("No matching action pattern found for {\"cmd\":\"nope\"}"),
            "{}",
            e.message
        );
        assert_eq!(e.http_status(), 404);
        assert_eq!(
            e.transport_status(),
            500,
            "Seneca answers act_not_found with 500"
        );
        assert_eq!(
            ActError::timeout("cmd:x", Duration::from_millis(5)).http_status(),
            504
        );
        assert_eq!(ActError::new("boom", "x").http_status(), 500);
        assert_eq!(
            ActError::new("missing", "x").with_status(404).http_status(),
            404
        );
        let closed = ActError::host(Code::Closed, "bye");
        assert_eq!(
            (closed.http_status(), closed.transport_status()),
            (503, 503)
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
        assert!(ActError::from_seneca_json(&json!({})).is(Code::ActExecute));
    }

    #[test]
    fn clip_quotes_at_most_120_characters_and_says_how_much_more() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(500);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"é".repeat(120)), "{clipped}");
        assert!(clipped.ends_with("… (760 more bytes)"), "{clipped}");
    }

    #[test]
    fn chain_says_each_cause_once() {
        /// An error with a text and, maybe, a cause.
        #[derive(Debug)]
        struct Failed(&'static str, Option<Box<Failed>>);
        impl fmt::Display for Failed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Failed {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let root = Failed("UnknownIssuer", None);
        let said = Failed(
            "client error (Connect): UnknownIssuer",
            Some(Box::new(root)),
        );
        let top = Failed("error sending request", Some(Box::new(said)));
        assert_eq!(
            chain(&top),
            "error sending request: client error (Connect): UnknownIssuer"
        );
        assert_eq!(chain(&Failed("alone", None)), "alone");
    }

    #[test]
    fn not_found_does_not_echo_a_huge_message() {
        let big = json!({"cmd": "x".repeat(100_000)});
        let e = ActError::not_found(big.as_object().unwrap());
        assert!(e.message.len() < 400, "{}", e.message.len());
    }
}
