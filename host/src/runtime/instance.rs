//! One plugin instance: its store (WASI with nothing granted, the memory cap, the frame of the
//! call in progress), instantiating it and running one call on it.

// The generated bindings take JSON as `&String`, so the values passed through are `String`s.
#![allow(clippy::ptr_arg)]

use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{Manifest, current, v0_1};
use super::calls::{CallCtx, Frame, Handler, Upcalls};
use super::log::LogStream;
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
    /// Linear memory the instance has now, in bytes (every memory of the component): what a
    /// call grew it by decides whether the instance is kept afterwards.
    memory: usize,
    /// Set when a memory grow was refused, so the trap that follows is reported as such.
    out_of_memory: bool,
    /// The panic message a Rust guest logged before trapping, if any.
    pub(super) panic: Option<String>,
    /// Whoever answers the guest's nested acts; weak so instances never keep the host alive.
    pub(super) host: Weak<dyn Upcalls>,
    /// The call in progress.
    pub(super) frame: Option<Frame>,
    /// The plugin's turn to run long, as the call holds it: given back while the guest waits
    /// on the host (a nested act, `prior`, a publish), so a nested call of the same plugin can
    /// take it instead of waiting for a caller that waits for it.
    pub(super) turn: Turn,
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
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory += desired.saturating_sub(current);
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

impl Call {
    /// The guest export it calls.
    pub fn export(self) -> &'static str {
        match self {
            Self::Handle(_) => "handle",
            Self::Observe(_) => "observe",
        }
    }
}

/// One live instance: its store and its exports.
pub(super) struct Instance {
    /// The store: memory, tables, and [`State`].
    store: Store<State>,
    /// Typed access to the exports.
    plugin: Exports,
    /// Whose epoch thread must tick while this instance's guest code runs.
    runtime: Runtime,
    /// How many bytes of linear memory the last call added: the pool replaces an instance
    /// that one call grew by much, since the memory cannot be given back otherwise.
    grew: usize,
    /// Runs Winch's code (quick start): the pool replaces it once Cranelift's is ready.
    quick: bool,
}

/// A plugin's turn to run long, held by an instance's call from its first epoch tick to its
/// end, except while its guest waits on the host. Shared with the store's epoch callback, which
/// takes it.
#[derive(Clone, Default)]
pub(super) struct Turn(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

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
    pub(super) fn release(&self) {
        self.take(None);
    }
}

/// What a plugin answered, or how it failed.
pub(super) enum Outcome {
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
        host: Weak<dyn Upcalls>,
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
            memory_limit: runtime.limits().memory,
            memory: 0,
            out_of_memory: false,
            panic: None,
            host,
            frame: None,
            turn: Turn::default(),
        };
        let holding = state.turn.clone();
        let mut store = Store::new(compiled.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
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
            runtime: runtime.clone(),
            grew: 0,
            quick: compiled.is_quick(),
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
        self.store.data().turn.release();
        self.store.data_mut().frame = None;
        out
    }

    /// How many bytes of linear memory the last call added.
    pub(super) fn grew(&self) -> usize {
        self.grew
    }

    /// True while it runs Winch's code (quick start).
    pub(super) fn is_quick(&self) -> bool {
        self.quick
    }

    /// Runs `handle` for one message, or `observe` for one event.
    pub(super) async fn handle(&mut self, call: Call, msg: &String, frame: Frame) -> Outcome {
        let state = self.store.data_mut();
        state.frame = Some(frame);
        state.panic = None;
        state.out_of_memory = false;
        let before = state.memory;
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
        let state = self.store.data_mut();
        state.turn.release();
        self.grew = state.memory - before;
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
pub fn no_host() -> Weak<dyn Upcalls> {
    Weak::<Nobody>::new()
}

/// The type behind [`no_host`]; never instantiated.
struct Nobody;

impl Upcalls for Nobody {
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

    fn replaced(&self, _plugin: &str, _reason: &'static str) {
        unreachable!("a dangling Weak never upgrades")
    }
}

/// Creates an instance of `compiled` and runs its `init`.
pub(super) async fn instantiate(
    runtime: &Runtime,
    compiled: &Compiled,
    host: Weak<dyn Upcalls>,
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
