//! wasmeca: a host runtime for Seneca-style message-pattern services written as WebAssembly
//! components. Plugins declare patterns (`cmd:salute`, `role:user,cmd:*`); the host matches
//! every message to the plugin action whose pattern fits, exactly as Seneca's patrun does, and
//! answers it, whichever ingress it came from.
//!
//! # Layout
//!
//! - [`pattern`]: jsonic pattern strings, `String(value)` comparison, gex globs, the patrun trie.
//! - [`message`]: messages and their meta keys, act ids (`mi/tx`), Seneca-shaped errors.
//! - [`runtime`]: the wasmtime engine, compile cache, instances, limits and host imports.
//! - [`plugins`]: the loaded set (`name@version` → plugin) and its routing trie, one snapshot.
//! - [`router`]: `act()`, the one path every ingress shares.
//! - [`gateway`]: the REST gateway from seneca-web route maps, `/health`, `/metrics`, `/plugins`.
//! - [`transport`]: Seneca's HTTP and AMQP transports (listeners and clients), the history cache.
//! - [`discovery`]: Consul registration and the peer table for cross-host acts.
//! - [`metrics`]: the Prometheus metrics.
//! - [`reload`]: the plugin folder watcher: load, replace, unload as files come and go.
//! - [`config`]: `wasmeca.toml`, validated.
//! - [`authoring`]: `new`, `build`, `componentize` and `check` for plugin authors.
//! - [`shutdown`]: the cancellation token that drains and stops everything.

pub mod authoring;
pub mod config;
pub mod discovery;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod pattern;
pub mod plugins;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod shutdown;
pub mod transport;

pub use config::Config;
pub use message::{ActError, Message, Reply};
pub use plugins::{Plugin, PluginSource};
pub use router::Router;
pub use runtime::{LoadError, Runtime};
pub use shutdown::CancellationToken;

use std::net::SocketAddr;
use std::sync::Arc;

use config::Listen;
use metrics::Metrics;
use pattern::Pattern;
use runtime::CompileCache;
use tokio::task::JoinHandle;
use transport::{ClientEntry, History, Remote};

