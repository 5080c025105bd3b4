//! The KFP view's errors, in the two shapes KFP clients parse (`shared/kfp/KFP_REST_FACTS.md`
//! section 8): grpc-gateway's `google.rpc.Status` with proto field names for every endpoint but
//! the uploads, and the v1beta1 `{"error_message", "error_details"}` for the upload handlers,
//! with the HTTP codes each uses. Registry errors are translated here and nowhere else.

use http::{HeaderValue, Response, StatusCode, header};
use kfp_storage::StoreError;
use serde_json::json;

use crate::body::Body;
use crate::registry::RegistryError;

/// gRPC status codes the KFP view answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 3, HTTP 400.
    InvalidArgument,
    /// 5, HTTP 404.
    NotFound,
    /// 6, HTTP 409.
    AlreadyExists,
    /// 7, HTTP 403.
    PermissionDenied,
    /// 9, HTTP 400.
    FailedPrecondition,
    /// 10, HTTP 409.
    Aborted,
    /// 12, HTTP 501.
    Unimplemented,
    /// 13, HTTP 500.
    Internal,
    /// 14, HTTP 503.
    Unavailable,
    /// 16, HTTP 401.
    Unauthenticated,
}

impl Code {
    /// The gRPC number.
    pub fn number(self) -> i32 {
        match self {
            Code::InvalidArgument => 3,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }

    /// grpc-gateway's HTTP status for the code.
    pub fn http(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A KFP error: its code, the short message for users (`details[0].message`) and the whole
/// chain (`message`), as KFP wraps its errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KfpError {
    /// The code.
    pub code: Code,
    /// The short, user-facing message.
    pub user: String,
    /// The wrapped chain: `<what failed>: <user message>`.
    pub message: String,
}

impl KfpError {
    /// An error whose chain is `<context>: <user>`.
    pub fn new(code: Code, context: &str, user: impl Into<String>) -> Self {
        let user = user.into();
        let message = if context.is_empty() {
            user.clone()
        } else {
            format!("{context}: {user}")
        };
        KfpError {
            code,
            user,
            message,
        }
    }

    /// 400, code 3.
    pub fn invalid(user: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, "", user)
    }

    /// 404, code 5.
    pub fn not_found(context: &str, user: impl Into<String>) -> Self {
        Self::new(Code::NotFound, context, user)
    }

    /// 403, code 7, as KFP words a denied SubjectAccessReview.
    pub fn forbidden(user: &str, reason: &str) -> Self {
        Self::new(
            Code::PermissionDenied,
            "",
            format!("User '{user}' is not authorized with reason: {reason}"),
        )
    }

    /// 500, code 13.
    pub fn internal(user: impl Into<String>) -> Self {
        let user = user.into();
        KfpError {
            code: Code::Internal,
            message: format!("Internal error: {user}"),
            user,
        }
    }

    /// A registry error while `context` (e.g. `Failed to create a new pipeline`). Not-found and
    /// already-exists are worded by the caller, which knows the ids; these are the defaults.
    pub fn from_registry(e: RegistryError, context: &str) -> Self {
        match e {
            RegistryError::NotFound { resource, name } => {
                Self::not_found(context, format!("{resource} {name} not found"))
            }
            RegistryError::AlreadyExists { resource, name } => Self::new(
                Code::AlreadyExists,
                context,
                format!("The name {name} already exists ({resource}). Please specify a new name"),
            ),
            RegistryError::Invalid { errors, .. } => Self::new(
                Code::InvalidArgument,
                context,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            RegistryError::BadRequest(m) | RegistryError::PatchFailed(m) => {
                Self::new(Code::InvalidArgument, context, m)
            }
            RegistryError::TooLarge(m) => Self::new(Code::InvalidArgument, context, m),
            RegistryError::Forbidden { message, .. } => {
                Self::new(Code::FailedPrecondition, context, message)
            }
            RegistryError::Conflict { message, .. } => Self::new(Code::Aborted, context, message),
            RegistryError::ApplyConflict { .. } => {
                Self::new(Code::Aborted, context, "the object changed; try again")
            }
            RegistryError::Store { source, .. } => match *source {
                StoreError::Unavailable(_) => Self::new(
                    Code::Unavailable,
                    context,
                    "the storage is unavailable; try again later",
                ),
                StoreError::Invalid(m) => Self::new(Code::InvalidArgument, context, m),
                other => {
                    tracing::error!(error = %other, "KFP request failed in the store");
                    Self::internal(format!("{context}: a storage error occurred"))
                }
            },
        }
    }

    /// grpc-gateway's answer: `google.rpc.Status` with proto field names.
    pub fn gateway_response(&self) -> Response<Body> {
        let body = json!({
            "code": self.code.number(),
            "message": self.message,
            "details": [{
                "@type": "type.googleapis.com/google.rpc.Status",
                "code": self.code.number(),
                "message": self.user,
            }],
        });
        json_response(self.code.http(), body.to_string())
    }

    /// The upload handlers' answer: `{"error_message", "error_details"}`, with their codes
    /// (duplicates 409, invalid input and denied access 400, unavailable 503, anything else 500).
    pub fn upload_response(&self) -> Response<Body> {
        let status = match self.code {
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::PermissionDenied => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"error_message": self.user, "error_details": self.message});
        json_response(status, body.to_string())
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_upload_shapes() {
        let e = KfpError::not_found("Failed to get a pipeline x", "Pipeline x not found");
        let r = e.gateway_response();
        assert_eq!(r.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(r.body().as_full().unwrap()).unwrap();
        assert_eq!(v["code"], 5);
        assert_eq!(
            v["message"],
            "Failed to get a pipeline x: Pipeline x not found"
        );
        assert_eq!(v["details"][0]["message"], "Pipeline x not found");
        assert_eq!(
            v["details"][0]["@type"],
            "type.googleapis.com/google.rpc.Status"
        );
        let dup = KfpError::new(Code::AlreadyExists, "Failed", "exists");
        assert_eq!(dup.upload_response().status(), 409);
        assert_eq!(dup.gateway_response().status(), 409);
        let denied = KfpError::forbidden("alice", "no");
        assert_eq!(
            denied.upload_response().status(),
            400,
            "as KFP's upload handler"
        );
        assert_eq!(denied.gateway_response().status(), 403);
        let r = KfpError::invalid("bad").upload_response();
        let v: serde_json::Value = serde_json::from_slice(r.body().as_full().unwrap()).unwrap();
        assert_eq!(v, json!({"error_message": "bad", "error_details": "bad"}));
        assert_eq!(Code::Aborted.http(), 409);
    }
}
