//! Per-resource rules, as pure functions over values: what the server sets on create and update,
//! what it validates, what may change. The parent Pipeline lookup a PipelineVersion needs is passed
//! in by the caller; nothing here does I/O.
//!
//! The same functions serve both views (Kubernetes routes and KFP REST routes), so a rule exists
//! in exactly one place. The generic handlers call, in order:
//! create: [`prepare_pipeline_for_create`] / [`prepare_version_for_create`], then
//! [`validate_pipeline_create`] / [`validate_version_create`];
//! update: `prepare_*_for_update`, then `validate_*_update`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

use crate::field::{ErrorList, ErrorType, FieldError, FieldPath};
use crate::ir;
use crate::names;
use crate::types::{
    API_VERSION, LABEL_PIPELINE_ID, LABEL_PIPELINE_NAME, Pipeline, PipelineVersion,
    PipelineVersionStatus, SimplifiedCondition,
};

/// KFP's tag limits (2.17): at most 20 entries, keys 1-63 characters without `.`, values at most
/// 63 characters.
pub const MAX_TAGS: usize = 20;
/// Longest tag key or value.
pub const MAX_TAG_LEN: usize = 63;
/// kube-apiserver's limit on the total size of an object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Longest condition message (KFP's CRD schema).
pub const MAX_CONDITION_MESSAGE: usize = 32768;

/// The result of validation: errors make the request fail (422 Invalid); warnings are returned to
/// the client (`Warning` headers) on success.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Problems that reject the request.
    pub errors: ErrorList,
    /// Things the client should hear about.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// True when there are no errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What the caller found when it looked up a version's parent Pipeline.
#[derive(Clone, Copy, Debug)]
pub enum Parent<'a> {
    /// The Pipeline named by `spec.pipelineName`, in the version's namespace.
    Found(&'a Pipeline),
    /// There is no such Pipeline.
    Missing,
    /// Not known here (offline validation of manifests: the Pipeline may exist in the cluster).
    Unknown,
}

/// Server-owned values for a new object.
#[derive(Clone, Debug)]
pub struct CreateContext {
    /// The new object's uid (generated, or carried over by a migration).
    pub uid: String,
    /// The creation time; truncated to whole seconds as Kubernetes stores it.
    pub now: Timestamp,
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

// === metadata, common to both kinds ===

fn prepare_meta_for_create(meta: &mut ObjectMeta, ctx: &CreateContext) {
    meta.uid = Some(ctx.uid.clone());
    meta.creation_timestamp = Some(Time(whole_seconds(ctx.now)));
    meta.generation = Some(1);
    meta.resource_version = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    #[allow(deprecated)]
    {
        meta.self_link = None;
    }
}

fn prepare_meta_for_update(new: &mut ObjectMeta, old: &ObjectMeta, spec_changed: bool) {
    new.uid.clone_from(&old.uid);
    new.creation_timestamp.clone_from(&old.creation_timestamp);
    new.deletion_timestamp.clone_from(&old.deletion_timestamp);
    new.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    let generation = old.generation.unwrap_or(1);
    new.generation = Some(if spec_changed {
        generation + 1
    } else {
        generation
    });
    #[allow(deprecated)]
    {
        new.self_link = None;
    }
}

/// Validates metadata every object must satisfy.
pub fn validate_meta(meta: &ObjectMeta) -> ErrorList {
    let mut errs = ErrorList::new();
    let path = FieldPath::new("metadata");
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            path.child("name"),
            "name or generateName is required",
        )),
        Some(name) => {
            for e in names::dns1123_subdomain(name) {
                errs.push(FieldError::invalid(
                    path.child("name"),
                    format!("\"{name}\": {e}"),
                ));
            }
        }
    }
    match meta.namespace.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            path.child("namespace"),
            "the object must be namespaced",
        )),
        Some(ns) => {
            for e in names::dns1123_label(ns) {
                errs.push(FieldError::invalid(
                    path.child("namespace"),
                    format!("\"{ns}\": {e}"),
                ));
            }
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        let p = path.child("labels").key(k);
        for e in names::qualified_name(k) {
            errs.push(FieldError::invalid(p.clone(), format!("\"{k}\": {e}")));
        }
        for e in names::label_value(v) {
            errs.push(FieldError::invalid(p.clone(), format!("\"{v}\": {e}")));
        }
    }
    let mut annotations_size = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        annotations_size += k.len() + v.len();
        for e in names::qualified_name(k) {
            errs.push(FieldError::invalid(
                path.child("annotations").key(k),
                format!("\"{k}\": {e}"),
            ));
        }
    }
    if annotations_size > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::new(
            ErrorType::TooLong,
            path.child("annotations"),
            format!("must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        for e in names::qualified_name(f) {
            errs.push(FieldError::invalid(
                path.child("finalizers").index(i),
                format!("\"{f}\": {e}"),
            ));
        }
    }
    for (i, r) in meta.owner_references.iter().flatten().enumerate() {
        let p = path.child("ownerReferences").index(i);
        for (field, value) in [
            ("apiVersion", &r.api_version),
            ("kind", &r.kind),
            ("name", &r.name),
            ("uid", &r.uid),
        ] {
            if value.is_empty() {
                errs.push(FieldError::required(p.child(field), "must not be empty"));
            }
        }
    }
    errs
}

