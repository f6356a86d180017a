//! The fleet under faults, shared by `tests/cluster.rs` (a short form in CI) and
//! `host/benches/cluster.rs` (the full run whose figures are in BENCHMARKS.md): a 3-node
//! RabbitMQ cluster with quorum queues and a 3-server Consul cluster from `deploy/cluster.sh`,
//! three `wasmeca serve` hosts on them sharing PostgreSQL and Redis, and three loads at once —
//! an unchanged Node seneca-amqp-transport client sending commands, REST reads spread over the
//! hosts as a load balancer would, and events published through the hosts to two groups — while
//! the RabbitMQ node holding the queue leaders, the Consul leader and one host are killed
//! (SIGKILL) in turn and started again. Counts what was sent, answered, lost and duplicated,
//! and the time from each kill to full service.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wasmeca_tests::{Process, free_port, node_client, plugin, repo};

/// Milliseconds since the epoch: the one clock of every record (the Node client's too).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A cluster started by `deploy/cluster.sh up` in a folder of its own, on ports of its own;
/// stopped (every process it started, by pid) when dropped, also when a test fails.
pub struct Cluster {
    /// The cluster's folder (`CLUSTER_DIR`).
    dir: PathBuf,
    /// What `cluster.sh env` printed.
    env: HashMap<String, String>,
}

impl Cluster {
    /// Starts 3 RabbitMQ nodes (AMQP on `amqp_base`..+2) and 3 Consul servers (HTTP on
    /// `consul_base`..+2) in `target/<name>`.
    pub fn up(name: &str, amqp_base: u16, consul_base: u16) -> Cluster {
        let dir = repo().join("target").join(name);
        let started = Instant::now();
        let mut cluster = Cluster {
            dir,
            env: HashMap::new(),
        };
        let out = cluster.script_with(
            &["up"],
            &[
                ("CLUSTER_AMQP_BASE", amqp_base.to_string()),
                ("CLUSTER_CONSUL_HTTP_BASE", consul_base.to_string()),
            ],
        );
        cluster.env = parse_env(&out);
        eprintln!("cluster up in {:?}", started.elapsed());
        cluster
    }

    /// Runs `deploy/cluster.sh ARGS` for this cluster; its stdout, or a panic with its stderr.
    fn script(&self, args: &[&str]) -> String {
        self.script_with(args, &[])
    }

