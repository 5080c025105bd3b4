//! The write transaction: one create, update or delete of one object. It takes the next global
//! revision first (the row lock on `kfp_meta.revision` orders commits), checks preconditions
//! against the row it read in the same transaction, writes the object, its labels and one
//! change-feed row, and wakes this instance's tailer after commit.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;
use sqlx::Row;

use super::SqlStore;
use super::dialect::{Dialect, db_err, now_ms};
use crate::feed::EventKind;
use crate::index::{index_fields, set_resource_version, uid_of};
use crate::{Key, Object, Preconditions, Result, Revision, StoreError};

/// One write.
pub(super) enum Op {
    Create(Value),
    Update(Value, Preconditions),
    Delete(Preconditions),
}

impl SqlStore {
    pub(super) async fn write(&self, key: &Key, op: Op) -> Result<Object> {
        let mut written = self.write_all(vec![(key.clone(), op)]).await?;
        written
            .pop()
            .ok_or_else(|| StoreError::Internal("a write returned no object".into()))
    }

    /// Several writes in one transaction: all commit, each at its own revision in order, or
    /// none does.
    pub(super) async fn write_all(&self, ops: Vec<(Key, Op)>) -> Result<Vec<Object>> {
        if let Some(w) = self.writer() {
            let result = w.write(ops).await;
            self.note_fault(&result);
            return result;
        }
        let _guard = match self.inner.db.dialect {
            Dialect::Sqlite => Some(self.inner.write_lock.lock().await),
            _ => None,
        };
        let mut conn = self.inner.db.pool.acquire().await.map_err(db_err)?;
        let result = self.write_on(&mut conn, ops).await;
        self.after_write(conn, &result).await;
        result
    }

    /// A write that failed with a database error makes the store unready for a while; one that
    /// succeeded clears that (`ping`).
    fn note_fault<T>(&self, result: &Result<T>) {
        let fault = |v: Option<std::time::Instant>| {
            *self
                .inner
                .write_fault
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = v;
        };
        match result {
            Err(StoreError::Internal(_) | StoreError::Unavailable(_)) => {
                fault(Some(std::time::Instant::now()))
            }
            Ok(_) => fault(None),
            Err(_) => {}
        }
    }

    /// Keeps the connection and the fault flag honest after a write transaction.
    async fn after_write<T>(
        &self,
        conn: sqlx::pool::PoolConnection<sqlx::Any>,
        result: &Result<T>,
    ) {
        self.note_fault(result);
        if let Err(StoreError::Internal(_) | StoreError::Unavailable(_)) = result {
            // A connection that saw a database error (a full disk, an I/O error) is closed,
            // never handed to the next write: SQLite may have rolled the transaction back by
            // itself or left it open, and a later write on that connection must not inherit
            // either state (measured: after a full disk, writes acknowledged on such a
            // connection were gone after a restart).
            let _ = conn.close().await;
        }
    }

    async fn write_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
        ops: Vec<(Key, Op)>,
    ) -> Result<Vec<Object>> {
        let d = self.inner.db.dialect;
        let mut tx = sqlx::Connection::begin(&mut **conn).await.map_err(db_err)?;
        let mut written = Vec::with_capacity(ops.len());
        for (key, op) in ops {
            written.push(self.apply(&mut tx, &key, op).await?);
        }
        if d == Dialect::Postgres {
            sqlx::query("SELECT pg_notify('kfp_changes', '')")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        self.inner.wake.notify_one();
        Ok(written)
    }

    /// One write inside `tx`, at the next revision.
    async fn apply(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &Key,
        op: Op,
    ) -> Result<Object> {
        let db = &self.inner.db;
        let d = db.dialect;
        let rev = allocate(tx, d).await?;
        let existing = sqlx::query(d.sql(SELECT_EXISTING))
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .map(|r| -> Result<Existing> {
                Ok(Existing {
                    uid: r.try_get(0).map_err(db_err)?,
                    revision: r.try_get(1).map_err(db_err)?,
                    value: r.try_get(2).map_err(db_err)?,
                })
            })
            .transpose()?;
        let w = plan(db.indexer.as_ref(), key, op, existing, rev)?;
        let idx = &w.idx;
        match w.kind {
            EventKind::Added | EventKind::Modified => {
                if w.kind == EventKind::Modified {
                    delete_key(tx, d, "kfp_objects", key).await?;
                }
                let inserted = sqlx::query(d.sql(INSERT_OBJECT))
                    .bind(&key.resource)
                    .bind(&key.namespace)
                    .bind(&key.name)
                    .bind(&idx.uid)
                    .bind(rev)
                    .bind(idx.created_at)
                    .bind(&idx.columns.title)
                    .bind(&idx.columns.parent_name)
                    .bind(&idx.columns.parent_uid)
                    .bind(&idx.columns.alias)
                    .bind(&idx.columns.detail)
                    .bind(idx.columns.title.to_lowercase())
                    .bind(&w.text)
                    .execute(&mut **tx)
                    .await;
                if let Err(e) = inserted {
                    if let sqlx::Error::Database(dbe) = &e
                        && dbe.is_unique_violation()
                    {
                        return Err(StoreError::AlreadyExists(key.clone()));
                    }
                    return Err(db_err(e));
                }
                let modified = w.kind == EventKind::Modified;
                if !modified {
                    count(tx, d, key, 1).await?;
                }
                replace_pairs(tx, d, LABELS, key, &idx.labels, modified).await?;
                replace_pairs(tx, d, TERMS, key, &idx.columns.terms, modified).await?;
            }
            EventKind::Deleted => {
                delete_key(tx, d, "kfp_objects", key).await?;
                count(tx, d, key, -1).await?;
                delete_key(tx, d, LABELS.0, key).await?;
                delete_key(tx, d, TERMS.0, key).await?;
            }
        }
        sqlx::query(d.sql(INSERT_CHANGE))
            .bind(rev)
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .bind(w.kind.as_str())
            .bind(&w.text)
            .bind(&w.prev)
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(w.into_object(key, rev))
    }
}

