//! The data layer served as native actions: `sys:entity,cmd:save|load|list|remove` (and the
//! legacy `role:entity,...`) and `role:cache,cmd:set|get|add|delete|incr|decr`, in the
//! registry's trie like any plugin's (so a plugin may override them for a base and reach them
//! with `prior`), with who may reach them: plugins on this host always (an entity only in the
//! bases their `[[plugin]] data` allows), the network only when `[data] expose` says so.

use std::sync::Arc;

use opentelemetry::KeyValue;
use semver::Version;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{
    CacheStore, DataError, EntityStore, cache, canon, entity, open_cache, open_store_with,
    redact_url,
};
use crate::config::DataSettings;
use crate::error::{ActError, Code};
use crate::message::{Message, Reply};
use crate::pattern::Pattern;
use crate::plugins::Plugin;
use crate::readiness::{Probe, Readiness};
use crate::registry::Registry;
use crate::runtime::{BoxFuture, CallCtx, Handler};
use crate::telemetry::Leaf;

/// The stores, opened on first use: a host whose plugins never keep data never touches a file
/// or a server.
struct Stores {
    /// The settings they are opened from.
    settings: DataSettings,
    /// The entity store, once opened.
    entities: OnceCell<Arc<dyn EntityStore>>,
    /// The cache, once opened.
    cache: OnceCell<Arc<dyn CacheStore>>,
}

impl Stores {
    async fn entities(&self) -> Result<&Arc<dyn EntityStore>, DataError> {
        self.entities
            .get_or_try_init(|| open_store_with(&self.settings.store, self.settings.max_kinds))
            .await
    }

    async fn cache(&self) -> Result<&Arc<dyn CacheStore>, DataError> {
        self.cache
            .get_or_try_init(|| open_cache(&self.settings.cache, self.settings.expire))
            .await
    }

    /// Answers when the store behind `api` can be used now (opening it first if need be).
    async fn ping(&self, api: Api) -> Result<(), DataError> {
        match api {
            Api::Entity => self.entities().await?.ping().await,
            Api::Cache => self.cache().await?.ping().await,
        }
    }
}

/// Which API an action serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `sys:entity` / `role:entity`.
    Entity,
    /// `role:cache`.
    Cache,
}

/// One native data action: an API and its command.
struct StoreAction {
    /// Entity or cache.
    api: Api,
    /// `save`, `load`, ... or `set`, `get`, ...
    cmd: &'static str,
    /// The stores.
    stores: Arc<Stores>,
}

/// The entity commands, served under both patterns Seneca clients send.
const ENTITY: [&str; 4] = ["save", "load", "list", "remove"];

/// The cache commands (`clear` is not served: in Node it empties the whole Redis server).
const CACHE: [&str; 6] = ["set", "get", "add", "delete", "incr", "decr"];

