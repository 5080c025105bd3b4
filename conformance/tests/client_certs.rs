//! Client certificates against the real binary: the front proxy (request-header CA + allowed CN)
//! is the only connection whose `X-Remote-*` headers count; x509 client certificates of the
//! client CA authenticate as their CN/O; and each spoofing probe of the issue — headers without
//! the certificate, a front-proxy-CA certificate with another CN, an expired or wrongly signed
//! certificate, impersonation, a token the cluster rejects — is not served as the claimed user.
//! Who was served is read from the simulated cluster's SubjectAccessReview log.

use std::path::Path;

use kfp_conformance::pki::{Ca, ca, client};
use kfp_conformance::sim::{EDIT, Grant, HostCluster, SimUser};
use kfp_conformance::{DevServer, free_port};
use serde_json::Value;

/// One HTTPS GET to `addr`, trusting `server_ca`, with an optional client certificate and
/// headers. `Err` when the TLS handshake (or connection) fails.
async fn get(
    addr: &str,
    server_ca: &Path,
    cert: Option<&(String, String)>,
    headers: &[(&str, &str)],
    path: &str,
) -> Result<(u16, String), String> {
    let ca_pem = std::fs::read_to_string(server_ca).expect("server CA");
    let a = kfp_conformance::tls_get(addr, &ca_pem, cert, headers, path).await?;
    Ok((a.status, a.body))
}

const PATH: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/team-a/pipelines";
const SPOOF: [(&str, &str); 2] = [
    ("x-remote-user", "admin"),
    ("x-remote-group", "system:masters"),
];

/// A server with both CA bundles and delegation to a simulated cluster: alice may edit
/// pipelines in team-a, bob may list them there.
struct Probe {
    front_ca: Ca,
    client_ca: Ca,
    rogue_ca: Ca,
    cluster: HostCluster,
    server_ca: std::path::PathBuf,
    addr: String,
    _server: DevServer,
}

