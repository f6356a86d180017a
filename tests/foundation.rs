//! The foundation, driven in-process through the library with the real compiled plugins:
//! the seeds' answers, patrun precedence and `prior` across plugins, Seneca's act semantics,
//! versions side by side, limits (traps, panics, loops, memory), and load errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use wasmeca::Code;
use wasmeca::config::Limits;
use wasmeca::runtime::Compiling;
use wasmeca::{ActError, LoadError, Message, PluginSource, Router, Runtime};
use wasmeca_tests::{cache_dir, plugin};

fn msg(v: Value) -> Message {
    match v {
        Value::Object(m) => Message::new(m),
        other => panic!("not an object: {other}"),
    }
}

fn limits() -> Limits {
    Limits {
        memory_mib: 32,
        ..Limits::default()
    }
}

fn router_with(limits: Limits) -> Router {
    router_on(&cache_dir(), Compiling::default(), limits)
}

/// A router compiling into `cache` as `compiling` says, with an entity store in memory.
fn router_on(cache: &Path, compiling: Compiling, limits: Limits) -> Router {
    let runtime = Runtime::with_limits(Some(cache.to_owned()), limits.instance(), false, compiling)
        .expect("runtime starts");
    let router = wasmeca::assemble(
        runtime,
        &limits,
        Vec::new(),
        wasmeca::message::instance_id(),
    );
    // The user seed keeps its users in the entity store: one in memory per router.
    wasmeca::data::install(
        router.registry(),
        router.readiness(),
        wasmeca::config::DataSettings::memory(),
    );
    router
}

/// A router serving `plugins` (name, instances, options) in order.
async fn serving(plugins: &[(&str, usize, Value)], limits: Limits) -> Router {
    let router = router_with(limits);
    let sources: Vec<PluginSource> = plugins
        .iter()
        .map(|(name, instances, options)| PluginSource {
            options: options.clone(),
            instances: *instances,
            ..PluginSource::new(plugin(name))
        })
        .collect();
    router
        .registry()
        .load_all(&sources)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    router
}

async fn seeds() -> Router {
    let list: Vec<(&str, usize, Value)> = wasmeca_tests::SEEDS
        .iter()
        .map(|n| (*n, 1, json!({})))
        .collect();
    serving(&list, limits()).await
}

async fn act(router: &Router, m: Value) -> Result<Value, ActError> {
    router.act(msg(m)).await.map(|reply| reply.to_value())
}

async fn ok(router: &Router, m: Value) -> Value {
    act(router, m.clone())
        .await
        .unwrap_or_else(|e| panic!("{m} failed: {e}"))
}

/// How many of the chaos plugin's instances `/metrics` says were replaced for `reason`.
fn replacements(router: &Router, reason: &str) -> u64 {
    replacements_of(router, "chaos@1.0.0", reason)
}

/// How many instances of `plugin` (`name@version`) `/metrics` says were replaced for `reason`.
fn replacements_of(router: &Router, plugin: &str, reason: &str) -> u64 {
    let line =
        format!("wasmeca_instance_replacements_total{{plugin=\"{plugin}\",reason=\"{reason}\"}} ");
    router
        .metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.parse().ok())
        .unwrap_or(0)
}

async fn err(router: &Router, m: Value) -> ActError {
    match act(router, m.clone()).await {
        Ok(v) => panic!("{m} answered {v}, expected an error"),
        Err(e) => e,
    }
}

// --- quick start ---------------------------------------------------------------------------

/// Whose code serves `plugin` (`name@version`) on `router`: `baseline` or `optimised`.
fn code(router: &Router, plugin: &str) -> Option<&'static str> {
    let snapshot = router.registry().snapshot();
    let found = snapshot.plugins().iter().find(|p| p.key() == plugin)?;
    found.code()
}

/// A router on the compile cache `cache`, compiling as `compiling` says, that loaded the chaos
/// plugin, or why it could not.
async fn chaos_on(cache: &Path, compiling: Compiling) -> Result<Router, LoadError> {
    let router = router_on(cache, compiling, limits());
    router
        .registry()
        .load_all(&[PluginSource::new(plugin("chaos"))])
        .await?;
    Ok(router)
}

