//! Consul and versions across hosts, with a real Consul dev agent per test (installed and
//! started by `tests/services/consul.sh`): registration with tags and meta, deregistration on
//! SIGTERM, `$version` pins reaching the host that has the version, a SIGKILLed host leaving
//! the table, agent restarts and an agent that comes late, and `$target`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca::{ActError, CancellationToken, Host, Message};
use wasmeca_tests::{ConsulAgent, Process, free_port, plugin};

fn config_toml(consul: &str, service: &str, plugins: &[&str], http_port: u16) -> String {
    let mut toml = format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = {http_port}\n\
         [consul]\naddress = {consul:?}\nservice = {service:?}\ncheck_interval_ms = 1000\ncheck_timeout_ms = 5000\npeers = [\"wasmeca\"]\n"
    );
    for p in plugins {
        toml.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin(p)));
    }
    toml
}

/// A host in this process.
async fn host(consul: &str, service: &str, plugins: &[&str]) -> (Host, CancellationToken) {
    let toml = config_toml(consul, service, plugins, 0);
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (host, stop)
}

/// A host as its own process (so it can be SIGKILLed).
fn process(consul: &str, plugins: &[&str]) -> (Process, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wasmeca-consul-{}", wasmeca::message::new_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("wasmeca.toml");
    std::fs::write(&config, config_toml(consul, "wasmeca", plugins, port)).expect("config");
    let child = wasmeca_tests::wasmeca_command!()
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wasmeca starts");
    (Process(child), port)
}

