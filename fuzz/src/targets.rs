//! The fuzz targets: for each parser of outside input, how to build a structured input and what
//! must hold for any input (no panic, and the target's own properties, such as a pattern
//! parsing back from what it prints).

use std::sync::Arc;

use fastrand::Rng;
use serde_json::{Map, Value, json};
use wasmeca::gateway::routes;
use wasmeca::gateway::table::{RouteSource, RouteTable};
use wasmeca::message::Reply;
use wasmeca::metrics::Metrics;
use wasmeca::pattern::{self, Patrun, Pattern};
use wasmeca::plugins::check_manifest;
use wasmeca::runtime::{Manifest, ManifestAction};
use wasmeca::transport::amqp::wire::{self, Command};
use wasmeca::{ActError, Code, Message};

use crate::inputs;

/// One fuzz target.
pub struct Target {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// What it feeds and to what, for `--list`.
    pub about: &'static str,
    /// Builds a structured input (the runner may mutate it).
    pub generate: fn(&mut Rng) -> Vec<u8>,
    /// Runs one input; `Err` says which property broke. A panic is caught by the runner.
    pub check: fn(&[u8]) -> Result<(), String>,
}

/// Every target, in the order reports list them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "jsonic",
        about: "jsonic texts into parse_jsonic, parse_jsonic_pairs, parse_message and \
                Pattern::parse; a parsed pattern prints as text that parses back to it",
        generate: |rng| inputs::jsonic(rng).into_bytes(),
        check: check_jsonic,
    },
    Target {
        name: "pattern",
        about: "random patterns over awkward keys and values: parse(display(p)) == p, and the \
                trie finds what it stored",
        generate: generate_pattern,
        check: check_pattern,
    },
    Target {
        name: "message",
        about: "JSON and jsonic messages into Message::parse / serde, then every meta accessor \
                (timeout$, $version, id$, $target) and Reply::from_json",
        generate: generate_message,
        check: check_message,
    },
    Target {
        name: "amqp",
        about: "AMQP request envelopes into Command::decode, the reply and refusal envelopes, \
                read_reply, and the routing and binding keys of the pins they carry",
        generate: generate_envelope,
        check: check_envelope,
    },
    Target {
        name: "routes",
        about: "seneca-web route maps into routes::compile and RouteTable::build, then lookups \
                of random paths",
        generate: generate_routes,
        check: check_routes,
    },
    Target {
        name: "manifest",
        about: "plugin manifests (name, version, patterns, examples, route maps, observers) \
                into check_manifest",
        generate: generate_manifest,
        check: check_manifest_input,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Fails with `what` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// JSON equality, except that floats may differ in their last bits: serde_json (without its
/// `float_roundtrip` feature, which wasmeca does not enable) reads some floats one ulp off.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => same_map(x, y),
        _ => a == b,
    }
}

/// [`same_json`] for objects.
fn same_map(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
}

/// The round-trip property: what a pattern prints parses back to the same pattern.
fn round_trips(p: &Pattern) -> Result<(), String> {
    let shown = p.to_string();
    match Pattern::parse(&shown) {
        Ok(back) if back == *p => Ok(()),
        Ok(back) => Err(format!(
            "pattern {:?} prints as {shown:?}, which parses to {:?}",
            p.pairs(),
            back.pairs()
        )),
        Err(e) => Err(format!(
            "pattern {:?} prints as {shown:?}, which does not parse: {e}",
            p.pairs()
        )),
    }
}

fn check_jsonic(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let parsed = pattern::parse_jsonic(&text);
    let pairs = pattern::parse_jsonic_pairs(&text);
    ensure(parsed.is_ok() == pairs.is_ok(), || {
        "parse_jsonic and parse_jsonic_pairs disagree".into()
    })?;
    if let Ok(map) = &parsed {
        // What the host sends on for a parsed message must be JSON a peer's parser accepts.
        let json = serde_json::to_string(map).map_err(|e| format!("does not serialise: {e}"))?;
        let back: Result<Map<String, Value>, _> = serde_json::from_str(&json);
        ensure(back.as_ref().is_ok_and(|b| same_map(b, map)), || {
            format!(
                "its JSON {} does not read back: {back:?}",
                wasmeca::error::clip(&json)
            )
        })?;
    }
    let _ = pattern::parse_message(&text);
    let _ = Message::parse(&text);
    if let Ok(p) = Pattern::parse(&text) {
        round_trips(&p)?;
        let mut trie = Patrun::new();
        trie.add(&p, 1u8);
        ensure(trie.list().len() == 1, || "one pattern lists once".into())?;
        let _ = trie.find(&p);
    }
    Ok(())
}

