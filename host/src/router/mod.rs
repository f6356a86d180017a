//! `act()`: the one path every ingress and every guest's nested act shares. A message gets its
//! ids, deadline and depth, is matched against the registry's current snapshot (with its
//! `$version` pin), and is answered by a local action, a client pin, or a peer the [`Peers`]
//! trait names; Seneca's `default$`, `act_not_found`, `action_timeout` and `result_not_objarr`
//! rules apply here and nowhere else.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{ActError, Code};
use crate::events::{Bus, LocalBus, Retry};
use crate::message::{self, Message, Reply, json_kind};
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::readiness::Readiness;
use crate::registry::{Registry, Resolution, Target};
use crate::remote::{PeerChoice, Peers, Remote, track, try_in_order};
use crate::runtime::{BoxFuture, CallCtx, Handler, Upcalls};
use crate::telemetry::{self, Span, span};

/// The limits every act runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct ActLimits {
    /// Default act timeout when a message has no `timeout$` (Seneca's 22222 ms).
    pub timeout: Duration,
    /// The longest timeout a message may ask for with `timeout$`: a caller cannot lift the
    /// deadline that frees a looping plugin's instance (and its AMQP delivery).
    pub max_timeout: Duration,
    /// How deep acts may nest (an action acting an action ...) before `act_depth_limit`.
    pub max_depth: u32,
}

impl Default for ActLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(message::DEFAULT_TIMEOUT_MS),
            max_timeout: Duration::from_millis(message::MAX_TIMEOUT_MS),
            max_depth: 32,
        }
    }
}

impl ActLimits {
    /// The timeout of `msg`: its `timeout$`, no longer than the maximum, else the default.
    pub fn timeout_of(&self, msg: &Message) -> Duration {
        msg.timeout()
            .map_or(self.timeout, |asked| asked.min(self.max_timeout))
    }
}

/// Decrements the in-flight gauge when an act from an ingress ends, however it ends, and wakes
/// [`Router::drained`] at zero.
struct InFlightGuard<'a>(&'a Inner);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.metrics.in_flight().dec() == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Shared state behind [`Router`].
struct Inner {
    /// The plugin set, its snapshots and life cycle.
    registry: Registry,
    /// Default timeout and depth limit.
    limits: ActLimits,
    /// Set by [`Router::drain`]: the host still serves, but says it is going (health 503,
    /// deregistered), so callers and peers stop sending before it stops listening.
    draining: AtomicBool,
    /// Set by [`Router::close`]: new acts from ingresses are refused.
    closing: AtomicBool,
    /// Woken when the last act in flight ends (the count is the metrics' gauge).
    idle: Notify,
    /// Where the in-flight gauge lives.
    metrics: Arc<Metrics>,
    /// This host's Seneca instance id (`<id>/<start ms>/<pid>/<version>/wasmeca`), which
    /// transports send as origin and accept.
    instance_id: Arc<str>,
    /// Other hosts, when discovery is on: where acts go that nothing local answers.
    peers: OnceLock<Arc<dyn Peers>>,
    /// Where published events go: a broker's bus when one is set, else (from the first
    /// publish) the in-memory one.
    bus: OnceLock<Arc<dyn Bus>>,
    /// The dependencies the adapters registered, which `/health/ready` checks.
    readiness: Readiness,
}

/// The router: answers acts against the registry's plugins. Cheap to clone.
#[derive(Clone)]
pub struct Router(Arc<Inner>);

impl Router {
    /// A router over `registry`, which from now on gives its instances this router for their
    /// nested acts.
    pub fn new(registry: Registry, limits: ActLimits, instance_id: Arc<str>) -> Self {
        let inner = Arc::new(Inner {
            metrics: registry.metrics().clone(),
            registry,
            limits,
            draining: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            idle: Notify::new(),
            instance_id,
            peers: OnceLock::new(),
            bus: OnceLock::new(),
            readiness: Readiness::default(),
        });
        let weak: std::sync::Weak<Inner> = Arc::downgrade(&inner);
        inner.registry.attach(weak);
        Self(inner)
    }

    /// The plugin set.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// This host's Seneca instance id.
    pub fn instance_id(&self) -> &str {
        &self.0.instance_id
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The dependencies whose state says whether this host is ready for work.
    pub fn readiness(&self) -> &Readiness {
        &self.0.readiness
    }

    /// The limits acts run under.
    pub fn limits(&self) -> &ActLimits {
        &self.0.limits
    }

    /// Sends acts that nothing local answers, and `$target`s, to `peers`.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.0.peers.set(peers);
    }

