//! Reads: one object by key or uid, and pages of a list at the current state or at a past
//! revision (a pinned continue token or `resourceVersionMatch=Exact`), reconstructed from the
//! current rows unchanged since then plus the `prev_value` of the first change after it. Label
//! and field selectors run in SQL; pages follow (namespace, name) bytewise.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::dialect::{Dialect, db_err};
use super::{Db, column_sql, meta};
use crate::index::{index_fields, uid_of};
use crate::selector::{Field, Requirement};
use crate::token::ContinueToken;
use crate::{Key, ListPage, ListRequest, Object, ReadAt, Result, Revision, StoreError};

impl Db {
    pub(super) async fn get(&self, key: &Key) -> Result<Object> {
        if let Some(found) = self.point().and_then(|p| p.get(key)) {
            return found.ok_or_else(|| StoreError::NotFound(key.clone()));
        }
        let d = self.dialect;
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE o.resource = ? AND o.namespace = ? AND o.name = ?",
            select_columns()
        ));
        let row = sqlx::query(sql)
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        row_to_object(&key.resource, &row)
    }

    pub(super) async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object> {
        if let Some(found) = self.point().and_then(|p| p.get_by_uid(resource, uid)) {
            return found.ok_or_else(|| StoreError::NotFound(Key::new(resource, "", uid)));
        }
        let d = self.dialect;
        let sql = d.sql(&format!(
            "SELECT {} FROM kfp_objects o WHERE o.resource = ? AND o.uid = ?",
            select_columns()
        ));
        let row = sqlx::query(sql)
            .bind(resource)
            .bind(uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(Key::new(resource, "", uid)))?;
        row_to_object(resource, &row)
    }

    /// [`crate::Store::dangling_label_values`] from the label index alone: the distinct values
    /// of the label, each probed once against the owners' uid index.
    pub(super) async fn dangling_label_values(
        &self,
        resource: &str,
        label: &str,
        owner_resource: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let d = self.dialect;
        let sql = format!(
            "SELECT d.v FROM (SELECT DISTINCT label_value AS v FROM kfp_labels \
             WHERE resource = ? AND label_key = ?{}) d \
             WHERE NOT EXISTS (SELECT 1 FROM kfp_objects o WHERE o.resource = ? AND o.uid = d.v) \
             ORDER BY d.v LIMIT ?",
            if after.is_some() {
                " AND label_value > ?"
            } else {
                ""
            }
        );
        let mut q = sqlx::query(d.sql(&sql)).bind(resource).bind(label);
        if let Some(a) = after {
            q = q.bind(a);
        }
        let rows = q
            .bind(owner_resource)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(db_err))
            .collect()
    }

    /// The SQLite point reader, while the store is open (a closed store answers Unavailable
    /// through sqlx's closed pool).
    fn point(&self) -> Option<&Arc<super::point::PointReader>> {
        self.point.as_ref().filter(|_| !self.pool.is_closed())
    }

    pub(super) async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        // SQLite: the whole page in one read transaction of a rusqlite connection on a blocking
        // thread (one thread hop per page instead of one per row through sqlx's worker).
        if let Some(reader) = self.point()
            && let Some(_slot) = reader.list_slot().await
        {
            let (db, req, reader) = (self.clone(), req.clone(), reader.clone());
            let done = tokio::task::spawn_blocking(move || {
                reader.with_read_transaction(|reads| ready(db.list_in(reads, &req)))
            })
            .await;
            if let Ok(Some(page)) = done {
                return page;
            }
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let page = self
            .list_in(
                &mut SqlxReads {
                    tx: &mut tx,
                    dialect: self.dialect,
                },
                req,
            )
            .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(page)
    }

    /// A list page from the reads of one read transaction.
    async fn list_in<R: ListReads + ?Sized>(
        &self,
        reads: &mut R,
        req: &ListRequest,
    ) -> Result<ListPage> {
        let d = self.dialect;
        let token = req
            .continue_token
            .as_deref()
            .map(ContinueToken::decode)
            .transpose()?;
        let current = Revision(reads.counter("revision").await? as u64);
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
            let compacted = reads.counter("compacted").await?;
            if (revision.0 as i64) < compacted {
                return Err(StoreError::Gone {
                    requested: revision,
                    compacted: Revision(compacted as u64),
                });
            }
        }
        let historical = pinned && revision < current;
        // Objects unchanged since `revision` (all of them, for a current read).
        let (from, mut clause, order, binds) = page_query(d, req, after.as_ref());
        if historical {
            clause.push_str(&format!(" AND o.revision <= {}", revision.0));
        }
        let limit_sql = req
            .limit
            .map(|l| format!(" LIMIT {}", l + 1))
            .unwrap_or_default();
        let sql = d.sql(&format!(
            "SELECT {} FROM {from} WHERE {clause} ORDER BY {order}.namespace, {order}.name{limit_sql}",
            select_columns()
        ));
        let mut items = reads.objects(&req.resource, &sql.0, &binds).await?;
        // Objects changed (or deleted) since `revision`: their state then is the `prev_value` of
        // their first change after it.
        let mut older: Vec<Object> = Vec::new();
        if historical {
            let mut sql = format!(
                "SELECT c.namespace, c.name, c.prev_value FROM kfp_changes c WHERE c.resource = ? AND c.revision > {rev} \
                 AND c.prev_value IS NOT NULL AND c.revision = (SELECT MIN(c2.revision) FROM kfp_changes c2 \
                 WHERE c2.resource = c.resource AND c2.namespace = c.namespace AND c2.name = c.name AND c2.revision > {rev})",
                rev = revision.0
            );
            let mut binds = vec![req.resource.clone()];
            if let Some(ns) = &req.namespace {
                sql.push_str(" AND c.namespace = ?");
                binds.push(ns.clone());
            }
            for (namespace, name, text) in reads.changes(&d.sql(&sql).0, &binds).await? {
                let key = Key {
                    resource: req.resource.clone(),
                    namespace,
                    name,
                };
                if let Some((ns, name)) = &after
                    && (&key.namespace, &key.name) <= (ns, name)
                {
                    continue;
                }
                let value: Value = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Internal(format!("stored {key} is not JSON: {e}")))?;
                if !self.matches_request(req, &key, &value) {
                    continue;
                }
                let rev = value
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(Revision::parse)
                    .unwrap_or_default();
                older.push(Object {
                    uid: uid_of(&value),
                    key,
                    revision: rev,
                    data: Bytes::from(text),
                });
            }
        }
        let unfiltered = req.labels.is_empty() && req.fields.is_empty();
        let carried = token
            .as_ref()
            .and_then(|t| t.remaining)
            .filter(|_| unfiltered);
        let remaining_without_page = if let Some(n) = carried {
            // Counted by the first page at this same revision: what follows `after` then is
            // what follows it now in this snapshot.
            Some(n)
        } else if unfiltered && req.limit.is_some() && after.is_none() && !historical {
            // The first page of a current list: everything follows it; `kfp_counts` has it.
            let mut sql = String::from(match d {
                Dialect::Postgres => {
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM kfp_counts WHERE resource = ?"
                }
                Dialect::MySql => {
                    "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM kfp_counts WHERE resource = ?"
                }
                Dialect::Sqlite => "SELECT COALESCE(SUM(n), 0) FROM kfp_counts WHERE resource = ?",
            });
            let mut binds = vec![req.resource.clone()];
            if let Some(ns) = &req.namespace {
                sql.push_str(" AND namespace = ?");
                binds.push(ns.clone());
            }
            let n = reads.count(&d.sql(&sql).0, &binds).await?;
            Some(n.max(0) as u64)
        } else if unfiltered && req.limit.is_some() {
            // Count what follows `after` (page items included; the page is subtracted below).
            let (mut clause, binds) = where_clause(d, req, after.as_ref(), "o");
            if historical {
                clause.push_str(&format!(" AND o.revision <= {}", revision.0));
            }
            let sql = d.sql(&format!(
                "SELECT COUNT(*) FROM kfp_objects o WHERE {clause}"
            ));
            let n = reads.count(&sql.0, &binds).await?;
            Some(n as u64 + older.len() as u64)
        } else {
            None
        };
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
            remaining = remaining_without_page.map(|n| n.saturating_sub(limit as u64));
            continue_token = last.map(|after| {
                ContinueToken {
                    revision,
                    after,
                    remaining,
                }
                .encode()
            });
        }
        Ok(ListPage {
            revision,
            items,
            continue_token,
            remaining,
        })
    }

    fn matches_request(&self, req: &ListRequest, key: &Key, object: &Value) -> bool {
        if key.resource != req.resource {
            return false;
        }
        if let Some(ns) = &req.namespace
            && &key.namespace != ns
        {
            return false;
        }
        let idx = index_fields(self.indexer.as_ref(), &req.resource, object);
        req.labels.matches(&idx.labels)
            && req.fields.matches(|f| {
                Some(match f {
                    Field::Name => key.name.clone(),
                    Field::Namespace => key.namespace.clone(),
                    Field::Indexed(c) => idx.columns.get(c).to_owned(),
                })
            })
    }
}