/// Awkward text for keys and values: a few pieces from the jsonic alphabet.
fn awkward(rng: &mut Rng) -> String {
    (0..rng.usize(0..5))
        .map(|_| {
            inputs::pick(
                rng,
                &[
                    "a", "cmd", "1", "01", "0x1", "1.0", "1e21", "-", "+1", ".5", "null", "true",
                    "*", "?", " ", ",", ":", "{", "}", "[", "]", "'", "\"", "`", "\\", "#", "//",
                    "/*", "*/", "/", "\n", "\u{0}", "\u{7f}", "é", "😀", "\u{2028}", "\u{a0}", "_",
                    "NaN", "Infinity",
                ],
            )
        })
        .collect()
}

/// A pattern as JSON: `{key: value}` with string, number and boolean values.
fn generate_pattern(rng: &mut Rng) -> Vec<u8> {
    let mut map = Map::new();
    for _ in 0..rng.usize(0..5) {
        let value = match rng.u8(..6) {
            0 => Value::from(rng.i64(..)),
            1 => serde_json::Number::from_f64(f64::from_bits(rng.u64(..)))
                .map_or(Value::Null, Value::Number),
            2 => Value::Bool(rng.bool()),
            _ => Value::String(awkward(rng)),
        };
        map.insert(awkward(rng), value);
    }
    serde_json::to_vec(&map).unwrap_or_default()
}

fn check_pattern(data: &[u8]) -> Result<(), String> {
    let Ok(map) = serde_json::from_slice::<Map<String, Value>>(data) else {
        // A mutated input that is no longer a JSON object still goes through the parser.
        return check_jsonic(data);
    };
    let Ok(p) = Pattern::from_object(&map) else {
        return Ok(());
    };
    round_trips(&p)?;
    let mut trie = Patrun::new();
    trie.add(&p, 7u8);
    let listed = trie.list();
    ensure(listed.len() == 1 && listed[0].0 == p, || {
        format!(
            "the trie lists {:?} for {:?}",
            listed.first().map(|l| l.0.pairs()),
            p.pairs()
        )
    })?;
    // The pattern's own values, as a message, find it (globs are tested against the text).
    let msg: Map<String, Value> = p
        .pairs()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let glob_literal = p
        .pairs()
        .iter()
        .any(|(_, v)| v.contains("**") || v.contains("*?"));
    ensure(glob_literal || trie.find(&msg) == Some(&7), || {
        format!("the trie does not find {:?} for its own values", p.pairs())
    })
}

/// Makes a random value for one meta key.
type MakeValue = fn(&mut Rng) -> Value;

/// A message: JSON (or jsonic) with the meta keys routing reads.
fn generate_message(rng: &mut Rng) -> Vec<u8> {
    let mut map = inputs::object(rng, 3);
    let metas: [(&str, MakeValue); 6] = [
        ("timeout$", |rng| {
            inputs::pick(
                rng,
                &[
                    &json!(1e308),
                    &json!(-1),
                    &json!("x"),
                    &json!(u64::MAX),
                    &json!(0.5),
                ],
            )
            .clone()
        }),
        ("$version", |rng| {
            Value::String(
                inputs::pick(
                    rng,
                    &[
                        "1",
                        "^1.2",
                        ">=1, <2",
                        "1.x",
                        "*",
                        "",
                        "=1.0.0-pre+b",
                        "x",
                        "^^1",
                    ],
                )
                .to_owned(),
            )
        }),
        ("id$", |rng| {
            Value::String(format!(
                "{}/{}",
                inputs::unquoted_string(rng),
                inputs::unquoted_string(rng)
            ))
        }),
        ("tx$", |rng| inputs::json(rng, 1)),
        ("$target", |rng| inputs::json(rng, 1)),
        ("default$", |rng| inputs::json(rng, 2)),
    ];
    for (key, make) in metas {
        if rng.bool() {
            map.insert(key.to_owned(), make(rng));
        }
    }
    if rng.u8(..4) == 0 {
        inputs::jsonic(rng).into_bytes()
    } else {
        serde_json::to_vec(&map).unwrap_or_default()
    }
}

