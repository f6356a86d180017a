//! The REST gateway: the axum server that finds a request's route in the [`table`] it keeps of
//! the plugins' seneca-web [`routes`], turns the request into `pattern + args: {params, query, body}` as seneca-web does,
//! acts it through the shared ingress step, and answers JSON; with `/health`, `/metrics` and
//! `/plugins` ([`crate::server::status`]) beside the routes.

pub mod routes;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{ActError, Code};
use crate::ingress::Ingress;
use crate::message::{self, Message, Reply};
use crate::server::{self, status};
use crate::telemetry::{self, Span, span};
use routes::Route;
use table::{Mounted, Routes};

/// What the handlers share.
#[derive(Clone)]
struct Gateway {
    /// Acts the requests' messages.
    ingress: Ingress,
    /// The route table, following the plugin set.
    routes: Arc<Routes>,
}

/// An error answered as JSON `{code, message, details?}` with the status its code (or the
/// plugin) gives it; internal detail stays in the log.
struct RestError(ActError);

impl From<ActError> for RestError {
    fn from(e: ActError) -> Self {
        Self(e)
    }
}

impl AsRef<ActError> for RestError {
    fn as_ref(&self) -> &ActError {
        &self.0
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "code": e.code, "message": e.message });
        if let Some(details) = e.details {
            body["details"] = *details;
        }
        server::json(status, body.to_string())
    }
}

/// The errors the server answers itself (a body too slow or too large), as REST writes errors.
fn error_page(e: ActError) -> Response {
    RestError(e).into_response()
}

/// Binds the gateway's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the gateway on `listener` until `shutdown`, then finishes the requests in flight.
/// The route table is rebuilt as soon as the plugin set changes.
pub async fn run(
    listener: TcpListener,
    ingress: Ingress,
    routes: Arc<Routes>,
    limits: server::HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut changes = ingress.router().registry().subscribe();
    let following = routes.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = changes.changed() => match changed {
                    Ok(()) => drop(following.current()),
                    Err(_) => break,
                },
            }
        }
    });
    let gateway = Gateway { ingress, routes };
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/health/live", axum::routing::get(live))
        .route("/health/ready", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics))
        .route("/plugins", axum::routing::get(plugins))
        .fallback(route)
        .with_state(gateway);
    server::serve(listener, app, limits, Arc::new(error_page), shutdown).await
}

async fn health(State(g): State<Gateway>) -> Response {
    status::health(g.ingress.router())
}

async fn live(State(g): State<Gateway>) -> Response {
    status::live(g.ingress.router())
}

async fn ready(State(g): State<Gateway>) -> Response {
    status::ready(g.ingress.router()).await
}

async fn metrics(State(g): State<Gateway>) -> Response {
    let text = g.ingress.router().metrics().encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn plugins(State(g): State<Gateway>) -> Response {
    let routes = g.routes.clone();
    let describe: status::DescribeRoutes = Arc::new(move || routes.describe());
    status::plugins(g.ingress.router(), &describe)
}

/// Every other path: a plugin's route, or a JSON 404/405.
async fn route(State(g): State<Gateway>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let table = g.routes.current();
    let (entry, params) = match table.find(method, uri.path()) {
        Ok(found) => found,
        Err(allowed) if allowed.is_empty() => {
            let error = ActError::host(
                Code::NotFound,
                format!("no route for {method} {}", uri.path()),
            );
            return RestError(error).into_response();
        }
        Err(allowed) => {
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let error = ActError::host(
                Code::MethodNotAllowed,
                format!("{method} is not served on {}; allowed: {list}", uri.path()),
            );
            let mut response = RestError(error).into_response();
            if let Ok(value) = HeaderValue::from_str(&list) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
    };
    let span = span!(
        parent: &server::remote_parent(headers, None),
        format!("{method} {}", entry.route.path),
        Server,
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("http.route", entry.route.path.to_string()),
        KeyValue::new("url.path", uri.path().to_owned()),
    );
    let serve = serve_route(&g, entry, params, &parts, body, &span);
    let response = match telemetry::traced!(&span, serve) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    span.tag(KeyValue::new(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    ));
    entry
        .metrics
        .record(started.elapsed(), response.status().as_u16());
    response
}

async fn serve_route(
    g: &Gateway,
    entry: &Mounted,
    params: Map<String, Value>,
    request: &Parts,
    body: Body,
    span: &Span,
) -> Result<Response, RestError> {
    let (method, uri, headers) = (&request.method, &request.uri, &request.headers);
    let route = &entry.route;
    let query = parse_query(uri.query().unwrap_or(""));
    let body = read_body(method, headers, body).await?;
    // The pattern's keys win over `args`, as in seneca-web.
    let mut msg = Map::new();
    msg.insert(
        "args".into(),
        json!({ "params": params, "query": query, "body": body }),
    );
    msg.extend(route.pattern.clone());
    let pin = route.version.clone().or_else(|| {
        let from_query = query
            .get(message::VERSION)
            .and_then(Value::as_str)
            .map(str::to_owned);
        from_query.or_else(|| {
            headers
                .get("x-wasmeca-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
    });
    if let Some(pin) = pin {
        msg.insert(message::VERSION.into(), Value::String(pin));
    }
    match g.ingress.act(Message::new(msg), None, span).await {
        Ok(reply) => Ok(respond(route, reply)),
        Err(e) => {
            if e.http_status() >= 500 {
                let (route, pattern, code) = (&route.path, &route.pattern_text, &e.code);
                tracing::warn!(route, pattern, code, "{}", e.message);
            }
            Err(RestError(e))
        }
    }
}

fn respond(route: &Route, reply: Reply) -> Response {
    if let Some(location) = &route.redirect {
        return (StatusCode::FOUND, [(header::LOCATION, location.as_str())]).into_response();
    }
    if !route.autoreply {
        return StatusCode::OK.into_response();
    }
    if reply.is_null() {
        return StatusCode::NO_CONTENT.into_response();
    }
    server::json(StatusCode::OK, reply.into_string())
}

/// Query values as strings; a repeated key becomes an array of strings.
fn parse_query(query: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let (k, v) = (k.into_owned(), Value::String(v.into_owned()));
        match out.get_mut(&k) {
            Some(Value::Array(items)) => items.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

/// The body as seneca-web passes it: `{}` except for POST, PUT and PATCH, where JSON,
/// urlencoded forms and text are parsed by content type. The server has read it already,
/// within its time and size limits.
async fn read_body(method: &Method, headers: &HeaderMap, body: Body) -> Result<Value, RestError> {
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        ActError::host(
            Code::InvalidBody,
            format!("the body could not be read: {e}"),
        )
    })?;
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) || bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/x-www-form-urlencoded" {
        return Ok(Value::Object(parse_query(&String::from_utf8_lossy(&bytes))));
    }
    if mime.starts_with("text/") {
        return Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    }
    if mime.is_empty() || mime == "application/json" || mime.ends_with("+json") {
        return serde_json::from_slice(&bytes).map_err(|e| {
            RestError(
                ActError::host(
                    Code::InvalidJson,
                    format!("the body is not valid JSON: {e}"),
                )
                .with_details(json!({ "line": e.line(), "column": e.column() })),
            )
        });
    }
    Err(RestError(ActError::host(
        Code::UnsupportedMediaType,
        format!("bodies of type `{mime}` are not understood; send JSON, a urlencoded form or text"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_strings_and_repeats_become_arrays() {
        assert_eq!(
            Value::Object(parse_query("a=1&b=x%20y&a=2&a=3&c")),
            json!({"a": ["1", "2", "3"], "b": "x y", "c": ""})
        );
    }
}
