//! The aggregation layer, as a real kube-apiserver behaves towards an aggregated server for
//! our purpose (kube-aggregator's proxy handler, availability controller and discovery /
//! OpenAPI controllers; `../shared/kube/API_MACHINERY_NOTES.md`, "what a real v1.36 aggregator
//! sends"): it authenticates its own clients by static bearer tokens (kubectl users,
//! kfp.Client), honours `Impersonate-*` for `system:masters`, and proxies
//! `/apis/pipelines.kubeflow.org/...`, the KFP REST paths and the discovery / OpenAPI paths to
//! the server under test over TLS with its front-proxy client certificate, naming the user in
//! `X-Remote-User`, one `X-Remote-Group` line per group and (when configured) `X-Remote-Uid` —
//! or, for KFP paths in mesh mode, in KFP's user header instead. Headers a client sends under
//! those names are dropped, as kube-apiserver drops them. It sends the availability probes (5
//! parallel `GET /apis/pipelines.kubeflow.org/v2beta1` as `system:kube-aggregator`), fetches
//! aggregated discovery with `If-None-Match` and the OpenAPI documents as `system:aggregator`,
//! and counts what it saw.
//!
//! Unlike kube-apiserver it does not authorize before proxying: the decisions the tests check
//! are the server's own (a real kube-apiserver would refuse some of them earlier).
//!
//! It runs on its own thread and runtime and serves its clients over TLS with a CA of its own
//! ([`Aggregator::ca_pem`]; kubectl sends bearer tokens only over TLS); it links nothing of the
//! server.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::sim::SimUser;

/// How the aggregator reaches the server under test and whom it serves.
#[derive(Clone)]
pub struct AggregatorConfig {
    /// The server's `127.0.0.1:PORT`.
    pub backend: String,
    /// The CA that signed the server's serving certificate (the APIService's `caBundle`).
    pub backend_ca_pem: String,
    /// The front-proxy client certificate: PEM chain and PEM key.
    pub proxy_cert: (String, String),
    /// Its clients, by bearer token.
    pub users: Vec<SimUser>,
    /// Send `X-Remote-Uid` (kube's `--requestheader-uid-headers`).
    pub uid_header: bool,
    /// Mesh mode for KFP paths: name the user in this header (`kubeflow-userid`) instead of
    /// the `X-Remote-*` headers.
    pub kfp_user_header: Option<String>,
    /// Time between availability rounds (kube-aggregator: 30 s).
    pub probe_interval: Duration,
}

/// What the aggregator saw.
#[derive(Default)]
pub struct AggregatorCounters {
    /// Client requests proxied to the server.
    pub proxied: AtomicUsize,
    /// Client requests it refused itself (no or unknown token).
    pub unauthenticated: AtomicUsize,
    /// The status of every availability probe (0: no answer within 5 s).
    pub probes: Mutex<Vec<u16>>,
    /// The status of every aggregated-discovery fetch.
    pub discovery: Mutex<Vec<u16>>,
    /// The status of every OpenAPI fetch, by path.
    pub openapi: Mutex<Vec<(String, u16)>>,
}

