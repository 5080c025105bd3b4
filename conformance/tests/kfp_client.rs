//! The real `kfp.Client` (kfp 2.17.0, in the venv `scripts/kfp-sdk-venv` makes) against
//! `kfp-apiserver serve --dev`, driving `conformance/kfp/kfp_client_suite.py`; and the cross-view
//! checks with the real kubectl: what kubectl applies, kfp.Client lists with the uids kubectl
//! shows; what kfp.Client uploads, kubectl sees at once, and a kubectl watch started before the
//! upload receives it.
//!
//! The Python interpreter is `$KFP_PYTHON` (scripts/test sets it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kfp_conformance::{DevServer, corpus, corpus_files, free_port};
use serde_json::Value;

fn python() -> PathBuf {
    let p = std::env::var_os("KFP_PYTHON").map(PathBuf::from).expect(
        "KFP_PYTHON is not set: scripts/test sets it from scripts/kfp-sdk-venv (kfp==2.17.0)",
    );
    assert!(p.exists(), "{} does not exist", p.display());
    p
}

/// Serves the corpus over plain HTTP on 127.0.0.1 (for `package_url`); returns its base URL.
fn serve_corpus() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let file = head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_owned();
            let path = corpus().join(&file);
            let reply = match std::fs::read(&path) {
                Ok(body) if !file.contains("..") => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = s.write_all(&reply);
        }
    });
    base
}

const URL_FLAGS: &[&str] = &[
    "--kfp-pipeline-url-allow-http",
    "--kfp-pipeline-url-allowed-domains=127.0.0.1",
    "--kfp-pipeline-url-allow-private-addresses",
    "--kfp-pipeline-url-allow-any-port",
];

