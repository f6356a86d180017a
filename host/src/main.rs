//! The `wasmeca` command: parse the command line, set up logging, read the configuration, then
//! hand over to the library (`serve`, `act`, `inspect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use wasmeca::Config;
use wasmeca::authoring;
use wasmeca::config::{Listen, ListenAddr};

/// A server allocator: glibc's malloc serialises the host's threads on its arena locks under
/// load (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seneca-style message-pattern services as WebAssembly components.
#[derive(Parser)]
#[command(name = "wasmeca", version, about, propagate_version = true)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
    /// Log filter in RUST_LOG syntax (default: info for serve, warn otherwise).
    #[arg(long, global = true, env = "WASMECA_LOG")]
    log: Option<String>,
    /// Log lines as text, or as JSON objects (one per line, with the plugin, pattern, tx and
    /// error code as fields) for log shippers and jq.
    #[arg(
        long,
        global = true,
        env = "WASMECA_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines; colour only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve plugins until SIGINT or SIGTERM, then drain in-flight calls and exit.
    Serve(ServeArgs),
    /// Load plugins, act one message, print the JSON answer (or the error) and exit.
    Act(ActArgs),
    /// Talk to a running host (or plugins loaded here): type messages, see the answers; with
    /// stdin not a terminal, one message per line in, one JSON answer per line out.
    Repl(ReplArgs),
    /// Publish one event: every service observing it handles it once (through a running host,
    /// or straight to RabbitMQ with --amqp); prints the event's id.
    Publish(PublishArgs),
    /// Show a plugin's name, version, contract, patterns, observers and routes.
    Inspect(InspectArgs),
    /// List the plugins a running host serves, with their files, load times and load errors.
    Plugins(PluginsArgs),
    /// Start a plugin project from a template: rust, js, python or c.
    New(NewArgs),
    /// Run a project's declared [build], after checking its toolchain is installed.
    Build(BuildArgs),
    /// Check a built plugin against the contract, with a readable report, and run the message
    /// spec beside it if there is one (exit 1 on failure).
    Check(CheckArgs),
    /// Run message specs (`*.spec.jsonic`, `*.spec.json`) against plugins in-process: each
    /// call's answer held to what the spec expects (exit 1 on failure).
    Test(TestArgs),
    /// Make a component of a core module built against wit/ (the C toolchain's last step).
    Componentize(ComponentizeArgs),
    /// Compile plugins into the compile cache ahead of serving (in an image, after a build), so
    /// a host started later loads them without compiling.
    Compile(CompileArgs),
    /// What `serve` runs to compile a plugin in a process of its own (Winch's code with
    /// --baseline, else Cranelift's): the component on stdin, its compiled code into --out
    /// (exit 1: it does not compile).
    #[command(hide = true)]
    CompileBehind(CompileBehindArgs),
}

