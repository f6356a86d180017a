//! The SQLite store's readers: read-only connections on which loads by id run on the caller's
//! thread, skipping the hand-off to the writer (a lock or an SQL error hands the load over).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use super::IDLE_READERS;
use super::plan::{find_table, rows_by_id};
use crate::data::DataError;
use crate::data::entity::{Kind, Record};

/// The pool of read-only connections loads by id use.
#[derive(Debug)]
pub(super) struct Readers {
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
pub(super) struct Reader {
    /// The connection (busy timeout zero: it never waits on the caller's thread).
    conn: Connection,
    /// Table numbers it has looked up (only hits: a kind may get its table later).
    tables: HashMap<Kind, i64>,
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
    pub(super) fn open(path: String) -> Option<Readers> {
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
    pub(super) fn reader(&self) -> rusqlite::Result<Reader> {
        let reader = Reader::open(&self.path)?;
        if file_id(&self.path) != self.file {
            return Err(rusqlite::Error::InvalidPath(self.path.clone().into()));
        }
        Ok(reader)
    }

    /// The records with `ids` in `kind`, read on this thread; `None` when the read met a lock or
    /// an SQL error, for the worker to answer instead.
    pub(super) fn by_ids(
        &self,
        kind: &Kind,
        ids: &[Value],
    ) -> Option<Result<Vec<(i64, Record)>, DataError>> {
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
    pub(super) fn open(path: &str) -> rusqlite::Result<Reader> {
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
    pub(super) fn by_ids(
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
