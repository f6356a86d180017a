//! `act()`: the one path every ingress shares. A message gets its ids, deadline and depth, is
//! matched against the current plugin snapshot (with its `$version` pin), and is answered by a
//! plugin instance or sent to the remote service a client pin names; Seneca's `default$`,
//! `act_not_found`, `action_timeout` and `result_not_objarr` rules apply here and nowhere else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::Value;
use smallvec::SmallVec;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;
use crate::discovery::consul::{Peer, PeerChoice};
use crate::message::{self, ActError, Message, Reply, codes};
use crate::metrics::Metrics;
pub(crate) use crate::plugins::Action;
use crate::plugins::{Base, Plugin, PluginSet, PluginSource, Resolution, Target};
use crate::runtime::{LoadError, Runtime, json_kind};
use crate::transport::{ClientEntry, Remote, RemoteCall};

/// What an act carries down its call chain.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    /// The transaction id, shared by every act one request causes.
    pub tx: Arc<str>,
    /// 0 for an act from an ingress, +1 per nesting.
    pub depth: u32,
    /// When the act must have answered.
    pub deadline: Instant,
    /// The timeout the deadline came from, for `action_timeout` messages.
    pub timeout: Duration,
    /// Pools whose instances are held by calls further up the chain (re-entry detection);
    /// inline up to four levels, so a call allocates nothing for it.
    pub held: SmallVec<[u64; 4]>,
}

impl CallCtx {
    /// A context for work that no act started (init, replacements).
    pub fn root(tx: Arc<str>, deadline: Instant) -> Self {
        let timeout = deadline.saturating_duration_since(Instant::now());
        Self {
            tx,
            depth: 0,
            deadline,
            timeout,
            held: SmallVec::new(),
        }
    }

    /// The act's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Decrements the in-flight gauge when an act from an ingress ends, however it ends, and wakes
/// [`Router::drained`] at zero.
struct InFlightGuard<'a>(&'a Inner);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.base.metrics.in_flight().dec() == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Shared state behind [`Router`].
struct Inner {
    /// Compiles and instantiates plugins.
    runtime: Runtime,
    /// The current snapshot; replaced whole on every change.
    set: ArcSwap<PluginSet>,
    /// Default timeout, depth limit, init deadline.
    limits: Limits,
    /// Set by [`Router::close`]: new acts from ingresses are refused.
    closing: AtomicBool,
    /// Woken when the last act in flight ends (the count is the metrics' gauge).
    idle: Notify,
    /// Clients, config routes and metrics: what every snapshot is built with.
    base: Arc<Base>,
    /// This host's Seneca instance id (`<id>/<start ms>/<pid>/<version>/wasmeca`), which
    /// transports send as origin and accept.
    instance_id: Arc<str>,
    /// The last load errors (file and reason), newest last, for `/plugins`.
    load_errors: Mutex<Vec<Value>>,
    /// Bumped whenever the plugin set changes, so ingresses that follow it (AMQP bindings,
    /// Consul registration) can react.
    changes: tokio::sync::watch::Sender<u64>,
    /// Consul peers, when Consul is on: where acts go that no local plugin answers.
    discovery: std::sync::OnceLock<Arc<crate::discovery::consul::Discovery>>,
}

/// The router: owns the plugin snapshot and answers acts. Cheap to clone.
#[derive(Clone)]
pub struct Router(Arc<Inner>);

/// A weak handle to the router, held by plugin instances for their nested acts.
#[derive(Clone)]
pub(crate) struct WeakRouter(Weak<Inner>);

impl WeakRouter {
    /// A handle that never upgrades (for instances outside a router).
    pub fn none() -> Self {
        Self(Weak::new())
    }

    /// The router, unless it has been dropped.
    pub fn upgrade(&self) -> Option<Router> {
        self.0.upgrade().map(Router)
    }
}

impl Router {
    /// A router with no plugins, clients or configured routes.
    pub fn new(runtime: Runtime, limits: Limits) -> Self {
        let id = crate::transport::instance_id();
        Self::with_clients(
            runtime,
            limits,
            id,
            Vec::new(),
            Vec::new(),
            Arc::new(Metrics::default()),
        )
    }

