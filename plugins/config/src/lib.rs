//! `config@1.0.0`: `target:config-server` answers the shared configuration: the response codes
//! other services use.

use wasmeca_sdk::{Msg, Plugin, Result, json};

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("config", "1.0.0")
        .add("target:config-server", |_, _| {
            Ok(json!({
                "SUCCESS_NORMAL_RES": { "code": 1000, "desc": "success" },
                "LOGIN_FAILED_RES": { "code": 2100, "desc": "wrong username or password" },
                "NOT_FOUND_RES": { "code": 4040, "desc": "no such record" },
                "SERVER_ERROR_RES": { "code": 5000, "desc": "internal error" }
            }))
        })
        .example(json!({ "target": "config-server" })))
}

wasmeca_sdk::export!(plugin);
