//! Sorted, filtered, keyset-paged queries with a total count (the KFP REST view's lists): the
//! count and the page run in one read transaction (REPEATABLE READ on PostgreSQL), so
//! `total_size` and the page agree.

use serde_json::Value;
use sqlx::Row;

use super::Db;
use super::dialect::{Dialect, db_err};
use super::read::{row_to_object, select_columns};
use crate::index::IndexColumn;
use crate::index::index_fields;
use crate::query::{self, Column, Cursor, Op as QueryOp, QueryPage, QueryRequest};
use crate::{Object, Result};

impl Db {
    pub(super) async fn query(&self, req: &QueryRequest) -> Result<QueryPage> {
        let d = self.dialect;
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
                QueryOp::Substring(s) if p.column == Column::Indexed(IndexColumn::Title) => {
                    // The title's case-folded copy (Unicode, folded once at write time): a
                    // case-sensitive match of the folded pattern, over a covering index.
                    if d == Dialect::Sqlite {
                        clause.push_str(" AND instr(o.title_folded, ?) > 0");
                        binds.push(Bind::Text(s.to_lowercase()));
                    } else {
                        clause.push_str(" AND o.title_folded LIKE ? ESCAPE '!'");
                        binds.push(Bind::Text(query::like_pattern(s)));
                    }
                }
                QueryOp::Substring(s) => {
                    // SQLite's LIKE ignores ASCII case by itself, and LOWER() on every row
                    // costs more than the match (a covering index scan stays one pass).
                    if d == Dialect::Sqlite {
                        clause.push_str(&format!(" AND {col} LIKE ? ESCAPE '!'"));
                    } else {
                        clause.push_str(&format!(" AND LOWER({col}) LIKE ? ESCAPE '!'"));
                    }
                    binds.push(Bind::Text(query::like_pattern(s)));
                }
                QueryOp::Contains(s) => {
                    // SQLite's LIKE folds ASCII case; instr() does not.
                    if d == Dialect::Sqlite {
                        clause.push_str(&format!(" AND instr({col}, ?) > 0"));
                        binds.push(Bind::Text(s.clone()));
                    } else {
                        clause.push_str(&format!(" AND {col} LIKE ? ESCAPE '!'"));
                        binds.push(Bind::Text(query::escaped_pattern(s)));
                    }
                }
            }
        }
        for (k, v) in &req.terms {
            clause.push_str(
                " AND EXISTS (SELECT 1 FROM kfp_terms t WHERE t.resource = o.resource AND \
                 t.namespace = o.namespace AND t.name = o.name AND t.term_key = ? AND t.term_value = ?)",
            );
            binds.push(Bind::Text(k.clone()));
            binds.push(Bind::Text(v.clone()));
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
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
                let idx = index_fields(self.indexer.as_ref(), &req.resource, &v);
                let value = match req.sort {
                    Column::CreatedAt => query::Value::Int(idx.created_at),
                    Column::Uid => query::Value::Text(idx.uid.clone()),
                    Column::Name => query::Value::Text(last.key.name.clone()),
                    Column::Namespace => query::Value::Text(last.key.namespace.clone()),
                    Column::Indexed(c) => query::Value::Text(idx.columns.get(c).to_owned()),
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
}
