//! The Kubernetes source: KFP 2.17's `pipelines.kubeflow.org/v2beta1` custom resources
//! (`Pipeline`, `PipelineVersion`) read from a cluster with `kube`, in pages of 500, before the
//! APIService takes the group over. Nothing is written to the cluster.
//!
//! Object -> object: uid, name, namespace (after `--namespace-map`), labels, annotations,
//! finalizers, creationTimestamp, managedFields (so field ownership moves with the object) and
//! spec are kept; resourceVersion and generation are the target's own; owner references and the pipeline labels are set again
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

use super::{Candidate, Entry, Kind, Migrator, Namespaces, Outcome, Skip};

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
        Some(p) => crate::serve::kubeconfig_file(p).await?,
        None => kube::Config::infer().await.context(
            "no kubeconfig given and none found (in-cluster, $KUBECONFIG, ~/.kube/config)",
        )?,
    };
    kube::Client::try_from(config).context("a client for the cluster")
}

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: kfp_apiservice::GROUP.into(),
        version: kfp_apiservice::VERSION.into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::all_with(client.clone(), &ar)
}

/// One page of a kind in all namespaces, and the token of the next.
async fn page(
    api: &Api<DynamicObject>,
    token: Option<&str>,
) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let mut lp = ListParams::default().limit(PAGE);
    if let Some(t) = token {
        lp = lp.continue_token(t);
    }
    let page = api
        .list(&lp)
        .await
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", api.resource_url()))?;
    let items = page
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, page.metadata.continue_.filter(|t| !t.is_empty())))
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

