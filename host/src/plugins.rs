//! The loaded set: every plugin by `name@version` in load order, the patrun trie built from
//! their actions and the client pins, and their REST routes, replaced atomically as one
//! immutable snapshot whenever the set changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use semver::{Version, VersionReq};
use serde_json::{Map, Value, json};

use crate::gateway::{Conflict, RouteSource, RouteTable};
use crate::message::{ActError, Message, codes};
use crate::metrics::{Metrics, PatternMetrics};
use crate::pattern::{Patrun, Pattern};
use crate::router::WeakRouter;
use crate::runtime::{LoadError, ManifestProblem, Pool, Runtime};
use crate::transport::ClientEntry;

/// Where a plugin comes from and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSource {
    /// The `.wasm` component file.
    pub path: PathBuf,
    /// Options passed to the plugin's `init` (a JSON object).
    pub options: Value,
    /// How many instances to keep (1 keeps state in one place; more serve stateless plugins
    /// in parallel).
    pub instances: usize,
}

impl PluginSource {
    /// A source with no options and one instance.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            options: Value::Object(Map::new()),
            instances: 1,
        }
    }
}

/// One action as the manifest declares it.
#[derive(Debug, Clone)]
pub struct ActionDecl {
    /// The pattern as matched.
    pub pattern: Pattern,
    /// The pattern as the plugin wrote it.
    pub source: String,
    /// An example message, for `wasmeca check` and documentation.
    pub example: Option<Map<String, Value>>,
}

/// A loaded plugin: its identity, what it serves, and its instances.
pub struct Plugin {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version; `$version` pins match against it.
    pub version: Version,
    /// The actions, in manifest order (their index is what `handle` receives).
    pub actions: Vec<ActionDecl>,
    /// seneca-web route sets, always an array.
    pub routes: Vec<Value>,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// blake3 of the file: tells two builds apart.
    pub hash: Arc<str>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Its instances.
    pub(crate) pool: Arc<Pool>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("key", &self.key())
            .field("file", &self.file)
            .finish()
    }
}

impl Plugin {
    /// `name@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// How many instances serve this plugin.
    pub fn instances(&self) -> usize {
        self.pool.size()
    }

    /// Compiles, instantiates and initialises a plugin file, and checks its manifest.
    pub(crate) async fn load(
        runtime: &Runtime,
        router: WeakRouter,
        source: &PluginSource,
        bytes: Option<&[u8]>,
        init_timeout: std::time::Duration,
    ) -> Result<Self, LoadError> {
        let compiled = match bytes {
            Some(bytes) => runtime.compile_bytes(&source.path, bytes)?,
            None => runtime.compile_file(&source.path)?,
        };
        let hash = compiled.hash.clone();
        let options = Arc::new(source.options.to_string());
        let (pool, manifest) = Pool::start(
            runtime,
            compiled,
            router,
            options,
            source.instances,
            init_timeout,
        )
        .await?;
        let problem = |problem| LoadError::Manifest {
            path: source.path.clone(),
            problem,
        };
        let checked = check_manifest(
            &manifest.name,
            &manifest.version,
            &manifest.actions,
            &manifest.routes,
        )
        .map_err(problem)?;
        Ok(Self {
            name: checked.name,
            version: checked.version,
            actions: checked.actions,
            routes: checked.routes,
            file: source.path.clone(),
            hash,
            loaded_at: SystemTime::now(),
            pool,
        })
    }

    /// A description for `inspect`, `/plugins` and `/health`.
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version.to_string(),
            "file": self.file,
            "hash": &*self.hash,
            "instances": self.instances(),
            "loaded_at": humantime_secs(self.loaded_at),
            "patterns": self.actions.iter().map(|a| a.pattern.to_string()).collect::<Vec<_>>(),
            "routes": self.routes,
        })
    }
}

