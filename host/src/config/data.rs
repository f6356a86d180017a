//! `[data]` and `[cache]`: where the entity store and the cache live and who may reach them, and
//! the project's own default store. Pure, no files opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Config;

/// `[data]`: the entity store plugins keep their data in (Seneca's `sys:entity`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Data {
    /// `sqlite://PATH` (the default: a file in the data folder), `memory://`, or
    /// `postgres://...` (`?layout=columns` serves an existing seneca-postgres-store schema);
    /// default `$DATABASE_URL`, else SQLite.
    pub url: Option<String>,
    /// True to let acts from the network (REST, `/act`, AMQP) reach the store directly, as a
    /// Node Seneca client pinned on `sys:entity` does; plugins always can.
    pub expose: bool,
    /// The most entity kinds (base and name pairs) the store may hold where each is a table
    /// (SQLite), so an exposed store cannot be made to create tables without end; default
    /// [`DEFAULT_MAX_KINDS`].
    pub max_kinds: Option<usize>,
}

/// How many entity kinds a store that makes a table per kind holds unless `[data] max_kinds`
/// says otherwise.
pub const DEFAULT_MAX_KINDS: usize = 1_000;

/// `[cache]`: the cache plugins use through Seneca's `role:cache`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// `memory://` (the default) or `redis://...` (@seneca/redis-cache's layout, shared with
    /// Node services); default `$REDIS_URL`, else memory.
    pub url: Option<String>,
    /// How long a cached value lives, in seconds (0: until deleted).
    pub expire_s: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            url: None,
            expire_s: 3600,
        }
    }
}

/// Where the data lives and who may reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSettings {
    /// The entity store's URL (`sqlite://PATH`, `memory://`, `postgres://...`).
    pub store: String,
    /// The cache's URL (`memory://`, `redis://...`).
    pub cache: String,
    /// How long a cached value lives (zero: until deleted).
    pub expire: Duration,
    /// True when acts from the network (REST, `/act`, AMQP) may reach the store directly.
    pub expose: bool,
    /// The largest answer a store call may give, in bytes of JSON (`[limits]
    /// max_result_bytes`): a store answers under the same bound as a plugin, so a `limit$:0`
    /// list cannot hand a caller (or a plugin's memory) more than any plugin could.
    pub max_answer_bytes: usize,
    /// `[data] max_kinds`, or its default.
    pub max_kinds: usize,
}

impl DataSettings {
    /// Both stores in memory, exposed to nobody but plugins: for tests and throwaway demos.
    pub fn memory() -> Self {
        Self {
            store: "memory://".into(),
            cache: "memory://".into(),
            expire: Duration::from_secs(3600),
            expose: false,
            max_answer_bytes: crate::runtime::MAX_RESULT_BYTES,
            max_kinds: DEFAULT_MAX_KINDS,
        }
    }
}

/// Where a project keeps its default SQLite store, inside the folder of its `wasmeca.toml`.
pub const PROJECT_STORE: &str = ".wasmeca/data.sqlite";

impl Config {
    /// The default SQLite store: `$WASMECA_DATA_DIR/wasmeca.sqlite` when that is set, else the
    /// project's own, [`PROJECT_STORE`] in the folder of the `wasmeca.toml` served (the current
    /// folder when there is none), so two projects on one machine never share their entities.
    pub fn default_store(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("WASMECA_DATA_DIR").filter(|d| !d.is_empty()) {
            return Path::new(&dir).join("wasmeca.sqlite");
        }
        let project = if self.base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.base
        };
        let store = project.join(PROJECT_STORE);
        std::path::absolute(&store).unwrap_or(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_store_belongs_to_the_project() {
        if std::env::var_os("WASMECA_DATA_DIR").is_some() {
            return; // the override wins; nothing project-specific to see
        }
        let a = Config {
            base: "/srv/a".into(),
            ..Config::default()
        };
        let b = Config {
            base: "/srv/b".into(),
            ..Config::default()
        };
        assert_eq!(a.default_store(), Path::new("/srv/a/.wasmeca/data.sqlite"));
        assert_ne!(a.default_store(), b.default_store());
        let here = Config::default().default_store();
        assert!(
            here.is_absolute() && here.ends_with(PROJECT_STORE),
            "{here:?}"
        );
        assert_eq!(
            a.data_settings().store.starts_with("sqlite:///srv/a/"),
            std::env::var_os("DATABASE_URL").is_none()
        );
    }
}
