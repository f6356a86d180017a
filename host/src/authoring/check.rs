//! `wasmeca check`: a built plugin loaded alone and held to the contract, with a readable
//! report — it is a component, its manifest is valid, its routes are well formed, and every
//! action answers its example without trapping.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Code, clip};
use crate::gateway::routes;
use crate::message::Message;
use crate::pattern::Pattern;
use crate::plugins::{ActionDecl, Plugin, PluginSource};
use crate::registry::Observer;
use crate::router::Router;
use crate::runtime::LoadError;

/// One line of a conformance report.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckItem {
    /// True if it passed.
    pub ok: bool,
    /// What was checked, and what was found.
    pub text: String,
}

/// The outcome of `wasmeca check`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// Every check, in order.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    fn pass(&mut self, text: impl Into<String>) {
        self.items.push(CheckItem {
            ok: true,
            text: text.into(),
        });
    }

    fn fail(&mut self, text: impl Into<String>) {
        self.items.push(CheckItem {
            ok: false,
            text: text.into(),
        });
    }

    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(
                f,
                "  {} {}",
                if item.ok { "ok  " } else { "FAIL" },
                item.text
            )?;
        }
        write!(f, "{}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// A message that a pattern matches: its own pairs, a glob value replaced by a word it matches.
fn sample(pattern: &Pattern) -> Value {
    let pairs = pattern.pairs().iter().map(|(k, v)| {
        let value = if crate::pattern::Glob::is_glob(v) {
            v.replace("**", "*")
                .replace("*?", "?")
                .replace('*', "check")
                .replace('?', "x")
        } else {
            v.clone()
        };
        (k.clone(), Value::String(value))
    });
    Value::Object(pairs.collect())
}

/// Loads `path` into `router` (which should serve nothing else) and checks it against the
/// contract: it is a component, `init` answers a valid manifest (Seneca name, semver version,
/// patterns that parse, routes well formed), and every action answers its example (or a message
/// made from its pattern) without trapping.
pub async fn check(path: &Path, router: Router) -> CheckReport {
    let mut report = CheckReport::default();
    let registry = router.registry();
    let plugin = match registry.load(&PluginSource::new(path)).await {
        Ok(plugin) => plugin,
        Err(e) => {
            report.fail(format!("{}: {e}", what_failed(&e)));
            return report;
        }
    };
    check_manifest(&plugin, &mut report);
    registry.install(plugin.clone());
    for action in &plugin.actions {
        check_action(&router, action, &mut report).await;
    }
    let observers: Vec<_> = registry
        .snapshot()
        .observers()
        .iter()
        .filter(|o| Arc::ptr_eq(&o.plugin, &plugin))
        .cloned()
        .collect();
    for observer in observers {
        check_observer(observer, &mut report).await;
    }
    report
}

/// The check a load error fails.
fn what_failed(e: &LoadError) -> &'static str {
    match e {
        LoadError::Io { .. }
        | LoadError::NotWasm { .. }
        | LoadError::CoreModule { .. }
        | LoadError::Compile { .. } => "it loads as a component",
        LoadError::Contract { .. } => "it implements wasmeca:plugin@0.2.0 (or the older 0.1.0)",
        LoadError::Init { .. } | LoadError::Trap { .. } => "init answers a manifest",
        LoadError::Budget { .. } => "it fits the host's memory budget",
        LoadError::Manifest { .. } => "its manifest is valid",
    }
}