fn validate_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> ErrorList {
    let mut errs = ErrorList::new();
    let path = FieldPath::new("metadata");
    if new.name != old.name {
        errs.push(FieldError::invalid(
            path.child("name"),
            "field is immutable",
        ));
    }
    if new.namespace != old.namespace {
        errs.push(FieldError::invalid(
            path.child("namespace"),
            "field is immutable",
        ));
    }
    errs
}

fn validate_tags(tags: Option<&BTreeMap<String, String>>, path: &FieldPath) -> ErrorList {
    let mut errs = ErrorList::new();
    let Some(tags) = tags else { return errs };
    if tags.len() > MAX_TAGS {
        errs.push(FieldError::new(
            ErrorType::TooMany,
            path.clone(),
            format!("must have at most {MAX_TAGS} entries, has {}", tags.len()),
        ));
    }
    for (k, v) in tags {
        let p = path.key(k);
        if k.is_empty() || k.chars().count() > MAX_TAG_LEN || k.contains('.') {
            errs.push(FieldError::invalid(
                p.clone(),
                format!("tag key \"{k}\" must be 1-{MAX_TAG_LEN} characters without '.'"),
            ));
        }
        if v.chars().count() > MAX_TAG_LEN {
            errs.push(FieldError::new(
                ErrorType::TooLong,
                p,
                format!("tag value must be at most {MAX_TAG_LEN} characters"),
            ));
        }
    }
    errs
}

// === Pipeline ===

/// Sets server-owned fields on a new Pipeline.
pub fn prepare_pipeline_for_create(p: &mut Pipeline, ctx: &CreateContext) {
    p.api_version = API_VERSION.to_owned();
    p.kind = Pipeline::KIND.to_owned();
    prepare_meta_for_create(&mut p.metadata, ctx);
}

/// Validates a new Pipeline.
pub fn validate_pipeline_create(p: &Pipeline) -> Outcome {
    let mut errors = validate_meta(&p.metadata);
    errors.extend(validate_tags(
        p.spec.tags.as_ref(),
        &FieldPath::new("spec").child("tags"),
    ));
    Outcome {
        errors,
        warnings: Vec::new(),
    }
}

/// Carries server-owned fields over from the stored Pipeline.
pub fn prepare_pipeline_for_update(new: &mut Pipeline, old: &Pipeline) {
    new.api_version = API_VERSION.to_owned();
    new.kind = Pipeline::KIND.to_owned();
    prepare_meta_for_update(&mut new.metadata, &old.metadata, new.spec != old.spec);
}