/// A router serving the chaos plugin with quick start, compiled in processes of `compiler`'s
/// when there is one, on the compile cache `cache`.
async fn quick_chaos(cache: &Path, compiler: Option<PathBuf>) -> Router {
    let compiling = Compiling {
        quick_start: true,
        compiler,
    };
    chaos_on(cache, compiling)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A plugin with no compiled artifact is served at once from Winch's code, then moved onto
/// Cranelift's, which the cache keeps for the next start; the move replaces its instances, as
/// any replacement does (the plugin's in-instance state starts again).
#[tokio::test]
async fn a_plugin_with_nothing_compiled_is_served_at_once_and_optimised_behind() {
    let cache = std::env::temp_dir().join(format!("wasmeca-quick-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let start = || quick_chaos(&cache, None);
    let calls = |answer: Value| answer["calls"].as_u64().expect("a count");

    let router = start().await;
    assert_eq!(code(&router, "chaos@1.0.0"), Some("baseline"));
    assert_eq!(calls(ok(&router, json!({"chaos": "ok"})).await), 1);
    assert_eq!(calls(ok(&router, json!({"chaos": "ok"})).await), 2);
    until_optimised(&router, "chaos@1.0.0").await;
    // The idle instance was replaced when the code was ready; calls go on, from a new one.
    assert_eq!(calls(ok(&router, json!({"chaos": "ok"})).await), 1);
    assert_eq!(replacements_of(&router, "chaos@1.0.0", "optimised"), 1);
    let artifacts = std::fs::read_dir(&cache).expect("the cache").count();
    assert_eq!(artifacts, 1, "Cranelift's code is in the cache");

    // The next start finds it: optimised from the first call, nothing to replace.
    let again = start().await;
    assert_eq!(code(&again, "chaos@1.0.0"), Some("optimised"));
    assert_eq!(calls(ok(&again, json!({"chaos": "ok"})).await), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replacements_of(&again, "chaos@1.0.0", "optimised"), 0);
    let _ = std::fs::remove_dir_all(&cache);
}

/// An instance busy when Cranelift's code is ready keeps serving its call on Winch's code and
/// is moved once the call has ended: the plugin is never without its instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_moves_onto_optimised_code_once_its_call_ends() {
    let cache = std::env::temp_dir().join(format!("wasmeca-quick-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let router = quick_chaos(&cache, None).await;
    let busy = {
        let router = router.clone();
        tokio::spawn(async move { ok(&router, json!({"chaos": "slow", "ms": 6000})).await })
    };
    // Cranelift's code lands in the cache while the call still runs on Winch's.
    let compiled = std::time::Instant::now();
    while artifacts_in(&cache) == 0 {
        assert!(
            compiled.elapsed() < Duration::from_secs(60),
            "never compiled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!busy.is_finished(), "the slow call outlasts the compile");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        code(&router, "chaos@1.0.0"),
        Some("baseline"),
        "the busy one stays"
    );
    assert_eq!(replacements_of(&router, "chaos@1.0.0", "optimised"), 0);
    assert_eq!(
        busy.await.expect("the call ends"),
        json!({"slept": 6000}),
        "the call on Winch's code answers"
    );
    let moved = std::time::Instant::now();
    while code(&router, "chaos@1.0.0") != Some("optimised") {
        assert!(moved.elapsed() < Duration::from_secs(10), "never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replacements_of(&router, "chaos@1.0.0", "optimised"), 1);
    let answer = ok(&router, json!({"chaos": "ok"})).await;
    assert_eq!(answer["calls"], 1, "a new instance answers: {answer}");
    let _ = std::fs::remove_dir_all(&cache);
}

/// The compiled artifacts in `cache`.
fn artifacts_in(cache: &Path) -> usize {
    std::fs::read_dir(cache).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    })
}

/// Waits until `plugin` serves from optimised code on `router`.
async fn until_optimised(router: &Router, plugin: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while code(router, plugin) != Some("optimised") {
        assert!(std::time::Instant::now() < deadline, "never optimised");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An executable shell script `name` in `dir` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("the script");
    let mut mode = std::fs::metadata(&path)
        .expect("its metadata")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&path, mode).expect("executable");
    path
}

/// The binary as a compiler (as `wasmeca serve` runs it), behind a script in `dir` that writes
/// the arguments of each run, one line each, to the file answered second, and its process id
/// and process group's to `groups` beside it.
fn recorded_compiler(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("the folder");
    let runs = dir.join("runs");
    let body = format!(
        "echo \"$*\" >> '{}'\necho \"$$ $(cut -d' ' -f5 /proc/$$/stat)\" >> '{}'\n\
         exec '{}' \"$@\"",
        runs.display(),
        dir.join("groups").display(),
        env!("CARGO_BIN_EXE_wasmeca")
    );
    (script(dir, "compiler.sh", &body), runs)
}

/// At quick start with a compiler process, both codes are compiled by it, each in a process of
/// its own, into files the host loads: Winch's, served at once and never kept, then
/// Cranelift's, kept in the cache.
#[tokio::test]
async fn a_compiler_process_compiles_both_codes_into_the_cache() {
    let cache = std::env::temp_dir().join(format!("wasmeca-compiler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let (compiler, runs) = recorded_compiler(&cache.join("bin"));
    let router = quick_chaos(&cache, Some(compiler)).await;
    assert_eq!(code(&router, "chaos@1.0.0"), Some("baseline"));
    assert_eq!(artifacts_in(&cache), 0, "Winch's code is not kept");
    assert_eq!(ok(&router, json!({"chaos": "ok"})).await["calls"], 1);
    until_optimised(&router, "chaos@1.0.0").await;
    assert_eq!(artifacts_in(&cache), 1, "Cranelift's code only");
    assert_eq!(ok(&router, json!({"chaos": "ok"})).await["calls"], 1);
    assert_eq!(replacements_of(&router, "chaos@1.0.0", "optimised"), 1);
    let runs = std::fs::read_to_string(&runs).expect("the compiler ran");
    let runs: Vec<&str> = runs.lines().collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].starts_with("compile-behind --baseline --out="),
        "{runs:?}"
    );
    assert!(runs[1].starts_with("compile-behind --out="), "{runs:?}");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .expect("the cache")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "no compiled file left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&cache);
}

/// Without quick start, a compiler process compiles the optimised code the host waits for.
#[tokio::test]
async fn a_compiler_process_compiles_for_a_host_without_quick_start() {
    let cache = std::env::temp_dir().join(format!("wasmeca-compiler-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let (compiler, runs) = recorded_compiler(&cache.join("bin"));
    let compiling = Compiling {
        quick_start: false,
        compiler: Some(compiler),
    };
    let router = chaos_on(&cache, compiling)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(&router, "chaos@1.0.0"), Some("optimised"));
    assert_eq!(ok(&router, json!({"chaos": "ok"})).await["calls"], 1);
    assert_eq!(artifacts_in(&cache), 1);
    let runs = std::fs::read_to_string(&runs).expect("the compiler ran");
    assert_eq!(runs.lines().count(), 1, "{runs}");
    // It leads a process group of its own: a Ctrl-C meant for the host does not reach it.
    let groups = std::fs::read_to_string(cache.join("bin").join("groups")).expect("its group");
    let ids: Vec<&str> = groups.split_whitespace().collect();
    assert!(ids.len() == 2 && ids[0] == ids[1], "{groups:?}");
    let _ = std::fs::remove_dir_all(&cache);
}

/// A compiler process that fails to run (exit 2: it could not start, the cache is not
/// writable...) costs the host its memory, not its plugins: it compiles both codes in its own
/// process, and does not try the compiler process again.
#[tokio::test]
async fn a_compiler_process_that_cannot_run_leaves_the_compile_to_the_host() {
    let cache = std::env::temp_dir().join(format!("wasmeca-no-compiler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).expect("the cache folder");
    let runs = cache.join("runs");
    let body = format!("echo run >> '{}'\nexit 2", runs.display());
    let failing = script(&cache, "failing.sh", &body);
    let router = quick_chaos(&cache, Some(failing)).await;
    assert_eq!(code(&router, "chaos@1.0.0"), Some("baseline"));
    until_optimised(&router, "chaos@1.0.0").await;
    assert_eq!(artifacts_in(&cache), 1, "compiled into the cache here");
    assert_eq!(ok(&router, json!({"chaos": "ok"})).await["calls"], 1);
    let runs = std::fs::read_to_string(&runs).expect("the compiler was tried");
    assert_eq!(
        runs.lines().count(),
        1,
        "tried once, not for the optimised code"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

/// A compiler process that says a component does not compile is believed: the load fails with
/// its words and the file's name, and the host does not compile the component itself.
#[tokio::test]
async fn a_plugin_the_compiler_process_refuses_is_not_loaded_and_says_why() {
    let cache = std::env::temp_dir().join(format!("wasmeca-refusing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).expect("the cache folder");
    let refuser = script(
        &cache,
        "refuser.sh",
        "cat >/dev/null\necho 'error: refused by the test' >&2\nexit 1",
    );

    let compiling = Compiling {
        quick_start: true,
        compiler: Some(refuser),
    };
    let Err(error) = chaos_on(&cache, compiling).await else {
        panic!("a plugin that does not compile is not loaded");
    };
    let said = error.to_string();
    assert!(
        said.contains("chaos.wasm") && said.contains("does not compile: refused by the test"),
        "{said}"
    );
    assert_eq!(
        artifacts_in(&cache),
        0,
        "nothing compiled behind the refusal"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

// --- the seeds ---------------------------------------------------------------------------

#[tokio::test]
async fn seeds_answer_as_the_seed_does() {
    let r = seeds().await;
    let hello = ok(&r, json!({"cmd": "salute", "name": "World"})).await;
    assert_eq!(hello["message"], "Hello World!");
    assert_eq!(
        ok(
            &r,
            json!({"role": "math", "cmd": "sum", "left": 1, "right": 2})
        )
        .await,
        json!({"answer": 3})
    );
    assert_eq!(
        ok(
            &r,
            json!({"role": "math", "cmd": "product", "left": 3, "right": 4})
        )
        .await,
        json!({"answer": 12})
    );
    assert_eq!(
        ok(
            &r,
            json!({"cmd": "login", "username": "asd", "pass": "123"})
        )
        .await,
        json!({"code": 1000})
    );
    assert_eq!(
        ok(&r, json!({"cmd": "login", "username": "asd", "pass": 123})).await,
        json!({"code": 1000})
    );
    assert_eq!(
        ok(
            &r,
            json!({"cmd": "login", "username": "asd", "pass": "nope"})
        )
        .await,
        json!({"code": 2100})
    );
    let config = ok(&r, json!({"target": "config-server"})).await;
    assert_eq!(config["SUCCESS_NORMAL_RES"]["code"], 1000);
}

#[tokio::test]
async fn user_crud_keeps_its_list_between_calls() {
    let r = seeds().await;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("list is an array")
            .iter()
            .map(|u| u["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let list = ok(&r, json!({"module": "user", "if": "list"})).await;
    assert_eq!(names(&list), ["甲", "乙", "丙"]);
    assert_eq!(
        ok(&r, json!({"module": "user", "if": "load", "id": 2})).await,
        json!({"id": 2, "name": "乙"})
    );
    // As seneca-web sends it: the id in args.params (a string), the name in args.body.
    let edited = ok(&r, json!({"module": "user", "if": "edit", "args": {"params": {"id": "2"}, "body": {"name": "乙二"}}})).await;
    assert_eq!(edited, json!({"id": 2, "name": "乙二"}));
    let created = ok(
        &r,
        json!({"module": "user", "if": "create", "args": {"body": {"name": "丁"}}}),
    )
    .await;
    assert_eq!(created, json!({"id": 4, "name": "丁"}));
    assert_eq!(
        ok(&r, json!({"module": "user", "if": "delete", "id": 1})).await,
        json!({"id": 1, "name": "甲"})
    );
    let list = ok(&r, json!({"module": "user", "if": "list"})).await;
    assert_eq!(names(&list), ["乙二", "丙", "丁"]);
    let missing = err(&r, json!({"module": "user", "if": "load", "id": 1})).await;
    assert_eq!(
        (missing.code.as_str(), missing.status),
        ("not_found", Some(404))
    );
    let no_name = err(
        &r,
        json!({"module": "user", "if": "create", "args": {"body": {}}}),
    )
    .await;
    assert_eq!(
        (no_name.code.as_str(), no_name.http_status()),
        ("invalid_input", 400)
    );
}

#[tokio::test]
async fn plugin_state_survives_between_calls() {
    let r = seeds().await;
    for expected in 1..=3 {
        assert_eq!(ok(&r, json!({"cmd": "salute"})).await["id"], expected);
    }
}

// --- act semantics -------------------------------------------------------------------------

#[tokio::test]
async fn no_match_is_act_not_found_unless_default_is_an_object_or_array() {
    let r = seeds().await;
    let e = err(&r, json!({"cmd": "nope", "x": 1})).await;
    assert_eq!(e.code, Code::ActNotFound.as_str());
    assert!(
        e.message.contains(r#"{"cmd":"nope","x":1}"#),
        "{}",
        e.message
    );
    assert_eq!(
        ok(&r, json!({"cmd": "nope", "default$": {"fallback": true}})).await,
        json!({"fallback": true})
    );
    assert_eq!(
        ok(&r, json!({"cmd": "nope", "default$": [1, 2]})).await,
        json!([1, 2])
    );
    assert_eq!(
        err(&r, json!({"cmd": "nope", "default$": "text"}))
            .await
            .code,
        Code::ActDefaultBad.as_str()
    );
    // A partial match finds the wider pattern, extra keys are ignored, values compare as strings.
    assert_eq!(
        ok(
            &r,
            json!({"role": "math", "cmd": "sum", "left": "1", "right": 2, "extra": true})
        )
        .await["answer"],
        3
    );
    let e = err(
        &r,
        json!({"role": "math", "cmd": "divide", "left": 1, "right": 2}),
    )
    .await;
    assert_eq!(e.code, Code::ActNotFound.as_str());
}

#[tokio::test]
async fn results_must_be_objects_arrays_or_null() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let e = err(&r, json!({"chaos": "number"})).await;
    assert_eq!(e.code, Code::ResultNotObjarr.as_str());
    assert!(e.message.contains("not a number"), "{}", e.message);
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
}

#[tokio::test]
async fn plugin_errors_keep_code_status_and_details() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let e = err(&r, json!({"chaos": "fail"})).await;
    assert_eq!(
        (e.code.as_str(), e.message.as_str(), e.status),
        ("boom", "bad thing", Some(418))
    );
    assert_eq!(e.details.as_deref(), Some(&json!({"why": "asked to"})));
}

#[tokio::test]
async fn nested_acts_inherit_the_transaction() {
    let r = serving(&[("chaos", 2, json!({})), ("math", 1, json!({}))], limits()).await;
    let answer = ok(
        &r,
        json!({"chaos": "relay", "tx$": "txtxtxtxtxtx", "inner": {"chaos": "echo", "a": 1}}),
    )
    .await;
    assert_eq!(answer["tx"], "txtxtxtxtxtx");
    assert_eq!(answer["inner"]["tx$"], "txtxtxtxtxtx");
    assert_eq!(answer["inner"]["a"], 1);
    // Without a given tx, one is made: 12 chars of [0-9a-z], the same in both acts.
    let answer = ok(&r, json!({"chaos": "relay", "inner": {"chaos": "echo"}})).await;
    let tx = answer["tx"].as_str().expect("tx is set");
    assert_eq!(tx.len(), 12);
    assert!(
        tx.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(answer["inner"]["tx$"], tx);
    // id$ sets both parts; the action sees tx$ but not id$.
    let echoed = ok(
        &r,
        json!({"chaos": "echo", "id$": "mmmmmmmmmmmm/tttttttttttt"}),
    )
    .await;
    assert_eq!(echoed["tx$"], "tttttttttttt");
    assert!(echoed.get("id$").is_none());
    // Errors of nested acts come back to the plugin as values, and up to the caller.
    let e = err(
        &r,
        json!({"chaos": "relay", "inner": {"role": "math", "cmd": "sum", "left": "x"}}),
    )
    .await;
    assert_eq!(e.code, "invalid_input");
}

#[tokio::test]
async fn nested_acts_stop_at_the_depth_limit() {
    let limits = Limits {
        max_depth: 3,
        ..limits()
    };
    let r = serving(&[("chaos", 6, json!({}))], limits).await;
    let e = err(&r, json!({"chaos": "recurse"})).await;
    assert_eq!(e.code, Code::ActDepthLimit.as_str());
    assert!(e.message.contains("limit 3"), "{}", e.message);
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
}

#[tokio::test]
async fn acting_a_busy_plugin_on_the_same_chain_is_refused_not_deadlocked() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let e = err(
        &r,
        json!({"chaos": "relay", "inner": {"chaos": "echo"}, "timeout$": 5000}),
    )
    .await;
    assert_eq!(e.code, Code::ActReentrant.as_str());
    assert!(e.message.contains("chaos@1.0.0"), "{}", e.message);
}

// --- precedence and prior across plugins -----------------------------------------------------

#[tokio::test]
async fn later_plugins_override_and_can_call_prior() {
    let r = serving(
        &[("salute", 1, json!({})), ("override", 1, json!({}))],
        limits(),
    )
    .await;
    // Same pattern: override wins, its prior is salute.
    let same = ok(&r, json!({"cmd": "salute", "name": "Ann"})).await;
    assert_eq!(same["overridden"], "same");
    assert_eq!(same["prior"]["message"], "Hello Ann!");
    // Narrower pattern: its prior is the wider cmd:salute as it was when added (salute's).
    let fr = ok(&r, json!({"cmd": "salute", "lang": "fr", "name": "Zoé"})).await;
    assert_eq!(fr["overridden"], "narrower");
    assert_eq!(fr["prior"]["message"], "Hello Zoé!");
    // No prior: default$ or null.
    assert_eq!(ok(&r, json!({"cmd": "lonely"})).await["prior"], Value::Null);
    assert_eq!(
        ok(&r, json!({"cmd": "lonely", "default$": {"d": 1}})).await["prior"],
        json!({"d": 1})
    );
}

#[tokio::test]
async fn load_order_decides_which_plugin_wins() {
    let r = serving(
        &[("override", 1, json!({})), ("salute", 1, json!({}))],
        limits(),
    )
    .await;
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "name": "Ann"})).await["message"],
        "Hello Ann!"
    );
    // The narrower pattern still goes to override; nothing matched it when it was added, so it
    // has no prior (Seneca's priordef is fixed at add time).
    let fr = ok(&r, json!({"cmd": "salute", "lang": "fr"})).await;
    assert_eq!(fr["overridden"], "narrower");
    assert_eq!(fr["prior"], Value::Null);
}

// --- versions --------------------------------------------------------------------------------

#[tokio::test]
async fn versions_coexist_and_version_pins_pick_one() {
    let r = serving(
        &[("salute", 1, json!({})), ("salute_v2", 1, json!({}))],
        limits(),
    )
    .await;
    let keys: Vec<String> = r
        .registry()
        .snapshot()
        .plugins()
        .iter()
        .filter(|p| !p.is_native())
        .map(|p| p.key())
        .collect();
    assert_eq!(keys, ["salute@1.0.0", "salute@2.0.0"]);
    assert_eq!(ok(&r, json!({"cmd": "salute"})).await["version"], "2.0.0");
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "$version": "1"})).await["message"],
        "Hello World!"
    );
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "$version": 1})).await["message"],
        "Hello World!"
    );
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "$version": "^2"})).await["version"],
        "2.0.0"
    );
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "$version": "=1.0.0"})).await["message"],
        "Hello World!"
    );
    let e = err(&r, json!({"cmd": "salute", "$version": "3"})).await;
    assert_eq!(e.code, Code::VersionNotFound.as_str());
    assert!(e.message.contains("2.0.0, 1.0.0"), "{}", e.message);
    assert_eq!(e.http_status(), 404);
    assert_eq!(
        err(&r, json!({"cmd": "salute", "$version": "x.y"}))
            .await
            .code,
        Code::InvalidVersion.as_str()
    );
    // Each version keeps its own state.
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "$version": "1"})).await["id"],
        4
    );
    assert_eq!(ok(&r, json!({"cmd": "salute"})).await["id"], 3);
}

