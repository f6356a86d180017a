//! `wasmeca test`: message specs in seneca-msg-test's format, run in-process against plugins of
//! any language — read (JSON or jsonic), the entity store seeded, each call acted in order and
//! its answer held against what the spec expects, and a report naming every difference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::message::Message;
use crate::pattern::parse_jsonic;
use crate::plugins::PluginSource;
use crate::registry::{Resolution, Target};
use crate::router::Router;

mod expect;
mod report;

pub use expect::{Difference, ReferenceError, differences, resolve};
pub use report::{CallReport, Outcome, SpecReport, junit, tap};

/// The endings a spec file has: jsonic (Seneca's own notation, which reads seneca-msg-test's
/// object literals nearly as written) or strict JSON.
pub const SPEC_ENDINGS: [&str; 2] = [".spec.jsonic", ".spec.json"];

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The spec.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text does not parse.
    #[error("{path}: does not parse: {reason}")]
    Parse {
        /// The spec.
        path: PathBuf,
        /// Where and why.
        reason: String,
    },
    /// It parses, but is not a spec.
    #[error("{path}: {what}")]
    Invalid {
        /// The spec.
        path: PathBuf,
        /// What is wrong, and where in the spec.
        what: String,
    },
}

/// Which plugins a spec runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum Plugins {
    /// These files (relative paths already made relative to the spec's folder).
    Files(Vec<PathBuf>),
    /// What this `wasmeca.toml` serves.
    Config(PathBuf),
}

/// A message spec: calls to act in order, each with the answer it expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The file it was read from, for the report.
    pub path: PathBuf,
    /// The plugins it runs against.
    pub plugins: Plugins,
    /// Pairs merged into every call's message (seneca-msg-test's `pattern`), and the scope of
    /// the check that every pattern has a call.
    pub pattern: Map<String, Value>,
    /// Entities put in the (memory) store before the plugins load: `{base: {name: {id:
    /// fields}}}`, base `-` for none, as seneca-msg-test imports into mem-store.
    pub data: Map<String, Value>,
    /// True when a pattern of the plugins with no call is not a failure (`allow.missing`).
    pub allow_missing: bool,
    /// True to show every call's answer in the report, not only a failing one's.
    pub print: bool,
    /// Earlier answers to start from (seneca-msg-test's `context`): `{name: {out: ...}}`.
    pub context: Map<String, Value>,
    /// The calls, in order.
    pub calls: Vec<Call>,
}

/// One call of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The name later calls refer to it by (`` `name:out.id` ``), and the report shows.
    pub name: Option<String>,
    /// Its own pairs, merged over the params and the spec's pattern.
    pub pattern: Map<String, Value>,
    /// The rest of the message, which may hold references to earlier calls.
    pub params: Map<String, Value>,
    /// The answer expected: `None` not checked, `Some(null)` must be null.
    pub out: Option<Value>,
    /// The error expected (matched against Seneca's error JSON: `code`, `message`, ...).
    pub err: Option<Value>,
    /// Show this call's answer in the report.
    pub print: bool,
    /// False to skip the call (`run: false`), as seneca-msg-test does.
    pub run: bool,
    /// Where the call is in the spec, for the report (`line`, else its index).
    pub line: Option<String>,
}

/// The spec keys seneca-msg-test has that hold functions, which a data file cannot.
const FUNCTION_KEYS: [&str; 4] = ["init", "delegates", "delegate", "verify"];

impl Spec {
    /// Reads a spec file: `.json` as JSON, anything else as jsonic.
    pub fn read(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str::<Map<String, Value>>(&text).map_err(|e| e.to_string())
        } else {
            parse_jsonic(&text).map_err(|e| at_line(&text, e.column, &e.reason))
        };
        let top = parsed.map_err(|reason| SpecError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        Self::from_map(path, top)
    }