fn check_message(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let parsed = Message::parse(&text);
    let from_serde = serde_json::from_slice::<Message>(data);
    for mut msg in parsed.into_iter().chain(from_serde) {
        let _ = msg.timeout();
        let _ = msg.default_result();
        let _ = msg.act_id();
        let _ = msg.version_req();
        let _ = msg.target();
        let _ = msg.has_meta();
        let clean = msg.clean();
        ensure(!clean.keys().any(|k| k.ends_with('$')), || {
            "clean kept a meta key".into()
        })?;
        let json = msg.to_json();
        let back = serde_json::from_str::<Message>(&json);
        ensure(back.as_ref().is_ok_and(|b| same_map(b, &msg)), || {
            format!(
                "to_json does not read back: {}",
                wasmeca::error::clip(&json)
            )
        })?;
        let _ = msg.to_string();
        msg.strip_hidden();
    }
    if let Ok(reply) = Reply::from_json(text.into_owned()) {
        let _ = reply.to_value();
        let _ = reply.is_null();
    }
    Ok(())
}

/// An AMQP request envelope as Node's client publishes it (fields sometimes missing or wrong).
fn generate_envelope(rng: &mut Rng) -> Vec<u8> {
    let mut env = Map::new();
    let mut put = |rng: &mut Rng, key: &str, value: Value| {
        if rng.u8(..8) != 0 {
            env.insert(key.to_owned(), value);
        }
    };
    let id = Value::String(format!(
        "{}/{}",
        inputs::unquoted_string(rng),
        inputs::unquoted_string(rng)
    ));
    put(rng, "id", id);
    let kind = if rng.u8(..6) == 0 {
        inputs::json(rng, 1)
    } else {
        json!("act")
    };
    put(rng, "kind", kind);
    let origin = inputs::json(rng, 1);
    put(rng, "origin", origin);
    let track = if rng.bool() {
        json!(["o/1", "o/2"])
    } else {
        inputs::json(rng, 2)
    };
    put(rng, "track", track);
    let time = json!({ "client_sent": inputs::json(rng, 1) });
    put(rng, "time", time);
    let mut act = inputs::object(rng, 3);
    act.insert(
        "cmd".into(),
        Value::String(inputs::pick(rng, &["sum", "*", "a.b", "x y"]).to_owned()),
    );
    let act = if rng.u8(..10) == 0 {
        inputs::json(rng, 2)
    } else {
        Value::Object(act)
    };
    put(rng, "act", act);
    let sync = if rng.bool() {
        Value::Bool(rng.bool())
    } else {
        inputs::json(rng, 0)
    };
    put(rng, "sync", sync);
    let pat = Value::String(inputs::jsonic(rng));
    put(rng, "msg$", json!({ "pat": pat }));
    let mut bytes = serde_json::to_vec(&env).unwrap_or_default();
    if rng.u8(..50) == 0 {
        // A body over the echo limit.
        bytes.extend(std::iter::repeat_n(b' ', 5000 + rng.usize(..5000)));
    }
    bytes
}

