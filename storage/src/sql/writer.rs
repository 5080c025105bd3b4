//! SQLite writes on one dedicated thread through one rusqlite connection, committed in groups.
//!
//! Why: through sqlx every statement of a write is a hop to the connection's worker thread and
//! back, and every write is its own transaction (BEGIN, COMMIT, WAL frames, the automatic
//! checkpoint's share); profiles of concurrent creates showed those, not the server's own work,
//! as most of a create's CPU (docs/performance.md). Here the thread takes every write waiting
//! when it is free (at most [`MAX_GROUP`]) into one transaction: each write inside its own
//! savepoint at its own revision, in arrival order, so one write's failure (a conflict, an
//! existing name) rolls back only that write. The group commits once; only then is any write in
//! it answered, so an answered write is committed. A database error (a full disk, an I/O error)
//! fails the whole group, rolls it back and replaces the connection, so no later write inherits
//! a half-finished transaction (the rule `after_write` keeps for sqlx).
//!
//! What it must not do: answer before the commit, or reorder writes (revisions are allocated in
//! the order the thread takes them, which is the order they arrived on its channel).

use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::dialect::now_ms;
use super::write::{
    Existing, INSERT_CHANGE, INSERT_OBJECT, Op, SELECT_EXISTING, UPSERT_COUNT, plan,
};
use super::{DELETE_CHANGES_UPTO, MARK_COMPACTED, SELECT_META, SELECT_OLDEST_CHANGE, compact_step};
use crate::feed::EventKind;
use crate::index::Indexer;
use crate::{Key, Object, Result, StoreError};

/// Writes committed together at most.
const MAX_GROUP: usize = 64;
/// Writes waiting for the thread at most; senders wait beyond.
const QUEUE: usize = 1024;
/// The write-ahead log's size past which the writer truncates it (see [`bound_wal`]).
pub(super) const WAL_LIMIT: u64 = 64 << 20;
/// How long a truncation of the write-ahead log waits for the readers in it.
const WAL_TRUNCATE_WAIT: Duration = Duration::from_millis(100);
/// How long the writer waits for another process's lock (compaction shares the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

struct Write {
    ops: Vec<(Key, Op)>,
    reply: oneshot::Sender<Result<Vec<Object>>>,
}

/// What the thread is asked to do.
enum Job {
    /// A write, committed in the next group.
    Write(Write),
    /// One batch of change-feed compaction towards a revision, in its own transaction between
    /// groups; answers whether the target is reached.
    Compact {
        upto: i64,
        reply: oneshot::Sender<Result<bool>>,
    },
}

/// The handle of the writer thread; when every handle is dropped the thread ends after the
/// queued writes.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread on the database at `path` (a file; `None` for an in-memory database or
    /// when the connection cannot be opened, and the caller keeps writing through sqlx).
    /// `committed` runs after every commit (it wakes the change-feed tailer).
    pub(super) fn start(
        path: &str,
        url: &str,
        indexer: std::sync::Arc<dyn Indexer>,
        committed: impl Fn() + Send + 'static,
    ) -> Option<Writer> {
        if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
            return None;
        }
        let conn = connect(path).ok()?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("kfp-sqlite-writer".into())
            .spawn(move || run(conn, &path, indexer.as_ref(), rx, committed))
            .ok()?;
        Some(Writer { jobs })
    }

    /// Runs `ops` in one savepoint of the next group; answers once the group has committed.
    pub(super) async fn write(&self, ops: Vec<(Key, Op)>) -> Result<Vec<Object>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write(Write { ops, reply }))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer stopped".into()))?
    }

    /// Deletes change-feed history up to `upto` (at most the current revision), one batch of
    /// `COMPACT_BATCH` revisions per transaction, queued with the writes. On this thread, not
    /// a connection of its own: a compaction running beside the writer was a transaction almost
    /// all the time, and the write-ahead log could not be truncated while it ran.
    pub(super) async fn compact(&self, upto: i64) -> Result<()> {
        loop {
            let (reply, answer) = oneshot::channel();
            self.jobs
                .send(Job::Compact { upto, reply })
                .await
                .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
            let done = answer
                .await
                .map_err(|_| StoreError::Unavailable("the SQLite writer stopped".into()))??;
            if done {
                return Ok(());
            }
        }
    }
}

