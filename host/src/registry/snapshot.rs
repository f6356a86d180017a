//! One immutable view of the plugin set: the plugins in load order and the patrun trie built
//! from their actions and the client pins, with Seneca's override and `prior` rules and
//! `$version` resolution. An [`Action`] answers a message with its plugin's instances or native
//! code.

use std::sync::Arc;

use semver::VersionReq;
use serde_json::json;

use crate::error::{ActError, Code};
use crate::message::{Message, Reply};
use crate::metrics::{Metrics, ObserverMetrics, PatternMetrics};
use crate::pattern::{Found, Patrun};
use crate::pattern::{Glob, Pattern, match_string};
use crate::plugins::{Backend, Plugin};
use crate::principal::{Caller, Principal};
use crate::remote::ClientEntry;
use crate::runtime::{BoxFuture, Call, CallCtx, Handler};

/// One action in the trie: which plugin, which of its actions, and what it overrode.
pub struct Action {
    /// The plugin serving it.
    pub plugin: Arc<Plugin>,
    /// Index into the plugin's actions (what `handle` receives).
    pub index: u32,
    /// Canonical pattern text, for logs and errors.
    pub pattern: Arc<str>,
    /// The plugin as the caller of what its action acts, shared by every call's context.
    caller: Arc<Caller>,
    /// What this action overrode: the same pattern added earlier by another plugin, or the
    /// wider pattern (a plugin's or a client's) that matched it when it was added (Seneca's
    /// `priordef`).
    pub prior: Option<Arc<dyn Handler>>,
    /// Counters and latency for this pattern and plugin, created once.
    metrics: PatternMetrics,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.pattern, self.plugin.key())
    }
}

impl Action {
    /// True when the action records each act it answers in a span of its own (the host's
    /// store, [`Handler::spans_itself`]): the act makes none.
    pub fn spans_itself(&self) -> bool {
        match &self.plugin.backend {
            Backend::Native(handlers) => handlers
                .get(self.index as usize)
                .is_some_and(|handler| handler.spans_itself()),
            Backend::Wasm(_) => false,
        }
    }

    /// Answers `msg` under `ctx`: a plugin instance (whose answer must be an object, an array
    /// or null) or native code; recorded in the pattern's metrics.
    pub async fn answer(&self, msg: Message, mut ctx: CallCtx) -> Result<Reply, ActError> {
        let started = std::time::Instant::now();
        let tx = ctx.tx.clone();
        let answer = match &self.plugin.backend {
            Backend::Wasm(pool) => {
                // The guest's own acts are made by this plugin; its `prior` goes on for
                // whoever sent this message. A native action (the data store, say) passes its
                // caller through, so it can judge who is asking.
                ctx.principal.answered_by(&self.caller);
                let json = msg.to_json();
                let out = pool
                    .call(
                        Call::Handle(self.index),
                        json,
                        ctx,
                        self.prior.clone(),
                        &self.pattern,
                    )
                    .await;
                out.and_then(|out| {
                    Reply::from_json(out).map_err(|what| {
                        ActError::host(
                            Code::ResultNotObjarr,
                            format!(
                                "The result of action {} ({}) must be an object, an array or null, not {what}.",
                                self.pattern,
                                self.plugin.key()
                            ),
                        )
                    })
                })
            }
            Backend::Native(handlers) => match handlers.get(self.index as usize) {
                // Native code waits on sockets (a store, a peer): the act's deadline bounds
                // it, so a dependency that stops answering cannot hold the caller past it.
                Some(handler) => {
                    let (deadline, timeout) = (ctx.deadline, ctx.timeout);
                    match tokio::time::timeout_at(deadline, handler.call(msg, ctx)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(ActError::timeout(&self.pattern, timeout)),
                    }
                }
                None => Err(ActError::host(
                    Code::PluginTrap,
                    format!("{} has no native handler {}", self.plugin.key(), self.index),
                )),
            },
        };
        let code = answer.as_ref().err().map(|e| e.code.as_str());
        self.metrics.record(started.elapsed(), code);
        if let Err(e) = &answer {
            let (plugin, pattern, tx, code) = (self.plugin.key(), &*self.pattern, &*tx, &e.code);
            // The host's own failures (traps, timeouts) are worth a warning; a plugin's own
            // errors are answers like any other.
            if e.http_status() >= 500 {
                tracing::warn!(plugin, pattern, tx, code, "act failed: {}", e.message);
            } else {
                tracing::debug!(plugin, pattern, tx, code, "act failed: {}", e.message);
            }
        }
        answer
    }
}

