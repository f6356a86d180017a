//! The commands that describe plugins: `wasmeca plugins` (what a running host serves, from its
//! `/plugins`) and `wasmeca inspect` (one plugin file, loaded alone).

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::{InspectArgs, PluginsArgs, config_for};

/// What a running host serves: the JSON of the `/plugins` beside its Seneca HTTP transport at
/// `act_url`.
pub(crate) async fn fetch(act_url: &str) -> anyhow::Result<serde_json::Value> {
    let mut url =
        reqwest::Url::parse(act_url).with_context(|| format!("--url {act_url} is not a URL"))?;
    url.set_path("/plugins");
    let text = wasmeca::tls::client()
        .build()?
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| {
            format!(
                "cannot reach {url}; is `wasmeca serve` running there? (set --url or WASMECA_URL)"
            )
        })?
        .text()
        .await?;
    serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))
}

/// The same listing as a host's `/plugins` (its `plugins` and `native`), for the plugins
/// loaded in this process.
pub(crate) fn of_router(router: &wasmeca::Router) -> serde_json::Value {
    let set = router.registry().snapshot();
    let (native, plugins): (Vec<_>, Vec<_>) = set.plugins().iter().partition(|p| p.is_native());
    let describe = |list: Vec<&std::sync::Arc<wasmeca::Plugin>>| -> Vec<serde_json::Value> {
        list.into_iter().map(|p| p.describe()).collect()
    };
    serde_json::json!({ "plugins": describe(plugins), "native": describe(native) })
}

/// Runs `wasmeca plugins`.
pub async fn plugins(args: PluginsArgs) -> anyhow::Result<ExitCode> {
    let listing = fetch(&args.url).await?;
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
            "{}@{}  {}  loaded {}  ({})",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
            plugin["file"].as_str().unwrap_or("?"),
            ago(&plugin["loaded_at"]),
            plugin["contract"].as_str().unwrap_or("?")
        );
        for pattern in plugin["patterns"].as_array().into_iter().flatten() {
            println!("    {}", pattern.as_str().unwrap_or("?"));
        }
        for pattern in plugin["observers"].as_array().into_iter().flatten() {
            println!("    observes {}", pattern.as_str().unwrap_or("?"));
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

/// Runs `wasmeca inspect`.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut config = config_for(std::slice::from_ref(&args.file), &args.host)?;
    // A command, not a server: no quick start (see `act`).
    config.no_quick_start = true;
    let sources = config.plugin_sources()?;
    let [source] = sources.as_slice() else {
        bail!(
            "{} holds {} plugins; inspect takes one file",
            args.file.display(),
            sources.len()
        );
    };
    let router = wasmeca::router(&config)?;
    let plugin = router.registry().load(source).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plugin.describe())?);
        return Ok(ExitCode::SUCCESS);
    }
    let size = std::fs::metadata(&source.path)
        .map(|m| m.len())
        .unwrap_or(0);
    let hash = plugin.hash.as_deref().unwrap_or("");
    println!(
        "{}  ({}, {} KiB, blake3 {}, {})",
        plugin.key(),
        source.path.display(),
        size.div_ceil(1024),
        &hash[..hash.len().min(16)],
        plugin.contract.name()
    );
    println!("patterns:");
    for (i, action) in plugin.actions.iter().enumerate() {
        let example = action
            .example
            .as_ref()
            .map(|e| format!("  e.g. {}", serde_json::Value::Object(e.clone())));
        println!("  [{i}] {}{}", action.source, example.unwrap_or_default());
    }
    if !plugin.observers.is_empty() {
        println!("observers:");
        for (i, observer) in plugin.observers.iter().enumerate() {
            println!("  [{i}] {}", observer.source);
        }
    }
    if !plugin.routes.is_empty() {
        println!("routes:");
        for set in &plugin.routes {
            println!("  {set}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
