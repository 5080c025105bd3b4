//! Delegated authentication (TokenReview) and authorization (SubjectAccessReview) against a
//! simulated host cluster (`kfp_conformance::sim`), with the real binary and the real kubectl:
//! the admin / alice (edit in team-a) / bob (view in team-b) matrix in both views, 403s worded
//! as kube-apiserver's, rejected tokens, and the review caches (one review per TTL for repeated
//! identical requests; a denial expires on time).

mod rbac;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kfp_conformance::sim::HostCluster;
use kfp_conformance::{DevServer, Run, free_port};
use rbac::{grants, kubectl_in, ok, users};

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

const API: &str = "/apis/pipelines.kubeflow.org/v2beta1";

#[test]
fn the_rbac_matrix_holds_in_both_views() {
    let s = setup("delegated-matrix");
    rbac::matrix(&|token, args| s.kubectl_as(token, args), &s.dir, &s.cluster);
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
