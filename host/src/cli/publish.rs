//! `wasmeca publish`: one event, published through a running host's `POST /publish`, or
//! straight to the broker's events exchange with `--amqp`; prints the event's id.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use wasmeca::Message;
use wasmeca::config::Urls;
use wasmeca::events::Bus;
use wasmeca::transport::amqp::{AmqpBus, EventQueue};

use crate::PublishArgs;

/// Runs `wasmeca publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let mut event = Message::parse(&args.event).with_context(|| "the event does not parse")?;
    let id = match &args.amqp {
        Some(url) => {
            let queue = EventQueue {
                url: wasmeca::config::amqp_urls(Some(&Urls::parse(url))),
                queue_type: Default::default(),
                exchange: args.exchange.clone(),
                group: String::new(),
                retry: Default::default(),
                prefetch: 1,
                connect_timeout: Duration::from_secs(5),
            };
            let id = wasmeca::events::stamp(&mut event, None);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            AmqpBus::new(queue)
                .publish(event, deadline)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            id
        }
        None => publish_http(&args.url, &event).await?,
    };
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// Posts the event to the `/publish` beside the running host's act URL; answers its id.
async fn publish_http(act_url: &str, event: &Message) -> anyhow::Result<String> {
    let mut url =
        reqwest::Url::parse(act_url).with_context(|| format!("--url {act_url} is not a URL"))?;
    url.set_path("/publish");
    let response = wasmeca::tls::client()
        .build()?
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(event.to_json())
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach {url}; is `wasmeca serve` running there? (set --url or WASMECA_URL)"
            )
        })?;
    let ok = response.status().is_success();
    let text = response.text().await?;
    let answer: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))?;
    if !ok {
        bail!(
            "{}: {}",
            answer["code"].as_str().unwrap_or("error"),
            answer["message"]
                .as_str()
                .unwrap_or("the host refused the event")
        );
    }
    Ok(answer["event$"].as_str().unwrap_or_default().to_owned())
}
