//! The REST gateway: seneca-web route maps (from plugin manifests and `[rest]` in the config)
//! compiled to a route table that follows every plugin snapshot, and the axum server that turns
//! a request into `pattern + args: {params, query, body}`, acts it, and answers JSON, with
//! `/health`, `/metrics` and `/plugins` beside the routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use semver::Version;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::message::{self, ActError, Message, Reply};
use crate::metrics::RouteMetrics;
use crate::pattern;
use crate::router::Router;

/// The verbs seneca-web knows.
const VERBS: [&str; 7] = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"];

/// Paths the gateway itself serves; plugin routes on them are reported and ignored.
const RESERVED: [&str; 3] = ["/health", "/metrics", "/plugins"];

/// One REST route: a method and path that act a pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: Method,
    /// The path template in seneca-web (koa-router) syntax: `/user/:id`.
    pub path: String,
    /// The pattern the route acts (the pin with its first `:*` replaced by the map key).
    pub pattern: Map<String, Value>,
    /// The pattern as text, for logs and metrics.
    pub pattern_text: String,
    /// Where to send the client after the act succeeds (302), if anywhere.
    pub redirect: Option<String>,
    /// False when the route answers 200 with no body whatever the act returns.
    pub autoreply: bool,
    /// Who declared it: the plugin's name, or `config`.
    pub owner: String,
    /// `$version` pin the route adds (for the `/v<major>` mounts).
    pub version: Option<String>,
}

/// Compiles one seneca-web route set (`{prefix, postfix, pin, map}`) to routes. Problems that
/// seneca-web silently skips (no pin, an empty key, a map entry with no verbs) are returned as
/// warnings instead.
pub fn compile(set: &Value, owner: &str) -> (Vec<Route>, Vec<String>) {
    let mut routes = Vec::new();
    let mut warnings = Vec::new();
    let Some(set) = set.as_object() else {
        warnings.push(format!("{owner}: a route set must be an object, not {set}"));
        return (routes, warnings);
    };
    let Some(pin) = set.get("pin").and_then(Value::as_str) else {
        warnings.push(format!("{owner}: route set without a string `pin` skipped"));
        return (routes, warnings);
    };
    let text = |key: &str| set.get(key).and_then(Value::as_str).unwrap_or("");
    let (prefix, postfix) = (text("prefix"), text("postfix"));
    let Some(map) = set.get("map").and_then(Value::as_object) else {
        warnings.push(format!("{owner}: route set `{pin}` has no `map` object"));
        return (routes, warnings);
    };
    for (key, spec) in map {
        if key.is_empty() {
            warnings.push(format!(
                "{owner}: route set `{pin}`: an empty map key is skipped"
            ));
            continue;
        }
        let pattern_text = pin.replacen(":*", &format!(":{key}"), 1);
        let pattern = match pattern::parse_jsonic(&pattern_text) {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("{owner}: route `{key}`: pattern {e}"));
                continue;
            }
        };
        let (methods, name, suffix, alias, redirect, autoreply) = match spec {
            Value::Object(o) => {
                let methods: Vec<Method> = o
                    .keys()
                    .filter_map(|k| VERBS.iter().find(|v| v.eq_ignore_ascii_case(k)))
                    .filter_map(|v| Method::from_bytes(v.as_bytes()).ok())
                    .collect();
                let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
                let autoreply = o.get("autoreply") != Some(&Value::Bool(false));
                (
                    methods,
                    get("name"),
                    get("suffix"),
                    get("alias"),
                    get("redirect"),
                    autoreply,
                )
            }
            // Any non-object, `false` included, is a GET route (as seneca-web does it).
            _ => (vec![Method::GET], None, None, None, None, true),
        };
        if methods.is_empty() {
            warnings.push(format!(
                "{owner}: route `{key}` of `{pin}` names no HTTP verb, so it is never served"
            ));
            continue;
        }
        let path = match alias {
            Some(alias) => join_path(&[&alias]),
            None => {
                let name = name.as_deref().unwrap_or(key);
                join_path(&[prefix, name, postfix, suffix.as_deref().unwrap_or("")])
            }
        };
        for method in methods {
            routes.push(Route {
                method,
                path: path.clone(),
                pattern: pattern.clone(),
                pattern_text: pattern_text.clone(),
                redirect: redirect.clone(),
                autoreply,
                owner: owner.to_owned(),
                version: None,
            });
        }
    }
    (routes, warnings)
}

