//! wasmeca: a host runtime for Seneca-style message-pattern services written as WebAssembly
//! components. Plugins declare patterns (`cmd:salute`, `role:user,cmd:*`); the host matches
//! every message to the action whose pattern fits, exactly as Seneca's patrun does, and answers
//! it, whichever ingress it came from.
//!
//! # Layout
//!
//! Five layers; a module imports only from its own layer and the layers below, and no two
//! modules import each other (`tests/architecture.rs` holds the code to this list):
//!
//! 1. ground: [`error`] (Seneca-shaped errors and the host's codes), [`pattern`] (jsonic,
//!    `String(value)`, gex globs, the patrun trie), [`message`] (messages, meta keys, ids,
//!    answers), [`metrics`] (Prometheus), [`shutdown`] (the token that drains everything).
//! 2. engine: [`runtime`] (the wasmtime engine, compile cache, instances and pools; the `Host`
//!    and `Handler` traits through which guests call up).
//! 3. core: [`plugins`] (one plugin: manifest, backend), [`remote`] (the `Remote` and `Peers`
//!    traits), [`registry`] (the plugin set, its snapshots and life cycle), [`router`] (`act()`),
//!    [`ingress`] (the step every listener shares), [`events`] (publish and observe, the
//!    in-memory bus), [`builtins`] (Seneca's `role:seneca` actions, answered natively).
//! 4. settings: [`config`] (`wasmeca.toml`, validated; builds the core's types).
//! 5. adapters: [`gateway`] (REST, `/health`, `/metrics`, `/plugins`), [`transport`] (Seneca's
//!    HTTP and AMQP transports), [`discovery`] (Consul; implements `Peers`), [`data`] (the
//!    entity and cache stores, served as native actions), [`reload`] (the plugin folder
//!    watcher), [`authoring`] (`new`, `build`, `check`, `componentize`), and the CLI
//!    (`main.rs`).
//!
//! This file assembles a [`Host`] from a configuration.
//!
//! # The path of a REST request
//!
//! 1. `gateway/mod.rs` reads the request and builds the seneca-web message,
//! 2. `gateway/routes.rs` finds its route in the table it keeps for the current plugins,
//! 3. `ingress.rs` counts it and hands it to the router,
//! 4. `router.rs` gives it ids, a deadline and a depth, and resolves it,
//! 5. `registry/snapshot.rs` finds the action by patrun's walk and `$version`, and calls it,
//! 6. `runtime/instance.rs` leases an instance and runs the guest's `handle`;
//!
//! the answer goes back the same way and `gateway/mod.rs` writes it as JSON.
//!
//! # The path of an AMQP delivery
//!
//! 1. `transport/amqp/listener.rs` takes the delivery from the broker,
//! 2. `transport/amqp/wire.rs` decodes the envelope into a message,
//! 3. `ingress.rs` checks the loop, answers a repeated id from the history, counts it,
//! 4. `router.rs` resolves it,
//! 5. `registry/snapshot.rs` calls the action,
//! 6. `runtime/instance.rs` runs the guest;
//!
//! `wire.rs` encodes the reply envelope and `listener.rs` publishes it, then acknowledges.

pub mod authoring;
pub mod builtins;
pub mod config;
pub mod data;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gateway;
pub mod ingress;
pub mod message;
pub mod metrics;
pub mod pattern;
pub mod plugins;
pub mod principal;
pub mod registry;
pub mod reload;
pub mod remote;
pub mod router;
pub mod runtime;
pub mod shutdown;
pub mod transport;

pub use config::Config;
pub use error::{ActError, Code};
pub use message::{Message, Reply};
pub use plugins::{Plugin, PluginSource};
pub use registry::Registry;
pub use router::Router;
pub use runtime::{LoadError, Runtime};
pub use shutdown::CancellationToken;

use std::net::SocketAddr;
use std::sync::Arc;

