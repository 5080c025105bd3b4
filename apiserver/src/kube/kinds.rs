//! The resource table: which strategy and which types serve each plural. Handlers are generic
//! and call these functions with JSON values; the rules themselves live in
//! `kfp_apiservice::strategy`, so nothing here decides what is valid.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::decode::{DecodeError, FieldValidation, decode_value};
use kfp_apiservice::strategy::{self, CreateContext, Outcome, Parent};
use kfp_apiservice::{Pipeline, PipelineVersion};
use kfp_storage::{Key, Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A served resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `pipelines`.
    Pipeline,
    /// `pipelineversions`.
    PipelineVersion,
}

impl Kind {
    /// The kind serving a plural.
    pub fn from_resource(resource: &str) -> Option<Kind> {
        match resource {
            "pipelines" => Some(Kind::Pipeline),
            "pipelineversions" => Some(Kind::PipelineVersion),
            _ => None,
        }
    }

    /// The plural.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pipeline => Pipeline::PLURAL,
            Kind::PipelineVersion => PipelineVersion::PLURAL,
        }
    }

    /// The kind name.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pipeline => Pipeline::KIND,
            Kind::PipelineVersion => PipelineVersion::KIND,
        }
    }

    /// The list kind name.
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Pipeline => "PipelineList",
            Kind::PipelineVersion => "PipelineVersionList",
        }
    }

    /// Whether `status` is a subresource.
    pub fn has_status(self) -> bool {
        self == Kind::PipelineVersion
    }
}

fn decode<T: DeserializeOwned>(
    value: Value,
    kind: Kind,
    fv: FieldValidation,
) -> Result<(T, Vec<String>), ApiError> {
    match decode_value::<T>(value, kind.kind(), fv) {
        Ok(d) => Ok((d.object, d.warnings)),
        Err(DecodeError::Strict(fields)) => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            fields.join(", ")
        ))),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

fn encode<T: Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::internal(format!("encoding failed: {e}")))
}

fn check(kind: Kind, name: &str, outcome: Outcome) -> Result<Vec<String>, ApiError> {
    if outcome.errors.is_empty() {
        Ok(outcome.warnings)
    } else {
        Err(ApiError::invalid(kind.kind(), name, &outcome.errors))
    }
}

/// Sets the namespace from the URL, refusing a body that names another one.
fn place(meta: &mut ObjectMeta, namespace: &str) -> Result<(), ApiError> {
    match meta.namespace.as_deref() {
        None | Some("") => {}
        Some(ns) if ns == namespace => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    meta.namespace = Some(namespace.to_owned());
    if meta.name.as_deref().unwrap_or_default().is_empty()
        && let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        meta.name = Some(format!("{prefix}{}", random_suffix()));
    }
    Ok(())
}

/// Five characters of `[bcdfghjklmnpqrstvwxz2456789]`, as apimachinery's name generator.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

async fn parent(
    store: &dyn Store,
    namespace: &str,
    v: &PipelineVersion,
) -> Result<Option<Pipeline>, ApiError> {
    let Some(name) = v.spec.pipeline_name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    match store
        .get(&Key::new(Pipeline::PLURAL, namespace, name))
        .await
    {
        Ok(o) => {
            let v = o.json().map_err(|e| ApiError::internal(e.to_string()))?;
            let p: Pipeline = serde_json::from_value(v)
                .map_err(|e| ApiError::internal(format!("stored Pipeline {name}: {e}")))?;
            Ok(Some(p))
        }
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(ApiError::from_store(e, Pipeline::PLURAL, name)),
    }
}

fn lookup(found: &Option<Pipeline>) -> Parent<'_> {
    match found {
        Some(p) => Parent::Found(p),
        None => Parent::Missing,
    }
}

/// Decodes, defaults and validates a new object; returns it as JSON with the warnings.
pub async fn prepare_create(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    body: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let ctx = CreateContext {
        uid: uuid::Uuid::new_v4().to_string(),
        now: Timestamp::now(),
    };
    match kind {
        Kind::Pipeline => {
            let (mut p, mut warnings) = decode::<Pipeline>(body, kind, fv)?;
            place(&mut p.metadata, namespace)?;
            strategy::prepare_pipeline_for_create(&mut p, &ctx);
            let name = p.metadata.name.clone().unwrap_or_default();
            warnings.extend(check(kind, &name, strategy::validate_pipeline_create(&p))?);
            Ok((encode(&p)?, warnings))
        }
        Kind::PipelineVersion => {
            let (mut v, mut warnings) = decode::<PipelineVersion>(body, kind, fv)?;
            place(&mut v.metadata, namespace)?;
            let found = parent(store, namespace, &v).await?;
            strategy::prepare_version_for_create(&mut v, &ctx, lookup(&found));
            let name = v.metadata.name.clone().unwrap_or_default();
            let outcome = strategy::validate_version_create(&v, lookup(&found));
            warnings.extend(check(kind, &name, outcome)?);
            Ok((encode(&v)?, warnings))
        }
    }
}

/// Decodes and validates a replacement for `old` (main resource or `status` subresource).
pub async fn prepare_update(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    new: Value,
    old: Value,
    status: bool,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    match kind {
        Kind::Pipeline => {
            let (mut p, mut warnings) = decode::<Pipeline>(new, kind, fv)?;
            let (o, _) = decode::<Pipeline>(old, kind, FieldValidation::Ignore)?;
            p.metadata.namespace = Some(namespace.to_owned());
            strategy::prepare_pipeline_for_update(&mut p, &o);
            let name = p.metadata.name.clone().unwrap_or_default();
            warnings.extend(check(
                kind,
                &name,
                strategy::validate_pipeline_update(&p, &o),
            )?);
            Ok((encode(&p)?, warnings))
        }
        Kind::PipelineVersion => {
            let (mut v, mut warnings) = decode::<PipelineVersion>(new, kind, fv)?;
            let (o, _) = decode::<PipelineVersion>(old, kind, FieldValidation::Ignore)?;
            v.metadata.namespace = Some(namespace.to_owned());
            let name = v.metadata.name.clone().unwrap_or_default();
            if status {
                strategy::prepare_version_for_status_update(&mut v, &o);
                let errors = v
                    .status
                    .as_ref()
                    .map(strategy::validate_status)
                    .unwrap_or_default();
                if !errors.is_empty() {
                    return Err(ApiError::invalid(kind.kind(), &name, &errors));
                }
            } else {
                let found = parent(store, namespace, &v).await?;
                let p = match &found {
                    Some(p) => Parent::Found(p),
                    None => Parent::Unknown,
                };
                strategy::prepare_version_for_update(&mut v, &o, p);
                warnings.extend(check(
                    kind,
                    &name,
                    strategy::validate_version_update(&v, &o),
                )?);
            }
            Ok((encode(&v)?, warnings))
        }
    }
}
