//! The REST gateway over real sockets: the seed's user CRUD routes, the seneca-web message
//! shape, statuses for every kind of failure, route conflicts, `/health`, `/metrics` and
//! `/plugins`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use wasmeca::{CancellationToken, Host};
use wasmeca_tests::plugin;

/// A host serving `plugins` with the REST gateway on a free port; stopped on drop.
struct TestHost {
    /// Where the gateway listens.
    rest: SocketAddr,
    /// The router, for direct checks.
    host: Option<Host>,
    /// Stops it.
    stop: CancellationToken,
}

impl TestHost {
    async fn start(plugins: &[&str], extra: &str) -> Self {
        let mut toml = String::from("listen = []\n[rest]\nlisten = \"127.0.0.1:0\"\n");
        toml.push_str(extra);
        for name in plugins {
            toml.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin(name)));
        }
        let config = wasmeca_tests::test_config!(toml);
        let stop = CancellationToken::new();
        let host = Host::start(&config, stop.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            rest: host.rest_addr().expect("REST is on"),
            host: Some(host),
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.rest)
    }

    fn host(&self) -> &Host {
        self.host.as_ref().expect("running")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A response: status, headers, body text.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn call(method: &str, url: &str, content_type: Option<&str>, body: &str) -> Answer {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, url).body(body.to_owned());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Answer {
        status,
        headers,
        text,
    }
}

async fn get(url: &str) -> Answer {
    call("GET", url, None, "").await
}

async fn json_call(method: &str, url: &str, body: Value) -> Answer {
    call(method, url, Some("application/json"), &body.to_string()).await
}

#[tokio::test]
async fn the_seed_user_routes_behave_as_the_crud_module() {
    let h = TestHost::start(&["user"], "").await;
    let list = get(&h.url("/user")).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.headers["content-type"], "application/json");
    assert_eq!(
        list.json(),
        json!([{"id": 1, "name": "甲"}, {"id": 2, "name": "乙"}, {"id": 3, "name": "丙"}])
    );
    assert_eq!(
        get(&h.url("/user/2")).await.json(),
        json!({"id": 2, "name": "乙"})
    );
    let edited = json_call("PUT", &h.url("/user/2"), json!({"name": "乙二"})).await;
    assert_eq!(
        (edited.status, edited.json()),
        (200, json!({"id": 2, "name": "乙二"}))
    );
    let created = json_call("POST", &h.url("/user"), json!({"name": "丁"})).await;
    assert_eq!(
        (created.status, created.json()),
        (200, json!({"id": 4, "name": "丁"}))
    );
    let deleted = call("DELETE", &h.url("/user/3"), None, "").await;
    assert_eq!(
        (deleted.status, deleted.json()),
        (200, json!({"id": 3, "name": "丙"}))
    );
    let names: Vec<Value> = get(&h.url("/user"))
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].clone())
        .collect();
    assert_eq!(names, [json!("甲"), json!("乙二"), json!("丁")]);

    // A missing user: the plugin's own 404, as JSON.
    let missing = get(&h.url("/user/3")).await;
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (404, json!("not_found"))
    );
    // Bad JSON: 400 saying where.
    let bad = call(
        "POST",
        &h.url("/user"),
        Some("application/json"),
        "{\"name\": ",
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "invalid_json");
    assert_eq!(bad.json()["details"]["column"], 9);
    // A body the plugin refuses: its 400.
    assert_eq!(
        json_call("POST", &h.url("/user"), json!({"nom": "x"}))
            .await
            .status,
        400
    );
    // Unknown route: 404 JSON.
    let unknown = get(&h.url("/nothing/here")).await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].clone()),
        (404, json!("not_found"))
    );
    // Wrong method: 405 with Allow.
    let wrong = call("PATCH", &h.url("/user/1"), None, "").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.headers["allow"], "DELETE, GET, PUT");
    assert_eq!(wrong.json()["code"], "method_not_allowed");
    // urlencoded bodies work too.
    let form = call(
        "POST",
        &h.url("/user"),
        Some("application/x-www-form-urlencoded"),
        "name=%E6%88%8A",
    )
    .await;
    assert_eq!(form.json(), json!({"id": 5, "name": "戊"}));
}