use config::Listen;
use gateway::table::Routes;
use ingress::{History, Ingress};
use metrics::Metrics;
use pattern::Pattern;
use remote::{ClientEntry, Remote};
use tokio::task::JoinHandle;

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
    #[error("client {index}: {source}")]
    Client {
        /// Its index in `[[client]]`.
        index: usize,
        /// Why.
        source: reqwest::Error,
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

/// How many message ids the reply history remembers at most.
const HISTORY: usize = 100_000;

/// How many bytes of ids and answers the reply history keeps at most (under sustained load it
/// stays this size instead of holding every answer of the last act timeout).
const HISTORY_BYTES: usize = 8 << 20;

/// A running host: the router with its plugins, and every ingress listening.
pub struct Host {
    /// Acts and holds the plugins.
    router: Router,
    /// Where the REST gateway listens, if it does.
    rest: Option<SocketAddr>,
    /// Where the Seneca HTTP listeners listen.
    http: Vec<SocketAddr>,
    /// The REST routes of the plugins and the configuration.
    routes: Arc<Routes>,
    /// The servers, each finishing its in-flight requests when `shutdown` is cancelled.
    tasks: Tasks,
    /// How long the ingresses may take to finish their work before it is interrupted.
    drain_timeout: std::time::Duration,
    /// Stops everything.
    shutdown: CancellationToken,
}

/// The servers of a host, each named, finishing its in-flight work when the shutdown token is
/// cancelled.
type Tasks = Vec<(&'static str, JoinHandle<std::io::Result<()>>)>;

/// Spawns one of the host's servers. One that stops with an error before the host shuts down
/// (a broker whose queue disagrees with the configuration, say) shuts the host down with that
/// error, so a scheduler sees it exit and says why, instead of a host that half serves.
fn serve_task(
    tasks: &mut Tasks,
    what: &'static str,
    shutdown: &CancellationToken,
    task: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) {
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let ended = task.await;
        if let Err(e) = &ended
            && !stop.is_cancelled()
        {
            tracing::error!("{what} stopped: {e}; shutting the host down");
            stop.cancel();
        }
        ended
    });
    tasks.push((what, task));
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
                        .map_err(|source| ServeError::Client { index, source })?;
                Arc::new(client)
            }
            config::Client::Amqp(amqp) => Arc::new(transport::amqp::AmqpClient::new(
                config.amqp_client(amqp),
                origin.clone(),
            )),
        };
        // Pins were checked when the configuration was read; none means catch-all.
        let pins: Vec<Pattern> = client
            .pins()
            .iter()
            .filter_map(|pin| Pattern::parse(pin).ok())
            .collect();
        let pins = if pins.is_empty() {
            vec![Pattern::default()]
        } else {
            pins
        };
        for pin in pins {
            entries.push(Arc::new(ClientEntry {
                pin,
                remote: remote.clone(),
            }));
        }
    }
    Ok(entries)
}

/// A router over `runtime` with `limits`, the client pins `clients` (tried after local plugins)
/// and Seneca's built-in actions, answering as the Seneca instance `origin`; no plugin loaded
/// yet.
pub fn assemble(
    runtime: Runtime,
    limits: &config::Limits,
    clients: Vec<Arc<ClientEntry>>,
    origin: Arc<str>,
) -> Router {
    let registry = Registry::new(
        runtime,
        clients,
        Arc::new(Metrics::default()),
        registry::LoadLimits {
            init_timeout: limits.init_timeout(),
            memory_budget: limits.memory_budget(),
        },
    );
    let router = Router::new(registry, limits.act(), origin);
    builtins::install(&router);
    router
}

/// The runtime, registry and router of a configuration, with its client pins and no plugin
/// loaded yet.
pub fn router(config: &Config) -> Result<Router, ServeError> {
    let runtime = Runtime::with_limits(
        config.cache(),
        config.limits.memory_bytes(),
        config.limits.max_result_bytes,
    )?;
    let origin = message::instance_id();
    let clients = clients(config, &origin)?;
    let router = assemble(runtime, &config.limits, clients, origin);
    data::install(router.registry(), config.data_settings());
    let bus: Arc<dyn events::Bus> = match transport::amqp::EventQueue::of(config) {
        Some(queue) => Arc::new(transport::amqp::AmqpBus::new(queue)),
        None => Arc::new(events::LocalBus::new(
            router.registry().downgrade(),
            config.limits.act().timeout,
            config.event_retry(),
        )),
    };
    router.set_bus(bus);
    Ok(router)
}

