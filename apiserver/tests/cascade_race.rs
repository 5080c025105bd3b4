//! Deleting a Pipeline while versions are being created under it, on SQLite and PostgreSQL:
//! when the delete has completed and every create has answered, no version of it is left —
//! each was either refused or collected. And dependents left behind by an owner deleted
//! without its cascade (a crash in between) are collected by the registry's sweep.

mod common;

use std::sync::Arc;

use kfp_apiserver::app::App;
use kfp_storage::{Key, Preconditions};
use serde_json::{Value, json};

const TOKEN: &str = "race-token";
const P: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/race/pipelines";
const V: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/race/pipelineversions";

async fn call(app: &Arc<App>, method: &str, uri: &str, body: Option<&Value>) -> (u16, Value) {
    let a = common::send(
        app,
        TOKEN,
        method,
        uri,
        &[("content-type", "application/json")],
        body.map(Value::to_string).unwrap_or_default(),
    )
    .await;
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(Value::Null),
    )
}

fn version(name: &str) -> Value {
    version_of(name, "p")
}

fn version_of(name: &str, pipeline: &str) -> Value {
    json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion",
        "metadata": {"name": name}, "spec": {"pipelineName": pipeline, "pipelineSpec": common::hello_world_spec()}})
}

/// Creates Pipeline `p`; returns its uid.
async fn create_pipeline(app: &Arc<App>, backend: &str) -> String {
    create_pipeline_named(app, backend, "p").await
}

/// Creates Pipeline `name`; returns its uid.
async fn create_pipeline_named(app: &Arc<App>, backend: &str, name: &str) -> String {
    let (code, p) = call(
        app,
        "POST",
        P,
        Some(
            &json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
            "metadata": {"name": name}, "spec": {}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{backend}: {p}");
    p["metadata"]["uid"].as_str().expect("uid").to_owned()
}

async fn versions_of(app: &Arc<App>, uid: &str) -> Vec<String> {
    let (_, list) = call(
        app,
        "GET",
        &format!("{V}?labelSelector=pipelines.kubeflow.org%2Fpipeline-id%3D{uid}"),
        None,
    )
    .await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_created_during_their_pipelines_delete_are_all_gone_or_refused() {
    for (backend, url) in common::store_urls("cascade-race").await {
        let (app, _store, _shutdown) = common::app_on(&url, TOKEN).await;
        for round in 0..3 {
            let uid = create_pipeline(&app, backend).await;
            let mut writers = Vec::new();
            for w in 0..4 {
                let app = app.clone();
                writers.push(tokio::spawn(async move {
                    let mut codes = Vec::new();
                    for i in 0..15 {
                        let (code, body) = call(
                            &app,
                            "POST",
                            V,
                            Some(&version(&format!("v{round}-{w}-{i}"))),
                        )
                        .await;
                        assert!(
                            matches!(code, 201 | 403 | 422),
                            "a create is made or refused, nothing else: {code} {body}"
                        );
                        codes.push(code);
                    }
                    codes
                }));
            }
            // Let some versions in first, then delete while the writers keep going.
            tokio::task::yield_now().await;
            let (code, body) = call(&app, "DELETE", &format!("{P}/p"), None).await;
            assert_eq!(code, 200, "{backend}: {body}");
            let mut made = 0;
            for w in writers {
                made += w
                    .await
                    .expect("writer")
                    .iter()
                    .filter(|c| **c == 201)
                    .count();
            }
            assert_eq!(
                versions_of(&app, &uid).await,
                Vec::<String>::new(),
                "{backend} round {round}: {made} versions were made; none may outlive the pipeline"
            );
        }
    }
}

/// The sweep deletes the versions of every pipeline that is gone (more of them than one batch
/// of the store's answer), and none of a pipeline that is still there.
#[tokio::test]
async fn the_sweep_collects_versions_whose_pipeline_is_gone() {
    for (backend, url) in common::store_urls("orphan-sweep").await {
        let (app, store, _shutdown) = common::app_on(&url, TOKEN).await;
        let uid = create_pipeline(&app, backend).await;
        for i in 0..3 {
            let (code, _) = call(&app, "POST", V, Some(&version(&format!("v{i}")))).await;
            assert_eq!(code, 201);
        }
        let kept = create_pipeline_named(&app, backend, "keep").await;
        for i in 0..2 {
            let (code, _) =
                call(&app, "POST", V, Some(&version_of(&format!("k{i}"), "keep"))).await;
            assert_eq!(code, 201);
        }
        // 105 more pipelines, one version each: the store names gone owners 100 at a time.
        let mut more = Vec::new();
        for i in 0..105 {
            let name = format!("m{i}");
            more.push(create_pipeline_named(&app, backend, &name).await);
            let (code, _) =
                call(&app, "POST", V, Some(&version_of(&format!("mv{i}"), &name))).await;
            assert_eq!(code, 201);
        }
        // The owners go without their cascade, as if the server died right after deleting them.
        for name in std::iter::once("p".to_owned()).chain((0..105).map(|i| format!("m{i}"))) {
            store
                .delete(
                    &Key::new("pipelines", "race", &name),
                    &Preconditions::default(),
                )
                .await
                .expect("delete the owner only");
        }
        assert_eq!(
            versions_of(&app, &uid).await.len(),
            3,
            "{backend}: left behind"
        );
        assert_eq!(
            app.registry.collect_orphans().await.expect("sweep"),
            3 + 105,
            "{backend}"
        );
        assert!(
            versions_of(&app, &uid).await.is_empty(),
            "{backend}: collected"
        );
        for m in &more {
            assert!(
                versions_of(&app, m).await.is_empty(),
                "{backend}: collected"
            );
        }
        assert_eq!(
            versions_of(&app, &kept).await.len(),
            2,
            "{backend}: a pipeline that is there keeps its versions"
        );
        assert_eq!(
            app.registry.collect_orphans().await.expect("sweep"),
            0,
            "{backend}: nothing more"
        );
    }
}
