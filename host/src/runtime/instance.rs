//! Plugin instances: the per-instance store (WASI with nothing granted, the memory cap, the
//! frame of the call in progress), and the pool that
//! leases long-lived instances to calls and replaces any that trap or time out.

// The generated bindings take JSON as `&String`, so the values passed through are `String`s.
#![allow(clippy::ptr_arg)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{Manifest, current, v0_1};
use super::host::{CallCtx, Frame, Handler, Host, LogStream};
use super::{Compiled, LoadError, Pre, Runtime};
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

/// A live instance's exports, by the contract its component implements.
enum Exports {
    /// `wasmeca:plugin@0.2.0`.
    Current(current::Plugin),
    /// `wasmeca:plugin@0.1.0`.
    V0_1(v0_1::Plugin),
}

/// What an instance is asked to run.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// `handle(action, msg)`: answer a message for one of the manifest's actions.
    Handle(u32),
    /// `observe(observer, event)`: handle an event for one of the manifest's observers.
    Observe(u32),
}

/// One live instance: its store and its exports.
struct Instance {
    /// The store: memory, tables, and [`State`].
    store: Store<State>,
    /// Typed access to the exports.
    plugin: Exports,
    /// The turn to run long its current call holds, if it ran past an epoch tick.
    turn: Turn,
    /// Whose epoch thread must tick while this instance's guest code runs.
    runtime: Runtime,
}

