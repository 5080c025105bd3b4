//! A KFP 2.17 database for the migration tests: KFP's tables (`pipelines`, `pipeline_versions`,
//! `pipeline_tags`, `pipeline_version_tags`, as its GORM models create them) in a fresh MariaDB
//! database, loaded with rows made from every corpus pipeline — several versions each, tags, a
//! shared pipeline, a name that is not a Kubernetes name, rows in state CREATING, specs the
//! server refuses — and what a migration must make of them.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Connection;

use crate::corpus;

/// KFP 2.17's tables as its GORM models create them (the columns the migration reads, with
/// their types; the schema facts are in the issue).
pub const KFP_SCHEMA: &[&str] = &[
    "CREATE TABLE pipelines (
        UUID varchar(64) NOT NULL PRIMARY KEY,
        CreatedAtInSec bigint NOT NULL,
        Name varchar(128) NOT NULL,
        DisplayName varchar(128) NOT NULL DEFAULT '',
        Description longtext NOT NULL,
        Parameters longtext NOT NULL,
        Status varchar(32) NOT NULL,
        DefaultVersionId varchar(255) NULL,
        Namespace varchar(63) NOT NULL DEFAULT '',
        UNIQUE KEY name_namespace_index (Name, Namespace))",
    "CREATE TABLE pipeline_versions (
        UUID varchar(191) NOT NULL PRIMARY KEY,
        CreatedAtInSec bigint NOT NULL,
        Name varchar(127) NOT NULL,
        DisplayName varchar(127) NOT NULL DEFAULT '',
        Parameters longtext NOT NULL,
        PipelineId varchar(64) NOT NULL,
        Status varchar(32) NOT NULL,
        CodeSourceUrl varchar(255) NULL,
        Description longtext NOT NULL,
        PipelineSpec longtext NOT NULL,
        PipelineSpecURI longtext NOT NULL,
        UNIQUE KEY idx_pipelineid_name (Name, PipelineId),
        KEY idx_pipeline_versions_CreatedAtInSec (CreatedAtInSec),
        CONSTRAINT fk_pipeline FOREIGN KEY (PipelineId) REFERENCES pipelines (UUID) ON DELETE CASCADE)",
    "CREATE TABLE pipeline_tags (PipelineId varchar(64) NOT NULL, `key` varchar(255) NOT NULL, `value` varchar(255) NOT NULL)",
    "CREATE TABLE pipeline_version_tags (PipelineVersionId varchar(191) NOT NULL, `key` varchar(255) NOT NULL, `value` varchar(255) NOT NULL)",
];

/// What the source holds and what must come out.
#[derive(Default)]
pub struct Fixture {
    /// READY pipelines: uid -> (target namespace, expected object name, created, display name).
    pub pipelines: BTreeMap<String, (String, String, i64, String)>,
    /// READY versions with valid specs: uid -> (pipeline uid, created, compiled spec).
    pub versions: BTreeMap<String, (String, i64, Value)>,
    /// uids of rows that must be skipped.
    pub skipped: Vec<String>,
}

struct Row<'a> {
    uid: String,
    created: i64,
    name: &'a str,
    display: &'a str,
    status: &'a str,
}

async fn insert_pipeline(conn: &mut sqlx::MySqlConnection, r: &Row<'_>, namespace: &str) {
    sqlx::query(
        "INSERT INTO pipelines (UUID, CreatedAtInSec, Name, DisplayName, Description, Parameters, Status, Namespace) VALUES (?, ?, ?, ?, ?, '', ?, ?)",
    )
    .bind(&r.uid)
    .bind(r.created)
    .bind(r.name)
    .bind(r.display)
    .bind(format!("description of {}", r.name))
    .bind(r.status)
    .bind(namespace)
    .execute(conn)
    .await
    .expect("insert pipeline");
}

async fn insert_version(conn: &mut sqlx::MySqlConnection, r: &Row<'_>, pipeline: &str, spec: &str) {
    sqlx::query(
        "INSERT INTO pipeline_versions (UUID, CreatedAtInSec, Name, DisplayName, Parameters, PipelineId, Status, CodeSourceUrl, Description, PipelineSpec, PipelineSpecURI) VALUES (?, ?, ?, ?, '', ?, ?, ?, '', ?, '')",
    )
    .bind(&r.uid)
    .bind(r.created)
    .bind(r.name)
    .bind(r.display)
    .bind(pipeline)
    .bind(r.status)
    .bind("https://example.com/src")
    .bind(spec)
    .execute(conn)
    .await
    .expect("insert version");
}

