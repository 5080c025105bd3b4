//! The SQL backend, through sqlx's `Any` driver: SQLite (embedded default, WAL), PostgreSQL and
//! MySQL/MariaDB, chosen by URL (`sqlite://PATH`, `postgres://...`, `mysql://...`).
//!
//! Ordering: every write transaction first increments the `revision` row of `kfp_meta`; the row
//! lock it takes is held to commit, so the next writer gets the next revision only after this one
//! is visible. Commits therefore become visible in revision order with no gaps, across threads
//! and processes, and the tailer can read `kfp_changes` strictly in order (no kine-style gap
//! filling). On SQLite an in-process mutex additionally queues writers so they do not spin on
//! `SQLITE_BUSY`.
//!
//! Each store instance tails `kfp_changes` into its [`Feed`]: woken at once by its own writes, by
//! PostgreSQL `LISTEN/NOTIFY` for other instances' writes, and by a poll interval otherwise.

mod schema;

use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::feed::{Event, EventKind, Feed, FeedConfig, History, State};
use crate::index::{index_fields, set_resource_version};
use crate::query::{self, Column, Cursor, Op as QueryOp, QueryPage, QueryRequest};
use crate::selector::{Field, Requirement};
use crate::token::ContinueToken;
use crate::{
    Key, ListPage, ListRequest, Object, Preconditions, ReadAt, Result, Revision, Store, StoreError,
    WatchRequest, WatchStream,
};

/// Settings of a SQL store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite://PATH`, `postgres://...` or `mysql://...`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How often the tailer looks for other processes' writes (own writes wake it at once).
    pub poll_interval: Duration,
    /// How long to wait for a pooled connection before answering Unavailable.
    pub acquire_timeout: Duration,
    /// Ring, channel and bookmark settings.
    pub feed: FeedConfig,
}

