//! `guard@1.0.0`: overrides the host's entity store for one base, as an operator's validation
//! and audit plugin would. `sys:entity,cmd:save,base:shop` refuses an item whose `price` is not
//! a number (`invalid_item`, naming the field), stamps the others with `audited: true` and saves
//! them through `prior` (the host's store); `sys:entity,cmd:remove,base:shop` refuses every
//! remove (`remove_refused`). Other bases and commands go straight to the store.

use wasmeca_sdk::{Error, Msg, Plugin, Result, Value};

/// Validates and stamps a save of a shop item, then stores it with `prior`.
fn save(msg: &Msg) -> Result<Value> {
    let mut forwarded = msg.as_map().clone();
    let Some(Value::Object(ent)) = forwarded.get_mut("ent") else {
        return Err(Error::new(
            "invalid_item",
            "the message has no `ent` object",
        ));
    };
    if !ent.get("price").is_some_and(Value::is_number) {
        return Err(Error::new("invalid_item", "ent.price must be a number")
            .with_status(400)
            .with_details(wasmeca_sdk::json!({ "field": "ent.price" })));
    }
    ent.insert("audited".into(), Value::Bool(true));
    wasmeca_sdk::prior(&Value::Object(forwarded))
}

fn plugin(_options: &Msg) -> Result<Plugin> {
    Ok(Plugin::new("guard", "1.0.0")
        .add("sys:entity,cmd:save,base:shop", |_, msg: &Msg| save(msg))
        .add("sys:entity,cmd:remove,base:shop", |_, _| -> Result<Value> {
            Err(Error::new("remove_refused", "shop items are never removed"))
        }))
}

wasmeca_sdk::export!(plugin);