/// Seconds since the epoch, for JSON.
fn humantime_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A manifest that passed [`check_manifest`].
#[derive(Debug)]
pub struct CheckedManifest {
    /// The name.
    pub name: String,
    /// The version.
    pub version: Version,
    /// The parsed actions.
    pub actions: Vec<ActionDecl>,
    /// The route sets, as an array.
    pub routes: Vec<Value>,
}

/// Validates a manifest: a Seneca plugin name, a semver version, patterns that parse, examples
/// that are objects, routes that are JSON objects.
pub fn check_manifest(
    name: &str,
    version: &str,
    actions: &[crate::runtime::ManifestAction],
    routes: &str,
) -> Result<CheckedManifest, ManifestProblem> {
    let mut chars = name.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '@')
        && chars.all(|c| c.is_ascii_alphanumeric() || ".~_-/".contains(c));
    if !name_ok {
        return Err(ManifestProblem::Name(name.to_owned()));
    }
    let version = Version::parse(version).map_err(|e| ManifestProblem::Version {
        version: version.to_owned(),
        reason: e.to_string(),
    })?;
    let mut decls = Vec::with_capacity(actions.len());
    for (index, action) in actions.iter().enumerate() {
        let pattern = Pattern::parse(&action.pattern)
            .map_err(|error| ManifestProblem::Pattern { index, error })?;
        let example = match &action.example {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Some(map),
                Ok(other) => {
                    return Err(ManifestProblem::Example {
                        index,
                        pattern: action.pattern.clone(),
                        reason: format!("it is {}", crate::runtime::json_kind(&other)),
                    });
                }
                Err(e) => {
                    return Err(ManifestProblem::Example {
                        index,
                        pattern: action.pattern.clone(),
                        reason: e.to_string(),
                    });
                }
            },
        };
        decls.push(ActionDecl {
            pattern,
            source: action.pattern.clone(),
            example,
        });
    }
    let routes = match routes.trim() {
        "" => Vec::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(sets)) => sets,
            Ok(set @ Value::Object(_)) => vec![set],
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(ManifestProblem::Routes(format!(
                    "expected an array of route sets, got {}",
                    crate::runtime::json_kind(&other)
                )));
            }
            Err(e) => return Err(ManifestProblem::Routes(format!("not JSON: {e}"))),
        },
    };
    if let Some((i, _)) = routes.iter().enumerate().find(|(_, r)| !r.is_object()) {
        return Err(ManifestProblem::Routes(format!(
            "route set {i} is not an object"
        )));
    }
    Ok(CheckedManifest {
        name: name.to_owned(),
        version,
        actions: decls,
        routes,
    })
}

/// One action in the trie: which plugin, which index, and what it overrode.
pub(crate) struct Action {
    /// The plugin serving it.
    pub plugin: Arc<Plugin>,
    /// Index into the plugin's actions (what `handle` receives).
    pub index: u32,
    /// Canonical pattern text, for logs and errors.
    pub pattern: Arc<str>,
    /// What this action overrode: the same pattern added earlier by another plugin, or the
    /// wider pattern (a plugin's or a client's) that matched it when it was added (Seneca's
    /// `priordef`).
    pub prior: Option<Target>,
    /// Counters and latency for this pattern and plugin, created once.
    pub metrics: PatternMetrics,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.pattern, self.plugin.key())
    }
}

/// Who answers a message.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A plugin action in this host.
    Local(Arc<Action>),
    /// A `[[client]]` transport to another service.
    Remote(Arc<ClientEntry>),
}

/// All versions of one plugin name at a pattern.
#[derive(Debug, Clone)]
struct Group {
    /// The plugin name.
    name: String,
    /// One action per loaded version, highest version first.
    versions: Vec<Arc<Action>>,
}

/// The data at a trie node: the plugins serving that exact pattern (latest-added last), and a
/// client pinned on it.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// By plugin name; the last group wins (later adds override earlier ones, as in Seneca).
    groups: Vec<Group>,
    /// A client whose pin is exactly this pattern; plugins on the same pattern win over it.
    remote: Option<Arc<ClientEntry>>,
}

