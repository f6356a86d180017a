//! A plugin's pool: the long-lived instances of one `name@version`, leased to calls one at a
//! time, with each call under its deadline and the running-long limit; an instance that traps,
//! times out, is cancelled mid-call or grew past its bound in one call is replaced in the
//! background (and counted in the host's metrics), and so is every instance of a pool started
//! on Winch's code once Cranelift's is ready (quick start).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use arc_swap::ArcSwap;
use opentelemetry::KeyValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::bindings::Manifest;
use super::calls::{CallCtx, Frame, Handler, Upcalls};
use super::instance::{Call, Instance, Outcome, instantiate};
use super::{Compiled, LoadError, Runtime};
use crate::error::{ActError, Code};
use crate::principal::Principal;
use crate::telemetry::{self, span};

/// Source of pool ids, which call chains use to detect re-entry.
static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// How a pool is made and kept.
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    /// How many instances it keeps (at least one).
    pub size: usize,
    /// The deadline of each instance's `init`, the first ones' and every replacement's.
    pub init_timeout: std::time::Duration,
    /// An instance that one call grew by more than this many bytes is replaced after it
    /// answers; `0` keeps every instance.
    pub replace_after_growth: usize,
}

/// The long-lived instances of one `name@version`: each call leases one; state survives
/// between calls; an instance that traps, times out or grew past its bound is replaced in the
/// background.
pub struct Pool {
    /// Identifies the pool in call chains.
    id: u64,
    /// `name@version`.
    ident: Arc<str>,
    /// The names of its call spans, `handle name@version` and `observe name@version`, made
    /// once: formatting them for every traced call cost more than copying them.
    span_names: [String; 2],
    /// What new instances are made from: Winch's code at first under quick start, Cranelift's
    /// once [`Pool::upgrade`] has it.
    compiled: ArcSwap<Compiled>,
    /// The engine and linker.
    runtime: Runtime,
    /// Given to new instances for their nested acts.
    host: Weak<dyn Upcalls>,
    /// `init` options (JSON) for replacement instances.
    options: Arc<String>,
    /// Its size (at least one), init deadline and growth bound, as it was started with.
    shape: PoolShape,
    /// Instances not running a call.
    idle: Mutex<Vec<Instance>>,
    /// One permit per idle instance: waiting for a permit is waiting for an instance.
    permits: Arc<Semaphore>,
    /// How many of its live instances run Winch's code (quick start): the move to Cranelift's
    /// replaces them one by one until none is left, idle ones as they are found idle.
    quick_alive: AtomicUsize,
    /// Turns to run long: at most this many of the plugin's calls compute past their first
    /// epoch tick at once.
    long: Arc<Semaphore>,
    /// Who the plugin's `init` acts as: the plugin itself, under its own access rules, for
    /// the first instances and for every replacement (no plugin code runs as the host).
    init_as: Principal,
}

impl Pool {
    /// Instantiates the first instance to read the manifest, then fills the pool to `size`.
    pub async fn start(
        runtime: &Runtime,
        compiled: Compiled,
        host: Weak<dyn Upcalls>,
        options: Arc<String>,
        shape: PoolShape,
        init_as: Principal,
    ) -> Result<(Arc<Self>, Manifest), LoadError> {
        let (size, init_timeout) = (shape.size.max(1), shape.init_timeout);
        let long = Arc::new(Semaphore::new(runtime.long_calls_per_plugin()));
        // Each instance initialised as the plugin itself, with its own init deadline.
        let make = || {
            let ctx = CallCtx::root(
                crate::message::new_id().into(),
                Instant::now() + init_timeout,
            )
            .acting_as(init_as.clone());
            instantiate(
                runtime,
                &compiled,
                host.clone(),
                long.clone(),
                &options,
                ctx,
            )
        };
        let (first, manifest) = make().await?;
        let ident: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        let mut idle = vec![first];
        for index in 1..size {
            let (instance, other) = make().await?;
            let got = format!("{}@{}", other.name, other.version);
            if *got != *ident {
                let problem = super::ManifestProblem::Inconsistent {
                    index,
                    got,
                    want: ident.to_string(),
                };
                return Err(LoadError::Manifest {
                    path: compiled.path.to_path_buf(),
                    problem,
                });
            }
            idle.push(instance);
        }
        let quick = compiled.is_quick();
        let pool = Self {
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            span_names: [Call::Handle(0), Call::Observe(0)]
                .map(|call| format!("{} {ident}", call.export())),
            ident,
            compiled: ArcSwap::from_pointee(compiled),
            runtime: runtime.clone(),
            host,
            options,
            shape: PoolShape { size, ..shape },
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            quick_alive: AtomicUsize::new(if quick { size } else { 0 }),
            long,
            init_as,
        };
        let pool = Arc::new(pool);
        if quick {
            optimise_behind(&pool);
        }
        Ok((pool, manifest))
    }

