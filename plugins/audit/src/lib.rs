//! `audit@1.0.0`: observes `evt:user,cmd:created` (which the user plugin publishes for every
//! user it creates) and keeps a count, which `role:audit,cmd:count` answers. An observer never
//! answers a caller; this plugin's action answers for it.

use wasmeca_sdk::{Msg, Plugin, Result, json};

/// What the audit has seen.
#[derive(Default)]
struct Seen {
    /// Users created, as events told.
    created: u64,
    /// The id of the last user created.
    last: Option<i64>,
}

fn plugin(_options: &Msg) -> Result<Plugin<Seen>> {
    Ok(Plugin::with_state("audit", "1.0.0", Seen::default())
        .observe("evt:user,cmd:created", |seen, event| {
            seen.created += 1;
            seen.last = event.i64("id");
            wasmeca_sdk::info!("user {:?} created", seen.last);
            Ok(())
        })
        .add("role:audit,cmd:count", |seen, _| {
            Ok(json!({ "created": seen.created, "last": seen.last }))
        })
        .example(json!({ "role": "audit", "cmd": "count" })))
}

wasmeca_sdk::export!(plugin);
