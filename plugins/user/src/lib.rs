//! `user@1.0.0`: the seed's CRUD module. `module:user,if:list|load|edit|create|delete` over an
//! in-memory list that starts with users 1, 2, 3 (甲, 乙, 丙), reachable over REST through its
//! seneca-web route map (prefix `/user`). The id comes from the route (`args.params.id`) or
//! from the message (`id`); names from the body (`args.body.name`) or the message (`name`).

use serde::{Deserialize, Serialize};
use wasmeca_sdk::{Error, Msg, Plugin, Result, json};

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    /// Unique, assigned on create.
    id: i64,
    /// Display name.
    name: String,
}

/// The in-memory table.
struct Users {
    /// All users, in id order.
    list: Vec<User>,
}

impl Users {
    fn seed() -> Self {
        let list = [(1, "甲"), (2, "乙"), (3, "丙")].map(|(id, name)| User { id, name: name.to_owned() });
        Self { list: list.to_vec() }
    }

    fn position(&self, msg: &Msg) -> Result<usize> {
        let id = msg
            .param("id")
            .and_then(|p| p.parse().ok())
            .or_else(|| msg.i64("id"))
            .ok_or_else(|| Error::invalid_input("an `id` is needed (in the path or the message)"))?;
        self.list.iter().position(|u| u.id == id).ok_or_else(|| Error::not_found(format!("no user with id {id}")))
    }

    fn name(msg: &Msg) -> Result<String> {
        let from_body = msg.body().and_then(|b| b.get("name")).and_then(|n| n.as_str());
        from_body
            .or_else(|| msg.str("name"))
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid_input("a non-empty `name` is needed (in the body or the message)"))
    }
}

fn plugin(_options: &Msg) -> Result<Plugin<Users>> {
    Ok(Plugin::with_state("user", "1.0.0", Users::seed())
        .add("module:user,if:list", |users, _| Ok(users.list.clone()))
        .example(json!({ "module": "user", "if": "list" }))
        .add("module:user,if:load", |users, msg| Ok(users.list[users.position(msg)?].clone()))
        .example(json!({ "module": "user", "if": "load", "id": 2 }))
        .add("module:user,if:edit", |users, msg| {
            let at = users.position(msg)?;
            users.list[at].name = Users::name(msg)?;
            Ok(users.list[at].clone())
        })
        .example(json!({ "module": "user", "if": "edit", "id": 2, "name": "乙二" }))
        .add("module:user,if:create", |users, msg| {
            let id = users.list.iter().map(|u| u.id).max().unwrap_or(0) + 1;
            let user = User { id, name: Users::name(msg)? };
            users.list.push(user.clone());
            Ok(user)
        })
        .example(json!({ "module": "user", "if": "create", "name": "丁" }))
        .add("module:user,if:delete", |users, msg| {
            let at = users.position(msg)?;
            Ok(users.list.remove(at))
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