/// The row a write replaces, read inside its transaction.
pub(super) struct Existing {
    pub uid: String,
    pub revision: i64,
    pub value: String,
}

/// A write decided: what to store, before any statement runs (the same for every executor).
pub(super) struct Planned {
    pub kind: EventKind,
    /// The object's JSON with its new resourceVersion.
    pub text: String,
    /// The replaced object's JSON (updates and deletes).
    pub prev: Option<String>,
    pub uid: String,
    pub idx: crate::index::IndexFields,
}

impl Planned {
    pub(super) fn into_object(self, key: &Key, rev: i64) -> Object {
        Object {
            key: key.clone(),
            uid: self.uid,
            revision: Revision(rev as u64),
            data: Bytes::from(self.text),
        }
    }
}

pub(super) const SELECT_EXISTING: &str = "SELECT uid, revision, value FROM kfp_objects WHERE resource = ? AND namespace = ? AND name = ?";
pub(super) const INSERT_OBJECT: &str = "INSERT INTO kfp_objects (resource, namespace, name, uid, revision, created_at, \
     title, parent_name, parent_uid, alias, detail, title_folded, value) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(super) const INSERT_CHANGE: &str = "INSERT INTO kfp_changes (revision, resource, namespace, name, event, value, prev_value, created_ms) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
/// SQLite and PostgreSQL (MySQL has its own, [`count`]).
pub(super) const UPSERT_COUNT: &str = "INSERT INTO kfp_counts (resource, namespace, n) VALUES (?, ?, ?) \
     ON CONFLICT (resource, namespace) DO UPDATE SET n = kfp_counts.n + ?";

/// Checks `op`'s preconditions against the row it replaces and makes the object to store at
/// revision `rev`.
pub(super) fn plan(
    indexer: &dyn crate::index::Indexer,
    key: &Key,
    op: Op,
    existing: Option<Existing>,
    rev: i64,
) -> Result<Planned> {
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
            let uid = uid_of(&object);
            (EventKind::Added, object, None, uid)
        }
        Op::Update(object, pre) => {
            let Some(e) = existing else {
                return Err(StoreError::NotFound(key.clone()));
            };
            check(&pre, &e.uid, e.revision)?;
            (EventKind::Modified, object, Some(e.value), e.uid)
        }
        Op::Delete(pre) => {
            let Some(e) = existing else {
                return Err(StoreError::NotFound(key.clone()));
            };
            check(&pre, &e.uid, e.revision)?;
            let last: Value = serde_json::from_str(&e.value)
                .map_err(|err| StoreError::Internal(format!("stored {key} is not JSON: {err}")))?;
            (EventKind::Deleted, last, Some(e.value), e.uid)
        }
    };
    set_resource_version(&mut object, rev as u64);
    let text = serde_json::to_string(&object)
        .map_err(|e| StoreError::Internal(format!("cannot encode {key}: {e}")))?;
    let idx = index_fields(indexer, &key.resource, &object);
    Ok(Planned {
        kind,
        text,
        prev,
        uid,
        idx,
    })
}

