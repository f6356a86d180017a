//! `{{name}}`: a wasmeca plugin. `role:{{name}},cmd:hello` answers a greeting; over REST it is
//! `GET /{{name}}/hello?name=...`. Each greeting publishes the event `evt:{{name}},cmd:greeted`;
//! the observer below hears it and keeps the greeting in the host's entity store, which outlives
//! the instance: `role:{{name}},cmd:greetings` (`GET /{{name}}/greetings`) lists them.

use wasmeca_sdk::{Msg, Plugin, Result, entity, json};

fn plugin(_options: &Msg) -> Result<Plugin<u64>> {
    // Greetings, in the host's entity store (base `{{name}}`, name `greeting`).
    let greetings = entity("{{name}}/greeting");
    let stored = greetings.clone();
    Ok(Plugin::with_state("{{name}}", "0.1.0", 0)
        .add("role:{{name}},cmd:hello", |count, msg| {
            *count += 1;
            // From the message, or from the query string over REST.
            let from_query = msg.query("name").and_then(|v| v.as_str());
            let name = msg.str("name").or(from_query).unwrap_or("World");
            wasmeca_sdk::info!("greeting {name}");
            wasmeca_sdk::publish(json!({ "evt": "{{name}}", "cmd": "greeted", "name": name }))?;
            Ok(json!({ "message": format!("Hello {name}!"), "count": *count }))
        })
        .example(json!({ "role": "{{name}}", "cmd": "hello", "name": "World" }))
        .add("role:{{name}},cmd:greetings", move |_, _| {
            greetings.list(json!({ "sort$": { "name": 1 } }))
        })
        // An observer: an error has the event delivered again.
        .observe("evt:{{name}},cmd:greeted", move |_, event| {
            stored.save(json!({ "name": event.str("name") }))?;
            Ok(())
        })
        .routes(json!({ "prefix": "/{{name}}", "pin": "role:{{name}},cmd:*", "map": { "hello": true, "greetings": true } })))
}

wasmeca_sdk::export!(plugin);
