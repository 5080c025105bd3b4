//! SQLite point reads (one object by key or by uid) on the calling thread, through a small pool of
//! read-only rusqlite connections to the same database file.
//!
//! Why: sqlx runs each SQLite connection on its own worker thread, so every query is a hop to that
//! thread and back (two futex wake-ups and context switches). For a GET, whose query takes a few
//! microseconds from the page cache, the hops were the largest single cost of the request
//! (docs/performance.md). A read-only connection in WAL mode sees every transaction committed
//! before its read starts, so a GET after a write's response still reads that write.
//!
//! What it must not do: write, hold a connection across an `.await`, or wait on a lock for long on
//! an async worker thread. Its busy timeout is short; any error other than "no such row" (a busy
//! database, a schema change it cannot handle, an I/O error) returns `None` and the caller runs the
//! same read through sqlx, whose errors map to the store's error classes.
//!
//! Lists on SQLite also come here, but on a blocking thread ([`PointReader::with_read_transaction`]):
//! a page is milliseconds of work, which does not belong on an async worker thread, and one hop
//! per page replaces sqlx's hop per row. The list's logic is the same code for both
//! ([`super::read::ListReads`]).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::read::ListReads;
use crate::{Key, Object, Result, Revision, StoreError};

/// Longest a point read waits for a lock (a WAL checkpoint's brief exclusive moments) before the
/// read goes to sqlx instead.
const BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// Idle connections kept; more are opened under bursts and closed when returned.
const MAX_IDLE: usize = 8;

const BY_KEY: &str = "SELECT namespace, name, uid, revision, value FROM kfp_objects \
                      WHERE resource = ?1 AND namespace = ?2 AND name = ?3";
const BY_UID: &str = "SELECT namespace, name, uid, revision, value FROM kfp_objects \
                      WHERE resource = ?1 AND uid = ?2";

/// Read-only connections to one SQLite file.
pub(super) struct PointReader {
    path: String,
    idle: Mutex<Vec<Connection>>,
    /// Lists reading at once: one per core. A page is CPU work (rows into objects), so more at
    /// once adds no throughput, only pages held in memory together (16 concurrent 1.3 MB pages
    /// held about 100 MiB more resident memory than 2 at a time).
    lists: tokio::sync::Semaphore,
}

/// The outcome of a point read: `Some(None)` is "no such object"; `None` is "ask sqlx".
type Outcome = Option<Option<Object>>;

impl PointReader {
    /// A reader of the database at `path`, or `None` where another connection cannot see the
    /// same database (in-memory databases) or a first connection cannot be opened.
    pub(super) fn open(path: &str, url: &str) -> Option<PointReader> {
        if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let reader = PointReader {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            lists: tokio::sync::Semaphore::new(cores),
        };
        let first = reader.connect().ok()?;
        reader.put(first);
        Some(reader)
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    fn take(&self) -> Option<Connection> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        pooled.or_else(|| self.connect().ok())
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// The object at `key`.
    pub(super) fn get(&self, key: &Key) -> Outcome {
        self.read(
            &key.resource,
            BY_KEY,
            &[&key.resource, &key.namespace, &key.name],
        )
    }

    /// The object of `resource` whose uid is `uid`.
    pub(super) fn get_by_uid(&self, resource: &str, uid: &str) -> Outcome {
        self.read(resource, BY_UID, &[resource, uid])
    }

    fn read(&self, resource: &str, sql: &str, args: &[&str]) -> Outcome {
        let conn = self.take()?;
        let found = query(&conn, resource, sql, args);
        match found {
            Ok(found) => {
                self.put(conn);
                Some(found)
            }
            Err(e) => {
                // The connection is dropped: a fresh one is opened next time.
                tracing::debug!(error = %e, "SQLite point read failed; retrying through sqlx");
                None
            }
        }
    }
}

impl PointReader {
    /// Waits for a list's turn (see `lists`); `None` once the reader is closed.
    pub(super) async fn list_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.lists.acquire().await.ok()
    }

    /// Runs `f` with the reads of one read transaction on a pooled connection (blocking: call it
    /// on a blocking thread). `None` when a database error got in the way (the caller then
    /// reads through sqlx); `f`'s own errors (a compacted revision, a bad token) are returned.
    pub(super) fn with_read_transaction<T>(
        &self,
        f: impl FnOnce(&mut dyn ListReads) -> Option<Result<T>>,
    ) -> Option<Result<T>> {
        let conn = self.take()?;
        if let Err(e) = conn.execute_batch("BEGIN") {
            tracing::debug!(error = %e, "SQLite read transaction failed; retrying through sqlx");
            return None;
        }
        let mut reads = SqliteReads { conn, failed: None };
        let out = f(&mut reads);
        let SqliteReads { conn, failed } = reads;
        let ended = conn.execute_batch("COMMIT");
        if let Some(e) = failed.or(ended.err()) {
            tracing::debug!(error = %e, "SQLite read transaction failed; retrying through sqlx");
            return None;
        }
        self.put(conn);
        out
    }
}

