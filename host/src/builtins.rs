//! Seneca's own built-in actions that a Seneca client may call, answered natively the way Node
//! Seneca 3.38 answers them: `role:seneca,cmd:ping`, `role:seneca,cmd:stats` (and the legacy
//! `role:seneca,stats:true`), `role:seneca,info:fatal` and `role:transport,cmd:inflight`.
//! `role:seneca,cmd:close` is deliberately not served: in Node anyone who reaches the port can
//! close the listener with it.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use semver::Version;
use serde_json::{Map, Value, json};

use crate::error::ActError;
use crate::message::{Message, Reply};
use crate::metrics::Metrics;
use crate::pattern::Pattern;
use crate::plugins::Plugin;
use crate::registry::WeakRegistry;
use crate::router::Router;
use crate::runtime::{BoxFuture, CallCtx, Handler};

/// The name the built-ins are served under (Seneca's root plugin is `root$`).
pub const NAME: &str = "seneca";

/// What the built-ins read: the process, and the plugin set's counters.
struct Facts {
    /// This host's Seneca instance id.
    id: Arc<str>,
    /// When the host started, as Node's `start`.
    started: SystemTime,
    /// The same moment on the monotonic clock, for `uptime`.
    started_at: Instant,
    /// The plugin set, for per-pattern counts (weak: the set holds these actions).
    registry: WeakRegistry,
    /// History hits, for `act.cache`.
    metrics: Arc<Metrics>,
}

/// One built-in action.
#[derive(Clone, Copy)]
enum Builtin {
    /// `role:seneca,cmd:ping`.
    Ping,
    /// `role:seneca,cmd:stats` and `role:seneca,stats:true`.
    Stats,
    /// `role:seneca,info:fatal`: acknowledged, nothing done.
    Fatal,
    /// `role:transport,cmd:inflight`: no client calls are tracked per transport.
    Inflight,
}

/// A built-in with what it reads.
struct BuiltinHandler {
    /// Which one.
    builtin: Builtin,
    /// Shared by all of them.
    facts: Arc<Facts>,
}

/// Installs the built-ins in `router`'s registry, before any plugin, so plugins can override
/// them and reach them with `prior`.
pub fn install(router: &Router) {
    let registry = router.registry();
    let facts = Arc::new(Facts {
        id: router.instance_id().into(),
        started: SystemTime::now(),
        started_at: Instant::now(),
        registry: registry.downgrade(),
        metrics: registry.metrics().clone(),
    });
    let actions = [
        ("role:seneca,cmd:ping", Builtin::Ping),
        ("role:seneca,cmd:stats", Builtin::Stats),
        ("role:seneca,stats:true", Builtin::Stats),
        ("role:seneca,info:fatal", Builtin::Fatal),
        ("role:transport,cmd:inflight", Builtin::Inflight),
    ];
    let handlers = actions
        .into_iter()
        .filter_map(|(pattern, builtin)| {
            let pattern = Pattern::parse(pattern).ok()?;
            let action: Arc<dyn Handler> = Arc::new(BuiltinHandler {
                builtin,
                facts: facts.clone(),
            });
            Some((pattern, action))
        })
        .collect();
    let version = Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
    registry.install(Arc::new(Plugin::native(NAME, version, handlers)));
}

impl Handler for BuiltinHandler {
    fn call(&self, msg: Message, _ctx: CallCtx) -> BoxFuture<'_, Result<Reply, ActError>> {
        let answer = match self.builtin {
            Builtin::Ping => self.facts.ping(),
            Builtin::Stats => self.facts.stats(&msg),
            Builtin::Fatal => Value::Null,
            Builtin::Inflight => json!({}),
        };
        Box::pin(std::future::ready(Ok(Reply::from_value(&answer))))
    }

    fn describe(&self) -> String {
        format!("{NAME} built-in")
    }
}

/// Per pattern: calls, done, fails; and the plugin serving it.
struct Counts {
    /// `name@version` of the serving plugin.
    plugin: String,
    /// Acts answered without an error.
    done: u64,
    /// Acts answered with an error.
    fails: u64,
}

