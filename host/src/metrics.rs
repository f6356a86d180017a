//! Prometheus metrics (OpenMetrics text on `GET /metrics`): acts and their latency per pattern,
//! REST requests and latency per route, plugin errors, and calls in flight. Handles are created
//! once per pattern or route and kept, so recording on the hot path is a few atomic adds.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label pairs, as prometheus-client takes them.
type Labels = Vec<(&'static str, String)>;

/// Latency buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric the host exports.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    registry: Registry,
    /// Acts answered by a plugin, by pattern and outcome (`ok` or `error`).
    acts: Family<Labels, Counter>,
    /// Act latency by pattern.
    act_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Errors answered by plugins (their own, traps and timeouts), by plugin and code.
    plugin_errors: Family<Labels, Counter>,
    /// Acts from ingresses currently running.
    in_flight: Gauge,
    /// REST requests by route, method and status.
    requests: Family<Labels, Counter>,
    /// REST latency by route and method.
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Seneca transport requests by transport and outcome.
    transport: Family<Labels, Counter>,
    /// Plugin loads by outcome (`loaded`, `refused`).
    loads: Family<Labels, Counter>,
    /// Plugin instances replaced, by plugin and reason: an operator sees a plugin that traps,
    /// runs past its deadlines or grows on large messages, each of which costs a new instance.
    replacements: Family<Labels, Counter>,
    /// Messages answered from the reply history instead of acting again.
    history_hits: Counter,
    /// Events published by this host.
    events_published: Counter,
    /// Events taken from the broker by outcome (`handled`, `unobserved`, `duplicate`,
    /// `dead_lettered`, `requeued`): what the group queue's consumer did with each.
    events_received: Family<Labels, Counter>,
    /// Events by observer pattern and outcome (`delivered`, `failed` per try, `dead_lettered`,
    /// `dropped` in memory).
    events: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmeca");
        let acts = Family::<Labels, Counter>::default();
        let act_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let plugin_errors = Family::<Labels, Counter>::default();
        let in_flight = Gauge::default();
        let requests = Family::<Labels, Counter>::default();
        let request_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let transport = Family::<Labels, Counter>::default();
        let loads = Family::<Labels, Counter>::default();
        let replacements = Family::<Labels, Counter>::default();
        let history_hits = Counter::default();
        let events_published = Counter::default();
        let events = Family::<Labels, Counter>::default();
        let events_received = Family::<Labels, Counter>::default();
        registry.register(
            "acts",
            "Acts answered by plugins, by pattern and outcome",
            acts.clone(),
        );
        registry.register(
            "act_duration_seconds",
            "Act latency by pattern",
            act_seconds.clone(),
        );
        registry.register(
            "plugin_errors",
            "Errors answered by plugins, by plugin and code",
            plugin_errors.clone(),
        );
        registry.register(
            "in_flight_acts",
            "Acts from ingresses currently running",
            in_flight.clone(),
        );
        registry.register(
            "rest_requests",
            "REST requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "rest_request_duration_seconds",
            "REST latency by route and method",
            request_seconds.clone(),
        );
        registry.register(
            "transport_requests",
            "Seneca transport requests by transport and outcome",
            transport.clone(),
        );
        registry.register("plugin_loads", "Plugin loads by outcome", loads.clone());
        registry.register(
            "instance_replacements",
            "Plugin instances replaced, by plugin and reason (trap, timeout, cancelled, \
             interrupted, growth, optimised)",
            replacements.clone(),
        );
        registry.register(
            "events_published",
            "Events published by this host",
            events_published.clone(),
        );
        registry.register(
            "events",
            "Events by observer pattern and outcome (delivered, failed, dead_lettered, dropped)",
            events.clone(),
        );
        registry.register(
            "events_received",
            "Events taken from the broker by outcome (handled, unobserved, duplicate, dead_lettered, requeued)",
            events_received.clone(),
        );
        registry.register(
            "history_hits",
            "Messages answered from the reply history instead of acting again",
            history_hits.clone(),
        );
        registry.register(
            "telemetry_spans_dropped",
            "Trace spans dropped: the export queue was full or the collector did not take them",
            crate::telemetry::dropped_spans(),
        );
        Self {
            registry,
            acts,
            act_seconds,
            plugin_errors,
            in_flight,
            requests,
            request_seconds,
            transport,
            loads,
            replacements,
            history_hits,
            events_published,
            events_received,
            events,
        }
    }
}

/// Pre-created handles for one pattern served by one plugin.
#[derive(Clone)]
pub struct PatternMetrics {
    /// Successful acts.
    ok: Counter,
    /// Failed acts.
    error: Counter,
    /// Latency.
    seconds: Histogram,
    /// Errors by code for this plugin (codes vary, so looked up on the error path only).
    errors: Family<Labels, Counter>,
    /// `name@version`, the label of `plugin_errors`.
    plugin: Arc<str>,
}

impl PatternMetrics {
    /// Acts answered, and how many of them with an error.
    pub fn counts(&self) -> (u64, u64) {
        (self.ok.get(), self.error.get())
    }

    /// Records one act.
    pub fn record(&self, elapsed: Duration, error_code: Option<&str>) {
        self.seconds.observe(elapsed.as_secs_f64());
        match error_code {
            None => {
                self.ok.inc();
            }
            Some(code) => {
                self.error.inc();
                self.errors
                    .get_or_create(&vec![
                        ("plugin", self.plugin.to_string()),
                        ("code", code.to_owned()),
                    ])
                    .inc();
            }
        }
    }
}

