//! Seneca's HTTP transport, wire-compatible with seneca-transport 8 (SENECA.md §3): the
//! listener (`POST /act`, any method, `?cmd=x` and `?msg$=...` forms, the `seneca-*` headers,
//! Seneca's error bodies and statuses, answers cached by `seneca-id`; plus wasmeca's `POST
//! /publish` for events, `GET /health`, `GET /plugins`, and the answering plugin named when a
//! request asks with `wasmeca-trace: 1`) and the client (`[[client]] type = "http"`), which
//! keeps its connections alive where Node closes them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ActError, Code};
use crate::ingress::Ingress;
use crate::message::{self, Message, Reply};
use crate::pattern;
use crate::remote::{Remote, RemoteCall};
use crate::runtime::BoxFuture;
use crate::server::status::{self, DescribeRoutes};
use crate::server::{self, HttpLimits};
use crate::telemetry::{self, Span, span};

/// `seneca-id`: the act id `mi/tx`.
const SENECA_ID: &str = "seneca-id";
/// `seneca-kind`: `req` or `res`.
const SENECA_KIND: &str = "seneca-kind";
/// `seneca-origin`: the calling instance's id.
const SENECA_ORIGIN: &str = "seneca-origin";
/// `seneca-accept`: the answering instance's id.
const SENECA_ACCEPT: &str = "seneca-accept";
/// `seneca-track`: instances the message went through (JSON in requests, comma-joined in
/// responses).
const SENECA_TRACK: &str = "seneca-track";
/// Client send time (ms since the epoch).
const TIME_CLIENT_SENT: &str = "seneca-time-client-sent";
/// Listener receive time (always `0` in seneca-transport's responses).
const TIME_LISTEN_RECV: &str = "seneca-time-listen-recv";
/// Listener send time (always `0` in seneca-transport's responses).
const TIME_LISTEN_SENT: &str = "seneca-time-listen-sent";
/// wasmeca's request header `wasmeca-trace: 1`: asks the listener to name who answered in
/// [`PLUGIN`]. Node's peers never send it, so Seneca's wire format is unchanged for them.
const TRACE: &str = "wasmeca-trace";
/// wasmeca's response header, only when asked with [`TRACE`]: the plugin `name@version` (or
/// `client <url>`) this host resolved the message to.
const PLUGIN: &str = "wasmeca-plugin";

/// What the listener's handlers share.
#[derive(Clone)]
struct Listener {
    /// Acts the messages (loop check, history, metric).
    ingress: Ingress,
    /// The REST routes, for `/plugins`.
    routes: DescribeRoutes,
    /// The act path (`/act`).
    path: Arc<str>,
}

/// Binds a listener address (a host name or IP, and a port; 0 picks a free one).
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

