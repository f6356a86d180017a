//! The PostgreSQL entity store: a deadpool-postgres pool, one connection lent per store call,
//! and the layout it serves.
//!
//! Layouts: [`document`] (the default: one jsonb document table) and [`columns`] (an existing
//! seneca-postgres-store schema, a table per entity type).
//!
//! Availability: the pool connects lazily and replaces broken connections, so a server that is
//! down makes each call fail fast with `store_unavailable`, and calls succeed again once it is back.
//! A server that stops answering without closing (a partition, a hung host) holds a call no longer
//! than the act's deadline (the router bounds every native call: `action_timeout`); a connection
//! whose call was cut off that way is closed rather than pooled (a `Lease`), sockets carry TCP
//! keepalives and a user timeout, and statements a `statement_timeout` of the longest act
//! deadline, so the pool heals by itself when the partition does.

pub mod columns;
pub mod document;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::types::ToSql;

use super::query::Query;
use super::{EntityStore, Kind, Record, SaveOp};
use crate::data::{DataError, redact_url};
use crate::runtime::BoxFuture;
use columns::Columns;

/// Which table layout a PostgreSQL store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgLayout {
    /// One jsonb document table for every entity type (default; created on first use).
    Document,
    /// seneca-postgres-store's layout: an existing table `base_name` with a column per field.
    Columns,
}

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// The PostgreSQL store.
pub struct PgStore {
    /// The connection pool (lazy, self-healing).
    pub(crate) pool: Pool,
    /// The layout served.
    layout: PgLayout,
    /// The schema to use, already quoted (`"name".`), or empty for the search path.
    pub(crate) schema: String,
    /// The schema's plain name (for catalog look-ups), or empty.
    pub(crate) schema_name: String,
    /// Set once the document table exists (retried after a failure, e.g. while the server is down).
    ready: tokio::sync::OnceCell<()>,
    /// The columns layout's table catalog.
    columns: Columns,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("layout", &self.layout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A pooled connection lent to one store call ([`PgStore::lease`]).
struct Lease(Option<Object>);

impl Lease {
    /// The connection.
    fn client(&mut self) -> &mut Object {
        // Only `settle` and `drop` take it out.
        self.0
            .as_mut()
            .expect("a lease holds its connection until settled")
    }

    /// The call ended (with an answer or an error from the server): the connection may be
    /// reused.
    fn settle(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            // Dropped mid-call: its reply may still come. Closing the connection (by dropping
            // the client) is the only way to be sure the next user does not read it.
            drop(Object::take(object));
        }
    }
}

/// Quotes an SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a driver error: connection trouble is `store_unavailable`, the rest `store_failed`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> DataError {
    let reason = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_string());
    let reason = crate::error::clip(&reason).into_owned(); // driver messages may quote the caller's values
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let down = match e.code().map(|c| c.code()) {
        Some(code) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        None => e.is_closed() || io || reason.contains("timeout") || reason.contains("connect"),
    };
    if down {
        DataError::Unavailable {
            store: "postgres",
            reason,
        }
    } else {
        DataError::Failed {
            store: "postgres",
            reason,
        }
    }
}

