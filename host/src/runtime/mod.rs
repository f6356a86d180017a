//! The Wasm component engine: the shared wasmtime `Engine` with epoch interruption (and, for
//! quick start, a second one compiling with Winch), the on-disk compile cache, the compiler
//! processes a host may compile in (`wasmeca compile-behind`), the
//! WASI-with-nothing-granted linker, plugin file validation, and the instances and pools that
//! run guests. It calls up through the [`Upcalls`] trait it defines and
//! never names the router that implements it.

mod bindings;
mod cache;
mod calls;
mod imports;
mod instance;
mod log;
mod pool;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Strategy};

pub use bindings::{Contract, Manifest, ManifestAction};
pub use cache::CompileCache;
pub use calls::{BoxFuture, CallCtx, Handler, Upcalls};
pub use instance::{Call, RawInstance, no_host};
pub use pool::{Pool, PoolShape};

use crate::error::ActError;
use crate::pattern::PatternError;
use bindings::{current, v0_1};
use instance::State;

/// How often the epoch advances: the granularity of deadlines, and how often a busy plugin
/// yields to the async runtime (behind the work already waiting there) so other requests keep
/// flowing.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Ticks without a guest call running after which the epoch thread sleeps (until one starts).
const IDLE_TICKS: u32 = 50;

/// How long no Winch compile must have run before Cranelift's compiles start behind them:
/// longer than the gap between two plugins of one load (an instantiation and an `init`).
const SETTLE: Duration = Duration::from_millis(100);

/// Why a plugin file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("plugin file {path}: not a WebAssembly file (it does not start with `\\0asm`)")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "plugin file {path}: a core WebAssembly module, not a component; build it for \
         wasm32-wasip2, or wrap it with `wasm-tools component new`"
    )]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// wasmtime could not compile the component.
    #[error("plugin file {path}: does not compile: {detail}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation.
        detail: String,
    },
    /// The component does not implement the `wasmeca:plugin` world.
    #[error(
        "plugin file {path}: does not implement the wasmeca:plugin contract (0.2.0, or 0.1.0): {detail}"
    )]
    Contract {
        /// The file.
        path: PathBuf,
        /// Which export or import is missing or has the wrong type.
        detail: String,
    },
    /// `init` returned an error.
    #[error("plugin file {path}: init failed: {error}")]
    Init {
        /// The file.
        path: PathBuf,
        /// The plugin's own error.
        error: ActError,
    },
    /// `init` trapped, or instantiation failed.
    #[error("plugin file {path}: init trapped: {detail}")]
    Trap {
        /// The file.
        path: PathBuf,
        /// The trap.
        detail: String,
    },
    /// Its instances' memory caps would take the host over its memory budget.
    #[error(
        "plugin file {path}: its instances need {needed_mib} MiB of memory caps, and the host has \
         committed {used_mib} of its {budget_mib} MiB budget ([limits] memory_budget_mib)"
    )]
    Budget {
        /// The file.
        path: PathBuf,
        /// What its instances would take, in MiB.
        needed_mib: usize,
        /// What the plugins served already take, in MiB.
        used_mib: usize,
        /// The budget, in MiB.
        budget_mib: usize,
    },
    /// The manifest returned by `init` is not valid.
    #[error("plugin file {path}: invalid manifest: {problem}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: ManifestProblem,
    },
}

/// What can be wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    /// The name is empty or has characters Seneca does not allow in plugin names.
    #[error("name `{0}` must match [a-zA-Z@][a-zA-Z0-9.~_\\-/]*")]
    Name(String),
    /// The version is not semver.
    #[error("version `{version}` is not a semantic version: {reason}")]
    Version {
        /// The version as given.
        version: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A pattern does not parse.
    #[error("action {index}: {error}")]
    Pattern {
        /// Index into the actions list.
        index: usize,
        /// The parse error, with the column.
        error: PatternError,
    },
    /// An observer's pattern does not parse.
    #[error("observer {index}: {error}")]
    Observer {
        /// Index into the observers list.
        index: usize,
        /// The parse error, with the column.
        error: PatternError,
    },
    /// An example is not a JSON object.
    #[error("action {index} (`{pattern}`): example is not a JSON object: {reason}")]
    Example {
        /// Index into the actions list.
        index: usize,
        /// The pattern, for the message.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// The route maps are not valid JSON or not objects.
    #[error("routes: {0}")]
    Routes(String),
    /// A second instance of the same file reported a different identity.
    #[error("instance {index} reported {got}, the first reported {want}")]
    Inconsistent {
        /// Which instance.
        index: usize,
        /// What it reported.
        got: String,
        /// What the first reported.
        want: String,
    },
}

impl LoadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotWasm { path }
            | Self::CoreModule { path }
            | Self::Compile { path, .. }
            | Self::Contract { path, .. }
            | Self::Init { path, .. }
            | Self::Trap { path, .. }
            | Self::Budget { path, .. }
            | Self::Manifest { path, .. } => path,
        }
    }
}