/// Re-derives every object's index columns and terms with the current indexer when a migration
/// asked for it (`kfp_meta.reindex` = 1), in batches keyed by primary key; a row written since it
/// was read is skipped (its writer indexed it). Runs at start, before the store serves.
pub(super) async fn reindex_if_asked(db: &super::Db) -> Result<()> {
    const BATCH: i64 = 500;
    let d = db.dialect;
    let asked = sqlx::query(d.sql("SELECT value FROM kfp_meta WHERE name = 'reindex'"))
        .fetch_optional(&db.pool)
        .await
        .map_err(db_err)?
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()
        .map_err(db_err)?;
    if asked != Some(1) {
        return Ok(());
    }
    let mut after = (String::new(), String::new(), String::new());
    let mut done = 0u64;
    loop {
        let rows = sqlx::query(d.sql(&format!(
            "SELECT resource, namespace, name, revision, value FROM kfp_objects \
             WHERE (resource, namespace, name) > (?, ?, ?) \
             ORDER BY resource, namespace, name LIMIT {BATCH}"
        )))
        .bind(&after.0)
        .bind(&after.1)
        .bind(&after.2)
        .fetch_all(&db.pool)
        .await
        .map_err(db_err)?;
        if rows.is_empty() {
            break;
        }
        let mut tx = db.pool.begin().await.map_err(db_err)?;
        for r in &rows {
            let key = Key {
                resource: r.try_get(0).map_err(db_err)?,
                namespace: r.try_get(1).map_err(db_err)?,
                name: r.try_get(2).map_err(db_err)?,
            };
            let revision: i64 = r.try_get(3).map_err(db_err)?;
            let text: String = r.try_get(4).map_err(db_err)?;
            let object: Value = serde_json::from_str(&text)
                .map_err(|e| StoreError::Internal(format!("stored {key} is not JSON: {e}")))?;
            let idx = index_fields(db.indexer.as_ref(), &key.resource, &object);
            let c = &idx.columns;
            let updated = sqlx::query(d.sql(
                "UPDATE kfp_objects SET title = ?, parent_name = ?, parent_uid = ?, alias = ?, \
                 detail = ?, title_folded = ? \
                 WHERE resource = ? AND namespace = ? AND name = ? AND revision = ?",
            ))
            .bind(&c.title)
            .bind(&c.parent_name)
            .bind(&c.parent_uid)
            .bind(&c.alias)
            .bind(&c.detail)
            .bind(c.title.to_lowercase())
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .bind(revision)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if updated.rows_affected() == 1 {
                replace_pairs(&mut tx, d, TERMS, &key, &c.terms, true).await?;
            }
            done += 1;
            after = (key.resource, key.namespace, key.name);
        }
        tx.commit().await.map_err(db_err)?;
    }
    sqlx::query("UPDATE kfp_meta SET value = 0 WHERE name = 'reindex'")
        .execute(&db.pool)
        .await
        .map_err(db_err)?;
    tracing::info!(
        objects = done,
        "re-indexed the stored objects after a schema migration"
    );
    Ok(())
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

/// Adds `by` (1 or -1) to the object count of `key`'s resource and namespace (`kfp_counts`).
async fn count(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: Dialect,
    key: &Key,
    by: i64,
) -> Result<()> {
    let sql = match d {
        Dialect::MySql => {
            "INSERT INTO kfp_counts (resource, namespace, n) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE n = n + ?"
        }
        Dialect::Sqlite | Dialect::Postgres => UPSERT_COUNT,
    };
    sqlx::query(d.sql(sql))
        .bind(&key.resource)
        .bind(&key.namespace)
        .bind(by)
        .bind(by)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Deletes the rows of `key` from a table keyed by (resource, namespace, name).
pub(super) async fn delete_key(
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

/// A key/value table keyed by (resource, namespace, name): its name and its two columns.
type PairTable = (&'static str, &'static str, &'static str);
/// Labels, for label selectors.
const LABELS: PairTable = ("kfp_labels", "label_key", "label_value");
/// The indexer's terms, for term filters.
pub(super) const TERMS: PairTable = ("kfp_terms", "term_key", "term_value");

/// Replaces the rows of `key` in a key/value table.
pub(super) async fn replace_pairs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: Dialect,
    (table, key_col, value_col): PairTable,
    key: &Key,
    pairs: &BTreeMap<String, String>,
    delete_first: bool,
) -> Result<()> {
    if delete_first {
        delete_key(tx, d, table, key).await?;
    }
    if pairs.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?, ?)"; pairs.len()].join(", ");
    let sql = d.sql(&format!(
        "INSERT INTO {table} (resource, namespace, name, {key_col}, {value_col}) VALUES {values}"
    ));
    let mut q = sqlx::query(sql);
    for (k, v) in pairs {
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
