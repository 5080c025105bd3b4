//! The registry: the write semantics of every resource, for both views (the Kubernetes routes
//! and the KFP REST routes call the same functions). It owns, in one place:
//!
//! - create, update (PUT), patch (JSON, merge, server-side apply) and the status subresource,
//!   with the read-modify-write retry of kube-apiserver's `GuaranteedUpdate` ([`Registry::modify`]):
//!   a write that lost an optimistic-concurrency race it did not ask for is retried;
//! - the generic update rules: a PUT needs `metadata.resourceVersion` (422), a `metadata.uid`
//!   that is not the object's is a failed precondition (409), no new finalizers once
//!   `deletionTimestamp` is set (422), a write that changes nothing writes nothing;
//! - field management ([`managed`]);
//! - dry run;
//! - delete with preconditions, finalizers and `deletionTimestamp`, and dependents as
//!   kube-apiserver plus its garbage collector end up: Background (dependents go once the owner
//!   is really gone), Foreground (the owner shows `foregroundDeletion` until its dependents are
//!   gone), Orphan (dependents lose their owner reference and owner label).
//!
//! It knows no HTTP: requests arrive as decoded values and options, answers are stored bytes
//! and [`RegistryError`]. Rules of a kind come from its `Strategy` in the resource table.

pub mod error;
pub mod managed;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::decode::FieldValidation;
use kfp_apiservice::resource::{Dependent, ParentState, Resource, create_context};
use kfp_apiservice::strategy::CreateContext;
use kfp_apiservice::{FieldError, FieldPath};
use kfp_storage::{
    Key, LabelSelector, ListPage, ListRequest, Object, Preconditions, ReadAt, Revision, Store,
    StoreError, WatchRequest, WatchStream,
};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use error::RegistryError;
use managed::Scope;

/// `Result` with [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How often a write retries after losing a race it did not ask for (no resourceVersion in the
/// request). High enough that ordinary contention never shows; the request timeout bounds it too.
const MAX_ATTEMPTS: u32 = 256;

/// A new object as it will be stored: field managers recorded, the kind's create rules applied.
fn prepare_new(
    res: &'static Resource,
    ns: &str,
    body: Value,
    opts: &WriteOptions,
    state: ParentState<'_>,
    applied: Option<&Value>,
    ctx: &CreateContext,
) -> Result<kfp_apiservice::resource::Prepared> {
    let scope = Scope::Main {
        ignore_status: res.status_subresource,
    };
    let managers = match applied {
        Some(config) => managed::apply(&res.fields, None, config, &opts.manager, scope, opts.force)
            .map(|a| a.managers)
            .unwrap_or_default(),
        None => managed::update(&res.fields, None, &body, &opts.manager, scope),
    };
    let mut prepared = res
        .strategy
        .prepare_create(body, ns, ctx, state, opts.field_validation)
        .map_err(RegistryError::from_strategy)?;
    managed::store(&mut prepared.object, &managers);
    Ok(prepared)
}

/// kube-apiserver's limit on JSON patch operations.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// kube-apiserver's limit on bytes a JSON patch may copy (`JSONPatchMaxCopyBytes`).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 << 20;

/// The finalizer of an owner in foreground deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Validate and prepare, but store nothing.
    pub dry_run: bool,
    /// The field manager (already defaulted by the view).
    pub manager: String,
    /// How unknown fields are handled.
    pub field_validation: FieldValidation,
    /// Server-side apply only: take over conflicting fields.
    pub force: bool,
}

/// A patch, decoded.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 6902.
    Json(json_patch::Patch),
    /// RFC 7386.
    Merge(Value),
    /// Server-side apply: the applied configuration.
    Apply(Value),
}

/// What deleting an owner does to its dependents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now, its dependents after it.
    #[default]
    Background,
    /// The dependents go first; the owner carries `foregroundDeletion` meanwhile.
    Foreground,
    /// The dependents stay, without their owner reference.
    Orphan,
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// uid / resourceVersion the object must have.
    pub preconditions: Preconditions,
    /// What happens to dependents.
    pub propagation: Propagation,
    /// Check, but delete nothing.
    pub dry_run: bool,
}

/// A successful write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Bytes,
    /// Whether it was created.
    pub created: bool,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

/// A successful delete.
#[derive(Debug)]
pub struct Deleted {
    /// The object's last state (with `deletionTimestamp` when it is not gone yet).
    pub object: Bytes,
    /// Whether it is gone (false: finalizers keep it, or a dry run).
    pub gone: bool,
}

/// The registry over a store.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

/// What a PUT body says about the object's identity, decoded before anything reads it.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    metadata: Option<ObjectMeta>,
}

/// A parent lookup.
enum Parent {
    /// The kind has no parent, or the object names none.
    NotNeeded,
    /// The parent, as stored.
    Found(Value),
    /// Named but absent.
    Missing(String),
}

