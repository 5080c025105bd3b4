//! OpenAPI v2 (`/openapi/v2`) and v3 (`/openapi/v3/apis/pipelines.kubeflow.org/v2beta1`) documents,
//! generated from the Rust types with schemars (no hand-maintained JSON). Kind schemas carry
//! `x-kubernetes-group-version-kind` (kubectl explain, client-go's server-side-apply type
//! converter and Argo CD's diff need it); `pipelineSpec` and `platformSpec` carry
//! `x-kubernetes-preserve-unknown-fields`. `metadata` refers to the apimachinery `ObjectMeta`
//! definitions generated from k8s-openapi, under their canonical names.
//!
//! Built once at start by the caller and served from memory with ETags; no I/O here.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::fieldpath::ListType;
use crate::resource::{RESOURCES, Resource};
use crate::types::{GROUP, PipelineList, PipelineVersionList, VERSION};

/// Definition-name prefix of our types (kube-apiserver's convention: the reversed group).
pub const DEFINITION_PREFIX: &str = "org.kubeflow.pipelines.v2beta1.";

/// schemars `schema_with` helper: a schemaless JSON object kept verbatim.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Which document flavour to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Swagger 2.0: `#/definitions/`.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`.
    V3,
}

impl Flavour {
    fn ref_prefix(self) -> &'static str {
        match self {
            Flavour::V2 => "#/definitions/",
            Flavour::V3 => "#/components/schemas/",
        }
    }
}

fn canonical_name(local: &str) -> String {
    if local.starts_with("io.k8s.") {
        return local.to_owned();
    }
    format!("{DEFINITION_PREFIX}{local}")
}

/// Rewrites `$ref`s to canonical names and drops keys Kubernetes schemas do not use.
fn normalise(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(local) = r.rsplit('/').next()
            {
                *r = format!("{prefix}{}", canonical_name(local));
            }
            map.remove("nullable");
            map.remove("$schema");
            // Option<Struct> comes out as anyOf [ref, null]; Kubernetes schemas say allOf [ref].
            if let Some(Value::Array(any)) = map.get("anyOf") {
                let is_null = |v: &Value| {
                    v.get("type") == Some(&json!("null")) || v.get("enum") == Some(&json!([null]))
                };
                if any.len() == 2 && any.iter().any(is_null) {
                    let keep: Vec<Value> = any.iter().filter(|v| !is_null(v)).cloned().collect();
                    map.remove("anyOf");
                    map.insert("allOf".into(), Value::Array(keep));
                }
            }
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = clean_description(d);
            }
            for v in map.values_mut() {
                normalise(v, prefix);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalise(v, prefix)),
        _ => {}
    }
}