impl PgStore {
    /// A store for `url` (`postgres://…`, `?layout=document|columns`, `?schema=NAME`; the other
    /// parameters go to tokio-postgres). Nothing is contacted until the first call.
    pub fn open(url: &str) -> Result<PgStore, DataError> {
        let bad = |reason: String| DataError::BadUrl {
            url: redact_url(url),
            reason,
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut layout, mut schema, mut schema_name, mut rest) =
            (PgLayout::Document, String::new(), String::new(), Vec::new());
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=').unwrap_or((kv, "")) {
                ("layout", "document") => layout = PgLayout::Document,
                ("layout", "columns") => layout = PgLayout::Columns,
                ("layout", other) => {
                    return Err(bad(format!(
                        "layout must be document or columns, not {other:?}"
                    )));
                }
                ("schema", name) if !name.is_empty() => {
                    schema = format!("{}.", ident(name));
                    schema_name = name.to_string();
                }
                _ => rest.push(kv),
            }
        }
        let pg_url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config =
            tokio_postgres::Config::from_str(&pg_url).map_err(|e| bad(e.to_string()))?;
        let given = |key: &str| rest.iter().any(|kv| kv.split('=').next() == Some(key));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that goes silent (a partition, a hung host) must not keep a connection
        // forever: keepalives find a peer that is gone, and the user timeout drops a
        // connection whose sent data stays unacknowledged.
        if !given("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(10));
        }
        if !given("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if !given("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if !given("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(20));
        }
        // No statement outlives the longest deadline an act may have: past it, nobody waits
        // for the answer, and the server should stop working on it.
        if !given("options") {
            config.options(format!(
                "-c statement_timeout={}",
                crate::message::MAX_TIMEOUT_MS
            ));
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(PgStore {
            pool,
            layout,
            schema,
            schema_name,
            ready: tokio::sync::OnceCell::new(),
            columns: Columns::default(),
        })
    }

    /// The layout served.
    pub fn layout(&self) -> PgLayout {
        self.layout
    }

    /// A pooled connection for one store call: if the call is dropped before it settles the
    /// lease (its deadline passed while the server said nothing), the connection leaves the
    /// pool instead of going back with a query still in flight, so a partition that heals
    /// leaves no stuck connection behind.
    async fn lease(&self) -> Result<Lease, DataError> {
        let object = self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg_error(e),
            other => DataError::Unavailable {
                store: "postgres",
                reason: other.to_string(),
            },
        })?;
        Ok(Lease(Some(object)))
    }
}

/// `LIMIT`/`OFFSET` for a query (nothing when absent).
pub(crate) fn sql_page(q: &Query) -> String {
    let mut s = String::new();
    if let Some(limit) = q.limit {
        s += &format!(" LIMIT {}", limit.min(i64::MAX as usize));
    }
    if q.skip > 0 {
        s += &format!(" OFFSET {}", q.skip.min(i64::MAX as usize));
    }
    s
}

/// ORDER BY terms for a jsonb expression in [`super::query::sort_cmp`]'s order: type rank
/// (missing/null greatest), then numbers and booleans, then strings by code point.
pub(crate) fn jsonb_sort(x: &str, dir: &str) -> String {
    format!(
        "CASE jsonb_typeof({x}) WHEN 'number' THEN 0 WHEN 'string' THEN 1 WHEN 'boolean' THEN 2 \
         WHEN 'array' THEN 3 WHEN 'object' THEN 4 ELSE 5 END {dir}, \
         CASE WHEN jsonb_typeof({x}) IN ('number', 'boolean') THEN {x} END {dir}, \
         (CASE WHEN jsonb_typeof({x}) = 'string' THEN {x} #>> '{{}}' END) COLLATE \"C\" {dir}"
    )
}

impl EntityStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            lease
                .client()
                .simple_query("SELECT 1")
                .await
                .map_err(pg_error)?;
            lease.settle();
            Ok(())
        })
    }

    fn save<'a>(&'a self, kind: &'a Kind, op: SaveOp) -> BoxFuture<'a, Result<Record, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let saved = match self.layout {
                PgLayout::Document => self.doc_save(client, kind, op).await,
                PgLayout::Columns => self.columns.save(self, client, kind, op).await,
            };
            lease.settle();
            saved
        })
    }

    fn list<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let listed = match self.layout {
                PgLayout::Document => self.doc_list(client, kind, q).await,
                PgLayout::Columns => self.columns.list(self, client, kind, q).await,
            };
            lease.settle();
            listed
        })
    }

    fn remove<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
        all: bool,
    ) -> BoxFuture<'a, Result<Option<Record>, DataError>> {
        Box::pin(async move {
            let mut lease = self.lease().await?;
            let client = lease.client();
            let removed = match self.layout {
                PgLayout::Document => self.doc_remove(client, kind, q, all).await,
                PgLayout::Columns => self.columns.remove(self, client, kind, q, all).await,
            };
            lease.settle();
            removed
        })
    }
}
