//! Loading plugins into the set: compiling, instantiating and initialising a plugin within the
//! memory budget, loading a folder's files all or each, and the log of files that would not
//! load (for `/plugins`).

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Registry;
use crate::plugins::{Plugin, PluginSource};
use crate::runtime::{LoadError, no_host};

impl Registry {
    /// Compiles, instantiates and initialises a plugin without serving it yet.
    pub async fn load(&self, source: &PluginSource) -> Result<Arc<Plugin>, LoadError> {
        self.load_from(source, None).await
    }

    /// Like [`Registry::load`], from the file's bytes already read (a private copy, so a file
    /// changing meanwhile cannot tear the load).
    pub async fn load_from(
        &self,
        source: &PluginSource,
        bytes: Option<&[u8]>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let host = self.0.host.get().cloned().unwrap_or_else(no_host);
        let outcome = match self.within_budget(source) {
            Ok(()) => {
                Plugin::load(
                    &self.0.runtime,
                    host,
                    source,
                    bytes,
                    self.0.limits.init_timeout,
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.0
            .metrics
            .plugin_load(if outcome.is_ok() { "loaded" } else { "refused" });
        match outcome {
            Ok(plugin) => {
                self.clear_load_error(&source.path);
                Ok(Arc::new(plugin))
            }
            Err(e) => {
                self.record_load_error(e.path(), &e.to_string());
                Err(e)
            }
        }
    }

    /// Refuses `source` when its instances' memory caps, with those of the plugins served now
    /// (less what its own file provides, which it replaces), would pass the budget.
    fn within_budget(&self, source: &PluginSource) -> Result<(), LoadError> {
        let Some(budget) = self.0.limits.memory_budget else {
            return Ok(());
        };
        let per = self.0.runtime.limits().memory;
        let used: usize = self
            .snapshot()
            .plugins()
            .iter()
            .filter(|p| !p.is_from(&source.path))
            .map(|p| p.instances().saturating_mul(per))
            .sum();
        let needed = source.instances.max(1).saturating_mul(per);
        if used.saturating_add(needed) <= budget {
            return Ok(());
        }
        let mib = |bytes: usize| bytes / (1024 * 1024);
        Err(LoadError::Budget {
            path: source.path.clone(),
            needed_mib: mib(needed),
            used_mib: mib(used),
            budget_mib: mib(budget),
        })
    }

    /// Loads every source in order and serves them together; the first failure stops it.
    pub async fn load_all(&self, sources: &[PluginSource]) -> Result<Vec<Arc<Plugin>>, LoadError> {
        let mut loaded = Vec::with_capacity(sources.len());
        for source in sources {
            let plugin = self.load(source).await?;
            tracing::info!(plugin = %plugin.key(), file = %source.path.display(), "loaded");
            loaded.push(plugin);
        }
        self.serve_too(&loaded);
        Ok(loaded)
    }

    /// Loads every source it can, in order, and serves them together; a file that cannot be
    /// loaded is logged and recorded (for `/plugins`) and skipped. What `serve --watch` starts
    /// with, so one bad file in a watched folder does not keep the others from being served.
    pub async fn load_each(&self, sources: &[PluginSource]) -> Vec<Arc<Plugin>> {
        let mut loaded = Vec::with_capacity(sources.len());
        for source in sources {
            match self.load(source).await {
                Ok(plugin) => {
                    tracing::info!(plugin = %plugin.key(), file = %source.path.display(), "loaded");
                    loaded.push(plugin);
                }
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        self.serve_too(&loaded);
        loaded
    }

    /// Records that `file` could not be loaded and why, for `/plugins`.
    pub fn record_load_error(&self, file: &Path, reason: &str) {
        let entry = serde_json::json!({
            "file": file,
            "error": reason,
            "at": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        });
        let mut errors = self
            .0
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        errors.retain(|e| e["file"] != entry["file"]);
        errors.push(entry);
    }

    /// Forgets the load error of `file` (it loaded since, or is gone).
    pub fn clear_load_error(&self, file: &Path) {
        let file = serde_json::json!(file);
        self.0
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|e| e["file"] != file);
    }

    /// The recorded load errors.
    pub fn load_errors(&self) -> Vec<Value> {
        self.0
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
