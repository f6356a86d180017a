//! The sections of `wasmeca.toml` about RabbitMQ: the broker's nodes and the queue type all AMQP
//! settings share (`[amqp]`), the AMQP listener and client, and their defaults (Node's names).
//! Pure, no sockets.

use serde::{Deserialize, Deserializer};

/// The nodes of one clustered service, tried in order: in TOML a string (one URL, or a comma
/// list, as environment variables give them) or an array of URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Urls(pub Vec<String>);

impl Urls {
    /// `a,b,c` (blanks around commas and empty items ignored).
    pub fn parse(text: &str) -> Self {
        Self(
            text.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The URLs, in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True when there is no URL at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Urls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl<'de> Deserialize<'de> for Urls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What TOML may hold.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            /// `"amqp://a"` or `"amqp://a,amqp://b"`.
            One(String),
            /// `["amqp://a", "amqp://b"]`.
            Many(Vec<String>),
        }
        let urls = match Given::deserialize(d)? {
            Given::One(text) => Self::parse(&text),
            Given::Many(list) => Self(list.iter().flat_map(|u| Self::parse(u).0).collect()),
        };
        if urls.is_empty() {
            return Err(serde::de::Error::custom("no URL given"));
        }
        Ok(urls)
    }
}

/// The type of the durable queues wasmeca declares on RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// RabbitMQ's default: the queue lives on one node and is gone while that node is (what
    /// Node's seneca-amqp-transport declares unless told otherwise).
    #[default]
    Classic,
    /// Replicated by raft over the cluster's nodes: the queue and its messages survive the
    /// loss of a minority of nodes (RabbitMQ 3.8+; mirrored classic queues are gone in 4).
    Quorum,
}

impl QueueType {
    /// The value of `x-queue-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

/// `[amqp]`: what every AMQP listener, client and the events bus share.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Amqp {
    /// The broker's nodes, for every AMQP setting that names none of its own; default
    /// `$AMQP_URL` (a comma list), else `amqp://guest:guest@127.0.0.1:5672`. A host connects to
    /// the first that answers and, when that node goes, to another.
    pub url: Option<Urls>,
    /// The type of every durable queue declared: command queues, event group queues and
    /// dead-letter queues (reply queues are exclusive, so classic). `quorum` on a cluster.
    pub queue_type: QueueType,
}

/// `[[listen]] type = "amqp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpListen {
    /// The broker's nodes; default `[amqp] url`.
    #[serde(default)]
    pub url: Option<Urls>,
    /// The type of the queues it declares; default `[amqp] queue_type`.
    #[serde(default)]
    pub queue_type: Option<QueueType>,
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
    /// The largest command accepted, in bytes; a larger one is dead-lettered with the reason
    /// (and never echoed back).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// How long connecting (TCP and the AMQP handshake) may take before it is tried again, in
    /// ms: a broker that accepts TCP but never speaks AMQP does not hang the listener.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

impl Default for AmqpListen {
    fn default() -> Self {
        Self {
            url: None,
            queue_type: None,
            pins: Vec::new(),
            name: None,
            exchange: default_exchange(),
            queue_prefix: default_listen_prefix(),
            dead_letter_exchange: default_dlx(),
            dead_letter_queue: default_dlq(),
            prefetch: default_prefetch(),
            max_message_bytes: default_max_message(),
            connect_timeout_ms: default_connect_timeout(),
        }
    }
}

/// `[[client]] type = "amqp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpClientConfig {
    /// The broker's nodes; default `[amqp] url`.
    #[serde(default)]
    pub url: Option<Urls>,
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
    /// How long connecting (TCP and the AMQP handshake) may take, in ms.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

impl Default for AmqpClientConfig {
    fn default() -> Self {
        Self {
            url: None,
            pin: None,
            pins: Vec::new(),
            exchange: default_exchange(),
            queue_prefix: default_client_prefix(),
            dead_letter_exchange: default_dlx(),
            timeout_ms: default_amqp_timeout(),
            connect_timeout_ms: default_connect_timeout(),
        }
    }
}

/// The broker's nodes: the given ones, else `$AMQP_URL` (a comma list), else RabbitMQ's default
/// on loopback.
pub fn amqp_urls(given: Option<&Urls>) -> Urls {
    given
        .filter(|u| !u.is_empty())
        .cloned()
        .or_else(|| {
            std::env::var("AMQP_URL")
                .ok()
                .map(|u| Urls::parse(&u))
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| Urls(vec!["amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()]))
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
fn default_max_message() -> usize {
    16 << 20
}
pub(super) fn default_connect_timeout() -> u64 {
    5_000
}
fn default_prefetch() -> u16 {
    64
}
fn default_amqp_timeout() -> u64 {
    crate::message::DEFAULT_TIMEOUT_MS
}