fn check_envelope(data: &[u8]) -> Result<(), String> {
    // Replies echo at most 4 KiB of the input, plus the envelope around it.
    let bound = 4 * 1024 * 6 + 2048;
    match Command::decode(data) {
        Ok(command) => {
            let answers = [
                Ok(Reply::from_value(&json!({ "ok": true }))),
                Err(ActError::host(Code::ActNotFound, "no pattern")),
            ];
            for answer in &answers {
                let reply = command.echo.reply(answer, "me/1", 1, data);
                let value: Value = serde_json::from_slice(&reply)
                    .map_err(|e| format!("the reply envelope is not JSON: {e}"))?;
                ensure(value["kind"] == "res", || {
                    "the reply is not of kind res".into()
                })?;
                let read = wire::read_reply(&value);
                ensure(read.is_ok() == answer.is_ok(), || {
                    format!("read_reply reads {read:?} from the reply to {answer:?}")
                })?;
                if answer.is_err() {
                    ensure(reply.len() <= bound + data.len().min(bound), || {
                        format!(
                            "an error reply of {} bytes for {} bytes of input",
                            reply.len(),
                            data.len()
                        )
                    })?;
                }
            }
            let msg = command.msg;
            let _ = wire::event_routing_key(&msg);
            let pin_pairs: Map<String, Value> = msg
                .iter()
                .filter(|(k, _)| !k.ends_with('$'))
                .take(3)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Ok(pin) = Pattern::from_object(&pin_pairs) {
                let _ = wire::routing_key(&pin, &msg);
                let _ = wire::event_binding(&pin);
                let text = pin.to_string();
                let _ = wire::binding_key(&text);
                let _ = wire::queue_name("seneca.add", &[&text, "cmd:*"]);
            }
            if let Some(pat) = msg
                .get("msg$")
                .and_then(|m| m.get("pat"))
                .and_then(Value::as_str)
            {
                let _ = wire::binding_key(pat);
                let _ = wire::queue_name("seneca.add", &[pat]);
            }
        }
        Err(refusal) => {
            let reply = wire::refusal_reply(data, &refusal);
            let value: Value = serde_json::from_slice(&reply)
                .map_err(|e| format!("the refusal reply is not JSON: {e}"))?;
            ensure(value.get("error").is_some(), || {
                "the refusal reply has no error".into()
            })?;
            ensure(reply.len() <= bound, || {
                format!(
                    "a refusal reply of {} bytes for {} bytes of input",
                    reply.len(),
                    data.len()
                )
            })?;
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let _ = wire::read_reply(&value);
    }
    Ok(())
}

/// A seneca-web route map entry.
fn route_spec(rng: &mut Rng) -> Value {
    match rng.u8(..4) {
        0 => Value::Bool(rng.bool()),
        1 => inputs::json(rng, 1),
        _ => {
            let mut spec = Map::new();
            for verb in [
                "GET", "post", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "BREW",
            ] {
                if rng.u8(..4) == 0 {
                    spec.insert(verb.into(), Value::Bool(rng.bool()));
                }
            }
            for key in ["name", "suffix", "alias", "redirect"] {
                if rng.u8(..4) == 0 {
                    let s: String = (0..rng.usize(1..4)).map(|_| inputs::segment(rng)).collect();
                    spec.insert(key.into(), Value::String(s));
                }
            }
            if rng.u8(..4) == 0 {
                spec.insert("autoreply".into(), inputs::json(rng, 0));
            }
            Value::Object(spec)
        }
    }
}

/// Route sets as a plugin manifest carries them.
fn route_sets(rng: &mut Rng) -> Value {
    let sets: Vec<Value> = (0..rng.usize(0..4))
        .map(|_| {
            let pin = if rng.u8(..5) == 0 {
                inputs::json(rng, 1)
            } else {
                Value::String(inputs::jsonic(rng))
            };
            let map: Map<String, Value> = (0..rng.usize(0..5))
                .map(|_| {
                    let key = if rng.bool() {
                        inputs::segment(rng)
                    } else {
                        inputs::unquoted_string(rng)
                    };
                    (key, route_spec(rng))
                })
                .collect();
            let mut set = json!({ "pin": pin, "map": map });
            for key in ["prefix", "postfix"] {
                if rng.bool() {
                    let s: String = (0..rng.usize(1..4)).map(|_| inputs::segment(rng)).collect();
                    set[key] = Value::String(s);
                }
            }
            set
        })
        .collect();
    if sets.len() == 1 && rng.bool() {
        sets[0].clone()
    } else {
        Value::Array(sets)
    }
}

fn generate_routes(rng: &mut Rng) -> Vec<u8> {
    serde_json::to_vec(&route_sets(rng)).unwrap_or_default()
}

thread_local! {
    /// Route metrics are registered per path; a fresh registry now and then keeps a long run
    /// from growing without bound.
    static METRICS: std::cell::RefCell<(u32, Arc<Metrics>)> =
        std::cell::RefCell::new((0, Arc::new(Metrics::default())));
}

/// A metrics registry, replaced every 256 uses.
fn metrics() -> Arc<Metrics> {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        m.0 += 1;
        if m.0 % 256 == 0 {
            m.1 = Arc::new(Metrics::default());
        }
        m.1.clone()
    })
}

