//! `metadata.managedFields` as kube-apiserver's field manager keeps them: one entry per
//! (manager, operation, subresource) with the set of fields it owns.
//!
//! - An **Update** (create, PUT, JSON or merge patch) owns what it changed: the fields added or
//!   modified between the live object and the request join its set, removed ones leave it, and
//!   every other manager loses the fields this write changed or removed.
//! - An **Apply** owns exactly the fields of its configuration; fields it applied last time and
//!   no longer applies are removed from the object unless another manager owns them; it
//!   conflicts only with managers that own a field this apply would change (409, unless
//!   `force`, which takes the fields over).
//! - managedFields sent in a request (Flux's and kubectl's ownership takeover by JSON patch)
//!   replace the stored ones when they are a non-empty list; `[]` keeps the stored ones and
//!   `[{}]` clears them, as in kube-apiserver.
//!
//! What "a field" is comes from the kind's [`FieldSchema`] (sets, keyed lists, atomic fields);
//! the walks are in `kfp_apiservice::fieldpath`. Server-owned metadata (name, uid,
//! resourceVersion, timestamps, ...) and `apiVersion`/`kind` are never tracked; for kinds with a
//! status subresource the main resource does not track `status` and `/status` tracks only it.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::fieldpath::{self, Display, Element, FieldSchema, Path, Set};
use serde_json::{Map, Value};

/// Metadata fields that are never tracked (server-owned).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The manager kube-apiserver names for fields that existed before the first apply on an object
/// without managedFields.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Which part of an object a write manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `ignore_status` for kinds with a status subresource.
    Main {
        /// Status is the subresource's, not tracked here.
        ignore_status: bool,
    },
    /// The `status` subresource.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            Scope::Main { .. } => None,
        }
    }
}

