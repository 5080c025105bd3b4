//! Delegated authentication (TokenReview) and authorization (SubjectAccessReview) against a
//! simulated host cluster (`kfp_conformance::sim`), with the real binary and the real kubectl:
//! the admin / alice (edit in team-a) / bob (view in team-b) matrix in both views, 403s worded
//! as kube-apiserver's, rejected tokens, and the review caches (one review per TTL for repeated
//! identical requests; a denial expires on time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kfp_conformance::sim::{EDIT, Grant, HostCluster, SimUser, VIEW};
use kfp_conformance::{DevServer, Run, corpus, free_port, kubectl_binary};

fn users() -> Vec<SimUser> {
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

fn grants() -> Vec<Grant> {
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

struct Setup {
    server: DevServer,
    cluster: HostCluster,
    dir: PathBuf,
}

fn setup(name: &str) -> Setup {
    let cluster = HostCluster::start(users(), grants());
    let dir = std::env::temp_dir().join(format!("kfp-conformance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let host = dir.join("host.kubeconfig");
    std::fs::write(&host, cluster.kubeconfig("delegator-token")).expect("kubeconfig");
    let host = host.to_str().expect("path").to_owned();
    let server = DevServer::start_with(
        dir.join("server"),
        true,
        &format!("127.0.0.1:{}", free_port()),
        &[
            "--authentication-kubeconfig",
            &host,
            "--authorization-kubeconfig",
            &host,
            "--authorization-webhook-cache-unauthorized-ttl=1s",
            "--kfp-multi-user",
        ],
    );
    Setup {
        server,
        cluster,
        dir,
    }
}

impl Setup {
    /// kubectl with `token` instead of the dev admin's (each user its own cache directory).
    fn kubectl_as(&self, token: &str, args: &[&str]) -> Run {
        let kc = std::fs::read_to_string(&self.server.kubeconfig).expect("kubeconfig");
        let admin = std::fs::read_to_string(self.server.dir.join("admin.token")).expect("token");
        let user_dir = self.dir.join(token);
        std::fs::create_dir_all(&user_dir).expect("dir");
        let path = user_dir.join("kubeconfig");
        std::fs::write(&path, kc.replace(admin.trim(), token)).expect("write");
        kubectl_in(&path, &user_dir, args)
    }
}

fn kubectl_in(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Run {
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

fn ok(r: &Run, what: &str) -> String {
    assert_eq!(r.code, 0, "{what}:\n{}\n{}", r.stdout, r.stderr);
    r.stdout.clone()
}

fn forbidden(r: &Run, what: &str, needle: &str) {
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

#[test]
fn the_rbac_matrix_holds_in_both_views() {
    let s = setup("delegated-matrix");
    let versioned = corpus().join("k8s/hello_world.versioned.yaml");
    let versioned = versioned.to_str().expect("path");

    // alice edits in team-a ...
    ok(
        &s.kubectl_as("alice-token", &["apply", "-f", versioned]),
        "alice applies in team-a",
    );
    ok(
        &s.kubectl_as(
            "alice-token",
            &["label", "pl", "--all", "-n", "team-a", "x=y"],
        ),
        "alice labels",
    );
    // ... and nothing in team-b, with kube-apiserver's wording.
    forbidden(
        &s.kubectl_as("alice-token", &["get", "pl", "-n", "team-b"]),
        "alice lists team-b",
        r#"User "alice" cannot list resource "pipelines" in API group "pipelines.kubeflow.org" in the namespace "team-b""#,
    );
    let bare = s.dir.join("bare-pipeline.yaml");
    std::fs::write(
        &bare,
        "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\nmetadata:\n  name: bare\n",
    )
    .expect("write");
    let bare = bare.to_str().expect("path");
    forbidden(
        &s.kubectl_as("alice-token", &["create", "-n", "team-b", "-f", bare]),
        "alice creates in team-b",
        r#"User "alice" cannot create resource "pipelines""#,
    );
    ok(
        &s.kubectl_as("alice-token", &["create", "-n", "team-a", "-f", bare]),
        "alice creates in team-a",
    );

    // bob views team-b: get, list, watch; nothing else, and nothing across namespaces.
    ok(
        &s.kubectl_as("admin-token", &["create", "-n", "team-b", "-f", bare]),
        "the admin creates in team-b",
    );
    let out = ok(
        &s.kubectl_as("bob-token", &["get", "pl", "-n", "team-b"]),
        "bob lists team-b",
    );
    assert!(out.contains("bare"), "{out}");
    ok(
        &s.kubectl_as(
            "bob-token",
            &["get", "pl", "bare", "-n", "team-b", "-o", "yaml"],
        ),
        "bob gets",
    );
    ok(
        &s.kubectl_as(
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
        &s.kubectl_as("bob-token", &["get", "pl", "-A"]),
        "bob lists all namespaces",
        "at the cluster scope",
    );
    forbidden(
        &s.kubectl_as(
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
        &s.kubectl_as(
            "bob-token",
            &["label", "pl", "--all", "-n", "team-b", "x=y"],
        ),
        "bob writes in team-b",
        "cannot",
    );
    forbidden(
        &s.kubectl_as("bob-token", &["get", "pl", "-n", "team-a"]),
        "bob reads team-a",
        r#"in the namespace "team-a""#,
    );

    // The admin (system:masters) does everything, with no review asked.
    let before = s.cluster.access_reviews();
    let out = ok(
        &s.kubectl_as("admin-token", &["get", "pl", "-A"]),
        "admin lists everything",
    );
    assert!(out.contains("team-a"), "{out}");
    assert_eq!(
        s.cluster.access_reviews(),
        before,
        "system:masters is allowed without a review"
    );

    // A token the cluster rejects is 401.
    let r = s.kubectl_as("nobody-token", &["get", "pl", "-n", "team-a"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Unauthorized") || r.stderr.contains("must be logged in"),
        "{}",
        r.stderr
    );

    // The KFP view: the same attributes, the same RBAC.
    let kfp = |token: &str, path: &str| s.kubectl_as(token, &["get", "--raw", path]);
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
    let log = s.cluster.counters.access_log.lock().expect("log").clone();
    assert!(
        log.iter().any(|spec| spec["user"] == "alice"
            && spec["resourceAttributes"]["verb"] == "list"
            && spec["resourceAttributes"]["namespace"] == "team-b"
            && spec["resourceAttributes"]["version"] == "v2beta1"),
        "the KFP view asked with the Kubernetes attributes: {log:?}"
    );
}

#[test]
fn reviews_are_cached_and_a_denial_expires_on_time() {
    let s = setup("delegated-cache");
    // Warm kubectl's discovery cache for bob, then count.
    ok(
        &s.kubectl_as("bob-token", &["get", "pl", "-n", "team-b"]),
        "warm up",
    );
    let (tr, sar) = (s.cluster.token_reviews(), s.cluster.access_reviews());
    let started = Instant::now();
    for _ in 0..5 {
        ok(
            &s.kubectl_as("bob-token", &["get", "pl", "-n", "team-b"]),
            "repeat",
        );
    }
    if started.elapsed() < Duration::from_secs(9) {
        assert_eq!(s.cluster.token_reviews(), tr, "the token review is cached");
        assert_eq!(
            s.cluster.access_reviews(),
            sar,
            "the allowed decision is cached"
        );
    }
    // A denial: cached for its 1 s TTL, asked again after it.
    let path = format!("{API}/namespaces/team-a/pipelines");
    let denied = || s.kubectl_as("bob-token", &["get", "--raw", &path]);
    let before = s.cluster.access_reviews();
    assert_ne!(denied().code, 0);
    let first = Instant::now();
    assert_ne!(denied().code, 0);
    if first.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            s.cluster.access_reviews(),
            before + 1,
            "the denial is cached"
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(denied().code, 0);
    assert!(
        s.cluster.access_reviews() >= before + 2,
        "after the TTL the decision is asked again"
    );
}