/// What a slot says about a version pin.
enum Winner<'a> {
    /// This target answers.
    Found(Target),
    /// The winning plugin has no version satisfying the pin.
    NoVersion(&'a Group),
    /// Nothing is stored here.
    Empty,
}

impl Slot {
    /// The winning group's highest version satisfying `req` (any when `None`), else the client.
    fn winner(&self, req: Option<&VersionReq>) -> Winner<'_> {
        let Some(group) = self.groups.last() else {
            return match &self.remote {
                Some(remote) => Winner::Found(Target::Remote(remote.clone())),
                None => Winner::Empty,
            };
        };
        let found = match req {
            None => group.versions.first(),
            Some(req) => group
                .versions
                .iter()
                .find(|a| req.matches(&a.plugin.version)),
        };
        match found {
            Some(action) => Winner::Found(Target::Local(action.clone())),
            None => Winner::NoVersion(group),
        }
    }
}

/// What the set says about a message.
#[derive(Debug)]
pub(crate) enum Resolution {
    /// This target answers.
    Found(Target),
    /// A pattern matched, but no loaded version satisfies the pin.
    VersionMissing(ActError),
    /// No pattern matched.
    NotFound,
}

/// What every snapshot is built with besides the plugins: the configured clients and route
/// sets, and the metrics registry. It changes only with the configuration.
pub(crate) struct Base {
    /// `[[client]]` pins, added to the trie before any plugin.
    pub clients: Vec<Arc<ClientEntry>>,
    /// `[rest] route` sets for patterns served elsewhere.
    pub routes: Vec<Value>,
    /// Where per-pattern and per-route handles come from.
    pub metrics: Arc<Metrics>,
}

/// An immutable snapshot of the loaded plugins, their routing trie and their REST routes.
pub struct PluginSet {
    /// Clients, config routes, metrics.
    base: Arc<Base>,
    /// Plugins in load order (later ones win ties).
    plugins: Vec<Arc<Plugin>>,
    /// Patterns to slots.
    trie: Patrun<Slot>,
    /// REST routes of the config and the plugins.
    routes: RouteTable,
    /// Routes refused because another owner declared the same method and path first.
    conflicts: Vec<Conflict>,
}

impl PluginSet {
    /// Builds the trie (clients first, then plugins in load order) and the route table.
    pub(crate) fn new(base: Arc<Base>, plugins: Vec<Arc<Plugin>>) -> Self {
        let mut trie = Patrun::new();
        for client in &base.clients {
            trie.slot(&client.pin)
                .get_or_insert_with(Slot::default)
                .remote = Some(client.clone());
        }
        let mut sources = vec![RouteSource {
            owner: "config",
            version: None,
            sets: &base.routes,
        }];
        sources.extend(plugins.iter().map(|p| RouteSource {
            owner: &p.name,
            version: Some(&p.version),
            sets: &p.routes,
        }));
        let (routes, conflicts, warnings) = RouteTable::build(&sources, &base.metrics);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let mut set = Self {
            base: base.clone(),
            plugins: Vec::with_capacity(plugins.len()),
            trie,
            routes,
            conflicts,
        };
        for plugin in plugins {
            set.add(plugin);
        }
        set
    }