    /// Sends published events to `bus` (a broker's) instead of delivering them in memory.
    pub fn set_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.0.bus.set(bus);
    }

    /// Resolves once the events published so far have been handled by this host's observers
    /// (at once when a broker carries them; see [`Bus::settled`]).
    pub async fn events_settled(&self) {
        if let Some(bus) = self.0.bus.get() {
            bus.settled().await;
        }
    }

    /// Publishes an event from this process or an ingress (`wasmeca publish`, `POST
    /// /publish`): stamped with an id and a tx, and accepted by the bus; answers the id.
    pub async fn publish(&self, mut event: Message) -> Result<String, ActError> {
        if self.is_closing() {
            return Err(ActError::host(Code::Closed, "the host is shutting down"));
        }
        let id = crate::events::stamp(&mut event, None);
        let deadline = Instant::now() + self.0.limits.timeout_of(&event);
        self.0.publish_by(event, deadline).await.map(|()| id)
    }

    /// The peers currently known, as `id url` lines.
    pub fn peer_ids(&self) -> Vec<String> {
        self.0.peers.get().map_or_else(Vec::new, |p| p.describe())
    }

    /// Acts a message from this process (`wasmeca act`, tests) and returns the answer (a JSON
    /// object, array or null).
    pub async fn act(&self, msg: Message) -> Result<Reply, ActError> {
        self.act_from(msg, false, None).await
    }

    /// Acts a message from an ingress; `remote` when it came from the network. The act is
    /// recorded on the ingress's `span` when given (a REST request's, a delivery's: the one
    /// act an ingress makes is its operation, so it adds no span of its own), else as a
    /// nested act is ([`Inner::dispatch`]).
    pub async fn act_from(
        &self,
        msg: Message,
        remote: bool,
        span: Option<&Span>,
    ) -> Result<Reply, ActError> {
        if self.is_closing() {
            return Err(ActError::host(Code::Closed, "the host is shutting down"));
        }
        self.0.metrics.in_flight().inc();
        let _guard = InFlightGuard(&self.0);
        self.0.act_with(msg, None, remote, span).await
    }

    /// The host is going: it keeps serving what comes, but tells health checks and peers, so
    /// that less comes.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// True once [`Router::drain`] (or [`Router::close`]) was called.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire) || self.is_closing()
    }

    /// True once [`Router::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::Acquire)
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
        usize::try_from(self.0.metrics.in_flight().get()).unwrap_or(0)
    }
}

impl Upcalls for Inner {
    fn replaced(&self, plugin: &str, reason: &'static str) {
        self.metrics.instance_replaced(plugin, reason);
    }

    fn publish<'a>(
        &'a self,
        mut event: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<(), ActError>> {
        Box::pin(async move {
            crate::events::stamp(&mut event, Some(&parent.tx));
            self.publish_by(event, parent.deadline).await
        })
    }

    fn act<'a>(
        &'a self,
        msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        Box::pin(self.act_with(msg, Some(parent), parent.principal.remote, None))
    }

    fn prior<'a>(
        &'a self,
        prior: Option<&'a Arc<dyn Handler>>,
        mut msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        Box::pin(async move {
            let Some(prior) = prior else {
                return Ok(Reply::from_value(match msg.default_result() {
                    Some(v @ (Value::Object(_) | Value::Array(_))) => v,
                    _ => &Value::Null,
                }));
            };
            let depth = parent.depth + 1;
            self.check_depth(depth, &parent.tx)?;
            msg.strip_hidden();
            msg.insert(message::TX.to_owned(), Value::String(parent.tx.to_string()));
            // The same message, going on for whoever sent it to the overriding action, and
            // through the override.
            let ctx = CallCtx {
                depth,
                principal: parent.principal.through_prior(),
                ..parent.clone()
            };
            let span = span!(
                "prior",
                Internal,
                KeyValue::new("seneca.pattern", prior.describe())
            );
            telemetry::traced!(&span, prior.call(msg, ctx))
        })
    }
}

impl Inner {
    /// Hands a stamped event to the bus, waiting for it to be accepted until `deadline`.
    async fn publish_by(&self, event: Message, deadline: Instant) -> Result<(), ActError> {
        let bus = self.bus.get_or_init(|| {
            Arc::new(LocalBus::new(
                self.registry.downgrade(),
                self.limits.timeout,
                Retry::default(),
            ))
        });
        self.metrics.event_published();
        let span = span!(
            "publish event",
            Producer,
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new(
                "messaging.message.id",
                crate::events::id_of(&event).to_owned()
            ),
            KeyValue::new("wasmeca.bus", bus.describe()),
        );
        telemetry::traced!(&span, bus.publish(event, deadline))
    }