/// A plugin file compiled and linked, ready to instantiate any number of times.
#[derive(Clone)]
pub struct Compiled {
    /// The file it came from.
    pub path: Arc<Path>,
    /// blake3 of the file's bytes, hex: identifies the exact build.
    pub hash: Arc<str>,
    /// Pre-linked component: instantiation without re-resolving imports.
    pre: Pre,
    /// The file's bytes when this is Winch's code (quick start), kept so that Cranelift's is
    /// compiled from the very bytes served, whatever the file holds by then; `None` for
    /// optimised code.
    quick: Option<Arc<[u8]>>,
}

/// A component pre-linked for the contract it implements.
#[derive(Clone)]
enum Pre {
    /// `wasmeca:plugin@0.2.0`.
    Current(current::PluginPre<State>),
    /// `wasmeca:plugin@0.1.0`.
    V0_1(v0_1::PluginPre<State>),
}

impl Compiled {
    /// True for Winch's code, served until [`Runtime::optimise`] has made Cranelift's.
    pub fn is_quick(&self) -> bool {
        self.quick.is_some()
    }

    /// The engine the component was compiled for, whose stores it runs in.
    fn engine(&self) -> &Engine {
        match &self.pre {
            Pre::Current(pre) => pre.engine(),
            Pre::V0_1(pre) => pre.engine(),
        }
    }

    /// The contract the component implements.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::Current(_) => Contract::Current,
            Pre::V0_1(_) => Contract::V0_1,
        }
    }
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish()
    }
}

/// What the epoch thread and the guest calls share. The thread advances the engine's epoch
/// every [`EPOCH_TICK`] while guest code runs (so long calls yield), and sleeps once none has
/// run for [`IDLE_TICKS`] ticks, so an idle host is not woken 500 times a second.
#[derive(Default)]
struct Clock {
    /// Set when the runtime is dropped: the thread ends.
    stop: AtomicBool,
    /// Guest calls running now, each counted by a [`Running`] it holds.
    running: AtomicUsize,
    /// True while the thread sleeps, so a call that starts knows to wake it.
    asleep: AtomicBool,
    /// Guards the sleep, so a wake-up between the thread's last look and its wait is not lost.
    lock: Mutex<()>,
    /// What the sleeping thread waits on.
    wake: Condvar,
    /// Ticks made so far: shows (to the tests) whether the thread sleeps.
    ticks: AtomicU64,
}

impl Clock {
    /// Wakes the thread if it sleeps (after `running` went up, or `stop` was set).
    fn wake_up(&self) {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_one();
    }

    /// The epoch thread's loop: tick (every engine) while calls run, sleep when idle, end on
    /// `stop`.
    fn run(&self, engines: &[Engine]) {
        let mut idle = 0;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(EPOCH_TICK);
            for engine in engines {
                engine.increment_epoch();
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
            if self.running.load(Ordering::SeqCst) > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            let mut held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            // Announced before the last look at `running`: a call that starts after the look
            // sees `asleep` and wakes the thread (both sides use SeqCst).
            self.asleep.store(true, Ordering::SeqCst);
            while self.running.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::SeqCst) {
                held = self.wake.wait(held).unwrap_or_else(PoisonError::into_inner);
            }
            self.asleep.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

/// A guest call running: keeps the epoch thread ticking until dropped.
pub(crate) struct Running<'a>(&'a Clock);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops the epoch thread when the runtime is dropped.
struct Ticker(Arc<Clock>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.wake_up();
    }
}

