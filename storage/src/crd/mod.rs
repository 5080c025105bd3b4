//! The CRD backend (`kube://`): objects live as custom resources of the internal group
//! [`GROUP`]/[`VERSION`] in the host cluster, one envelope kind per public resource (named by the
//! caller in [`StoreConfig::kinds`]), in the same namespaces (optionally prefixed).
//!
//! # The envelope
//! A record's host metadata holds only its name, namespace, labels (the public labels, plus one
//! `storage.pipelines.kubeflow.org/<column>` label per generic index column whose value is a hash
//! of the column, so field selectors run on the host) and the host's resourceVersion. The public
//! object — uid, creationTimestamp, generation, labels, annotations, finalizers,
//! ownerReferences, managedFields, deletionTimestamp, spec, status — is the record's `object`
//! field, so the host's garbage collector, finalizers and admission never act on it.
//!
//! # Revisions
//! Our resourceVersion is the host's (etcd's revision, global across kinds, so the Store
//! contract holds unchanged); it must be decimal. Lists, continue tokens (passed through
//! opaque), label selectors, `resourceVersionMatch`, watches from a revision, bookmarks and 410
//! after the host's compaction are the host's. The host keeps the history, so there is no
//! [`crate::Maintenance`].
//!
//! # What runs in this process
//! Sorted KFP queries and `get_by_uid` are served from a watch-driven cache of every record
//! ([`cache`]), as upstream KFP's Kubernetes mode does; every write waits (bounded) until the
//! cache has seen it, so a write is visible to both views when it answers. A delete answers with
//! the deletion's revision, which only the host's DELETED event carries.
//!
//! Not atomic on the host: `create_all` first checks that no object of the batch exists, then
//! creates in order and deletes what it created when one fails after all (only when a concurrent
//! writer took a name in between; a watcher then sees that create and delete). The uid
//! uniqueness check reads the cache.
//! This module knows no resource: plurals and envelope kinds come from the caller.

mod cache;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams,
    VersionMatch, WatchEvent, WatchParams,
};
use kube::core::TypeMeta;
use serde_json::{Value, json};
use sha2::Digest;

use crate::index::{self, IndexColumn, Indexer};
use crate::query::{QueryPage, QueryRequest};
use crate::selector::{Field, Requirement};
use crate::{
    Key, ListPage, ListRequest, Object, Preconditions, ReadAt, Result, Revision, Store,
    StoreConfig, StoreError, WatchItem, WatchRequest, WatchStream,
};

use cache::Cache;

/// The internal API group of the records.
pub const GROUP: &str = "storage.pipelines.kubeflow.org";
/// Its version.
pub const VERSION: &str = "v1alpha1";
/// The prefix of the labels this backend maintains; public labels may not use it.
pub const LABEL_PREFIX: &str = "storage.pipelines.kubeflow.org/";
/// How long a write waits for the cache to see it before answering anyway.
const CACHE_WAIT: Duration = Duration::from_secs(10);
/// How often a write retries after a concurrent change when it has no resourceVersion
/// precondition (an unconditional update or delete).
const RETRIES: usize = 5;
/// Page size of the cache's lists.
const CACHE_PAGE: u32 = 500;
/// How long one host watch runs before it is renewed (kube-apiserver caps at 30 min).
const WATCH_TIMEOUT: u32 = 290;
/// The label on host namespaces this store makes for a namespace prefix.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kfp-apiserver");

/// The CustomResourceDefinition of one envelope kind, for `--install-crds` and the manifests.
pub fn definition(plural: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.to_lowercase(),
                "kind": kind,
                "listKind": format!("{kind}List"),
                "categories": []
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "An object of the pipelines.kubeflow.org aggregated API, \
                        kept by kfp-apiserver. Edit it through that API, not here.",
                    "properties": {"object": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true
                    }}
                }}
            }]
        }
    })
}

/// Where the store's host is: `kube://` (in-cluster, or the default kubeconfig) or
/// `kube://?kubeconfig=PATH&namespace-prefix=P`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// A kubeconfig file; `None` infers (in-cluster, then `$KUBECONFIG`).
    pub kubeconfig: Option<String>,
    /// Prepended to every namespace on the host.
    pub namespace_prefix: String,
}

