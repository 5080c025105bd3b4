//! `kfp-storage`: one [`Store`] trait for every resource kind, and its SQL backend.
//!
//! # Layout
//! - this file: the trait and the types it speaks ([`Key`], [`Revision`], [`Object`],
//!   [`ListRequest`], [`WatchRequest`], [`StoreError`]).
//! - [`selector`]: label and field selectors (parsed once, used by SQL and by watch filtering).
//! - [`query`]: sorted, filtered, keyset-paged queries for the KFP REST view.
//! - [`token`]: continue tokens (`{"v","rv","start"}`, base64url, as kube-apiserver's).
//! - [`feed`]: the change feed: tails `changes` into an in-memory ring and fans events out to
//!   watchers, with replay from the database, bookmarks and 410 on lag or compaction.
//! - [`compactor`]: periodic compaction past a horizon of revisions and age.
//! - [`sql`]: the sqlx backend (SQLite embedded, PostgreSQL, MySQL/MariaDB) with one global,
//!   strictly increasing revision allocated inside the writing transaction.
//!
//! The store keeps objects as JSON bytes with `metadata.resourceVersion` already set, so reads
//! hand stored bytes to the HTTP layer without re-encoding. It knows nothing about HTTP and
//! validates nothing but preconditions: rules live in `kfp-apiservice`.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use bytes::Bytes;

pub mod compactor;
pub mod feed;
mod index;
pub mod query;
pub mod selector;
pub mod sql;
pub mod token;

pub use feed::{Event, EventKind, WatchItem};
pub use selector::{Field, FieldSelector, LabelSelector};
pub use sql::{SqlStore, StoreConfig};

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A position in the store's history: the resourceVersion of every object and list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Revision {
    /// Parses a resourceVersion string (decimal, as this server issues them).
    pub fn parse(s: &str) -> Option<Revision> {
        s.parse().ok().map(Revision)
    }
}

/// The identity of an object: resource (plural), namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The resource's plural, e.g. `pipelineversions`.
    pub resource: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key {
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// A stored object.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// Where it lives.
    pub key: Key,
    /// `metadata.uid`.
    pub uid: String,
    /// The revision of its last write (= `metadata.resourceVersion`).
    pub revision: Revision,
    /// The object as JSON, with `metadata.resourceVersion` set.
    pub data: Bytes,
}

impl Object {
    /// Parses the JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.data).map_err(|e| {
            StoreError::Internal(format!("stored object {} is not JSON: {e}", self.key))
        })
    }
}

/// Preconditions on a delete (and on an update, for uid).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The object's uid must be this.
    pub uid: Option<String>,
    /// The object's resourceVersion must be this.
    pub resource_version: Option<Revision>,
}

/// Which state a list reads (`resourceVersion` + `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadAt {
    /// The current state (resourceVersion unset, or "0").
    #[default]
    Latest,
    /// Any state at least this new: the current state, or TooLarge if the store is behind.
    NotOlderThan(Revision),
    /// Exactly this revision (reconstructed from the change feed), or Gone if compacted.
    Exact(Revision),
}

/// A list request.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    /// The resource.
    pub resource: String,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size; `None` for everything.
    pub limit: Option<usize>,
    /// Continue token from a previous page; it fixes the revision.
    pub continue_token: Option<String>,
    /// Which state to read when there is no continue token.
    pub at: ReadAt,
}

/// One page of a list.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// The revision the whole list (all its pages) is consistent at.
    pub revision: Revision,
    /// The objects, ordered by (namespace, name).
    pub items: Vec<Object>,
    /// Token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many matching objects follow this page (only without selectors, as Kubernetes).
    pub remaining: Option<u64>,
}

/// A watch request.
#[derive(Clone, Debug, Default)]
pub struct WatchRequest {
    /// The resource.
    pub resource: String,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Deliver events after this revision.
    pub from: Revision,
    /// Emit [`WatchItem::Bookmark`] when idle.
    pub bookmarks: bool,
}

/// A stream of watch items; it ends after an error item or when dropped.
pub type WatchStream = Pin<Box<dyn futures_core::Stream<Item = WatchItem> + Send>>;

/// Everything that can go wrong in a store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("{0} not found")]
    NotFound(Key),
    /// An object with that key (or uid) exists.
    #[error("{0} already exists")]
    AlreadyExists(Key),
    /// A precondition (resourceVersion or uid) did not hold.
    #[error("conflict on {key}: {message}")]
    Conflict {
        /// The object.
        key: Key,
        /// What did not match.
        message: String,
    },
    /// The revision asked for has been compacted away (410).
    #[error("too old resource version: {requested} ({compacted})")]
    Gone {
        /// What was asked for.
        requested: Revision,
        /// The oldest revision still available.
        compacted: Revision,
    },
    /// The revision asked for is newer than the store has seen (504 with Retry-After).
    #[error("too large resource version: {requested}, current: {current}")]
    TooLarge {
        /// What was asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A request that cannot be served (bad continue token, ...).
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached (503 with Retry-After).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data.
    #[error("storage error: {0}")]
    Internal(String),
}

/// The store. Every method is keyed by resource, namespace and name; every write takes the next
/// global revision inside its transaction and appends one change-feed row.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    async fn get(&self, key: &Key) -> Result<Object>;
    /// Reads one object by uid.
    async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object>;
    /// Reads a page of objects.
    async fn list(&self, req: &ListRequest) -> Result<ListPage>;
    /// Reads a sorted, filtered page with the total count (the KFP REST view).
    async fn query(&self, req: &query::QueryRequest) -> Result<query::QueryPage>;
    /// Creates an object; `object` is the full JSON (its resourceVersion is set by the store).
    async fn create(&self, key: &Key, object: serde_json::Value) -> Result<Object>;
    /// Replaces an object, if it still has `preconditions.resource_version` (when given).
    async fn update(
        &self,
        key: &Key,
        object: serde_json::Value,
        preconditions: &Preconditions,
    ) -> Result<Object>;
    /// Deletes an object; returns its last state with the deletion's revision.
    async fn delete(&self, key: &Key, preconditions: &Preconditions) -> Result<Object>;
    /// Deletes every object a list request selects (at the current state); returns them.
    async fn delete_collection(&self, req: &ListRequest) -> Result<Vec<Object>>;
    /// Watches changes after `req.from`.
    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream>;
    /// The newest committed revision.
    async fn current_revision(&self) -> Result<Revision>;
    /// The newest revision written before `age` ago (for age-based compaction); `None` when
    /// nothing is that old.
    async fn revision_older_than(&self, age: std::time::Duration) -> Result<Option<Revision>>;
    /// Drops change-feed history up to and including `revision`; older revisions then answer
    /// Gone. Returns the new compacted revision.
    async fn compact(&self, revision: Revision) -> Result<Revision>;
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}

/// Labels of an object's JSON (`metadata.labels`), for filtering.
pub fn labels_of(object: &serde_json::Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
