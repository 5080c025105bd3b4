//! The resource table: everything the server knows about a served kind, in one entry per kind —
//! names for URLs and discovery, the status subresource, selectable fields, Table columns, the
//! list and map types field management uses, dependents (what deleting an object takes with it)
//! and the [`Strategy`] that prepares and validates writes. Discovery, OpenAPI, the registry,
//! the routes and the storage index all read [`RESOURCES`]; adding a kind means its types and
//! strategy module plus one entry here (docs/architecture.md lists the places).
//!
//! No HTTP and no I/O here: a strategy gets the parent object it needs as an argument.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::decode::{DecodeError, FieldValidation, decode_value};
use crate::field::ErrorList;
use crate::fieldpath::{FieldSchema, ListType};
use crate::strategy::{self, CreateContext, Outcome, Parent};
use crate::types::{LABEL_PIPELINE_ID, Pipeline, PipelineVersion};

/// One served resource.
pub struct Resource {
    /// Plural, as in URLs.
    pub plural: &'static str,
    /// Singular.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Kind of its list.
    pub list_kind: &'static str,
    /// `kubectl get` short names.
    pub short_names: &'static [&'static str],
    /// Categories (`kubectl get kubeflow`).
    pub categories: &'static [&'static str],
    /// Whether it has a `status` subresource.
    pub status_subresource: bool,
    /// Fields a field selector may use, as `metadata.name`: the name, the namespace, or a field
    /// the store indexes (see [`Index`]), so every selection runs in the store.
    pub selectable_fields: &'static [&'static str],
    /// What fills the store's generic index columns for this resource.
    pub index: Index,
    /// Table columns for `kubectl get`.
    pub columns: &'static [Column],
    /// List/map types and atomic fields, for field management and the OpenAPI schema.
    pub fields: FieldSchema,
    /// Resources whose objects name an object of this one as their owner.
    pub dependents: &'static [Dependent],
    /// The write rules.
    pub strategy: &'static (dyn Strategy + Sync),
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

impl Resource {
    /// Looks a resource up by plural.
    pub fn by_plural(plural: &str) -> Option<&'static Resource> {
        RESOURCES.iter().find(|r| r.plural == plural)
    }
}

/// What the store indexes of a resource's objects besides name, namespace, uid, creation time
/// and labels: its three generic columns, each filled from a field (a dotted path such as
/// `spec.displayName`) or left empty. The KFP view sorts and filters on them; field selectors on
/// these paths run on them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Index {
    /// The title column: a human-readable name — the first of these fields that is set (so it
    /// holds what the KFP view shows as `display_name`, with its fallbacks).
    pub title: &'static [&'static str],
    /// The parent-name column: the name of the object this one belongs to.
    pub parent_name: Option<&'static str>,
    /// The parent-uid column: this one's owner reference of the kind, else the label.
    pub parent_uid: Option<ParentUid>,
    /// The alias column: another name — the first of these fields that is set (the KFP view's
    /// `name` of a version: `spec.versionName`, else the object name).
    pub alias: &'static [&'static str],
    /// The detail column: a longer text (the description).
    pub detail: Option<&'static str>,
    /// A map of strings whose entries are indexed as terms (KFP tags).
    pub terms: Option<&'static str>,
}

/// Where a parent's uid is read from.
#[derive(Clone, Copy, Debug)]
pub struct ParentUid {
    /// The owner reference of this kind names the parent.
    pub owner_kind: &'static str,
    /// Without such an owner reference, this label holds the parent's uid.
    pub label: &'static str,
}

/// The values of an object's generic index columns ("" when unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexValues {
    /// Title.
    pub title: String,
    /// Parent name.
    pub parent_name: String,
    /// Parent uid.
    pub parent_uid: String,
    /// Alias.
    pub alias: String,
    /// Detail.
    pub detail: String,
    /// Terms (string entries of the terms map).
    pub terms: std::collections::BTreeMap<String, String>,
}

fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = obj;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