/// How a host compiles a plugin that has no compiled artifact yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiling {
    /// Quick start: the plugin is served at once from Winch's code while Cranelift's is
    /// compiled behind (on x86-64 only, where Winch is a tier-1 compiler); else it is compiled
    /// optimised before it is served.
    pub quick_start: bool,
    /// The program (the host's own binary, as `compile-behind`) that compiles in processes of
    /// its own, each writing the compiled code to a file the host then loads: the compilers'
    /// memory leaves with those processes, where a host that compiles keeps tens of MB of it
    /// for good. `None`, or a program that cannot be run: the host compiles in its own process.
    pub compiler: Option<PathBuf>,
}

/// Shared state behind [`Runtime`].
struct Inner {
    /// The engine every plugin's optimised code (Cranelift's) is compiled for, and the only one
    /// the compile cache holds artifacts of.
    engine: Engine,
    /// WASI p2 (nothing granted) plus the `wasmeca:plugin/host` imports.
    linker: Linker<State>,
    /// Winch, wasmtime's baseline compiler, when quick start is on: a plugin with no compiled
    /// artifact is served from its code at once while Cranelift compiles it behind, since a
    /// host that waits for Cranelift answers nothing for most of a second.
    quick: Option<Quick>,
    /// When Cranelift may compile behind the quick starts.
    behind: Behind,
    /// Where precompiled components live; `None` compiles in memory every time.
    cache: Option<CompileCache>,
    /// The program that compiles in processes of its own ([`Compiling::compiler`]); `None`
    /// compiles in this process.
    compiler: Option<PathBuf>,
    /// Set once the compiler process did not run or left nothing to load (the cache not
    /// writable, say): from then on this host compiles itself, warned once, rather than
    /// compiling each plugin twice.
    compiler_failed: AtomicBool,
    /// What each instance may use and answer.
    limits: InstanceLimits,
    /// How many calls of one plugin may run long (past their first epoch tick) at once: one
    /// fewer than the CPUs (at least one), so one plugin never holds every async worker.
    long_per_plugin: usize,
    /// Cancelled when the host gives up waiting for calls in flight (shutdown's drain
    /// timeout): every guest call still running ends at its next epoch tick with `closed`.
    interrupt: tokio_util::sync::CancellationToken,
    /// Keeps the epoch thread alive exactly as long as the runtime, and ticking while guest
    /// code runs.
    ticker: Ticker,
}

/// The baseline compiler's own engine and linker (a component runs only in a store of the
/// engine that compiled it).
struct Quick {
    /// An engine configured as the main one but compiling with Winch: several times faster
    /// to compile, into code that runs slower.
    engine: Engine,
    /// The same imports as the main linker, on this engine.
    linker: Linker<State>,
}

/// Quick start's bookkeeping: Cranelift's compiles behind it wait until the host has stopped
/// loading plugins, so as not to slow the Winch compiles whose plugins it is waiting for.
struct Behind {
    /// Winch compiles running now.
    running: AtomicUsize,
    /// When the last Winch compile ended.
    last: Mutex<Option<std::time::Instant>>,
    /// One compile behind at a time: each uses every core already.
    turn: tokio::sync::Semaphore,
}

/// A Winch compile running: counted in [`Behind`] until dropped.
struct QuickCompile<'a>(&'a Behind);

impl<'a> QuickCompile<'a> {
    /// Counts a Winch compile that starts now.
    fn start(behind: &'a Behind) -> Self {
        behind.running.fetch_add(1, Ordering::SeqCst);
        Self(behind)
    }
}

impl Drop for QuickCompile<'_> {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::time::Instant::now());
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An engine as every plugin needs it (components, epoch interruption), compiling with
/// `strategy`.
fn new_engine(strategy: Strategy, perf_map: bool) -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.strategy(strategy);
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if perf_map {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|e| RuntimeError(format!("{e:#}")))
}

/// WASI p2 (nothing granted) and both contracts' host imports, on `engine`.
fn new_linker(engine: &Engine) -> Result<Linker<State>, RuntimeError> {
    let mut linker = Linker::<State>::new(engine);
    let error = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(error)?;
    current::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(error)?;
    v0_1::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).map_err(error)?;
    Ok(linker)
}

