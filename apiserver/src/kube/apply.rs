//! Server-side apply (`application/apply-patch+yaml`): merge the applied configuration into the
//! live object, remove fields this manager applied before and no longer applies (unless another
//! manager owns them), and refuse to change fields another manager owns (409 Conflict listing
//! them) unless `force=true`, which transfers ownership. Ownership is the managedFields sets
//! of [`super::managed`]; lists, `pipelineSpec` and `platformSpec` are atomic.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::managed;

/// A field path (`["spec", "displayName"]`).
pub type Path = Vec<String>;

/// The leaf paths of a `FieldsV1` set.
pub fn leaves(fields: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    fn go(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k[2..].to_owned());
            go(child, prefix, out);
            prefix.pop();
        }
    }
    go(fields, &mut Vec::new(), &mut out);
    out
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Deep-merges `applied` into `live`: maps merge key by key, everything else (and atomic
/// fields) is replaced.
fn merge(live: &mut Value, applied: &Value, depth: usize) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if depth < 64 => {
            for (k, av) in a {
                let atomic = k == "pipelineSpec" || k == "platformSpec";
                match l.get_mut(k) {
                    Some(lv) if !atomic && lv.is_object() && av.is_object() => {
                        merge(lv, av, depth + 1)
                    }
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// A conflict: a field another manager owns, with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The field, as `.spec.displayName`.
    pub field: String,
}

/// The outcome of an apply on an existing object.
pub struct Applied {
    /// The new object, managedFields updated.
    pub object: Value,
}

fn entries(v: &Value) -> Vec<Value> {
    v.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Applies `applied` by `manager` to `live`.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Applied, Vec<Conflict>> {
    let applied_set = leaves(&managed::fields_of(applied, false));
    let mut all = entries(live);
    let mine_before: BTreeSet<Path> = all
        .iter()
        .filter(|e| {
            e["manager"] == manager && e["operation"] == "Apply" && e.get("subresource").is_none()
        })
        .flat_map(|e| leaves(&e["fieldsV1"]))
        .collect();
    // Conflicts: fields others own that this apply would change.
    let mut conflicts = Vec::new();
    for e in all
        .iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
    {
        if e.get("subresource").and_then(Value::as_str) == Some("status") {
            continue;
        }
        let theirs = leaves(&e["fieldsV1"]);
        for p in applied_set.intersection(&theirs) {
            if get(live, p) != get(applied, p) {
                conflicts.push(Conflict {
                    manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                    field: format!(".{}", p.join(".")),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut object = live.clone();
    merge(&mut object, applied, 0);
    // Fields this manager applied before and dropped now go, unless someone else owns them.
    let others: BTreeSet<Path> = all
        .iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
        .flat_map(|e| leaves(&e["fieldsV1"]))
        .collect();
    for p in mine_before.difference(&applied_set) {
        if !others.contains(p) {
            remove(&mut object, p);
        }
    }
    // Forced: the fields move to this manager.
    if force {
        let taken: BTreeSet<Path> = conflicts
            .iter()
            .map(|c| {
                c.field
                    .trim_start_matches('.')
                    .split('.')
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        for e in all.iter_mut() {
            if e["manager"] == manager && e["operation"] == "Apply" {
                continue;
            }
            let kept: BTreeSet<Path> = leaves(&e["fieldsV1"]).difference(&taken).cloned().collect();
            e["fieldsV1"] = to_fields(&kept);
        }
        all.retain(|e| e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(all));
    }
    let previous = object.clone();
    // Record this manager's Apply entry as exactly the applied set.
    managed::record(&mut object, Some(&previous), manager, "Apply", None);
    if let Some(Value::Array(es)) = object.pointer_mut("/metadata/managedFields")
        && let Some(e) = es
            .iter_mut()
            .find(|e| e["manager"] == manager && e["operation"] == "Apply")
    {
        e["fieldsV1"] = managed::fields_of(applied, false);
    }
    Ok(Applied { object })
}

/// Rebuilds a `FieldsV1` set from leaf paths.
pub fn to_fields(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_with(entries: Value) -> Value {
        json!({"apiVersion": "a", "kind": "Pipeline",
            "metadata": {"name": "p", "labels": {"team": "x", "extra": "y"}, "managedFields": entries},
            "spec": {"displayName": "D", "description": "old"}})
    }

    #[test]
    fn apply_merges_and_records_ownership() {
        let live = live_with(json!([]));
        let applied = json!({"apiVersion": "a", "kind": "Pipeline", "metadata": {"name": "p", "labels": {"team": "z"}}, "spec": {"displayName": "New"}});
        let out = apply(&live, &applied, "kubectl", false).unwrap().object;
        assert_eq!(out["spec"]["displayName"], "New");
        assert_eq!(out["spec"]["description"], "old", "fields not applied stay");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"team": "z", "extra": "y"})
        );
        let e = &out["metadata"]["managedFields"][0];
        assert_eq!(
            (e["manager"].as_str(), e["operation"].as_str()),
            (Some("kubectl"), Some("Apply"))
        );
        assert!(
            leaves(&e["fieldsV1"]).contains(&vec!["spec".to_owned(), "displayName".to_owned()])
        );
    }

    #[test]
    fn conflicts_with_other_managers_unless_forced() {
        let editor = json!([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:displayName": {}}}}]);
        let live = live_with(editor);
        let applied = json!({"metadata": {"name": "p"}, "spec": {"displayName": "Mine"}});
        let err = apply(&live, &applied, "flux", false).err().unwrap();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "kubectl-edit".into(),
                field: ".spec.displayName".into()
            }]
        );
        let out = apply(&live, &applied, "flux", true).unwrap().object;
        assert_eq!(out["spec"]["displayName"], "Mine");
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["flux"], "the editor lost its only field");
        // Same value: no conflict.
        let same = json!({"metadata": {"name": "p"}, "spec": {"displayName": "D"}});
        assert!(apply(&live, &same, "flux", false).is_ok());
    }

    #[test]
    fn fields_dropped_from_the_applied_config_are_removed() {
        let live = live_with(json!([]));
        let first = json!({"metadata": {"name": "p", "labels": {"team": "x"}}, "spec": {"displayName": "D", "description": "old"}});
        let once = apply(&live, &first, "kubectl", false).unwrap().object;
        let second = json!({"metadata": {"name": "p", "labels": {"team": "x"}}, "spec": {"displayName": "D"}});
        let twice = apply(&once, &second, "kubectl", false).unwrap().object;
        assert!(twice["spec"].get("description").is_none(), "{twice}");
        assert_eq!(
            twice["metadata"]["labels"]["extra"], "y",
            "never applied, kept"
        );
    }
}