/// Migrates both kinds from the cluster through `m`: every Pipeline first (in creation order;
/// they are small), then the versions page by page (one page of specs in memory at a time).
pub async fn migrate(
    client: &kube::Client,
    namespaces: &Namespaces,
    m: &mut Migrator,
    progress: &mut dyn FnMut(&Entry, &Outcome),
) -> anyhow::Result<()> {
    let pipelines_api = api(client, Pipeline::KIND, Pipeline::PLURAL);
    let mut pipelines = Vec::new();
    let mut token = None;
    loop {
        let (items, next) = page(&pipelines_api, token.as_deref()).await?;
        pipelines.extend(items);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    pipelines.sort_by(|a, b| {
        (created_of(a), str_at(a, "/metadata/uid"))
            .cmp(&(created_of(b), str_at(b, "/metadata/uid")))
    });
    // Source (namespace, name) -> uid of the pipelines taken.
    let mut taken: HashMap<(String, String), String> = HashMap::new();
    for p in &pipelines {
        match pipeline_candidate(p, namespaces) {
            Ok(c) => {
                taken.insert(
                    (str_at(p, "/metadata/namespace").to_owned(), c.name.clone()),
                    c.uid.clone(),
                );
                m.handle(c, progress).await?;
                if m.stopped() {
                    return Ok(());
                }
            }
            Err(skip) => m.skip(skip),
        }
    }
    drop(pipelines);
    let versions_api = api(client, PipelineVersion::KIND, PipelineVersion::PLURAL);
    let mut token = None;
    loop {
        let (items, next) = page(&versions_api, token.as_deref()).await?;
        for v in &items {
            match version_candidate(v, &taken, namespaces) {
                Ok(c) => {
                    m.handle(c, progress).await?;
                    if m.stopped() {
                        return Ok(());
                    }
                }
                Err(skip) => m.skip(skip),
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => return Ok(()),
        }
    }
}

fn created_of(o: &Value) -> Option<Timestamp> {
    str_at(o, "/metadata/creationTimestamp").parse().ok()
}

fn describe(kind: &str, o: &Value) -> String {
    format!(
        "{kind} {}/{} ({})",
        str_at(o, "/metadata/namespace"),
        str_at(o, "/metadata/name"),
        str_at(o, "/metadata/uid")
    )
}

/// What every object needs: not being deleted, a uid, a creation time.
fn identity(o: &Value, kind: &str) -> Result<Timestamp, Skip> {
    let skip = |reason: &str| Skip {
        source: describe(kind, o),
        reason: reason.to_owned(),
    };
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return Err(skip("it is being deleted"));
    }
    if str_at(o, "/metadata/uid").is_empty() {
        return Err(skip("it has no uid"));
    }
    created_of(o).ok_or_else(|| skip("it has no creationTimestamp"))
}

/// A Pipeline to migrate, or why not.
pub fn pipeline_candidate(p: &Value, namespaces: &Namespaces) -> Result<Candidate, Skip> {
    let created = identity(p, Pipeline::KIND)?;
    let managed_fields = p.pointer("/metadata/managedFields").cloned();
    let target = namespaces.target(str_at(p, "/metadata/namespace"));
    Ok(Candidate {
        kind: Kind::Pipeline,
        body: json!({
            "apiVersion": API_VERSION,
            "kind": Pipeline::KIND,
            "metadata": kept_metadata(p, &target),
            "spec": p.get("spec").cloned().unwrap_or_else(|| json!({})),
        }),
        namespace: target,
        name: str_at(p, "/metadata/name").to_owned(),
        source: describe(Pipeline::KIND, p),
        uid: str_at(p, "/metadata/uid").to_owned(),
        created,
        parent_uid: None,
        renamed_from: None,
        managed_fields,
    })
}

/// A PipelineVersion to migrate (its Pipeline among `taken`: source (namespace, name) -> uid),
/// or why not.
pub fn version_candidate(
    v: &Value,
    taken: &HashMap<(String, String), String>,
    namespaces: &Namespaces,
) -> Result<Candidate, Skip> {
    let created = identity(v, PipelineVersion::KIND)?;
    let managed_fields = v.pointer("/metadata/managedFields").cloned();
    let source = describe(PipelineVersion::KIND, v);
    let ns = str_at(v, "/metadata/namespace").to_owned();
    let pipeline = str_at(v, "/spec/pipelineName").to_owned();
    let Some(parent_uid) = taken.get(&(ns.clone(), pipeline.clone())) else {
        return Err(Skip {
            source,
            reason: format!(
                "its Pipeline {pipeline:?} is not migrated (not in namespace {ns:?}, or skipped)"
            ),
        });
    };
    let state = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == CONDITION_TYPE))
        .map(|c| str_at(c, "/reason").to_owned());
    if let Some(reason) = state.filter(|r| r != "READY") {
        return Err(Skip {
            source,
            reason: format!("its {CONDITION_TYPE} is {reason:?}, not READY"),
        });
    }
    let target = namespaces.target(&ns);
    Ok(Candidate {
        kind: Kind::Version,
        body: json!({
            "apiVersion": API_VERSION,
            "kind": PipelineVersion::KIND,
            "metadata": kept_metadata(v, &target),
            "spec": v.get("spec").cloned().unwrap_or_else(|| json!({})),
        }),
        namespace: target,
        name: str_at(v, "/metadata/name").to_owned(),
        uid: str_at(v, "/metadata/uid").to_owned(),
        created,
        parent_uid: Some(parent_uid.clone()),
        source,
        renamed_from: None,
        managed_fields,
    })
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
        let a = pipeline_candidate(
            &pipeline("kubeflow", "a", "u-a", "2025-01-01T00:00:01Z"),
            &ns,
        )
        .unwrap();
        assert_eq!((a.uid.as_str(), a.namespace.as_str()), ("u-a", "shared"));
        assert_eq!(a.created.to_string(), "2025-01-01T00:00:01Z");
        assert_eq!(
            a.body["metadata"],
            json!({"name": "a", "namespace": "shared", "labels": {"team": "a"}, "annotations": {"note": "x"}})
        );
        let mut gone = pipeline("kubeflow", "gone", "u-gone", "2025-01-01T00:00:00Z");
        gone["metadata"]["deletionTimestamp"] = json!("2025-02-01T00:00:00Z");
        let skip = pipeline_candidate(&gone, &ns).unwrap_err();
        assert!(skip.reason.contains("being deleted"), "{skip:?}");
        let mut no_time = pipeline("kubeflow", "t", "u-t", "");
        no_time["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("creationTimestamp");
        assert!(pipeline_candidate(&no_time, &ns).is_err());

        let taken: HashMap<_, _> = [(("kubeflow".to_owned(), "a".to_owned()), "u-a".to_owned())]
            .into_iter()
            .collect();
        for status in [Some("READY"), None] {
            let v = version_candidate(&version("kubeflow", "a-v", "a", "v-a", status), &taken, &ns)
                .unwrap();
            assert_eq!(v.parent_uid.as_deref(), Some("u-a"));
            assert_eq!(v.namespace, "shared");
            assert!(v.body["metadata"].get("ownerReferences").is_none());
            assert!(v.body.get("status").is_none());
        }
        let creating = version_candidate(
            &version("kubeflow", "b", "a", "v-b", Some("CREATING")),
            &taken,
            &ns,
        )
        .unwrap_err();
        assert!(
            creating.reason.contains("\"CREATING\", not READY"),
            "{creating:?}"
        );
        let orphan = version_candidate(
            &version("kubeflow", "o", "missing", "v-o", None),
            &taken,
            &ns,
        )
        .unwrap_err();
        assert!(
            orphan.reason.contains("\"missing\" is not migrated"),
            "{orphan:?}"
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