impl Facts {
    fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }

    /// Every pattern served with its counts (the winning version's plugin).
    fn counts(&self) -> Vec<(String, Counts)> {
        let Some(registry) = self.registry.upgrade() else {
            return Vec::new();
        };
        let snapshot = registry.snapshot();
        let mut out: Vec<(String, Counts)> = Vec::new();
        for action in snapshot.actions() {
            if out.iter().any(|(p, _)| **p == *action.pattern) {
                continue;
            }
            let (done, fails) = action.counts();
            out.push((
                action.pattern.to_string(),
                Counts {
                    plugin: action.plugin.key(),
                    done,
                    fails,
                },
            ));
        }
        out
    }

    /// Seneca's global `act` counters.
    fn act(&self, counts: &[(String, Counts)]) -> Value {
        let done: u64 = counts.iter().map(|(_, c)| c.done + c.fails).sum();
        let fails: u64 = counts.iter().map(|(_, c)| c.fails).sum();
        json!({ "calls": done, "done": done, "fails": fails, "cache": self.metrics.history_hits() })
    }

    fn ping(&self) -> Value {
        let (user, system) = cpu_micros();
        json!({
            "now": epoch_ms(SystemTime::now()),
            "uptime": self.uptime_ms(),
            "id": &*self.id,
            "cpu": { "user": user, "system": system },
            "mem": { "rss": rss_bytes() },
            "act": self.act(&self.counts()),
            "tr": [],
        })
    }

    /// The summary; with `summary: false` also the `actmap`; with `pattern` (canonical, as
    /// Seneca lists it) that pattern's entry, or the summary when there is none.
    fn stats(&self, msg: &Message) -> Value {
        let counts = self.counts();
        let entry = |(pattern, c): &(String, Counts)| {
            let name = c.plugin.split('@').next().unwrap_or(&c.plugin).to_owned();
            (
                pattern.clone(),
                json!({
                    "id": format!("{}/{pattern}", c.plugin),
                    "plugin": { "full": c.plugin, "name": name },
                    "prior": "",
                    "calls": c.done + c.fails,
                    "done": c.done,
                    "fails": c.fails,
                }),
            )
        };
        if let Some(wanted) = msg.get("pattern").and_then(Value::as_str)
            && let Some(found) = counts.iter().find(|(p, _)| p == wanted)
        {
            return entry(found).1;
        }
        // Seneca reads the flag as `!!JSON.parse(v)`: anything that is not JSON is false.
        let summary = match msg.get("summary") {
            None => true,
            Some(Value::String(text)) => {
                serde_json::from_str::<Value>(text).is_ok_and(|v| truthy(&v))
            }
            Some(v) => truthy(v),
        };
        let mut out = Map::new();
        out.insert("start".into(), json!(iso8601(self.started)));
        out.insert("act".into(), self.act(&counts));
        if !summary {
            out.insert(
                "actmap".into(),
                Value::Object(counts.iter().map(entry).collect()),
            );
        }
        out.insert("now".into(), json!(iso8601(SystemTime::now())));
        out.insert("uptime".into(), json!(self.uptime_ms()));
        Value::Object(out)
    }
}

/// JavaScript's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-12-02T04:37:08.135Z`, as JavaScript's `Date.toISOString`.
fn iso8601(t: SystemTime) -> String {
    let ms = epoch_ms(t);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

/// This process's user and system CPU time in µs (Linux `/proc/self/stat`; 0 elsewhere).
fn cpu_micros() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0, 0);
    };
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are the 14th and 15th fields, in clock ticks of 10 ms.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) * 10_000, ticks(12) * 10_000)
}

/// This process's resident memory in bytes (Linux `/proc/self/statm`; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::router::ActLimits;
    use crate::runtime::Runtime;

    fn router() -> Router {
        let runtime = Runtime::new(None, 1 << 20).expect("an engine");
        let metrics = Arc::new(Metrics::default());
        let registry = Registry::new(
            runtime,
            Vec::new(),
            metrics,
            crate::registry::LoadLimits::default(),
        );
        let router = Router::new(registry, ActLimits::default(), "me/1/2/3/wasmeca".into());
        install(&router);
        router
    }

    async fn act(router: &Router, msg: Value) -> Value {
        let Value::Object(map) = msg else {
            panic!("an object")
        };
        let answer = router.act(Message::new(map)).await;
        answer.unwrap_or_else(|e| panic!("{e}")).to_value()
    }

    #[tokio::test]
    async fn ping_and_stats_answer_as_seneca_does() {
        let r = router();
        let ping = act(&r, json!({"role": "seneca", "cmd": "ping"})).await;
        assert_eq!(ping["id"], "me/1/2/3/wasmeca");
        assert!(ping["now"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(ping["mem"]["rss"].as_u64().unwrap() > 0);
        assert_eq!(ping["tr"], json!([]));
        // The ping itself is counted once it answered.
        let stats = act(&r, json!({"role": "seneca", "cmd": "stats"})).await;
        assert_eq!(
            stats["act"],
            json!({"calls": 1, "done": 1, "fails": 0, "cache": 0})
        );
        assert!(stats["start"].as_str().unwrap().ends_with('Z'));
        assert!(stats.get("actmap").is_none());
        let full = act(
            &r,
            json!({"role": "seneca", "stats": true, "summary": "false"}),
        )
        .await;
        assert_eq!(full["actmap"]["cmd:ping,role:seneca"]["calls"], 1);
        assert_eq!(
            full["actmap"]["cmd:ping,role:seneca"]["plugin"]["name"],
            NAME
        );
        let one = act(
            &r,
            json!({"role": "seneca", "cmd": "stats", "pattern": "cmd:ping,role:seneca"}),
        )
        .await;
        assert_eq!(
            (one["calls"].clone(), one["fails"].clone()),
            (json!(1), json!(0))
        );
        assert_eq!(
            act(&r, json!({"role": "seneca", "info": "fatal"})).await,
            Value::Null
        );
        assert_eq!(
            act(&r, json!({"role": "transport", "cmd": "inflight"})).await,
            json!({})
        );
        let close = r
            .act(Message::new(
                json!({"role": "seneca", "cmd": "close"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ))
            .await
            .unwrap_err();
        assert!(
            close.is(crate::error::Code::ActNotFound),
            "close is not served"
        );
    }

    #[test]
    fn iso_dates_are_javascripts() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_796_186_228_135);
        assert_eq!(iso8601(at), "2026-12-02T04:37:08.135Z");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn process_figures_are_read() {
        let (user, _) = cpu_micros();
        assert!(rss_bytes() > 0);
        assert!(user < 10_000_000_000);
        assert!(truthy(&json!(1)) && !truthy(&json!(0)) && !truthy(&json!("")));
    }
}
