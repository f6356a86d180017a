//! `salute@1.0.0`: `cmd:salute` answers `{id, message: "Hello <name>!"}`; `id` counts the
//! greetings this instance has made, so it shows that state survives between calls.

use serde::Serialize;
use wasmeca_sdk::{Msg, Plugin, Result, json};

/// The answer.
#[derive(Serialize)]
struct Greeting {
    /// Greetings made by this instance so far.
    id: u64,
    /// "Hello <name>!".
    message: String,
}

fn plugin(_options: &Msg) -> Result<Plugin<u64>> {
    Ok(Plugin::with_state("salute", "1.0.0", 0)
        .add("cmd:salute", |count, msg| {
            *count += 1;
            let name = msg.str("name").unwrap_or("World");
            Ok(Greeting { id: *count, message: format!("Hello {name}!") })
        })
        .example(json!({ "cmd": "salute", "name": "World" })))
}

wasmeca_sdk::export!(plugin);
