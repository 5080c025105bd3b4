//! Field paths and validation errors, the Rust counterpart of apimachinery's `field.ErrorList`.
//!
//! Every rule in this crate reports through [`FieldError`] so that the HTTP layer can turn a list
//! into a `Status` with `details.causes` (Kubernetes view) or one KFP error message (REST view)
//! without knowing which rule fired. This module must not know about HTTP.

use std::fmt;

/// A path into an object, rendered the way Kubernetes renders it: `spec.tags[team]`,
/// `root.dag.tasks.print-text.dependentTasks[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at `name`.
    pub fn new(name: &str) -> Self {
        FieldPath(name.to_owned())
    }

    /// The empty path (the whole object or document).
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// `self.name`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }

    /// `self[index]`.
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, index))
    }

    /// `self[key]`, for map entries whose key is not a field name.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, key))
    }

    /// The rendered path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the empty path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of problem a [`FieldError`] is; the names are apimachinery's `field.ErrorType`
/// reasons, which become `details.causes[].reason` in a `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueInvalid`.
    Invalid,
    /// `FieldValueNotSupported`.
    NotSupported,
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueDuplicate`.
    Duplicate,
    /// `FieldValueNotFound`.
    NotFound,
    /// `FieldValueTooLong`.
    TooLong,
    /// `FieldValueTooMany`.
    TooMany,
    /// `FieldValueTypeInvalid`.
    TypeInvalid,
}

impl ErrorType {
    /// The `reason` string Kubernetes uses in `details.causes`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The short human label kube-apiserver prints before the detail ("Required value", ...).
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::NotFound => "Not found",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::TypeInvalid => "Invalid type",
        }
    }
}

/// One validation problem at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where.
    pub path: FieldPath,
    /// What kind of problem.
    pub kind: ErrorType,
    /// What exactly is wrong, for a person.
    pub detail: String,
}

impl FieldError {
    /// A new error.
    pub fn new(kind: ErrorType, path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            path,
            kind,
            detail: detail.into(),
        }
    }

    /// `Required value`.
    pub fn required(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, path, detail)
    }

    /// `Invalid value`.
    pub fn invalid(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, path, detail)
    }

    /// `Forbidden`.
    pub fn forbidden(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, path, detail)
    }

    /// `Not found`.
    pub fn not_found(path: FieldPath, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::NotFound, path, detail)
    }

    /// The same error under `prefix` (e.g. an IR error moved under `spec.pipelineSpec`).
    pub fn under(mut self, prefix: &FieldPath) -> Self {
        self.path = if self.path.is_root() {
            prefix.clone()
        } else if prefix.is_root() {
            self.path
        } else {
            FieldPath(format!("{}.{}", prefix.0, self.path.0))
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "{}", self.detail)
        } else {
            write!(f, "{}: {}", self.path, self.detail)
        }
    }
}

/// Several field errors; empty means valid.
pub type ErrorList = Vec<FieldError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_kubernetes() {
        let p = FieldPath::new("root")
            .child("dag")
            .child("tasks")
            .child("print-text")
            .child("dependentTasks")
            .index(0);
        assert_eq!(p.as_str(), "root.dag.tasks.print-text.dependentTasks[0]");
        assert_eq!(
            FieldPath::new("spec").child("tags").key("a.b").as_str(),
            "spec.tags[a.b]"
        );
    }

    #[test]
    fn under_prefixes_paths() {
        let e = FieldError::invalid(FieldPath::new("root"), "x")
            .under(&FieldPath::new("spec").child("pipelineSpec"));
        assert_eq!(e.to_string(), "spec.pipelineSpec.root: x");
        let whole = FieldError::invalid(FieldPath::root(), "y").under(&FieldPath::new("spec"));
        assert_eq!(whole.path.as_str(), "spec");
    }
}
