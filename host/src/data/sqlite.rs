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

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params_from_iter,
};
use serde_json::{Number, Value};

use super::entity::{EntityStore, Kind, Record, SaveOp};
use super::query::{self, Filter, Query, RangeOp, Select, SortKey, Test};
use super::{BoxFuture, DataError};

/// The most expression indexes created automatically per table (each one slows writes).
pub const MAX_AUTO_INDEXES: usize = 16;

/// A unit of work for the worker thread.
type Job = Box<dyn FnOnce(&mut Db) + Send>;

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

/// The pool of read-only connections loads by id use.
#[derive(Debug)]
struct Readers {
    /// The database file they open.
    path: String,
    /// The file the writer opened (device, inode): a reader that would open another one (the
    /// path renamed over, say) is not opened, and the worker answers instead.
    file: Option<(u64, u64)>,
    /// Connections not in use: a load takes one (or opens one) and puts it back.
    idle: Mutex<Vec<Reader>>,
}

/// One read-only connection.
#[derive(Debug)]
struct Reader {
    /// The connection (busy timeout zero: it never waits on the caller's thread).
    conn: Connection,
    /// Table numbers it has looked up (only hits: a kind may get its table later).
    tables: HashMap<Kind, i64>,
}

/// The worker thread's state.
struct Db {
    /// The one connection.
    conn: Connection,
    /// Table numbers of the known entity types (only hits are cached: another process may add).
    tables: HashMap<Kind, i64>,
    /// Fields indexed per table (names of the index expressions' fields).
    indexed: HashMap<i64, HashSet<String>>,
}

/// A `store_failed` error with a clipped reason.
fn failed(e: impl std::fmt::Display) -> DataError {
    DataError::Failed {
        store: "sqlite",
        reason: super::clip(&e.to_string()),
    }
}

