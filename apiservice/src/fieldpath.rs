//! Field sets as structured-merge-diff (SMD) defines them, for `metadata.managedFields`: paths
//! into an object (`.spec.displayName`, `.metadata.finalizers[="x"]`,
//! `.status.conditions[type="Ready"].status`), sets of paths, the `FieldsV1` encoding, and the
//! three walks server-side apply needs: the set an applied configuration owns ([`to_set`]), what
//! changed between two objects ([`compare`]), and the apply merge ([`merge`]) with pruning of
//! fields a manager stopped applying ([`prune`]).
//!
//! The shape of an object comes from a [`FieldSchema`] (from the resource table): every field is
//! a struct field unless it is under a declared string map (labels, annotations, tags); lists
//! are atomic unless declared a set or a map keyed by some fields; declared atomic fields
//! (`spec.pipelineSpec`) are single leaves however deep they are. This module is pure: no I/O,
//! no HTTP, and every walk is bounded by [`MAX_DEPTH`].

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Deepest path walked; anything deeper is treated as one atomic leaf.
pub const MAX_DEPTH: usize = 48;

/// How a list merges and is owned (`x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// Scalars, each owned on its own (`v:"x"`), merged by value.
    Set,
    /// Objects identified by these fields (`k:{"uid":"..."}`), merged item by item.
    Map(&'static [&'static str]),
}

/// The shape of a kind's objects that field management needs.
#[derive(Clone, Copy, Debug)]
pub struct FieldSchema {
    /// Non-atomic lists, by dotted path of field names (`metadata.finalizers`).
    pub lists: &'static [(&'static str, ListType)],
    /// Objects that are one leaf (`spec.pipelineSpec`).
    pub atomic: &'static [&'static str],
    /// Objects whose keys are map entries rather than struct fields (`metadata.labels`).
    pub maps: &'static [&'static str],
}

/// The list and map types every object's metadata has, as kube-apiserver declares them.
pub const METADATA_LISTS: &[(&str, ListType)] = &[
    ("metadata.finalizers", ListType::Set),
    ("metadata.ownerReferences", ListType::Map(&["uid"])),
];
/// String maps of every object's metadata.
pub const METADATA_MAPS: &[&str] = &["metadata.labels", "metadata.annotations"];

impl FieldSchema {
    fn list_type(&self, dotted: &str) -> ListType {
        METADATA_LISTS
            .iter()
            .chain(self.lists)
            .find(|(p, _)| *p == dotted)
            .map(|(_, t)| *t)
            .unwrap_or(ListType::Atomic)
    }

    fn is_atomic(&self, dotted: &str) -> bool {
        self.atomic.contains(&dotted)
    }

    fn is_map(&self, dotted: &str) -> bool {
        METADATA_MAPS.contains(&dotted) || self.maps.contains(&dotted)
    }
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A field of an object (`f:name`).
    Field(String),
    /// An item of a map-list, by its key fields as canonical JSON (`k:{"type":"Ready"}`).
    Key(String),
    /// An item of a set, by its value as JSON (`v:"x"`).
    Value(String),
}

/// A path from the object's root.
pub type Path = Vec<Element>;

/// A set of paths. A path in the set is owned; owning `a.b` does not imply owning `a`.
pub type Set = BTreeSet<Path>;

/// A path as SMD prints it in conflict messages: `.spec.displayName`, `[type="Ready"]`, `[="x"]`.
pub struct Display<'a>(pub &'a [Element]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in self.0 {
            match e {
                Element::Field(n) => write!(f, ".{n}")?,
                Element::Value(v) => write!(f, "[={v}]")?,
                Element::Key(k) => {
                    let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                    let parts: Vec<String> =
                        parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, "[{}]", parts.join(","))?;
                }
            }
        }
        Ok(())
    }
}

