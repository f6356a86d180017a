//! Issue 11's acceptance against a real host: the seed `user` plugin's data surviving `kill -9`
//! on SQLite and PostgreSQL, 1,000 concurrent saves across a `kill -9`, who may reach the store
//! (network, plugins, `[[plugin]] data`, an override calling `prior`, AMQP), bad input, stores
//! going down and coming back, an unchanged Node Seneca app through `seneca.client`, and the
//! Redis cache's shared layout.

#[allow(dead_code)]
#[path = "data_stores/support.rs"]
mod support;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Broker, PG, PgSchema, Proxy, REDIS, TempDir, redis_conn, unique};
use wasmeca::{CancellationToken, Host, Message};
use wasmeca_tests::{Process, SEEDS, free_port, node_client, plugin, wasmeca_command};

/// An HTTP answer: status and JSON body (`null` when the body is not JSON).
type Answer = (u16, Value);

/// One HTTP client for a whole test (keeps connections alive, as callers do).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Sends `method url` with an optional JSON body; `Err` when the request gets no answer at all
/// (the host is down or was killed mid-request).
async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Answer, reqwest::Error> {
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = req.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// `POST http://addr/act` with `msg`, as any Seneca HTTP client sends it.
async fn post_act(http: &reqwest::Client, addr: SocketAddr, msg: &Value) -> Answer {
    request(
        http,
        reqwest::Method::POST,
        &format!("http://{addr}/act"),
        Some(msg),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /act {msg}: {e}"))
}

/// The names of the users a `GET /user` lists, in order.
fn names(users: &Value) -> Vec<String> {
    users
        .as_array()
        .unwrap_or_else(|| panic!("a list of users: {users}"))
        .iter()
        .map(|u| u["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A `wasmeca serve` child process with a REST gateway and a Seneca HTTP listener on free
/// ports; killed (SIGKILL) on drop.
struct Served {
    /// The process.
    process: Process,
    /// Where the REST gateway listens.
    rest: SocketAddr,
    /// Where the Seneca HTTP transport listens.
    http: SocketAddr,
}

impl Served {
    /// Writes a configuration serving `plugins` (plus `extra` TOML) into `dir`, starts
    /// `wasmeca serve` on it with `env`, and waits (up to 60 s) until its listener answers.
    async fn start(dir: &Path, plugins: &[&str], extra: &str, env: &[(&str, String)]) -> Self {
        let rest: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut toml = format!(
            "[rest]\nlisten = \"{rest}\"\n[[listen]]\ntype = \"http\"\nport = {}\n{extra}\n",
            http.port()
        );
        for name in plugins {
            toml.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin(name)));
        }
        let config = dir.join("wasmeca.toml");
        std::fs::write(&config, toml).expect("write the config");
        let mut command = wasmeca_command!();
        command
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let process = Process(command.spawn().expect("wasmeca serve starts"));
        let served = Self {
            process,
            rest,
            http,
        };
        let http_client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ping = json!({"role": "seneca", "cmd": "ping"});
        loop {
            let url = format!("http://{http}/act");
            let answered = request(&http_client, reqwest::Method::POST, &url, Some(&ping)).await;
            if matches!(answered, Ok((200, _))) {
                break;
            }
            assert!(Instant::now() < deadline, "the host did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }

    /// A URL on the REST gateway.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.rest)
    }

    /// `kill -9` of the host, and waits for it to be gone.
    fn kill_9(mut self) {
        self.process.0.kill().expect("SIGKILL the host");
        self.process.0.wait().expect("the host is gone");
    }
}

/// An in-process host with a Seneca HTTP listener on a free port; stopped on drop.
struct TestHost {
    /// The running host.
    host: Host,
    /// Where its Seneca HTTP transport listens.
    http: SocketAddr,
    /// Stops it.
    stop: CancellationToken,
}

impl TestHost {
    /// Starts a host serving `plugins` (`name` or `name data=base1+base2` to limit a plugin's
    /// bases) with the entity store at `data_url` and `extra` TOML (`[data]`, `[cache]`...).
    async fn start(plugins: &[&str], data_url: &str, extra: &str) -> Self {
        let mut toml =
            format!("[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = 0\n{extra}\n");
        for spec in plugins {
            let (name, bases) = match spec.split_once(" data=") {
                Some((name, bases)) => (name, Some(bases)),
                None => (*spec, None),
            };
            toml.push_str(&format!("[[plugin]]\npath = {:?}\n", plugin(name)));
            if let Some(bases) = bases {
                let list: Vec<String> = bases.split('+').map(|b| format!("{b:?}")).collect();
                toml.push_str(&format!("data = [{}]\n", list.join(", ")));
            }
        }
        let mut config = wasmeca_tests::test_config!(toml);
        config.data.url = Some(data_url.to_owned());
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

    /// Acts `msg` from this process (not the network), as `wasmeca act` does.
    async fn act(&self, msg: Value) -> Result<Value, wasmeca::ActError> {
        let Value::Object(map) = msg else {
            panic!("not an object: {msg}")
        };
        self.host
            .router()
            .act(Message::new(map))
            .await
            .map(|r| r.to_value())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Queries PostgreSQL's test database with a plain connection.
async fn pg_query(sql: &str) -> Vec<tokio_postgres::Row> {
    let (pg, task) = support::pg_session().await;
    let rows = pg
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(pg);
    let _ = task.await;
    rows
}

/// The acceptance as a new user tries it: the seeds served, `POST /user`, `kill -9`, serve
/// again, `GET /user` still lists the new user (and the seed users only once). Returns the
/// new user's id.
async fn user_survives_kill_9(dir: &Path, env: &[(&str, String)]) -> i64 {
    let http = client();
    let first = Served::start(dir, &SEEDS, "", env).await;
    let (status, listed) = request(&http, reqwest::Method::GET, &first.url("/user"), None)
        .await
        .expect("GET /user");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(names(&listed), ["甲", "乙", "丙"]);
    let (status, created) = request(
        &http,
        reqwest::Method::POST,
        &first.url("/user"),
        Some(&json!({"name": "丁 survives"})),
    )
    .await
    .expect("POST /user");
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "丁 survives");
    let id = created["id"].as_i64().expect("a numeric id");
    first.kill_9();

    let second = Served::start(dir, &SEEDS, "", env).await;
    let (status, listed) = request(&http, reqwest::Method::GET, &second.url("/user"), None)
        .await
        .expect("GET /user after the restart");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        names(&listed),
        ["甲", "乙", "丙", "丁 survives"],
        "{listed}"
    );
    let (status, loaded) = request(
        &http,
        reqwest::Method::GET,
        &second.url(&format!("/user/{id}")),
        None,
    )
    .await
    .expect("GET /user/:id");
    assert_eq!(
        (status, loaded),
        (200, json!({"id": id, "name": "丁 survives"}))
    );
    id
}

/// Acceptance: with nothing configured the store is SQLite in the data folder, and a user
/// created over REST survives `kill -9` of the host.
#[tokio::test(flavor = "multi_thread")]
async fn acceptance_sqlite_default_user_survives_kill_9() {
    let dir = TempDir::new();
    let data = dir.0.join("data");
    let env = [("WASMECA_DATA_DIR", data.to_string_lossy().into_owned())];
    user_survives_kill_9(&dir.0, &env).await;
    assert!(
        data.join("wasmeca.sqlite").exists(),
        "the default store is a file in the data folder"
    );
}

/// Acceptance: the same with `WASMECA_DATA_URL=postgres://...`, and SQL shows the row.
#[tokio::test(flavor = "multi_thread")]
async fn acceptance_postgres_user_survives_kill_9_and_sql_shows_the_row() {
    let dir = TempDir::new();
    let schema = PgSchema::new("").await;
    let env = [("WASMECA_DATA_URL", schema.url("document"))];
    let id = user_survives_kill_9(&dir.0, &env).await;
    let rows = pg_query(&format!(
        "SELECT data->>'name' FROM \"{}\".wasmeca_entity WHERE name = 'user' AND id = '{id}'::jsonb",
        schema.name
    ))
    .await;
    assert_eq!(rows.len(), 1, "one row for user {id}");
    assert_eq!(rows[0].get::<_, String>(0), "丁 survives");
    let rows = pg_query(&format!(
        "SELECT count(*) FROM \"{}\".wasmeca_entity WHERE name = 'user'",
        schema.name
    ))
    .await;
    assert_eq!(
        rows[0].get::<_, i64>(0),
        4,
        "seeded once, plus the new user"
    );
}

/// Acceptance: 1,000 concurrent saves over `/act` while the host is killed with `kill -9`;
/// after a restart every save that was answered is there, whole.
#[tokio::test(flavor = "multi_thread")]
async fn thousand_concurrent_saves_answered_before_kill_9_are_kept() {
    let dir = TempDir::new();
    let env = [(
        "WASMECA_DATA_URL",
        format!("sqlite://{}", dir.file("saves.db")),
    )];
    let expose = "[data]\nexpose = true\n";
    let first = Served::start(&dir.0, &["salute"], expose, &env).await;
    let http = client();
    let answered = Arc::new(AtomicUsize::new(0));
    let pad = "x".repeat(200);
    let tasks: Vec<_> = (0..1000)
        .map(|n| {
            let (http, answered, addr) = (http.clone(), answered.clone(), first.http);
            let msg = json!({"sys": "entity", "cmd": "save", "base": "load", "name": "nine",
                             "ent": {"n": n, "pad": pad}});
            tokio::spawn(async move {
                let url = format!("http://{addr}/act");
                let answer = request(&http, reqwest::Method::POST, &url, Some(&msg)).await;
                match answer {
                    Ok((200, saved)) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        Some(saved)
                    }
                    Ok((status, body)) => panic!("save {n}: {status} {body}"),
                    Err(_) => None, // cut off by the kill: not answered
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 250 {
        assert!(Instant::now() < deadline, "saves are not answered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.kill_9();
    let mut saved = Vec::new();
    for task in tasks {
        if let Some(entity) = task.await.expect("the save task") {
            saved.push(entity);
        }
    }
    assert!(saved.len() >= 250, "{} answered", saved.len());
    assert!(
        saved.len() < 1000,
        "the kill came after every save was answered; nothing was tested"
    );
    let ids: Vec<Value> = saved.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids are distinct"
    );

    let second = Served::start(&dir.0, &["salute"], expose, &env).await;
    let (status, found) = post_act(
        &http,
        second.http,
        &json!({"sys": "entity", "cmd": "list", "base": "load", "name": "nine", "q": ids}),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let found = found.as_array().expect("a list");
    assert_eq!(found.len(), saved.len(), "every answered save is there");
    for (kept, answer) in found.iter().zip(&saved) {
        assert_eq!(kept, answer, "kept as answered");
    }
    // Nothing half-written: every stored record is whole.
    let (_, all) = post_act(
        &http,
        second.http,
        &json!({"sys": "entity", "cmd": "list", "base": "load", "name": "nine"}),
    )
    .await;
    let all = all.as_array().expect("a list");
    assert!(all.len() >= saved.len() && all.len() <= 1000);
    for record in all {
        assert_eq!(record["pad"].as_str().map(str::len), Some(200), "{record}");
        assert!(record["n"].is_u64(), "{record}");
    }
}

/// Who may reach the store: not the network without `[data] expose`; plugins always (in the
/// bases their `[[plugin]] data` allows, `entity_forbidden` naming plugin and base otherwise);
/// a plugin overriding `sys:entity` for a base validates, then stores with `prior`, which
/// goes on with the rights of whoever sent the message (so not for the network).
#[tokio::test(flavor = "multi_thread")]
async fn network_refused_without_expose_plugins_limited_to_their_bases_and_prior() {
    let h = TestHost::start(&["chaos data=shop", "guard"], "memory://", "").await;
    let http = client();
    let save = json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                      "ent": {"entity$": "-/shop/item", "name": "apple", "price": 1}});
    // A save in `shop` reaches the guard's override, whose `prior` goes on for the network
    // caller: refused all the same.
    for msg in [
        save.clone(),
        json!({"sys": "entity", "cmd": "save", "base": "plain", "name": "item", "ent": {"a": 1}}),
        json!({"sys": "entity", "cmd": "list", "base": "shop", "name": "item"}),
        json!({"role": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "x"}),
        json!({"sys": "entity", "cmd": "remove", "name": "item", "q": {"all$": true}}),
        json!({"role": "cache", "cmd": "set", "key": "k", "val": 1}),
        json!({"role": "cache", "cmd": "get", "key": "k"}),
    ] {
        let (status, body) = post_act(&http, h.http, &msg).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("entity_forbidden")),
            "{msg} → {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("expose")),
            "{body}"
        );
    }

    // A plugin reaches it, even when the call started on the network.
    let relay = |inner: Value| json!({"chaos": "relay", "inner": inner});
    let (status, body) = post_act(&http, h.http, &relay(save.clone())).await;
    assert_eq!(status, 200, "{body}");
    let apple = &body["inner"];
    assert_eq!(apple["entity$"], "-/shop/item", "{body}");
    assert_eq!(apple["name"], "apple");
    assert_eq!(apple["audited"], true, "the guard's override stored it");
    let (status, body) = post_act(
        &http,
        h.http,
        &relay(json!({"sys": "entity", "cmd": "list", "base": "shop", "name": "item"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["inner"], json!([apple]));
    let (status, body) = post_act(
        &http,
        h.http,
        &relay(json!({"role": "cache", "cmd": "set", "key": "shop:k", "val": 7})),
    )
    .await;
    // (Limited to `shop`, its cache keys are `shop:...`.)
    assert_eq!((status, &body["inner"]), (200, &json!({"key": "shop:k"})));

    // Outside its bases: entity_forbidden naming the plugin and the base.
    for (inner, base) in [
        (
            json!({"sys": "entity", "cmd": "save", "base": "other", "name": "item", "ent": {"a": 1}}),
            "other",
        ),
        (
            json!({"sys": "entity", "cmd": "list", "ent": {"entity$": "-/secret/item"}}),
            "secret",
        ),
        (
            json!({"role": "entity", "cmd": "load", "name": "user", "id": 1}),
            "- (none)",
        ),
    ] {
        let (status, body) = post_act(&http, h.http, &relay(inner.clone())).await;
        assert_eq!(body["code"], "entity_forbidden", "{inner} → {body}");
        assert_eq!(status, 403, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("plugin chaos") && message.contains(&format!("base {base}")),
            "{message}"
        );
    }

    // The guard's override: validation, then the store through prior.
    let err = h
        .act(
            json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                    "ent": {"name": "pear", "price": "cheap"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "invalid_item", "{err}");
    assert!(err.message.contains("ent.price"), "{err}");
    let pear = h
        .act(
            json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                    "ent": {"id$": "pear", "name": "pear", "price": 2}}),
        )
        .await
        .expect("a valid save");
    assert_eq!(pear["audited"], true);
    let loaded = h
        .act(json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "pear"}))
        .await
        .expect("load");
    assert_eq!(loaded, pear, "stored by prior, as the override passed it");
    let err = h
        .act(
            json!({"sys": "entity", "cmd": "remove", "base": "shop", "name": "item", "id": "pear"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "remove_refused");
    let still = h
        .act(json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "pear"}))
        .await
        .expect("load");
    assert_eq!(still["name"], "pear");
    // Another base is not overridden: straight to the store.
    let plain = h
        .act(
            json!({"sys": "entity", "cmd": "save", "base": "other", "name": "item",
                    "ent": {"name": "plain"}}),
        )
        .await
        .expect("save");
    assert_eq!(plain["audited"], Value::Null, "{plain}");
    assert_eq!(plain["entity$"], "-/other/item");
}

/// `prior` goes on for the sender *through* the override: the store allows only what the
/// sender and every override on the way may do.
#[tokio::test(flavor = "multi_thread")]
async fn prior_allows_only_what_the_sender_and_the_override_may_do() {
    let h = TestHost::start(&["chaos data=other", "guard data=other"], "memory://", "").await;
    let save = json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                      "ent": {"name": "apple", "price": 1}});
    // From this process (no sender limit): the guard's own bases refuse `shop`.
    let err = h.act(save.clone()).await.unwrap_err();
    assert_eq!(err.code, "entity_forbidden", "{err}");
    assert!(
        err.message.contains("plugin guard") && err.message.contains("base shop"),
        "{err}"
    );
    // From a plugin limited to `other`, through the guard: the sender's bases refuse it first.
    let err = h
        .act(json!({"chaos": "relay", "inner": save}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "entity_forbidden", "{err}");
    assert!(
        err.message.contains("plugin chaos") && err.message.contains("base shop"),
        "{err}"
    );
    // Within both: saved.
    let ok = h
        .act(
            json!({"chaos": "relay", "inner": {"sys": "entity", "cmd": "save", "base": "other",
                                                 "name": "item", "ent": {"name": "plain"}}}),
        )
        .await
        .expect("a save in other");
    assert_eq!(ok["inner"]["name"], "plain");
}

/// With `expose = true` the network reaches the store over `/act`; bad input and unknown
/// commands are refused with codes naming what is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn exposed_store_over_act_and_bad_input() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.file("bad.db"));
    let h = TestHost::start(&["salute"], &url, "[data]\nexpose = true\n").await;
    let http = client();
    let (status, saved) = post_act(
        &http,
        h.http,
        &json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                "ent": {"entity$": "-/shop/item", "id$": 42, "name": "fig"}}),
    )
    .await;
    assert_eq!(
        (status, saved),
        (
            200,
            json!({"entity$": "-/shop/item", "id": 42, "name": "fig"})
        )
    );
    let (status, body) = post_act(
        &http,
        h.http,
        &json!({"role": "cache", "cmd": "incr", "key": "n"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"value": false})));

    // An unknown command: act_not_found (500 on Seneca's transport, as Node answers E53), for
    // entity and cache alike.
    for msg in [
        json!({"sys": "entity", "cmd": "count", "base": "shop", "name": "item"}),
        json!({"role": "entity", "cmd": "native", "name": "item"}),
        json!({"role": "cache", "cmd": "clear"}),
    ] {
        let (status, body) = post_act(&http, h.http, &msg).await;
        assert_eq!(body["code"], "act_not_found", "{msg} → {body}");
        assert_eq!(status, 500, "{body}");
    }

    // Malformed ent or q: entity_invalid (400), naming the field.
    let base = json!({"sys": "entity", "base": "shop", "name": "item"});
    for (extra, field) in [
        (json!({"cmd": "save", "ent": "fig"}), "ent"),
        (json!({"cmd": "save"}), "ent"),
        (json!({"cmd": "save", "ent": {"id$": {"no": 1}}}), "ent.id$"),
        (json!({"cmd": "list", "q": true}), "q"),
        (json!({"cmd": "list", "q": {"sort$": "price"}}), "sort$"),
        (
            json!({"cmd": "list", "q": {"sort$": {"price": "up"}}}),
            "sort$.price",
        ),
        (json!({"cmd": "list", "q": {"limit$": "ten"}}), "limit$"),
        (
            json!({"cmd": "list", "q": {"price": {"$in": 3}}}),
            "q.price.$in",
        ),
        (json!({"cmd": "load", "q": {"fields$": "name"}}), "fields$"),
        (json!({"cmd": "load", "base": 7, "id": 42}), "base"),
        (
            json!({"cmd": "remove", "ent": {"entity$": "a/b/c/d"}}),
            "entity$",
        ),
    ] {
        let mut msg = base.clone();
        for (k, v) in extra.as_object().expect("an object") {
            msg[k] = v.clone();
        }
        let (status, body) = post_act(&http, h.http, &msg).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("entity_invalid")),
            "{msg} → {body}"
        );
        assert_eq!(body["details"]["field"], field, "{msg} → {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(field)),
            "{body}"
        );
    }
    // Malformed cache messages name their field too.
    let (status, body) = post_act(
        &http,
        h.http,
        &json!({"role": "cache", "cmd": "set", "val": 1}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("cache_invalid"))
    );
    assert_eq!(body["details"]["field"], "key", "{body}");
    // Nothing above changed the stored record.
    let (_, all) = post_act(
        &http,
        h.http,
        &json!({"sys": "entity", "cmd": "list", "base": "shop", "name": "item"}),
    )
    .await;
    assert_eq!(
        all,
        json!([{"entity$": "-/shop/item", "id": 42, "name": "fig"}])
    );
}

/// A PostgreSQL or Redis that goes down: every call answers `store_unavailable` (503), the
/// host keeps serving, and the stores resume by themselves when the servers are back.
#[tokio::test(flavor = "multi_thread")]
async fn stores_down_answer_503_and_resume_when_back() {
    let schema = PgSchema::new("").await;
    let pg = Proxy::start("127.0.0.1:5432").await;
    let redis = Proxy::start("127.0.0.1:6379").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?schema={}",
        pg.port, schema.name
    );
    let prefix = unique("wasmeca-down");
    let cache = format!(
        "[data]\nexpose = true\n[cache]\nurl = \"redis://127.0.0.1:{}/\"\nexpire_s = 60\n",
        redis.port
    );
    let h = TestHost::start(&["salute"], &url, &cache).await;
    let http = client();
    let save = |id: &str| json!({"sys": "entity", "cmd": "save", "base": "d", "name": "down", "ent": {"id$": id}});
    let list = json!({"sys": "entity", "cmd": "list", "base": "d", "name": "down"});
    let key = format!("{prefix}:k");
    let set = json!({"role": "cache", "cmd": "set", "key": key, "val": {"a": 1}});
    let get = json!({"role": "cache", "cmd": "get", "key": key});
    assert_eq!(post_act(&http, h.http, &save("a")).await.0, 200);
    assert_eq!(post_act(&http, h.http, &set).await.0, 200);

    pg.cut();
    redis.cut();
    for _ in 0..3 {
        for msg in [&list, &save("b"), &set, &get] {
            let (status, body) = post_act(&http, h.http, msg).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (503, Some("store_unavailable")),
                "{msg} → {body}"
            );
        }
        // Not crashed: the host and its plugins still answer.
        let (status, body) = post_act(&http, h.http, &json!({"cmd": "salute", "name": "x"})).await;
        assert_eq!(status, 200, "{body}");
    }

    pg.restore().await;
    redis.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = post_act(&http, h.http, &list).await;
        if status == 200 {
            assert_eq!(
                body,
                json!([{"entity$": "-/d/down", "id": "a"}]),
                "nothing half-written"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL never resumed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post_act(&http, h.http, &save("c")).await.0, 200);
    loop {
        let (status, body) = post_act(&http, h.http, &get).await;
        if status == 200 {
            assert_eq!(body, json!({"value": {"a": 1}}));
            break;
        }
        assert!(Instant::now() < deadline, "Redis never resumed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = pg_query(&format!(
        "SELECT id::text FROM \"{}\".wasmeca_entity ORDER BY seq",
        schema.name
    ))
    .await;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, ["\"a\"", "\"c\""], "the refused save wrote nothing");
    redis_del(&[&key]).await;
}

