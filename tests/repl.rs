//! `wasmeca repl` against a running `wasmeca serve` (salute 1.0.0 and 2.0.0, math): scripted
//! through stdin (answers, `.patterns`, a `$version` pin, errors, `.trace`), and typed at a
//! pseudo-terminal (the prompt, tab completion, history).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca_tests::{Process, free_port, plugin};

/// A `wasmeca serve` of salute, salute_v2 and math on a free Seneca HTTP port, answering.
struct Host {
    /// The serving process, killed on drop.
    _process: Process,
    /// Its `/act` URL.
    url: String,
}

fn serve() -> Host {
    let addr = format!("127.0.0.1:{}", free_port());
    let path = |name: &str| plugin(name).display().to_string();
    let process = Process(
        wasmeca_tests::wasmeca_command!()
            .args(["serve", "--rest", "off", "--http", &addr])
            .args([path("salute"), path("salute_v2"), path("math")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let url = format!("http://{addr}/act");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = wasmeca_tests::wasmeca_command!()
            .args(["act", "--url", &url, "role:seneca,cmd:ping"])
            .output()
            .expect("wasmeca act runs");
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    Host {
        _process: process,
        url,
    }
}

/// Runs `wasmeca repl ARGS` with `script` on stdin.
fn repl(args: &[&str], script: &str) -> Output {
    let mut child = wasmeca_tests::wasmeca_command!()
        .arg("repl")
        .args(args)
        .env("WASMECA_HISTORY", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasmeca repl runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("the script is written");
    child.wait_with_output().expect("wasmeca repl ends")
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON answer ({e}): {line}"))
}

fn explain(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_script_gets_one_answer_per_message_and_the_listings_it_asks_for() {
    let host = serve();
    let out = repl(
        &["--url", &host.url],
        "role:math,cmd:sum,left:1,right:2\n\
         \n\
         # a comment\n\
         cmd:salute,name:World\n\
         .version 1\n\
         cmd:salute,name:World\n\
         cmd:salute,name:Again,$version:\"2\"\n\
         .version\n\
         .patterns role:math\n\
         .patterns cmd:salute\n\
         .plugins\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let lines = lines(&out);
    assert_eq!(
        json_line(&lines[0]),
        json!({"answer": 3}),
        "{}",
        explain(&out)
    );
    // The highest version answers, until `.version 1` pins 1.0.0 (a message's own `$version`
    // still wins); each version's instance counts its own greetings.
    assert_eq!(
        json_line(&lines[1]),
        json!({"id": 1, "message": "Greetings, World, from salute 2!", "version": "2.0.0"})
    );
    assert_eq!(
        json_line(&lines[2]),
        json!({"id": 1, "message": "Hello World!"})
    );
    assert_eq!(
        json_line(&lines[3])["message"],
        "Greetings, Again, from salute 2!"
    );
    // In precedence order (exact values sorted under the same key), who serves each, the
    // answering version first.
    assert_eq!(
        lines[4..7],
        [
            "cmd:product,role:math  math@1.0.0",
            "cmd:sum,role:math      math@1.0.0",
            "cmd:salute  salute@2.0.0 salute@1.0.0",
        ],
        "{}",
        explain(&out)
    );
    let plugins = &lines[7..];
    for (key, file, count) in [
        ("salute@1.0.0", "salute.wasm", "1 pattern"),
        ("salute@2.0.0", "salute_v2.wasm", "1 pattern"),
        ("math@1.0.0", "math.wasm", "2 patterns"),
    ] {
        assert!(
            plugins.iter().any(|l| l.starts_with(key)
                && l.contains(&format!("/{file}  "))
                && l.ends_with(count)),
            "{key} in {plugins:#?}"
        );
    }
    assert!(
        plugins.iter().any(|l| l.contains("(native)")),
        "the host's own actions are listed too: {plugins:#?}"
    );
    assert!(
        !plugins[..3].iter().any(|l| l.contains("(native)")),
        "after the plugins: {plugins:#?}"
    );
}

#[test]
fn errors_are_senecas_json_on_stdout_and_fail_the_script() {
    let host = serve();
    let out = repl(
        &["--url", &host.url],
        "cmd:nope\n\
         role:math,cmd:sum,left:2,right:2\n\
         cmd:salute,$version:\"7\"\n\
         {\"cmd\":\n\
         .version banana\n\
         .nope\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 4, "{}", explain(&out));
    let not_found = json_line(&lines[0]);
    assert_eq!(not_found["code"], "act_not_found", "{not_found}");
    assert_eq!(
        json_line(&lines[1]),
        json!({"answer": 4}),
        "the script goes on"
    );
    assert_eq!(json_line(&lines[2])["code"], "version_not_found");
    assert_eq!(json_line(&lines[3])["code"], "invalid_message");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("banana") && stderr.contains("no command .nope"),
        "{stderr}"
    );
}

#[test]
fn trace_names_the_plugin_version_and_the_host_that_answered() {
    let host = serve();
    let out = repl(
        &["--url", &host.url],
        ".trace\n\
         cmd:salute,name:T\n\
         .version 1\n\
         cmd:salute,name:T\n\
         cmd:nope\n\
         .trace\n\
         role:math,cmd:product,left:3,right:4\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let lines = lines(&out);
    let v2 = json_line(&lines[0]);
    assert_eq!(v2["out"]["version"], "2.0.0", "{v2}");
    assert_eq!(v2["meta"]["plugin"], "salute@2.0.0", "{v2}");
    assert_eq!(v2["meta"]["via"], host.url.as_str());
    assert!(
        v2["meta"]["host"]
            .as_str()
            .is_some_and(|h| h.ends_with("/wasmeca")),
        "seneca-accept names the answering instance: {v2}"
    );
    assert!(v2["meta"]["ms"].as_f64().is_some(), "{v2}");
    let v1 = json_line(&lines[1]);
    assert_eq!(v1["out"]["message"], "Hello T!");
    assert_eq!(v1["meta"]["plugin"], "salute@1.0.0", "{v1}");
    let nope = json_line(&lines[2]);
    assert_eq!(nope["err"]["code"], "act_not_found", "{nope}");
    assert!(
        nope["meta"].get("plugin").is_none(),
        "no plugin answered: {nope}"
    );
    assert_eq!(
        json_line(&lines[3]),
        json!({"answer": 12}),
        "trace off again"
    );
}

#[test]
fn plugins_given_are_loaded_in_process_and_an_absent_host_is_exit_2() {
    let salute = plugin("salute").display().to_string();
    let out = repl(
        &[&salute],
        ".trace\ncmd:salute,name:Here\n.patterns cmd:sal*\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let lines = lines(&out);
    let here = json_line(&lines[0]);
    assert_eq!(here["out"], json!({"id": 1, "message": "Hello Here!"}));
    assert_eq!(here["meta"]["plugin"], "salute@1.0.0");
    assert_eq!(here["meta"]["via"], "in-process");
    assert_eq!(lines[1..], ["cmd:salute  salute@1.0.0"]);

    let nobody = format!("http://127.0.0.1:{}/act", free_port());
    let out = repl(&["--url", &nobody], "cmd:salute\nrole:math,cmd:sum\n");
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(out.stdout.is_empty(), "{}", explain(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains("is `wasmeca serve` running there?"),
        "{stderr}"
    );
}

/// Drives a program at a pseudo-terminal: waits for each `expect` text in what it writes,
/// then types the text that follows it; prints the transcript; exits non-zero on a timeout or
/// when the program fails.
const PTY: &str = r#"
import fcntl, os, pty, select, struct, subprocess, sys, termios, time
steps, argv = sys.argv[1].split("\x1f"), sys.argv[2:]
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
os.close(slave)
seen, at = b"", 0
def read(until):
    global seen
    while True:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
        elif until():
            return
for i in range(0, len(steps) - 1, 2):
    want, typed = steps[i].encode(), steps[i + 1].encode()
    end = time.time() + 60
    read(lambda: seen.find(want, at) >= 0 or time.time() > end)
    if seen.find(want, at) < 0:
        sys.stdout.write(seen.decode(errors="replace"))
        sys.exit("timed out waiting for %r" % want)
    at = seen.find(want, at) + len(want)
    for key in typed.split(b"\x1e"):
        os.write(master, key)
        time.sleep(0.3)
end = time.time() + 30
read(lambda: p.poll() is not None or time.time() > end)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(p.wait(timeout=10))
"#;

#[test]
fn at_a_terminal_it_prompts_completes_and_keeps_history() {
    let host = serve();
    let history: PathBuf =
        std::env::temp_dir().join(format!("wasmeca-repl-history-{}", std::process::id()));
    let _ = std::fs::remove_file(&history);
    // Expected text, then keys to type (split by \x1e, with a pause between): `cmd:su` + Tab
    // completes to `cmd:sum` (the only value of `cmd` beside `role:math` starting so), which
    // the answer proves; Ctrl-D leaves.
    let steps = [
        "wasmeca> ",
        "role:math,cmd:su\t\x1e,left:1,right:2\r",
        "\"answer\": 3",
        ".ver\t\x1e 1\r",
        "wasmeca $version:1> ",
        "\x04",
        "",
    ]
    .join("\x1f");
    let out = Command::new("python3")
        .args([
            "-c",
            PTY,
            &steps,
            env!("CARGO_BIN_EXE_wasmeca"),
            "repl",
            "--url",
            &host.url,
        ])
        .env("WASMECA_CACHE_DIR", wasmeca_tests::cache_dir())
        .env("WASMECA_HISTORY", &history)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", explain(&out), transcript);
    assert!(
        transcript.contains("ms)"),
        "the answer comes with its time: {transcript}"
    );
    let kept = std::fs::read_to_string(&history).expect("the history is saved");
    assert!(
        kept.contains("role:math,cmd:sum,left:1,right:2") && kept.contains(".version 1"),
        "{kept}"
    );
    let _ = std::fs::remove_file(&history);
}