fn setup(name: &str) -> Probe {
    let front_ca = ca("front-proxy-ca");
    let client_ca = ca("client-ca");
    let rogue_ca = ca("rogue-ca");
    let cluster = HostCluster::start(
        vec![SimUser {
            token: "bob-token".into(),
            name: "bob".into(),
            groups: vec![],
        }],
        vec![
            Grant {
                user: "alice".into(),
                namespace: Some("team-a".into()),
                verbs: EDIT.iter().map(|v| (*v).to_owned()).collect(),
                resources: vec!["pipelines".into()],
            },
            Grant {
                user: "bob".into(),
                namespace: Some("team-a".into()),
                verbs: vec!["list".into()],
                resources: vec!["pipelines".into()],
            },
        ],
    );
    let dir = std::env::temp_dir().join(format!(
        "kfp-conformance-certs-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("path").to_owned()
    };
    let front_file = write("front-ca.crt", &front_ca.pem);
    let client_file = write("client-ca.crt", &client_ca.pem);
    let host = write("host.kubeconfig", &cluster.kubeconfig("delegator"));
    let addr = format!("127.0.0.1:{}", free_port());
    let server = DevServer::start_with(
        dir.join("server"),
        true,
        &addr,
        &[
            "--client-ca-file",
            &client_file,
            "--requestheader-client-ca-file",
            &front_file,
            "--requestheader-allowed-names=front-proxy-client",
            "--authentication-kubeconfig",
            &host,
            "--authorization-kubeconfig",
            &host,
        ],
    );
    let server_ca = server.dir.join("pki/ca.crt");
    Probe {
        front_ca,
        client_ca,
        rogue_ca,
        cluster,
        server_ca,
        addr,
        _server: server,
    }
}

impl Probe {
    fn last_reviewed(&self) -> Value {
        self.cluster
            .counters
            .access_log
            .lock()
            .expect("log")
            .last()
            .cloned()
            .unwrap_or_default()
    }

    async fn get(
        &self,
        cert: Option<&(String, String)>,
        headers: &[(&str, &str)],
        path: &str,
    ) -> Result<(u16, String), String> {
        get(&self.addr, &self.server_ca, cert, headers, path).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_without_the_front_proxy_certificate_are_not_trusted() {
    let p = setup("no-cert");
    let (code, _) = p.get(None, &SPOOF, PATH).await.expect("served");
    assert_eq!(code, 401, "X-Remote-User without a certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_proxy_ca_certificate_with_a_cn_not_allowed_is_not_the_front_proxy() {
    let p = setup("other-cn");
    let intruder = client(&p.front_ca, "intruder", &[], false);
    let (code, _) = p.get(Some(&intruder), &SPOOF, PATH).await.expect("served");
    assert_eq!(code, 401, "a front-proxy-CA certificate with another CN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_front_proxy_certificate_is_refused() {
    let p = setup("expired");
    let expired = client(&p.front_ca, "front-proxy-client", &[], true);
    assert!(
        p.get(Some(&expired), &SPOOF, PATH).await.is_err(),
        "the handshake fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_signed_certificate_is_refused() {
    let p = setup("rogue");
    let rogue = client(&p.rogue_ca, "front-proxy-client", &[], false);
    assert!(
        p.get(Some(&rogue), &SPOOF, PATH).await.is_err(),
        "the handshake fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_spoofed_headers_is_served_as_the_tokens_user() {
    let p = setup("token-spoof");
    let (code, _) = p
        .get(
            None,
            &[("authorization", "Bearer bob-token"), SPOOF[0], SPOOF[1]],
            PATH,
        )
        .await
        .expect("served");
    assert_eq!(code, 200);
    assert_eq!(
        p.last_reviewed()["user"],
        "bob",
        "served as bob, not the header's admin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_cluster_rejects_is_401() {
    let p = setup("forged");
    let (code, _) = p
        .get(None, &[("authorization", "Bearer forged")], PATH)
        .await
        .expect("served");
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_refused() {
    let p = setup("impersonate");
    let (code, body) = p
        .get(
            None,
            &[
                ("authorization", "Bearer bob-token"),
                ("impersonate-user", "admin"),
            ],
            PATH,
        )
        .await
        .expect("served");
    assert_eq!(code, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_proxy_and_x509_users_are_who_their_credentials_say() {
    let p = setup("genuine");
    let proxy = client(&p.front_ca, "front-proxy-client", &[], false);
    // The real front proxy: the headers are the user, one group per header line.
    let (code, body) = p
        .get(
            Some(&proxy),
            &[
                ("x-remote-user", "alice"),
                ("x-remote-group", "devs"),
                ("x-remote-group", "ops"),
                ("x-remote-extra-scopes", "a"),
            ],
            PATH,
        )
        .await
        .expect("served");
    assert_eq!(code, 200, "{body}");
    let spec = p.last_reviewed();
    assert_eq!(spec["user"], "alice");
    assert_eq!(
        spec["groups"],
        serde_json::json!(["devs", "ops", "system:authenticated"])
    );
    assert_eq!(spec["extra"]["scopes"], serde_json::json!(["a"]));
    // ... and the front proxy may pass on system:masters (the aggregator's availability probe).
    let (code, _) = p
        .get(Some(&proxy), &SPOOF, "/apis/pipelines.kubeflow.org/v2beta1")
        .await
        .expect("served");
    assert_eq!(code, 200);

    // x509 users of the client CA: CN and O; headers on their connection ignored.
    let carol = client(&p.client_ca, "carol", &["team-c"], false);
    let (code, body) = p.get(Some(&carol), &SPOOF, PATH).await.expect("served");
    assert_eq!(code, 403, "carol has no grant in team-a: {body}");
    assert!(body.contains(r#"User \"carol\""#), "{body}");
    let spec = p.last_reviewed();
    assert_eq!(spec["user"], "carol");
    assert_eq!(
        spec["groups"],
        serde_json::json!(["team-c", "system:authenticated"])
    );
}