/// The part of `object` that field management looks at: without `apiVersion`/`kind`, and scoped
/// to the main resource or the status subresource.
fn tracked(object: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    if let Some(m) = object.as_object() {
        for (k, v) in m {
            let keep = match (scope, k.as_str()) {
                (_, "apiVersion" | "kind") => false,
                (Scope::Status, key) => key == "status",
                (Scope::Main { ignore_status }, "status") => !ignore_status,
                _ => true,
            };
            if keep {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Whether a path is managed: `metadata` itself and server-owned metadata never are (as
/// kube-apiserver strips them from every set).
fn managed_path(p: &Path) -> bool {
    match p.as_slice() {
        [Element::Field(m)] if m == "metadata" => false,
        [Element::Field(m), Element::Field(f), ..] if m == "metadata" => {
            !SERVER_METADATA.contains(&f.as_str())
        }
        _ => true,
    }
}

fn only_managed(mut set: Set) -> Set {
    set.retain(managed_path);
    set
}

fn compare(schema: &FieldSchema, old: &Value, new: &Value, scope: Scope) -> fieldpath::Comparison {
    let mut c = fieldpath::compare(schema, &tracked(old, scope), &tracked(new, scope));
    c.added = only_managed(c.added);
    c.removed = only_managed(c.removed);
    c.modified = only_managed(c.modified);
    c
}

fn owned_by(schema: &FieldSchema, config: &Value, scope: Scope) -> Set {
    only_managed(fieldpath::to_set(schema, &tracked(config, scope)))
}

/// One manager's entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `status` for the subresource.
    pub subresource: Option<String>,
    /// The API version the fields are in.
    pub api_version: String,
    /// When the manager last changed the object.
    pub time: Option<String>,
    /// The fields it owns.
    pub set: Set,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// The manager as kube-apiserver names it in conflict messages.
    pub fn display(&self) -> String {
        if self.operation == "Update" {
            format!("{:?} using {}", self.manager, self.api_version)
        } else {
            format!("{:?}", self.manager)
        }
    }
}

/// All entries of an object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Managers(pub Vec<Entry>);

/// A field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, as kube-apiserver prints it (`"kubectl-edit" using v1`).
    pub manager: String,
    /// The field (`.spec.displayName`).
    pub field: String,
}

fn now() -> String {
    let n = Timestamp::now();
    Timestamp::from_second(n.as_second())
        .unwrap_or(n)
        .to_string()
}

impl Managers {
    /// Reads `metadata.managedFields`; `None` when they are absent, empty or not valid entries.
    pub fn decode(object: &Value) -> Option<Managers> {
        let raw = object.pointer("/metadata/managedFields")?;
        let entries: Vec<ManagedFieldsEntry> = serde_json::from_value(raw.clone()).ok()?;
        if entries.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let set = match &e.fields_v1 {
                Some(FieldsV1(v)) => fieldpath::from_fields_v1(v)?,
                None => Set::new(),
            };
            out.push(Entry {
                manager: e.manager.unwrap_or_default(),
                operation: e.operation.unwrap_or_default(),
                subresource: e.subresource.filter(|s| !s.is_empty()),
                api_version: e.api_version.unwrap_or_default(),
                time: e.time.map(|t| t.0.to_string()),
                set,
            });
        }
        Some(Managers(out))
    }

    /// The entries as `metadata.managedFields`, sorted as kube-apiserver sorts them (operation,
    /// time, manager, API version, subresource); entries that own nothing are dropped.
    pub fn encode(&self) -> Value {
        let mut entries: Vec<&Entry> = self.0.iter().filter(|e| !e.set.is_empty()).collect();
        entries.sort_by(|a, b| {
            (
                &a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    &b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let list: Vec<ManagedFieldsEntry> = entries
            .into_iter()
            .map(|e| ManagedFieldsEntry {
                api_version: Some(e.api_version.clone()),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(FieldsV1(fieldpath::to_fields_v1(&e.set))),
                manager: Some(e.manager.clone()),
                operation: Some(e.operation.clone()),
                subresource: e.subresource.clone(),
                time: e
                    .time
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map(Time),
            })
            .collect();
        serde_json::to_value(list).unwrap_or(Value::Array(Vec::new()))
    }

    fn entry_mut(&mut self, manager: &str, operation: &str, sub: Option<&str>) -> &mut Entry {
        let pos = match self.0.iter().position(|e| e.is(manager, operation, sub)) {
            Some(p) => p,
            None => {
                self.0.push(Entry {
                    manager: manager.to_owned(),
                    operation: operation.to_owned(),
                    subresource: sub.map(str::to_owned),
                    api_version: kfp_apiservice::API_VERSION.to_owned(),
                    time: None,
                    set: Set::new(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[pos]
    }

    fn union(&self) -> Set {
        self.0.iter().flat_map(|e| e.set.iter().cloned()).collect()
    }
}

/// Writes `managers` into `object`'s metadata (removing the key when nobody owns anything).
pub fn store(object: &mut Value, managers: &Managers) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let encoded = managers.encode();
        if encoded.as_array().is_some_and(Vec::is_empty) {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), encoded);
        }
    }
}

/// The managers an Update starts from: the ones the request sent when it sent a non-empty list
/// (not on subresources), else the live object's.
fn starting_managers(live: Option<&Value>, sent: &Value, scope: Scope) -> Managers {
    let from_request = match scope {
        Scope::Main { .. } => Managers::decode(sent),
        Scope::Status => None,
    };
    from_request
        .or_else(|| live.and_then(Managers::decode))
        .unwrap_or_default()
}

/// Records an Update by `manager`: `new` replaces `live` (`None` for a create). Returns the
/// managers to store.
pub fn update(
    schema: &FieldSchema,
    live: Option<&Value>,
    new: &Value,
    manager: &str,
    scope: Scope,
) -> Managers {
    let mut managers = starting_managers(live, new, scope);
    let empty = Value::Object(Map::new());
    let cmp = compare(schema, live.unwrap_or(&empty), new, scope);
    if cmp.is_same() {
        return managers;
    }
    let changed: Set = cmp.added.union(&cmp.modified).cloned().collect();
    let sub = scope.subresource();
    for e in managers.0.iter_mut() {
        if e.is(manager, "Update", sub) {
            continue;
        }
        e.set = e
            .set
            .iter()
            .filter(|p| !changed.contains(*p) && !cmp.removed.contains(*p))
            .cloned()
            .collect();
    }
    let mine = managers.entry_mut(manager, "Update", sub);
    let mut set: Set = mine
        .set
        .iter()
        .filter(|p| !cmp.removed.contains(*p))
        .cloned()
        .collect();
    set.extend(changed);
    mine.set = set;
    mine.time = Some(now());
    managers.0.retain(|e| !e.set.is_empty());
    managers
}

/// The outcome of an apply.
#[derive(Debug)]
pub struct Applied {
    /// The merged and pruned object (managedFields not yet written into it).
    pub object: Value,
    /// The managers to store.
    pub managers: Managers,
}

/// Applies `config` by `manager` to `live` (`None` when the object does not exist yet).
pub fn apply(
    schema: &FieldSchema,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    scope: Scope,
    force: bool,
) -> Result<Applied, Vec<Conflict>> {
    let sub = scope.subresource();
    let mut managers = live.and_then(Managers::decode).unwrap_or_default();
    let empty = Value::Object(Map::new());
    let live_v = live.unwrap_or(&empty);
    if live.is_some() && managers.0.is_empty() {
        // An object nobody manages yet: what it holds belongs to "before-first-apply".
        let set = owned_by(schema, live_v, scope);
        if !set.is_empty() {
            let e = managers.entry_mut(BEFORE_FIRST_APPLY, "Update", sub);
            e.set = set;
            e.time = Some(now());
        }
    }
    let mut merged = fieldpath::merge(schema, live_v, config);
    let config_set = owned_by(schema, config, scope);
    let last: Option<Set> = managers
        .0
        .iter()
        .find(|e| e.is(manager, "Apply", sub))
        .map(|e| e.set.clone());
    {
        let mine = managers.entry_mut(manager, "Apply", sub);
        mine.set = config_set;
    }
    if let Some(last) = last {
        let last = fieldpath::with_named_prefixes(schema, &last);
        let owned = fieldpath::with_named_prefixes(schema, &managers.union());
        fieldpath::prune(schema, &mut merged, &|p: &Path| {
            last.contains(p) && !owned.contains(p)
        });
    }
    let cmp = compare(schema, live_v, &merged, scope);
    let changed: Set = cmp.added.union(&cmp.modified).cloned().collect();
    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, BTreeSet<Path>)> = Vec::new();
    for (i, e) in managers.0.iter().enumerate() {
        if e.is(manager, "Apply", sub) {
            continue;
        }
        let clash: BTreeSet<Path> = e.set.intersection(&changed).cloned().collect();
        for p in &clash {
            conflicts.push(Conflict {
                manager: e.display(),
                field: Display(p).to_string(),
            });
        }
        if !clash.is_empty() {
            taken.push((i, clash));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, clash) in taken {
        managers.0[i].set.retain(|p| !clash.contains(p));
    }
    for e in managers.0.iter_mut() {
        if !e.is(manager, "Apply", sub) {
            e.set.retain(|p| !cmp.removed.contains(p));
        }
    }
    if !cmp.is_same() || live.is_none() {
        managers.entry_mut(manager, "Apply", sub).time = Some(now());
    }
    managers.0.retain(|e| !e.set.is_empty());
    Ok(Applied {
        object: merged,
        managers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfp_apiservice::resource::Resource;
    use serde_json::json;

    fn schema() -> &'static FieldSchema {
        &Resource::by_plural("pipelines").expect("pipelines").fields
    }

    const MAIN: Scope = Scope::Main {
        ignore_status: false,
    };

    fn with(mut obj: Value, m: &Managers) -> Value {
        store(&mut obj, m);
        obj
    }

    fn fields(m: &Managers, manager: &str) -> Value {
        m.0.iter()
            .find(|e| e.manager == manager)
            .map(|e| fieldpath::to_fields_v1(&e.set))
            .unwrap_or(Value::Null)
    }

    #[test]
    fn a_label_by_a_person_does_not_block_the_next_apply() {
        let cfg = json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
            "metadata": {"name": "demo"}, "spec": {"displayName": "One"}});
        let a = apply(schema(), None, &cfg, "flux", MAIN, false).expect("create");
        let live = with(a.object, &a.managers);
        let mut labelled = live.clone();
        labelled["metadata"]["labels"] = json!({"team": "ml"});
        let m = update(schema(), Some(&live), &labelled, "kubectl-label", MAIN);
        assert_eq!(
            fields(&m, "kubectl-label"),
            json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
        );
        let live = with(labelled, &m);
        let cfg2 = json!({"metadata": {"name": "demo"}, "spec": {"displayName": "Two"}});
        let a = apply(schema(), Some(&live), &cfg2, "flux", MAIN, false).expect("no conflict");
        assert_eq!(a.object["spec"]["displayName"], "Two");
        assert_eq!(a.object["metadata"]["labels"]["team"], "ml");
        assert_eq!(
            fields(&a.managers, "kubectl-label"),
            json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
        );
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_from_an_applier() {
        let cfg =
            json!({"metadata": {"name": "p"}, "spec": {"displayName": "A", "description": "d"}});
        let a = apply(schema(), None, &cfg, "flux", MAIN, false).expect("create");
        let live = with(a.object, &a.managers);
        let mut edited = live.clone();
        edited["spec"]["displayName"] = json!("Edited");
        let m = update(schema(), Some(&live), &edited, "kubectl-edit", MAIN);
        assert_eq!(fields(&m, "flux"), json!({"f:spec": {"f:description": {}}}));
        let live = with(edited, &m);
        let err = apply(schema(), Some(&live), &cfg, "flux", MAIN, false).expect_err("conflict");
        assert_eq!(
            err,
            vec![Conflict {
                manager: "\"kubectl-edit\" using pipelines.kubeflow.org/v2beta1".into(),
                field: ".spec.displayName".into()
            }]
        );
        let forced = apply(schema(), Some(&live), &cfg, "flux", MAIN, true).expect("forced");
        assert_eq!(forced.object["spec"]["displayName"], "A");
        assert!(
            forced
                .managers
                .0
                .iter()
                .all(|e| e.manager != "kubectl-edit")
        );
    }

    #[test]
    fn dropped_fields_go_unless_someone_else_owns_them() {
        let cfg =
            json!({"metadata": {"name": "p"}, "spec": {"displayName": "A", "tags": {"a": "1"}}});
        let a = apply(schema(), None, &cfg, "flux", MAIN, false).expect("create");
        let live = with(a.object, &a.managers);
        let cfg2 = json!({"metadata": {"name": "p"}, "spec": {"displayName": "A"}});
        let a2 = apply(schema(), Some(&live), &cfg2, "flux", MAIN, false).expect("apply");
        assert!(a2.object["spec"].get("tags").is_none(), "{}", a2.object);
        // Two appliers of the same value co-own it; one dropping it leaves it.
        let b = apply(schema(), Some(&live), &cfg, "argo", MAIN, false).expect("co-own");
        let live = with(b.object, &b.managers);
        assert!(fields(&b.managers, "argo") == fields(&b.managers, "flux"));
        let a3 = apply(schema(), Some(&live), &cfg2, "flux", MAIN, false).expect("apply");
        assert_eq!(a3.object["spec"]["tags"], json!({"a": "1"}));
    }

    #[test]
    fn sent_managed_fields_replace_the_stored_ones_exactly() {
        let live = json!({"metadata": {"name": "p", "managedFields": [
            {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "pipelines.kubeflow.org/v2beta1",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:displayName": {}}}}]},
            "spec": {"displayName": "A"}});
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{"manager": "kustomize-controller", "operation": "Apply",
            "apiVersion": "pipelines.kubeflow.org/v2beta1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:displayName": {}}}}]);
        let m = update(schema(), Some(&live), &new, "kubectl", MAIN);
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.0[0].manager, "kustomize-controller");
        // [] keeps the stored entries; [{}] clears them.
        new["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            update(schema(), Some(&live), &new, "kubectl", MAIN).0[0].manager,
            "kubectl-client-side-apply"
        );
        new["metadata"]["managedFields"] = json!([{}]);
        assert!(
            update(schema(), Some(&live), &new, "kubectl", MAIN)
                .encode()
                .as_array()
                .is_some_and(Vec::is_empty)
        );
    }
}
