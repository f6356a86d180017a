//! What this host says about itself, shared by the REST gateway and Seneca's HTTP listener (which
//! peers and Consul's check read): `GET /health` and `GET /plugins`.

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
