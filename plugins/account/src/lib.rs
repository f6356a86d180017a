//! `account@1.0.0`: `cmd:login` answers `{code: 1000}` for username `asd` and pass `123`, and
//! `{code: 2100}` for anything else (the codes `config` describes).

use wasmeca_sdk::{Msg, Plugin, Result, Value, json};

/// A field as text, whether it came as a string or (from jsonic `pass:123`) a number.
fn text(msg: &Msg, key: &str) -> Option<String> {
    match msg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("account", "1.0.0")
        .add("cmd:login", |_, msg| {
            let ok = text(msg, "username").as_deref() == Some("asd") && text(msg, "pass").as_deref() == Some("123");
            Ok(json!({ "code": if ok { 1000 } else { 2100 } }))
        })
        .example(json!({ "cmd": "login", "username": "asd", "pass": "123" })))
}

wasmeca_sdk::export!(plugin);
