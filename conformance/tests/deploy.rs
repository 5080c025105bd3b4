//! The install manifests (`apiservice/deploy/`): every kustomization renders with the real
//! `kubectl kustomize`, every built-in object decodes into its Kubernetes type with no unknown
//! or mistyped field (k8s-openapi's types are the schema; `serde_ignored` reports what a strict
//! decoder would refuse), and the pieces fit: the APIService points at the Service, the
//! Service at the Deployment's pods and port, the RBAC an aggregated server needs is bound to
//! the Deployment's ServiceAccount, the user roles aggregate into view/edit/admin, the pods
//! run as non-root on a read-only root filesystem with probes and requests, and every flag the
//! Deployment passes is one `kfp-apiserver serve` accepts. cert-manager's two kinds are checked
//! for shape only (no schema of theirs is vendored). The KFP CRDs in `crds/` (for running the
//! same kinds on a plain kube-apiserver, e.g. to compare with `kfp-load`) match the served kinds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kfp_conformance::{kubectl_binary, server_binary, workspace};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy() -> PathBuf {
    workspace().join("apiservice/deploy")
}

/// Decodes `doc` into `T`, failing on any field `T` does not have.
fn strict<T: DeserializeOwned>(doc: &Value, what: &str) -> T {
    let mut unknown = Vec::new();
    let t: T = serde_ignored::deserialize(doc.clone(), |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{what}: does not decode: {e}"));
    assert!(unknown.is_empty(), "{what}: unknown fields {unknown:?}");
    t
}

/// The rendered objects of a kustomization, by `Kind/namespace/name`.
fn render(dir: &str) -> BTreeMap<String, Value> {
    let out = Command::new(kubectl_binary())
        .args(["kustomize"])
        .arg(deploy().join(dir))
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut objects = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        // kustomize folds long base64 values over lines; Go's decoder (the API server's)
        // skips the newlines, k8s-openapi's does not.
        let secret = v["kind"] == "Secret";
        if let Some(data) = v
            .get_mut("data")
            .and_then(Value::as_object_mut)
            .filter(|_| secret)
        {
            for value in data.values_mut() {
                if let Some(s) = value.as_str() {
                    *value = Value::String(s.split_whitespace().collect());
                }
            }
        }
        let key = format!(
            "{}/{}/{}",
            v["kind"].as_str().expect("kind"),
            v["metadata"]["namespace"].as_str().unwrap_or(""),
            v["metadata"]["name"].as_str().expect("name")
        );
        let what = format!("{dir}: {key}");
        match (
            v["apiVersion"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
        ) {
            ("v1", "Namespace") => drop(strict::<Namespace>(&v, &what)),
            ("v1", "ServiceAccount") => drop(strict::<ServiceAccount>(&v, &what)),
            ("v1", "Service") => drop(strict::<Service>(&v, &what)),
            ("v1", "Secret") => drop(strict::<Secret>(&v, &what)),
            ("v1", "PersistentVolumeClaim") => drop(strict::<PersistentVolumeClaim>(&v, &what)),
            ("apps/v1", "Deployment") => drop(strict::<Deployment>(&v, &what)),
            ("apps/v1", "StatefulSet") => drop(strict::<StatefulSet>(&v, &what)),
            ("policy/v1", "PodDisruptionBudget") => drop(strict::<PodDisruptionBudget>(&v, &what)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                drop(strict::<ClusterRole>(&v, &what))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(strict::<ClusterRoleBinding>(&v, &what))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => drop(strict::<Role>(&v, &what)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                drop(strict::<RoleBinding>(&v, &what))
            }
            ("apiregistration.k8s.io/v1", "APIService") => drop(strict::<APIService>(&v, &what)),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                drop(strict::<CustomResourceDefinition>(&v, &what))
            }
            ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                assert!(v["spec"].is_object(), "{what}: a spec");
            }
            (api, kind) => panic!("{what}: {api} {kind} is not checked by this test"),
        }
        assert!(
            objects.insert(key.clone(), v).is_none(),
            "{dir}: {key} twice"
        );
    }
    objects
}

fn get<'a>(objects: &'a BTreeMap<String, Value>, key: &str) -> &'a Value {
    objects
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from {:?}", objects.keys()))
}