    fn script_with(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = Command::new(repo().join("deploy/cluster.sh"))
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("deploy/cluster.sh runs");
        assert!(
            out.status.success(),
            "cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("cluster.sh env has no {name}: {:?}", self.env))
    }

    /// RabbitMQ node `i`'s URL (1..3).
    pub fn amqp(&self, i: usize) -> String {
        self.var(&format!("AMQP_URL_{i}")).to_owned()
    }

    /// Consul server `i`'s HTTP address (1..3).
    pub fn consul(&self, i: usize) -> String {
        self.var(&format!("CONSUL_HTTP_ADDR_{i}")).to_owned()
    }

    /// SIGKILL of RabbitMQ node `i`.
    pub fn kill_rabbit(&self, i: usize) {
        self.script(&["kill-rabbit", &i.to_string()]);
    }

    /// Starts RabbitMQ node `i` again; returns once it is back in the cluster.
    pub fn restart_rabbit(&self, i: usize) {
        self.script(&["restart-rabbit", &i.to_string()]);
    }

    /// SIGKILL of Consul server `i`.
    pub fn kill_consul(&self, i: usize) {
        self.script(&["kill-consul", &i.to_string()]);
    }

    /// Starts Consul server `i` again; returns once it rejoined.
    pub fn restart_consul(&self, i: usize) {
        self.script(&["restart-consul", &i.to_string()]);
    }

    /// The Consul server that leads now (1..3).
    pub fn consul_leader(&self) -> usize {
        self.script(&["consul-leader"])
            .trim()
            .parse()
            .expect("a server index")
    }

    /// The RabbitMQ node holding `queue`'s leader (1..3).
    pub fn queue_leader(&self, queue: &str) -> usize {
        self.script(&["queue-leader", queue])
            .trim()
            .parse()
            .expect("a node index")
    }

    /// How many messages `queue` holds (ready and unacknowledged), asked of node `i` (the
    /// broker's counts of a quorum queue lag by a few seconds).
    pub fn queue_depth(&self, i: usize, queue: &str) -> u64 {
        self.queue_column(i, queue, "messages")
    }

    /// How many consumers `queue` has, asked of node `i`.
    pub fn consumers(&self, i: usize, queue: &str) -> u64 {
        self.queue_column(i, queue, "consumers")
    }

    fn queue_column(&self, i: usize, queue: &str, column: &str) -> u64 {
        let out = self.script(&[
            "ctl",
            &i.to_string(),
            "list_queues",
            "name",
            column,
            "-q",
            "--no-table-headers",
        ]);
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .and_then(|(_, n)| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/cluster.sh"))
            .args(["down", "--kill"])
            .env("CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `KEY=value` lines.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('\'').to_owned()))
        .collect()
}

/// One wasmeca host of the fleet: its configuration and ports, and the process while it runs.
pub struct Host {
    /// Its `wasmeca.toml`.
    config: PathBuf,
    /// Where its REST gateway listens.
    pub rest: u16,
    /// Where its Seneca HTTP transport listens.
    pub http: u16,
    /// The process, while it runs.
    process: Option<Process>,
    /// The binary.
    bin: PathBuf,
    /// Where its output goes.
    log: PathBuf,
}

impl Host {
    /// Starts the host and waits (up to 60 s) until its `/health` answers 200.
    pub async fn start(&mut self, http: &reqwest::Client) {
        let log = std::fs::File::create(&self.log).expect("a log file");
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&self.config)
            .env("WASMECA_CACHE_DIR", wasmeca_tests::cache_dir())
            .env(
                "RUST_LOG",
                "warn,wasmeca::transport=info,wasmeca::discovery=info",
            )
            .env_remove("AMQP_URL")
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wasmeca serve starts");
        self.process = Some(Process(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{}/health", self.rest);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host did not start; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
    }
}

/// How long each phase of the scenario lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Load before the first fault.
    pub warm: Duration,
    /// How long a killed node stays down.
    pub down: Duration,
    /// Load after a node is back, before the next fault.
    pub after: Duration,
    /// Commands the Node client sends per second.
    pub command_rate: u32,
    /// Events published per second.
    pub event_rate: u32,
    /// REST callers, each with one request in flight.
    pub rest_callers: usize,
}

/// One request a load made: when it was sent (ms since the epoch), how long it took, whether
/// it succeeded, and to which host (REST and events), if any.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Sent at.
    pub at: u64,
    /// Took, in ms.
    pub ms: u64,
    /// Succeeded.
    pub ok: bool,
    /// The host it went to (0-based), for REST and event publishes.
    pub host: Option<usize>,
    /// The connection was refused (a load balancer would have sent it elsewhere: not a
    /// request that failed).
    pub refused: bool,
}

/// An event publish and the id the host gave the event, when it accepted it.
type Published = (Call, Option<String>);

/// How long one fault kept the fleet from full service.
#[derive(Debug)]
pub struct Recovery {
    /// The fault.
    pub what: String,
    /// ms from the kill until every stream served again.
    pub ms: u64,
    /// Per stream, ms until it served again.
    pub streams: Vec<(&'static str, u64)>,
}

/// What the loads saw, stream by stream.
struct Seen {
    /// The Node client's lines, one per command.
    node_lines: Vec<Value>,
    /// The same commands as calls.
    commands: Vec<Call>,
    /// REST reads.
    rest: Vec<Call>,
    /// Event publishes.
    events: Vec<Published>,
    /// Cross-host acts.
    peers: Vec<Call>,
}

/// One fault: what was killed, when, and when it was back.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What.
    pub what: String,
    /// Killed at (ms since the epoch).
    pub killed: u64,
    /// Serving again at (its restart finished).
    pub back: u64,
    /// The host that was killed, if one was.
    pub host: Option<usize>,
}

/// Everything the scenario saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Commands the Node client sent.
    pub commands_sent: usize,
    /// Of those, answered without error.
    pub commands_answered: usize,
    /// Commands that ran at least once (counted in Redis by the action).
    pub commands_ran: usize,
    /// Commands never run.
    pub commands_lost: usize,
    /// Commands run more than once.
    pub commands_duplicated: usize,
    /// Events the hosts accepted (202).
    pub events_published: usize,
    /// Per group: events handled at least once, and more than once.
    pub events_handled: BTreeMap<String, (usize, usize)>,
    /// Per group: accepted events never handled.
    pub events_lost: BTreeMap<String, usize>,
    /// Events in the groups' dead-letter queues.
    pub events_dead: u64,
    /// REST requests made (connections refused by a killed host not counted).
    pub rest_requests: usize,
    /// REST requests that failed on a host that was killed while they were in flight.
    pub rest_failed_in_flight: usize,
    /// REST requests that failed otherwise.
    pub rest_failed: usize,
    /// Per fault: what, ms from the kill to full service (every stream answering again), and
    /// per stream the ms to its own last failure or slow (over 1 s) answer.
    pub recovery: Vec<Recovery>,
    /// Cross-host acts (through Consul's peer table) made and failed.
    pub peer_acts: (usize, usize),
    /// The first failures of each stream, with the time (s since the start) and why.
    pub failures: Vec<String>,
    /// Second by second: each stream's calls (by the second they were sent), their slowest
    /// answer, and how many failed.
    pub timeline: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "commands: sent {}, answered {}, ran {}, lost {}, ran twice {}",
            self.commands_sent,
            self.commands_answered,
            self.commands_ran,
            self.commands_lost,
            self.commands_duplicated
        )?;
        writeln!(f, "events: published {}", self.events_published)?;
        for (group, (handled, twice)) in &self.events_handled {
            let lost = self.events_lost.get(group).copied().unwrap_or(0);
            writeln!(
                f,
                "  group {group}: handled {handled}, lost {lost}, handled twice {twice}"
            )?;
        }
        writeln!(f, "  dead-lettered: {}", self.events_dead)?;
        writeln!(
            f,
            "REST: {} requests, {} failed in flight on a killed host, {} failed otherwise",
            self.rest_requests, self.rest_failed_in_flight, self.rest_failed
        )?;
        writeln!(
            f,
            "cross-host acts through Consul: {} made, {} failed",
            self.peer_acts.0, self.peer_acts.1
        )?;
        for failure in &self.failures {
            writeln!(f, "  {failure}")?;
        }
        for line in &self.timeline {
            writeln!(f, "  {line}")?;
        }
        for Recovery { what, ms, streams } in &self.recovery {
            let streams: Vec<String> = streams
                .iter()
                .map(|(s, ms)| format!("{s} {ms} ms"))
                .collect();
            writeln!(
                f,
                "{what}: full service {ms} ms after the kill ({})",
                streams.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The fleet: the cluster and three hosts, with a run id that keeps this run's keys apart.
pub struct Fleet {
    /// RabbitMQ and Consul.
    pub cluster: Cluster,
    /// The hosts.
    pub hosts: Vec<Host>,
    /// This run's id, in every key and queue-independent name.
    pub run: String,
    /// The HTTP client of the loads.
    pub http: reqwest::Client,
}

/// The events groups: hosts 1 and 2 observe as `a`, host 3 as `b`.
fn group_of(i: usize) -> &'static str {
    if i < 2 { "a" } else { "b" }
}

impl Fleet {
    /// The cluster, and three hosts of `bin` on it: every host lists RabbitMQ node 1 first (so
    /// the quorum queues' leaders are on node 1) and its own Consul server first (a local agent
    /// per machine, as Consul recommends). Hosts 1 and 2 serve salute 1.0.0; host 3 does not, and
    /// reaches it through Consul's peer table.
    pub async fn start(name: &str, amqp_base: u16, consul_base: u16, bin: &Path) -> Fleet {
        let cluster = Cluster::up(name, amqp_base, consul_base);
        let run = format!("fleet{}", now_ms());
        let dir = cluster.dir.join("fleet");
        std::fs::create_dir_all(&dir).expect("fleet dir");
        let schema = format!("wasmeca_{run}");
        let amqp: Vec<String> = (1..=3).map(|i| format!("{:?}", cluster.amqp(i))).collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut hosts = Vec::new();
        for i in 0..3 {
            let agents: Vec<String> = (0..3)
                .map(|k| format!("{:?}", cluster.consul((i + k) % 3 + 1)))
                .collect();
            let (rest, port) = (free_port(), free_port());
            let salute = if i < 2 {
                format!("[[plugin]]\npath = {:?}\n", plugin("salute"))
            } else {
                String::new()
            };
            let toml = format!(
                "[rest]\nlisten = \"127.0.0.1:{rest}\"\n\
                 [[listen]]\ntype = \"http\"\nport = {port}\n\
                 [[listen]]\ntype = \"amqp\"\npins = [\"chaos:count\"]\n\
                 [amqp]\nurl = [{amqp}]\nqueue_type = \"quorum\"\n\
                 [events]\nurl = [{amqp}]\ngroup = \"{group}\"\n\
                 [data]\nurl = \"postgres://postgres@127.0.0.1:5432/test?schema={schema}\"\n\
                 [cache]\nurl = \"redis://127.0.0.1:6379/\"\n\
                 [consul]\naddress = [{agents}]\nservice = \"wasmeca\"\ncheck_interval_ms = 1000\n\
                 [limits]\ndrain_timeout_ms = 5000\n\
                 [[plugin]]\npath = {chaos:?}\noptions = {{ name = \"h{n}\", observe = [\"evt:flood\"], record = \"count\", mark = \"{run}:{group}\" }}\n\
                 [[plugin]]\npath = {user:?}\n{salute}",
                amqp = amqp.join(", "),
                agents = agents.join(", "),
                group = group_of(i),
                chaos = plugin("chaos"),
                user = plugin("user"),
                n = i + 1,
            );
            let config = dir.join(format!("host{}.toml", i + 1));
            std::fs::write(&config, toml).expect("write a host config");
            hosts.push(Host {
                config,
                rest,
                http: port,
                process: None,
                bin: bin.to_owned(),
                log: dir.join(format!("host{}.log", i + 1)),
            });
        }
        for host in &mut hosts {
            host.start(&http).await;
        }
        let fleet = Fleet {
            cluster,
            hosts,
            run,
            http,
        };
        fleet.wait_registered(3, Duration::from_secs(60)).await;
        // A group gets the events published once its queue is bound: the loads start when
        // every host consumes.
        let deadline = Instant::now() + Duration::from_secs(60);
        for (queue, consumers) in [
            ("seneca.add.chaos:count", 3),
            ("wasmeca.events.a", 2),
            ("wasmeca.events.b", 1),
        ] {
            while fleet.cluster.consumers(1, queue) < consumers {
                assert!(
                    Instant::now() < deadline,
                    "{queue} never had {consumers} consumers"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        fleet
    }

    /// Waits until Consul (asked of every server that answers) lists `n` passing hosts.
    pub async fn wait_registered(&self, n: usize, wait: Duration) -> Duration {
        let started = Instant::now();
        loop {
            for i in 1..=3 {
                let url = format!(
                    "{}/v1/health/service/wasmeca?passing=true&stale",
                    self.cluster.consul(i)
                );
                let listed = match self.http.get(&url).send().await {
                    Ok(r) => r
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
                        .map(|l| l.len()),
                    Err(_) => None,
                };
                if listed == Some(n) {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < wait,
                "Consul never listed {n} passing hosts"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the loads and the faults (`faults`: which of "rabbit", "consul", "host", in
    /// order) and reports.
    pub async fn run(&mut self, timing: Timing, faults: &[&str]) -> Report {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killed: Arc<Mutex<Vec<Fault>>> = Arc::default();
        let rest_calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let event_calls: Arc<Mutex<Vec<Published>>> = Arc::default();
        let peer_calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let notes: Arc<Mutex<Vec<String>>> = Arc::default();
        let started = now_ms();
        let note = move |notes: &Mutex<Vec<String>>, what: String| {
            let mut notes = notes.lock().expect("lock");
            if notes.len() < 40 {
                let at = (now_ms() - started) as f64 / 1000.0;
                notes.push(format!("{at:.1} s: {what}"));
            }
        };
        let ports: Vec<(u16, u16)> = self.hosts.iter().map(|h| (h.rest, h.http)).collect();

        // The Node client sends until this file exists, then waits for its answers.
        let stop_file = self.cluster.dir.join(format!("{}.stop", self.run));
        let _ = std::fs::remove_file(&stop_file);
        let commands = timing.command_rate as usize * 3_600;

        // 1. The Node Seneca client on RabbitMQ node 2 (never killed: Node's client does not
        //    reconnect), through the quorum queue.
        let node_url = self.cluster.amqp(2);
        let run = self.run.clone();
        let stop_path = stop_file.display().to_string();
        let node = tokio::task::spawn_blocking(move || {
            let msgs = json!([{ "chaos": "count", "key": format!("{run}:cmd:%i") }]).to_string();
            let rate = timing.command_rate.to_string();
            let each = commands.to_string();
            node_client(
                "amqp-client.js",
                &[
                    "--url",
                    &node_url,
                    "--pin",
                    "chaos:count",
                    "--quorum",
                    "true",
                    "--msgs",
                    &msgs,
                    "--each",
                    &each,
                    "--rate",
                    &rate,
                    "--concurrency",
                    "64",
                    "--timeout",
                    "120000",
                    "--stop-file",
                    &stop_path,
                ],
            )
        });

        // 2. REST readers, spread over the hosts; a refused connection is sent to the next
        //    host, as a load balancer does once its health check saw the host go.
        let mut tasks = Vec::new();
        for caller in 0..timing.rest_callers {
            let (http, stop, calls, ports) = (
                self.http.clone(),
                stop.clone(),
                rest_calls.clone(),
                ports.clone(),
            );
            let notes = notes.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = caller;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let host = n % ports.len();
                    let url = format!("http://127.0.0.1:{}/user/1", ports[host].0);
                    let at = now_ms();
                    let outcome = http.get(&url).send().await;
                    let call = match outcome {
                        Ok(r) => {
                            let status = r.status();
                            let body = r.bytes().await;
                            let ok = status.is_success() && body.is_ok();
                            if !ok {
                                let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                                note(&notes, format!("REST host {}: {status} {body:?}", host + 1));
                            }
                            Call {
                                at,
                                ms: now_ms() - at,
                                ok,
                                host: Some(host),
                                refused: false,
                            }
                        }
                        Err(e) => {
                            let refused = e.is_connect();
                            if refused {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            } else {
                                note(&notes, format!("REST host {}: {e}", host + 1));
                            }
                            Call {
                                at,
                                ms: now_ms() - at,
                                ok: false,
                                host: Some(host),
                                refused,
                            }
                        }
                    };
                    calls.lock().expect("lock").push(call);
                }
            }));
        }

        // 3. Events, published through the hosts' `/publish` at a steady rate.
        {
            let (http, stop, calls, ports) = (
                self.http.clone(),
                stop.clone(),
                event_calls.clone(),
                ports.clone(),
            );
            let period = Duration::from_secs_f64(1.0 / f64::from(timing.event_rate.max(1)));
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(period);
                let mut n: usize = 0;
                let mut in_flight = tokio::task::JoinSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    ticker.tick().await;
                    n += 1;
                    let (http, calls, ports) = (http.clone(), calls.clone(), ports.clone());
                    in_flight.spawn(async move {
                        // The first host that takes the connection publishes it.
                        for k in 0..ports.len() {
                            let host = (n + k) % ports.len();
                            let url = format!("http://127.0.0.1:{}/publish", ports[host].1);
                            let at = now_ms();
                            let sent = http
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(json!({"evt": "flood", "n": n}).to_string())
                                .send()
                                .await;
                            match sent {
                                Err(e) if e.is_connect() => continue,
                                Err(e) => {
                                    eprintln!("event publish through host {}: {e}", host + 1);
                                    let call = Call {
                                        at,
                                        ms: now_ms() - at,
                                        ok: false,
                                        host: Some(host),
                                        refused: false,
                                    };
                                    calls.lock().expect("lock").push((call, None));
                                }
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let body: Value = r
                                        .bytes()
                                        .await
                                        .ok()
                                        .and_then(|b| serde_json::from_slice(&b).ok())
                                        .unwrap_or(Value::Null);
                                    let id = body["event$"].as_str().map(str::to_owned);
                                    let call = Call {
                                        at,
                                        ms: now_ms() - at,
                                        ok: status == 202 && id.is_some(),
                                        host: Some(host),
                                        refused: false,
                                    };
                                    calls.lock().expect("lock").push((call, id));
                                }
                            }
                            return;
                        }
                    });
                }
                while in_flight.join_next().await.is_some() {}
            }));
        }

        // 4. A cross-host act every 100 ms: host 3 serves no salute and forwards it to a peer
        //    it found in Consul.
        {
            let (http, stop, calls) = (self.http.clone(), stop.clone(), peer_calls.clone());
            let notes = notes.clone();
            let url = format!("http://127.0.0.1:{}/act", ports[2].1);
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = now_ms();
                    let ok = match http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(r#"{"cmd":"salute","name":"peer"}"#)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status();
                            let body = r.bytes().await;
                            let ok = status.is_success() && body.is_ok();
                            if !ok {
                                let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                                note(&notes, format!("cross-host act: {status} {body:?}"));
                            }
                            ok
                        }
                        Err(e) => {
                            note(&notes, format!("cross-host act: {e}"));
                            false
                        }
                    };
                    calls.lock().expect("lock").push(Call {
                        at,
                        ms: now_ms() - at,
                        ok,
                        host: Some(2),
                        refused: false,
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }

        // The faults, in turn.
        tokio::time::sleep(timing.warm).await;
        let command_queue = "seneca.add.chaos:count";
        for fault in faults {
            let (what, host) = match *fault {
                "rabbit" => {
                    let node = self.cluster.queue_leader(command_queue);
                    let killed_at = now_ms();
                    self.cluster.kill_rabbit(node);
                    tokio::time::sleep(timing.down).await;
                    self.cluster.restart_rabbit(node);
                    killed.lock().expect("lock").push(Fault {
                        what: format!("RabbitMQ node {node} (the queue leaders')"),
                        killed: killed_at,
                        back: now_ms(),
                        host: None,
                    });
                    tokio::time::sleep(timing.after).await;
                    continue;
                }
                "consul" => ("consul", None),
                "host" => ("host", Some(1)),
                other => panic!("no fault {other}"),
            };
            let killed_at = now_ms();
            let label = if what == "consul" {
                let leader = self.cluster.consul_leader();
                self.cluster.kill_consul(leader);
                tokio::time::sleep(timing.down).await;
                self.cluster.restart_consul(leader);
                format!("Consul server {leader} (the leader)")
            } else {
                let i = host.unwrap_or(1);
                self.hosts[i].kill();
                tokio::time::sleep(timing.down).await;
                let http = self.http.clone();
                self.hosts[i].start(&http).await;
                format!("wasmeca host {}", i + 1)
            };
            killed.lock().expect("lock").push(Fault {
                what: label,
                killed: killed_at,
                back: now_ms(),
                host,
            });
            tokio::time::sleep(timing.after).await;
        }
        tokio::time::sleep(timing.after).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::fs::write(&stop_file, b"").expect("the stop file");
        for t in tasks {
            let _ = t.await;
        }
        let node_lines = node.await.expect("the Node client");
        let faults = killed.lock().expect("lock").clone();
        let seen = Seen {
            commands: node_lines
                .iter()
                .map(|l| Call {
                    at: l["at"].as_u64().unwrap_or(0),
                    ms: l["ms"].as_u64().unwrap_or(0),
                    ok: l["ok"] == true,
                    host: None,
                    refused: false,
                })
                .collect(),
            node_lines,
            rest: std::mem::take(&mut *rest_calls.lock().expect("lock")),
            events: std::mem::take(&mut *event_calls.lock().expect("lock")),
            peers: std::mem::take(&mut *peer_calls.lock().expect("lock")),
        };
        let mut report = self.report(&seen, &faults).await;
        for l in seen.node_lines.iter().filter(|l| l["ok"] != true).take(10) {
            let at = l["at"].as_u64().unwrap_or(0).saturating_sub(started) as f64 / 1000.0;
            report.failures.push(format!(
                "{at:.1} s: AMQP command {}: {}",
                l["i"], l["error"]
            ));
        }
        report
            .failures
            .extend(notes.lock().expect("lock").drain(..));
        for fault in &faults {
            let at = fault.killed.saturating_sub(started) as f64 / 1000.0;
            report
                .failures
                .push(format!("{at:.1} s: killed {}", fault.what));
        }
        let events: Vec<Call> = seen.events.iter().map(|(c, _)| *c).collect();
        report.timeline = timeline(
            started,
            &[
                ("AMQP", &seen.commands),
                ("REST", &seen.rest),
                ("events", &events),
                ("peers", &seen.peers),
            ],
        );
        report.failures.sort_by(|a, b| {
            let t = |s: &str| {
                s.split(' ')
                    .next()
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            t(a).total_cmp(&t(b))
        });
        report
    }

    /// Reads what ran from Redis and the queues, and sums up.
    async fn report(&self, seen: &Seen, faults: &[Fault]) -> Report {
        let node_lines = &seen.node_lines;
        let mut report = Report {
            commands_sent: node_lines.len(),
            commands_answered: node_lines.iter().filter(|l| l["ok"] == true).count(),
            ..Report::default()
        };
        let mut redis = redis::Client::open("redis://127.0.0.1:6379/")
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis");
        // Commands: each ran as often as its counter says (the cache's JSON values).
        let counts = |keys: Vec<String>| {
            let mut redis = redis.clone();
            async move {
                let mut counts = Vec::new();
                for chunk in keys.chunks(500) {
                    let values: Vec<Option<String>> = redis::cmd("MGET")
                        .arg(chunk)
                        .query_async(&mut redis)
                        .await
                        .expect("MGET");
                    counts.extend(
                        values
                            .into_iter()
                            .map(|v| v.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64),
                    );
                }
                counts
            }
        };
        let keys: Vec<String> = (0..node_lines.len())
            .map(|i| format!("{}:cmd:{i}", self.run))
            .collect();
        let ran = counts(keys.clone()).await;
        report.commands_ran = ran.iter().filter(|&&c| c > 0).count();
        report.commands_lost = ran.iter().filter(|&&c| c == 0).count();
        report.commands_duplicated = ran.iter().filter(|&&c| c > 1).count();

        // Events: each group handles each accepted event in its own time (a group's queue
        // holds what it has not taken yet; the broker's queue counts lag by seconds, so the
        // counts themselves are watched), up to a minute after the loads stop.
        let accepted_calls: Vec<(Call, String)> = seen
            .events
            .iter()
            .filter(|(c, _)| c.ok)
            .filter_map(|(c, id)| Some((*c, id.clone()?)))
            .collect();
        let accepted: Vec<String> = accepted_calls.iter().map(|(_, id)| id.clone()).collect();
        report.events_published = accepted.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut handled: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        loop {
            for group in ["a", "b"] {
                let keys: Vec<String> = accepted
                    .iter()
                    .map(|id| format!("{}:{group}:{id}", self.run))
                    .collect();
                handled.insert(group, counts(keys).await);
            }
            let waiting: usize = handled.values().flatten().filter(|&&c| c == 0).count();
            if waiting == 0 || Instant::now() > deadline {
                break;
            }
            eprintln!("{waiting} events not handled yet");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (group, handled) in &handled {
            let once = handled.iter().filter(|&&c| c > 0).count();
            let twice = handled.iter().filter(|&&c| c > 1).count();
            report
                .events_handled
                .insert((*group).to_owned(), (once, twice));
            report
                .events_lost
                .insert((*group).to_owned(), handled.len() - once);
            let start = accepted_calls.first().map_or(0, |(c, _)| c.at);
            let lost: Vec<String> = accepted_calls
                .iter()
                .zip(handled)
                .filter(|(_, c)| **c == 0)
                .map(|((call, id), _)| {
                    let at = call.at.saturating_sub(start) as f64 / 1000.0;
                    format!(
                        "{id} (published through host {} at {at:.1} s, {} ms)",
                        call.host.map_or(0, |h| h + 1),
                        call.ms
                    )
                })
                .take(8)
                .collect();
            if !lost.is_empty() {
                report
                    .failures
                    .push(format!("0 s: group {group} never handled {lost:?}"));
            }
            report.events_dead += self
                .cluster
                .queue_depth(2, &format!("wasmeca.events.{group}.dead"));
        }

        // REST: a failure on a host that was down when it ended is a request in flight there
        // (or sent in the instant before a load balancer would have seen it go).
        let rest = &seen.rest;
        let killed_host = |c: &Call| {
            faults.iter().any(|f| {
                f.host.is_some() && f.host == c.host && c.at <= f.back && c.at + c.ms >= f.killed
            })
        };
        let made: Vec<&Call> = rest.iter().filter(|c| !c.refused).collect();
        report.rest_requests = made.len();
        report.rest_failed_in_flight = made.iter().filter(|c| !c.ok && killed_host(c)).count();
        report.rest_failed = made.iter().filter(|c| !c.ok && !killed_host(c)).count();
        let peers = &seen.peers;
        report.peer_acts = (peers.len(), peers.iter().filter(|c| !c.ok).count());

        // Recovery: for each fault and stream, when it served again — its first good answer to
        // a call sent after the kill, and the end of its last failed call before the next
        // fault, whichever is later (calls to the killed host itself left out: a load balancer
        // takes it out of rotation). Full service is when every stream served again.
        let events: Vec<Call> = seen.events.iter().map(|(c, _)| *c).collect();
        for (k, fault) in faults.iter().enumerate() {
            let until = faults.get(k + 1).map_or(u64::MAX, |f| f.killed);
            // Calls that ended before the next fault: one still in flight then is that fault's.
            let counts = |c: &&Call| {
                c.at >= fault.killed
                    && c.at + c.ms < until
                    && !c.refused
                    && !(fault.host.is_some() && fault.host == c.host)
            };
            let streams: Vec<(&'static str, u64)> = [
                ("AMQP commands", &seen.commands),
                ("REST", rest),
                ("events published", &events),
                ("cross-host acts", peers),
            ]
            .into_iter()
            .map(|(name, calls)| {
                let here: Vec<&Call> = calls.iter().filter(counts).collect();
                let first_good = here.iter().filter(|c| c.ok).map(|c| c.at + c.ms).min();
                let last_failed = here.iter().filter(|c| !c.ok).map(|c| c.at + c.ms).max();
                let back = first_good.max(last_failed).unwrap_or(fault.killed);
                (name, back.saturating_sub(fault.killed))
            })
            .collect();
            let ms = streams.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
            report.recovery.push(Recovery {
                what: fault.what.clone(),
                ms,
                streams,
            });
        }
        // Nothing of this run stays in Redis.
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.run))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .expect("SCAN");
            if !found.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(&found)
                    .query_async(&mut redis)
                    .await
                    .expect("DEL");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        report
    }
}

/// One line per second: for each stream, the calls sent in that second, their slowest answer
/// and how many failed (refused connections left out).
fn timeline(started: u64, streams: &[(&str, &Vec<Call>)]) -> Vec<String> {
    let end = streams
        .iter()
        .flat_map(|(_, calls)| calls.iter().map(|c| c.at))
        .max()
        .unwrap_or(started);
    (0..=(end.saturating_sub(started) / 1000))
        .map(|second| {
            let from = started + second * 1000;
            let cells: Vec<String> = streams
                .iter()
                .map(|(name, calls)| {
                    let here: Vec<&Call> = calls
                        .iter()
                        .filter(|c| !c.refused && c.at >= from && c.at < from + 1000)
                        .collect();
                    let slowest = here.iter().map(|c| c.ms).max().unwrap_or(0);
                    let failed = here.iter().filter(|c| !c.ok).count();
                    format!("{name} {} ≤{slowest}ms {failed}✗", here.len())
                })
                .collect();
            format!("{second:>3} s | {}", cells.join(" | "))
        })
        .collect()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            host.kill();
        }
        // The run's PostgreSQL schema goes with it.
        let schema = format!("wasmeca_{}", self.run);
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
