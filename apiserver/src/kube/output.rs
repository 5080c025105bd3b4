//! Response encodings of objects and lists: plain JSON (stored bytes, never re-encoded), `Table`
//! (`kubectl get`), and `PartialObjectMetadata(List)` (metadata-only clients such as the garbage
//! collector), chosen from the `Accept` header as kube-apiserver does.

use bytes::{BufMut, Bytes, BytesMut};
use k8s_openapi::jiff::Timestamp;
use kfp_storage::{ListPage, Object, Revision};
use serde_json::{Value, json};

use crate::error::ApiError;
use kfp_apiservice::resource::{Cell, Resource};

/// What the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The objects as JSON.
    Json,
    /// `meta.k8s.io` Table; `with_object` when `includeObject=Object`.
    Table {
        /// Rows carry the full object rather than its metadata.
        with_object: bool,
        /// `includeObject=None`.
        no_object: bool,
    },
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

/// Picks the first acceptable media type of `Accept`.
pub fn negotiate(accept: Option<&str>, include_object: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut as_ = "";
        let mut g = "";
        let mut v = "";
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = val.trim(),
                    "g" => g = val.trim(),
                    "v" => v = val.trim(),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "*/*" | "application/*");
        if !json_like {
            continue;
        }
        match (as_, g, v) {
            ("", _, _) => return Ok(Output::Json),
            ("Table", "meta.k8s.io", "v1" | "v1beta1") => {
                return Ok(Output::Table {
                    with_object: include_object == Some("Object"),
                    no_object: include_object == Some("None"),
                });
            }
            (
                "PartialObjectMetadata" | "PartialObjectMetadataList",
                "meta.k8s.io",
                "v1" | "v1beta1",
            ) => {
                return Ok(Output::Metadata);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io; got {accept}"
    )))
}

fn parse(o: &Object) -> Result<Value, ApiError> {
    o.json().map_err(|e| ApiError::internal(e.to_string()))
}

/// kubectl's short age (apimachinery `duration.HumanDuration`).
pub fn age(created: Option<&str>, now: Timestamp) -> String {
    let Some(t) = created.and_then(|c| c.parse::<Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let s = now.as_second() - t.as_second();
    if s < -1 {
        return "<invalid>".into();
    }
    if s < 0 {
        return "0s".into();
    }
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let dy = (h / 24) % 365;
        return if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{dy}d", h / 24 / 365)
        };
    }
    format!("{}y", h / 24 / 365)
}

fn columns(res: &'static Resource) -> Vec<Value> {
    res.columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

fn cells(res: &'static Resource, v: &Value, now: Timestamp) -> Vec<Value> {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
    res.columns
        .iter()
        .map(|c| match c.cell {
            Cell::Text(pointer) => json!(text(pointer)),
            Cell::Age => json!(age(
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str),
                now
            )),
            Cell::ConditionReason(type_) => json!(
                v.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs
                        .iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_)))
                    .and_then(|c| c.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        })
        .collect()
}

/// `PartialObjectMetadata` of an object.
pub fn partial(v: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v.get("metadata").cloned().unwrap_or(json!({}))})
}

fn row(res: &'static Resource, v: Value, output: Output, now: Timestamp) -> Value {
    let cells = cells(res, &v, now);
    let object = match output {
        Output::Table {
            no_object: true, ..
        } => Value::Null,
        Output::Table {
            with_object: true, ..
        } => v,
        _ => partial(&v),
    };
    if object.is_null() {
        json!({"cells": cells})
    } else {
        json!({"cells": cells, "object": object})
    }
}

/// A Table of objects.
pub fn table(res: &'static Resource, objects: Vec<Value>, output: Output, meta: Value) -> Value {
    let now = Timestamp::now();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(res),
        "rows": objects.into_iter().map(|v| row(res, v, output, now)).collect::<Vec<_>>(),
    })
}

/// One object in the requested encoding.
pub fn object(res: &'static Resource, data: &Bytes, output: Output) -> Result<Bytes, ApiError> {
    match output {
        Output::Json => Ok(data.clone()),
        other => {
            let v: Value =
                serde_json::from_slice(data).map_err(|e| ApiError::internal(e.to_string()))?;
            let out = match other {
                Output::Metadata => partial(&v),
                _ => {
                    let rv = v
                        .pointer("/metadata/resourceVersion")
                        .cloned()
                        .unwrap_or(Value::Null);
                    table(res, vec![v], other, json!({"resourceVersion": rv}))
                }
            };
            Ok(Bytes::from(serde_json::to_vec(&out).unwrap_or_default()))
        }
    }
}

