//! The host-cluster side of delegation, as a small fake kube-apiserver on 127.0.0.1 (plain
//! HTTP): it answers `TokenReview` from a token table and `SubjectAccessReview` from an
//! RBAC-like rule list, and counts every review, so tests can check what the server under test
//! asked and how often (its caches). This is the first part of the aggregation-layer simulator;
//! the front-proxy side is not here yet.
//!
//! It runs on its own thread and runtime; it links nothing of the server.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// A user the simulated cluster knows by token.
#[derive(Clone, Debug)]
pub struct SimUser {
    /// The bearer token.
    pub token: String,
    /// The user name.
    pub name: String,
    /// Groups (the reviewer adds `system:authenticated`).
    pub groups: Vec<String>,
}

/// One RBAC-like grant: `verbs` on `resources` (`pipelines`, `pipelineversions/status`, ...) of
/// group `pipelines.kubeflow.org` in `namespace` (`None`: every namespace and cluster-wide).
#[derive(Clone, Debug)]
pub struct Grant {
    /// Who.
    pub user: String,
    /// Where (`None` = cluster-wide).
    pub namespace: Option<String>,
    /// What.
    pub verbs: Vec<String>,
    /// On which resources (`resource` or `resource/subresource`).
    pub resources: Vec<String>,
}

/// What the simulator saw.
#[derive(Default)]
pub struct Counters {
    /// TokenReviews answered.
    pub token_reviews: AtomicUsize,
    /// SubjectAccessReviews answered.
    pub access_reviews: AtomicUsize,
    /// Every SubjectAccessReview spec, in order.
    pub access_log: Mutex<Vec<Value>>,
}

/// A running simulated cluster.
pub struct HostCluster {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Counts of what it answered.
    pub counters: Arc<Counters>,
}

/// `get`, `list`, `watch`.
pub const VIEW: &[&str] = &["get", "list", "watch"];
/// View plus writes.
pub const EDIT: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

impl HostCluster {
    /// Starts one with these users and grants.
    pub fn start(users: Vec<SimUser>, grants: Vec<Grant>) -> HostCluster {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let counters = Arc::new(Counters::default());
        let state = Arc::new((users, grants, counters.clone()));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(&state, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        });
        HostCluster { url, counters }
    }

    /// TokenReviews so far.
    pub fn token_reviews(&self) -> usize {
        self.counters.token_reviews.load(Ordering::SeqCst)
    }

    /// SubjectAccessReviews so far.
    pub fn access_reviews(&self) -> usize {
        self.counters.access_reviews.load(Ordering::SeqCst)
    }

    /// A kubeconfig (YAML) that reaches this cluster with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: host\n  cluster:\n    server: {}\nusers:\n- name: delegator\n  user:\n    token: {token}\ncontexts:\n- name: host\n  context:\n    cluster: host\n    user: delegator\ncurrent-context: host\n",
            self.url
        )
    }
}

type State = (Vec<SimUser>, Vec<Grant>, Arc<Counters>);

fn respond(status: u16, body: Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(
    state: &State,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (users, grants, counters) = state;
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(400, json!({})),
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    match path.as_str() {
        "/apis/authentication.k8s.io/v1/tokenreviews" => {
            counters.token_reviews.fetch_add(1, Ordering::SeqCst);
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            let status = match users.iter().find(|u| u.token == token) {
                Some(u) => {
                    let mut groups = u.groups.clone();
                    groups.push("system:authenticated".into());
                    json!({"authenticated": true, "user": {"username": u.name, "uid": format!("uid-{}", u.name), "groups": groups}})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            respond(
                201,
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": review["spec"], "status": status}),
            )
        }
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
            counters.access_reviews.fetch_add(1, Ordering::SeqCst);
            let spec = review["spec"].clone();
            counters
                .access_log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(spec.clone());
            let user = spec["user"].as_str().unwrap_or_default();
            let ra = &spec["resourceAttributes"];
            let allowed = ra.is_object()
                && ra["group"] == "pipelines.kubeflow.org"
                && grants.iter().any(|g| {
                    let resource = match ra["subresource"].as_str() {
                        Some(s) if !s.is_empty() => {
                            format!("{}/{s}", ra["resource"].as_str().unwrap_or_default())
                        }
                        _ => ra["resource"].as_str().unwrap_or_default().to_owned(),
                    };
                    let ns = ra["namespace"].as_str().unwrap_or_default();
                    g.user == user
                        && g.verbs.iter().any(|v| ra["verb"] == v.as_str())
                        && g.resources.contains(&resource)
                        && match &g.namespace {
                            None => true,
                            Some(want) => !ns.is_empty() && want == ns,
                        }
                });
            let status = if allowed {
                json!({"allowed": true, "reason": "allowed by the simulated RBAC"})
            } else {
                json!({"allowed": false})
            };
            respond(
                201,
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec, "status": status}),
            )
        }
        _ => respond(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
        ),
    }
}
