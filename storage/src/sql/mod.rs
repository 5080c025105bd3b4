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
//! By concern: [`dialect`] (URL scheme, placeholders, error classes), [`schema`] (versioned
//! migrations per dialect), [`write`] (the write transaction), [`read`] (get and current or
//! historical lists), [`point`] (SQLite gets without sqlx's worker-thread hop), [`sorted`] (the
//! KFP view's sorted queries), [`tail`] (the change feed's database side and the tailer). This
//! file opens the store and maps the traits onto them.

mod dialect;
mod point;
mod read;
mod schema;
mod sorted;
mod tail;
mod write;
mod writer;

use std::sync::{Arc, Once};
use std::time::Duration;

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::feed::{Feed, FeedConfig};
use crate::index::{IndexColumn, Indexer, NoIndex};
use crate::query::{QueryPage, QueryRequest};
use crate::{
    Key, ListPage, ListRequest, Maintenance, Object, Preconditions, Result, Revision, Store,
    StoreError, WatchRequest, WatchStream,
};
use dialect::{Dialect, db_err, now_ms};
use tail::{listen, tail};
use write::Op;

/// Settings of a SQL store.
#[derive(Clone)]
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
    /// What fills the generic index columns of each resource.
    pub indexer: Arc<dyn Indexer>,
    /// The CRD backend's envelope kind of each resource (plural -> kind); SQL ignores it.
    pub kinds: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("max_connections", &self.max_connections)
            .field("poll_interval", &self.poll_interval)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("feed", &self.feed)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// Defaults for a URL (indexing only generic metadata).
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            max_connections: 8,
            poll_interval: Duration::from_millis(500),
            acquire_timeout: Duration::from_secs(5),
            feed: FeedConfig::default(),
            indexer: Arc::new(NoIndex),
            kinds: Default::default(),
        }
    }
}

/// How long a failed write keeps `ping` failing when no write succeeds after it.
pub const WRITE_FAULT_WINDOW: Duration = Duration::from_secs(10);

/// The SQL column of a generic index column.
pub(crate) fn column_sql(c: IndexColumn) -> &'static str {
    match c {
        IndexColumn::Title => "o.title",
        IndexColumn::ParentName => "o.parent_name",
        IndexColumn::ParentUid => "o.parent_uid",
        IndexColumn::Alias => "o.alias",
        IndexColumn::Detail => "o.detail",
    }
}

/// Change-feed revisions one compaction transaction deletes at most.
const COMPACT_BATCH: i64 = 1000;
/// A counter of `kfp_meta` (`revision`, `compacted`).
pub(super) const SELECT_META: &str = "SELECT value FROM kfp_meta WHERE name = ?";
/// The oldest change kept (compaction starts its batches there).
pub(super) const SELECT_OLDEST_CHANGE: &str = "SELECT MIN(revision) FROM kfp_changes";
/// The newest change older than a time (the compactor's age limit): one entry of the
/// `kfp_changes_age` index (schema 6), never a walk over the feed's rows and their objects.
/// Ordered by time, then revision: were the clock ever to step back, the answer is a lower
/// revision than the newest old one, so compaction keeps more, never less.
pub(super) const SELECT_REVISION_OLDER_THAN: &str = "SELECT revision FROM kfp_changes \
     WHERE created_ms < ? ORDER BY created_ms DESC, revision DESC LIMIT 1";
/// One compaction batch: the history up to a revision, and the mark that moves with it.
pub(super) const DELETE_CHANGES_UPTO: &str = "DELETE FROM kfp_changes WHERE revision <= ?";
pub(super) const MARK_COMPACTED: &str =
    "UPDATE kfp_meta SET value = ? WHERE name = 'compacted' AND value < ?";

/// The revision the next compaction batch deletes up to: [`COMPACT_BATCH`] past what is
/// compacted, or past the oldest change kept when that is higher (a gap below it costs no
/// batches), and never past `target`.
pub(super) fn compact_step(done: i64, oldest: Option<i64>, target: i64) -> i64 {
    let from = oldest.map_or(target, |o| done.max(o - 1));
    target.min(from.saturating_add(COMPACT_BATCH))
}

async fn meta<'e, E>(e: E, d: Dialect, name: &str) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(d.sql(SELECT_META))
        .bind(name)
        .fetch_one(e)
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err)
}

/// What every query needs: the pool, its dialect and the indexer.
#[derive(Clone)]
struct Db {
    pool: AnyPool,
    dialect: Dialect,
    indexer: Arc<dyn Indexer>,
    /// SQLite: point reads on the calling thread ([`point`]); `None` elsewhere.
    point: Option<Arc<point::PointReader>>,
}