fn connect(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The same settings as the sqlx pool's connections (journal_mode is the file's).
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn run(
    mut conn: Connection,
    path: &str,
    indexer: &dyn Indexer,
    mut rx: mpsc::Receiver<Job>,
    committed: impl Fn(),
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = Vec::new();
        let mut compact = None;
        match first {
            Job::Write(w) => group.push(w),
            Job::Compact { upto, reply } => compact = Some((upto, reply)),
        }
        while compact.is_none() && group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Job::Write(w)) => group.push(w),
                Ok(Job::Compact { upto, reply }) => compact = Some((upto, reply)),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_and_answer(&mut conn, path, indexer, group, &committed);
        }
        if let Some((upto, reply)) = compact {
            let outcome = compact_batch(&conn, upto);
            if outcome.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            } else {
                bound_wal(&conn, path);
            }
            let _ = reply.send(outcome);
        }
    }
}

/// Commits one group and answers its writes.
fn commit_and_answer(
    conn: &mut Connection,
    path: &str,
    indexer: &dyn Indexer,
    group: Vec<Write>,
    committed: &impl Fn(),
) {
    let (ops, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|j| (j.ops, j.reply)).unzip();
    let answers = match commit_group(conn, indexer, ops) {
        Ok(answers) => {
            // Before the tailer is woken, so its read does not hold the log open.
            bound_wal(conn, path);
            committed();
            answers
        }
        Err(e) => {
            // Roll back whatever is left and never reuse this connection.
            let _ = conn.execute_batch("ROLLBACK");
            tracing::warn!(error = %e, "SQLite write group failed; reconnecting");
            match connect(path) {
                Ok(c) => *conn = c,
                Err(e2) => tracing::warn!(error = %e2, "SQLite writer cannot reconnect yet"),
            }
            replies.iter().map(|_| Err(e.clone())).collect()
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// One compaction transaction: history up to `upto` (at most the current revision), in the
/// batch `compact_step` gives; `compacted` moves with it, so a watch never finds a revision
/// above it missing. True once the target is reached.
fn compact_batch(conn: &Connection, upto: i64) -> Result<bool> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err)?;
    let meta = |name: &str| -> Result<i64> {
        conn.prepare_cached(SELECT_META)
            .and_then(|mut s| s.query_row([name], |r| r.get(0)))
            .map_err(sqlite_err)
    };
    let target = upto.min(meta("revision")?);
    let done = meta("compacted")?;
    if done >= target {
        conn.execute_batch("COMMIT").map_err(sqlite_err)?;
        return Ok(true);
    }
    let oldest: Option<i64> = conn
        .query_row(SELECT_OLDEST_CHANGE, [], |r| r.get(0))
        .map_err(sqlite_err)?;
    let step = compact_step(done, oldest, target);
    conn.execute(DELETE_CHANGES_UPTO, [step])
        .map_err(sqlite_err)?;
    conn.execute(MARK_COMPACTED, [step, step])
        .map_err(sqlite_err)?;
    conn.execute_batch("COMMIT").map_err(sqlite_err)?;
    Ok(step >= target)
}

/// Truncates the write-ahead log once it has grown past [`WAL_LIMIT`].
///
/// SQLite's automatic checkpoint copies the log into the database but restarts the log from its
/// beginning only at a moment when no reader uses it; under sustained writes with the change
/// tailer and other readers always in some read transaction that moment may never come, and the
/// log grows without bound (a 1M-object seed left a 29 GB log beside a 7 GB database). A
/// `TRUNCATE` checkpoint copies every frame and resets the log once no reader is in it; it is
/// tried after a commit and before the tailer is woken (so the tailer's next read cannot be in
/// the way), waits at most [`WAL_TRUNCATE_WAIT`] for the readers already in the log (readers
/// that start meanwhile read the database file), and is tried again after the next commit if
/// a reader was still there. Without the wait, the log of a seed at 3,000 objects/s still grew
/// past 2 GB: some reader was in it at every attempt.
fn bound_wal(conn: &Connection, path: &str) {
    let wal = format!("{path}-wal");
    if std::fs::metadata(&wal).map_or(true, |m| m.len() <= WAL_LIMIT) {
        return;
    }
    if conn.busy_timeout(WAL_TRUNCATE_WAIT).is_err() {
        return;
    }
    let outcome = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "SQLite writer cannot restore its busy timeout");
    }
    match outcome {
        Ok((0, _, _)) => tracing::debug!("SQLite write-ahead log truncated"),
        Ok((_, frames, copied)) => {
            tracing::debug!(
                frames,
                copied,
                "SQLite write-ahead log in use; truncation retried after the next commit"
            )
        }
        Err(e) => {
            tracing::debug!(error = %e, "SQLite write-ahead log truncation failed; retried after the next commit")
        }
    }
}

