//! How the core reaches other hosts without naming Consul or a transport: a [`Remote`] is one
//! service you can act on (a `[[client]]`, a peer), a [`ClientEntry`] pins patterns to one,
//! [`Peers`] says which peers can answer a message, a `$version` or a `$target`, and
//! [`try_in_order`] sends to the first that answers.

use std::sync::Arc;
use std::time::Duration;

use semver::{Version, VersionReq};
use tokio::time::Instant;

use serde_json::Value;

use crate::error::{ActError, Code};
use crate::message::{Message, Reply};
use crate::pattern::Pattern;
use crate::runtime::{BoxFuture, CallCtx, Handler};

/// What a remote call knows about the act it forwards.
#[derive(Debug, Clone, Copy)]
pub struct RemoteCall<'a> {
    /// The transaction id, sent along so the remote side keeps it.
    pub tx: &'a str,
    /// When the act must have answered.
    pub deadline: Instant,
    /// The act's timeout, for `action_timeout` messages.
    pub timeout: Duration,
    /// The client pin that matched, for messages and routing keys (empty for peers).
    pub pin: &'a Pattern,
}

/// One service you can act on: a client transport to another Seneca-compatible host.
pub trait Remote: Send + Sync {
    /// Sends `msg` and waits for the answer (or the remote error) until `call.deadline`.
    fn act<'a>(
        &'a self,
        msg: &'a Message,
        call: RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// Where it sends, for logs and listings (`http://127.0.0.1:10102/act`).
    fn describe(&self) -> String;
}

/// How discovery reaches a peer it found at an address and port (a Seneca HTTP client, from the
/// wiring: the core and discovery name no transport); `None` when it cannot be reached that way.
pub type Connect = Arc<dyn Fn(&str, u16) -> Option<Arc<dyn Remote>> + Send + Sync>;

/// A `[[client]]` pin: acts matching it go to `remote` when no plugin serves them.
pub struct ClientEntry {
    /// The pin (empty: catch-all).
    pub pin: Pattern,
    /// The transport.
    pub remote: Arc<dyn Remote>,
}

impl std::fmt::Debug for ClientEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.pin, self.remote.describe())
    }
}

impl Handler for ClientEntry {
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
        Box::pin(async move {
            let call = RemoteCall {
                tx: &ctx.tx,
                deadline: ctx.deadline,
                timeout: ctx.timeout,
                pin: &self.pin,
            };
            self.remote.act(&msg, call).await
        })
    }

    fn describe(&self) -> String {
        format!("{} -> {}", self.pin, self.remote.describe())
    }
}

/// What the peers say about a message this host cannot answer itself.
pub enum PeerChoice {
    /// These peers can answer, in the order to try them.
    Peers(Vec<Arc<dyn Remote>>),
    /// Peers serve the pattern, but none in a version satisfying the pin; these versions exist.
    NoVersion(Vec<Version>),
    /// No peer serves it.
    Nobody,
}

/// The other hosts this one can forward to (implemented by discovery).
pub trait Peers: Send + Sync {
    /// This host's own service name: a `$target` naming it is answered here.
    fn service(&self) -> &str;

    /// The peers able to answer `msg` (none whose instance is in `track`): with a pin, those
    /// with a satisfying version; without, those with the highest version any peer has.
    fn for_message(&self, msg: &Message, req: Option<&VersionReq>, track: &[String]) -> PeerChoice;

    /// The passing instances of `service` (none whose instance is in `track`), in the order
    /// to try them, waiting up to `wait` for a service not watched yet; `Err` says why there
    /// are none to try.
    fn for_target<'a>(
        &'a self,
        service: &'a str,
        track: &'a [String],
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn Remote>>, ActError>>;

    /// Every peer, as `id url` lines, for `/health`.
    fn describe(&self) -> Vec<String>;
}

/// The message's `transport$.track`: the instances it went through.
pub fn track(msg: &Message) -> Vec<String> {
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

/// Sends `msg` to the first of `peers` that answers; an unreachable one is skipped.
pub async fn try_in_order(
    peers: Vec<Arc<dyn Remote>>,
    msg: &Message,
    ctx: &CallCtx,
) -> Result<Reply, ActError> {
    let pin = Pattern::default();
    let mut last = None;
    for peer in peers {
        tracing::debug!(tx = &*ctx.tx, peer = %peer.describe(), "act forwarded");
        // The act's span is the current one here: it says which peer answered.
        if crate::telemetry::on() {
            let peer = opentelemetry::KeyValue::new("wasmeca.peer", peer.describe());
            crate::telemetry::tag_current(peer);
        }
        let call = RemoteCall {
            tx: &ctx.tx,
            deadline: ctx.deadline,
            timeout: ctx.timeout,
            pin: &pin,
        };
        match peer.act(msg, call).await {
            Err(e) if e.is(Code::Unreachable) => {
                tracing::warn!(peer = %peer.describe(), "peer unreachable, trying another: {}", e.message);
                last = Some(e);
            }
            answer => return answer,
        }
    }
    Err(last.unwrap_or_else(|| ActError::host(Code::Unreachable, "no peer answered")))
}