/// Why the host could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The wasm runtime could not start.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A listener could not bind its address.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A client transport could not be set up.
    #[error("client {index}: {reason}")]
    Client {
        /// Its index in `[[client]]`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The plugin folders could not be watched.
    #[error(transparent)]
    Watch(#[from] reload::WatchError),
    /// A server stopped with an error.
    #[error("{what} failed: {source}")]
    Server {
        /// Which server.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// A running host: the router with its plugins, and every ingress listening.
pub struct Host {
    /// Acts and holds the plugins.
    router: Router,
    /// Where the REST gateway listens, if it does.
    rest: Option<SocketAddr>,
    /// Where the Seneca HTTP listeners listen.
    http: Vec<SocketAddr>,
    /// The servers, each finishing its in-flight requests when `shutdown` is cancelled.
    tasks: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
    /// Stops everything.
    shutdown: CancellationToken,
}

/// The client transports of a configuration, as trie entries.
fn clients(config: &Config, origin: &Arc<str>) -> Result<Vec<Arc<ClientEntry>>, ServeError> {
    let mut entries = Vec::new();
    for (index, client) in config.client.iter().enumerate() {
        let remote: Arc<dyn Remote> = match client {
            config::Client::Http {
                host,
                port,
                path,
                timeout_ms,
                ..
            } => {
                let timeout = std::time::Duration::from_millis(*timeout_ms);
                let client =
                    transport::http::HttpClient::new(host, *port, path, timeout, origin.clone())
                        .map_err(|e| ServeError::Client {
                            index,
                            reason: e.to_string(),
                        })?;
                Arc::new(client)
            }
            config::Client::Amqp(amqp) => Arc::new(transport::amqp::AmqpClient::new(
                amqp.clone(),
                origin.clone(),
            )),
        };
        let pins = client.pins();
        let pins = if pins.is_empty() {
            vec![String::new()]
        } else {
            pins
        };
        for pin in pins {
            let pin = Pattern::parse(&pin).map_err(|e| ServeError::Client {
                index,
                reason: e.to_string(),
            })?;
            entries.push(Arc::new(ClientEntry {
                pin,
                remote: remote.clone(),
            }));
        }
    }
    Ok(entries)
}

impl Host {
    /// Loads the plugins and starts every ingress the configuration asks for; returns once all
    /// of them listen.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, ServeError> {
        let router = router(config)?;
        let mut tasks = Vec::new();
        if config.watch {
            // Watch first, so nothing landing during the initial load is missed; a bad file
            // is reported and skipped instead of stopping the host.
            let watching = reload::start(router.clone(), config, shutdown.clone())?;
            tasks.push((
                "the plugin watcher",
                tokio::spawn(async move { watching.await.map_err(std::io::Error::other) }),
            ));
            router.load_each(&config.plugin_sources()?).await;
        } else {
            router.load_all(&config.plugin_sources()?).await?;
        }
        let mut rest = None;
        if let Some(addr) = config.rest.listen.0 {
            let bind = |source| ServeError::Bind {
                what: "the REST gateway",
                addr: addr.to_string(),
                source,
            };
            let listener = gateway::bind(addr).await.map_err(bind)?;
            rest = Some(listener.local_addr().map_err(bind)?);
            let task = gateway::run(
                listener,
                router.clone(),
                config.rest.body_limit,
                shutdown.clone(),
            );
            tasks.push(("the REST gateway", tokio::spawn(task)));
        }
        let history = Arc::new(History::new(100_000));
        let mut http = Vec::new();
        for listen in config.listeners() {
            match listen {
                Listen::Http { host, port, path } => {
                    let bind = |source| ServeError::Bind {
                        what: "Seneca's HTTP transport",
                        addr: format!("{host}:{port}"),
                        source,
                    };
                    let listener = transport::http::bind(&host, port).await.map_err(bind)?;
                    http.push(listener.local_addr().map_err(bind)?);
                    let task = transport::http::run(
                        listener,
                        router.clone(),
                        path,
                        history.clone(),
                        shutdown.clone(),
                    );
                    tasks.push(("Seneca's HTTP transport", tokio::spawn(task)));
                }
                Listen::Amqp(amqp) => {
                    let task = transport::amqp::run_listener(
                        amqp,
                        router.clone(),
                        history.clone(),
                        shutdown.clone(),
                    );
                    tasks.push((
                        "the AMQP listener",
                        tokio::spawn(async move {
                            task.await;
                            Ok(())
                        }),
                    ));
                }
            }
        }
        if let Some(consul) = config.consul() {
            let discovery =
                discovery::consul::Discovery::new(consul, router.instance_id(), shutdown.clone());
            router.set_discovery(discovery.clone());
            let registration = discovery.start(router.clone(), http.first().copied(), rest);
            tasks.push((
                "the Consul registration",
                tokio::spawn(async move { registration.await.map_err(std::io::Error::other) }),
            ));
        }
        Ok(Self {
            router,
            rest,
            http,
            tasks,
            shutdown,
        })
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Where the REST gateway listens.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest
    }

    /// Where the Seneca HTTP listeners listen.
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http
    }

    /// Serves until the shutdown token is cancelled, then lets every ingress finish its
    /// requests in flight, and returns once no act is running.
    pub async fn wait(self) -> Result<(), ServeError> {
        for plugin in self.router.plugins().plugins() {
            let patterns: Vec<String> = plugin
                .actions
                .iter()
                .map(|a| a.pattern.to_string())
                .collect();
            tracing::info!(plugin = %plugin.key(), "serving {}", patterns.join(" | "));
        }
        if let Some(addr) = self.rest {
            tracing::info!("REST gateway on http://{addr} (/health, /metrics, /plugins)");
        }
        for addr in &self.http {
            tracing::info!("Seneca HTTP transport on http://{addr}");
        }
        self.shutdown.cancelled().await;
        // Ingresses first: each stops taking work and finishes what it started (using the
        // router); then the router refuses anything left and waits for nested work.
        let mut failure = None;
        for (what, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => failure = Some(ServeError::Server { what, source }),
                Err(join) => {
                    failure = Some(ServeError::Server {
                        what,
                        source: std::io::Error::other(join),
                    })
                }
            }
        }
        self.router.close();
        self.router.drained().await;
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// The runtime and router of a configuration, with its client transports and no plugin yet.
fn router(config: &Config) -> Result<Router, ServeError> {
    let cache = (!config.no_cache).then(|| {
        config
            .cache_dir
            .clone()
            .unwrap_or_else(CompileCache::default_dir)
    });
    let runtime = Runtime::new(cache, config.limits.memory_bytes())?;
    let origin = transport::instance_id();
    let clients = clients(config, &origin)?;
    Ok(Router::with_clients(
        runtime,
        config.limits.clone(),
        origin,
        clients,
        config.rest.route.clone(),
        Arc::new(Metrics::default()),
    ))
}

/// Builds the runtime and router for a configuration and loads its plugins, with no ingress
/// (what `wasmeca act` uses).
pub async fn start(config: &Config) -> Result<Router, ServeError> {
    let router = router(config)?;
    router.load_all(&config.plugin_sources()?).await?;
    Ok(router)
}

/// Serves a configuration until `shutdown` is cancelled, then drains in-flight work.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    Host::start(&config, shutdown).await?.wait().await
}