fn string_at(obj: &Value, path: &str) -> String {
    value_at(obj, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn first_set(obj: &Value, paths: &[&str]) -> String {
    paths
        .iter()
        .map(|p| string_at(obj, p))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

impl Index {
    /// The column values of `obj` (any JSON; a field of the wrong type reads as "").
    pub fn values(&self, obj: &Value) -> IndexValues {
        let parent_uid = self.parent_uid.map(|p| {
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("kind").and_then(Value::as_str) == Some(p.owner_kind))
                })
                .and_then(|r| r.get("uid"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    obj.pointer("/metadata/labels")
                        .and_then(|l| l.get(p.label))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
        });
        IndexValues {
            title: first_set(obj, self.title),
            parent_name: self
                .parent_name
                .map(|p| string_at(obj, p))
                .unwrap_or_default(),
            parent_uid: parent_uid.unwrap_or_default(),
            alias: first_set(obj, self.alias),
            detail: self.detail.map(|p| string_at(obj, p)).unwrap_or_default(),
            terms: self
                .terms
                .and_then(|p| value_at(obj, p))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether a selectable field is one of the indexed paths that a field selector can use:
    /// only a column filled from exactly that one field.
    pub fn covers(&self, path: &str) -> bool {
        self.title == [path] || self.parent_name == Some(path)
    }
}

/// Objects of another resource that belong to this one: selected by `owner_label` = the owner's
/// uid, and carrying an owner reference to it.
#[derive(Clone, Copy, Debug)]
pub struct Dependent {
    /// The dependents' plural.
    pub resource: &'static str,
    /// The label holding the owner's uid.
    pub owner_label: &'static str,
}

/// A Table column.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Header.
    pub name: &'static str,
    /// OpenAPI type (`string`, `date`, ...).
    pub type_: &'static str,
    /// OpenAPI format (`name`, ...).
    pub format: &'static str,
    /// What it shows.
    pub description: &'static str,
    /// 0 always shown; 1 only with `-o wide`.
    pub priority: i32,
    /// Where the cell's value comes from.
    pub cell: Cell,
}

/// The value of a cell.
#[derive(Clone, Copy, Debug)]
pub enum Cell {
    /// A string at a JSON pointer ("" when absent).
    Text(&'static str),
    /// `metadata.creationTimestamp` as kubectl's age.
    Age,
    /// The `reason` of the condition of this type.
    ConditionReason(&'static str),
}

/// The served resources.
pub static RESOURCES: &[Resource] = &[
    Resource {
        plural: "pipelines",
        singular: "pipeline",
        kind: "Pipeline",
        list_kind: "PipelineList",
        short_names: &["pl"],
        categories: &["kubeflow"],
        status_subresource: false,
        selectable_fields: &["metadata.name", "metadata.namespace"],
        index: Index {
            title: &["spec.displayName", "metadata.name"],
            parent_name: None,
            parent_uid: None,
            alias: &[],
            detail: Some("spec.description"),
            terms: Some("spec.tags"),
        },
        columns: &[
            NAME_COLUMN,
            DISPLAY_NAME_COLUMN,
            AGE_COLUMN,
            DESCRIPTION_COLUMN,
        ],
        fields: FieldSchema {
            lists: &[],
            atomic: &[],
            maps: &["spec.tags"],
        },
        dependents: &[Dependent {
            resource: "pipelineversions",
            owner_label: LABEL_PIPELINE_ID,
        }],
        strategy: &PipelineStrategy,
    },
    Resource {
        plural: "pipelineversions",
        singular: "pipelineversion",
        kind: "PipelineVersion",
        list_kind: "PipelineVersionList",
        short_names: &["plv"],
        categories: &["kubeflow"],
        status_subresource: true,
        selectable_fields: &["metadata.name", "metadata.namespace", "spec.pipelineName"],
        index: Index {
            title: &["spec.displayName", "spec.versionName", "metadata.name"],
            parent_name: Some("spec.pipelineName"),
            parent_uid: Some(ParentUid {
                owner_kind: "Pipeline",
                label: LABEL_PIPELINE_ID,
            }),
            alias: &["spec.versionName", "metadata.name"],
            detail: Some("spec.description"),
            terms: Some("spec.tags"),
        },
        columns: &[
            NAME_COLUMN,
            Column {
                name: "Pipeline",
                type_: "string",
                format: "",
                description: "The Pipeline this version belongs to (spec.pipelineName).",
                priority: 0,
                cell: Cell::Text("/spec/pipelineName"),
            },
            DISPLAY_NAME_COLUMN,
            Column {
                name: "Status",
                type_: "string",
                format: "",
                description: "The PipelineVersionStatus condition's reason.",
                priority: 0,
                cell: Cell::ConditionReason("PipelineVersionStatus"),
            },
            AGE_COLUMN,
            DESCRIPTION_COLUMN,
        ],
        fields: FieldSchema {
            lists: &[("status.conditions", ListType::Map(&["type"]))],
            atomic: &["spec.pipelineSpec", "spec.platformSpec"],
            maps: &["spec.tags"],
        },
        dependents: &[],
        strategy: &VersionStrategy,
    },
];

const NAME_COLUMN: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
    cell: Cell::Text("/metadata/name"),
};
const DISPLAY_NAME_COLUMN: Column = Column {
    name: "Display Name",
    type_: "string",
    format: "",
    description: "Human-readable name (spec.displayName).",
    priority: 0,
    cell: Cell::Text("/spec/displayName"),
};
const AGE_COLUMN: Column = Column {
    name: "Age",
    type_: "date",
    format: "",
    description: "Time since creation.",
    priority: 0,
    cell: Cell::Age,
};
const DESCRIPTION_COLUMN: Column = Column {
    name: "Description",
    type_: "string",
    format: "",
    description: "spec.description.",
    priority: 1,
    cell: Cell::Text("/spec/description"),
};

/// What a caller found for an object's parent (see [`Strategy::parent`]).
#[derive(Clone, Copy, Debug)]
pub enum ParentState<'a> {
    /// The parent object, as stored.
    Found(&'a Value),
    /// Looked up: there is none.
    Missing,
    /// Not looked up (offline checks), or the object has no parent.
    Unknown,
}

/// A prepared write: the object as it will be stored, and warnings for the client.
#[derive(Debug)]
pub struct Prepared {
    /// The object (JSON of the kind's type, server-owned fields set).
    pub object: Value,
    /// Its name.
    pub name: String,
    /// Warnings (unknown fields under `Warn`, validation warnings).
    pub warnings: Vec<String>,
}

/// Why a write was refused by a strategy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StrategyError {
    /// The body is not a valid object of the kind (400).
    #[error("{0}")]
    BadRequest(String),
    /// The object breaks the kind's rules (422, with field causes).
    #[error("{kind} {name:?} is invalid")]
    Invalid {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// What is wrong, with field paths.
        errors: ErrorList,
    },
}

/// The rules of one kind, over JSON values (each implementation decodes into its own type
/// first: a wrongly shaped body is a [`StrategyError::BadRequest`], never a panic).
pub trait Strategy {
    /// The name of the parent this object needs (in its namespace, of resource
    /// [`Strategy::parent_resource`]), read from a request body that is not decoded yet.
    fn parent(&self, body: &Value) -> Option<String> {
        let _ = body;
        None
    }
    /// The parent's resource.
    fn parent_resource(&self) -> Option<&'static str> {
        None
    }
    /// Decodes, defaults and validates a new object in `namespace`.
    fn prepare_create(
        &self,
        body: Value,
        namespace: &str,
        ctx: &CreateContext,
        parent: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError>;
    /// Decodes and validates `new` replacing `old` (the main resource, or with `status` the
    /// status subresource: only status is taken from `new`).
    fn prepare_update(
        &self,
        new: Value,
        old: Value,
        namespace: &str,
        status: bool,
        parent: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError>;
}

fn decode<T: DeserializeOwned + Serialize>(
    value: Value,
    kind: &'static str,
    fv: FieldValidation,
) -> Result<(T, Vec<String>), StrategyError> {
    if !value.is_object() {
        return Err(StrategyError::BadRequest(format!(
            "the body must be a JSON object of kind {kind}"
        )));
    }
    match decode_value::<T>(value, kind, fv) {
        Ok(d) => Ok((d.object, d.warnings)),
        Err(e @ DecodeError::Strict(_)) => Err(StrategyError::BadRequest(e.to_string())),
        Err(e) => Err(StrategyError::BadRequest(e.to_string())),
    }
}

/// The prepared write of a typed object.
fn prepared<T: Serialize>(
    object: &T,
    name: String,
    warnings: Vec<String>,
) -> Result<Prepared, StrategyError> {
    let object = serde_json::to_value(object)
        .map_err(|e| StrategyError::BadRequest(format!("encoding failed: {e}")))?;
    Ok(Prepared {
        object,
        name,
        warnings,
    })
}

fn check(kind: &'static str, name: &str, outcome: Outcome) -> Result<Vec<String>, StrategyError> {
    if outcome.errors.is_empty() {
        Ok(outcome.warnings)
    } else {
        Err(StrategyError::Invalid {
            kind,
            name: name.to_owned(),
            errors: outcome.errors,
        })
    }
}

/// Sets the namespace from the URL (refusing a body that names another one) and a generated
/// name from `generateName`.
fn place(meta: &mut ObjectMeta, namespace: &str) -> Result<(), StrategyError> {
    match meta.namespace.as_deref() {
        None | Some("") => {}
        Some(ns) if ns == namespace => {}
        Some(_) => {
            return Err(StrategyError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    meta.namespace = Some(namespace.to_owned());
    if meta.name.as_deref().unwrap_or_default().is_empty()
        && let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        meta.name = Some(format!("{prefix}{}", random_suffix()));
    }
    Ok(())
}

/// Five characters of `[bcdfghjklmnpqrstvwxz2456789]`, as apimachinery's name generator.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().into_bytes()[..5]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// A new context: a fresh uid and the current time.
pub fn create_context() -> CreateContext {
    CreateContext {
        uid: uuid::Uuid::new_v4().to_string(),
        now: Timestamp::now(),
    }
}

// === impl PipelineStrategy ===

/// The rules of `Pipeline`.
pub struct PipelineStrategy;

impl Strategy for PipelineStrategy {
    fn prepare_create(
        &self,
        body: Value,
        namespace: &str,
        ctx: &CreateContext,
        _: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError> {
        let (mut p, mut warnings) = decode::<Pipeline>(body, Pipeline::KIND, fv)?;
        place(&mut p.metadata, namespace)?;
        strategy::prepare_pipeline_for_create(&mut p, ctx);
        let name = name_of(&p.metadata);
        warnings.extend(check(
            Pipeline::KIND,
            &name,
            strategy::validate_pipeline_create(&p),
        )?);
        prepared(&p, name, warnings)
    }

    fn prepare_update(
        &self,
        new: Value,
        old: Value,
        namespace: &str,
        _status: bool,
        _: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError> {
        let (mut p, mut warnings) = decode::<Pipeline>(new, Pipeline::KIND, fv)?;
        let (o, _) = decode::<Pipeline>(old, Pipeline::KIND, FieldValidation::Ignore)?;
        p.metadata.namespace = Some(namespace.to_owned());
        strategy::prepare_pipeline_for_update(&mut p, &o);
        let name = name_of(&p.metadata);
        warnings.extend(check(
            Pipeline::KIND,
            &name,
            strategy::validate_pipeline_update(&p, &o),
        )?);
        prepared(&p, name, warnings)
    }
}

// === impl VersionStrategy ===

/// The rules of `PipelineVersion`.
pub struct VersionStrategy;

fn parent_pipeline(parent: ParentState<'_>) -> Result<Option<Pipeline>, StrategyError> {
    match parent {
        ParentState::Found(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| StrategyError::BadRequest(format!("stored Pipeline: {e}"))),
        _ => Ok(None),
    }
}

impl Strategy for VersionStrategy {
    fn parent(&self, body: &Value) -> Option<String> {
        body.pointer("/spec/pipelineName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    fn parent_resource(&self) -> Option<&'static str> {
        Some(Pipeline::PLURAL)
    }

    fn prepare_create(
        &self,
        body: Value,
        namespace: &str,
        ctx: &CreateContext,
        parent: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError> {
        let (mut v, mut warnings) = decode::<PipelineVersion>(body, PipelineVersion::KIND, fv)?;
        place(&mut v.metadata, namespace)?;
        let found = parent_pipeline(parent)?;
        let lookup = match (&found, parent) {
            (Some(p), _) => Parent::Found(p),
            (None, ParentState::Unknown) => Parent::Unknown,
            (None, _) => Parent::Missing,
        };
        strategy::prepare_version_for_create(&mut v, ctx, lookup);
        let name = name_of(&v.metadata);
        let outcome = strategy::validate_version_create(&v, lookup);
        warnings.extend(check(PipelineVersion::KIND, &name, outcome)?);
        prepared(&v, name, warnings)
    }

    fn prepare_update(
        &self,
        new: Value,
        old: Value,
        namespace: &str,
        status: bool,
        parent: ParentState<'_>,
        fv: FieldValidation,
    ) -> Result<Prepared, StrategyError> {
        let (mut v, mut warnings) = decode::<PipelineVersion>(new, PipelineVersion::KIND, fv)?;
        let (o, _) =
            decode::<PipelineVersion>(old, PipelineVersion::KIND, FieldValidation::Ignore)?;
        v.metadata.namespace = Some(namespace.to_owned());
        let name = name_of(&v.metadata);
        if status {
            strategy::prepare_version_for_status_update(&mut v, &o);
            let errors = v
                .status
                .as_ref()
                .map(strategy::validate_status)
                .unwrap_or_default();
            if !errors.is_empty() {
                return Err(StrategyError::Invalid {
                    kind: PipelineVersion::KIND,
                    name,
                    errors,
                });
            }
        } else {
            let found = parent_pipeline(parent)?;
            let lookup = match &found {
                Some(p) => Parent::Found(p),
                None => Parent::Unknown,
            };
            strategy::prepare_version_for_update(&mut v, &o, lookup);
            warnings.extend(check(
                PipelineVersion::KIND,
                &name,
                strategy::validate_version_update(&v, &o),
            )?);
        }
        prepared(&v, name, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_has_one_entry_and_consistent_names() {
        for r in RESOURCES {
            assert_eq!(Resource::by_plural(r.plural).map(|x| x.kind), Some(r.kind));
            assert_eq!(r.list_kind, format!("{}List", r.kind));
            assert!(
                r.columns
                    .iter()
                    .any(|c| c.name == "Age" && c.type_ == "date")
            );
            for d in r.dependents {
                assert!(Resource::by_plural(d.resource).is_some());
            }
            for f in r.selectable_fields {
                assert!(
                    matches!(*f, "metadata.name" | "metadata.namespace") || r.index.covers(f),
                    "{}: selectable field {f} is not indexed, so it could not run in the store",
                    r.plural
                );
            }
        }
    }

    #[test]
    fn index_values_come_from_the_owner_reference_then_the_label() {
        let idx = Resource::by_plural("pipelineversions").unwrap().index;
        let v = json!({"metadata": {"labels": {LABEL_PIPELINE_ID: "from-label"},
            "ownerReferences": [{"kind": "Other", "uid": "x"}, {"kind": "Pipeline", "uid": "p-uid"}]},
            "spec": {"displayName": "D", "pipelineName": "p"}});
        assert_eq!(
            idx.values(&v),
            IndexValues {
                title: "D".into(),
                parent_name: "p".into(),
                parent_uid: "p-uid".into(),
                ..Default::default()
            }
        );
        let labelled = json!({"metadata": {"labels": {LABEL_PIPELINE_ID: "from-label"}},
            "spec": {"displayName": 5}});
        assert_eq!(
            idx.values(&labelled),
            IndexValues {
                title: "".into(),
                parent_name: "".into(),
                parent_uid: "from-label".into(),
                ..Default::default()
            },
            "a displayName of the wrong type and no name read as empty"
        );
        let pipelines = Resource::by_plural("pipelines").unwrap().index;
        assert_eq!(
            pipelines.values(&v).parent_uid,
            "",
            "pipelines have no parent"
        );
    }

    #[test]
    fn wrongly_shaped_bodies_are_bad_requests() {
        for body in [
            json!([]),
            json!("s"),
            json!(42),
            json!(null),
            json!({"metadata": "x"}),
            json!({"metadata": {"name": 5}}),
        ] {
            let r = PipelineStrategy.prepare_create(
                body.clone(),
                "ns",
                &create_context(),
                ParentState::Unknown,
                FieldValidation::Warn,
            );
            assert!(
                matches!(r, Err(StrategyError::BadRequest(_))),
                "{body}: {r:?}"
            );
        }
    }
}
