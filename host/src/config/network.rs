//! The sections of `wasmeca.toml` about the network: the REST gateway, the transports this host
//! listens on and the clients it sends through, and Consul. Pure, no sockets.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::amqp::{AmqpClientConfig, AmqpListen, Urls, default_connect_timeout};

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
    /// The largest request body a route accepts, in bytes (larger ones get 413); default
    /// `[http] body_limit`.
    pub body_limit: Option<usize>,
    /// seneca-web route sets for patterns served elsewhere (by `[[client]]`s or peers).
    pub route: Vec<Value>,
}

impl Default for Rest {
    fn default() -> Self {
        Self {
            listen: ListenAddr(Some(SocketAddr::from(([127, 0, 0, 1], 3000)))),
            body_limit: None,
            route: Vec::new(),
        }
    }
}

/// `[http]`: what the HTTP listeners (the REST gateway and Seneca's HTTP transport) allow
/// their clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// How long a client may take to send a request's headers, from their first byte, in ms
    /// (a slowloris client sends them a byte at a time).
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers are in, in ms; it
    /// is answered 408 after that (a slow-POST client announces a body and never sends it).
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request with no bytes moving
    /// before it is closed, in ms.
    pub idle_timeout_ms: u64,
    /// The largest request body read, in bytes (larger ones get 413 unread); `[rest]
    /// body_limit` sets the REST gateway's own.
    pub body_limit: usize,
    /// How many connections each listener keeps open at most.
    pub max_connections: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 20_000,
            idle_timeout_ms: 60_000,
            body_limit: 1 << 20,
            max_connections: 10_000,
        }
    }
}

/// `[events]`: where published events go. Without a `url` they stay in this host, in memory
/// (not durable); with one they travel over RabbitMQ, durably, to every group that observes
/// them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// The broker's nodes (`amqp://...`); absent: events stay in this host.
    pub url: Option<Urls>,
    /// The group this host's observers consume as: hosts of one group share one queue, so each
    /// event is handled once per group. Default: the Consul service name, else `wasmeca`.
    pub group: Option<String>,
    /// The durable topic exchange events are published to; the group queues are named
    /// `<exchange>.<group>`, their dead-letter queues `<exchange>.<group>.dead`.
    pub exchange: String,
    /// Tries of a failing observer on one event before the event is dead-lettered (in memory:
    /// given up on and logged).
    pub attempts: u32,
    /// The wait before an observer's second try, in ms; it doubles for each try after.
    pub retry_ms: u64,
    /// Events one host handles at once (the consumer's prefetch).
    pub prefetch: u16,
    /// How long connecting to the broker may take before it counts as down.
    pub connect_timeout_ms: u64,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            url: None,
            group: None,
            exchange: "wasmeca.events".into(),
            attempts: 3,
            retry_ms: 100,
            prefetch: 64,
            connect_timeout_ms: default_connect_timeout(),
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
    Amqp(AmqpClientConfig),
}

impl Client {
    /// The pins as written (`pin` first); empty means catch-all.
    pub fn pins(&self) -> Vec<String> {
        match self {
            Self::Http { pin, pins, .. } | Self::Amqp(AmqpClientConfig { pin, pins, .. }) => {
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
    /// The agents' HTTP APIs, tried in order (a local agent first, as Consul recommends, then
    /// others to fall back on); default `$CONSUL_HTTP_ADDR` (a comma list), else
    /// `http://127.0.0.1:8500`.
    pub address: Option<Urls>,
    /// ACL token; default `$CONSUL_HTTP_TOKEN`.
    pub token: Option<String>,
    /// The service name this host registers as.
    pub service: String,
    /// The address peers reach this host at; default `$WASMECA_ADVERTISE` (a container's own
    /// address, which only its entrypoint knows), else the HTTP listener's address (127.0.0.1
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
    /// Services `$target` may name besides wasmeca hosts (services whose instances registered
    /// as wasmeca hosts are always allowed; anything else, Consul's own server included, is
    /// refused).
    pub targets: Vec<String>,
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
            targets: Vec::new(),
        }
    }
}

impl Consul {
    /// The agents' URLs, in the order they are tried: the configured ones, else
    /// `$CONSUL_HTTP_ADDR`, each with `http://` added when it has no scheme.
    pub fn agent_urls(&self) -> Vec<String> {
        let given = self
            .address
            .clone()
            .or_else(|| {
                std::env::var("CONSUL_HTTP_ADDR")
                    .ok()
                    .map(|a| Urls::parse(&a))
            })
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| Urls(vec!["http://127.0.0.1:8500".into()]));
        given
            .iter()
            .map(|raw| {
                let raw = raw.trim_end_matches('/');
                if raw.contains("://") {
                    raw.to_owned()
                } else {
                    format!("http://{raw}")
                }
            })
            .collect()
    }

    /// The ACL token: the configured one, else `$CONSUL_HTTP_TOKEN`.
    pub fn acl_token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        })
    }

    /// The address peers reach this host at, when one is set: the configured one, else
    /// `$WASMECA_ADVERTISE`.
    pub fn advertised(&self) -> Option<String> {
        self.advertise.clone().or_else(|| {
            std::env::var("WASMECA_ADVERTISE")
                .ok()
                .filter(|a| !a.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
        assert_eq!((c.rest.body_limit, c.http.body_limit), (Some(10), 1 << 20));
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
    fn consul_section() {
        let c = Config::from_toml("[consul]\naddress = \"127.0.0.1:8501, http://10.0.0.2:8500/\"\nbalance = \"weighted\"\npeers = [\"a\", \"b\"]").unwrap();
        let consul = c.consul().unwrap();
        assert_eq!(
            consul.agent_urls(),
            ["http://127.0.0.1:8501", "http://10.0.0.2:8500"]
        );
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
}