#[tokio::test]
async fn swapping_the_set_keeps_serving() {
    let r = seeds().await;
    let salute = r
        .registry()
        .snapshot()
        .get("salute@1.0.0")
        .cloned()
        .expect("salute is loaded");
    assert!(r.registry().unload("salute@1.0.0").is_some());
    assert_eq!(
        err(&r, json!({"cmd": "salute"})).await.code,
        Code::ActNotFound.as_str()
    );
    r.registry().install(salute);
    assert_eq!(
        ok(&r, json!({"cmd": "salute", "name": "Back"})).await["message"],
        "Hello Back!"
    );
    assert_eq!(
        ok(
            &r,
            json!({"role": "math", "cmd": "sum", "left": 2, "right": 2})
        )
        .await["answer"],
        4
    );
}

// --- limits ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_trap_is_an_error_and_the_instance_is_replaced() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["calls"], 1);
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["calls"], 2);
    let e = err(&r, json!({"chaos": "trap"})).await;
    assert_eq!(e.code, Code::PluginTrap.as_str());
    assert!(e.message.contains("chaos@1.0.0 trapped"), "{}", e.message);
    // A fresh instance answers: its counter starts again.
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["calls"], 1);
    // Operators see it.
    assert_eq!(replacements(&r, "trap"), 1, "{}", r.metrics().encode());
}

