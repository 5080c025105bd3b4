//! The one place errors become responses: [`ApiError`] renders as a `meta.k8s.io/v1 Status`
//! with kube-apiserver's `reason`, `code`, message wording and `details` (field causes for
//! validation). Converting has no side effects; logging happens in the request layer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use kfp_apiservice::{ErrorList, GROUP};
use kfp_storage::StoreError;

use crate::registry::RegistryError;
use crate::registry::managed::Conflict;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use crate::body::Body;

/// A failed request.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when there are any (boxed: errors travel in every `Result`).
    pub details: Option<Box<StatusDetails>>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
}

/// `Status.details` naming an object (kube-apiserver puts the resource's plural in `kind`).
fn about(name: &str, group: &str, kind: &str) -> StatusDetails {
    StatusDetails {
        name: Some(name.to_owned()),
        group: Some(group.to_owned()),
        kind: Some(kind.to_owned()),
        ..Default::default()
    }
}

fn cause(reason: &str, message: String, field: Option<&str>) -> StatusCause {
    StatusCause {
        reason: Some(reason.to_owned()),
        message: Some(message),
        field: field.map(str::to_owned),
    }
}

fn retry_after_details(causes: Option<Vec<StatusCause>>) -> StatusDetails {
    StatusDetails {
        causes,
        retry_after_seconds: Some(1),
        ..Default::default()
    }
}

