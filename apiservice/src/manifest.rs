//! Offline validation of Kubernetes manifest files (what `kfp-apiserver validate` does for GitOps
//! repositories and CI): every `Pipeline` and `PipelineVersion` document is strictly decoded and
//! run through the same strategy the server uses. A version's parent is looked up among the
//! files given; when it is not there it may still exist in the cluster, so that is a note, not an
//! error. Documents of other kinds are counted and skipped.

use std::collections::BTreeSet;

use crate::decode::{FieldValidation, decode_value};
use crate::ir::SpecError;
use crate::strategy::{self, Parent};
use crate::types::{API_VERSION, Pipeline, PipelineVersion};
use crate::yaml::{self, Document};
use crate::{FieldError, FieldPath};

/// The namespace assumed for manifests that do not name one (kubectl fills in its context's).
pub const DEFAULT_NAMESPACE: &str = "default";

/// One decoded object of a manifest set.
#[derive(Clone, Debug)]
pub enum Object {
    /// A Pipeline.
    Pipeline(Box<Pipeline>),
    /// A PipelineVersion.
    Version(Box<PipelineVersion>),
}

/// The result of validating a set of manifest documents.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The valid objects, in file order.
    pub objects: Vec<Object>,
    /// Problems, located by document.
    pub errors: Vec<SpecError>,
    /// Warnings and notes (pipelineInfo.name mismatches, parents not among the files).
    pub notes: Vec<String>,
    /// Documents of other kinds that were skipped.
    pub skipped: usize,
}

/// True when any document looks like a Kubernetes object (has `apiVersion` and `kind`).
pub fn looks_like_manifest(docs: &[Document]) -> bool {
    docs.iter().any(|d| {
        d.value.get("apiVersion").is_some_and(|v| v.is_string())
            && d.value.get("kind").is_some_and(|v| v.is_string())
    })
}

/// Reads a file into documents, reporting read errors as [`SpecError`]s.
pub fn read(bytes: &[u8]) -> Result<Vec<Document>, Vec<SpecError>> {
    yaml::read_documents(bytes).map_err(|e| {
        let document = match &e {
            yaml::ReadError::Syntax { document, .. } => Some(*document),
            _ => None,
        };
        vec![SpecError {
            document,
            error: FieldError::invalid(FieldPath::root(), e.to_string()),
        }]
    })
}

/// Validates manifest documents. Pipelines are collected first so that a version may come
/// before its Pipeline in the file.
pub fn validate_documents(docs: &[Document]) -> Report {
    let mut report = Report::default();
    let err = |document: usize, error: FieldError| SpecError {
        document: Some(document),
        error,
    };
    let mut pipelines: Vec<(usize, Pipeline)> = Vec::new();
    let mut versions: Vec<(usize, PipelineVersion)> = Vec::new();
    for doc in docs {
        let api = doc.value.get("apiVersion").and_then(|v| v.as_str());
        let kind = doc.value.get("kind").and_then(|v| v.as_str());
        match (api, kind) {
            (Some(API_VERSION), Some(Pipeline::KIND)) => {
                match decode_value::<Pipeline>(
                    doc.value.clone(),
                    Pipeline::KIND,
                    FieldValidation::Strict,
                ) {
                    Ok(d) => pipelines.push((doc.index, d.object)),
                    Err(e) => report.errors.push(err(
                        doc.index,
                        FieldError::invalid(FieldPath::root(), e.to_string()),
                    )),
                }
            }
            (Some(API_VERSION), Some(PipelineVersion::KIND)) => {
                match decode_value::<PipelineVersion>(
                    doc.value.clone(),
                    PipelineVersion::KIND,
                    FieldValidation::Strict,
                ) {
                    Ok(d) => versions.push((doc.index, d.object)),
                    Err(e) => report.errors.push(err(
                        doc.index,
                        FieldError::invalid(FieldPath::root(), e.to_string()),
                    )),
                }
            }
            (Some(api), Some(kind)) if api.starts_with(crate::types::GROUP) => {
                report.errors.push(err(
                    doc.index,
                    FieldError::invalid(
                        FieldPath::root(),
                        format!("{api} {kind} is not served: this API serves {API_VERSION} Pipeline and PipelineVersion"),
                    ),
                ));
            }
            (Some(_), Some(_)) => report.skipped += 1,
            _ => report.errors.push(err(
                doc.index,
                FieldError::required(
                    FieldPath::root(),
                    "not a Kubernetes object: apiVersion and kind are required",
                ),
            )),
        }
    }
    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    };
    let mut seen = BTreeSet::new();
    for (index, p) in &mut pipelines {
        p.metadata.namespace = Some(ns(&p.metadata));
        if !seen.insert((p.metadata.namespace.clone(), p.metadata.name.clone())) {
            report.errors.push(err(
                *index,
                FieldError::new(
                    crate::ErrorType::Duplicate,
                    FieldPath::new("metadata").child("name"),
                    "this Pipeline is defined twice",
                ),
            ));
        }
        let outcome = strategy::validate_pipeline_create(p);
        report
            .errors
            .extend(outcome.errors.into_iter().map(|e| err(*index, e)));
    }
    for (index, v) in &mut versions {
        v.metadata.namespace = Some(ns(&v.metadata));
        let parent = pipelines.iter().map(|(_, p)| p).find(|p| {
            p.metadata.namespace == v.metadata.namespace
                && p.metadata.name.is_some()
                && p.metadata.name == v.spec.pipeline_name
        });
        let lookup = match parent {
            Some(p) => Parent::Found(p),
            None => {
                if let Some(name) = &v.spec.pipeline_name {
                    report.notes.push(format!(
                        "document {index}: Pipeline \"{name}\" is not among the files given; it must exist in namespace \"{}\" when this version is applied",
                        v.metadata.namespace.as_deref().unwrap_or_default()
                    ));
                }
                Parent::Unknown
            }
        };
        let outcome = strategy::validate_version_create(v, lookup);
        report
            .errors
            .extend(outcome.errors.into_iter().map(|e| err(*index, e)));
        report.notes.extend(
            outcome
                .warnings
                .into_iter()
                .map(|w| format!("document {index}: warning: {w}")),
        );
    }
    let mut all: Vec<(usize, Object)> = pipelines
        .into_iter()
        .map(|(i, p)| (i, Object::Pipeline(Box::new(p))))
        .chain(
            versions
                .into_iter()
                .map(|(i, v)| (i, Object::Version(Box::new(v)))),
        )
        .collect();
    all.sort_by_key(|(i, _)| *i);
    report.objects = all.into_iter().map(|(_, o)| o).collect();
    report
}

