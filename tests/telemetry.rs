//! Traces across hosts, end to end: three `wasmeca serve` processes export to a real OTLP
//! receiver (an HTTP server in the test decoding the real OTLP/HTTP protobufs with
//! `opentelemetry-proto`), and one REST request (front) → plugin → nested act over RabbitMQ to a
//! second host (users) → its entity save → an event observed by a third host (audit) must come
//! out as one trace with every parent link right. A Node seneca-amqp-transport caller, which
//! sends `tx$` and no traceparent, joins the trace its `tx$` stands for; a collector that is
//! away or stalled changes nothing for callers, the spans it could not take are counted, and
//! one that comes back gets spans again.
//! An AMQP reply carries the command's trace back, from its `publish reply` span.
//! A store call its act's deadline cuts short (PostgreSQL waiting on a lock) ends its span
//! failed, as `cancelled`. Every span names the process that made it (`service.instance.id`,
//! `host.name`, `OTEL_RESOURCE_ATTRIBUTES`), and `OTEL_EXPORTER_OTLP_HEADERS` reach the
//! collector. An `https` collector that asks for a client certificate gets the spans of a host
//! given its CA and a certificate (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_*`), gzipped
//! as `OTEL_EXPORTER_OTLP_COMPRESSION` asks, and a host given neither says in its log why its
//! exports fail.

#[allow(dead_code)] // shared with tests/data.rs, which uses all of it
#[path = "data_stores/support.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};
use support::{AMQP, Broker};
use wasmeca_tests::{Process, free_port, node_client, plugin};

/// OTLP's span kinds (`opentelemetry.proto.trace.v1.Span.SpanKind`).
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
/// OTLP's error status code.
const STATUS_ERROR: i32 = 2;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    /// `service.name` of the host that sent it.
    service: String,
    /// Its name.
    name: String,
    /// Its kind (see the constants above).
    kind: i32,
    /// Trace, span and parent span ids, in hex (the parent empty for a root).
    trace: String,
    id: String,
    parent: String,
    /// Its attributes, values as text.
    attrs: BTreeMap<String, String>,
    /// Its events' names (a plugin's log lines).
    events: Vec<String>,
    /// Its status code.
    status: i32,
    /// The attributes of the process that sent it (`service.instance.id`, `host.name`, ...).
    resource: BTreeMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// A real OTLP/HTTP receiver: decodes every export into [`Got`]s; stalled, it takes the
/// request and never answers.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    stalled: Arc<AtomicBool>,
    /// The `authorization` headers exports came with (a hosted backend's key).
    keys: Arc<Mutex<HashSet<String>>>,
    /// The `service.name`s of the hosts whose exports came gzipped.
    gzipped: Arc<Mutex<HashSet<String>>>,
}

fn text(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

impl Collector {
    async fn start() -> Self {
        Self::start_on(any_port().await, None).await
    }

    /// A collector listening on `reserved`: a port a host was told of while it refused
    /// connections, held all along so that nothing else took it.
    async fn start_at(reserved: tokio::net::TcpSocket) -> Self {
        Self::start_on(reserved.listen(64).expect("listen"), None).await
    }

    /// A collector on `https`, its TLS as `tls` says.
    async fn start_tls(tls: tokio_rustls::rustls::ServerConfig) -> Self {
        Self::start_on(any_port().await, Some(Arc::new(tls))).await
    }

    async fn start_on(
        listener: tokio::net::TcpListener,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Self {
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let stalled = Arc::new(AtomicBool::new(false));
        let keys: Arc<Mutex<HashSet<String>>> = Arc::default();
        let gzipped: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (into, stall, keyed, zipped) = (
            spans.clone(),
            stalled.clone(),
            keys.clone(),
            gzipped.clone(),
        );
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (into, stall, keyed, zipped) =
                        (into.clone(), stall.clone(), keyed.clone(), zipped.clone());
                    async move {
                        if stall.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if let Some(key) =
                            headers.get("authorization").and_then(|v| v.to_str().ok())
                        {
                            keyed.lock().expect("the keys").insert(key.to_owned());
                        }
                        let gzip = headers
                            .get("content-encoding")
                            .is_some_and(|v| v.as_bytes() == b"gzip");
                        let body = if gzip {
                            let mut plain = Vec::new();
                            std::io::Read::read_to_end(
                                &mut flate2::read::GzDecoder::new(&body[..]),
                                &mut plain,
                            )
                            .expect("real gzip");
                            plain.into()
                        } else {
                            body
                        };
                        let request = ExportTraceServiceRequest::decode(body).expect("real OTLP");
                        let mut got = into.lock().expect("the spans");
                        for resource in request.resource_spans {
                            let from = resource
                                .resource
                                .map(|r| text(&r.attributes))
                                .unwrap_or_default();
                            let service = from.get("service.name").cloned().unwrap_or_default();
                            if gzip {
                                zipped.lock().expect("gzipped").insert(service.clone());
                            }
                            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                                got.push(Got {
                                    service: service.clone(),
                                    name: span.name,
                                    kind: span.kind,
                                    trace: hex(&span.trace_id),
                                    id: hex(&span.span_id),
                                    parent: hex(&span.parent_span_id),
                                    attrs: text(&span.attributes),
                                    events: span.events.into_iter().map(|e| e.name).collect(),
                                    status: span.status.map_or(0, |s| s.code),
                                    resource: from.clone(),
                                });
                            }
                        }
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                },
            ),
        );
        let addr = listener.local_addr().expect("addr");
        match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        // A client that fails the handshake is turned away here, as a real
                        // collector would.
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(
                                        hyper_util::rt::TokioIo::new(tls),
                                        hyper_util::service::TowerToHyperService::new(app),
                                    )
                                    .await;
                            }
                        });
                    }
                });
            }
        }
        Self {
            addr,
            spans,
            stalled,
            keys,
            gzipped,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of `trace` received so far.
    fn trace(&self, trace: &str) -> Vec<Got> {
        let spans = self.spans.lock().expect("the spans");
        spans.iter().filter(|s| s.trace == trace).cloned().collect()
    }

    /// Waits (up to 30 s) until the spans of `trace` pass `done`, then a moment more for
    /// stragglers; answers them.
    async fn wait_for(&self, trace: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.trace(trace)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.trace(trace)
    }
}

