//! Consul: registers this host (one tag per `plugin@version`, meta with the versions and ports,
//! a health check), keeps the registration through agent restarts and plugin changes, and
//! watches peer services with blocking queries into the peer table that cross-host acts use.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use semver::{Version, VersionReq};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::peers::{Balancer, Peer, PeerTable, Served};
use crate::config::Consul;
use crate::error::{ActError, Code};
use crate::message::Message;
use crate::pattern::{Patrun, Pattern};
use crate::readiness::Flag;
use crate::registry::Registry;
use crate::remote::{Connect, PeerChoice, Peers, Remote};
use crate::runtime::BoxFuture;

/// Why Consul refused or could not be reached.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConsulError {
    /// No answer, or not HTTP.
    #[error("Consul at {0} is unreachable: {1}")]
    Unreachable(String, String),
    /// An answer with an error status.
    #[error("Consul answered {0}: {1}")]
    Status(u16, String),
}

/// A request to one of the agents, remembering which (to fail over from it).
pub(super) struct AgentRequest {
    /// The request.
    pub(super) builder: reqwest::RequestBuilder,
    /// Index of its agent.
    pub(super) agent: usize,
}

impl AgentRequest {
    /// The same request with a timeout.
    pub(super) fn timeout(self, timeout: Duration) -> Self {
        Self {
            builder: self.builder.timeout(timeout),
            ..self
        }
    }

    /// The same request with a header.
    pub(super) fn header(self, name: &str, value: &str) -> Self {
        Self {
            builder: self.builder.header(name, value),
            ..self
        }
    }

    /// The same request with a body.
    pub(super) fn body(self, body: String) -> Self {
        Self {
            builder: self.builder.body(body),
            ..self
        }
    }
}

/// The Consul side of a host: the agent API, this host's registration, and the peer table.
pub struct Discovery {
    /// Itself, for the watch tasks it starts from `&self`.
    me_arc: Weak<Self>,
    /// The agents' base URLs, in the order given: a local agent first, others to fall back on.
    pub(super) agents: Vec<String>,
    /// The agent in use; the next one is used from the moment it does not answer.
    pub(super) current: AtomicUsize,
    /// Settings.
    pub(super) config: Consul,
    /// HTTP client for the agent (blocking queries need long timeouts, set per request).
    pub(super) http: reqwest::Client,
    /// The peer table the router reads.
    peers: ArcSwap<PeerTable>,
    /// How to pick peers.
    pub balancer: Balancer,
    /// Services watched so far (each has its own watch task).
    watched: Mutex<HashSet<String>>,
    /// This host's instance id: never a peer of itself.
    pub(super) me: String,
    /// How a peer found in Consul is reached.
    connect: Connect,
    /// Stops the watches.
    pub(super) shutdown: CancellationToken,
    /// Descriptions of wasmeca peers, by (service ID, Consul modify index).
    described: Mutex<HashMap<(String, u64), Arc<Served>>>,
}

impl Discovery {
    /// A discovery for `config`; nothing runs until [`Discovery::start`]. Fails only when its
    /// HTTP client cannot be made.
    pub fn new(
        config: Consul,
        me: &str,
        connect: Connect,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = crate::tls::client().no_proxy().tcp_nodelay(true).build()?;
        Ok(Arc::new_cyclic(|me_arc| Self {
            me_arc: me_arc.clone(),
            agents: config.agent_urls(),
            current: AtomicUsize::new(0),
            balancer: Balancer::new(config.balance),
            config,
            http,
            peers: ArcSwap::from_pointee(PeerTable::default()),
            watched: Mutex::new(HashSet::new()),
            me: me.to_owned(),
            connect,
            shutdown,
            described: Mutex::new(HashMap::new()),
        }))
    }

    /// The current peer table.
    pub fn peers(&self) -> Arc<PeerTable> {
        self.peers.load_full()
    }

    /// The service name this host registers as.
    pub fn service(&self) -> &str {
        &self.config.service
    }

    /// The agent in use.
    pub(super) fn agent(&self) -> &str {
        &self.agents[self.current.load(Ordering::Relaxed) % self.agents.len()]
    }

    /// A request to the agent in use.
    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> AgentRequest {
        let agent = self.current.load(Ordering::Relaxed) % self.agents.len();
        self.request_to(agent, method, path)
    }