/// A plugin's turn to run long, held by an instance's call from its first epoch tick to its
/// end. Shared with the store's epoch callback, which takes it.
#[derive(Clone, Default)]
struct Turn(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Turn {
    /// True while the call holds a turn.
    fn held(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Holds `permit` (none when the pool is gone).
    fn take(&self, permit: Option<OwnedSemaphorePermit>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = permit;
    }

    /// Gives the turn back.
    fn release(&self) {
        self.take(None);
    }
}

/// What a plugin answered, or how it failed.
enum Outcome {
    /// The export returned: an answer (`null` for an observer), or the plugin's own error.
    Returned(Result<String, ActError>),
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
        long: Arc<Semaphore>,
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
        let turn = Turn::default();
        let holding = turn.clone();
        let interrupt = runtime.clone();
        // At every epoch tick a running guest yields behind the work already waiting (tokio's
        // `yield_now`, which also lets the I/O driver run); its first tick takes one of the
        // plugin's turns to run long, waiting for one if they are all taken.
        store.epoch_deadline_callback(move |_| {
            if interrupt.is_interrupted() {
                return Ok(UpdateDeadline::Interrupt);
            }
            if holding.held() {
                return Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ));
            }
            let (long, holding) = (long.clone(), holding.clone());
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    holding.take(long.acquire_owned().await.ok());
                    tokio::task::yield_now().await;
                }),
            ))
        });
        store.set_epoch_deadline(1);
        let _running = runtime.running();
        let plugin = match &compiled.pre {
            Pre::Current(pre) => Exports::Current(pre.instantiate_async(&mut store).await?),
            Pre::V0_1(pre) => Exports::V0_1(pre.instantiate_async(&mut store).await?),
        };
        Ok(Self {
            store,
            plugin,
            turn,
            runtime: runtime.clone(),
        })
    }

    /// Runs `init`; the frame gives acts made during init a context.
    async fn init(
        &mut self,
        options: &String,
        ctx: CallCtx,
    ) -> wasmtime::Result<Result<Manifest, ActError>> {
        self.store.data_mut().frame = Some(Frame { ctx, prior: None });
        self.store.set_epoch_deadline(1);
        let _running = self.runtime.running();
        let out = match &self.plugin {
            Exports::Current(p) => p
                .wasmeca_plugin_guest()
                .call_init(&mut self.store, options)
                .await
                .map(|r| r.map(Manifest::from).map_err(ActError::from)),
            Exports::V0_1(p) => p
                .wasmeca_plugin_guest()
                .call_init(&mut self.store, options)
                .await
                .map(|r| r.map(Manifest::from).map_err(ActError::from)),
        };
        self.turn.release();
        self.store.data_mut().frame = None;
        out
    }

    /// Runs `handle` for one message, or `observe` for one event.
    async fn handle(&mut self, call: Call, msg: &String, frame: Frame) -> Outcome {
        let state = self.store.data_mut();
        state.frame = Some(frame);
        state.panic = None;
        state.out_of_memory = false;
        self.store.set_epoch_deadline(1);
        let _running = self.runtime.running();
        let out = match (&self.plugin, call) {
            (Exports::Current(p), Call::Handle(action)) => p
                .wasmeca_plugin_guest()
                .call_handle(&mut self.store, action, msg)
                .await
                .map(|r| r.map_err(ActError::from)),
            (Exports::Current(p), Call::Observe(observer)) => p
                .wasmeca_plugin_guest()
                .call_observe(&mut self.store, observer, msg)
                .await
                .map(|r| r.map(|()| "null".to_owned()).map_err(ActError::from)),
            (Exports::V0_1(p), Call::Handle(action)) => p
                .wasmeca_plugin_guest()
                .call_handle(&mut self.store, action, msg)
                .await
                .map(|r| r.map_err(ActError::from)),
            (Exports::V0_1(_), Call::Observe(_)) => Ok(Err(ActError::host(
                Code::PluginTrap,
                "a wasmeca:plugin@0.1.0 plugin has no observers",
            ))),
        };
        self.turn.release();
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
        let long = Arc::new(Semaphore::new(1));
        let (instance, manifest) =
            instantiate(runtime, compiled, no_host(), long, options, ctx).await?;
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
            .handle(Call::Handle(action), msg, Frame { ctx, prior: None })
            .await
        {
            Outcome::Returned(answer) => answer,
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
    fn publish<'a>(
        &'a self,
        _event: crate::message::Message,
        _parent: &'a CallCtx,
    ) -> super::BoxFuture<'a, Result<(), ActError>> {
        unreachable!("a dangling Weak never upgrades")
    }

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
    long: Arc<Semaphore>,
    options: &String,
    ctx: CallCtx,
) -> Result<(Instance, Manifest), LoadError> {
    let path = || compiled.path.to_path_buf();
    let file_name = compiled
        .path
        .file_name()
        .map_or_else(|| "plugin".into(), |n| n.to_string_lossy());
    let deadline = ctx.deadline;
    let mut instance = Instance::new(runtime, compiled, file_name.into(), host, long)
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
            error,
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
    /// Turns to run long: at most this many of the plugin's calls compute past their first
    /// epoch tick at once.
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
    ) -> Result<(Arc<Self>, Manifest), LoadError> {
        let size = size.max(1);
        let ctx = || {
            CallCtx::root(
                crate::message::new_id().into(),
                Instant::now() + init_timeout,
            )
        };
        let long = Arc::new(Semaphore::new(runtime.long_calls_per_plugin()));
        let (first, manifest) = instantiate(
            runtime,
            &compiled,
            host.clone(),
            long.clone(),
            &options,
            ctx(),
        )
        .await?;
        let ident: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        let mut idle = vec![first];
        for index in 1..size {
            let (instance, other) = instantiate(
                runtime,
                &compiled,
                host.clone(),
                long.clone(),
                &options,
                ctx(),
            )
            .await?;
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
            long,
            init_timeout,
        };
        Ok((Arc::new(pool), manifest))
    }

    /// How many instances the pool keeps.
    pub fn size(&self) -> usize {
        self.size
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
            clean: false,
        };
        let Some(instance) = lease.instance.as_mut() else {
            unreachable!("just set")
        };
        let call = instance.handle(call, &msg, Frame { ctx, prior });
        let outcome = within(deadline, &self.runtime, call).await;
        match outcome {
            Ok(Outcome::Returned(Ok(answer))) if answer.len() > self.runtime.max_result() => {
                lease.clean = true;
                Err(ActError::host(
                    Code::ResultTooLarge,
                    format!(
                        "{pattern} ({}) answered {} bytes; the limit is {} ([limits] max_result_bytes)",
                        self.ident,
                        answer.len(),
                        self.runtime.max_result()
                    ),
                ))
            }
            Ok(Outcome::Returned(answer)) => {
                lease.clean = true;
                answer
            }
            Ok(Outcome::Trapped(_)) if self.runtime.is_interrupted() => {
                Err(Stop::Interrupted.error(timeout))
            }
            Ok(Outcome::Trapped(e)) => Err(e),
            Err(stop) => Err(stop.error(timeout)),
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
                pool.long.clone(),
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
