//! `{{name}}`: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
//! `GET /{{name}}/hello?name=...`.

use wasmeca_sdk::{Msg, Plugin, Result, json};

fn plugin(_options: &Msg) -> Result<Plugin<u64>> {
    Ok(Plugin::with_state("{{name}}", "0.1.0", 0)
        .add("role:{{name}},cmd:hello", |count, msg| {
            *count += 1;
            // From the message, or from the query string over REST.
            let from_query = msg.query("name").and_then(|v| v.as_str());
            let name = msg.str("name").or(from_query).unwrap_or("World");
            wasmeca_sdk::info!("greeting {name}");
            Ok(json!({ "message": format!("Hello {name}!"), "count": *count }))
        })
        .example(json!({ "role": "{{name}}", "cmd": "hello", "name": "World" }))
        .routes(json!({ "prefix": "/{{name}}", "pin": "role:{{name}},cmd:*", "map": { "hello": true } })))
}

wasmeca_sdk::export!(plugin);
