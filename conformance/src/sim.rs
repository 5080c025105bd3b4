//! The host-cluster side of delegation, as a small fake kube-apiserver on 127.0.0.1 (plain
//! HTTP): it answers `TokenReview` from a token table and `SubjectAccessReview` from an
//! RBAC-like rule list, serves the `kube-system/extension-apiserver-authentication` ConfigMap
//! (when the test sets one) and the ServiceAccount issuer's OIDC discovery documents, mints
//! ServiceAccount tokens with its (rotatable) ES256 signing key, and counts every review and
//! read, so tests can check what the server under test asked and how often (its caches). The
//! front-proxy side of the aggregation layer is [`crate::aggregator`].
//!
//! It runs on its own thread and runtime; it links nothing of the server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

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
    /// Reads of the authentication ConfigMap.
    pub configmap_reads: AtomicUsize,
    /// Reads of the issuer's key set (`/openid/v1/jwks`).
    pub jwks_reads: AtomicUsize,
}

/// The issuer of the ServiceAccount tokens the simulated cluster mints.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// An ES256 signing key with its key id.
struct SigningKey {
    kid: String,
    /// PKCS#8 PEM.
    private_pem: String,
    /// The JWK's `x` and `y` (base64url).
    x: String,
    y: String,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        // The uncompressed point: 0x04 || x || y.
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        SigningKey {
            kid: kid.to_owned(),
            private_pem: key.serialize_pem(),
            x: b64(&raw[1..33]),
            y: b64(&raw[33..65]),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid, "x": self.x, "y": self.y})
    }
}

/// What the simulated cluster holds.
struct State {
    users: Vec<SimUser>,
    grants: Vec<Grant>,
    counters: Arc<Counters>,
    configmap: Mutex<Option<BTreeMap<String, String>>>,
    /// Published signing keys; the last one signs.
    keys: Mutex<Vec<SigningKey>>,
}

/// A running simulated cluster.
pub struct HostCluster {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Counts of what it answered.
    pub counters: Arc<Counters>,
    state: Arc<State>,
}

/// A ServiceAccount token to mint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// Seconds from now to `exp` (negative: already expired).
    pub expires_in: i64,
    /// The pod it is bound to.
    pub pod: Option<String>,
}

impl TokenRequest {
    /// A token for `namespace/name` for `audience`, valid for an hour.
    pub fn new(namespace: &str, name: &str, audience: &str) -> TokenRequest {
        TokenRequest {
            namespace: namespace.into(),
            name: name.into(),
            audiences: vec![audience.into()],
            expires_in: 3600,
            pod: None,
        }
    }
}

fn sign(key: &SigningKey, t: &TokenRequest) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut k8s = json!({
        "namespace": t.namespace,
        "serviceaccount": {"name": t.name, "uid": format!("uid-sa-{}", t.name)},
    });
    if let Some(pod) = &t.pod {
        k8s["pod"] = json!({"name": pod, "uid": format!("uid-pod-{pod}")});
    }
    let claims = json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
        "aud": t.audiences,
        "iat": now,
        "nbf": now,
        "exp": now + t.expires_in,
        "jti": format!("jti-{now}"),
        "kubernetes.io": k8s,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.private_pem.as_bytes()).expect("key");
    jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
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
        let state = Arc::new(State {
            users,
            grants,
            counters: counters.clone(),
            configmap: Mutex::new(None),
            keys: Mutex::new(vec![SigningKey::generate("key-1")]),
        });
        let served = state.clone();
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
                    let state = served.clone();
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
        HostCluster {
            url,
            counters,
            state,
        }
    }

    /// Sets (or with `None` deletes) `kube-system/extension-apiserver-authentication`.
    pub fn set_extension_auth(&self, data: Option<BTreeMap<String, String>>) {
        *self
            .state
            .configmap
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = data;
    }

    /// Reads of that ConfigMap so far.
    pub fn configmap_reads(&self) -> usize {
        self.counters.configmap_reads.load(Ordering::SeqCst)
    }

    /// Reads of the issuer's key set so far.
    pub fn jwks_reads(&self) -> usize {
        self.counters.jwks_reads.load(Ordering::SeqCst)
    }

    /// A ServiceAccount token signed with the current key.
    pub fn service_account_token(&self, t: &TokenRequest) -> String {
        let keys = self.state.keys.lock().unwrap_or_else(|p| p.into_inner());
        sign(keys.last().expect("a key"), t)
    }

    /// A token in every way like [`HostCluster::service_account_token`], but signed by a key
    /// the cluster never published (under a key id it does publish, and under a new one).
    pub fn forged_token(&self, t: &TokenRequest, kid: &str) -> String {
        sign(&SigningKey::generate(kid), t)
    }

    /// Publishes a new signing key that signs from now on (the old ones stay published).
    pub fn rotate_signing_key(&self) {
        let mut keys = self.state.keys.lock().unwrap_or_else(|p| p.into_inner());
        let kid = format!("key-{}", keys.len() + 1);
        keys.push(SigningKey::generate(&kid));
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
    let State {
        users,
        grants,
        counters,
        ..
    } = state;
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
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication" => {
            counters.configmap_reads.fetch_add(1, Ordering::SeqCst);
            let data = state
                .configmap
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match data {
                Some(data) => respond(
                    200,
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system", "resourceVersion": "1"}, "data": data}),
                ),
                None => respond(
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "configmaps \"extension-apiserver-authentication\" not found"}),
                ),
            }
        }
        "/.well-known/openid-configuration" => respond(
            200,
            json!({"issuer": ISSUER, "jwks_uri": format!("{ISSUER}/openid/v1/jwks"), "response_types_supported": ["id_token"], "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"]}),
        ),
        "/openid/v1/jwks" => {
            counters.jwks_reads.fetch_add(1, Ordering::SeqCst);
            let keys: Vec<Value> = state
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(SigningKey::jwk)
                .collect();
            respond(200, json!({ "keys": keys }))
        }
        _ => respond(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
        ),
    }
}
