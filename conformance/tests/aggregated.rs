//! Aggregated mode, end to end: the real binary started as in a cluster (no `--dev`: its own
//! serving certificate, SQLite, delegation to the simulated host cluster) and reached the way
//! kubectl and kfp.Client reach it there — through the aggregation-layer simulator
//! (`kfp_conformance::aggregator`), which proxies with its front-proxy client certificate and
//! the `X-Remote-*` headers. The front-proxy CA, allowed names and header names come only from
//! the `kube-system/extension-apiserver-authentication` ConfigMap the simulated cluster serves.
//!
//! Shown here: the admin / alice / bob matrix in both views through the aggregator (kubectl,
//! impersonation, and kfp.Client per user, also with KFP's user header in mesh mode); the
//! aggregator's availability probes, discovery (200 then 304) and OpenAPI fetches; a changed
//! ConfigMap applied without a restart; ServiceAccount tokens verified locally against the
//! issuer's keys (refused when expired, for another audience, or signed by an unknown key);
//! and serving certificate, client CA and front-proxy CA rotated on disk under a request loop.

mod rbac;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kfp_conformance::aggregator::{Aggregator, AggregatorConfig};
use kfp_conformance::pki::{self, Ca};
use kfp_conformance::sim::{Grant, HostCluster, TokenRequest, VIEW};
use kfp_conformance::{Run, Served, corpus, https_get};
use rbac::{forbidden, grants, kubectl_in, ok, users};

const PIPELINES_A: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/team-a/pipelines";

struct Setup {
    cluster: HostCluster,
    server: Served,
    aggregator: Aggregator,
    serving_ca: Ca,
    dir: PathBuf,
}

