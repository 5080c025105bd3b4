//! Discovery and OpenAPI documents, encoded once at start and served from memory with ETags
//! (`If-None-Match` -> 304), `Vary: Accept`, and kube-openapi's `?hash=` behaviour for the v3
//! group document. Never touches the store: the aggregator's availability probe and namespace
//! deletion depend on these answering.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use kfp_apiservice::{discovery, openapi};

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
        let bytes = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
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
            openapi_v3_root: Doc::new(&openapi::v3_root(&v3_group.hash)),
            openapi_v3_group: v3_group,
        }
    }
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