impl Action {
    /// How many acts it answered, and how many of them with an error (shared by every version
    /// of the pattern, as its metrics are).
    pub fn counts(&self) -> (u64, u64) {
        self.metrics.counts()
    }
}

impl Handler for Action {
    fn call(&self, msg: Message, ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
        Box::pin(self.answer(msg, ctx))
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// How one pair of an observer's pattern tests an event's value.
#[derive(Debug, Clone)]
enum Test {
    /// The value's `String(value)` is this text.
    Is(String),
    /// The value matches this glob.
    Like(Glob),
}

/// One observer: a plugin's event pattern and the instance export that handles the events.
pub struct Observer {
    /// The plugin observing.
    pub plugin: Arc<Plugin>,
    /// Index into the plugin's observers (what `observe` receives).
    pub index: u32,
    /// The pattern, canonical.
    pub pattern: Pattern,
    /// The pattern's pairs as tests, compiled once.
    tests: Vec<(String, Test)>,
    /// The plugin as the caller of what the observer acts.
    caller: Arc<Caller>,
    /// Events delivered to it and failed, created once.
    pub metrics: ObserverMetrics,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "observer {} ({})", self.pattern, self.plugin.key())
    }
}

impl Observer {
    fn new(
        plugin: &Arc<Plugin>,
        index: usize,
        pattern: &Pattern,
        caller: &Arc<Caller>,
        metrics: &Metrics,
    ) -> Self {
        let tests = pattern
            .pairs()
            .iter()
            .map(|(key, value)| {
                let test = if Glob::is_glob(value) {
                    Test::Like(Glob::new(value))
                } else {
                    Test::Is(value.clone())
                };
                (key.clone(), test)
            })
            .collect();
        let text = pattern.to_string();
        Self {
            metrics: metrics.observer(&text),
            plugin: plugin.clone(),
            index: index as u32,
            pattern: pattern.clone(),
            tests,
            caller: caller.clone(),
        }
    }

    /// True when every pair of the pattern holds for `event` (a key the pattern names must be
    /// there; globs as in actions).
    pub fn matches(&self, event: &Message) -> bool {
        self.tests.iter().all(|(key, test)| {
            let value = event.get(key.as_str());
            match test {
                Test::Is(text) => value.is_some() && match_string(value) == text.as_str(),
                Test::Like(glob) => glob.matches_value(value),
            }
        })
    }

    /// Runs the observer on `event` under `ctx`; its answer is discarded.
    pub async fn observe(&self, event: &Message, mut ctx: CallCtx) -> Result<(), ActError> {
        let Backend::Wasm(pool) = &self.plugin.backend else {
            return Ok(());
        };
        ctx.principal = Principal::plugin(&self.caller);
        let pattern = self.pattern.to_string();
        let outcome = pool
            .call(
                Call::Observe(self.index),
                event.to_json(),
                ctx,
                None,
                &pattern,
            )
            .await
            .map(drop);
        match &outcome {
            Ok(()) => self.metrics.delivered(),
            Err(_) => self.metrics.failed(),
        }
        outcome
    }
}

/// Who answers a message.
#[derive(Clone, Debug)]
pub enum Target {
    /// An action in this host (a plugin's or native).
    Local(Arc<Action>),
    /// A `[[client]]` transport to another service.
    Remote(Arc<ClientEntry>),
}

impl Target {
    /// The target as a handler, for a running action's `prior`.
    fn handler(&self) -> Arc<dyn Handler> {
        match self {
            Self::Local(action) => action.clone(),
            Self::Remote(client) => client.clone(),
        }
    }
}