/// Node's `path.join('/', ...)`: segments joined with `/`, `//` collapsed, `.` and `..`
/// resolved, a trailing slash kept when the last non-empty part had one.
pub fn join_path(parts: &[&str]) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for part in parts {
        for segment in part.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
    }
    let trailing = parts
        .iter()
        .rev()
        .find(|p| !p.is_empty())
        .is_some_and(|p| p.ends_with('/'));
    let mut path = format!("/{}", segments.join("/"));
    if trailing && path.len() > 1 {
        path.push('/');
    }
    path
}

/// koa-router's `:param` segments in matchit's `{param}` syntax.
fn matchit_path(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg.strip_prefix(':') {
            Some(name) if !name.is_empty() => format!("{{{name}}}"),
            _ => seg.replace('{', "{{").replace('}', "}}"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One served route with its metrics handles.
struct Entry {
    /// The route.
    route: Route,
    /// Requests and latency for it.
    metrics: RouteMetrics,
}

/// All routes of a plugin snapshot, by method.
#[derive(Default)]
pub struct RouteTable {
    /// matchit routers by method; values index `entries`.
    by_method: HashMap<Method, matchit::Router<usize>>,
    /// The routes.
    entries: Vec<Entry>,
}

/// A route that could not be served because another owner took its method and path first.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Method and path.
    pub route: String,
    /// The owner that keeps it.
    pub kept_by: String,
    /// The owner refused.
    pub refused: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "route {} of {} conflicts with {}, which keeps it",
            self.route, self.refused, self.kept_by
        )
    }
}

/// Route sets of one owner (a plugin version, or the config).
pub struct RouteSource<'a> {
    /// Plugin name or `config`.
    pub owner: &'a str,
    /// The plugin's version (routes are also mounted under `/v<major>`), if a plugin.
    pub version: Option<&'a Version>,
    /// The seneca-web route sets.
    pub sets: &'a [Value],
}

impl RouteTable {
    /// Builds the table; earlier sources keep a method and path when later ones claim it too.
    /// Versions of the same plugin share their plain paths (the router picks the version).
    pub fn build(
        sources: &[RouteSource<'_>],
        metrics: &crate::metrics::Metrics,
    ) -> (Self, Vec<Conflict>, Vec<String>) {
        let mut table = Self::default();
        let mut conflicts = Vec::new();
        let mut warnings = Vec::new();
        let mut owners: HashMap<(Method, String), String> = HashMap::new();
        for source in sources {
            for set in source.sets {
                let (routes, mut w) = compile(set, source.owner);
                warnings.append(&mut w);
                for route in routes {
                    let mut mounts = vec![route.clone()];
                    if let Some(version) = source.version {
                        let mut versioned = route.clone();
                        versioned.path = join_path(&[&format!("/v{}", version.major), &route.path]);
                        versioned.version = Some(version.major.to_string());
                        mounts.push(versioned);
                    }
                    for mount in mounts {
                        table.insert(mount, &mut owners, &mut conflicts, metrics);
                    }
                }
            }
        }
        (table, conflicts, warnings)
    }

    fn insert(
        &mut self,
        route: Route,
        owners: &mut HashMap<(Method, String), String>,
        conflicts: &mut Vec<Conflict>,
        metrics: &crate::metrics::Metrics,
    ) {
        let key = (route.method.clone(), matchit_path(&route.path));
        let describe = format!("{} {}", route.method, route.path);
        if RESERVED.contains(&route.path.as_str()) {
            conflicts.push(Conflict {
                route: describe,
                kept_by: "wasmeca".into(),
                refused: route.owner.clone(),
            });
            return;
        }
        if let Some(owner) = owners.get(&key) {
            if *owner != route.owner {
                conflicts.push(Conflict {
                    route: describe,
                    kept_by: owner.clone(),
                    refused: route.owner.clone(),
                });
            }
            return;
        }
        let index = self.entries.len();
        let router = self.by_method.entry(route.method.clone()).or_default();
        if let Err(e) = router.insert(key.1.clone(), index) {
            // A different template matching the same requests (`/a/:x` against `/a/:y`).
            let kept_by = match &e {
                matchit::InsertError::Conflict { with } => owners
                    .iter()
                    .find(|((m, p), _)| *m == route.method && p == with)
                    .map(|(_, o)| o.clone()),
                _ => None,
            };
            conflicts.push(Conflict {
                route: describe,
                kept_by: kept_by.unwrap_or_else(|| format!("another route ({e})")),
                refused: route.owner.clone(),
            });
            return;
        }
        owners.insert(key, route.owner.clone());
        let metrics = metrics.route(&route.path, route.method.as_str());
        self.entries.push(Entry { route, metrics });
    }

    /// Every route, for `/plugins` and logs.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.entries.iter().map(|e| &e.route)
    }