fn uid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A fresh MariaDB database (on the server `base` names) with KFP's tables and the fixture's
/// rows; its URL and what must come out.
pub async fn kfp_database(base: &str, name: &str) -> (String, Fixture) {
    let mut admin = sqlx::MySqlConnection::connect(base).await.expect("MariaDB");
    let db = format!("kfp_src_{name}_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{db}");
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    for ddl in KFP_SCHEMA {
        sqlx::query(sqlx::AssertSqlSafe(*ddl))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut fx = Fixture::default();
    let mut n = 0;
    let mut next = || {
        n += 1;
        (uid(n), 1_600_000_000 + n as i64 * 60)
    };
    let mut files: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).unwrap();
        let compiled = kfp_apiservice::ir::parse_pipeline_file(text.as_bytes()).unwrap();
        let stem = f.file_stem().unwrap().to_str().unwrap().replace('_', "-");
        // The first pipeline is shared (no namespace); the second has a human name.
        let (namespace, target_ns) = match i {
            0 => ("", "kubeflow"),
            _ if i % 2 == 0 => ("team-a", "team-a"),
            _ => ("team-b", "team-b"),
        };
        let name = if i == 1 {
            "My Hello World".to_owned()
        } else {
            stem.clone()
        };
        let (pid, created) = next();
        let display = if i % 3 == 0 { "" } else { "Display Name" };
        insert_pipeline(
            &mut conn,
            &Row {
                uid: pid.clone(),
                created,
                name: &name,
                display,
                status: "READY",
            },
            namespace,
        )
        .await;
        let object_name = if i == 1 {
            format!("my-hello-world-{}", &pid[..8])
        } else {
            stem.clone()
        };
        fx.pipelines.insert(
            pid.clone(),
            (
                target_ns.to_owned(),
                object_name,
                created,
                if display.is_empty() {
                    name.clone()
                } else {
                    display.to_owned()
                },
            ),
        );
        sqlx::query(
            "INSERT INTO pipeline_tags (PipelineId, `key`, `value`) VALUES (?, 'team', 'ml')",
        )
        .bind(&pid)
        .execute(&mut conn)
        .await
        .unwrap();
        // Versions: one named as the pipeline (KFP's upload default), a "v2", and for every
        // third pipeline a version still CREATING.
        for (vname, status) in [
            (name.as_str(), "READY"),
            ("v2", "READY"),
            ("v3", "CREATING"),
        ] {
            if status == "CREATING" && i % 3 != 0 {
                continue;
            }
            let (vid, vcreated) = next();
            insert_version(
                &mut conn,
                &Row {
                    uid: vid.clone(),
                    created: vcreated,
                    name: vname,
                    display: "",
                    status,
                },
                &pid,
                &text,
            )
            .await;
            if status == "READY" {
                fx.versions.insert(
                    vid.clone(),
                    (pid.clone(), vcreated, compiled.pipeline_spec.clone()),
                );
                sqlx::query("INSERT INTO pipeline_version_tags (PipelineVersionId, `key`, `value`) VALUES (?, 'stage', 'prod')")
                    .bind(&vid)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            } else {
                fx.skipped.push(vid);
            }
        }
    }
    // A pipeline still CREATING, with a version: both skipped.
    let (pid, created) = next();
    insert_pipeline(
        &mut conn,
        &Row {
            uid: pid.clone(),
            created,
            name: "half-made",
            display: "",
            status: "CREATING",
        },
        "team-a",
    )
    .await;
    fx.skipped.push(pid.clone());
    let hello = std::fs::read_to_string(corpus().join("hello_world.yaml")).unwrap();
    let (vid, vcreated) = next();
    insert_version(
        &mut conn,
        &Row {
            uid: vid.clone(),
            created: vcreated,
            name: "v1",
            display: "",
            status: "READY",
        },
        &pid,
        &hello,
    )
    .await;
    fx.skipped.push(vid);
    // Versions whose specs the server refuses, under the first READY pipeline: skipped.
    let first = fx.pipelines.keys().next().unwrap().clone();
    for bad in ["bad_parameter_type_enum.yaml", "argo_v1_workflow.yaml"] {
        let spec = std::fs::read_to_string(corpus().join("invalid").join(bad)).unwrap();
        let (vid, vcreated) = next();
        insert_version(
            &mut conn,
            &Row {
                uid: vid.clone(),
                created: vcreated,
                name: bad.trim_end_matches(".yaml"),
                display: "",
                status: "READY",
            },
            &first,
            &spec,
        )
        .await;
        fx.skipped.push(vid);
    }
    (url, fx)
}
