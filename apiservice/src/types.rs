//! The wire types of `pipelines.kubeflow.org/v2beta1`: `Pipeline`, `PipelineVersion` and their
//! lists, with exactly the JSON field names KFP 2.17 ships (`codeSourceURL`, `pipelineSpecURI`, ...),
//! so manifests written for upstream KFP apply unchanged.
//!
//! This module owns the shapes and the `kube::Resource` identity of the kinds. It must not hold
//! rules (those live in [`crate::strategy`]) or I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group served.
pub const GROUP: &str = "pipelines.kubeflow.org";
/// The API version served.
pub const VERSION: &str = "v2beta1";
/// `group/version`, the `apiVersion` of every object.
pub const API_VERSION: &str = "pipelines.kubeflow.org/v2beta1";

/// Label holding the parent Pipeline's uid on every PipelineVersion.
pub const LABEL_PIPELINE_ID: &str = "pipelines.kubeflow.org/pipeline-id";
/// Label holding the parent Pipeline's name (at most 63 characters) on every PipelineVersion.
pub const LABEL_PIPELINE_NAME: &str = "pipelines.kubeflow.org/pipeline";
/// The condition type KFP uses for a version's state.
pub const CONDITION_TYPE: &str = "PipelineVersionStatus";

/// A pipeline: a named, namespaced container of versions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "Pipeline is a named group of PipelineVersions.")]
pub struct Pipeline {
    /// Always `pipelines.kubeflow.org/v2beta1` on the wire.
    #[serde(default)]
    pub api_version: String,
    /// Always `Pipeline` on the wire.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the user asks for.
    #[serde(default)]
    pub spec: PipelineSpec,
}

/// The desired state of a [`Pipeline`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Human-readable name; the KFP view shows `metadata.name` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// KFP tags: at most 20 entries, keys 1-63 characters without `.`, values at most 63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// One compiled version of a [`Pipeline`]: the pipeline spec (KFP IR) and its metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "PipelineVersion is one compiled version (KFP IR) of a Pipeline.")]
pub struct PipelineVersion {
    /// Always `pipelines.kubeflow.org/v2beta1` on the wire.
    #[serde(default)]
    pub api_version: String,
    /// Always `PipelineVersion` on the wire.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the user asks for; immutable after creation except `displayName` and `tags`.
    #[serde(default)]
    pub spec: PipelineVersionSpec,
    /// Set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PipelineVersionStatus>,
}

/// The desired state of a [`PipelineVersion`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineVersionSpec {
    /// `metadata.name` of the parent Pipeline, in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    /// The version's name in the KFP view (REST-created versions set it; the object name is used
    /// otherwise). Pattern `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`, at most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_name: Option<String>,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the pipeline's source code lives.
    #[serde(
        default,
        rename = "codeSourceURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub code_source_url: Option<String>,
    /// The URL the spec was imported from (URL-created versions only).
    #[serde(
        default,
        rename = "pipelineSpecURI",
        skip_serializing_if = "Option::is_none"
    )]
    pub pipeline_spec_uri: Option<String>,
    /// The compiled pipeline (KFP IR `PipelineSpec`), stored verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::openapi::preserve_unknown_object")]
    pub pipeline_spec: Option<serde_json::Value>,
    /// The IR `PlatformSpec` (`{"platforms": {"kubernetes": ...}}`), stored verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::openapi::preserve_unknown_object")]
    pub platform_spec: Option<serde_json::Value>,
    /// KFP tags, as on [`PipelineSpec::tags`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// The observed state of a [`PipelineVersion`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineVersionStatus {
    /// KFP's simplified conditions (no `lastTransitionTime`, no `observedGeneration`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SimplifiedCondition>,
}

/// A condition as KFP's CRD defines it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimplifiedCondition {
    /// The condition's type, e.g. `PipelineVersionStatus`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason, e.g. `READY`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl SimplifiedCondition {
    /// The condition the server sets on every version it accepts.
    pub fn ready() -> Self {
        SimplifiedCondition {
            type_: CONDITION_TYPE.to_owned(),
            status: "True".to_owned(),
            reason: "READY".to_owned(),
            message: "READY".to_owned(),
        }
    }
}

/// A list of objects of one kind, as every list endpoint returns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "{T}List")]
pub struct ObjectList<T> {
    /// `pipelines.kubeflow.org/v2beta1`.
    pub api_version: String,
    /// `PipelineList` or `PipelineVersionList`.
    pub kind: String,
    /// resourceVersion, continue token and remaining count.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects.
    pub items: Vec<T>,
}

/// `PipelineList`.
pub type PipelineList = ObjectList<Pipeline>;
/// `PipelineVersionList`.
pub type PipelineVersionList = ObjectList<PipelineVersion>;

macro_rules! impl_resource {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl $ty {
            /// The kind's name on the wire.
            pub const KIND: &'static str = $kind;
            /// The resource's plural name in URLs.
            pub const PLURAL: &'static str = $plural;

            /// Sets `apiVersion` and `kind` to this kind's values.
            pub fn with_type_meta(mut self) -> Self {
                self.api_version = API_VERSION.to_owned();
                self.kind = $kind.to_owned();
                self
            }
        }
    };
}

impl_resource!(Pipeline, "Pipeline", "pipelines");
impl_resource!(PipelineVersion, "PipelineVersion", "pipelineversions");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_spec_uses_kfp_field_names() {
        let spec = PipelineVersionSpec {
            code_source_url: Some("https://example.com/src".into()),
            pipeline_spec_uri: Some("https://example.com/p.yaml".into()),
            pipeline_name: Some("p".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["codeSourceURL"], "https://example.com/src");
        assert_eq!(json["pipelineSpecURI"], "https://example.com/p.yaml");
        assert_eq!(json["pipelineName"], "p");
        assert!(
            json.get("displayName").is_none(),
            "empty fields are omitted"
        );
    }

    #[test]
    fn kube_resource_identity() {
        use kube::Resource;
        assert_eq!(PipelineVersion::api_version(&()), API_VERSION);
        assert_eq!(PipelineVersion::plural(&()), "pipelineversions");
        assert_eq!(Pipeline::kind(&()), "Pipeline");
    }
}