fn list_meta(
    page_revision: Revision,
    continue_token: &Option<String>,
    remaining: Option<u64>,
) -> Value {
    let mut m = json!({"resourceVersion": page_revision.to_string()});
    if let Some(c) = continue_token {
        m["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        m["remainingItemCount"] = json!(r);
    }
    m
}

/// `{"apiVersion","kind","metadata","items":[...]}` from already encoded items, without
/// re-encoding them.
fn assemble<'a>(
    res: &'static Resource,
    meta: &Value,
    items: impl Iterator<Item = &'a Bytes> + Clone,
) -> Bytes {
    let head =
        json!({"apiVersion": kfp_apiservice::API_VERSION, "kind": res.list_kind, "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = items.clone().map(|b| b.len() + 1).sum();
    let mut out = BytesMut::with_capacity(head.len() + size + 16);
    // `{...,"metadata":{...}}` -> `{...,"metadata":{...},"items":[...]}`
    out.put_slice(head.get(..head.len().saturating_sub(1)).unwrap_or_default());
    out.put_slice(b",\"items\":[");
    for (i, b) in items.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(b);
    }
    out.put_slice(b"]}");
    out.freeze()
}

/// A plain JSON list of stored objects at `revision` (deletecollection's answer).
pub fn raw_list(res: &'static Resource, revision: Revision, items: &[Bytes]) -> Bytes {
    assemble(res, &list_meta(revision, &None, None), items.iter())
}

/// A list page in the requested encoding; plain JSON is assembled from the stored bytes.
pub fn list(res: &'static Resource, page: &ListPage, output: Output) -> Result<Bytes, ApiError> {
    let meta = list_meta(page.revision, &page.continue_token, page.remaining);
    match output {
        Output::Json => Ok(assemble(res, &meta, page.items.iter().map(|o| &o.data))),
        Output::Metadata => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| parse(o).map(|v| partial(&v)))
                .collect::<Result<_, _>>()?;
            let v = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
            Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
        }
        table_output => {
            let objects: Vec<Value> = page.items.iter().map(parse).collect::<Result<_, _>>()?;
            let v = table(res, objects, table_output, meta);
            Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipelines() -> &'static Resource {
        Resource::by_plural("pipelines").unwrap()
    }

    #[test]
    fn negotiation_follows_kubectl_accept_headers() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(matches!(
            negotiate(Some(kubectl), None).unwrap(),
            Output::Table { .. }
        ));
        let gc = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(negotiate(Some(gc), None).unwrap(), Output::Metadata);
        assert_eq!(negotiate(None, None).unwrap(), Output::Json);
        assert_eq!(negotiate(Some("*/*"), None).unwrap(), Output::Json);
        assert!(negotiate(Some("application/vnd.kubernetes.protobuf"), None).is_err());
    }

    #[test]
    fn ages_like_kubectl() {
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(age(Some("2026-01-01T23:59:30Z"), now), "30s");
        assert_eq!(age(Some("2026-01-01T23:00:00Z"), now), "60m");
        assert_eq!(age(Some("2026-01-01T18:30:00Z"), now), "5h30m");
        assert_eq!(age(Some("2025-12-30T00:00:00Z"), now), "3d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn json_lists_are_assembled_from_stored_bytes() {
        let page = ListPage {
            revision: Revision(7),
            items: vec![Object {
                key: kfp_storage::Key::new("pipelines", "a", "b"),
                uid: "u".into(),
                revision: Revision(5),
                data: Bytes::from_static(br#"{"metadata":{"name":"b"}}"#),
            }],
            continue_token: Some("tok".into()),
            remaining: Some(3),
        };
        let out = list(pipelines(), &page, Output::Json).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "PipelineList");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["continue"], "tok");
        assert_eq!(v["metadata"]["remainingItemCount"], 3);
        assert_eq!(v["items"][0]["metadata"]["name"], "b");
        let t = list(
            pipelines(),
            &page,
            Output::Table {
                with_object: false,
                no_object: false,
            },
        )
        .unwrap();
        let t: Value = serde_json::from_slice(&t).unwrap();
        assert_eq!(t["rows"][0]["cells"][0], "b");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