    /// True while any of its instances runs Winch's code (quick start).
    pub fn is_quick(&self) -> bool {
        self.quick_alive.load(Ordering::SeqCst) > 0
    }

    /// How many instances the pool keeps.
    pub fn size(&self) -> usize {
        self.shape.size
    }

    /// Calls `handle` (or `observe`) with `msg` on a leased instance within `ctx.deadline`. A guest that
    /// computes for long yields at every epoch tick behind the work already waiting, and at
    /// most [`Runtime::long_calls_per_plugin`] calls of this plugin compute past their first
    /// tick at once, so one plugin never holds every async worker.
    pub async fn call(
        self: &Arc<Self>,
        call: Call,
        msg: String,
        mut ctx: CallCtx,
        prior: Option<Arc<dyn Handler>>,
        pattern: &str,
    ) -> Result<String, ActError> {
        let held = ctx.held.iter().filter(|id| **id == self.id).count();
        if held >= self.shape.size {
            return Err(ActError::host(
                Code::ActReentrant,
                format!(
                    "{pattern} is served by {}, whose {} instance(s) are all busy further up this call chain \
                     (tx {}); a component cannot be re-entered. Raise `instances` for this plugin or call \
                     the function directly instead of acting it.",
                    self.ident, self.shape.size, ctx.tx
                ),
            ));
        }
        let deadline = ctx.deadline;
        let timeout_after = ctx.timeout();
        let timeout = || ActError::timeout(pattern, timeout_after);
        // An idle instance is the common case: take it without arming a timer.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let acquire = self.permits.clone().acquire_owned();
                match within(deadline, &self.runtime, acquire).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => {
                        return Err(ActError::host(
                            Code::Closed,
                            format!("{} is unloading", self.ident),
                        ));
                    }
                    Err(stop) => return Err(stop.error(timeout)),
                }
            }
        };
        if self.runtime.is_interrupted() {
            return Err(Stop::Interrupted.error(timeout));
        }
        let instance = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(instance) = instance else {
            return Err(ActError::host(
                Code::PluginTrap,
                format!("{} has no instance available", self.ident),
            ));
        };
        ctx.held.push(self.id);
        let mut lease = Lease {
            pool: self.clone(),
            instance: Some(instance),
            permit: Some(permit),
            replace: Some("cancelled"),
        };
        let Some(instance) = lease.instance.as_mut() else {
            unreachable!("just set")
        };
        let span = span!(
            match call {
                Call::Handle(_) => self.span_names[0].clone(),
                Call::Observe(_) => self.span_names[1].clone(),
            },
            Internal,
            KeyValue::new("wasmeca.plugin", self.ident.clone()),
            KeyValue::new("seneca.pattern", pattern.to_owned()),
        );
        let call = instance.handle(call, &msg, Frame { ctx, prior });
        let outcome = telemetry::inside!(&span, within(deadline, &self.runtime, call));
        let answer = match outcome {
            Ok(Outcome::Returned(Ok(answer)))
                if answer.len() > self.runtime.limits().max_result =>
            {
                lease.replace = lease.grown();
                Err(ActError::host(
                    Code::ResultTooLarge,
                    format!(
                        "{pattern} ({}) answered {} bytes; the limit is {} ([limits] max_result_bytes)",
                        self.ident,
                        answer.len(),
                        self.runtime.limits().max_result
                    ),
                ))
            }
            Ok(Outcome::Returned(answer)) => {
                lease.replace = lease.grown();
                answer
            }
            Ok(Outcome::Trapped(_)) if self.runtime.is_interrupted() => {
                lease.replace = Some("interrupted");
                Err(Stop::Interrupted.error(timeout))
            }
            Ok(Outcome::Trapped(e)) => {
                lease.replace = Some("trap");
                Err(e)
            }
            Err(stop) => {
                lease.replace = Some(stop.reason());
                Err(stop.error(timeout))
            }
        };
        if let Err(e) = &answer {
            span.fail(e);
        }
        answer
    }

    /// A new instance of `compiled`, initialised as the plugin.
    async fn fresh(&self, compiled: &Compiled) -> Result<Instance, LoadError> {
        let ctx = CallCtx::root(
            crate::message::new_id().into(),
            Instant::now() + self.shape.init_timeout,
        )
        .acting_as(self.init_as.clone());
        let made = instantiate(
            &self.runtime,
            compiled,
            self.host.clone(),
            self.long.clone(),
            &self.options,
            ctx,
        );
        made.await.map(|(instance, _)| instance)
    }

    /// Makes a replacement instance in the background for one replaced for `reason` (counted
    /// in the host's metrics); its permit is released when it is idle.
    fn respawn(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>, reason: &'static str) {
        if let Some(host) = self.host.upgrade() {
            host.replaced(&self.ident, reason);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        handle.spawn(async move {
            match pool.fresh(&pool.compiled.load_full()).await {
                Ok(instance) => {
                    if instance.is_quick() {
                        pool.quick_alive.fetch_add(1, Ordering::SeqCst);
                    }
                    pool.idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(instance);
                    drop(permit);
                }
                Err(e) => {
                    tracing::error!(
                        plugin = &*pool.ident,
                        "cannot replace a failed instance: {e}"
                    );
                    if let Some(p) = permit {
                        p.forget();
                    }
                }
            }
        });
    }

    /// Moves the pool onto Cranelift's code: replacements are made from it from now on, and
    /// each instance on Winch's is swapped, once it is found idle, for an instance of the
    /// optimised code made beforehand, so the pool never serves with fewer. If such an instance
    /// cannot be made, the pool stays on Winch's code.
    async fn upgrade(pool: Weak<Self>, optimised: Compiled) {
        let optimised = Arc::new(optimised);
        let Some(quick) = pool.upgrade().map(|p| p.compiled.swap(optimised.clone())) else {
            return;
        };
        let mut made = None;
        while let Some(pool) = pool.upgrade() {
            if pool.quick_alive.load(Ordering::SeqCst) == 0 {
                tracing::info!(plugin = &*pool.ident, "moved onto the optimised code");
                return;
            }
            let fresh = match made.take() {
                Some(fresh) => fresh,
                None => match pool.fresh(&optimised).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        pool.compiled.store(quick);
                        tracing::warn!(
                            plugin = &*pool.ident,
                            "stays on the baseline compiler's code: its optimised instance did \
                             not start: {e}"
                        );
                        return;
                    }
                },
            };
            // A permit stands for an idle instance: holding one, an idle instance is ours.
            let Ok(permit) = pool.permits.clone().acquire_owned().await else {
                return;
            };
            let swapped = {
                let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                match idle.iter().position(Instance::is_quick) {
                    Some(at) => Ok(std::mem::replace(&mut idle[at], fresh)),
                    None => Err(fresh),
                }
            };
            drop(permit);
            match swapped {
                Ok(stale) => {
                    drop(stale);
                    pool.quick_alive.fetch_sub(1, Ordering::SeqCst);
                    if let Some(host) = pool.host.upgrade() {
                        host.replaced(&pool.ident, "optimised");
                    }
                }
                Err(fresh) => {
                    // The ones on Winch's code are busy: look again once calls have ended.
                    made = Some(fresh);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// Compiles Cranelift's code for a pool started on Winch's, once the host has stopped loading
/// plugins ([`Runtime::turn_to_optimise`]), and moves the pool onto it ([`Pool::upgrade`]); a
/// pool unloaded meanwhile is left alone. The compile runs on a thread of its own rather than
/// tokio's blocking pool, which a runtime waits for when it shuts down: a host told to stop
/// does not wait for an optimisation it will never use (the cache is written whole or not at
/// all).
fn optimise_behind(pool: &Arc<Pool>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (pool, runtime) = (Arc::downgrade(pool), pool.runtime.clone());
    handle.spawn(async move {
        let turn = runtime.turn_to_optimise().await;
        let Some(compiled) = pool.upgrade().map(|p| p.compiled.load_full()) else {
            return;
        };
        let file = compiled.path.display().to_string();
        let (done, optimised) = tokio::sync::oneshot::channel();
        let compiling = runtime.clone();
        let started = std::thread::Builder::new()
            .name("wasmeca-optimise".into())
            .spawn(move || {
                let _ = done.send(compiling.optimise(&compiled));
            });
        if let Err(e) = started {
            tracing::warn!(
                file,
                "stays on the baseline compiler's code: no thread to compile: {e}"
            );
            return;
        }
        let optimised = optimised.await;
        // The next plugin's compile may start while this one's instances move.
        drop(turn);
        match optimised {
            Ok(Some(Ok(optimised))) => Pool::upgrade(pool, optimised).await,
            Ok(Some(Err(e))) => {
                tracing::warn!(file, "stays on the baseline compiler's code: {e}");
            }
            Ok(None) | Err(_) => {}
        }
    });
}

/// Runs `fut` until `deadline` or the runtime's interrupt. Unlike `tokio::time::timeout` it
/// arms nothing for a call that completes on its first poll (the common case: a plugin
/// answering without waiting), so fast calls never touch the timer wheel. A plugin that
/// computes for long yields at every epoch tick, which is when the timer gets armed.
async fn within<F: Future>(
    deadline: Instant,
    runtime: &Runtime,
    fut: F,
) -> Result<F::Output, Stop> {
    let mut fut = std::pin::pin!(fut);
    let mut waits = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let (sleep, interrupt) = waits.get_or_insert_with(|| {
            (
                Box::pin(tokio::time::sleep_until(deadline)),
                Box::pin(runtime.interrupted()),
            )
        });
        if interrupt.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Stop::Interrupted));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Stop::Deadline))
    })
    .await
}