/// A running aggregation layer.
pub struct Aggregator {
    /// `https://127.0.0.1:PORT`, where clients connect.
    pub url: String,
    /// The CA of its serving certificate (PEM), for its clients.
    pub ca_pem: String,
    /// What it saw.
    pub counters: Arc<AggregatorCounters>,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type Backend = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

struct Inner {
    config: AggregatorConfig,
    client: Backend,
    counters: Arc<AggregatorCounters>,
}

/// The user the aggregator acts for.
#[derive(Clone, Debug)]
struct Caller {
    name: String,
    uid: String,
    groups: Vec<String>,
}

const DISCOVERY_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<ProxyBody> {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    let mut r = http::Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::FORBIDDEN);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Headers never passed on: hop-by-hop ones, the client's credentials, and every header the
/// aggregator itself uses to name the user.
fn dropped(name: &str, kfp_header: Option<&str>) -> bool {
    matches!(
        name,
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
        || kfp_header.is_some_and(|h| h.eq_ignore_ascii_case(name))
}

fn is_kfp(path: &str) -> bool {
    path.starts_with("/apis/v2beta1/") || path.starts_with("/apis/v1beta1/")
}

impl Inner {
    /// The caller, or the refusal (status, reason, message).
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Caller, (u16, &'static str, String)> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(user) = token.and_then(|t| self.config.users.iter().find(|u| u.token == t)) else {
            self.counters.unauthenticated.fetch_add(1, Ordering::SeqCst);
            return Err((401, "Unauthorized", "Unauthorized".into()));
        };
        let mut caller = Caller {
            name: user.name.clone(),
            uid: format!("uid-{}", user.name),
            groups: user.groups.clone(),
        };
        caller.groups.push("system:authenticated".into());
        if let Some(as_user) = headers
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
        {
            if !caller.groups.iter().any(|g| g == "system:masters") {
                return Err((
                    403,
                    "Forbidden",
                    format!(
                        "users \"{as_user}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                        caller.name
                    ),
                ));
            }
            let mut groups: Vec<String> = headers
                .get_all("impersonate-group")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            groups.push("system:authenticated".into());
            caller = Caller {
                name: as_user.to_owned(),
                uid: headers
                    .get("impersonate-uid")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                groups,
            };
        }
        Ok(caller)
    }

    /// A request to the server as `caller`, with the user in the front-proxy headers (or in
    /// KFP's header for KFP paths in mesh mode).
    fn backend_request(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &http::HeaderMap,
        caller: &Caller,
        body: ProxyBody,
    ) -> http::Request<ProxyBody> {
        let uri = format!("https://{}{path_and_query}", self.config.backend);
        let kfp_header = self.config.kfp_user_header.as_deref();
        let mut out = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .expect("request");
        let h = out.headers_mut();
        for (k, v) in headers {
            if !dropped(k.as_str(), kfp_header) {
                h.append(k.clone(), v.clone());
            }
        }
        let value = |s: &str| http::HeaderValue::from_str(s).expect("header value");
        match kfp_header {
            Some(name) if is_kfp(path_and_query) => {
                h.insert(
                    http::HeaderName::try_from(name).expect("header name"),
                    value(&caller.name),
                );
            }
            _ => {
                h.insert("x-remote-user", value(&caller.name));
                for g in &caller.groups {
                    h.append("x-remote-group", value(g));
                }
                if self.config.uid_header && !caller.uid.is_empty() {
                    h.insert("x-remote-uid", value(&caller.uid));
                }
            }
        }
        h.insert("x-forwarded-proto", value("http"));
        h.insert("x-forwarded-for", value("127.0.0.1"));
        h.insert("x-forwarded-uri", value(path_and_query));
        out
    }

    async fn serve(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<ProxyBody> {
        let caller = match self.authenticate(req.headers()) {
            Ok(c) => c,
            Err((code, reason, message)) => return status(code, reason, &message),
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let path = req.uri().path();
        let ours = path == "/api"
            || path == "/apis"
            || path.starts_with("/apis/pipelines.kubeflow.org")
            || path.starts_with("/openapi/")
            || is_kfp(path)
            || path == "/version";
        if !ours {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let (parts, body) = req.into_parts();
        let out = self.backend_request(
            parts.method,
            &path_and_query,
            &parts.headers,
            &caller,
            body.boxed(),
        );
        self.counters.proxied.fetch_add(1, Ordering::SeqCst);
        match self.client.request(out).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in ["connection", "keep-alive", "transfer-encoding"] {
                    parts.headers.remove(h);
                }
                http::Response::from_parts(parts, body.boxed())
            }
            Err(e) => status(
                503,
                "ServiceUnavailable",
                &format!("error trying to reach service: {e}"),
            ),
        }
    }

    /// One GET as `user` (with `groups`) with extra headers; the status and `ETag`, or 0 when
    /// nothing answered in 5 s.
    async fn get_as(
        &self,
        path: &str,
        user: &str,
        groups: &[&str],
        extra: &[(&str, String)],
    ) -> (u16, Option<String>) {
        let caller = Caller {
            name: user.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        let mut headers = http::HeaderMap::new();
        for (k, v) in extra {
            headers.insert(
                http::HeaderName::try_from(*k).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        let req = self.backend_request(http::Method::GET, path, &headers, &caller, empty());
        match tokio::time::timeout(Duration::from_secs(5), self.client.request(req)).await {
            Ok(Ok(resp)) => {
                let code = resp.status().as_u16();
                let etag = resp
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = resp.into_body().collect().await;
                (code, etag)
            }
            _ => (0, None),
        }
    }

    /// The aggregator's own traffic, every `probe_interval`: availability, discovery, OpenAPI.
    async fn background(self: Arc<Self>) {
        let mut etag: Option<String> = None;
        loop {
            let probes = (0..5).map(|_| {
                self.get_as(
                    "/apis/pipelines.kubeflow.org/v2beta1",
                    "system:kube-aggregator",
                    &["system:masters"],
                    &[],
                )
            });
            let results = futures_util::future::join_all(probes).await;
            self.counters
                .probes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(results.iter().map(|(code, _)| *code));
            let mut headers = vec![("accept", DISCOVERY_ACCEPT.to_owned())];
            if let Some(tag) = &etag {
                headers.push(("if-none-match", tag.clone()));
            }
            let (code, tag) = self
                .get_as(
                    "/apis",
                    "system:kube-aggregator",
                    &["system:masters"],
                    &headers,
                )
                .await;
            if tag.is_some() {
                etag = tag;
            }
            self.counters
                .discovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(code);
            for path in ["/openapi/v2", "/openapi/v3"] {
                let (code, _) = self
                    .get_as(
                        path,
                        "system:aggregator",
                        &[],
                        &[("accept", "application/json".to_owned())],
                    )
                    .await;
                self.counters
                    .openapi
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((path.to_owned(), code));
            }
            tokio::time::sleep(self.config.probe_interval).await;
        }
    }
}

impl Aggregator {
    /// Starts one in front of `config.backend`.
    pub fn start(config: AggregatorConfig) -> Aggregator {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let counters = Arc::new(AggregatorCounters::default());
        let ca = crate::pki::ca("aggregator-ca");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(crate::pki::server_config(
            &crate::pki::serving(&ca, "kube-apiserver"),
        )));
        let tls = crate::pki::client_config(
            &config.backend_ca_pem,
            Some(&config.proxy_cert),
            // The connector sets ALPN itself (h2 and http/1.1, as the aggregator offers).
            &[],
        );
        let shared = counters.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .enable_all_versions()
                    .build();
                let client: Backend = Client::builder(TokioExecutor::new()).build(connector);
                let inner = Arc::new(Inner {
                    config,
                    client,
                    counters: shared,
                });
                tokio::spawn(inner.clone().background());
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let inner = inner.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |req| {
                            let inner = inner.clone();
                            async move { Ok::<_, Infallible>(inner.serve(req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        Aggregator {
            url,
            ca_pem: ca.pem,
            counters,
        }
    }

    /// A kubeconfig (YAML) that reaches the aggregator with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: aggregator\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: aggregator\n  context:\n    cluster: aggregator\n    user: user\ncurrent-context: aggregator\n",
            self.url,
            base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
        )
    }

    /// Availability probes answered 2xx/3xx, and all probes so far.
    pub fn probes(&self) -> (usize, usize) {
        let p = self
            .counters
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (
            p.iter().filter(|c| (200..400).contains(*c)).count(),
            p.len(),
        )
    }
}
