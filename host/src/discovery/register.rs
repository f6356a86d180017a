//! This host's registration in Consul: the service it registers as (one tag per
//! `plugin@version`, meta with the versions and ports, an HTTP check), kept through agent
//! restarts, plugin changes and moves to another agent, and removed on shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::consul::{ConsulError, Discovery};
use crate::readiness::Flag;
use crate::registry::Registry;

/// What the registration loop knows between rounds.
#[derive(Default)]
struct Registration {
    /// The id and body registered last, while the agent holds them.
    registered: Option<(String, Value)>,
    /// The agents that hold this host's registration: after a move to another agent, the old
    /// one is told to forget it once it answers again (else, restarted with its data, it would
    /// list this host a second time, passing, for as long as the host lives).
    held_by: HashSet<usize>,
    /// A failure was logged: the next ones are not, until a round succeeds.
    warned: bool,
    /// Another service holds this address and port: registering was refused.
    refused: bool,
}

impl Discovery {
    /// The registration body for this host.
    fn registration(
        &self,
        registry: &Registry,
        http: std::net::SocketAddr,
        rest: Option<std::net::SocketAddr>,
    ) -> (String, Value) {
        let address = self.config.advertised().unwrap_or_else(|| {
            if http.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                http.ip().to_string()
            }
        });
        let id = format!("{}-{address}-{}", self.config.service, http.port());
        let set = registry.snapshot();
        let tags: Vec<String> = set
            .plugins()
            .iter()
            .filter(|p| p.file.is_some())
            .map(|p| p.key())
            .collect();
        let mut meta = Map::new();
        meta.insert("wasmeca_version".into(), json!(env!("CARGO_PKG_VERSION")));
        meta.insert("instance".into(), json!(self.me));
        meta.insert("http_port".into(), json!(http.port().to_string()));
        meta.insert(
            "rest_port".into(),
            json!(rest.map_or_else(|| "off".to_owned(), |r| r.port().to_string())),
        );
        // Consul meta values are at most 512 bytes: the plugin list is split as needed.
        let joined = tags.join(",");
        let mut chunk = String::new();
        let mut part = 0;
        for tag in &tags {
            if chunk.len() + tag.len() + 1 > 500 {
                meta.insert(format!("plugins_{part}"), json!(chunk));
                chunk.clear();
                part += 1;
            }
            if !chunk.is_empty() {
                chunk.push(',');
            }
            chunk.push_str(tag);
        }
        if part == 0 {
            meta.insert("plugins".into(), json!(joined));
        } else {
            meta.insert(format!("plugins_{part}"), json!(chunk));
        }
        let ms = |v: u64| format!("{v}ms");
        let body = json!({
            "ID": id,
            "Name": self.config.service,
            "Tags": tags,
            "Address": address,
            "Port": http.port(),
            "Meta": meta,
            "Check": {
                "HTTP": format!("http://{address}:{}/health", http.port()),
                "Interval": ms(self.config.check_interval_ms),
                "Timeout": ms(self.config.check_timeout_ms),
                "DeregisterCriticalServiceAfter": ms(self.config.deregister_after_ms.max(60_000)),
                "Status": "passing",
            },
        });
        (id, body)
    }

    /// Another service at the same address and port, if Consul has one.
    async fn squatter(&self, id: &str, body: &Value) -> Result<Option<String>, ConsulError> {
        let (services, _) = self
            .send(self.request(reqwest::Method::GET, "/v1/agent/services"))
            .await?;
        let services: Map<String, Value> = serde_json::from_str(&services).unwrap_or_default();
        Ok(services.values().find_map(|s| {
            let same_place = s["Address"] == body["Address"] && s["Port"] == body["Port"];
            (same_place && s["ID"].as_str() != Some(id)).then(|| {
                format!(
                    "{} (id {})",
                    s["Service"].as_str().unwrap_or("?"),
                    s["ID"].as_str().unwrap_or("?")
                )
            })
        }))
    }

    /// Keeps this host registered until shutdown: registers (again when the plugins change, or
    /// when the agent forgot it), moves with the agent in use, cleans up after a move, and
    /// deregisters from every agent that holds it at the end.
    pub(super) async fn register_loop(
        self: Arc<Self>,
        registry: Registry,
        registered: Option<Flag>,
        http: std::net::SocketAddr,
        rest: Option<std::net::SocketAddr>,
    ) {
        let mut changes = registry.subscribe();
        let mut state = Registration::default();
        let mut backoff = Duration::from_millis(250);
        loop {
            let (id, body) = self.registration(&registry, http, rest);
            let outcome = self.register_once(&mut state, &id, &body).await;
            if let Some(flag) = &registered {
                match &outcome {
                    Ok(()) => flag.up(),
                    Err(e) => flag.down(e.to_string()),
                }
            }
            let wait = match outcome {
                Ok(()) => {
                    let current = self.current.load(Ordering::Relaxed) % self.agents.len();
                    let elsewhere: Vec<usize> = state
                        .held_by
                        .iter()
                        .copied()
                        .filter(|a| *a != current)
                        .collect();
                    for agent in self.deregister(&id, &elsewhere).await {
                        state.held_by.remove(&agent);
                    }
                    state.warned = false;
                    backoff = Duration::from_millis(250);
                    Duration::from_secs(2)
                }
                Err(e) => {
                    if !state.warned {
                        tracing::warn!(
                            "{e}; serving anyway, and registering as soon as Consul answers"
                        );
                        state.warned = true;
                    }
                    state.registered = None;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = changes.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Some((id, _)) = state.registered.filter(|_| !state.refused) {
            let agents: Vec<usize> = state.held_by.into_iter().collect();
            let done = self.deregister(&id, &agents).await;
            if done.len() < agents.len() {
                tracing::warn!(id = %id, "could not deregister from every Consul agent; the check turns critical and Consul drops it");
            } else {
                tracing::info!(id = %id, "deregistered from Consul");
            }
        }
    }

    /// One round: nothing when the agent still holds this registration, else registers it
    /// (unless another service sits at the same address and port).
    async fn register_once(
        &self,
        state: &mut Registration,
        id: &str,
        body: &Value,
    ) -> Result<(), ConsulError> {
        let current = state
            .registered
            .as_ref()
            .is_some_and(|(i, b)| i == id && b == body);
        if current {
            // Still there? (A -dev agent forgets everything when it restarts.)
            let path = format!("/v1/agent/service/{id}");
            match self.send(self.request(reqwest::Method::GET, &path)).await {
                Ok(_) => return Ok(()),
                Err(ConsulError::Status(404, _)) => {
                    tracing::info!(id = %id, "Consul lost this host's registration; registering again")
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(other) = self.squatter(id, body).await? {
            if !state.refused {
                tracing::error!(
                    "Consul already has {other} at {}:{}; refusing to register {id} there",
                    body["Address"].as_str().unwrap_or("?"),
                    body["Port"]
                );
                state.refused = true;
            }
            state.registered = Some((id.to_owned(), body.clone()));
            return Ok(());
        }
        state.refused = false;
        let request = self
            .request(reqwest::Method::PUT, "/v1/agent/service/register")
            .header("content-type", "application/json")
            .body(body.to_string());
        let agent = request.agent;
        self.send(request).await?;
        state.held_by.insert(agent);
        tracing::info!(id = %id, tags = ?body["Tags"], "registered in Consul at {}", self.agent());
        state.registered = Some((id.to_owned(), body.clone()));
        Ok(())
    }

    /// Asks each of `agents` to forget registration `id`; the agents that did (or never had
    /// it).
    async fn deregister(&self, id: &str, agents: &[usize]) -> Vec<usize> {
        let mut done = Vec::new();
        for &agent in agents {
            let path = format!("/v1/agent/service/deregister/{id}");
            let request = self
                .request_to(agent, reqwest::Method::PUT, &path)
                .timeout(Duration::from_secs(3));
            match self.send(request).await {
                Ok(_) | Err(ConsulError::Status(404, _)) => {
                    tracing::debug!(id, agent = %self.agents[agent], "deregistered");
                    done.push(agent);
                }
                Err(e) => tracing::debug!(id, "deregistering: {e}"),
            }
        }
        done
    }
}
