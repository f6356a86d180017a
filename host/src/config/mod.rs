//! `wasmeca.toml`: what to load and how, validated on read (unknown keys are errors that name
//! the file, line and key), with paths resolved against the file's folder; each setting is
//! computed here once and handed to the core as the core's own types. Pure, no sockets.

mod amqp;
mod data;
mod limits;
mod network;
mod telemetry;

pub use amqp::{Amqp, AmqpClientConfig, AmqpListen, QueueType, Urls, amqp_urls};
pub use data::{Cache, DEFAULT_MAX_KINDS, Data, DataSettings, PROJECT_STORE};
pub use limits::Limits;
pub use network::{Balance, Client, Consul, Events, Http, Listen, ListenAddr, Rest};
pub use telemetry::Telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::pattern::Pattern;
use crate::plugins::PluginSource;
use crate::runtime::Compiling;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and the offending key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file (or `<command line>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Telemetry's settings, from the file and the `OTEL_*` variables together, disagree
    /// or are not numbers.
    #[error("telemetry: {message}")]
    Telemetry {
        /// Which setting or variable, and what is wrong with it.
        message: String,
    },
    /// A plugin path does not exist.
    #[error("plugin path {path} does not exist{origin}")]
    MissingPlugin {
        /// The path as resolved.
        path: PathBuf,
        /// Where it was given (" (from wasmeca.toml)") and how to build it, or empty.
        origin: String,
    },
    /// A plugin folder could not be listed.
    #[error("plugin folder {path}: {source}")]
    ListFolder {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A `[[plugin]]` entry: a component file or a folder of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// A `.wasm` file, or a folder whose `*.wasm` files are loaded in name order.
    pub path: PathBuf,
    /// Instances per plugin (default 1: state lives in one place).
    #[serde(default)]
    pub instances: Option<usize>,
    /// Options passed to `init` (a table).
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// The entity bases its plugins may use through `sys:entity` (default: every base).
    #[serde(default)]
    pub data: Option<Vec<String>>,
    /// Its own `[limits] replace_after_growth_mib`: a plugin that keeps state in its memory
    /// and handles large messages may need 0 (never replaced for growth) where others do not.
    #[serde(default)]
    pub replace_after_growth_mib: Option<usize>,
}

impl PluginEntry {
    /// How the plugin file at `path` (this entry's file, or one in its folder) is run.
    pub fn source(&self, path: PathBuf) -> PluginSource {
        PluginSource {
            path,
            options: Value::Object(self.options.clone().unwrap_or_default()),
            instances: self.instances.unwrap_or(1),
            data: self.data.clone(),
            replace_after_growth: self
                .replace_after_growth_mib
                .map(|mib| mib.saturating_mul(1024 * 1024)),
        }
    }
}

/// `[build]`: how `wasmeca serve --build` builds the plugins before serving them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// A shell command (`sh -e`: it stops at the first failing line) run in the config file's
    /// folder.
    pub command: String,
    /// The toolchain it needs (`rust`, `js`, `python`, `c`), checked before it runs; guessed
    /// from the command when absent.
    #[serde(default)]
    pub toolchain: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Plugins to load, in order (later ones override earlier ones on the same pattern).
    #[serde(default)]
    pub plugin: Vec<PluginEntry>,
    /// Act and instance limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where compiled components are cached (default: see `CompileCache::default_dir`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Turns the compile cache off.
    #[serde(default)]
    pub no_cache: bool,
    /// Names the plugins' compiled functions in `/tmp/perf-PID.map`, so `perf record` and
    /// `perf report` can profile a plugin's own code.
    #[serde(default)]
    pub perf_map: bool,
    /// Compiles every plugin optimised (Cranelift) before serving it. By default a plugin that
    /// has no compiled artifact yet is served at once from Winch's code, wasmtime's baseline
    /// compiler (several times faster to compile, slower to run), and moved onto Cranelift's
    /// when it is ready: a host starting on an empty cache answers in a fraction of the time.
    #[serde(default)]
    pub no_quick_start: bool,
    /// The program that compiles plugins in processes of their own (`wasmeca serve` sets its
    /// own binary), so that the compilers' memory does not stay with the host; `None` compiles
    /// in the host's process.
    #[serde(skip)]
    pub compiler: Option<PathBuf>,
    /// Watches the plugin folders and loads, replaces and unloads plugins as files come and go.
    #[serde(default)]
    pub watch: bool,
    /// The build step for `serve --build`.
    #[serde(default)]
    pub build: Option<Build>,
    /// The REST gateway.
    #[serde(default)]
    pub rest: Rest,
    /// Timeouts and the connection limit of the HTTP listeners.
    #[serde(default)]
    pub http: Http,
    /// The entity store.
    #[serde(default)]
    pub data: Data,
    /// The cache.
    #[serde(default)]
    pub cache: Cache,
    /// Where published events go.
    #[serde(default)]
    pub events: Events,
    /// What every AMQP listener, client and the events bus share: the broker's nodes and the
    /// type of the queues declared.
    #[serde(default)]
    pub amqp: Amqp,
    /// Transports to listen on; absent means one HTTP listener on 127.0.0.1:10101.
    #[serde(default)]
    pub listen: Option<Vec<Listen>>,
    /// Remote services that serve some patterns.
    #[serde(default)]
    pub client: Vec<Client>,
    /// Consul registration and discovery; on when this section is present or
    /// `CONSUL_HTTP_ADDR` is set.
    #[serde(default)]
    pub consul: Option<Consul>,
    /// `[telemetry]`: traces exported by OTLP (off when absent, unless `OTEL_*` asks).
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
    /// The folder relative paths are resolved against (the config file's folder).
    #[serde(skip)]
    pub base: PathBuf,
    /// Where the configuration came from, for messages.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
    /// This process's Seneca instance id, when it was made before the host (`wasmeca serve`
    /// makes it first, so that its spans name the process as its transports, `/health` and
    /// its Consul entry do); `None` has the host make one. One host per id: two hosts sharing
    /// one would each take the other for itself (Consul's peers, Seneca's loop check).
    #[serde(skip)]
    pub instance: Option<Arc<str>>,
}

impl Config {
    /// Reads and validates a `wasmeca.toml`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.base = path.parent().map(Path::to_owned).unwrap_or_default();
        config.origin = Some(path.to_owned());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no path resolution).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// A configuration serving the given plugin files or folders.
    pub fn from_paths(paths: &[PathBuf]) -> Self {
        Self {
            plugin: paths
                .iter()
                .map(|p| PluginEntry {
                    path: p.clone(),
                    instances: None,
                    options: None,
                    data: None,
                    replace_after_growth_mib: None,
                })
                .collect(),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self
                .origin
                .clone()
                .unwrap_or_else(|| "<command line>".into()),
            message,
        };
        if self.limits.timeout_ms == 0 {
            return Err(invalid("limits.timeout_ms must be above 0".into()));
        }
        let http = &self.http;
        if http.max_connections == 0
            || http.header_timeout_ms == 0
            || http.body_timeout_ms == 0
            || http.idle_timeout_ms == 0
        {
            return Err(invalid(
                "http.max_connections, http.header_timeout_ms, http.body_timeout_ms and \
                 http.idle_timeout_ms must be above 0"
                    .into(),
            ));
        }
        if self.limits.memory_mib < 1 {
            return Err(invalid("limits.memory_mib must be at least 1".into()));
        }
        for (i, client) in self.client.iter().enumerate() {
            for pin in client.pins() {
                if let Err(e) = Pattern::parse(&pin) {
                    return Err(invalid(format!("client {i}: {e}")));
                }
            }
        }
        for (i, listen) in self.listeners().iter().enumerate() {
            match listen {
                Listen::Http { path, .. } if !path.starts_with('/') => {
                    return Err(invalid(format!(
                        "listen {i}: path `{path}` must start with /"
                    )));
                }
                Listen::Amqp(amqp) => {
                    for pin in &amqp.pins {
                        if let Err(e) = Pattern::parse(pin) {
                            return Err(invalid(format!("listen {i}: {e}")));
                        }
                    }
                    if amqp.prefetch == 0 {
                        return Err(invalid(format!("listen {i}: prefetch must be at least 1")));
                    }
                }
                Listen::Http { .. } => {}
            }
        }
        if self.events.attempts == 0 || self.events.prefetch == 0 {
            return Err(invalid(
                "events.attempts and events.prefetch must be at least 1".into(),
            ));
        }
        let amqp_urls = self
            .amqp
            .url
            .iter()
            .map(|u| ("amqp.url", u))
            .chain(self.events.url.iter().map(|u| ("events.url", u)));
        for (what, urls) in amqp_urls {
            if let Some(url) = urls
                .iter()
                .find(|u| !(u.starts_with("amqp://") || u.starts_with("amqps://")))
            {
                return Err(invalid(format!(
                    "{what} `{}` is not an AMQP URL (amqp://user:pass@host:5672/vhost)",
                    crate::error::clip(url)
                )));
            }
        }
        if self.event_group().is_empty() {
            return Err(invalid("events.group must not be empty".into()));
        }
        if let Some(problem) = self.telemetry.as_ref().and_then(Telemetry::problem) {
            return Err(invalid(problem));
        }
        if let Some(entry) = self.plugin.iter().find(|p| p.instances == Some(0)) {
            return Err(invalid(format!(
                "plugin {}: instances must be at least 1",
                entry.path.display()
            )));
        }
        Ok(())
    }

    /// Where traces go, or `None` when telemetry is off: `[telemetry]` with the standard
    /// `OTEL_*` variables beneath it (`OTEL_SDK_DISABLED=true` turns it off).
    pub fn telemetry_settings(
        &self,
    ) -> Result<Option<crate::telemetry::TelemetrySettings>, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let service = self.consul.as_ref().map(|c| c.service.as_str());
        let settings = Telemetry::settings(self.telemetry.as_ref(), service, env)
            .map_err(|message| ConfigError::Telemetry { message })?;
        Ok(settings.map(|mut settings| {
            settings.instance = self.instance.clone();
            settings
        }))
    }

    /// Where the data stores are and who may reach them: `[data] url`, else `$DATABASE_URL`,
    /// else `sqlite://<data folder>/wasmeca.sqlite`; `[cache] url`, else `$REDIS_URL`, else
    /// `memory://`. (`WASMECA_DATA_URL` and `WASMECA_CACHE_URL` set the `url`s.)
    pub fn data_settings(&self) -> DataSettings {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let store = self
            .data
            .url
            .clone()
            .or_else(|| env("DATABASE_URL"))
            .unwrap_or_else(|| format!("sqlite://{}", self.default_store().display()));
        let cache = self
            .cache
            .url
            .clone()
            .or_else(|| env("REDIS_URL"))
            .unwrap_or_else(|| "memory://".to_owned());
        DataSettings {
            store,
            cache,
            expire: Duration::from_secs(self.cache.expire_s),
            expose: self.data.expose,
            max_answer_bytes: self.limits.max_result_bytes,
            max_kinds: self.data.max_kinds.unwrap_or(DEFAULT_MAX_KINDS),
        }
    }

    /// How long a draining host keeps serving before it stops listening: `[limits]
    /// drain_delay_ms`, else 1 s when it registers in Consul, else nothing.
    pub fn drain_delay(&self) -> Duration {
        let default = if self.consul().is_some() { 1_000 } else { 0 };
        Duration::from_millis(self.limits.drain_delay_ms.unwrap_or(default))
    }

    /// The group this host's observers consume events as: `[events] group`, else the Consul
    /// service name, else `wasmeca`.
    pub fn event_group(&self) -> String {
        self.events
            .group
            .clone()
            .or_else(|| self.consul().map(|c| c.service))
            .unwrap_or_else(|| "wasmeca".to_owned())
    }

    /// How failing observers are retried.
    pub fn event_retry(&self) -> crate::events::Retry {
        crate::events::Retry {
            attempts: self.events.attempts,
            backoff: Duration::from_millis(self.events.retry_ms),
        }
    }

    /// How a plugin with no compiled artifact is compiled to be served: quick start unless
    /// `no_quick_start`, by `compiler` when there is one.
    pub fn compiling(&self) -> Compiling {
        Compiling {
            quick_start: !self.no_quick_start,
            compiler: self.compiler.clone(),
        }
    }

    /// Where compiled components are cached: `cache_dir`, else the runtime's default folder;
    /// `None` with `no_cache`.
    pub fn cache(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(crate::runtime::CompileCache::default_dir)
        })
    }

    /// The Consul settings, when Consul is on (the section, or `CONSUL_HTTP_ADDR` in the
    /// environment).
    pub fn consul(&self) -> Option<Consul> {
        match &self.consul {
            Some(c) if c.enabled => Some(c.clone()),
            Some(_) => None,
            None if std::env::var("CONSUL_HTTP_ADDR").is_ok_and(|a| !a.is_empty()) => {
                Some(Consul::default())
            }
            None => None,
        }
    }

    /// The transports to listen on (the default HTTP listener when none are configured), each
    /// AMQP listener with its broker nodes and queue type resolved (its own, else `[amqp]`'s).
    pub fn listeners(&self) -> Vec<Listen> {
        let mut listen = self
            .listen
            .clone()
            .unwrap_or_else(|| vec![Listen::default_http()]);
        for l in &mut listen {
            if let Listen::Amqp(amqp) = l {
                amqp.url = Some(self.broker(amqp.url.as_ref()));
                amqp.queue_type.get_or_insert(self.amqp.queue_type);
            }
        }
        listen
    }

    /// The broker's nodes for a setting that names `given`: those, else `[amqp] url`, else
    /// `$AMQP_URL`, else RabbitMQ on loopback.
    pub fn broker(&self, given: Option<&Urls>) -> Urls {
        amqp_urls(given.or(self.amqp.url.as_ref()))
    }

    /// An AMQP `[[client]]` with its broker nodes resolved.
    pub fn amqp_client(&self, client: &AmqpClientConfig) -> AmqpClientConfig {
        AmqpClientConfig {
            url: Some(self.broker(client.url.as_ref())),
            ..client.clone()
        }
    }

    /// Resolves a path from the configuration against its folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    /// A plugin entry's path, resolved against the configuration's folder and made canonical
    /// when it exists, so a file loaded at start and the same file reported by the watcher
    /// have one name.
    pub fn plugin_path(&self, path: &Path) -> PathBuf {
        let path = self.resolve(path);
        std::fs::canonicalize(&path).unwrap_or(path)
    }

    /// The plugin files to load, in order: folders expand to their `*.wasm` files by name.
    pub fn plugin_sources(&self) -> Result<Vec<PluginSource>, ConfigError> {
        let origin = self
            .origin
            .as_ref()
            .map_or_else(String::new, |o| format!(" (from {})", o.display()));
        // Built plugins are missing until the build has run: say how to run it.
        let origin = match &self.build {
            Some(_) => format!("{origin}; `wasmeca serve --build` or `wasmeca build` builds them"),
            None => origin,
        };
        let mut sources = Vec::new();
        for entry in &self.plugin {
            let path = self.plugin_path(&entry.path);
            if path.is_dir() {
                for file in wasm_files(&path)? {
                    sources.push(entry.source(file));
                }
            } else if path.exists() {
                sources.push(entry.source(path));
            } else {
                return Err(ConfigError::MissingPlugin { path, origin });
            }
        }
        Ok(sources)
    }
}

/// The `*.wasm` files directly in `dir`, sorted by name.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let list = |source| ConfigError::ListFolder {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list)? {
        let path = entry.map_err(list)?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests;