/// The long flags `kfp-apiserver serve` accepts.
fn serve_flags() -> Vec<String> {
    let out = Command::new(server_binary())
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .split('=')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn check_install(dir: &str, replicas: i64) -> BTreeMap<String, Value> {
    let o = render(dir);
    // The APIService names our group and the Service; cert-manager injects the CA.
    let api = get(&o, "APIService//v2beta1.pipelines.kubeflow.org");
    assert_eq!(api["spec"]["group"], "pipelines.kubeflow.org");
    assert_eq!(api["spec"]["version"], "v2beta1");
    let svc_ref = &api["spec"]["service"];
    let svc_key = format!(
        "Service/{}/{}",
        svc_ref["namespace"].as_str().expect("ns"),
        svc_ref["name"].as_str().expect("name")
    );
    assert_eq!(
        api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "kubeflow/kfp-apiserver"
    );
    get(&o, "Certificate/kubeflow/kfp-apiserver");
    // The Service selects the Deployment's pods and reaches its port.
    let svc = get(&o, &svc_key);
    let port = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == svc_ref["port"])
        .expect("the APIService's port");
    let deploy = get(&o, "Deployment/kubeflow/kfp-apiserver");
    let pod = &deploy["spec"]["template"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &pod["metadata"]["labels"][k], v,
            "the Service selects the pods"
        );
    }
    let container = &pod["spec"]["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == port["targetPort"] || p["containerPort"] == port["targetPort"]),
        "the Service's targetPort is the container's"
    );
    assert_eq!(deploy["spec"]["replicas"], replicas);
    // Hardened pods with probes and requests.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert!(container["resources"]["requests"]["memory"].is_string());
    let pdb = get(&o, "PodDisruptionBudget/kubeflow/kfp-apiserver");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    // Every flag is one the binary has; the store URL comes from a Secret the install has.
    let known = serve_flags();
    for arg in container["args"].as_array().expect("args").iter().skip(1) {
        let flag = arg
            .as_str()
            .expect("arg")
            .split('=')
            .next()
            .unwrap_or_default();
        assert!(
            known.iter().any(|k| k == flag),
            "{dir}: unknown flag {flag}"
        );
    }
    let secret = &container["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(container["env"][0]["name"], "KFP_APISERVER_STORE");
    let store = get(
        &o,
        &format!("Secret/kubeflow/{}", secret["name"].as_str().expect("name")),
    );
    assert!(
        store["stringData"][secret["key"].as_str().expect("key")].is_string()
            || store["data"][secret["key"].as_str().expect("key")].is_string(),
        "{dir}: the store Secret has its key"
    );
    // Delegation RBAC, bound to the pods' ServiceAccount.
    let sa = pod["spec"]["serviceAccountName"].as_str().expect("sa");
    get(&o, &format!("ServiceAccount/kubeflow/{sa}"));
    let bound = |key: &str, role: &str| {
        let b = get(&o, key);
        assert_eq!(b["roleRef"]["name"], role, "{key}");
        assert!(
            b["subjects"]
                .as_array()
                .expect("subjects")
                .iter()
                .any(|s| s["kind"] == "ServiceAccount"
                    && s["name"] == sa
                    && s["namespace"] == "kubeflow"),
            "{key} binds the pods' ServiceAccount"
        );
    };
    bound(
        "ClusterRoleBinding//kfp-apiserver:system:auth-delegator",
        "system:auth-delegator",
    );
    bound(
        "RoleBinding/kube-system/kfp-apiserver-auth-reader",
        "extension-apiserver-authentication-reader",
    );
    // User roles aggregate into the built-in ones.
    for (role, into) in [
        ("kfp-pipelines-view", "view"),
        ("kfp-pipelines-edit", "edit"),
        ("kfp-pipelines-edit", "admin"),
    ] {
        let r = get(&o, &format!("ClusterRole//{role}"));
        assert_eq!(
            r["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{into}")],
            "true",
            "{role} into {into}"
        );
    }
    o
}

#[test]
fn the_postgres_install_renders_and_fits_together() {
    let o = check_install("overlays/postgres", 2);
    let url = store_url(&o);
    assert!(url.starts_with("postgres://"), "{url}");
    assert!(
        url.contains("kfp-apiserver-postgres.kubeflow.svc:5432"),
        "the URL reaches the overlay's Service: {url}"
    );
    get(&o, "StatefulSet/kubeflow/kfp-apiserver-postgres");
    get(&o, "Service/kubeflow/kfp-apiserver-postgres");
}

