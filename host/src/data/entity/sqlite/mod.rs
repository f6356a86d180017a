//! The SQLite entity store (the default): one table per (base, name), JSON text, one writer thread.
//!
//! Layout: a catalog `wasmeca_kind(tbl, base, name)` maps each entity type to a table
//! `wasmeca_e<tbl>(seq INTEGER PRIMARY KEY, id UNIQUE NOT NULL, data TEXT)`. `seq` (the rowid) is
//! the insertion order; `id` has no declared type, so SQLite keeps its storage class and `42` and
//! `'42'` stay distinct (while `42 = 42.0`, as `===`); `data` is the record without `id`, as the
//! JSON text it was sent in, so values round-trip byte for byte. A table per type keeps
//! scans and indexes to that type, and names come from the catalog, never from caller input.
//!
//! Pushdown: every condition on `id` or on a field whose name is plain (no quote, backslash or
//! control character) becomes SQL: `json_extract(data,'$."f"')` compared under a `json_type`
//! guard, so typing stays strict (a number never equals a string, `true` never equals 1, an
//! object's JSON text never equals a string). The first equality or IN on a field creates an
//! expression index on `json_extract(data,'$."f"')` (at most [`MAX_AUTO_INDEXES`] per table), so
//! equality lists use an index rather than a scan. `sort$` (with the same type order as Rust),
//! `skip$` and `limit$` are pushed too; when a condition or sort key cannot be, SQL narrows with
//! what it can and the rest runs in Rust.
//!
//! Threading: rusqlite is blocking, so one dedicated thread owns the writing connection and runs
//! jobs sent over a channel. SQLite has one writer at a time anyway; a single owner needs no pool
//! or lock, keeps its prepared-statement cache warm, and serialises read-modify-write saves
//! without races. Loads by id (at most [`INLINE_IDS`] ids) skip that hand-off, which costs more
//! than the lookup itself: they run on the caller's thread on a read-only connection from a small
//! pool. A lookup by the unique `id` index is one B-tree probe, as short as a contended lock; a
//! WAL reader never waits for the writer, and a reader that meets a lock (busy timeout zero) or
//! any other SQL error hands the load to the worker instead. Each read sees every save answered
//! before it (WAL, autocommit; several ids in one read transaction). A database a second
//! connection cannot see or open read-only (a private `:memory:` one, a `mode=rw` URI) is found
//! out at open, and there the worker does everything.
//!
//! Durability: WAL with `synchronous=NORMAL` — a commit's WAL frames are written before the save
//! is answered, so an answered save survives `kill -9` of the process (not a power loss).

mod plan;
mod readers;
mod writer;

use std::sync::mpsc;

use super::query;
use super::query::Query;
use super::{EntityStore, Kind, Record, SaveOp};
use crate::data::DataError;
use crate::runtime::BoxFuture;
use plan::{failed, id_lookup};
use readers::Readers;
use writer::{Db, Job, next_job};

/// The most expression indexes created automatically per table (each one slows writes).
pub const MAX_AUTO_INDEXES: usize = 16;

/// The most ids a load reads on the caller's thread; longer id lists go to the worker, so the
/// caller's thread is never held for long.
pub const INLINE_IDS: usize = 16;

/// The most idle read-only connections kept (one per thread that loads at the same time).
const IDLE_READERS: usize = 8;

/// The SQLite store: a handle to the worker thread that owns the writing connection, and the
/// read-only connections loads by id use.
#[derive(Debug)]
pub struct SqliteStore {
    /// Sends jobs to the worker; the worker stops when the last handle is dropped.
    jobs: mpsc::Sender<Job>,
    /// Read-only connections for loads by id on the caller's thread; `None` for `:memory:`.
    readers: Option<Readers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` (`:memory:` for a private one),
    /// which will hold at most `max_kinds` entity kinds.
    pub async fn open(path: &str, max_kinds: usize) -> Result<SqliteStore, DataError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = tokio::sync::oneshot::channel();
        let path = path.to_string();
        let db_path = path.clone();
        std::thread::Builder::new()
            .name("wasmeca-sqlite".into())
            .spawn(move || {
                let mut db = match Db::open(&db_path, max_kinds) {
                    Ok(db) => {
                        let _ = ready.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Some(job) = next_job(&queue, || db.give_back_memory()) {
                    db.run(job);
                }
            })
            .map_err(failed)?;
        opened
            .await
            .map_err(|_| failed("the sqlite thread died while opening"))??;
        Ok(SqliteStore {
            jobs,
            readers: Readers::open(path),
        })
    }

    /// Runs `f` on the worker thread and awaits its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, DataError> + Send + 'static,
    ) -> Result<T, DataError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.jobs
            .send(job)
            .map_err(|_| failed("the sqlite thread has stopped"))?;
        rx.await.map_err(|_| failed("the sqlite job panicked"))?
    }
}

impl EntityStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn save<'a>(&'a self, kind: &'a Kind, op: SaveOp) -> BoxFuture<'a, Result<Record, DataError>> {
        let kind = kind.clone();
        Box::pin(self.call(move |db| db.save(&kind, op)))
    }

    fn list<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Record>, DataError>> {
        let inline = id_lookup(q).filter(|ids| ids.len() <= INLINE_IDS);
        if let (Some(readers), Some(ids)) = (&self.readers, inline)
            && let Some(found) = readers.by_ids(kind, ids)
        {
            let page = |rows| {
                query::page(rows, q.skip, q.limit)
                    .into_iter()
                    .map(|(_, r)| r)
            };
            return Box::pin(std::future::ready(found.map(|rows| page(rows).collect())));
        }
        let (kind, q) = (kind.clone(), q.clone());
        Box::pin(self.call(move |db| match db.table(&kind, false)? {
            Some(t) => Ok(db.select(t, &q)?.into_iter().map(|(_, r)| r).collect()),
            None => Ok(Vec::new()),
        }))
    }

    fn remove<'a>(
        &'a self,
        kind: &'a Kind,
        q: &'a Query,
        all: bool,
    ) -> BoxFuture<'a, Result<Option<Record>, DataError>> {
        let (kind, q) = (kind.clone(), q.clone());
        Box::pin(self.call(move |db| db.remove(&kind, &q, all)))
    }
}