    /// The act path, for ingresses (`parent` = `None`; `remote`: from the network; `ingress`:
    /// the ingress's span, which the act is recorded on) and for plugins' nested acts (on
    /// behalf of the same principal, nested; each recorded as [`Inner::dispatch`] says).
    async fn act_with(
        &self,
        mut msg: Message,
        parent: Option<&CallCtx>,
        remote: bool,
        ingress: Option<&Span>,
    ) -> Result<Reply, ActError> {
        let depth = parent.map_or(0, |p| p.depth + 1);
        self.check_depth(depth, parent.map_or("-", |p| &p.tx))?;
        // Most messages carry no meta keys: then there is nothing to look up or strip.
        let has_meta = msg.has_meta();
        let given_tx = if has_meta { msg.act_id().1 } else { None };
        let tx: Arc<str> = match (given_tx, parent) {
            (Some(tx), _) => tx.into(),
            (None, Some(p)) => p.tx.clone(),
            (None, None) => message::new_id().into(),
        };
        let timeout = if has_meta {
            self.limits.timeout_of(&msg)
        } else {
            self.limits.timeout
        };
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
            principal: match parent {
                Some(p) => p.principal.nested(),
                None => Principal::from_ingress(remote),
            },
        };
        let on = ingress.map_or(Answering::Own, Answering::Ingress);
        self.dispatch(msg, ctx, on, has_meta).await
    }

    /// Finds who answers `msg` (an action here, a `[[client]]`, a peer) and has it answer,
    /// recording the act `on` the ingress's span, else on a span of its own made once what
    /// answers is known: none when that is the host's store, whose client span is the act's
    /// ([`Action::spans_itself`]).
    async fn dispatch(
        &self,
        msg: Message,
        ctx: CallCtx,
        on: Answering<'_>,
        has_meta: bool,
    ) -> Result<Reply, ActError> {
        let route = self.route(&msg, has_meta);
        match on {
            // The ingress's span is current already and fails with the act: the act only adds
            // what it learns, in one update.
            Answering::Ingress(span) => {
                if span.is_recording() {
                    let answered = match &route {
                        Ok(Route::Target(target)) => Some(answerer(target)),
                        _ => None,
                    };
                    let tx = KeyValue::new("seneca.tx", ctx.tx.clone());
                    span.tag_all(std::iter::once(tx).chain(answered.into_iter().flatten()));
                }
                self.answer(route, msg, ctx).await
            }
            Answering::Own => {
                let span = own_span(&route, &ctx);
                telemetry::traced!(&span, self.answer(route, msg, ctx))
            }
        }
    }

    /// Who answers `msg`: another service's hosts (`$target`), peers, nobody here (or not in
    /// the pinned version), or a target here.
    fn route(&self, msg: &Message, has_meta: bool) -> Result<Route<'_>, ActError> {
        if has_meta && let Some(service) = msg.target() {
            let Some(peers) = self.peers.get() else {
                return Err(ActError::host(
                    Code::TargetUnavailable,
                    format!(
                        "$target {service}: this host has no service discovery ([consul] is off)"
                    ),
                ));
            };
            if service != peers.service() {
                return Ok(Route::Service(peers, service.to_owned()));
            }
        }
        let resolution = self.registry.with_snapshot(|set| set.resolve(msg))?;
        Ok(match resolution {
            Resolution::Found(target) => Route::Target(target),
            Resolution::CatchAll(target) => match self.peers.get().map(|peers| {
                let req = msg.version_req().ok().flatten();
                peers.for_message(msg, req.as_ref(), &track(msg))
            }) {
                Some(PeerChoice::Peers(peers)) => Route::Peers(peers),
                _ => Route::Target(target),
            },
            Resolution::VersionMissing(error) => Route::Forward(Some(error)),
            Resolution::NotFound => Route::Forward(None),
        })
    }

    /// Has whoever `route` found answer `msg`.
    async fn answer(
        &self,
        route: Result<Route<'_>, ActError>,
        msg: Message,
        ctx: CallCtx,
    ) -> Result<Reply, ActError> {
        match route? {
            Route::Service(peers, service) => {
                self.forward_to_service(peers, &service, &msg, &ctx).await
            }
            Route::Peers(peers) => try_in_order(peers, &msg, &ctx).await,
            Route::Forward(missing) => self.forward(&msg, &ctx, missing).await,
            Route::Target(target) => {
                tracing::debug!(tx = &*ctx.tx, ?target, depth = ctx.depth, "act");
                match target {
                    Target::Local(action) => action.answer(msg, ctx).await,
                    Target::Remote(client) => client.call(msg, ctx).await,
                }
            }
        }
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
        let Some(peers) = self.peers.get() else {
            return match missing {
                Some(error) => Err(error),
                None => default_result(msg),
            };
        };
        let req = msg.version_req()?;
        match peers.for_message(msg, req.as_ref(), &track(msg)) {
            PeerChoice::Peers(peers) => try_in_order(peers, msg, ctx).await,
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
                Err(ActError::host(
                    Code::VersionNotFound,
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

    /// `$target: "service"`: a passing instance of that service answers.
    async fn forward_to_service(
        &self,
        peers: &Arc<dyn Peers>,
        service: &str,
        msg: &Message,
        ctx: &CallCtx,
    ) -> Result<Reply, ActError> {
        let wait = ctx
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(2));
        let track = track(msg);
        let remotes = peers.for_target(service, &track, wait).await?;
        try_in_order(remotes, msg, ctx).await
    }

    fn check_depth(&self, depth: u32, tx: &str) -> Result<(), ActError> {
        let max = self.limits.max_depth;
        if depth <= max {
            return Ok(());
        }
        Err(ActError::host(
            Code::ActDepthLimit,
            format!("acts nested {depth} deep (limit {max}, tx {tx}): an action probably acts its own pattern in a loop"),
        )
        .with_details(serde_json::json!({ "depth": depth, "limit": max })))
    }
}

/// Where an act is recorded.
#[derive(Clone, Copy)]
enum Answering<'a> {
    /// On a span of its own (a nested act's, or one from this process), named by what answers.
    Own,
    /// On the span of the ingress the act came by: it keeps its name (the route's, the
    /// queue's) and learns what answered.
    Ingress(&'a Span),
}

/// Who answers an act, found before it is answered (so that its span can say it).
enum Route<'a> {
    /// `$target` names another service: one of its hosts.
    Service(&'a Arc<dyn Peers>, String),
    /// A catch-all matched here, and these peers serve the pattern itself.
    Peers(Vec<Arc<dyn Remote>>),
    /// Nothing here answers (or not in the pinned version, the error saying which there are):
    /// a peer that does, else Seneca's answer.
    Forward(Option<ActError>),
    /// An action here or a `[[client]]`.
    Target(Target),
}

/// What answers `target`, as an act's span says it: `seneca.pattern`, and `wasmeca.plugin` or
/// `wasmeca.peer`.
fn answerer(target: &Target) -> [KeyValue; 2] {
    match target {
        Target::Local(action) => [
            KeyValue::new("seneca.pattern", action.pattern.clone()),
            KeyValue::new("wasmeca.plugin", action.plugin.ident.clone()),
        ],
        Target::Remote(client) => [
            KeyValue::new("seneca.pattern", client.pin.to_string()),
            KeyValue::new("wasmeca.peer", client.describe()),
        ],
    }
}

/// The span of an act not made by an ingress: `act <pattern>` with what answers, or `act`
/// when no target here answers (a peer's, whose client span follows, or an error's); none
/// when spans are not recorded, or when the host's store answers (its client span is the
/// act's).
fn own_span(route: &Result<Route<'_>, ActError>, ctx: &CallCtx) -> Span {
    if !telemetry::recording() {
        return Span::none();
    }
    let (name, answered) = match route {
        Ok(Route::Target(Target::Local(action))) if action.spans_itself() => return Span::none(),
        Ok(Route::Target(target)) => {
            let pattern = match target {
                Target::Local(action) => format!("act {}", action.pattern),
                Target::Remote(client) => format!("act {}", client.pin),
            };
            (Cow::Owned(pattern), Some(answerer(target)))
        }
        _ => (Cow::Borrowed("act"), None),
    };
    let mut attributes = telemetry::attributes();
    attributes.push(KeyValue::new("seneca.tx", ctx.tx.clone()));
    attributes.push(KeyValue::new("wasmeca.depth", i64::from(ctx.depth)));
    attributes.extend(answered.into_iter().flatten());
    Span::start(name, SpanKind::Internal, attributes, None)
}

/// No pattern matched: `default$` if it is an object or array, else Seneca's errors.
fn default_result(msg: &Message) -> Result<Reply, ActError> {
    match msg.default_result() {
        Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(Reply::from_value(v)),
        None | Some(Value::Null) => Err(ActError::not_found(&msg.clean())),
        Some(other) => Err(ActError::host(
            Code::ActDefaultBad,
            format!(
                "No matching action pattern found for {}, and default$ is {}, not an object or array.",
                crate::error::clip(&msg.to_json()),
                json_kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
