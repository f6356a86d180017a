//! `wasmeca.toml`: what to load and how, validated on read (unknown keys are errors that name
//! the file, line and key), with paths resolved against the file's folder. Pure, no sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::pattern::Pattern;
use crate::plugins::PluginSource;

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

/// Limits every act and instance runs under.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Default act timeout when a message has no `timeout$` (Seneca's 22222 ms).
    pub timeout_ms: u64,
    /// Linear memory cap per plugin instance, in MiB.
    pub memory_mib: usize,
    /// How deep acts may nest (an action acting an action ...) before `act_depth_limit`.
    pub max_depth: u32,
    /// Deadline for a plugin's `init`, in ms.
    pub init_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: crate::message::DEFAULT_TIMEOUT_MS,
            memory_mib: 64,
            max_depth: 32,
            init_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    /// The default act timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The init deadline.
    pub fn init_timeout(&self) -> Duration {
        Duration::from_millis(self.init_timeout_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.saturating_mul(1024 * 1024)
    }
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

/// An address to listen on, or nothing (`"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" | "false" | "none" => Ok(Self(None)),
            addr => addr.parse().map(|a| Self(Some(a))).map_err(|e| {
                format!("`{addr}` is not an address like 127.0.0.1:3000 or \"off\" ({e})")
            }),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[rest]`: the REST gateway built from seneca-web route maps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rest {
    /// Where the gateway listens (with `/health`, `/metrics` and `/plugins`); `"off"` turns it off.
    pub listen: ListenAddr,
    /// The largest request body accepted, in bytes; larger bodies get 413.
    pub body_limit: usize,
    /// seneca-web route sets for patterns served elsewhere (by `[[client]]`s or peers).
    pub route: Vec<Value>,
}

impl Default for Rest {
    fn default() -> Self {
        Self {
            listen: ListenAddr(Some(SocketAddr::from(([127, 0, 0, 1], 3000)))),
            body_limit: 1 << 20,
            route: Vec::new(),
        }
    }
}

/// `[[listen]]`: a Seneca transport this host listens on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Listen {
    /// Seneca's HTTP transport (`seneca.listen({type: 'http'})`): every message is acted; pins
    /// are ignored, as in Seneca.
    Http {
        /// Interface to bind.
        #[serde(default = "default_listen_host")]
        host: String,
        /// Port (Seneca's default 10101; 0 picks a free one).
        #[serde(default = "default_port")]
        port: u16,
        /// Path of the act endpoint.
        #[serde(default = "default_path")]
        path: String,
    },
    /// seneca-amqp-transport (`seneca.listen({type: 'amqp', pin})`): one durable queue per pin
    /// on the topic exchange, named and bound as Node's listener does.
    Amqp(AmqpListen),
}

/// `[[listen]] type = "amqp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpListen {
    /// Broker URL; default `$AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672`.
    #[serde(default)]
    pub url: Option<String>,
    /// Pins to listen for; empty means every pattern of the loaded plugins (following hot
    /// reloads).
    #[serde(default)]
    pub pins: Vec<String>,
    /// One queue with this name for all pins, instead of one queue per pin.
    #[serde(default)]
    pub name: Option<String>,
    /// The topic exchange (Seneca's `seneca.topic`).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Prefix of derived queue names (Seneca's `seneca.add`).
    #[serde(default = "default_listen_prefix")]
    pub queue_prefix: String,
    /// Dead-letter exchange (Seneca's `seneca.dlx`), bound to `dead_letter_queue` with `#`.
    #[serde(default = "default_dlx")]
    pub dead_letter_exchange: String,
    /// Where refused messages end up (Seneca's `seneca.dlq`).
    #[serde(default = "default_dlq")]
    pub dead_letter_queue: String,
    /// Messages handled at once (Node's listener handles one).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
}

impl Default for AmqpListen {
    fn default() -> Self {
        Self {
            url: None,
            pins: Vec::new(),
            name: None,
            exchange: default_exchange(),
            queue_prefix: default_listen_prefix(),
            dead_letter_exchange: default_dlx(),
            dead_letter_queue: default_dlq(),
            prefetch: default_prefetch(),
        }
    }
}

/// `[[client]] type = "amqp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpClient {
    /// Broker URL; default `$AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672`.
    #[serde(default)]
    pub url: Option<String>,
    /// One pin.
    #[serde(default)]
    pub pin: Option<String>,
    /// Several pins.
    #[serde(default)]
    pub pins: Vec<String>,
    /// The topic exchange (Seneca's `seneca.topic`).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Prefix of the reply queue (Seneca's `seneca.act`).
    #[serde(default = "default_client_prefix")]
    pub queue_prefix: String,
    /// Dead-letter exchange named on the reply queue (Seneca's `seneca.dlx`).
    #[serde(default = "default_dlx")]
    pub dead_letter_exchange: String,
    /// How long to wait for a reply, in ms; the act's own deadline still applies.
    #[serde(default = "default_amqp_timeout")]
    pub timeout_ms: u64,
}

