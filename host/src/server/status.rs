//! What this host says about itself, shared by the REST gateway and Seneca's HTTP listener (which
//! peers and Consul's check read): `GET /health`, the probes `GET /health/live` and `GET
//! /health/ready`, and `GET /plugins`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::json as respond;
use crate::router::Router;

/// The REST routes as `/plugins` lists them (method, path, pattern, owner), from whichever
/// listener serves them: the transport names no REST type.
pub type DescribeRoutes = std::sync::Arc<dyn Fn() -> Vec<Value> + Send + Sync>;

/// `GET /health`: 200 with the plugins and versions while serving, 503 from the moment a drain
/// starts (so Consul's check, and a load balancer's, take the host out before it stops).
pub fn health(router: &Router) -> Response {
    let set = router.registry().snapshot();
    let plugins: Vec<Value> = set
        .plugins()
        .iter()
        .filter(|p| !p.is_native())
        .map(|p| json!({ "name": p.name, "version": p.version.to_string() }))
        .collect();
    let (status, said) = if router.is_closing() {
        (StatusCode::SERVICE_UNAVAILABLE, "closing")
    } else if router.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = json!({
        "status": said,
        "instance": router.instance_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": plugins,
        "in_flight": router.in_flight(),
        "peers": router.peer_ids(),
    });
    respond(status, body.to_string())
}

/// How long `/health/ready` waits for a dependency's probe (a store's ping) to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health/live`: 200 whenever the process can answer at all. A liveness probe that fails
/// restarts the process, so it asks nothing of the dependencies (a broker away is no reason to
/// restart every host).
pub fn live(router: &Router) -> Response {
    let body = json!({"status": "live", "instance": router.instance_id()});
    respond(StatusCode::OK, body.to_string())
}

/// `GET /health/ready`: 200 when the host can do its work (every broker it consumes from
/// connected, its stores answering, registered in Consul when it registers), 503 with the
/// reasons otherwise, and 503 from the moment a drain starts, so traffic stops before the
/// process does.
pub async fn ready(router: &Router) -> Response {
    if router.is_closing() || router.is_draining() {
        let body = json!({"status": "draining", "problems": ["the host is stopping"]});
        return respond(StatusCode::SERVICE_UNAVAILABLE, body.to_string());
    }
    let problems = router.readiness().problems(PROBE_TIMEOUT).await;
    let (status, said) = if problems.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unready")
    };
    let body = json!({"status": said, "instance": router.instance_id(), "problems": problems});
    respond(status, body.to_string())
}

/// `GET /plugins`: every plugin (version, patterns, routes, file, load time), the native
/// actions, the REST routes, and the last load errors. Peers read it from each other's Seneca HTTP listener.
pub fn plugins(router: &Router, routes: &DescribeRoutes) -> Response {
    let set = router.registry().snapshot();
    let routes = routes();
    let (native, plugins): (Vec<_>, Vec<_>) = set.plugins().iter().partition(|p| p.is_native());
    let describe = |list: Vec<&std::sync::Arc<crate::plugins::Plugin>>| -> Vec<Value> {
        list.into_iter().map(|p| p.describe()).collect()
    };
    let body = json!({
        "plugins": describe(plugins),
        "native": describe(native),
        "routes": routes,
        "load_errors": router.registry().load_errors(),
    });
    respond(StatusCode::OK, body.to_string())
}