/// The dotted field-name path of `path` (items skipped), to look up the schema.
fn dotted(path: &[Element]) -> String {
    let mut s = String::new();
    for e in path {
        if let Element::Field(n) = e {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(n);
        }
    }
    s
}

/// What a JSON value is at `path` for field management.
enum Shape<'a> {
    /// One owned field (scalar, atomic object or atomic list).
    Leaf,
    /// An object whose keys are walked; `map` when they are map entries, not struct fields.
    Object(&'a Map<String, Value>, bool),
    /// A set or map list, walked item by item.
    List(&'a [Value], ListType),
}

fn shape<'a>(schema: &FieldSchema, path: &[Element], v: &'a Value) -> Shape<'a> {
    if path.len() >= MAX_DEPTH {
        return Shape::Leaf;
    }
    let d = dotted(path);
    match v {
        Value::Object(m) if !schema.is_atomic(&d) => Shape::Object(m, schema.is_map(&d)),
        Value::Array(a) => match schema.list_type(&d) {
            ListType::Atomic => Shape::Leaf,
            t => Shape::List(a, t),
        },
        _ => Shape::Leaf,
    }
}

/// The element that names `item` in a list of type `t`; `None` for an item that cannot be keyed
/// (a map-list item without its key fields, a set item that is not a scalar).
pub fn item_element(item: &Value, t: ListType) -> Option<Element> {
    match t {
        ListType::Set => match item {
            Value::Object(_) | Value::Array(_) => None,
            v => Some(Element::Value(v.to_string())),
        },
        ListType::Map(keys) => {
            let obj = item.as_object()?;
            let mut k = Map::new();
            for key in keys {
                k.insert((*key).to_owned(), obj.get(*key)?.clone());
            }
            Some(Element::Key(Value::Object(k).to_string()))
        }
        ListType::Atomic => None,
    }
}

/// Items of a list with their elements (items that cannot be keyed are skipped).
fn items(list: &[Value], t: ListType) -> Vec<(Element, &Value)> {
    list.iter()
        .filter_map(|i| item_element(i, t).map(|e| (e, i)))
        .collect()
}

fn child(path: &[Element], e: Element) -> Path {
    let mut p = path.to_vec();
    p.push(e);
    p
}

/// The set an applied configuration owns (SMD `ToFieldSet`): every leaf, every list item, every
/// map entry, and struct fields whose value is null or an empty object.
pub fn to_set(schema: &FieldSchema, v: &Value) -> Set {
    let mut out = Set::new();
    to_set_at(schema, &[], v, &mut out);
    out
}

fn to_set_at(schema: &FieldSchema, path: &[Element], v: &Value, out: &mut Set) {
    match shape(schema, path, v) {
        Shape::Leaf => {
            if !path.is_empty() {
                out.insert(path.to_vec());
            }
        }
        Shape::Object(m, is_map) => {
            for (k, cv) in m {
                let p = child(path, Element::Field(k.clone()));
                to_set_at(schema, &p, cv, out);
                let empty = cv.is_null() || cv.as_object().is_some_and(Map::is_empty);
                if is_map || empty {
                    out.insert(p);
                }
            }
        }
        Shape::List(list, t) => {
            for (e, item) in items(list, t) {
                let p = child(path, e);
                to_set_at(schema, &p, item, out);
                out.insert(p);
            }
        }
    }
}

/// What changed from one object to another (SMD `Compare`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths only in the new object (whole new subtrees: every node and leaf).
    pub added: Set,
    /// Paths only in the old object.
    pub removed: Set,
    /// Leaves in both whose values differ.
    pub modified: Set,
}

impl Comparison {
    /// Nothing changed.
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }
}

/// Compares two objects.
pub fn compare(schema: &FieldSchema, old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare_at(schema, &[], Some(old), Some(new), &mut c);
    c
}

