//! The plugin set and its life cycle: load, swap, install and unload plugins (Wasm and native),
//! the admission hooks that may refuse a swap, the load-error log, and change notifications.
//! Every change replaces one immutable [`Snapshot`] that acts read; loading and the load-error
//! log are in `loading.rs`.

mod loading;
mod snapshot;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::plugins::Plugin;
use crate::remote::ClientEntry;
use crate::runtime::{Runtime, Upcalls};

pub use snapshot::{Action, Observer, Resolution, Snapshot, Target};

/// A check that may refuse a plugin arriving by a swap (the REST gateway refuses one whose
/// routes another plugin holds). Checks are pure: they may run more than once for one swap.
pub trait Admission: Send + Sync {
    /// Whether `next`, the set with `arriving` in it, may replace the current one; `Err`
    /// gives the reasons it may not.
    fn admit(&self, next: &Snapshot, arriving: &Plugin) -> Result<(), Vec<String>>;
}

/// What loading a plugin is bounded by.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadLimits {
    /// The deadline of a plugin's `init`.
    pub init_timeout: Duration,
    /// The sum of every instance's memory cap the host may commit to, in bytes (`None`: no
    /// budget); a plugin that would go over it is refused at load.
    pub memory_budget: Option<usize>,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(10),
            memory_budget: None,
        }
    }
}

/// A plugin refused by an admission check; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", reasons.join("; "))]
pub struct Refused {
    /// Why, one line per reason.
    pub reasons: Vec<String>,
}

/// Shared state behind [`Registry`].
struct Inner {
    /// Compiles and instantiates plugins.
    runtime: Runtime,
    /// Who answers the nested acts of the instances this registry creates (the router); set
    /// once, after the router exists. Until then instances' nested acts answer `closed`.
    host: OnceLock<Weak<dyn Upcalls>>,
    /// The current snapshot; replaced whole on every change.
    set: ArcSwap<Snapshot>,
    /// The configured client pins, added to every snapshot before any plugin.
    clients: Arc<[Arc<ClientEntry>]>,
    /// Where per-pattern metrics handles come from, and plugin load counts go.
    metrics: Arc<Metrics>,
    /// The `init` deadline and the memory budget.
    limits: LoadLimits,
    /// Source of snapshot generations, so followers can tell one snapshot from the next.
    generation: AtomicU64,
    /// The last load errors (file and reason), newest last, for `/plugins`.
    load_errors: Mutex<Vec<Value>>,
    /// Sends the generation of every new snapshot, so what follows the set (AMQP bindings,
    /// Consul registration, the REST routes) can react.
    changes: tokio::sync::watch::Sender<u64>,
    /// Checks a swapped-in plugin must pass.
    admission: RwLock<Vec<Arc<dyn Admission>>>,
    /// Held while a change reads the current set and publishes the next, so two changes at
    /// once never lose one another.
    writing: Mutex<()>,
}

/// The plugin set and its life cycle. Cheap to clone.
#[derive(Clone)]
pub struct Registry(Arc<Inner>);

/// A handle to a registry that does not keep it alive, for what the registry itself holds
/// (native actions that read the set).
#[derive(Clone)]
pub struct WeakRegistry(Weak<Inner>);

impl WeakRegistry {
    /// The registry, unless it is gone.
    pub fn upgrade(&self) -> Option<Registry> {
        self.0.upgrade().map(Registry)
    }
}

impl Registry {
    /// An empty registry whose snapshots hold `clients` (tried after local plugins).
    pub fn new(
        runtime: Runtime,
        clients: Vec<Arc<ClientEntry>>,
        metrics: Arc<Metrics>,
        limits: LoadLimits,
    ) -> Self {
        let clients: Arc<[Arc<ClientEntry>]> = clients.into();
        let empty = Snapshot::new(0, clients.clone(), &metrics, Vec::new());
        Self(Arc::new(Inner {
            runtime,
            host: OnceLock::new(),
            set: ArcSwap::from_pointee(empty),
            clients,
            metrics,
            limits,
            generation: AtomicU64::new(1),
            load_errors: Mutex::new(Vec::new()),
            changes: tokio::sync::watch::Sender::new(0),
            admission: RwLock::new(Vec::new()),
            writing: Mutex::new(()),
        }))
    }

