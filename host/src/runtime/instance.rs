//! Plugin instances: the per-instance store (WASI with nothing granted, the memory cap, the
//! frame of the call in progress), and the pool that
//! leases long-lived instances to calls and replaces any that trap or time out.

// The generated bindings take JSON as `&String`, so the values passed through are `String`s.
#![allow(clippy::ptr_arg)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings;
use super::bindings::wasmeca::plugin::types;
use super::host::{CallCtx, Frame, Handler, Host, LogStream, from_wit};
use super::{Compiled, LoadError, Runtime};
use crate::error::{ActError, Code};

/// Store data of one instance.
pub(crate) struct State {
    /// WASI context with nothing granted: no files, no environment, no sockets.
    wasi: WasiCtx,
    /// WASI's resource table.
    table: ResourceTable,
    /// `name@version` (the file name until `init` answers), for logs and errors.
    pub(super) ident: Arc<str>,
    /// Linear memory cap, in bytes.
    memory_limit: usize,
    /// Set when a memory grow was refused, so the trap that follows is reported as such.
    out_of_memory: bool,
    /// The panic message a Rust guest logged before trapping, if any.
    pub(super) panic: Option<String>,
    /// Whoever answers the guest's nested acts; weak so instances never keep the host alive.
    pub(super) host: Weak<dyn Host>,
    /// The call in progress.
    pub(super) frame: Option<Frame>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.out_of_memory = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// One live instance: its store and its exports.
struct Instance {
    /// The store: memory, tables, and [`State`].
    store: Store<State>,
    /// Typed access to the exports.
    plugin: bindings::Plugin,
}

/// What a plugin answered, or how it failed.
enum Outcome {
    /// The export returned (an answer or the plugin's own error).
    Returned(Result<String, types::Error>),
    /// The instance trapped; it is unusable.
    Trapped(ActError),
}

impl Instance {
    /// Creates and links an instance (not yet initialised).
    async fn new(
        runtime: &Runtime,
        compiled: &Compiled,
        ident: Arc<str>,
        host: Weak<dyn Host>,
    ) -> wasmtime::Result<Self> {
        let wasi = WasiCtxBuilder::new()
            .stdout(LogStream {
                ident: ident.clone(),
                stderr: false,
            })
            .stderr(LogStream {
                ident: ident.clone(),
                stderr: true,
            })
            .build();
        let state = State {
            wasi,
            table: ResourceTable::new(),
            ident,
            memory_limit: runtime.memory_limit(),
            out_of_memory: false,
            panic: None,
            host,
            frame: None,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        let plugin = compiled.pre.instantiate_async(&mut store).await?;
        Ok(Self { store, plugin })
    }

    /// Runs `init`; the frame gives acts made during init a context.
    async fn init(
        &mut self,
        options: &String,
        ctx: CallCtx,
    ) -> wasmtime::Result<Result<types::Manifest, types::Error>> {
        self.store.data_mut().frame = Some(Frame { ctx, prior: None });
        self.store.set_epoch_deadline(1);
        let out = self
            .plugin
            .wasmeca_plugin_guest()
            .call_init(&mut self.store, options)
            .await;
        self.store.data_mut().frame = None;
        out
    }

    /// Runs `handle` for one message.
    async fn handle(&mut self, action: u32, msg: &String, frame: Frame) -> Outcome {
        let state = self.store.data_mut();
        state.frame = Some(frame);
        state.panic = None;
        state.out_of_memory = false;
        self.store.set_epoch_deadline(1);
        let out = self
            .plugin
            .wasmeca_plugin_guest()
            .call_handle(&mut self.store, action, msg)
            .await;
        let state = self.store.data_mut();
        let frame = state.frame.take();
        match out {
            Ok(answer) => Outcome::Returned(answer),
            Err(trap) => {
                let tx = frame.as_ref().map_or("-", |f| &*f.ctx.tx);
                tracing::error!(plugin = &*state.ident, tx, "plugin trapped: {trap:?}");
                let what = if state.out_of_memory {
                    format!(
                        "ran out of memory (limit {} MiB)",
                        state.memory_limit / (1024 * 1024)
                    )
                } else if let Some(panic) = &state.panic {
                    format!(
                        "panicked ({})",
                        panic.lines().last().unwrap_or("no message")
                    )
                } else {
                    "trapped".to_owned()
                };
                Outcome::Trapped(ActError::host(
                    Code::PluginTrap,
                    format!(
                        "plugin {} {what}; the instance was replaced (details in the host log, tx {tx})",
                        state.ident
                    ),
                ))
            }
        }
    }
}

/// An instance of a plugin, created and initialised outside any pool: what benchmarks use as
/// the "raw component call" baseline.
pub struct RawInstance {
    /// The instance.
    instance: Instance,
}

impl RawInstance {
    /// Instantiates and initialises `compiled` with `options` (JSON); returns the manifest's
    /// `name@version` too.
    pub async fn new(
        runtime: &Runtime,
        compiled: &Compiled,
        options: &String,
    ) -> Result<(Self, String), LoadError> {
        let ctx = CallCtx::root(
            crate::message::new_id().into(),
            Instant::now() + std::time::Duration::from_secs(60),
        );
        let (instance, manifest) = instantiate(runtime, compiled, no_host(), options, ctx).await?;
        Ok((
            Self { instance },
            format!("{}@{}", manifest.name, manifest.version),
        ))
    }

