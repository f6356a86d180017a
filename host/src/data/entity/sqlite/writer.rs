//! The SQLite store's writer: the thread that owns the writing connection and runs every job
//! sent to it (saves, lists, removes, and the loads the readers hand over), so SQLite's one
//! writer needs no lock and keeps its prepared statements warm.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior, params_from_iter};
use serde_json::Value;

use super::MAX_AUTO_INDEXES;
use super::plan::{
    Field, Plan, failed, find_table, id_lookup, id_param, read_row, rows_by_id, sql_error,
};
use crate::data::DataError;
use crate::data::entity::query::{self, Filter, Query, SortKey, Test};
use crate::data::entity::{Kind, Record, SaveOp};

/// A unit of work for the worker thread.
pub(super) type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The worker thread's state.
pub(super) struct Db {
    /// The one connection.
    conn: Connection,
    /// Table numbers of the known entity types (only hits are cached: another process may add).
    tables: HashMap<Kind, i64>,
    /// Fields indexed per table (names of the index expressions' fields).
    indexed: HashMap<i64, HashSet<String>>,
    /// The most entity kinds (each a table) the store may hold (`[data] max_kinds`).
    max_kinds: usize,
}

/// How long the worker keeps looking for a next job before it sleeps: a caller that sends its
/// next request right after a reply then skips a thread wake-up (bounded, so idle costs nothing).
const SPIN: Duration = Duration::from_micros(50);

/// How long the worker waits for a job before it takes itself for idle and gives back its page
/// cache ([`Db::give_back_memory`]).
const IDLE: Duration = Duration::from_secs(1);

/// The next job: one already queued, else one arriving within [`SPIN`], else wait for one,
/// calling `idle` once if none comes within [`IDLE`].
pub(super) fn next_job(queue: &mpsc::Receiver<Job>, idle: impl FnOnce()) -> Option<Job> {
    let start = Instant::now();
    loop {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Empty) => break,
        }
    }
    match queue.recv_timeout(IDLE) {
        Ok(job) => Some(job),
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            idle();
            queue.recv().ok()
        }
    }
}

impl Db {
    pub(super) fn open(path: &str, max_kinds: usize) -> Result<Db, DataError> {
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
            max_kinds,
        })
    }

    /// Runs one job. A job that panics must not take the store down with it, nor leave a
    /// transaction open: the saves after it would run inside it, be answered, and be lost when
    /// the next transaction's `BEGIN` failed and rolled back.
    pub(super) fn run(&mut self, job: Job) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(self)));
        if outcome.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Frees the connection's page cache (up to SQLite's default 2 MB, allocated with the C
    /// library's `malloc`): a host idle after a burst of writes should not hold it for good. The
    /// next write reads what it needs again, from the OS's cache of the file.
    pub(super) fn give_back_memory(&self) {
        let _ = self.conn.execute_batch("PRAGMA shrink_memory");
    }

    /// The table number of a kind; created when `create`, else `None` when it has none yet.
    pub(super) fn table(&mut self, kind: &Kind, create: bool) -> Result<Option<i64>, DataError> {
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
            // Each kind is a table and its indexes: a caller saving ever new kinds (an exposed
            // store) must not make tables without end.
            let kinds: i64 = tx
                .query_row("SELECT count(*) FROM wasmeca_kind", [], |r| r.get(0))
                .map_err(sql_error)?;
            if usize::try_from(kinds).unwrap_or(usize::MAX) >= self.max_kinds {
                return Err(DataError::KindsFull {
                    canon: crate::error::clip(&format!("{}/{}", kind.base, kind.name)).into_owned(),
                    limit: self.max_kinds,
                });
            }
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
    pub(super) fn ensure_index(
        &mut self,
        t: i64,
        field: &str,
        path: &str,
    ) -> Result<(), DataError> {
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
    pub(super) fn select(&mut self, t: i64, q: &Query) -> Result<Vec<(i64, Record)>, DataError> {
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
    pub(super) fn in_tx<T>(
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

    pub(super) fn save(&mut self, kind: &Kind, op: SaveOp) -> Result<Record, DataError> {
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
    pub(super) fn write(
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
            Ok(_) => Ok(crate::data::entity::memory::with_id(id, data)),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                Err(DataError::IdExists {
                    canon: String::new(),
                    id,
                })
            }
            Err(e) => Err(sql_error(e)),
        }
    }

    pub(super) fn remove(
        &mut self,
        kind: &Kind,
        q: &Query,
        all: bool,
    ) -> Result<Option<Record>, DataError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_waiting_longer_than_idle_gives_back_once_then_takes_the_job() {
        let (send, queue) = mpsc::channel::<Job>();
        let (idled, idle) = mpsc::channel::<()>();
        // The job is sent only once the worker has idled: a worker that never does fails here
        // (no job after ten idle times) rather than passing on a slow machine.
        let late = std::thread::spawn(move || {
            let waited = idle.recv_timeout(IDLE * 10);
            send.send(Box::new(|_| {})).expect("queued");
            waited.is_ok()
        });
        let job = next_job(&queue, || idled.send(()).expect("told"));
        assert!(job.is_some(), "the late job");
        assert!(late.join().expect("the sender"), "idle before the job came");
    }

    #[test]
    fn a_job_that_panics_inside_a_transaction_leaves_none_open() {
        let dir = std::env::temp_dir().join(format!("wasmeca-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("data.db");
        let mut db = Db::open(path.to_str().expect("a path"), 10).expect("opens");
        db.run(Box::new(|db| {
            let _ = db.in_tx(|_| -> Result<(), DataError> { panic!("a job's bug") });
        }));
        assert!(db.conn.is_autocommit(), "rolled back");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_worker_kept_busy_never_idles() {
        let (send, queue) = mpsc::channel::<Job>();
        for _ in 0..3 {
            send.send(Box::new(|_| {})).expect("queued");
        }
        drop(send);
        let mut taken = 0;
        while next_job(&queue, || panic!("idle with jobs queued")).is_some() {
            taken += 1;
        }
        assert_eq!(taken, 3, "every job, then none once the queue is closed");
    }
}
