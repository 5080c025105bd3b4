//! What the backends index about an object, so lists, field selectors and sorted queries run on
//! columns instead of parsing every object: the generic metadata every Kubernetes object has (uid,
//! creation time, labels), five generic [`IndexColumn`]s and a map of key/value terms, whose
//! meaning each resource defines through an [`Indexer`] the server registers when it opens the
//! store. This crate knows no
//! resource's field names: which JSON field fills a column is the caller's business (the server
//! reads it from its resource table).

use std::collections::BTreeMap;

use serde_json::Value;

/// A generic indexed text column. Each resource decides what, if anything, fills it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexColumn {
    /// A human-readable title, for sorting and substring filters.
    Title,
    /// The name of the object this one belongs to.
    ParentName,
    /// The uid of the object this one belongs to.
    ParentUid,
    /// Another name of the object (e.g. the name a view shows instead of the object name).
    Alias,
    /// A longer free text (a description), for filters.
    Detail,
}

impl IndexColumn {
    /// Every column, in schema order.
    pub const ALL: [IndexColumn; 5] = [
        IndexColumn::Title,
        IndexColumn::ParentName,
        IndexColumn::ParentUid,
        IndexColumn::Alias,
        IndexColumn::Detail,
    ];
}

/// The values of the generic columns of one object ("" when the resource leaves one unset), and
/// its terms: key/value pairs (tags) that equality filters select in SQL, kept like labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Indexed {
    /// [`IndexColumn::Title`].
    pub title: String,
    /// [`IndexColumn::ParentName`].
    pub parent_name: String,
    /// [`IndexColumn::ParentUid`].
    pub parent_uid: String,
    /// [`IndexColumn::Alias`].
    pub alias: String,
    /// [`IndexColumn::Detail`].
    pub detail: String,
    /// Key/value terms.
    pub terms: BTreeMap<String, String>,
}

impl Indexed {
    /// The value of one column.
    pub fn get(&self, column: IndexColumn) -> &str {
        match column {
            IndexColumn::Title => &self.title,
            IndexColumn::ParentName => &self.parent_name,
            IndexColumn::ParentUid => &self.parent_uid,
            IndexColumn::Alias => &self.alias,
            IndexColumn::Detail => &self.detail,
        }
    }
}

/// Fills the generic columns of an object of a resource. Called on every write and on every
/// change read back from the feed, so it must be cheap and must not fail: a missing field is "".
pub trait Indexer: Send + Sync + 'static {
    /// The generic column values of `object`, an object of `resource` (plural).
    fn index(&self, resource: &str, object: &Value) -> Indexed;
}

/// Indexes nothing but the generic metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIndex;

impl Indexer for NoIndex {
    fn index(&self, _resource: &str, _object: &Value) -> Indexed {
        Indexed::default()
    }
}

/// Indexed fields of one object: generic metadata plus the resource's columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct IndexFields {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of `metadata.creationTimestamp` (0 when absent).
    pub created_at: i64,
    pub columns: Indexed,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn index_fields(indexer: &dyn Indexer, resource: &str, obj: &Value) -> IndexFields {
    let created_at = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_seconds)
        .unwrap_or(0);
    IndexFields {
        uid: str_at(obj, "/metadata/uid").to_owned(),
        labels: labels_of(obj),
        created_at,
        columns: indexer.index(resource, obj),
    }
}

/// The uid of an object's JSON.
pub(crate) fn uid_of(obj: &Value) -> String {
    str_at(obj, "/metadata/uid").to_owned()
}

/// Labels of an object's JSON (`metadata.labels`), for filtering.
pub(crate) fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(obj: &mut Value, rev: u64) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    } else if let Value::Object(root) = obj {
        let mut meta = serde_json::Map::new();
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
        root.insert("metadata".into(), Value::Object(meta));
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into Unix seconds, without a date library.
fn parse_rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 => {
            let sign = match &rest[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct ByResource;
    impl Indexer for ByResource {
        fn index(&self, resource: &str, object: &Value) -> Indexed {
            Indexed {
                title: str_at(object, "/spec/title").to_owned(),
                parent_name: resource.to_owned(),
                ..Default::default()
            }
        }
    }

    #[test]
    fn reads_generic_metadata_and_the_resources_columns() {
        let v = json!({"metadata": {"uid": "u", "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"a": "b", "n": 5}}, "spec": {"title": "T"}});
        let f = index_fields(&ByResource, "things", &v);
        assert_eq!(f.created_at, 1_735_787_045);
        assert_eq!(f.uid, "u");
        assert_eq!(f.labels.len(), 1, "non-string label values are not indexed");
        assert_eq!(f.labels["a"], "b");
        assert_eq!(f.columns.get(IndexColumn::Title), "T");
        assert_eq!(f.columns.get(IndexColumn::ParentName), "things");
        assert_eq!(
            index_fields(&NoIndex, "things", &v).columns,
            Indexed::default()
        );
    }

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_seconds("1970-01-01T01:00:00.5+01:00"),
            Some(0)
        );
        assert_eq!(
            parse_rfc3339_seconds("2000-02-29T00:00:00Z"),
            Some(951_782_400)
        );
        assert_eq!(parse_rfc3339_seconds("garbage"), None);
    }

    #[test]
    fn sets_resource_version() {
        let mut v = json!({"metadata": {"name": "x"}});
        set_resource_version(&mut v, 42);
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        let mut bare = json!({});
        set_resource_version(&mut bare, 7);
        assert_eq!(bare["metadata"]["resourceVersion"], "7");
    }
}