#[tokio::test]
async fn routes_send_the_seneca_web_message_shape() {
    let routes = r#"
        [[rest.route]]
        prefix = "/echo"
        pin = "chaos:*"
        map = { echo = { GET = true, POST = true, PATCH = true, name = "", suffix = "/:a/:b" } }
        "#;
    let h = TestHost::start(&["chaos"], routes).await;
    let got = get(&h.url("/echo/x/%E7%94%B2?q=1&r=a&r=b")).await.json();
    assert_eq!(
        got["chaos"], "echo",
        "the pattern's keys are in the message"
    );
    assert_eq!(got["args"]["params"], json!({"a": "x", "b": "甲"}));
    assert_eq!(
        got["args"]["query"],
        json!({"q": "1", "r": ["a", "b"]}),
        "query values are strings, repeats arrays"
    );
    assert_eq!(got["args"]["body"], json!({}), "no body for GET");
    let posted = json_call(
        "POST",
        &h.url("/echo/1/2"),
        json!({"n": 1, "deep": {"x": [1]}}),
    )
    .await
    .json();
    assert_eq!(posted["args"]["body"], json!({"n": 1, "deep": {"x": [1]}}));
    let patched = call(
        "PATCH",
        &h.url("/echo/1/2"),
        Some("text/plain"),
        "plain words",
    )
    .await
    .json();
    assert_eq!(
        patched["args"]["body"], "plain words",
        "PATCH bodies are parsed too"
    );
    assert!(
        got["tx$"].as_str().is_some_and(|t| t.len() == 12),
        "the act has a transaction id"
    );
}

#[tokio::test]
async fn statuses_follow_the_error() {
    let routes = r#"
        [limits]
        timeout_ms = 3000
        [rest]
        listen = "127.0.0.1:0"
        body_limit = 64
        [[rest.route]]
        pin = "chaos:*"
        map = { fail = true, trap = true, nothing = true, slow = true, number = true, echo = { POST = true }, ok = { GET = true, name = "quiet", autoreply = false } }
        [[rest.route]]
        pin = "cmd:*"
        map = { missing = true, salute = { GET = true, name = "moved", redirect = "/somewhere" } }
        "#;
    // `[rest]` is in `routes`: build the config by hand instead of TestHost's default.
    let mut toml = String::from("listen = []\n");
    toml.push_str(routes);
    toml.push_str(&format!(
        "[[plugin]]\npath = {:?}\n[[plugin]]\npath = {:?}\n",
        plugin("chaos"),
        plugin("salute")
    ));
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.unwrap();
    let base = format!("http://{}", host.rest_addr().unwrap());
    let u = |p: &str| format!("{base}{p}");

    let fail = get(&u("/fail")).await;
    assert_eq!(fail.status, 418, "{}", fail.text);
    assert_eq!(
        (fail.status, fail.json()["code"].clone()),
        (418, json!("boom")),
        "the plugin's status"
    );
    assert_eq!(fail.json()["details"], json!({"why": "asked to"}));
    let trap = get(&u("/trap")).await;
    assert_eq!(trap.status, 500);
    assert_eq!(
        trap.headers["content-type"], "application/json",
        "never a bare text 500"
    );
    assert_eq!(trap.json()["code"], "plugin_trap");
    assert!(
        !trap.text.contains("wasm backtrace") && !trap.text.contains("unreachable"),
        "trap details stay in the log: {}",
        trap.text
    );
    let missing = get(&u("/missing")).await;
    assert_eq!(
        missing.status, 404,
        "{:?} {}",
        missing.headers, missing.text
    );
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (404, json!("act_not_found"))
    );
    let slow = get(&u("/slow?ms=20000")).await;
    assert_eq!(slow.status, 504, "{}", slow.text);
    assert_eq!(
        (slow.status, slow.json()["code"].clone()),
        (504, json!("action_timeout"))
    );
    let number = get(&u("/number")).await;
    assert_eq!(
        (number.status, number.json()["code"].clone()),
        (500, json!("result_not_objarr"))
    );
    let null = get(&u("/nothing")).await;
    assert_eq!(
        (null.status, null.text.as_str()),
        (204, ""),
        "a null result is 204"
    );
    let moved = get(&u("/moved")).await;
    assert_eq!(moved.status, 302, "{}", moved.text);
    assert_eq!(
        (moved.status, moved.headers["location"].to_str().unwrap()),
        (302, "/somewhere")
    );
    let quiet = get(&u("/quiet")).await;
    assert_eq!(
        (quiet.status, quiet.text.as_str()),
        (200, ""),
        "autoreply false answers no body"
    );
    let big = json_call("POST", &u("/echo"), json!({"pad": "x".repeat(100)})).await;
    assert_eq!(
        (big.status, big.json()["code"].clone()),
        (413, json!("body_too_large"))
    );
    assert_eq!(
        json_call("POST", &u("/echo"), json!({"small": 1}))
            .await
            .status,
        200
    );
    let unsupported = call("POST", &u("/echo"), Some("image/png"), "xx").await;
    assert_eq!(unsupported.status, 415);
    stop.cancel();
}