struct Inner {
    db: Db,
    feed: Arc<Feed>,
    wake: Arc<Notify>,
    /// SQLite only: one writer at a time in this process.
    write_lock: tokio::sync::Mutex<()>,
    /// SQLite files: the writer thread ([`writer`]); taken away by `close`.
    writer: std::sync::Mutex<Option<writer::Writer>>,
    /// When the last write failed with a database error (a full disk, an I/O error), unless
    /// one has succeeded since: `ping` fails for [`WRITE_FAULT_WINDOW`] after it.
    write_fault: std::sync::Mutex<Option<std::time::Instant>>,
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

static DRIVERS: Once = Once::new();

impl SqlStore {
    /// The SQLite writer thread's handle, while there is one (a SQLite file, not closed).
    fn writer(&self) -> Option<writer::Writer> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connects, applies the schema and starts tailing the change feed.
    pub async fn open(config: StoreConfig) -> Result<SqlStore> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let dialect = Dialect::of(&config.url)?;
        let mut url = config.url.clone();
        let mut sqlite_path = None;
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
            sqlite_path = Some(path);
        }
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            // An embedded SQLite connection cannot go away, and sqlx's ping before every
            // acquire is a round trip to the connection's worker thread (two thread switches
            // per query, the largest single cost of a GET). Server databases keep the ping, so
            // a connection broken by a database restart is replaced, not handed out.
            .test_before_acquire(dialect != Dialect::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    if dialect == Dialect::MySql {
                        // The columns' own collation: with the connection's default (a _ci
                        // one), MariaDB sorted every key list in a filesort instead of walking
                        // the primary key — 1.4 s a page at 50k objects (docs/storage.md).
                        use sqlx::Executor;
                        conn.execute("SET NAMES utf8mb4 COLLATE utf8mb4_bin")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db_err)?;
        schema::migrate(&pool, dialect).await?;
        let point = sqlite_path
            .as_deref()
            .and_then(|path| point::PointReader::open(path, &url))
            .map(Arc::new);
        let db = Db {
            pool,
            dialect,
            indexer: config.indexer.clone(),
            point,
        };
        write::reindex_if_asked(&db).await?;
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
        let writer = sqlite_path.as_deref().and_then(|path| {
            let wake = wake.clone();
            writer::Writer::start(path, &url, config.indexer.clone(), move || {
                wake.notify_one()
            })
        });
        Ok(SqlStore {
            inner: Arc::new(Inner {
                db,
                feed,
                wake,
                write_lock: tokio::sync::Mutex::new(()),
                writer: std::sync::Mutex::new(writer),
                write_fault: std::sync::Mutex::new(None),
                tasks,
            }),
        })
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn get(&self, key: &Key) -> Result<Object> {
        self.inner.db.get(key).await
    }

    async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object> {
        self.inner.db.get_by_uid(resource, uid).await
    }

    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        self.inner.db.list(req).await
    }

    async fn query(&self, req: &QueryRequest) -> Result<QueryPage> {
        self.inner.db.query(req).await
    }

    async fn dangling_label_values(
        &self,
        resource: &str,
        label: &str,
        owner_resource: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.inner
            .db
            .dangling_label_values(resource, label, owner_resource, after, limit)
            .await
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Object> {
        self.write(key, Op::Create(object)).await
    }

    async fn create_all(&self, objects: Vec<(Key, Value)>) -> Result<Vec<Object>> {
        self.write_all(
            objects
                .into_iter()
                .map(|(k, v)| (k, Op::Create(v)))
                .collect(),
        )
        .await
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

    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream> {
        Ok(self
            .inner
            .feed
            .watch(req.clone(), Arc::new(self.inner.db.clone())))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.db.current_revision().await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.db.pool)
            .await
            .map_err(db_err)?;
        // Reads work on a full disk; readiness must say that writes do not. A small probe write
        // can succeed where real writes fail (it may fit the WAL's free space), so the signal
        // is the real writes: a failed one makes the store unready until one succeeds, or for
        // the window after the last failure when nobody writes.
        let fault = *self
            .inner
            .write_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(at) = fault
            && at.elapsed() < WRITE_FAULT_WINDOW
        {
            return Err(StoreError::Unavailable(
                "writes are failing (database or disk error)".into(),
            ));
        }
        Ok(())
    }

    async fn close(&self) {
        // The writer thread ends once this last handle is gone and its queue is done.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for t in &self.inner.tasks {
            t.abort();
        }
        self.inner.db.pool.close().await;
    }
}