impl Host {
    /// Loads the plugins and starts every ingress the configuration asks for; returns once all
    /// of them listen.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, ServeError> {
        let router = router(config)?;
        let registry = router.registry().clone();
        let mut tasks = Vec::new();
        // Two steps out: at `shutdown` the host says it is going (health 503, deregistered) but
        // keeps serving for the drain delay; then `stop` closes the listeners, which finish
        // what they started.
        let stop = CancellationToken::new();
        {
            let (shutdown, stop, router) = (shutdown.clone(), stop.clone(), router.clone());
            let delay = config.drain_delay();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                router.drain();
                if !delay.is_zero() {
                    tracing::info!(
                        "draining: health says 503 and Consul forgets this host; serving {delay:?} more before the listeners close"
                    );
                    tokio::time::sleep(delay).await;
                }
                stop.cancel();
            });
        }
        if config.watch {
            // Watch first, so nothing landing during the initial load is missed; a bad file
            // is reported and skipped instead of stopping the host.
            let watching = reload::start(registry.clone(), config, stop.clone())?;
            serve_task(&mut tasks, "the plugin watcher", &shutdown, async move {
                watching.await.map_err(std::io::Error::other)
            });
            registry.load_each(&config.plugin_sources()?).await;
        } else {
            registry.load_all(&config.plugin_sources()?).await?;
        }
        let routes = Routes::new(registry.clone(), config.rest.route.clone());
        let ms = std::time::Duration::from_millis;
        let http_limits = gateway::server::HttpLimits {
            header_timeout: ms(config.http.header_timeout_ms),
            body_timeout: ms(config.http.body_timeout_ms),
            idle_timeout: ms(config.http.idle_timeout_ms),
            body_limit: config.http.body_limit,
            max_connections: config.http.max_connections,
        };
        let history = Arc::new(History::new(HISTORY, HISTORY_BYTES));
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
                Ingress::new(router.clone(), history.clone(), "rest"),
                routes.clone(),
                gateway::server::HttpLimits {
                    body_limit: config.rest.body_limit.unwrap_or(config.http.body_limit),
                    ..http_limits
                },
                stop.clone(),
            );
            serve_task(&mut tasks, "the REST gateway", &shutdown, task);
        }
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
                        Ingress::new(router.clone(), history.clone(), "http"),
                        routes.clone(),
                        path,
                        http_limits,
                        stop.clone(),
                    );
                    serve_task(&mut tasks, "Seneca's HTTP transport", &shutdown, task);
                }
                Listen::Amqp(amqp) => {
                    let task = transport::amqp::run_listener(
                        amqp,
                        Ingress::new(router.clone(), history.clone(), "amqp"),
                        stop.clone(),
                    );
                    serve_task(&mut tasks, "the AMQP listener", &shutdown, async move {
                        task.await.map_err(std::io::Error::other)
                    });
                }
            }
        }
        if let Some(queue) = transport::amqp::EventQueue::of(config) {
            let task = transport::amqp::run_events(queue, router.clone(), stop.clone());
            serve_task(
                &mut tasks,
                "the AMQP events consumer",
                &shutdown,
                async move { task.await.map_err(std::io::Error::other) },
            );
        }
        if let Some(consul) = config.consul() {
            let discovery =
                discovery::Discovery::new(consul, router.instance_id(), shutdown.clone());
            router.set_peers(discovery.clone());
            let registration = discovery.start(registry, http.first().copied(), rest);
            serve_task(
                &mut tasks,
                "the Consul registration",
                &shutdown,
                async move { registration.await.map_err(std::io::Error::other) },
            );
        }
        Ok(Self {
            router,
            rest,
            http,
            routes,
            tasks,
            drain_timeout: config.limits.drain_timeout(),
            shutdown,
        })
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The REST routes.
    pub fn routes(&self) -> &Routes {
        &self.routes
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
        for plugin in self.router.registry().snapshot().plugins() {
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
        // router); then the router refuses anything left and waits for nested work. Past the
        // drain timeout the guests still running are interrupted, so this always ends.
        let router = self.router.clone();
        let tasks = self.tasks;
        let drain = async move {
            let mut failure = None;
            for (what, task) in tasks {
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
            router.close();
            router.drained().await;
            failure
        };
        let mut drain = std::pin::pin!(drain);
        let failure = tokio::select! {
            failure = &mut drain => failure,
            () = tokio::time::sleep(self.drain_timeout) => {
                tracing::warn!(
                    "calls still running after the {:?} drain timeout: interrupting them",
                    self.drain_timeout
                );
                self.router.registry().runtime().interrupt();
                drain.await
            }
        };
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Builds the runtime and router for a configuration and loads its plugins, with no ingress
/// (what `wasmeca act` uses).
pub async fn start(config: &Config) -> Result<Router, ServeError> {
    let router = router(config)?;
    router
        .registry()
        .load_all(&config.plugin_sources()?)
        .await?;
    Ok(router)
}

/// Serves a configuration until `shutdown` is cancelled, then drains in-flight work.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    Host::start(&config, shutdown).await?.wait().await
}
