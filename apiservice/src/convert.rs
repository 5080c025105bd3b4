//! Conversion between the Kubernetes objects and the KFP v2beta1 REST JSON shapes
//! (`shared/kfp/KFP_REST_FACTS.md`): snake_case keys, empty fields omitted, RFC 3339 `created_at`
//! in whole seconds with `Z`, and the `{"pipeline_spec", "platform_spec"}` wrapping of a version's
//! spec when it has a kubernetes platform spec.
//!
//! Both directions live here so that the REST view and the Kubernetes view can never disagree on
//! a mapping. Request parsing accepts snake_case and lowerCamelCase keys and rejects unknown
//! fields, as protojson does. No HTTP and no store access.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{API_VERSION, Pipeline, PipelineSpec, PipelineVersion, PipelineVersionSpec};

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// `v2beta1Pipeline` as the REST API sends and receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestPipeline {
    /// The Pipeline's uid.
    #[serde(default, alias = "pipelineId", skip_serializing_if = "is_empty")]
    pub pipeline_id: String,
    /// The object name.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub name: String,
    /// `spec.displayName`, falling back to the name.
    #[serde(default, alias = "displayName", skip_serializing_if = "is_empty")]
    pub display_name: String,
    /// `spec.description`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub description: String,
    /// `metadata.creationTimestamp`, RFC 3339 in whole seconds.
    #[serde(default, alias = "createdAt", skip_serializing_if = "is_empty")]
    pub created_at: String,
    /// `metadata.namespace`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub namespace: String,
    /// `spec.tags`; absent and empty are different on input (an empty map clears tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// A per-row error (`google.rpc.Status`); never set by this server, accepted on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// `package_url` of a version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageUrl {
    /// Where the spec was downloaded from.
    #[serde(default, alias = "pipelineUrl", skip_serializing_if = "is_empty")]
    pub pipeline_url: String,
}

/// `v2beta1PipelineVersion` as the REST API sends and receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestPipelineVersion {
    /// The parent Pipeline's uid (from the owner reference).
    #[serde(default, alias = "pipelineId", skip_serializing_if = "is_empty")]
    pub pipeline_id: String,
    /// The version's uid.
    #[serde(default, alias = "pipelineVersionId", skip_serializing_if = "is_empty")]
    pub pipeline_version_id: String,
    /// `spec.versionName`, else the object name.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub name: String,
    /// `spec.displayName`, else the version name.
    #[serde(default, alias = "displayName", skip_serializing_if = "is_empty")]
    pub display_name: String,
    /// `spec.description`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub description: String,
    /// `metadata.creationTimestamp`.
    #[serde(default, alias = "createdAt", skip_serializing_if = "is_empty")]
    pub created_at: String,
    /// `spec.pipelineSpecURI`, only for URL-created versions.
    #[serde(default, alias = "packageUrl", skip_serializing_if = "Option::is_none")]
    pub package_url: Option<PackageUrl>,
    /// `spec.codeSourceURL`.
    #[serde(default, alias = "codeSourceUrl", skip_serializing_if = "is_empty")]
    pub code_source_url: String,
    /// `spec.pipelineSpec`, wrapped with `spec.platformSpec` when that has a kubernetes platform.
    #[serde(
        default,
        alias = "pipelineSpec",
        skip_serializing_if = "Option::is_none"
    )]
    pub pipeline_spec: Option<Value>,
    /// `spec.tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// A per-row error; never set by this server, accepted on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// RFC 3339 in whole seconds with `Z`, as KFP prints `created_at`.
pub fn format_time(t: &Time) -> String {
    let secs = t.0.as_second();
    Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn created_at(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(format_time)
        .unwrap_or_default()
}

/// The REST view of a Pipeline.
pub fn pipeline_to_rest(p: &Pipeline) -> RestPipeline {
    let name = p.metadata.name.clone().unwrap_or_default();
    RestPipeline {
        pipeline_id: p.metadata.uid.clone().unwrap_or_default(),
        display_name: p
            .spec
            .display_name
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        description: p.spec.description.clone().unwrap_or_default(),
        created_at: created_at(&p.metadata),
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        tags: p.spec.tags.clone().filter(|t| !t.is_empty()),
        error: None,
    }
}

/// KFP's fallbacks: the name defaults to the display name and the display name to the name.
fn name_and_display(name: &str, display: &str) -> (String, String) {
    let name = if name.is_empty() { display } else { name };
    let display = if display.is_empty() { name } else { display };
    (name.to_owned(), display.to_owned())
}

/// The Pipeline object a REST create writes: `name`, `namespace`, `spec.displayName`,
/// `spec.description`, `spec.tags` — no labels or annotations, as KFP's Kubernetes store does.
/// `name` falls back to `display_name` and the other way round. The caller has resolved the
/// namespace (single-user default or multi-user request).
pub fn pipeline_from_rest(r: &RestPipeline, namespace: &str) -> Pipeline {
    let (name, display) = name_and_display(&r.name, &r.display_name);
    Pipeline {
        api_version: API_VERSION.to_owned(),
        kind: Pipeline::KIND.to_owned(),
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        spec: PipelineSpec {
            display_name: Some(display),
            description: opt(&r.description),
            tags: r.tags.clone().filter(|t| !t.is_empty()),
        },
    }
}

/// The object name of a REST-created version: `<pipeline>-<version>`, or `<version>` when the two
/// names are equal (KFP 2.17).
pub fn version_object_name(pipeline_name: &str, version_name: &str) -> String {
    if pipeline_name == version_name {
        version_name.to_owned()
    } else {
        format!("{pipeline_name}-{version_name}")
    }
}

/// Whether a platform spec is shown in the REST view: only one with a kubernetes platform.
fn has_kubernetes_platform(platform: &Value) -> bool {
    platform.pointer("/platforms/kubernetes").is_some()
}

/// The REST `pipeline_spec` of a version: the IR itself, or
/// `{"pipeline_spec": IR, "platform_spec": PlatformSpec}` with a kubernetes platform spec.
pub fn wrap_spec(pipeline_spec: &Value, platform_spec: Option<&Value>) -> Value {
    match platform_spec {
        Some(platform) if has_kubernetes_platform(platform) => serde_json::json!({
            "pipeline_spec": pipeline_spec,
            "platform_spec": platform,
        }),
        _ => pipeline_spec.clone(),
    }
}

/// The inverse of [`wrap_spec`]: splits a REST `pipeline_spec` into IR and platform spec.
pub fn unwrap_spec(value: &Value) -> (Value, Option<Value>) {
    if let Some(obj) = value.as_object()
        && let Some(spec) = obj.get("pipeline_spec")
        && obj
            .keys()
            .all(|k| k == "pipeline_spec" || k == "platform_spec")
    {
        return (spec.clone(), obj.get("platform_spec").cloned());
    }
    (value.clone(), None)
}

/// The uid of a version's parent Pipeline, from its owner reference (not the label), as KFP does.
pub fn parent_uid(v: &PipelineVersion) -> String {
    v.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == Pipeline::KIND && r.api_version == API_VERSION)
        .map(|r| r.uid.clone())
        .unwrap_or_default()
}

