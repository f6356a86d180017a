//! HTTP load script (not a criterion bench): starts each contender as its own process and drives
//! it with N kept-alive connections, side by side in one run, then prints req/s, p50, p99, the
//! server's CPU per request (from /proc/PID/stat) and its resident memory. Each contender is
//! measured twice: unpinned, then with the server pinned to CPU 0 and this load generator to
//! CPU 1 (`taskset`), so its CPU per request is not blurred by the load's.
//!
//! Contenders: wasmeca's REST gateway (`GET /user/1` through the user plugin, a 404, `GET
//! /health`), a bare axum hello-world, Node's seneca-web + koa serving the same route, wasmeca's
//! Seneca HTTP listener (`POST /act` role:math,cmd:sum) and Node's seneca-transport listener.
//!
//! Run: `cargo bench -p wasmeca --bench http_load` (`LOAD_SECONDS`, default 10, sets the
//! measuring time per contender and mode; `ONLY=substring` runs the matching contenders;
//! `TRACES=1` turns wasmeca's telemetry on, every trace sampled (or as `OTEL_TRACES_SAMPLER`
//! and `_ARG` say), exporting to an OTLP sink this
//! binary runs as its own process, and prints how many spans it took and how many were dropped).
//! Figures go in BENCHMARKS.md.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request template; `{id}` is replaced per request.
struct Target {
    /// Name for the table.
    name: &'static str,
    /// Where.
    addr: SocketAddr,
    /// The raw HTTP/1.1 request, with `{id}` where a unique id goes.
    request: String,
    /// Connections.
    connections: usize,
    /// The status a good answer has.
    status: u16,
    /// The server's process id, for its CPU time and memory.
    pid: u32,
}

/// Pins every thread of `pid` to `cpus` (`0`, `1`, `0,1`).
fn pin(pid: u32, cpus: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset runs");
    assert!(status.success(), "taskset -c {cpus} {pid}");
}

/// Sends one request and reads one response (Content-Length bodies only); returns the status.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let header_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// What one measurement found.
struct Measured {
    /// Good answers per second.
    rps: f64,
    /// Median latency, µs.
    p50: u64,
    /// 99th percentile latency, µs.
    p99: u64,
    /// Answers with another status, and broken connections.
    errors: u64,
    /// The server's CPU per good answer, µs.
    cpu_us: f64,
}