/// Rustdoc markup out of doc comments: intra-doc links and hard line breaks.
fn clean_description(d: &str) -> String {
    let text = d.replace("[`", "`").replace("`]", "`");
    text.split("\n\n")
        .map(|para| para.replace('\n', " "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn gvk(kind: &str) -> Value {
    json!([{"group": GROUP, "kind": kind, "version": VERSION}])
}

/// Every schema definition of the group, keyed by canonical name.
pub fn definitions(flavour: Flavour) -> Map<String, Value> {
    let mut settings = SchemaSettings::openapi3();
    if flavour == Flavour::V2 {
        settings.definitions_path = "/definitions".into();
    }
    let mut generator = settings.into_generator();
    fn add<T: JsonSchema>(g: &mut SchemaGenerator) {
        g.subschema_for::<T>();
    }
    add::<crate::Pipeline>(&mut generator);
    add::<crate::PipelineVersion>(&mut generator);
    add::<PipelineList>(&mut generator);
    add::<PipelineVersionList>(&mut generator);
    add::<meta::Status>(&mut generator);
    add::<meta::DeleteOptions>(&mut generator);
    add::<meta::WatchEvent<Value>>(&mut generator);
    add::<meta::Patch>(&mut generator);
    let raw = generator.take_definitions(true);
    let prefix = flavour.ref_prefix();
    let mut out = Map::new();
    for (local, mut schema) in raw {
        normalise(&mut schema, prefix);
        let name = canonical_name(&local);
        if let Some(short) = name.strip_prefix(DEFINITION_PREFIX) {
            decorate(short, &mut schema);
        }
        out.insert(name, schema);
    }
    declare_field_types(&mut out);
    out
}

/// Declares the list and map types field management uses (the resource table's, plus
/// ObjectMeta's) as `x-kubernetes-list-type` / `-list-map-keys` / `-map-type`, so a client-side
/// apply type converter built from these schemas agrees with the server.
fn declare_field_types(defs: &mut Map<String, Value>) {
    let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    for r in RESOURCES {
        let kind = format!("{DEFINITION_PREFIX}{}", r.kind);
        let lists = crate::fieldpath::METADATA_LISTS
            .iter()
            .chain(r.fields.lists);
        for (path, t) in lists {
            let ext = match t {
                ListType::Atomic => json!({"x-kubernetes-list-type": "atomic"}),
                ListType::Set => json!({"x-kubernetes-list-type": "set"}),
                ListType::Map(keys) => {
                    json!({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys})
                }
            };
            let (root, rest) = match path.strip_prefix("metadata.") {
                Some(rest) => (meta.to_owned(), rest.to_owned()),
                None => (kind.clone(), (*path).to_owned()),
            };
            extend_at(defs, &root, &rest, &ext);
        }
        for path in r.fields.atomic {
            extend_at(
                defs,
                &kind,
                path,
                &json!({"x-kubernetes-map-type": "atomic"}),
            );
        }
    }
}

/// Adds `ext`'s keys to the property schema at the dotted `path` under definition `root`,
/// following `$ref` / `allOf: [$ref]` to other definitions.
fn extend_at(defs: &mut Map<String, Value>, root: &str, path: &str, ext: &Value) {
    let mut def = root.to_owned();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(prop) = defs
            .get(&def)
            .and_then(|d| d.pointer(&format!("/properties/{part}")))
        else {
            return;
        };
        if i + 1 == parts.len() {
            if let (Some(Value::Object(target)), Some(add)) = (
                defs.get_mut(&def)
                    .and_then(|d| d.pointer_mut(&format!("/properties/{part}"))),
                ext.as_object(),
            ) {
                for (k, v) in add {
                    target.insert(k.clone(), v.clone());
                }
            }
            return;
        }
        let reference = prop
            .get("$ref")
            .or_else(|| prop.pointer("/allOf/0/$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next());
        match reference {
            Some(name) => def = name.to_owned(),
            None => return,
        }
    }
}

/// Kind-level decorations: GVK extension, apiVersion/kind descriptions.
fn decorate(short: &str, schema: &mut Value) {
    let kinds: Vec<&str> = RESOURCES
        .iter()
        .flat_map(|r| [r.kind, r.list_kind])
        .collect();
    if !kinds.contains(&short) {
        return;
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.insert("x-kubernetes-group-version-kind".into(), gvk(short));
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
        );
        props.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
        );
        for p in props.values_mut() {
            if let Some(p) = p.as_object_mut() {
                p.remove("default");
            }
        }
    }
    obj.remove("required");
    if short.ends_with("List") {
        obj.insert("required".into(), json!(["items"]));
    }
}

fn schema_ref(flavour: Flavour, name: &str) -> Value {
    json!({"$ref": format!("{}{}{}", flavour.ref_prefix(), DEFINITION_PREFIX, name)})
}

fn response(flavour: Flavour, schema: Value) -> Value {
    match flavour {
        Flavour::V2 => json!({"200": {"description": "OK", "schema": schema}}),
        Flavour::V3 => json!({"200": {"description": "OK", "content": {
            "application/json": {"schema": schema},
            "application/yaml": {"schema": schema},
        }}}),
    }
}

fn operation(flavour: Flavour, r: &Resource, action: &str, id: &str, schema: Value) -> Value {
    json!({
        "operationId": id,
        "tags": [format!("{}_{}", GROUP.replace('.', "_"), VERSION)],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": GROUP, "kind": r.kind, "version": VERSION},
        "responses": response(flavour, schema),
    })
}

fn query_param(flavour: Flavour, name: &str, description: &str, type_: &str) -> Value {
    match flavour {
        Flavour::V2 => {
            json!({"name": name, "in": "query", "type": type_, "uniqueItems": true, "description": description})
        }
        Flavour::V3 => {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": true}})
        }
    }
}

/// Query parameters of write operations; kubectl looks for `fieldValidation` on the PATCH
/// operation of a GVK to decide to validate on the server (client-go `QueryParamVerifierV3`).
fn write_params(flavour: Flavour, patch: bool) -> Value {
    let mut ps = vec![
        query_param(
            flavour,
            "dryRun",
            "When present, indicates that modifications should not be persisted. The only valid value is All.",
            "string",
        ),
        query_param(
            flavour,
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
            "string",
        ),
        query_param(
            flavour,
            "fieldValidation",
            "How the server handles unknown or duplicate fields: Ignore, Warn (default) or Strict.",
            "string",
        ),
    ];
    if patch {
        ps.push(query_param(flavour, "force", "Force is going to \"force\" Apply requests: re-acquire conflicting fields owned by other people.", "boolean"));
    }
    Value::Array(ps)
}

fn list_params(flavour: Flavour) -> Value {
    Value::Array(
        [
            ("allowWatchBookmarks", "boolean"),
            ("continue", "string"),
            ("fieldSelector", "string"),
            ("labelSelector", "string"),
            ("limit", "integer"),
            ("resourceVersion", "string"),
            ("resourceVersionMatch", "string"),
            ("sendInitialEvents", "boolean"),
            ("timeoutSeconds", "integer"),
            ("watch", "boolean"),
        ]
        .iter()
        .map(|(n, t)| query_param(flavour, n, n, t))
        .collect(),
    )
}

fn path_params(flavour: Flavour, names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| match flavour {
                Flavour::V2 => json!({"name": n, "in": "path", "required": true, "type": "string", "uniqueItems": true}),
                Flavour::V3 => json!({"name": n, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}),
            })
            .collect(),
    )
}