/// An instance that one call grew past `replace_after_growth_mib` is replaced (its memory
/// cannot shrink otherwise); a plugin with its own bound of 0 keeps its instance and state.
#[tokio::test]
async fn an_instance_grown_past_its_bound_is_replaced_unless_its_plugin_says_0() {
    let limits = Limits {
        memory_mib: 128,
        replace_after_growth_mib: 4,
        ..limits()
    };
    let large = json!({"chaos": "ok", "pad": "x".repeat(6 << 20)});
    for (own, kept) in [(None, false), (Some(0), true)] {
        let r = router_with(limits.clone());
        let source = PluginSource {
            replace_after_growth: own,
            ..PluginSource::new(plugin("chaos"))
        };
        r.registry().load_all(&[source]).await.expect("chaos loads");
        assert_eq!(ok(&r, json!({"chaos": "ok"})).await["calls"], 1);
        assert_eq!(ok(&r, large.clone()).await["calls"], 2);
        let next = ok(&r, json!({"chaos": "ok"})).await["calls"].clone();
        assert_eq!(next, if kept { 3 } else { 1 }, "own bound {own:?}");
        let replaced = replacements(&r, "growth");
        assert_eq!(replaced, u64::from(!kept), "own bound {own:?}");
    }
}

#[tokio::test]
async fn a_panic_is_an_error_with_its_message() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let e = err(&r, json!({"chaos": "panic"})).await;
    assert_eq!(e.code, Code::PluginTrap.as_str());
    assert!(
        e.message.contains("panicked (boom on purpose)"),
        "{}",
        e.message
    );
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
}