/// The reads of one list inside one read transaction: through sqlx on every dialect
/// ([`SqlxReads`]) or, on SQLite, through a rusqlite connection on a blocking thread
/// ([`super::point`]). SQL comes with the dialect's placeholders; every bind is a string.
#[async_trait::async_trait]
pub(super) trait ListReads: Send {
    /// A `kfp_meta` counter.
    async fn counter(&mut self, name: &str) -> Result<i64>;
    /// Rows of [`select_columns`] as objects of `resource`.
    async fn objects(&mut self, resource: &str, sql: &str, binds: &[String])
    -> Result<Vec<Object>>;
    /// Rows of (namespace, name, text).
    async fn changes(
        &mut self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<(String, String, String)>>;
    /// One integer.
    async fn count(&mut self, sql: &str, binds: &[String]) -> Result<i64>;
}

/// [`ListReads`] in a sqlx transaction.
struct SqlxReads<'t, 'c> {
    tx: &'t mut sqlx::Transaction<'c, sqlx::Any>,
    dialect: Dialect,
}

fn bound<'q>(
    sql: &'q str,
    binds: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    q
}

#[async_trait::async_trait]
impl ListReads for SqlxReads<'_, '_> {
    async fn counter(&mut self, name: &str) -> Result<i64> {
        meta(&mut **self.tx, self.dialect, name).await
    }