fn compare_at(
    schema: &FieldSchema,
    path: &[Element],
    old: Option<&Value>,
    new: Option<&Value>,
    c: &mut Comparison,
) {
    let (o, n) = match (old, new) {
        (None, None) => return,
        (Some(o), None) => {
            whole(schema, path, o, &mut c.removed);
            return;
        }
        (None, Some(n)) => {
            whole(schema, path, n, &mut c.added);
            return;
        }
        (Some(o), Some(n)) => (o, n),
    };
    match (shape(schema, path, o), shape(schema, path, n)) {
        (Shape::Object(om, _), Shape::Object(nm, _)) => {
            let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
            for k in keys {
                let p = child(path, Element::Field(k.clone()));
                compare_at(schema, &p, om.get(k), nm.get(k), c);
            }
        }
        (Shape::List(ol, t), Shape::List(nl, _)) => {
            let oi = items(ol, t);
            let ni = items(nl, t);
            let mut seen = BTreeSet::new();
            for (e, ov) in &oi {
                seen.insert(e.clone());
                let nv = ni.iter().find(|(ne, _)| ne == e).map(|(_, v)| *v);
                compare_at(schema, &child(path, e.clone()), Some(ov), nv, c);
            }
            for (e, nv) in &ni {
                if !seen.contains(e) {
                    compare_at(schema, &child(path, e.clone()), None, Some(nv), c);
                }
            }
        }
        (Shape::Leaf, Shape::Leaf) => {
            if o != n && !path.is_empty() {
                c.modified.insert(path.to_vec());
            }
        }
        // The kind of value changed (object <-> scalar): the old subtree goes, the new one comes.
        _ => {
            whole(schema, path, o, &mut c.removed);
            whole(schema, path, n, &mut c.added);
        }
    }
}

/// Every node and leaf of a subtree.
fn whole(schema: &FieldSchema, path: &[Element], v: &Value, out: &mut Set) {
    if !path.is_empty() {
        out.insert(path.to_vec());
    }
    match shape(schema, path, v) {
        Shape::Leaf => {}
        Shape::Object(m, _) => {
            for (k, cv) in m {
                whole(schema, &child(path, Element::Field(k.clone())), cv, out);
            }
        }
        Shape::List(list, t) => {
            for (e, item) in items(list, t) {
                whole(schema, &child(path, e), item, out);
            }
        }
    }
}

/// `set` plus every struct-field prefix of its paths (SMD `EnsureNamedFieldsAreMembers`): owning
/// `.spec.tags.a` means `.spec` and `.spec.tags` stay while that entry is owned.
pub fn with_named_prefixes(schema: &FieldSchema, set: &Set) -> Set {
    let mut out = set.clone();
    for p in set {
        for len in 1..p.len() {
            let prefix = &p[..len];
            let parent_is_map = schema.is_map(&dotted(&prefix[..len - 1]));
            if matches!(prefix.last(), Some(Element::Field(_))) && !parent_is_map {
                out.insert(prefix.to_vec());
            }
        }
    }
    out
}

/// The apply merge: objects merge key by key, sets and map-lists item by item (live order, then
/// new items in the configuration's order), everything else is replaced. A null in the
/// configuration removes the field.
pub fn merge(schema: &FieldSchema, live: &Value, config: &Value) -> Value {
    merge_at(schema, &[], live, config)
}

