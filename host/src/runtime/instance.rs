//! Plugin instances: the per-instance store (WASI with nothing granted, the memory cap, the
//! frame of the call in progress), the `wasmeca:plugin/host` imports, and the pool that leases
//! long-lived instances to calls and replaces any that trap or time out.

// The generated bindings take JSON as `&String`, so the values passed through are `String`s.
#![allow(clippy::ptr_arg)]

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings;
use super::bindings::wasmeca::plugin::{host, types};
use super::{Compiled, LoadError, Runtime};
use crate::message::{ActError, Message, codes};
use crate::plugins::Target;
use crate::router::{CallCtx, WeakRouter};

/// The frame of the call an instance is running: where nested acts and `prior` come from.
pub(crate) struct Frame {
    /// The caller's context with this instance's pool added to `held`.
    pub ctx: CallCtx,
    /// The action the running action overrode, for `prior`.
    pub prior: Option<Target>,
}

/// Store data of one instance.
pub(crate) struct State {
    /// WASI context with nothing granted: no files, no environment, no sockets.
    wasi: WasiCtx,
    /// WASI's resource table.
    table: ResourceTable,
    /// `name@version` (the file name until `init` answers), for logs and errors.
    ident: Arc<str>,
    /// Linear memory cap, in bytes.
    memory_limit: usize,
    /// Set when a memory grow was refused, so the trap that follows is reported as such.
    out_of_memory: bool,
    /// The panic message a Rust guest logged before trapping, if any.
    panic: Option<String>,
    /// Back to the router for nested acts; weak so instances never keep the host alive.
    router: WeakRouter,
    /// The call in progress.
    frame: Option<Frame>,
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

impl types::Host for State {}

impl host::Host for State {
    async fn act(&mut self, msg: String) -> Result<String, types::Error> {
        let Some(router) = self.router.upgrade() else {
            return Err(to_wit(&ActError::new(
                codes::CLOSED,
                "the host is shutting down",
            )));
        };
        let msg = parse_object(&msg).map_err(|e| to_wit(&e))?;
        let parent = self.frame.as_ref().map(|f| f.ctx.clone());
        let result = Box::pin(router.act_with(msg, parent.as_ref())).await;
        result
            .map(|r| r.as_str().to_owned())
            .map_err(|e| to_wit(&e))
    }

    async fn prior(&mut self, msg: String) -> Result<String, types::Error> {
        let Some(router) = self.router.upgrade() else {
            return Err(to_wit(&ActError::new(
                codes::CLOSED,
                "the host is shutting down",
            )));
        };
        let msg = parse_object(&msg).map_err(|e| to_wit(&e))?;
        let Some(frame) = self.frame.as_ref() else {
            return Err(to_wit(&ActError::new(
                codes::INVALID_MESSAGE,
                "prior called outside of handle",
            )));
        };
        let (ctx, prior) = (frame.ctx.clone(), frame.prior.clone());
        let result = Box::pin(router.call_prior(prior, msg, &ctx)).await;
        result
            .map(|r| r.as_str().to_owned())
            .map_err(|e| to_wit(&e))
    }

    async fn log(&mut self, level: types::Level, text: String) {
        let plugin = &*self.ident;
        let tx = self.frame.as_ref().map_or("-", |f| &*f.ctx.tx);
        match level {
            types::Level::Trace => tracing::trace!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            types::Level::Debug => tracing::debug!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            types::Level::Info => tracing::info!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            types::Level::Warn => tracing::warn!(target: "wasmeca::plugin", plugin, tx, "{text}"),
            types::Level::Error => {
                tracing::error!(target: "wasmeca::plugin", plugin, tx, "{text}");
                if text.starts_with("panicked at") {
                    self.panic = Some(text);
                }
            }
        }
    }
}

/// Parses a JSON text that must be an object.
fn parse_object(text: &str) -> Result<Message, ActError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Message::new(map)),
        Ok(other) => Err(ActError::new(
            codes::INVALID_MESSAGE,
            format!("a message must be a JSON object, not {}", json_kind(&other)),
        )),
        Err(e) => Err(ActError::new(
            codes::INVALID_MESSAGE,
            format!("the message is not JSON: {e}"),
        )),
    }
}

/// "an array", "a string", ... for messages about JSON values.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An [`ActError`] as the WIT error record.
fn to_wit(e: &ActError) -> types::Error {
    types::Error {
        code: e.code.clone(),
        message: e.message.clone(),
        details: e.details.as_deref().map(Value::to_string),
        status: e.status,
    }
}

/// A WIT error record from a plugin as an [`ActError`]; details that are not JSON stay text.
fn from_wit(e: types::Error) -> ActError {
    let details = e
        .details
        .map(|d| Box::new(serde_json::from_str(&d).unwrap_or(Value::String(d))));
    ActError {
        code: e.code,
        message: e.message,
        details,
        status: e.status,
    }
}