/// The paths object: list/create/deletecollection, get/replace/patch/delete, watch-less (watch is
/// `?watch=true` on list, as in kube-apiserver's v3 documents), all-namespaces list, and status.
pub fn paths(flavour: Flavour) -> Map<String, Value> {
    let mut paths = Map::new();
    let base = format!("/apis/{GROUP}/{VERSION}");
    for r in RESOURCES {
        let k = r.kind;
        let obj = schema_ref(flavour, k);
        let list = schema_ref(flavour, r.list_kind);
        let status = json!({"$ref": format!("{}io.k8s.apimachinery.pkg.apis.meta.v1.Status", flavour.ref_prefix())});
        let mut coll = Map::new();
        coll.insert(
            "get".into(),
            operation(
                flavour,
                r,
                "list",
                &format!("listNamespaced{k}"),
                list.clone(),
            ),
        );
        coll.insert(
            "post".into(),
            operation(
                flavour,
                r,
                "post",
                &format!("createNamespaced{k}"),
                obj.clone(),
            ),
        );
        coll.insert(
            "delete".into(),
            operation(
                flavour,
                r,
                "deletecollection",
                &format!("deleteCollectionNamespaced{k}"),
                status.clone(),
            ),
        );
        coll.insert("parameters".into(), path_params(flavour, &["namespace"]));
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            Value::Object(coll),
        );

        let mut item = Map::new();
        item.insert(
            "get".into(),
            operation(
                flavour,
                r,
                "get",
                &format!("readNamespaced{k}"),
                obj.clone(),
            ),
        );
        item.insert(
            "put".into(),
            operation(
                flavour,
                r,
                "put",
                &format!("replaceNamespaced{k}"),
                obj.clone(),
            ),
        );
        item.insert(
            "patch".into(),
            operation(
                flavour,
                r,
                "patch",
                &format!("patchNamespaced{k}"),
                obj.clone(),
            ),
        );
        item.insert(
            "delete".into(),
            operation(
                flavour,
                r,
                "delete",
                &format!("deleteNamespaced{k}"),
                status,
            ),
        );
        item.insert(
            "parameters".into(),
            path_params(flavour, &["name", "namespace"]),
        );
        paths.insert(
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            Value::Object(item),
        );

        paths.insert(
            format!("{base}/{}", r.plural),
            json!({"get": operation(flavour, r, "list", &format!("list{k}ForAllNamespaces"), list)}),
        );
        if r.status_subresource {
            let mut st = Map::new();
            st.insert(
                "get".into(),
                operation(
                    flavour,
                    r,
                    "get",
                    &format!("readNamespaced{k}Status"),
                    obj.clone(),
                ),
            );
            st.insert(
                "put".into(),
                operation(
                    flavour,
                    r,
                    "put",
                    &format!("replaceNamespaced{k}Status"),
                    obj.clone(),
                ),
            );
            st.insert(
                "patch".into(),
                operation(
                    flavour,
                    r,
                    "patch",
                    &format!("patchNamespaced{k}Status"),
                    obj,
                ),
            );
            st.insert(
                "parameters".into(),
                path_params(flavour, &["name", "namespace"]),
            );
            paths.insert(
                format!(
                    "{base}/namespaces/{{namespace}}/{}/{{name}}/status",
                    r.plural
                ),
                Value::Object(st),
            );
        }
    }
    // Query parameters by action (after building, so every path gets them the same way).
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let params = match op.get("x-kubernetes-action").and_then(Value::as_str) {
                Some("list") => list_params(flavour),
                Some("post") | Some("put") => write_params(flavour, false),
                Some("patch") => write_params(flavour, true),
                _ => continue,
            };
            op["parameters"] = params;
        }
    }
    paths
}