#[tokio::test]
async fn an_endless_loop_times_out_and_the_next_call_succeeds() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let started = std::time::Instant::now();
    let e = err(&r, json!({"chaos": "loop", "timeout$": 300})).await;
    assert_eq!(e.code, Code::ActionTimeout.as_str());
    assert!(e.message.contains("chaos:loop"), "{}", e.message);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline was not kept"
    );
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
    assert_eq!(replacements(&r, "timeout"), 1, "{}", r.metrics().encode());
}

/// Regression (fault run): `timeout$: 1e308` made a looping plugin run forever, holding its
/// instance. A caller's timeout is cut to `[limits] max_timeout_ms`; a negative or non-numeric
/// one is ignored.
#[tokio::test]
async fn a_caller_cannot_lift_the_deadline() {
    let r = serving(
        &[("chaos", 1, json!({}))],
        Limits {
            timeout_ms: 200,
            max_timeout_ms: 400,
            ..limits()
        },
    )
    .await;
    for asked in [json!(1e308), json!(u64::MAX), json!(-5), json!("forever")] {
        let started = std::time::Instant::now();
        let e = err(&r, json!({"chaos": "loop", "timeout$": asked})).await;
        let took = started.elapsed();
        assert_eq!(e.code, Code::ActionTimeout.as_str(), "{asked}: {e}");
        assert!(
            took < Duration::from_secs(10),
            "timeout$ {asked} held the call for {took:?}"
        );
        let expected = if asked.as_f64().is_some_and(|f| f > 0.0) {
            "400 ms"
        } else {
            "200 ms"
        };
        assert!(e.message.contains(expected), "{asked}: {}", e.message);
    }
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
}

