//! Discovery and OpenAPI documents, encoded once at start and served from memory with ETags
//! (`If-None-Match` -> 304), `Vary: Accept`, and kube-openapi's `?hash=` behaviour for the v3
//! group document. Never touches the store: the aggregator's availability probe and namespace
//! deletion depend on these answering.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use kfp_apiservice::{discovery, openapi, openapi_pb};

use crate::body::Body;

/// One cached document.
#[derive(Clone, Debug)]
pub struct Doc {
    /// The encoded JSON.
    pub bytes: Bytes,
    /// The quoted ETag.
    pub etag: String,
    /// The bare hash (for `?hash=`).
    pub hash: String,
}

impl Doc {
    fn new(v: &serde_json::Value) -> Doc {
        Doc::from_bytes(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
    }

    fn from_bytes(bytes: Bytes) -> Doc {
        // SipHash with fixed keys: stable for a given build, which is all replicas of one release.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let hash = format!("{:016X}", h.finish());
        Doc {
            etag: format!("\"{hash}\""),
            hash,
            bytes,
        }
    }
}

/// Every static document.
#[derive(Clone, Debug)]
pub struct Docs {
    /// `/api` (legacy APIVersions).
    pub api: Doc,
    /// `/api` (aggregated discovery v2: no core group here, so no items).
    pub api_v2: Doc,
    /// `/apis` (legacy APIGroupList).
    pub apis: Doc,
    /// `/apis` (aggregated discovery v2).
    pub apis_v2: Doc,
    /// `/apis/<group>`.
    pub group: Doc,
    /// `/apis/<group>/<version>`.
    pub group_version: Doc,
    /// `/openapi/v2`.
    pub openapi_v2: Doc,
    /// `/openapi/v2` as gnostic's protobuf `Document` (`None` only if the JSON document used
    /// something the conversion does not know, which its unit test rules out).
    pub openapi_v2_pb: Option<Doc>,
    /// `/openapi/v3/apis/<group>/<version>`.
    pub openapi_v3_group: Doc,
    /// `/openapi/v3`.
    pub openapi_v3_root: Doc,
}

/// The media type of aggregated discovery v2.
pub const DISCOVERY_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

impl Docs {
    /// Builds every document from the API definition.
    pub fn build() -> Docs {
        fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or_default()
        }
        let mut api = json(discovery::api_versions());
        api["kind"] = "APIVersions".into();
        let mut apis = json(discovery::api_group_list());
        apis["kind"] = "APIGroupList".into();
        apis["apiVersion"] = "v1".into();
        let mut group = json(discovery::api_group());
        group["kind"] = "APIGroup".into();
        group["apiVersion"] = "v1".into();
        let mut gv = json(discovery::api_resource_list());
        gv["kind"] = "APIResourceList".into();
        gv["apiVersion"] = "v1".into();
        let v3_group = Doc::new(&openapi::v3_group());
        Docs {
            api: Doc::new(&api),
            api_v2: Doc::new(&serde_json::json!({
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": [],
            })),
            apis: Doc::new(&apis),
            apis_v2: Doc::new(&discovery::aggregated_discovery()),
            group: Doc::new(&group),
            group_version: Doc::new(&gv),
            openapi_v2: Doc::new(&openapi::v2()),
            openapi_v2_pb: match openapi_pb::encode(&openapi::v2()) {
                Ok(b) => Some(Doc::from_bytes(Bytes::from(b))),
                Err(e) => {
                    tracing::error!(error = %e, "OpenAPI v2 protobuf is not served");
                    None
                }
            },
            openapi_v3_root: Doc::new(&openapi::v3_root(&v3_group.hash)),
            openapi_v3_group: v3_group,
        }
    }
}

/// What `/openapi/v2` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2Format {
    /// `application/json`.
    Json,
    /// gnostic's protobuf `Document`.
    Protobuf,
}

/// The Content-Type kube-openapi answers protobuf with.
pub const OPENAPI_V2_PB_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Negotiates `/openapi/v2` as kube-openapi does: JSON, or protobuf when asked for it (both
/// spellings of its media type), the highest `q` first and, at equal `q`, the order given;
/// `None` when nothing acceptable is offered (406).
pub fn openapi_v2_format(accept: Option<&str>) -> Option<V2Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(V2Format::Json);
    };
    let mut ranges: Vec<(f32, usize, Option<V2Format>)> = accept
        .split(',')
        .enumerate()
        .map(|(i, range)| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let format = match media.as_str() {
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
                | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" => {
                    Some(V2Format::Protobuf)
                }
                "application/json" | "application/*" | "*/*" => Some(V2Format::Json),
                _ => None,
            };
            (q, i, format)
        })
        .filter(|(q, _, f)| *q > 0.0 && f.is_some())
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().and_then(|r| r.2)
}

/// Whether an `Accept` header asks for aggregated discovery v2.
pub fn wants_discovery_v2(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let params: Vec<(&str, &str)> = range
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let has = |k: &str, v: &str| params.contains(&(k, v));
            has("g", "apidiscovery.k8s.io") && has("v", "v2") && has("as", "APIGroupDiscoveryList")
        })
    })
}

/// Serves a document with ETag handling.
pub fn serve(
    doc: &Doc,
    if_none_match: Option<&str>,
    content_type: &'static str,
    immutable: bool,
) -> Response<Body> {
    let not_modified = if_none_match.is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim() == doc.etag || t.trim() == "*")
    });
    let mut r = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::full(doc.bytes.clone()))
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&doc.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if immutable {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Fri, 01 Jan 2100 00:00:00 GMT"),
        );
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
    }
    r
}

/// `?hash=` mismatch: a 301 to the current hash, as kube-openapi does.
pub fn redirect_to_hash(doc: &Doc) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    let url = format!("/openapi/v3/{}?hash={}", openapi::v3_group_path(), doc.hash);
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod openapi_v2_negotiation {
    use super::*;

    #[test]
    fn client_go_gets_protobuf_and_everyone_else_json() {
        let pb = Some(V2Format::Protobuf);
        let js = Some(V2Format::Json);
        for (accept, want) in [
            (None, js),
            (
                Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
                pb,
            ),
            (
                Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
                pb,
            ),
            (Some("application/json"), js),
            (Some("*/*"), js),
            (
                Some(
                    "application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                ),
                pb,
            ),
            (
                Some(
                    "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                ),
                js,
            ),
            (Some("text/html"), None),
            (Some("application/json;q=0"), None),
        ] {
            assert_eq!(openapi_v2_format(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn the_protobuf_document_is_built() {
        assert!(Docs::build().openapi_v2_pb.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_304() {
        let docs = Docs::build();
        let r = serve(&docs.group_version, None, "application/json", false);
        assert_eq!(r.status(), 200);
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        let r = serve(&docs.group_version, Some(&etag), "application/json", false);
        assert_eq!(r.status(), 304);
        assert!(wants_discovery_v2(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        )));
        assert!(!wants_discovery_v2(Some("application/json")));
        let v: serde_json::Value = serde_json::from_slice(&docs.openapi_v3_root.bytes).unwrap();
        assert!(
            v["paths"]["apis/pipelines.kubeflow.org/v2beta1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .ends_with(&docs.openapi_v3_group.hash)
        );
    }
}