/// Plugin output (stdout at info, stderr at warn) as log lines tagged with the plugin.
#[derive(Clone)]
struct LogStream {
    /// `name@version` or file name.
    ident: Arc<str>,
    /// True for stderr.
    stderr: bool,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            stream: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Buffers bytes until a newline, then logs the line.
struct LineWriter {
    /// Where lines go.
    stream: LogStream,
    /// The incomplete last line.
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        if !text.is_empty() {
            let plugin = &*self.stream.ident;
            if self.stream.stderr {
                tracing::warn!(target: "wasmeca::plugin", plugin, stream = "stderr", "{text}");
            } else {
                tracing::info!(target: "wasmeca::plugin", plugin, stream = "stdout", "{text}");
            }
        }
        self.line.clear();
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < 16 * 1024 {
                self.line.push(b);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

/// One live instance: its store and its exports.
pub(crate) struct Instance {
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
        router: WeakRouter,
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
            router,
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
                Outcome::Trapped(ActError::new(
                    codes::PLUGIN_TRAP,
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
        let (instance, manifest) =
            instantiate(runtime, compiled, WeakRouter::none(), options, ctx).await?;
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

/// Creates an instance of `compiled` and runs its `init`.
pub(crate) async fn instantiate(
    runtime: &Runtime,
    compiled: &Compiled,
    router: WeakRouter,
    options: &String,
    ctx: CallCtx,
) -> Result<(Instance, types::Manifest), LoadError> {
    let path = || compiled.path.to_path_buf();
    let file_name = compiled
        .path
        .file_name()
        .map_or_else(|| "plugin".into(), |n| n.to_string_lossy());
    let deadline = ctx.deadline;
    let mut instance = Instance::new(runtime, compiled, file_name.into(), router)
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
pub(crate) struct Pool {
    /// Identifies the pool in call chains.
    id: u64,
    /// `name@version`.
    ident: Arc<str>,
    /// What new instances are made from.
    compiled: Compiled,
    /// The engine and linker.
    runtime: Runtime,
    /// Given to new instances for their nested acts.
    router: WeakRouter,
    /// `init` options (JSON) for replacement instances.
    options: Arc<String>,
    /// How many instances the pool keeps.
    size: usize,
    /// Instances not running a call.
    idle: Mutex<Vec<Instance>>,
    /// One permit per idle instance: waiting for a permit is waiting for an instance.
    permits: Arc<Semaphore>,
    /// The default init deadline for replacements.
    init_timeout: std::time::Duration,
}

impl Pool {
    /// Instantiates the first instance to read the manifest, then fills the pool to `size`.
    pub(crate) async fn start(
        runtime: &Runtime,
        compiled: Compiled,
        router: WeakRouter,
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
            instantiate(runtime, &compiled, router.clone(), &options, ctx()).await?;
        let ident: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        let mut idle = vec![first];
        for index in 1..size {
            let (instance, other) =
                instantiate(runtime, &compiled, router.clone(), &options, ctx()).await?;
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
            router,
            options,
            size,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            init_timeout,
        };
        Ok((Arc::new(pool), manifest))
    }

    /// How many instances the pool keeps.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Calls `handle(action, msg)` on a leased instance within `ctx.deadline`.
    pub(crate) async fn call(
        self: &Arc<Self>,
        action: u32,
        msg: &String,
        mut ctx: CallCtx,
        prior: Option<Target>,
        pattern: &str,
    ) -> Result<String, ActError> {
        let held = ctx.held.iter().filter(|id| **id == self.id).count();
        if held >= self.size {
            return Err(ActError::new(
                codes::ACT_REENTRANT,
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
                match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await
                {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => {
                        return Err(ActError::new(
                            codes::CLOSED,
                            format!("{} is unloading", self.ident),
                        ));
                    }
                    Err(_) => return Err(timeout()),
                }
            }
        };
        let instance = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(instance) = instance else {
            return Err(ActError::new(
                codes::PLUGIN_TRAP,
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
        let outcome = within(deadline, instance.handle(action, msg, Frame { ctx, prior })).await;
        match outcome {
            Ok(Outcome::Returned(answer)) => {
                lease.clean = true;
                answer.map_err(from_wit)
            }
            Ok(Outcome::Trapped(e)) => Err(e),
            Err(_) => {
                tracing::warn!(
                    plugin = &*self.ident,
                    "{pattern} timed out; replacing the instance"
                );
                Err(timeout())
            }
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
                pool.router.clone(),
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

/// Runs `fut` until `deadline`: `Err(())` when it passes first. Unlike `tokio::time::timeout`
/// it arms no timer for a call that completes on its first poll (the common case: a plugin
/// answering without waiting), so fast calls never touch the timer wheel. A plugin that
/// computes for long yields at every epoch tick, which is when the timer gets armed.
async fn within<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| Err(()))
    })
    .await
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