#[derive(Args)]
struct NewArgs {
    /// rust, js, python or c.
    language: authoring::Language,
    /// The project folder to create; its name is the plugin's name.
    dir: PathBuf,
    /// The SDK folder [default: $WASMECA_SDK, else this build's sdk/].
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
struct BuildArgs {
    /// The project folder or its wasmeca.toml [default: ./wasmeca.toml].
    path: Option<PathBuf>,
    /// The SDK folder [default: $WASMECA_SDK, else this build's sdk/].
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The plugin file.
    file: PathBuf,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
pub(crate) struct TestArgs {
    /// Spec files, or folders to find them in [default: the current folder].
    specs: Vec<PathBuf>,
    /// Run the specs with these plugin files in place of the ones of the same file name they
    /// name (a build elsewhere, in CI).
    #[arg(long = "plugin", value_name = "FILE")]
    plugins: Vec<PathBuf>,
    /// A pattern with no call is not a failure (every spec's `allow: {missing: true}`).
    #[arg(long)]
    allow_missing: bool,
    /// Show every call's answer, not only a failing one's.
    #[arg(long)]
    print: bool,
    /// How to write the results.
    #[arg(long, value_enum, default_value = "text")]
    format: cli::test::Format,
    /// The compile cache, the act timeout and the memory cap.
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct CompileArgs {
    /// Plugin files or folders, or a wasmeca.toml [default: ./wasmeca.toml].
    paths: Vec<PathBuf>,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct CompileBehindArgs {
    /// Winch's code, to serve at once, rather than Cranelift's.
    #[arg(long)]
    baseline: bool,
    /// Where to write the compiled code, which the serving host loads.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ComponentizeArgs {
    /// The core module.
    core: PathBuf,
    /// Where to write the component.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
pub(crate) struct PluginsArgs {
    /// The running host's Seneca HTTP transport.
    #[arg(
        long,
        env = "WASMECA_URL",
        default_value = "http://127.0.0.1:10101/act"
    )]
    url: String,
    /// Print the JSON.
    #[arg(long)]
    json: bool,
}

/// Options shared by every command that loads plugins.
#[derive(Args)]
pub(crate) struct HostArgs {
    /// The compile cache, the act timeout and the memory cap.
    #[command(flatten)]
    engine: EngineArgs,
    /// The entity store: sqlite://PATH, memory:// or postgres://... [config: data.url, else
    /// $DATABASE_URL, else SQLite in the data folder]
    #[arg(long, env = "WASMECA_DATA_URL")]
    data_url: Option<String>,
    /// The cache: memory:// or redis://... [config: cache.url, else $REDIS_URL, else memory]
    #[arg(long, env = "WASMECA_CACHE_URL")]
    cache_url: Option<String>,
}

/// How plugins are compiled and run: every command that runs plugins takes these (`test` too,
/// whose stores are always in memory).
#[derive(Args)]
pub(crate) struct EngineArgs {
    /// Compiled-component cache folder.
    #[arg(long, env = "WASMECA_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every plugin afresh instead of using the cache.
    #[arg(long, env = "WASMECA_NO_CACHE")]
    no_cache: bool,
    /// Default act timeout in ms (Seneca's default is 22222).
    #[arg(long, visible_alias = "timeout", env = "WASMECA_TIMEOUT_MS")]
    timeout_ms: Option<u64>,
    /// Memory cap per plugin instance, in MiB.
    #[arg(long, env = "WASMECA_MEMORY_MIB")]
    memory_mib: Option<usize>,
    /// Name the plugins' compiled functions in /tmp/perf-PID.map, for `perf record` / `perf
    /// report` of a plugin's own code.
    #[arg(long, env = "WASMECA_PERF_MAP")]
    perf_map: bool,
    /// Compile every plugin optimised before serving it, instead of serving a plugin that has
    /// no compiled artifact at once from the baseline compiler's code while the optimised code
    /// is compiled behind.
    #[arg(long, env = "WASMECA_NO_QUICK_START")]
    no_quick_start: bool,
}

impl EngineArgs {
    /// Sets on `config` what the command line gave.
    pub(crate) fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = Some(dir.clone());
        }
        config.no_cache |= self.no_cache;
        config.perf_map |= self.perf_map;
        config.no_quick_start |= self.no_quick_start;
        if let Some(ms) = self.timeout_ms {
            config.limits.timeout_ms = ms;
        }
        if let Some(mib) = self.memory_mib {
            config.limits.memory_mib = mib;
        }
    }
}

/// Where `act` and `repl` send messages when they load no plugins themselves.
#[derive(Args)]
pub(crate) struct ReachArgs {
    /// The Seneca HTTP transport of a running host, used when no plugins are given (with `repl
    /// --amqp`, where `.plugins` and `.patterns` come from).
    #[arg(
        long,
        env = "WASMECA_URL",
        default_value = "http://127.0.0.1:10101/act"
    )]
    url: String,
    /// Publish to RabbitMQ's `seneca.topic` exchange instead (the broker at URL, or a comma
    /// list of its nodes; else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672) and print the
    /// reply.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    amqp: Option<String>,
    /// With --amqp: the pin whose routing key to publish with [default: the shortest leading
    /// part of the message, in written order, that a queue is bound for].
    #[arg(long, requires = "amqp")]
    pin: Option<String>,
    /// With --amqp: the exchange.
    #[arg(long, requires = "amqp", default_value = "seneca.topic")]
    exchange: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Plugin files or folders, or a wasmeca.toml [default: ./wasmeca.toml].
    #[arg(env = "WASMECA_PLUGINS", value_delimiter = ',')]
    paths: Vec<PathBuf>,
    /// Run the configuration's [build] command before serving.
    #[arg(long, env = "WASMECA_BUILD")]
    build: bool,
    /// Watch the plugin folders: load, replace and unload plugins as files land, change or go.
    #[arg(long, env = "WASMECA_WATCH")]
    watch: bool,
    /// Also listen on AMQP for every pattern of the loaded plugins (the broker at URL, or a
    /// comma list of a cluster's nodes; else [amqp] url, else $AMQP_URL, else
    /// amqp://guest:guest@127.0.0.1:5672).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    amqp: Option<String>,
    /// Send events over RabbitMQ, durably and to every host (the broker at URL, or a comma list
    /// of its nodes; else [amqp] url, else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672)
    /// [config: events.url; default: in memory].
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    events: Option<String>,
    /// The group this host's observers handle events as: each event once per group [config:
    /// events.group, else the Consul service name, else `wasmeca`].
    #[arg(long, env = "WASMECA_EVENTS_GROUP")]
    group: Option<String>,
    /// Where the REST gateway listens (`off` turns it off) [config: rest.listen, default
    /// 127.0.0.1:3000].
    #[arg(long, env = "WASMECA_REST", value_name = "ADDR|off")]
    rest: Option<ListenAddr>,
    /// Where Seneca's HTTP transport listens (`off` turns it off) [config: [[listen]], default
    /// 127.0.0.1:10101].
    #[arg(long, env = "WASMECA_HTTP", value_name = "ADDR|off")]
    http: Option<ListenAddr>,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