    /// A spec from its parsed text; `path` is where it came from (its folder anchors relative
    /// plugin paths).
    pub fn from_map(path: &Path, mut top: Map<String, Value>) -> Result<Self, SpecError> {
        let invalid = |what: String| SpecError::Invalid {
            path: path.to_owned(),
            what,
        };
        let folder = path.parent().unwrap_or(Path::new("."));
        let plugins = match (top.remove("plugins"), top.remove("config")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give `plugins` (files) or `config` (a wasmeca.toml), not both".into(),
                ));
            }
            (Some(files), None) => Plugins::Files(
                strings(files)
                    .ok_or_else(|| invalid("`plugins` must be a list of file paths".into()))?
                    .into_iter()
                    .map(|f| folder.join(f))
                    .collect(),
            ),
            (None, Some(Value::String(config))) => Plugins::Config(folder.join(config)),
            (None, Some(_)) => return Err(invalid("`config` must be a path".into())),
            (None, None) => Plugins::Config(folder.join("wasmeca.toml")),
        };
        // `fix` is seneca-msg-test's older name for `pattern`.
        let pattern = match top.remove("pattern").or_else(|| top.remove("fix")) {
            None => Map::new(),
            Some(Value::String(text)) => {
                pattern_pairs(&text).map_err(|e| invalid(format!("`pattern` {e}")))?
            }
            Some(_) => {
                return Err(invalid(
                    "`pattern` must be a string such as 'role:user'".into(),
                ));
            }
        };
        let data = object(top.remove("data"), "data").map_err(invalid)?;
        for (base, names) in &data {
            let Value::Object(names) = names else {
                return Err(invalid(format!(
                    "`data.{base}` must be an object of entity names"
                )));
            };
            for (name, ents) in names {
                let Value::Object(ents) = ents else {
                    return Err(invalid(format!(
                        "`data.{base}.{name}` must be an object of ids to entities"
                    )));
                };
                if let Some((id, _)) = ents.iter().find(|(_, e)| !e.is_object()) {
                    return Err(invalid(format!(
                        "`data.{base}.{name}.{id}` must be an entity (an object)"
                    )));
                }
            }
        }
        let allow_missing = match top.remove("allow") {
            None => false,
            Some(Value::Object(mut allow)) => {
                let missing = flag(allow.remove("missing"), "allow.missing").map_err(invalid)?;
                if let Some(key) = allow.keys().next() {
                    return Err(invalid(format!(
                        "`allow.{key}` is not a setting; `allow` has `missing`"
                    )));
                }
                missing
            }
            Some(_) => {
                return Err(invalid(
                    "`allow` must be an object such as {missing: true}".into(),
                ));
            }
        };
        let print = flag(top.remove("print"), "print").map_err(invalid)?;
        let context = object(top.remove("context"), "context").map_err(invalid)?;
        let calls = match top.remove("calls") {
            Some(Value::Array(calls)) => calls
                .into_iter()
                .enumerate()
                .map(|(i, call)| {
                    let call =
                        Call::from_value(call).map_err(|e| invalid(format!("calls[{i}]: {e}")))?;
                    if pattern.is_empty() && call.pattern.is_empty() && call.params.is_empty() {
                        return Err(invalid(format!(
                            "calls[{i}] has no `pattern` and no `params`: nothing to act"
                        )));
                    }
                    Ok(call)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("`calls` must be a list of calls".into())),
            None => return Err(invalid("there are no `calls`".into())),
        };
        // seneca-msg-test settings that change nothing here.
        for ignored in ["test", "log"] {
            top.remove(ignored);
        }
        if let Some(key) = top.keys().next() {
            return Err(invalid(unknown(
                key,
                "the spec",
                "plugins, config, pattern, data, allow, print, context, calls",
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            plugins,
            pattern,
            data,
            allow_missing,
            print,
            context,
            calls,
        })
    }

    /// The configuration to run this spec under: its plugins, with the entity store, the cache
    /// and events in memory, so every run starts from the spec's own `data` and touches
    /// nothing outside.
    pub fn config(&self) -> Result<Config, SpecError> {
        let mut config = match &self.plugins {
            Plugins::Files(files) => Config::from_paths(files),
            Plugins::Config(file) => Config::from_file(file).map_err(|e| SpecError::Invalid {
                path: self.path.clone(),
                what: format!("its plugins: {e}"),
            })?,
        };
        config.data.url = Some("memory://".into());
        config.cache.url = Some("memory://".into());
        config.events.url = None;
        config.watch = false;
        Ok(config)
    }
}

/// Puts each of `files` in place of the source with the same file name (a build of the same
/// plugin elsewhere); answers the files that took a place.
pub fn swap_in<'a>(sources: &mut [PluginSource], files: &'a [PathBuf]) -> Vec<&'a PathBuf> {
    let mut swapped = Vec::new();
    for source in sources.iter_mut() {
        if let Some(file) = files
            .iter()
            .find(|f| f.file_name() == source.path.file_name())
        {
            source.path = file.clone();
            swapped.push(file);
        }
    }
    swapped
}

