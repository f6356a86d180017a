//! Regressions from the independent fault run, against a real `wasmeca serve` process: a
//! plugin looping on every instance does not starve another plugin, SIGTERM ends within the
//! drain timeout and hands the AMQP command in flight back to the broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmeca_tests::{Process, free_port, plugin, wasmeca_command};

/// A folder in the temp dir for one test's config, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wasmeca-hardening-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// Writes `wasmeca.toml` here and returns its path.
    fn config(&self, toml: &str) -> PathBuf {
        let path = self.0.join("wasmeca.toml");
        std::fs::write(&path, toml).expect("write the config");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wasmeca serve CONFIG`, waiting until its Seneca HTTP listener on `port` answers.
fn serve(config: &PathBuf, port: u16) -> Process {
    let child = wasmeca_command!()
        .args(["serve"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("wasmeca serve starts");
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(port, &json!({"role": "seneca", "cmd": "ping"})).is_err() {
        assert!(Instant::now() < deadline, "the host did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

/// One `POST /act` on a fresh connection: the status and the JSON body.
fn post(port: u16, msg: &Value) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = msg.to_string();
    write!(
        stream,
        "POST /act HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// How long `n` salutes take, one after the other.
fn salutes(port: u16, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let (status, body) = post(port, &json!({"cmd": "salute", "name": i})).expect("salute");
        assert_eq!((status, body["message"].is_string()), (200, true), "{body}");
    }
    started.elapsed()
}

/// Regression (fault run): with 8 instances of a plugin looping until their deadline, an
/// unrelated plugin's p99 went from 3.7 ms to 307 ms and its throughput from 4,659/s to 20/s.
/// Long guest calls now move off the async workers, so the listener keeps answering the other
/// plugin promptly. (The p99 target is measured by `benches/fairness.rs`; here, what a loaded
/// test machine cannot blur: 100 salutes during the loops take about as long as idle, where
/// starved they took seconds, and they all finish while every loop still runs.)
#[test]
fn a_plugin_looping_on_every_instance_does_not_starve_another() {
    let scratch = Scratch::new();
    let port = free_port();
    let config = scratch.config(&format!(
        "[rest]\nlisten = \"off\"\n[[listen]]\ntype = \"http\"\nport = {port}\n\
         [[plugin]]\npath = {:?}\ninstances = 8\n[[plugin]]\npath = {:?}\n",
        plugin("chaos"),
        plugin("salute")
    ));
    let _host = serve(&config, port);
    let idle = salutes(port, 100);
    let loops: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                post(port, &json!({"chaos": "loop", "timeout$": 6_000})).expect("loop answers")
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let storm = salutes(port, 100);
    let running = loops.iter().all(|t| !t.is_finished());
    for answer in loops {
        let (status, body) = answer.join().expect("loop thread");
        assert_eq!(
            (status, body["code"].as_str()),
            (500, Some("action_timeout")),
            "{body}"
        );
    }
    eprintln!("100 salutes: {idle:?} idle, {storm:?} while chaos loops");
    assert!(
        running,
        "the salutes ({storm:?}) waited for the loops' deadline"
    );
    // Within 5× of idle, with a floor for this debug build's own noise.
    let allowed = (idle * 5).max(Duration::from_secs(2));
    assert!(
        storm <= allowed,
        "100 salutes took {storm:?} during the loops, {idle:?} idle"
    );
}

/// Whether the server closed `stream` within `wait` (a read returns 0 bytes or fails).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
        if started.elapsed() > wait {
            return false;
        }
    }
}

/// Regression (fault run): 200 slowloris connections at 1 byte/s and 20,000 idle ones stayed
/// open indefinitely. Headers must arrive within `[http] header_timeout_ms`, an idle kept-alive
/// connection is closed after `idle_timeout_ms`, and connections over `max_connections` are
/// closed at once.
#[test]
fn slow_idle_and_surplus_connections_are_closed() {
    let scratch = Scratch::new();
    let host = |timeout_ms: u64| {
        let port = free_port();
        let config = scratch.config(&format!(
            "[rest]\nlisten = \"off\"\n[http]\nheader_timeout_ms = {timeout_ms}\nidle_timeout_ms = {timeout_ms}\n\
             max_connections = 20\n[[listen]]\ntype = \"http\"\nport = {port}\n[[plugin]]\npath = {:?}\n",
            plugin("salute")
        ));
        (serve(&config, port), port)
    };
    let (_host, port) = host(600);

    // Slowloris: a header byte every 100 ms never finishes; the header timeout ends it.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    let mut closed = false;
    for byte in b"POST /act HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(2)),
        "the slowloris connection was still open after {:?}",
        started.elapsed()
    );

    // Idle keep-alive: one request, then silence; the idle timeout closes it. (The clock starts
    // before the request, so a test thread held up meanwhile cannot make it look early.)
    let quiet = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let body = r#"{"cmd":"salute"}"#;
    write!(
        idle,
        "POST /act HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut buf = [0u8; 4096];
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = idle.read(&mut buf).expect("a response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)),
        "the idle connection was still open"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );

    // The connection limit: 20 open connections; the 21st is closed at once. (On a host whose
    // timeouts are long, so that only the limit can close anything here.)
    let (_host, port) = host(60_000);
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut surplus = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    assert!(
        closed_within(&mut surplus, Duration::from_secs(5)),
        "a connection over the limit stayed open"
    );
    assert!(
        !closed_within(&mut held[0], Duration::from_millis(100)),
        "a connection within the limit was closed early"
    );
    held.clear();
    // Once they are gone (closed by the client), the listener serves again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while post(port, &json!({"cmd": "salute"})).map(|(s, _)| s).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the listener did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything the server answered on `stream` until it closed it (or `wait` passed), and how
/// long that took.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, Duration) {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// Regression (fault run, hardening issue item 1): complete headers announcing a 1 MB body, 10
/// bytes of it, then silence, held 50 connections open for 70 s on `/act` and REST alike (the
/// connection counted as busy from its headers on). A body has its own deadline: 408 with the
/// listener's error JSON, then the connection closes. A body announced over the limit is 413
/// JSON at once; a kept-alive connection waits for its next request by the idle timeout, not
/// the header timeout (item 3).
#[test]
fn slow_bodies_get_408_and_kept_alive_connections_wait_the_idle_timeout() {
    let scratch = Scratch::new();
    let (http, rest) = (free_port(), free_port());
    let config = scratch.config(&format!(
        "[rest]\nlisten = \"127.0.0.1:{rest}\"\n[http]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1500\n\
         idle_timeout_ms = 5000\n[[listen]]\ntype = \"http\"\nport = {http}\n[[plugin]]\npath = {:?}\n",
        plugin("user")
    ));
    let _host = serve(&config, http);

    // Slow POSTs, several at once on both listeners: each answered 408 once its body is late.
    let started = Instant::now();
    let mut slow: Vec<(u16, &str, TcpStream)> = [(http, "/act"), (rest, "/user")]
        .iter()
        .flat_map(|&(port, path)| (0..5).map(move |_| (port, path)))
        .map(|(port, path)| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            write!(
                s,
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: 1000000\r\n\r\n{{\"name\":\"a"
            )
            .expect("write the headers and 10 bytes");
            (port, path, s)
        })
        .collect();
    for (port, path, stream) in &mut slow {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(20));
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{path} on {port}: {answer:?}"
        );
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let error: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert_eq!(error["code"], "body_timeout", "{path}: {answer}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "408 before the body timeout: {took:?}"
    );
    // The listeners still answer.
    assert_eq!(
        post(http, &json!({"role": "seneca", "cmd": "ping"}))
            .unwrap()
            .0,
        200
    );

    // A body announced over the limit: 413 as JSON, without reading it.
    let mut big = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    write!(
        big,
        "POST /act HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999\r\n\r\n{{"
    )
    .expect("write");
    let (answer, took) = read_until_closed(&mut big, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("\"code\":\"body_too_large\""), "{answer}");
    assert!(took < Duration::from_secs(5), "413 took {took:?}");

    // Bad JSON is the caller's fault: 400, not Node's 500.
    let (status, error) = {
        let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
        write!(
            s,
            "POST /act HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{{nope"
        )
        .expect("write");
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10));
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (answer.get(9..12).unwrap_or("").to_owned(), body)
    };
    assert_eq!(status, "400", "{error}");
    assert!(error.contains("invalid_json"), "{error}");

    // Kept alive after a request: open past the header timeout, closed by the idle timeout.
    let mut kept = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    let body = r#"{"role":"seneca","cmd":"ping"}"#;
    write!(
        kept,
        "POST /act HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).expect("a response");
    let answered = Instant::now();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        !closed_within(&mut kept, Duration::from_millis(2500)),
        "a kept-alive connection was closed by the 1 s header timeout"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(10)),
        "the idle connection was still open"
    );
    assert!(
        answered.elapsed() >= Duration::from_millis(4500),
        "closed before the idle timeout: {:?}",
        answered.elapsed()
    );
}

/// Regression (fault run, item 4): a 15 MiB command left its plugin instance tens of MB
/// larger for good, since WebAssembly memory never shrinks. An instance that one call grew
/// past `replace_after_growth_mib` is now replaced once it has answered: the next call meets a
/// fresh instance (its count starts again), the listener has the allocator give back what the
/// request freed, and the host holds within a few MB of before. (The bound is 8 MiB here: the
/// Rust SDK reads a message in place, so a 12 MiB message grows the instance by its text alone,
/// under the default 16 MiB.)
#[test]
fn an_instance_grown_by_one_large_message_is_replaced_and_its_memory_given_back() {
    let scratch = Scratch::new();
    let (port, rest) = (free_port(), free_port());
    let config = scratch.config(&format!(
        "[rest]\nlisten = \"127.0.0.1:{rest}\"\n[http]\nbody_limit = 33554432\n\
         [limits]\nmemory_mib = 128\nreplace_after_growth_mib = 8\n[[listen]]\ntype = \"http\"\nport = {port}\n\
         [[plugin]]\npath = {:?}\n",
        plugin("chaos"),
    ));
    let host = serve(&config, port);
    let pid = host.0.id();
    let ok = |msg: Value| {
        let (status, body) = post(port, &msg).expect("chaos:ok answers");
        assert_eq!((status, body["ok"].as_bool()), (200, Some(true)), "{body}");
        body["calls"].as_u64().expect("a count")
    };
    for _ in 0..20 {
        ok(json!({"chaos": "ok"}));
    }
    let before = wasmeca_tests::held(pid);
    let calls = ok(json!({"chaos": "ok", "pad": "x".repeat(12 << 20)}));
    assert_eq!(
        calls, 21,
        "the large message reached the instance that kept count"
    );
    // The replacement is made in the background; the next call waits for it.
    assert_eq!(
        ok(json!({"chaos": "ok"})),
        1,
        "the grown instance was replaced"
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = wasmeca_tests::held(pid);
    eprintln!(
        "host held {} MB before a 12 MiB message, {} MB after",
        before >> 20,
        after >> 20
    );
    // Kept before the fix: the grown instance (~30 MB here) and what the request's workers
    // freed but their allocator kept (~40 MB, on whichever worker the call had moved to);
    // now within a few MB (the bound is the AMQP test's).
    assert!(
        after < before + (20 << 20),
        "a 12 MiB message left the host holding {} MB, from {} MB",
        after >> 20,
        before >> 20
    );
    // A small call grows nothing: the instance stays, its count goes on.
    assert_eq!(ok(json!({"chaos": "ok"})), 2);
    // And /metrics counts the replacement with its reason.
    let mut stream = TcpStream::connect(("127.0.0.1", rest)).expect("REST gateway");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("ask /metrics");
    let mut metrics = String::new();
    stream.read_to_string(&mut metrics).expect("read /metrics");
    assert!(
        metrics.contains(
            r#"wasmeca_instance_replacements_total{plugin="chaos@1.0.0",reason="growth"} 1"#
        ),
        "{metrics}"
    );
}
