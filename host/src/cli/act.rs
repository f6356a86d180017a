//! `wasmeca act`: one message, acted in-process against plugin files, sent to a running host's
//! Seneca HTTP transport, or published over AMQP; the answer (or Seneca's error JSON) printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use wasmeca::remote::{Remote, RemoteCall};
use wasmeca::transport::http::HttpClient;
use wasmeca::{ActError, Code, Message, Reply};

use crate::{ActArgs, config_for};

/// Runs `wasmeca act`.
pub async fn act(args: ActArgs) -> anyhow::Result<ExitCode> {
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
    let config = wasmeca::config::AmqpClientConfig {
        url: Some(wasmeca::config::Urls::parse(url)).filter(|u| !u.is_empty()),
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
    let timeout = Duration::from_millis(
        args.host
            .timeout_ms
            .unwrap_or(wasmeca::message::DEFAULT_TIMEOUT_MS),
    );
    let client = AmqpClient::new(config, wasmeca::message::instance_id());
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
                    && e.is(Code::ActionTimeout)
                {
                    eprintln!(
                        "no reply within {} ms (routing key {key})",
                        timeout.as_millis()
                    );
                }
                return Ok(Some(answer));
            }
            Err(e) if e.is(Code::Unreachable) => bail!("{}", e.message),
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
            .unwrap_or(wasmeca::message::DEFAULT_TIMEOUT_MS),
    );
    let client = HttpClient::new(
        host,
        port,
        parsed.path(),
        timeout,
        wasmeca::message::instance_id(),
    )?;
    let tx = wasmeca::message::new_id();
    let call = RemoteCall {
        tx: &tx,
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        pin: &wasmeca::pattern::Pattern::default(),
    };
    match client.act(msg, call).await {
        Err(e) if e.is(Code::Unreachable) => {
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