/// What a write does to an existing object.
enum Change<'a> {
    /// PUT: the body, its resourceVersion and uid.
    Replace {
        body: &'a Value,
        revision: Revision,
        uid: Option<String>,
    },
    /// PATCH.
    Patch(&'a Patch),
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn json(o: &Object, resource: &'static str) -> Result<Value> {
    o.json()
        .map_err(|e| RegistryError::store(e, resource, &o.key.name))
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn meta_mut(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.get_mut("metadata").and_then(Value::as_object_mut)
}

fn set_finalizers(v: &mut Value, list: &[String]) {
    if let Some(meta) = meta_mut(v) {
        if list.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert(
                "finalizers".into(),
                Value::Array(list.iter().cloned().map(Value::String).collect()),
            );
        }
    }
}

fn mark_deleting(v: &mut Value) {
    if let Some(meta) = meta_mut(v) {
        let now = Timestamp::now();
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        meta.insert("deletionTimestamp".into(), Value::String(now.to_string()));
        meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
    }
}

/// Sets `metadata.name` on an object body (adding `metadata` when absent).
fn set_name(body: &mut Value, name: &str) -> Result<()> {
    let Some(root) = body.as_object_mut() else {
        return Err(RegistryError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return Err(RegistryError::BadRequest(
            "metadata must be an object".into(),
        ));
    };
    meta.insert("name".into(), Value::String(name.to_owned()));
    Ok(())
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn modified_message() -> String {
    "the object has been modified; please apply your changes to the latest version and try again"
        .into()
}

/// Applies a JSON patch within kube-apiserver's bounds: at most
/// [`MAX_JSON_PATCH_OPERATIONS`] operations and [`MAX_JSON_PATCH_COPY_BYTES`] copied in total
/// (each `copy` can double the document otherwise).
pub fn bounded_json_patch(doc: &Value, patch: &json_patch::Patch) -> Result<Value> {
    if patch.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(RegistryError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            patch.0.len()
        )));
    }
    let mut copied = 0usize;
    let mut out = doc.clone();
    for op in &patch.0 {
        if let json_patch::PatchOperation::Copy(c) = op
            && let Some(from) = out.pointer(c.from.as_str())
        {
            copied += serde_json::to_vec(from).map(|b| b.len()).unwrap_or(0);
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(RegistryError::TooLarge(format!(
                    "the JSON patch copies more than {MAX_JSON_PATCH_COPY_BYTES} bytes"
                )));
            }
        }
        json_patch::patch(&mut out, std::slice::from_ref(op))
            .map_err(|e| RegistryError::PatchFailed(e.to_string()))?;
    }
    Ok(out)
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Registry { store }
    }

    /// The store (reads that need no rules: watch, current revision).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(&self, res: &'static Resource, ns: &str, name: &str) -> Result<Object> {
        self.store
            .get(&Key::new(res.plural, ns, name))
            .await
            .map_err(|e| RegistryError::store(e, res.plural, name))
    }

    /// Reads a page.
    pub async fn list(&self, res: &'static Resource, req: &ListRequest) -> Result<ListPage> {
        self.store
            .list(req)
            .await
            .map_err(|e| RegistryError::store(e, res.plural, ""))
    }

    /// Watches.
    pub async fn watch(&self, res: &'static Resource, req: &WatchRequest) -> Result<WatchStream> {
        self.store
            .watch(req)
            .await
            .map_err(|e| RegistryError::store(e, res.plural, ""))
    }

    async fn lookup_parent(
        &self,
        res: &'static Resource,
        ns: &str,
        body: &Value,
    ) -> Result<Parent> {
        let (Some(parent_res), Some(name)) =
            (res.strategy.parent_resource(), res.strategy.parent(body))
        else {
            return Ok(Parent::NotNeeded);
        };
        let parent = Resource::by_plural(parent_res).unwrap_or(res);
        match self.store.get(&Key::new(parent_res, ns, &name)).await {
            Ok(o) => Ok(Parent::Found(json(&o, parent.plural)?)),
            Err(StoreError::NotFound(_)) => Ok(Parent::Missing(name)),
            Err(e) => Err(RegistryError::store(e, parent.plural, &name)),
        }
    }

    /// Creates an object from a request body.
    pub async fn create(
        &self,
        res: &'static Resource,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        self.create_object(res, ns, body, opts, None).await
    }

    async fn create_object(
        &self,
        res: &'static Resource,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
        applied: Option<&Value>,
    ) -> Result<Written> {
        let mut warnings = Vec::new();
        let parent = self.lookup_parent(res, ns, &body).await?;
        let state = match &parent {
            Parent::Found(p) if deleting(p) => {
                let name = p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Err(RegistryError::Forbidden {
                    resource: res.plural,
                    name: String::new(),
                    message: format!(
                        "unable to create a new {} because its owner {name:?} is being deleted",
                        res.kind
                    ),
                });
            }
            Parent::Found(p) => ParentState::Found(p),
            // A dry run (Flux and Argo CD dry-run every object before creating any) does not
            // need the parent yet; the real write does.
            Parent::Missing(name) if opts.dry_run => {
                warnings.push(format!(
                    "the parent {name:?} does not exist yet; the object can only be created once it does"
                ));
                ParentState::Unknown
            }
            Parent::Missing(_) => ParentState::Missing,
            Parent::NotNeeded => ParentState::Unknown,
        };
        let mut prepared = prepare_new(res, ns, body, opts, state, applied, &create_context())?;
        warnings.append(&mut prepared.warnings);
        if opts.dry_run {
            return Ok(Written {
                object: to_bytes(&prepared.object),
                created: true,
                warnings,
            });
        }
        let key = Key::new(res.plural, ns, &prepared.name);
        let stored = self
            .store
            .create(&key, prepared.object)
            .await
            .map_err(|e| RegistryError::store(e, res.plural, &prepared.name))?;
        if let Parent::Found(p) = &parent {
            self.recheck_parent(res, ns, p, &stored).await?;
        }
        Ok(Written {
            object: stored.data,
            created: true,
            warnings,
        })
    }

    /// Creates an object that keeps the identity it had elsewhere (a migration): the uid and
    /// creation time of `ctx`, every other rule as a create (decoding, defaults, validation,
    /// owner reference and labels from the parent). Its managedFields are `managed_fields` (the
    /// source's, kept as they were, so field ownership moves with the object) when given and
    /// valid, else an Update by `opts.manager`. A dependent's parent must exist and not be
    /// deleting. Returns what was stored.
    pub async fn create_preserving(
        &self,
        res: &'static Resource,
        ns: &str,
        body: Value,
        ctx: &CreateContext,
        opts: &WriteOptions,
        managed_fields: Option<&Value>,
    ) -> Result<Object> {
        let parent = self.lookup_parent(res, ns, &body).await?;
        let state = match &parent {
            Parent::Found(p) if deleting(p) => {
                return Err(RegistryError::Forbidden {
                    resource: res.plural,
                    name: String::new(),
                    message: format!(
                        "unable to create a new {} because its owner is being deleted",
                        res.kind
                    ),
                });
            }
            Parent::Found(p) => ParentState::Found(p),
            Parent::Missing(_) => ParentState::Missing,
            Parent::NotNeeded => ParentState::Unknown,
        };
        let mut prepared = prepare_new(res, ns, body, opts, state, None, ctx)?;
        if let Some(kept) = managed_fields.and_then(|mf| {
            managed::Managers::decode(&serde_json::json!({"metadata": {"managedFields": mf}}))
        }) {
            managed::store(&mut prepared.object, &kept);
        }
        if opts.dry_run {
            return Ok(Object {
                key: Key::new(res.plural, ns, &prepared.name),
                uid: ctx.uid.clone(),
                revision: Default::default(),
                data: to_bytes(&prepared.object),
            });
        }
        let key = Key::new(res.plural, ns, &prepared.name);
        self.store
            .create(&key, prepared.object)
            .await
            .map_err(|e| RegistryError::store(e, res.plural, &prepared.name))
    }

    /// Creates an object and one dependent of it (a Pipeline and its first PipelineVersion) in
    /// one store transaction: both or neither, at consecutive revisions, parent first. The
    /// dependent is prepared against the parent as it will be stored (uid, owner reference,
    /// labels), with the same rules as a create of its own; it must name that parent.
    pub async fn create_with_dependent(
        &self,
        res: &'static Resource,
        ns: &str,
        body: Value,
        dependent: &'static Resource,
        dependent_body: Value,
        opts: &WriteOptions,
    ) -> Result<(Written, Written)> {
        if res.strategy.parent_resource().is_some()
            || dependent.strategy.parent_resource() != Some(res.plural)
        {
            return Err(RegistryError::BadRequest(format!(
                "{} cannot be created together with {}",
                dependent.kind, res.kind
            )));
        }
        let mut parent = prepare_new(
            res,
            ns,
            body,
            opts,
            ParentState::Unknown,
            None,
            &create_context(),
        )?;
        let names = dependent.strategy.parent(&dependent_body);
        if names.as_deref() != Some(parent.name.as_str()) {
            return Err(RegistryError::BadRequest(format!(
                "the {} must name the {} {:?} it is created with",
                dependent.kind, res.kind, parent.name
            )));
        }
        let mut child = prepare_new(
            dependent,
            ns,
            dependent_body,
            opts,
            ParentState::Found(&parent.object),
            None,
            &create_context(),
        )?;
        let warnings = |p: &mut kfp_apiservice::resource::Prepared| std::mem::take(&mut p.warnings);
        let (pw, cw) = (warnings(&mut parent), warnings(&mut child));
        if opts.dry_run {
            return Ok((
                Written {
                    object: to_bytes(&parent.object),
                    created: true,
                    warnings: pw,
                },
                Written {
                    object: to_bytes(&child.object),
                    created: true,
                    warnings: cw,
                },
            ));
        }
        let parent_key = Key::new(res.plural, ns, &parent.name);
        let child_key = Key::new(dependent.plural, ns, &child.name);
        let mut stored = self
            .store
            .create_all(vec![(parent_key, parent.object), (child_key, child.object)])
            .await
            .map_err(|e| match &e {
                StoreError::AlreadyExists(k) if k.resource == dependent.plural => {
                    RegistryError::store(e, dependent.plural, &child.name)
                }
                _ => RegistryError::store(e, res.plural, &parent.name),
            })?
            .into_iter();
        let (Some(p), Some(c)) = (stored.next(), stored.next()) else {
            return Err(RegistryError::store(
                StoreError::Internal("a batch create returned fewer objects".into()),
                res.plural,
                &parent.name,
            ));
        };
        Ok((
            Written {
                object: p.data,
                created: true,
                warnings: pw,
            },
            Written {
                object: c.data,
                created: true,
                warnings: cw,
            },
        ))
    }

    /// A dependent created while its parent was being deleted must not outlive it: the
    /// parent's cascade lists dependents after the parent is gone, so a create that committed
    /// after that list sees the parent gone here, takes its own object back and is refused.
    /// (A crash in between leaves an orphan for [`Registry::collect_orphans`].)
    async fn recheck_parent(
        &self,
        res: &'static Resource,
        ns: &str,
        parent: &Value,
        created: &Object,
    ) -> Result<()> {
        let Some(parent_res) = res.strategy.parent_resource() else {
            return Ok(());
        };
        let name = parent
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let uid = parent.pointer("/metadata/uid").and_then(Value::as_str);
        let alive = match self.store.get(&Key::new(parent_res, ns, name)).await {
            Ok(now) => Some(now.uid.as_str()) == uid && !deleting(&json(&now, parent_res)?),
            Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(RegistryError::store(e, parent_res, name)),
        };
        if alive {
            return Ok(());
        }
        let pre = Preconditions {
            uid: Some(created.uid.clone()),
            resource_version: None,
        };
        match self.store.delete(&created.key, &pre).await {
            Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(RegistryError::store(e, res.plural, &created.key.name)),
        }
        Err(RegistryError::Forbidden {
            resource: res.plural,
            name: String::new(),
            message: format!(
                "unable to create a new {} because its owner {name:?} is being deleted",
                res.kind
            ),
        })
    }

    /// Runs [`Registry::collect_orphans`] now and then every `interval`, until the task is
    /// aborted; failures are logged and retried at the next round.
    pub fn spawn_collector(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match registry.collect_orphans().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(collected = n, "deleted dependents whose owner is gone")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "collecting orphaned dependents failed; will retry")
                    }
                }
            }
        })
    }

    /// Deletes dependents whose owner no longer exists (by the owner uid in their owner label),
    /// as kube's garbage collector does: what a crash between an owner's delete and its
    /// cascade, or any race the request path missed, leaves behind. Each dependent is deleted
    /// as [`Registry::delete`] does (its own finalizers honoured). Returns how many went.
    ///
    /// The store names the owner uids that are gone from its label index; only their
    /// dependents are read. (Reading every dependent each sweep read every stored object, large
    /// pipeline specs included, every minute.) A uid, once gone, never comes back: uids are the
    /// server's.
    pub async fn collect_orphans(&self) -> Result<usize> {
        const BATCH: usize = 100;
        let mut collected = 0;
        for owner in kfp_apiservice::resource::RESOURCES {
            for dep in owner.dependents {
                let Some(dep_res) = Resource::by_plural(dep.resource) else {
                    continue;
                };
                let mut after: Option<String> = None;
                loop {
                    let gone = self
                        .store
                        .dangling_label_values(
                            dep.resource,
                            dep.owner_label,
                            owner.plural,
                            after.as_deref(),
                            BATCH,
                        )
                        .await
                        .map_err(|e| RegistryError::store(e, dep.resource, ""))?;
                    for uid in &gone {
                        collected += self.collect_orphans_of(dep_res, dep, uid).await?;
                    }
                    if gone.len() < BATCH {
                        break;
                    }
                    after = gone.last().cloned();
                }
            }
        }
        Ok(collected)
    }

    /// Deletes every `res`, in any namespace, whose `label` is `owner_uid` (an owner that is
    /// gone), a page at a time.
    async fn collect_orphans_of(
        &self,
        res: &'static Resource,
        dep: &'static Dependent,
        owner_uid: &str,
    ) -> Result<usize> {
        let labels = LabelSelector(vec![kfp_storage::selector::Requirement::Equals(
            dep.owner_label.to_owned(),
            owner_uid.to_owned(),
        )]);
        let req = ListRequest {
            resource: res.plural.to_owned(),
            labels,
            ..Default::default()
        };
        let mut pages = DependentPages::new(vec![(res, dep, req)]);
        let mut collected = 0;
        while let Some((_, _, items)) = pages.next(self).await? {
            for o in &items {
                if self.delete_dependent(res, o).await? {
                    collected += 1;
                }
            }
        }
        Ok(collected)
    }

    /// Replaces an object (PUT) or its status.
    pub async fn update(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        body: Value,
        opts: &WriteOptions,
        status: bool,
    ) -> Result<Written> {
        if !body.is_object() {
            return Err(RegistryError::BadRequest(format!(
                "the body must be a JSON object of kind {}",
                res.kind
            )));
        }
        let env = Envelope::deserialize(&body)
            .map_err(|e| RegistryError::BadRequest(format!("error decoding metadata: {e}")))?;
        let meta = env.metadata.unwrap_or_default();
        if let Some(n) = meta.name.as_deref().filter(|n| !n.is_empty())
            && n != name
        {
            return Err(RegistryError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let revision = match meta.resource_version.as_deref().filter(|s| !s.is_empty()) {
            None => {
                return Err(RegistryError::Invalid {
                    kind: res.kind,
                    name: name.to_owned(),
                    errors: vec![FieldError::invalid(
                        FieldPath::new("metadata").child("resourceVersion"),
                        "0x0: must be specified for an update",
                    )],
                });
            }
            Some(s) => Revision::parse(s).ok_or_else(|| {
                RegistryError::BadRequest(format!("invalid resourceVersion {s:?}"))
            })?,
        };
        let change = Change::Replace {
            body: &body,
            revision,
            uid: meta.uid.filter(|u| !u.is_empty()),
        };
        self.modify(res, &Key::new(res.plural, ns, name), change, opts, status)
            .await
    }

    /// Patches an object or its status; an apply creates it when absent.
    pub async fn patch(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        patch: &Patch,
        opts: &WriteOptions,
        status: bool,
    ) -> Result<Written> {
        if let Patch::Apply(config) = patch {
            check_identity(res, name, config)?;
        }
        self.modify(
            res,
            &Key::new(res.plural, ns, name),
            Change::Patch(patch),
            opts,
            status,
        )
        .await
    }

    /// The one read-modify-write loop (kube-apiserver's `GuaranteedUpdate`).
    async fn modify(
        &self,
        res: &'static Resource,
        key: &Key,
        change: Change<'_>,
        opts: &WriteOptions,
        status: bool,
    ) -> Result<Written> {
        let name = key.name.as_str();
        let scope = if status {
            Scope::Status
        } else {
            Scope::Main {
                ignore_status: res.status_subresource,
            }
        };
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let old = match self.store.get(key).await {
                Ok(o) => o,
                Err(StoreError::NotFound(_)) => match &change {
                    Change::Patch(Patch::Apply(config)) if !status => {
                        let mut body = config.clone();
                        set_name(&mut body, name)?;
                        match self
                            .create_object(res, &key.namespace, body, opts, Some(config))
                            .await
                        {
                            Err(RegistryError::AlreadyExists { .. }) => continue,
                            other => return other,
                        }
                    }
                    _ => {
                        return Err(RegistryError::NotFound {
                            resource: res.plural,
                            name: name.to_owned(),
                        });
                    }
                },
                Err(e) => return Err(RegistryError::store(e, res.plural, name)),
            };
            let live = json(&old, res.plural)?;
            let conflict = |message: String| RegistryError::Conflict {
                resource: res.plural,
                name: name.to_owned(),
                message,
            };
            // What the request makes of the live object, and who then owns what.
            let (mut candidate, managers, preconditioned) = match &change {
                Change::Replace {
                    body,
                    revision,
                    uid,
                } => {
                    if let Some(u) = uid
                        && *u != old.uid
                    {
                        return Err(conflict(format!(
                            "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                            old.uid
                        )));
                    }
                    if *revision != old.revision {
                        return Err(conflict(modified_message()));
                    }
                    let mut b = (*body).clone();
                    set_name(&mut b, name)?;
                    let m = managed::update(&res.fields, Some(&live), &b, &opts.manager, scope);
                    (b, m, true)
                }
                Change::Patch(p) => {
                    let doc =
                        match p {
                            Patch::Json(jp) => bounded_json_patch(&live, jp)?,
                            Patch::Merge(mp) => {
                                let mut doc = live.clone();
                                json_patch::merge(&mut doc, mp);
                                doc
                            }
                            Patch::Apply(config) => {
                                let applied = managed::apply(
                                    &res.fields,
                                    Some(&live),
                                    config,
                                    &opts.manager,
                                    scope,
                                    opts.force,
                                )
                                .map_err(|conflicts| RegistryError::ApplyConflict {
                                    resource: res.plural,
                                    name: name.to_owned(),
                                    conflicts,
                                })?;
                                let mut doc = applied.object;
                                managed::store(&mut doc, &applied.managers);
                                doc
                            }
                        };
                    if !doc.is_object() {
                        return Err(RegistryError::BadRequest(
                            "the patched object is not a JSON object".into(),
                        ));
                    }
                    // A patch that sets resourceVersion makes it a precondition.
                    let wanted = rv_of(&doc)
                        .filter(|rv| Some(*rv) != rv_of(&live))
                        .map(Revision::parse);
                    if let Some(w) = wanted
                        && w != Some(old.revision)
                    {
                        return Err(conflict(modified_message()));
                    }
                    if doc.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
                        return Err(RegistryError::BadRequest(
                            "metadata.name: Invalid value: the name of a patched object cannot change"
                                .into(),
                        ));
                    }
                    let m = match p {
                        Patch::Apply(_) => managed::Managers::decode(&doc).unwrap_or_default(),
                        _ => managed::update(&res.fields, Some(&live), &doc, &opts.manager, scope),
                    };
                    (doc, m, wanted.is_some())
                }
            };
            if let Some(meta) = meta_mut(&mut candidate) {
                meta.remove("managedFields");
            }
            let parent = if status {
                Parent::NotNeeded
            } else {
                self.lookup_parent(res, &key.namespace, &candidate).await?
            };
            let state = match &parent {
                Parent::Found(p) => ParentState::Found(p),
                _ => ParentState::Unknown,
            };
            let mut prepared = res
                .strategy
                .prepare_update(
                    candidate,
                    live.clone(),
                    &key.namespace,
                    status,
                    state,
                    opts.field_validation,
                )
                .map_err(RegistryError::from_strategy)?;
            if deleting(&live) {
                let before = finalizers(&live);
                let added: Vec<String> = finalizers(&prepared.object)
                    .into_iter()
                    .filter(|f| !before.contains(f))
                    .collect();
                if !added.is_empty() {
                    return Err(RegistryError::Invalid {
                        kind: res.kind,
                        name: name.to_owned(),
                        errors: vec![FieldError::forbidden(
                            FieldPath::new("metadata").child("finalizers"),
                            format!(
                                "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                            ),
                        )],
                    });
                }
            }
            managed::store(&mut prepared.object, &managers);
            if let (Some(meta), Some(rv)) = (meta_mut(&mut prepared.object), rv_of(&live)) {
                meta.insert("resourceVersion".into(), Value::String(rv.to_owned()));
            }
            if prepared.object == live {
                // Nothing changed: no write, no new resourceVersion, no event.
                return Ok(Written {
                    object: old.data,
                    created: false,
                    warnings: prepared.warnings,
                });
            }
            if opts.dry_run {
                return Ok(Written {
                    object: to_bytes(&prepared.object),
                    created: false,
                    warnings: prepared.warnings,
                });
            }
            let pre = Preconditions {
                uid: Some(old.uid.clone()),
                resource_version: Some(old.revision),
            };
            let finish = deleting(&prepared.object) && finalizers(&prepared.object).is_empty();
            let result = if finish {
                // The last finalizer is gone: the object goes, and its dependents after it.
                self.store.delete(key, &pre).await
            } else {
                self.store.update(key, prepared.object, &pre).await
            };
            match result {
                Ok(o) => {
                    if finish {
                        self.collect_dependents(res, &key.namespace, &old.uid)
                            .await?;
                    }
                    return Ok(Written {
                        object: o.data,
                        created: false,
                        warnings: prepared.warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) if !preconditioned => continue,
                Err(StoreError::Conflict { .. }) => return Err(conflict(modified_message())),
                Err(e) => return Err(RegistryError::store(e, res.plural, name)),
            }
        }
        Err(RegistryError::Conflict {
            resource: res.plural,
            name: name.to_owned(),
            message: "too many concurrent writers; try again".into(),
        })
    }

    /// Deletes an object as `opts` says.
    pub async fn delete(
        &self,
        res: &'static Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted> {
        let key = Key::new(res.plural, ns, name);
        let cascades = !res.dependents.is_empty();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let old = self
                .store
                .get(&key)
                .await
                .map_err(|e| RegistryError::store(e, res.plural, name))?;
            check_preconditions(res, name, &opts.preconditions, &old)?;
            if opts.dry_run {
                return Ok(Deleted {
                    object: old.data,
                    gone: false,
                });
            }
            let mut live = json(&old, res.plural)?;
            let pre = Preconditions {
                uid: Some(old.uid.clone()),
                resource_version: Some(old.revision),
            };
            let mut fins = finalizers(&live);
            if cascades && opts.propagation == Propagation::Orphan {
                self.orphan_dependents(res, ns, &old.uid).await?;
            }
            if cascades && opts.propagation == Propagation::Foreground {
                // Mark the owner (deletionTimestamp + foregroundDeletion), take the dependents,
                // then drop the finalizer — the object goes unless other finalizers keep it.
                if !fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
                    fins.push(FOREGROUND_FINALIZER.to_owned());
                }
                if !deleting(&live) {
                    mark_deleting(&mut live);
                }
                set_finalizers(&mut live, &fins);
                let marked = match self.store.update(&key, live, &pre).await {
                    Ok(o) => o,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(RegistryError::store(e, res.plural, name)),
                };
                self.collect_dependents(res, ns, &old.uid).await?;
                self.remove_finalizer(res, &key, &old.uid, FOREGROUND_FINALIZER)
                    .await?;
                return Ok(Deleted {
                    object: marked.data,
                    gone: false,
                });
            }
            if !fins.is_empty() {
                if deleting(&live) {
                    return Ok(Deleted {
                        object: old.data,
                        gone: false,
                    });
                }
                mark_deleting(&mut live);
                return match self.store.update(&key, live, &pre).await {
                    Ok(o) => Ok(Deleted {
                        object: o.data,
                        gone: false,
                    }),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => Err(RegistryError::store(e, res.plural, name)),
                };
            }
            match self.store.delete(&key, &pre).await {
                Ok(o) => {
                    if cascades && opts.propagation != Propagation::Orphan {
                        self.collect_dependents(res, ns, &old.uid).await?;
                    }
                    return Ok(Deleted {
                        object: o.data,
                        gone: true,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(RegistryError::store(e, res.plural, name)),
            }
        }
        Err(RegistryError::Conflict {
            resource: res.plural,
            name: name.to_owned(),
            message: "too many concurrent writers; try again".into(),
        })
    }

    /// Deletes every object `req` selects (at the current state), each as [`Registry::delete`].
    pub async fn delete_collection(
        &self,
        res: &'static Resource,
        req: &ListRequest,
        opts: &DeleteOptions,
    ) -> Result<(Vec<Bytes>, Revision)> {
        let mut req = req.clone();
        req.limit = None;
        req.continue_token = None;
        req.at = ReadAt::Latest;
        let page = self.list(res, &req).await?;
        let mut out = Vec::with_capacity(page.items.len());
        for o in page.items {
            let one = DeleteOptions {
                preconditions: opts.preconditions.clone(),
                ..opts.clone()
            };
            match self.delete(res, &o.key.namespace, &o.key.name, &one).await {
                Ok(d) => out.push(d.object),
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let rev = self
            .store
            .current_revision()
            .await
            .map_err(|e| RegistryError::store(e, res.plural, ""))?;
        Ok((out, rev))
    }

    /// The objects that name the owner `uid` (of `res`) as their owner, with their resource.
    /// The dependents of the owner `uid` of kind `res` in `ns`, walked a page at a time.
    fn dependents(res: &'static Resource, ns: &str, uid: &str) -> Result<DependentPages> {
        let mut walks = Vec::new();
        for dep in res.dependents {
            let Some(dep_res) = Resource::by_plural(dep.resource) else {
                continue;
            };
            let labels = LabelSelector::parse(&format!("{}={uid}", dep.owner_label))
                .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
            walks.push((
                dep_res,
                dep,
                ListRequest {
                    resource: dep.resource.to_owned(),
                    namespace: Some(ns.to_owned()),
                    labels,
                    ..Default::default()
                },
            ));
        }
        Ok(DependentPages::new(walks))
    }

    /// Deletes the dependents of the owner `uid` (each honouring its own finalizers), as the
    /// garbage collector does once the owner is gone or in foreground deletion.
    fn collect_dependents<'a>(
        &'a self,
        res: &'static Resource,
        ns: &'a str,
        uid: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let mut pages = Self::dependents(res, ns, uid)?;
            while let Some((dep_res, _, items)) = pages.next(self).await? {
                for o in &items {
                    self.delete_dependent(dep_res, o).await?;
                }
            }
            Ok(())
        })
    }

    /// Deletes the dependent `o` as it was read (a uid precondition): true when this call
    /// deleted it, false when it was already gone or replaced by a new object of that name.
    async fn delete_dependent(&self, res: &'static Resource, o: &Object) -> Result<bool> {
        let opts = DeleteOptions {
            preconditions: Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: None,
            },
            ..Default::default()
        };
        match self.delete(res, &o.key.namespace, &o.key.name, &opts).await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the owner reference to `uid` (and the owner label) from its dependents.
    async fn orphan_dependents(&self, res: &'static Resource, ns: &str, uid: &str) -> Result<()> {
        let mut pages = Self::dependents(res, ns, uid)?;
        while let Some((dep_res, dep, items)) = pages.next(self).await? {
            for o in items {
                self.orphan_dependent(dep_res, dep, o, uid).await?;
            }
        }
        Ok(())
    }

    /// Removes the owner reference to `uid` (and the owner label) from the dependent `o`.
    async fn orphan_dependent(
        &self,
        dep_res: &'static Resource,
        dep: &Dependent,
        o: Object,
        uid: &str,
    ) -> Result<()> {
        let mut current = o;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
                current = match self.store.get(&current.key).await {
                    Ok(c) => c,
                    Err(StoreError::NotFound(_)) => break,
                    Err(e) => {
                        return Err(RegistryError::store(e, dep_res.plural, &current.key.name));
                    }
                };
            }
            let live = json(&current, dep_res.plural)?;
            let mut new = live.clone();
            if let Some(meta) = meta_mut(&mut new) {
                if let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                    if refs.is_empty() {
                        meta.remove("ownerReferences");
                    }
                }
                if let Some(Value::Object(labels)) = meta.get_mut("labels") {
                    labels.remove(dep.owner_label);
                }
            }
            let scope = Scope::Main {
                ignore_status: dep_res.status_subresource,
            };
            let m = managed::update(&dep_res.fields, Some(&live), &new, "kfp-apiserver", scope);
            managed::store(&mut new, &m);
            let pre = Preconditions {
                uid: Some(current.uid.clone()),
                resource_version: Some(current.revision),
            };
            match self.store.update(&current.key, new, &pre).await {
                Ok(_) | Err(StoreError::NotFound(_)) => break,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    return Err(RegistryError::store(e, dep_res.plural, &current.key.name));
                }
            }
        }
        Ok(())
    }

    /// Removes one finalizer (the object goes when it was the last one).
    async fn remove_finalizer(
        &self,
        res: &'static Resource,
        key: &Key,
        uid: &str,
        finalizer: &str,
    ) -> Result<()> {
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let o = match self.store.get(key).await {
                Ok(o) if o.uid == uid => o,
                Ok(_) | Err(StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(RegistryError::store(e, res.plural, &key.name)),
            };
            let mut live = json(&o, res.plural)?;
            let mut fins = finalizers(&live);
            fins.retain(|f| f != finalizer);
            let pre = Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: Some(o.revision),
            };
            let result = if fins.is_empty() {
                self.store.delete(key, &pre).await
            } else {
                set_finalizers(&mut live, &fins);
                self.store.update(key, live, &pre).await
            };
            match result {
                Ok(_) | Err(StoreError::NotFound(_)) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(RegistryError::store(e, res.plural, &key.name)),
            }
        }
        Err(RegistryError::Conflict {
            resource: res.plural,
            name: key.name.clone(),
            message: "too many concurrent writers; try again".into(),
        })
    }
}