impl Call {
    fn from_value(value: Value) -> Result<Self, String> {
        let Value::Object(mut call) = value else {
            return Err("a call must be an object with a `pattern`".into());
        };
        if let Some(key) = FUNCTION_KEYS.iter().find(|k| call.contains_key(**k)) {
            return Err(format!(
                "`{key}` takes a function in seneca-msg-test; a spec here is data, so use `out`, `err` and references instead"
            ));
        }
        let name = match call.remove("name") {
            None => None,
            Some(Value::String(name)) if !name.is_empty() => Some(name),
            Some(_) => return Err("`name` must be a non-empty string".into()),
        };
        let pattern = match call.remove("pattern") {
            Some(Value::String(text)) => {
                pattern_pairs(&text).map_err(|e| format!("`pattern` {e}"))?
            }
            None => Map::new(),
            Some(_) => return Err("`pattern` must be a string such as 'cmd:get'".into()),
        };
        let params = object(call.remove("params"), "params")?;
        let out = call.remove("out");
        let err = match call.remove("err") {
            Some(Value::Null) | None => None,
            Some(err @ Value::Object(_)) => Some(err),
            Some(_) => return Err("`err` must be an object such as {code: 'not_found'}".into()),
        };
        let print = flag(call.remove("print"), "print")?;
        let run = match call.remove("run") {
            None => true,
            Some(Value::Bool(run)) => run,
            Some(_) => return Err("`run` must be true or false".into()),
        };
        let line = match call.remove("line") {
            Some(Value::String(line)) => Some(line),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        call.remove("print_context");
        if let Some(key) = call.keys().next() {
            return Err(unknown(
                key,
                "a call",
                "name, pattern, params, out, err, print, run, line",
            ));
        }
        Ok(Self {
            name,
            pattern,
            params,
            out,
            err,
            print,
            run,
            line,
        })
    }

    /// How the report names this call: its name, else its place.
    fn label(&self, index: usize) -> String {
        match (&self.name, &self.line) {
            (Some(name), _) => name.clone(),
            (None, Some(line)) => format!("#{index} ({line})"),
            (None, None) => format!("#{index}"),
        }
    }
}

/// A jsonic pattern's pairs (`role:user,cmd:get`).
fn pattern_pairs(text: &str) -> Result<Map<String, Value>, String> {
    parse_jsonic(text).map_err(|e| e.to_string())
}

/// The line and column of a 1-based character column in `text`, for a parse error.
fn at_line(text: &str, column: usize, reason: &str) -> String {
    let before: String = text.chars().take(column.saturating_sub(1)).collect();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}: {reason}")
}

