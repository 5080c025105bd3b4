//! The change feed's database side: reading `kfp_changes` in revision order (for the tailer and
//! for watch replay older than the in-memory ring) and the tailer task that publishes committed
//! changes into this instance's [`Feed`], woken by its own writes, by PostgreSQL `LISTEN/NOTIFY`
//! for other instances' writes, and by a poll interval otherwise.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::Notify;

use super::Db;
use super::dialect::db_err;
use crate::feed::{Event, EventKind, Feed, History, State};
use crate::index::index_fields;
use crate::{Key, Result, Revision, StoreError};

impl Db {
    pub(super) async fn meta(&self, name: &str) -> Result<i64> {
        super::meta(&self.pool, self.dialect, name).await
    }

    pub(super) async fn current_revision(&self) -> Result<Revision> {
        Ok(Revision(self.meta("revision").await? as u64))
    }

    /// Changes after `from` (up to `until`), oldest first: at most `limit`, and no more once
    /// [`PAGE_BYTES`] of objects are read (at least one). True as well when the page is full,
    /// by either bound, so there may be more.
    pub(super) async fn events_after(
        &self,
        from: Revision,
        until: Option<Revision>,
        limit: usize,
    ) -> Result<(Vec<Event>, bool)> {
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
        let mut rows = q.bind(limit as i64).fetch(&self.pool);
        let (mut events, mut bytes) = (Vec::new(), 0usize);
        while let Some(row) = rows.try_next().await.map_err(db_err)? {
            let ev = self.row_to_event(&row)?;
            bytes += ev.current.object.len() + ev.prev.as_ref().map_or(0, |p| p.object.len());
            events.push(ev);
            if bytes >= PAGE_BYTES {
                return Ok((events, true));
            }
        }
        let full = events.len() >= limit;
        Ok((events, full))
    }

    /// The filterable view of a stored state (a row that is not JSON filters as empty).
    fn state_of(&self, resource: &str, text: String) -> State {
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let idx = index_fields(self.indexer.as_ref(), resource, &parsed);
        State {
            object: Bytes::from(text),
            labels: idx.labels,
            columns: idx.columns,
        }
    }

    fn row_to_event(&self, r: &AnyRow) -> Result<Event> {
        let revision: i64 = r.try_get(0).map_err(db_err)?;
        let kind: String = r.try_get(4).map_err(db_err)?;
        let value: String = r.try_get(5).map_err(db_err)?;
        let prev: Option<String> = r.try_get(6).map_err(db_err)?;
        let key = Key {
            resource: r.try_get(1).map_err(db_err)?,
            namespace: r.try_get(2).map_err(db_err)?,
            name: r.try_get(3).map_err(db_err)?,
        };
        Ok(Event {
            revision: Revision(revision as u64),
            kind: EventKind::parse(&kind)
                .ok_or_else(|| StoreError::Internal(format!("unknown change kind {kind:?}")))?,
            current: self.state_of(&key.resource, value),
            prev: prev.map(|p| self.state_of(&key.resource, p)),
            key,
        })
    }
}

#[async_trait::async_trait]
impl History for Db {
    async fn events(&self, from: Revision, until: Revision, limit: usize) -> Result<Vec<Event>> {
        Ok(self.events_after(from, Some(until), limit).await?.0)
    }

    async fn compacted(&self) -> Result<Revision> {
        Ok(Revision(self.meta("compacted").await? as u64))
    }
}

const TAIL_BATCH: usize = 500;
/// Bytes of objects (states and previous states) one read of the change feed holds at most,
/// beyond its first event: a page of 1,000 changes of 3 MiB objects would otherwise be 6 GB.
pub(super) const PAGE_BYTES: usize = 16 << 20;

/// Reads committed changes in revision order into the feed.
pub(super) async fn tail(db: Db, feed: Arc<Feed>, wake: Arc<Notify>, poll: Duration) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        loop {
            let last = feed.latest();
            match db.events_after(last, None, TAIL_BATCH).await {
                Ok((events, full)) => {
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
                    if !full {
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
pub(super) async fn listen(url: String, wake: Arc<Notify>) {
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