/// Regression (fault run, hardening issue item 2): behind a proxy that keeps its connections
/// open but answers nothing (a partition, a hung server), entity calls waited past every
/// deadline (40 s and more; `timeout$` did not help). Each call now answers by its deadline,
/// and once the proxy forwards again the store serves again with no stuck pooled connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_muted_postgres_holds_no_call_past_its_deadline_and_the_pool_heals() {
    let schema = PgSchema::new("").await;
    let pg = Proxy::start("127.0.0.1:5432").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?schema={}",
        pg.port, schema.name
    );
    let extra = "[data]\nexpose = true\n[limits]\ntimeout_ms = 2000\n";
    let h = TestHost::start(&["salute"], &url, extra).await;
    let http = client();
    let save =
        json!({"sys": "entity", "cmd": "save", "base": "m", "name": "muted", "ent": {"id$": "a"}});
    let list = json!({"sys": "entity", "cmd": "list", "base": "m", "name": "muted"});
    let listed = json!([{"entity$": "-/m/muted", "id": "a"}]);
    assert_eq!(post_act(&http, h.http, &save).await.0, 200);
    // Several pooled connections, all of which the partition will catch.
    let calls = |msgs: Vec<Value>| {
        msgs.into_iter()
            .map(|msg| {
                let (http, addr) = (http.clone(), h.http);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let answer = post_act(&http, addr, &msg).await;
                    (msg, answer, started.elapsed())
                })
            })
            .collect::<Vec<_>>()
    };
    for call in calls(vec![list.clone(); 8]) {
        let (_, (status, body), _) = call.await.expect("a call");
        assert_eq!((status, &body), (200, &listed));
    }

    pg.mute();
    let mut msgs = vec![list.clone(); 6];
    msgs.extend(vec![json!({"sys": "entity", "cmd": "load", "base": "m", "name": "muted", "id": "a", "timeout$": 1000}); 6]);
    // A save cut off by its deadline may still land once the partition heals (its statement
    // was on the wire), as with any database: it creates `b`, which later lists may show.
    msgs.push(
        json!({"sys": "entity", "cmd": "save", "base": "m", "name": "muted", "ent": {"id$": "b"}}),
    );
    for call in calls(msgs) {
        let (msg, (status, body), took) = call.await.expect("a call");
        let limit = Duration::from_millis(msg["timeout$"].as_u64().unwrap_or(2000));
        assert!(
            // Seneca's transport answers action_timeout with 500, as Node does.
            matches!(
                (status, body["code"].as_str()),
                (500, Some("action_timeout")) | (503, Some("store_unavailable"))
            ),
            "{msg} → {status} {body}"
        );
        assert!(
            took < limit + Duration::from_millis(1500),
            "{msg} answered after {took:?}, its deadline was {limit:?}"
        );
    }
    // The host itself never waited on the store.
    let (status, body) = post_act(&http, h.http, &json!({"cmd": "salute", "name": "x"})).await;
    assert_eq!(status, 200, "{body}");

    pg.unmute();
    let healed = Instant::now();
    loop {
        let (status, body) = post_act(&http, h.http, &list).await;
        if status == 200 {
            assert_eq!(body[0], listed[0]);
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "the store did not serve again after the partition healed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No connection that was cut off mid-call is handed out again.
    for call in calls(vec![list.clone(); 16]) {
        let (_, (status, body), _) = call.await.expect("a call");
        assert_eq!(
            (status, &body[0]),
            (200, &listed[0]),
            "after healing: {body}"
        );
    }
}

/// Deletes Redis keys a test wrote.
async fn redis_del(keys: &[&str]) {
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

/// The Redis cache in @seneca/redis-cache's layout: the raw key, the value as JSON text, an
/// `EX` expiry from `[cache] expire_s`; and a value a Node service wrote is read back.
#[tokio::test(flavor = "multi_thread")]
async fn redis_cache_shares_seneca_redis_cache_layout() {
    let prefix = unique("wasmeca-layout");
    let toml = format!("[cache]\nurl = {REDIS:?}\nexpire_s = 120\n");
    let h = TestHost::start(&["chaos"], "memory://", &toml).await;
    let (obj_key, n_key, node_key) = (
        format!("{prefix}:obj"),
        format!("{prefix}:n"),
        format!("{prefix}:node"),
    );
    let val = json!({"name": "Zoë ✓", "tags": [1, true, null], "nested": {"x": 1.5}});
    // Through a plugin, as a plugin author does it.
    let set = h
        .act(json!({"chaos": "relay",
                    "inner": {"role": "cache", "cmd": "set", "key": obj_key, "val": val}}))
        .await
        .expect("set");
    assert_eq!(set["inner"], json!({"key": obj_key}));
    h.act(json!({"role": "cache", "cmd": "set", "key": n_key, "val": 10}))
        .await
        .expect("set");
    let incr = h
        .act(json!({"role": "cache", "cmd": "incr", "key": n_key, "val": 5}))
        .await
        .expect("incr");
    assert_eq!(incr, json!({"value": 15}));

    let mut conn = redis_conn().await;
    let raw: String = redis::cmd("GET")
        .arg(&obj_key)
        .query_async(&mut conn)
        .await
        .expect("the raw key holds the value");
    let parsed: Value = serde_json::from_str(&raw).expect("JSON text");
    assert_eq!(parsed, val);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&obj_key)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((100..=120).contains(&ttl), "EX expire_s: ttl {ttl}");
    let raw_n: String = redis::cmd("GET")
        .arg(&n_key)
        .query_async(&mut conn)
        .await
        .expect("GET n");
    assert_eq!(raw_n, "15");

    // What a Node service using @seneca/redis-cache writes (SET key JSON EX), wasmeca reads.
    let _: () = redis::cmd("SET")
        .arg(&node_key)
        .arg(r#"{"from":"node","n":[1,2]}"#)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let got = h
        .act(json!({"role": "cache", "cmd": "get", "key": node_key}))
        .await
        .expect("get");
    assert_eq!(got, json!({"value": {"from": "node", "n": [1, 2]}}));
    let err = h
        .act(json!({"role": "cache", "cmd": "add", "key": node_key, "val": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "key_exists");
    let deleted = h
        .act(json!({"role": "cache", "cmd": "delete", "key": node_key}))
        .await
        .expect("delete");
    assert_eq!(deleted, json!({"key": node_key}));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&node_key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
    redis_del(&[&obj_key, &n_key, &node_key]).await;
}

/// One step of `tests/node/entity-client.js`, by name.
fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {lines:?}"))
}

/// The result of a step that must have succeeded.
fn ok<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    let line = step(lines, name);
    assert_eq!(line["ok"], true, "{line}");
    &line["result"]
}

/// Runs `tests/node/entity-client.js` against `port` and returns its lines.
async fn node_entity_client(port: u16) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        node_client("entity-client.js", &["--port", &port.to_string()])
    })
    .await
    .expect("node runs")
}