/// All versions of one plugin name at a pattern.
#[derive(Debug, Clone)]
struct Group {
    /// The plugin name.
    name: String,
    /// One action per loaded version, highest version first.
    versions: Vec<Arc<Action>>,
}

/// The data at a trie node: the plugins serving that exact pattern (latest-added last), and a
/// client pinned on it.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// By plugin name; the last group wins (later adds override earlier ones, as in Seneca).
    groups: Vec<Group>,
    /// A client whose pin is exactly this pattern; plugins on the same pattern win over it.
    remote: Option<Arc<ClientEntry>>,
}

/// What a slot says about a version pin.
enum Winner<'a> {
    /// This target answers.
    Found(Target),
    /// The winning plugin has no version satisfying the pin.
    NoVersion(&'a Group),
    /// Nothing is stored here.
    Empty,
}

impl Slot {
    /// The winning group's highest version satisfying `req` (any when `None`), else the client.
    fn winner(&self, req: Option<&VersionReq>) -> Winner<'_> {
        let Some(group) = self.groups.last() else {
            return match &self.remote {
                Some(remote) => Winner::Found(Target::Remote(remote.clone())),
                None => Winner::Empty,
            };
        };
        let found = match req {
            None => group.versions.first(),
            Some(req) => group
                .versions
                .iter()
                .find(|a| req.matches(&a.plugin.version)),
        };
        match found {
            Some(action) => Winner::Found(Target::Local(action.clone())),
            None => Winner::NoVersion(group),
        }
    }
}

/// What the set says about a message.
#[derive(Debug)]
pub enum Resolution {
    /// This target answers.
    Found(Target),
    /// Only the catch-all `{}` matched: this target answers unless a peer serves the message
    /// with a real pattern (Seneca's last resort stays the last resort across hosts).
    CatchAll(Target),
    /// A pattern matched, but no loaded version satisfies the pin.
    VersionMissing(ActError),
    /// No pattern matched.
    NotFound,
}

/// An immutable snapshot of the loaded plugins and their routing trie.
pub struct Snapshot {
    /// Tells this snapshot from the ones before and after it.
    generation: u64,
    /// Plugins in load order (later ones win ties).
    plugins: Vec<Arc<Plugin>>,
    /// Patterns to slots.
    trie: Patrun<Slot>,
    /// Every observer of every plugin, in load order.
    observers: Vec<Arc<Observer>>,
}

impl Snapshot {
    /// Builds the trie: clients first, then plugins in load order.
    pub fn new(
        generation: u64,
        clients: Arc<[Arc<ClientEntry>]>,
        metrics: &Metrics,
        plugins: Vec<Arc<Plugin>>,
    ) -> Self {
        let mut trie = Patrun::new();
        for client in clients.iter() {
            trie.slot(&client.pin)
                .get_or_insert_with(Slot::default)
                .remote = Some(client.clone());
        }
        let mut set = Self {
            generation,
            plugins: Vec::with_capacity(plugins.len()),
            trie,
            observers: Vec::new(),
        };
        for plugin in plugins {
            set.add(plugin, metrics);
        }
        set
    }