/// [`ListReads`] in a rusqlite read transaction; the first database error is kept so that the
/// whole read goes to sqlx.
struct SqliteReads {
    conn: Connection,
    failed: Option<rusqlite::Error>,
}

impl SqliteReads {
    fn run<T>(&mut self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        read(&self.conn).map_err(|e| {
            let err = StoreError::Unavailable(format!("SQLite read: {e}"));
            self.failed.get_or_insert(e);
            err
        })
    }
}

#[async_trait::async_trait]
impl ListReads for SqliteReads {
    async fn counter(&mut self, name: &str) -> Result<i64> {
        self.run(|c| {
            c.prepare_cached("SELECT value FROM kfp_meta WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
        })
    }

    async fn objects(
        &mut self,
        resource: &str,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<Object>> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(binds), |r| object(resource, r))?;
            rows.collect()
        })
    }

    async fn changes(
        &mut self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<(String, String, String)>> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(binds), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })
    }

    async fn count(&mut self, sql: &str, binds: &[String]) -> Result<i64> {
        self.run(|c| {
            c.prepare_cached(sql)?
                .query_row(rusqlite::params_from_iter(binds), |r| r.get(0))
        })
    }
}

/// A row of `namespace, name, uid, revision, value` as an object of `resource`.
fn object(resource: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Object> {
    let revision: i64 = r.get(3)?;
    let value: String = r.get(4)?;
    Ok(Object {
        key: Key {
            resource: resource.to_owned(),
            namespace: r.get(0)?,
            name: r.get(1)?,
        },
        uid: r.get(2)?,
        revision: Revision(revision as u64),
        data: Bytes::from(value),
    })
}

fn query(
    conn: &Connection,
    resource: &str,
    sql: &str,
    args: &[&str],
) -> rusqlite::Result<Option<Object>> {
    conn.prepare_cached(sql)?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| {
            object(resource, r)
        })
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn database(dir: &std::path::Path) -> String {
        let path = dir.join("point.db").display().to_string();
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE kfp_objects (resource TEXT, namespace TEXT, name TEXT, uid TEXT,
                                       revision INTEGER, value TEXT);",
        )
        .expect("schema");
        conn.execute(
            "INSERT INTO kfp_objects VALUES ('pipelines', 'ns', 'a', 'u-1', 7, '{\"x\":1}')",
            params![],
        )
        .expect("insert");
        path
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kfp-point-{tag}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn uuid_like() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    #[test]
    fn reads_by_key_and_uid_and_tells_missing_from_failure() {
        let dir = temp_dir("read");
        let path = database(&dir);
        let reader = PointReader::open(&path, &format!("sqlite://{path}")).expect("reader");
        let found = reader
            .get(&Key::new("pipelines", "ns", "a"))
            .expect("answered")
            .expect("found");
        assert_eq!(found.uid, "u-1");
        assert_eq!(found.revision, Revision(7));
        assert_eq!(&found.data[..], b"{\"x\":1}");
        let by_uid = reader
            .get_by_uid("pipelines", "u-1")
            .expect("answered")
            .expect("found");
        assert_eq!(by_uid.key, Key::new("pipelines", "ns", "a"));
        assert_eq!(reader.get(&Key::new("pipelines", "ns", "b")), Some(None));
        assert_eq!(reader.get(&Key::new("other", "ns", "a")), Some(None));
        // A database it cannot read (the table is gone) is "ask sqlx", not "missing".
        Connection::open(&path)
            .expect("open")
            .execute_batch("DROP TABLE kfp_objects")
            .expect("drop");
        assert_eq!(reader.get(&Key::new("pipelines", "ns", "a")), None);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sees_writes_committed_after_it_opened() {
        let dir = temp_dir("fresh");
        let path = database(&dir);
        let reader = PointReader::open(&path, &format!("sqlite://{path}")).expect("reader");
        assert_eq!(reader.get(&Key::new("pipelines", "ns", "b")), Some(None));
        Connection::open(&path)
            .expect("open")
            .execute(
                "INSERT INTO kfp_objects VALUES ('pipelines', 'ns', 'b', 'u-2', 8, '{}')",
                params![],
            )
            .expect("insert");
        let b = reader
            .get(&Key::new("pipelines", "ns", "b"))
            .expect("answered")
            .expect("found");
        assert_eq!(b.revision, Revision(8));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn in_memory_databases_have_no_reader() {
        assert!(PointReader::open(":memory:", "sqlite::memory:").is_none());
        assert!(PointReader::open("x.db", "sqlite://x.db?mode=memory").is_none());
    }
}
