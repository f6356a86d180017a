//! Seneca's HTTP transport against the real npm `seneca` + `seneca-transport`: a Node client
//! calls wasmeca's listener, wasmeca's client calls a Node listener, and two wasmeca hosts
//! call each other; plus the query forms, the history cache and loop detection.

use std::net::SocketAddr;

use serde_json::{Value, json};
use wasmeca::{CancellationToken, Host};
use wasmeca_tests::{NodeProcess, free_port, node_client, plugin};

/// A host with the Seneca HTTP listener on a free port; stopped on drop.
struct TestHost {
    /// Where the Seneca HTTP transport listens.
    http: SocketAddr,
    /// The running host.
    host: Host,
    /// Stops it.
    stop: CancellationToken,
}

impl TestHost {
    async fn start(plugins: &[&str], extra: &str) -> Self {
        let mut toml =
            String::from("[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = 0\n");
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
            http: host.http_addrs()[0],
            host,
            stop,
        }
    }

    async fn act(&self, msg: Value) -> Result<Value, wasmeca::ActError> {
        let Value::Object(map) = msg else {
            panic!("not an object")
        };
        self.host
            .router()
            .act(wasmeca::Message::new(map))
            .await
            .map(|r| r.to_value())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ok(line: &Value) -> &Value {
    assert_eq!(line["ok"], true, "{line}");
    &line["result"]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_seneca_client_calls_wasmeca() {
    let h = TestHost::start(&["salute", "math"], "").await;
    let port = h.http.port().to_string();
    let msgs = json!([
        {"cmd": "salute", "name": "World"},
        {"role": "math", "cmd": "sum", "left": 1, "right": 2},
        {"cmd": "salute", "name": "Zoë 甲"},
        {"role": "nope", "cmd": "x"},
        {"role": "math", "cmd": "product", "left": 3, "right": 4}
    ])
    .to_string();
    let lines = tokio::task::spawn_blocking(move || {
        node_client("http-client.js", &["--port", &port, "--msgs", &msgs])
    })
    .await
    .expect("node runs");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(ok(&lines[0])["message"], "Hello World!");
    assert_eq!(ok(&lines[1])["answer"], 3);
    assert_eq!(ok(&lines[2])["message"], "Hello Zoë 甲!");
    // The unknown pattern: the Node caller sees an error whose remote body carries act_not_found.
    assert_eq!(lines[3]["ok"], false, "{}", lines[3]);
    assert_eq!(
        lines[3]["error"]["remote"]["code"], "act_not_found",
        "{}",
        lines[3]
    );
    assert_eq!(ok(&lines[4])["answer"], 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_node_acts() {
    let h = TestHost::start(&["math"], "").await;
    let port = h.http.port().to_string();
    let msgs: Vec<Value> = (0..16)
        .map(|i| json!({"role": "math", "cmd": "sum", "left": i, "right": 100}))
        .collect();
    let msgs = Value::Array(msgs).to_string();
    let lines = tokio::task::spawn_blocking(move || {
        node_client(
            "http-client.js",
            &["--port", &port, "--msgs", &msgs, "--concurrency", "16"],
        )
    })
    .await
    .expect("node runs");
    let answers: Vec<i64> = lines
        .iter()
        .map(|l| ok(l)["answer"].as_i64().expect("a number"))
        .collect();
    assert_eq!(answers, (0..16).map(|i| i + 100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn wasmeca_calls_a_node_listener_through_a_client_pin() {
    let port = free_port().to_string();
    let (_node, ready) = tokio::task::spawn_blocking(move || {
        NodeProcess::start("http-listen.js", &["--port", &port])
    })
    .await
    .expect("node");
    assert_eq!(ready["ready"], true);
    let port = ready["port"].as_u64().expect("port");
    let client = format!(
        "[[client]]\ntype = \"http\"\nport = {port}\npins = [\"role:math,cmd:*\", \"cmd:fail\"]\n"
    );
    // Only salute is local: math goes to Node; cmd:salute stays local (no pin covers it).
    let h = TestHost::start(&["salute"], &client).await;
    assert_eq!(
        h.act(json!({"role": "math", "cmd": "sum", "left": 20, "right": 22}))
            .await
            .unwrap(),
        json!({"answer": 42})
    );
    assert_eq!(
        h.act(json!({"role": "math", "cmd": "product", "left": 6, "right": 7}))
            .await
            .unwrap()["answer"],
        42
    );
    assert_eq!(
        h.act(json!({"cmd": "salute", "name": "local"}))
            .await
            .unwrap()["message"],
        "Hello local!"
    );
    // A remote error keeps its status; an unknown remote pattern keeps its code.
    let failed = h
        .act(json!({"cmd": "fail", "why": "nope", "statusCode": 409}))
        .await
        .unwrap_err();
    assert_eq!(failed.status, Some(409), "{failed:?}");
    let unknown = h
        .act(json!({"role": "math", "cmd": "divide"}))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, "act_not_found", "{unknown:?}");

    // A plugin on the same pattern as a client pin wins over it; the pin still serves the rest.
    let both = format!("{client}pin = \"cmd:salute\"\n");
    let local = TestHost::start(&["salute"], &both).await;
    assert_eq!(
        local
            .act(json!({"cmd": "salute", "name": "me"}))
            .await
            .unwrap()["message"],
        "Hello me!"
    );
    assert_eq!(
        local
            .act(json!({"role": "math", "cmd": "sum", "left": 1, "right": 1}))
            .await
            .unwrap()["answer"],
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_wasmeca_hosts_call_each_other_and_keep_the_transaction() {
    let b = TestHost::start(&["chaos"], "").await;
    let client = format!(
        "[[client]]\ntype = \"http\"\nport = {}\npin = \"chaos:*\"\ntimeout_ms = 3000\n",
        b.http.port()
    );
    let a = TestHost::start(&["math"], &client).await;
    let echo = a
        .act(json!({"chaos": "echo", "tx$": "abcdefabcdef", "x": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(echo["x"], json!([1, 2]));
    assert_eq!(
        echo["tx$"], "abcdefabcdef",
        "the remote act keeps the caller's transaction"
    );
    assert_eq!(echo["transport$"]["origin"], a.host.router().instance_id());
    assert_eq!(
        echo["custom$"],
        json!({}),
        "the body carries custom$ like Node's client"
    );
    // The client's timeout ends in action_timeout.
    let slow = a
        .act(json!({"chaos": "slow", "ms": 20000}))
        .await
        .unwrap_err();
    assert_eq!(slow.code, "action_timeout");
    // Nobody at the address: `unreachable`.
    let gone = format!(
        "[[client]]\ntype = \"http\"\nport = {}\npin = \"chaos:*\"\n",
        free_port()
    );
    let lonely = TestHost::start(&[], &gone).await;
    assert_eq!(
        lonely.act(json!({"chaos": "ok"})).await.unwrap_err().code,
        "unreachable"
    );
}

async fn raw(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut request = client.post(url).body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn wire_details_query_forms_history_and_loops() {
    let h = TestHost::start(&["salute", "math"], "").await;
    let base = format!("http://{}", h.http);
    // Query forms: plain values are strings, msg$ is jsonic with types.
    let (status, _, text) = raw(&format!("{base}/act?cmd=salute&name=Q"), &[], "").await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap()["message"].clone()
        ),
        (200, json!("Hello Q!"))
    );
    let (_, _, text) = raw(
        &format!("{base}/act?msg$=role:math,cmd:sum,left:1,right:2"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"answer": 3})
    );
    // Other paths: 404 with an empty body.
    let (status, _, text) = raw(&format!("{base}/other"), &[], "{}").await;
    assert_eq!((status, text.as_str()), (404, ""));
    // Headers are echoed; an error body has Seneca's fields, status 500 for act_not_found.
    let headers = [
        ("seneca-id", "aaaaaaaaaaaa/bbbbbbbbbbbb"),
        ("seneca-origin", "node/1"),
        ("seneca-track", "[\"node/1\"]"),
    ];
    let (status, h1, text) = raw(&format!("{base}/act"), &headers, r#"{"cmd":"nope"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(h1["seneca-id"], "aaaaaaaaaaaa/bbbbbbbbbbbb");
    assert_eq!(h1["seneca-origin"], "node/1");
    assert_eq!(h1["seneca-kind"], "res");
    assert_eq!(h1["seneca-track"], "node/1");
    assert_eq!(h1["seneca-accept"], h.host.router().instance_id());
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            error["code"].clone(),
            error["seneca"].clone(),
            error["name"].clone()
        ),
        (json!("act_not_found"), json!(true), json!("Error"))
    );
    // The same seneca-id again: the cached answer, the action does not run twice.
    let once = [("seneca-id", "cccccccccccc/dddddddddddd")];
    let (_, _, first) = raw(&format!("{base}/act"), &once, r#"{"cmd":"salute"}"#).await;
    let (_, _, again) = raw(&format!("{base}/act"), &once, r#"{"cmd":"salute"}"#).await;
    assert_eq!(first, again);
    let (_, _, fresh) = raw(
        &format!("{base}/act"),
        &[("seneca-id", "eeeeeeeeeeee/ffffffffffff")],
        r#"{"cmd":"salute"}"#,
    )
    .await;
    let count = |t: &str| {
        serde_json::from_str::<Value>(t).unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        count(&fresh),
        count(&first) + 1,
        "the repeated id did not run the action"
    );
    // A track that already holds this host: message_loop.
    let looped = format!("[\"{}\"]", h.host.router().instance_id());
    let (status, _, text) = raw(
        &format!("{base}/act"),
        &[("seneca-track", &looped)],
        r#"{"cmd":"salute"}"#,
    )
    .await;
    assert_eq!(status, 500);
    assert!(text.contains("message_loop"), "{text}");
    // Bad JSON: Seneca's invalid_json, as the caller's fault a 400 (Node answers 500).
    let (status, _, text) = raw(&format!("{base}/act"), &[], "{nope").await;
    assert_eq!(status, 400);
    assert!(text.contains("invalid_json"), "{text}");
}

/// Regression (fault run): a 9 KB `msg$` nesting 3,000 objects overflowed the parser's stack and
/// killed the host. It is a 400 saying how deep is allowed, and the host answers the next call.
#[tokio::test]
async fn a_deeply_nested_message_is_refused_and_the_host_keeps_serving() {
    let h = TestHost::start(&["salute"], "").await;
    let base = format!("http://{}", h.http);
    let deep = "a:{".repeat(3000);
    let (status, _, text) = raw(&format!("{base}/act?msg$={deep}"), &[], "").await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["code"], "too_deep", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("deeper than 128"),
        "{error}"
    );
    assert!(
        text.len() < 2_000,
        "the error does not echo the input: {} bytes",
        text.len()
    );
    // The same depth as a JSON body.
    let body = format!("{}{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let (status, _, text) = raw(&format!("{base}/act"), &[], &body).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("too_deep"), "{text}");
    let (status, _, text) = raw(&format!("{base}/act?cmd=salute&name=Next"), &[], "").await;
    assert_eq!(
        (status, text.contains("Hello Next!")),
        (200, true),
        "{text}"
    );
}

/// Seneca's own built-ins answer a Seneca client the way Node does (`role:seneca,cmd:ping`,
/// `cmd:stats`); `cmd:close` is not served, so no caller can close the listener.
#[tokio::test]
async fn seneca_built_ins_answer_and_close_is_refused() {
    let h = TestHost::start(&["salute"], "").await;
    let base = format!("http://{}/act", h.http);
    let (status, _, text) = raw(&base, &[], r#"{"role":"seneca","cmd":"ping"}"#).await;
    assert_eq!(status, 200, "{text}");
    let ping: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ping["id"], h.host.router().instance_id());
    let _ = raw(&base, &[], r#"{"cmd":"salute"}"#).await;
    let (_, _, text) = raw(&base, &[], r#"{"role":"seneca","cmd":"stats"}"#).await;
    let stats: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stats["act"]["calls"], 2, "{stats}");
    let (status, _, text) = raw(&base, &[], r#"{"role":"seneca","cmd":"close"}"#).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("act_not_found"), "{text}");
    let (status, _, _) = raw(&format!("{base}?cmd=salute"), &[], "").await;
    assert_eq!(status, 200, "the listener still serves");
}
