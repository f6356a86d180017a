//! Plugins in JavaScript, Python and C next to Rust: the toolchains installed by
//! `sdk/toolchains.sh`, every example built with `wasmeca build`, one shared set of behaviour
//! assertions run against each language through the host, `wasmeca check` and the message spec
//! (`wasmeca test`) of every example, `wasmeca new` → build → serve → spec for every template,
//! and each SDK's events, entities and cache through real plugins: a JavaScript plugin publishes
//! what a Python plugin observes, and a C plugin keeps notes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use wasmeca::{ActError, CancellationToken, Config, Host, Message};
use wasmeca_tests::repo;

fn wasmeca(args: &[&str], dir: &Path) -> Output {
    wasmeca_tests::wasmeca_command!()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("wasmeca runs")
}

/// Installs a toolchain (idempotent; the tools stay in target/tools between runs).
fn toolchain(name: &str) {
    // One install at a time: the JS and Python tests share the venv and npm cache.
    let lock =
        std::fs::File::create(repo().join("target").join("toolchains.lock")).expect("lock file");
    lock.lock().expect("lock");
    let status = Command::new("bash")
        .arg(repo().join("sdk/toolchains.sh"))
        .arg(name)
        .status()
        .expect("bash runs");
    assert!(status.success(), "sdk/toolchains.sh {name} failed");
}

