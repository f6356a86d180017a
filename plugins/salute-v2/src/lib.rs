//! `salute@2.0.0`: the same pattern as 1.0.0 with a different answer, to serve both side by
//! side and pick one with `$version`.

use wasmeca_sdk::{Msg, Plugin, Result, json};

fn plugin(_options: &Msg) -> Result<Plugin<u64>> {
    Ok(Plugin::with_state("salute", "2.0.0", 0)
        .add("cmd:salute", |count, msg| {
            *count += 1;
            let name = msg.str("name").unwrap_or("World");
            Ok(json!({ "id": *count, "message": format!("Greetings, {name}, from salute 2!"), "version": "2.0.0" }))
        })
        .example(json!({ "cmd": "salute", "name": "World" })))
}

wasmeca_sdk::export!(plugin);