/// A listener on a free loopback port.
async fn any_port() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
}

/// A loopback port bound but not listening: connections to it are refused until
/// [`Collector::start_at`] listens on it.
fn refusing_port() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    socket
}

/// The JSON log lines of `dir/name.log` holding `needle`, once there is one (waiting up to
/// 20 s: a line is written after what it tells of).
async fn wait_for_log(dir: &Path, name: &str, needle: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log_lines(dir, name, needle);
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names one test gives its queues and exchanges, which are deleted at its end (also when
/// it fails).
struct Names {
    id: String,
    broker: Broker,
}

impl Names {
    fn new() -> Self {
        Self {
            id: wasmeca::message::new_id(),
            broker: Broker::default(),
        }
    }

    fn queue(&mut self, what: &str) -> String {
        let name = format!("test.{}.{what}", self.id);
        self.broker.queues.push(name.clone());
        name
    }

    fn exchange(&mut self, what: &str) -> String {
        let name = format!("test.{}.{what}", self.id);
        self.broker.exchanges.push(name.clone());
        name
    }
}

/// Waits (up to 60 s, else fails) until `queue` has a consumer.
async fn wait_for_consumer(queue: &str) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("broker");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let channel = conn.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await;
        if declared.is_ok_and(|q| q.consumer_count() > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "{queue} never got a consumer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh folder for one test's configurations and logs.
fn folder(id: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmeca-telemetry-{id}"));
    std::fs::create_dir_all(&dir).expect("a folder");
    dir
}

/// A `wasmeca serve` of `toml` (its `[telemetry]` sending to `collector`, as `name`), its
/// JSON log lines in `dir/name.log`.
fn serve(dir: &Path, name: &str, toml: &str) -> Process {
    serve_with(dir, name, toml, &[])
}

/// [`serve`] with the environment variables `env` set too.
fn serve_with(dir: &Path, name: &str, toml: &str, env: &[(&str, &str)]) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).expect("write the config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    Process(
        wasmeca_tests::wasmeca_command!()
            .arg("serve")
            .arg(&config)
            .env("WASMECA_LOG", "info")
            .env("WASMECA_LOG_FORMAT", "json")
            // Export every 200 ms rather than every 5 s, so the test waits less.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wasmeca starts"),
    )
}

/// `[telemetry]` sending to `endpoint` as `name`, with `extra` settings.
fn telemetry_toml(endpoint: &str, name: &str, extra: &str) -> String {
    format!("[telemetry]\nendpoint = {endpoint:?}\nservice_name = {name:?}\n{extra}\n")
}

/// Waits (up to 60 s, else fails) until the host's REST port answers `/health`.
async fn wait_for_rest(port: u16) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the host on {port} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JSON log lines of `dir/name.log` whose message contains `needle`.
fn log_lines(dir: &Path, name: &str, needle: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect()
}

/// One line per span: its service, name, kind, id and parent, to read a failure by.
fn outline(spans: &[Got]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{:>6} {:<40} kind {} {} <- {}\n",
                s.service, s.name, s.kind, s.id, s.parent
            )
        })
        .collect()
}