/// A driver error: busy/locked (after the busy timeout) is `store_unavailable`.
fn sql_error(e: rusqlite::Error) -> DataError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DataError::Unavailable {
            store: "sqlite",
            reason: super::clip(&e.to_string()),
        },
        _ => failed(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` (`:memory:` for a private one).
    pub async fn open(path: &str) -> Result<SqliteStore, DataError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = tokio::sync::oneshot::channel();
        let path = path.to_string();
        let db_path = path.clone();
        std::thread::Builder::new()
            .name("wasmeca-sqlite".into())
            .spawn(move || {
                let mut db = match Db::open(&db_path) {
                    Ok(db) => {
                        let _ = ready.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Some(job) = next_job(&queue) {
                    // A panicking job must not take the store down with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut db)));
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

/// The file at `path` as (device, inode), where the platform has them.
fn file_id(path: &str) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl Readers {
    /// Readers for the database the writer opened at `path`, if a first one opens and reads the
    /// catalog there; `None` for a database only the writer can see (`:memory:`, a
    /// `mode=memory` URI) or open (a `mode=rw` URI), so loads never try in vain.
    fn open(path: String) -> Option<Readers> {
        let readers = Readers {
            file: file_id(&path),
            path,
            idle: Mutex::new(Vec::new()),
        };
        let first = readers.reader().ok()?;
        first
            .conn
            .query_row("SELECT count(*) FROM wasmeca_kind", [], |_| Ok(()))
            .ok()?;
        readers.idle.lock().ok()?.push(first);
        Some(readers)
    }

    /// A new read-only connection to the writer's file.
    fn reader(&self) -> rusqlite::Result<Reader> {
        let reader = Reader::open(&self.path)?;
        if file_id(&self.path) != self.file {
            return Err(rusqlite::Error::InvalidPath(self.path.clone().into()));
        }
        Ok(reader)
    }

    /// The records with `ids` in `kind`, read on this thread; `None` when the read met a lock or
    /// an SQL error, for the worker to answer instead.
    fn by_ids(&self, kind: &Kind, ids: &[Value]) -> Option<Result<Vec<(i64, Record)>, DataError>> {
        let idle = || self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = idle().pop();
        let mut reader = match taken {
            Some(reader) => reader,
            None => self.reader().ok()?,
        };
        let found = reader.by_ids(kind, ids).ok()?;
        let mut idle = idle();
        if idle.len() < IDLE_READERS {
            idle.push(reader);
        }
        Some(found)
    }
}

impl Reader {
    fn open(path: &str) -> rusqlite::Result<Reader> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Reader {
            conn,
            tables: HashMap::new(),
        })
    }

    /// The rows with `ids`: SQL errors apart (the caller falls back), record errors inside.
    /// Several ids are read in one transaction, so they come from one state of the database.
    fn by_ids(
        &mut self,
        kind: &Kind,
        ids: &[Value],
    ) -> rusqlite::Result<Result<Vec<(i64, Record)>, DataError>> {
        let Reader { conn, tables } = self;
        let snapshot = if ids.len() > 1 {
            Some(conn.unchecked_transaction()?)
        } else {
            None
        };
        let t = match tables.get(kind) {
            Some(t) => *t,
            None => match find_table(conn, kind)? {
                Some(t) => *tables.entry(kind.clone()).or_insert(t),
                None => return Ok(Ok(Vec::new())),
            },
        };
        let rows = rows_by_id(conn, t, ids)?;
        if let Some(snapshot) = snapshot {
            snapshot.commit()?;
        }
        Ok(rows)
    }
}

/// The table number of `kind` in the catalog, if it has one.
fn find_table(conn: &Connection, kind: &Kind) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT tbl FROM wasmeca_kind WHERE base = ?1 AND name = ?2")?
        .query_row((kind.base.as_str(), kind.name.as_str()), |r| r.get(0))
        .optional()
}

/// The rows of table `t` with these ids, in their order, misses skipped: SQL errors outside,
/// a record that does not read inside.
fn rows_by_id(
    conn: &Connection,
    t: i64,
    ids: &[Value],
) -> rusqlite::Result<Result<Vec<(i64, Record)>, DataError>> {
    let sql = format!("SELECT seq, id, data FROM wasmeca_e{t} WHERE id = ?1");
    let mut st = conn.prepare_cached(&sql)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match st.query_row([id_param(id)], read_row).optional()? {
            Some(Ok(row)) => out.push(row),
            Some(Err(e)) => return Ok(Err(e)),
            None => {}
        }
    }
    Ok(Ok(out))
}

/// The ids a query looks up through the unique index: an id list, or a lone scalar `id`
/// equality (the load-by-id path).
fn id_lookup(q: &Query) -> Option<&[Value]> {
    match &q.select {
        Select::Ids(ids) => Some(ids.as_slice()),
        Select::Where(_) => q
            .lone_id()
            .filter(|id| !id.is_null() && query::is_scalar(id))
            .map(std::slice::from_ref),
    }
}

/// How long the worker keeps looking for a next job before it sleeps: a caller that sends its
/// next request right after a reply then skips a thread wake-up (bounded, so idle costs nothing).
const SPIN: Duration = Duration::from_micros(50);

/// The next job: one already queued, else one arriving within [`SPIN`], else wait for one.
fn next_job(queue: &mpsc::Receiver<Job>) -> Option<Job> {
    let start = Instant::now();
    loop {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Empty) => return queue.recv().ok(),
        }
    }
}

impl Db {
    fn open(path: &str) -> Result<Db, DataError> {
        // The folder may not exist yet (a project's .wasmeca/ on its first save).
        let parent = std::path::Path::new(path).parent();
        if let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty() && !path.starts_with(':')) {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create the folder {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(sql_error)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sql_error)?;
        tracing::debug!(target: "wasmeca::data", path, mode, "sqlite opened");
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA temp_store=MEMORY;
             CREATE TABLE IF NOT EXISTS wasmeca_kind (
                 tbl INTEGER PRIMARY KEY, base TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (base, name));",
        )
        .map_err(sql_error)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Db {
            conn,
            tables: HashMap::new(),
            indexed: HashMap::new(),
        })
    }

    /// The table number of a kind; created when `create`, else `None` when it has none yet.
    fn table(&mut self, kind: &Kind, create: bool) -> Result<Option<i64>, DataError> {
        if let Some(t) = self.tables.get(kind) {
            return Ok(Some(*t));
        }
        let args = (kind.base.as_str(), kind.name.as_str());
        let mut tbl = find_table(&self.conn, kind).map_err(sql_error)?;
        if tbl.is_none() && create {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            tx.execute(
                "INSERT OR IGNORE INTO wasmeca_kind (base, name) VALUES (?1, ?2)",
                args,
            )
            .map_err(sql_error)?;
            let t = find_table(&tx, kind)
                .map_err(sql_error)?
                .ok_or_else(|| failed("the catalog lost a row it just inserted"))?;
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS wasmeca_e{t} (seq INTEGER PRIMARY KEY, id UNIQUE NOT NULL, data TEXT NOT NULL)"
            ))
            .map_err(sql_error)?;
            tx.commit().map_err(sql_error)?;
            tbl = Some(t);
        }
        if let Some(t) = tbl {
            self.tables.insert(kind.clone(), t);
            let mut names = HashSet::new();
            let sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND name LIKE 'wasmeca_e%__%'";
            let mut st = self.conn.prepare(sql).map_err(sql_error)?;
            let prefix = format!("wasmeca_e{t}__");
            let rows = st
                .query_map([format!("wasmeca_e{t}")], |r| r.get::<_, String>(0))
                .map_err(sql_error)?;
            for name in rows.flatten() {
                if let Some(field) = name.strip_prefix(&prefix) {
                    names.insert(field.to_string());
                }
            }
            self.indexed.insert(t, names);
        }
        Ok(tbl)
    }

    /// Creates the expression index on a field the first time it is queried by equality.
    fn ensure_index(&mut self, t: i64, field: &str, path: &str) -> Result<(), DataError> {
        let names = self.indexed.entry(t).or_default();
        if names.contains(field) || names.len() >= MAX_AUTO_INDEXES {
            return Ok(());
        }
        let name = format!("wasmeca_e{t}__{field}").replace('"', "\"\"");
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS \"{name}\" ON wasmeca_e{t} (json_extract(data, {path}))"
        );
        self.conn.execute_batch(&sql).map_err(sql_error)?;
        tracing::debug!(target: "wasmeca::data", table = t, field, "sqlite expression index created");
        names.insert(field.to_string());
        Ok(())
    }

    /// Runs a query; returns `(seq, record)` pairs, sorted and paged.
    fn select(&mut self, t: i64, q: &Query) -> Result<Vec<(i64, Record)>, DataError> {
        let table = format!("wasmeca_e{t}");
        if let Some(ids) = id_lookup(q) {
            let out = rows_by_id(&self.conn, t, ids).map_err(sql_error)??;
            return Ok(query::page(out, q.skip, q.limit));
        }
        let mut plan = Plan::default();
        let mut rest: Vec<Filter> = Vec::new();
        for f in q.filters() {
            match Field::of(&f.field) {
                Some(field) => {
                    if matches!(f.test, Test::Eq(_) | Test::In(_))
                        && let Field::Data(path) = &field
                    {
                        self.ensure_index(t, &f.field, path)?;
                    }
                    plan.filter(&field, &f.test);
                }
                None => rest.push(f.clone()),
            }
        }
        let sort: Option<Vec<(Field, bool)>> = q
            .sort
            .iter()
            .map(|k: &SortKey| Field::of(&k.field).map(|f| (f, k.desc)))
            .collect();
        let exact = rest.is_empty() && sort.is_some();
        let mut sql = format!("SELECT seq, id, data FROM {table}");
        if !plan.conds.is_empty() {
            sql += " WHERE ";
            sql += &plan.conds.join(" AND ");
        }
        sql += " ORDER BY ";
        for (field, desc) in sort.iter().flatten() {
            let dir = if *desc { "DESC" } else { "ASC" };
            let (ty, val) = (field.ty(), field.val());
            sql += &format!(
                "CASE {ty} WHEN 'integer' THEN 0 WHEN 'real' THEN 0 WHEN 'text' THEN 1 WHEN 'true' THEN 2 \
                 WHEN 'false' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 4 ELSE 5 END {dir}, \
                 CASE WHEN {ty} IN ('integer','real','text','true','false') THEN {val} END {dir}, "
            );
        }
        sql += "seq";
        if exact && (q.limit.is_some() || q.skip > 0) {
            sql += &format!(
                " LIMIT {} OFFSET {}",
                q.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64),
                q.skip
            );
        }
        let mut st = self.conn.prepare_cached(&sql).map_err(sql_error)?;
        let rows = st
            .query_map(params_from_iter(plan.params.iter()), read_row)
            .map_err(sql_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, rec) = row.map_err(sql_error)??;
            if query::matches(&rec, &rest) {
                out.push((seq, rec));
            }
        }
        if exact {
            return Ok(out);
        }
        query::sort_by_record(&mut out, |(_, r)| r, &q.sort);
        Ok(query::page(out, q.skip, q.limit))
    }

    /// Runs `f` in an IMMEDIATE transaction (other processes may share the file), rolled back on error.
    fn in_tx<T>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, DataError>,
    ) -> Result<T, DataError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_error)?;
        let out = f(self).and_then(|v| {
            self.conn
                .execute_batch("COMMIT")
                .map(|()| v)
                .map_err(sql_error)
        });
        if out.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        out
    }

    fn save(&mut self, kind: &Kind, op: SaveOp) -> Result<Record, DataError> {
        let t = self.table(kind, true)?.ok_or_else(|| failed("no table"))?;
        match op {
            SaveOp::Create { id, data, upsert } if upsert.is_empty() => {
                self.write(t, id, data, None)
            }
            SaveOp::Create { id, data, upsert } => self.in_tx(|db| {
                let q = Query::first(upsert);
                let found = db.select(t, &q)?.into_iter().next();
                db.write(t, id, data, found)
            }),
            SaveOp::Update { id, data } => self.in_tx(|db| {
                let found = rows_by_id(&db.conn, t, std::slice::from_ref(&id))
                    .map_err(sql_error)??
                    .pop();
                db.write(t, id, data, found)
            }),
        }
    }

    /// Merges into `existing` (UPDATE by seq) or inserts a new record.
    fn write(
        &mut self,
        t: i64,
        id: Value,
        data: Record,
        existing: Option<(i64, Record)>,
    ) -> Result<Record, DataError> {
        let table = format!("wasmeca_e{t}");
        if let Some((seq, mut rec)) = existing {
            rec.extend(data);
            let id = rec.remove("id").unwrap_or(Value::Null);
            let text = serde_json::to_string(&rec).map_err(failed)?;
            let sql = format!("UPDATE {table} SET data = ?1 WHERE seq = ?2");
            self.conn
                .prepare_cached(&sql)
                .map_err(sql_error)?
                .execute((text, seq))
                .map_err(sql_error)?;
            rec.insert("id".into(), id);
            return Ok(rec);
        }
        let text = serde_json::to_string(&data).map_err(failed)?;
        let sql = format!("INSERT INTO {table} (id, data) VALUES (?1, ?2)");
        let inserted = self
            .conn
            .prepare_cached(&sql)
            .map_err(sql_error)?
            .execute((id_param(&id), text));
        match inserted {
            Ok(_) => Ok(super::memory::with_id(id, data)),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                Err(DataError::IdExists {
                    canon: String::new(),
                    id,
                })
            }
            Err(e) => Err(sql_error(e)),
        }
    }

    fn remove(&mut self, kind: &Kind, q: &Query, all: bool) -> Result<Option<Record>, DataError> {
        let Some(t) = self.table(kind, false)? else {
            return Ok(None);
        };
        let mut q = q.clone();
        if !all {
            q.limit = Some(1);
        }
        let picked = self.in_tx(|db| {
            let picked = db.select(t, &q)?;
            let mut st = db
                .conn
                .prepare_cached(&format!("DELETE FROM wasmeca_e{t} WHERE seq = ?1"))
                .map_err(sql_error)?;
            for (seq, _) in &picked {
                st.execute([seq]).map_err(sql_error)?;
            }
            Ok(picked)
        })?;
        Ok(if all {
            None
        } else {
            picked.into_iter().next().map(|(_, r)| r)
        })
    }
}

/// Reads `(seq, id, data)` into a record.
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<(i64, Record), DataError>> {
    let seq: i64 = row.get(0)?;
    let id = match row.get_ref(1)? {
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        _ => Value::Null,
    };
    let data = row.get_ref(2)?.as_str()?;
    Ok(serde_json::from_str::<Record>(data)
        .map_err(failed)
        .map(|mut rec| {
            rec.insert("id".into(), id);
            (seq, rec)
        }))
}

/// An id as an SQL value of its own storage class.
fn id_param(id: &Value) -> Sql {
    match id {
        Value::String(s) => Sql::Text(s.clone()),
        Value::Number(n) => num_param(n),
        _ => Sql::Null,
    }
}

fn num_param(n: &Number) -> Sql {
    match n.as_i64() {
        Some(i) => Sql::Integer(i),
        None => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// Where a field lives in a table.
enum Field {
    /// The `id` column.
    Id,
    /// A JSON path literal into `data`, e.g. `'$."price"'`.
    Data(String),
}

impl Field {
    /// The field, or `None` when its name cannot be a JSON path literal (filtered in Rust).
    fn of(name: &str) -> Option<Field> {
        if name == "id" {
            return Some(Field::Id);
        }
        let plain = !name.is_empty()
            && !name
                .chars()
                .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control());
        plain.then(|| Field::Data(format!("'$.\"{name}\"'")))
    }

    /// The SQL expression naming the value's JSON type (`json_type` names; NULL when missing).
    fn ty(&self) -> String {
        match self {
            Field::Id => "typeof(id)".into(),
            Field::Data(p) => format!("json_type(data, {p})"),
        }
    }

    /// The SQL expression of the value (numbers, text, 1/0 for booleans).
    fn val(&self) -> String {
        match self {
            Field::Id => "id".into(),
            Field::Data(p) => format!("json_extract(data, {p})"),
        }
    }
}

/// WHERE conditions and their parameters, built from filters.
#[derive(Default)]
struct Plan {
    /// SQL conditions, ANDed.
    conds: Vec<String>,
    /// Positional parameters, in order of their `?`.
    params: Vec<Sql>,
}

impl Plan {
    /// A strict-equality condition (true/false/NULL; NULL only when the field is missing).
    fn eq(&mut self, f: &Field, v: &Value) -> String {
        let (ty, val) = (f.ty(), f.val());
        match v {
            Value::String(s) => {
                self.params.push(Sql::Text(s.clone()));
                format!("({val} = ? AND {ty} = 'text')")
            }
            Value::Number(n) => {
                self.params.push(num_param(n));
                format!("({val} = ? AND {ty} IN ('integer','real'))")
            }
            Value::Bool(b) => format!("({val} = {} AND {ty} = '{b}')", u8::from(*b)),
            Value::Null => format!("({val} IS NULL AND {ty} = 'null')"),
            _ => "0".into(),
        }
    }

    fn any(&mut self, f: &Field, list: &[Value]) -> String {
        let terms: Vec<String> = list.iter().map(|v| self.eq(f, v)).collect();
        if terms.is_empty() {
            "0".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    fn filter(&mut self, f: &Field, test: &Test) {
        let cond = match test {
            Test::Eq(v) => self.eq(f, v),
            Test::In(list) => self.any(f, list),
            Test::Nin(list) => format!("NOT COALESCE({}, 0)", self.any(f, list)),
            Test::Ne(v) => format!("NOT COALESCE({}, 0)", self.eq(f, v)),
            Test::Range(op, operand) => {
                let types = match operand {
                    Value::Number(n) => {
                        self.params.push(num_param(n));
                        "'integer','real'"
                    }
                    Value::String(s) => {
                        self.params.push(Sql::Text(s.clone()));
                        "'text'"
                    }
                    _ => return,
                };
                let (ty, val, op) = (f.ty(), f.val(), RangeOp::sql(*op));
                format!("(CASE WHEN {ty} IN ({types}) THEN {val} {op} ? ELSE 1 END)")
            }
            Test::Never => "0".into(),
        };
        self.conds.push(cond);
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
