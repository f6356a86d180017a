//! One plugin: where it comes from, its manifest (name, version, actions, route maps) checked,
//! and what answers its actions — the instances of a Wasm component, or Rust code in the host
//! (native actions, such as Seneca's own `role:seneca` built-ins).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use semver::Version;
use serde_json::{Map, Value, json};

use crate::message::json_kind;
use crate::pattern::Pattern;
use crate::principal::{Caller, Principal};
use crate::runtime::{
    Contract, Handler, LoadError, Manifest, ManifestAction, ManifestProblem, Pool, PoolShape,
    Runtime, Upcalls,
};

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
    /// The entity bases the plugin may use (`None`: every base).
    pub data: Option<Vec<String>>,
    /// The growth in one call, in bytes, past which an instance is replaced, when the plugin
    /// has its own (`None`: the runtime's `[limits]` one).
    pub replace_after_growth: Option<usize>,
}

impl PluginSource {
    /// A source with no options and one instance.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            options: Value::Object(Map::new()),
            instances: 1,
            data: None,
            replace_after_growth: None,
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

/// What answers a plugin's actions.
pub enum Backend {
    /// The long-lived instances of a Wasm component.
    Wasm(Arc<Pool>),
    /// Rust code in the host, one handler per action, in manifest order.
    Native(Vec<Arc<dyn Handler>>),
}

/// A loaded plugin: its identity, what it serves, and what answers it.
pub struct Plugin {
    /// The manifest's name.
    pub name: String,
    /// The manifest's version; `$version` pins match against it.
    pub version: Version,
    /// `name@version`, made once: spans name the plugin on every call (set with `name` and
    /// `version`, which are not changed after).
    pub ident: Arc<str>,
    /// The actions, in manifest order (their index is what `handle` receives).
    pub actions: Vec<ActionDecl>,
    /// seneca-web route sets, always an array.
    pub routes: Vec<Value>,
    /// The observers: event patterns, in manifest order (their index is what `observe`
    /// receives).
    pub observers: Vec<ActionDecl>,
    /// The contract its component implements (natives: the current one).
    pub contract: Contract,
    /// The file it was loaded from; `None` for native actions.
    pub file: Option<PathBuf>,
    /// blake3 of the file: tells two builds apart (`None` for native actions).
    pub hash: Option<Arc<str>>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The entity bases it may use (`None`: every base), from its `[[plugin]]` entry.
    pub data: Option<Vec<String>>,
    /// What answers its actions.
    pub backend: Backend,
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
        self.ident.to_string()
    }

    /// How many instances serve this plugin (0 for native actions).
    pub fn instances(&self) -> usize {
        match &self.backend {
            Backend::Wasm(pool) => pool.size(),
            Backend::Native(_) => 0,
        }
    }