/// Drives `target` for `warmup + measure`.
async fn drive(target: &Target, warmup: Duration, measure: Duration) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..target.connections {
        let (stop, measuring) = (stop.clone(), measuring.clone());
        let (addr, template, expected) = (target.addr, target.request.clone(), target.status);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(8192);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = template.replace("{id}", &format!("{c:06}{n:06}"));
                let started = Instant::now();
                match exchange(&mut stream, request.as_bytes(), &mut buf).await {
                    Ok(status) if status == expected => {
                        if measuring.load(Ordering::Relaxed) {
                            latencies.push(started.elapsed().as_micros() as u64);
                        }
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        stream = TcpStream::connect(addr).await.expect("reconnect");
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let (started, cpu_before) = (Instant::now(), wasmeca_tests::cpu_time(target.pid));
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::Relaxed);
    let (elapsed, cpu) = (
        started.elapsed(),
        wasmeca_tests::cpu_time(target.pid) - cpu_before,
    );
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (latencies, e) = t.await.expect("task");
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Measured {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
        cpu_us: cpu.as_secs_f64() * 1e6 / all.len().max(1) as f64,
    }
}

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(script: &str, port: u16) -> Server {
    let dir = wasmeca_tests::node_dir();
    let child = Command::new("node")
        .args([script, "--port", &port.to_string()])
        .current_dir(dir)
        .env("SENECA_QUIET", "true")
        .stdout(Stdio::null())
        .spawn()
        .expect("node runs");
    Server(child)
}

/// The bare axum hello-world this binary serves when started with `--hello PORT`.
async fn hello(port: u16) {
    let app = axum::Router::new().route(
        "/user/{id}",
        axum::routing::get(|| async { r#"{"id":1,"name":"hello"}"# }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

/// The OTLP/HTTP sink this binary serves when started with `--sink PORT`: decodes every export
/// (as a collector would) and answers `GET /count` with the spans taken.
async fn sink(port: u16) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use std::sync::atomic::AtomicU64;
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP");
                let taken: usize = request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                counted.fetch_add(taken as u64, Ordering::Relaxed);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        )
        .route(
            "/count",
            axum::routing::get(move || async move { spans.load(Ordering::Relaxed).to_string() }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

fn get(path: &str, port: u16) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n")
}

fn act(port: u16) -> String {
    let body = r#"{"role":"math","cmd":"sum","left":1,"right":2}"#;
    format!(
        "POST /act HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nseneca-id: {{id}}/loadtestload\r\n\
         seneca-kind: req\r\nseneca-origin: load/1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    if let Some(i) = args.iter().position(|a| a == "--hello") {
        let port = args[i + 1].parse().expect("port");
        rt.block_on(hello(port));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--sink") {
        let port = args[i + 1].parse().expect("port");
        rt.block_on(sink(port));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return; // `cargo test` runs benches once without --bench: nothing to do.
    }
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (rest, http, bare, web, node_act) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let exe = std::env::current_exe().expect("own path");
    let traces = std::env::var("TRACES").is_ok_and(|v| v == "1");
    let sink_port = free_port();
    let _sink = traces.then(|| {
        Server(
            Command::new(&exe)
                .args(["--sink", &sink_port.to_string()])
                .spawn()
                .expect("sink runs"),
        )
    });
    let mut command = wasmeca_tests::wasmeca_command!();
    command
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if traces {
        command
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{sink_port}"),
            )
            // Every trace sampled unless the environment asks for a ratio.
            .env(
                "OTEL_TRACES_SAMPLER",
                std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_else(|_| "always_on".into()),
            );
    }
    let wasmeca = Server(
        command
            .args([
                "serve",
                "--rest",
                &format!("127.0.0.1:{rest}"),
                "--http",
                &format!("127.0.0.1:{http}"),
            ])
            .arg(wasmeca_tests::plugin("user"))
            .arg(wasmeca_tests::plugin("math"))
            // The user plugin keeps its users in the entity store: in memory here, so the
            // figure is the gateway's and the act's, as Node's seneca-web serves from memory.
            .env("WASMECA_DATA_URL", "memory://")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("wasmeca runs"),
    );
    let bare_server = Server(
        Command::new(exe)
            .args(["--hello", &bare.to_string()])
            .spawn()
            .expect("hello runs"),
    );
    let web_server = node("web.js", web);
    let listen_server = node("http-listen.js", node_act);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    rt.block_on(async {
        for p in [rest, http, bare, web, node_act] {
            wait_for(addr(p)).await;
        }
    });
    let pid = |s: &Server| s.0.id();
    let target = |name, port, request, connections, status, pid| Target {
        name,
        addr: addr(port),
        request,
        connections,
        status,
        pid,
    };
    let targets = [
        target(
            "wasmeca REST GET /user/1",
            rest,
            get("/user/1", rest),
            64,
            200,
            pid(&wasmeca),
        ),
        target(
            "wasmeca REST 404",
            rest,
            get("/nope", rest),
            64,
            404,
            pid(&wasmeca),
        ),
        target(
            "wasmeca REST GET /health",
            rest,
            get("/health", rest),
            64,
            200,
            pid(&wasmeca),
        ),
        target(
            "bare axum hello-world",
            bare,
            get("/user/1", bare),
            64,
            200,
            pid(&bare_server),
        ),
        target(
            "Node seneca-web + koa GET /user/1",
            web,
            get("/user/1", web),
            64,
            200,
            pid(&web_server),
        ),
        target(
            "wasmeca /act (Seneca HTTP)",
            http,
            act(http),
            16,
            200,
            pid(&wasmeca),
        ),
        target(
            "Node seneca-transport /act",
            node_act,
            act(node_act),
            16,
            200,
            pid(&listen_server),
        ),
    ];
    let only = std::env::var("ONLY").unwrap_or_default();
    let me = std::process::id();
    println!(
        "| contender | pinned | conns | req/s | p50 | p99 | errors | server CPU/req | server RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for target in targets.iter().filter(|t| t.name.contains(only.as_str())) {
        for pinned in [false, true] {
            if pinned {
                pin(target.pid, "0");
                pin(me, "1");
            }
            let m = rt.block_on(drive(
                target,
                Duration::from_secs(2),
                Duration::from_secs(seconds),
            ));
            println!(
                "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.1} µs | {:.0} MB |",
                target.name,
                if pinned { "yes" } else { "no" },
                target.connections,
                m.rps,
                m.p50 as f64 / 1000.0,
                m.p99 as f64 / 1000.0,
                m.errors,
                m.cpu_us,
                wasmeca_tests::rss(target.pid) as f64 / (1 << 20) as f64,
            );
            if pinned {
                pin(target.pid, "0,1");
                pin(me, "0,1");
            }
        }
    }
    if traces {
        let (taken, dropped) = rt.block_on(async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let taken = text(addr(sink_port), "/count").await;
            let metrics = text(addr(rest), "/metrics").await;
            let dropped = metrics
                .lines()
                .find_map(|l| l.strip_prefix("wasmeca_telemetry_spans_dropped_total "))
                .unwrap_or("?")
                .to_owned();
            (taken, dropped)
        });
        println!("\nspans exported to the sink: {taken}; dropped by wasmeca: {dropped}");
    }
}

/// The body of `GET path` on `addr` (HTTP/1.0, so the server closes when done).
async fn text(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return "?".into();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "?".into();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
        .split_once("\r\n\r\n")
        .map_or("?".into(), |(_, body)| body.trim().to_owned())
}