    /// The route for a request, with its path parameters; `Err(allowed)` lists the methods
    /// that do serve the path (empty: no route at all).
    fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(&Entry, Map<String, Value>), Vec<Method>> {
        let lookup = |m: &Method| self.by_method.get(m).and_then(|r| r.at(path).ok());
        let hit = lookup(method).or_else(|| {
            if *method == Method::HEAD {
                lookup(&Method::GET)
            } else {
                None
            }
        });
        if let Some(m) = hit {
            let params = m
                .params
                .iter()
                .map(|(k, v)| {
                    let decoded = percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned();
                    (k.to_owned(), Value::String(decoded))
                })
                .collect();
            return Ok((&self.entries[*m.value], params));
        }
        let mut allowed: Vec<Method> = self
            .by_method
            .iter()
            .filter(|(_, r)| r.at(path).is_ok())
            .map(|(m, _)| m.clone())
            .collect();
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Err(allowed)
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// What the handlers share.
#[derive(Clone)]
struct Gateway {
    /// Acts and holds the plugin snapshot (whose route table the gateway serves).
    router: Router,
    /// The largest body accepted.
    body_limit: usize,
}

/// An error answered as JSON: `{code, message, details?}` with its status; internal detail
/// stays in the log.
struct JsonError(StatusCode, Value);

impl JsonError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self(status, json!({ "code": code, "message": message.into() }))
    }
}

impl From<&ActError> for JsonError {
    fn from(e: &ActError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "code": e.code, "message": e.message });
        if let Some(details) = &e.details {
            body["details"] = (**details).clone();
        }
        Self(status, body)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            self.1.to_string(),
        )
            .into_response()
    }
}

/// Binds the gateway's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the gateway on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn run(
    listener: TcpListener,
    router: Router,
    body_limit: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let gateway = Gateway { router, body_limit };
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/metrics", axum::routing::get(metrics))
        .route("/plugins", axum::routing::get(plugins))
        .fallback(route)
        .with_state(gateway);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn health(State(g): State<Gateway>) -> Response {
    health_response(&g.router)
}