fn info() -> Value {
    json!({"title": "Kubeflow Pipelines (pipelines.kubeflow.org)", "version": VERSION})
}

/// `/openapi/v2`: the whole Swagger 2.0 document of this server.
pub fn v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths(Flavour::V2),
        "definitions": definitions(Flavour::V2),
    })
}

/// `/openapi/v3/apis/pipelines.kubeflow.org/v2beta1`: the group-version's OpenAPI 3.0 document.
pub fn v3_group() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths(Flavour::V3),
        "components": {"schemas": definitions(Flavour::V3)},
    })
}

/// The relative URL of the group-version document in the v3 discovery root.
pub fn v3_group_path() -> String {
    format!("apis/{GROUP}/{VERSION}")
}

/// `/openapi/v3`: the discovery root pointing at the group-version document by hash.
pub fn v3_root(group_hash: &str) -> Value {
    json!({"paths": {
        v3_group_path(): {"serverRelativeURL": format!("/openapi/v3/{}?hash={group_hash}", v3_group_path())}
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_map_types_are_declared_as_field_management_uses_them() {
        for flavour in [Flavour::V2, Flavour::V3] {
            let d = definitions(flavour);
            let meta = &d["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
            assert_eq!(meta["finalizers"]["x-kubernetes-list-type"], "set");
            assert_eq!(meta["ownerReferences"]["x-kubernetes-list-type"], "map");
            assert_eq!(
                meta["ownerReferences"]["x-kubernetes-list-map-keys"],
                json!(["uid"])
            );
            let status = &d[&format!("{DEFINITION_PREFIX}PipelineVersionStatus")]["properties"];
            assert_eq!(
                status["conditions"]["x-kubernetes-list-map-keys"],
                json!(["type"])
            );
            let spec = &d[&format!("{DEFINITION_PREFIX}PipelineVersionSpec")]["properties"];
            assert_eq!(spec["pipelineSpec"]["x-kubernetes-map-type"], "atomic");
        }
    }

    #[test]
    fn kinds_carry_gvk_and_schemaless_specs_preserve_unknown_fields() {
        for flavour in [Flavour::V2, Flavour::V3] {
            let defs = definitions(flavour);
            let pv = &defs["org.kubeflow.pipelines.v2beta1.PipelineVersion"];
            assert_eq!(
                pv["x-kubernetes-group-version-kind"][0]["kind"],
                "PipelineVersion"
            );
            assert_eq!(
                pv["properties"]["metadata"]["allOf"][0]["$ref"],
                format!(
                    "{}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                    flavour.ref_prefix()
                )
            );
            assert!(pv["properties"]["status"]["allOf"][0]["$ref"].is_string());
            let spec_ref = pv["properties"]["spec"]["allOf"][0]["$ref"]
                .as_str()
                .unwrap();
            let spec = &defs[spec_ref.rsplit('/').next().unwrap()];
            assert_eq!(
                spec["properties"]["pipelineSpec"]["x-kubernetes-preserve-unknown-fields"],
                true
            );
            assert_eq!(
                spec["properties"]["platformSpec"]["x-kubernetes-preserve-unknown-fields"],
                true
            );
            assert!(spec["properties"].get("codeSourceURL").is_some());
            assert!(defs.contains_key("org.kubeflow.pipelines.v2beta1.PipelineList"));
            assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
            assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
            // Every $ref resolves.
            let text = serde_json::to_string(&defs).unwrap();
            for part in text.split("\"$ref\":\"").skip(1) {
                let target = part.split('"').next().unwrap();
                let name = target.strip_prefix(flavour.ref_prefix()).expect(target);
                assert!(defs.contains_key(name), "dangling $ref {target}");
            }
        }
    }

    #[test]
    fn v3_root_links_by_hash() {
        let root = v3_root("abc");
        assert_eq!(
            root["paths"]["apis/pipelines.kubeflow.org/v2beta1"]["serverRelativeURL"],
            "/openapi/v3/apis/pipelines.kubeflow.org/v2beta1?hash=abc"
        );
        assert_eq!(v3_group()["openapi"], "3.0.0");
        assert_eq!(v2()["swagger"], "2.0");
        // kubectl decides on server-side validation from the PATCH operation's parameters.
        let doc = v3_group();
        for (path, item) in doc["paths"].as_object().unwrap() {
            if let Some(patch) = item.get("patch") {
                let names: Vec<&str> = patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                assert!(names.contains(&"fieldValidation"), "{path}");
            }
        }
    }
}
