//! A stand-in for a host cluster's kube-apiserver serving the kube:// store's custom resources,
//! for tests (CI has no cluster): plain HTTP on 127.0.0.1, the custom-resource routes of
//! [`crate::crd::GROUP`] served from any [`Store`] (the SQL store in the tests), with
//! kube-apiserver's semantics for what the CRD backend uses — host uids, `resourceVersion`
//! preconditions (an update without one is refused, as for custom resources), no-op updates that
//! keep their revision, label and `metadata.name`/`metadata.namespace` field selectors, paged
//! lists with continue tokens and `resourceVersionMatch`, watches from a revision (or from "now"
//! with the current state first) with bookmarks, timeouts and `ERROR` 410 after compaction, and
//! `Status` errors. Only kinds whose CustomResourceDefinition is installed are served (404
//! otherwise); server-side apply of a definition installs it.
//!
//! Test code: no authentication, bodies are trusted to be small.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crd::{GROUP, VERSION};
use crate::selector::Field;
use crate::{
    FieldSelector, Key, LabelSelector, ListRequest, Preconditions, ReadAt, Revision, Store,
    StoreError, WatchItem, WatchRequest,
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A running host.
pub struct Host {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    store: Arc<dyn Store>,
    installed: Mutex<BTreeSet<String>>,
    uids: AtomicU64,
    /// With [`Host::start_with_namespaces`], the namespaces that exist: a create elsewhere is
    /// refused as kube-apiserver's NamespaceLifecycle admission refuses it. `None`: any.
    /// Each with its labels.
    namespaces: Option<Mutex<BTreeMap<String, Value>>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Host {
    /// Serves `store` on an ephemeral port of 127.0.0.1, with the definitions of `installed`
    /// (plurals) already in place.
    pub async fn start(store: Arc<dyn Store>, installed: &[&str]) -> Host {
        Self::serve(store, installed, None).await
    }

    /// As [`Host::start`], but only `namespaces` exist until `POST /api/v1/namespaces` makes
    /// more: a record created in any other namespace is `404 namespaces "x" not found`.
    pub async fn start_with_namespaces(
        store: Arc<dyn Store>,
        installed: &[&str],
        namespaces: &[&str],
    ) -> Host {
        let ns = namespaces
            .iter()
            .map(|s| ((*s).to_owned(), json!({})))
            .collect();
        Self::serve(store, installed, Some(Mutex::new(ns))).await
    }

    async fn serve(
        store: Arc<dyn Store>,
        installed: &[&str],
        namespaces: Option<Mutex<BTreeMap<String, Value>>>,
    ) -> Host {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            store,
            installed: Mutex::new(installed.iter().map(|s| (*s).to_owned()).collect()),
            uids: AtomicU64::new(1),
            namespaces,
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Host { addr, state, task }
    }

    /// A kubeconfig naming this host, written to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: host\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: host\n  context:\n    cluster: host\n    user: test\n\
             current-context: host\n",
            self.addr
        );
        std::fs::write(path, kc).unwrap();
    }

    /// Whether namespace `ns` exists (always, unless started with namespaces).
    pub fn has_namespace(&self, ns: &str) -> bool {
        self.state
            .namespaces
            .as_ref()
            .is_none_or(|n| n.lock().unwrap().contains_key(ns))
    }

    /// Whether the definition of `plural` is installed.
    pub fn installed(&self, plural: &str) -> bool {
        self.state.installed.lock().unwrap().contains(plural)
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed_unsync())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn error(e: &StoreError) -> Response<Body> {
    let (code, v) = status_of(e);
    full(StatusCode::from_u16(code).unwrap(), v.to_string())
}

/// kube-apiserver's `Status` for a store error, and its HTTP code.
fn status_of(e: &StoreError) -> (u16, Value) {
    let (code, reason, message) = match e {
        StoreError::NotFound(_) => (404, "NotFound", e.to_string()),
        StoreError::AlreadyExists(_) => (409, "AlreadyExists", e.to_string()),
        StoreError::Conflict { message, .. } => (409, "Conflict", message.clone()),
        StoreError::Gone { .. } => (410, "Expired", e.to_string()),
        StoreError::TooLarge { requested, current } => (
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        ),
        StoreError::Invalid(m) => (400, "BadRequest", m.clone()),
        StoreError::Unavailable(m) => (503, "ServiceUnavailable", m.clone()),
        StoreError::Internal(m) => (500, "InternalError", m.clone()),
    };
    (code, status(code, reason, &message))
}

fn bad(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        status(code, reason, message).to_string(),
    )
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<DeletePreconditions>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeletePreconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (
                    k.to_owned(),
                    crate::crd::percent_decode(&v.replace('+', " ")),
                )
            })
            .collect();
        let method = req.method().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if let Some(name) =
            path.strip_prefix("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/")
        {
            return self.install(&method, name, &body);
        }
        if path == "/api/v1/namespaces" && method == Method::POST {
            return self.create_namespace(&body);
        }
        if path == "/api/v1/namespaces" && method == Method::GET {
            return self.list_namespaces(param(&query, "labelSelector").unwrap_or_default());
        }
        if let Some(name) = path.strip_prefix("/api/v1/namespaces/")
            && !name.contains('/')
            && method == Method::DELETE
        {
            return self.delete_namespace(name).await;
        }
        let Some(rest) = path.strip_prefix(&format!("/apis/{GROUP}/{VERSION}/")) else {
            return bad(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let seg: Vec<&str> = rest.split('/').collect();
        let (ns, plural, name) = match seg.as_slice() {
            [plural] => (None, *plural, None),
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            _ => {
                return bad(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
        };
        if !self.installed.lock().unwrap().contains(plural) {
            return bad(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        match (method, ns, name) {
            (Method::GET, _, None) if matches!(param(&query, "watch"), Some("true" | "1")) => {
                self.watch(plural, ns, &query).await
            }
            (Method::GET, _, None) => self.list(plural, ns, &query).await,
            (Method::POST, Some(ns), None) => self.create(plural, ns, &body).await,
            (Method::GET, Some(ns), Some(name)) => {
                match self.store.get(&Key::new(plural, ns, name)).await {
                    Ok(o) => full(StatusCode::OK, o.data),
                    Err(e) => error(&e),
                }
            }
            (Method::PUT, Some(ns), Some(name)) => {
                self.update(Key::new(plural, ns, name), &body).await
            }
            (Method::DELETE, Some(ns), Some(name)) => {
                self.delete(Key::new(plural, ns, name), &body).await
            }
            _ => bad(
                405,
                "MethodNotAllowed",
                "the server does not allow this method",
            ),
        }
    }

    fn install(&self, method: &Method, name: &str, body: &[u8]) -> Response<Body> {
        if *method != Method::PATCH {
            return bad(405, "MethodNotAllowed", "only server-side apply is served");
        }
        let Ok(def) = serde_json::from_slice::<Value>(body) else {
            return bad(400, "BadRequest", "not JSON");
        };
        let plural = def
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = def
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != format!("{plural}.{group}") || group != GROUP {
            return bad(
                422,
                "Invalid",
                "metadata.name must be spec.names.plural.spec.group",
            );
        }
        self.installed.lock().unwrap().insert(plural.to_owned());
        full(StatusCode::OK, def.to_string())
    }

    fn create_namespace(&self, body: &[u8]) -> Response<Body> {
        let v = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let labels = v.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        if name.is_empty() {
            return bad(422, "Invalid", "metadata.name: Required value");
        }
        let Some(namespaces) = &self.namespaces else {
            return bad(
                409,
                "AlreadyExists",
                &format!("namespaces \"{name}\" already exists"),
            );
        };
        {
            let mut namespaces = namespaces.lock().unwrap();
            if namespaces.contains_key(&name) {
                return bad(
                    409,
                    "AlreadyExists",
                    &format!("namespaces \"{name}\" already exists"),
                );
            }
            namespaces.insert(name.clone(), labels.clone());
        }
        full(
            StatusCode::CREATED,
            namespace_json(&name, &labels).to_string(),
        )
    }

    /// Namespaces whose labels hold every `k=v` of `selector` (the only form the tests use).
    fn list_namespaces(&self, selector: &str) -> Response<Body> {
        let wanted: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|r| r.split_once('='))
            .collect();
        let items: Vec<Value> = self
            .namespaces
            .as_ref()
            .map(|n| {
                n.lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, labels)| {
                        wanted
                            .iter()
                            .all(|(k, v)| labels.get(*k).and_then(Value::as_str) == Some(*v))
                    })
                    .map(|(name, labels)| namespace_json(name, labels))
                    .collect()
            })
            .unwrap_or_default();
        full(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": items})
                .to_string(),
        )
    }

    /// Deletes a namespace and every record in it (at once: no finalization).
    async fn delete_namespace(&self, name: &str) -> Response<Body> {
        let Some(labels) = self
            .namespaces
            .as_ref()
            .and_then(|n| n.lock().unwrap().remove(name))
        else {
            let mut st = status(404, "NotFound", &format!("namespaces \"{name}\" not found"));
            st["details"] = json!({"name": name, "kind": "namespaces"});
            return full(StatusCode::NOT_FOUND, st.to_string());
        };
        let plurals: Vec<String> = self.installed.lock().unwrap().iter().cloned().collect();
        for plural in plurals {
            let req = ListRequest {
                resource: plural,
                namespace: Some(name.to_owned()),
                ..Default::default()
            };
            let Ok(page) = self.store.list(&req).await else {
                continue;
            };
            for o in page.items {
                let _ = self.store.delete(&o.key, &Preconditions::default()).await;
            }
        }
        full(StatusCode::OK, namespace_json(name, &labels).to_string())
    }

    async fn create(&self, plural: &str, ns: &str, body: &[u8]) -> Response<Body> {
        if let Some(namespaces) = &self.namespaces
            && !namespaces.lock().unwrap().contains_key(ns)
        {
            let mut st = status(404, "NotFound", &format!("namespaces \"{ns}\" not found"));
            st["details"] = json!({"name": ns, "kind": "namespaces"});
            return full(StatusCode::NOT_FOUND, st.to_string());
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return bad(400, "BadRequest", "the body is not a JSON object");
        };
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
            return bad(422, "Invalid", "metadata is required");
        };
        if name.is_empty() {
            return bad(422, "Invalid", "metadata.name: Required value");
        }
        if meta.contains_key("resourceVersion") {
            return bad(
                422,
                "Invalid",
                "metadata.resourceVersion: must be unset to create",
            );
        }
        let uid = format!(
            "host-{}-{}",
            std::process::id(),
            self.uids.fetch_add(1, Ordering::Relaxed)
        );
        meta.insert("uid".into(), json!(uid));
        meta.insert("namespace".into(), json!(ns));
        match self.store.create(&Key::new(plural, ns, &name), v).await {
            Ok(o) => full(StatusCode::CREATED, o.data),
            Err(e) => error(&e),
        }
    }

    async fn update(&self, key: Key, body: &[u8]) -> Response<Body> {
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return bad(400, "BadRequest", "the body is not a JSON object");
        };
        let Some(rv) = v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(Revision::parse)
        else {
            return bad(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            );
        };
        let current = match self.store.get(&key).await {
            Ok(o) => o,
            Err(e) => return error(&e),
        };
        if current.revision != rv {
            return error(&StoreError::Conflict {
                key,
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        let cur = current.json().unwrap();
        let meta = v["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), cur["metadata"]["uid"].clone());
        meta.insert("namespace".into(), json!(key.namespace));
        if v == cur {
            return full(StatusCode::OK, current.data);
        }
        let pre = Preconditions {
            uid: None,
            resource_version: Some(rv),
        };
        match self.store.update(&key, v, &pre).await {
            Ok(o) => full(StatusCode::OK, o.data),
            Err(e) => error(&e),
        }
    }

    async fn delete(&self, key: Key, body: &[u8]) -> Response<Body> {
        let opts: DeleteOptions = if body.is_empty() {
            DeleteOptions::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(o) => o,
                Err(e) => return bad(400, "BadRequest", &e.to_string()),
            }
        };
        let p = opts.preconditions.unwrap_or_default();
        let pre = Preconditions {
            uid: p.uid,
            resource_version: p.resource_version.as_deref().and_then(Revision::parse),
        };
        match self.store.delete(&key, &pre).await {
            Ok(o) => full(StatusCode::OK, o.data),
            Err(e) => error(&e),
        }
    }

    fn selectors(
        query: &[(String, String)],
    ) -> Result<(LabelSelector, FieldSelector), Box<Response<Body>>> {
        let labels = LabelSelector::parse(param(query, "labelSelector").unwrap_or(""))
            .map_err(|e| Box::new(bad(400, "BadRequest", &e.0)))?;
        let fields = FieldSelector::parse(
            param(query, "fieldSelector").unwrap_or(""),
            &[
                ("metadata.name", Field::Name),
                ("metadata.namespace", Field::Namespace),
            ],
        )
        .map_err(|e| Box::new(bad(400, "BadRequest", &e.0)))?;
        Ok((labels, fields))
    }

    async fn list(
        &self,
        plural: &str,
        ns: Option<&str>,
        query: &[(String, String)],
    ) -> Response<Body> {
        let (labels, fields) = match Self::selectors(query) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let rv = param(query, "resourceVersion");
        let at = match (rv, param(query, "resourceVersionMatch")) {
            (None | Some("0"), _) => ReadAt::Latest,
            (Some(r), Some("Exact")) => match Revision::parse(r) {
                Some(r) => ReadAt::Exact(r),
                None => return bad(400, "BadRequest", "bad resourceVersion"),
            },
            (Some(r), _) => match Revision::parse(r) {
                Some(r) => ReadAt::NotOlderThan(r),
                None => return bad(400, "BadRequest", "bad resourceVersion"),
            },
        };
        let req = ListRequest {
            resource: plural.to_owned(),
            namespace: ns.map(str::to_owned),
            labels,
            fields,
            limit: param(query, "limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0),
            continue_token: param(query, "continue").map(str::to_owned),
            at,
        };
        let page = match self.store.list(&req).await {
            Ok(p) => p,
            Err(e) => return error(&e),
        };
        let mut meta = json!({"resourceVersion": page.revision.to_string()});
        if let Some(c) = &page.continue_token {
            meta["continue"] = json!(c);
        }
        if let Some(n) = page.remaining {
            meta["remainingItemCount"] = json!(n);
        }
        let mut out = format!(
            r#"{{"kind":"List","apiVersion":"{GROUP}/{VERSION}","metadata":{meta},"items":["#
        )
        .into_bytes();
        for (i, o) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&o.data);
        }
        out.extend_from_slice(b"]}");
        full(StatusCode::OK, out)
    }

    async fn watch(
        &self,
        plural: &str,
        ns: Option<&str>,
        query: &[(String, String)],
    ) -> Response<Body> {
        let (labels, fields) = match Self::selectors(query) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let bookmarks = matches!(param(query, "allowWatchBookmarks"), Some("true" | "1"));
        let timeout = param(query, "timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        // From "now" (unset or "0"): the current state as ADDED events first.
        let mut initial = Vec::new();
        let from = match param(query, "resourceVersion") {
            None | Some("0") => {
                let req = ListRequest {
                    resource: plural.to_owned(),
                    namespace: ns.map(str::to_owned),
                    labels: labels.clone(),
                    fields: fields.clone(),
                    ..Default::default()
                };
                match self.store.list(&req).await {
                    Ok(p) => {
                        initial = p
                            .items
                            .into_iter()
                            .map(|o| line("ADDED", &o.data))
                            .collect();
                        p.revision
                    }
                    Err(e) => return error(&e),
                }
            }
            Some(r) => match Revision::parse(r) {
                Some(r) => r,
                None => return bad(400, "BadRequest", "bad resourceVersion"),
            },
        };
        let req = WatchRequest {
            resource: plural.to_owned(),
            namespace: ns.map(str::to_owned),
            labels,
            fields,
            from,
            bookmarks,
            // kube-apiserver's cacher: a bookmark with its progress 2 s before the deadline.
            bookmark_after: Some(timeout.saturating_sub(Duration::from_secs(2))),
        };
        let stream = match self.store.watch(&req).await {
            Ok(s) => s,
            Err(e) => return error(&e),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let events =
            stream
                .take_until(tokio::time::sleep_until(deadline))
                .scan(false, |ended, item| {
                    if *ended {
                        return std::future::ready(None);
                    }
                    let l = match item {
                        WatchItem::Event { kind, object, .. } => line(kind_name(kind), &object),
                        WatchItem::Bookmark(r) => line(
                            "BOOKMARK",
                            json!({"kind": "Bookmark", "apiVersion": format!("{GROUP}/{VERSION}"),
                               "metadata": {"resourceVersion": r.to_string()}})
                            .to_string()
                            .as_bytes(),
                        ),
                        WatchItem::Error(e) => {
                            *ended = true;
                            line("ERROR", status_of(&e).1.to_string().as_bytes())
                        }
                    };
                    std::future::ready(Some(l))
                });
        let all = futures_util::stream::iter(initial)
            .chain(events)
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(StreamBody::new(all)))
            .unwrap()
    }
}

fn namespace_json(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels},
           "status": {"phase": "Active"}})
}

fn kind_name(k: crate::EventKind) -> &'static str {
    match k {
        crate::EventKind::Added => "ADDED",
        crate::EventKind::Modified => "MODIFIED",
        crate::EventKind::Deleted => "DELETED",
    }
}

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = format!(r#"{{"type":"{kind}","object":"#).into_bytes();
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}