impl Default for AmqpClient {
    fn default() -> Self {
        Self {
            url: None,
            pin: None,
            pins: Vec::new(),
            exchange: default_exchange(),
            queue_prefix: default_client_prefix(),
            dead_letter_exchange: default_dlx(),
            timeout_ms: default_amqp_timeout(),
        }
    }
}

/// The broker URL: the given one, else `$AMQP_URL`, else RabbitMQ's default on loopback.
pub fn amqp_url(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn default_exchange() -> String {
    "seneca.topic".into()
}
fn default_listen_prefix() -> String {
    "seneca.add".into()
}
fn default_client_prefix() -> String {
    "seneca.act".into()
}
fn default_dlx() -> String {
    "seneca.dlx".into()
}
fn default_dlq() -> String {
    "seneca.dlq".into()
}
fn default_prefetch() -> u16 {
    64
}
fn default_amqp_timeout() -> u64 {
    crate::message::DEFAULT_TIMEOUT_MS
}

impl Listen {
    /// The HTTP listener on Seneca's default port, on loopback.
    pub fn default_http() -> Self {
        Self::Http {
            host: default_listen_host(),
            port: default_port(),
            path: default_path(),
        }
    }
}

/// `[[client]]`: patterns served by another Seneca-compatible service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Client {
    /// Seneca's HTTP transport (`seneca.client({type: 'http', pin})`).
    Http {
        /// The remote host.
        #[serde(default = "default_client_host")]
        host: String,
        /// The remote port.
        #[serde(default = "default_port")]
        port: u16,
        /// The remote act path.
        #[serde(default = "default_path")]
        path: String,
        /// One pin (a pattern, globs allowed); with neither `pin` nor `pins` the client catches
        /// every act nothing local matches.
        #[serde(default)]
        pin: Option<String>,
        /// Several pins.
        #[serde(default)]
        pins: Vec<String>,
        /// Request timeout in ms (Seneca's client default 5555); the act's own deadline still
        /// applies when it is shorter.
        #[serde(default = "default_client_timeout")]
        timeout_ms: u64,
    },
    /// seneca-amqp-transport (`seneca.client({type: 'amqp', pin})`).
    Amqp(AmqpClient),
}

impl Client {
    /// The pins as written (`pin` first); empty means catch-all.
    pub fn pins(&self) -> Vec<String> {
        match self {
            Self::Http { pin, pins, .. } | Self::Amqp(AmqpClient { pin, pins, .. }) => {
                pin.iter().chain(pins).cloned().collect()
            }
        }
    }
}

fn default_listen_host() -> String {
    "127.0.0.1".into()
}
fn default_client_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    10101
}
fn default_path() -> String {
    "/act".into()
}
fn default_client_timeout() -> u64 {
    5555
}

/// How cross-host acts pick among the peers that can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each peer in turn.
    #[default]
    RoundRobin,
    /// A peer at random.
    Random,
    /// At random, weighted by each instance's Consul `Weights.Passing`.
    Weighted,
}

/// `[consul]`: registration in Consul and discovery of peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consul {
    /// Turns Consul off even when `CONSUL_HTTP_ADDR` is set.
    pub enabled: bool,
    /// The agent's HTTP API; default `$CONSUL_HTTP_ADDR`, else `http://127.0.0.1:8500`.
    pub address: Option<String>,
    /// ACL token; default `$CONSUL_HTTP_TOKEN`.
    pub token: Option<String>,
    /// The service name this host registers as.
    pub service: String,
    /// The address peers reach this host at; default the HTTP listener's address (127.0.0.1
    /// when it listens on every interface).
    pub advertise: Option<String>,
    /// Health check interval, in ms.
    pub check_interval_ms: u64,
    /// Health check timeout, in ms.
    pub check_timeout_ms: u64,
    /// How long a critical instance stays registered, in ms (Consul's minimum is one minute).
    pub deregister_after_ms: u64,
    /// Services whose passing instances serve patterns to this host (default: its own).
    pub peers: Vec<String>,
    /// How to pick among peers that can answer.
    pub balance: Balance,
}

impl Default for Consul {
    fn default() -> Self {
        Self {
            enabled: true,
            address: None,
            token: None,
            service: "wasmeca".into(),
            advertise: None,
            check_interval_ms: 10_000,
            check_timeout_ms: 2_000,
            deregister_after_ms: 60_000,
            peers: Vec::new(),
            balance: Balance::RoundRobin,
        }
    }
}

