//! The running host, wired from a configuration: the runtime, registry and router with their
//! plugins, Seneca's built-ins and the data stores, and one function per listener (REST, Seneca
//! HTTP, AMQP, events, Consul, the plugin watcher), each a server task that drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::{self, Config, Listen};
use crate::gateway::{self, table::Routes};
use crate::ingress::{History, Ingress};
use crate::metrics::Metrics;
use crate::pattern::Pattern;
use crate::registry::{self, Registry};
use crate::remote::{self, ClientEntry, Remote};
use crate::router::Router;
use crate::runtime::{self, LoadError, Runtime};
use crate::shutdown::CancellationToken;
use crate::{builtins, data, discovery, events, message, reload, server, transport};

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
    /// The Consul client could not be set up.
    #[error("the Consul client: {}", crate::error::chain(.source))]
    Consul {
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
        config.limits.instance(),
        config.perf_map,
        config.compiling(),
    )?;
    let origin = config.instance.clone().unwrap_or_else(message::instance_id);
    let clients = clients(config, &origin)?;
    let router = assemble(runtime, &config.limits, clients, origin);
    data::install(
        router.registry(),
        router.readiness(),
        config.data_settings(),
    );
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
        let mut wiring = Wiring {
            config,
            routes: Routes::new(registry.clone(), config.rest.route.clone()),
            history: Arc::new(History::new(HISTORY, HISTORY_BYTES)),
            stop: drain_then_stop(&router, config, &shutdown),
            router,
            shutdown,
            tasks: Vec::new(),
        };
        if config.watch {
            // Watch first, so nothing landing during the initial load is missed; a bad file
            // is reported and skipped instead of stopping the host.
            wiring.watcher()?;
            registry.load_each(&config.plugin_sources()?).await;
        } else {
            registry.load_all(&config.plugin_sources()?).await?;
        }
        let rest = match config.rest.listen.0 {
            Some(addr) => Some(wiring.rest(addr).await?),
            None => None,
        };
        let mut http = Vec::new();
        for listen in config.listeners() {
            match listen {
                Listen::Http { host, port, path } => {
                    http.push(wiring.http(&host, port, path).await?)
                }
                Listen::Amqp(amqp) => wiring.amqp(amqp),
            }
        }
        wiring.events();
        wiring.consul(http.first().copied(), rest)?;
        let Wiring {
            router,
            routes,
            tasks,
            shutdown,
            ..
        } = wiring;
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

/// The drain: at `shutdown` the host says it is going (health 503, deregistered) but keeps
/// serving for the drain delay; then the token returned closes the listeners, which finish what
/// they started.
fn drain_then_stop(
    router: &Router,
    config: &Config,
    shutdown: &CancellationToken,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let (shutdown, closing, router) = (shutdown.clone(), stop.clone(), router.clone());
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
        closing.cancel();
    });
    stop
}

/// What starting the listeners of one host shares: one function per listener.
struct Wiring<'a> {
    /// The configuration.
    config: &'a Config,
    /// Acts every ingress's messages.
    router: Router,
    /// The REST routes (the gateway's, and `/plugins` on every HTTP listener).
    routes: Arc<Routes>,
    /// The reply history every ingress shares.
    history: Arc<History>,
    /// Cancelled by the signal: the drain starts.
    shutdown: CancellationToken,
    /// Cancelled after the drain delay: the listeners close.
    stop: CancellationToken,
    /// The servers started so far.
    tasks: Tasks,
}