    fn add(&mut self, plugin: Arc<Plugin>, metrics: &Metrics) {
        let key = plugin.key();
        let caller = Arc::new(Caller {
            name: plugin.name.clone(),
            data: plugin.data.clone(),
        });
        for (index, decl) in plugin.actions.iter().enumerate() {
            let pattern = &decl.pattern;
            // Seneca's priordef: whatever a non-exact find of the pattern returns before the add.
            let wider = self
                .trie
                .find(pattern)
                .and_then(|slot| match slot.winner(None) {
                    Winner::Found(target) => Some(target.handler()),
                    _ => None,
                });
            let slot = self.trie.slot(pattern).get_or_insert_with(Slot::default);
            let mut group = match slot.groups.iter().position(|g| g.name == plugin.name) {
                Some(i) => slot.groups.remove(i),
                None => Group {
                    name: plugin.name.clone(),
                    versions: Vec::new(),
                },
            };
            let prior: Option<Arc<dyn Handler>> = match group
                .versions
                .iter()
                .position(|a| a.plugin.version == plugin.version)
            {
                // The same plugin declares the pattern again: the later declaration overrides.
                Some(i) => Some(group.versions.remove(i)),
                // Another version of the same plugin: they share what they override.
                None if !group.versions.is_empty() => group.versions[0].prior.clone(),
                None => wider,
            };
            let pattern_text = pattern.to_string();
            let action = Arc::new(Action {
                metrics: metrics.pattern(&pattern_text, &key),
                plugin: plugin.clone(),
                index: index as u32,
                pattern: pattern_text.into(),
                caller: caller.clone(),
                prior,
            });
            let at = group
                .versions
                .partition_point(|a| a.plugin.version > plugin.version);
            group.versions.insert(at, action);
            slot.groups.push(group);
        }
        for (index, decl) in plugin.observers.iter().enumerate() {
            let observer = Observer::new(&plugin, index, &decl.pattern, &caller, metrics);
            self.observers.push(Arc::new(observer));
        }
        self.plugins.push(plugin);
    }

    /// Tells this snapshot from others: each new one has a higher generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The plugins, in load order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Every action, each pattern's winner first.
    pub fn actions(&self) -> Vec<&Arc<Action>> {
        self.trie
            .list()
            .into_iter()
            .flat_map(|(_, slot)| slot.groups.iter().rev())
            .flat_map(|group| group.versions.iter())
            .collect()
    }

    /// The observers whose pattern matches `event`: every one of them, not only the most
    /// specific.
    pub fn observers_of(&self, event: &Message) -> Vec<Arc<Observer>> {
        self.observers
            .iter()
            .filter(|o| o.matches(event))
            .cloned()
            .collect()
    }

    /// Every observer, for the event bindings a broker needs.
    pub fn observers(&self) -> &[Arc<Observer>] {
        &self.observers
    }

    /// The plugin with this `name@version`.
    pub fn get(&self, key: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.key() == key)
    }

    /// Who answers `msg` here, as [`resolve`](Self::resolve) finds it: a plugin's
    /// `name@version`, or `client <url>` for a `[[client]]` pin; `None` when nothing here
    /// does (a peer may), for the traces the REPL shows.
    pub fn answerer(&self, msg: &Message) -> Option<String> {
        match self.resolve(msg).ok()? {
            Resolution::Found(target) | Resolution::CatchAll(target) => Some(match target {
                Target::Local(action) => action.plugin.key(),
                Target::Remote(client) => format!("client {}", client.remote.describe()),
            }),
            Resolution::VersionMissing(_) | Resolution::NotFound => None,
        }
    }

    /// Which target answers `msg`, honouring a `$version` pin.
    pub fn resolve(&self, msg: &Message) -> Result<Resolution, ActError> {
        let (slot, catch_all) = match self.trie.find_match(&**msg) {
            None => return Ok(Resolution::NotFound),
            Some(Found::Pattern(slot)) => (slot, false),
            Some(Found::CatchAll(slot)) => (slot, true),
        };
        let req = msg.version_req()?;
        Ok(match slot.winner(req.as_ref()) {
            Winner::Found(target) if catch_all => Resolution::CatchAll(target),
            Winner::Found(target) => Resolution::Found(target),
            Winner::Empty => Resolution::NotFound,
            Winner::NoVersion(group) => {
                let versions: Vec<String> = group
                    .versions
                    .iter()
                    .map(|a| a.plugin.version.to_string())
                    .collect();
                let req = req.map(|r| r.to_string()).unwrap_or_default();
                Resolution::VersionMissing(
                    ActError::host(
                        Code::VersionNotFound,
                        format!(
                            "no version of {} satisfies $version {req}; loaded: {}",
                            group.name,
                            if versions.is_empty() {
                                "none".to_owned()
                            } else {
                                versions.join(", ")
                            }
                        ),
                    )
                    .with_details(
                        json!({ "plugin": group.name, "requirement": req, "versions": versions }),
                    ),
                )
            }
        })
    }
}
