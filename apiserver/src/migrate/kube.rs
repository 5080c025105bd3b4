//! The Kubernetes source: KFP 2.17's `pipelines.kubeflow.org/v2beta1` custom resources
//! (`Pipeline`, `PipelineVersion`) read from a cluster with `kube`, in pages of 500, before the
//! APIService takes the group over. Nothing is written to the cluster.
//!
//! Object -> object: uid, name, namespace (after `--namespace-map`), labels, annotations,
//! finalizers, creationTimestamp and spec are kept; resourceVersion, generation and
//! managedFields are the target's own; owner references and the pipeline labels are set again
//! from the parent (the same uid, since the parent keeps its uid). A version whose
//! `PipelineVersionStatus` condition says anything but `READY` (KFP's CREATING, DELETING) is
//! skipped; one without a status (applied with kubectl or GitOps) is migrated and gets `READY`,
//! as any create here. Objects being deleted, and versions whose Pipeline is not in their
//! namespace, are skipped.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::types::CONDITION_TYPE;
use kfp_apiservice::{API_VERSION, Pipeline, PipelineVersion};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Map, Value, json};

use super::{Candidate, Kind, Namespaces, Skip, SourceRows};

/// The page size of the lists.
const PAGE: u32 = 500;

/// Where to read from: `kube://` (in-cluster configuration, else `$KUBECONFIG` / `~/.kube/config`)
/// or `kube://?kubeconfig=PATH`.
pub fn kubeconfig_of(url: &str) -> Result<Option<std::path::PathBuf>, String> {
    let rest = url
        .strip_prefix("kube://")
        .ok_or_else(|| format!("{url:?} is not a kube:// URL"))?;
    let query = match rest.split_once('?') {
        Some(("", q)) => q,
        None if rest.is_empty() => "",
        _ => {
            return Err(format!(
                "{url:?}: expected kube:// or kube://?kubeconfig=PATH"
            ));
        }
    };
    let mut path = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "kubeconfig" => path = Some(std::path::PathBuf::from(v.into_owned())),
            other => return Err(format!("{url:?}: unknown parameter {other:?} (kubeconfig)")),
        }
    }
    Ok(path)
}

/// A client from the kubeconfig, or the in-cluster configuration, or the default kubeconfig.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading the kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading the kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig given and none found (in-cluster, $KUBECONFIG, ~/.kube/config)",
        )?,
    };
    kube::Client::try_from(config).context("a client for the cluster")
}

/// Every object of one kind, all namespaces, page by page.
async fn list_all(client: &kube::Client, kind: &str, plural: &str) -> anyhow::Result<Vec<Value>> {
    let ar = ApiResource {
        group: kfp_apiservice::GROUP.into(),
        version: kfp_apiservice::VERSION.into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api
            .list(&lp)
            .await
            .map_err(|e| anyhow::anyhow!("listing {plural}.{}: {e}", kfp_apiservice::GROUP))?;
        for o in page.items {
            out.push(serde_json::to_value(&o)?);
        }
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or_default()
}

/// The metadata a create takes from the source: name, namespace, labels, annotations, finalizers.
fn kept_metadata(source: &Value, namespace: &str) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(str_at(source, "/metadata/name")));
    m.insert("namespace".into(), json!(namespace));
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(v) = source.pointer(&format!("/metadata/{field}")) {
            m.insert(field.into(), v.clone());
        }
    }
    Value::Object(m)
}

/// Reads both kinds from the cluster.
pub async fn read(client: &kube::Client, namespaces: &Namespaces) -> anyhow::Result<SourceRows> {
    let pipelines = list_all(client, Pipeline::KIND, Pipeline::PLURAL).await?;
    let versions = list_all(client, PipelineVersion::KIND, PipelineVersion::PLURAL).await?;
    Ok(rows(pipelines, versions, namespaces))
}

fn created_of(o: &Value) -> Option<Timestamp> {
    str_at(o, "/metadata/creationTimestamp").parse().ok()
}

fn by_creation(objects: &mut [Value]) {
    objects.sort_by(|a, b| {
        (created_of(a), str_at(a, "/metadata/uid"))
            .cmp(&(created_of(b), str_at(b, "/metadata/uid")))
    });
}

