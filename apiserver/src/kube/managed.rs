//! `metadata.managedFields`: who set which fields. Each write records an entry for its field
//! manager (`fieldManager`, else the User-Agent's first word) with the operation, API version,
//! time and the set of fields (`FieldsV1`) the object holds. `pipelineSpec`, `platformSpec` and
//! lists are recorded as single fields (atomic), so an entry stays small however large the
//! compiled pipeline is — unlike a CRD, whose schemaless spec records every leaf.
//!
//! A request that sends managedFields different from the stored ones replaces them (kubectl and
//! Flux migrate ownership with a JSON patch of `/metadata/managedFields`); an empty list resets
//! them, as in kube-apiserver.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

/// Fields that are never recorded (server-owned metadata).
const SKIP_METADATA: &[&str] = &[
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

/// Atomic fields: recorded as one field, not walked.
const ATOMIC: &[&str] = &["pipelineSpec", "platformSpec"];

fn walk(value: &Value, depth: usize, out: &mut Map<String, Value>, path: &[&str]) {
    let Value::Object(map) = value else { return };
    for (k, v) in map {
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if path == ["metadata"] && SKIP_METADATA.contains(&k.as_str()) {
            continue;
        }
        let key = format!("f:{k}");
        match v {
            Value::Object(child)
                if !ATOMIC.contains(&k.as_str()) && !child.is_empty() && depth < 32 =>
            {
                let mut sub = Map::new();
                sub.insert(".".into(), json!({}));
                let mut p = path.to_vec();
                p.push(k);
                walk(v, depth + 1, &mut sub, &p);
                out.insert(key, Value::Object(sub));
            }
            _ => {
                out.insert(key, json!({}));
            }
        }
    }
}

/// The `FieldsV1` set of an object's fields (status only when `status` is true; spec and
/// metadata otherwise).
pub fn fields_of(object: &Value, status: bool) -> Value {
    let mut out = Map::new();
    let mut scoped = Map::new();
    if let Some(obj) = object.as_object() {
        for (k, v) in obj {
            if (k == "status") == status {
                scoped.insert(k.clone(), v.clone());
            }
        }
    }
    walk(&Value::Object(scoped), 0, &mut out, &[]);
    Value::Object(out)
}

/// The default manager name: the User-Agent up to its first `/`, as kube-apiserver does.
pub fn default_manager(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

/// Records a write by `manager` in `new`'s managedFields, starting from `old`'s entries unless
/// the request changed them itself.
pub fn record(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
) {
    let old_entries = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .cloned()
        .unwrap_or(Value::Null);
    let sent = new.pointer("/metadata/managedFields").cloned();
    let mut entries: Vec<Value> = match sent {
        // The client rewrote managedFields (ownership migration): take them.
        Some(Value::Array(a)) if Value::Array(a.clone()) != old_entries => a,
        _ => old_entries.as_array().cloned().unwrap_or_default(),
    };
    let status = subresource == Some("status");
    let fields = fields_of(new, status);
    let now = Timestamp::now();
    let time = Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    entries.retain(|e| {
        !(e["manager"] == manager
            && e["operation"] == operation
            && e.get("subresource").and_then(Value::as_str) == subresource)
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": kfp_apiservice::API_VERSION,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    entries.push(entry);
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_spec_is_one_field() {
        let v = json!({"apiVersion": "x", "kind": "PipelineVersion",
            "metadata": {"name": "n", "labels": {"a": "b"}, "uid": "u"},
            "spec": {"pipelineSpec": {"huge": {"tree": [1, 2, 3]}}, "displayName": "d"},
            "status": {"conditions": []}});
        let f = fields_of(&v, false);
        assert_eq!(
            f,
            json!({"f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}},
                   "f:spec": {".": {}, "f:displayName": {}, "f:pipelineSpec": {}}})
        );
        assert_eq!(
            fields_of(&v, true),
            json!({"f:status": {".": {}, "f:conditions": {}}})
        );
    }

    #[test]
    fn record_replaces_own_entry_and_keeps_others() {
        let old =
            json!({"metadata": {"managedFields": [{"manager": "other", "operation": "Update"}]}});
        let mut new = json!({"metadata": {"name": "n"}, "spec": {"displayName": "d"}});
        record(&mut new, Some(&old), "kubectl", "Update", None);
        record(&mut new, Some(&old), "kubectl", "Update", None);
        let entries = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["manager"], "kubectl");
        assert_eq!(entries[1]["fieldsType"], "FieldsV1");
        assert_eq!(
            default_manager(Some("kubectl/v1.35.0 (linux/amd64)")),
            "kubectl"
        );
    }
}