    /// A request to agent `agent`.
    pub(super) fn request_to(
        &self,
        agent: usize,
        method: reqwest::Method,
        path: &str,
    ) -> AgentRequest {
        let mut builder = self
            .http
            .request(method, format!("{}{path}", self.agents[agent]));
        if let Some(token) = self.config.acl_token() {
            builder = builder.header("X-Consul-Token", token);
        }
        AgentRequest { builder, agent }
    }

    /// Agent `failed` did not answer: the next one is used from now on (once, however many
    /// requests saw it fail).
    fn fail_over(&self, failed: usize) {
        if self.agents.len() < 2 {
            return;
        }
        let next = (failed + 1) % self.agents.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                "Consul agent {} does not answer; using {}",
                self.agents[failed],
                self.agents[next]
            );
        }
    }

    pub(super) async fn send(
        &self,
        request: AgentRequest,
    ) -> Result<(String, Option<u64>), ConsulError> {
        let AgentRequest { builder, agent } = request;
        let unreachable = |e: reqwest::Error| {
            // A timeout on a blocking query is no sign of a dead agent; a refused or broken
            // connection is.
            if !e.is_timeout() {
                self.fail_over(agent);
            }
            ConsulError::Unreachable(self.agents[agent].clone(), crate::error::chain(&e))
        };
        let response = builder.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let index = response
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.text().await.map_err(unreachable)?;
        if status >= 400 {
            return Err(ConsulError::Status(status, body.trim().to_owned()));
        }
        Ok((body, index))
    }

    /// Starts the watches of the peer services and, when `http` is this host's transport
    /// address, the registration, which raises `registered` while the agent holds it. Returns
    /// the registration task (it deregisters on shutdown).
    pub fn start(
        self: &Arc<Self>,
        registry: Registry,
        registered: Option<Flag>,
        http: Option<std::net::SocketAddr>,
        rest: Option<std::net::SocketAddr>,
    ) -> tokio::task::JoinHandle<()> {
        for service in self.config.peer_services() {
            self.watch(&service);
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(http) = http {
                this.register_loop(registry, registered, http, rest).await;
            } else {
                tracing::warn!(
                    "Consul: no HTTP transport listener, so this host is not registered (peers could not call it)"
                );
            }
        })
    }

    /// Starts watching `service` unless it is watched already (for `$target`).
    pub fn watch(&self, service: &str) {
        let fresh = self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service.to_owned());
        if let (true, Some(this)) = (fresh, self.me_arc.upgrade()) {
            let service = service.to_owned();
            tokio::spawn(async move { this.watch_loop(service).await });
        }
    }

    /// Waits (up to `wait`) until `service` is in the peer table, starting its watch if needed.
    pub async fn known(&self, service: &str, wait: Duration) -> bool {
        self.watch(service);
        let deadline = tokio::time::Instant::now() + wait;
        while !self.peers().knows(service) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    async fn watch_loop(self: Arc<Self>, service: String) {
        let mut index: u64 = 0;
        let mut backoff = Duration::from_millis(200);
        loop {
            // `stale`: any server answers, so the peer table keeps following the catalog while
            // the servers elect a new leader.
            let path =
                format!("/v1/health/service/{service}?passing=true&stale&index={index}&wait=30s");
            let request = self
                .request(reqwest::Method::GET, &path)
                .timeout(Duration::from_secs(40));
            let outcome = tokio::select! {
                () = self.shutdown.cancelled() => return,
                outcome = self.send(request) => outcome,
            };
            match outcome {
                Ok((body, new_index)) => {
                    backoff = Duration::from_millis(200);
                    let new_index = new_index.unwrap_or(0);
                    // After an agent restart the index starts again lower: start over.
                    let same = new_index == index;
                    index = if new_index < index { 0 } else { new_index };
                    let entries: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
                    let peers = self.peers_of(&service, &entries).await;
                    self.peers.rcu(|table| {
                        let mut services = table.services.clone();
                        services.insert(service.clone(), peers.clone());
                        PeerTable { services }
                    });
                    if same {
                        // A blocking query may return without a change; do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(service = %service, "Consul watch: {e}");
                    index = 0;
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The peers in a `/v1/health/service` answer, with the descriptions of wasmeca peers.
    async fn peers_of(&self, service: &str, entries: &[Value]) -> Vec<Arc<Peer>> {
        let mut peers = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            let s = &entry["Service"];
            let id = s["ID"].as_str().unwrap_or_default().to_owned();
            // A host that moved to another agent while its first one was down is listed by
            // both once that one is back (until its registration there expires): one peer.
            if !seen.insert(id.clone()) {
                continue;
            }
            let instance = s["Meta"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !instance.is_empty() && instance == self.me {
                continue;
            }
            let address = s["Address"]
                .as_str()
                .filter(|a| !a.is_empty())
                .or_else(|| entry["Node"]["Address"].as_str())
                .unwrap_or("127.0.0.1");
            let Some(port) = s["Port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let weight = s["Weights"]["Passing"].as_u64().unwrap_or(1) as u32;
            let modify = s["ModifyIndex"]
                .as_u64()
                .or_else(|| entry["Service"]["CreateIndex"].as_u64())
                .unwrap_or(0);
            let Some(client) = (self.connect)(address, port) else {
                continue;
            };
            let serves = if instance.is_empty() {
                None
            } else {
                self.describe(&id, modify, address, port).await
            };
            peers.push(Arc::new(Peer {
                id,
                service: service.to_owned(),
                instance,
                url: format!("http://{address}:{port}/act"),
                weight,
                client,
                serves,
            }));
        }
        peers
    }

    /// A wasmeca peer's patterns and versions, from its own `/plugins`, cached by the service
    /// entry's modify index (it changes whenever the peer re-registers with other plugins).
    async fn describe(
        &self,
        id: &str,
        modify: u64,
        address: &str,
        port: u16,
    ) -> Option<Arc<Served>> {
        let key = (id.to_owned(), modify);
        if let Some(cached) = self
            .described
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Some(cached.clone());
        }
        let url = format!("http://{address}:{port}/plugins");
        let body = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let description: Value = serde_json::from_str(&body).ok()?;
        let mut trie: Served = Patrun::new();
        for plugin in description["plugins"].as_array()? {
            let (Some(name), Some(version)) = (
                plugin["name"].as_str(),
                plugin["version"]
                    .as_str()
                    .and_then(|v| Version::parse(v).ok()),
            ) else {
                continue;
            };
            for pattern in plugin["patterns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                // A peer's catch-all `{}` is its own last resort, not an offer: taken as one,
                // it would win over this host's own catch-all for every unmatched message.
                if let Ok(pattern) = Pattern::parse(pattern)
                    && !pattern.is_empty()
                {
                    trie.slot(&pattern)
                        .get_or_insert_with(Vec::new)
                        .push((name.to_owned(), version.clone()));
                }
            }
        }
        let trie = Arc::new(trie);
        let mut cache = self
            .described
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(cached_id, _), _| cached_id != id);
        cache.insert(key, trie.clone());
        Some(trie)
    }
}

impl Peers for Discovery {
    fn service(&self) -> &str {
        &self.config.service
    }

    fn for_message(&self, msg: &Message, req: Option<&VersionReq>, track: &[String]) -> PeerChoice {
        self.peers().for_message(msg, req, track, &self.balancer)
    }

    fn for_target<'a>(
        &'a self,
        service: &'a str,
        track: &'a [String],
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn Remote>>, ActError>> {
        Box::pin(async move {
            self.known(service, wait).await;
            let peers = self
                .peers()
                .for_service(service, track, &self.balancer)
                .unwrap_or_default();
            if peers.is_empty() {
                return Err(ActError::host(
                    Code::TargetUnavailable,
                    format!("$target {service}: Consul lists no passing instance of that service"),
                ));
            }
            let wasmeca = peers.iter().all(|p| !p.instance.is_empty());
            if !wasmeca && !self.config.targets.iter().any(|t| t == service) {
                return Err(ActError::host(
                    Code::TargetForbidden,
                    format!(
                        "$target {service}: not a wasmeca host; add it to [consul] targets to send acts there"
                    ),
                ));
            }
            Ok(peers.into_iter().map(|p| p as Arc<dyn Remote>).collect())
        })
    }

    fn describe(&self) -> Vec<String> {
        self.peers().all().iter().map(|p| p.describe()).collect()
    }
}