/// Installs the entity and cache actions in `registry`, before any plugin, so plugins may
/// override them, and has `readiness` ping both stores.
pub fn install(registry: &Registry, readiness: &Readiness, settings: DataSettings) {
    let stores = Arc::new(Stores {
        settings,
        entities: OnceCell::new(),
        cache: OnceCell::new(),
    });
    for (api, what, url) in [
        (Api::Entity, "entity store", &stores.settings.store),
        (Api::Cache, "cache", &stores.settings.cache),
    ] {
        let pinged = stores.clone();
        let probe: Probe = Arc::new(move || {
            let stores = pinged.clone();
            Box::pin(async move { stores.ping(api).await.map_err(|e| e.to_string()) })
        });
        readiness.probe(format!("{what} {}", redact_url(url)), probe);
    }
    let version = Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
    let actions =
        |api: Api, patterns: &[(String, &'static str)]| -> Vec<(Pattern, Arc<dyn Handler>)> {
            patterns
                .iter()
                .filter_map(|(pattern, cmd)| {
                    let action: Arc<dyn Handler> = Arc::new(StoreAction {
                        api,
                        cmd,
                        stores: stores.clone(),
                    });
                    Some((Pattern::parse(pattern).ok()?, action))
                })
                .collect()
        };
    let entity_patterns: Vec<(String, &'static str)> = ENTITY
        .iter()
        .flat_map(|cmd| {
            [
                (format!("sys:entity,cmd:{cmd}"), *cmd),
                (format!("role:entity,cmd:{cmd}"), *cmd),
            ]
        })
        .collect();
    let cache_patterns: Vec<(String, &'static str)> = CACHE
        .iter()
        .map(|cmd| (format!("role:cache,cmd:{cmd}"), *cmd))
        .collect();
    registry.install(Arc::new(Plugin::native(
        "entity",
        version.clone(),
        actions(Api::Entity, &entity_patterns),
    )));
    registry.install(Arc::new(Plugin::native(
        "cache",
        version,
        actions(Api::Cache, &cache_patterns),
    )));
}

impl StoreAction {
    /// Who may do this: a plugin (in a base its configuration allows, for an entity or a cache
    /// key), or an act from this process; the network only when the data is exposed.
    fn allowed(&self, msg: &Message, ctx: &CallCtx) -> Result<(), ActError> {
        let what = match self.api {
            Api::Entity => "entity",
            Api::Cache => "cache",
        };
        let who = &ctx.principal;
        if who.caller.is_none() && who.remote && !self.stores.settings.expose {
            return Err(ActError::host(
                Code::EntityForbidden,
                format!(
                    "the {what} store is not exposed to the network; plugins reach it with act \
                     (set [data] expose = true to let network callers in)"
                ),
            ));
        }
        // The sender, and every override the message came through, must allow the base: an
        // entity's base, or a cache key's (the part before its first `:`, so `shop:cart:42`
        // is in `shop`; keys shared with Node apps follow the same convention).
        let mut base = None;
        for caller in who.caller.iter().chain(who.overrides()) {
            let Some(bases) = &caller.data else {
                continue;
            };
            let base = base.get_or_insert_with(|| self.base_of(msg));
            if base.as_ref().is_some_and(|b| bases.contains(b)) {
                continue;
            }
            let (thing, wanted, keys) = match self.api {
                Api::Entity => ("entity base", base.as_deref().unwrap_or("- (none)"), ""),
                Api::Cache => (
                    "cache key",
                    msg.get("key").and_then(Value::as_str).unwrap_or("-"),
                    ": cache keys BASE:...",
                ),
            };
            return Err(ActError::host(
                Code::EntityForbidden,
                format!(
                    "plugin {} may not use {thing} {} (its [[plugin]] data allows {}{keys})",
                    caller.name,
                    crate::error::clip(wanted),
                    bases.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The base a message works in: its entity's, or its cache key's prefix up to the first
    /// `:`; `None` when it names none.
    fn base_of(&self, msg: &Message) -> Option<String> {
        match self.api {
            Api::Entity => canon(msg, self.cmd).ok().and_then(|c| c.base),
            Api::Cache => msg
                .get("key")
                .and_then(Value::as_str)
                .and_then(|key| key.split_once(':'))
                .map(|(base, _)| base.to_owned()),
        }
    }

    async fn answer(&self, msg: Message, span: &mut Leaf) -> Result<Value, DataError> {
        match self.api {
            Api::Entity => {
                let store = self.stores.entities().await?;
                if span.is_recording() {
                    let [system, old_system] = system(store.backend());
                    match canon(&msg, self.cmd) {
                        Ok(canon) => {
                            let canon = canon.to_string();
                            let name = format!("{} {canon}", self.cmd);
                            let collection = KeyValue::new("db.collection.name", canon);
                            span.rename(name, [system, old_system, collection]);
                        }
                        Err(_) => span.rename(self.cmd.to_owned(), [system, old_system]),
                    }
                }
                entity(store.as_ref(), self.cmd, &msg).await
            }
            Api::Cache => {
                let store = self.stores.cache().await?;
                if span.is_recording() {
                    span.rename(self.cmd.to_owned(), system(store.backend()));
                }
                cache(store.as_ref(), self.cmd, &msg).await
            }
        }
    }
}

impl Handler for StoreAction {
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
        Box::pin(async move {
            // A client span by the database conventions: the store, the operation and the
            // entity, never the values (the store and the entity are set once known, in
            // `answer`). It stands for the act that reached the store, which makes no span
            // of its own (`spans_itself`), so it records every way the act fails, a refused
            // access or a deadline that cut it short among them.
            let mut span = Leaf::client("data", [KeyValue::new("db.operation.name", self.cmd)]);
            let answer = async {
                self.allowed(&msg, &ctx)?;
                let value = self.answer(msg, &mut span).await.map_err(to_act_error)?;
                let reply = Reply::from_value(&value);
                let limit = self.stores.settings.max_answer_bytes;
                if reply.as_str().len() > limit {
                    return Err(ActError::host(
                        Code::ResultTooLarge,
                        format!(
                            "{} answered {} bytes; the limit is {limit} ([limits] \
                             max_result_bytes): page the list with limit$ and skip$",
                            self.describe(),
                            reply.as_str().len()
                        ),
                    ));
                }
                Ok(reply)
            };
            let outcome = answer.await;
            span.end(&outcome);
            outcome
        })
    }

    fn describe(&self) -> String {
        match self.api {
            Api::Entity => format!("sys:entity,cmd:{}", self.cmd),
            Api::Cache => format!("role:cache,cmd:{}", self.cmd),
        }
    }

    fn spans_itself(&self) -> bool {
        true
    }
}

/// Which store answers, as a data call's span says it: `db.system.name`, and `db.system` as
/// the conventions before 1.26 called it.
fn system(backend: &'static str) -> [KeyValue; 2] {
    let system = match backend {
        "postgres" => "postgresql",
        other => other,
    };
    [
        KeyValue::new("db.system.name", system),
        KeyValue::new("db.system", system),
    ]
}

/// A data error as callers see it: its code (whose status it carries) and details.
fn to_act_error(e: DataError) -> ActError {
    ActError::host(e.kind(), e.to_string()).with_details(e.details())
}
