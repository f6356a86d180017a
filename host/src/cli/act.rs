//! `wasmeca act`: one message, acted in-process against plugin files, sent to a running host's
//! Seneca HTTP transport, or published over AMQP; the answer (or Seneca's error JSON) printed.
//! The [`Endpoint`] it sends through is `wasmeca repl`'s too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmeca::pattern::Pattern;
use wasmeca::remote::RemoteCall;
use wasmeca::transport::amqp::AmqpClient;
use wasmeca::transport::http::HttpClient;
use wasmeca::{ActError, Code, Message, Reply, Router};

use crate::{ActArgs, HostArgs, ReachArgs, config_for};

/// Runs `wasmeca act`.
pub async fn act(args: ActArgs) -> anyhow::Result<ExitCode> {
    let Some((text, paths)) = args.args.split_last() else {
        bail!("no message given")
    };
    let msg = Message::parse(text).with_context(|| "the message does not parse")?;
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let endpoint = Endpoint::open(Connect {
        paths: &paths,
        reach: &args.reach,
        wait: !args.no_wait,
        host: &args.host,
    })
    .await?;
    match endpoint.send(text, msg, false).await? {
        Some(answered) => print_answer(answered.answer, args.pretty),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// How to reach whoever answers, as `act` and `repl` take it from their command lines.
pub(crate) struct Connect<'a> {
    /// Plugin files, folders or a `wasmeca.toml` to load in this process; none: a running host.
    pub paths: &'a [PathBuf],
    /// A running host's Seneca HTTP transport, or `--amqp` and its pin and exchange.
    pub reach: &'a ReachArgs,
    /// With --amqp: wait for the reply (`act --no-wait` does not).
    pub wait: bool,
    /// Timeout, compile cache and stores.
    pub host: &'a HostArgs,
}

/// Where messages go: a running host's Seneca HTTP transport, RabbitMQ, or plugins loaded in
/// this process.
pub(crate) enum Endpoint {
    /// A running host at a URL.
    Http(Http),
    /// Whichever listener consumes the routing key.
    Amqp(Amqp),
    /// The plugins loaded here.
    Local(Router),
}

/// A running host's Seneca HTTP transport.
pub(crate) struct Http {
    /// Kept-alive connections to it, kept for every message of a session.
    client: HttpClient,
    /// Its `/act` URL, for messages and listings.
    pub url: String,
    /// `--timeout-ms`, which wins over a message's own `timeout$`.
    timeout_ms: Option<u64>,
}

/// RabbitMQ's topic exchange.
pub(crate) struct Amqp {
    /// The connection and reply queue, kept for every message of a session.
    client: AmqpClient,
    /// `--pin`: the routing key's pattern, instead of the message's leading pairs.
    pin: Option<Pattern>,
    /// The exchange, named in errors.
    exchange: String,
    /// How long to wait for a reply.
    timeout: Duration,
    /// False for `act --no-wait`: publish and return.
    wait: bool,
    /// `--url`: the only place a plugin listing can come from when acts go over AMQP.
    pub listing_url: String,
}

/// One answer, and what is known of how it came.
pub(crate) struct Answered {
    /// The answer, or the error.
    pub answer: Result<Reply, ActError>,
    /// From sending the message to having the answer.
    pub took: Duration,
    /// The Seneca instance id of the host that answered, when known.
    pub host: Option<String>,
    /// The plugin `name@version` (or `client <url>`) that answered, when known and asked for.
    pub plugin: Option<String>,
    /// The way the message went: the URL, the AMQP routing key, or `in-process`.
    pub via: String,
}

impl Endpoint {
    /// Connects (lazily: nothing is sent yet) or loads the plugins.
    pub async fn open(to: Connect<'_>) -> anyhow::Result<Self> {
        let reach = to.reach;
        if let Some(given) = reach.amqp.as_deref() {
            // `--amqp amqp://host ...` as well as `--amqp=amqp://host ...`.
            let (url, paths) = match to.paths.split_first() {
                Some((first, rest))
                    if given.is_empty() && first.to_string_lossy().starts_with("amqp") =>
                {
                    (first.to_string_lossy().into_owned(), rest)
                }
                _ => (given.to_owned(), to.paths),
            };
            if !paths.is_empty() {
                bail!("--amqp publishes to a broker; it takes no plugin paths");
            }
            let config = wasmeca::config::AmqpClientConfig {
                url: Some(wasmeca::config::Urls::parse(&url)).filter(|u| !u.is_empty()),
                exchange: reach.exchange.clone(),
                ..Default::default()
            };
            let pin = match &reach.pin {
                Some(pin) => Some(pin.parse().with_context(|| format!("--pin {pin}"))?),
                None => None,
            };
            return Ok(Self::Amqp(Amqp {
                client: AmqpClient::new(config, wasmeca::message::instance_id()),
                pin,
                exchange: reach.exchange.clone(),
                timeout: Duration::from_millis(
                    to.host
                        .engine
                        .timeout_ms
                        .unwrap_or(wasmeca::message::DEFAULT_TIMEOUT_MS),
                ),
                wait: to.wait,
                listing_url: reach.url.clone(),
            }));
        }
        if to.paths.is_empty() {
            return Ok(Self::Http(Http::new(
                &reach.url,
                to.host.engine.timeout_ms,
            )?));
        }
        let mut config = config_for(to.paths, to.host)?;
        // A command, not a server: it compiles optimised before it answers, into the cache for
        // the next run, rather than leaving the compile behind as it exits.
        config.no_quick_start = true;
        Ok(Self::Local(wasmeca::start(&config).await?))
    }

    /// Acts `msg` (written as `text`); with `trace`, finds out which plugin answered where that
    /// costs something. `None` when publishing without waiting; an error when the message
    /// could not be delivered at all (the host or broker is unreachable, no queue is bound).
    pub async fn send(
        &self,
        text: &str,
        msg: Message,
        trace: bool,
    ) -> anyhow::Result<Option<Answered>> {
        match self {
            Self::Http(http) => http.send(&msg, trace).await.map(Some),
            Self::Amqp(amqp) => amqp.send(text, &msg).await,
            Self::Local(router) => {
                let plugin = if trace {
                    router.registry().snapshot().answerer(&msg)
                } else {
                    None
                };
                let started = Instant::now();
                let answer = router.act(msg).await;
                Ok(Some(Answered {
                    answer,
                    took: started.elapsed(),
                    host: Some(router.instance_id().to_owned()),
                    plugin,
                    via: "in-process".to_owned(),
                }))
            }
        }
    }

    /// Where the messages go, for a banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Http(http) => http.url.clone(),
            Self::Amqp(amqp) => format!("AMQP exchange {}", amqp.exchange),
            Self::Local(router) => {
                let plugins = router.registry().snapshot();
                let names: Vec<String> = plugins
                    .plugins()
                    .iter()
                    .filter(|p| !p.is_native())
                    .map(|p| p.key())
                    .collect();
                format!("in-process: {}", names.join(", "))
            }
        }
    }
}