/// `GET /health`: 200 with the plugins and versions while serving, 503 once shutting down.
/// The Seneca HTTP listener answers it too, for Consul's check.
pub(crate) fn health_response(router: &Router) -> Response {
    let set = router.plugins();
    let plugins: Vec<Value> = set
        .plugins()
        .iter()
        .map(|p| json!({ "name": p.name, "version": p.version.to_string() }))
        .collect();
    let closing = router.is_closing();
    let status = if closing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if closing { "closing" } else { "ok" },
        "instance": router.instance_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": plugins,
        "in_flight": router.in_flight(),
        "peers": router.peer_ids(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(g): State<Gateway>) -> Response {
    let text = g.router.metrics().encode();
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
    plugins_response(&g.router)
}

/// `GET /plugins`: every plugin (version, patterns, routes, file, load time), the REST routes,
/// and the last load errors. Peers read it from each other's Seneca HTTP listener.
pub(crate) fn plugins_response(router: &Router) -> Response {
    let set = router.plugins();
    let routes: Vec<Value> = set
        .routes()
        .routes()
        .map(|r| json!({ "method": r.method.as_str(), "path": r.path, "pattern": r.pattern_text, "owner": r.owner }))
        .collect();
    let plugins: Vec<Value> = set.plugins().iter().map(|p| p.describe()).collect();
    let body = json!({ "plugins": plugins, "routes": routes, "load_errors": router.load_errors() });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every other path: a plugin's route, or a JSON 404/405.
async fn route(State(g): State<Gateway>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let set = g.router.plugins();
    let (entry, params) = match set.routes().find(&method, uri.path()) {
        Ok(found) => found,
        Err(allowed) if allowed.is_empty() => {
            return JsonError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {}", uri.path()),
            )
            .into_response();
        }
        Err(allowed) => {
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = JsonError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not served on {}; allowed: {list}", uri.path()),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&list) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
    };
    let response = match serve_route(&g, entry, params, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    entry
        .metrics
        .record(started.elapsed(), response.status().as_u16());
    response
}

async fn serve_route(
    g: &Gateway,
    entry: &Entry,
    params: Map<String, Value>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let route = &entry.route;
    let query = parse_query(uri.query().unwrap_or(""));
    let body = read_body(method, headers, body, g.body_limit).await?;
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
    match g.router.act(Message::new(msg)).await {
        Ok(reply) => Ok(respond(route, reply)),
        Err(e) => {
            if e.http_status() >= 500 {
                tracing::warn!(route = %route.path, pattern = %route.pattern_text, "{e}");
            }
            Err(JsonError::from(&e))
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
    let text = reply.as_str().to_owned();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
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
/// urlencoded forms and text are parsed by content type.
async fn read_body(
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Value, JsonError> {
    let bytes: Bytes = http_body_util::Limited::new(body, limit)
        .collect_bytes()
        .await
        .map_err(|_| {
            JsonError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the {limit}-byte limit"),
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
            JsonError(
                StatusCode::BAD_REQUEST,
                json!({
                    "code": "invalid_json",
                    "message": format!("the body is not valid JSON: {e}"),
                    "details": { "line": e.line(), "column": e.column() },
                }),
            )
        });
    }
    Err(JsonError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("bodies of type `{mime}` are not understood; send JSON, a urlencoded form or text"),
    ))
}

/// `collect()` with a byte limit, as one call.
trait CollectBytes {
    async fn collect_bytes(self) -> Result<Bytes, ()>;
}

impl CollectBytes for http_body_util::Limited<Body> {
    async fn collect_bytes(self) -> Result<Bytes, ()> {
        use http_body_util::BodyExt;
        self.collect().await.map(|c| c.to_bytes()).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn routes(set: Value) -> Vec<(String, String, String)> {
        let (routes, warnings) = compile(&set, "p");
        assert!(warnings.is_empty(), "{warnings:?}");
        routes
            .into_iter()
            .map(|r| (r.method.to_string(), r.path, r.pattern_text))
            .collect()
    }

    fn triple(m: &str, p: &str, pat: &str) -> (String, String, String) {
        (m.into(), p.into(), pat.into())
    }

    #[test]
    fn paths_are_joined_like_node() {
        assert_eq!(
            join_path(&["/api/user", "list", "/v1", ""]),
            "/api/user/list/v1"
        );
        assert_eq!(
            join_path(&["/api/user", "", "/v1", "/:id"]),
            "/api/user/v1/:id"
        );
        assert_eq!(join_path(&["//a//", "./b", "../c"]), "/a/c");
        assert_eq!(join_path(&["", ""]), "/");
        assert_eq!(join_path(&["/api/", "list/"]), "/api/list/");
    }

    #[test]
    fn seneca_web_grammar() {
        let set = json!({
            "prefix": "/api/user", "postfix": "/v1", "pin": "module:user,if:*",
            "map": {
                "list": true,
                "load": {"GET": true, "name": "", "suffix": "/:id"},
                "edit": {"put": true, "PATCH": false, "name": "", "suffix": "/:id"},
                "off": false,
                "home": {"alias": "/x/../home", "GET": true},
                "none": {"name": "nothing"}
            }
        });
        let (compiled, warnings) = compile(&set, "user");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("route `none`"));
        let mut got: Vec<_> = compiled
            .iter()
            .map(|r| (r.method.to_string(), r.path.clone(), r.pattern_text.clone()))
            .collect();
        got.sort();
        let mut want = vec![
            triple("GET", "/api/user/list/v1", "module:user,if:list"),
            triple("GET", "/api/user/v1/:id", "module:user,if:load"),
            triple("PUT", "/api/user/v1/:id", "module:user,if:edit"),
            triple("PATCH", "/api/user/v1/:id", "module:user,if:edit"),
            triple("GET", "/api/user/off/v1", "module:user,if:off"),
            triple("GET", "/home", "module:user,if:home"),
        ];
        want.sort();
        assert_eq!(got, want);
        let list = compiled
            .iter()
            .find(|r| r.pattern_text.ends_with("list"))
            .unwrap();
        assert_eq!(
            list.pattern,
            json!({"module": "user", "if": "list"})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn only_the_first_star_takes_the_key_and_pins_without_star_share_one_pattern() {
        assert_eq!(
            routes(json!({"pin": "a:*,b:*", "map": {"k": true}})),
            [triple("GET", "/k", "a:k,b:*")]
        );
        assert_eq!(
            routes(json!({"pin": "role:x", "map": {"one": true, "two": true}})),
            [
                triple("GET", "/one", "role:x"),
                triple("GET", "/two", "role:x")
            ]
        );
    }

    #[test]
    fn redirect_and_autoreply() {
        let (r, _) = compile(
            &json!({"pin": "a:*", "map": {"go": {"POST": true, "redirect": "/done", "autoreply": false}}}),
            "p",
        );
        assert_eq!(
            (r[0].redirect.as_deref(), r[0].autoreply),
            (Some("/done"), false)
        );
    }

    #[test]
    fn sets_without_pin_or_with_empty_keys_are_reported() {
        let (r, w) = compile(&json!({"map": {"a": true}}), "p");
        assert!(r.is_empty() && w[0].contains("without a string `pin`"));
        let (r, w) = compile(&json!({"pin": "a:*", "map": {"": true}}), "p");
        assert!(r.is_empty() && w[0].contains("empty map key"));
    }

    #[test]
    fn table_finds_routes_params_and_allowed_methods() {
        let sets = [
            json!({"prefix": "/user", "pin": "module:user,if:*", "map": {
            "list": {"GET": true, "name": ""}, "load": {"GET": true, "name": "", "suffix": "/:id"},
            "edit": {"PUT": true, "name": "", "suffix": "/:id"}}}),
        ];
        let v = Version::new(1, 2, 0);
        let (table, conflicts, _) = RouteTable::build(
            &[RouteSource {
                owner: "user",
                version: Some(&v),
                sets: &sets,
            }],
            &Metrics::default(),
        );
        assert!(conflicts.is_empty());
        let (entry, params) = table.find(&Method::GET, "/user/7").map_err(|_| ()).unwrap();
        assert_eq!(entry.route.pattern_text, "module:user,if:load");
        assert_eq!(params, json!({"id": "7"}).as_object().unwrap().clone());
        assert!(table.find(&Method::HEAD, "/user").is_ok());
        let Err(allowed) = table.find(&Method::DELETE, "/user/7").map(|_| ()) else {
            panic!("DELETE is not routed")
        };
        assert_eq!(allowed, [Method::GET, Method::PUT]);
        assert_eq!(
            table.find(&Method::GET, "/nothing").map(|_| ()),
            Err(vec![])
        );
        let (versioned, _) = table
            .find(&Method::GET, "/v1/user/7")
            .map_err(|_| ())
            .unwrap();
        assert_eq!(versioned.route.version.as_deref(), Some("1"));
    }

    #[test]
    fn conflicts_name_both_owners_and_the_first_keeps_the_route() {
        let a = [json!({"pin": "a:*", "map": {"x": true}})];
        let b = [
            json!({"pin": "b:*", "map": {"x": true, "health": {"alias": "/health", "GET": true}}}),
        ];
        let (table, conflicts, _) = RouteTable::build(
            &[
                RouteSource {
                    owner: "first",
                    version: None,
                    sets: &a,
                },
                RouteSource {
                    owner: "second",
                    version: None,
                    sets: &b,
                },
            ],
            &Metrics::default(),
        );
        let mut described: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        described.sort();
        assert_eq!(
            described,
            [
                "route GET /health of second conflicts with wasmeca, which keeps it",
                "route GET /x of second conflicts with first, which keeps it"
            ]
        );
        let (entry, _) = table.find(&Method::GET, "/x").map_err(|_| ()).unwrap();
        assert_eq!(entry.route.owner, "first");
        // Two versions of one plugin share the plain path without a conflict.
        let v1 = Version::new(1, 0, 0);
        let v2 = Version::new(2, 0, 0);
        let (_, conflicts, _) = RouteTable::build(
            &[
                RouteSource {
                    owner: "s",
                    version: Some(&v1),
                    sets: &a,
                },
                RouteSource {
                    owner: "s",
                    version: Some(&v2),
                    sets: &a,
                },
            ],
            &Metrics::default(),
        );
        assert!(conflicts.is_empty(), "{conflicts:?}");
    }

    #[test]
    fn queries_are_strings_and_repeats_become_arrays() {
        assert_eq!(
            Value::Object(parse_query("a=1&b=x%20y&a=2&a=3&c")),
            json!({"a": ["1", "2", "3"], "b": "x y", "c": ""})
        );
    }
}
