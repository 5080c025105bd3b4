//! The RBAC matrix both delegated suites check — straight to the server (`delegated.rs`) and
//! through the aggregation layer (`aggregated.rs`): the users and grants of the simulated host
//! cluster, and the admin / alice (edit in team-a) / bob (view in team-b) expectations in the
//! Kubernetes view and the KFP view, with kube-apiserver's 403 wording.

use std::path::Path;
use std::process::Command;

use kfp_conformance::sim::{EDIT, Grant, HostCluster, SimUser, VIEW};
use kfp_conformance::{Run, corpus, kubectl_binary};

/// The host cluster's users: an admin (`system:masters`), alice and bob.
pub fn users() -> Vec<SimUser> {
    let u = |token: &str, name: &str, groups: &[&str]| SimUser {
        token: token.into(),
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    vec![
        u("admin-token", "admin", &["system:masters"]),
        u("alice-token", "alice", &["team-a-devs"]),
        u("bob-token", "bob", &[]),
    ]
}

/// alice edits in team-a, bob views team-b.
pub fn grants() -> Vec<Grant> {
    let g = |user: &str, ns: &str, verbs: &[&str], resources: &[&str]| Grant {
        user: user.into(),
        namespace: Some(ns.into()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
    };
    vec![
        g(
            "alice",
            "team-a",
            EDIT,
            &["pipelines", "pipelineversions", "pipelineversions/status"],
        ),
        g("bob", "team-b", VIEW, &["pipelines", "pipelineversions"]),
    ]
}

/// kubectl with `kubeconfig`, its HOME and cache in `dir`.
pub fn kubectl_in(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Run {
    Command::new(kubectl_binary())
        .args(args)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("kubectl")
        .into()
}

/// The output of a run that must succeed.
pub fn ok(r: &Run, what: &str) -> String {
    assert_eq!(r.code, 0, "{what}:\n{}\n{}", r.stdout, r.stderr);
    r.stdout.clone()
}

/// A run refused as Forbidden, naming `needle`.
pub fn forbidden(r: &Run, what: &str, needle: &str) {
    assert_ne!(r.code, 0, "{what} should be refused:\n{}", r.stdout);
    assert!(
        r.stderr.contains("Forbidden") || r.stderr.contains("forbidden"),
        "{what}: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "{what}: {needle:?} in {}",
        r.stderr
    );
}

const API: &str = "/apis/pipelines.kubeflow.org/v2beta1";

/// The matrix: `kubectl_as(token, args)` runs kubectl as the user of `token` (straight to the
/// server, or through the aggregation layer), `dir` is scratch space, `cluster` the host
/// cluster whose SubjectAccessReview log tells what was asked.
pub fn matrix(kubectl_as: &dyn Fn(&str, &[&str]) -> Run, dir: &Path, cluster: &HostCluster) {
    let versioned = corpus().join("k8s/hello_world.versioned.yaml");
    let versioned = versioned.to_str().expect("path");

    // alice edits in team-a ...
    ok(
        &kubectl_as("alice-token", &["apply", "-f", versioned]),
        "alice applies in team-a",
    );
    ok(
        &kubectl_as(
            "alice-token",
            &["label", "pl", "--all", "-n", "team-a", "x=y"],
        ),
        "alice labels",
    );
    // ... and nothing in team-b, with kube-apiserver's wording.
    forbidden(
        &kubectl_as("alice-token", &["get", "pl", "-n", "team-b"]),
        "alice lists team-b",
        r#"User "alice" cannot list resource "pipelines" in API group "pipelines.kubeflow.org" in the namespace "team-b""#,
    );
    let bare = dir.join("bare-pipeline.yaml");
    std::fs::write(
        &bare,
        "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\nmetadata:\n  name: bare\n",
    )
    .expect("write");
    let bare = bare.to_str().expect("path");
    forbidden(
        &kubectl_as("alice-token", &["create", "-n", "team-b", "-f", bare]),
        "alice creates in team-b",
        r#"User "alice" cannot create resource "pipelines""#,
    );
    ok(
        &kubectl_as("alice-token", &["create", "-n", "team-a", "-f", bare]),
        "alice creates in team-a",
    );

    // bob views team-b: get, list, watch; nothing else, and nothing across namespaces.
    ok(
        &kubectl_as("admin-token", &["create", "-n", "team-b", "-f", bare]),
        "the admin creates in team-b",
    );
    let out = ok(
        &kubectl_as("bob-token", &["get", "pl", "-n", "team-b"]),
        "bob lists team-b",
    );
    assert!(out.contains("bare"), "{out}");
    ok(
        &kubectl_as(
            "bob-token",
            &["get", "pl", "bare", "-n", "team-b", "-o", "yaml"],
        ),
        "bob gets",
    );
    ok(
        &kubectl_as(
            "bob-token",
            &[
                "get",
                "--raw",
                &format!("{API}/namespaces/team-b/pipelines?watch=true&timeoutSeconds=1"),
            ],
        ),
        "bob watches team-b",
    );
    forbidden(
        &kubectl_as("bob-token", &["get", "pl", "-A"]),
        "bob lists all namespaces",
        "at the cluster scope",
    );
    forbidden(
        &kubectl_as(
            "bob-token",
            &[
                "get",
                "--raw",
                &format!("{API}/pipelines?watch=true&timeoutSeconds=1"),
            ],
        ),
        "bob watches all namespaces",
        "forbidden",
    );
    forbidden(
        &kubectl_as(
            "bob-token",
            &["label", "pl", "--all", "-n", "team-b", "x=y"],
        ),
        "bob writes in team-b",
        "cannot",
    );
    forbidden(
        &kubectl_as("bob-token", &["get", "pl", "-n", "team-a"]),
        "bob reads team-a",
        r#"in the namespace "team-a""#,
    );

    // The admin (system:masters) does everything, with no review asked.
    let before = cluster.access_reviews();
    let out = ok(
        &kubectl_as("admin-token", &["get", "pl", "-A"]),
        "admin lists everything",
    );
    assert!(out.contains("team-a"), "{out}");
    assert_eq!(
        cluster.access_reviews(),
        before,
        "system:masters is allowed without a review"
    );

    // A token the cluster rejects is 401.
    let r = kubectl_as("nobody-token", &["get", "pl", "-n", "team-a"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Unauthorized") || r.stderr.contains("must be logged in"),
        "{}",
        r.stderr
    );

    // The KFP view: the same attributes, the same RBAC.
    let kfp = |token: &str, path: &str| kubectl_as(token, &["get", "--raw", path]);
    let out = ok(
        &kfp("alice-token", "/apis/v2beta1/pipelines?namespace=team-a"),
        "alice lists via KFP",
    );
    assert!(out.contains("\"total_size\":2"), "{out}");
    let r = kfp("alice-token", "/apis/v2beta1/pipelines?namespace=team-b");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("Forbidden") || r.stderr.contains("403"),
        "{}",
        r.stderr
    );
    ok(
        &kfp("bob-token", "/apis/v2beta1/pipelines?namespace=team-b"),
        "bob lists team-b via KFP",
    );
    let r = kfp("bob-token", "/apis/v2beta1/pipelines?namespace=team-a");
    assert_ne!(r.code, 0, "{}", r.stdout);
    // Shared pipelines are readable by every authenticated user.
    ok(
        &kfp("bob-token", "/apis/v2beta1/pipelines"),
        "bob lists shared pipelines",
    );
    let log = cluster.counters.access_log.lock().expect("log").clone();
    assert!(
        log.iter().any(|spec| spec["user"] == "alice"
            && spec["resourceAttributes"]["verb"] == "list"
            && spec["resourceAttributes"]["namespace"] == "team-b"
            && spec["resourceAttributes"]["version"] == "v2beta1"),
        "the KFP view asked with the Kubernetes attributes: {log:?}"
    );
}
