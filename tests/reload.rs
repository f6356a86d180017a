//! Hot reload with `watch = true`, through real files: the salute file replaced 20 times under
//! continuous REST, in-process and AMQP load without a failed request; a plugin added then
//! removed; broken files refused while the old plugin keeps answering; a file written slowly
//! loaded once, whole.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca::config::AmqpClientConfig as ClientConfig;
use wasmeca::transport::amqp::{AmqpClient, Sent, routing_key};
use wasmeca::{CancellationToken, Host, Message};
use wasmeca_tests::plugin;

/// A watched folder in the temp dir, removed at the end.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("wasmeca-reload-{}", wasmeca::message::new_id()));
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A watching host; `listen` adds transports (none by default).
async fn host(folder: &Folder, listen: &str) -> (Host, CancellationToken) {
    let none = if listen.is_empty() {
        "listen = []\n"
    } else {
        ""
    };
    let toml = format!(
        "watch = true\n{none}[rest]\nlisten = \"127.0.0.1:0\"\n[[rest.route]]\npin = \"cmd:*\"\nmap = {{ salute = true }}\n\
         {listen}[[plugin]]\npath = {:?}\n",
        folder.0
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (host, stop)
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).expect("built")
}

/// Waits up to 20 s for `check`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn keys(host: &Host) -> Vec<String> {
    host.router()
        .registry()
        .snapshot()
        .plugins()
        .iter()
        .filter(|p| !p.is_native())
        .map(|p| p.key())
        .collect()
}

async fn act(host: &Host, m: Value) -> Result<Value, wasmeca::ActError> {
    host.router()
        .act(Message::new(m.as_object().cloned().expect("object")))
        .await
        .map(|r| r.to_value())
}

