//! `kfp-storage`: one [`Store`] trait for every resource kind, and its SQL backend.
//!
//! # Layout
//! - this file: the traits ([`Store`]; [`Maintenance`] for backends that keep their own history)
//!   and the types they speak ([`Key`], [`Revision`], [`Object`], [`ListRequest`],
//!   [`WatchRequest`], [`StoreError`]), and [`open`], the one registry of backends by URL scheme.
//! - [`index`]: the generic index columns and the [`Indexer`] that fills them per resource.
//! - [`selector`]: label and field selectors (parsed once, used by SQL and by watch filtering).
//! - [`query`]: sorted, filtered, keyset-paged queries for the KFP REST view.
//! - [`token`]: continue tokens (`{"v","rv","start"}`, base64url, as kube-apiserver's).
//! - [`feed`]: the change feed: tails `changes` into an in-memory ring and fans events out to
//!   watchers, with replay from the database, bookmarks and 410 on lag or compaction.
//! - [`compactor`]: periodic compaction past a horizon of revisions and age.
//! - [`crd`]: the CRD backend (`kube://`): custom resources in the host cluster, with a
//!   watch-driven cache for sorted queries.
//! - [`sql`]: the sqlx backend (SQLite embedded, PostgreSQL, MySQL/MariaDB) with one global,
//!   strictly increasing revision allocated inside the writing transaction.
//! - `testing` (feature `testing`): the store conformance suite as one function over any
//!   backend, so every backend runs the same cases.
//!
//! The store keeps objects as JSON bytes with `metadata.resourceVersion` already set, so reads
//! hand stored bytes to the HTTP layer without re-encoding. It knows nothing about HTTP and
//! validates nothing but preconditions: rules live in `kfp-apiservice`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

pub mod compactor;
pub mod crd;
pub mod feed;
pub mod index;
pub mod query;
pub mod selector;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;

pub use feed::{Event, EventKind, WatchItem};
pub use index::{IndexColumn, Indexed, Indexer, NoIndex};
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
    /// With `bookmarks`, also one bookmark this long after the watch starts (kube-apiserver
    /// sends one 2 s before a watch's deadline), at the newest revision this watch has passed,
    /// whether or not anything it selects changed.
    pub bookmark_after: Option<std::time::Duration>,
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
    /// Creates several objects in one transaction: all are created, each at its own revision in
    /// the order given (watchers see them in that order), or none is (the first failure is
    /// returned). For objects that belong together, such as a parent and its first child.
    async fn create_all(&self, objects: Vec<(Key, serde_json::Value)>) -> Result<Vec<Object>>;
    /// Replaces an object, if it still has `preconditions.resource_version` (when given).
    async fn update(
        &self,
        key: &Key,
        object: serde_json::Value,
        preconditions: &Preconditions,
    ) -> Result<Object>;
    /// Deletes an object; returns its last state with the deletion's revision.
    async fn delete(&self, key: &Key, preconditions: &Preconditions) -> Result<Object>;
    /// Watches changes after `req.from`.
    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream>;
    /// The newest committed revision.
    async fn current_revision(&self) -> Result<Revision>;
    /// Values of label `label` on objects of `resource` that are the uid of no object of
    /// `owner_resource`: the owners its dependents point at that are gone (the orphan
    /// collector's question). Ascending, after `after`, at most `limit`.
    ///
    /// The default reads every labelled object a page at a time, decoding only its labels, and
    /// asks for each owner once; a SQL store answers from its label index without reading any
    /// object.
    async fn dangling_label_values(
        &self,
        resource: &str,
        label: &str,
        owner_resource: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Labels {
            #[serde(default)]
            metadata: Meta,
        }
        #[derive(serde::Deserialize, Default)]
        struct Meta {
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
        }
        let mut values = std::collections::BTreeSet::new();
        let mut req = ListRequest {
            resource: resource.to_owned(),
            labels: selector::LabelSelector(vec![selector::Requirement::Exists(label.to_owned())]),
            limit: Some(100),
            ..Default::default()
        };
        loop {
            let page = self.list(&req).await?;
            for o in &page.items {
                let Ok(Labels { metadata }) = serde_json::from_slice::<Labels>(&o.data) else {
                    continue;
                };
                if let Some(v) = metadata.labels.get(label)
                    && after.is_none_or(|a| v.as_str() > a)
                {
                    values.insert(v.clone());
                }
            }
            match page.continue_token {
                Some(t) => req.continue_token = Some(t),
                None => break,
            }
        }
        let mut gone = Vec::new();
        for v in values {
            if gone.len() >= limit {
                break;
            }
            match self.get_by_uid(owner_resource, &v).await {
                Ok(_) => {}
                Err(StoreError::NotFound(_)) => gone.push(v),
                Err(e) => return Err(e),
            }
        }
        Ok(gone)
    }
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
    /// Stops background work and closes connections; afterwards calls answer Unavailable.
    async fn close(&self);
}

/// History upkeep of a backend that keeps its own change feed (SQL). A backend whose history
/// belongs to someone else (the host cluster's etcd) has none.
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// The newest revision written before `age` ago (for age-based compaction); `None` when
    /// nothing is that old.
    async fn revision_older_than(&self, age: std::time::Duration) -> Result<Option<Revision>>;
    /// Drops change-feed history up to and including `revision`; older revisions then answer
    /// Gone. Returns the new compacted revision.
    async fn compact(&self, revision: Revision) -> Result<Revision>;
}

/// An opened backend: the store, and its maintenance when it has one.
#[derive(Clone)]
pub struct Backend {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Compaction and history, for backends that keep their own.
    pub maintenance: Option<Arc<dyn Maintenance>>,
}

/// The kinds of backend [`open`] can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// [`SqlStore`].
    Sql,
    /// [`crd::CrdStore`]: custom resources in the host cluster.
    Crd,
}

/// The URL schemes [`open`] knows: scheme, backend, what the URL looks like.
pub const SCHEMES: &[(&str, BackendKind, &str)] = &[
    ("sqlite", BackendKind::Sql, "sqlite://PATH (embedded)"),
    ("postgres", BackendKind::Sql, "postgres://USER:PASS@HOST/DB"),
    (
        "postgresql",
        BackendKind::Sql,
        "postgresql://USER:PASS@HOST/DB",
    ),
    (
        "mysql",
        BackendKind::Sql,
        "mysql://USER:PASS@HOST/DB (MySQL or MariaDB)",
    ),
    ("mariadb", BackendKind::Sql, "mariadb://USER:PASS@HOST/DB"),
    (
        "kube",
        BackendKind::Crd,
        "kube://[?kubeconfig=PATH&namespace-prefix=P] (custom resources in the host cluster)",
    ),
];

/// The backend a store URL names, by its scheme.
pub fn backend_kind(url: &str) -> Result<BackendKind> {
    let scheme = url.split(':').next().unwrap_or_default();
    SCHEMES
        .iter()
        .find(|(s, _, _)| *s == scheme)
        .map(|(_, k, _)| *k)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "unsupported store URL {url:?}: use one of {}",
                SCHEMES
                    .iter()
                    .map(|(_, _, example)| *example)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Opens the backend `config.url` names: the one registry of backends.
pub async fn open(config: sql::StoreConfig) -> Result<Backend> {
    match backend_kind(&config.url)? {
        BackendKind::Sql => {
            let s = Arc::new(SqlStore::open(config).await?);
            Ok(Backend {
                store: s.clone(),
                maintenance: Some(s),
            })
        }
        BackendKind::Crd => Ok(Backend {
            store: Arc::new(crd::CrdStore::open(config).await?),
            maintenance: None,
        }),
    }
}