    fn add(&mut self, plugin: Arc<Plugin>) {
        let key = plugin.key();
        for (index, decl) in plugin.actions.iter().enumerate() {
            let pattern = &decl.pattern;
            // Seneca's priordef: whatever a non-exact find of the pattern returns before the add.
            let wider = self
                .trie
                .find(pattern)
                .and_then(|slot| match slot.winner(None) {
                    Winner::Found(target) => Some(target),
                    _ => None,
                });
            let slot = self.trie.slot(pattern).get_or_insert_with(Slot::default);
            let mut group = match slot.groups.iter().position(|g| g.name == plugin.name) {
                Some(i) => slot.groups.remove(i),
                None => Group {
                    name: plugin.name.clone(),
                    versions: Vec::new(),
                },
            };
            let prior = match group
                .versions
                .iter()
                .position(|a| a.plugin.version == plugin.version)
            {
                // The same plugin declares the pattern again: the later declaration overrides.
                Some(i) => Some(Target::Local(group.versions.remove(i))),
                // Another version of the same plugin: they share what they override.
                None if !group.versions.is_empty() => group.versions[0].prior.clone(),
                None => wider,
            };
            let pattern_text = pattern.to_string();
            let action = Arc::new(Action {
                metrics: self.base.metrics.pattern(&pattern_text, &key),
                plugin: plugin.clone(),
                index: index as u32,
                pattern: pattern_text.into(),
                prior,
            });
            let at = group
                .versions
                .partition_point(|a| a.plugin.version > plugin.version);
            group.versions.insert(at, action);
            slot.groups.push(group);
        }
        self.plugins.push(plugin);
    }

    /// The plugins, in load order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// The plugin with this `name@version`.
    pub fn get(&self, key: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.key() == key)
    }

    /// The REST routes.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Routes refused because another owner claimed the same method and path first.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// A new set with `plugin` added last, replacing any plugin with the same `name@version`.
    pub fn with(&self, plugin: Arc<Plugin>) -> Self {
        let key = plugin.key();
        let mut plugins: Vec<_> = self
            .plugins
            .iter()
            .filter(|p| p.key() != key)
            .cloned()
            .collect();
        plugins.push(plugin);
        Self::new(self.base.clone(), plugins)
    }

    /// A new set without the plugin `name@version`.
    pub fn without(&self, key: &str) -> Self {
        Self::new(
            self.base.clone(),
            self.plugins
                .iter()
                .filter(|p| p.key() != key)
                .cloned()
                .collect(),
        )
    }

    /// A new set without any plugin loaded from `file`.
    pub fn without_file(&self, file: &Path) -> Self {
        Self::new(
            self.base.clone(),
            self.plugins
                .iter()
                .filter(|p| p.file != file)
                .cloned()
                .collect(),
        )
    }

    /// Every pattern served, with who serves it (winner first): `name@version` keys, or the
    /// client's address.
    pub fn patterns(&self) -> Vec<(Pattern, Vec<String>)> {
        self.trie
            .list()
            .into_iter()
            .map(|(pattern, slot)| {
                let mut keys: Vec<String> = slot
                    .groups
                    .iter()
                    .rev()
                    .flat_map(|g| g.versions.iter().map(|a| a.plugin.key()))
                    .collect();
                keys.extend(slot.remote.iter().map(|r| r.remote.describe()));
                (pattern, keys)
            })
            .collect()
    }

    /// Which target answers `msg`, honouring a `$version` pin.
    pub(crate) fn resolve(&self, msg: &Message) -> Result<Resolution, ActError> {
        let Some(slot) = self.trie.find(&**msg) else {
            return Ok(Resolution::NotFound);
        };
        let req = msg.version_req()?;
        Ok(match slot.winner(req.as_ref()) {
            Winner::Found(target) => Resolution::Found(target),
            Winner::Empty => Resolution::NotFound,
            Winner::NoVersion(group) => {
                let versions: Vec<String> = group
                    .versions
                    .iter()
                    .map(|a| a.plugin.version.to_string())
                    .collect();
                let req = req.map(|r| r.to_string()).unwrap_or_default();
                Resolution::VersionMissing(
                    ActError::new(
                        codes::VERSION_NOT_FOUND,
                        format!(
                            "no version of {} satisfies $version {req}; loaded: {}",
                            group.name,
                            if versions.is_empty() {
                                "none".to_owned()
                            } else {
                                versions.join(", ")
                            }
                        ),
                    )
                    .with_details(
                        json!({ "plugin": group.name, "requirement": req, "versions": versions }),
                    ),
                )
            }
        })
    }
}
