//! The `wasmeca` command: parse the command line, set up logging, read the configuration, then
//! hand over to the library (`serve`, `act`, `inspect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use wasmeca::authoring;
use wasmeca::config::{Listen, ListenAddr};
use wasmeca::transport::{Remote, RemoteCall, http::HttpClient};
use wasmeca::{ActError, Config, Message, Reply, Router};

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
}

#[derive(Subcommand)]
enum Command {
    /// Serve plugins until SIGINT or SIGTERM, then drain in-flight calls and exit.
    Serve(ServeArgs),
    /// Load plugins, act one message, print the JSON answer (or the error) and exit.
    Act(ActArgs),
    /// Show a plugin's name, version, patterns and routes.
    Inspect(InspectArgs),
    /// List the plugins a running host serves, with their files, load times and load errors.
    Plugins(PluginsArgs),
    /// Start a plugin project from a template: rust, js, python or c.
    New(NewArgs),
    /// Run a project's declared [build], after checking its toolchain is installed.
    Build(BuildArgs),
    /// Check a built plugin against the contract, with a readable report (exit 1 on failure).
    Check(CheckArgs),
    /// Make a component of a core module built against wit/ (the C toolchain's last step).
    Componentize(ComponentizeArgs),
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
struct CheckArgs {
    /// The plugin file.
    file: PathBuf,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
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
struct PluginsArgs {
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
struct HostArgs {
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
    /// Also listen on AMQP for every pattern of the loaded plugins (the broker at URL, else
    /// $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    amqp: Option<String>,
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
struct ActArgs {
    /// Plugin files or folders (or a wasmeca.toml), then the message as jsonic
    /// (`cmd:salute,name:World`) or JSON. With no plugins the message goes to the running host
    /// at --url.
    #[arg(required = true, num_args = 1.., value_name = "[PLUGINS...] MESSAGE")]
    args: Vec<String>,
    /// The Seneca HTTP transport of a running host, used when no plugins are given.
    #[arg(
        long,
        env = "WASMECA_URL",
        default_value = "http://127.0.0.1:10101/act"
    )]
    url: String,
    /// Publish the message to RabbitMQ's `seneca.topic` exchange instead (the broker at URL,
    /// else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672) and print the reply.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    amqp: Option<String>,
    /// With --amqp: the pin whose routing key to publish with [default: the shortest leading
    /// part of the message, in written order, that a queue is bound for].
    #[arg(long, requires = "amqp")]
    pin: Option<String>,
    /// With --amqp: publish and exit once the broker has the command, without waiting for the
    /// reply.
    #[arg(long, requires = "amqp")]
    no_wait: bool,
    /// With --amqp: the exchange.
    #[arg(long, requires = "amqp", default_value = "seneca.topic")]
    exchange: String,
    /// Pretty-print the answer.
    #[arg(long)]
    pretty: bool,
    /// Host options.
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args)]
struct InspectArgs {
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
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
            if let Some(url) = args.amqp {
                let mut listen = config.listeners();
                let amqp = wasmeca::config::AmqpListen {
                    url: (!url.is_empty()).then_some(url),
                    ..Default::default()
                };
                listen.push(Listen::Amqp(amqp));
                config.listen = Some(listen);
            }
            if args.build {
                build(&config)?;
            }
            let shutdown = wasmeca::shutdown::on_signals();
            wasmeca::serve(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Act(args) => act(args).await,
        Command::Inspect(args) => inspect(args).await,
        Command::Plugins(args) => plugins(args).await,
        Command::New(args) => {
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
        Command::Build(args) => {
            let path = match args.path {
                Some(p) if p.is_dir() => p.join("wasmeca.toml"),
                Some(p) => p,
                None => PathBuf::from("wasmeca.toml"),
            };
            let config = Config::from_file(&path)?;
            authoring::build(&config, &sdk_dir(args.sdk.as_deref()))?;
            for source in config.plugin_sources()? {
                eprintln!("built {}", source.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let config = config_for(std::slice::from_ref(&args.file), &args.host)?;
            let cache = (!config.no_cache).then(|| {
                config
                    .cache_dir
                    .clone()
                    .unwrap_or_else(wasmeca::runtime::CompileCache::default_dir)
            });
            let runtime = wasmeca::Runtime::new(cache, config.limits.memory_bytes())?;
            println!("wasmeca check {}", args.file.display());
            let report = authoring::check(&args.file, runtime, config.limits.clone()).await;
            println!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
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

/// The configuration for plugin paths: a `.toml` file, files and folders, or `./wasmeca.toml`.
fn config_for(paths: &[PathBuf], host: &HostArgs) -> anyhow::Result<Config> {
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
    if let Some(dir) = &host.cache_dir {
        config.cache_dir = Some(dir.clone());
    }
    config.no_cache |= host.no_cache;
    if let Some(ms) = host.timeout_ms {
        config.limits.timeout_ms = ms;
    }
    if let Some(mib) = host.memory_mib {
        config.limits.memory_mib = mib;
    }
    Ok(config)
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

async fn act(args: ActArgs) -> anyhow::Result<ExitCode> {
    let Some((text, paths)) = args.args.split_last() else {
        bail!("no message given")
    };
    let msg = Message::parse(text).with_context(|| "the message does not parse")?;
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let answer = if let Some(given) = &args.amqp {
        // `--amqp amqp://host 'msg'` as well as `--amqp=amqp://host 'msg'`.
        let (url, paths) = match paths.split_first() {
            Some((first, rest))
                if given.is_empty() && first.to_string_lossy().starts_with("amqp") =>
            {
                (first.to_string_lossy().into_owned(), rest)
            }
            _ => (given.clone(), paths.as_slice()),
        };
        if !paths.is_empty() {
            bail!("--amqp publishes to a broker; it takes no plugin paths");
        }
        match act_amqp(&url, text, &msg, &args).await? {
            Some(answer) => answer,
            None => return Ok(ExitCode::SUCCESS),
        }
    } else if paths.is_empty() {
        act_remote(&args.url, &msg, args.host.timeout_ms).await?
    } else {
        let config = config_for(&paths, &args.host)?;
        let router = wasmeca::start(&config).await?;
        router.act(msg).await
    };
    print_answer(answer, args.pretty)
}

/// Publishes one command over AMQP; `None` when not waiting for the reply.
async fn act_amqp(
    url: &str,
    text: &str,
    msg: &Message,
    args: &ActArgs,
) -> anyhow::Result<Option<Result<Reply, ActError>>> {
    use wasmeca::transport::amqp::{AmqpClient, Sent, routing_key};
    let config = wasmeca::config::AmqpClient {
        url: (!url.is_empty()).then(|| url.to_owned()),
        exchange: args.exchange.clone(),
        ..Default::default()
    };
    // The routing keys to try: the given pin's, or the message's leading pairs, shortest first.
    let pins: Vec<wasmeca::pattern::Pattern> = match &args.pin {
        Some(pin) => vec![pin.parse().with_context(|| format!("--pin {pin}"))?],
        None => {
            let pairs = wasmeca::pattern::parse_jsonic_pairs(text).or_else(|_| {
                Ok::<_, anyhow::Error>(msg.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            })?;
            let pairs: Vec<_> = pairs
                .into_iter()
                .filter(|(k, v)| !k.ends_with('$') && !k.starts_with('$') && !v.is_null())
                .collect();
            (1..=pairs.len())
                .filter_map(|n| {
                    wasmeca::pattern::Pattern::from_object(&pairs[..n].iter().cloned().collect())
                        .ok()
                })
                .collect()
        }
    };
    let mut keys: Vec<String> = pins.iter().map(|p| routing_key(p, msg)).collect();
    keys.dedup();
    let timeout = Duration::from_millis(args.host.timeout_ms.unwrap_or(22_222));
    let client = AmqpClient::new(config, wasmeca::transport::instance_id());
    let tx = wasmeca::message::new_id();
    for key in &keys {
        let deadline = tokio::time::Instant::now() + timeout;
        match client.send(msg, &tx, key, deadline, !args.no_wait).await {
            Ok(Sent::Unroutable) => continue,
            Ok(Sent::Routed(None)) => {
                eprintln!("published with routing key {key}");
                return Ok(None);
            }
            Ok(Sent::Routed(Some(answer))) => {
                if let Err(e) = &answer
                    && e.code == wasmeca::message::codes::ACTION_TIMEOUT
                {
                    eprintln!(
                        "no reply within {} ms (routing key {key})",
                        timeout.as_millis()
                    );
                }
                return Ok(Some(answer));
            }
            Err(e) if e.code == wasmeca::message::codes::UNREACHABLE => bail!("{}", e.message),
            Err(e) => return Ok(Some(Err(e))),
        }
    }
    bail!(
        "no AMQP queue on {} is bound for {}: no listener serves this message (or none ever declared its queue); \
         pass --pin with the listener's pattern",
        args.exchange,
        keys.join(" or ")
    )
}

/// Sends one message to a running host's Seneca HTTP transport.
async fn act_remote(
    url: &str,
    msg: &Message,
    timeout_ms: Option<u64>,
) -> anyhow::Result<Result<Reply, ActError>> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url} is not a URL"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("--url {url} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(10101);
    let timeout = Duration::from_millis(
        timeout_ms
            .or_else(|| msg.timeout().map(|t| t.as_millis() as u64))
            .unwrap_or(22_222),
    );
    let client = HttpClient::new(
        host,
        port,
        parsed.path(),
        timeout,
        wasmeca::transport::instance_id(),
    )?;
    let tx = wasmeca::message::new_id();
    let call = RemoteCall {
        tx: &tx,
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        pin: &wasmeca::pattern::Pattern::default(),
    };
    match client.act(msg, call).await {
        Err(e) if e.code == wasmeca::message::codes::UNREACHABLE => {
            bail!(
                "{}; is `wasmeca serve` running there? (set --url or WASMECA_URL)",
                e.message
            )
        }
        answer => Ok(answer),
    }
}

/// Prints an answer (or the Seneca error JSON) and picks the exit code.
fn print_answer(answer: Result<Reply, ActError>, pretty: bool) -> anyhow::Result<ExitCode> {
    let args_pretty = pretty;
    let (text, code) = match answer {
        // The answer as the plugin wrote it (key order kept), unless asked to pretty-print.
        Ok(reply) if !args_pretty => (reply.as_str().to_owned(), ExitCode::SUCCESS),
        Ok(reply) => (
            serde_json::to_string_pretty(&reply.to_value())?,
            ExitCode::SUCCESS,
        ),
        Err(e) if args_pretty => (
            serde_json::to_string_pretty(&e.to_seneca_json())?,
            ExitCode::FAILURE,
        ),
        Err(e) => (e.to_seneca_json().to_string(), ExitCode::FAILURE),
    };
    println!("{text}");
    Ok(code)
}

async fn plugins(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let mut url = reqwest::Url::parse(&args.url)
        .with_context(|| format!("--url {} is not a URL", args.url))?;
    url.set_path("/plugins");
    let text = reqwest::get(url.clone())
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| {
            format!(
                "cannot reach {url}; is `wasmeca serve` running there? (set --url or WASMECA_URL)"
            )
        })?
        .text()
        .await?;
    let listing: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    let ago = |at: &serde_json::Value| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        at.as_u64().map_or_else(
            || "?".to_owned(),
            |at| format!("{}s ago", now.saturating_sub(at)),
        )
    };
    for plugin in listing["plugins"].as_array().into_iter().flatten() {
        println!(
            "{}@{}  {}  loaded {}",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
            plugin["file"].as_str().unwrap_or("?"),
            ago(&plugin["loaded_at"])
        );
        for pattern in plugin["patterns"].as_array().into_iter().flatten() {
            println!("    {}", pattern.as_str().unwrap_or("?"));
        }
    }
    let routes = listing["routes"].as_array().cloned().unwrap_or_default();
    if !routes.is_empty() {
        println!("routes:");
        for r in routes {
            println!(
                "    {:7} {}  -> {}  ({})",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or(""),
                r["pattern"].as_str().unwrap_or(""),
                r["owner"].as_str().unwrap_or("")
            );
        }
    }
    for error in listing["load_errors"].as_array().into_iter().flatten() {
        println!(
            "load error ({}): {}",
            ago(&error["at"]),
            error["error"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let config = config_for(std::slice::from_ref(&args.file), &args.host)?;
    let sources = config.plugin_sources()?;
    let [source] = sources.as_slice() else {
        bail!(
            "{} holds {} plugins; inspect takes one file",
            args.file.display(),
            sources.len()
        );
    };
    let runtime = wasmeca::Runtime::new(
        (!config.no_cache).then(|| {
            config
                .cache_dir
                .clone()
                .unwrap_or_else(wasmeca::runtime::CompileCache::default_dir)
        }),
        config.limits.memory_bytes(),
    )?;
    let router = Router::new(runtime, config.limits.clone());
    let plugin = router.load(source).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plugin.describe())?);
        return Ok(ExitCode::SUCCESS);
    }
    let size = std::fs::metadata(&plugin.file)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{}  ({}, {} KiB, blake3 {})",
        plugin.key(),
        plugin.file.display(),
        size.div_ceil(1024),
        &plugin.hash[..16]
    );
    println!("patterns:");
    for (i, action) in plugin.actions.iter().enumerate() {
        let example = action
            .example
            .as_ref()
            .map(|e| format!("  e.g. {}", serde_json::Value::Object(e.clone())));
        println!("  [{i}] {}{}", action.source, example.unwrap_or_default());
    }
    if !plugin.routes.is_empty() {
        println!("routes:");
        for set in &plugin.routes {
            println!("  {set}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