/// Pre-created handles for one observer pattern.
#[derive(Clone)]
pub struct ObserverMetrics {
    /// Events its observer handled.
    delivered: Counter,
    /// Events its observer failed on (each attempt).
    failed: Counter,
    /// Events sent to the dead-letter queue after its observer kept failing.
    dead_lettered: Counter,
    /// Events given up on in memory (no dead-letter queue there) after it kept failing.
    dropped: Counter,
}

impl ObserverMetrics {
    /// Counts an event handled.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// Counts an attempt that failed.
    pub fn failed(&self) {
        self.failed.inc();
    }

    /// Counts an event given up on and dead-lettered.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// Counts an event given up on in memory.
    pub fn dropped(&self) {
        self.dropped.inc();
    }
}

/// Pre-created handles for one REST route.
pub struct RouteMetrics {
    /// Latency.
    seconds: Histogram,
    /// The route and method labels, for the per-status counters.
    labels: Labels,
    /// Requests by status.
    requests: Family<Labels, Counter>,
    /// The counters of the statuses seen so far, so a request looks up a small list instead
    /// of hashing its labels.
    by_status: RwLock<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    /// Records one request.
    pub fn record(&self, elapsed: Duration, status: u16) {
        self.seconds.observe(elapsed.as_secs_f64());
        let seen = self
            .by_status
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = seen.iter().find(|(s, _)| *s == status) {
            counter.inc();
            return;
        }
        drop(seen);
        let mut labels = self.labels.clone();
        labels.push(("status", status.to_string()));
        let counter = self.requests.get_or_create(&labels).clone();
        counter.inc();
        self.by_status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((status, counter));
    }
}

impl Metrics {
    /// Handles for acts of `pattern` answered by `plugin` (`name@version`).
    pub fn pattern(&self, pattern: &str, plugin: &str) -> PatternMetrics {
        // Each `get_or_create` holds a read lock until its statement ends: one per statement.
        let labels = |outcome: &str| {
            vec![
                ("pattern", pattern.to_owned()),
                ("outcome", outcome.to_owned()),
            ]
        };
        let ok = self.acts.get_or_create(&labels("ok")).clone();
        let error = self.acts.get_or_create(&labels("error")).clone();
        let seconds = self
            .act_seconds
            .get_or_create(&vec![("pattern", pattern.to_owned())])
            .clone();
        PatternMetrics {
            ok,
            error,
            seconds,
            errors: self.plugin_errors.clone(),
            plugin: plugin.into(),
        }
    }

    /// Handles for a REST route (`route` is the path template, e.g. `/user/:id`).
    pub fn route(&self, route: &str, method: &str) -> RouteMetrics {
        let labels = vec![("route", route.to_owned()), ("method", method.to_owned())];
        let seconds = self.request_seconds.get_or_create(&labels).clone();
        RouteMetrics {
            seconds,
            labels,
            requests: self.requests.clone(),
            by_status: RwLock::default(),
        }
    }

    /// The counter of requests that came in by `transport` (`rest`, `http`, `amqp`) with
    /// `outcome` (`ok`, `error`, `refused`); listeners take their handles once.
    pub fn transport(&self, transport: &'static str, outcome: &'static str) -> Counter {
        self.transport
            .get_or_create(&vec![
                ("transport", transport.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .clone()
    }

    /// Counts a plugin load (`loaded` or `refused`).
    pub fn plugin_load(&self, outcome: &'static str) {
        self.loads
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts an instance of `plugin` (`name@version`) replaced for `reason`.
    pub fn instance_replaced(&self, plugin: &str, reason: &'static str) {
        self.replacements
            .get_or_create(&vec![
                ("plugin", plugin.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// How many plugin loads had `outcome`.
    pub fn plugin_loads(&self, outcome: &'static str) -> u64 {
        self.loads
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .get()
    }

    /// Handles for the events of the observer pattern `pattern`.
    pub fn observer(&self, pattern: &str) -> ObserverMetrics {
        let counter = |outcome: &str| {
            self.events
                .get_or_create(&vec![
                    ("pattern", pattern.to_owned()),
                    ("outcome", outcome.to_owned()),
                ])
                .clone()
        };
        ObserverMetrics {
            delivered: counter("delivered"),
            failed: counter("failed"),
            dead_lettered: counter("dead_lettered"),
            dropped: counter("dropped"),
        }
    }

    /// The counter of events taken from the broker with `outcome`.
    pub fn event_received(&self, outcome: &'static str) -> Counter {
        self.events_received
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .clone()
    }

    /// Counts an event published.
    pub fn event_published(&self) {
        self.events_published.inc();
    }

    /// Counts a message answered from the reply history.
    pub fn history_hit(&self) {
        self.history_hits.inc();
    }

    /// How many messages were answered from the reply history.
    pub fn history_hits(&self) -> u64 {
        self.history_hits.get()
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_encodes() {
        let m = Metrics::default();
        let p = m.pattern("cmd:salute", "salute@1.0.0");
        p.record(Duration::from_micros(30), None);
        p.record(Duration::from_millis(2), Some("boom"));
        m.route("/user/:id", "GET")
            .record(Duration::from_millis(1), 200);
        m.transport("http", "ok").inc();
        m.in_flight().inc();
        let text = m.encode();
        assert!(
            text.contains(r#"wasmeca_acts_total{pattern="cmd:salute",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmeca_acts_total{pattern="cmd:salute",outcome="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmeca_plugin_errors_total{plugin="salute@1.0.0",code="boom"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmeca_act_duration_seconds_count{pattern="cmd:salute"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"wasmeca_rest_requests_total{route="/user/:id",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("wasmeca_in_flight_acts 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