/// An unchanged Node Seneca 3 app (seneca-entity's `make$` entities and `role:cache` acts,
/// through `seneca.client` pins) works against wasmeca with `expose = true`...
#[tokio::test(flavor = "multi_thread")]
async fn node_seneca_entity_app_works_against_an_exposed_host() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.file("node.db"));
    let h = TestHost::start(&["salute"], &url, "[data]\nexpose = true\n").await;
    let lines = node_entity_client(h.http.port()).await;

    let apple = ok(&lines, "save apple");
    assert_eq!(apple["canon"], "-/shop/item", "a real entity: {apple}");
    let apple_id = apple["data"]["id"].as_str().expect("a generated id");
    assert_eq!(apple_id.len(), 6);
    assert_eq!(
        ok(&lines, "save banana id$")["data"],
        json!({"id": "banana-1", "name": "banana", "price": 0.5, "color": "yellow"})
    );
    let dup = step(&lines, "save duplicate id$");
    assert_eq!(dup["ok"], false, "{dup}");
    assert_eq!(dup["code"], "entity-id-exists", "{dup}");
    assert_eq!(
        ok(&lines, "load apple")["data"],
        json!({"id": apple_id, "name": "apple", "price": 1.5, "color": "red", "tags": ["fruit"], "info": {"origin": "NZ"}})
    );
    assert_eq!(ok(&lines, "load missing"), &Value::Null);
    let red = ok(&lines, "list red by price desc, limit 1, fields name");
    assert_eq!(
        red,
        &json!([{"canon": "-/shop/item", "data": {"id": "cherry-1", "name": "cherry"}}])
    );
    let by_price: Vec<&Value> = ok(&lines, "list sorted by price")
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| &e["data"]["name"])
        .collect();
    assert_eq!(
        by_price,
        [&json!("banana"), &json!("apple"), &json!("cherry")]
    );
    assert_eq!(
        ok(&lines, "update banana")["data"],
        json!({"id": "banana-1", "name": "banana", "price": 0.75, "color": "gold"})
    );
    assert_eq!(ok(&lines, "remove apple"), &Value::Null);
    let left: BTreeSet<&str> = ok(&lines, "list after remove")
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["data"]["id"].as_str())
        .collect();
    assert_eq!(left, BTreeSet::from(["banana-1", "cherry-1"]));
    assert_eq!(ok(&lines, "cache set"), &json!({"key": "visits"}));
    assert_eq!(ok(&lines, "cache get"), &json!({"value": 10}));
    let exists = step(&lines, "cache add existing");
    assert_eq!(exists["code"], "key_exists", "{exists}");
    assert_eq!(ok(&lines, "cache incr"), &json!({"value": 11}));

    // What the app wrote is what wasmeca's own plugins and callers see.
    let banana = h
        .act(json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "banana-1"}))
        .await
        .expect("load");
    assert_eq!(banana["color"], "gold");
    let visits = h
        .act(json!({"role": "cache", "cmd": "get", "key": "visits"}))
        .await
        .expect("get");
    assert_eq!(visits, json!({"value": 11}));
}