/// `<plural>.<group>`, as kube-apiserver names resources in messages.
pub fn qualified(resource: &str) -> String {
    format!("{resource}.{GROUP}")
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource)),
        )
        .with_details(about(name, GROUP, resource))
    }

    /// 404 NotFound for a path.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(StatusDetails {
            causes: Some(vec![cause(
                "UnexpectedServerResponse",
                "404 page not found".into(),
                None,
            )]),
            ..Default::default()
        })
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(verb: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({verb} {what})"
            ),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource)),
        )
        .with_details(about(name, GROUP, resource))
    }

    /// 409 Conflict.
    pub fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(resource)
            ),
        )
        .with_details(about(name, GROUP, resource))
    }

    /// 410 Expired/Gone.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 Invalid with field causes.
    pub fn invalid(kind: &str, name: &str, errors: &ErrorList) -> Self {
        let summary: Vec<String> = errors
            .iter()
            .map(|e| {
                if e.path.is_root() {
                    format!("{}: {}", e.kind.label(), e.detail)
                } else {
                    format!("{}: {}: {}", e.path, e.kind.label(), e.detail)
                }
            })
            .collect();
        let joined = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let causes: Vec<StatusCause> = errors
            .iter()
            .map(|e| {
                cause(
                    e.kind.reason(),
                    format!("{}: {}", e.kind.label(), e.detail),
                    Some(e.path.as_str()),
                )
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{kind}.{GROUP} \"{name}\" is invalid: {joined}"),
        )
        .with_details(StatusDetails {
            causes: Some(causes),
            ..about(name, GROUP, kind)
        })
    }

    /// 422 Invalid for list/watch options.
    pub fn invalid_list_options(errors: Vec<String>) -> Self {
        Self::invalid_options("ListOptions", errors)
    }

    /// 422 Invalid for a `meta.k8s.io` options kind (`ListOptions`, `DeleteOptions`, ...).
    pub fn invalid_options(kind: &str, errors: Vec<String>) -> Self {
        let joined = if errors.len() == 1 {
            errors[0].clone()
        } else {
            format!("[{}]", errors.join(", "))
        };
        Self::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {joined}"),
        )
        .with_details(StatusDetails {
            group: Some("meta.k8s.io".into()),
            kind: Some(kind.to_owned()),
            ..Default::default()
        })
    }

    /// 429 TooManyRequests with Retry-After: 1.
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.retry_after = Some(1);
        e.details = Some(Box::new(retry_after_details(None)));
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable with Retry-After.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e.details = Some(Box::new(retry_after_details(None)));
        e
    }

    /// 504 Timeout (too large resourceVersion), with Retry-After.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        );
        e.retry_after = Some(1);
        e.details = Some(Box::new(retry_after_details(Some(vec![cause(
            "ResourceVersionTooLarge",
            "Too large resource version".into(),
            None,
        )]))));
        e
    }

    /// Maps a store error about `resource`/`name`.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        match e {
            // A create in a namespace the host cluster does not have (the kube:// store).
            StoreError::NotFound(k) if k.resource == "namespaces" => Self::new(
                404,
                "NotFound",
                format!("namespaces \"{}\" not found", k.name),
            )
            .with_details(StatusDetails {
                name: Some(k.name.clone()),
                kind: Some("namespaces".into()),
                ..Default::default()
            }),
            StoreError::NotFound(_) => Self::not_found(resource, name),
            StoreError::AlreadyExists(_) => Self::already_exists(resource, name),
            StoreError::Conflict { message, .. } => Self::conflict(resource, name, &message),
            StoreError::Gone {
                requested,
                compacted,
            } => Self::gone(format!(
                "The resourceVersion for the provided list is too old. too old resource version: {} ({})",
                requested.0, compacted.0
            )),
            StoreError::TooLarge { requested, current } => {
                Self::too_large_resource_version(requested.0, current.0)
            }
            StoreError::Invalid(m) => Self::bad_request(m),
            // The database's own text (SQLite, PostgreSQL, OS errors) goes to the log only: it
            // can name files, hosts and schema, and tells a client nothing it can act on.
            StoreError::Unavailable(m) => {
                tracing::warn!(resource, name, cause = %m, "storage unavailable");
                Self::unavailable("storage is unavailable; retry later")
            }
            StoreError::Internal(m) => {
                tracing::error!(resource, name, cause = %m, "storage error");
                Self::internal(
                    "Internal error occurred: storage error (details are in the server log)",
                )
            }
        }
    }

    /// The one conversion of a registry error to a `Status`.
    pub fn from_registry(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound { resource, name } => Self::not_found(resource, &name),
            RegistryError::AlreadyExists { resource, name } => {
                Self::already_exists(resource, &name)
            }
            RegistryError::Conflict {
                resource,
                name,
                message,
            } => Self::conflict(resource, &name, &message),
            RegistryError::ApplyConflict {
                resource,
                name,
                conflicts,
            } => Self::apply_conflict(resource, &name, &conflicts),
            RegistryError::Invalid { kind, name, errors } => Self::invalid(kind, &name, &errors),
            RegistryError::BadRequest(m) => Self::bad_request(m),
            RegistryError::Forbidden {
                resource,
                name,
                message,
            } => Self::forbidden(message).with_details(about(&name, GROUP, resource)),
            RegistryError::PatchFailed(m) => Self::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {m}"),
            ),
            RegistryError::TooLarge(m) => Self::new(413, "RequestEntityTooLarge", m),
            RegistryError::Store {
                resource,
                name,
                source,
            } => Self::from_store(*source, resource, &name),
        }
    }

    /// 409 Conflict for server-side apply, worded and detailed as kube-apiserver's.
    pub fn apply_conflict(resource: &str, name: &str, conflicts: &[Conflict]) -> Self {
        let message = match conflicts {
            [one] => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager, one.field
            ),
            many => {
                let mut managers: Vec<&str> = many.iter().map(|c| c.manager.as_str()).collect();
                managers.sort_unstable();
                managers.dedup();
                let mut lines = Vec::new();
                for m in managers {
                    lines.push(format!("conflicts with {m}:"));
                    for c in many.iter().filter(|c| c.manager == m) {
                        lines.push(format!("- {}", c.field));
                    }
                }
                format!(
                    "Apply failed with {} conflicts: {}",
                    many.len(),
                    lines.join("\n")
                )
            }
        };
        let causes: Vec<StatusCause> = conflicts
            .iter()
            .map(|c| {
                cause(
                    "FieldManagerConflict",
                    format!("conflict with {}", c.manager),
                    Some(&c.field),
                )
            })
            .collect();
        Self::new(409, "Conflict", message).with_details(StatusDetails {
            causes: Some(causes),
            ..about(name, GROUP, resource)
        })
    }

    /// The `Status` object.
    pub fn status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".into()),
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut resp = Response::new(Body::full(Bytes::from(body)));
        *resp.status_mut() =
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfp_apiservice::{FieldError, FieldPath};

    #[test]
    fn invalid_lists_causes_with_paths() {
        let errs = vec![
            FieldError::forbidden(FieldPath::new("spec").child("pipelineSpec"), "immutable"),
            FieldError::required(FieldPath::new("spec").child("pipelineName"), "missing"),
        ];
        let e = ApiError::invalid("PipelineVersion", "v", &errs);
        let s = serde_json::to_value(e.status()).unwrap();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["apiVersion"], "v1");
        assert_eq!(s["metadata"], serde_json::json!({}));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["message"],
            "PipelineVersion.pipelines.kubeflow.org \"v\" is invalid: [spec.pipelineSpec: Forbidden: immutable, spec.pipelineName: Required value: missing]"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.pipelineSpec");
        assert_eq!(s["details"]["causes"][1]["reason"], "FieldValueRequired");
    }

    #[test]
    fn a_missing_host_namespace_is_named_as_kube_apiserver_names_it() {
        let e = ApiError::from_store(
            StoreError::NotFound(kfp_storage::Key::new("namespaces", "", "team-a")),
            "pipelines",
            "p",
        );
        let s = serde_json::to_value(e.status()).unwrap();
        assert_eq!(s["code"], 404);
        assert_eq!(s["message"], "namespaces \"team-a\" not found");
        assert_eq!(s["details"]["kind"], "namespaces");
        assert_eq!(s["details"]["name"], "team-a");
    }

    #[test]
    fn not_found_matches_kubectl_wording() {
        let s = serde_json::to_value(ApiError::not_found("pipelines", "x").status()).unwrap();
        assert_eq!(
            s["message"],
            "pipelines.pipelines.kubeflow.org \"x\" not found"
        );
        assert_eq!(s["details"]["kind"], "pipelines");
    }
}