    async fn objects(
        &mut self,
        resource: &str,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<Object>> {
        let rows = bound(sql, binds)
            .fetch_all(&mut **self.tx)
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| row_to_object(resource, r)).collect()
    }

    async fn changes(
        &mut self,
        sql: &str,
        binds: &[String],
    ) -> Result<Vec<(String, String, String)>> {
        let rows = bound(sql, binds)
            .fetch_all(&mut **self.tx)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db_err)?,
                    r.try_get(1).map_err(db_err)?,
                    r.try_get(2).map_err(db_err)?,
                ))
            })
            .collect()
    }

    async fn count(&mut self, sql: &str, binds: &[String]) -> Result<i64> {
        bound(sql, binds)
            .fetch_one(&mut **self.tx)
            .await
            .map_err(db_err)?
            .try_get(0)
            .map_err(db_err)
    }
}

/// The output of a future that never waits (the rusqlite [`ListReads`] does its work when
/// polled); `None` if it would wait.
fn ready<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

pub(super) fn select_columns() -> &'static str {
    "o.namespace, o.name, o.uid, o.revision, o.value"
}

pub(super) fn row_to_object(resource: &str, r: &AnyRow) -> Result<Object> {
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

/// The FROM, the WHERE, the table whose key columns give the page's order, and the binds of a
/// list page.
///
/// With a label equality among the requirements, the page walks that label's index in key
/// order (`kfp_labels l`, which holds the object's key after the label) and joins each match to
/// its object: it reads only the objects that have the label, where walking the objects probed
/// the labels of every one it passed (a label held by 10% of the objects: ten probes per item).
/// The remaining requirements still apply to each joined object. SQLite takes the join order as
/// written (`CROSS JOIN`); PostgreSQL and MySQL choose their own.
fn page_query(
    dialect: Dialect,
    req: &ListRequest,
    after: Option<&(String, String)>,
) -> (&'static str, String, &'static str, Vec<String>) {
    let driving = req.labels.0.iter().enumerate().find_map(|(i, r)| match r {
        Requirement::Equals(k, v) => Some((i, k.clone(), v.clone())),
        Requirement::In(k, vs) if vs.len() == 1 => Some((i, k.clone(), vs[0].clone())),
        _ => None,
    });
    let Some((at, key, value)) = driving else {
        let (clause, binds) = where_clause(dialect, req, after, "o");
        return ("kfp_objects o", clause, "o", binds);
    };
    let mut rest = req.clone();
    rest.labels.0.remove(at);
    let (clause, rest_binds) = where_clause(dialect, &rest, after, "l");
    let mut binds = vec![req.resource.clone(), key, value];
    binds.extend(rest_binds);
    let clause = format!(
        "l.resource = ? AND l.label_key = ? AND l.label_value = ? AND o.resource = l.resource \
         AND o.namespace = l.namespace AND o.name = l.name AND {clause}"
    );
    ("kfp_labels l CROSS JOIN kfp_objects o", clause, "l", binds)
}

/// Builds the WHERE clause of a list over `kfp_objects o` and its bind values; the namespace
/// and the position after the last page compare the key columns of `key_table` (`o`, or `l`
/// when the page walks `kfp_labels l` joined to `o` on the key).
fn where_clause(
    dialect: Dialect,
    req: &ListRequest,
    after: Option<&(String, String)>,
    key_table: &str,
) -> (String, Vec<String>) {
    let t = key_table;
    let mut sql = String::from("o.resource = ?");
    let mut binds = vec![req.resource.clone()];
    if let Some(ns) = &req.namespace {
        sql.push_str(&format!(" AND {t}.namespace = ?"));
        binds.push(ns.clone());
    }
    // The position after the last page, written so that the database seeks to it in the key
    // index: `OR` of the two key columns made SQLite walk the range from its start on every
    // page (a full list of 100k objects: 15 CPU-ms a page, growing with the position).
    match (after, &req.namespace) {
        (None, _) => {}
        (Some((after_ns, name)), Some(ns)) => match after_ns.cmp(ns) {
            std::cmp::Ordering::Equal => {
                sql.push_str(&format!(" AND {t}.name > ?"));
                binds.push(name.clone());
            }
            // A token from a list of another namespace: nothing of this one is after it, or
            // all of it is.
            std::cmp::Ordering::Greater => sql.push_str(" AND 1 = 0"),
            std::cmp::Ordering::Less => {}
        },
        // Row values seek on SQLite and PostgreSQL; MySQL/MariaDB get the namespace bound.
        (Some((ns, name)), None) if dialect != Dialect::MySql => {
            sql.push_str(&format!(" AND ({t}.namespace, {t}.name) > (?, ?)"));
            binds.extend([ns.clone(), name.clone()]);
        }
        (Some((ns, name)), None) => {
            sql.push_str(&format!(
                " AND {t}.namespace >= ? AND ({t}.namespace > ? OR {t}.name > ?)"
            ));
            binds.extend([ns.clone(), ns.clone(), name.clone()]);
        }
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
            Field::Indexed(c) => column_sql(*c),
        };
        sql.push_str(&format!(" AND {col} {} ?", if *eq { "=" } else { "<>" }));
        binds.push(value.clone());
    }
    (sql, binds)
}