/// ...and is refused without it: every entity and cache act answers `entity_forbidden`.
#[tokio::test(flavor = "multi_thread")]
async fn node_seneca_entity_app_is_refused_without_expose() {
    let h = TestHost::start(&["salute"], "memory://", "").await;
    let lines = node_entity_client(h.http.port()).await;
    assert!(lines.len() >= 10, "{lines:?}");
    for line in &lines {
        assert_eq!(line["ok"], false, "{line}");
        assert_eq!(line["code"], "entity_forbidden", "{line}");
    }
    let listed = h
        .act(json!({"sys": "entity", "cmd": "list", "base": "shop", "name": "item"}))
        .await
        .expect("list");
    assert_eq!(listed, json!([]), "nothing was written");
}

/// AMQP listeners follow `[data] expose` too: an entity command from the broker is refused
/// unless the store is exposed.
#[tokio::test(flavor = "multi_thread")]
async fn amqp_entity_commands_follow_expose() {
    use wasmeca::config::AmqpClientConfig as ClientConfig;
    use wasmeca::pattern::Pattern;
    use wasmeca::transport::amqp::{AmqpClient, Sent, queue_name, routing_key};

    const PIN: &str = "sys:entity,cmd:save";
    for expose in [false, true] {
        let id = unique("data");
        let (exchange, prefix) = (format!("test.{id}.topic"), format!("test.{id}.add"));
        let _broker = Broker {
            queues: vec![queue_name(&prefix, &[PIN]).expect("queue name")],
            exchanges: vec![exchange.clone()],
        };
        let listen = format!(
            "[data]\nexpose = {expose}\n[[listen]]\ntype = \"amqp\"\nexchange = {exchange:?}\n\
             queue_prefix = {prefix:?}\npins = [{PIN:?}]\n"
        );
        let h = TestHost::start(&["salute"], "memory://", &listen).await;
        let config = ClientConfig {
            exchange: exchange.clone(),
            ..ClientConfig::default()
        };
        let amqp = AmqpClient::new(config, wasmeca::message::instance_id());
        let msg = json!({"sys": "entity", "cmd": "save", "base": "shop", "name": "item",
                         "ent": {"id$": "over-amqp", "name": "plum"}});
        let msg = Message::new(msg.as_object().cloned().expect("an object"));
        let key = routing_key(&PIN.parse::<Pattern>().expect("pin"), &msg);
        // The listener declares its queue asynchronously: retry until it is bound.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let answer = loop {
            let sent = amqp
                .send(&msg, &wasmeca::message::new_id(), &key, deadline, true)
                .await
                .expect("sent");
            match sent {
                Sent::Routed(Some(answer)) => break answer.map(|r| r.to_value()),
                Sent::Routed(None) => panic!("no reply awaited"),
                Sent::Unroutable => {
                    assert!(tokio::time::Instant::now() < deadline, "no queue bound");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let stored = h
            .act(json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "over-amqp"}))
            .await
            .expect("load");
        if expose {
            let saved = answer.expect("saved over AMQP");
            assert_eq!(
                saved,
                json!({"entity$": "-/shop/item", "id": "over-amqp", "name": "plum"})
            );
            assert_eq!(stored, saved);
        } else {
            let err = answer.expect_err("refused");
            assert_eq!(err.code, "entity_forbidden", "{err}");
            assert_eq!(stored, Value::Null, "nothing was written");
        }
    }
}

