//! The registry's semantics through the whole in-process stack, checked against what
//! kube-apiserver does for the same steps: the GitOps sequences of server-side apply and
//! updates by people (managedFields entries written out as kube-apiserver writes them), Flux's
//! ownership takeover, the generic update rules, dependents with finalizers (Background,
//! Foreground, Orphan), no-op writes, contention, and wrongly shaped bodies.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kfp_apiserver::app::{App, AppService, Limits};
use kfp_storage::{SqlStore, Store, WatchItem, WatchRequest};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tower::Service;

const TOKEN: &str = "registry-token";
const P: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/gitops/pipelines";
const V: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/gitops/pipelineversions";

struct Server {
    app: Arc<App>,
    store: SqlStore,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

mod common;

async fn server(name: &str) -> Server {
    let (app, store, shutdown) = common::sqlite_app(
        &format!("registry-{name}"),
        TOKEN,
        &["system:masters"],
        Limits::default(),
    )
    .await;
    Server {
        app,
        store,
        _shutdown: shutdown,
    }
}

/// One request: `(status, body as JSON)`.
async fn call(
    s: &Server,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = AppService::new(s.app.clone())
        .call(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

/// POSTs a JSON object.
async fn post(s: &Server, url: &str, body: &Value) -> (StatusCode, Value) {
    call(s, "POST", url, "application/json", &body.to_string()).await
}

async fn apply(
    s: &Server,
    url: &str,
    manager: &str,
    force: bool,
    cfg: Value,
) -> (StatusCode, Value) {
    let uri = format!(
        "{url}?fieldManager={manager}{}",
        if force { "&force=true" } else { "" }
    );
    call(
        s,
        "PATCH",
        &uri,
        "application/apply-patch+yaml",
        &cfg.to_string(),
    )
    .await
}

async fn merge(s: &Server, url: &str, manager: &str, patch: Value) -> (StatusCode, Value) {
    let uri = format!("{url}?fieldManager={manager}");
    call(
        s,
        "PATCH",
        &uri,
        "application/merge-patch+json",
        &patch.to_string(),
    )
    .await
}

fn pipeline(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline", "metadata": {"name": name}, "spec": spec})
}

/// The entry of `manager` (with its operation), without its time.
fn entry(obj: &Value, manager: &str) -> Value {
    let e = obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["manager"] == manager))
        .cloned()
        .unwrap_or(Value::Null);
    let mut e = e;
    if let Some(m) = e.as_object_mut() {
        m.remove("time");
    }
    e
}

fn version(name: &str, pipeline: &str) -> Value {
    json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion",
        "metadata": {"name": name}, "spec": {"pipelineName": pipeline, "pipelineSpec": common::hello_world_spec()}})
}

