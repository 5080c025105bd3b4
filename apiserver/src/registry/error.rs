//! [`RegistryError`]: why a registry operation failed, with the context each view needs to
//! answer in its own shape (a Kubernetes `Status` in `crate::error`, the KFP error shape in the
//! KFP view). No HTTP here.

use kfp_apiservice::ErrorList;
use kfp_apiservice::resource::StrategyError;
use kfp_storage::StoreError;

use super::managed::Conflict;

/// A failed registry operation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No such object.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name.
        name: String,
    },
    /// An object with that name exists.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name.
        name: String,
    },
    /// A precondition (resourceVersion, uid) failed, or optimistic concurrency lost.
    #[error("operation cannot be fulfilled on {resource} {name:?}: {message}")]
    Conflict {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name.
        name: String,
        /// What did not match.
        message: String,
    },
    /// Server-side apply would change fields other managers own.
    #[error("apply failed with {} conflicts", conflicts.len())]
    ApplyConflict {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name.
        name: String,
        /// Each field and its owner.
        conflicts: Vec<Conflict>,
    },
    /// The object breaks the kind's rules (field causes).
    #[error("{kind} {name:?} is invalid")]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// What is wrong.
        errors: ErrorList,
    },
    /// The request cannot be understood (wrongly shaped body, mismatched name or namespace).
    #[error("{0}")]
    BadRequest(String),
    /// The request is understood but refused (e.g. a new child of an object being deleted).
    #[error("{message}")]
    Forbidden {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name.
        name: String,
        /// Why.
        message: String,
    },
    /// A JSON patch operation failed (a `test` that did not hold, a missing path).
    #[error("{0}")]
    PatchFailed(String),
    /// The patch would make the object too large or take too much work.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed; `resource`/`name` say what was being read or written.
    #[error("{source}")]
    Store {
        /// The resource (plural).
        resource: &'static str,
        /// The object's name ("" for lists).
        name: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
}

impl RegistryError {
    /// A store error while handling `resource`/`name`; not-found and exists become their own
    /// variants.
    pub fn store(source: StoreError, resource: &'static str, name: &str) -> Self {
        match source {
            StoreError::NotFound(_) => RegistryError::NotFound {
                resource,
                name: name.to_owned(),
            },
            StoreError::AlreadyExists(_) => RegistryError::AlreadyExists {
                resource,
                name: name.to_owned(),
            },
            source => RegistryError::Store {
                resource,
                name: name.to_owned(),
                source: Box::new(source),
            },
        }
    }

    pub(crate) fn from_strategy(e: StrategyError) -> Self {
        match e {
            StrategyError::BadRequest(m) => RegistryError::BadRequest(m),
            StrategyError::Invalid { kind, name, errors } => {
                RegistryError::Invalid { kind, name, errors }
            }
        }
    }
}
