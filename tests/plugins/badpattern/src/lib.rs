//! `badpattern@1.0.0`: a plugin whose manifest declares a pattern that does not parse, for
//! `wasmeca check` to refuse and for hosts to refuse at load. The option `pattern` replaces
//! the broken pattern (a deeply nested one, say), so tests can try any text a plugin could send.

use wasmeca_sdk::{Msg, Plugin, Result, json};

fn plugin(options: &Msg) -> Result<Plugin> {
    let broken = options.str("pattern").unwrap_or("cmd:broken,,x").to_owned();
    Ok(Plugin::new("badpattern", "1.0.0")
        .add("cmd:fine", |_, _| Ok(json!({})))
        .add(&broken, |_, _| Ok(json!({}))))
}

wasmeca_sdk::export!(plugin);
