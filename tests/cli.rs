//! The `wasmeca` binary as a user runs it: `act`, `inspect`, `serve` and its errors.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmeca_tests::plugin;

fn wasmeca(args: &[&str]) -> Output {
    wasmeca_tests::wasmeca_command!()
        .args(args)
        .output()
        .expect("wasmeca runs")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn act_prints_the_answer() {
    let out = wasmeca(&["act", &path(plugin("salute")), "cmd:salute,name:World"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["message"], "Hello World!");

    let out = wasmeca(&[
        "act",
        &path(plugin("math")),
        "role:math,cmd:sum,left:1,right:2",
    ]);
    assert_eq!(stdout_json(&out), serde_json::json!({"answer": 3}));

    let out = wasmeca(&[
        "act",
        &path(plugin("user")),
        r#"{"module":"user","if":"load","id":3}"#,
    ]);
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({"id": 3, "name": "丙"})
    );
}

/// `--perf-map` names the plugin's compiled functions where `perf` looks for them, so a plugin
/// author can profile their own code (from the compile cache too).
#[test]
fn perf_map_names_the_plugins_functions_for_perf() {
    for _ in 0..2 {
        let child = wasmeca_tests::wasmeca_command!()
            .args(["act", "--perf-map", &path(plugin("salute")), "cmd:salute"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmeca runs");
        let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
        let out = child.wait_with_output().expect("wasmeca ends");
        // wasmtime's fixed place for the map: removed before anything is asserted.
        let text = std::fs::read_to_string(&map).unwrap_or_default();
        let _ = std::fs::remove_file(&map);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.lines().any(|l| l.contains("wasm[0]::function[")),
            "{} names no plugin function:\n{text}",
            map.display()
        );
    }
}

#[test]
fn act_accepts_several_plugins_and_folders() {
    let out = wasmeca(&[
        "act",
        &path(plugin("salute")),
        &path(plugin("account")),
        "cmd:login,username:asd,pass:123",
    ]);
    assert_eq!(stdout_json(&out)["code"], 1000);
    // A folder loads every plugin in it (here salute 1 and 2: no pin picks 2.0.0).
    let dir = std::env::temp_dir().join(format!("wasmeca-cli-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["salute", "salute_v2"] {
        std::fs::copy(plugin(name), dir.join(format!("{name}.wasm"))).expect("copy");
    }
    let out = wasmeca(&["act", &path(dir.clone()), "cmd:salute,name:A"]);
    assert_eq!(stdout_json(&out)["version"], "2.0.0");
    let out = wasmeca(&["act", &path(dir.clone()), "cmd:salute,$version:'1'"]);
    assert_eq!(stdout_json(&out)["message"], "Hello World!");

    // Without --watch, one bad file in a folder stops the load and says which and why.
    std::fs::write(dir.join("broken.wasm"), b"not wasm").expect("write");
    let out = wasmeca(&["act", &path(dir.clone()), "cmd:salute"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.wasm"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn act_failure_prints_the_seneca_error_and_exits_non_zero() {
    let out = wasmeca(&["act", &path(plugin("salute")), "cmd:nothing"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stdout_json(&out);
    assert_eq!(e["code"], "act_not_found");
    assert_eq!(e["seneca"], true);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("No matching action pattern")
    );
}

#[test]
fn errors_name_the_file_and_the_place() {
    let out = wasmeca(&["act", "/nonexistent/plugin.wasm", "cmd:x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugin path /nonexistent/plugin.wasm does not exist"),
        "{err}"
    );

    let out = wasmeca(&["act", &path(plugin("salute")), "cmd:salute,,x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not parse at column 12"), "{err}");

    let dir = std::env::temp_dir().join(format!("wasmeca-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("wasmeca.toml");
    std::fs::write(&config, "[[plugin]]\npath = \"x.wasm\"\nistances = 2\n").expect("write");
    let out = wasmeca(&["serve", &path(config.clone())]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wasmeca.toml")
            && err.contains("unknown field `istances`")
            && err.contains("line 3"),
        "{err}"
    );

    let not_component = dir.join("core.wasm");
    std::fs::write(&not_component, b"\0asm\x01\0\0\0").expect("write");
    let out = wasmeca(&["inspect", &path(not_component)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("core.wasm: a core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn inspect_shows_identity_patterns_and_routes() {
    let out = wasmeca(&["inspect", &path(plugin("user"))]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("user@1.0.0"), "{text}");
    assert!(text.contains("[1] module:user,if:load"), "{text}");
    assert!(text.contains("\"prefix\":\"/user\""), "{text}");

    let out = wasmeca(&["inspect", "--json", &path(plugin("math"))]);
    let json = stdout_json(&out);
    assert_eq!(json["name"], "math");
    assert_eq!(
        json["patterns"],
        serde_json::json!(["cmd:sum,role:math", "cmd:product,role:math"])
    );
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let mut child = wasmeca_tests::wasmeca_command!()
        .args([
            "serve",
            "--rest",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            &path(plugin("salute")),
            &path(plugin("math")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    // Wait for the "serving" line, then signal.
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("serving") && l.contains("math@1.0.0"))
    {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve logs");
        seen.push(line);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let code = child.wait().expect("exits");
    assert!(code.success(), "exit status {code}");
    let rest: Vec<String> = rx.iter().collect();
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
}

#[test]
fn act_without_plugins_asks_the_running_host() {
    let port = wasmeca_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _serving = wasmeca_tests::Process(
        wasmeca_tests::wasmeca_command!()
            .args(["serve", "--rest", "off", "--http", &addr, "salute.wasm"])
            .current_dir(plugin("salute").parent().expect("plugin folder"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let url = format!("http://{addr}/act");
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let out = wasmeca(&["act", "--url", &url, "cmd:salute,name:Remote"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert_eq!(stdout_json(&answer)["message"], "Hello Remote!");
    // A file given relative to the host's folder is listed by its full path, as the watcher
    // would name it.
    let listed = wasmeca(&["plugins", "--json", "--url", &url]);
    let listed = stdout_json(&listed);
    assert_eq!(
        listed["plugins"][0]["file"],
        path(plugin("salute").canonicalize().expect("canonical")),
        "{listed}"
    );
    // A machine with no CAs at all (a bare container) still speaks plain http.
    let no_cas = std::env::temp_dir().join(format!("wasmeca-no-cas-{port}"));
    std::fs::create_dir_all(&no_cas).expect("an empty folder");
    for args in [
        &["plugins", "--json", "--url", &url][..],
        &["act", "--url", &url, "cmd:salute,name:Bare"],
    ] {
        let out = wasmeca_tests::wasmeca_command!()
            .args(args)
            .env("SSL_CERT_FILE", "/dev/null")
            .env("SSL_CERT_DIR", &no_cas)
            .output()
            .expect("wasmeca runs");
        assert!(
            out.status.success(),
            "{args:?} with no CAs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir(&no_cas);

    let nobody = format!("http://127.0.0.1:{}/act", wasmeca_tests::free_port());
    let out = wasmeca(&["act", "--url", &nobody, "cmd:salute"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("is `wasmeca serve` running there?"),
        "{err}"
    );
}

#[test]
fn the_demo_builds_and_answers_as_the_readme_says() {
    // `wasmeca build` runs the demo's [build] command in the repository, as `serve --build` does.
    let out = wasmeca_tests::wasmeca_command!()
        .arg("build")
        .current_dir(wasmeca_tests::repo())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("wasmeca runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = wasmeca_tests::repo().join("wasmeca.toml");
    let demo = path(demo);
    let cases = [
        (
            "cmd:salute,name:World",
            r#"{"id":1,"message":"Hello World!"}"#,
        ),
        ("role:math,cmd:sum,left:1,right:2", r#"{"answer":3}"#),
        ("cmd:login,username:asd,pass:123", r#"{"code":1000}"#),
        ("module:user,if:load,id:2", r#"{"id":2,"name":"乙"}"#),
    ];
    for (msg, expected) in cases {
        let out = wasmeca(&["act", &demo, msg]);
        assert!(
            out.status.success(),
            "{msg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected: Value = serde_json::from_str(expected).expect("expected JSON");
        assert_eq!(stdout_json(&out), expected, "{msg}");
    }
}

/// Starts `wasmeca serve` on a free Seneca HTTP port with `extra` arguments and the chaos
/// plugin, acts `chaos:log` through it, stops it, and returns its stderr lines.
fn serve_and_log(extra: &[&str]) -> Vec<String> {
    let port = wasmeca_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--rest", "off", "--http", &addr];
    args.extend_from_slice(extra);
    let chaos = path(plugin("chaos"));
    args.push(&chaos);
    let child = wasmeca_tests::wasmeca_command!()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let acted = loop {
        let out = wasmeca(&[
            "act",
            "--url",
            &format!("http://{addr}/act"),
            "chaos:log,text:hello",
        ]);
        if out.status.success() {
            break out;
        }
        assert!(Instant::now() < deadline, "serve did not answer");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stdout_json(&acted)["logged"], true);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    let out = child.wait_with_output().expect("exits");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Regression (fault run): `serve` wrote ANSI colour codes into a log file or a pipe. Colour
/// only on a terminal, and `--log-format json` gives one JSON object per line with the plugin
/// and the transaction as fields.
#[test]
fn logs_are_plain_in_a_pipe_and_json_on_request() {
    let text = serve_and_log(&[]);
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in a pipe: {text:?}"
    );
    assert!(
        text.iter().any(|l| l.contains("chaos says hello")),
        "{text:?}"
    );
    let json = serve_and_log(&["--log-format", "json"]);
    let lines: Vec<Value> = json
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}` is not JSON: {e}")))
        .collect();
    let said = lines
        .iter()
        .find(|l| l["message"] == "chaos says hello")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(said["plugin"], "chaos@1.0.0", "{said}");
    assert_eq!(said["tx"].as_str().map(str::len), Some(12), "{said}");
    assert_eq!(said["level"], "INFO");
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// `wasmeca serve` in `project` (its `wasmeca.toml`, REST on `rest`), with `home` as `$HOME`
/// and no data setting of any kind, as a user starts it; waits until `GET /user/2` answers.
fn serve_project(project: &std::path::Path, home: &std::path::Path, rest: &str) -> Child {
    let child = wasmeca_tests::wasmeca_command!()
        .arg("serve")
        .current_dir(project)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("WASMECA_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http(rest, "GET", "/user/2", ""), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the project's host did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// SIGTERM, as Ctrl-C in the README: the host drains and exits 0.
fn stop(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(child.wait().expect("exits").success());
}

/// Issue 25: the README's Quickstart (serve the demo, `PUT /user/2 {"name":"Bob"}`, stop)
/// changed what the test suite's hosts saw, because every host on the machine shared one SQLite
/// file under `~/.local/share`. A project's default store is now `.wasmeca/data.sqlite` beside
/// its `wasmeca.toml`: the Quickstart's edit stays in that project (and survives its restart),
/// nothing is written under `$HOME`, and another project, or a test host, starts from the seeds.
#[test]
fn the_quickstart_keeps_its_data_in_its_project_and_the_suite_never_meets_it() {
    let scratch = std::env::temp_dir().join(format!(
        "wasmeca-quickstart-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let (demo, other, home) = (
        scratch.join("demo"),
        scratch.join("other"),
        scratch.join("home"),
    );
    for dir in [&demo, &other, &home] {
        std::fs::create_dir_all(dir).expect("a folder");
    }
    let project = |dir: &std::path::Path| {
        let rest = format!("127.0.0.1:{}", wasmeca_tests::free_port());
        let toml = format!(
            "listen = []\n[rest]\nlisten = \"{rest}\"\n[[plugin]]\npath = {:?}\n",
            plugin("user")
        );
        std::fs::write(dir.join("wasmeca.toml"), toml).expect("write the config");
        rest
    };
    let demo_rest = project(&demo);
    let mut host = serve_project(&demo, &home, &demo_rest);
    let (status, body) = http(&demo_rest, "PUT", "/user/2", r#"{"name":"Bob"}"#).expect("PUT");
    assert_eq!((status, body.as_str()), (200, r#"{"id":2,"name":"Bob"}"#));
    stop(&mut host);
    assert!(
        demo.join(".wasmeca/data.sqlite").is_file(),
        "the project's store is in the project"
    );
    let under_home: Vec<_> = std::fs::read_dir(&home).expect("home").collect();
    assert!(under_home.is_empty(), "written under $HOME: {under_home:?}");

    // Another project on the same machine, same $HOME: the seeds, not Bob.
    let other_rest = project(&other);
    let mut host = serve_project(&other, &home, &other_rest);
    let (status, body) = http(&other_rest, "GET", "/user/2", "").expect("GET");
    assert_eq!((status, body.as_str()), (200, r#"{"id":2,"name":"乙"}"#));
    stop(&mut host);

    // A test host as the suite starts one: the seeds too.
    let out = wasmeca(&["act", &path(plugin("user")), "module:user,if:load,id:2"]);
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({"id": 2, "name": "乙"})
    );

    // The demo project again: its edit is still there.
    let mut host = serve_project(&demo, &home, &demo_rest);
    let (status, body) = http(&demo_rest, "GET", "/user/2", "").expect("GET");
    assert_eq!((status, body.as_str()), (200, r#"{"id":2,"name":"Bob"}"#));
    stop(&mut host);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `wasmeca compile` fills the compile cache with one artifact per plugin (named by the file's
/// hash and the engine), which a later host loads instead of compiling: the cache holds the same
/// artifacts after acting as before.
#[test]
fn compile_fills_the_cache_a_later_host_loads() {
    let cache = std::env::temp_dir().join(format!("wasmeca-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let artifacts = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let (salute, math) = (path(plugin("salute")), path(plugin("math")));
    let out = wasmeca_tests::wasmeca_command!()
        .env("WASMECA_CACHE_DIR", &cache)
        .args(["compile", &salute, &math])
        .output()
        .expect("wasmeca runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("compiled {salute} (compiled into the cache in ")),
        "{said}"
    );
    let compiled = artifacts();
    assert_eq!(compiled.len(), 2, "{compiled:?}");
    assert!(
        compiled.iter().all(|n| n.ends_with(".cwasm")),
        "{compiled:?}"
    );
    let out = wasmeca_tests::wasmeca_command!()
        .env("WASMECA_CACHE_DIR", &cache)
        .args(["act", &salute, &math, "role:math,cmd:sum,left:1,right:2"])
        .output()
        .expect("wasmeca runs");
    assert_eq!(stdout_json(&out), serde_json::json!({"answer": 3}));
    assert_eq!(artifacts(), compiled, "the host compiled again");

    let out = wasmeca(&["compile", "--no-cache", &salute]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("there is no compile cache to compile into"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&cache);
}

/// Quick start through the binary, as a user runs it: `wasmeca serve` on an empty compile cache
/// answers from Winch's code, `/plugins` says so, then moves the plugin onto Cranelift's code,
/// compiled by the binary in a process of its own and left in the cache (`/plugins` says
/// `optimised`, `/metrics` counts the move, the host never compiled it itself), and a stop
/// during none of it leaves the host to exit cleanly.
#[test]
fn serve_answers_on_an_empty_cache_from_the_baseline_code_and_optimises_behind() {
    let cache = std::env::temp_dir().join(format!("wasmeca-quick-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let log = std::env::temp_dir().join(format!("wasmeca-quick-serve-{}.log", std::process::id()));
    let (rest, act) = (
        format!("127.0.0.1:{}", wasmeca_tests::free_port()),
        format!("127.0.0.1:{}", wasmeca_tests::free_port()),
    );
    // Killed on drop, should an assertion fail before it is stopped.
    let mut host = wasmeca_tests::Process(
        wasmeca_tests::wasmeca_command!()
            .env_remove("WASMECA_NO_QUICK_START")
            .env("WASMECA_CACHE_DIR", &cache)
            .args([
                "serve",
                "--rest",
                &rest,
                "--http",
                &act,
                &path(plugin("salute")),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("serve starts"),
    );
    let code = || -> Option<String> {
        let (status, body) = http(&rest, "GET", "/plugins", "").ok()?;
        let plugins: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        let salute = plugins["plugins"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "salute")?
            .clone();
        salute["code"].as_str().map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(code) = code() {
            break code;
        }
        assert!(Instant::now() < deadline, "the host did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    // The REST listener may answer a moment before the transport's is bound.
    let (status, body) = loop {
        match http(&act, "POST", "/act", r#"{"cmd":"salute","name":"Quick"}"#) {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "/act answers: {e:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello Quick!"), "{body}");
    while code().as_deref() != Some("optimised") {
        assert!(
            Instant::now() < deadline,
            "never moved onto the optimised code"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, metrics) = http(&rest, "GET", "/metrics", "").expect("/metrics answers");
    assert!(
        metrics.contains(
            "wasmeca_instance_replacements_total{plugin=\"salute@1.0.0\",reason=\"optimised\"} 1"
        ),
        "{metrics}"
    );
    let artifacts = std::fs::read_dir(&cache).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    });
    assert_eq!(artifacts, 1, "Cranelift's code is in the cache");
    // The first answer came from Winch's code, unless the optimised code was in place before
    // `/plugins` first answered (it takes the compile and 100 ms of quiet: never, in practice).
    assert_eq!(first, "baseline");
    stop(&mut host.0);
    let logged = std::fs::read_to_string(&log).expect("the host's log");
    assert!(logged.contains("moved onto the optimised code"), "{logged}");
    assert!(
        !logged.contains("compiling in this process"),
        "the compiler process did the compile: {logged}"
    );
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_file(&log);
}

/// `wasmeca compile-behind`, as a serving host runs it: the component on stdin, its compiled
/// code written to `--out`; a component that does not compile is exit 1 with the compiler's
/// words, and an `--out` it cannot write is exit 2 (the host then compiles itself).
#[test]
fn compile_behind_writes_the_code_and_tells_a_bad_component_from_a_bad_place() {
    let dir = std::env::temp_dir().join(format!("wasmeca-compile-behind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the folder");
    let run = |out: &std::path::Path, stdin: &[u8], baseline: bool| -> Output {
        let mut command = wasmeca_tests::wasmeca_command!();
        command.arg("compile-behind");
        if baseline {
            command.arg("--baseline");
        }
        let mut child = command
            .arg(format!("--out={}", out.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("compile-behind starts");
        std::io::Write::write_all(&mut child.stdin.take().expect("its stdin"), stdin)
            .expect("the component written");
        child.wait_with_output().expect("it ends")
    };
    let component = std::fs::read(plugin("salute")).expect("the salute plugin");

    for baseline in [true, false] {
        let out = dir.join(format!("salute-{baseline}.cwasm"));
        let done = run(&out, &component, baseline);
        assert_eq!(done.status.code(), Some(0), "{done:?}");
        assert!(done.stderr.is_empty(), "nothing said: {done:?}");
        let written = std::fs::read(&out).expect("the compiled code");
        assert!(written.starts_with(b"\x7fELF"), "wasmtime's compiled code");
    }

    let bad = run(&dir.join("bad.cwasm"), b"\0asm\x0d\0\x01\0garbage", false);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.starts_with("error: "), "{said}");
    assert!(!dir.join("bad.cwasm").exists());

    let nowhere = dir.join("no-such-folder").join("salute.cwasm");
    let unwritable = run(&nowhere, &component, false);
    assert_eq!(unwritable.status.code(), Some(2), "{unwritable:?}");
    let said = String::from_utf8_lossy(&unwritable.stderr);
    assert!(said.contains("cannot write"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}