/// Validates a Pipeline update.
pub fn validate_pipeline_update(new: &Pipeline, old: &Pipeline) -> Outcome {
    let mut outcome = validate_pipeline_create(new);
    outcome
        .errors
        .extend(validate_meta_update(&new.metadata, &old.metadata));
    outcome
}

// === PipelineVersion ===

/// The owner reference every version carries to its Pipeline.
pub fn owner_reference(parent: &Pipeline) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: Pipeline::KIND.to_owned(),
        name: parent.metadata.name.clone().unwrap_or_default(),
        uid: parent.metadata.uid.clone().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    }
}

/// Adds (or fixes) the Pipeline owner reference and the two labels, as KFP's mutating webhook
/// does on create and update. Other owner references and labels are left alone.
pub fn apply_parent(v: &mut PipelineVersion, parent: &Pipeline) {
    let owner = owner_reference(parent);
    let refs = v.metadata.owner_references.get_or_insert_with(Vec::new);
    match refs
        .iter_mut()
        .find(|r| r.kind == Pipeline::KIND && r.api_version == API_VERSION)
    {
        Some(existing) => *existing = owner,
        None => refs.push(owner),
    }
    let labels = v.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        LABEL_PIPELINE_ID.to_owned(),
        parent.metadata.uid.clone().unwrap_or_default(),
    );
    labels.insert(
        LABEL_PIPELINE_NAME.to_owned(),
        names::truncate_label_value(
            parent.metadata.name.as_deref().unwrap_or_default(),
            names::DNS1123_LABEL_MAX,
        ),
    );
}

/// Sets server-owned fields on a new PipelineVersion: metadata, the parent's owner reference and
/// labels (when the parent is known), and the READY condition. A status sent by the client is
/// dropped, as for every resource with a status subresource.
pub fn prepare_version_for_create(v: &mut PipelineVersion, ctx: &CreateContext, parent: Parent) {
    v.api_version = API_VERSION.to_owned();
    v.kind = PipelineVersion::KIND.to_owned();
    prepare_meta_for_create(&mut v.metadata, ctx);
    if let Parent::Found(p) = parent {
        apply_parent(v, p);
    }
    v.status = Some(PipelineVersionStatus {
        conditions: vec![SimplifiedCondition::ready()],
    });
}

