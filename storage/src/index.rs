//! The columns the SQL backends index, read from an object's JSON: uid, labels, creation time,
//! display name, pipeline name and pipeline uid (a version's parent). One function, so every
//! backend and the change feed agree.

use std::collections::BTreeMap;

use serde_json::Value;

/// Indexed fields of one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct IndexFields {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of `metadata.creationTimestamp` (0 when absent).
    pub created_at: i64,
    pub display_name: String,
    /// `spec.pipelineName` (versions); empty for pipelines.
    pub pipeline_name: String,
    /// The parent Pipeline's uid: the owner reference of kind Pipeline, else the label.
    pub pipeline_uid: String,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn index_fields(obj: &Value) -> IndexFields {
    let created_at = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_seconds)
        .unwrap_or(0);
    let pipeline_uid = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("kind").and_then(Value::as_str) == Some("Pipeline"))
        })
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(obj, "/metadata/labels/pipelines.kubeflow.org~1pipeline-id"));
    IndexFields {
        uid: str_at(obj, "/metadata/uid").to_owned(),
        labels: crate::labels_of(obj),
        created_at,
        display_name: str_at(obj, "/spec/displayName").to_owned(),
        pipeline_name: str_at(obj, "/spec/pipelineName").to_owned(),
        pipeline_uid: pipeline_uid.to_owned(),
    }
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

    #[test]
    fn reads_index_fields() {
        let v = json!({"metadata": {"uid": "u", "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"a": "b", "pipelines.kubeflow.org/pipeline-id": "from-label"},
            "ownerReferences": [{"kind": "Pipeline", "uid": "p-uid"}]},
            "spec": {"displayName": "D", "pipelineName": "p"}});
        let f = index_fields(&v);
        assert_eq!(f.created_at, 1_735_787_045);
        assert_eq!(f.pipeline_uid, "p-uid");
        assert_eq!(
            (
                f.uid.as_str(),
                f.display_name.as_str(),
                f.pipeline_name.as_str()
            ),
            ("u", "D", "p")
        );
        assert_eq!(f.labels["a"], "b");
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