    /// Gives instances created from now on `host` for their nested acts (the router calls
    /// this once, when it is built around the registry).
    pub fn attach(&self, host: Weak<dyn Upcalls>) {
        let _ = self.0.host.set(host);
    }

    /// A handle that does not keep the registry alive.
    pub fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.0))
    }

    /// The wasm runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.set.load_full()
    }

    /// Reads the current snapshot without taking a reference count (the act path).
    pub(crate) fn with_snapshot<T>(&self, read: impl FnOnce(&Snapshot) -> T) -> T {
        read(&self.0.set.load())
    }

    /// A receiver that sees the generation of every new snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    /// Adds a check every plugin swapped in with [`Registry::swap_file`] must pass.
    pub fn admit_with(&self, check: Arc<dyn Admission>) {
        self.0
            .admission
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check);
    }

    /// A snapshot of `plugins` with the next generation.
    fn build(&self, plugins: Vec<Arc<Plugin>>) -> Snapshot {
        let generation = self.0.generation.fetch_add(1, Ordering::Relaxed);
        Snapshot::new(generation, self.0.clients.clone(), &self.0.metrics, plugins)
    }

    /// Serves `next` from now on and tells the followers.
    fn publish(&self, next: Arc<Snapshot>) {
        let generation = next.generation();
        self.0.set.store(next);
        self.0.changes.send_replace(generation);
    }

    /// Serves `plugin` instead of whatever `file` provided before (or stops serving what it
    /// provided, with `None`), in one swap. A plugin an admission check refuses leaves
    /// everything as it was.
    pub fn swap_file(&self, file: &Path, plugin: Option<Arc<Plugin>>) -> Result<(), Refused> {
        let _writing = self.writing();
        let current = self.snapshot();
        let mut plugins: Vec<Arc<Plugin>> = current
            .plugins()
            .iter()
            .filter(|p| !p.is_from(file))
            .cloned()
            .collect();
        if let Some(plugin) = &plugin {
            let key = plugin.key();
            plugins.retain(|p| p.key() != key);
            plugins.push(plugin.clone());
        }
        let next = self.build(plugins);
        if let Some(plugin) = &plugin {
            let checks = self
                .0
                .admission
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let reasons: Vec<String> = checks
                .iter()
                .filter_map(|check| check.admit(&next, plugin).err())
                .flatten()
                .collect();
            if !reasons.is_empty() {
                return Err(Refused { reasons });
            }
        }
        self.publish(Arc::new(next));
        Ok(())
    }

    /// Serves `plugin` from now on, replacing a plugin with the same `name@version`; calls
    /// already running finish on the instances they started on.
    pub fn install(&self, plugin: Arc<Plugin>) {
        let _writing = self.writing();
        let key = plugin.key();
        let mut plugins: Vec<Arc<Plugin>> = self
            .snapshot()
            .plugins()
            .iter()
            .filter(|p| p.key() != key)
            .cloned()
            .collect();
        plugins.push(plugin);
        let next = self.build(plugins);
        self.publish(Arc::new(next));
    }

    /// Replaces the whole set at once.
    pub fn replace_all(&self, plugins: Vec<Arc<Plugin>>) {
        let _writing = self.writing();
        let next = self.build(plugins);
        self.publish(Arc::new(next));
    }

    /// Stops serving `name@version`; returns it if it was loaded.
    pub fn unload(&self, key: &str) -> Option<Arc<Plugin>> {
        let _writing = self.writing();
        let current = self.snapshot();
        let old = current.get(key).cloned()?;
        let plugins = current
            .plugins()
            .iter()
            .filter(|p| p.key() != key)
            .cloned()
            .collect();
        let next = self.build(plugins);
        self.publish(Arc::new(next));
        Some(old)
    }

    /// Serves `loaded` after the plugins already served.
    fn serve_too(&self, loaded: &[Arc<Plugin>]) {
        let _writing = self.writing();
        let mut all = self.snapshot().plugins().to_vec();
        all.extend(loaded.iter().cloned());
        let next = self.build(all);
        self.publish(Arc::new(next));
    }

    /// The lock every change holds.
    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::error::ActError;
    use crate::message::{Message, Reply};
    use crate::pattern::Pattern;
    use crate::runtime::{BoxFuture, CallCtx, Handler};

    /// A native action that answers nothing.
    struct Null;

    impl Handler for Null {
        fn call(&self, _: Message, _: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
            Box::pin(async { Ok(Reply::from_value(&Value::Null)) })
        }

        fn describe(&self) -> String {
            "null".into()
        }
    }

    fn registry() -> Registry {
        let runtime = Runtime::new(None, 1 << 20).expect("an engine");
        Registry::new(
            runtime,
            Vec::new(),
            Arc::new(Metrics::default()),
            LoadLimits::default(),
        )
    }

    /// A plugin `name@version` serving `pattern`, as if loaded from `file`.
    fn plugin(key: &str, pattern: &str, file: &str) -> Arc<Plugin> {
        let (name, version) = key.split_once('@').expect("name@version");
        let handler: Arc<dyn Handler> = Arc::new(Null);
        let native = Plugin::native(
            name,
            semver::Version::parse(version).expect("version"),
            vec![(Pattern::parse(pattern).expect("pattern"), handler)],
        );
        Arc::new(Plugin {
            file: Some(PathBuf::from(file)),
            ..native
        })
    }

    fn keys(registry: &Registry) -> Vec<String> {
        registry
            .snapshot()
            .plugins()
            .iter()
            .map(|p| p.key())
            .collect()
    }

    /// Refuses any plugin named `bad`.
    struct NoBad;

    impl Admission for NoBad {
        fn admit(&self, next: &Snapshot, arriving: &Plugin) -> Result<(), Vec<String>> {
            assert!(
                next.get(&arriving.key()).is_some(),
                "checks see the next set"
            );
            if arriving.name == "bad" {
                Err(vec!["bad is not welcome".into()])
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn swaps_replace_what_a_file_provided_and_refusals_change_nothing() {
        let r = registry();
        r.admit_with(Arc::new(NoBad));
        let changes = r.subscribe();
        r.swap_file(
            Path::new("/p/a.wasm"),
            Some(plugin("a@1.0.0", "cmd:a", "/p/a.wasm")),
        )
        .expect("a is admitted");
        assert!(changes.has_changed().unwrap_or(false), "followers are told");
        let before = r.snapshot().generation();
        r.swap_file(
            Path::new("/p/a.wasm"),
            Some(plugin("a@2.0.0", "cmd:a", "/p/a.wasm")),
        )
        .expect("a 2 replaces a 1 from the same file");
        assert_eq!(keys(&r), ["a@2.0.0"]);
        assert!(r.snapshot().generation() > before);
        let refused = r
            .swap_file(
                Path::new("/p/b.wasm"),
                Some(plugin("bad@1.0.0", "cmd:b", "/p/b.wasm")),
            )
            .unwrap_err();
        assert_eq!(refused.reasons, ["bad is not welcome"]);
        assert_eq!(keys(&r), ["a@2.0.0"], "nothing changed");
        r.swap_file(Path::new("/p/a.wasm"), None)
            .expect("an unload");
        assert!(keys(&r).is_empty());
    }

    #[test]
    fn install_replaces_the_same_version_and_unload_returns_it() {
        let r = registry();
        r.install(plugin("a@1.0.0", "cmd:a", "/p/a.wasm"));
        r.install(plugin("b@1.0.0", "cmd:b", "/p/b.wasm"));
        r.install(plugin("a@1.0.0", "cmd:a2", "/p/a.wasm"));
        assert_eq!(keys(&r), ["b@1.0.0", "a@1.0.0"]);
        let gone = r.unload("b@1.0.0").expect("b was loaded");
        assert_eq!(gone.key(), "b@1.0.0");
        assert!(r.unload("b@1.0.0").is_none());
        assert_eq!(keys(&r), ["a@1.0.0"]);
    }

    #[test]
    fn load_errors_are_kept_per_file_until_cleared() {
        let r = registry();
        r.record_load_error(Path::new("/p/x.wasm"), "first");
        r.record_load_error(Path::new("/p/x.wasm"), "second");
        r.record_load_error(Path::new("/p/y.wasm"), "other");
        let errors = r.load_errors();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            (errors[0]["error"].clone(), errors[1]["error"].clone()),
            (json!("second"), json!("other")),
            "one per file, the newest last"
        );
        r.clear_load_error(Path::new("/p/y.wasm"));
        assert_eq!(r.load_errors().len(), 1);
    }
}