impl Consul {
    /// The agent URL: the configured one, else `$CONSUL_HTTP_ADDR`, with `http://` added when
    /// it has no scheme.
    pub fn agent_url(&self) -> String {
        let raw = self
            .address
            .clone()
            .or_else(|| {
                std::env::var("CONSUL_HTTP_ADDR")
                    .ok()
                    .filter(|a| !a.is_empty())
            })
            .unwrap_or_else(|| "http://127.0.0.1:8500".into());
        let raw = raw.trim_end_matches('/').to_owned();
        if raw.contains("://") {
            raw
        } else {
            format!("http://{raw}")
        }
    }

    /// The ACL token, if any.
    pub fn acl_token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        })
    }

    /// The services to watch for peers.
    pub fn peer_services(&self) -> Vec<String> {
        if self.peers.is_empty() {
            vec![self.service.clone()]
        } else {
            self.peers.clone()
        }
    }
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
    /// Watches the plugin folders and loads, replaces and unloads plugins as files come and go.
    #[serde(default)]
    pub watch: bool,
    /// The build step for `serve --build`.
    #[serde(default)]
    pub build: Option<Build>,
    /// The REST gateway.
    #[serde(default)]
    pub rest: Rest,
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
    /// The folder relative paths are resolved against (the config file's folder).
    #[serde(skip)]
    pub base: PathBuf,
    /// Where the configuration came from, for messages.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
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
        if let Some(entry) = self.plugin.iter().find(|p| p.instances == Some(0)) {
            return Err(invalid(format!(
                "plugin {}: instances must be at least 1",
                entry.path.display()
            )));
        }
        Ok(())
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

    /// The transports to listen on (the default HTTP listener when none are configured).
    pub fn listeners(&self) -> Vec<Listen> {
        self.listen
            .clone()
            .unwrap_or_else(|| vec![Listen::default_http()])
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
            let source = |path: PathBuf| PluginSource {
                path,
                options: Value::Object(entry.options.clone().unwrap_or_default()),
                instances: entry.instances.unwrap_or(1),
            };
            if path.is_dir() {
                for file in wasm_files(&path)? {
                    sources.push(source(file));
                }
            } else if path.exists() {
                sources.push(source(path));
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
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.limits.timeout_ms, 22_222);
        assert_eq!(c.limits.memory_bytes(), 64 << 20);
        assert!(c.plugin.is_empty());
    }

    #[test]
    fn full_file() {
        let c = Config::from_toml(
            r#"
            cache_dir = "/tmp/x"
            [build]
            command = "make"
            [limits]
            timeout_ms = 500
            memory_mib = 8
            [[plugin]]
            path = "plugins"
            [[plugin]]
            path = "user.wasm"
            instances = 4
            options = { seed = [1, 2], name = "x" }
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.timeout(), Duration::from_millis(500));
        assert_eq!(c.limits.max_depth, 32);
        assert_eq!(c.plugin[1].instances, Some(4));
        assert_eq!(
            c.plugin[1].options.as_ref().unwrap()["seed"],
            serde_json::json!([1, 2])
        );
        assert_eq!(c.build.unwrap().command, "make");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = Config::from_toml("[limits]\ntimeout_ms = 5\ntimeuot = 3\n").unwrap_err();
        assert!(e.contains("unknown field `timeuot`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = Config::from_toml("plugins = []").unwrap_err();
        assert!(e.contains("unknown field `plugins`"), "{e}");
        let e = Config::from_toml("[[plugin]]\npath = 3\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn transports_and_rest() {
        let c = Config::from_toml(
            r#"
            [rest]
            listen = "0.0.0.0:8080"
            body_limit = 10
            [[rest.route]]
            prefix = "/config"
            pin = "target:config-server"
            map = { config = true }
            [[listen]]
            type = "http"
            port = 0
            [[client]]
            type = "http"
            port = 10102
            pin = "role:math,cmd:*"
            "#,
        )
        .unwrap();
        assert_eq!(c.rest.listen.0, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(c.rest.route[0]["map"]["config"], serde_json::json!(true));
        assert_eq!(
            c.listeners(),
            [Listen::Http {
                host: "127.0.0.1".into(),
                port: 0,
                path: "/act".into()
            }]
        );
        assert_eq!(c.client[0].pins(), ["role:math,cmd:*"]);
        let Client::Http {
            timeout_ms, host, ..
        } = &c.client[0]
        else {
            panic!("an http client")
        };
        assert_eq!((*timeout_ms, host.as_str()), (5555, "127.0.0.1"));

        let d = Config::from_toml("").unwrap();
        assert_eq!(d.listeners(), [Listen::default_http()]);
        assert_eq!(d.rest.listen.0, Some("127.0.0.1:3000".parse().unwrap()));
        let off = Config::from_toml("listen = []\n[rest]\nlisten = \"off\"").unwrap();
        assert!(off.listeners().is_empty() && off.rest.listen.0.is_none());
        let e = Config::from_toml("[rest]\nlisten = \"nowhere\"").unwrap_err();
        assert!(e.contains("`nowhere` is not an address"), "{e}");
        let e = Config::from_toml("[[listen]]\ntype = \"pigeon\"").unwrap_err();
        assert!(e.contains("pigeon"), "{e}");
        let e = Config::from_toml("[[client]]\ntype = \"http\"\npni = \"x:1\"").unwrap_err();
        assert!(e.contains("pni"), "{e}");
    }

    #[test]
    fn amqp_listen_and_client() {
        let c = Config::from_toml(
            r#"
            [[listen]]
            type = "amqp"
            pins = ["cmd:salute", "role:user,cmd:*"]
            prefetch = 8
            [[client]]
            type = "amqp"
            pin = "role:math,cmd:*"
            exchange = "test.topic"
            "#,
        )
        .unwrap();
        let Listen::Amqp(listen) = &c.listeners()[0] else {
            panic!("amqp listener")
        };
        assert_eq!(
            (
                listen.exchange.as_str(),
                listen.queue_prefix.as_str(),
                listen.prefetch
            ),
            ("seneca.topic", "seneca.add", 8)
        );
        assert_eq!(listen.dead_letter_queue, "seneca.dlq");
        let Client::Amqp(client) = &c.client[0] else {
            panic!("amqp client")
        };
        assert_eq!(
            (client.exchange.as_str(), client.queue_prefix.as_str()),
            ("test.topic", "seneca.act")
        );
        assert_eq!(c.client[0].pins(), ["role:math,cmd:*"]);
        assert!(amqp_url(Some("amqp://x")).starts_with("amqp://x"));
    }

    #[test]
    fn consul_section() {
        let c = Config::from_toml("[consul]\naddress = \"127.0.0.1:8501\"\nbalance = \"weighted\"\npeers = [\"a\", \"b\"]").unwrap();
        let consul = c.consul().unwrap();
        assert_eq!(consul.agent_url(), "http://127.0.0.1:8501");
        assert_eq!(
            (consul.balance, consul.service.as_str()),
            (Balance::Weighted, "wasmeca")
        );
        assert_eq!(consul.peer_services(), ["a", "b"]);
        assert!(
            Config::from_toml("[consul]\nenabled = false")
                .unwrap()
                .consul()
                .is_none()
        );
        let e = Config::from_toml("[consul]\nbalance = \"fastest\"").unwrap_err();
        assert!(e.contains("fastest"), "{e}");
    }

    #[test]
    fn bad_client_pins_are_refused() {
        let mut c = Config::from_toml("[[client]]\ntype = \"http\"\npin = \"a:1,,b\"").unwrap();
        c.origin = Some("wasmeca.toml".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("client 0") && e.contains("column 5"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = Config {
            base: "/etc/app".into(),
            ..Config::default()
        };
        assert_eq!(
            c.resolve(Path::new("p/x.wasm")),
            Path::new("/etc/app/p/x.wasm")
        );
        assert_eq!(c.resolve(Path::new("/abs.wasm")), Path::new("/abs.wasm"));
    }

    #[test]
    fn deeply_nested_options_are_refused_not_a_crash() {
        // toml stops at its own recursion limit, well under 3,000 levels.
        let deep = format!(
            "[[plugin]]\npath = 'x'\noptions = {{ a = {}1{} }}\n",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        let e = Config::from_toml(&deep).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let tables = format!("{}1{}", "{ a = ".repeat(3000), " }".repeat(3000));
        assert!(Config::from_toml(&format!("[rest]\nroute = [{tables}]")).is_err());
    }

    #[test]
    fn zero_instances_is_refused() {
        let mut c = Config::from_toml("[[plugin]]\npath = 'x'\ninstances = 0\n").unwrap();
        c.origin = Some("wasmeca.toml".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("instances must be at least 1"), "{e}");
    }

    #[test]
    fn missing_plugin_path() {
        let c = Config::from_paths(&["/nonexistent/zzz.wasm".into()]);
        let e = c.plugin_sources().unwrap_err().to_string();
        assert_eq!(e, "plugin path /nonexistent/zzz.wasm does not exist");
    }
}
