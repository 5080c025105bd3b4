//! Versioned schema migrations on every SQL backend: a database laid out by a server from before
//! migrations existed (schema 1, made with idempotent `CREATE ... IF NOT EXISTS` statements) is
//! adopted and migrated with its data kept; a second start changes nothing; a database that a
//! newer server migrated further is refused with a clear error instead of being written to.

mod common;

use std::sync::Arc;

use kfp_storage::query::{Column, Op, Predicate, QueryRequest};
use kfp_storage::{
    FieldSelector, IndexColumn, Key, ListRequest, Store, StoreError, selector::Field,
};
use sqlx::{AssertSqlSafe, Connection, Row};

fn initial_sql(url: &str) -> &'static str {
    match url.split(':').next() {
        Some("sqlite") => include_str!("../migrations/sqlite/0001_initial.sql"),
        Some("postgres") => include_str!("../migrations/postgres/0001_initial.sql"),
        _ => include_str!("../migrations/mysql/0001_initial.sql"),
    }
}

async fn connect(url: &str) -> sqlx::AnyConnection {
    let url = if url.starts_with("sqlite") {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    sqlx::AnyConnection::connect(&url).await.unwrap()
}

const OBJECT: &str = r#"{"apiVersion":"pipelines.kubeflow.org/v2beta1","kind":"PipelineVersion","metadata":{"name":"old","namespace":"ns","uid":"u-old","resourceVersion":"1"},"spec":{"pipelineName":"p","displayName":"Old Title","versionName":"v-old","description":"An old one","tags":{"team":"ml"}}}"#;

#[tokio::test]
async fn a_schema_1_database_is_migrated_with_its_data_and_a_newer_one_is_refused() {
    for b in common::backends().await {
        // What a server before versioned migrations left behind: schema 1, one object.
        let mut conn = connect(&b.url).await;
        sqlx::raw_sql(AssertSqlSafe(initial_sql(&b.url)))
            .execute(&mut conn)
            .await
            .unwrap();
        let insert = "INSERT INTO kfp_objects (resource, namespace, name, uid, revision, created_at, \
                      display_name, pipeline_name, pipeline_uid, value) VALUES \
                      ('pipelineversions', 'ns', 'old', 'u-old', 1, 0, 'Old Title', 'p', 'pu', '";
        sqlx::raw_sql(AssertSqlSafe(format!(
            "{insert}{OBJECT}'); UPDATE kfp_meta SET value = 1 WHERE name = 'revision'"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        for start in 0..2 {
            let mut config = common::config(&b.url);
            config.indexer = Arc::new(kfp_storage::testing::SuiteIndexer);
            let s = kfp_storage::SqlStore::open(config).await.unwrap();
            let got = s.get(&Key::new("pipelineversions", "ns", "old")).await;
            assert_eq!(got.unwrap().uid, "u-old", "{} start {start}", b.name);
            let by_title = s
                .query(&QueryRequest {
                    resource: "pipelineversions".into(),
                    terms: Vec::new(),
                    namespace: None,
                    predicates: vec![Predicate {
                        column: Column::Indexed(IndexColumn::Title),
                        op: Op::Substring("old".into()),
                    }],
                    sort: Column::Indexed(IndexColumn::Title),
                    descending: false,
                    after: None,
                    limit: 10,
                })
                .await
                .unwrap();
            assert_eq!(
                by_title.total, 1,
                "{}: the renamed column kept its value",
                b.name
            );
            let by_parent = s
                .list(&ListRequest {
                    resource: "pipelineversions".into(),
                    fields: FieldSelector::parse(
                        "spec.pipelineName=p",
                        &[("spec.pipelineName", Field::Indexed(IndexColumn::ParentName))],
                    )
                    .unwrap(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(by_parent.items.len(), 1, "{}", b.name);
            // Columns and terms added by migration 3 were filled from the stored object.
            let reindexed = s
                .query(&QueryRequest {
                    resource: "pipelineversions".into(),
                    terms: vec![("team".into(), "ml".into())],
                    namespace: None,
                    predicates: vec![
                        Predicate {
                            column: Column::Indexed(IndexColumn::Detail),
                            op: Op::Substring("old one".into()),
                        },
                        Predicate {
                            column: Column::Indexed(IndexColumn::Alias),
                            op: Op::Eq(kfp_storage::query::Value::Text("v-old".into())),
                        },
                    ],
                    sort: Column::Name,
                    descending: false,
                    after: None,
                    limit: 10,
                })
                .await
                .unwrap();
            assert_eq!(reindexed.total, 1, "{}: re-indexed at start", b.name);
            s.close().await;
        }

        let mut conn = connect(&b.url).await;
        let rows = sqlx::query("SELECT version FROM kfp_schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            versions,
            vec![1, 2, 3, 4, 5, 6],
            "{}: applied once each",
            b.name
        );
        let schema: i64 = sqlx::query("SELECT value FROM kfp_meta WHERE name = 'schema'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(schema, 6, "{}", b.name);
        // Migration 5 counted the objects already there.
        let counts: Vec<i64> = sqlx::query("SELECT n FROM kfp_counts")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(counts, vec![1], "{}", b.name);

        // A newer server's migration 7: this server must not touch the database.
        sqlx::raw_sql(AssertSqlSafe(
            "INSERT INTO kfp_schema_migrations (version, description, success, checksum, execution_time) \
             SELECT 7, 'from the future', success, checksum, execution_time FROM kfp_schema_migrations \
             WHERE version = 6",
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let refused = kfp_storage::SqlStore::open(common::config(&b.url)).await;
        match refused {
            Err(StoreError::Internal(m)) => {
                assert!(m.contains("newer server"), "{}: {m}", b.name)
            }
            other => panic!(
                "{}: expected a refusal, got {:?}",
                b.name,
                other.map(|_| ())
            ),
        }
    }
}
