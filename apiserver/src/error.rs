//! The one place errors become responses: [`ApiError`] renders as a `meta.k8s.io/v1 Status`
//! with kube-apiserver's `reason`, `code`, message wording and `details` (field causes for
//! validation). Converting has no side effects; logging happens in the request layer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use kfp_apiservice::{ErrorList, GROUP};
use kfp_storage::StoreError;

use crate::registry::RegistryError;
use crate::registry::managed::Conflict;
use serde_json::{Value, json};

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
    /// `Status.details`, when there are any.
    pub details: Option<Value>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
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

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
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
        .with_details(json!({"name": name, "group": GROUP, "kind": resource}))
    }

    /// 404 NotFound for a path.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
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
        .with_details(json!({"name": name, "group": GROUP, "kind": resource}))
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
        .with_details(json!({"name": name, "group": GROUP, "kind": resource}))
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
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({"reason": e.kind.reason(), "message": format!("{}: {}", e.kind.label(), e.detail), "field": e.path.as_str()})
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{kind}.{GROUP} \"{name}\" is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": GROUP, "kind": kind, "causes": causes}))
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
        .with_details(json!({"group": "meta.k8s.io", "kind": kind}))
    }

    /// 429 TooManyRequests with Retry-After: 1.
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.retry_after = Some(1);
        e.details = Some(json!({"retryAfterSeconds": 1}));
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
        e.details = Some(json!({"retryAfterSeconds": 1}));
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
        e.details = Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        );
        e
    }

    /// Maps a store error about `resource`/`name`.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        match e {
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
            StoreError::Unavailable(m) => Self::unavailable(format!("storage is unavailable: {m}")),
            StoreError::Internal(m) => Self::internal(m),
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
            } => Self::forbidden(message)
                .with_details(json!({"name": name, "group": GROUP, "kind": resource})),
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
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
            .collect();
        Self::new(409, "Conflict", message)
            .with_details(json!({"name": name, "group": GROUP, "kind": resource, "causes": causes}))
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
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
        let s = e.status();
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
    fn not_found_matches_kubectl_wording() {
        let s = ApiError::not_found("pipelines", "x").status();
        assert_eq!(
            s["message"],
            "pipelines.pipelines.kubeflow.org \"x\" not found"
        );
        assert_eq!(s["details"]["kind"], "pipelines");
    }
}