#[tokio::test]
async fn two_plugins_on_one_route_are_reported_and_the_first_keeps_it() {
    let h = TestHost::start(&["user", "override"], "").await;
    let conflicts: Vec<String> = h
        .host()
        .routes()
        .conflicts()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        conflicts,
        [
            "route GET /user of override conflicts with user, which keeps it",
            "route GET /v1/user of override conflicts with user, which keeps it"
        ]
    );
    assert!(
        get(&h.url("/user")).await.json().is_array(),
        "user keeps GET /user"
    );
}

#[tokio::test]
async fn health_metrics_and_plugins() {
    let h = TestHost::start(&["user", "salute"], "").await;
    let health = get(&h.url("/health")).await;
    assert_eq!(health.status, 200);
    let health = health.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["plugins"],
        json!([{"name": "user", "version": "1.0.0"}, {"name": "salute", "version": "1.0.0"}])
    );

    for _ in 0..3 {
        assert_eq!(get(&h.url("/user/1")).await.status, 200);
    }
    assert_eq!(get(&h.url("/user/99")).await.status, 404);
    let metrics = get(&h.url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let samples = parse_exposition(&metrics.text);
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{}", metrics.text))
    };
    assert_eq!(
        sample(
            "wasmeca_rest_requests_total",
            &[("route", "/user/:id"), ("method", "GET"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            "wasmeca_rest_requests_total",
            &[("route", "/user/:id"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "wasmeca_rest_request_duration_seconds_count",
            &[("route", "/user/:id"), ("method", "GET")]
        ),
        4.0
    );
    assert_eq!(
        sample(
            "wasmeca_acts_total",
            &[("pattern", "if:load,module:user"), ("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            "wasmeca_acts_total",
            &[("pattern", "if:load,module:user"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "wasmeca_plugin_errors_total",
            &[("plugin", "user@1.0.0"), ("code", "not_found")]
        ),
        1.0
    );
    assert_eq!(sample("wasmeca_in_flight_acts", &[]), 0.0);

    let plugins = get(&h.url("/plugins")).await.json();
    assert_eq!(plugins["plugins"][0]["name"], "user");
    assert_eq!(plugins["plugins"][0]["patterns"][1], "if:load,module:user");
    assert!(
        plugins["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/user/:id" && r["method"] == "PUT")
    );
    assert!(
        plugins["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/v1/user/:id"),
        "versioned mount"
    );
    assert_eq!(
        get(&h.url("/v1/user/2")).await.json(),
        json!({"id": 2, "name": "乙"})
    );
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses Prometheus/OpenMetrics text strictly enough to fail on malformed lines:
/// `(name, labels, value)` for every sample.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest == "EOF"
                    || rest.starts_with("HELP ")
                    || rest.starts_with("TYPE ")
                    || rest.starts_with("UNIT "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label in {line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let routes = "[[rest.route]]\npin = \"chaos:*\"\nmap = { slow = true }\n";
    let h = TestHost::start(&["chaos"], routes).await;
    let url = h.url("/slow?ms=500");
    let slow = tokio::spawn(async move { get(&url).await });
    while h.host.as_ref().expect("running").router().in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut h = h;
    let host = h.host.take().expect("running");
    h.stop.cancel();
    let waited = tokio::time::timeout(Duration::from_secs(10), host.wait()).await;
    assert!(matches!(waited, Ok(Ok(()))), "the host stops cleanly");
    let answer = slow.await.expect("task");
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"slept": 500})),
        "the request in flight was answered"
    );
}