/// How [`from_pipeline`] names the objects it makes.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    /// The Pipeline's `metadata.name` (default: the IR's `pipelineInfo.name`).
    pub name: Option<String>,
    /// `metadata.namespace` of both (default: none, so kubectl uses its context's, as the SDK's
    /// manifests do).
    pub namespace: Option<String>,
    /// The version's name (default: the pipeline's name). The object is named as the REST API
    /// names it (`<pipeline>-<version>`, or the pipeline's name when they are equal) and
    /// carries the name itself in `spec.versionName`, so the REST view shows it.
    pub version_name: Option<String>,
}

/// Makes a `Pipeline` and a `PipelineVersion` from a compiled pipeline (`ir::parse_pipeline_file`'s
/// result), validated with the server's rules: the objects, or every problem found.
pub fn from_pipeline(
    parsed: &crate::ir::ParsedPipeline,
    naming: &Naming,
) -> Result<Vec<serde_json::Value>, Vec<SpecError>> {
    use crate::types::{PipelineSpec, PipelineVersionSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let name = naming.name.clone().unwrap_or_else(|| parsed.name.clone());
    let version_name = naming.version_name.clone().unwrap_or_else(|| name.clone());
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: naming.namespace.clone(),
        ..Default::default()
    };
    let pipeline = Pipeline {
        api_version: API_VERSION.to_owned(),
        kind: Pipeline::KIND.to_owned(),
        metadata: meta(name.clone()),
        spec: PipelineSpec {
            display_name: Some(parsed.display_name.clone().unwrap_or_else(|| name.clone())),
            description: parsed.description.clone(),
            tags: None,
        },
    };
    let version = PipelineVersion {
        api_version: API_VERSION.to_owned(),
        kind: PipelineVersion::KIND.to_owned(),
        metadata: meta(crate::convert::version_object_name(&name, &version_name)),
        spec: PipelineVersionSpec {
            pipeline_name: Some(name.clone()),
            version_name: Some(version_name.clone()),
            display_name: Some(version_name),
            description: parsed.description.clone(),
            pipeline_spec: Some(parsed.pipeline_spec.clone()),
            platform_spec: parsed.platform_spec.clone(),
            ..Default::default()
        },
        status: None,
    };
    let values = [
        serde_json::to_value(&pipeline),
        serde_json::to_value(&version),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| {
        vec![SpecError {
            document: None,
            error: FieldError::invalid(FieldPath::root(), format!("encoding failed: {e}")),
        }]
    })?;
    let docs: Vec<Document> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Document {
            index: i + 1,
            value: v.clone(),
        })
        .collect();
    let report = validate_documents(&docs);
    if report.errors.is_empty() {
        Ok(values)
    } else {
        Err(report.errors)
    }
}