    /// A router whose snapshots also hold `clients` (tried after local plugins) and the
    /// configured REST `routes`.
    pub(crate) fn with_clients(
        runtime: Runtime,
        limits: Limits,
        instance_id: Arc<str>,
        clients: Vec<Arc<ClientEntry>>,
        routes: Vec<Value>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let base = Arc::new(Base {
            clients,
            routes,
            metrics,
        });
        Self(Arc::new(Inner {
            runtime,
            set: ArcSwap::from_pointee(PluginSet::new(base.clone(), Vec::new())),
            limits,
            closing: AtomicBool::new(false),
            idle: Notify::new(),
            base,
            instance_id,
            load_errors: Mutex::new(Vec::new()),
            changes: tokio::sync::watch::Sender::new(0),
            discovery: std::sync::OnceLock::new(),
        }))
    }

    /// This host's Seneca instance id.
    pub fn instance_id(&self) -> &str {
        &self.0.instance_id
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.base.metrics
    }

    /// True once [`Router::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
    }

    /// Records a plugin file that could not be loaded, for `/plugins`.
    pub fn record_load_error(&self, error: &LoadError) {
        let entry = serde_json::json!({
            "file": error.path(),
            "error": error.to_string(),
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

    /// Forgets the load error of `file` (it loaded since).
    pub fn clear_load_error(&self, file: &std::path::Path) {
        let file = serde_json::json!(file);
        self.0
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|e| e["file"] != file);
    }

    /// A receiver that sees every change of the plugin set.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    fn changed(&self) {
        self.0.changes.send_modify(|generation| *generation += 1);
    }

    /// The recorded load errors.
    pub fn load_errors(&self) -> Vec<Value> {
        self.0
            .load_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The wasm runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    /// The limits acts run under.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// The current plugin snapshot.
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.0.set.load_full()
    }

    /// Compiles, instantiates and initialises a plugin without serving it yet.
    pub async fn load(&self, source: &PluginSource) -> Result<Arc<Plugin>, LoadError> {
        self.load_from(source, None).await
    }

    /// Like [`Router::load`], from the file's bytes already read (a private copy, so a file
    /// changing meanwhile cannot tear the load).
    pub async fn load_from(
        &self,
        source: &PluginSource,
        bytes: Option<&[u8]>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let weak = WeakRouter(Arc::downgrade(&self.0));
        let outcome = Plugin::load(
            &self.0.runtime,
            weak,
            source,
            bytes,
            self.0.limits.init_timeout(),
        )
        .await;
        self.metrics()
            .plugin_load(if outcome.is_ok() { "loaded" } else { "refused" });
        match outcome {
            Ok(plugin) => {
                self.clear_load_error(&source.path);
                Ok(Arc::new(plugin))
            }
            Err(e) => {
                self.record_load_error(&e);
                Err(e)
            }
        }
    }

    /// Serves `plugin` instead of whatever `file` provided before (or stops serving what it
    /// provided, with `None`), in one swap. A plugin whose routes another plugin already holds
    /// is refused, and nothing changes.
    pub fn swap_file(
        &self,
        file: &std::path::Path,
        plugin: Option<Arc<Plugin>>,
    ) -> Result<(), Vec<crate::gateway::Conflict>> {
        let mut refused = Vec::new();
        self.0.set.rcu(|current| {
            let mut next = current.without_file(file);
            if let Some(plugin) = &plugin {
                next = next.with(plugin.clone());
                refused = next
                    .conflicts()
                    .iter()
                    .filter(|c| c.refused == plugin.name)
                    .cloned()
                    .collect();
                if !refused.is_empty() {
                    return Arc::clone(current);
                }
            }
            Arc::new(next)
        });
        if !refused.is_empty() {
            return Err(refused);
        }
        self.changed();
        Ok(())
    }

    /// Serves `plugin` from now on, replacing a plugin with the same `name@version`; calls
    /// already running finish on the instances they started on.
    pub fn install(&self, plugin: Arc<Plugin>) {
        let set = self.0.set.rcu(|set| set.with(plugin.clone()));
        drop(set);
        self.changed();
        for conflict in self
            .plugins()
            .conflicts()
            .iter()
            .filter(|c| c.refused == plugin.name)
        {
            tracing::error!("{conflict}");
        }
    }

    /// Replaces the whole set at once.
    pub fn replace_all(&self, plugins: Vec<Arc<Plugin>>) {
        let set = PluginSet::new(self.0.base.clone(), plugins);
        for conflict in set.conflicts() {
            tracing::error!("{conflict}");
        }
        self.0.set.store(Arc::new(set));
        self.changed();
    }

    /// Stops serving `name@version`; returns it if it was loaded.
    pub fn unload(&self, key: &str) -> Option<Arc<Plugin>> {
        let old = self.0.set.rcu(|set| set.without(key));
        self.changed();
        old.get(key).cloned()
    }

    /// Loads every source in order and serves them together; the first failure stops it.
    pub async fn load_all(&self, sources: &[PluginSource]) -> Result<Vec<Arc<Plugin>>, LoadError> {
        let mut loaded = Vec::with_capacity(sources.len());
        for source in sources {
            let plugin = self.load(source).await?;
            tracing::info!(plugin = %plugin.key(), file = %source.path.display(), "loaded");
            loaded.push(plugin);
        }
        let mut all = self.plugins().plugins().to_vec();
        all.extend(loaded.iter().cloned());
        self.replace_all(all);
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
        let mut all = self.plugins().plugins().to_vec();
        all.extend(loaded.iter().cloned());
        self.replace_all(all);
        loaded
    }

    /// Acts a message from an ingress and returns the answer (a JSON object, array or null).
    pub async fn act(&self, msg: Message) -> Result<Reply, ActError> {
        if self.is_closing() {
            return Err(ActError::new(codes::CLOSED, "the host is shutting down").with_status(503));
        }
        self.0.base.metrics.in_flight().inc();
        let _guard = InFlightGuard(&self.0);
        self.act_with(msg, None).await
    }

    /// Refuses new acts from ingresses; nested acts of running calls still proceed.
    pub fn close(&self) {
        self.0.closing.store(true, Ordering::Release);
    }

    /// Waits until no top-level act is running.
    pub async fn drained(&self) {
        loop {
            let idle = self.0.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// How many top-level acts are running.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.0.base.metrics.in_flight().get()).unwrap_or(0)
    }

    /// The act path, for ingresses (`parent` = `None`) and for plugins' nested acts.
    pub(crate) async fn act_with(
        &self,
        mut msg: Message,
        parent: Option<&CallCtx>,
    ) -> Result<Reply, ActError> {
        let depth = parent.map_or(0, |p| p.depth + 1);
        self.check_depth(depth, parent)?;
        // Most messages carry no meta keys: then there is nothing to look up or strip.
        let has_meta = msg.has_meta();
        let given_tx = if has_meta { msg.act_id().1 } else { None };
        let tx: Arc<str> = match (given_tx, parent) {
            (Some(tx), _) => tx.into(),
            (None, Some(p)) => p.tx.clone(),
            (None, None) => message::new_id().into(),
        };
        let timeout = has_meta
            .then(|| msg.timeout())
            .flatten()
            .unwrap_or_else(|| self.0.limits.timeout());
        let mut deadline = Instant::now() + timeout;
        if let Some(p) = parent {
            deadline = deadline.min(p.deadline);
        }
        if has_meta {
            msg.strip_hidden();
        }
        msg.insert(message::TX.to_owned(), Value::String(tx.to_string()));
        let ctx = CallCtx {
            tx,
            depth,
            deadline,
            timeout,
            held: parent.map(|p| p.held.clone()).unwrap_or_default(),
        };
        if has_meta
            && let Some(service) = msg.target()
            && let Some(discovery) = self.0.discovery.get()
            && service != discovery.service()
        {
            let service = service.to_owned();
            return self
                .forward_to_service(discovery, &service, &msg, &ctx)
                .await;
        }
        let resolution = self.0.set.load().resolve(&msg)?;
        let target = match resolution {
            Resolution::Found(target) => target,
            Resolution::VersionMissing(error) => {
                return self.forward(&msg, &ctx, Some(error)).await;
            }
            Resolution::NotFound => return self.forward(&msg, &ctx, None).await,
        };
        tracing::debug!(tx = &*ctx.tx, ?target, depth, "act");
        self.call(&target, &msg, ctx).await
    }

    /// The message's `transport$.track`: the instances it went through.
    fn track(msg: &Message) -> Vec<String> {
        msg.get("transport$")
            .and_then(|t| t.get("track"))
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Nothing local answers `msg` (or not in the pinned version): a peer that does, else
    /// Seneca's answer (`default$` or `act_not_found`) or `version_not_found` listing every
    /// version there is.
    async fn forward(
        &self,
        msg: &Message,
        ctx: &CallCtx,
        missing: Option<ActError>,
    ) -> Result<Reply, ActError> {
        let Some(discovery) = self.0.discovery.get() else {
            return match missing {
                Some(error) => Err(error),
                None => default_result(msg),
            };
        };
        let req = msg.version_req()?;
        let choice = discovery.peers().for_message(
            msg,
            req.as_ref(),
            &Self::track(msg),
            &discovery.balancer,
        );
        match choice {
            PeerChoice::Peers(peers) => self.try_peers(peers, msg, ctx).await,
            PeerChoice::NoVersion(versions) => {
                let mut all: Vec<String> = versions.iter().map(ToString::to_string).collect();
                if let Some(local) = missing
                    .as_ref()
                    .and_then(|e| e.details.as_deref())
                    .and_then(|d| d["versions"].as_array())
                {
                    all.extend(local.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                }
                all.sort();
                all.dedup();
                let req = req.map(|r| r.to_string()).unwrap_or_default();
                Err(ActError::new(
                    codes::VERSION_NOT_FOUND,
                    format!("no host serves this pattern in a version satisfying $version {req}; there are: {}", all.join(", ")),
                )
                .with_details(serde_json::json!({ "requirement": req, "versions": all })))
            }
            PeerChoice::Nobody => match missing {
                Some(error) => Err(error),
                None => default_result(msg),
            },
        }
    }

    /// `$target: "service"`: a passing instance of that Consul service answers.
    async fn forward_to_service(
        &self,
        discovery: &Arc<crate::discovery::consul::Discovery>,
        service: &str,
        msg: &Message,
        ctx: &CallCtx,
    ) -> Result<Reply, ActError> {
        let wait = ctx
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(2));
        discovery.known(service, wait).await;
        let peers = discovery
            .peers()
            .for_service(service, &Self::track(msg), &discovery.balancer)
            .unwrap_or_default();
        if peers.is_empty() {
            return Err(ActError::new(
                codes::TARGET_UNAVAILABLE,
                format!("$target {service}: Consul lists no passing instance of that service"),
            ));
        }
        self.try_peers(peers, msg, ctx).await
    }

    /// Sends `msg` to the first peer that answers; an unreachable one is skipped.
    async fn try_peers(
        &self,
        peers: Vec<Arc<Peer>>,
        msg: &Message,
        ctx: &CallCtx,
    ) -> Result<Reply, ActError> {
        let pin = crate::pattern::Pattern::default();
        let mut last = None;
        for peer in peers {
            tracing::debug!(tx = &*ctx.tx, peer = %peer.url, "act forwarded");
            let call = RemoteCall {
                tx: &ctx.tx,
                deadline: ctx.deadline,
                timeout: ctx.timeout,
                pin: &pin,
            };
            match peer.client.act(msg, call).await {
                Err(e) if e.code == codes::UNREACHABLE => {
                    tracing::warn!(peer = %peer.url, "peer unreachable, trying another: {}", e.message);
                    last = Some(e);
                }
                answer => return answer,
            }
        }
        Err(last.unwrap_or_else(|| ActError::new(codes::UNREACHABLE, "no peer answered")))
    }

    /// Uses `discovery` for cross-host acts and `$target`.
    pub fn set_discovery(&self, discovery: Arc<crate::discovery::consul::Discovery>) {
        let _ = self.0.discovery.set(discovery);
    }

    /// The peers currently known, as `id url` strings.
    pub fn peer_ids(&self) -> Vec<String> {
        self.0.discovery.get().map_or_else(Vec::new, |d| {
            d.peers()
                .all()
                .iter()
                .map(|p| format!("{} {}", p.id, p.url))
                .collect()
        })
    }

    /// `prior(msg)` from a running action: the action it overrode, else `default$` or null.
    pub(crate) async fn call_prior(
        &self,
        prior: Option<Target>,
        mut msg: Message,
        parent: &CallCtx,
    ) -> Result<Reply, ActError> {
        let Some(target) = prior else {
            return Ok(Reply::from_value(match msg.default_result() {
                Some(v @ (Value::Object(_) | Value::Array(_))) => v,
                _ => &Value::Null,
            }));
        };
        let depth = parent.depth + 1;
        self.check_depth(depth, Some(parent))?;
        msg.strip_hidden();
        msg.insert(message::TX.to_owned(), Value::String(parent.tx.to_string()));
        let ctx = CallCtx {
            depth,
            ..parent.clone()
        };
        self.call(&target, &msg, ctx).await
    }

    fn check_depth(&self, depth: u32, parent: Option<&CallCtx>) -> Result<(), ActError> {
        let max = self.0.limits.max_depth;
        if depth <= max {
            return Ok(());
        }
        let tx = parent.map_or("-", |p| &*p.tx);
        Err(ActError::new(
            codes::ACT_DEPTH_LIMIT,
            format!("acts nested {depth} deep (limit {max}, tx {tx}): an action probably acts its own pattern in a loop"),
        )
        .with_details(serde_json::json!({ "depth": depth, "limit": max })))
    }

    /// Answers `msg` with `target`: a plugin instance (whose answer must be an object, an array
    /// or null), or a client transport.
    async fn call(&self, target: &Target, msg: &Message, ctx: CallCtx) -> Result<Reply, ActError> {
        match target {
            Target::Local(action) => {
                let started = std::time::Instant::now();
                let answer = self.call_local(action, msg, ctx).await;
                let code = answer.as_ref().err().map(|e| e.code.as_str());
                action.metrics.record(started.elapsed(), code);
                answer
            }
            Target::Remote(client) => {
                let call = RemoteCall {
                    tx: &ctx.tx,
                    deadline: ctx.deadline,
                    timeout: ctx.timeout,
                    pin: &client.pin,
                };
                client.remote.act(msg, call).await
            }
        }
    }

    async fn call_local(
        &self,
        action: &Arc<Action>,
        msg: &Message,
        ctx: CallCtx,
    ) -> Result<Reply, ActError> {
        let json = msg.to_json();
        let prior = action.prior.clone();
        let out = action
            .plugin
            .pool
            .call(action.index, &json, ctx, prior, &action.pattern)
            .await?;
        Reply::from_json(out).map_err(|what| {
            ActError::new(
                codes::RESULT_NOT_OBJARR,
                format!(
                    "The result of action {} ({}) must be an object, an array or null, not {what}.",
                    action.pattern,
                    action.plugin.key()
                ),
            )
        })
    }
}

/// No pattern matched: `default$` if it is an object or array, else Seneca's errors.
fn default_result(msg: &Message) -> Result<Reply, ActError> {
    match msg.default_result() {
        Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(Reply::from_value(v)),
        None | Some(Value::Null) => Err(ActError::not_found(msg)),
        Some(other) => Err(ActError::new(
            codes::ACT_DEFAULT_BAD,
            format!(
                "No matching action pattern found for {msg}, and default$ is {}, not an object or array.",
                json_kind(other)
            ),
        )),
    }
}
