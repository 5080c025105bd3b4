//! The benchmarks' objects: PipelineVersions of the corpus's hello-world IR, as the server
//! stores them (labels, owner reference, status), numbered.

use serde_json::{Value, json};

/// The resource every benchmark writes.
pub const R: &str = "pipelineversions";

/// The benchmarks' namespace.
pub fn ns() -> String {
    format!("bench-{}", std::process::id())
}

/// A version with empty names, to fill with [`object`].
pub fn template() -> Value {
    let ir: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/corpus/packages/hello_world.json"
        ))
        .expect("shared corpus beside the checkout"),
    )
    .unwrap();
    json!({
        "apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion",
        "metadata": {"name": "", "namespace": ns(), "uid": "", "generation": 1,
            "creationTimestamp": "", "labels": {}, "ownerReferences": [{"apiVersion": "pipelines.kubeflow.org/v2beta1",
            "kind": "Pipeline", "name": "", "uid": "", "blockOwnerDeletion": true}]},
        "spec": {"pipelineName": "", "displayName": "", "description": "One task that echoes a string.", "pipelineSpec": ir},
        "status": {"conditions": [{"type": "PipelineVersionStatus", "status": "True", "reason": "READY", "message": "READY"}]}
    })
}

/// Version `i`: name `v{i:07}`, one of 100 pipelines, one of 10 teams.
pub fn object(t: &Value, i: usize) -> Value {
    let mut v = t.clone();
    let name = format!("v{i:07}");
    let pipeline = format!("p{:03}", i % 100);
    v["metadata"]["name"] = json!(name);
    v["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
    v["metadata"]["creationTimestamp"] = json!(format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60
    ));
    v["metadata"]["labels"] = json!({"pipelines.kubeflow.org/pipeline-id": format!("pid-{pipeline}"), "team": format!("t{}", i % 10)});
    v["metadata"]["ownerReferences"][0]["name"] = json!(pipeline);
    v["metadata"]["ownerReferences"][0]["uid"] = json!(format!("pid-{pipeline}"));
    v["spec"]["pipelineName"] = json!(pipeline);
    v["spec"]["displayName"] = json!(format!("version {i}"));
    v
}