/// An answer over `[limits] max_result_bytes` is refused with `result_too_large` (the
/// instance is kept: it did nothing wrong but answer too much).
#[tokio::test]
async fn an_answer_over_the_size_limit_is_refused() {
    let r = serving(
        &[("chaos", 1, json!({}))],
        Limits {
            max_result_bytes: 2_000,
            ..limits()
        },
    )
    .await;
    let small = ok(&r, json!({"chaos": "echo", "pad": "x"})).await;
    assert_eq!(small["pad"], "x");
    let e = err(&r, json!({"chaos": "echo", "pad": "x".repeat(5_000)})).await;
    assert_eq!(e.code, Code::ResultTooLarge.as_str(), "{e}");
    assert!(e.message.contains("the limit is 2000"), "{}", e.message);
    assert!(e.message.len() < 300, "the error does not echo the answer");
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["calls"], 1);
}

/// The sum of every instance's memory cap has a host-wide budget: a plugin that would go over
/// it is refused loudly at load, naming the figures.
#[tokio::test]
async fn plugins_over_the_memory_budget_are_refused_at_load() {
    let limits = Limits {
        memory_mib: 32,
        memory_budget_mib: Some(100),
        ..limits()
    };
    let r = router_with(limits);
    let source = |instances| PluginSource {
        instances,
        ..PluginSource::new(plugin("chaos"))
    };
    r.registry()
        .load_all(&[source(3)])
        .await
        .expect("96 MiB fits in 100");
    let e = r
        .registry()
        .load(&PluginSource::new(plugin("salute")))
        .await
        .expect_err("32 more MiB do not");
    assert!(matches!(e, LoadError::Budget { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("need 32 MiB") && text.contains("committed 96 of its 100 MiB"),
        "{text}"
    );
    // Replacing what a file provides counts only the new instances.
    r.registry()
        .load(&source(3))
        .await
        .expect("the same file again fits");
}

/// While eight instances of a plugin loop until their deadline, another plugin keeps
/// answering promptly: long calls move off the async workers, and one plugin's long calls
/// take at most all but one of the guest threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_does_not_starve_the_others() {
    let r = serving(
        &[("chaos", 8, json!({})), ("salute", 1, json!({}))],
        limits(),
    )
    .await;
    let mut loops = Vec::new();
    for _ in 0..8 {
        let r = r.clone();
        loops.push(tokio::spawn(async move {
            err(&r, json!({"chaos": "loop", "timeout$": 5_000})).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Starved, the salutes would wait for the loops' deadline; they all answer while every
    // loop still runs (a condition, not a latency a loaded machine could overrun).
    let started = std::time::Instant::now();
    for _ in 0..50 {
        ok(&r, json!({"cmd": "salute", "name": "x"})).await;
    }
    assert!(
        loops.iter().all(|task| !task.is_finished()),
        "the salutes ({:?}) waited for the loops' deadline",
        started.elapsed()
    );
    for task in loops {
        let e = task.await.expect("the loop task");
        assert_eq!(e.code, Code::ActionTimeout.as_str());
    }
}

/// A call that computed long and then waits on a nested act of its own plugin does not keep
/// the plugin's turns to run long: the nested call computes long too and answers. (Holding the
/// turn while waiting deadlocked the chain until its deadline whenever more calls of the chain
/// ran past an epoch tick than the plugin has turns: one on two cores, as under a loaded CI.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_waiting_on_its_own_plugin_lets_the_nested_call_run_long() {
    // One more long-running call in the chain than any machine's turns (cores - 1).
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut msg = json!({"chaos": "slow", "ms": 50});
    for _ in 0..cores {
        msg = json!({"chaos": "relay", "ms": 50, "inner": msg});
    }
    let r = serving(&[("chaos", cores + 1, json!({}))], limits()).await;
    // Deadlocked, the chain answers `action_timeout` at this deadline.
    msg["timeout$"] = json!(10_000);
    let answer = ok(&r, msg).await;
    let mut inner = &answer;
    for _ in 0..cores {
        inner = &inner["inner"];
    }
    assert_eq!(inner["slept"], 50, "{answer}");
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_cap() {
    let r = serving(
        &[("chaos", 1, json!({}))],
        Limits {
            memory_mib: 16,
            ..limits()
        },
    )
    .await;
    let e = err(&r, json!({"chaos": "alloc"})).await;
    assert_eq!(e.code, Code::PluginTrap.as_str());
    assert!(
        e.message.contains("ran out of memory (limit 16 MiB)"),
        "{}",
        e.message
    );
    assert_eq!(ok(&r, json!({"chaos": "ok"})).await["ok"], true);
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_plugin_does_not_stall_other_plugins_even_on_one_thread() {
    let r = serving(
        &[("chaos", 1, json!({})), ("salute", 1, json!({}))],
        limits(),
    )
    .await;
    let slow = {
        let r = r.clone();
        tokio::spawn(async move { r.act(msg(json!({"chaos": "slow", "ms": 5000}))).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        assert_eq!(
            ok(&r, json!({"cmd": "salute"})).await["message"],
            "Hello World!"
        );
    }
    assert!(
        !slow.is_finished(),
        "the salutes had to wait for the slow call"
    );
    let slow = slow.await.expect("task runs").expect("slow call answers");
    assert_eq!(slow.to_value()["slept"], 5000);
}

#[tokio::test]
async fn a_pool_serves_calls_in_parallel() {
    let r = serving(&[("chaos", 4, json!({}))], limits()).await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.act(msg(json!({"chaos": "slow", "ms": 1000}))).await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.expect("task runs").expect("answers").to_value()["slept"],
            1000
        );
    }
    // Serially this is 4 s; with four instances the calls overlap.
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_acts_and_refuses_new_ones() {
    let r = serving(&[("chaos", 1, json!({}))], limits()).await;
    let running = {
        let r = r.clone();
        tokio::spawn(async move { r.act(msg(json!({"chaos": "slow", "ms": 300}))).await })
    };
    while r.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(r.in_flight(), 1);
    r.close();
    assert_eq!(
        err(&r, json!({"chaos": "ok"})).await.code,
        Code::Closed.as_str()
    );
    r.drained().await;
    assert!(running.is_finished());
    assert_eq!(
        running
            .await
            .expect("task runs")
            .expect("finished")
            .to_value()["slept"],
        300
    );
}

// --- loading -------------------------------------------------------------------------------

async fn load_error(path: &Path, options: Value) -> LoadError {
    let r = router_with(limits());
    let source = PluginSource {
        options,
        ..PluginSource::new(path)
    };
    match r.registry().load(&source).await {
        Ok(p) => panic!("{} loaded as {}", path.display(), p.key()),
        Err(e) => e,
    }
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmeca-foundation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

#[tokio::test]
async fn bad_plugin_files_are_refused_with_the_file_and_the_reason() {
    let missing = load_error(Path::new("/nonexistent/x.wasm"), json!({})).await;
    assert!(matches!(missing, LoadError::Io { .. }));
    assert!(
        missing
            .to_string()
            .starts_with("plugin file /nonexistent/x.wasm:"),
        "{missing}"
    );

    let text = scratch("text.wasm", b"this is not wasm at all");
    let e = load_error(&text, json!({})).await;
    assert!(matches!(e, LoadError::NotWasm { .. }), "{e}");
    assert!(
        e.to_string().contains("text.wasm: not a WebAssembly file"),
        "{e}"
    );

    let core = scratch("core.wasm", b"\0asm\x01\0\0\0");
    let e = load_error(&core, json!({})).await;
    assert!(matches!(e, LoadError::CoreModule { .. }), "{e}");

    let empty_component = scratch("empty.wasm", b"\0asm\x0d\0\x01\0");
    let e = load_error(&empty_component, json!({})).await;
    assert!(matches!(e, LoadError::Contract { .. }), "{e}");
    assert!(e.to_string().contains("wasmeca:plugin/guest@0.1.0"), "{e}");

    let full = std::fs::read(plugin("salute")).expect("salute is built");
    let truncated = scratch("truncated.wasm", &full[..full.len() / 2]);
    let e = load_error(&truncated, json!({})).await;
    assert!(matches!(e, LoadError::Compile { .. }), "{e}");
}

#[tokio::test]
async fn init_failures_and_bad_manifests_are_refused() {
    let e = load_error(&plugin("chaos"), json!({"fail_init": true})).await;
    assert!(
        matches!(&e, LoadError::Init { error, .. } if error.code == "bad_options"),
        "{e}"
    );
    let e = load_error(&plugin("chaos"), json!({"bad_pattern": true})).await;
    let text = e.to_string();
    assert!(text.contains("chaos.wasm: invalid manifest"), "{text}");
    assert!(
        text.contains("`chaos:bad,,x` does not parse at column 11"),
        "{text}"
    );
}

#[tokio::test]
async fn components_are_compiled_once_and_loaded_from_the_cache() {
    let dir = std::env::temp_dir().join(format!("wasmeca-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = Runtime::new(Some(dir.clone()), 64 << 20).expect("runtime");
    let compiled = runtime.compile_file(&plugin("math")).expect("compiles");
    let artifact = runtime.cache().expect("cache on").artifact(&compiled.hash);
    assert!(artifact.exists(), "{} was not written", artifact.display());
    let written = std::fs::metadata(&artifact)
        .and_then(|m| m.modified())
        .expect("mtime");
    // A second runtime (a restarted host) loads the artifact instead of compiling again.
    let again = Runtime::new(Some(dir.clone()), 64 << 20).expect("runtime");
    again
        .compile_file(&plugin("math"))
        .expect("loads from cache");
    assert_eq!(
        std::fs::metadata(&artifact)
            .and_then(|m| m.modified())
            .expect("mtime"),
        written
    );
    // A corrupt artifact is replaced, not fatal. (Written beside and renamed over it: the live
    // runtimes map the old file, and truncating a mapped file in place would crash them.)
    let garbage = dir.join("garbage.tmp");
    std::fs::write(&garbage, b"garbage").expect("write garbage");
    std::fs::rename(&garbage, &artifact).expect("corrupt it");
    let r = wasmeca::assemble(
        again,
        &limits(),
        Vec::new(),
        wasmeca::message::instance_id(),
    );
    r.registry()
        .load_all(&[PluginSource::new(plugin("math"))])
        .await
        .expect("recompiles");
    assert_eq!(
        ok(
            &r,
            json!({"role": "math", "cmd": "sum", "left": 1, "right": 1})
        )
        .await["answer"],
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}
