//! `badpattern@1.0.0`: a plugin whose manifest declares a pattern that does not parse, for
//! `wasmeca check` to refuse.

use wasmeca_sdk::{Msg, Plugin, Result, json};

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("badpattern", "1.0.0")
        .add("cmd:fine", |_, _| Ok(json!({})))
        .add("cmd:broken,,x", |_, _| Ok(json!({}))))
}

wasmeca_sdk::export!(plugin);