    /// Calls `handle` directly: no routing, no pool, no deadline.
    pub async fn handle(&mut self, action: u32, msg: &String) -> Result<String, ActError> {
        let ctx = CallCtx::root(
            "raw".into(),
            Instant::now() + std::time::Duration::from_secs(60),
        );
        match self
            .instance
            .handle(action, msg, Frame { ctx, prior: None })
            .await
        {
            Outcome::Returned(answer) => answer.map_err(from_wit),
            Outcome::Trapped(e) => Err(e),
        }
    }
}

/// A host handle that never upgrades: nested acts of instances given it answer `closed` (a
/// [`RawInstance`], a plugin loaded before any router exists).
pub fn no_host() -> Weak<dyn Host> {
    Weak::<Nobody>::new()
}

/// The type behind [`no_host`]; never instantiated.
struct Nobody;

impl Host for Nobody {
    fn act<'a>(
        &'a self,
        _msg: crate::message::Message,
        _parent: &'a CallCtx,
    ) -> super::BoxFuture<'a, Result<crate::message::Reply, ActError>> {
        unreachable!("a dangling Weak never upgrades")
    }

    fn prior<'a>(
        &'a self,
        _prior: Option<&'a Arc<dyn Handler>>,
        _msg: crate::message::Message,
        _parent: &'a CallCtx,
    ) -> super::BoxFuture<'a, Result<crate::message::Reply, ActError>> {
        unreachable!("a dangling Weak never upgrades")
    }
}

/// Creates an instance of `compiled` and runs its `init`.
async fn instantiate(
    runtime: &Runtime,
    compiled: &Compiled,
    host: Weak<dyn Host>,
    options: &String,
    ctx: CallCtx,
) -> Result<(Instance, types::Manifest), LoadError> {
    let path = || compiled.path.to_path_buf();
    let file_name = compiled
        .path
        .file_name()
        .map_or_else(|| "plugin".into(), |n| n.to_string_lossy());
    let deadline = ctx.deadline;
    let mut instance = Instance::new(runtime, compiled, file_name.into(), host)
        .await
        .map_err(|e| LoadError::Trap {
            path: path(),
            detail: format!("{e:#}"),
        })?;
    let init = tokio::time::timeout_at(deadline, instance.init(options, ctx))
        .await
        .map_err(|_| LoadError::Trap {
            path: path(),
            detail: "init did not return within its deadline".into(),
        })?;
    match init {
        Ok(Ok(manifest)) => {
            instance.store.data_mut().ident =
                format!("{}@{}", manifest.name, manifest.version).into();
            Ok((instance, manifest))
        }
        Ok(Err(error)) => Err(LoadError::Init {
            path: path(),
            error: from_wit(error),
        }),
        Err(trap) => Err(LoadError::Trap {
            path: path(),
            detail: format!("{trap:#}"),
        }),
    }
}

/// Source of pool ids, which call chains use to detect re-entry.
static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// The long-lived instances of one `name@version`: each call leases one; state survives
/// between calls; an instance that traps or times out is replaced in the background.
pub struct Pool {
    /// Identifies the pool in call chains.
    id: u64,
    /// `name@version`.
    ident: Arc<str>,
    /// What new instances are made from.
    compiled: Compiled,
    /// The engine and linker.
    runtime: Runtime,
    /// Given to new instances for their nested acts.
    host: Weak<dyn Host>,
    /// `init` options (JSON) for replacement instances.
    options: Arc<String>,
    /// How many instances the pool keeps.
    size: usize,
    /// Instances not running a call.
    idle: Mutex<Vec<Instance>>,
    /// One permit per idle instance: waiting for a permit is waiting for an instance.
    permits: Arc<Semaphore>,
    /// Turns to run long on the guest threads: a plugin's calls that compute for long take
    /// at most this many of them at once.
    long: Arc<Semaphore>,
    /// The default init deadline for replacements.
    init_timeout: std::time::Duration,
}