    /// Whose machine code serves it: `baseline` (Winch's, at quick start, until Cranelift's
    /// is ready) or `optimised`; `None` for native actions.
    pub fn code(&self) -> Option<&'static str> {
        match &self.backend {
            Backend::Wasm(pool) if pool.is_quick() => Some("baseline"),
            Backend::Wasm(_) => Some("optimised"),
            Backend::Native(_) => None,
        }
    }

    /// True for native actions (Rust code in the host), which are not advertised to peers or
    /// listed among the plugins.
    pub fn is_native(&self) -> bool {
        matches!(self.backend, Backend::Native(_))
    }

    /// True if it was loaded from `file`.
    pub fn is_from(&self, file: &std::path::Path) -> bool {
        self.file.as_deref() == Some(file)
    }

    /// Native actions answered by `handlers`, as a plugin named `name@version` that other
    /// plugins override and reach with `prior` like any other.
    pub fn native(
        name: &str,
        version: Version,
        handlers: Vec<(Pattern, Arc<dyn Handler>)>,
    ) -> Self {
        let (actions, handlers) = handlers
            .into_iter()
            .map(|(pattern, handler)| {
                let decl = ActionDecl {
                    source: pattern.to_string(),
                    pattern,
                    example: None,
                };
                (decl, handler)
            })
            .unzip();
        Self {
            name: name.to_owned(),
            ident: format!("{name}@{version}").into(),
            version,
            actions,
            routes: Vec::new(),
            observers: Vec::new(),
            contract: Contract::Current,
            file: None,
            hash: None,
            loaded_at: SystemTime::now(),
            data: None,
            backend: Backend::Native(handlers),
        }
    }

    /// Compiles, instantiates and initialises a plugin file, and checks its manifest.
    pub async fn load(
        runtime: &Runtime,
        host: Weak<dyn Upcalls>,
        source: &PluginSource,
        bytes: Option<&[u8]>,
        init_timeout: std::time::Duration,
    ) -> Result<Self, LoadError> {
        // Compiling keeps the cores busy for ~0.15 s per plugin (Cranelift's; Winch's at quick
        // start, a fraction of it): off the async workers, so a reload never stalls the calls
        // they serve.
        let (compiling, path, bytes) = (
            runtime.clone(),
            source.path.clone(),
            bytes.map(<[u8]>::to_vec),
        );
        let compiled =
            tokio::task::spawn_blocking(move || compiling.compile_to_serve(&path, bytes))
                .await
                .map_err(|e| LoadError::Compile {
                    path: source.path.clone(),
                    detail: format!("the compile stopped: {e}"),
                })??;
        let hash = compiled.hash.clone();
        let contract = compiled.contract();
        let options = Arc::new(source.options.to_string());
        // Its init acts as the plugin, under its `[[plugin]] data` rules; it has no manifest
        // name yet, so its file names it.
        let caller = Caller {
            name: source
                .path
                .file_stem()
                .map_or_else(|| "-".into(), |s| s.to_string_lossy().into_owned()),
            data: source.data.clone(),
        };
        let shape = PoolShape {
            size: source.instances,
            init_timeout,
            replace_after_growth: source
                .replace_after_growth
                .unwrap_or(runtime.limits().replace_after_growth),
        };
        let (pool, manifest) = Pool::start(
            runtime,
            compiled,
            host,
            options,
            shape,
            Principal::plugin(&Arc::new(caller)),
        )
        .await?;
        let problem = |problem| LoadError::Manifest {
            path: source.path.clone(),
            problem,
        };
        let checked = check_manifest(&manifest).map_err(problem)?;
        Ok(Self {
            ident: format!("{}@{}", checked.name, checked.version).into(),
            name: checked.name,
            version: checked.version,
            actions: checked.actions,
            routes: checked.routes,
            observers: checked.observers,
            contract,
            file: Some(source.path.clone()),
            hash: Some(hash),
            loaded_at: SystemTime::now(),
            data: source.data.clone(),
            backend: Backend::Wasm(pool),
        })
    }

    /// A description for `inspect`, `/plugins` and `/health`.
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version.to_string(),
            "file": self.file,
            "hash": self.hash.as_deref(),
            "native": self.file.is_none(),
            "instances": self.instances(),
            "loaded_at": humantime_secs(self.loaded_at),
            "patterns": self.actions.iter().map(|a| a.pattern.to_string()).collect::<Vec<_>>(),
            "observers": self.observers.iter().map(|a| a.pattern.to_string()).collect::<Vec<_>>(),
            "contract": self.contract.name(),
            "code": self.code(),
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
    /// The parsed observers.
    pub observers: Vec<ActionDecl>,
}

/// Validates a manifest: a Seneca plugin name, a semver version, action and observer patterns
/// that parse, examples that are objects, routes that are JSON objects.
pub fn check_manifest(manifest: &Manifest) -> Result<CheckedManifest, ManifestProblem> {
    let name = &manifest.name;
    let mut chars = name.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '@')
        && chars.all(|c| c.is_ascii_alphanumeric() || ".~_-/".contains(c));
    if !name_ok {
        return Err(ManifestProblem::Name(name.to_owned()));
    }
    let version = Version::parse(&manifest.version).map_err(|e| ManifestProblem::Version {
        version: manifest.version.clone(),
        reason: e.to_string(),
    })?;
    let decls = declarations(&manifest.actions, |index, error| ManifestProblem::Pattern {
        index,
        error,
    })?;
    let observers = declarations(&manifest.observers, |index, error| {
        ManifestProblem::Observer { index, error }
    })?;
    let routes = manifest.routes.as_str();
    let routes = match routes.trim() {
        "" => Vec::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(sets)) => sets,
            Ok(set @ Value::Object(_)) => vec![set],
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(ManifestProblem::Routes(format!(
                    "expected an array of route sets, got {}",
                    json_kind(&other)
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
        observers,
    })
}

/// Parses actions or observers: patterns that parse, examples that are JSON objects.
fn declarations(
    declared: &[ManifestAction],
    bad_pattern: impl Fn(usize, crate::pattern::PatternError) -> ManifestProblem,
) -> Result<Vec<ActionDecl>, ManifestProblem> {
    let mut decls = Vec::with_capacity(declared.len());
    for (index, action) in declared.iter().enumerate() {
        let pattern = Pattern::parse(&action.pattern).map_err(|error| bad_pattern(index, error))?;
        let example = match &action.example {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Some(map),
                Ok(other) => {
                    return Err(ManifestProblem::Example {
                        index,
                        pattern: action.pattern.clone(),
                        reason: format!("it is {}", json_kind(&other)),
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
    Ok(decls)
}