/// What the manifest says: identity, something served, patterns that read as they match,
/// route sets well formed.
fn check_manifest(plugin: &Plugin, report: &mut CheckReport) {
    report.pass(format!(
        "loads as a component and implements {} ({})",
        plugin.contract.name(),
        plugin.key()
    ));
    report.pass(format!(
        "init answers a manifest: name `{}`, semver version {}",
        plugin.name, plugin.version
    ));
    if plugin.actions.is_empty() && plugin.observers.is_empty() {
        report.fail("it declares no action and no observer");
    } else {
        report.pass(format!(
            "{} action(s) and {} observer(s), every pattern parses",
            plugin.actions.len(),
            plugin.observers.len()
        ));
    }
    for (i, action) in plugin.actions.iter().enumerate() {
        // A null value drops its key (`cmd:null`, or `x:undefined` matching a missing key):
        // the pattern is wider than it reads.
        let source = crate::pattern::parse_jsonic_pairs(&action.source).unwrap_or_default();
        if source.iter().any(|(k, v)| v.is_null() && !k.ends_with('$'))
            || action.pattern.pairs().iter().any(|(_, v)| v == "undefined")
        {
            report.fail(format!(
                "action {i} `{}`: a null or `undefined` value drops or inverts its key, so the pattern matches far more than it reads (`{}`)",
                action.source, action.pattern
            ));
        }
    }
    for (i, set) in plugin.routes.iter().enumerate() {
        let (routes, warnings) = routes::compile(set, &plugin.name);
        if warnings.is_empty() {
            let listed: Vec<String> = routes
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            report.pass(format!(
                "route set {i} is well formed: {}",
                listed.join(", ")
            ));
        } else {
            report.fail(format!("route set {i}: {}", warnings.join("; ")));
        }
    }
}

/// An action answers its example (or a message made from its pattern) without trapping; its
/// own error is an answer too.
async fn check_action(router: &Router, action: &ActionDecl, report: &mut CheckReport) {
    let (message, from) = match &action.example {
        Some(example) => (Value::Object(example.clone()), "its example"),
        None => (sample(&action.pattern), "a message made from its pattern"),
    };
    let mut msg = message.as_object().cloned().unwrap_or_default();
    msg.insert("timeout$".into(), json!(5000));
    match router.act(Message::new(msg)).await {
        Ok(reply) => report.pass(format!(
            "`{}` answers {from} {message}: {}",
            action.source,
            clip(reply.as_str())
        )),
        Err(e)
            if [
                Code::PluginTrap,
                Code::ActionTimeout,
                Code::ResultNotObjarr,
                Code::ActNotFound,
            ]
            .into_iter()
            .any(|code| e.is(code)) =>
        {
            report.fail(format!("`{}` with {from} {message}: {}", action.source, e));
        }
        // Its own error is an answer (the sample may lack what the action needs).
        Err(e) => report.pass(format!(
            "`{}` answers {from} {message} with its error {}: {}",
            action.source, e.code, e.message
        )),
    }
}

/// An observer takes an event made from its pattern without trapping.
async fn check_observer(observer: Arc<Observer>, report: &mut CheckReport) {
    let shown = sample(&observer.pattern);
    let mut event = Message::new(shown.as_object().cloned().unwrap_or_default());
    crate::events::stamp(&mut event, None);
    let source = observer.plugin.observers[observer.index as usize]
        .source
        .clone();
    let failed = crate::events::deliver(vec![observer], &event, Duration::from_secs(5)).await;
    match failed.first() {
        None => report.pass(format!("observer `{source}` takes the event {shown}")),
        Some(f)
            if [Code::PluginTrap, Code::ActionTimeout]
                .into_iter()
                .any(|code| f.error.is(code)) =>
        {
            report.fail(format!(
                "observer `{source}` with the event {shown}: {}",
                f.error
            ));
        }
        Some(f) => report.pass(format!(
            "observer `{source}` takes the event {shown} (failing with its error {}: {})",
            f.error.code, f.error.message
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_match_their_patterns() {
        let p = Pattern::parse("role:user,cmd:*,x:a?c").unwrap();
        let s = sample(&p);
        assert_eq!(s, json!({"role": "user", "cmd": "check", "x": "axc"}));
        let mut trie = crate::pattern::Patrun::new();
        trie.add(&p, ());
        assert!(trie.find(s.as_object().unwrap()).is_some());
    }
}
