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
//! same read through sqlx, whose errors map to the store's error classes. Lists stay on sqlx: a
//! page is milliseconds of work, which does not belong on an async worker thread.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Key, Object, Revision};

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
        let reader = PointReader {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
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
        conn.set_prepared_statement_cache_capacity(4);
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

fn query(
    conn: &Connection,
    resource: &str,
    sql: &str,
    args: &[&str],
) -> rusqlite::Result<Option<Object>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let params = rusqlite::params_from_iter(args.iter());
    stmt.query_row(params, |r| {
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