/// The store URL of an install's Secret.
fn store_url(o: &BTreeMap<String, Value>) -> String {
    get(o, "Secret/kubeflow/kfp-apiserver-store")["stringData"]["url"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            use base64::Engine;
            let data = get(o, "Secret/kubeflow/kfp-apiserver-store")["data"]["url"].as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?;
            String::from_utf8(bytes).ok()
        })
        .expect("url")
}

/// The kube:// install: the records' definitions exactly as the server would install them,
/// and RBAC for its ServiceAccount on them.
#[test]
fn the_crd_store_install_carries_its_record_definitions_and_rbac() {
    let o = check_install("overlays/crd-store", 2);
    assert_eq!(store_url(&o), "kube://");
    for r in kfp_apiservice::resource::RESOURCES {
        let name = format!(
            "CustomResourceDefinition//{}.storage.pipelines.kubeflow.org",
            r.plural
        );
        assert_eq!(
            *get(&o, &name),
            kfp_storage::crd::definition(r.plural, &format!("{}Record", r.kind)),
            "{name} as kfp_storage::crd::definition makes it"
        );
    }
    let role = get(&o, "ClusterRole//kfp-apiserver:records");
    let verbs = &role["rules"][0]["verbs"];
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        assert!(
            verbs.as_array().expect("verbs").iter().any(|v| v == verb),
            "{verb}"
        );
    }
    let binding = get(&o, "ClusterRoleBinding//kfp-apiserver:records");
    assert_eq!(binding["subjects"][0]["name"], "kfp-apiserver");
    assert_eq!(binding["subjects"][0]["namespace"], "kubeflow");
}

#[test]
fn the_sqlite_install_is_one_replica_on_a_volume() {
    let o = check_install("overlays/sqlite", 1);
    let deploy = get(&o, "Deployment/kubeflow/kfp-apiserver");
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "kfp-apiserver-data")
    );
    get(&o, "PersistentVolumeClaim/kubeflow/kfp-apiserver-data");
    let pdb = get(&o, "PodDisruptionBudget/kubeflow/kfp-apiserver");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "a single pod can still be drained"
    );
}

#[test]
fn the_base_renders_with_a_store_secret_left_to_the_installer() {
    let o = render("base");
    assert!(
        !o.keys().any(|k| k.starts_with("Secret/")),
        "the base carries no credentials"
    );
    get(&o, "APIService//v2beta1.pipelines.kubeflow.org");
}

/// KFP 2.17's own CRDs (for `kfp-load --compare` against a kube-apiserver) are valid
/// CustomResourceDefinitions of exactly the kinds this server serves: same group, version,
/// names, scope, and status subresource.
#[test]
fn the_kfp_crds_for_the_comparison_match_the_served_kinds() {
    let o = render("crds");
    assert_eq!(
        o.len(),
        kfp_apiservice::resource::RESOURCES.len(),
        "{:?}",
        o.keys()
    );
    for r in kfp_apiservice::resource::RESOURCES {
        let name = format!("{}.{}", r.plural, kfp_apiservice::types::GROUP);
        let doc = get(&o, &format!("CustomResourceDefinition//{name}"));
        let crd: CustomResourceDefinition = strict(doc, &name);
        assert_eq!(crd.spec.group, kfp_apiservice::types::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, r.kind);
        assert_eq!(crd.spec.names.plural, r.plural);
        assert_eq!(crd.spec.names.list_kind.as_deref(), Some(r.list_kind));
        let [v] = crd.spec.versions.as_slice() else {
            panic!("{name}: one version expected")
        };
        assert_eq!(v.name, kfp_apiservice::types::VERSION);
        assert!(v.served && v.storage);
        let has_status = v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        assert_eq!(
            has_status, r.status_subresource,
            "{name}: status subresource"
        );
        let schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        let spec = &schema.properties.as_ref().expect("properties")["spec"];
        let props = spec.properties.as_ref().expect("spec properties");
        if r.kind == "PipelineVersion" {
            assert_eq!(
                spec.required.as_deref(),
                Some(&["pipelineSpec".to_owned()][..])
            );
            for schemaless in ["pipelineSpec", "platformSpec"] {
                assert_eq!(
                    props[schemaless].x_kubernetes_preserve_unknown_fields,
                    Some(true),
                    "{schemaless}"
                );
            }
        } else {
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["description", "displayName", "tags"]);
        }
    }
}