fn check_routes(data: &[u8]) -> Result<(), String> {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return Ok(());
    };
    let sets = match value {
        Value::Array(sets) => sets,
        other => vec![other],
    };
    for set in &sets {
        let (compiled, _) = routes::compile(set, "fuzz");
        for route in &compiled {
            ensure(route.path.starts_with('/'), || {
                format!("route path {:?} is not absolute", route.path)
            })?;
        }
    }
    let version = semver::Version::new(1, 2, 3);
    let sources = [
        RouteSource {
            owner: "one",
            version: Some(&version),
            sets: &sets,
        },
        RouteSource {
            owner: "two",
            version: None,
            sets: &sets,
        },
    ];
    let metrics = metrics();
    let (table, _conflicts, _warnings) = RouteTable::build(&sources, &metrics);
    let paths: Vec<String> = table.routes().map(|r| r.path.clone()).collect();
    for path in paths.iter().take(8) {
        let concrete = path.replace(':', "");
        for method in [
            axum::http::Method::GET,
            axum::http::Method::HEAD,
            axum::http::Method::POST,
        ] {
            let _ = table.find(&method, path);
            let _ = table.find(&method, &concrete);
        }
    }
    for path in ["/", "", "//", "/user/7", "/v1/user/%ZZ", "/%F0%9F%98%80"] {
        let _ = table.find(&axum::http::Method::GET, path);
    }
    let _ = routes::join_path(&paths.iter().map(String::as_str).collect::<Vec<_>>());
    Ok(())
}

/// A manifest, encoded as JSON so mutations reach every field.
fn generate_manifest(rng: &mut Rng) -> Vec<u8> {
    let decl = |rng: &mut Rng| {
        let example = match rng.u8(..4) {
            0 => Value::Null,
            1 => Value::String(inputs::jsonic(rng)),
            _ => Value::String(inputs::json(rng, 2).to_string()),
        };
        json!([inputs::jsonic(rng), example])
    };
    let actions: Vec<Value> = (0..rng.usize(0..5)).map(|_| decl(rng)).collect();
    let observers: Vec<Value> = (0..rng.usize(0..3)).map(|_| decl(rng)).collect();
    let name = inputs::pick(
        rng,
        &["salute", "@scope/x", "a.b~c_d-e", "", "1x", "x y", "é"],
    )
    .to_owned();
    let version = inputs::pick(
        rng,
        &["1.0.0", "0.1.0-pre.1+b", "1", "1.0", "x", "", "01.0.0"],
    )
    .to_owned();
    let routes = if rng.u8(..5) == 0 {
        Value::String(inputs::pick(rng, &["", "null", "[", "1", "{}", "[1]"]).to_owned())
    } else {
        Value::String(route_sets(rng).to_string())
    };
    serde_json::to_vec(&json!({
        "name": name, "version": version, "actions": actions, "routes": routes, "observers": observers
    }))
    .unwrap_or_default()
}

/// Reads declarations `[[pattern, example?], ...]`.
fn declarations(value: &Value) -> Vec<ManifestAction> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| ManifestAction {
            pattern: d[0].as_str().unwrap_or_default().to_owned(),
            example: d[1].as_str().map(str::to_owned),
        })
        .collect()
}

fn check_manifest_input(data: &[u8]) -> Result<(), String> {
    let manifest = match serde_json::from_slice::<Value>(data) {
        Ok(v) => Manifest {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            version: v["version"].as_str().unwrap_or_default().to_owned(),
            actions: declarations(&v["actions"]),
            routes: v["routes"].as_str().unwrap_or_default().to_owned(),
            observers: declarations(&v["observers"]),
        },
        // Broken JSON still makes a manifest: its text split into the fields.
        Err(_) => {
            let text = String::from_utf8_lossy(data);
            let mut parts = text.splitn(4, '"');
            let mut next = || parts.next().unwrap_or_default().to_owned();
            let (name, version, pattern, routes) = (next(), next(), next(), next());
            Manifest {
                name,
                version,
                actions: vec![ManifestAction {
                    pattern,
                    example: None,
                }],
                routes,
                observers: Vec::new(),
            }
        }
    };
    if let Ok(checked) = check_manifest(&manifest) {
        for decl in checked.actions.iter().chain(&checked.observers) {
            round_trips(&decl.pattern)?;
        }
        let sources = [RouteSource {
            owner: "m",
            version: Some(&checked.version),
            sets: &checked.routes,
        }];
        let _ = RouteTable::build(&sources, &metrics());
    }
    Ok(())
}