/// The candidates and skips of the listed objects (no I/O; the unit tests drive it).
pub fn rows(
    mut pipelines: Vec<Value>,
    mut versions: Vec<Value>,
    namespaces: &Namespaces,
) -> SourceRows {
    by_creation(&mut pipelines);
    by_creation(&mut versions);
    let mut out = SourceRows::default();
    // Source (namespace, name) -> uid of the pipelines taken.
    let mut taken: HashMap<(String, String), String> = HashMap::new();
    let describe = |kind: &str, o: &Value| {
        format!(
            "{kind} {}/{} ({})",
            str_at(o, "/metadata/namespace"),
            str_at(o, "/metadata/name"),
            str_at(o, "/metadata/uid")
        )
    };
    let common = |o: &Value, kind: &str, out: &mut SourceRows| -> Option<Timestamp> {
        let source = describe(kind, o);
        if o.pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null())
        {
            out.skipped.push(Skip {
                source,
                reason: "it is being deleted".into(),
            });
            return None;
        }
        if str_at(o, "/metadata/uid").is_empty() {
            out.skipped.push(Skip {
                source,
                reason: "it has no uid".into(),
            });
            return None;
        }
        let created = created_of(o);
        if created.is_none() {
            out.skipped.push(Skip {
                source,
                reason: "it has no creationTimestamp".into(),
            });
        }
        created
    };
    for p in pipelines {
        let Some(created) = common(&p, Pipeline::KIND, &mut out) else {
            continue;
        };
        let (ns, name, uid) = (
            str_at(&p, "/metadata/namespace").to_owned(),
            str_at(&p, "/metadata/name").to_owned(),
            str_at(&p, "/metadata/uid").to_owned(),
        );
        let target = namespaces.target(&ns);
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": Pipeline::KIND,
            "metadata": kept_metadata(&p, &target),
            "spec": p.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        taken.insert((ns, name.clone()), uid.clone());
        out.candidates.push(Candidate {
            kind: Kind::Pipeline,
            namespace: target,
            name,
            source: describe(Pipeline::KIND, &p),
            uid,
            created,
            body,
            parent_uid: None,
            renamed_from: None,
        });
    }
    for v in versions {
        let Some(created) = common(&v, PipelineVersion::KIND, &mut out) else {
            continue;
        };
        let source = describe(PipelineVersion::KIND, &v);
        let ns = str_at(&v, "/metadata/namespace").to_owned();
        let pipeline = str_at(&v, "/spec/pipelineName").to_owned();
        let Some(parent_uid) = taken.get(&(ns.clone(), pipeline.clone())) else {
            out.skipped.push(Skip {
                source,
                reason: format!("its Pipeline {pipeline:?} is not migrated (not in namespace {ns:?}, or skipped)"),
            });
            continue;
        };
        let state = v
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == CONDITION_TYPE))
            .map(|c| str_at(c, "/reason").to_owned());
        if let Some(reason) = state.filter(|r| r != "READY") {
            out.skipped.push(Skip {
                source,
                reason: format!("its {CONDITION_TYPE} is {reason:?}, not READY"),
            });
            continue;
        }
        let target = namespaces.target(&ns);
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": PipelineVersion::KIND,
            "metadata": kept_metadata(&v, &target),
            "spec": v.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        out.candidates.push(Candidate {
            kind: Kind::Version,
            namespace: target,
            name: str_at(&v, "/metadata/name").to_owned(),
            uid: str_at(&v, "/metadata/uid").to_owned(),
            created,
            body,
            parent_uid: Some(parent_uid.clone()),
            source,
            renamed_from: None,
        });
    }
    out
}

