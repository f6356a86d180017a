//! Test support: unique names, a PostgreSQL schema per test, temp dirs, a test's own RabbitMQ
//! queues and exchanges (deleted when it ends, failing or not), and a TCP proxy that can
//! be cut and restored (a store going down and coming back) or muted and unmuted (a store that
//! stops answering while its connections stay open: a partition, a hung server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// PostgreSQL on this machine (trust auth).
pub const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Redis on this machine.
pub const REDIS: &str = "redis://127.0.0.1:6379/";
/// RabbitMQ on this machine.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection to [`REDIS`] that may take 10 s to connect and to answer: redis-rs's shorter
/// defaults are overrun on a loaded 2-core CI machine (seen on a `SCAN`).
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let patience = Some(std::time::Duration::from_secs(10));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(patience)
        .set_response_timeout(patience);
    redis::Client::open(REDIS)
        .expect("the Redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("Redis on 127.0.0.1:6379")
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain session on the test database, and the task driving its connection (it ends once
/// the client is dropped).
pub async fn pg_session() -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432");
    (client, tokio::spawn(conn))
}

/// Runs SQL on the test database with a plain connection.
pub async fn pg_exec(sql: &str) {
    let (client, task) = pg_session().await;
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = task.await;
}

/// A schema of this test's own, dropped (with everything in it) when the guard goes.
pub struct PgSchema {
    /// The schema name.
    pub name: String,
}

impl PgSchema {
    /// Creates the schema, then runs `ddl` with `{s}` replaced by the quoted schema name.
    pub async fn new(ddl: &str) -> PgSchema {
        let name = unique("wasmeca_t");
        pg_exec(&format!(
            "CREATE SCHEMA \"{name}\"; {}",
            ddl.replace("{s}", &format!("\"{name}\""))
        ))
        .await;
        PgSchema { name }
    }

    /// The store URL for this schema.
    pub fn url(&self, layout: &str) -> String {
        format!("{PG}?schema={}&layout={layout}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // End sessions still inside the schema (a panicking test may leave a transaction open on
        // a pooled connection whose runtime is blocked right here), then drop it.
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND query LIKE '%{0}%' AND query NOT LIKE '%pg_terminate_backend%';
             DROP SCHEMA IF EXISTS \"{0}\" CASCADE",
            self.name
        );
        // Its own thread and runtime: drop may run inside (or outside) the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(pg_exec(&sql));
        })
        .join();
    }
}

/// A directory under the system temp dir, removed when the guard goes.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory.
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("wasmeca-data"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP proxy on 127.0.0.1 to a real service; [`Proxy::cut`] drops it and every connection
/// through it (the service looks down), [`Proxy::restore`] listens again on the same port;
/// [`Proxy::mute`] keeps every connection open and accepts new ones but moves no byte either
/// way until [`Proxy::unmute`], which delivers what was held, as a healed partition does.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    /// Where connections are forwarded.
    target: SocketAddr,
    /// The accept loop and every forwarding task, to abort on cut.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// True while muted; every forwarding task follows it.
    muted: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy on a free port.
    pub async fn start(target: &str) -> Proxy {
        let target: SocketAddr = target.parse().expect("target address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            target,
            tasks: Arc::default(),
            muted: watch::Sender::new(false),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (tasks, target, muted) = (self.tasks.clone(), self.target, self.muted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (up, down) = (muted.subscribe(), muted.subscribe());
                let conn = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        // Either side closing ends both (once unmuted, as a network would).
                        tokio::select! {
                            () = pump(from_client, to_server, up) => {}
                            () = pump(from_server, to_client, down) => {}
                        }
                    }
                });
                tasks.lock().expect("lock").push(conn.abort_handle());
            }
        });
        self.tasks.lock().expect("lock").push(accept.abort_handle());
    }

    /// Holds every byte, both ways, on every connection (new ones too) until [`Proxy::unmute`].
    pub fn mute(&self) {
        self.muted.send_replace(true);
    }

    /// Delivers what was held and forwards again.
    pub fn unmute(&self) {
        self.muted.send_replace(false);
    }

    /// Stops listening and drops every connection.
    pub fn cut(&self) {
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind proxy port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}

/// Forwards `from` to `to`, holding everything while `muted` says so.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut muted: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if muted.wait_for(|m| !*m).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Muted mid-read: look again (a read that has not completed took nothing).
            _ = muted.changed() => continue,
        };
        if muted.wait_for(|m| !*m).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The RabbitMQ queues and exchanges one test declared, deleted when it is dropped, so a failing
/// test leaves none behind either.
#[derive(Default)]
pub struct Broker {
    /// Queues to delete.
    pub queues: Vec<String>,
    /// Exchanges to delete.
    pub exchanges: Vec<String>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let (queues, exchanges) = (
            std::mem::take(&mut self.queues),
            std::mem::take(&mut self.exchanges),
        );
        // On a thread of its own: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(conn) = lapin::Connection::connect(AMQP, Default::default()).await else {
                    return;
                };
                let Ok(channel) = conn.create_channel().await else {
                    return;
                };
                for queue in &queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                }
                for exchange in &exchanges {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), Default::default())
                        .await;
                }
            });
        })
        .join();
    }
}