impl Pool {
    /// Instantiates the first instance to read the manifest, then fills the pool to `size`.
    pub async fn start(
        runtime: &Runtime,
        compiled: Compiled,
        host: Weak<dyn Host>,
        options: Arc<String>,
        size: usize,
        init_timeout: std::time::Duration,
    ) -> Result<(Arc<Self>, types::Manifest), LoadError> {
        let size = size.max(1);
        let ctx = || {
            CallCtx::root(
                crate::message::new_id().into(),
                Instant::now() + init_timeout,
            )
        };
        let (first, manifest) =
            instantiate(runtime, &compiled, host.clone(), &options, ctx()).await?;
        let ident: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        let mut idle = vec![first];
        for index in 1..size {
            let (instance, other) =
                instantiate(runtime, &compiled, host.clone(), &options, ctx()).await?;
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
        let pool = Self {
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            ident,
            compiled,
            runtime: runtime.clone(),
            host,
            options,
            size,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            long: Arc::new(Semaphore::new(runtime.long_calls_per_plugin())),
            init_timeout,
        };
        Ok((Arc::new(pool), manifest))
    }

    /// How many instances the pool keeps.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Calls `handle(action, msg)` on a leased instance within `ctx.deadline`. The call runs on
    /// the caller's task until the guest first yields (an epoch tick, 2 ms of computing, or a
    /// nested act that waits); then it moves to the guest threads, where at most
    /// [`Runtime::long_calls_per_plugin`] calls of this plugin run at once, so a plugin that
    /// computes for long never holds the async workers other requests need.
    pub async fn call(
        self: &Arc<Self>,
        action: u32,
        msg: String,
        mut ctx: CallCtx,
        prior: Option<Arc<dyn Handler>>,
        pattern: &str,
    ) -> Result<String, ActError> {
        let held = ctx.held.iter().filter(|id| **id == self.id).count();
        if held >= self.size {
            return Err(ActError::host(
                Code::ActReentrant,
                format!(
                    "{pattern} is served by {}, whose {} instance(s) are all busy further up this call chain \
                     (tx {}); a component cannot be re-entered. Raise `instances` for this plugin or call \
                     the function directly instead of acting it.",
                    self.ident, self.size, ctx.tx
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
                match self.until(deadline, acquire).await {
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
        let lease = Lease {
            pool: self.clone(),
            instance: Some(instance),
            permit: Some(permit),
            clean: false,
        };
        let mut call: GuestCall = Box::pin(run(lease, action, msg, Frame { ctx, prior }));
        // Most calls answer on their first poll: no timer, no task, no thread change.
        let first = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let outcome = match first {
            Some(outcome) => Ok(outcome),
            None => self.offload(call, deadline).await,
        };
        match outcome {
            Ok(Outcome::Returned(answer)) => answer.map_err(from_wit),
            Ok(Outcome::Trapped(e)) => Err(e),
            Err(stop) => {
                tracing::warn!(
                    plugin = &*self.ident,
                    "{pattern} {}; replacing the instance",
                    match stop {
                        Stop::Deadline => "timed out",
                        Stop::Interrupted => "was interrupted by the shutdown",
                    }
                );
                Err(stop.error(timeout))
            }
        }
    }

    /// Runs `fut` until `deadline` or the runtime's interrupt, whichever comes first.
    async fn until<F: Future>(&self, deadline: Instant, fut: F) -> Result<F::Output, Stop> {
        tokio::select! {
            out = fut => Ok(out),
            () = tokio::time::sleep_until(deadline) => Err(Stop::Deadline),
            () = self.runtime.interrupted() => Err(Stop::Interrupted),
        }
    }

    /// Finishes a call that yielded on the guest threads, under the per-plugin bound on long
    /// calls; it is aborted (and its instance replaced) at the deadline or the interrupt.
    async fn offload(&self, call: GuestCall, deadline: Instant) -> Result<Outcome, Stop> {
        let long = self.long.clone();
        let task = self.runtime.guests().spawn(async move {
            // Closed only with the pool; then the call goes on without the bound.
            let _turn = long.acquire_owned().await;
            call.await
        });
        let mut task = AbortOnDrop(task);
        match self.until(deadline, &mut task.0).await? {
            Ok(outcome) => Ok(outcome),
            // The guest task panicked or was cancelled: a trap as far as the caller knows.
            Err(join) => Ok(Outcome::Trapped(ActError::host(
                Code::PluginTrap,
                format!("{} failed: {join}", self.ident),
            ))),
        }
    }

    /// Makes a replacement instance in the background; its permit is released when it is idle.
    fn respawn(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.clone();
        handle.spawn(async move {
            let ctx = CallCtx::root(
                crate::message::new_id().into(),
                Instant::now() + pool.init_timeout,
            );
            match instantiate(
                &pool.runtime,
                &pool.compiled,
                pool.host.clone(),
                &pool.options,
                ctx,
            )
            .await
            {
                Ok((instance, _)) => {
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
}

/// A guest call that owns its instance, so it can move to the guest threads.
type GuestCall = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs `handle` on a leased instance; the lease goes back to the pool clean only when the
/// guest returned (a trap, or the call dropped mid-way, replaces the instance).
async fn run(mut lease: Lease, action: u32, msg: String, frame: Frame) -> Outcome {
    let Some(instance) = lease.instance.as_mut() else {
        unreachable!("a lease holds its instance until dropped")
    };
    let outcome = instance.handle(action, &msg, frame).await;
    lease.clean = matches!(outcome, Outcome::Returned(_));
    outcome
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

/// Aborts a spawned guest call when its caller stops waiting for it.
struct AbortOnDrop(tokio::task::JoinHandle<Outcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    /// True once the call returned normally, so the instance is reusable.
    clean: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.instance.take() {
            Some(instance) if self.clean => {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(instance);
            }
            _ => self.pool.respawn(self.permit.take()),
        }
    }
}