fn extension_auth(front_ca_pem: &str, allowed: &str) -> BTreeMap<String, String> {
    [
        ("requestheader-client-ca-file", front_ca_pem.to_owned()),
        ("requestheader-allowed-names", format!("[\"{allowed}\"]")),
        (
            "requestheader-username-headers",
            "[\"X-Remote-User\"]".into(),
        ),
        ("requestheader-group-headers", "[\"X-Remote-Group\"]".into()),
        (
            "requestheader-extra-headers-prefix",
            "[\"X-Remote-Extra-\"]".into(),
        ),
        ("requestheader-uid-headers", "[\"X-Remote-Uid\"]".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A host cluster, the server in aggregated mode, and an aggregator in front of it
/// (`mesh`: KFP paths carry the user in this header instead).
fn setup(name: &str, flags: &[&str], more_grants: Vec<Grant>, mesh: Option<&str>) -> Setup {
    let mut g = grants();
    g.extend(more_grants);
    let cluster = HostCluster::start(users(), g);
    let dir = std::env::temp_dir().join(format!("kfp-conformance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let serving_ca = pki::ca("serving-ca");
    let (cert, key) = pki::serving(&serving_ca, "kfp-apiserver");
    std::fs::write(dir.join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.join("tls.key"), key).expect("key");
    let front_ca = pki::ca("front-proxy-ca");
    cluster.set_extension_auth(Some(extension_auth(&front_ca.pem, "front-proxy-client")));
    let host = dir.join("host.kubeconfig");
    std::fs::write(&host, cluster.kubeconfig("delegator-token")).expect("kubeconfig");
    let path = |p: PathBuf| p.to_str().expect("path").to_owned();
    let mut args: Vec<String> = vec![
        format!("--store=sqlite://{}", path(dir.join("store.db"))),
        format!("--tls-cert-file={}", path(dir.join("tls.crt"))),
        format!("--tls-private-key-file={}", path(dir.join("tls.key"))),
        format!("--authentication-kubeconfig={}", path(host.clone())),
        format!("--authorization-kubeconfig={}", path(host)),
        "--authentication-configmap-refresh-interval=1s".into(),
        "--authorization-webhook-cache-unauthorized-ttl=1s".into(),
        "--kfp-multi-user".into(),
    ];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    let server = Served::start(dir.join("server"), &args, &serving_ca.pem);
    let aggregator = aggregator_for(&server, &serving_ca, &front_ca, mesh);
    Setup {
        cluster,
        server,
        aggregator,
        serving_ca,
        dir,
    }
}

fn aggregator_for(
    server: &Served,
    serving_ca: &Ca,
    front_ca: &Ca,
    mesh: Option<&str>,
) -> Aggregator {
    Aggregator::start(AggregatorConfig {
        backend: server.addr.clone(),
        backend_ca_pem: serving_ca.pem.clone(),
        proxy_cert: pki::client(front_ca, "front-proxy-client", &[], false),
        users: users(),
        uid_header: true,
        kfp_user_header: mesh.map(str::to_owned),
        probe_interval: Duration::from_millis(500),
    })
}

impl Setup {
    /// kubectl through `aggregator` with `token` (each token its own kubeconfig and cache).
    fn kubectl_via(&self, aggregator: &Aggregator, token: &str, args: &[&str]) -> Run {
        let port = aggregator.url.rsplit(':').next().unwrap_or("0");
        let user_dir = self.dir.join(format!("{token}-{port}"));
        std::fs::create_dir_all(&user_dir).expect("dir");
        let kubeconfig = user_dir.join("kubeconfig");
        std::fs::write(&kubeconfig, aggregator.kubeconfig(token)).expect("kubeconfig");
        kubectl_in(&kubeconfig, &user_dir, args)
    }

    fn kubectl_as(&self, token: &str, args: &[&str]) -> Run {
        self.kubectl_via(&self.aggregator, token, args)
    }
}

/// Polls `cond` every 100 ms for at most `limit`; whether it became true.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_users_through_the_aggregation_layer() {
    let s = setup("aggregated-matrix", &[], Vec::new(), None);
    rbac::matrix(&|token, args| s.kubectl_as(token, args), &s.dir, &s.cluster);

    // The uid header the ConfigMap names reaches the reviews.
    let log = s.cluster.counters.access_log.lock().expect("log").clone();
    assert!(
        log.iter()
            .any(|spec| spec["user"] == "alice" && spec["uid"] == "uid-alice"),
        "X-Remote-Uid was read: {log:?}"
    );
    assert!(s.cluster.configmap_reads() >= 1, "the ConfigMap was read");

    // Impersonation is the aggregator's business: the server sees the impersonated user.
    let out = ok(
        &s.kubectl_as("admin-token", &["get", "pl", "-n", "team-a", "--as=alice"]),
        "admin as alice in team-a",
    );
    assert!(out.contains("hello-world") || out.contains("bare"), "{out}");
    forbidden(
        &s.kubectl_as("admin-token", &["get", "pl", "-n", "team-b", "--as=alice"]),
        "admin as alice in team-b",
        r#"User "alice" cannot list resource "pipelines""#,
    );
    forbidden(
        &s.kubectl_as("bob-token", &["get", "pl", "-n", "team-b", "--as=alice"]),
        "bob may not impersonate",
        "cannot impersonate",
    );

    // The aggregator's own traffic: availability probes, discovery with ETag, OpenAPI.
    assert!(
        within(Duration::from_secs(20), || {
            s.aggregator.counters.discovery.lock().expect("d").len() >= 2
        }),
        "two aggregator rounds"
    );
    let (good, all) = s.aggregator.probes();
    assert!(all >= 10, "{all} probes");
    assert_eq!(good, all, "every availability probe answered 2xx");
    let discovery = s.aggregator.counters.discovery.lock().expect("d").clone();
    assert_eq!(discovery[0], 200, "{discovery:?}");
    assert!(
        discovery[1..].iter().all(|c| *c == 304),
        "discovery revalidated with If-None-Match: {discovery:?}"
    );
    let openapi = s.aggregator.counters.openapi.lock().expect("o").clone();
    assert!(
        openapi.iter().all(|(_, c)| *c == 200) && openapi.len() >= 4,
        "{openapi:?}"
    );
}

#[test]
fn a_changed_configmap_applies_without_a_restart() {
    let s = setup("aggregated-configmap", &[], Vec::new(), None);
    let raw = ["get", "--raw", PIPELINES_A];
    ok(&s.kubectl_as("admin-token", &raw), "the first front proxy");
    // A second front proxy, signed by a CA the ConfigMap does not hold yet.
    let next_ca = pki::ca("next-front-proxy-ca");
    let next = aggregator_for(&s.server, &s.serving_ca, &next_ca, None);
    let r = s.kubectl_via(&next, "admin-token", &raw);
    assert_ne!(
        r.code, 0,
        "an unknown front-proxy CA is not trusted: {}",
        r.stdout
    );
    // The cluster rotates its front-proxy CA: the new one only.
    s.cluster
        .set_extension_auth(Some(extension_auth(&next_ca.pem, "front-proxy-client")));
    assert!(
        within(Duration::from_secs(15), || s
            .kubectl_via(&next, "admin-token", &raw)
            .code
            == 0),
        "the rotated front-proxy CA is trusted without a restart:\n{}",
        s.server.log()
    );
    let r = s.kubectl_as("admin-token", &raw);
    assert_ne!(r.code, 0, "the old CA is gone: {}", r.stdout);
    // A changed allowed name: the same CA, but its CN no longer counts as the front proxy.
    s.cluster
        .set_extension_auth(Some(extension_auth(&next_ca.pem, "someone-else")));
    assert!(
        within(Duration::from_secs(15), || {
            let r = s.kubectl_via(&next, "admin-token", &raw);
            r.code != 0 && r.stderr.contains("Unauthorized")
        }),
        "headers from a CN that is no longer allowed are ignored (401)"
    );
}

/// One GET straight to the server with a bearer token: the status.
fn bearer_get(s: &Setup, token: &str, path: &str) -> u16 {
    https_get(
        &s.server.addr,
        &s.serving_ca.pem,
        path,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .map(|(code, _)| code)
    .unwrap_or(0)
}

#[test]
fn service_account_tokens_are_verified_locally() {
    let runner = Grant {
        user: "system:serviceaccount:team-a:runner".into(),
        namespace: Some("team-a".into()),
        verbs: VIEW.iter().map(|v| (*v).to_owned()).collect(),
        resources: vec!["pipelines".into()],
    };
    let s = setup(
        "aggregated-sa",
        &[
            "--service-account-issuer-discovery",
            "--api-audiences=pipelines.kubeflow.org",
        ],
        vec![runner],
        None,
    );
    let request = TokenRequest {
        pod: Some("runner-0".into()),
        ..TokenRequest::new("team-a", "runner", "pipelines.kubeflow.org")
    };
    let good = s.cluster.service_account_token(&request);
    let reviews = s.cluster.token_reviews();
    assert_eq!(
        bearer_get(&s, &good, PIPELINES_A),
        200,
        "{}",
        s.server.log()
    );
    assert_eq!(
        s.cluster.token_reviews(),
        reviews,
        "no TokenReview was asked"
    );
    let log = s.cluster.counters.access_log.lock().expect("log").clone();
    let last = log.last().expect("a review");
    assert_eq!(last["user"], "system:serviceaccount:team-a:runner");
    assert_eq!(last["uid"], "uid-sa-runner");
    let groups = last["groups"].to_string();
    assert!(
        groups.contains("system:serviceaccounts:team-a") && groups.contains("system:authenticated"),
        "{groups}"
    );
    assert_eq!(
        last["extra"]["authentication.kubernetes.io/pod-name"][0], "runner-0",
        "{last}"
    );
    // Its rights are the ServiceAccount's: nothing in team-b.
    assert_eq!(
        bearer_get(
            &s,
            &good,
            "/apis/pipelines.kubeflow.org/v2beta1/namespaces/team-b/pipelines"
        ),
        403
    );

    // A key the cluster rotated in: one fetch of the key set, then accepted.
    let jwks = s.cluster.jwks_reads();
    s.cluster.rotate_signing_key();
    let rotated = s.cluster.service_account_token(&request);
    assert_eq!(bearer_get(&s, &rotated, PIPELINES_A), 200);
    assert_eq!(
        s.cluster.jwks_reads(),
        jwks + 1,
        "refreshed on the unknown key id"
    );

    // Refused, each without a TokenReview: expired, another audience, forged signatures.
    let expired = s.cluster.service_account_token(&TokenRequest {
        expires_in: -600,
        ..request.clone()
    });
    let other_audience = s.cluster.service_account_token(&TokenRequest {
        audiences: vec!["https://kubernetes.default.svc".into()],
        ..request.clone()
    });
    let forged_known_kid = s.cluster.forged_token(&request, "key-2");
    let forged_new_kid = s.cluster.forged_token(&request, "key-99");
    let jwks = s.cluster.jwks_reads();
    for (what, token) in [
        ("expired", &expired),
        ("another audience", &other_audience),
        ("forged under a published key id", &forged_known_kid),
        ("forged under an unknown key id", &forged_new_kid),
    ] {
        assert_eq!(bearer_get(&s, token, PIPELINES_A), 401, "{what}");
    }
    assert_eq!(
        s.cluster.token_reviews(),
        reviews,
        "none went to TokenReview"
    );
    assert_eq!(
        s.cluster.jwks_reads(),
        jwks,
        "an unknown key id right after a fetch causes no other fetch"
    );

    // A token that is not the issuer's still goes to TokenReview.
    assert_eq!(
        bearer_get(
            &s,
            "bob-token",
            "/apis/pipelines.kubeflow.org/v2beta1/namespaces/team-b/pipelines"
        ),
        200
    );
    assert_eq!(s.cluster.token_reviews(), reviews + 1);
}

fn python() -> PathBuf {
    let p = std::env::var_os("KFP_PYTHON").map(PathBuf::from).expect(
        "KFP_PYTHON is not set: scripts/test sets it from scripts/kfp-sdk-venv (kfp==2.17.0)",
    );
    assert!(p.exists(), "{} does not exist", p.display());
    p
}

fn kfp_users(s: &Setup, home: &str) -> String {
    let home = s.dir.join(home);
    std::fs::create_dir_all(&home).expect("home");
    let ca = s.dir.join("aggregator-ca.crt");
    std::fs::write(&ca, &s.aggregator.ca_pem).expect("ca");
    let out = Command::new(python())
        .arg(kfp_conformance::workspace().join("conformance/kfp/kfp_users.py"))
        .env("KFP_HOST", &s.aggregator.url)
        .env("KFP_CA", &ca)
        .env("KFP_CORPUS", corpus())
        .env("KFP_SUITE_HOME", &home)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kfp_users.py failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.server.log()
    );
    stdout
}

#[test]
fn kfp_client_users_through_the_aggregation_layer() {
    let s = setup("aggregated-kfp", &[], Vec::new(), None);
    let out = kfp_users(&s, "home");
    assert!(out.contains("checks passed"), "{out}");
}

#[test]
fn kfp_client_users_with_the_kfp_user_header_behind_a_trusted_proxy() {
    // KFP's header carries a name and no groups: the admin needs a grant of its own here.
    let admin = Grant {
        user: "admin".into(),
        namespace: None,
        verbs: kfp_conformance::sim::EDIT
            .iter()
            .map(|v| (*v).to_owned())
            .collect(),
        resources: vec!["pipelines".into(), "pipelineversions".into()],
    };
    let s = setup(
        "aggregated-kfp-mesh",
        &["--kfp-user-header=kubeflow-userid"],
        vec![admin],
        Some("kubeflow-userid"),
    );
    let out = kfp_users(&s, "home");
    assert!(out.contains("checks passed"), "{out}");
    let log = s.cluster.counters.access_log.lock().expect("log").clone();
    assert!(
        log.iter().any(|spec| spec["user"] == "alice"
            && spec["groups"] == serde_json::json!(["system:authenticated"])),
        "alice came in KFP's header (no groups): {log:?}"
    );
    // Sent by a client straight to the server, the header names nobody.
    let direct = https_get(
        &s.server.addr,
        &s.serving_ca.pem,
        "/apis/v2beta1/pipelines?namespace=team-a",
        &[("kubeflow-userid", "admin")],
    );
    assert_eq!(direct.map(|(c, _)| c), Some(401));
}

/// Replaces `path` atomically (as a Secret volume update does).
fn replace(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("next");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Certificates used by the request loop, switched while it runs.
struct Creds {
    client: (String, String),
    front: (String, String),
}

/// One request on a new TLS connection with `cert`: the status, and which serving CA issued
/// the certificate the server presented.
async fn request_once(
    addr: &str,
    trust: &str,
    cert: &(String, String),
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let a = kfp_conformance::tls_get(addr, trust, Some(cert), headers, PIPELINES_A).await?;
    Ok((a.status, issuer_cn(&a.server_cert)))
}

/// Which of the test's two serving CAs issued a DER certificate, by the CA's name in its issuer
/// field (the subject is `kfp-apiserver`, so the name can only come from the issuer).
fn issuer_cn(der: &[u8]) -> String {
    let text = String::from_utf8_lossy(der);
    ["serving-ca-1", "serving-ca-2"]
        .iter()
        .find(|cn| text.contains(*cn))
        .map(|cn| (*cn).to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_a_request_loop() {
    let dir = std::env::temp_dir().join(format!("kfp-conformance-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (serving1, serving2) = (pki::ca("serving-ca-1"), pki::ca("serving-ca-2"));
    let (client1, client2) = (pki::ca("client-ca-1"), pki::ca("client-ca-2"));
    let (front1, front2) = (pki::ca("front-ca-1"), pki::ca("front-ca-2"));
    let file = |name: &str| dir.join(name);
    let (cert, key) = pki::serving(&serving1, "kfp-apiserver");
    replace(&file("tls.crt"), &cert);
    replace(&file("tls.key"), &key);
    replace(&file("client-ca.crt"), &client1.pem);
    replace(&file("front-ca.crt"), &front1.pem);
    let p = |name: &str| file(name).to_str().expect("path").to_owned();
    let args = vec![
        format!("--store=sqlite://{}", p("store.db")),
        format!("--tls-cert-file={}", p("tls.crt")),
        format!("--tls-private-key-file={}", p("tls.key")),
        format!("--client-ca-file={}", p("client-ca.crt")),
        format!("--requestheader-client-ca-file={}", p("front-ca.crt")),
        "--requestheader-allowed-names=front-proxy-client".into(),
    ];
    let server = Served::start(dir.join("server"), &args, &serving1.pem);
    let trust = format!("{}{}", serving1.pem, serving2.pem);
    let creds = Arc::new(std::sync::Mutex::new(Creds {
        client: pki::client(&client1, "carol", &["team-a"], false),
        front: pki::client(&front1, "front-proxy-client", &[], false),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let issuers = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for front_proxy in [false, true] {
        let (addr, trust) = (server.addr.clone(), trust.clone());
        let (creds, stop, done, failures, issuers) = (
            creds.clone(),
            stop.clone(),
            done.clone(),
            failures.clone(),
            issuers.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let cert = {
                    let c = creds.lock().expect("creds");
                    if front_proxy {
                        c.front.clone()
                    } else {
                        c.client.clone()
                    }
                };
                let headers: &[(&str, &str)] = if front_proxy {
                    &[
                        ("x-remote-user", "dave"),
                        ("x-remote-group", "system:masters"),
                    ]
                } else {
                    &[]
                };
                match request_once(&addr, &trust, &cert, headers).await {
                    Ok((200, issuer)) => issuers.lock().expect("i").push(issuer),
                    Ok((code, _)) => failures.lock().expect("f").push(format!("{code}")),
                    Err(e) => failures.lock().expect("f").push(e),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let wait_requests = |n: usize| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::SeqCst) + n;
            let deadline = Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < target && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_requests(20).await;
    // Rotation, overlapping as a real one does: the CA bundles take the new CA beside the old,
    // the serving certificate changes, the clients move to new certificates, the old CAs go.
    replace(
        &file("client-ca.crt"),
        &format!("{}{}", client1.pem, client2.pem),
    );
    replace(
        &file("front-ca.crt"),
        &format!("{}{}", front1.pem, front2.pem),
    );
    let (cert, key) = pki::serving(&serving2, "kfp-apiserver");
    replace(&file("tls.key"), &key);
    replace(&file("tls.crt"), &cert);
    let next_client = pki::client(&client2, "carol", &["team-a"], false);
    let next_front = pki::client(&front2, "front-proxy-client", &[], false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = request_once(&server.addr, &trust, &next_client, &[]).await;
        let b = request_once(
            &server.addr,
            &trust,
            &next_front,
            &[("x-remote-user", "dave")],
        )
        .await;
        if matches!((&a, &b), (Ok((200, i)), Ok((200, _))) if i == "serving-ca-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new material not served: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let mut c = creds.lock().expect("creds");
        c.client = next_client.clone();
        c.front = next_front;
    }
    wait_requests(20).await;
    replace(&file("client-ca.crt"), &client2.pem);
    replace(&file("front-ca.crt"), &front2.pem);
    let old_client = pki::client(&client1, "carol", &["team-a"], false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while request_once(&server.addr, &trust, &old_client, &[])
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the old client CA is still trusted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_requests(20).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.expect("loop");
    }
    let failures = failures.lock().expect("f").clone();
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}\n{}",
        server.log()
    );
    let issuers = issuers.lock().expect("i").clone();
    assert!(issuers.len() >= 60, "{} requests", issuers.len());
    assert_eq!(issuers.first().map(String::as_str), Some("serving-ca-1"));
    assert_eq!(issuers.last().map(String::as_str), Some("serving-ca-2"));
    let _ = std::fs::remove_dir_all(&dir);
}