impl Wiring<'_> {
    /// An ingress for `what` on the shared router and history.
    fn ingress(&self, what: &'static str) -> Ingress {
        Ingress::new(self.router.clone(), self.history.clone(), what)
    }

    /// What both HTTP listeners allow their clients.
    fn http_limits(&self) -> server::HttpLimits {
        let (http, ms) = (&self.config.http, std::time::Duration::from_millis);
        server::HttpLimits {
            header_timeout: ms(http.header_timeout_ms),
            body_timeout: ms(http.body_timeout_ms),
            idle_timeout: ms(http.idle_timeout_ms),
            body_limit: http.body_limit,
            max_connections: http.max_connections,
        }
    }

    /// The plugin folder watcher.
    fn watcher(&mut self) -> Result<(), ServeError> {
        let watching = reload::start(
            self.router.registry().clone(),
            self.config,
            self.stop.clone(),
        )?;
        serve_task(
            &mut self.tasks,
            "the plugin watcher",
            &self.shutdown,
            async move { watching.await.map_err(std::io::Error::other) },
        );
        Ok(())
    }

    /// The REST gateway on `addr`; where it listens.
    async fn rest(&mut self, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
        let bind = |source| ServeError::Bind {
            what: "the REST gateway",
            addr: addr.to_string(),
            source,
        };
        let listener = gateway::bind(addr).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let limits = server::HttpLimits {
            body_limit: self
                .config
                .rest
                .body_limit
                .unwrap_or(self.config.http.body_limit),
            ..self.http_limits()
        };
        let ingress = self.ingress("rest");
        let task = gateway::run(
            listener,
            ingress,
            self.routes.clone(),
            limits,
            self.stop.clone(),
        );
        serve_task(&mut self.tasks, "the REST gateway", &self.shutdown, task);
        Ok(local)
    }

    /// A Seneca HTTP transport listener; where it listens.
    async fn http(
        &mut self,
        host: &str,
        port: u16,
        path: String,
    ) -> Result<SocketAddr, ServeError> {
        let bind = |source| ServeError::Bind {
            what: "Seneca's HTTP transport",
            addr: format!("{host}:{port}"),
            source,
        };
        let listener = transport::http::bind(host, port).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let routes = self.routes.clone();
        let task = transport::http::run(
            listener,
            self.ingress("http"),
            Arc::new(move || routes.describe()),
            path,
            self.http_limits(),
            self.stop.clone(),
        );
        serve_task(
            &mut self.tasks,
            "Seneca's HTTP transport",
            &self.shutdown,
            task,
        );
        Ok(local)
    }

    /// An AMQP listener.
    fn amqp(&mut self, amqp: config::AmqpListen) {
        let task = transport::amqp::run_listener(amqp, self.ingress("amqp"), self.stop.clone());
        serve_task(
            &mut self.tasks,
            "the AMQP listener",
            &self.shutdown,
            async move { task.await.map_err(std::io::Error::other) },
        );
    }

    /// The events consumer, when events travel over a broker.
    fn events(&mut self) {
        let Some(queue) = transport::amqp::EventQueue::of(self.config) else {
            return;
        };
        let task = transport::amqp::run_events(queue, self.router.clone(), self.stop.clone());
        serve_task(
            &mut self.tasks,
            "the AMQP events consumer",
            &self.shutdown,
            async move { task.await.map_err(std::io::Error::other) },
        );
    }

    /// Discovery and registration in Consul, when it is on: peers reached over Seneca's HTTP
    /// transport; registered with the transport's and the gateway's addresses.
    fn consul(
        &mut self,
        http: Option<SocketAddr>,
        rest: Option<SocketAddr>,
    ) -> Result<(), ServeError> {
        let Some(consul) = self.config.consul() else {
            return Ok(());
        };
        let me: Arc<str> = self.router.instance_id().into();
        let connect: remote::Connect = Arc::new(move |address: &str, port: u16| {
            let timeout = std::time::Duration::from_secs(30);
            match transport::http::HttpClient::new(address, port, "/act", timeout, me.clone()) {
                Ok(client) => Some(Arc::new(client) as Arc<dyn Remote>),
                Err(e) => {
                    let why = crate::error::chain(&e);
                    tracing::warn!("peer {address}:{port} left out: its HTTP client: {why}");
                    None
                }
            }
        });
        let discovery = discovery::Discovery::new(
            consul,
            self.router.instance_id(),
            connect,
            self.shutdown.clone(),
        )
        .map_err(|source| ServeError::Consul { source })?;
        self.router.set_peers(discovery.clone());
        // Registered in Consul is part of ready when this host registers (it has a transport
        // listener to be called on).
        let registered = http.map(|_| self.router.readiness().flag("registered in Consul"));
        let registration = discovery.start(self.router.registry().clone(), registered, http, rest);
        serve_task(
            &mut self.tasks,
            "the Consul registration",
            &self.shutdown,
            async move { registration.await.map_err(std::io::Error::other) },
        );
        Ok(())
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