fn merge_at(schema: &FieldSchema, path: &[Element], live: &Value, config: &Value) -> Value {
    match (shape(schema, path, live), shape(schema, path, config)) {
        (Shape::Object(lm, _), Shape::Object(cm, _)) => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let p = child(path, Element::Field(k.clone()));
                let merged = match lm.get(k) {
                    Some(lv) => merge_at(schema, &p, lv, cv),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::List(ll, t), Shape::List(cl, _)) => {
            let ci = items(cl, t);
            let mut out = Vec::with_capacity(ll.len() + cl.len());
            let mut taken = BTreeSet::new();
            for lv in ll {
                match item_element(lv, t) {
                    Some(e) => match ci.iter().find(|(ce, _)| *ce == e) {
                        Some((_, cv)) => {
                            out.push(merge_at(schema, &child(path, e.clone()), lv, cv));
                            taken.insert(e);
                        }
                        None => out.push(lv.clone()),
                    },
                    None => out.push(lv.clone()),
                }
            }
            for (e, cv) in ci {
                if taken.insert(e) {
                    out.push(cv.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes from `v` every field, entry and item whose path `remove` says to remove (with its
/// whole subtree), walking only where something could be removed.
pub fn prune(schema: &FieldSchema, v: &mut Value, remove: &dyn Fn(&Path) -> bool) {
    prune_at(schema, &[], v, remove);
}

fn prune_at(schema: &FieldSchema, path: &[Element], v: &mut Value, remove: &dyn Fn(&Path) -> bool) {
    if path.len() >= MAX_DEPTH {
        return;
    }
    let d = dotted(path);
    match v {
        Value::Object(m) if !schema.is_atomic(&d) => {
            m.retain(|k, cv| {
                let p = child(path, Element::Field(k.clone()));
                if remove(&p) {
                    return false;
                }
                prune_at(schema, &p, cv, remove);
                true
            });
        }
        Value::Array(list) => {
            let t = schema.list_type(&d);
            if t == ListType::Atomic {
                return;
            }
            list.retain_mut(|item| match item_element(item, t) {
                Some(e) => {
                    let p = child(path, e);
                    if remove(&p) {
                        return false;
                    }
                    prune_at(schema, &p, item, remove);
                    true
                }
                None => true,
            });
        }
        _ => {}
    }
}

/// Decodes a `FieldsV1` tree into a set; `None` when it is not one (or is deeper or larger than
/// a real object can be).
pub fn from_fields_v1(v: &Value) -> Option<Set> {
    let mut out = Set::new();
    let mut budget = 100_000usize;
    decode_node(v, &mut Vec::new(), &mut out, &mut budget)?;
    Some(out)
}

fn decode_node(v: &Value, path: &mut Path, out: &mut Set, budget: &mut usize) -> Option<()> {
    let m = v.as_object()?;
    if path.len() > MAX_DEPTH {
        return None;
    }
    let mut children = 0;
    for (k, cv) in m {
        *budget = budget.checked_sub(1)?;
        if k == "." {
            continue;
        }
        let e = match k.split_at_checked(2)? {
            ("f:", name) => Element::Field(name.to_owned()),
            ("k:", key) => {
                let parsed: Value = serde_json::from_str(key).ok()?;
                parsed.as_object()?;
                Element::Key(parsed.to_string())
            }
            ("v:", val) => {
                let parsed: Value = serde_json::from_str(val).ok()?;
                Element::Value(parsed.to_string())
            }
            _ => return None,
        };
        children += 1;
        path.push(e);
        decode_node(cv, path, out, budget)?;
        path.pop();
    }
    if !path.is_empty() && (children == 0 || m.contains_key(".")) {
        out.insert(path.clone());
    }
    Some(())
}

/// Encodes a set as a `FieldsV1` tree: `{}` for a leaf, `".": {}` on an owned node with owned
/// children.
pub fn to_fields_v1(set: &Set) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for (i, e) in p.iter().enumerate() {
            let key = match e {
                Element::Field(n) => format!("f:{n}"),
                Element::Key(k) => format!("k:{k}"),
                Element::Value(v) => format!("v:{v}"),
            };
            let node = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = node else { break };
            if i + 1 == p.len() {
                // an owned node: mark it when it has (or will get) children
                next.entry(".").or_insert_with(|| Value::Object(Map::new()));
            }
            cur = next;
        }
    }
    strip_lone_dots(&mut root);
    Value::Object(root)
}

/// `{".": {}}` alone is written `{}`.
fn strip_lone_dots(m: &mut Map<String, Value>) {
    for (_, v) in m.iter_mut() {
        if let Value::Object(child) = v {
            strip_lone_dots(child);
            if child.len() == 1 && child.contains_key(".") {
                child.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: FieldSchema = FieldSchema {
        lists: &[("status.conditions", ListType::Map(&["type"]))],
        atomic: &["spec.pipelineSpec"],
        maps: &["spec.tags"],
    };

    fn f(s: &str) -> Element {
        Element::Field(s.into())
    }

    #[test]
    fn applied_sets_own_leaves_entries_and_items() {
        let cfg = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"displayName": "D", "pipelineSpec": {"deep": {"tree": [1]}}, "tags": {}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let s = to_set(&SCHEMA, &cfg);
        let fv = to_fields_v1(&s);
        assert_eq!(
            fv,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"x\"": {}}, "f:labels": {"f:a": {}}},
                "f:spec": {"f:displayName": {}, "f:pipelineSpec": {}, "f:tags": {}},
                "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}
            })
        );
        assert_eq!(from_fields_v1(&fv), Some(s));
    }

    #[test]
    fn compare_marks_new_subtrees_whole() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"displayName": "A"}});
        let new = json!({"metadata": {"name": "p", "labels": {"team": "ml"}}, "spec": {"displayName": "B"}});
        let c = compare(&SCHEMA, &old, &new);
        assert_eq!(
            to_fields_v1(&c.added),
            json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
        );
        assert_eq!(c.modified, Set::from([vec![f("spec"), f("displayName")]]));
        assert!(c.removed.is_empty());
        assert!(compare(&SCHEMA, &new, &new).is_same());
    }

    #[test]
    fn merge_follows_list_types() {
        let live = json!({"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
            "spec": {"pipelineSpec": {"a": 1, "b": 2}, "tags": {"k": "v"}}});
        let cfg = json!({"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}]},
            "spec": {"pipelineSpec": {"a": 3}, "tags": {"j": "w"}, "description": null}});
        let m = merge(&SCHEMA, &live, &cfg);
        assert_eq!(
            m,
            json!({"metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}]},
                "spec": {"pipelineSpec": {"a": 3}, "tags": {"k": "v", "j": "w"}}})
        );
    }

    #[test]
    fn prune_removes_whole_subtrees() {
        let mut v = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"tags": {"k": "v"}, "displayName": "D"}});
        let gone: Set = [
            vec![f("spec"), f("tags")],
            vec![
                f("metadata"),
                f("finalizers"),
                Element::Value("\"a\"".into()),
            ],
        ]
        .into();
        prune(&SCHEMA, &mut v, &|p| gone.contains(p));
        assert_eq!(
            v,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"displayName": "D"}})
        );
    }

    #[test]
    fn named_prefixes_skip_map_entries() {
        let s: Set = [vec![f("spec"), f("tags"), f("a")]].into();
        let n = with_named_prefixes(&SCHEMA, &s);
        assert!(n.contains(&vec![f("spec")]));
        assert!(n.contains(&vec![f("spec"), f("tags")]));
        assert_eq!(n.len(), 3);
    }

    #[test]
    fn paths_print_like_smd() {
        let p = vec![
            f("status"),
            f("conditions"),
            Element::Key("{\"type\":\"Ready\"}".into()),
            f("status"),
        ];
        assert_eq!(
            Display(&p).to_string(),
            ".status.conditions[type=\"Ready\"].status"
        );
        let v = vec![
            f("metadata"),
            f("finalizers"),
            Element::Value("\"x\"".into()),
        ];
        assert_eq!(Display(&v).to_string(), ".metadata.finalizers[=\"x\"]");
    }

    #[test]
    fn fields_v1_rejects_garbage() {
        assert_eq!(from_fields_v1(&json!({"x:bad": {}})), None);
        assert_eq!(from_fields_v1(&json!([])), None);
        assert_eq!(from_fields_v1(&json!({"k:notjson": {}})), None);
    }
}
