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
        let _guard = match self.inner.db.dialect {
            Dialect::Sqlite => Some(self.inner.write_lock.lock().await),
            _ => None,
        };
        let mut conn = self.inner.db.pool.acquire().await.map_err(db_err)?;
        let result = self.write_on(&mut conn, key, op).await;
        self.after_write(conn, &result).await;
        result
    }

    /// Keeps the connection and the fault flag honest after a write transaction.
    async fn after_write<T>(
        &self,
        conn: sqlx::pool::PoolConnection<sqlx::Any>,
        result: &Result<T>,
    ) {
        let fault = |v: Option<std::time::Instant>| {
            *self
                .inner
                .write_fault
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = v;
        };
        match result {
            Err(StoreError::Internal(_) | StoreError::Unavailable(_)) => {
                fault(Some(std::time::Instant::now()));
                // A connection that saw a database error (a full disk, an I/O error) is
                // closed, never handed to the next write: SQLite may have rolled the
                // transaction back by itself or left it open, and a later write on that
                // connection must not inherit either state (measured: after a full disk,
                // writes acknowledged on such a connection were gone after a restart).
                let _ = conn.close().await;
            }
            Ok(_) => fault(None),
            Err(_) => {}
        }
    }

    async fn write_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
        key: &Key,
        op: Op,
    ) -> Result<Object> {
        let db = &self.inner.db;
        let d = db.dialect;
        let mut tx = sqlx::Connection::begin(&mut **conn).await.map_err(db_err)?;
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
                let uid = uid_of(&object);
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
        let idx = index_fields(db.indexer.as_ref(), &key.resource, &object);
        match kind {
            EventKind::Added | EventKind::Modified => {
                if kind == EventKind::Modified {
                    delete_key(&mut tx, d, "kfp_objects", key).await?;
                }
                let inserted = sqlx::query(d.sql(
                    "INSERT INTO kfp_objects (resource, namespace, name, uid, revision, created_at, \
                     title, parent_name, parent_uid, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .bind(&idx.uid)
                .bind(rev)
                .bind(idx.created_at)
                .bind(&idx.columns.title)
                .bind(&idx.columns.parent_name)
                .bind(&idx.columns.parent_uid)
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