/// Waits a little before retrying a write that lost a race: grows with the attempt, jittered so
/// that contending writers spread out.
async fn backoff(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 4);
    let ms = (u64::from(attempt.min(10)) + jitter).min(20);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn check_preconditions(
    res: &'static Resource,
    name: &str,
    pre: &Preconditions,
    old: &Object,
) -> Result<()> {
    let fail = |what: &str, want: &str, have: &str| RegistryError::Conflict {
        resource: res.plural,
        name: name.to_owned(),
        message: format!(
            "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
        ),
    };
    if let Some(u) = &pre.uid
        && *u != old.uid
    {
        return Err(fail("UID", u, &old.uid));
    }
    if let Some(r) = pre.resource_version
        && r != old.revision
    {
        return Err(fail(
            "ResourceVersion",
            &r.to_string(),
            &old.revision.to_string(),
        ));
    }
    Ok(())
}

/// An applied configuration must be of the URL's kind and name.
fn check_identity(res: &'static Resource, name: &str, config: &Value) -> Result<()> {
    let Some(obj) = config.as_object() else {
        return Err(RegistryError::BadRequest(
            "the applied configuration must be an object".into(),
        ));
    };
    match obj.get("kind") {
        None => {}
        Some(Value::String(k)) if k == res.kind => {}
        Some(_) => {
            return Err(RegistryError::BadRequest(format!(
                "the kind of the applied object does not match {}",
                res.kind
            )));
        }
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(meta)) => match meta.get("name") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(n)) if n == name => Ok(()),
            Some(Value::String(n)) => Err(RegistryError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            ))),
            Some(_) => Err(RegistryError::BadRequest(
                "metadata.name must be a string".into(),
            )),
        },
        Some(_) => Err(RegistryError::BadRequest(
            "metadata must be an object".into(),
        )),
    }
}