/// Returns the memory this thread freed to the OS now, rather than when it next allocates (the
/// allocator's purges are lazy): a refused 100 MB command must not leave an idle host 100 MB
/// larger. mimalloc is the binary's allocator; where it is not, as in tests that link the
/// library alone, this collects mimalloc's unused heaps: nothing.
#[allow(unsafe_code)]
pub fn give_back_memory() {
    // SAFETY: mi_collect takes no pointer and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// A message body this large (bytes) has its memory given back to the OS once it was handled
/// ([`give_back_large`]), by every ingress that receives whole bodies.
pub const LARGE_BODY: usize = 1 << 20;

/// How many times [`give_back_large`] was called: a worker that sees it moved collects once.
static GIVE_BACK_ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The count of [`GIVE_BACK_ASKED`] this thread last collected for.
    static GIVE_BACK_SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// After a large message was handled: gives back what this thread freed now, and has every
/// async worker do the same when it next goes idle ([`give_back_when_asked`]), since a call
/// that moved between workers left some of the message in another worker's heap.
pub fn give_back_large() {
    GIVE_BACK_ASKED.fetch_add(1, Ordering::Relaxed);
    give_back_memory();
}

/// For the async runtime's `on_thread_park`: [`give_back_memory`] once after each
/// [`give_back_large`], else nothing but an atomic load.
pub fn give_back_when_asked() {
    let asked = GIVE_BACK_ASKED.load(Ordering::Relaxed);
    GIVE_BACK_SEEN.with(|seen| {
        if seen.get() != asked {
            seen.set(asked);
            give_back_memory();
        }
    });
}

/// [`give_back_memory`] on this thread and on every thread of rayon's pool, where wasmtime
/// compiles a component's functions: after a compile (not after loading a compiled artifact,
/// which starts no rayon thread), so cranelift's peak does not stay with an idle host for good
/// (those threads never allocate again to purge it).
pub fn give_back_compile_memory() {
    give_back_memory();
    rayon::broadcast(|_| give_back_memory());
}

/// The wasmtime side of the host; cheap to clone.
#[derive(Clone)]
pub struct Runtime(Arc<Inner>);

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm runtime: {0}")]
pub struct RuntimeError(String);

/// The default largest answer a guest may return (8 MiB).
pub const MAX_RESULT_BYTES: usize = 8 << 20;

/// What each plugin instance may use and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Linear memory cap per instance, in bytes: a guest that asks for more traps.
    pub memory: usize,
    /// The largest answer a guest may return, in bytes; larger ones are `result_too_large`.
    pub max_result: usize,
    /// An instance whose memory grew by more than this many bytes during one call is replaced
    /// once it has answered, because WebAssembly memory never shrinks: one large message must
    /// not leave the host that much larger for good. `0` keeps every instance.
    pub replace_after_growth: usize,
}

impl InstanceLimits {
    /// `memory` bytes per instance, the default answer bound, and the default growth.
    pub fn with_memory(memory: usize) -> Self {
        Self {
            memory,
            max_result: MAX_RESULT_BYTES,
            replace_after_growth: REPLACE_AFTER_GROWTH,
        }
    }
}

/// The default growth during one call past which an instance is replaced (16 MiB).
pub const REPLACE_AFTER_GROWTH: usize = 16 << 20;

impl Runtime {
    /// Builds the engine and linker; `cache_dir` enables the on-disk compile cache. Instances
    /// may use up to `memory_limit` bytes of linear memory, under the default limits otherwise.
    /// Every plugin is compiled optimised before it is served (no quick start).
    pub fn new(cache_dir: Option<PathBuf>, memory_limit: usize) -> Result<Self, RuntimeError> {
        Self::with_limits(
            cache_dir,
            InstanceLimits::with_memory(memory_limit),
            false,
            Compiling::default(),
        )
    }

