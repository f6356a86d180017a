//! Message specs as a plugin author runs them: `wasmeca test` on every seed plugin's spec, a
//! wrong answer reported with the call and the key, a back reference through the entity store,
//! CI formats, and `wasmeca check` running the spec beside a plugin.

use std::path::{Path, PathBuf};
use std::process::Output;

use wasmeca_tests::{plugin, repo};

fn wasmeca(args: &[&str], dir: &Path) -> Output {
    wasmeca_tests::wasmeca_command!()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("wasmeca runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh folder holding one spec file with `text`; returns the spec's path.
fn spec_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmeca-spec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder");
    let path = dir.join(format!("{name}.spec.jsonic"));
    std::fs::write(&path, text).expect("spec written");
    path
}

#[test]
fn every_seed_plugin_answers_as_its_spec_says() {
    let out = wasmeca(&["test", "plugins"], &repo());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for seed in [
        "account",
        "audit",
        "config",
        "math",
        "salute",
        "salute-v2",
        "user",
    ] {
        assert!(
            text.contains(&format!("plugins/{seed}/{seed}.spec.jsonic  (")),
            "no spec ran for {seed}:\n{text}"
        );
    }
    assert!(text.ends_with("7 specs: 7 passed, 0 failed\n"), "{text}");
    // The user spec creates a user and edits it through the id the create answered.
    assert!(
        text.contains("  ok   #4  {\"id\":3,\"if\":\"edit\",\"module\":\"user\",\"name\":\"Eva\"}"),
        "{text}"
    );
}

#[test]
fn a_wrong_answer_fails_naming_the_call_and_the_key() {
    let spec = spec_file(
        "wrong",
        &format!(
            "plugins: [{:?}]\npattern: 'module:user'\nallow: {{missing: true}}\ncalls: [\n  \
             {{ name: 'made', pattern: 'if:create', params: {{name: 'Dan'}}, out: {{id: 4}} }}\n  \
             {{ name: 'again', pattern: 'if:load', params: {{id: '`made:out.id`'}}, out: {{id: 4, name: 'Dave'}} }}\n  \
             {{ pattern: 'if:load', params: {{id: 2}}, out: {{id: '2'}} }}\n]\n",
            plugin("user").display().to_string()
        ),
    );
    let out = wasmeca(&["test", &spec.display().to_string()], &repo());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("  ok   made  {\"if\":\"create\",\"module\":\"user\",\"name\":\"Dan\"}"),
        "{text}"
    );
    // The reference found the user the first call created; only the name differs.
    assert!(
        text.contains("  FAIL again  {\"id\":4,\"if\":\"load\",\"module\":\"user\"}  (")
            && text.contains(
                "         out.name: expected \"Dave\" (a string), got \"Dan\" (a string)\n         \
             answer: {\"id\":4,\"name\":\"Dan\"}\n"
            ),
        "{text}"
    );
    assert!(
        text.contains("         out.id: expected \"2\" (a string), got 2 (a number)\n"),
        "{text}"
    );
    assert!(
        text.contains("  FAIL: 1 passed, 2 failed, 3 calls in"),
        "{text}"
    );

    // The same run for CI.
    let out = wasmeca(
        &["test", "--format", "junit", &spec.display().to_string()],
        &repo(),
    );
    let xml = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{xml}");
    assert!(
        xml.contains("tests=\"3\"") && xml.contains("failures=\"2\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"out.name: expected &quot;Dave&quot; (a string), got &quot;Dan&quot; (a string)\""),
        "{xml}"
    );
    let out = wasmeca(
        &["test", "--format", "tap", &spec.display().to_string()],
        &repo(),
    );
    let tap = stdout(&out);
    assert!(tap.starts_with("TAP version 13\n1..3\nok 1 - "), "{tap}");
    assert!(tap.contains("\nnot ok 2 - "), "{tap}");
}

#[test]
fn a_pattern_without_a_call_fails_unless_allowed() {
    let spec = spec_file(
        "missing",
        &format!(
            "plugins: [{:?}]\ncalls: [ {{ pattern: 'role:math,cmd:sum', params: {{left: 1, right: 2}}, out: {{answer: 3}} }} ]\n",
            plugin("math").display().to_string()
        ),
    );
    let out = wasmeca(&["test", &spec.display().to_string()], &repo());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("  FAIL no call for role:math,cmd:product (math@1.0.0)"),
        "{text}"
    );
    let out = wasmeca(
        &["test", "--allow-missing", &spec.display().to_string()],
        &repo(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_plugin_build_that_replaces_nothing_fails_the_run() {
    let math = plugin("math");
    let spec = spec_file(
        "swap",
        &format!(
            "plugins: [{:?}]\nallow: {{missing: true}}\ncalls: [ {{ pattern: 'role:math,cmd:sum', params: {{left: 1, right: 2}}, out: {{answer: 3}} }} ]\n",
            math.display().to_string()
        ),
    );
    let test_with = |build: &std::path::Path| {
        wasmeca(
            &[
                "test",
                "--plugin",
                &build.display().to_string(),
                &spec.display().to_string(),
            ],
            &repo(),
        )
    };
    // The same build by its file name: it takes the spec's plugin's place and passes.
    let out = test_with(&math);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // A build no spec runs was not tested: the run fails and says which.
    let out = test_with(&plugin("salute"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(
        err.contains("no spec here runs a plugin file named salute.wasm, so it was not tested"),
        "{err}"
    );
}

#[test]
fn a_spec_that_is_not_one_says_where() {
    let spec = spec_file(
        "typo",
        "plugins: ['x.wasm']\ncalls: [\n  { pattern: 'cmd:x', outt: {} }\n]\n",
    );
    let out = wasmeca(&["test", &spec.display().to_string()], &repo());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "calls[0]: `outt` is not a key of a call (known: name, pattern, params, out, err, print, run, line)"
        ),
        "{text}"
    );
    let spec = spec_file("unclosed", "calls: [\n  { pattern: 'cmd:x'\n");
    let text = stdout(&wasmeca(&["test", &spec.display().to_string()], &repo()));
    assert!(text.contains("does not parse: line 3, column 1:"), "{text}");
}

#[test]
fn check_runs_the_spec_beside_the_plugin() {
    // The seeds' specs sit in plugins/NAME/, their builds in target/plugins/.../release/.
    let out = wasmeca(
        &["check", &plugin("salute_v2").display().to_string()],
        &repo(),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("plugins/salute-v2/salute-v2.spec.jsonic  (salute@1.0.0, salute@2.0.0)"),
        "{text}"
    );
    assert!(
        text.contains("  PASS: 4 passed, 0 failed, 4 calls in"),
        "{text}"
    );
}