/// Issue 18 item 7: three hosts on one PostgreSQL and one Redis. A save answered by any host
/// is visible to every host at once; `role:cache,cmd:incr` from the three sums exactly; a host
/// whose PostgreSQL is cut answers `store_unavailable` while the others serve.
#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_share_their_entities_and_cache_and_one_losing_postgres_hurts_only_itself() {
    let schema = PgSchema::new("").await;
    let cut = Proxy::start("127.0.0.1:5432").await;
    let direct = format!("{PG}?schema={}", schema.name);
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/test?schema={}",
        cut.port, schema.name
    );
    let extra = format!("[data]\nexpose = true\n[cache]\nurl = {REDIS:?}\n");
    let hosts = [
        TestHost::start(&["salute"], &direct, &extra).await,
        TestHost::start(&["salute"], &direct, &extra).await,
        TestHost::start(&["salute"], &proxied, &extra).await,
    ];
    let http = client();
    let kind = json!({"sys": "entity", "base": "fleet", "name": "item"});
    let with = |extra: Value| {
        let mut msg = kind.clone();
        msg.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        msg
    };
    // Every save, through whichever host, is seen by every host as soon as it is answered.
    for i in 0..30 {
        let by = &hosts[i % 3];
        let (status, saved) = post_act(
            &http,
            by.http,
            &with(json!({"cmd": "save", "ent": {"id$": format!("i{i}"), "n": i}})),
        )
        .await;
        assert_eq!(status, 200, "{saved}");
        for other in &hosts {
            let (status, loaded) = post_act(
                &http,
                other.http,
                &with(json!({"cmd": "load", "id": format!("i{i}")})),
            )
            .await;
            assert_eq!((status, &loaded["n"]), (200, &json!(i)), "{loaded}");
        }
    }
    // Counters from three hosts at once sum exactly.
    let key = unique("fleet-counter");
    let (status, _) = post_act(
        &http,
        hosts[0].http,
        &json!({"role": "cache", "cmd": "add", "key": key, "val": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let mut incrs = Vec::new();
    for h in &hosts {
        for _ in 0..50 {
            let (http, addr, key) = (http.clone(), h.http, key.clone());
            incrs.push(tokio::spawn(async move {
                post_act(
                    &http,
                    addr,
                    &json!({"role": "cache", "cmd": "incr", "key": key, "val": 1}),
                )
                .await
            }));
        }
    }
    for incr in incrs {
        let (status, body) = incr.await.expect("incr");
        assert_eq!(status, 200, "{body}");
    }
    let (_, total) = post_act(
        &http,
        hosts[2].http,
        &json!({"role": "cache", "cmd": "get", "key": key}),
    )
    .await;
    assert_eq!(
        total,
        json!({"value": 150}),
        "50 increments from each of 3 hosts"
    );
    redis_del(&[&key]).await;

    // Host 3 loses PostgreSQL: it answers store_unavailable; the others serve.
    cut.cut();
    let load = with(json!({"cmd": "load", "id": "i7"}));
    let (status, body) = post_act(&http, hosts[2].http, &load).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    for h in &hosts[..2] {
        let (status, body) = post_act(&http, h.http, &load).await;
        assert_eq!((status, &body["n"]), (200, &json!(7)), "{body}");
        let (status, body) = post_act(
            &http,
            h.http,
            &with(json!({"cmd": "save", "ent": {"id": "i7", "seen": true}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    cut.restore().await;
}

/// Data rules hold from `init` on (issue 24): a plugin limited to `shop` is refused a save
/// into `other` during its `init` (its load fails, naming the plugin and the base) and in its
/// observer, and may save into `shop` in both.
#[tokio::test(flavor = "multi_thread")]
async fn data_rules_hold_during_init_and_in_observers() {
    let config = wasmeca_tests::test_config!("listen = []\n[rest]\nlisten = \"off\"\n");
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    let save = |base: &str, id: &str| {
        json!({"sys": "entity", "cmd": "save", "base": base, "name": "item",
               "ent": {"id": id, "name": id}})
    };
    let load = |base: &str, id: &str| {
        let Value::Object(msg) =
            json!({"sys": "entity", "cmd": "load", "base": base, "name": "item", "id": id})
        else {
            unreachable!()
        };
        host.router().act(Message::new(msg))
    };
    let limited = |options: Value| wasmeca::PluginSource {
        options,
        data: Some(vec!["shop".to_owned()]),
        ..wasmeca::PluginSource::new(plugin("chaos"))
    };

    // init: another base is refused, and the plugin does not load.
    let refused = host
        .router()
        .registry()
        .load_all(&[limited(json!({"init_act": save("other", "seeded")}))])
        .await
        .expect_err("a save into another base during init is refused");
    let text = refused.to_string();
    assert!(
        text.contains("entity_forbidden")
            && text.contains("plugin chaos")
            && text.contains("base other"),
        "{text}"
    );
    let nothing = load("other", "seeded").await.expect("load").to_value();
    assert_eq!(nothing, Value::Null, "nothing was saved: {nothing}");

    // init: its own base works; the observer acts the same way.
    host.router()
        .registry()
        .load_all(&[limited(json!({
            "init_act": save("shop", "seeded"),
            "observe": ["evt:stock"],
            "record": false,
            "observe_act": save("other", "observed"),
        }))])
        .await
        .expect("a save into its own base during init");
    let seeded = load("shop", "seeded").await.expect("load").to_value();
    assert_eq!(seeded["name"], "seeded", "{seeded}");
    publish_stock(&host).await;
    // The observer's save is refused: the observer fails (and is retried).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host.router().metrics().encode().lines().any(|l| {
        l.starts_with("wasmeca_events_total{")
            && l.contains("outcome=\"failed\"")
            && !l.ends_with(" 0")
    }) {
        assert!(Instant::now() < deadline, "the observer never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nothing = load("other", "observed").await.expect("load").to_value();
    assert_eq!(
        nothing,
        Value::Null,
        "the observer saved outside its bases: {nothing}"
    );
    stop.cancel();
    host.wait().await.expect("stops");

    // The same observer saving into its own base does save.
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    host.router()
        .registry()
        .load_all(&[limited(json!({
            "observe": ["evt:stock"],
            "record": false,
            "observe_act": save("shop", "observed"),
        }))])
        .await
        .expect("loads");
    publish_stock(&host).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let Value::Object(msg) = json!({"sys": "entity", "cmd": "load", "base": "shop", "name": "item", "id": "observed"})
        else {
            unreachable!()
        };
        let got = host
            .router()
            .act(Message::new(msg))
            .await
            .expect("load")
            .to_value();
        if got["name"] == "observed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the observer's save in its own base never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    host.wait().await.expect("stops");
}

/// Publishes `evt:stock,cmd:moved` from `host`.
async fn publish_stock(host: &Host) {
    let Value::Object(event) = json!({"evt": "stock", "cmd": "moved"}) else {
        unreachable!()
    };
    host.router()
        .publish(Message::new(event))
        .await
        .expect("published");
}

/// A store's answer is bounded like a plugin's (issue 17 item 8): a `limit$:0` list larger
/// than `[limits] max_result_bytes` is `result_too_large`, naming the limit, and a page of it
/// answers.
#[tokio::test(flavor = "multi_thread")]
async fn store_answers_honour_max_result_bytes() {
    let config = wasmeca_tests::test_config!(
        "listen = []\n[rest]\nlisten = \"off\"\n[limits]\nmax_result_bytes = 20000\n"
    );
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    let act = |msg: Value| {
        let Value::Object(msg) = msg else {
            unreachable!()
        };
        host.router().act(Message::new(msg))
    };
    let note = "x".repeat(100);
    for i in 0..300 {
        act(
            json!({"sys": "entity", "cmd": "save", "base": "big", "name": "row",
                   "ent": {"id": i, "note": note}}),
        )
        .await
        .expect("save");
    }
    let err = act(
        json!({"sys": "entity", "cmd": "list", "base": "big", "name": "row",
                         "q": {"limit$": 0}}),
    )
    .await
    .expect_err("300 rows of ~140 bytes are over 20,000 bytes");
    assert_eq!(err.code, "result_too_large", "{err}");
    assert!(
        err.message.contains("20000") && err.message.contains("max_result_bytes"),
        "{err}"
    );
    let page = act(
        json!({"sys": "entity", "cmd": "list", "base": "big", "name": "row",
                          "q": {"limit$": 50, "skip$": 100, "sort$": {"id": 1}}}),
    )
    .await
    .expect("a page fits")
    .to_value();
    assert_eq!(page.as_array().map(Vec::len), Some(50));
    assert_eq!(page[0]["id"], 100, "{}", page[0]);
    stop.cancel();
    host.wait().await.expect("stops");
}

/// The cache is scoped by `[[plugin]] data` like the entity store (issue 17 item 7): a plugin
/// limited to `shop` uses the keys `shop:...` and no other.
#[tokio::test(flavor = "multi_thread")]
async fn cache_keys_are_scoped_by_a_plugins_bases() {
    let h = TestHost::start(&["chaos data=shop"], "memory://", "").await;
    let relay = |inner: Value| h.act(json!({"chaos": "relay", "inner": inner}));
    let set = |key: &str| json!({"role": "cache", "cmd": "set", "key": key, "val": 7});
    relay(set("shop:cart:1")).await.expect("a key in its base");
    let got = relay(json!({"role": "cache", "cmd": "get", "key": "shop:cart:1"}))
        .await
        .expect("get");
    assert_eq!(got["inner"]["value"], 7, "{got}");
    for key in ["other:cart:1", "cart", "shopping:x"] {
        let err = relay(set(key)).await.expect_err("a key outside its bases");
        assert_eq!(err.code, "entity_forbidden", "{key}: {err}");
        assert!(
            err.message.contains("plugin chaos")
                && err.message.contains(&format!("cache key {key}")),
            "{err}"
        );
    }
    // This process (no plugin) uses any key.
    h.act(set("other:cart:1"))
        .await
        .expect("the host's own act");
}

/// `/health/ready` (issue 20 item 5): 200 while every dependency answers; 503 naming it when
/// RabbitMQ or PostgreSQL is cut (a proxy stopped), 200 again when they are back; 503 from the
/// start of a drain. `/health/live` answers 200 throughout.
#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_broker_and_the_store_and_goes_503_at_a_drain() {
    let rabbit = Proxy::start("127.0.0.1:5672").await;
    let postgres = Proxy::start("127.0.0.1:5432").await;
    let schema = PgSchema::new("").await;
    let store = schema
        .url("document")
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", postgres.port));
    let id = unique("ready");
    let (queue, exchange) = (format!("test.{id}.q"), format!("test.{id}.topic"));
    let (dlx, dlq) = (format!("test.{id}.dlx"), format!("test.{id}.dlq"));
    let _broker = Broker {
        queues: vec![queue.clone(), dlq.clone()],
        exchanges: vec![exchange.clone(), dlx.clone()],
    };
    let toml = format!(
        "[rest]\nlisten = \"off\"\n[data]\nurl = {store:?}\n\
         [[listen]]\ntype = \"http\"\nport = 0\n\
         [[listen]]\ntype = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:{}/%2f\"\nname = {queue:?}\n\
         pins = [\"chaos:ok\"]\nexchange = {exchange:?}\ndead_letter_exchange = {dlx:?}\n\
         dead_letter_queue = {dlq:?}\nconnect_timeout_ms = 1000\n\
         [[plugin]]\npath = {:?}\n",
        rabbit.port,
        plugin("chaos")
    );
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    let host = Host::start(&config, stop.clone()).await.expect("host");
    let base = format!("http://{}", host.http_addrs()[0]);
    let http = client();
    let probe = |path: &'static str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let answer = http.get(url).send().await.expect("the host answers");
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            (status, body)
        }
    };
    // Waits (up to 60 s) until `/health/ready` answers `status` with a problem containing
    // `naming` (when 503); answers the body.
    let until = |status: u16, naming: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (got, body) = probe("/health/ready").await;
            let named = body["problems"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p.as_str().is_some_and(|p| p.contains(naming)))
            });
            if got == status && (status == 200 || named) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "never {status} naming {naming:?}; last {got} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ready = until(200, "").await;
    assert_eq!(ready["status"], "ready", "{ready}");

    rabbit.cut();
    let body = until(503, "AMQP listener").await;
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(probe("/health/live").await.0, 200, "alive all the same");
    rabbit.restore().await;
    until(200, "").await;

    postgres.cut();
    until(503, "entity store").await;
    postgres.restore().await;
    until(200, "").await;

    host.router().drain();
    let (status, body) = probe("/health/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("draining")),
        "{body}"
    );
    stop.cancel();
    host.wait().await.expect("stops");
}
