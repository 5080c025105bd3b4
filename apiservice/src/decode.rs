//! Decoding request bodies into the API types under a `fieldValidation` mode, as kube-apiserver
//! does: `Strict` rejects unknown and duplicate fields, `Warn` turns them into warnings, `Ignore`
//! drops them. `pipelineSpec` and `platformSpec` are schemaless, so nothing under them is
//! "unknown".
//!
//! No HTTP here: callers map [`DecodeError`] to a `Status` (400 BadRequest).

use serde::de::DeserializeOwned;

use crate::types::API_VERSION;

/// kube-apiserver's `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and warn (the default, as in kube-apiserver).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parses the query value; empty means the default.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "Warn" => Some(FieldValidation::Warn),
            "Ignore" => Some(FieldValidation::Ignore),
            "Strict" => Some(FieldValidation::Strict),
            _ => None,
        }
    }
}

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or the wrong shape for the type.
    #[error("{0}")]
    Malformed(String),
    /// Unknown fields under `Strict`.
    #[error("strict decoding error: {}", .0.join(", "))]
    Strict(Vec<String>),
    /// `apiVersion`/`kind` name another type.
    #[error("{0}")]
    WrongKind(String),
}

/// A decoded object and the warnings to return with the response.
#[derive(Debug)]
pub struct Decoded<T> {
    /// The object.
    pub object: T,
    /// `unknown field "spec.x"` warnings (mode `Warn`).
    pub warnings: Vec<String>,
}

/// Decodes `body` as a `kind` object.
pub fn decode<T: DeserializeOwned + serde::Serialize>(
    body: &[u8],
    kind: &str,
    mode: FieldValidation,
) -> Result<Decoded<T>, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("error decoding request body: {e}")))?;
    decode_value(value, kind, mode)
}

/// The first path where `input` holds a list but the type wants an object: serde would read
/// the list positionally (`"spec": ["dn", "desc"]` as displayName and description), which
/// kube-apiserver refuses.
fn positional(
    input: &serde_json::Value,
    decoded: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (input, decoded) {
        (Value::Array(_), Value::Object(_)) => Some(path.to_owned()),
        (Value::Object(i), Value::Object(d)) => i.iter().find_map(|(k, iv)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            d.get(k).and_then(|dv| positional(iv, dv, &p))
        }),
        (Value::Array(ia), Value::Array(da)) => ia
            .iter()
            .zip(da)
            .enumerate()
            .find_map(|(n, (iv, dv))| positional(iv, dv, &format!("{path}[{n}]"))),
        _ => None,
    }
}

/// Decodes an already-parsed JSON value as a `kind` object.
pub fn decode_value<T: DeserializeOwned + serde::Serialize>(
    value: serde_json::Value,
    kind: &str,
    mode: FieldValidation,
) -> Result<Decoded<T>, DecodeError> {
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::Malformed(format!(
            "error decoding request body: expected a JSON object for {kind}"
        )));
    };
    match obj.get("apiVersion").and_then(|v| v.as_str()) {
        None | Some("") => {}
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(DecodeError::WrongKind(format!(
                "the API version in the data ({other}) does not match the expected API version \
                 ({API_VERSION})"
            )));
        }
    }
    match obj.get("kind").and_then(|v| v.as_str()) {
        None | Some("") => {}
        Some(k) if k == kind => {}
        Some(other) => {
            return Err(DecodeError::WrongKind(format!(
                "the kind in the data ({other}) does not match the expected kind ({kind})"
            )));
        }
    }
    let mut unknown = Vec::new();
    let input = value.clone();
    let object: T = serde_ignored::deserialize(value, |path| {
        unknown.push(format!("unknown field \"{path}\""));
    })
    .map_err(|e| DecodeError::Malformed(format!("error decoding {kind}: {e}")))?;
    let decoded = serde_json::to_value(&object)
        .map_err(|e| DecodeError::Malformed(format!("error decoding {kind}: {e}")))?;
    if let Some(path) = positional(&input, &decoded, "") {
        return Err(DecodeError::Malformed(format!(
            "error decoding {kind}: {path}: expected an object, got a list"
        )));
    }
    match mode {
        FieldValidation::Strict if !unknown.is_empty() => Err(DecodeError::Strict(unknown)),
        FieldValidation::Warn => Ok(Decoded {
            object,
            warnings: unknown,
        }),
        _ => Ok(Decoded {
            object,
            warnings: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PipelineVersion;

    const BODY: &str = r#"{"apiVersion":"pipelines.kubeflow.org/v2beta1","kind":"PipelineVersion",
        "metadata":{"name":"v","namespace":"n","bogus":1},
        "spec":{"pipelineName":"p","noSuchField":true,"pipelineSpec":{"anything":{"goes":1}}}}"#;

    #[test]
    fn strict_rejects_unknown_fields_outside_schemaless_specs() {
        let err =
            decode::<PipelineVersion>(BODY.as_bytes(), "PipelineVersion", FieldValidation::Strict)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.noSuchField\""
        );
    }

    #[test]
    fn warn_keeps_going_and_reports() {
        let d =
            decode::<PipelineVersion>(BODY.as_bytes(), "PipelineVersion", FieldValidation::Warn)
                .unwrap();
        assert_eq!(d.warnings.len(), 2);
        assert_eq!(d.object.spec.pipeline_spec.unwrap()["anything"]["goes"], 1);
        let d =
            decode::<PipelineVersion>(BODY.as_bytes(), "PipelineVersion", FieldValidation::Ignore)
                .unwrap();
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn wrong_kind_and_bad_json_are_errors() {
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap"}"#;
        assert!(matches!(
            decode::<PipelineVersion>(body, "PipelineVersion", FieldValidation::Warn),
            Err(DecodeError::WrongKind(_))
        ));
        assert!(matches!(
            decode::<PipelineVersion>(b"{", "PipelineVersion", FieldValidation::Warn),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode::<PipelineVersion>(
                br#"{"spec":{"tags":"x"}}"#,
                "PipelineVersion",
                FieldValidation::Warn
            ),
            Err(DecodeError::Malformed(_))
        ));
    }
}