/// The one span of `spans` that `is`, failing with all of them otherwise.
fn one<'a>(spans: &'a [Got], what: &str, is: impl Fn(&Got) -> bool) -> &'a Got {
    let found: Vec<&Got> = spans.iter().filter(|s| is(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: found {found:#?}\nin\n{}",
        outline(spans)
    );
    found[0]
}

/// The value of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_request_is_one_trace_across_amqp_the_store_and_another_groups_observer() {
    let collector = Collector::start().await;
    let mut names = Names::new();
    let dir = folder(&names.id);
    let (topic, dlx, events) = (
        names.exchange("topic"),
        names.exchange("dlx"),
        names.exchange("events"),
    );
    let (users_queue, dlq) = (names.queue("users"), names.queue("dlq"));
    let audit_group = format!("audit{}", names.id);
    let users_group = format!("users{}", names.id);
    for group in [&audit_group, &users_group] {
        names.broker.queues.push(format!("{events}.{group}"));
        names.broker.queues.push(format!("{events}.{group}.dead"));
    }
    let client_names =
        format!("exchange = {topic:?}\ndead_letter_exchange = {dlx:?}\nurl = {AMQP:?}\n");
    let listen_names = format!("{client_names}dead_letter_queue = {dlq:?}\n");
    let events_toml = |group: &str| {
        format!("[events]\nurl = {AMQP:?}\nexchange = {events:?}\ngroup = {group:?}\n")
    };

    // users: answers `module:user,if:create` over AMQP, keeps users in its own SQLite store
    // and publishes `evt:user,cmd:created`.
    let users_toml = format!(
        "{}[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"amqp\"\nname = {users_queue:?}\npins = [\"module:user,if:create\"]\n{listen_names}{}\
         [[plugin]]\npath = {:?}\n",
        telemetry_toml(&collector.url(), "users", ""),
        events_toml(&users_group),
        plugin("user"),
    );
    let _users = serve(&dir, "users", &users_toml);
    // audit: another group, observing the event.
    let audit_toml = format!(
        "listen = []\n{}[rest]\nlisten = \"off\"\n{}[[plugin]]\npath = {:?}\n",
        telemetry_toml(&collector.url(), "audit", ""),
        events_toml(&audit_group),
        plugin("audit"),
    );
    let _audit = serve(&dir, "audit", &audit_toml);
    // front: a REST route to chaos:relay, which acts `module:user,if:create` through a client;
    // its store is open to chaos in the base `shop` only.
    let rest = free_port();
    let front_toml = format!(
        "listen = []\n{}[rest]\nlisten = \"127.0.0.1:{rest}\"\n[[rest.route]]\npin = \"chaos:*\"\nmap = {{ relay = {{ POST = true }} }}\n\
         [[client]]\ntype = \"amqp\"\npin = \"module:user,if:create\"\n{client_names}\
         [[plugin]]\npath = {:?}\ndata = [\"shop\"]\n",
        telemetry_toml(&collector.url(), "front", ""),
        plugin("chaos"),
    );
    let _front = serve(&dir, "front", &front_toml);
    wait_for_consumer(&users_queue).await;
    wait_for_consumer(&format!("{events}.{audit_group}")).await;
    wait_for_rest(rest).await;

    // A caller that is itself traced: its traceparent is the REST span's parent.
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let name = format!("Tracy{}", names.id);
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{rest}/relay"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header("content-type", "application/json")
        .body(json!({"inner": {"module": "user", "if": "create", "name": name}}).to_string())
        .send()
        .await
        .expect("front answers");
    assert_eq!(answer.status(), 200);
    let answer: Value = serde_json::from_str(&answer.text().await.expect("body")).expect("JSON");
    assert_eq!(answer["inner"]["name"], name, "{answer}");

    let spans = collector
        .wait_for(trace, |spans| {
            spans
                .iter()
                .any(|s| s.service == "audit" && s.name.starts_with("observe"))
                && spans
                    .iter()
                    .any(|s| s.service == "users" && s.name == "publish reply")
        })
        .await;
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        HashSet::from(["front", "users", "audit"]),
        "{}",
        outline(&spans)
    );
    // Every parent link is right: one root span (the REST request, under the caller's span),
    // every other span's parent is a span of the trace.
    let ids: HashMap<&str, &Got> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    for span in &spans {
        assert!(
            span.parent == caller || ids.contains_key(span.parent.as_str()),
            "{} of {} has a parent outside the trace: {spans:#?}",
            span.name,
            span.service
        );
    }
    let parent = |s: &Got| ids[s.parent.as_str()].clone();

    // front: the REST request with what answered its act, the plugin's call with its log
    // line, the nested act sent to a peer, and its AMQP publish.
    let request = one(&spans, "the REST span", |s| s.parent == caller);
    assert_eq!(
        (
            request.service.as_str(),
            request.name.as_str(),
            request.kind
        ),
        ("front", "POST /relay", SERVER)
    );
    assert_eq!(request.attr("http.route"), Some("/relay"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    // The request's one act is recorded on the request's span, not in a span of its own.
    assert_eq!(request.attr("seneca.pattern"), Some("chaos:relay"));
    assert_eq!(request.attr("wasmeca.plugin"), Some("chaos@1.0.0"));
    assert!(request.attr("seneca.tx").is_some(), "{request:#?}");
    assert!(
        spans.iter().all(|s| s.name != "act chaos:relay"),
        "{}",
        outline(&spans)
    );
    let guest = one(&spans, "the call into chaos", |s| {
        s.service == "front" && s.name == "handle chaos@1.0.0"
    });
    assert_eq!(guest.parent, request.id);
    assert!(
        guest.events.iter().any(|e| e.starts_with("chaos relays")),
        "the plugin's log line is an event of its call: {guest:#?}"
    );
    let nested = one(&spans, "the nested act", |s| {
        s.service == "front" && s.parent == guest.id
    });
    assert_eq!(nested.name, "act if:create,module:user");
    assert!(
        nested
            .attr("wasmeca.peer")
            .is_some_and(|p| p.contains("amqp")),
        "{nested:#?}"
    );
    let sent = one(&spans, "front's AMQP publish", |s| {
        s.service == "front" && s.kind == PRODUCER
    });
    assert_eq!(sent.parent, nested.id);
    assert_eq!(sent.attr("messaging.system"), Some("rabbitmq"));

    // users: the delivery continues front's publish, and acts, saves and publishes inside it.
    let delivery = one(&spans, "users' AMQP delivery", |s| {
        s.service == "users" && s.kind == CONSUMER
    });
    assert_eq!(delivery.parent, sent.id, "consumer under producer");
    assert!(
        delivery
            .attr("wasmeca.plugin")
            .is_some_and(|p| p.starts_with("user@")),
        "the delivery's act is recorded on it: {delivery:#?}"
    );
    let save = one(&spans, "the entity save", |s| {
        s.service == "users" && s.attr("db.operation.name") == Some("save")
    });
    assert_eq!(save.kind, CLIENT);
    assert_eq!(save.attr("db.system.name"), Some("sqlite"));
    assert_eq!(save.attr("db.collection.name"), Some("-/-/user"));
    // The nested act the store answered is the store's span: no act span around it.
    assert!(
        parent(save).name.starts_with("handle user@"),
        "the save is a nested act of the plugin's call: {}",
        outline(&spans)
    );
    assert_eq!(
        parent(&parent(save)).id,
        delivery.id,
        "the call into user is the delivery's child: {}",
        outline(&spans)
    );
    assert!(
        spans.iter().all(|s| !s.name.contains("sys:entity")),
        "{}",
        outline(&spans)
    );
    let published = one(&spans, "the event's publish", |s| {
        s.service == "users" && s.name == "publish event"
    });
    assert_eq!(published.kind, PRODUCER);
    let reply = one(&spans, "the reply", |s| s.name == "publish reply");
    assert_eq!(
        (reply.kind, reply.parent.as_str()),
        (PRODUCER, delivery.id.as_str())
    );

    // audit: the event's delivery continues the publish; the observer runs inside it.
    let heard = one(&spans, "audit's event delivery", |s| {
        s.service == "audit" && s.kind == CONSUMER
    });
    assert_eq!(heard.parent, published.id, "consumer under producer");
    assert_eq!(
        heard.attr("messaging.consumer.group.name"),
        Some(audit_group.as_str())
    );
    assert_eq!(heard.name, format!("process {events}"));
    let observe = one(&spans, "the observer's run", |s| {
        s.service == "audit" && s.name == "observe cmd:created,evt:user"
    });
    assert_eq!(observe.parent, heard.id);
    let call = one(&spans, "the call into audit", |s| {
        s.name == "observe audit@1.0.0"
    });
    assert_eq!(call.parent, observe.id);

    // Never the values: no name or attribute of any span carries what the user sent.
    for span in &spans {
        assert!(
            !span.name.contains(&name) && span.attrs.values().all(|v| !v.contains(&name)),
            "{span:#?} carries the user's data"
        );
        assert_ne!(span.status, STATUS_ERROR, "{span:#?}");
    }
    // Logs joined to traces: front's JSON line of the plugin's log carries the trace.
    let lines = log_lines(&dir, "front", "chaos relays");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["trace_id"], trace, "{}", lines[0]);
    assert_eq!(lines[0]["span_id"], guest.id, "{}", lines[0]);

    // A nested act the store refuses (a base chaos may not use) fails the store's span, which
    // stands for the act.
    let refused = "4bf92f3577b34da6a3ce929d0e0e4737";
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{rest}/relay"))
        .header("traceparent", format!("00-{refused}-{caller}-01"))
        .header("content-type", "application/json")
        .body(
            json!({"inner": {"sys": "entity", "cmd": "load", "base": "other", "name": "item", "id": 1}})
                .to_string(),
        )
        .send()
        .await
        .expect("front answers");
    assert!(!answer.status().is_success(), "{answer:?}");
    let load = failed_load(&collector, refused).await;
    assert_eq!(
        load.attr("error.type"),
        Some("entity_forbidden"),
        "{load:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The one store load of `trace` (waited for), asserted a failed client span under the call
/// into chaos: the nested act it stands for failed.
async fn failed_load(collector: &Collector, trace: &str) -> Got {
    let is_load = |s: &Got| s.attr("db.operation.name") == Some("load");
    let spans = collector
        .wait_for(trace, |spans| spans.iter().any(is_load))
        .await;
    let load = one(&spans, "the store's load", is_load).clone();
    assert_eq!(
        (load.kind, load.status),
        (CLIENT, STATUS_ERROR),
        "{load:#?}"
    );
    let call = one(&spans, "the call into chaos", |s| s.id == load.parent);
    assert!(
        call.name.starts_with("handle chaos@"),
        "{}",
        outline(&spans)
    );
    load
}

/// A host with a REST route to chaos, exporting to `endpoint` with a small queue, the
/// variables `env` set.
fn lonely(dir: &Path, name: &str, endpoint: &str, rest: u16, env: &[(&str, &str)]) -> Process {
    let toml = format!(
        "listen = []\n{}[rest]\nlisten = \"127.0.0.1:{rest}\"\n[[rest.route]]\npin = \"chaos:*\"\nmap = {{ relay = {{ POST = true }} }}\n\
         [[plugin]]\npath = {:?}\ninstances = 2\n",
        telemetry_toml(endpoint, name, "queue_size = 64\nexport_timeout_ms = 500"),
        plugin("chaos"),
    );
    serve_with(dir, name, &toml, env)
}

/// `count` REST requests relaying `chaos:ok`, one after another; answers how many were
/// answered right, and what the others got (so a failure says why).
async fn relay_all(rest: u16, count: usize) -> (usize, Vec<String>) {
    let http = reqwest::Client::new();
    let (mut right, mut wrong) = (0, Vec::new());
    for _ in 0..count {
        let answer = match http
            .post(format!("http://127.0.0.1:{rest}/relay"))
            .header("content-type", "application/json")
            .body(r#"{"inner":{"chaos":"ok"}}"#)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                wrong.push(format!("{e:?}"));
                continue;
            }
        };
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 200 && body["inner"]["ok"] == true {
            right += 1;
        } else {
            wrong.push(format!("{status} {text}"));
        }
    }
    (right, wrong)
}

/// `count` relays to each of the hosts on REST ports `a` and `b` at once; fails unless every
/// caller was answered right, saying what the others got.
async fn both_answer_all(a: u16, b: u16, count: usize) {
    let (on_a, on_b) = tokio::join!(relay_all(a, count), relay_all(b, count));
    assert_eq!(
        (on_a.0, on_b.0),
        (count, count),
        "every caller answered right; the others got {:?} {:?}",
        on_a.1,
        on_b.1
    );
}

/// Waits (up to 20 s) until the host's `/metrics` counts dropped spans; answers the count.
async fn dropped(rest: u16) -> f64 {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = match http
            .get(format!("http://127.0.0.1:{rest}/metrics"))
            .send()
            .await
        {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let count = metric(&text, "wasmeca_telemetry_spans_dropped_total").unwrap_or(0.0);
        if count > 0.0 || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// And the host says once why its exports fail, and once that they succeed when the collector
/// is back, which then gets spans again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_away_or_stalled_changes_nothing_for_callers_and_drops_are_counted() {
    let stalled = Collector::start().await;
    stalled.stalled.store(true, Ordering::SeqCst);
    let dir = folder(&wasmeca::message::new_id());
    // Nothing listens on `away`'s port, until the collector comes back below.
    let reserved = refusing_port();
    let away = format!(
        "http://{}",
        reserved.local_addr().expect("the reserved port")
    );
    let (rest_away, rest_stalled) = (free_port(), free_port());
    let _away = lonely(&dir, "away", &away, rest_away, &[]);
    let _stalled = lonely(&dir, "stalled", &stalled.url(), rest_stalled, &[]);
    wait_for_rest(rest_away).await;
    wait_for_rest(rest_stalled).await;

    // 300 requests of 5 spans each: far more than the queue of 64 holds.
    both_answer_all(rest_away, rest_stalled, 300).await;
    let (away_dropped, stalled_dropped) = tokio::join!(dropped(rest_away), dropped(rest_stalled));
    assert!(
        away_dropped > 0.0,
        "spans for a collector that is away are dropped and counted"
    );
    assert!(
        stalled_dropped > 0.0,
        "spans for a stalled collector are dropped and counted"
    );
    assert!(
        stalled.spans.lock().expect("the spans").is_empty(),
        "the stalled collector took nothing"
    );
    let failed = wait_for_log(&dir, "away", "exporting spans failed").await;
    assert_eq!(failed.len(), 1, "the outage is said once: {failed:?}");
    let why = failed[0]["message"].as_str().unwrap_or_default();
    assert!(why.contains("Connection refused"), "with its cause: {why}");

    // The collector comes back: the host's next exports reach it, and its log says so.
    let back = Collector::start_at(reserved).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.spans.lock().expect("the spans").is_empty() && Instant::now() < deadline {
        assert_eq!(relay_all(rest_away, 1).await.0, 1, "the caller answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !back.spans.lock().expect("the spans").is_empty(),
        "the collector that came back gets spans"
    );
    let again = wait_for_log(&dir, "away", "exporting spans succeeds again").await;
    assert_eq!(again.len(), 1, "the recovery is said once: {again:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA of the test's own, written to `dir/ca.pem`, with a client certificate it signed
/// (`dir/client.pem`, key `dir/client.key`); answers the TLS of a collector on 127.0.0.1
/// whose certificate that CA signed and which takes only clients it signed.
fn private_pki(dir: &Path) -> tokio_rustls::rustls::ServerConfig {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    use tokio_rustls::rustls;
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "wasmeca test CA");
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("the CA");
    let server_key = KeyPair::generate().expect("a key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("the collector's certificate");
    let client_key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["wasmeca-host".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = params
        .signed_by(&client_key, &ca)
        .expect("the host's certificate");
    for (file, pem) in [
        ("ca.pem", ca.pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(file), pem).expect("write a PEM file");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("the CA as a root");
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("the client verifier");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(clients)
        .with_single_cert(vec![server.der().clone()], key)
        .expect("the collector's TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_collector_gets_the_spans_of_a_host_given_its_ca_and_a_client_certificate() {
    let dir = folder(&wasmeca::message::new_id());
    let collector = Collector::start_tls(private_pki(&dir)).await;
    let endpoint = format!("https://{}", collector.addr);
    let file = |name: &str| dir.join(name).display().to_string();
    let (ca, certificate, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let (rest_trusted, rest_stranger) = (free_port(), free_port());
    let trusted = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            certificate.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ];
    let _trusted = lonely(&dir, "trusted", &endpoint, rest_trusted, &trusted);
    // The system's CAs only, and no certificate of its own.
    let _stranger = lonely(&dir, "stranger", &endpoint, rest_stranger, &[]);
    wait_for_rest(rest_trusted).await;
    wait_for_rest(rest_stranger).await;

    both_answer_all(rest_trusted, rest_stranger, 3).await;
    let from = |service: &str| {
        let spans = collector.spans.lock().expect("the spans");
        spans.iter().filter(|s| s.service == service).count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while from("trusted") < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        from("trusted") >= 3,
        "the spans of the host given the CA and a certificate came over TLS: {}",
        from("trusted")
    );
    assert!(
        dropped(rest_stranger).await > 0.0,
        "the stranger's spans are dropped and counted"
    );
    assert_eq!(from("stranger"), 0, "the stranger got nothing through");
    assert!(
        collector
            .gzipped
            .lock()
            .expect("gzipped")
            .contains("trusted"),
        "the trusted host's exports came gzipped, as OTEL_EXPORTER_OTLP_COMPRESSION asks"
    );
    let said = wait_for_log(&dir, "stranger", "exporting spans failed").await;
    let line = said
        .first()
        .and_then(|l| l["message"].as_str())
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{endpoint}/v1/traces")) && line.contains("UnknownIssuer"),
        "the stranger's log says where and why its exports fail: {said:?}"
    );
    assert_eq!(said.len(), 1, "said once, not once per batch: {said:?}");
    assert!(
        log_lines(&dir, "trusted", "exporting spans failed").is_empty(),
        "the trusted host's exports all went through"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host `relay` serving `chaos:relay` (the chaos plugin, 2 instances) from an AMQP queue of
/// the test's own, exporting to `collector`, once it consumes: the host, its folder, and the
/// exchange and dead-letter exchange it listens on.
async fn relay(collector: &Collector, names: &mut Names) -> (Process, PathBuf, String, String) {
    let dir = folder(&names.id);
    let (topic, dlx) = (names.exchange("topic"), names.exchange("dlx"));
    let (queue, dlq) = (names.queue("relay"), names.queue("dlq"));
    let toml = format!(
        "{}[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"amqp\"\nname = {queue:?}\npins = [\"chaos:relay\"]\n\
         url = {AMQP:?}\nexchange = {topic:?}\ndead_letter_exchange = {dlx:?}\ndead_letter_queue = {dlq:?}\n\
         [[plugin]]\npath = {:?}\ninstances = 2\n",
        telemetry_toml(&collector.url(), "relay", ""),
        plugin("chaos"),
    );
    let host = serve(&dir, "relay", &toml);
    wait_for_consumer(&queue).await;
    (host, dir, topic, dlx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seneca_callers_tx_reaches_the_plugin_and_the_logs_and_names_the_trace() {
    let collector = Collector::start().await;
    let mut names = Names::new();
    let (_host, dir, topic, dlx) = relay(&collector, &mut names).await;

    // Seneca's `id$` sets the act's message id and tx; the transport sends it with no
    // traceparent.
    let tx = names.id.clone();
    let msgs =
        json!([{"chaos": "relay", "id$": format!("abcdefabcdef/{tx}"), "inner": {"chaos": "ok"}}])
            .to_string();
    let args = [
        "--url",
        AMQP,
        "--pin",
        "chaos:relay",
        "--exchange",
        &topic,
        "--dlx",
        &dlx,
        "--msgs",
        &msgs,
        "--timeout",
        "15000",
    ]
    .map(str::to_owned);
    let lines = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node_client("amqp-client.js", &args)
    })
    .await
    .expect("node");
    assert_eq!(lines[0]["ok"], true, "{lines:?}");
    assert_eq!(
        lines[0]["result"]["tx"], tx,
        "the plugin saw Node's tx$: {lines:?}"
    );
    assert_eq!(lines[0]["result"]["inner"]["ok"], true, "{lines:?}");

    // The trace id is the first 16 bytes of BLAKE3(tx$), as the README says.
    let trace = hex(&blake3::hash(tx.as_bytes()).as_bytes()[..16]);
    let logged = log_lines(&dir, "relay", "chaos relays");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["tx"], tx, "{}", logged[0]);
    assert_eq!(logged[0]["trace_id"], trace, "{}", logged[0]);
    let spans = collector
        .wait_for(&trace, |spans| {
            spans.iter().any(|s| s.name == "publish reply")
        })
        .await;
    let delivery = one(&spans, "the delivery", |s| s.kind == CONSUMER);
    let remote = hex(&blake3::hash(tx.as_bytes()).as_bytes()[16..24]);
    assert_eq!(delivery.parent, remote, "{}", outline(&spans));
    assert_eq!(delivery.attr("seneca.pattern"), Some("chaos:relay"));
    assert_eq!(delivery.attr("seneca.tx"), Some(tx.as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_reply_carries_the_trace_of_the_command_back() {
    let collector = Collector::start().await;
    let mut names = Names::new();
    let (_host, dir, topic, _) = relay(&collector, &mut names).await;
    let replies = names.queue("replies");

    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("reply queue");
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(format!("00-{trace}-b7ad6b7169203331-01").into()),
    );
    let command = json!({"id": "abcdefabcdef/tracedreply", "kind": "act", "sync": true,
        "act": {"chaos": "relay", "inner": {"chaos": "ok"}}});
    channel
        .basic_publish(
            topic.as_str().into(),
            "chaos.relay".into(),
            BasicPublishOptions::default(),
            command.to_string().as_bytes(),
            BasicProperties::default()
                .with_reply_to(replies.as_str().into())
                .with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");

    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let got = channel
            .basic_get(replies.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get");
        if let Some(reply) = got {
            break reply;
        }
        assert!(Instant::now() < deadline, "no reply in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body: Value = serde_json::from_slice(&reply.delivery.data).expect("JSON reply");
    assert_eq!(body["res"]["inner"]["ok"], true, "{body}");
    let parent = reply
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("traceparent").cloned());
    let Some(AMQPValue::LongString(parent)) = parent else {
        panic!(
            "the reply has no traceparent: {:?}",
            reply.delivery.properties
        );
    };
    let parent = parent.to_string();
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.get(1), Some(&trace), "{parent}");
    // The reply's own span, as the collector has it: the answer names where it came from.
    let spans = collector
        .wait_for(trace, |spans| {
            spans.iter().any(|s| s.name == "publish reply")
        })
        .await;
    let published = one(&spans, "the reply", |s| s.name == "publish reply");
    assert_eq!(
        parts.get(2),
        Some(&published.id.as_str()),
        "{}",
        outline(&spans)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seneca_http_hop_carries_the_trace_from_client_span_to_server_span() {
    let collector = Collector::start().await;
    let dir = folder(&wasmeca::message::new_id());
    let (act_port, rest) = (free_port(), free_port());
    let callee = format!(
        "{}[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nhost = \"127.0.0.1\"\nport = {act_port}\n\
         [[plugin]]\npath = {:?}\n",
        telemetry_toml(&collector.url(), "callee", ""),
        plugin("salute"),
    );
    // The callee as a pod whose operator names it, exporting to a backend that wants a key.
    let _callee = serve_with(
        &dir,
        "callee",
        &callee,
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "host.name=pod-7,deployment.environment.name=ci",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer t0ken"),
        ],
    );
    let caller = format!(
        "listen = []\n{}[rest]\nlisten = \"127.0.0.1:{rest}\"\n[[rest.route]]\npin = \"chaos:*\"\nmap = {{ relay = {{ POST = true }} }}\n\
         [[client]]\ntype = \"http\"\nport = {act_port}\npin = \"cmd:salute\"\n[[plugin]]\npath = {:?}\n",
        telemetry_toml(&collector.url(), "caller", ""),
        plugin("chaos"),
    );
    let _caller = serve(&dir, "caller", &caller);
    wait_for_rest(rest).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The callee may still be starting: relay until it answers.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    loop {
        let answer = http
            .post(format!("http://127.0.0.1:{rest}/relay"))
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
            .header("content-type", "application/json")
            .body(r#"{"inner":{"cmd":"salute","name":"Ada"}}"#)
            .send()
            .await
            .expect("caller answers");
        if answer.status() == 200 {
            let body: Value =
                serde_json::from_str(&answer.text().await.expect("body")).expect("JSON");
            assert_eq!(body["inner"]["message"], "Hello Ada!", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the callee never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spans = collector
        .wait_for(trace, |spans| {
            spans
                .iter()
                .any(|s| s.service == "callee" && s.name.starts_with("handle salute@"))
        })
        .await;
    let sent = one(&spans, "the Seneca HTTP client's request", |s| {
        s.service == "caller" && s.kind == CLIENT && s.status != STATUS_ERROR
    });
    assert_eq!(sent.attr("http.response.status_code"), Some("200"));
    let served = one(&spans, "the callee's /act", |s| {
        s.service == "callee" && s.kind == SERVER
    });
    assert_eq!(served.name, "POST /act");
    assert_eq!(
        served.parent,
        sent.id,
        "server under client: {}",
        outline(&spans)
    );
    assert_eq!(served.attr("seneca.pattern"), Some("cmd:salute"));
    let call = one(&spans, "the callee's call into salute", |s| {
        s.service == "callee" && s.name.starts_with("handle salute@")
    });
    assert_eq!(call.parent, served.id);

    // Each span says which process made it: the caller by its Seneca instance id (what its
    // `/health` says) and this machine's name, the callee by what its operator set.
    let health = http
        .get(format!("http://127.0.0.1:{rest}/health"))
        .send()
        .await
        .expect("health")
        .text()
        .await
        .expect("body");
    let health: Value = serde_json::from_str(&health).expect("JSON");
    assert!(health["instance"].is_string(), "{health}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(
        (
            sent.resource.get("service.instance.id").map(String::as_str),
            sent.resource.get("host.name").map(String::as_str),
        ),
        (health["instance"].as_str(), Some(hostname.trim())),
        "{sent:#?}"
    );
    assert_eq!(
        (
            served.resource.get("host.name").map(String::as_str),
            served
                .resource
                .get("deployment.environment.name")
                .map(String::as_str),
        ),
        (Some("pod-7"), Some("ci")),
        "{served:#?}"
    );
    let callee_instance = served.resource.get("service.instance.id");
    assert!(
        callee_instance
            .is_some_and(|id| id.ends_with("/wasmeca")
                && Some(id) != sent.resource.get("service.instance.id")),
        "{served:#?}"
    );
    assert!(
        collector
            .keys
            .lock()
            .expect("the keys")
            .contains("Bearer t0ken"),
        "the callee's exports carried OTEL_EXPORTER_OTLP_HEADERS"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store call its act's deadline cuts short (PostgreSQL waiting on a lock the test holds)
/// ends its span failed as `cancelled`, under the plugin's call; the plugin gets
/// `action_timeout`, and once the lock goes, the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_its_deadline_cuts_short_ends_its_span_failed_as_cancelled() {
    let collector = Collector::start().await;
    let schema = support::PgSchema::new("").await;
    let dir = folder(&wasmeca::message::new_id());
    let rest = free_port();
    let toml = format!(
        "listen = []\n{}[rest]\nlisten = \"127.0.0.1:{rest}\"\n[[rest.route]]\npin = \"chaos:*\"\nmap = {{ relay = {{ POST = true }} }}\n\
         [data]\nurl = {:?}\n[[plugin]]\npath = {:?}\ndata = [\"shop\"]\n",
        telemetry_toml(&collector.url(), "shop", ""),
        schema.url("document"),
        plugin("chaos"),
    );
    let _host = serve(&dir, "shop", &toml);
    wait_for_rest(rest).await;
    let http = reqwest::Client::new();
    let relay = |inner: Value, trace: &str| {
        http.post(format!("http://127.0.0.1:{rest}/relay"))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .header("content-type", "application/json")
            .body(json!({ "inner": inner }).to_string())
            .send()
    };
    let load = json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "a",
                      "timeout$": 500});
    let saved = relay(
        json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
               "ent": {"id$": "a", "name": "apple"}}),
        "5bf92f3577b34da6a3ce929d0e0e4736",
    )
    .await
    .expect("the host answers");
    assert_eq!(saved.status(), 200, "{:?}", saved.text().await);

    // A session holding the store's table: the next load waits on it past its deadline.
    let (holder, held) = support::pg_session().await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".wasmeca_entity IN ACCESS EXCLUSIVE MODE",
            schema.name
        ))
        .await
        .expect("the lock");
    let cut = "5bf92f3577b34da6a3ce929d0e0e4737";
    let answer = relay(load, cut).await.expect("the host answers");
    let status = answer.status();
    let body: Value = serde_json::from_str(&answer.text().await.expect("body")).expect("JSON");
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (504, Some("action_timeout")),
        "{body}"
    );
    let loaded = failed_load(&collector, cut).await;
    assert_eq!(loaded.attr("error.type"), Some("cancelled"), "{loaded:#?}");
    assert_eq!(loaded.attr("db.system.name"), Some("postgresql"));

    // The lock gone, the store answers again: the call cut short left its pool usable.
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    drop(holder);
    let _ = held.await;
    // Without the short deadline: the store may open a new connection first.
    let again = json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "a"});
    let answer = relay(again, "5bf92f3577b34da6a3ce929d0e0e4738")
        .await
        .expect("the host answers");
    assert_eq!(answer.status(), 200);
    let body: Value = serde_json::from_str(&answer.text().await.expect("body")).expect("JSON");
    assert_eq!(body["inner"]["name"], "apple", "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