fn start(name: &str, flags: &[&str]) -> DevServer {
    let dir = std::env::temp_dir().join(format!("kfp-conformance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    DevServer::start_with(dir, true, &format!("127.0.0.1:{}", free_port()), flags)
}

/// Runs the Python suite against `s`; returns its stdout.
fn run_suite(s: &DevServer, env: &[(&str, String)]) -> String {
    let home = s.dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let token = std::fs::read_to_string(s.dir.join("admin.token")).expect("token");
    let mut cmd = Command::new(python());
    cmd.arg(kfp_conformance::workspace().join("conformance/kfp/kfp_client_suite.py"))
        .env("KFP_HOST", format!("https://{}", s.addr))
        .env("KFP_TOKEN", token.trim())
        .env("KFP_CA", s.dir.join("pki/ca.crt"))
        .env("KFP_CORPUS", corpus())
        .env("KFP_SUITE_HOME", &home)
        .env("HOME", &home)
        .env_remove("KF_PIPELINES_ENDPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the kfp.Client suite");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the kfp.Client suite failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("checks passed"), "{stderr}");
    stdout
}

#[test]
fn kfp_client_uploads_lists_pages_updates_and_deletes() {
    let s = start("kfp-client", URL_FLAGS);
    assert!(
        s.dir.join("pki/ca.crt").exists(),
        "the dev CA is where the suite expects it"
    );
    run_suite(&s, &[("KFP_PACKAGE_BASE", serve_corpus())]);
}

fn ok(r: &kfp_conformance::Run, what: &str) -> String {
    assert_eq!(r.code, 0, "{what}:\n{}\n{}", r.stdout, r.stderr);
    r.stdout.clone()
}

#[test]
fn one_object_two_views_with_kubectl_and_kfp_client() {
    let s = start("kfp-cross-view", &["--kfp-multi-user"]);
    one_object_two_views(&s);
}

/// A stand-in host cluster for the kube:// store (`kfp_storage::testing::host` over SQLite),
/// on its own runtime; the definitions are not installed (the server does it).
struct CrdHost {
    kubeconfig: PathBuf,
    records: std::sync::Arc<kfp_storage::SqlStore>,
    host: kfp_storage::testing::host::Host,
    rt: tokio::runtime::Runtime,
}

impl CrdHost {
    fn start(name: &str) -> CrdHost {
        let dir = std::env::temp_dir().join(format!("kfp-crd-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("host dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!("sqlite://{}", dir.join("host.db").display());
        let (records, host) = rt.block_on(async {
            let records = std::sync::Arc::new(
                kfp_storage::SqlStore::open(kfp_storage::StoreConfig::new(url))
                    .await
                    .expect("host store"),
            );
            let host = kfp_storage::testing::host::Host::start(records.clone(), &[]).await;
            (records, host)
        });
        let kubeconfig = dir.join("host.kubeconfig");
        host.write_kubeconfig(&kubeconfig);
        CrdHost {
            kubeconfig,
            records,
            host,
            rt,
        }
    }

    fn store_flag(&self) -> String {
        format!("--store=kube://?kubeconfig={}", self.kubeconfig.display())
    }

    /// The records the host keeps of `plural`.
    fn records(&self, plural: &str) -> Vec<Value> {
        use kfp_storage::Store;
        let req = kfp_storage::ListRequest {
            resource: plural.into(),
            ..Default::default()
        };
        let page = self
            .rt
            .block_on(self.records.list(&req))
            .expect("host list");
        page.items.iter().map(|o| o.json().expect("json")).collect()
    }
}

/// The same two views with the server's objects kept as custom resources in a (stand-in) host
/// cluster: `serve --store kube://... --install-crds`.
#[test]
fn one_object_two_views_on_the_crd_store() {
    let host = CrdHost::start("cross-view");
    let store = host.store_flag();
    let s = start(
        "kfp-cross-view-crd",
        &["--kfp-multi-user", &store, "--install-crds"],
    );
    assert!(host.host.installed("pipelines") && host.host.installed("pipelineversions"));
    one_object_two_views(&s);
    // The host holds envelopes: the public object under .object, the host's own metadata.
    let records = host.records("pipelineversions");
    let from_kfp = records
        .iter()
        .find(|r| r["metadata"]["name"] == "from-kfp")
        .expect("the upload is a record on the host");
    assert_eq!(from_kfp["kind"], "PipelineVersionRecord");
    assert_eq!(from_kfp["object"]["kind"], "PipelineVersion");
    assert_ne!(
        from_kfp["metadata"]["uid"],
        from_kfp["object"]["metadata"]["uid"]
    );
    assert!(from_kfp["metadata"].get("ownerReferences").is_none());
    assert!(from_kfp["object"]["metadata"]["ownerReferences"].is_array());
}

/// The whole kfp.Client suite with the objects in a (stand-in) host cluster.
#[test]
fn kfp_client_suite_on_the_crd_store() {
    let host = CrdHost::start("kfp-client");
    let store = host.store_flag();
    let mut flags = URL_FLAGS.to_vec();
    flags.extend([store.as_str(), "--install-crds"]);
    let s = start("kfp-client-crd", &flags);
    run_suite(&s, &[("KFP_PACKAGE_BASE", serve_corpus())]);
}

fn one_object_two_views(s: &DevServer) {
    // What kubectl applies (namespace kubeflow, the shared namespace here, and team-a)...
    for f in corpus_files("k8s") {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if matches!(
            name,
            "hello_world.version_only.yaml" | "nested_subpipelines.yaml"
        ) {
            continue; // refused by kubectl's apply for their own reasons (see kubectl.rs)
        }
        ok(
            &s.kubectl(&["apply", "--server-side", "-f", f.to_str().expect("path")]),
            name,
        );
    }
    let list: Value = serde_json::from_str(&ok(
        &s.kubectl(&["get", "pipelines", "-A", "-o", "json"]),
        "get pipelines",
    ))
    .expect("json");
    let uids: BTreeMap<String, String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap_or_default(),
                    p["metadata"]["name"].as_str().unwrap_or_default()
                ),
                p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        uids.keys().any(|k| k.starts_with("team-a/"))
            && uids.keys().any(|k| k.starts_with("kubeflow/")),
        "{uids:?}"
    );

    // ...and a watch started before kfp.Client uploads.
    let (mut watch, rx) = s.kubectl_lines(&[
        "get",
        "plv",
        "-n",
        "team-a",
        "-w",
        "--output-watch-events",
        "--no-headers",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The watch's initial list comes first: wait until it has shown an existing version.
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the watch lists the existing versions first");
        if line.starts_with("ADDED") {
            break;
        }
    }

    let out = run_suite(
        s,
        &[
            ("KFP_MULTI_USER", "1".into()),
            (
                "KFP_KUBECTL_UIDS",
                serde_json::to_string(&uids).expect("json"),
            ),
        ],
    );
    let uploaded: Value = out
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["uploaded"].clone())
        .expect("the suite printed the uploaded ids");
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the kubectl watch saw the upload");
        if line.starts_with("ADDED") && line.split_whitespace().nth(1) == Some("from-kfp") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // What kfp.Client uploaded, kubectl sees as KFP 2.17 writes it.
    let v: Value = serde_json::from_str(&ok(
        &s.kubectl(&["get", "plv", "from-kfp", "-n", "team-a", "-o", "json"]),
        "get the uploaded version",
    ))
    .expect("json");
    let pid = uploaded["pipeline_id"].as_str().expect("pipeline_id");
    assert_eq!(v["metadata"]["uid"], uploaded["version_id"]);
    assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], pid);
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Pipeline");
    assert_eq!(
        v["metadata"]["labels"]["pipelines.kubeflow.org/pipeline-id"],
        pid
    );
    assert_eq!(
        v["metadata"]["labels"]["pipelines.kubeflow.org/pipeline"],
        "from-kfp"
    );
    assert_eq!(v["spec"]["versionName"], "from-kfp");
    assert_eq!(v["status"]["conditions"][0]["reason"], "READY");
    let p: Value = serde_json::from_str(&ok(
        &s.kubectl(&["get", "pipeline", "from-kfp", "-n", "team-a", "-o", "json"]),
        "get the uploaded pipeline",
    ))
    .expect("json");
    assert_eq!(p["metadata"]["uid"], pid);
}

/// One HTTP/1.1 request over plain TCP; returns the status code and the body.
fn plain_http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

#[test]
fn the_plain_http_listener_serves_the_kfp_view_and_nothing_else() {
    let plain = format!("127.0.0.1:{}", free_port());
    let s = start("kfp-plain", &["--kfp-http-listen", &plain]);
    let token = std::fs::read_to_string(s.dir.join("admin.token")).expect("token");
    let token = Some(token.trim());
    let (code, body) = plain_http(&plain, "GET", "/apis/v2beta1/healthz", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"multi_user\":false"), "{body}");
    let (code, _) = plain_http(&plain, "GET", "/apis/v2beta1/pipelines", None);
    assert_eq!(code, 401, "still authenticated");
    let (code, body) = plain_http(&plain, "GET", "/apis/v2beta1/pipelines", token);
    assert_eq!((code, body.as_str()), (200, "{}"));
    for path in [
        "/apis/pipelines.kubeflow.org/v2beta1/pipelines",
        "/apis",
        "/openapi/v2",
        "/metrics",
        "/version",
    ] {
        let (code, _) = plain_http(&plain, "GET", path, token);
        assert_eq!(code, 404, "{path} is not served in plain text");
    }
}
