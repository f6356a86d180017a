//! `user@1.0.0`: the seed's CRUD module. `module:user,if:list|load|edit|create|delete` over the
//! host's entity store (entity `user`), which it seeds with users 1, 2, 3 (甲, 乙, 丙) the first
//! time only, so users survive restarts and redeploys; every user created is published as the
//! event `evt:user,cmd:created`. Reachable over REST through its seneca-web route map (prefix
//! `/user`). The id comes from the route (`args.params.id`) or from the message
//! (`id`); names from the body (`args.body.name`) or the message (`name`).

use serde::{Deserialize, Serialize};
use wasmeca_sdk::{Entity, Error, Msg, Plugin, Result, entity, json};

/// One user, as callers see it (the store's `entity$` marker left out).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    /// Unique, assigned on create.
    id: i64,
    /// Display name.
    name: String,
}

/// The entity type users are kept as.
fn users() -> Entity {
    entity("user")
}

/// The id the message names.
fn id(msg: &Msg) -> Result<i64> {
    msg.param("id")
        .and_then(|p| p.parse().ok())
        .or_else(|| msg.i64("id"))
        .ok_or_else(|| Error::invalid_input("an `id` is needed (in the path or the message)"))
}

/// The user with the message's id, or `not_found`.
fn find(msg: &Msg) -> Result<User> {
    let id = id(msg)?;
    users()
        .load_as(id)?
        .ok_or_else(|| Error::not_found(format!("no user with id {id}")))
}

/// The name the message gives.
fn name(msg: &Msg) -> Result<String> {
    let from_body = msg
        .body()
        .and_then(|b| b.get("name"))
        .and_then(|n| n.as_str());
    from_body
        .or_else(|| msg.str("name"))
        .filter(|n| !n.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::invalid_input("a non-empty `name` is needed (in the body or the message)")
        })
}

/// Seeds the store with 甲, 乙, 丙 the first time (another instance may be seeding too: a
/// taken id means it is there).
fn seed() -> Result<()> {
    if !users().list(json!({ "limit$": 1 }))?.is_empty() {
        return Ok(());
    }
    for (id, name) in [(1, "甲"), (2, "乙"), (3, "丙")] {
        match users().save(json!({ "id$": id, "name": name })) {
            Ok(_) => {}
            Err(e) if e.code == "entity-id-exists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates a user with the next free id (trying again if another call took it first).
fn create(name: String) -> Result<User> {
    for _ in 0..8 {
        let last = users().list(json!({ "sort$": { "id": -1 }, "limit$": 1 }))?;
        let id = last.first().and_then(|u| u["id"].as_i64()).unwrap_or(0) + 1;
        match users().save_as::<User>(json!({ "id$": id, "name": name })) {
            Ok(created) => {
                // Observers (the audit plugin, a mailer...) hear of it; the user exists either way.
                let event = json!({ "evt": "user", "cmd": "created", "id": created.id, "name": created.name });
                if let Err(e) = wasmeca_sdk::publish(event) {
                    wasmeca_sdk::warn!(
                        "user {} created, but the event was not published: {e}",
                        created.id
                    );
                }
                return Ok(created);
            }
            Err(e) if e.code == "entity-id-exists" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::new("busy", "could not find a free id; try again"))
}

fn plugin(_options: &Msg) -> Result<Plugin> {
    seed()?;
    Ok(Plugin::new("user", "1.0.0")
        .add("module:user,if:list", |_, _| {
            let stored = users().list_as::<User>(json!({ "sort$": { "id": 1 } }))?;
            Ok(stored)
        })
        .example(json!({ "module": "user", "if": "list" }))
        .add("module:user,if:load", |_, msg| find(msg))
        .example(json!({ "module": "user", "if": "load", "id": 2 }))
        .add("module:user,if:edit", |_, msg| {
            let found = find(msg)?;
            users().save_as::<User>(json!({ "id": found.id, "name": name(msg)? }))
        })
        .example(json!({ "module": "user", "if": "edit", "id": 2, "name": "乙二" }))
        .add("module:user,if:create", |_, msg| create(name(msg)?))
        .example(json!({ "module": "user", "if": "create", "name": "丁" }))
        .add("module:user,if:delete", |_, msg| {
            let id = id(msg)?;
            users()
                .remove_as::<User>(id)?
                .ok_or_else(|| Error::not_found(format!("no user with id {id}")))
        })
        .example(json!({ "module": "user", "if": "delete", "id": 3 }))
        .routes(json!({
            "prefix": "/user",
            "pin": "module:user,if:*",
            "map": {
                "list": { "GET": true, "name": "" },
                "load": { "GET": true, "name": "", "suffix": "/:id" },
                "edit": { "PUT": true, "name": "", "suffix": "/:id" },
                "create": { "POST": true, "name": "" },
                "delete": { "DELETE": true, "name": "", "suffix": "/:id" }
            }
        })))
}

wasmeca_sdk::export!(plugin);