impl Location {
    /// Parses a `kube://` URL.
    pub fn parse(url: &str) -> Result<Location> {
        let rest = url
            .strip_prefix("kube://")
            .ok_or_else(|| StoreError::Invalid(format!("not a kube:// URL: {url:?}")))?;
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !host.is_empty() && host != "/" {
            return Err(StoreError::Invalid(format!(
                "kube:// takes no host ({host:?}); name a cluster with ?kubeconfig=PATH"
            )));
        }
        let mut loc = Location::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "kubeconfig" => loc.kubeconfig = Some(v),
                "namespace-prefix" => loc.namespace_prefix = v,
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "unknown kube:// parameter {k:?} (kubeconfig, namespace-prefix)"
                    )));
                }
            }
        }
        Ok(loc)
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A client for the host a location names. Requests are not retried inside the client: 429, 503
/// and 504 reach the caller at once (the server answers them with Retry-After), where kube's
/// retry layer would hold a request for minutes on a too-large resourceVersion.
pub async fn client(loc: &Location) -> Result<kube::Client> {
    let mut config = match &loc.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| StoreError::Invalid(format!("kubeconfig {path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| StoreError::Invalid(format!("kubeconfig {path}: {e}")))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| StoreError::Invalid(format!("no cluster configuration: {e}")))?,
    };
    config.default_retry = false;
    kube::Client::try_from(config)
        .map_err(|e| StoreError::Invalid(format!("a client for the host cluster: {e}")))
}

/// The CRD store.
pub struct CrdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    client: kube::Client,
    prefix: String,
    kinds: BTreeMap<String, ApiResource>,
    indexer: Arc<dyn Indexer>,
    caches: BTreeMap<String, Arc<Cache>>,
    closed: AtomicBool,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl CrdStore {
    /// Connects to the host `config.url` names and starts a cache per kind.
    pub async fn open(config: StoreConfig) -> Result<CrdStore> {
        let loc = Location::parse(&config.url)?;
        let client = client(&loc).await?;
        Self::with_client(client, loc.namespace_prefix, &config).await
    }

    /// A store over `client` (for callers that already hold one).
    pub async fn with_client(
        client: kube::Client,
        prefix: String,
        config: &StoreConfig,
    ) -> Result<CrdStore> {
        if config.kinds.is_empty() {
            return Err(StoreError::Invalid(
                "the kube:// store needs the envelope kind of every resource".into(),
            ));
        }
        let kinds: BTreeMap<String, ApiResource> = config
            .kinds
            .iter()
            .map(|(plural, kind)| {
                let ar = ApiResource {
                    group: GROUP.into(),
                    version: VERSION.into(),
                    api_version: format!("{GROUP}/{VERSION}"),
                    kind: kind.clone(),
                    plural: plural.clone(),
                };
                (plural.clone(), ar)
            })
            .collect();
        let caches = kinds
            .keys()
            .map(|p| (p.clone(), Arc::new(Cache::new(p))))
            .collect();
        let inner = Arc::new(Inner {
            client,
            prefix,
            kinds,
            indexer: config.indexer.clone(),
            caches,
            closed: AtomicBool::new(false),
            tasks: Default::default(),
        });
        // The host must answer and know every kind before the store is used.
        for plural in inner.kinds.keys() {
            inner
                .api(plural, None)?
                .list(&ListParams::default().limit(1))
                .await
                .map_err(|e| match map_err(None, e) {
                    StoreError::NotFound(_) => StoreError::Unavailable(format!(
                        "the host cluster does not serve {plural}.{GROUP}: install the CRDs \
                         (--install-crds, or apiservice/deploy/crd-store/)"
                    )),
                    other => other,
                })?;
        }
        let tasks = inner
            .caches
            .values()
            .map(|c| tokio::spawn(cache::run(c.clone(), inner.clone())))
            .collect();
        *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(CrdStore { inner })
    }

    /// Creates or updates the CustomResourceDefinitions of every kind on the host.
    pub async fn install_definitions(
        client: &kube::Client,
        kinds: &BTreeMap<String, String>,
    ) -> Result<()> {
        let ar = ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        for (plural, kind) in kinds {
            let def = definition(plural, kind);
            let name = format!("{plural}.{GROUP}");
            let pp = kube::api::PatchParams::apply("kfp-apiserver").force();
            api.patch(&name, &pp, &kube::api::Patch::Apply(&def))
                .await
                .map_err(|e| map_err(None, e))?;
        }
        Ok(())
    }
}

impl Inner {
    fn closed(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Unavailable("the store is closed".into()))
        } else {
            Ok(())
        }
    }

    fn resource(&self, resource: &str) -> Result<&ApiResource> {
        self.kinds.get(resource).ok_or_else(|| {
            StoreError::Invalid(format!("the kube:// store has no kind for {resource:?}"))
        })
    }

    fn cache(&self, resource: &str) -> Result<&Arc<Cache>> {
        self.resource(resource)?;
        self.caches
            .get(resource)
            .ok_or_else(|| StoreError::Internal(format!("no cache for {resource}")))
    }

    pub(crate) fn api(&self, resource: &str, ns: Option<&str>) -> Result<Api<DynamicObject>> {
        let ar = self.resource(resource)?;
        Ok(match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), &self.host_ns(ns), ar),
            None => Api::all_with(self.client.clone(), ar),
        })
    }

    fn host_ns(&self, ns: &str) -> String {
        format!("{}{ns}", self.prefix)
    }

    /// Creates the host namespace of public namespace `ns` (already there is fine).
    async fn create_namespace(&self, ns: &str) -> Result<()> {
        let name = self.host_ns(ns);
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let namespace = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => {
                tracing::info!(namespace = %name, "created the host namespace of a kube:// prefix");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(map_err(Some(&Key::new("namespaces", "", &name)), e)),
        }
    }

    /// With a namespace prefix, the label every record of this store carries (its value: the
    /// prefix hashed), so that lists and watches across namespaces select only this store's
    /// records on the host rather than every prefix's.
    fn scope(&self) -> Option<(String, String)> {
        (!self.prefix.is_empty()).then(|| {
            (
                format!("{LABEL_PREFIX}namespace-prefix"),
                hash_label(&self.prefix),
            )
        })
    }

    /// [`Inner::scope`] as a label selector requirement.
    pub(crate) fn scope_selector(&self) -> Option<String> {
        self.scope().map(|(k, v)| format!("{k}={v}"))
    }

    /// The public namespace of a host namespace; `None` when it is not under the prefix.
    fn public_ns<'a>(&self, host: &'a str) -> Option<&'a str> {
        host.strip_prefix(self.prefix.as_str())
    }

    /// The record for `object`, stored at `key`; with `host_rv` for an update.
    fn envelope(
        &self,
        key: &Key,
        mut object: Value,
        host_rv: Option<String>,
    ) -> Result<DynamicObject> {
        let ar = self.resource(&key.resource)?;
        let fields = index::index_fields(self.indexer.as_ref(), &key.resource, &object);
        let mut labels = fields.labels.clone();
        if let Some(k) = labels.keys().find(|k| k.starts_with(LABEL_PREFIX)) {
            return Err(StoreError::Invalid(format!(
                "label {k:?}: the prefix {LABEL_PREFIX} is reserved by the kube:// store"
            )));
        }
        for c in IndexColumn::ALL {
            labels.insert(column_label(c), hash_label(fields.columns.get(c)));
        }
        if let Some((k, v)) = self.scope() {
            labels.insert(k, v);
        }
        if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.remove("resourceVersion");
        }
        Ok(DynamicObject {
            types: Some(TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            }),
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(self.host_ns(&key.namespace)),
                labels: Some(labels),
                resource_version: host_rv,
                ..Default::default()
            },
            data: json!({ "object": object }),
        })
    }

    /// The public object of a record; `None` when its namespace is not under the prefix.
    pub(crate) fn unwrap(&self, resource: &str, record: DynamicObject) -> Result<Option<Object>> {
        let host_ns = record.metadata.namespace.unwrap_or_default();
        let Some(ns) = self.public_ns(&host_ns) else {
            return Ok(None);
        };
        let name = record.metadata.name.unwrap_or_default();
        let key = Key::new(resource, ns, &name);
        let revision = parse_rv(record.metadata.resource_version.as_deref())?;
        let mut object = match record.data {
            Value::Object(mut m) => m.remove("object"),
            _ => None,
        }
        .filter(Value::is_object)
        .ok_or_else(|| StoreError::Internal(format!("record {key} has no object")))?;
        index::set_resource_version(&mut object, revision.0);
        let uid = index::uid_of(&object);
        let mut json =
            serde_json::to_vec(&object).map_err(|e| StoreError::Internal(e.to_string()))?;
        // The cache keeps this for the object's life: not the doubling Vec's spare capacity
        // (measured: 2.5x the JSON per cached object with it, benches/crd_cache.rs).
        json.shrink_to_fit();
        let data = Bytes::from(json);
        Ok(Some(Object {
            key,
            uid,
            revision,
            data,
        }))
    }

    fn unwrap_one(&self, key: &Key, record: DynamicObject) -> Result<Object> {
        self.unwrap(&key.resource, record)?
            .ok_or_else(|| StoreError::Internal(format!("record {key} is outside the prefix")))
    }

    /// The record's host uid and resourceVersion, and the public object.
    async fn current(&self, key: &Key) -> Result<(String, String, Object)> {
        let record = self
            .api(&key.resource, Some(&key.namespace))?
            .get(&key.name)
            .await
            .map_err(|e| map_err(Some(key), e))?;
        let host_uid = record.metadata.uid.clone().unwrap_or_default();
        let host_rv = record.metadata.resource_version.clone().unwrap_or_default();
        Ok((host_uid, host_rv, self.unwrap_one(key, record)?))
    }

    /// Host list parameters for a selector.
    fn selectors(
        &self,
        labels: &crate::LabelSelector,
        fields: &crate::FieldSelector,
    ) -> (Option<String>, Option<String>) {
        let mut l: Vec<String> = labels.0.iter().map(requirement).collect();
        if let Some(scope) = self.scope_selector() {
            l.push(scope);
        }
        let mut f = Vec::new();
        for (field, eq, value) in &fields.0 {
            let op = if *eq { "=" } else { "!=" };
            match field {
                Field::Name => f.push(format!("metadata.name{op}{value}")),
                Field::Namespace => {
                    f.push(format!("metadata.namespace{op}{}", self.host_ns(value)))
                }
                Field::Indexed(c) => {
                    l.push(format!("{}{op}{}", column_label(*c), hash_label(value)))
                }
            }
        }
        let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(","));
        (join(l), join(f))
    }

    async fn wait_for(&self, resource: &str, revision: Revision) {
        if let Ok(c) = self.cache(resource)
            && !c.wait_for(revision, CACHE_WAIT).await
        {
            tracing::warn!(%resource, %revision, "the kube:// cache has not seen a write after 10 s");
        }
    }
}