async fn consul_get(consul: &str, path: &str) -> Value {
    let text = reqwest::get(format!("{consul}{path}"))
        .await
        .expect("consul answers")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Polls `check` every 100 ms for up to `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn act(host: &Host, m: Value) -> Result<Value, ActError> {
    host.router()
        .act(Message::new(m.as_object().cloned().expect("object")))
        .await
        .map(|r| r.to_value())
}

/// The registered instances of `service` that pass their checks.
async fn passing(consul: &str, service: &str) -> Vec<Value> {
    consul_get(
        consul,
        &format!("/v1/health/service/{service}?passing=true"),
    )
    .await
    .as_array()
    .cloned()
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_registers_with_versions_and_deregisters_on_sigterm() {
    let agent = tokio::task::spawn_blocking(|| ConsulAgent::start(None))
        .await
        .expect("agent");
    let (child, port) = process(&agent.addr, &["salute", "math"]);
    let consul = agent.addr.clone();
    eventually(60, "the registration", || {
        let consul = consul.clone();
        async move { !passing(&consul, "wasmeca").await.is_empty() }
    })
    .await;
    let entry = &passing(&agent.addr, "wasmeca").await[0]["Service"];
    assert_eq!(entry["ID"], format!("wasmeca-127.0.0.1-{port}"));
    assert_eq!(entry["Port"], port);
    let mut tags: Vec<&str> = entry["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["math@1.0.0", "salute@1.0.0"]);
    assert_eq!(entry["Meta"]["plugins"], "salute@1.0.0,math@1.0.0");
    assert_eq!(entry["Meta"]["http_port"], port.to_string());
    assert!(
        entry["Meta"]["instance"]
            .as_str()
            .is_some_and(|i| i.ends_with("/wasmeca"))
    );
    assert_eq!(entry["Meta"]["wasmeca_version"], env!("CARGO_PKG_VERSION"));
    let checks = consul_get(&agent.addr, "/v1/agent/checks").await;
    let check = checks
        .as_object()
        .unwrap()
        .values()
        .next()
        .expect("a check");
    assert_eq!(check["Status"], "passing");

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    let mut child = child;
    let status = child.0.wait().expect("exits");
    assert!(status.success(), "{status}");
    let services = consul_get(&agent.addr, "/v1/agent/services").await;
    assert_eq!(services, json!({}), "deregistered on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn version_pins_reach_the_host_that_has_the_version_and_follow_a_killed_host() {
    let agent = tokio::task::spawn_blocking(|| ConsulAgent::start(None))
        .await
        .expect("agent");
    let (_a, stop_a) = host(&agent.addr, "wasmeca", &["salute"]).await;
    let (b, _) = process(&agent.addr, &["salute_v2"]);
    let (c, stop_c) = host(&agent.addr, "wasmeca", &["math"]).await;
    eventually(60, "C to know A and B", || async {
        c.router().peer_ids().len() == 2
    })
    .await;

    assert_eq!(
        act(&c, json!({"cmd": "salute", "$version": "1"}))
            .await
            .expect("A answers")["message"],
        "Hello World!"
    );
    assert_eq!(
        act(&c, json!({"cmd": "salute", "$version": "2"}))
            .await
            .expect("B answers")["version"],
        "2.0.0"
    );
    assert_eq!(
        act(&c, json!({"cmd": "salute"})).await.expect("B answers")["version"],
        "2.0.0",
        "no pin: the highest"
    );
    // C's own patterns stay local; unknown ones are still act_not_found.
    assert_eq!(
        act(
            &c,
            json!({"role": "math", "cmd": "sum", "left": 1, "right": 2})
        )
        .await
        .expect("local")["answer"],
        3
    );
    assert_eq!(
        act(&c, json!({"cmd": "nobody"}))
            .await
            .expect_err("nobody")
            .code,
        "act_not_found"
    );

    // B dies without deregistering: once its check is critical, it is gone from C's table.
    let started = Instant::now();
    let mut b = b;
    Command::new("kill")
        .args(["-KILL", &b.0.id().to_string()])
        .status()
        .expect("kill");
    let _ = b.0.wait();
    eventually(30, "B to leave C's table", || async {
        c.router().peer_ids().len() == 1
    })
    .await;
    eprintln!("B left the table {:?} after SIGKILL", started.elapsed());
    let e = act(&c, json!({"cmd": "salute", "$version": "2"}))
        .await
        .expect_err("no 2.x left");
    assert_eq!(e.code, "version_not_found");
    assert!(e.message.contains("1.0.0"), "{}", e.message);
    assert_eq!(
        act(&c, json!({"cmd": "salute"})).await.expect("A answers")["message"],
        "Hello World!"
    );
    stop_a.cancel();
    stop_c.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_register_again_after_consul_restarts_or_comes_late() {
    // Consul not there yet: the host serves anyway and registers when it comes.
    let port = free_port();
    let late = format!("http://127.0.0.1:{port}");
    let (h, stop) = host(&late, "wasmeca", &["salute"]).await;
    assert_eq!(
        act(&h, json!({"cmd": "salute"})).await.expect("serving")["message"],
        "Hello World!"
    );
    let agent = tokio::task::spawn_blocking(move || ConsulAgent::start(Some(port)))
        .await
        .expect("agent");
    eventually(30, "the late registration", || async {
        !passing(&late, "wasmeca").await.is_empty()
    })
    .await;

    // The agent restarts and forgets everything: registered again within seconds.
    let agent = tokio::task::spawn_blocking(move || {
        agent.restart();
        agent
    })
    .await
    .expect("restart");
    let consul = agent.addr.clone();
    let restarted = Instant::now();
    eventually(30, "the registration after the restart", || {
        let consul = consul.clone();
        async move { !passing(&consul, "wasmeca").await.is_empty() }
    })
    .await;
    eprintln!(
        "registered again {:?} after the agent restarted",
        restarted.elapsed()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn target_reaches_the_named_service() {
    let agent = tokio::task::spawn_blocking(|| ConsulAgent::start(None))
        .await
        .expect("agent");
    let (_config, stop_config) = host(&agent.addr, "config-server", &["config"]).await;
    let (caller, stop_caller) = host(&agent.addr, "wasmeca", &["salute"]).await;
    let consul = agent.addr.clone();
    eventually(30, "config-server to register", || {
        let consul = consul.clone();
        async move { !passing(&consul, "config-server").await.is_empty() }
    })
    .await;
    let answer = act(
        &caller,
        json!({"target": "config-server", "$target": "config-server"}),
    )
    .await
    .expect("answered");
    assert_eq!(answer["SUCCESS_NORMAL_RES"]["code"], 1000);
    let missing = act(
        &caller,
        json!({"cmd": "salute", "$target": "nobody-runs-this"}),
    )
    .await
    .expect_err("no such service");
    assert_eq!(
        (missing.code.as_str(), missing.http_status()),
        ("target_unavailable", 503)
    );
    // Its own service name means here.
    assert_eq!(
        act(&caller, json!({"cmd": "salute", "$target": "wasmeca"}))
            .await
            .expect("local")["message"],
        "Hello World!"
    );
    // Regression (fault run): `$target` could aim the host at any service Consul lists,
    // Consul's own server port included. Only wasmeca hosts (and `[consul] targets`) may be
    // named.
    let consul = act(&caller, json!({"cmd": "salute", "$target": "consul"}))
        .await
        .expect_err("not a wasmeca host");
    assert_eq!(
        (consul.code.as_str(), consul.http_status()),
        ("target_forbidden", 403),
        "{consul}"
    );
    stop_config.cancel();
    stop_caller.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn another_service_at_the_same_address_and_port_is_refused() {
    let agent = tokio::task::spawn_blocking(|| ConsulAgent::start(None))
        .await
        .expect("agent");
    let port = free_port();
    let squatter =
        json!({"ID": "squatter-1", "Name": "squatter", "Address": "127.0.0.1", "Port": port});
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}/v1/agent/service/register", agent.addr))
        .body(squatter.to_string())
        .send()
        .await;
    assert!(put.expect("consul answers").status().is_success());
    // A host on that very port: it serves, but does not register over the other service.
    let toml = config_toml(&agent.addr, "wasmeca", &["salute"], port);
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let h = Host::start(&config, stop.clone()).await.expect("host");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let services = consul_get(&agent.addr, "/v1/agent/services").await;
    let ids: Vec<&String> = services.as_object().expect("a map").keys().collect();
    assert_eq!(ids, ["squatter-1"], "wasmeca refused to register over it");
    assert_eq!(
        act(&h, json!({"cmd": "salute"}))
            .await
            .expect("still serving")["message"],
        "Hello World!"
    );
    stop.cancel();
}

/// Issue 18 item 6: a rolling upgrade, versions side by side. Three hosts serve salute 1.0.0;
/// one by one each is stopped as a scheduler stops it (SIGTERM: it deregisters, drains and
/// exits) and a host with salute 2.0.0 is started in its place, while callers keep acting through
/// an edge host that serves neither, pinned to `$version: 1` and to `$version: 2`. No call fails
/// but those the versions explain: `1` is answered by 1.x as long as any host serves it, then
/// gets `version_not_found` naming the pin and the versions there are; `2` gets
/// `version_not_found` until a 2.x host is in the edge's peer table, then is answered by 2.x.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_fails_no_call_the_versions_do_not_explain() {
    let agent = tokio::task::spawn_blocking(|| ConsulAgent::start(None))
        .await
        .expect("agent");
    let (edge, stop_edge) = host(&agent.addr, "wasmeca", &["math"]).await;
    let edge = std::sync::Arc::new(edge);
    let mut old: Vec<Process> = (0..3)
        .map(|_| process(&agent.addr, &["salute"]).0)
        .collect();
    eventually(60, "the edge to know the three 1.x hosts", || async {
        edge.router().peer_ids().len() == 3
    })
    .await;

    // Callers: (sent at, pin, outcome: the version that answered, or the error code).
    type Seen = Vec<(Instant, &'static str, Result<u64, ActError>)>;
    let seen: std::sync::Arc<std::sync::Mutex<Seen>> = std::sync::Arc::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for pin in ["1", "2", "1", "2"] {
        let (edge, seen, stop) = (edge.clone(), seen.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let answer = act(
                    &edge,
                    json!({"cmd": "salute", "name": "up", "$version": pin}),
                )
                .await
                .map(|a| {
                    if a["version"].as_str().is_some_and(|v| v.starts_with('2')) {
                        2
                    } else {
                        1
                    }
                });
                seen.lock().expect("lock").push((at, pin, answer));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last_v1_stopped = None;
    let mut first_v2_known = None;
    let mut new = Vec::new();
    for i in 0..3 {
        let mut host = old.remove(0);
        if i == 2 {
            last_v1_stopped = Some(Instant::now());
        }
        Command::new("kill")
            .args(["-TERM", &host.0.id().to_string()])
            .status()
            .expect("kill");
        let drained = tokio::task::spawn_blocking(move || host.0.wait())
            .await
            .expect("join")
            .expect("the host exits");
        assert!(drained.success(), "a drained host exits 0: {drained}");
        new.push(process(&agent.addr, &["salute_v2"]).0);
        eventually(60, "the edge to know the new host", || async {
            edge.router().peer_ids().len() == 3
                && act(&edge, json!({"cmd": "salute", "$version": "2"}))
                    .await
                    .is_ok()
        })
        .await;
        if i == 0 {
            first_v2_known = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        c.await.expect("caller");
    }
    stop_edge.cancel();

    let (last_v1_stopped, first_v2_known) =
        (last_v1_stopped.expect("set"), first_v2_known.expect("set"));
    let seen = seen.lock().expect("lock");
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (at, pin, outcome) in seen.iter() {
        let label = match outcome {
            Ok(v) => format!("${pin} answered by {v}.x"),
            Err(e) => format!("${pin} {}", e.code),
        };
        *counts.entry(label).or_default() += 1;
        match (*pin, outcome) {
            ("1", Ok(1)) | ("2", Ok(2)) => {}
            ("1", Err(e)) if e.code == "version_not_found" && *at >= last_v1_stopped => {
                assert!(
                    e.message.contains("^1") && e.message.contains("2.0.0"),
                    "it names the pin and what there is: {}",
                    e.message
                );
            }
            ("2", Err(e)) if e.code == "version_not_found" && *at <= first_v2_known => {}
            (pin, outcome) => panic!(
                "a call the versions do not explain: ${pin} at {:?} → {outcome:?} (all: {counts:?})",
                at.elapsed()
            ),
        }
    }
    eprintln!("rolling upgrade: {counts:?}");
    for pin in ["1", "2"] {
        let answered = seen
            .iter()
            .filter(|(_, p, o)| *p == pin && o.is_ok())
            .count();
        assert!(
            answered > 20,
            "${pin} was answered through the upgrade: {counts:?}"
        );
    }
}
