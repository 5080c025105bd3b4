//! The KFP database source: KFP 2.17's `pipelines`, `pipeline_versions`, `pipeline_tags` and
//! `pipeline_version_tags` tables (GORM models in `backend/src/apiserver/model`) on MySQL or
//! MariaDB, read once, in creation order, without writing to them.
//!
//! Row -> object: `UUID` -> `metadata.uid`, `CreatedAtInSec` -> `creationTimestamp`, `Name` ->
//! the object name (mapped when it is not a Kubernetes name, [`super::kubernetes_name`]),
//! `DisplayName` (else the original name) -> `spec.displayName`, `Description`, tags, a
//! version's `CodeSourceUrl`, `PipelineSpecURI` and `PipelineSpec` (the uploaded file: the IR
//! and its platform spec document, parsed with the upload's reader). Rows whose `Status` is not
//! `READY`, versions without a spec or with one the reader refuses, and versions of pipelines
//! not taken are skipped and reported.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::convert::version_object_name;
use kfp_apiservice::{API_VERSION, Pipeline, PipelineVersion, ir};
use serde_json::{Map, Value, json};
use sqlx::Row;
use sqlx::mysql::{MySqlPool, MySqlRow};

use futures_util::TryStreamExt;
use kfp_storage::StoreError;

use super::{
    Candidate, Entry, Kind, MAX_NAME, Migrator, Namespaces, ORIGINAL_NAME_ANNOTATION, Outcome, Skip,
};

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connecting or a query failed.
    #[error("reading the KFP database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database has no KFP tables.
    #[error("the database has no `{0}` table: is this KFP's database (mlpipeline)?")]
    NotKfp(&'static str),
    /// The target store failed (what was written stays).
    #[error(transparent)]
    Target(#[from] StoreError),
}

fn text(row: &MySqlRow, col: &str) -> Result<String, sqlx::Error> {
    Ok(row.try_get::<Option<String>, _>(col)?.unwrap_or_default())
}

struct PipelineRow {
    uid: String,
    created: i64,
    name: String,
    display_name: String,
    description: String,
    status: String,
    namespace: String,
}

/// Migrates every pipeline and version of the KFP database at `url` (`mysql://USER:PASS@HOST/DB`)
/// through `m`: pipelines first (read at once: they are small), then versions streamed in
/// creation order, one row in memory at a time.
pub async fn migrate(
    url: &str,
    namespaces: &Namespaces,
    m: &mut Migrator,
    progress: &mut dyn FnMut(&Entry, &Outcome),
) -> Result<(), SourceError> {
    let pool = MySqlPool::connect(url).await?;
    let result = migrate_from(&pool, namespaces, m, progress).await;
    pool.close().await;
    result
}

async fn migrate_from(
    pool: &MySqlPool,
    namespaces: &Namespaces,
    m: &mut Migrator,
    progress: &mut dyn FnMut(&Entry, &Outcome),
) -> Result<(), SourceError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
    )
    .fetch_all(pool)
    .await?;
    let has = |t: &str| tables.iter().any(|n| n.eq_ignore_ascii_case(t));
    for t in ["pipelines", "pipeline_versions"] {
        if !has(t) {
            return Err(SourceError::NotKfp(t));
        }
    }
    let pipeline_tags = if has("pipeline_tags") {
        tags(pool, "SELECT PipelineId, `key`, `value` FROM pipeline_tags").await?
    } else {
        HashMap::new()
    };
    let version_tags = if has("pipeline_version_tags") {
        tags(
            pool,
            "SELECT PipelineVersionId, `key`, `value` FROM pipeline_version_tags",
        )
        .await?
    } else {
        HashMap::new()
    };

    let rows = sqlx::query(
        "SELECT UUID, CreatedAtInSec, Name, DisplayName, Description, Status, Namespace \
         FROM pipelines ORDER BY CreatedAtInSec, UUID",
    )
    .fetch_all(pool)
    .await?;
    // Source pipeline uid -> (target namespace, object name, display name) of those taken.
    let mut taken: HashMap<String, (String, String, String)> = HashMap::new();
    for row in rows {
        let p = PipelineRow {
            uid: text(&row, "UUID")?,
            created: row.try_get("CreatedAtInSec")?,
            name: text(&row, "Name")?,
            display_name: text(&row, "DisplayName")?,
            description: text(&row, "Description")?,
            status: text(&row, "Status")?,
            namespace: text(&row, "Namespace")?,
        };
        let source = format!("pipeline {:?} ({})", p.name, p.uid);
        if p.status != "READY" {
            m.skip(Skip {
                source,
                reason: format!("its state is {:?}, not READY", p.status),
            });
            continue;
        }
        let Some(created) = timestamp(p.created) else {
            m.skip(Skip {
                source,
                reason: format!("CreatedAtInSec {} is not a time", p.created),
            });
            continue;
        };
        let namespace = namespaces.target(&p.namespace);
        let (name, renamed) = super::kubernetes_name(&p.name, &p.uid, MAX_NAME);
        let display = if p.display_name.is_empty() {
            p.name.clone()
        } else {
            p.display_name.clone()
        };
        let mut spec = Map::new();
        spec.insert("displayName".into(), json!(display));
        if !p.description.is_empty() {
            spec.insert("description".into(), json!(p.description));
        }
        if let Some(t) = pipeline_tags.get(&p.uid) {
            spec.insert("tags".into(), json!(t));
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Pipeline::KIND,
            "metadata": metadata(&name, &namespace, renamed.then_some(p.name.as_str())),
            "spec": spec,
        });
        taken.insert(
            p.uid.clone(),
            (namespace.clone(), name.clone(), p.name.clone()),
        );
        m.handle(
            Candidate {
                kind: Kind::Pipeline,
                namespace,
                name,
                uid: p.uid,
                created,
                body,
                parent_uid: None,
                source,
                renamed_from: renamed.then_some(p.name),
                managed_fields: None,
            },
            progress,
        )
        .await?;
        if m.stopped() {
            return Ok(());
        }
    }

    let mut rows = sqlx::query(
        "SELECT UUID, CreatedAtInSec, Name, DisplayName, PipelineId, Status, CodeSourceUrl, \
         Description, PipelineSpec, PipelineSpecURI \
         FROM pipeline_versions ORDER BY CreatedAtInSec, UUID",
    )
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let uid = text(&row, "UUID")?;
        let vname = text(&row, "Name")?;
        let pipeline_id = text(&row, "PipelineId")?;
        let status = text(&row, "Status")?;
        let created_s: i64 = row.try_get("CreatedAtInSec")?;
        let Some((namespace, pipeline_name, pipeline_original)) = taken.get(&pipeline_id) else {
            m.skip(Skip {
                source: format!("version {vname:?} ({uid}) of pipeline {pipeline_id}"),
                reason: "its pipeline is skipped".into(),
            });
            continue;
        };
        let source = format!("version {vname:?} ({uid}) of pipeline {pipeline_original:?}");
        if status != "READY" {
            m.skip(Skip {
                source,
                reason: format!("its state is {status:?}, not READY"),
            });
            continue;
        }
        let Some(created) = timestamp(created_s) else {
            m.skip(Skip {
                source,
                reason: format!("CreatedAtInSec {created_s} is not a time"),
            });
            continue;
        };
        let spec_text = text(&row, "PipelineSpec")?;
        if spec_text.trim().is_empty() {
            m.skip(Skip {
                source,
                reason: "no pipeline spec is stored (only a PipelineSpecURI)".into(),
            });
            continue;
        }
        let parsed = match ir::parse_pipeline_file(spec_text.as_bytes()) {
            Ok(p) => p,
            Err(errs) => {
                m.skip(Skip {
                    source,
                    reason: format!(
                        "its pipeline spec is invalid: {}",
                        errs.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                });
                continue;
            }
        };
        // The version's own name, kept unless it cannot be part of an object name. A version
        // named as its pipeline (KFP's upload default) follows the pipeline's mapped name, so
        // its object is named as the pipeline, as the REST API names it.
        let (version_name, renamed) = if vname == *pipeline_original {
            (pipeline_name.clone(), vname != *pipeline_name)
        } else {
            let room = MAX_NAME.saturating_sub(pipeline_name.len() + 1);
            super::kubernetes_name(&vname, &uid, room)
        };
        let name = version_object_name(pipeline_name, &version_name);
        let display = text(&row, "DisplayName")?;
        let mut spec = Map::new();
        spec.insert("pipelineName".into(), json!(pipeline_name));
        spec.insert("versionName".into(), json!(version_name));
        spec.insert(
            "displayName".into(),
            json!(if display.is_empty() { &vname } else { &display }),
        );
        for (field, col) in [
            ("description", "Description"),
            ("codeSourceURL", "CodeSourceUrl"),
            ("pipelineSpecURI", "PipelineSpecURI"),
        ] {
            let v = text(&row, col)?;
            if !v.is_empty() {
                spec.insert(field.into(), json!(v));
            }
        }
        spec.insert("pipelineSpec".into(), parsed.pipeline_spec);
        if let Some(platform) = parsed.platform_spec {
            spec.insert("platformSpec".into(), platform);
        }
        if let Some(t) = version_tags.get(&uid) {
            spec.insert("tags".into(), json!(t));
        }
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": PipelineVersion::KIND,
            "metadata": metadata(&name, namespace, renamed.then_some(vname.as_str())),
            "spec": spec,
        });
        m.handle(
            Candidate {
                kind: Kind::Version,
                namespace: namespace.clone(),
                name,
                uid,
                created,
                body,
                parent_uid: Some(pipeline_id),
                source,
                renamed_from: renamed.then_some(vname),
                managed_fields: None,
            },
            progress,
        )
        .await?;
        if m.stopped() {
            break;
        }
    }
    Ok(())
}

fn timestamp(seconds: i64) -> Option<Timestamp> {
    Timestamp::from_second(seconds).ok()
}

fn metadata(name: &str, namespace: &str, original: Option<&str>) -> Value {
    let mut m = json!({"name": name, "namespace": namespace});
    if let Some(o) = original {
        m["annotations"] = json!({ ORIGINAL_NAME_ANNOTATION: o });
    }
    m
}

async fn tags(
    pool: &MySqlPool,
    query: &'static str,
) -> Result<HashMap<String, BTreeMap<String, String>>, sqlx::Error> {
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for row in sqlx::query(query).fetch_all(pool).await? {
        let id: Option<String> = row.try_get(0)?;
        let key: Option<String> = row.try_get(1)?;
        let value: Option<String> = row.try_get(2)?;
        if let (Some(id), Some(key)) = (id, key) {
            out.entry(id)
                .or_default()
                .insert(key, value.unwrap_or_default());
        }
    }
    Ok(out)
}