/// Serves Seneca's HTTP transport on `listener` at `path` until `shutdown`, then finishes the
/// requests in flight.
pub async fn run(
    listener: TcpListener,
    ingress: Ingress,
    routes: DescribeRoutes,
    path: String,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let me: Arc<str> = ingress.router().instance_id().into();
    // The errors the server answers itself (a body too slow or too large), as Seneca's error JSON.
    let error_page: server::ErrorPage =
        Arc::new(move |e| respond(Err(e), None, None, &[], &me, None));
    let state = Listener {
        ingress,
        routes,
        path: path.into(),
    };
    let app = axum::Router::new()
        .fallback(act)
        .with_state(state)
        // The server has read the body already, within `limits.body_limit`.
        .layer(axum::extract::DefaultBodyLimit::disable());
    server::serve(listener, app, limits, error_page, shutdown).await
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every request: the act path acts; `GET /health` and `GET /plugins` describe this host (for
/// Consul's check and for peers); any other path is a 404 with an empty body (as Node).
async fn act(
    State(s): State<Listener>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let router = s.ingress.router();
    if uri.path() != &*s.path {
        return match (method, uri.path()) {
            (axum::http::Method::GET, "/health") => status::health(router),
            (axum::http::Method::GET, "/health/live") => status::live(router),
            (axum::http::Method::GET, "/health/ready") => status::ready(router).await,
            (axum::http::Method::GET, "/plugins") => status::plugins(router, &s.routes),
            (axum::http::Method::POST, "/publish") => publish(router, &body).await,
            _ => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let origin = header_str(&headers, SENECA_ORIGIN).map(str::to_owned);
    let seneca_id = header_str(&headers, SENECA_ID).map(str::to_owned);
    let track: Vec<String> = header_str(&headers, SENECA_TRACK)
        .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
        .map(|t| {
            t.into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let me = router.instance_id().to_owned();
    let traced = header_str(&headers, TRACE) == Some("1");
    let mut answerer = None;
    let msg = message(
        &uri,
        &headers,
        &body,
        seneca_id.as_deref(),
        origin.as_deref(),
        &track,
    );
    let tx = msg.as_ref().ok().and_then(|msg| msg.act_id().1);
    let span = span!(
        parent: &server::remote_parent(&headers, tx),
        format!("POST {}", s.path),
        Server,
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("http.route", s.path.clone()),
        KeyValue::new("rpc.system", "seneca"),
    );
    let answer = match msg {
        Err(e) => Err(e),
        Ok(msg) => {
            // A `$target` message goes to another service: nothing here names who answers.
            if traced && msg.target().is_none() {
                answerer = router.registry().with_snapshot(|set| set.answerer(&msg));
            }
            telemetry::traced!(&span, s.ingress.act(msg, seneca_id.as_deref(), &span))
        }
    };
    let response = respond(
        answer,
        seneca_id.as_deref(),
        origin.as_deref(),
        &track,
        &me,
        answerer.as_deref(),
    );
    span.tag(KeyValue::new(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    ));
    response
}

/// `POST /publish`: the body (a JSON object, or jsonic) is published as an event; answers
/// 202 with its id once the bus accepted it.
async fn publish(router: &crate::router::Router, body: &[u8]) -> Response {
    let event = std::str::from_utf8(body)
        .map_err(|e| ActError::host(Code::InvalidMessage, format!("the body is not UTF-8: {e}")))
        .and_then(|text| {
            Message::parse(text).map_err(|e| {
                let code = if e.too_deep {
                    Code::TooDeep
                } else {
                    Code::InvalidMessage
                };
                ActError::host(code, format!("the event does not parse: {e}"))
            })
        });
    let published = match event {
        Ok(event) => router.publish(event).await,
        Err(e) => Err(e),
    };
    match published {
        Ok(id) => server::json(StatusCode::ACCEPTED, json!({ "event$": id }).to_string()),
        Err(e) => server::json(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_seneca_json().to_string(),
        ),
    }
}

/// The message Seneca's listener builds: the JSON body, then `args$` and `msg$` from the
/// query (jsonic), then every other query value as a string; plus `id$` and `transport$` from
/// the headers.
fn message(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    seneca_id: Option<&str>,
    origin: Option<&str>,
    track: &[String],
) -> Result<Message, ActError> {
    let invalid = |what: String| ActError::host(Code::InvalidJson, what);
    let too_deep = |what: String| ActError::host(Code::TooDeep, what);
    let mut msg = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(invalid(format!(
                    "the body must be a JSON object, not {}",
                    message::json_kind(&other)
                )));
            }
            // serde_json stops at 128 levels with this message (it has no category of its own).
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                return Err(too_deep(format!(
                    "the body nests deeper than {} levels ({e})",
                    pattern::MAX_DEPTH
                )));
            }
            Err(e) => return Err(invalid(format!("the body is not valid JSON: {e}"))),
        }
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    for key in ["args$", "msg$"] {
        for (_, text) in query.iter().filter(|(k, _)| k == key) {
            let parsed = pattern::parse_jsonic(text).map_err(|e| {
                if e.too_deep {
                    too_deep(format!("`{key}` {e}"))
                } else {
                    invalid(format!("`{key}` {e}"))
                }
            })?;
            msg.extend(parsed);
        }
    }
    for (k, v) in query
        .into_iter()
        .filter(|(k, _)| k != "args$" && k != "msg$")
    {
        msg.insert(k, Value::String(v));
    }
    let client_sent = header_str(headers, TIME_CLIENT_SENT).unwrap_or("0");
    let origin = origin
        .or_else(|| header_str(headers, header::USER_AGENT.as_str()))
        .unwrap_or("UNKNOWN");
    if let Some(id) = seneca_id {
        msg.insert(message::ID.into(), Value::String(id.to_owned()));
    }
    msg.insert(
        "transport$".into(),
        json!({ "track": track, "origin": origin, "time": { "client_sent": client_sent } }),
    );
    Ok(Message::new(msg))
}

/// The answer with seneca-transport's headers (and `wasmeca-plugin` when the request asked for
/// a trace and `answerer` is known); errors carry Seneca's fields and the status `statusCode`
/// else 500.
fn respond(
    answer: Result<Reply, ActError>,
    id: Option<&str>,
    origin: Option<&str>,
    track: &[String],
    me: &str,
    answerer: Option<&str>,
) -> Response {
    let (status, body) = match answer {
        Ok(reply) => (StatusCode::OK, reply.into_string()),
        Err(e) => {
            let status = StatusCode::from_u16(e.transport_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut body = e.to_seneca_json();
            body["eraro"] = Value::Bool(true);
            body["package"] = Value::String("wasmeca".into());
            (status, body.to_string())
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("content-type", "application/json");
    set("cache-control", "private, max-age=0, no-cache, no-store");
    if let Some(id) = id {
        set(SENECA_ID, id);
    }
    set(SENECA_KIND, "res");
    set(SENECA_ORIGIN, origin.unwrap_or("UNKNOWN"));
    set(SENECA_ACCEPT, me);
    set(SENECA_TRACK, &track.join(","));
    set(TIME_CLIENT_SENT, "0");
    set(TIME_LISTEN_RECV, "0");
    set(TIME_LISTEN_SENT, "0");
    if let Some(answerer) = answerer {
        set(PLUGIN, answerer);
    }
    response
}

/// Milliseconds since the epoch.
fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `[[client]] type = "http"`: sends acts to a Seneca HTTP listener (Node's or another
/// wasmeca's) over kept-alive connections.
pub struct HttpClient {
    /// `http://host:port/path`.
    url: String,
    /// The pooled HTTP client (keep-alive, TCP_NODELAY).
    http: reqwest::Client,
    /// The request timeout; the act's deadline wins when it is sooner.
    timeout: Duration,
    /// This host's Seneca instance id, sent as `seneca-origin` and in `seneca-track`.
    origin: Arc<str>,
}

/// What a listener's response says about who answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answerer {
    /// `seneca-accept`: the Seneca instance id of the host that answered (every Seneca
    /// listener sends it).
    pub instance: Option<String>,
    /// `wasmeca-plugin`: the plugin `name@version` (or `client <url>`) that host resolved the
    /// message to; only a wasmeca listener asked with `wasmeca-trace: 1` sends it.
    pub plugin: Option<String>,
}

impl HttpClient {
    /// A client for `http://host:port/path`.
    pub fn new(
        host: &str,
        port: u16,
        path: &str,
        timeout: Duration,
        origin: Arc<str>,
    ) -> Result<Self, reqwest::Error> {
        // Node's client maps 0.0.0.0 to 127.0.0.1; so do we.
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        // Its URL is always `http://`: no CAs to load for each peer's client.
        let http = reqwest::Client::builder()
            .tls_certs_only([])
            .tcp_nodelay(true)
            // Well under wasmeca's 60 s server idle timeout: a pooled connection is dropped
            // here before the server closes it, so a request does not race the server's close.
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .no_proxy()
            .build()?;
        Ok(Self {
            url: format!("http://{host}:{port}{path}"),
            http,
            timeout,
            origin,
        })
    }

    /// Acts `msg` as [`Remote::act`] does, and says which host answered; with `trace`, the
    /// request asks the listener (`wasmeca-trace: 1`) which plugin answered too.
    pub async fn act_answered(
        &self,
        msg: &Message,
        call: RemoteCall<'_>,
        trace: bool,
    ) -> (Result<Reply, ActError>, Answerer) {
        let mut answerer = Answerer::default();
        let answer = self.act_with(msg, call, Some((&mut answerer, trace))).await;
        (answer, answerer)
    }

    /// The act in its client span; `answerer` is filled from the response when given.
    async fn act_with(
        &self,
        msg: &Message,
        call: RemoteCall<'_>,
        answerer: Option<(&mut Answerer, bool)>,
    ) -> Result<Reply, ActError> {
        let span = span!(
            "POST",
            Client,
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.full", self.url.clone()),
            KeyValue::new("rpc.system", "seneca"),
        );
        telemetry::traced!(&span, self.send(msg, call, &span, answerer))
    }

    async fn send(
        &self,
        msg: &Message,
        call: RemoteCall<'_>,
        span: &Span,
        answerer: Option<(&mut Answerer, bool)>,
    ) -> Result<Reply, ActError> {
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        let timeout = self.timeout.min(remaining);
        let mut body = msg.clean();
        body.insert("custom$".into(), json!({}));
        let body = serde_json::to_vec(&body)
            .map_err(|e| ActError::host(Code::InvalidMessage, e.to_string()))?;
        // The track the message came with, plus this host: a host never gets it back (loop).
        let mut track: Vec<Value> = msg
            .get("transport$")
            .and_then(|t| t.get("track"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        track.push(json!(&*self.origin));
        let track = Value::Array(track).to_string();
        let mut request = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .header(SENECA_ID, format!("{}/{}", message::new_id(), call.tx))
            .header(SENECA_KIND, "req")
            .header(SENECA_ORIGIN, &*self.origin)
            .header(SENECA_TRACK, track)
            .header(TIME_CLIENT_SENT, now_ms().to_string())
            .body(body);
        for (name, value) in span.carry() {
            request = request.header(name, value);
        }
        if let Some((_, true)) = answerer {
            request = request.header(TRACE, "1");
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ActError::timeout(&call.pin.to_string(), timeout)
            } else if e.is_connect() {
                let why = crate::error::chain(&e);
                ActError::host(
                    Code::Unreachable,
                    format!("cannot reach {}: {why}", self.url),
                )
            } else {
                ActError::host(
                    Code::ActExecute,
                    format!(
                        "{}: client request error: {}",
                        self.url,
                        crate::error::chain(&e)
                    ),
                )
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        span.tag(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if let Some((answerer, _)) = answerer {
            let named = |name: &str| header_str(response.headers(), name).map(str::to_owned);
            answerer.instance = named(SENECA_ACCEPT);
            answerer.plugin = named(PLUGIN);
        }
        let text = response.text().await.map_err(failed)?;
        if status.is_success() {
            // Seneca's client: an object or array is the result, anything else null.
            return Ok(Reply::from_json(text).unwrap_or_else(|_| Reply::from_value(&Value::Null)));
        }
        // A Seneca error body keeps its own code and status (an `act_not_found` comes with 500
        // on the wire, but stays `act_not_found` here); anything else is the HTTP status.
        Err(match serde_json::from_str::<Value>(&text) {
            Ok(body @ Value::Object(_)) if body.get("code").is_some() => {
                ActError::from_seneca_json(&body)
            }
            _ => ActError::host(
                Code::ActExecute,
                format!("{}: Response Error: {status}", self.url),
            )
            .with_status(status.as_u16()),
        })
    }
}

impl Remote for HttpClient {
    fn act<'a>(
        &'a self,
        msg: &'a Message,
        call: RemoteCall<'a>,
    ) -> BoxFuture<'a, Result<Reply, ActError>> {
        Box::pin(self.act_with(msg, call, None))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests;
