//! How the engine calls up without knowing who answers: the [`Upcalls`] trait (a guest's nested
//! `act`, `prior` and `publish`, implemented by the router), the [`Handler`] trait (anything a
//! message can be sent to), and the [`CallCtx`] a call carries down its chain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;

use crate::error::ActError;
use crate::message::{Message, Reply};
use crate::principal::Principal;

/// A boxed, sendable future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an act carries down its call chain.
#[derive(Debug, Clone)]
pub struct CallCtx {
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
    /// Who the message acts for (the data store's access rules read it): carried down the
    /// chain, never read here.
    pub principal: Principal,
}

impl CallCtx {
    /// A context for work that no act started, due by `deadline`: the host's own, acting for
    /// nobody in particular until [`acting_as`](Self::acting_as) says for whom.
    pub fn root(tx: Arc<str>, deadline: Instant) -> Self {
        let timeout = deadline.saturating_duration_since(Instant::now());
        Self {
            tx,
            depth: 0,
            deadline,
            timeout,
            held: SmallVec::new(),
            principal: Principal::default(),
        }
    }

    /// This context, acting for `principal` (a plugin's `init` acts as that plugin).
    pub fn acting_as(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }

    /// The act's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Anything a message can be sent to under a call context: a plugin action, a native action,
/// a remote service. The engine holds the one a running action overrode, for its `prior`.
pub trait Handler: Send + Sync {
    /// Answers `msg` within `ctx.deadline`.
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>>;

    /// What it is, for logs (`cmd:salute (salute@1.0.0)`).
    fn describe(&self) -> String;

    /// True when it records each call in a span that stands for the act (the host's store:
    /// a database client span), so the act that reaches it makes no span of its own.
    fn spans_itself(&self) -> bool {
        false
    }
}

/// The host side of a guest's imports, implemented by the router: the engine calls up through
/// it and never names what answers.
pub trait Upcalls: Send + Sync {
    /// A nested act from a guest whose call runs under `parent`.
    fn act<'a>(
        &'a self,
        msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// `prior(msg)` from a guest whose call runs under `parent`: `prior` is what its action
    /// overrode, if anything.
    fn prior<'a>(
        &'a self,
        prior: Option<&'a Arc<dyn Handler>>,
        msg: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<Reply, ActError>>;

    /// `publish(event)` from a guest whose call runs under `parent`: resolves once the event
    /// is accepted.
    fn publish<'a>(
        &'a self,
        event: Message,
        parent: &'a CallCtx,
    ) -> BoxFuture<'a, Result<(), ActError>>;

    /// An instance of `plugin` (`name@version`) is being replaced, for `reason`: `trap`,
    /// `timeout`, `cancelled` (its caller went away mid-call), `interrupted` (shutdown) or
    /// `growth` (one call grew its memory past the bound).
    fn replaced(&self, plugin: &str, reason: &'static str);
}

/// The frame of the call an instance is running: where nested acts and `prior` come from.
pub(crate) struct Frame {
    /// The caller's context with this instance's pool added to `held`.
    pub ctx: CallCtx,
    /// The action the running action overrode, for `prior`.
    pub prior: Option<Arc<dyn Handler>>,
}