/// One transaction: each job in a savepoint; a job's own failure (precondition, existence) is
/// its answer; a database error is the group's.
fn commit_group(
    conn: &Connection,
    indexer: &dyn Indexer,
    jobs: Vec<Vec<(Key, Op)>>,
) -> Result<Vec<Result<Vec<Object>>>> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_err)?;
    let mut answers = Vec::with_capacity(jobs.len());
    for ops in jobs {
        conn.execute_batch("SAVEPOINT job").map_err(sqlite_err)?;
        let mut written = Vec::with_capacity(ops.len());
        let mut outcome = Ok(());
        for (key, op) in ops {
            match apply(conn, indexer, &key, op) {
                Ok(o) => written.push(o),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => {
                conn.execute_batch("RELEASE job").map_err(sqlite_err)?;
                answers.push(Ok(written));
            }
            Err(e @ (StoreError::Internal(_) | StoreError::Unavailable(_))) => return Err(e),
            Err(e) => {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
                    .map_err(sqlite_err)?;
                answers.push(Err(e));
            }
        }
    }
    conn.execute_batch("COMMIT").map_err(sqlite_err)?;
    Ok(answers)
}

/// One write at the next revision (the statements of `SqlStore::apply`, for SQLite).
fn apply(conn: &Connection, indexer: &dyn Indexer, key: &Key, op: Op) -> Result<Object> {
    let rev: i64 = conn
        .prepare_cached(
            "UPDATE kfp_meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sqlite_err)?;
    let existing = conn
        .prepare_cached(SELECT_EXISTING)
        .and_then(|mut s| {
            s.query_row(params![key.resource, key.namespace, key.name], |r| {
                Ok(Existing {
                    uid: r.get(0)?,
                    revision: r.get(1)?,
                    value: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(sqlite_err)?;
    let w = plan(indexer, key, op, existing, rev)?;
    let k = params![key.resource, key.namespace, key.name];
    let exec = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<()> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(p))
            .map(|_| ())
            .map_err(sqlite_err)
    };
    let delete = |table: &str| -> Result<()> {
        exec(
            &format!("DELETE FROM {table} WHERE resource = ? AND namespace = ? AND name = ?"),
            k,
        )
    };
    let idx = &w.idx;
    match w.kind {
        EventKind::Added | EventKind::Modified => {
            let modified = w.kind == EventKind::Modified;
            if modified {
                delete("kfp_objects")?;
            }
            let inserted = conn.prepare_cached(INSERT_OBJECT).and_then(|mut s| {
                s.execute(params![
                    key.resource,
                    key.namespace,
                    key.name,
                    idx.uid,
                    rev,
                    idx.created_at,
                    idx.columns.title,
                    idx.columns.parent_name,
                    idx.columns.parent_uid,
                    idx.columns.alias,
                    idx.columns.detail,
                    idx.columns.title.to_lowercase(),
                    w.text,
                ])
            });
            match inserted {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::AlreadyExists(key.clone()));
                }
                Err(e) => return Err(sqlite_err(e)),
            }
            if !modified {
                exec(UPSERT_COUNT, params![key.resource, key.namespace, 1, 1])?;
            }
            for (table, key_col, value_col, pairs) in [
                ("kfp_labels", "label_key", "label_value", &idx.labels),
                ("kfp_terms", "term_key", "term_value", &idx.columns.terms),
            ] {
                if modified {
                    delete(table)?;
                }
                let sql = format!(
                    "INSERT INTO {table} (resource, namespace, name, {key_col}, {value_col}) VALUES (?, ?, ?, ?, ?)"
                );
                for (pk, pv) in pairs {
                    exec(&sql, params![key.resource, key.namespace, key.name, pk, pv])?;
                }
            }
        }
        EventKind::Deleted => {
            delete("kfp_objects")?;
            exec(UPSERT_COUNT, params![key.resource, key.namespace, -1, -1])?;
            delete("kfp_labels")?;
            delete("kfp_terms")?;
        }
    }
    exec(
        INSERT_CHANGE,
        params![
            rev,
            key.resource,
            key.namespace,
            key.name,
            w.kind.as_str(),
            w.text,
            w.prev,
            now_ms()
        ],
    )?;
    Ok(w.into_object(key, rev))
}

/// rusqlite's errors in the store's classes, as `db_err` maps sqlx's: a busy or locked database
/// is Unavailable (retry later); anything else (a full disk, an I/O error) is Internal.
fn sqlite_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
