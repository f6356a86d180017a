//! `override@1.0.0`: adds patterns that seed plugins already serve, and calls `prior` — a
//! narrower one (`cmd:salute,lang:fr`, added first, so its prior is the wider `cmd:salute` of
//! whichever plugin served it then) and the same one (`cmd:salute`, whose prior is the plugin
//! that served it before).

use wasmeca_sdk::{Msg, Plugin, Result, Value, json};

fn wrap(answer: Value, how: &str) -> Value {
    json!({ "overridden": how, "prior": answer })
}

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("override", "1.0.0")
        .add("cmd:salute,lang:fr", |_, msg: &Msg| Ok(wrap(msg.prior()?, "narrower")))
        .add("cmd:salute", |_, msg: &Msg| Ok(wrap(msg.prior()?, "same")))
        .add("cmd:lonely", |_, msg: &Msg| Ok(wrap(msg.prior()?, "none")))
        // Claims GET /user, which the user plugin also declares (a route conflict).
        .routes(json!({ "pin": "cmd:*", "map": { "lonely": { "GET": true, "alias": "/user" } } })))
}

wasmeca_sdk::export!(plugin);
