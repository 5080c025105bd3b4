//! The schema as versioned migrations, one directory per dialect under `storage/migrations/`,
//! compiled into the binary and applied at start by sqlx's migrator (its table:
//! `kfp_schema_migrations`). Migration 1 is idempotent, so a database made before migrations
//! existed is adopted unchanged. PostgreSQL and MySQL serialize concurrent starts with the
//! migrator's advisory lock; SQLite is embedded in one process.
//!
//! Adding a migration: a new `NNNN_name.sql` in each of the three directories, the same version
//! number in all three, an entry in [`MIGRATIONS`], and `SCHEMA_VERSION` raised; the last
//! statement sets `kfp_meta.schema`, which an older server checks and refuses to run on.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

use super::dialect::{Dialect, db_err};
use crate::{Result, StoreError};

/// The layout this server reads and writes (= the last migration's version).
pub(crate) const SCHEMA_VERSION: i64 = 6;

/// Version, description and the SQL of each dialect (SQLite, PostgreSQL, MySQL).
const MIGRATIONS: &[(i64, &str, [&str; 3])] = &[
    (
        1,
        "initial",
        [
            include_str!("../../migrations/sqlite/0001_initial.sql"),
            include_str!("../../migrations/postgres/0001_initial.sql"),
            include_str!("../../migrations/mysql/0001_initial.sql"),
        ],
    ),
    (
        2,
        "generic index",
        [
            include_str!("../../migrations/sqlite/0002_generic_index.sql"),
            include_str!("../../migrations/postgres/0002_generic_index.sql"),
            include_str!("../../migrations/mysql/0002_generic_index.sql"),
        ],
    ),
    (
        3,
        "detail column and terms",
        [
            include_str!("../../migrations/sqlite/0003_detail_and_terms.sql"),
            include_str!("../../migrations/postgres/0003_detail_and_terms.sql"),
            include_str!("../../migrations/mysql/0003_detail_and_terms.sql"),
        ],
    ),
    (
        4,
        "label index in key order",
        [
            include_str!("../../migrations/sqlite/0004_label_order.sql"),
            include_str!("../../migrations/postgres/0004_label_order.sql"),
            include_str!("../../migrations/mysql/0004_label_order.sql"),
        ],
    ),
    (
        5,
        "object counts",
        [
            include_str!("../../migrations/sqlite/0005_counts.sql"),
            include_str!("../../migrations/postgres/0005_counts.sql"),
            include_str!("../../migrations/mysql/0005_counts.sql"),
        ],
    ),
    (
        6,
        "change feed by age",
        [
            include_str!("../../migrations/sqlite/0006_change_age.sql"),
            include_str!("../../migrations/postgres/0006_change_age.sql"),
            include_str!("../../migrations/mysql/0006_change_age.sql"),
        ],
    ),
];

fn migrator(dialect: Dialect) -> Migrator {
    let column = match dialect {
        Dialect::Sqlite => 0,
        Dialect::Postgres => 1,
        Dialect::MySql => 2,
    };
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql[column].into_sql_str(),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name("kfp_schema_migrations");
    m
}

/// Brings the database to [`SCHEMA_VERSION`], then checks that it is exactly that version.
pub(crate) async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    migrator(dialect).run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => match db_err(e) {
            StoreError::Internal(m) => {
                StoreError::Internal(format!("applying the schema migrations failed: {m}"))
            }
            other => other,
        },
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Internal(format!(
            "the database has schema migration {v}, which this server does not know: it was \
             written by a newer server (this one understands up to {SCHEMA_VERSION})"
        )),
        other => StoreError::Internal(format!("schema migration: {other}")),
    })?;
    let version: i64 = sqlx::query(dialect.sql("SELECT value FROM kfp_meta WHERE name = ?"))
        .bind("schema")
        .fetch_one(pool)
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err)?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "the database has schema version {version}; this server understands {SCHEMA_VERSION}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_has_every_migration_and_the_last_sets_the_version() {
        for (i, (version, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                *version,
                i as i64 + 1,
                "versions are 1, 2, ... without gaps"
            );
            for text in sql {
                assert!(!text.trim().is_empty());
                if *version > 1 {
                    assert!(
                        text.contains(&format!(
                            "UPDATE kfp_meta SET value = {version} WHERE name = 'schema'"
                        )),
                        "migration {version} must set kfp_meta.schema"
                    );
                }
            }
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }
}