/// Dependents of an owner, one list walk per dependent kind, a page of [`DEPENDENTS_PAGE`] at a
/// time: a cascade or a sweep holds one page, not every dependent (an owner can have thousands
/// of versions of hundreds of KiB each). Pages follow `continue`, so a dependent that stays
/// (one with finalizers, or one the caller could not change) is not read again.
struct DependentPages {
    walks: std::vec::IntoIter<(&'static Resource, &'static Dependent, ListRequest)>,
    current: Option<(&'static Resource, &'static Dependent, ListRequest)>,
}

/// Dependents read at a time by a cascade, an orphaning or the sweep.
const DEPENDENTS_PAGE: usize = 100;

impl DependentPages {
    fn new(walks: Vec<(&'static Resource, &'static Dependent, ListRequest)>) -> Self {
        DependentPages {
            walks: walks.into_iter(),
            current: None,
        }
    }

    /// The next non-empty page, or None once every walk has ended.
    async fn next(
        &mut self,
        registry: &Registry,
    ) -> Result<Option<(&'static Resource, &'static Dependent, Vec<Object>)>> {
        loop {
            let Some((res, dep, mut req)) = self.current.take().or_else(|| self.walks.next())
            else {
                return Ok(None);
            };
            req.limit = Some(DEPENDENTS_PAGE);
            let page = registry.list(res, &req).await?;
            if let Some(token) = page.continue_token {
                req.continue_token = Some(token);
                self.current = Some((res, dep, req));
            }
            if !page.items.is_empty() {
                return Ok(Some((res, dep, page.items)));
            }
        }
    }
}
