//! seneca-amqp-transport's wire, pure (SENECA.md §4): binding keys, queue names and routing
//! keys as Node derives them, and the request and reply envelopes — decoded into a message for
//! the ingress step, and encoded from an answer. No I/O.

use serde_json::{Map, Value, json};

use crate::error::{ActError, Code};
use crate::message::{self, Message, Reply, json_kind};
use crate::pattern::{self, Pattern, PatternError, match_string};

/// Escapes a word of a binding or routing key the way seneca-amqp-transport does.
fn escape(word: &str) -> String {
    word.replace('.', "[:dot:]")
}

/// The binding key of a pin: keys sorted, `key.value` joined by `.`, dots escaped, `*` kept
/// (AMQP's one-word wildcard): `role:user,cmd:*` → `cmd.*.role.user`.
pub fn binding_key(pin: &str) -> Result<String, PatternError> {
    let pattern = Pattern::parse(pin)?;
    Ok(pattern
        .pairs()
        .iter()
        .map(|(k, v)| format!("{}.{}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("."))
}

/// The queue Node's listener derives from its pins: `<prefix>.` then `key:value` parts grouped
/// by key in written order, several values of one key joined with `_`, and `*` written `any`
/// when a key has one value: `role:user,cmd:*` → `seneca.add.role:user.cmd:any`.
pub fn queue_name(prefix: &str, pins: &[&str]) -> Result<String, PatternError> {
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for pin in pins {
        for (key, value) in pattern::parse_jsonic_pairs(pin)? {
            if value.is_null() || key.ends_with('$') {
                continue;
            }
            let value = match_string(Some(&value)).into_owned();
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => keys.push((key, vec![value])),
            }
        }
    }
    let parts = keys
        .into_iter()
        .map(|(key, values)| match values.as_slice() {
            [one] if one == "*" => format!("{key}:any"),
            _ => format!("{key}:{}", values.join("_")),
        });
    Ok(std::iter::once(prefix.to_owned())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("."))
}

/// The routing key Node's client publishes with: the matched pin's keys, sorted, with the
/// message's values (the pin's value when the message's is falsy):
/// pin `cmd:*,role:user` and `{cmd: "create", role: "user"}` → `cmd.create.role.user`.
pub fn routing_key(pin: &Pattern, msg: &Map<String, Value>) -> String {
    let falsy = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    pin.pairs()
        .iter()
        .map(|(key, pinned)| {
            let value = match msg.get(key) {
                Some(v) if !falsy(v) => match_string(Some(v)).into_owned(),
                _ => pinned.clone(),
            };
            format!("{}.{}", escape(key), escape(&value))
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The longest routing key AMQP carries, in bytes.
const MAX_ROUTING_KEY: usize = 255;

/// The routing key of an event whose pairs do not fit in [`MAX_ROUTING_KEY`]: every event
/// queue is bound to it, and each host filters such events itself. No event's pairs produce
/// it (a pair is at least two words).
pub const OVERFLOW_KEY: &str = "[:overflow:]";

/// The routing key of an event: all its pairs but meta keys (ending in `$`, which patterns
/// never name), sorted by key, as `key.value`
/// words (values as patrun compares them, dots escaped), so that the binding of any observer
/// pattern it matches also matches the key: `{evt: "user", cmd: "created", id: 7}` →
/// `cmd.created.evt.user.id.7`. Over 255 bytes it is [`OVERFLOW_KEY`].
pub fn event_routing_key(event: &Map<String, Value>) -> String {
    let mut pairs: Vec<(&String, &Value)> =
        event.iter().filter(|(k, _)| !k.ends_with('$')).collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut key = String::new();
    for (k, v) in pairs {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(&escape(k));
        key.push('.');
        key.push_str(&escape(&match_string(Some(v))));
        if key.len() > MAX_ROUTING_KEY {
            return OVERFLOW_KEY.to_owned();
        }
    }
    key
}

/// The binding key of an observer pattern on the events exchange: its pairs as `key.value`
/// words in key order, with `#` (any words) between and around them, and `*` for a glob
/// value: `evt:user,cmd:cre*` → `#.cmd.*.#.evt.user.#`; the catch-all `{}` → `#`. It matches
/// the routing key of every event the pattern matches (and maybe a few more, which the host
/// filters).
pub fn event_binding(pattern: &Pattern) -> String {
    let mut key = String::from("#");
    for (k, v) in pattern.pairs() {
        let word = if pattern::Glob::is_glob(v) {
            "*".to_owned()
        } else {
            escape(v)
        };
        key.push('.');
        key.push_str(&escape(k));
        key.push('.');
        key.push_str(&word);
        key.push_str(".#");
    }
    key
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A random uuid v4, as Node's client makes correlation ids.
pub fn uuid_v4() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][fastrand::usize(..4)],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A command the listener cannot take: it is dead-lettered, and answered with this error when
/// it has a reply queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The error code of the reply.
    pub code: Code,
    /// Why, for the log and the reply.
    pub reason: String,
}

/// A command as the listener reads it from a delivery.
#[derive(Debug)]
pub struct Command {
    /// The envelope's `id` (`mi/tx`): the history key.
    pub id: Option<String>,
    /// False for a fire-and-forget command (`sync: false`), which needs no reply queue.
    pub sync: bool,
    /// The message to act: `act` plus `id$` and `transport$`.
    pub msg: Message,
    /// What the reply echoes.
    pub echo: Echo,
}

/// The parts of a request envelope its reply echoes.
#[derive(Debug)]
pub struct Echo {
    /// The envelope fields a reply repeats (`id`, `origin`, `track`, `sync`).
    fields: Map<String, Value>,
    /// `time.client_sent`, repeated in the reply's `time`.
    client_sent: Value,
}

impl Command {
    /// Reads an envelope: a JSON object of kind `act` with an `act` object.
    pub fn decode(data: &[u8]) -> Result<Self, Refusal> {
        let refused = |code, reason| Refusal { code, reason };
        let mut env = match serde_json::from_slice::<Value>(data) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(refused(
                    Code::InvalidJson,
                    format!("the envelope is {}, not an object", json_kind(&other)),
                ));
            }
            Err(e) => {
                return Err(refused(
                    Code::InvalidJson,
                    format!("the envelope is not JSON: {e}"),
                ));
            }
        };
        match env.get("kind").and_then(Value::as_str) {
            Some("act") => {}
            other => {
                return Err(refused(
                    Code::InvalidKindAct,
                    format!(
                        "the envelope's kind is {}, not \"act\"",
                        other.map_or("missing".into(), |k| format!("{k:?}"))
                    ),
                ));
            }
        }
        let Some(Value::Object(mut act)) = env.remove("act") else {
            return Err(refused(
                Code::InvalidAct,
                "the envelope has no `act` object".into(),
            ));
        };
        let id = env.get("id").and_then(Value::as_str).map(str::to_owned);
        let track = env.get("track").cloned().unwrap_or_else(|| json!([]));
        let origin = env.get("origin").cloned().unwrap_or(Value::Null);
        let client_sent = env
            .get("time")
            .and_then(|t| t.get("client_sent"))
            .cloned()
            .unwrap_or(json!(0));
        let sync = env.get("sync").and_then(Value::as_bool) != Some(false);
        if let Some(id) = &id {
            act.insert(message::ID.into(), Value::String(id.clone()));
        }
        act.insert(
            "transport$".into(),
            json!({ "track": track, "origin": origin, "time": { "client_sent": client_sent } }),
        );
        let fields = ["id", "origin", "track", "sync"]
            .into_iter()
            .filter_map(|k| env.remove(k).map(|v| (k.to_owned(), v)))
            .collect();
        Ok(Self {
            id,
            sync,
            msg: Message::new(act),
            echo: Echo {
                fields,
                client_sent,
            },
        })
    }
}

impl Echo {
    /// The reply envelope for `answer` to the command read from `data`, from the listener `me`
    /// that received it at `received` (ms). An error reply carries the message as `input`, as
    /// Node's does (read again from `data`: only failures pay for it).
    pub fn reply(
        &self,
        answer: &Result<Reply, ActError>,
        me: &str,
        received: u64,
        data: &[u8],
    ) -> Vec<u8> {
        let mut reply = self.fields.clone();
        reply.insert("kind".into(), json!("res"));
        reply.insert("accept".into(), Value::String(me.to_owned()));
        reply.insert(
            "time".into(),
            json!({ "client_sent": self.client_sent, "listen_recv": received, "listen_sent": now_ms() }),
        );
        match answer {
            Ok(res) => {
                // The answer is JSON text already: spliced in as it is, not parsed again.
                let mut text = to_json(&reply);
                text.pop(); // the closing brace of a non-empty object
                text.extend_from_slice(b",\"res\":");
                text.extend_from_slice(res.as_str().as_bytes());
                text.push(b'}');
                return text;
            }
            Err(e) => {
                // Node sets both: a client must check `error` first.
                let error = e.to_seneca_json();
                reply.insert("res".into(), error.clone());
                reply.insert("error".into(), error);
                let input = echo_input(data, || {
                    let msg = Command::decode(data).ok()?.msg;
                    Some(Value::Object(msg.into_map()))
                });
                reply.insert("input".into(), input);
            }
        }
        to_json(&reply)
    }
}

/// An envelope's JSON text, written by serde (`Value`'s `Display` goes through a formatter
/// call per token).
fn to_json(envelope: &impl serde::Serialize) -> Vec<u8> {
    // JSON values and maps of them always serialise.
    serde_json::to_vec(envelope).unwrap_or_default()
}

/// The most of a refused or failed command an error reply echoes back as its `input`; a larger
/// one is echoed as the start of its text, with a marker, so an error reply is never as big as
/// the input that caused it.
const MAX_ECHO: usize = 4 * 1024;

/// The `input` of an error reply: the command as JSON when it is small, else its clipped text.
fn echo_input(data: &[u8], whole: impl FnOnce() -> Option<Value>) -> Value {
    if data.len() > MAX_ECHO {
        let text = String::from_utf8_lossy(&data[..MAX_ECHO]);
        return Value::String(format!("{text}… ({} more bytes)", data.len() - MAX_ECHO));
    }
    whole().unwrap_or_else(|| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// The reply to a refused delivery: only `{input, error}`, as Node answers one.
pub fn refusal_reply(data: &[u8], refusal: &Refusal) -> Vec<u8> {
    let input = echo_input(data, || serde_json::from_slice::<Value>(data).ok());
    let error = ActError::host(refusal.code, refusal.reason.clone()).to_seneca_json();
    to_json(&json!({ "input": input, "error": error }))
}

/// The request envelope Node's client publishes: id, kind, origin, track, time, the cleaned
/// message, and whether a reply is awaited.
pub fn request(msg: &Message, id: &str, origin: &str, sync: bool) -> Vec<u8> {
    to_json(&json!({
        "id": id,
        "kind": "act",
        "origin": origin,
        "track": [origin],
        "time": { "client_sent": now_ms() },
        "act": msg.clean(),
        "sync": sync,
    }))
}

/// A reply envelope as an answer: `error` first, then `res`.
pub fn read_reply(envelope: &Value) -> Result<Reply, ActError> {
    if let Some(error) = envelope.get("error").filter(|e| !e.is_null()) {
        return Err(ActError::from_seneca_json(error));
    }
    let res = envelope.get("res").cloned().unwrap_or(Value::Null);
    Ok(match res {
        v @ (Value::Object(_) | Value::Array(_)) => Reply::from_value(&v),
        _ => Reply::from_value(&Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_hold_every_pair_sorted_and_bindings_match_them() {
        let event = |v: Value| v.as_object().cloned().unwrap();
        let key = event_routing_key(&event(
            json!({"evt": "user", "cmd": "created", "id": 7, "tx$": "t", "host": "a.b"}),
        ));
        assert_eq!(key, "cmd.created.evt.user.host.a[:dot:]b.id.7");
        let binding = |p: &str| event_binding(&Pattern::parse(p).unwrap());
        assert_eq!(
            binding("evt:user,cmd:created"),
            "#.cmd.created.#.evt.user.#"
        );
        assert_eq!(binding("evt:user,cmd:cre*"), "#.cmd.*.#.evt.user.#");
        assert_eq!(binding(""), "#");
        // A topic match, as RabbitMQ does it: `*` one word, `#` zero or more.
        fn topic(binding: &[&str], key: &[&str]) -> bool {
            match (binding.split_first(), key.split_first()) {
                (None, None) => true,
                (Some((&"#", rest)), _) => {
                    topic(rest, key) || key.split_first().is_some_and(|(_, k)| topic(binding, k))
                }
                (Some((&"*", rest)), Some((_, k))) => topic(rest, k),
                (Some((b, rest)), Some((w, k))) => b == w && topic(rest, k),
                _ => false,
            }
        }
        let words = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        let matches = |b: &str, k: &str| {
            let (b, k) = (words(b), words(k));
            topic(
                &b.iter().map(String::as_str).collect::<Vec<_>>(),
                &k.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        };
        for pattern in [
            "evt:user",
            "cmd:created,evt:user",
            "id:7",
            "evt:u*,host:*",
            "",
        ] {
            assert!(
                matches(&binding(pattern), &key),
                "{pattern} should reach {key}"
            );
        }
        assert!(!matches(&binding("evt:user,cmd:removed"), &key));
        assert!(!matches(&binding("evt:user,zone:eu"), &key));
        // Too long for AMQP: every event queue takes it and the hosts filter.
        let long = event_routing_key(&event(json!({"evt": "x".repeat(300)})));
        assert_eq!(long, OVERFLOW_KEY);
    }

    #[test]
    fn binding_keys_sort_keys_and_escape_dots() {
        assert_eq!(binding_key("cmd:salute").unwrap(), "cmd.salute");
        assert_eq!(binding_key("role:user,cmd:*").unwrap(), "cmd.*.role.user");
        assert_eq!(binding_key("v:1.0,host:a.b").unwrap(), "host.a[:dot:]b.v.1");
    }

    #[test]
    fn queue_names_keep_the_written_order() {
        assert_eq!(
            queue_name("seneca.add", &["cmd:salute"]).unwrap(),
            "seneca.add.cmd:salute"
        );
        assert_eq!(
            queue_name("seneca.add", &["role:user,cmd:*"]).unwrap(),
            "seneca.add.role:user.cmd:any"
        );
        assert_eq!(
            queue_name("seneca.add", &["role:user,cmd:*", "cmd:salute"]).unwrap(),
            "seneca.add.role:user.cmd:*_salute"
        );
    }

    #[test]
    fn routing_keys_take_the_message_values() {
        let pin = Pattern::parse("role:user,cmd:*").unwrap();
        let msg = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            routing_key(
                &pin,
                &msg(json!({"role": "user", "cmd": "create", "name": "x"}))
            ),
            "cmd.create.role.user"
        );
        assert_eq!(
            routing_key(&pin, &msg(json!({"role": "user", "cmd": ""}))),
            "cmd.*.role.user"
        );
        assert_eq!(routing_key(&Pattern::default(), &msg(json!({"a": 1}))), "");
    }

    #[test]
    fn replies_check_error_before_res() {
        let err =
            read_reply(&json!({"res": {}, "error": {"code": "act_not_found", "message": "no"}}))
                .unwrap_err();
        assert!(err.is(Code::ActNotFound));
        assert_eq!(
            read_reply(&json!({"res": {"a": 1}})).unwrap().to_value(),
            json!({"a": 1})
        );
        assert!(read_reply(&json!({"res": 3})).unwrap().is_null());
    }

    #[test]
    fn correlation_ids_are_uuid_v4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn urls_lose_their_password_in_logs() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://…@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://localhost"), "amqp://localhost");
    }

    #[test]
    fn commands_decode_as_node_sends_them_and_replies_echo_the_envelope() {
        let data = json!({
            "id": "m/t", "kind": "act", "origin": "o", "track": ["o"],
            "time": {"client_sent": 5}, "act": {"cmd": "x"}, "sync": true,
        })
        .to_string();
        let command = Command::decode(data.as_bytes()).unwrap();
        assert_eq!(command.id.as_deref(), Some("m/t"));
        assert!(command.sync);
        let msg = Value::Object((*command.msg).clone());
        assert_eq!(msg["id$"], "m/t");
        assert_eq!(
            msg["transport$"],
            json!({"track": ["o"], "origin": "o", "time": {"client_sent": 5}})
        );
        let ok: Value = serde_json::from_slice(&command.echo.reply(
            &Ok(Reply::from_value(&json!({"a": 1}))),
            "me",
            7,
            data.as_bytes(),
        ))
        .unwrap();
        assert_eq!(
            (
                &ok["id"],
                &ok["kind"],
                &ok["accept"],
                &ok["res"],
                &ok["track"]
            ),
            (
                &json!("m/t"),
                &json!("res"),
                &json!("me"),
                &json!({"a": 1}),
                &json!(["o"])
            )
        );
        assert_eq!(ok["time"]["listen_recv"], 7);
        let failed: Value = serde_json::from_slice(&command.echo.reply(
            &Err(ActError::host(Code::ActNotFound, "no")),
            "me",
            7,
            data.as_bytes(),
        ))
        .unwrap();
        assert_eq!(failed["error"]["code"], "act_not_found");
        assert_eq!(failed["input"]["cmd"], "x");
        assert_eq!(failed["input"]["id$"], "m/t");
        let minimal = Command::decode(br#"{"kind":"act","act":{"a":1},"sync":false}"#).unwrap();
        assert!(!minimal.sync && minimal.id.is_none());
    }

    #[test]
    fn bad_envelopes_are_refused_with_codes() {
        let code = |data: &[u8]| Command::decode(data).unwrap_err().code;
        assert_eq!(code(b"{oops"), Code::InvalidJson);
        assert_eq!(code(b"[1]"), Code::InvalidJson);
        assert_eq!(code(br#"{"kind":"res","act":{}}"#), Code::InvalidKindAct);
        assert_eq!(code(br#"{"kind":"act","act":3}"#), Code::InvalidAct);
        let reply: Value = serde_json::from_slice(&refusal_reply(
            b"{oops",
            &Refusal {
                code: Code::InvalidJson,
                reason: "bad".into(),
            },
        ))
        .unwrap();
        assert_eq!(reply["input"], "{oops");
        assert_eq!(reply["error"]["code"], "invalid_json");
        // A big input is echoed clipped, so the reply stays small.
        let big = vec![b'x'; 1 << 20];
        let reply = refusal_reply(
            &big,
            &Refusal {
                code: Code::InvalidJson,
                reason: "bad".into(),
            },
        );
        assert!(reply.len() < 2 * MAX_ECHO, "{} bytes", reply.len());
    }
}