impl Http {
    /// A client for the Seneca HTTP transport at `url`.
    fn new(url: &str, timeout_ms: Option<u64>) -> anyhow::Result<Self> {
        let parsed =
            reqwest::Url::parse(url).with_context(|| format!("--url {url} is not a URL"))?;
        let host = parsed
            .host_str()
            .with_context(|| format!("--url {url} has no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(10101);
        // Each message's own deadline bounds its request; this only caps the client's.
        let cap = Duration::from_secs(24 * 3600);
        let client = HttpClient::new(
            host,
            port,
            parsed.path(),
            cap,
            wasmeca::message::instance_id(),
        )?;
        Ok(Self {
            client,
            url: url.to_owned(),
            timeout_ms,
        })
    }

    /// Sends one message to the running host.
    async fn send(&self, msg: &Message, trace: bool) -> anyhow::Result<Answered> {
        let timeout = Duration::from_millis(
            self.timeout_ms
                .or_else(|| msg.timeout().map(|t| t.as_millis() as u64))
                .unwrap_or(wasmeca::message::DEFAULT_TIMEOUT_MS),
        );
        let tx = wasmeca::message::new_id();
        let call = RemoteCall {
            tx: &tx,
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            pin: &Pattern::default(),
        };
        let started = Instant::now();
        let (answer, by) = self.client.act_answered(msg, call, trace).await;
        if let Err(e) = &answer
            && e.is(Code::Unreachable)
        {
            bail!(
                "{}; is `wasmeca serve` running there? (set --url or WASMECA_URL)",
                e.message
            )
        }
        Ok(Answered {
            answer,
            took: started.elapsed(),
            host: by.instance,
            plugin: by.plugin,
            via: self.url.clone(),
        })
    }
}

impl Amqp {
    /// Publishes one command; `None` when not waiting for the reply.
    async fn send(&self, text: &str, msg: &Message) -> anyhow::Result<Option<Answered>> {
        use wasmeca::transport::amqp::{Sent, routing_key};
        // The routing keys to try: the given pin's, or the message's leading pairs, shortest
        // first.
        let pins: Vec<Pattern> = match &self.pin {
            Some(pin) => vec![pin.clone()],
            None => {
                let pairs = wasmeca::pattern::parse_jsonic_pairs(text).or_else(|_| {
                    Ok::<_, anyhow::Error>(
                        msg.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    )
                })?;
                let pairs: Vec<_> = pairs
                    .into_iter()
                    .filter(|(k, v)| !k.ends_with('$') && !k.starts_with('$') && !v.is_null())
                    .collect();
                (1..=pairs.len())
                    .filter_map(|n| {
                        Pattern::from_object(&pairs[..n].iter().cloned().collect()).ok()
                    })
                    .collect()
            }
        };
        let mut keys: Vec<String> = pins.iter().map(|p| routing_key(p, msg)).collect();
        keys.dedup();
        let tx = wasmeca::message::new_id();
        for key in &keys {
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + self.timeout;
            let answer = match self.client.send(msg, &tx, key, deadline, self.wait).await {
                Ok(Sent::Unroutable) => continue,
                Ok(Sent::Routed(None)) => {
                    eprintln!("published with routing key {key}");
                    return Ok(None);
                }
                Ok(Sent::Routed(Some(answer))) => {
                    if let Err(e) = &answer
                        && e.is(Code::ActionTimeout)
                    {
                        eprintln!(
                            "no reply within {} ms (routing key {key})",
                            self.timeout.as_millis()
                        );
                    }
                    answer
                }
                Err(e) if e.is(Code::Unreachable) => bail!("{}", e.message),
                Err(e) => Err(e),
            };
            return Ok(Some(Answered {
                answer,
                took: started.elapsed(),
                host: None,
                plugin: None,
                via: format!("AMQP {} {key}", self.exchange),
            }));
        }
        Err(NoQueue {
            exchange: self.exchange.clone(),
            keys,
        }
        .into())
    }
}

/// No AMQP queue is bound for any routing key of a message: no listener serves it. `act`
/// exits 2 on it, as on a broker it cannot reach; `repl` shows it as `act_not_found`.
#[derive(Debug)]
pub(crate) struct NoQueue {
    /// The exchange published to.
    pub exchange: String,
    /// The routing keys tried.
    keys: Vec<String>,
}

impl std::fmt::Display for NoQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no AMQP queue on {} is bound for {}: no listener serves this message (or none ever declared its queue); \
             pass --pin with the listener's pattern",
            self.exchange,
            self.keys.join(" or ")
        )
    }
}

impl std::error::Error for NoQueue {}

/// An answer as text: as the plugin wrote it (key order kept), or pretty-printed; an error as
/// Seneca's error JSON.
pub(crate) fn answer_text(
    answer: &Result<Reply, ActError>,
    pretty: bool,
) -> anyhow::Result<String> {
    Ok(match answer {
        Ok(reply) if !pretty => reply.as_str().to_owned(),
        Ok(reply) => serde_json::to_string_pretty(&reply.to_value())?,
        Err(e) if pretty => serde_json::to_string_pretty(&e.to_seneca_json())?,
        Err(e) => e.to_seneca_json().to_string(),
    })
}

/// Prints an answer (or the Seneca error JSON) and picks the exit code.
pub(crate) fn print_answer(
    answer: Result<Reply, ActError>,
    pretty: bool,
) -> anyhow::Result<ExitCode> {
    println!("{}", answer_text(&answer, pretty)?);
    Ok(if answer.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