fn column_label(c: IndexColumn) -> String {
    let name = match c {
        IndexColumn::Title => "title",
        IndexColumn::ParentName => "parent-name",
        IndexColumn::ParentUid => "parent-uid",
        IndexColumn::Alias => "alias",
        IndexColumn::Detail => "detail",
    };
    format!("{LABEL_PREFIX}{name}")
}

/// A label value standing for any string: 40 hex digits of its SHA-256 (label values are at
/// most 63 characters of a restricted set; names and titles are not).
fn hash_label(v: &str) -> String {
    sha2::Sha256::digest(v.as_bytes())[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn requirement(r: &Requirement) -> String {
    match r {
        Requirement::Equals(k, v) => format!("{k}={v}"),
        Requirement::NotEquals(k, v) => format!("{k}!={v}"),
        Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
        Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
        Requirement::Exists(k) => k.clone(),
        Requirement::DoesNotExist(k) => format!("!{k}"),
    }
}

pub(crate) fn parse_rv(rv: Option<&str>) -> Result<Revision> {
    rv.and_then(Revision::parse).ok_or_else(|| {
        StoreError::Internal(format!(
            "the host's resourceVersion {rv:?} is not decimal; the kube:// store needs etcd's"
        ))
    })
}

/// The first decimal number in `s` after `after`.
fn number_after(s: &str, after: &str) -> Option<u64> {
    // ASCII folding keeps byte offsets, so `i` indexes `s` too.
    let i = s.to_ascii_lowercase().find(after)? + after.len();
    let digits: String = s[i..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether a host error says the namespace does not exist (404 with details naming it).
fn namespace_missing(s: &kube::core::Status) -> bool {
    s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces")
}

pub(crate) fn status_err(key: Option<&Key>, code: u16, reason: &str, message: &str) -> StoreError {
    let key = || key.cloned().unwrap_or_else(|| Key::new("", "", ""));
    match code {
        404 => StoreError::NotFound(key()),
        409 if reason == "AlreadyExists" => StoreError::AlreadyExists(key()),
        409 => StoreError::Conflict {
            key: key(),
            message: message.to_owned(),
        },
        410 => StoreError::Gone {
            requested: Revision(number_after(message, "resource version").unwrap_or(0)),
            compacted: Revision(number_after(message, "(").unwrap_or(0)),
        },
        504 if message
            .to_lowercase()
            .contains("too large resource version") =>
        {
            StoreError::TooLarge {
                requested: Revision(number_after(message, "resource version").unwrap_or(0)),
                current: Revision(number_after(message, "current").unwrap_or(0)),
            }
        }
        400 | 422 => StoreError::Invalid(message.to_owned()),
        429 | 500.. => StoreError::Unavailable(format!("the host cluster: {message}")),
        _ => StoreError::Internal(format!("the host cluster answered {code}: {message}")),
    }
}

pub(crate) fn map_err(key: Option<&Key>, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) => status_err(key, s.code, &s.reason, &s.message),
        kube::Error::BuildRequest(e) => StoreError::Invalid(e.to_string()),
        other => StoreError::Unavailable(format!("the host cluster: {other}")),
    }
}

#[async_trait::async_trait]
impl Store for CrdStore {
    async fn get(&self, key: &Key) -> Result<Object> {
        self.inner.closed()?;
        Ok(self.inner.current(key).await?.2)
    }

    async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object> {
        self.inner.closed()?;
        let c = self.inner.cache(resource)?;
        c.synced(CACHE_WAIT).await?;
        c.by_uid(uid)
            .ok_or_else(|| StoreError::NotFound(Key::new(resource, "", uid)))
    }

    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        self.inner.closed()?;
        let api = self.inner.api(&req.resource, req.namespace.as_deref())?;
        let (labels, fields) = self.inner.selectors(&req.labels, &req.fields);
        let mut lp = ListParams {
            label_selector: labels,
            field_selector: fields,
            limit: req.limit.map(|l| l.min(u32::MAX as usize) as u32),
            continue_token: req.continue_token.clone(),
            ..Default::default()
        };
        if req.continue_token.is_none() {
            match req.at {
                ReadAt::Latest => {}
                ReadAt::NotOlderThan(r) => {
                    lp.resource_version = Some(r.to_string());
                    lp.version_match = Some(VersionMatch::NotOlderThan);
                }
                // Revision 0 is older than anything the host keeps (it refuses it as Exact).
                ReadAt::Exact(Revision(0)) => {
                    return Err(StoreError::Gone {
                        requested: Revision(0),
                        compacted: Revision(0),
                    });
                }
                ReadAt::Exact(r) => {
                    lp.resource_version = Some(r.to_string());
                    lp.version_match = Some(VersionMatch::Exact);
                }
            }
        }
        let list = api.list(&lp).await.map_err(|e| {
            map_err(
                Some(&Key::new(
                    &req.resource,
                    req.namespace.as_deref().unwrap_or(""),
                    "",
                )),
                e,
            )
        })?;
        let revision = parse_rv(list.metadata.resource_version.as_deref())?;
        let mut items = Vec::with_capacity(list.items.len());
        for record in list.items {
            items.extend(self.inner.unwrap(&req.resource, record)?);
        }
        Ok(ListPage {
            revision,
            items,
            continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
            remaining: list
                .metadata
                .remaining_item_count
                .and_then(|n| u64::try_from(n).ok()),
        })
    }

    async fn query(&self, req: &QueryRequest) -> Result<QueryPage> {
        self.inner.closed()?;
        let c = self.inner.cache(&req.resource)?;
        c.synced(CACHE_WAIT).await?;
        Ok(c.query(req))
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Object> {
        self.inner.closed()?;
        let uid = index::uid_of(&object);
        let cache = self.inner.cache(&key.resource)?;
        if !uid.is_empty() && cache.by_uid(&uid).is_some() {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        let record = self.inner.envelope(key, object, None)?;
        let api = self.inner.api(&key.resource, Some(&key.namespace))?;
        let created = match api.create(&PostParams::default(), &record).await {
            Err(kube::Error::Api(s)) if namespace_missing(&s) => {
                if self.inner.prefix.is_empty() {
                    // As kube-apiserver answers a create in a namespace that does not exist.
                    return Err(StoreError::NotFound(Key::new(
                        "namespaces",
                        "",
                        &key.namespace,
                    )));
                }
                // The host namespace of a prefix is ours to make (once; then the create again).
                self.inner.create_namespace(&key.namespace).await?;
                api.create(&PostParams::default(), &record).await
            }
            other => other,
        }
        .map_err(|e| map_err(Some(key), e))?;
        let o = self.inner.unwrap_one(key, created)?;
        self.inner.wait_for(&key.resource, o.revision).await;
        Ok(o)
    }

    async fn create_all(&self, objects: Vec<(Key, Value)>) -> Result<Vec<Object>> {
        self.inner.closed()?;
        // The host has no transactions: refuse the batch before writing anything when any
        // object exists already, and undo the creates of a batch that fails after all (a
        // concurrent writer took a name in between).
        for (key, object) in &objects {
            match self.inner.current(key).await {
                Ok(_) => return Err(StoreError::AlreadyExists(key.clone())),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let uid = index::uid_of(object);
            if !uid.is_empty() && self.inner.cache(&key.resource)?.by_uid(&uid).is_some() {
                return Err(StoreError::AlreadyExists(key.clone()));
            }
        }
        let mut done: Vec<Object> = Vec::with_capacity(objects.len());
        for (key, object) in objects {
            match self.create(&key, object).await {
                Ok(o) => done.push(o),
                Err(e) => {
                    for o in done.iter().rev() {
                        let pre = Preconditions {
                            uid: Some(o.uid.clone()),
                            resource_version: None,
                        };
                        if let Err(undo) = self.delete(&o.key, &pre).await {
                            tracing::warn!(key = %o.key, error = %undo, "create_all could not undo a create");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    async fn update(&self, key: &Key, object: Value, pre: &Preconditions) -> Result<Object> {
        self.inner.closed()?;
        let api = self.inner.api(&key.resource, Some(&key.namespace))?;
        for _ in 0..RETRIES {
            let host_rv = match (pre.resource_version, &pre.uid) {
                (Some(rv), None) => rv.to_string(),
                _ => {
                    let (_, host_rv, current) = self.inner.current(key).await?;
                    check(key, &current, pre)?;
                    host_rv
                }
            };
            let record = self.inner.envelope(key, object.clone(), Some(host_rv))?;
            match api
                .replace(&key.name, &PostParams::default(), &record)
                .await
            {
                Ok(r) => {
                    let o = self.inner.unwrap_one(key, r)?;
                    self.inner.wait_for(&key.resource, o.revision).await;
                    return Ok(o);
                }
                Err(e) => match map_err(Some(key), e) {
                    StoreError::Conflict { .. } if pre.resource_version.is_none() => continue,
                    other => return Err(other),
                },
            }
        }
        Err(conflict(key, "the object kept changing; try again"))
    }

    async fn delete(&self, key: &Key, pre: &Preconditions) -> Result<Object> {
        self.inner.closed()?;
        let api = self.inner.api(&key.resource, Some(&key.namespace))?;
        for _ in 0..RETRIES {
            let (host_uid, host_rv, current) = self.inner.current(key).await?;
            check(key, &current, pre)?;
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(host_uid.clone()),
                    resource_version: Some(host_rv),
                }),
                ..Default::default()
            };
            match api.delete(&key.name, &dp).await {
                Ok(_) => {
                    let cache = self.inner.cache(&key.resource)?;
                    return Ok(match cache.tombstone(&host_uid, CACHE_WAIT).await {
                        Some(o) => o,
                        None => {
                            tracing::warn!(%key, "the kube:// cache has not seen a delete after 10 s");
                            current
                        }
                    });
                }
                Err(e) => match map_err(Some(key), e) {
                    StoreError::Conflict { .. } if pre.resource_version.is_none() => continue,
                    other => return Err(other),
                },
            }
        }
        Err(conflict(key, "the object kept changing; try again"))
    }

    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream> {
        self.inner.closed()?;
        let api = self.inner.api(&req.resource, req.namespace.as_deref())?;
        let (labels, fields) = self.inner.selectors(&req.labels, &req.fields);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let inner = self.inner.clone();
        let req = req.clone();
        tokio::spawn(async move {
            // A deadline bookmark must carry the host's progress (writes this watch does not
            // select), which only the host knows: its first watch ends 2 s after that bookmark
            // is due, so the host's cacher sends its own deadline bookmark then (kube-apiserver
            // sends one 2 s before a watch's deadline). Ours follows 1 s later only when the
            // host's did not come.
            let first_timeout = req.bookmark_after.filter(|_| req.bookmarks).map(|d| {
                u32::try_from(d.as_secs() + 2)
                    .unwrap_or(WATCH_TIMEOUT)
                    .min(WATCH_TIMEOUT)
            });
            let mut wp = WatchParams {
                label_selector: labels,
                field_selector: fields,
                timeout: Some(first_timeout.unwrap_or(WATCH_TIMEOUT)),
                bookmarks: true,
                ..Default::default()
            };
            let mut from = req.from;
            let due = req
                .bookmark_after
                .filter(|_| req.bookmarks)
                .map(|d| tokio::time::Instant::now() + d);
            let deadline = due.map(|d| d + Duration::from_secs(1));
            let mut bookmarked = deadline.is_none();
            loop {
                let started = tokio::time::Instant::now();
                let from_rv = from.to_string();
                let stream = tokio::select! {
                    s = api.watch(&wp, &from_rv) => s,
                    () = tx.closed() => return,
                };
                let mut stream = match stream {
                    Ok(s) => s.boxed(),
                    Err(e) => {
                        let _ = tx.send(WatchItem::Error(map_err(None, e))).await;
                        return;
                    }
                };
                loop {
                    let next = tokio::select! {
                        n = stream.next() => n,
                        () = tx.closed() => return,
                        () = sleep_until(deadline), if !bookmarked => {
                            bookmarked = true;
                            if tx.send(WatchItem::Bookmark(from)).await.is_err() { return; }
                            continue;
                        }
                    };
                    let item = match next {
                        None => break,
                        Some(Ok(ev)) => match watch_item(&inner, &req, ev) {
                            Ok(Some(item)) => item,
                            Ok(None) => continue,
                            Err(e) => WatchItem::Error(e),
                        },
                        Some(Err(e)) => WatchItem::Error(map_err(None, e)),
                    };
                    match &item {
                        WatchItem::Event { revision, .. } => from = *revision,
                        WatchItem::Bookmark(r) => {
                            from = *r;
                            if !req.bookmarks {
                                continue;
                            }
                            // (The host's bookmark timers are coarse: up to a second early.)
                            if due.is_some_and(|d| {
                                tokio::time::Instant::now() + Duration::from_secs(1) >= d
                            }) {
                                bookmarked = true;
                            }
                        }
                        WatchItem::Error(_) => {
                            let _ = tx.send(item).await;
                            return;
                        }
                    }
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                wp.timeout = Some(WATCH_TIMEOUT);
                // The host ended the watch (its timeout): renew it from the last revision,
                // but not more than once a second.
                if started.elapsed() < Duration::from_secs(1) {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.closed()?;
        let plural = self
            .inner
            .kinds
            .keys()
            .next()
            .ok_or_else(|| StoreError::Internal("no kinds".into()))?;
        let list = self
            .inner
            .api(plural, None)?
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| map_err(None, e))?;
        parse_rv(list.metadata.resource_version.as_deref())
    }

    async fn ping(&self) -> Result<()> {
        self.current_revision().await.map(|_| ())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn conflict(key: &Key, message: &str) -> StoreError {
    StoreError::Conflict {
        key: key.clone(),
        message: message.to_owned(),
    }
}

/// The uid and resourceVersion preconditions against the public object.
fn check(key: &Key, current: &Object, pre: &Preconditions) -> Result<()> {
    if let Some(uid) = &pre.uid
        && *uid != current.uid
    {
        return Err(conflict(
            key,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                current.uid
            ),
        ));
    }
    if let Some(rv) = pre.resource_version
        && rv != current.revision
    {
        return Err(conflict(
            key,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                current.revision
            ),
        ));
    }
    Ok(())
}

/// One host watch event as this store's item; `None` for records outside the prefix.
fn watch_item(
    inner: &Inner,
    req: &WatchRequest,
    ev: WatchEvent<DynamicObject>,
) -> Result<Option<WatchItem>> {
    let (kind, record) = match ev {
        WatchEvent::Added(o) => (crate::EventKind::Added, o),
        WatchEvent::Modified(o) => (crate::EventKind::Modified, o),
        WatchEvent::Deleted(o) => (crate::EventKind::Deleted, o),
        WatchEvent::Bookmark(b) => {
            return Ok(Some(WatchItem::Bookmark(parse_rv(Some(
                &b.metadata.resource_version,
            ))?)));
        }
        WatchEvent::Error(s) => return Err(status_err(None, s.code, &s.reason, &s.message)),
    };
    Ok(inner
        .unwrap(&req.resource, record)?
        .map(|o| WatchItem::Event {
            kind,
            revision: o.revision,
            object: o.data,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_kubeconfig_and_a_prefix() {
        assert_eq!(Location::parse("kube://").unwrap(), Location::default());
        let l = Location::parse("kube://?kubeconfig=/tmp/a%20b&namespace-prefix=kfp-").unwrap();
        assert_eq!(l.kubeconfig.as_deref(), Some("/tmp/a b"));
        assert_eq!(l.namespace_prefix, "kfp-");
        assert!(Location::parse("kube://host").is_err());
        assert!(Location::parse("kube://?bogus=1").is_err());
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn hashed_labels_are_valid_label_values() {
        let h = hash_label(&"x".repeat(300));
        assert_eq!(h.len(), 40);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(hash_label("a"), hash_label("b"));
    }

    #[test]
    fn host_errors_map_to_store_errors() {
        let k = Key::new("r", "ns", "n");
        assert!(matches!(
            status_err(Some(&k), 404, "NotFound", ""),
            StoreError::NotFound(_)
        ));
        assert!(matches!(
            status_err(Some(&k), 409, "AlreadyExists", ""),
            StoreError::AlreadyExists(_)
        ));
        assert!(matches!(
            status_err(Some(&k), 409, "Conflict", ""),
            StoreError::Conflict { .. }
        ));
        assert_eq!(
            status_err(None, 410, "Expired", "too old resource version: 5 (10)"),
            StoreError::Gone {
                requested: Revision(5),
                compacted: Revision(10)
            }
        );
        assert_eq!(
            status_err(
                None,
                504,
                "Timeout",
                "Too large resource version: 99, current: 7"
            ),
            StoreError::TooLarge {
                requested: Revision(99),
                current: Revision(7)
            }
        );
        assert!(matches!(
            status_err(None, 503, "", ""),
            StoreError::Unavailable(_)
        ));
    }
}