impl StoreConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            max_connections: 8,
            poll_interval: Duration::from_millis(500),
            acquire_timeout: Duration::from_secs(5),
            feed: FeedConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    fn of(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            _ => Err(StoreError::Invalid(format!(
                "unsupported store URL {url:?}: use sqlite://PATH, postgres://... or mysql://..."
            ))),
        }
    }

    /// Queries are written with `?`; PostgreSQL wants `$1, $2, ...`. Every value reaches the
    /// database as a bound parameter; only static text and integers are ever formatted into SQL.
    fn sql(self, q: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(self.placeholders(q))
    }

    fn placeholders(self, q: &str) -> String {
        if self != Dialect::Postgres {
            return q.to_owned();
        }
        let mut out = String::with_capacity(q.len() + 16);
        let mut n = 0;
        let mut in_quote = false;
        for c in q.chars() {
            match c {
                '\'' => {
                    in_quote = !in_quote;
                    out.push(c);
                }
                '?' if !in_quote => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            }
        }
        out
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) => {
            let msg = d.message().to_owned();
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite busy/locked, PostgreSQL admin shutdown / cannot connect, MySQL gone away.
            if msg.contains("database is locked")
                || code.starts_with("57P")
                || code.starts_with("08")
                || msg.contains("server has gone away")
            {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

struct Inner {
    pool: AnyPool,
    dialect: Dialect,
    feed: Arc<Feed>,
    wake: Arc<Notify>,
    /// SQLite only: one writer at a time in this process.
    write_lock: tokio::sync::Mutex<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A [`Store`] on a SQL database.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

/// The part of the store the tailer and watch replay need (no feed, no tasks).
#[derive(Clone)]
struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

static DRIVERS: Once = Once::new();

impl SqlStore {
    /// Connects, applies the schema and starts tailing the change feed.
    pub async fn open(config: StoreConfig) -> Result<SqlStore> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let dialect = Dialect::of(&config.url)?;
        let mut url = config.url.clone();
        if dialect == Dialect::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            if let Some(parent) = std::path::Path::new(&path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db_err)?;
        let db = Db { pool, dialect };
        db.migrate().await?;
        let start = db.current_revision().await?;
        let feed = Feed::new(config.feed.clone(), start);
        let wake = Arc::new(Notify::new());
        let mut tasks = vec![tokio::spawn(tail(
            db.clone(),
            feed.clone(),
            wake.clone(),
            config.poll_interval,
        ))];
        if dialect == Dialect::Postgres {
            tasks.push(tokio::spawn(listen(config.url.clone(), wake.clone())));
        }
        Ok(SqlStore {
            inner: Arc::new(Inner {
                pool: db.pool,
                dialect,
                feed,
                wake,
                write_lock: tokio::sync::Mutex::new(()),
                tasks,
            }),
        })
    }

    fn db(&self) -> Db {
        Db {
            pool: self.inner.pool.clone(),
            dialect: self.inner.dialect,
        }
    }

    /// The newest revision this instance's feed has published (for tests and metrics).
    pub fn feed_revision(&self) -> Revision {
        self.inner.feed.latest()
    }

    /// Closes the pool (tests simulate shutdown with it).
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// The revision to compact to so that at least `keep` revisions stay replayable.
    pub async fn compaction_target(&self, keep: u64) -> Result<Revision> {
        let current = self.current_revision().await?;
        Ok(Revision(current.0.saturating_sub(keep)))
    }

    async fn write(&self, key: &Key, op: Op) -> Result<Object> {
        let _guard = match self.inner.dialect {
            Dialect::Sqlite => Some(self.inner.write_lock.lock().await),
            _ => None,
        };
        let db = self.db();
        let d = db.dialect;
        let mut tx = db.pool.begin().await.map_err(db_err)?;
        let rev = allocate(&mut tx, d).await?;
        let existing = sqlx::query(d.sql(
            "SELECT uid, revision, value FROM kfp_objects WHERE resource = ? AND namespace = ? AND name = ?",
        ))
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .map(|r| -> Result<(String, i64, String)> {
            Ok((
                r.try_get(0).map_err(db_err)?,
                r.try_get(1).map_err(db_err)?,
                r.try_get(2).map_err(db_err)?,
            ))
        })
        .transpose()?;
        let check = |pre: &Preconditions, uid: &str, old_rev: i64| -> Result<()> {
            if let Some(want) = &pre.uid
                && want != uid
            {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    message: format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                });
            }
            if let Some(want) = pre.resource_version
                && want.0 as i64 != old_rev
            {
                return Err(StoreError::Conflict {
                        key: key.clone(),
                        message: "the object has been modified; please apply your changes to the latest version and try again".into(),
                    });
            }
            Ok(())
        };
        let (kind, mut object, prev, uid) = match op {
            Op::Create(object) => {
                if existing.is_some() {
                    return Err(StoreError::AlreadyExists(key.clone()));
                }
                let uid = index_fields(&object).uid;
                (EventKind::Added, object, None, uid)
            }
            Op::Update(object, pre) => {
                let Some((uid, old_rev, old)) = existing else {
                    return Err(StoreError::NotFound(key.clone()));
                };
                check(&pre, &uid, old_rev)?;
                (EventKind::Modified, object, Some(old), uid)
            }
            Op::Delete(pre) => {
                let Some((uid, old_rev, old)) = existing else {
                    return Err(StoreError::NotFound(key.clone()));
                };
                check(&pre, &uid, old_rev)?;
                let last: Value = serde_json::from_str(&old)
                    .map_err(|e| StoreError::Internal(format!("stored {key} is not JSON: {e}")))?;
                (EventKind::Deleted, last, Some(old), uid)
            }
        };
        set_resource_version(&mut object, rev as u64);
        let text = serde_json::to_string(&object)
            .map_err(|e| StoreError::Internal(format!("cannot encode {key}: {e}")))?;
        let idx = index_fields(&object);
        match kind {
            EventKind::Added | EventKind::Modified => {
                if kind == EventKind::Modified {
                    delete_key(&mut tx, d, "kfp_objects", key).await?;
                }
                let inserted = sqlx::query(d.sql(
                    "INSERT INTO kfp_objects (resource, namespace, name, uid, revision, created_at, \
                     display_name, pipeline_name, pipeline_uid, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .bind(&idx.uid)
                .bind(rev)
                .bind(idx.created_at)
                .bind(&idx.display_name)
                .bind(&idx.pipeline_name)
                .bind(&idx.pipeline_uid)
                .bind(&text)
                .execute(&mut *tx)
                .await;
                if let Err(e) = inserted {
                    if let sqlx::Error::Database(dbe) = &e
                        && dbe.is_unique_violation()
                    {
                        return Err(StoreError::AlreadyExists(key.clone()));
                    }
                    return Err(db_err(e));
                }
                replace_labels(&mut tx, d, key, &idx.labels, kind == EventKind::Modified).await?;
            }
            EventKind::Deleted => {
                delete_key(&mut tx, d, "kfp_objects", key).await?;
                delete_key(&mut tx, d, "kfp_labels", key).await?;
            }
        }
        sqlx::query(d.sql(
            "INSERT INTO kfp_changes (revision, resource, namespace, name, event, value, prev_value, created_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(rev)
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(kind.as_str())
        .bind(&text)
        .bind(prev)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if d == Dialect::Postgres {
            sqlx::query("SELECT pg_notify('kfp_changes', '')")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        self.inner.wake.notify_one();
        Ok(Object {
            key: key.clone(),
            uid,
            revision: Revision(rev as u64),
            data: Bytes::from(text),
        })
    }
}

enum Op {
    Create(Value),
    Update(Value, Preconditions),
    Delete(Preconditions),
}

async fn allocate(tx: &mut sqlx::Transaction<'_, sqlx::Any>, d: Dialect) -> Result<i64> {
    match d {
        Dialect::MySql => {
            sqlx::query(
                "UPDATE kfp_meta SET value = LAST_INSERT_ID(value + 1) WHERE name = 'revision'",
            )
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
            sqlx::query("SELECT CAST(LAST_INSERT_ID() AS SIGNED)")
                .fetch_one(&mut **tx)
                .await
                .map_err(db_err)?
                .try_get(0)
                .map_err(db_err)
        }
        _ => sqlx::query(
            "UPDATE kfp_meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
        )
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err),
    }
}

/// Deletes the rows of `key` from a table keyed by (resource, namespace, name).
async fn delete_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: Dialect,
    table: &'static str,
    key: &Key,
) -> Result<()> {
    sqlx::query(d.sql(&format!(
        "DELETE FROM {table} WHERE resource = ? AND namespace = ? AND name = ?"
    )))
    .bind(&key.resource)
    .bind(&key.namespace)
    .bind(&key.name)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn replace_labels(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: Dialect,
    key: &Key,
    labels: &BTreeMap<String, String>,
    delete_first: bool,
) -> Result<()> {
    if delete_first {
        delete_key(tx, d, "kfp_labels", key).await?;
    }
    if labels.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?, ?)"; labels.len()].join(", ");
    let sql = d.sql(&format!(
        "INSERT INTO kfp_labels (resource, namespace, name, label_key, label_value) VALUES {values}"
    ));
    let mut q = sqlx::query(sql);
    for (k, v) in labels {
        q = q
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .bind(k)
            .bind(v);
    }
    q.execute(&mut **tx).await.map_err(db_err)?;
    Ok(())
}

impl Db {
    async fn migrate(&self) -> Result<()> {
        let statements = match self.dialect {
            Dialect::Sqlite => schema::SQLITE,
            Dialect::Postgres => schema::POSTGRES,
            Dialect::MySql => schema::MYSQL,
        };
        for s in statements {
            sqlx::query(*s)
                .execute(&self.pool)
                .await
                .map_err(|e| match db_err(e) {
                    StoreError::Internal(m) => {
                        StoreError::Internal(format!("applying the schema failed: {m}"))
                    }
                    other => other,
                })?;
        }
        let version = self.meta("schema").await?;
        if version != schema::SCHEMA_VERSION {
            return Err(StoreError::Internal(format!(
                "the database has schema version {version}; this server understands {}",
                schema::SCHEMA_VERSION
            )));
        }
        Ok(())
    }

    async fn meta(&self, name: &str) -> Result<i64> {
        sqlx::query(
            self.dialect
                .sql("SELECT value FROM kfp_meta WHERE name = ?"),
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(Revision(self.meta("revision").await? as u64))
    }

    async fn events_after(
        &self,
        from: Revision,
        until: Option<Revision>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let sql = match until {
            Some(_) => {
                "SELECT revision, resource, namespace, name, event, value, prev_value FROM kfp_changes \
                        WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?"
            }
            None => {
                "SELECT revision, resource, namespace, name, event, value, prev_value FROM kfp_changes \
                     WHERE revision > ? ORDER BY revision LIMIT ?"
            }
        };
        let sql = self.dialect.sql(sql);
        let mut q = sqlx::query(sql).bind(from.0 as i64);
        if let Some(u) = until {
            q = q.bind(u.0 as i64);
        }
        let rows = q
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(row_to_event).collect()
    }
}

fn state_of(text: String) -> State {
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let idx = index_fields(&parsed);
    State {
        object: Bytes::from(text),
        labels: idx.labels,
        pipeline_name: idx.pipeline_name,
    }
}

fn row_to_event(r: &AnyRow) -> Result<Event> {
    let revision: i64 = r.try_get(0).map_err(db_err)?;
    let kind: String = r.try_get(4).map_err(db_err)?;
    let value: String = r.try_get(5).map_err(db_err)?;
    let prev: Option<String> = r.try_get(6).map_err(db_err)?;
    Ok(Event {
        revision: Revision(revision as u64),
        kind: EventKind::parse(&kind)
            .ok_or_else(|| StoreError::Internal(format!("unknown change kind {kind:?}")))?,
        key: Key {
            resource: r.try_get(1).map_err(db_err)?,
            namespace: r.try_get(2).map_err(db_err)?,
            name: r.try_get(3).map_err(db_err)?,
        },
        current: state_of(value),
        prev: prev.map(state_of),
    })
}

#[async_trait::async_trait]
impl History for Db {
    async fn events(&self, from: Revision, until: Revision, limit: usize) -> Result<Vec<Event>> {
        self.events_after(from, Some(until), limit).await
    }

    async fn compacted(&self) -> Result<Revision> {
        Ok(Revision(self.meta("compacted").await? as u64))
    }
}

const TAIL_BATCH: usize = 500;

/// Reads committed changes in revision order into the feed.
async fn tail(db: Db, feed: Arc<Feed>, wake: Arc<Notify>, poll: Duration) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        loop {
            let last = feed.latest();
            match db.events_after(last, None, TAIL_BATCH).await {
                Ok(events) => {
                    let n = events.len();
                    if let Some(first) = events.first()
                        && first.revision.0 != last.0 + 1
                    {
                        // Revisions are gap-free, so a hole means another instance compacted
                        // history this one had not read yet.
                        tracing::warn!(
                            last = last.0,
                            first = first.revision.0,
                            "change feed compacted past this instance; ending its watches"
                        );
                        feed.reset(Revision(first.revision.0 - 1));
                    }
                    feed.publish(events);
                    if n < TAIL_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed failed; retrying");
                    break;
                }
            }
        }
    }
}

/// PostgreSQL: wakes the tailer on other instances' commits.
async fn listen(url: String, wake: Arc<Notify>) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut l) => {
                if l.listen("kfp_changes").await.is_ok() {
                    while l.recv().await.is_ok() {
                        wake.notify_one();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN connection failed; polling only"),
        }
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn select_columns() -> &'static str {
    "o.namespace, o.name, o.uid, o.revision, o.value"
}

fn row_to_object(resource: &str, r: &AnyRow) -> Result<Object> {
    let revision: i64 = r.try_get(3).map_err(db_err)?;
    let value: String = r.try_get(4).map_err(db_err)?;
    Ok(Object {
        key: Key {
            resource: resource.to_owned(),
            namespace: r.try_get(0).map_err(db_err)?,
            name: r.try_get(1).map_err(db_err)?,
        },
        uid: r.try_get(2).map_err(db_err)?,
        revision: Revision(revision as u64),
        data: Bytes::from(value),
    })
}

/// Builds the WHERE clause of a list over `kfp_objects o` and its bind values.
fn where_clause(req: &ListRequest, after: Option<&(String, String)>) -> (String, Vec<String>) {
    let mut sql = String::from("o.resource = ?");
    let mut binds = vec![req.resource.clone()];
    if let Some(ns) = &req.namespace {
        sql.push_str(" AND o.namespace = ?");
        binds.push(ns.clone());
    }
    if let Some((ns, name)) = after {
        sql.push_str(" AND (o.namespace > ? OR (o.namespace = ? AND o.name > ?))");
        binds.extend([ns.clone(), ns.clone(), name.clone()]);
    }
    let label = |sql: &mut String,
                 binds: &mut Vec<String>,
                 negate: bool,
                 k: &str,
                 vals: Option<&[String]>| {
        sql.push_str(if negate {
            " AND NOT EXISTS"
        } else {
            " AND EXISTS"
        });
        sql.push_str(" (SELECT 1 FROM kfp_labels l WHERE l.resource = o.resource AND l.namespace = o.namespace AND l.name = o.name AND l.label_key = ?");
        binds.push(k.to_owned());
        if let Some(vals) = vals {
            sql.push_str(" AND l.label_value IN (");
            sql.push_str(&vec!["?"; vals.len()].join(", "));
            sql.push(')');
            binds.extend(vals.iter().cloned());
        }
        sql.push(')');
    };
    for r in &req.labels.0 {
        match r {
            Requirement::Equals(k, v) => label(
                &mut sql,
                &mut binds,
                false,
                k,
                Some(std::slice::from_ref(v)),
            ),
            Requirement::NotEquals(k, v) => {
                label(&mut sql, &mut binds, true, k, Some(std::slice::from_ref(v)))
            }
            Requirement::In(k, vs) => label(&mut sql, &mut binds, false, k, Some(vs)),
            Requirement::NotIn(k, vs) => label(&mut sql, &mut binds, true, k, Some(vs)),
            Requirement::Exists(k) => label(&mut sql, &mut binds, false, k, None),
            Requirement::DoesNotExist(k) => label(&mut sql, &mut binds, true, k, None),
        }
    }
    for (field, eq, value) in &req.fields.0 {
        let col = match field {
            Field::Name => "o.name",
            Field::Namespace => "o.namespace",
            Field::PipelineName => "o.pipeline_name",
        };
        sql.push_str(&format!(" AND {col} {} ?", if *eq { "=" } else { "<>" }));
        binds.push(value.clone());
    }
    (sql, binds)
}

fn matches_request(req: &ListRequest, key: &Key, object: &Value) -> bool {
    if key.resource != req.resource {
        return false;
    }
    if let Some(ns) = &req.namespace
        && &key.namespace != ns
    {
        return false;
    }
    let idx = index_fields(object);
    req.labels.matches(&idx.labels)
        && req.fields.matches(|f| {
            Some(match f {
                Field::Name => key.name.clone(),
                Field::Namespace => key.namespace.clone(),
                Field::PipelineName => idx.pipeline_name.clone(),
            })
        })
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn get(&self, key: &Key) -> Result<Object> {
        let d = self.inner.dialect;
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE o.resource = ? AND o.namespace = ? AND o.name = ?",
            select_columns()
        ));
        let row = sqlx::query(sql)
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        row_to_object(&key.resource, &row)
    }

    async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object> {
        let d = self.inner.dialect;
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE o.resource = ? AND o.uid = ?",
            select_columns()
        ));
        let row = sqlx::query(sql)
            .bind(resource)
            .bind(uid)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(Key::new(resource, "", uid)))?;
        row_to_object(resource, &row)
    }

    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        let d = self.inner.dialect;
        let token = req
            .continue_token
            .as_deref()
            .map(ContinueToken::decode)
            .transpose()?;
        let mut tx = self.inner.pool.begin().await.map_err(db_err)?;
        match d {
            Dialect::Postgres => {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            Dialect::MySql | Dialect::Sqlite => {}
        }
        let current: i64 = sqlx::query(d.sql("SELECT value FROM kfp_meta WHERE name = ?"))
            .bind("revision")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        let current = Revision(current as u64);
        let (revision, pinned, after) = match (&token, req.at) {
            (Some(t), _) => (t.revision, true, Some(t.after.clone())),
            (None, ReadAt::Exact(r)) => (r, true, None),
            (None, ReadAt::NotOlderThan(r)) if r > current => {
                return Err(StoreError::TooLarge {
                    requested: r,
                    current,
                });
            }
            (None, _) => (current, false, None),
        };
        if pinned {
            if revision > current {
                return Err(StoreError::TooLarge {
                    requested: revision,
                    current,
                });
            }
            let compacted: i64 = sqlx::query(d.sql("SELECT value FROM kfp_meta WHERE name = ?"))
                .bind("compacted")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
                .try_get(0)
                .map_err(db_err)?;
            if (revision.0 as i64) < compacted {
                return Err(StoreError::Gone {
                    requested: revision,
                    compacted: Revision(compacted as u64),
                });
            }
        }
        let historical = pinned && revision < current;
        // Objects unchanged since `revision` (all of them, for a current read).
        let (mut clause, binds) = where_clause(req, after.as_ref());
        if historical {
            clause.push_str(&format!(" AND o.revision <= {}", revision.0));
        }
        let limit_sql = req
            .limit
            .map(|l| format!(" LIMIT {}", l + 1))
            .unwrap_or_default();
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE {clause} ORDER BY o.namespace, o.name{limit_sql}",
            select_columns()
        ));
        let mut q = sqlx::query(sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(db_err)?;
        let mut items: Vec<Object> = rows
            .iter()
            .map(|r| row_to_object(&req.resource, r))
            .collect::<Result<_>>()?;
        // Objects changed (or deleted) since `revision`: their state then is the `prev_value` of
        // their first change after it.
        let mut older: Vec<Object> = Vec::new();
        if historical {
            let mut sql = String::from(
                "SELECT c.namespace, c.name, c.prev_value FROM kfp_changes c WHERE c.resource = ? AND c.revision > ? \
                 AND c.prev_value IS NOT NULL AND c.revision = (SELECT MIN(c2.revision) FROM kfp_changes c2 \
                 WHERE c2.resource = c.resource AND c2.namespace = c.namespace AND c2.name = c.name AND c2.revision > ?)",
            );
            let mut binds = vec![req.resource.clone()];
            if let Some(ns) = &req.namespace {
                sql.push_str(" AND c.namespace = ?");
                binds.push(ns.clone());
            }
            let sql = d.sql(&sql);
            let mut q = sqlx::query(sql)
                .bind(&binds[0])
                .bind(revision.0 as i64)
                .bind(revision.0 as i64);
            for b in &binds[1..] {
                q = q.bind(b);
            }
            for r in q.fetch_all(&mut *tx).await.map_err(db_err)? {
                let key = Key {
                    resource: req.resource.clone(),
                    namespace: r.try_get(0).map_err(db_err)?,
                    name: r.try_get(1).map_err(db_err)?,
                };
                if let Some((ns, name)) = &after
                    && (&key.namespace, &key.name) <= (ns, name)
                {
                    continue;
                }
                let text: String = r.try_get(2).map_err(db_err)?;
                let value: Value = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Internal(format!("stored {key} is not JSON: {e}")))?;
                if !matches_request(req, &key, &value) {
                    continue;
                }
                let rev = value
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(Revision::parse)
                    .unwrap_or_default();
                older.push(Object {
                    uid: index_fields(&value).uid,
                    key,
                    revision: rev,
                    data: Bytes::from(text),
                });
            }
        }
        let remaining_without_page =
            if req.labels.is_empty() && req.fields.is_empty() && req.limit.is_some() {
                // Count what follows `after` (page items included; the page is subtracted below).
                let (mut clause, binds) = where_clause(req, after.as_ref());
                if historical {
                    clause.push_str(&format!(" AND o.revision <= {}", revision.0));
                }
                let sql = d.sql(&format!(
                    "SELECT COUNT(*) FROM kfp_objects o WHERE {clause}"
                ));
                let mut q = sqlx::query(sql);
                for b in &binds {
                    q = q.bind(b);
                }
                let n: i64 = q
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .try_get(0)
                    .map_err(db_err)?;
                Some(n as u64 + older.len() as u64)
            } else {
                None
            };
        tx.commit().await.map_err(db_err)?;
        if !older.is_empty() {
            items.extend(older);
            items.sort_by(|a, b| {
                (&a.key.namespace, &a.key.name).cmp(&(&b.key.namespace, &b.key.name))
            });
        }
        let mut continue_token = None;
        let mut remaining = None;
        if let Some(limit) = req.limit
            && items.len() > limit
        {
            items.truncate(limit);
            let last = items
                .last()
                .map(|o| (o.key.namespace.clone(), o.key.name.clone()));
            continue_token = last.map(|after| ContinueToken { revision, after }.encode());
            remaining = remaining_without_page.map(|n| n.saturating_sub(limit as u64));
        }
        Ok(ListPage {
            revision,
            items,
            continue_token,
            remaining,
        })
    }

    async fn query(&self, req: &QueryRequest) -> Result<QueryPage> {
        let d = self.inner.dialect;
        enum Bind {
            Int(i64),
            Text(String),
        }
        let bind_value = |v: &query::Value| match v {
            query::Value::Int(i) => Bind::Int(*i),
            query::Value::Text(t) => Bind::Text(t.clone()),
        };
        let mut clause = String::from("o.resource = ?");
        let mut binds = vec![Bind::Text(req.resource.clone())];
        if let Some(ns) = &req.namespace {
            clause.push_str(" AND o.namespace = ?");
            binds.push(Bind::Text(ns.clone()));
        }
        for p in &req.predicates {
            let col = p.column.sql();
            let mut cmp = |op: &str, v: &query::Value, clause: &mut String| {
                clause.push_str(&format!(" AND {col} {op} ?"));
                binds.push(bind_value(v));
            };
            match &p.op {
                QueryOp::Eq(v) => cmp("=", v, &mut clause),
                QueryOp::Ne(v) => cmp("<>", v, &mut clause),
                QueryOp::Gt(v) => cmp(">", v, &mut clause),
                QueryOp::Ge(v) => cmp(">=", v, &mut clause),
                QueryOp::Lt(v) => cmp("<", v, &mut clause),
                QueryOp::Le(v) => cmp("<=", v, &mut clause),
                QueryOp::In(vs) => {
                    if vs.is_empty() {
                        clause.push_str(" AND 1 = 0");
                    } else {
                        clause.push_str(&format!(
                            " AND {col} IN ({})",
                            vec!["?"; vs.len()].join(", ")
                        ));
                        binds.extend(vs.iter().map(bind_value));
                    }
                }
                QueryOp::Substring(s) => {
                    clause.push_str(&format!(" AND LOWER({col}) LIKE ? ESCAPE '!'"));
                    binds.push(Bind::Text(query::like_pattern(s)));
                }
            }
        }
        let count_sql = d.sql(&format!(
            "SELECT COUNT(*) FROM kfp_objects o WHERE {clause}"
        ));
        let sort = req.sort.sql();
        let (cmp, dir) = if req.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let mut page_clause = clause.clone();
        let mut page_binds: Vec<&Bind> = binds.iter().collect();
        let cursor_binds;
        if let Some(c) = &req.after {
            page_clause.push_str(&format!(
                " AND ({sort} {cmp} ? OR ({sort} = ? AND o.uid {cmp} ?))"
            ));
            cursor_binds = [
                bind_value(&c.value),
                bind_value(&c.value),
                Bind::Text(c.uid.clone()),
            ];
            page_binds.extend(cursor_binds.iter());
        }
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE {page_clause} ORDER BY {sort} {dir}, o.uid {dir} LIMIT {}",
            select_columns(),
            req.limit + 1
        ));
        let mut tx = self.inner.pool.begin().await.map_err(db_err)?;
        if d == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let mut q = sqlx::query(count_sql);
        for b in &binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(t) => q.bind(t.as_str()),
            };
        }
        let total: i64 = q
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        let mut q = sqlx::query(sql);
        for b in page_binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(t) => q.bind(t.as_str()),
            };
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let mut items: Vec<Object> = rows
            .iter()
            .map(|r| row_to_object(&req.resource, r))
            .collect::<Result<_>>()?;
        let mut next = None;
        if items.len() > req.limit {
            items.truncate(req.limit);
            if let Some(last) = items.last() {
                let v: Value = last.json()?;
                let idx = index_fields(&v);
                let value = match req.sort {
                    Column::CreatedAt => query::Value::Int(idx.created_at),
                    Column::Uid => query::Value::Text(idx.uid.clone()),
                    Column::Name => query::Value::Text(last.key.name.clone()),
                    Column::Namespace => query::Value::Text(last.key.namespace.clone()),
                    Column::DisplayName => query::Value::Text(idx.display_name.clone()),
                    Column::PipelineUid => query::Value::Text(idx.pipeline_uid.clone()),
                };
                next = Some(Cursor {
                    value,
                    uid: last.uid.clone(),
                });
            }
        }
        Ok(QueryPage {
            items,
            total: total as u64,
            next,
        })
    }

    async fn revision_older_than(&self, age: Duration) -> Result<Option<Revision>> {
        let d = self.inner.dialect;
        let cutoff = now_ms() - age.as_millis() as i64;
        let row = sqlx::query(d.sql("SELECT MAX(revision) FROM kfp_changes WHERE created_ms < ?"))
            .bind(cutoff)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db_err)?;
        let max: Option<i64> = row.try_get(0).map_err(db_err)?;
        Ok(max.map(|m| Revision(m as u64)))
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Object> {
        self.write(key, Op::Create(object)).await
    }

    async fn update(
        &self,
        key: &Key,
        object: Value,
        preconditions: &Preconditions,
    ) -> Result<Object> {
        self.write(key, Op::Update(object, preconditions.clone()))
            .await
    }

    async fn delete(&self, key: &Key, preconditions: &Preconditions) -> Result<Object> {
        self.write(key, Op::Delete(preconditions.clone())).await
    }

    async fn delete_collection(&self, req: &ListRequest) -> Result<Vec<Object>> {
        let all = ListRequest {
            limit: None,
            continue_token: None,
            at: ReadAt::Latest,
            ..req.clone()
        };
        let page = self.list(&all).await?;
        let mut deleted = Vec::with_capacity(page.items.len());
        for o in page.items {
            let pre = Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: None,
            };
            match self.delete(&o.key, &pre).await {
                Ok(d) => deleted.push(d),
                Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream> {
        Ok(self.inner.feed.watch(req.clone(), Arc::new(self.db())))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.db().current_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let d = self.inner.dialect;
        let _guard = match d {
            Dialect::Sqlite => Some(self.inner.write_lock.lock().await),
            _ => None,
        };
        let mut tx = self.inner.pool.begin().await.map_err(db_err)?;
        let current: i64 = sqlx::query(d.sql("SELECT value FROM kfp_meta WHERE name = ?"))
            .bind("revision")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)?;
        let target = (revision.0 as i64).min(current);
        sqlx::query(d.sql("DELETE FROM kfp_changes WHERE revision <= ?"))
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(d.sql("UPDATE kfp_meta SET value = ? WHERE name = 'compacted' AND value < ?"))
            .bind(target)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.db().compacted().await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_skip_quotes() {
        assert_eq!(
            Dialect::Postgres.placeholders("SELECT '?' WHERE a = ? AND b = ?"),
            "SELECT '?' WHERE a = $1 AND b = $2"
        );
        assert_eq!(Dialect::Sqlite.placeholders("a = ?"), "a = ?");
    }
}