pub(crate) struct ActArgs {
    /// Plugin files or folders (or a wasmeca.toml), then the message as jsonic
    /// (`cmd:salute,name:World`) or JSON. With no plugins the message goes to the running host
    /// at --url.
    #[arg(required = true, num_args = 1.., value_name = "[PLUGINS...] MESSAGE")]
    args: Vec<String>,
    /// A running host, or RabbitMQ.
    #[command(flatten)]
    reach: ReachArgs,
    /// With --amqp: publish and exit once the broker has the command, without waiting for the
    /// reply.
    #[arg(long, requires = "amqp")]
    no_wait: bool,
    /// Pretty-print the answer.
    #[arg(long)]
    pretty: bool,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
pub(crate) struct ReplArgs {
    /// Plugin files or folders (or a wasmeca.toml) to load in this process; with none, the
    /// messages go to the running host at --url.
    #[arg(value_name = "PLUGINS")]
    paths: Vec<PathBuf>,
    /// A running host, or RabbitMQ.
    #[command(flatten)]
    reach: ReachArgs,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// The event as jsonic (`evt:user,cmd:created,id:7`) or JSON.
    event: String,
    /// The Seneca HTTP transport of a running host (the event goes to its `/publish`).
    #[arg(
        long,
        env = "WASMECA_URL",
        default_value = "http://127.0.0.1:10101/act"
    )]
    url: String,
    /// Publish straight to RabbitMQ's events exchange instead (the broker at URL, or a comma
    /// list of its nodes; else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    amqp: Option<String>,
    /// With --amqp: the events exchange.
    #[arg(long, requires = "amqp", default_value = "wasmeca.events")]
    exchange: String,
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The plugin file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A compiler process for a serving host: no logs (its stderr is what it says when it
    // fails) and no async runtime.
    if let Command::CompileBehind(args) = &cli.command {
        return compile_behind(args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        });
    }
    // lapin warns with a whole message dump for every unroutable publish, which `act --amqp`
    // handles itself.
    let default_log = if matches!(cli.command, Command::Serve(_)) {
        "info,lapin::returned_messages=error"
    } else {
        "warn,lapin::returned_messages=error"
    };
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default_log.to_owned());
    // `serve` reads its configuration before anything logs: its `[telemetry]` decides where
    // the spans (and the log lines inside them) go.
    let serving = match &cli.command {
        Command::Serve(args) => match serve_config(args) {
            Ok(config) => Some((config, args.build)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let telemetry = match serving
        .as_ref()
        .map(|(config, _)| config.telemetry_settings())
    {
        None => None,
        Some(Ok(settings)) => settings,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _exporting = match init_logs(&filter, cli.log_format, telemetry.as_ref()) {
        Ok(exporting) => exporting,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Telemetry's client read the system's CAs before there was a log to say what was wrong.
    for problem in wasmeca::tls::problems() {
        tracing::warn!("reading the system's CAs: {problem}");
    }
    // A worker going idle after a large message gives back what it freed of it.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(wasmeca::runtime::give_back_when_asked)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match serving {
        Some((config, build)) => runtime.block_on(serve(config, build)),
        None => runtime.block_on(run(cli.command)),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(serve_config(&args)?, args.build).await,
        Command::Act(args) => cli::act::act(args).await,
        Command::Repl(args) => cli::repl::repl(args).await,
        Command::Publish(args) => cli::publish::publish(args).await,
        Command::Inspect(args) => cli::listing::inspect(args).await,
        Command::Plugins(args) => cli::listing::plugins(args).await,
        Command::New(args) => new(args),
        Command::Build(args) => {
            let path = match args.path {
                Some(p) if p.is_dir() => p.join("wasmeca.toml"),
                Some(p) => p,
                None => PathBuf::from("wasmeca.toml"),
            };
            let config = Config::from_file(&path)?;
            authoring::build(&config, &sdk_dir(args.sdk.as_deref()))?;
            compile(&config, true)
        }
        Command::Compile(args) => compile(&config_for(&args.paths, &args.host)?, false),
        Command::CompileBehind(args) => compile_behind(&args),
        Command::Test(args) => cli::test::test(args).await,
        Command::Check(args) => cli::test::check(args).await,
        Command::Componentize(args) => {
            let core =
                std::fs::read(&args.core).with_context(|| format!("{}", args.core.display()))?;
            let component = authoring::componentize(&args.core, &core)?;
            std::fs::write(&args.output, component)
                .with_context(|| format!("{}", args.output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The log lines on stderr (text, or JSON lines carrying the trace and span ids), and the
/// spans exported when `telemetry` is on (what keeps their export running is returned).
fn init_logs(
    filter: &str,
    format: LogFormat,
    telemetry: Option<&wasmeca::telemetry::TelemetrySettings>,
) -> Result<Option<wasmeca::telemetry::Exporting>, wasmeca::telemetry::TelemetryError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => lines
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(wasmeca::telemetry::JsonLines::default())
            .boxed(),
    };
    let lines = lines.with_filter(tracing_subscriber::EnvFilter::new(filter));
    let (spans, exporting) = match telemetry {
        Some(settings) => {
            let (layer, exporting) = wasmeca::telemetry::layer(settings, filter)?;
            (Some(layer), Some(exporting))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .init();
    Ok(exporting)
}

/// `wasmeca serve`'s configuration: the file (or plugin paths) with the command line's
/// listeners on top.
fn serve_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = config_for(&args.paths, &args.host)?;
    if let Some(rest) = args.rest {
        config.rest.listen = rest;
    }
    if let Some(ListenAddr(http)) = args.http {
        let mut listen: Vec<Listen> = config
            .listeners()
            .into_iter()
            .filter(|l| !matches!(l, Listen::Http { .. }))
            .collect();
        if let Some(addr) = http {
            let path = "/act".to_owned();
            listen.push(Listen::Http {
                host: addr.ip().to_string(),
                port: addr.port(),
                path,
            });
        }
        config.listen = Some(listen);
    }
    config.watch |= args.watch;
    // Made before the host, so that the spans' resource names the process as the host does.
    config.instance = Some(wasmeca::message::instance_id());
    if let Some(url) = &args.amqp {
        let mut listen = config.listeners();
        let amqp = wasmeca::config::AmqpListen {
            url: Some(wasmeca::config::Urls::parse(url)).filter(|u| !u.is_empty()),
            ..Default::default()
        };
        listen.push(Listen::Amqp(amqp));
        config.listen = Some(listen);
    }
    if let Some(url) = &args.events {
        let given = Some(wasmeca::config::Urls::parse(url)).filter(|u| !u.is_empty());
        config.events.url = Some(config.broker(given.as_ref()));
    }
    if args.group.is_some() {
        config.events.group = args.group.clone();
    }
    Ok(config)
}

/// `wasmeca serve`: built first with `--build`, served until a signal.
async fn serve(mut config: Config, build_first: bool) -> anyhow::Result<ExitCode> {
    if build_first {
        build(&config)?;
    }
    // Plugins are compiled by this very binary (`/proc/self/exe` stays it, whatever replaces
    // the file) in processes of their own (`compile-behind`): the compilers' memory does not
    // stay with the host.
    let this = Path::new("/proc/self/exe");
    config.compiler = if this.exists() {
        Some(this.to_owned())
    } else {
        std::env::current_exe().ok()
    };
    let shutdown = wasmeca::shutdown::on_signals();
    wasmeca::serve(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `wasmeca compile-behind`: the component on stdin compiled into `--out`; a component that
/// does not compile is exit 1 with what was wrong (any other failure is exit 2, and the host
/// compiles in its own process instead).
fn compile_behind(args: &CompileBehindArgs) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading stdin")?;
    match wasmeca::runtime::compile_to_file(&args.out, &bytes, args.baseline)? {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(said) => {
            eprintln!("error: {said}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `wasmeca new`: a project folder from a template.
fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let sdk = sdk_dir(args.sdk.as_deref());
    let written = authoring::new_project(args.language, &args.dir, &sdk)?;
    println!(
        "created {} ({} plugin, SDK {}):",
        args.dir.display(),
        args.language,
        sdk.display()
    );
    for file in written {
        println!("  {}", file.display());
    }
    println!(
        "next: cd {} && wasmeca build && wasmeca serve",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The configuration for plugin paths: a `.toml` file, files and folders, or `./wasmeca.toml`.
pub(crate) fn config_for(paths: &[PathBuf], host: &HostArgs) -> anyhow::Result<Config> {
    let mut config = match paths {
        [] if Path::new("wasmeca.toml").exists() => Config::from_file(Path::new("wasmeca.toml"))?,
        [] => bail!(
            "no plugins given and no ./wasmeca.toml here; pass plugin files, folders or a wasmeca.toml"
        ),
        [one] if one.extension().is_some_and(|e| e == "toml") => Config::from_file(one)?,
        many => {
            if let Some(toml) = many
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "toml"))
            {
                bail!(
                    "{} is a config file; give it alone, not with plugin paths",
                    toml.display()
                );
            }
            Config::from_paths(many)
        }
    };
    host.engine.apply(&mut config);
    if let Some(url) = &host.data_url {
        config.data.url = Some(url.clone());
    }
    if let Some(url) = &host.cache_url {
        config.cache.url = Some(url.clone());
    }
    Ok(config)
}

/// Compiles the configuration's plugins into the compile cache, saying so for each file;
/// `after_build` without a cache (`--no-cache`, or a folder it cannot write) only says what was
/// built, and `serve` compiles them at start.
fn compile(config: &Config, after_build: bool) -> anyhow::Result<ExitCode> {
    let done = if after_build { "built" } else { "compiled" };
    let compiled = match authoring::precompile(config) {
        Err(authoring::AuthoringError::NoCache) if after_build => {
            if config.cache().is_some() {
                eprintln!(
                    "note: the compile cache cannot be written; the plugins compile when served"
                );
            }
            for source in config.plugin_sources()? {
                eprintln!("{done} {}", source.path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        compiled => compiled?,
    };
    for (file, took) in compiled {
        eprintln!(
            "{done} {} (compiled into the cache in {} ms)",
            file.display(),
            took.as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the configuration's `[build]` command in its folder.
fn build(config: &Config) -> anyhow::Result<()> {
    eprintln!(
        "building: {}",
        config.build.as_ref().map_or("", |b| b.command.as_str())
    );
    authoring::build(config, &sdk_dir(None))?;
    Ok(())
}

/// The SDK folder: `--sdk`, else `$WASMECA_SDK`, else the source tree this binary was built from.
fn sdk_dir(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("WASMECA_SDK").map(PathBuf::from))
        .unwrap_or_else(authoring::default_sdk)
}