/// Validates a new PipelineVersion, including its pipeline spec.
pub fn validate_version_create(v: &PipelineVersion, parent: Parent) -> Outcome {
    let mut errors = validate_meta(&v.metadata);
    let mut warnings = Vec::new();
    let spec = FieldPath::new("spec");
    let s = &v.spec;
    match s.pipeline_name.as_deref() {
        None | Some("") => errors.push(FieldError::required(
            spec.child("pipelineName"),
            "the name of the Pipeline this version belongs to is required",
        )),
        Some(name) => {
            for e in names::dns1123_subdomain(name) {
                errors.push(FieldError::invalid(
                    spec.child("pipelineName"),
                    format!("\"{name}\": {e}"),
                ));
            }
            if matches!(parent, Parent::Missing) {
                errors.push(FieldError::not_found(
                    spec.child("pipelineName"),
                    format!(
                        "Pipeline \"{name}\" does not exist in namespace \"{}\"; create the \
                         Pipeline first",
                        v.metadata.namespace.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    if let Some(vn) = s.version_name.as_deref() {
        for e in names::version_name(vn) {
            errors.push(FieldError::invalid(
                spec.child("versionName"),
                format!("\"{vn}\": {e}"),
            ));
        }
    }
    errors.extend(validate_tags(s.tags.as_ref(), &spec.child("tags")));
    match &s.pipeline_spec {
        None => errors.push(FieldError::required(
            spec.child("pipelineSpec"),
            "the compiled pipeline (KFP IR) is required",
        )),
        Some(ps) => {
            let ps_path = spec.child("pipelineSpec");
            errors.extend(
                ir::validate_pipeline_spec(ps)
                    .into_iter()
                    .map(|e| e.under(&ps_path)),
            );
            if let Some(platform) = &s.platform_spec {
                let pp = spec.child("platformSpec");
                errors.extend(
                    ir::validate_platform_spec(platform, ps)
                        .into_iter()
                        .map(|e| e.under(&pp)),
                );
            }
            if let Some(e) = ir::check_size(ps, s.platform_spec.as_ref()) {
                errors.push(e.under(&ps_path));
            }
            let info_name = ps
                .pointer("/pipelineInfo/name")
                .or_else(|| ps.pointer("/pipeline_info/name"))
                .and_then(|n| n.as_str());
            if let (Some(info_name), Some(name)) = (info_name, v.metadata.name.as_deref())
                && info_name != name
            {
                warnings.push(format!(
                    "spec.pipelineSpec.pipelineInfo.name \"{info_name}\" differs from \
                         metadata.name \"{name}\""
                ));
            }
        }
    }
    if let Some(status) = &v.status {
        errors.extend(validate_status(status));
    }
    Outcome { errors, warnings }
}

/// The spec fields that may change after creation.
pub const MUTABLE_VERSION_SPEC_FIELDS: &[&str] = &["displayName", "tags"];

/// Carries server-owned fields over from the stored version. The main resource cannot change
/// status (that is the status subresource's job), and the parent's owner reference and labels
/// are re-applied when the parent is known.
pub fn prepare_version_for_update(
    new: &mut PipelineVersion,
    old: &PipelineVersion,
    parent: Parent,
) {
    new.api_version = API_VERSION.to_owned();
    new.kind = PipelineVersion::KIND.to_owned();
    new.status.clone_from(&old.status);
    prepare_meta_for_update(&mut new.metadata, &old.metadata, new.spec != old.spec);
    if let Parent::Found(p) = parent {
        apply_parent(new, p);
    }
}

/// Validates a PipelineVersion update: metadata rules, tags, and the immutability of the spec
/// except `displayName` and `tags`.
pub fn validate_version_update(new: &PipelineVersion, old: &PipelineVersion) -> Outcome {
    let mut errors = validate_meta(&new.metadata);
    errors.extend(validate_meta_update(&new.metadata, &old.metadata));
    let spec = FieldPath::new("spec");
    errors.extend(validate_tags(new.spec.tags.as_ref(), &spec.child("tags")));
    let mut a = new.spec.clone();
    let mut b = old.spec.clone();
    a.display_name = None;
    a.tags = None;
    b.display_name = None;
    b.tags = None;
    if a != b {
        let (av, bv) = (
            serde_json::to_value(&a).unwrap_or_default(),
            serde_json::to_value(&b).unwrap_or_default(),
        );
        let mut changed: Vec<String> = Vec::new();
        if let (Some(ao), Some(bo)) = (av.as_object(), bv.as_object()) {
            for k in ao.keys().chain(bo.keys()) {
                if ao.get(k) != bo.get(k) && !changed.contains(k) {
                    changed.push(k.clone());
                }
            }
        }
        changed.sort();
        for k in changed {
            errors.push(FieldError::forbidden(
                spec.child(&k),
                "Pipeline spec is immutable; only mutable fields (displayName, tags) can be \
                 updated",
            ));
        }
    }
    Outcome {
        errors,
        warnings: Vec::new(),
    }
}

/// The status subresource: only `status` (and managedFields, which the caller handles) is taken
/// from the request; everything else comes from the stored object.
pub fn prepare_version_for_status_update(new: &mut PipelineVersion, old: &PipelineVersion) {
    let status = new.status.take();
    let managed = new.metadata.managed_fields.take();
    let rv = new.metadata.resource_version.take();
    *new = old.clone();
    new.status = status;
    new.metadata.managed_fields = managed;
    new.metadata.resource_version = rv;
}

/// Validates a status.
pub fn validate_status(status: &PipelineVersionStatus) -> ErrorList {
    let mut errs = ErrorList::new();
    let path = FieldPath::new("status").child("conditions");
    for (i, c) in status.conditions.iter().enumerate() {
        let p = path.index(i);
        if c.type_.is_empty() {
            errs.push(FieldError::required(p.child("type"), "must not be empty"));
        } else {
            for e in names::qualified_name(&c.type_) {
                errs.push(FieldError::invalid(
                    p.child("type"),
                    format!("\"{}\": {e}", c.type_),
                ));
            }
        }
        if !matches!(c.status.as_str(), "True" | "False" | "Unknown") {
            errs.push(FieldError::new(
                ErrorType::NotSupported,
                p.child("status"),
                format!(
                    "\"{}\": supported values: \"True\", \"False\", \"Unknown\"",
                    c.status
                ),
            ));
        }
        if c.reason.is_empty() {
            errs.push(FieldError::required(p.child("reason"), "must not be empty"));
        }
        if c.message.len() > MAX_CONDITION_MESSAGE {
            errs.push(FieldError::new(
                ErrorType::TooLong,
                p.child("message"),
                format!("may not be more than {MAX_CONDITION_MESSAGE} bytes"),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PipelineSpec, PipelineVersionSpec};
    use serde_json::json;

    fn ctx() -> CreateContext {
        CreateContext {
            uid: "11111111-2222-3333-4444-555555555555".into(),
            now: "2026-01-02T03:04:05.678Z".parse().unwrap(),
        }
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        }
    }

    fn pipeline() -> Pipeline {
        let mut p = Pipeline {
            metadata: meta("hello-world"),
            spec: PipelineSpec::default(),
            ..Default::default()
        };
        prepare_pipeline_for_create(&mut p, &ctx());
        p
    }

    fn ir() -> serde_json::Value {
        json!({
            "pipelineInfo": {"name": "hello-world"},
            "schemaVersion": "2.1.0",
            "root": {"dag": {"tasks": {}}}
        })
    }

    fn version(name: &str) -> PipelineVersion {
        PipelineVersion {
            metadata: meta(name),
            spec: PipelineVersionSpec {
                pipeline_name: Some("hello-world".into()),
                pipeline_spec: Some(ir()),
                display_name: Some("v1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn create_sets_owner_labels_condition_and_whole_second_timestamp() {
        let parent = pipeline();
        let mut v = version("hello-world");
        v.status = Some(PipelineVersionStatus {
            conditions: vec![SimplifiedCondition {
                type_: "Fake".into(),
                status: "False".into(),
                reason: "X".into(),
                message: "client-sent".into(),
            }],
        });
        prepare_version_for_create(&mut v, &ctx(), Parent::Found(&parent));
        let out = validate_version_create(&v, Parent::Found(&parent));
        assert!(out.is_ok(), "{:?}", out.errors);
        assert!(out.warnings.is_empty());
        let labels = v.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_PIPELINE_ID], ctx().uid);
        assert_eq!(labels[LABEL_PIPELINE_NAME], "hello-world");
        let owner = &v.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.block_owner_deletion
            ),
            ("Pipeline", "hello-world", Some(true))
        );
        assert_eq!(
            v.status.unwrap().conditions,
            vec![SimplifiedCondition::ready()]
        );
        assert_eq!(
            v.metadata.creation_timestamp.unwrap().0.to_string(),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(v.metadata.generation, Some(1));
    }

    #[test]
    fn missing_parent_and_bad_names_are_field_errors() {
        let mut v = version("Bad_Name");
        v.spec.version_name = Some("V1".into());
        let out = validate_version_create(&v, Parent::Missing);
        let paths: Vec<&str> = out.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["metadata.name", "spec.pipelineName", "spec.versionName"]
        );
        assert!(
            out.errors[1]
                .detail
                .contains("Pipeline \"hello-world\" does not exist")
        );
    }

    #[test]
    fn ir_errors_are_placed_under_spec_pipeline_spec() {
        let mut v = version("hello-world");
        v.spec.pipeline_spec = Some(json!({"pipelineInfo": {"name": "x"}, "root": {"dag": {}}}));
        let out = validate_version_create(&v, Parent::Unknown);
        assert_eq!(
            out.errors[0].to_string(),
            "spec.pipelineSpec.schemaVersion: KFP only supports schema version 2.1.0; schemaVersion is missing"
        );
    }

    #[test]
    fn differing_pipeline_info_name_is_a_warning() {
        let v = version("hello-world-v2");
        let out = validate_version_create(&v, Parent::Unknown);
        assert!(out.is_ok());
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0]
                .contains("\"hello-world\" differs from metadata.name \"hello-world-v2\"")
        );
    }

    #[test]
    fn version_spec_is_immutable_except_display_name_and_tags() {
        let parent = pipeline();
        let mut old = version("hello-world");
        prepare_version_for_create(&mut old, &ctx(), Parent::Found(&parent));

        let mut ok = old.clone();
        ok.spec.display_name = Some("renamed".into());
        ok.spec.tags = Some([("team".to_owned(), "ml".to_owned())].into());
        ok.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "yes".into());
        prepare_version_for_update(&mut ok, &old, Parent::Found(&parent));
        assert!(validate_version_update(&ok, &old).is_ok());
        assert_eq!(ok.metadata.generation, Some(2));

        let mut bad = old.clone();
        bad.spec.pipeline_spec.as_mut().unwrap()["root"] = json!({"dag": {"tasks": {"x": {}}}});
        bad.spec.description = Some("new".into());
        let out = validate_version_update(&bad, &old);
        let paths: Vec<&str> = out.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["spec.description", "spec.pipelineSpec"]);
        assert!(
            out.errors[0]
                .detail
                .starts_with("Pipeline spec is immutable")
        );
    }

    #[test]
    fn update_keeps_server_owned_fields_and_status() {
        let parent = pipeline();
        let mut old = version("hello-world");
        prepare_version_for_create(&mut old, &ctx(), Parent::Found(&parent));
        let mut new = old.clone();
        new.metadata.uid = Some("forged".into());
        new.metadata.labels = None;
        new.status = None;
        prepare_version_for_update(&mut new, &old, Parent::Found(&parent));
        assert_eq!(new.metadata.uid, old.metadata.uid);
        assert_eq!(new.status, old.status);
        assert_eq!(
            new.metadata.labels, old.metadata.labels,
            "labels are re-applied"
        );
        assert_eq!(
            new.metadata.generation,
            Some(1),
            "no spec change, no new generation"
        );
    }

    #[test]
    fn status_update_takes_only_status() {
        let mut old = version("hello-world");
        prepare_version_for_create(&mut old, &ctx(), Parent::Unknown);
        let mut new = old.clone();
        new.spec.description = Some("sneaky".into());
        new.status = Some(PipelineVersionStatus {
            conditions: vec![SimplifiedCondition {
                type_: "PipelineVersionStatus".into(),
                status: "Maybe".into(),
                reason: "".into(),
                message: "".into(),
            }],
        });
        prepare_version_for_status_update(&mut new, &old);
        assert_eq!(new.spec, old.spec);
        let errs = validate_status(new.status.as_ref().unwrap());
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["status.conditions[0].status", "status.conditions[0].reason"]
        );
    }

    #[test]
    fn tags_follow_kfp_limits() {
        let mut p = pipeline();
        let mut tags: BTreeMap<String, String> =
            (0..21).map(|i| (format!("k{i}"), "v".into())).collect();
        tags.insert("a.b".into(), "x".repeat(64));
        p.spec.tags = Some(tags);
        let out = validate_pipeline_create(&p);
        let kinds: Vec<ErrorType> = out.errors.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![ErrorType::TooMany, ErrorType::Invalid, ErrorType::TooLong]
        );
    }

    #[test]
    fn names_and_namespaces_are_immutable() {
        let old = pipeline();
        let mut new = old.clone();
        new.metadata.name = Some("other".into());
        prepare_pipeline_for_update(&mut new, &old);
        let out = validate_pipeline_update(&new, &old);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            out.errors[0].to_string(),
            "metadata.name: field is immutable"
        );
    }
}