/// Builds the project in `dir` with `wasmeca build`; returns its plugin file.
fn build(dir: &Path) -> PathBuf {
    let out = wasmeca(&["build"], dir);
    assert!(
        out.status.success(),
        "wasmeca build in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::from_file(&dir.join("wasmeca.toml")).expect("config");
    config.plugin_sources().expect("sources")[0].path.clone()
}

/// A host serving `file` with REST on a free port.
async fn host(file: &Path) -> (Host, CancellationToken) {
    host_of(&[file]).await
}

/// A host serving `files` with REST on a free port, its entity store and cache in memory.
async fn host_of(files: &[&Path]) -> (Host, CancellationToken) {
    let mut toml = String::from("listen = []\n[rest]\nlisten = \"127.0.0.1:0\"\n");
    for file in files {
        toml.push_str(&format!("[[plugin]]\npath = {file:?}\n"));
    }
    let config = wasmeca_tests::test_config!(toml);
    let stop = CancellationToken::new();
    (
        Host::start(&config, stop.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        stop,
    )
}

async fn act(h: &Host, m: Value) -> Result<Value, ActError> {
    h.router()
        .act(Message::new(m.as_object().cloned().expect("object")))
        .await
        .map(|r| r.to_value())
}

/// Acts `m` until its answer passes `check` (events are delivered after their publisher's act
/// returns), for up to 30 s; returns the last answer.
async fn eventually(h: &Host, what: &str, m: Value, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = act(h, m.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if check(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: last answer {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The `name`s of a list of entities, in order.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|items| items.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default()
}

/// The seed's user CRUD behaviour, whatever the language.
async fn user_suite(file: &Path) {
    let (h, stop) = host(file).await;
    let ok = |v: Result<Value, ActError>| v.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(
        ok(act(&h, json!({"module": "user", "if": "list"})).await),
        json!([{"id": 1, "name": "甲"}, {"id": 2, "name": "乙"}, {"id": 3, "name": "丙"}])
    );
    assert_eq!(
        ok(act(&h, json!({"module": "user", "if": "load", "id": 2})).await),
        json!({"id": 2, "name": "乙"})
    );
    let missing = act(&h, json!({"module": "user", "if": "load", "id": 9}))
        .await
        .expect_err("missing");
    assert_eq!(
        (missing.code.as_str(), missing.http_status()),
        ("not_found", 404)
    );
    let edited = act(&h, json!({"module": "user", "if": "edit", "args": {"params": {"id": "2"}, "body": {"name": "乙二"}}})).await;
    assert_eq!(ok(edited), json!({"id": 2, "name": "乙二"}));
    let created = act(
        &h,
        json!({"module": "user", "if": "create", "args": {"body": {"name": "丁"}}}),
    )
    .await;
    assert_eq!(ok(created), json!({"id": 4, "name": "丁"}));
    assert_eq!(
        ok(act(&h, json!({"module": "user", "if": "delete", "id": 3})).await),
        json!({"id": 3, "name": "丙"})
    );
    let bad = act(
        &h,
        json!({"module": "user", "if": "create", "args": {"body": {}}}),
    )
    .await
    .expect_err("no name");
    assert_eq!(
        (bad.code.as_str(), bad.http_status()),
        ("invalid_input", 400)
    );
    // Over REST, through the plugin's own route map.
    let url = format!("http://{}/user/4", h.rest_addr().expect("rest"));
    let response = reqwest::get(&url).await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        serde_json::from_str::<Value>(&response.text().await.expect("body")).expect("json"),
        json!({"id": 4, "name": "丁"})
    );
    stop.cancel();
}

/// The seed's salute behaviour.
async fn salute_suite(file: &Path) {
    let (h, stop) = host(file).await;
    let first = act(&h, json!({"cmd": "salute", "name": "World"}))
        .await
        .expect("answers");
    assert_eq!(first["message"], "Hello World!");
    let second = act(&h, json!({"cmd": "salute", "name": "Zoë 甲"}))
        .await
        .expect("answers");
    assert_eq!(second["message"], "Hello Zoë 甲!");
    assert_eq!(
        second["id"].as_i64(),
        first["id"].as_i64().map(|i| i + 1),
        "state survives between calls"
    );
    stop.cancel();
}

/// The seed's math behaviour.
async fn math_suite(file: &Path) {
    let (h, stop) = host(file).await;
    assert_eq!(
        act(
            &h,
            json!({"role": "math", "cmd": "sum", "left": 1, "right": 2})
        )
        .await
        .expect("sum"),
        json!({"answer": 3})
    );
    assert_eq!(
        act(
            &h,
            json!({"role": "math", "cmd": "product", "left": 1.5, "right": 2})
        )
        .await
        .expect("product"),
        json!({"answer": 3})
    );
    let bad = act(
        &h,
        json!({"role": "math", "cmd": "sum", "left": "x", "right": 1}),
    )
    .await
    .expect_err("not a number");
    assert_eq!(
        (bad.code.as_str(), bad.http_status()),
        ("invalid_input", 400)
    );
    stop.cancel();
}

/// `wasmeca check` passes, and so does the spec it runs when one sits beside the plugin.
fn checks(file: &Path) {
    let out = wasmeca(&["check", &file.to_string_lossy()], &repo());
    let report = String::from_utf8_lossy(&out.stdout);
    let spec_passed = match wasmeca::authoring::spec::spec_beside(file) {
        Some(_) => report
            .trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("  PASS: ")),
        None => true,
    };
    assert!(
        out.status.success() && report.lines().any(|l| l == "PASS") && spec_passed,
        "{report}"
    );
}

/// `wasmeca test` in the example or project folder `dir` passes its spec (`NAME.spec.jsonic`,
/// NAME the folder's).
fn specs_pass(dir: &Path) {
    let out = wasmeca(&["test"], dir);
    let report = String::from_utf8_lossy(&out.stdout);
    let name = dir.file_name().expect("a name").to_string_lossy();
    assert!(
        out.status.success()
            && report.contains(&format!("{name}.spec.jsonic  ("))
            && report.contains("  PASS: "),
        "wasmeca test in {}:\n{report}",
        dir.display()
    );
}

/// A spec whose `out` differs from the answer fails, naming the call and the key.
fn a_wrong_out_fails_naming_the_call_and_the_key(file: &Path) {
    let dir = std::env::temp_dir().join(format!("wasmeca-wrong-{}", wasmeca::message::new_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let spec = dir.join("wrong.spec.jsonic");
    let text = format!(
        "plugins: [{:?}]\nallow: {{ missing: true }}\ncalls: [\n  \
         {{ name: 'ann', pattern: 'cmd:salute', params: {{ name: 'Ann' }}, out: {{ id: 1, message: 'Hello Bob!' }} }}\n]\n",
        file.to_string_lossy()
    );
    std::fs::write(&spec, text).expect("spec written");
    let out = wasmeca(&["test", &spec.to_string_lossy()], &repo());
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("  FAIL ann  {\"cmd\":\"salute\",\"name\":\"Ann\"}")
            && report.contains(
                "out.message: expected \"Hello Bob!\" (a string), got \"Hello Ann!\" (a string)"
            )
            && !report.contains("out.id")
            && report.contains("  FAIL: 0 passed, 1 failed, 1 calls in "),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_plugins_pass_the_shared_suites() {
    let plugin = wasmeca_tests::plugin;
    user_suite(&plugin("user")).await;
    salute_suite(&plugin("salute")).await;
    math_suite(&plugin("math")).await;
    for name in ["user", "salute", "math"] {
        checks(&plugin(name));
    }
}

/// Builds the user and salute examples of `language` and runs the shared suites on them.
async fn user_and_salute_examples_pass(language: &'static str) {
    tokio::task::spawn_blocking(move || toolchain(language))
        .await
        .expect("toolchain");
    let mut built = Vec::new();
    for example in ["user", "salute"] {
        let dir = repo().join("examples").join(language).join(example);
        built.push(
            tokio::task::spawn_blocking(move || build(&dir))
                .await
                .expect("build"),
        );
    }
    let [user, salute] = built.try_into().expect("two examples");
    user_suite(&user).await;
    salute_suite(&salute).await;
    checks(&user);
    checks(&salute);
    for example in ["user", "salute"] {
        specs_pass(&repo().join("examples").join(language).join(example));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_examples_pass_the_shared_suites() {
    user_and_salute_examples_pass("js").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_examples_pass_the_shared_suites() {
    user_and_salute_examples_pass("python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_c_example_passes_the_shared_suites() {
    tokio::task::spawn_blocking(|| toolchain("c"))
        .await
        .expect("toolchain");
    let file = tokio::task::spawn_blocking(|| build(&repo().join("examples/c/salute-math")))
        .await
        .expect("build");
    salute_suite(&file).await;
    math_suite(&file).await;
    checks(&file);
    specs_pass(&repo().join("examples/c/salute-math"));
    a_wrong_out_fails_naming_the_call_and_the_key(&file);
}

#[test]
fn check_fails_saying_why_for_a_pattern_that_does_not_parse() {
    let out = wasmeca(
        &[
            "check",
            &wasmeca_tests::plugin("badpattern").to_string_lossy(),
        ],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("FAIL its manifest is valid"), "{report}");
    assert!(
        report.contains("`cmd:broken,,x` does not parse at column 12"),
        "{report}"
    );
    assert!(report.trim_end().ends_with("FAIL"), "{report}");
}

/// `wasmeca new` → `wasmeca build` → serve: answers over `act` and REST.
async fn new_project(language: &str) {
    let dir = std::env::temp_dir().join(format!("wasmeca-new-{}", wasmeca::message::new_id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let project = dir.join(format!("greeter{language}"));
    let name = project
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let out = wasmeca(&["new", language, &project.to_string_lossy()], &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = {
        let project = project.clone();
        tokio::task::spawn_blocking(move || build(&project))
            .await
            .expect("build")
    };
    let (h, stop) = host(&file).await;
    let answer = act(&h, json!({"role": name, "cmd": "hello", "name": "New"}))
        .await
        .expect("answers");
    assert_eq!(answer["message"], "Hello New!", "{language}");
    let url = format!(
        "http://{}/{name}/hello?name=Rest",
        h.rest_addr().expect("rest")
    );
    let body = reqwest::get(&url)
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["message"],
        "Hello Rest!",
        "{language}: {body}"
    );
    // Each greeting was published; the template's observer kept it in the entity store.
    let greetings = eventually(
        &h,
        &format!("{language}: the observer stores both greetings"),
        json!({"role": name, "cmd": "greetings"}),
        |list| list.as_array().is_some_and(|l| l.len() == 2),
    )
    .await;
    assert_eq!(
        names(&greetings),
        ["New", "Rest"],
        "{language}: {greetings}"
    );
    stop.cancel();
    // The spec the template ships passes, and `wasmeca check` runs it too.
    specs_pass(&project);
    checks(&file);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_projects_in_every_language_build_and_answer() {
    tokio::task::spawn_blocking(|| {
        toolchain("js");
        toolchain("python");
        toolchain("c");
    })
    .await
    .expect("toolchains");
    for language in ["js", "python", "c", "rust"] {
        new_project(language).await;
    }
}

#[test]
fn a_missing_toolchain_is_named_with_its_install_command() {
    let dir = std::env::temp_dir().join(format!("wasmeca-missing-{}", wasmeca::message::new_id()));
    let project = dir.join("lonely");
    let out = wasmeca(&["new", "python", &project.to_string_lossy()], &repo());
    assert!(out.status.success());
    // An SDK folder without any toolchain installed next to it.
    let empty_sdk = dir.join("sdk");
    std::fs::create_dir_all(empty_sdk.join("python")).expect("dir");
    let out = wasmeca(
        &[
            "build",
            "--sdk",
            &empty_sdk.to_string_lossy(),
            &project.to_string_lossy(),
        ],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("componentize-py is missing; install it with:")
            && err.contains("toolchains.sh python"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds the examples `dirs` (relative to `examples/`) with `wasmeca build`, after installing
/// the toolchains `languages`.
async fn build_examples(languages: &'static [&'static str], dirs: &[&str]) -> Vec<PathBuf> {
    tokio::task::spawn_blocking(move || languages.iter().for_each(|l| toolchain(l)))
        .await
        .expect("toolchains");
    let mut built = Vec::new();
    for dir in dirs {
        let dir = repo().join("examples").join(dir);
        built.push(
            tokio::task::spawn_blocking(move || build(&dir))
                .await
                .expect("build"),
        );
    }
    built
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_plugin_publishes_what_a_python_plugin_observes() {
    let built = build_examples(&["js", "python"], &["js/accounts", "python/audit"]).await;
    let (h, stop) = host_of(&[&built[0], &built[1]]).await;
    let ok = |v: Result<Value, ActError>| v.unwrap_or_else(|e| panic!("{e}"));

    // JavaScript: entities saved and listed through `entity()`, a count in the cache.
    let ann = ok(act(
        &h,
        json!({"role": "accounts", "cmd": "create", "name": "Ann"}),
    )
    .await);
    let bob = ok(act(
        &h,
        json!({"role": "accounts", "cmd": "create", "name": "Bob"}),
    )
    .await);
    assert_eq!(ann["name"], "Ann");
    let ann_id = ann["id"].as_str().expect("a generated id");
    assert_ne!(Some(ann_id), bob["id"].as_str());
    let listed = ok(act(&h, json!({"role": "accounts", "cmd": "list"})).await);
    assert_eq!(names(&listed), ["Ann", "Bob"], "{listed}");
    let loaded = ok(act(&h, json!({"role": "accounts", "cmd": "load", "id": ann_id})).await);
    assert_eq!(
        (loaded["id"].as_str(), &loaded["name"]),
        (Some(ann_id), &json!("Ann"))
    );
    let missing = act(
        &h,
        json!({"role": "accounts", "cmd": "load", "id": "nobody"}),
    )
    .await
    .expect_err("a missing user");
    assert_eq!(
        (missing.code.as_str(), missing.http_status()),
        ("not_found", 404)
    );
    assert_eq!(
        ok(act(&h, json!({"role": "accounts", "cmd": "stats"})).await),
        json!({"created": 2})
    );
    // The store and the cache are the host's: plain acts see what the SDK wrote.
    let stored = ok(act(
        &h,
        json!({"sys": "entity", "cmd": "list", "base": "accounts", "name": "user", "q": {}}),
    )
    .await);
    assert_eq!(stored.as_array().map(Vec::len), Some(2), "{stored}");

    // Python: its observer heard both creations, saved an entry each and counted them.
    let count = eventually(
        &h,
        "the Python observer hears both creations",
        json!({"role": "audit", "cmd": "count"}),
        |c| c["seen"] == 2,
    )
    .await;
    assert_eq!(count, json!({"seen": 2, "users": 2, "entries": 2}));
    // Newest first (events may arrive in any order), each naming its user and event id.
    let entries = ok(act(&h, json!({"role": "audit", "cmd": "entries"})).await);
    assert_eq!(
        [&entries[0]["order"], &entries[1]["order"]],
        [2, 1],
        "{entries}"
    );
    let mut heard = names(&entries);
    heard.sort_unstable();
    assert_eq!(heard, ["Ann", "Bob"], "{entries}");
    let ann_entry = entries
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == "Ann"))
        .expect("Ann's entry");
    assert_eq!(ann_entry["user"].as_str(), Some(ann_id));
    assert!(
        ann_entry["event"].as_str().is_some_and(|id| !id.is_empty()),
        "{entries}"
    );

    // Removing through the JS SDK answers the removed user, then not_found.
    let removed = ok(act(
        &h,
        json!({"role": "accounts", "cmd": "remove", "id": ann_id}),
    )
    .await);
    assert_eq!(removed["name"], "Ann");
    let again = act(
        &h,
        json!({"role": "accounts", "cmd": "remove", "id": ann_id}),
    )
    .await
    .expect_err("already removed");
    assert_eq!(again.code, "not_found");
    let listed = ok(act(&h, json!({"role": "accounts", "cmd": "list"})).await);
    assert_eq!(names(&listed), ["Bob"]);
    // Nothing more was published: the observer's count stays.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        ok(act(&h, json!({"role": "audit", "cmd": "count"})).await)["seen"],
        2
    );
    stop.cancel();
    checks(&built[0]);
    checks(&built[1]);
    // The specs: audit's loads accounts too, and follows its events.
    specs_pass(&repo().join("examples/js/accounts"));
    specs_pass(&repo().join("examples/python/audit"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_c_notes_example_keeps_data_and_hears_its_events() {
    let built = build_examples(&["c"], &["c/notes"]).await;
    let (h, stop) = host_of(&[&built[0]]).await;
    let ok = |v: Result<Value, ActError>| v.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok(act(&h, json!({"role": "notes", "cmd": "stats"})).await),
        json!({"added": 0, "heard": 0}),
        "a missing cache key reads as null"
    );
    let milk = ok(act(&h, json!({"role": "notes", "cmd": "add", "text": "milk"})).await);
    ok(act(
        &h,
        json!({"role": "notes", "cmd": "add", "text": "eggs \"free range\""}),
    )
    .await);
    let milk_id = milk["id"].as_str().expect("a generated id");
    assert_eq!(milk["text"], "milk");
    let listed = ok(act(&h, json!({"role": "notes", "cmd": "list"})).await);
    let texts: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|n| n["text"].as_str())
        .collect();
    assert_eq!(texts, ["eggs \"free range\"", "milk"]);
    let loaded = ok(act(&h, json!({"role": "notes", "cmd": "load", "id": milk_id})).await);
    assert_eq!(loaded["text"], "milk");
    let missing = act(&h, json!({"role": "notes", "cmd": "load", "id": "nope"}))
        .await
        .expect_err("no such note");
    assert_eq!(
        (missing.code.as_str(), missing.http_status()),
        ("not_found", 404)
    );
    // Its own observer heard both additions; the cache counted them.
    eventually(
        &h,
        "the C observer hears both additions",
        json!({"role": "notes", "cmd": "stats"}),
        |s| s == &json!({"added": 2, "heard": 2}),
    )
    .await;
    let removed = ok(act(&h, json!({"role": "notes", "cmd": "remove", "id": milk_id})).await);
    assert_eq!(removed["text"], "milk");
    let listed = ok(act(&h, json!({"role": "notes", "cmd": "list"})).await);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    stop.cancel();
    checks(&built[0]);
    specs_pass(&repo().join("examples/c/notes"));
}