#[tokio::test]
async fn a_persons_label_stays_theirs_and_the_next_flux_apply_needs_no_force() {
    let s = server("gitops").await;
    let url = format!("{P}/demo");
    let (code, _) = apply(
        &s,
        &url,
        "flux",
        false,
        pipeline("demo", json!({"displayName": "One", "description": "d"})),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, labelled) = merge(
        &s,
        &url,
        "kubectl-label",
        json!({"metadata": {"labels": {"team": "ml"}}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    // kube-apiserver writes exactly this entry for `kubectl label pipeline demo team=ml`.
    assert_eq!(
        entry(&labelled, "kubectl-label"),
        json!({"manager": "kubectl-label", "operation": "Update", "apiVersion": "pipelines.kubeflow.org/v2beta1",
               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}})
    );
    let (code, out) = apply(
        &s,
        &url,
        "flux",
        false,
        pipeline("demo", json!({"displayName": "Two", "description": "d"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{out}");
    assert_eq!(out["spec"]["displayName"], "Two");
    assert_eq!(out["metadata"]["labels"]["team"], "ml");
    assert_eq!(
        entry(&out, "flux"),
        json!({"manager": "flux", "operation": "Apply", "apiVersion": "pipelines.kubeflow.org/v2beta1",
               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:description": {}, "f:displayName": {}}}})
    );
    assert_eq!(
        entry(&out, "kubectl-label")["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
    );
    // A person editing a field flux applies takes it; flux's next apply then conflicts with them
    // only, naming them as kube-apiserver does.
    let (_, _) = merge(
        &s,
        &url,
        "kubectl-edit",
        json!({"spec": {"displayName": "Edited"}}),
    )
    .await;
    let (code, err) = apply(
        &s,
        &url,
        "flux",
        false,
        pipeline("demo", json!({"displayName": "Three", "description": "d"})),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        err["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using pipelines.kubeflow.org/v2beta1: .spec.displayName"
    );
    assert_eq!(err["details"]["causes"][0]["field"], ".spec.displayName");
    let (code, out) = apply(
        &s,
        &url,
        "flux",
        true,
        pipeline("demo", json!({"displayName": "Three", "description": "d"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        entry(&out, "kubectl-edit"),
        Value::Null,
        "the editor owned nothing else"
    );
}

#[tokio::test]
async fn dropped_fields_and_maps_go_and_co_owned_fields_stay() {
    let s = server("prune").await;
    let url = format!("{P}/p");
    let full = pipeline(
        "p",
        json!({"displayName": "A", "description": "d", "tags": {"k": "v"}}),
    );
    apply(&s, &url, "flux", false, full.clone()).await;
    // Another applier of the same values co-owns them.
    let (code, _) = apply(
        &s,
        &url,
        "argo",
        false,
        pipeline("p", json!({"description": "d"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, out) = apply(
        &s,
        &url,
        "flux",
        false,
        pipeline("p", json!({"displayName": "A"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        out["spec"].get("tags").is_none(),
        "a dropped map goes whole: {out}"
    );
    assert_eq!(out["spec"]["description"], "d", "argo still applies it");
    let (_, out) = apply(&s, &url, "argo", false, pipeline("p", json!({}))).await;
    assert!(out["spec"].get("description").is_none(), "{out}");
}

#[tokio::test]
async fn finalizers_owner_references_and_conditions_merge_by_their_keys() {
    let s = server("keys").await;
    let url = format!("{P}/p");
    let meta = |f: &str, uid: &str| json!({"name": "p", "finalizers": [f], "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": uid, "uid": uid}]});
    let cfg = |m: Value| json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline", "metadata": m});
    apply(&s, &url, "a", false, cfg(meta("example.com/a", "u1"))).await;
    let (code, out) = apply(&s, &url, "b", false, cfg(meta("example.com/b", "u2"))).await;
    assert_eq!(code, StatusCode::OK, "{out}");
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b"])
    );
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        entry(&out, "b")["fieldsV1"]["f:metadata"]["f:finalizers"],
        json!({"v:\"example.com/b\"": {}}),
        "an apply owns the items it lists, not the list (SMD ToFieldSet)"
    );
    // status.conditions is a map keyed by type; an apply to /status is recorded as such.
    let (_, pipe) = call(&s, "GET", &url, "", "").await;
    let pname = pipe["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (code, _) = post(&s, V, &version("v", &pname)).await;
    assert_eq!(code, StatusCode::CREATED);
    let cond = |t: &str| {
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion", "metadata": {"name": "v"},
        "status": {"conditions": [{"type": t, "status": "True", "reason": "R", "message": "m"}]}})
    };
    let (code, out) = apply(&s, &format!("{V}/v/status"), "ctrl-x", false, cond("X")).await;
    assert_eq!(code, StatusCode::OK, "{out}");
    let (_, out) = apply(&s, &format!("{V}/v/status"), "ctrl-y", false, cond("Y")).await;
    let types: Vec<&str> = out["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, vec!["PipelineVersionStatus", "X", "Y"]);
    let y = entry(&out, "ctrl-y");
    assert_eq!(y["subresource"], "status");
    assert_eq!(y["operation"], "Apply");
    assert!(
        y["fieldsV1"]["f:status"]["f:conditions"]
            .get("k:{\"type\":\"Y\"}")
            .is_some(),
        "{y}"
    );
}

#[tokio::test]
async fn the_generic_update_rules_of_kube_apiserver() {
    let s = server("rules").await;
    let (_, created) = post(&s, P, &pipeline("p", json!({"displayName": "A"}))).await;
    let url = format!("{P}/p");
    // PUT without resourceVersion: 422.
    let (code, err) = call(
        &s,
        "PUT",
        &url,
        "application/json",
        &pipeline("p", json!({"displayName": "B"})).to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["message"].as_str().unwrap_or_default().contains(
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        ),
        "{err}"
    );
    // PUT with another uid: 409.
    let mut other = created.clone();
    other["metadata"]["uid"] = json!("not-the-uid");
    let (code, err) = call(&s, "PUT", &url, "application/json", &other.to_string()).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{err}"
    );
    // No new finalizers once deleting.
    merge(
        &s,
        &url,
        "m",
        json!({"metadata": {"finalizers": ["example.com/keep"]}}),
    )
    .await;
    let (code, deleted) = call(&s, "DELETE", &url, "", "").await;
    assert_eq!(
        code,
        StatusCode::OK,
        "200, not 202, with the object carrying deletionTimestamp"
    );
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    let (code, err) = merge(
        &s,
        &url,
        "m",
        json!({"metadata": {"finalizers": ["example.com/keep", "example.com/new"]}}),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no new finalizers can be added"),
        "{err}"
    );
    // Removing the last finalizer lets it go.
    let (code, _) = merge(&s, &url, "m", json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(&s, "GET", &url, "", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flux_takes_over_a_client_side_applied_object_and_prunes_without_force() {
    let s = server("takeover").await;
    let body = pipeline("p", json!({"displayName": "A", "description": "old"}));
    let (code, created) = post(
        &s,
        &format!("{P}?fieldManager=kubectl-client-side-apply"),
        &body,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let takeover = json!([{"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "pipelines.kubeflow.org/v2beta1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:description": {}, "f:displayName": {}}}}]);
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/metadata/managedFields", "value": takeover}
    ]);
    let (code, out) = call(
        &s,
        "PATCH",
        &format!("{P}/p?fieldManager=kustomize-controller"),
        "application/json-patch+json",
        &patch.to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{out}");
    let mut stored = out["metadata"]["managedFields"].clone();
    if let Some(es) = stored.as_array_mut() {
        for e in es.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("time");
        }
    }
    assert_eq!(stored, takeover, "stored exactly as given");
    let (code, out) = apply(
        &s,
        &format!("{P}/p"),
        "kustomize-controller",
        false,
        pipeline("p", json!({"displayName": "A"})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{out}");
    assert!(out["spec"].get("description").is_none(), "{out}");
}

async fn revisions(store: &SqlStore, resource: &str) -> Vec<(String, u64, Value)> {
    let mut w = store
        .watch(&WatchRequest {
            resource: resource.into(),
            from: kfp_storage::Revision(0),
            ..Default::default()
        })
        .await
        .expect("watch");
    let current = store.current_revision().await.expect("rev").0;
    let mut out = Vec::new();
    while let Ok(Some(item)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), w.next()).await
    {
        if let WatchItem::Event {
            kind,
            revision,
            object,
        } = item
        {
            out.push((
                kind.as_str().to_owned(),
                revision.0,
                serde_json::from_slice(&object).unwrap_or(Value::Null),
            ));
            if revision.0 >= current {
                break;
            }
        }
    }
    out
}

async fn pipeline_with_versions(s: &Server, name: &str, finalizer: Option<&str>) {
    let mut p = pipeline(name, json!({}));
    if let Some(f) = finalizer {
        p["metadata"]["finalizers"] = json!([f]);
    }
    let (code, _) = post(s, P, &p).await;
    assert_eq!(code, StatusCode::CREATED);
    for v in ["v1", "v2"] {
        let (code, b) = post(s, V, &version(&format!("{name}-{v}"), name)).await;
        assert_eq!(code, StatusCode::CREATED, "{b}");
    }
}

async fn version_names(s: &Server) -> Vec<String> {
    let (_, list) = call(s, "GET", V, "", "").await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_owner_with_a_finalizer_keeps_its_versions_until_the_finalizer_goes() {
    let s = server("cascade-finalizer").await;
    pipeline_with_versions(&s, "p", Some("example.com/hold")).await;
    let (code, d) = call(&s, "DELETE", &format!("{P}/p"), "", "").await;
    assert_eq!(code, StatusCode::OK);
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        version_names(&s).await,
        vec!["p-v1", "p-v2"],
        "the owner still exists"
    );
    // A new version under an owner being deleted is refused.
    let (code, err) = post(&s, V, &version("p-v3", "p")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{err}");
    merge(
        &s,
        &format!("{P}/p"),
        "controller",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert!(
        version_names(&s).await.is_empty(),
        "collected once the owner is gone"
    );
}

#[tokio::test]
async fn foreground_shows_the_owner_with_foreground_deletion_until_the_versions_are_gone() {
    let s = server("cascade-foreground").await;
    pipeline_with_versions(&s, "p", None).await;
    let (code, d) = call(
        &s,
        "DELETE",
        &format!("{P}/p"),
        "application/json",
        &json!({"propagationPolicy": "Foreground"}).to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(version_names(&s).await.is_empty());
    let (code, _) = call(&s, "GET", &format!("{P}/p"), "", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // In the change feed: the owner marked, then each version deleted, then the owner deleted.
    let pipes = revisions(&s.store, "pipelines").await;
    let versions = revisions(&s.store, "pipelineversions").await;
    let marked = pipes
        .iter()
        .find(|(k, _, o)| {
            k == "MODIFIED" && o["metadata"]["finalizers"] == json!(["foregroundDeletion"])
        })
        .map(|e| e.1);
    let owner_gone = pipes.iter().find(|(k, _, _)| k == "DELETED").map(|e| e.1);
    let versions_gone: Vec<u64> = versions
        .iter()
        .filter(|(k, _, _)| k == "DELETED")
        .map(|e| e.1)
        .collect();
    assert_eq!(versions_gone.len(), 2);
    let (Some(marked), Some(owner_gone)) = (marked, owner_gone) else {
        panic!("{pipes:?}")
    };
    assert!(
        versions_gone.iter().all(|r| *r > marked && *r < owner_gone),
        "{marked} {versions_gone:?} {owner_gone}"
    );
}

#[tokio::test]
async fn orphan_leaves_versions_without_their_owner() {
    let s = server("cascade-orphan").await;
    pipeline_with_versions(&s, "p", None).await;
    let (code, _) = call(
        &s,
        "DELETE",
        &format!("{P}/p?propagationPolicy=Orphan"),
        "",
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (_, list) = call(&s, "GET", V, "", "").await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    for i in items {
        assert!(i["metadata"].get("ownerReferences").is_none(), "{i}");
        assert!(
            i["metadata"]["labels"]
                .get("pipelines.kubeflow.org/pipeline-id")
                .is_none(),
            "{i}"
        );
    }
}

/// More dependents than one page of the cascade's walk (100), one of them held by a finalizer in
/// the middle: the background cascade deletes every other one and marks the held one, and the
/// orphaning of another owner's versions reaches all of them.
#[tokio::test]
async fn cascades_and_orphaning_reach_every_page_of_dependents() {
    let s = server("cascade-pages").await;
    for owner in ["gone", "kept"] {
        let (code, _) = post(&s, P, &pipeline(owner, json!({}))).await;
        assert_eq!(code, StatusCode::CREATED);
        for i in 0..230 {
            let mut v = version(&format!("{owner}-{i:03}"), owner);
            if owner == "gone" && i == 150 {
                v["metadata"]["finalizers"] = json!(["example.com/hold"]);
            }
            let (code, b) = post(&s, V, &v).await;
            assert_eq!(code, StatusCode::CREATED, "{b}");
        }
    }
    // Store lists so far, from the metrics the instrumented store keeps.
    let lists = || {
        s.app
            .metrics
            .render()
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "kfp_store_operation_duration_seconds_count{operation=\"list\",result=\"ok\"} ",
                )
                .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = lists();
    let (code, _) = call(&s, "DELETE", &format!("{P}/gone"), "", "").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        lists() - before >= 3,
        "230 dependents are read in pages of at most 100, not in one list"
    );
    let before = lists();
    let (code, _) = call(
        &s,
        "DELETE",
        &format!("{P}/kept?propagationPolicy=Orphan"),
        "",
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(lists() - before >= 3, "orphaning reads pages too");
    let (_, list) = call(&s, "GET", V, "", "").await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    let gone: Vec<&&str> = names.iter().filter(|n| n.starts_with("gone-")).collect();
    assert_eq!(
        gone,
        [&"gone-150"],
        "only the held version of the deleted owner stays"
    );
    let held = items
        .iter()
        .find(|i| i["metadata"]["name"] == "gone-150")
        .expect("held");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let kept: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kept-"))
        })
        .collect();
    assert_eq!(kept.len(), 230, "orphaning deletes nothing");
    for i in kept {
        assert!(i["metadata"].get("ownerReferences").is_none(), "{i}");
        assert!(
            i["metadata"]["labels"]
                .get("pipelines.kubeflow.org/pipeline-id")
                .is_none(),
            "{i}"
        );
    }
}

#[tokio::test]
async fn no_op_writes_keep_the_resource_version_and_contention_is_retried() {
    let s = server("noop").await;
    let (_, created) = post(&s, P, &pipeline("p", json!({"displayName": "A"}))).await;
    let rv = created["metadata"]["resourceVersion"].clone();
    let (_, out) = merge(&s, &format!("{P}/p"), "m", json!({})).await;
    assert_eq!(out["metadata"]["resourceVersion"], rv);
    let (_, out) = call(
        &s,
        "PATCH",
        &format!("{P}/p"),
        "application/json-patch+json",
        "[]",
    )
    .await;
    assert_eq!(out["metadata"]["resourceVersion"], rv);
    let (_, out) = call(
        &s,
        "PUT",
        &format!("{P}/p"),
        "application/json",
        &created.to_string(),
    )
    .await;
    assert_eq!(
        out["metadata"]["resourceVersion"], rv,
        "re-PUT of the same object"
    );
    // 50 concurrent merge patches of one object all succeed.
    let mut tasks = Vec::new();
    let s = Arc::new(s);
    for i in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            merge(
                &s,
                &format!("{P}/p"),
                "m",
                json!({"metadata": {"labels": {format!("l{i}"): "x"}}}),
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::OK);
    }
    let (_, out) = call(&s, "GET", &format!("{P}/p"), "", "").await;
    assert_eq!(
        out["metadata"]["labels"].as_object().map(|m| m.len()),
        Some(50)
    );
}

#[tokio::test]
async fn wrongly_shaped_bodies_are_400_and_change_nothing() {
    let s = server("shapes").await;
    let (_, created) = post(&s, P, &pipeline("p", json!({"displayName": "A"}))).await;
    let url = format!("{P}/p");
    for body in [
        "[]",
        "\"str\"",
        "42",
        "true",
        "null",
        "{\"metadata\":\"x\"}",
        "{\"metadata\":{\"name\":5}}",
    ] {
        let (code, err) = call(&s, "PUT", &url, "application/json", body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "PUT {body}: {err}");
        let (code, err) = apply(
            &s,
            &format!("{P}/absent"),
            "m",
            false,
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
        .await;
        assert!(
            code == StatusCode::BAD_REQUEST || code == StatusCode::UNPROCESSABLE_ENTITY,
            "apply {body}: {code} {err}"
        );
    }
    let mut spec_list = created.clone();
    spec_list["spec"] = json!(["dn", "desc"]);
    let (code, _) = call(&s, "PUT", &url, "application/json", &spec_list.to_string()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = merge(&s, &url, "m", json!({"spec": []})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (_, now) = call(&s, "GET", &url, "", "").await;
    assert_eq!(now, created, "nothing changed");
    let (code, _) = call(&s, "GET", &format!("{P}/absent"), "", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "no half-created object");
}