/// Why a guest call was cut short.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Its deadline passed.
    Deadline,
    /// The host interrupted every call (shutdown's drain timeout).
    Interrupted,
}

impl Stop {
    /// Why the instance is replaced, as the metrics say it.
    fn reason(self) -> &'static str {
        match self {
            Self::Deadline => "timeout",
            Self::Interrupted => "interrupted",
        }
    }

    /// The error the caller gets: `action_timeout`, or `closed`.
    fn error(self, timeout: impl FnOnce() -> ActError) -> ActError {
        match self {
            Self::Deadline => timeout(),
            Self::Interrupted => ActError::host(
                Code::Closed,
                "the host is shutting down and interrupted the call",
            ),
        }
    }
}

/// An instance checked out of its pool. Dropping it returns a clean instance, or replaces one
/// that trapped, timed out or whose call was cancelled mid-way.
struct Lease {
    /// The owner.
    pool: Arc<Pool>,
    /// The instance, taken back on drop.
    instance: Option<Instance>,
    /// Released after the instance is back (or its replacement is).
    permit: Option<OwnedSemaphorePermit>,
    /// Why the instance is replaced rather than reused: `None` once the call returned
    /// normally; `cancelled` until then (a caller that goes away drops the call mid-way).
    replace: Option<&'static str>,
}

impl Lease {
    /// For an instance that answered: `growth` when its memory grew past
    /// [`PoolShape::replace_after_growth`] during the call, which only a replacement gives
    /// back; else `None`, and it goes back to the pool.
    fn grown(&self) -> Option<&'static str> {
        let instance = self.instance.as_ref()?;
        let (grew, bound) = (instance.grew(), self.pool.shape.replace_after_growth);
        if bound == 0 || grew <= bound {
            return None;
        }
        tracing::info!(
            plugin = &*self.pool.ident,
            "an instance grew {} MiB in one call; replacing it to give that memory back \
             (replace_after_growth_mib = {})",
            grew >> 20,
            bound >> 20
        );
        Some("growth")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match (self.instance.take(), self.replace) {
            (Some(instance), None) => {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(instance);
            }
            (instance, reason) => {
                if instance.as_ref().is_some_and(Instance::is_quick) {
                    self.pool.quick_alive.fetch_sub(1, Ordering::SeqCst);
                }
                self.pool
                    .respawn(self.permit.take(), reason.unwrap_or("cancelled"));
            }
        }
    }
}