fn strings(value: Value) -> Option<Vec<String>> {
    match value {
        Value::String(one) => Some(vec![one]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn object(value: Option<Value>, key: &str) -> Result<Map<String, Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(format!("`{key}` must be an object")),
    }
}

fn flag(value: Option<Value>, key: &str) -> Result<bool, String> {
    match value {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(format!("`{key}` must be true or false")),
    }
}

fn unknown(key: &str, what: &str, known: &str) -> String {
    format!("`{key}` is not a key of {what} (known: {known})")
}

/// The spec files at `path`: the file itself, or every `*.spec.jsonic` / `*.spec.json` under
/// the folder (not looking into hidden folders, `target`, `node_modules`, `dist` or linked
/// folders), sorted.
pub fn find_specs(path: &Path) -> Result<Vec<PathBuf>, SpecError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| SpecError::Read {
            path: folder.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let entry_path = entry.path();
            // Not following symbolic links to folders: one pointing up would never end.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let skipped = name.starts_with('.')
                    || ["target", "node_modules", "dist"].contains(&name.as_str());
                if !skipped {
                    folders.push(entry_path);
                }
            } else if is_spec(&name) {
                found.push(entry_path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_spec(file_name: &str) -> bool {
    SPEC_ENDINGS.iter().any(|e| file_name.ends_with(e))
}

/// The spec of a built plugin `file`, when one sits beside it: `NAME.spec.jsonic` (or
/// `.json`) in the file's folder or a folder above it, up to its project's root (the first
/// folder with a `wasmeca.toml`, a `Cargo.toml` or `.git`), or in a folder `NAME` there, or in
/// `*/NAME` under the root (a Cargo workspace member such as `plugins/NAME`, whose build lands
/// in the root's `target/`). NAME is the file's stem, with `_` read as `-` too.
pub fn spec_beside(file: &Path) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    let mut names = vec![stem.clone()];
    if stem.contains('_') {
        names.push(stem.replace('_', "-"));
    }
    let in_folder = |folder: &Path| {
        names.iter().find_map(|name| {
            SPEC_ENDINGS.iter().find_map(|ending| {
                [folder.to_owned(), folder.join(name)]
                    .into_iter()
                    .map(|f| f.join(format!("{name}{ending}")))
                    .find(|candidate| candidate.is_file())
            })
        })
    };
    // Canonical, so `..` in the path cannot make a folder look like its own parent's child.
    let absolute = std::fs::canonicalize(file)
        .or_else(|_| std::path::absolute(file))
        .ok()?;
    for folder in absolute.ancestors().skip(1) {
        if let Some(found) = in_folder(folder) {
            return Some(found);
        }
        let root = ["wasmeca.toml", "Cargo.toml", ".git"]
            .iter()
            .any(|marker| folder.join(marker).exists());
        if root {
            let mut groups: Vec<PathBuf> = std::fs::read_dir(folder)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            groups.sort();
            return groups
                .iter()
                .find_map(|group| names.iter().find_map(|name| in_folder(&group.join(name))));
        }
    }
    None
}

/// How long a call waits for the events it published to be handled before the next call.
const SETTLE: Duration = Duration::from_secs(10);

/// Runs `spec` in `router` (made from [`Spec::config`], serving nothing yet): seeds the store
/// with its `data`, loads `sources`, acts each call in order — after the events of the calls
/// before it have been handled — and holds each answer against what the spec expects.
pub async fn run(spec: &Spec, router: Router, sources: &[PluginSource]) -> SpecReport {
    let started = Instant::now();
    let mut report = SpecReport::new(spec);
    if let Err(problem) = seed(&router, &spec.data).await {
        report.setup = Some(problem);
        return report;
    }
    let registry = router.registry();
    let before: BTreeSet<String> = registry
        .snapshot()
        .plugins()
        .iter()
        .map(|p| p.key())
        .collect();
    match registry.load_all(sources).await {
        Ok(loaded) => report.plugins = loaded.iter().map(|p| p.key()).collect(),
        Err(e) => {
            report.setup = Some(format!("the plugins did not load: {e}"));
            return report;
        }
    }
    let mut done = spec.context.clone();
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    for (index, call) in spec.calls.iter().enumerate() {
        let outcome = act_one(spec, call, &router, &mut done, &mut covered).await;
        report.calls.push(CallReport {
            label: call.label(index),
            message: outcome.0,
            time: outcome.1,
            outcome: outcome.2,
        });
    }
    // Every pattern of the plugins under test (within the spec's pattern) needs a call.
    let snapshot = registry.snapshot();
    for plugin in snapshot
        .plugins()
        .iter()
        .filter(|p| !before.contains(&p.key()))
    {
        for action in &plugin.actions {
            let within = spec.pattern.iter().all(|(k, v)| {
                action.pattern.get(k) == Some(crate::pattern::match_string(Some(v)).as_ref())
            });
            if within && !covered.contains(&(plugin.key(), action.pattern.to_string())) {
                report
                    .missing
                    .push(format!("{} ({})", action.source, plugin.key()));
            }
        }
    }
    report.allow_missing = spec.allow_missing;
    report.time = started.elapsed();
    report
}

/// Puts the spec's entities in the store, each saved by id (created, or merged into what is
/// there).
async fn seed(router: &Router, data: &Map<String, Value>) -> Result<(), String> {
    for (base, names) in data {
        for (name, ents) in names.as_object().into_iter().flatten() {
            for (id, ent) in ents.as_object().into_iter().flatten() {
                let mut ent = ent.as_object().cloned().unwrap_or_default();
                ent.entry("id").or_insert_with(|| Value::String(id.clone()));
                let mut msg = json!({"sys": "entity", "cmd": "save", "name": name, "ent": ent});
                if base != "-" {
                    msg["base"] = Value::String(base.clone());
                }
                let msg = Message::new(msg.as_object().cloned().unwrap_or_default());
                if let Err(e) = router.act(msg).await {
                    return Err(format!("data.{base}.{name}.{id} was not saved: {e}"));
                }
            }
        }
    }
    Ok(())
}

/// Acts one call; answers the message as shown, its time and the outcome.
async fn act_one(
    spec: &Spec,
    call: &Call,
    router: &Router,
    done: &mut Map<String, Value>,
    covered: &mut BTreeSet<(String, String)>,
) -> (String, Duration, Outcome) {
    let message_of = |params: &Map<String, Value>| {
        let mut msg = params.clone();
        msg.extend(spec.pattern.clone());
        msg.extend(call.pattern.clone());
        msg
    };
    let params = match resolve(&Value::Object(call.params.clone()), done) {
        Ok(Value::Object(params)) => params,
        Ok(_) => Map::new(),
        Err(e) => {
            let shown = Value::Object(message_of(&call.params)).to_string();
            return (
                shown,
                Duration::ZERO,
                Outcome::failed(vec![e.to_string()], None),
            );
        }
    };
    let msg = message_of(&params);
    let shown = Value::Object(msg.clone()).to_string();
    if !call.run {
        return (shown, Duration::ZERO, Outcome::Skipped);
    }
    let message = Message::new(msg.clone());
    if let Ok(Resolution::Found(Target::Local(action))) =
        router.registry().snapshot().resolve(&message)
    {
        covered.insert((action.plugin.key(), action.pattern.to_string()));
    }
    let started = Instant::now();
    let answer = router.act(message).await;
    let time = started.elapsed();
    let _ = tokio::time::timeout(SETTLE, router.events_settled()).await;
    let (out, err) = match &answer {
        Ok(reply) => (reply.to_value(), Value::Null),
        Err(e) => (Value::Null, e.to_seneca_json()),
    };
    let record = json!({
        "pattern": Value::Object(call.pattern.clone()),
        "params": Value::Object(params),
        "msg": Value::Object(msg),
        "out": out,
        "err": err,
    });
    if let Some(name) = &call.name {
        done.insert(name.clone(), record);
    }
    let answer_text = match &answer {
        Ok(reply) => reply.as_str().to_owned(),
        Err(e) => e.to_seneca_json().to_string(),
    };
    let mut problems = Vec::new();
    match (&answer, &call.err) {
        (Err(e), None) => problems.push(format!("error not expected: {} ({})", e.message, e.code)),
        (Ok(_), Some(_)) => problems.push("an error was expected, the call answered".into()),
        (Err(_), Some(want)) => match resolve(want, done) {
            Ok(want) => problems.extend(
                differences("err", &want, &err)
                    .iter()
                    .map(ToString::to_string),
            ),
            Err(e) => problems.push(e.to_string()),
        },
        (Ok(_), None) => {}
    }
    if let (Ok(reply), Some(want)) = (&answer, &call.out) {
        match resolve(want, done) {
            Ok(Value::Null) if !reply.is_null() => {
                problems.push("out: expected no answer (null), got one".into());
            }
            Ok(want) => problems.extend(
                differences("out", &want, &out)
                    .iter()
                    .map(ToString::to_string),
            ),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let outcome = if problems.is_empty() {
        Outcome::Passed {
            answer: (spec.print || call.print).then_some(answer_text),
        }
    } else {
        Outcome::failed(problems, Some(answer_text))
    };
    (shown, time, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<Spec, String> {
        let top = parse_jsonic(text).map_err(|e| e.to_string())?;
        Spec::from_map(Path::new("p/user.spec.jsonic"), top).map_err(|e| e.to_string())
    }

    #[test]
    fn a_spec_reads_as_seneca_msg_test_writes_it() {
        let read = spec(
            "plugins: ['../dist/user.wasm']\npattern: 'role:user'\n\
             data: { '-': { user: { u1: { name: 'Ann' } } } }\n\
             calls: [\n  { name: 'a', pattern: 'cmd:get', params: { id: 'u1' }, out: { name: 'Ann' } }\n  \
             { pattern: 'cmd:get', params: { id: 'x' }, err: { code: 'not_found' }, out: null }\n  \
             { pattern: 'cmd:zed', run: false, line: 'spec:9' }\n]",
        )
        .expect("a spec");
        assert_eq!(
            read.plugins,
            Plugins::Files(vec![PathBuf::from("p/../dist/user.wasm")])
        );
        assert_eq!(read.pattern, parse_jsonic("role:user").expect("pairs"));
        assert_eq!(read.calls.len(), 3);
        assert_eq!(read.calls[0].name.as_deref(), Some("a"));
        assert_eq!(read.calls[0].out, Some(json!({"name": "Ann"})));
        assert_eq!(read.calls[1].out, Some(Value::Null));
        assert_eq!(read.calls[1].err, Some(json!({"code": "not_found"})));
        assert!(!read.calls[2].run);
        assert_eq!(read.calls[2].label(2), "#2 (spec:9)");
        assert!(!read.allow_missing);
        // No plugins named: the wasmeca.toml beside the spec.
        let read = spec("fix: 'role:user', calls: [{pattern: 'cmd:x'}], allow: {missing: true}")
            .expect("a spec");
        assert_eq!(
            read.plugins,
            Plugins::Config(PathBuf::from("p/wasmeca.toml"))
        );
        assert_eq!(read.pattern, parse_jsonic("role:user").expect("pairs"));
        assert!(read.allow_missing);
    }

    #[test]
    fn what_is_not_a_spec_is_named_with_its_place() {
        let error = |text: &str| spec(text).expect_err(text);
        assert_eq!(
            error("calls: [{pattern: 'a:1'}], plugin: ['x']"),
            "p/user.spec.jsonic: `plugin` is not a key of the spec (known: plugins, config, \
             pattern, data, allow, print, context, calls)"
        );
        assert_eq!(
            error("calls: [{pattern: 'a:1'}, {pattern: 'b:2', verify: 'x'}]"),
            "p/user.spec.jsonic: calls[1]: `verify` takes a function in seneca-msg-test; a spec \
             here is data, so use `out`, `err` and references instead"
        );
        assert_eq!(
            error("calls: [{params: {}}]"),
            "p/user.spec.jsonic: calls[0] has no `pattern` and no `params`: nothing to act"
        );
        assert_eq!(
            error("plugins: ['a'], config: 'b', calls: []"),
            "p/user.spec.jsonic: give `plugins` (files) or `config` (a wasmeca.toml), not both"
        );
        assert_eq!(
            error("data: { shop: { item: { i1: 3 } } }, calls: []"),
            "p/user.spec.jsonic: `data.shop.item.i1` must be an entity (an object)"
        );
        assert_eq!(
            error("pattern: 'a:1'"),
            "p/user.spec.jsonic: there are no `calls`"
        );
        assert_eq!(
            at_line("a: 1\nb: [\n  x", 14, "unclosed"),
            "line 3, column 4: unclosed"
        );
    }

    #[test]
    fn a_build_takes_the_place_of_the_source_with_its_file_name() {
        let mut sources = vec![
            PluginSource::new("target/a/user.wasm"),
            PluginSource::new("target/a/audit.wasm"),
        ];
        let builds = [
            PathBuf::from("/ci/out/audit.wasm"),
            PathBuf::from("/ci/out/x.wasm"),
        ];
        assert_eq!(swap_in(&mut sources, &builds), vec![&builds[0]]);
        assert_eq!(sources[0].path, PathBuf::from("target/a/user.wasm"));
        assert_eq!(sources[1].path, PathBuf::from("/ci/out/audit.wasm"));
    }
}