/// The steps to move a live cluster from KFP's CRDs to this server's APIService.
pub const SWITCH_OVER: &str = "\
switching a cluster from KFP's CRDs to this server (docs/migration.md):
  1. stop writers: kubectl -n kubeflow scale deployment ml-pipeline --replicas=0 (KFP's API server and its webhooks)
  2. migrate: kfp-apiserver migrate --from kube:// --to STORE (again until it creates nothing)
  3. keep a copy: kubectl get pipelines.pipelines.kubeflow.org,pipelineversions.pipelines.kubeflow.org -A -o yaml > kfp-crs.yaml
  4. remove KFP's webhooks: kubectl delete mutatingwebhookconfiguration,validatingwebhookconfiguration pipelineversions.pipelines.kubeflow.org
  5. delete the CRDs (their objects go with them; the copy and this server's store hold them): kubectl delete crd pipelines.pipelines.kubeflow.org pipelineversions.pipelines.kubeflow.org
  6. install this server and its APIService v2beta1.pipelines.kubeflow.org (apiservice/deploy), pointing it at STORE
  7. check: kubectl get pipelines -A -o custom-columns=NAME:.metadata.name,UID:.metadata.uid shows the old uids";

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(ns: &str, name: &str, uid: &str, t: &str) -> Value {
        json!({"apiVersion": API_VERSION, "kind": "Pipeline",
               "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": t,
                            "resourceVersion": "7", "generation": 3,
                            "labels": {"team": "a"}, "annotations": {"note": "x"},
                            "managedFields": [{"manager": "kubectl"}]},
               "spec": {"displayName": name}})
    }

    fn version(ns: &str, name: &str, pipeline: &str, uid: &str, reason: Option<&str>) -> Value {
        let mut v = json!({"apiVersion": API_VERSION, "kind": "PipelineVersion",
               "metadata": {"name": name, "namespace": ns, "uid": uid,
                            "creationTimestamp": "2025-01-02T03:04:05Z",
                            "ownerReferences": [{"uid": "stale"}]},
               "spec": {"pipelineName": pipeline, "pipelineSpec": {}}});
        if let Some(r) = reason {
            v["status"] = json!({"conditions": [{"type": CONDITION_TYPE, "status": "True", "reason": r, "message": r}]});
        }
        v
    }

    #[test]
    fn keeps_identity_and_user_metadata_and_skips_what_kfp_would_hide() {
        let mut ns = Namespaces::default();
        ns.map.insert("kubeflow".into(), "shared".into());
        let mut gone = pipeline("kubeflow", "gone", "u-gone", "2025-01-01T00:00:00Z");
        gone["metadata"]["deletionTimestamp"] = json!("2025-02-01T00:00:00Z");
        let rows = rows(
            vec![
                pipeline("kubeflow", "b", "u-b", "2025-01-01T00:00:02Z"),
                pipeline("kubeflow", "a", "u-a", "2025-01-01T00:00:01Z"),
                gone,
            ],
            vec![
                version("kubeflow", "a", "a", "v-a", Some("READY")),
                version("kubeflow", "a-v2", "a", "v-a2", None),
                version("kubeflow", "b-v1", "b", "v-b", Some("CREATING")),
                version("kubeflow", "orphan", "missing", "v-o", None),
            ],
            &ns,
        );
        let names: Vec<_> = rows.candidates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", "a", "a-v2"],
            "creation order, pipelines first"
        );
        let a = &rows.candidates[0];
        assert_eq!((a.uid.as_str(), a.namespace.as_str()), ("u-a", "shared"));
        assert_eq!(a.created.to_string(), "2025-01-01T00:00:01Z");
        assert_eq!(
            a.body["metadata"],
            json!({"name": "a", "namespace": "shared", "labels": {"team": "a"}, "annotations": {"note": "x"}})
        );
        let v = &rows.candidates[2];
        assert_eq!(v.parent_uid.as_deref(), Some("u-a"));
        assert!(v.body["metadata"].get("ownerReferences").is_none());
        assert!(v.body.get("status").is_none());
        let reasons: Vec<_> = rows.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(rows.skipped.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("being deleted")));
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("\"CREATING\", not READY"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("\"missing\" is not migrated"))
        );
    }

    #[test]
    fn urls() {
        assert_eq!(kubeconfig_of("kube://"), Ok(None));
        assert_eq!(
            kubeconfig_of("kube://?kubeconfig=/tmp/k%20c"),
            Ok(Some("/tmp/k c".into()))
        );
        assert!(kubeconfig_of("kube://host").is_err());
        assert!(kubeconfig_of("kube://?context=x").is_err());
    }
}