/// The REST view of a version. `with_spec` is false for list responses that leave the spec out.
pub fn version_to_rest(v: &PipelineVersion, with_spec: bool) -> RestPipelineVersion {
    let s = &v.spec;
    let name = s
        .version_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| v.metadata.name.clone())
        .unwrap_or_default();
    RestPipelineVersion {
        pipeline_id: parent_uid(v),
        pipeline_version_id: v.metadata.uid.clone().unwrap_or_default(),
        display_name: s
            .display_name
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        description: s.description.clone().unwrap_or_default(),
        created_at: created_at(&v.metadata),
        package_url: s
            .pipeline_spec_uri
            .as_ref()
            .filter(|u| !u.is_empty())
            .map(|u| PackageUrl {
                pipeline_url: u.clone(),
            }),
        code_source_url: s.code_source_url.clone().unwrap_or_default(),
        pipeline_spec: if with_spec {
            s.pipeline_spec
                .as_ref()
                .map(|ps| wrap_spec(ps, s.platform_spec.as_ref()))
        } else {
            None
        },
        tags: s.tags.clone().filter(|t| !t.is_empty()),
        error: None,
    }
}

/// The PipelineVersion object a REST create writes under `parent`: named
/// [`version_object_name`], `spec.versionName` set, display name defaulting to the version name.
/// The parent's owner reference and labels are added by the strategy on create.
pub fn version_from_rest(
    r: &RestPipelineVersion,
    parent: &Pipeline,
    pipeline_spec: Value,
    platform_spec: Option<Value>,
) -> PipelineVersion {
    let pipeline_name = parent.metadata.name.clone().unwrap_or_default();
    let (version_name, display) = name_and_display(&r.name, &r.display_name);
    PipelineVersion {
        api_version: API_VERSION.to_owned(),
        kind: PipelineVersion::KIND.to_owned(),
        metadata: ObjectMeta {
            name: Some(version_object_name(&pipeline_name, &version_name)),
            namespace: parent.metadata.namespace.clone(),
            ..Default::default()
        },
        spec: PipelineVersionSpec {
            pipeline_name: Some(pipeline_name),
            version_name: Some(version_name),
            display_name: Some(display),
            description: opt(&r.description),
            code_source_url: opt(&r.code_source_url),
            pipeline_spec_uri: r.package_url.as_ref().and_then(|p| opt(&p.pipeline_url)),
            pipeline_spec: Some(pipeline_spec),
            platform_spec,
            tags: r.tags.clone().filter(|t| !t.is_empty()),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_fields_are_omitted_and_keys_are_snake_case() {
        let p = Pipeline {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some("u1".into()),
                creation_timestamp: Some(Time("2025-01-02T03:04:05.9Z".parse().unwrap())),
                ..Default::default()
            },
            ..Default::default()
        };
        let json = serde_json::to_value(pipeline_to_rest(&p)).unwrap();
        assert_eq!(
            json,
            json!({"pipeline_id": "u1", "name": "p", "display_name": "p",
                   "created_at": "2025-01-02T03:04:05Z"})
        );
    }

    #[test]
    fn requests_accept_camel_case_and_reject_unknown_fields() {
        let r: RestPipeline =
            serde_json::from_value(json!({"displayName": "D", "name": "n"})).unwrap();
        assert_eq!(r.display_name, "D");
        assert!(serde_json::from_value::<RestPipeline>(json!({"nope": 1})).is_err());
    }

    #[test]
    fn composite_version_names() {
        assert_eq!(version_object_name("p", "p"), "p");
        assert_eq!(version_object_name("p", "v1"), "p-v1");
    }

    #[test]
    fn platform_specs_without_kubernetes_are_hidden_from_rest() {
        let ir = json!({"root": {}});
        assert_eq!(
            wrap_spec(&ir, Some(&json!({"platforms": {"other": {}}}))),
            ir
        );
        let k = json!({"platforms": {"kubernetes": {}}});
        let wrapped = wrap_spec(&ir, Some(&k));
        assert_eq!(unwrap_spec(&wrapped), (ir.clone(), Some(k)));
        assert_eq!(unwrap_spec(&ir), (ir, None));
    }
}
