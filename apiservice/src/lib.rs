//! `kfp-apiservice`: the API itself, with no HTTP and no SQL.
//!
//! # Layout
//! - [`types`]: `Pipeline`, `PipelineVersion` and their lists for `pipelines.kubeflow.org/v2beta1`.
//! - [`field`] and [`names`]: field paths, validation errors and name rules.
//! - [`yaml`]: reading user files (multi-document YAML or JSON) with a size cap.
//! - [`ir`]: pipeline-spec (KFP IR) validation.
//! - [`resource`]: the resource table — one entry per kind, read by discovery, OpenAPI, the
//!   registry, the routes and the storage index — and the `Strategy` trait per kind.
//! - [`fieldpath`]: field sets for `managedFields` (structured-merge-diff semantics).
//! - [`strategy`]: per-resource defaulting, validation and preparation for create and update.
//! - [`decode`]: strict/warn/ignore decoding of request bodies into the types.
//! - [`convert`]: the Kubernetes objects <-> KFP v2beta1 REST JSON shapes.
//! - [`manifest`]: validating files of Kubernetes manifests (the `validate` command), and making
//!   them from compiled pipelines (the `manifest` command); [`emit`]: YAML any reader reads back.
//! - [`openapi_pb`]: the OpenAPI v2 document as gnostic's protobuf message, for client-go.
//! - [`openapi`] and [`discovery`]: the documents clients use to learn the API, generated from
//!   the types.

pub mod convert;
pub mod decode;
pub mod discovery;
pub mod emit;
pub mod field;
pub mod fieldpath;
pub mod ir;
pub mod manifest;
pub mod names;
pub mod openapi;
pub mod openapi_pb;
pub mod resource;
pub mod strategy;
pub mod types;
pub mod yaml;

pub use field::{ErrorList, ErrorType, FieldError, FieldPath};
pub use types::{
    API_VERSION, GROUP, Pipeline, PipelineList, PipelineSpec, PipelineVersion, PipelineVersionList,
    PipelineVersionSpec, PipelineVersionStatus, SimplifiedCondition, VERSION,
};