#[async_trait::async_trait]
impl Maintenance for SqlStore {
    async fn revision_older_than(&self, age: Duration) -> Result<Option<Revision>> {
        let d = self.inner.db.dialect;
        let cutoff = now_ms() - age.as_millis() as i64;
        let row = sqlx::query(d.sql(SELECT_REVISION_OLDER_THAN))
            .bind(cutoff)
            .fetch_optional(&self.inner.db.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| r.try_get::<i64, _>(0).map(|m| Revision(m as u64)))
            .transpose()
            .map_err(db_err)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let d = self.inner.db.dialect;
        if let Some(w) = self.writer() {
            w.compact(revision.0 as i64).await?;
            return crate::feed::History::compacted(&self.inner.db).await;
        }
        // In batches, each its own transaction: one DELETE of a minute of a write storm's history
        // (hundreds of thousands of rows) was one transaction the size of that history, which
        // the write-ahead log had to hold whole (and writers waited behind). `compacted` moves
        // with each batch, so a watch never finds a revision above it missing.
        loop {
            let _guard = match d {
                Dialect::Sqlite => Some(self.inner.write_lock.lock().await),
                _ => None,
            };
            let mut tx = self.inner.db.pool.begin().await.map_err(db_err)?;
            let current = meta(&mut *tx, d, "revision").await?;
            let done = meta(&mut *tx, d, "compacted").await?;
            let target = (revision.0 as i64).min(current);
            if done >= target {
                tx.rollback().await.map_err(db_err)?;
                break;
            }
            let oldest: Option<i64> = sqlx::query(d.sql(SELECT_OLDEST_CHANGE))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?
                .try_get(0)
                .map_err(db_err)?;
            let step = compact_step(done, oldest, target);
            sqlx::query(d.sql(DELETE_CHANGES_UPTO))
                .bind(step)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query(d.sql(MARK_COMPACTED))
                .bind(step)
                .bind(step)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            if step >= target {
                break;
            }
        }
        crate::feed::History::compacted(&self.inner.db).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compactor's age query is an index range on SQLite (the embedded default), not a
    /// scan of the feed: a scan reads every stored object, since `created_ms` follows it.
    #[tokio::test]
    async fn the_compactors_age_query_reads_the_age_index_not_the_feed() {
        let dir = std::env::temp_dir().join(format!("kfp-age-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}/store.db", dir.display());
        let store = SqlStore::open(crate::StoreConfig::new(&url))
            .await
            .expect("store");
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {SELECT_REVISION_OLDER_THAN}"
        )))
        .bind(0_i64)
        .fetch_all(&store.inner.db.pool)
        .await
        .expect("plan")
        .iter()
        .map(|r| r.try_get::<String, _>(3).expect("detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("COVERING INDEX kfp_changes_age (created_ms<?)")),
            "{plan:?}"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A read of the change feed stops once it holds `PAGE_BYTES` of objects, and the pages
    /// still cover every change once.
    #[tokio::test]
    async fn change_feed_pages_are_bounded_in_bytes() {
        let dir = std::env::temp_dir().join(format!("kfp-feed-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("sqlite://{}/store.db", dir.display());
        let store = SqlStore::open(crate::StoreConfig::new(&url))
            .await
            .expect("store");
        let big = "x".repeat(3 << 20);
        for i in 0..8 {
            let key = Key::new("pipelines", "ns", &format!("p{i}"));
            let obj = serde_json::json!({"metadata": {"name": key.name, "uid": format!("u{i}")}, "spec": {"description": big}});
            store.create(&key, obj).await.expect("create");
        }
        let db = &store.inner.db;
        let (first, more) = db
            .events_after(Revision(0), None, 1000)
            .await
            .expect("page");
        let per_page = tail::PAGE_BYTES.div_ceil(3 << 20);
        assert_eq!(
            first.len(),
            per_page,
            "stops at the first event past the bound"
        );
        assert!(more, "a page cut by bytes says there may be more");
        let mut revs: Vec<u64> = first.iter().map(|e| e.revision.0).collect();
        let mut last = *revs.last().expect("one");
        loop {
            let page = crate::feed::History::events(db, Revision(last), Revision(8), 1000)
                .await
                .expect("page");
            let Some(end) = page.last() else { break };
            last = end.revision.0;
            revs.extend(page.iter().map(|e| e.revision.0));
        }
        assert_eq!(revs, (1..=8).collect::<Vec<_>>());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