    /// Like [`Runtime::new`], with every instance limit given; with `perf_map`, the plugins'
    /// compiled functions are named in `/tmp/perf-PID.map`, so `perf` can profile a plugin's
    /// own code (as `wasmtime --profile=perfmap` does); `compiling` says how a plugin with no
    /// compiled artifact is compiled to be served ([`Runtime::compile_to_serve`]). A Winch
    /// engine that cannot be made turns quick start off with a warning.
    pub fn with_limits(
        cache_dir: Option<PathBuf>,
        limits: InstanceLimits,
        perf_map: bool,
        compiling: Compiling,
    ) -> Result<Self, RuntimeError> {
        let engine = new_engine(Strategy::Cranelift, perf_map)?;
        let linker = new_linker(&engine)?;
        let Compiling {
            quick_start,
            compiler,
        } = compiling;
        let cache = match cache_dir {
            Some(dir) => match CompileCache::open(dir, &engine) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!("compile cache disabled: {e}");
                    None
                }
            },
            None => None,
        };
        // Winch is a tier-1 compiler on x86-64 only; elsewhere every plugin waits for Cranelift.
        let quick = (quick_start && cfg!(target_arch = "x86_64"))
            .then(|| {
                let engine = new_engine(Strategy::Winch, perf_map)?;
                Ok(Quick {
                    linker: new_linker(&engine)?,
                    engine,
                })
            })
            .transpose()
            .unwrap_or_else(|e: RuntimeError| {
                tracing::warn!("quick start off: {e}");
                None
            });

        let clock = Arc::new(Clock::default());
        let mut ticking = vec![engine.clone()];
        ticking.extend(quick.as_ref().map(|q| q.engine.clone()));
        let ticked = clock.clone();
        std::thread::Builder::new()
            .name("wasmeca-epoch".into())
            .spawn(move || ticked.run(&ticking))
            .map_err(|e| RuntimeError(format!("epoch thread: {e}")))?;

        let cpus = std::thread::available_parallelism().map_or(2, usize::from);

        Ok(Self(Arc::new(Inner {
            engine,
            long_per_plugin: cpus.saturating_sub(1).max(1),
            interrupt: tokio_util::sync::CancellationToken::new(),
            linker,
            quick,
            behind: Behind {
                running: AtomicUsize::new(0),
                last: Mutex::new(None),
                turn: tokio::sync::Semaphore::new(1),
            },
            cache,
            compiler,
            compiler_failed: AtomicBool::new(false),
            limits,
            ticker: Ticker(clock),
        })))
    }

    /// The optimising engine (Cranelift's), whose artifacts the compile cache holds; a plugin
    /// served from Winch's code runs on an engine of its own.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// The compile cache, when enabled.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.0.cache.as_ref()
    }

    /// What each instance may use and answer.
    pub fn limits(&self) -> &InstanceLimits {
        &self.0.limits
    }

    /// Ends every guest call still running at its next epoch tick, with `closed`; calls that
    /// start after this are refused. What shutdown does once its drain timeout has passed.
    pub fn interrupt(&self) {
        self.0.interrupt.cancel();
    }

    /// Resolves when [`Runtime::interrupt`] is called.
    pub(crate) fn interrupted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.interrupt.cancelled()
    }

    /// True once [`Runtime::interrupt`] was called.
    pub(crate) fn is_interrupted(&self) -> bool {
        self.0.interrupt.is_cancelled()
    }

    /// Marks guest code as running until the guard is dropped: the epoch thread ticks (so the
    /// guest yields at every tick) and wakes first if it slept.
    pub(crate) fn running(&self) -> Running<'_> {
        let clock = &*self.0.ticker.0;
        clock.running.fetch_add(1, Ordering::SeqCst);
        if clock.asleep.load(Ordering::SeqCst) {
            clock.wake_up();
        }
        Running(clock)
    }

    /// How many calls of one plugin may run long at once.
    pub(crate) fn long_calls_per_plugin(&self) -> usize {
        self.0.long_per_plugin
    }

    /// Reads, validates, compiles optimised (through the cache) and links a plugin file.
    pub fn compile_file(&self, path: &Path) -> Result<Compiled, LoadError> {
        self.compile_bytes(path, &read(path)?)
    }

    /// Validates, compiles optimised (through the cache) and links a plugin from its bytes.
    pub fn compile_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Compiled, LoadError> {
        let hash = check_component(path, bytes)?;
        let component = self.optimised(path, &hash, bytes)?;
        self.link(path, hash, &component, &self.0.linker, None)
    }

    /// What `serve` loads a plugin with (the file's bytes, read now if not given): its
    /// compiled artifact when the cache has one, else with quick start on Winch's code at once
    /// ([`Compiled::is_quick`]; [`Runtime::optimise`] makes Cranelift's), else Cranelift's.
    /// A component Winch cannot compile (a proposal it lacks) is compiled optimised.
    pub fn compile_to_serve(
        &self,
        path: &Path,
        bytes: Option<Vec<u8>>,
    ) -> Result<Compiled, LoadError> {
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => read(path)?,
        };
        let hash = check_component(path, &bytes)?;
        let cached = self
            .0
            .cache
            .as_ref()
            .is_some_and(|cache| cache.artifact(&hash).exists());
        if let (false, Some(quick)) = (cached, &self.0.quick) {
            let compiling = QuickCompile::start(&self.0.behind);
            let component = self.compile_through(true, path, &hash, &bytes);
            drop(compiling);
            match component {
                Ok(component) => {
                    return self.link(path, hash, &component, &quick.linker, Some(bytes.into()));
                }
                Err(e) => tracing::info!(
                    file = %path.display(),
                    "compiling optimised at once: the baseline compiler cannot ({e})"
                ),
            }
        }
        let component = self.optimised(path, &hash, &bytes)?;
        self.link(path, hash, &component, &self.0.linker, None)
    }

    /// Cranelift's code for a plugin served from Winch's (through the cache, so the next
    /// start finds it, and by the compiler process when there is one); `None` for one already
    /// optimised.
    pub fn optimise(&self, compiled: &Compiled) -> Option<Result<Compiled, LoadError>> {
        let bytes = compiled.quick.as_ref()?;
        let (path, hash) = (&compiled.path, &compiled.hash);
        Some(self.optimised(path, hash, bytes).and_then(|component| {
            self.link(path, hash.to_string(), &component, &self.0.linker, None)
        }))
    }

    /// Waits until no Winch compile has run for [`SETTLE`] (the host has stopped loading
    /// plugins), then for the one turn to compile Cranelift's code behind them.
    pub(crate) async fn turn_to_optimise(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let behind = &self.0.behind;
        let turn = behind.turn.acquire().await.ok();
        loop {
            // `running` first: a compile that ends between the two reads has stamped `last`
            // by then (its guard stamps before it counts down).
            let idle = behind.running.load(Ordering::SeqCst) == 0;
            let last = *behind.last.lock().unwrap_or_else(PoisonError::into_inner);
            let settled = idle && last.is_none_or(|at| at.elapsed() >= SETTLE);
            if settled {
                return turn;
            }
            tokio::time::sleep(SETTLE).await;
        }
    }

    /// Cranelift's code for a checked component, through the cache when there is one.
    fn optimised(&self, path: &Path, hash: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        self.compile_through(false, path, hash, bytes)
    }

    /// The code of a checked component, Winch's with `baseline` (quick start) else
    /// Cranelift's: Cranelift's from the compile cache when it holds the artifact; else
    /// compiled by the compiler process ([`Compiling::compiler`]) when there is one, or in this
    /// process (through the cache for Cranelift's; Winch's is never kept).
    fn compile_through(
        &self,
        baseline: bool,
        path: &Path,
        hash: &str,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        let failed = |detail: String| LoadError::Compile {
            path: path.to_owned(),
            detail,
        };
        let (engine, cache) = match self.0.quick.as_ref().filter(|_| baseline) {
            Some(quick) => (&quick.engine, None),
            None => (&self.0.engine, self.0.cache.as_ref()),
        };
        let cached = cache.is_some_and(|cache| cache.artifact(hash).exists());
        if let Some(program) = &self.0.compiler
            && !cached
            && !self.0.compiler_failed.load(Ordering::Relaxed)
        {
            match self.compile_elsewhere(program, engine, cache, hash, bytes, baseline) {
                Ok(component) => return Ok(component),
                Err(cache::Elsewhere::Failed(detail)) => return Err(failed(detail)),
                Err(cache::Elsewhere::NotRun(why)) => {
                    if !self.0.compiler_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            file = %path.display(),
                            program = %program.display(),
                            "compiling in this process from now on: the compiler process \
                             failed ({why})"
                        );
                    }
                }
            }
        }
        match cache {
            Some(cache) => cache.load_or_compile(engine, hash, bytes).map_err(failed),
            None => {
                let component = Component::new(engine, bytes);
                give_back_compile_memory();
                component.map_err(|e| failed(format!("{e:#}")))
            }
        }
    }

    /// [`cache::compile_by`] into a private file (in the cache's folder, else the temporary
    /// one), loaded for `engine`, then kept as the artifact in `cache` when there is one, else
    /// removed (the component maps it still).
    fn compile_elsewhere(
        &self,
        program: &Path,
        engine: &Engine,
        cache: Option<&CompileCache>,
        hash: &str,
        bytes: &[u8],
        baseline: bool,
    ) -> Result<Component, cache::Elsewhere> {
        let folder = self
            .0
            .cache
            .as_ref()
            .map_or_else(std::env::temp_dir, |cache| cache.dir().to_owned());
        let out = cache::private_file(&folder, hash);
        let loaded = cache::compile_by(program, bytes, baseline, &out).and_then(|()| {
            cache::deserialize(engine, &out).map_err(|e| {
                cache::Elsewhere::NotRun(format!("what it wrote does not load here: {e:#}"))
            })
        });
        let kept = match (&loaded, cache) {
            (Ok(_), Some(cache)) => cache.keep(&out, hash).is_ok(),
            _ => false,
        };
        if !kept {
            let _ = std::fs::remove_file(&out);
        }
        loaded
    }

    /// Links a compiled component with `linker` (of the engine that compiled it) for the
    /// contract it implements.
    fn link(
        &self,
        path: &Path,
        hash: String,
        component: &Component,
        linker: &Linker<State>,
        quick: Option<Arc<[u8]>>,
    ) -> Result<Compiled, LoadError> {
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Contract {
                path: path.to_owned(),
                detail: format!("{e:#}"),
            })?;
        // The current contract first; a component built against 0.1.0 is served as it is.
        let pre = match current::PluginPre::new(pre.clone()) {
            Ok(pre) => Pre::Current(pre),
            Err(now) => match v0_1::PluginPre::new(pre) {
                Ok(pre) => Pre::V0_1(pre),
                Err(then) => {
                    return Err(LoadError::Contract {
                        path: path.to_owned(),
                        detail: format!("{now:#}; as 0.1.0: {then:#}"),
                    });
                }
            },
        };
        Ok(Compiled {
            path: path.into(),
            hash: hash.into(),
            pre,
            quick,
        })
    }
}