/// Replaces `path` with `content`: in place (truncate, write, close) or by renaming a
/// finished file over it.
fn replace(path: &Path, content: &[u8], atomically: bool) {
    if atomically {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    } else {
        std::fs::write(path, content).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_the_salute_file_20_times_under_load_fails_no_request() {
    let folder = Folder::new();
    let exchange = format!("test.{}.topic", wasmeca::message::new_id());
    let prefix = format!("test.{}.add", wasmeca::message::new_id());
    let amqp = format!(
        "[[listen]]\ntype = \"amqp\"\nexchange = {exchange:?}\nqueue_prefix = {prefix:?}\npins = [\"cmd:salute\"]\n"
    );
    let salute = folder.path("salute.wasm");
    std::fs::write(&salute, bytes("salute")).expect("write");
    let (h, stop) = host(&folder, &amqp).await;
    let rest = format!("http://{}/salute", h.rest_addr().expect("rest"));
    let h = Arc::new(h);
    let client = AmqpClient::new(
        ClientConfig {
            exchange: exchange.clone(),
            ..ClientConfig::default()
        },
        wasmeca::message::instance_id(),
    );
    // Wait for the AMQP queue.
    let pin: wasmeca::pattern::Pattern = "cmd:salute".parse().expect("pin");
    let probe = Message::new(
        json!({"cmd": "salute"})
            .as_object()
            .cloned()
            .expect("object"),
    );
    let key = routing_key(&pin, &probe);
    eventually_async(|| async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        matches!(
            client
                .send(&probe, "tttttttttttt", &key, deadline, true)
                .await,
            Ok(Sent::Routed(Some(Ok(_))))
        )
    })
    .await;

    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let record = {
        let (failures, answers, seen) = (failures.clone(), answers.clone(), seen.clone());
        move |answer: Result<Value, String>| match answer {
            Ok(v) => {
                answers.fetch_add(1, Ordering::Relaxed);
                let version = v["version"].as_str().unwrap_or("1.0.0").to_owned();
                seen.lock().expect("lock").insert(version);
            }
            Err(e) => {
                eprintln!("failed: {e}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let mut loads = Vec::new();
    {
        // In-process acts.
        let (h, running, record) = (h.clone(), running.clone(), record.clone());
        loads.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                record(
                    act(&h, json!({"cmd": "salute"}))
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
        }));
    }
    {
        // REST.
        let (running, record, rest) = (running.clone(), record.clone(), rest.clone());
        loads.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while running.load(Ordering::Relaxed) {
                let answer = match http.get(&rest).send().await {
                    Ok(r) if r.status() == 200 => r
                        .text()
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())),
                    Ok(r) => Err(format!("REST {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                record(answer);
            }
        }));
    }
    {
        // AMQP.
        let (running, record, client, key, probe) = (
            running.clone(),
            record.clone(),
            client.clone(),
            key.clone(),
            probe.clone(),
        );
        loads.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let answer = match client
                    .send(&probe, "tttttttttttt", &key, deadline, true)
                    .await
                {
                    Ok(Sent::Routed(Some(Ok(r)))) => Ok(r.to_value()),
                    other => Err(format!("AMQP {:?}", other.err())),
                };
                record(answer);
            }
        }));
    }
    for round in 0..20 {
        let (name, key) = if round % 2 == 0 {
            ("salute_v2", "salute@2.0.0")
        } else {
            ("salute", "salute@1.0.0")
        };
        replace(&salute, &bytes(name), round % 4 < 2);
        eventually(&format!("round {round} to serve {key}"), || {
            keys(&h) == [key]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::Relaxed);
    for l in loads {
        l.await.expect("load task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during 20 swaps"
    );
    assert!(
        answers.load(Ordering::Relaxed) > 100,
        "the load kept flowing: {}",
        answers.load(Ordering::Relaxed)
    );
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.contains("1.0.0") && seen.contains("2.0.0"), "{seen:?}");
    stop.cancel();
    // This test's queue and exchange go too.
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    if let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
        && let Ok(channel) = conn.create_channel().await
    {
        let queue = wasmeca::transport::amqp::queue_name(&prefix, &["cmd:salute"]).expect("pin");
        let _ = channel
            .queue_delete(
                queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
        let _ = channel
            .exchange_delete(
                exchange.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

async fn eventually_async<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_added_then_removed_brings_its_routes_and_takes_them_away() {
    let folder = Folder::new();
    let (h, stop) = host(&folder, "").await;
    let url = format!("http://{}/user/2", h.rest_addr().expect("rest"));
    assert_eq!(reqwest::get(&url).await.expect("request").status(), 404);
    std::fs::write(folder.path("user.wasm"), bytes("user")).expect("copy in");
    eventually("user to load", || keys(&h) == ["user@1.0.0"]).await;
    let found = reqwest::get(&url).await.expect("request");
    assert_eq!(found.status(), 200);
    assert_eq!(found.text().await.expect("body"), r#"{"id":2,"name":"乙"}"#);
    std::fs::remove_file(folder.path("user.wasm")).expect("remove");
    eventually("user to unload", || keys(&h).is_empty()).await;
    assert_eq!(reqwest::get(&url).await.expect("request").status(), 404);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_files_are_refused_and_the_old_version_keeps_answering() {
    let folder = Folder::new();
    let salute = folder.path("salute.wasm");
    std::fs::write(&salute, bytes("salute")).expect("write");
    let (h, stop) = host(&folder, "").await;
    assert_eq!(keys(&h), ["salute@1.0.0"]);
    let refused_before = h.router().metrics().plugin_loads("refused");
    // A truncated build over the serving file, and garbage beside it.
    let v2 = bytes("salute_v2");
    replace(&salute, &v2[..v2.len() / 3], false);
    std::fs::write(folder.path("x.wasm"), b"this is not wasm").expect("garbage");
    eventually("both files to be refused", || {
        h.router().metrics().plugin_loads("refused") >= refused_before + 2
    })
    .await;
    assert_eq!(keys(&h), ["salute@1.0.0"], "nothing changed");
    assert_eq!(
        act(&h, json!({"cmd": "salute", "name": "Still"}))
            .await
            .expect("answers")["message"],
        "Hello Still!"
    );
    let errors = h.router().registry().load_errors();
    let text = serde_json::to_string(&errors).expect("json");
    assert!(
        text.contains("x.wasm") && text.contains("not a WebAssembly file"),
        "{text}"
    );
    assert!(
        text.contains("salute.wasm") && text.contains("does not compile"),
        "{text}"
    );
    // A good file after all: served, and its error is gone.
    replace(&salute, &v2, true);
    eventually("salute 2 to load", || keys(&h) == ["salute@2.0.0"]).await;
    assert!(
        !serde_json::to_string(&h.router().registry().load_errors())
            .expect("json")
            .contains("salute.wasm")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_slowly_in_pieces_is_loaded_once_whole() {
    let folder = Folder::new();
    let (h, stop) = host(&folder, "").await;
    let metrics = h.router().metrics();
    let (loaded, refused) = (
        metrics.plugin_loads("loaded"),
        metrics.plugin_loads("refused"),
    );
    let content = bytes("math");
    let path = folder.path("math.wasm");
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&path).expect("create");
        for piece in content.chunks(content.len() / 8 + 1) {
            file.write_all(piece).expect("write");
            file.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(120));
        }
    });
    writer.await.expect("writer");
    eventually("math to load", || keys(&h) == ["math@1.0.0"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metrics.plugin_loads("loaded"),
        loaded + 1,
        "loaded exactly once"
    );
    assert_eq!(
        metrics.plugin_loads("refused"),
        refused,
        "no half-written attempt"
    );
    assert_eq!(
        act(
            &h,
            json!({"role": "math", "cmd": "sum", "left": 2, "right": 3})
        )
        .await
        .expect("answers")["answer"],
        5
    );
    stop.cancel();
}

/// Regression (fault run): a plugin whose manifest declares a pattern nesting 3,000 objects
/// overflowed the stack of a watching host. The file is refused with the reason, and the
/// plugins already served keep answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_with_a_deeply_nested_pattern_is_refused() {
    let folder = Folder::new();
    std::fs::write(folder.path("salute.wasm"), bytes("salute")).expect("write");
    let deep = "a:{".repeat(3000);
    let toml = format!(
        "watch = true\nlisten = []\n[rest]\nlisten = \"off\"\n[[plugin]]\npath = {:?}\noptions = {{ pattern = {deep:?} }}\n",
        folder.0
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let h = Host::start(&config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bad = folder.path("badpattern.wasm");
    std::fs::write(&bad, bytes("badpattern")).expect("write");
    eventually("the refusal", || {
        h.router()
            .registry()
            .load_errors()
            .iter()
            .any(|e| e["file"] == json!(bad))
    })
    .await;
    let errors = h.router().registry().load_errors();
    let reason = errors[0]["error"].as_str().expect("a reason");
    assert!(reason.contains("deeper than 128"), "{reason}");
    assert!(
        reason.len() < 1_000,
        "the reason does not echo the pattern: {reason}"
    );
    assert_eq!(keys(&h), ["salute@1.0.0"]);
    let answer = act(&h, json!({"cmd": "salute", "name": "Z"})).await;
    assert_eq!(answer.expect("salute answers")["message"], "Hello Z!");
    stop.cancel();
}