/// What `wasmeca compile-behind` does, in the process a host runs it in
/// ([`Compiling::compiler`]): the code of the component `bytes` written to the file `out`,
/// which the host loads: Winch's with `baseline`, else Cranelift's. `Err` when this process
/// cannot do it (no engine, `out` not writable: the host compiles itself then); `Ok(Err)`,
/// with what the compiler said, when the component does not compile.
pub fn compile_to_file(
    out: &Path,
    bytes: &[u8],
    baseline: bool,
) -> Result<Result<(), String>, RuntimeError> {
    let strategy = if baseline {
        Strategy::Winch
    } else {
        Strategy::Cranelift
    };
    let engine = new_engine(strategy, false)?;
    let compiled = match engine.precompile_component(bytes) {
        Ok(compiled) => compiled,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    std::fs::write(out, compiled)
        .map_err(|e| RuntimeError(format!("cannot write {}: {e}", out.display())))?;
    Ok(Ok(()))
}

/// A plugin file's bytes.
fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Checks that `bytes` are a component (not a core module, not something else) and answers
/// their blake3 hash, hex.
fn check_component(path: &Path, bytes: &[u8]) -> Result<String, LoadError> {
    let path_buf = || path.to_owned();
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm { path: path_buf() });
    }
    // Core modules have layer 0 (bytes 6..8); components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule { path: path_buf() });
    }
    Ok(blake3::hash(bytes).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 5 s for `check`, else fails saying `what`.
    fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(EPOCH_TICK);
        }
    }

    #[test]
    fn the_epoch_thread_sleeps_while_no_guest_runs_and_ticks_while_one_does() {
        let runtime = Runtime::new(None, 1 << 20).expect("runtime");
        let clock = runtime.0.ticker.0.clone();
        let ticks = || clock.ticks.load(Ordering::Relaxed);
        let asleep = || clock.asleep.load(Ordering::SeqCst);
        until("the idle thread falls asleep", asleep);
        let slept_at = ticks();
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(ticks(), slept_at, "no ticks while asleep");

        let running = runtime.running();
        until("a running guest wakes it", || ticks() >= slept_at + 5);
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS + 20));
        assert!(!asleep(), "it keeps ticking as long as a guest runs");
        let nested = runtime.running();
        drop(running);
        std::thread::sleep(EPOCH_TICK * (IDLE_TICKS + 20));
        assert!(!asleep(), "one guest still runs");
        drop(nested);
        until("it falls asleep again once none runs", asleep);
        // Dropping the runtime wakes the sleeping thread, which then ends.
        drop(runtime);
        until("the dropped runtime's thread ends", || {
            Arc::strong_count(&clock) == 1
        });
    }
}
