//! The application: shared state ([`App`]), the request as handlers see it ([`Req`]), and the
//! request pipeline. [`App::serve`] is the one place the stack is assembled; read it top to
//! bottom, outermost first:
//!
//! 1. request id (`Audit-Id`) and timing, for the one log line and metrics per request;
//! 2. panic guard: the handler runs in its own task, a panic becomes a 500 `Status`;
//! 3. body limit: 3 MiB, else 413 (before anything reads the body);
//! 4. request info: verb, resource, namespace, name from method, path and query (KFP paths
//!    first);
//! 5. authentication (health probes excepted), 401 otherwise;
//! 6. in-flight limits, separate for mutating and read-only requests, 429 + Retry-After;
//!    watches (long-running), health probes and discovery/OpenAPI documents do not hold a slot;
//! 7. timeout: 60 s for everything but watch, 504;
//! 8. authorization;
//! 9. the router and the handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};
use kfp_storage::Store;
use tokio::sync::{Semaphore, watch};

use crate::auth::{Decision, TokenAuthenticator, UserInfo};
use crate::body::Body;
use crate::docs::{self, Docs};
use crate::error::ApiError;
use crate::kube::params::Query;
use crate::metrics::Metrics;
use crate::request_info::{self, DiscoveryPath, OpenApiPath, Target};

/// kube-apiserver's request body limit.
pub const MAX_BODY_BYTES: usize = 3 << 20;
/// kube-apiserver's limit on a patch body.
pub const MAX_PATCH_BYTES: usize = 3 << 20;

/// Limits of the pipeline.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent read-only requests (kube-apiserver: 400).
    pub read_only: usize,
    /// Concurrent mutating requests (kube-apiserver: 200).
    pub mutating: usize,
    /// Non-watch request timeout (kube-apiserver: 60 s).
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_only: 400,
            mutating: 200,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Shared state of the server.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The registry over the store: write semantics for both views.
    pub registry: crate::registry::Registry,
    /// Discovery and OpenAPI documents.
    pub docs: Docs,
    /// Who is who.
    pub authn: TokenAuthenticator,
    /// Flips to true when the server shuts down (ends watches).
    pub shutdown: watch::Receiver<bool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    read_only: Arc<Semaphore>,
    mutating: Arc<Semaphore>,
    timeout: Duration,
}

/// A request as handlers see it: the body already read.
#[derive(Debug)]
pub struct Req {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The parsed query.
    pub query: Query,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The authenticated user (None only on unauthenticated paths).
    pub user: Option<UserInfo>,
}

impl Req {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl App {
    /// A new application.
    pub fn new(
        store: Arc<dyn Store>,
        authn: TokenAuthenticator,
        shutdown: watch::Receiver<bool>,
        limits: Limits,
    ) -> Arc<App> {
        let metrics = Metrics::new();
        let store: Arc<dyn Store> = Arc::new(crate::store_metrics::InstrumentedStore::new(
            store,
            metrics.clone(),
        ));
        Arc::new(App {
            registry: crate::registry::Registry::new(store.clone()),
            store,
            docs: Docs::build(),
            authn,
            shutdown,
            metrics,
            read_only: Arc::new(Semaphore::new(limits.read_only)),
            mutating: Arc::new(Semaphore::new(limits.mutating)),
            timeout: limits.timeout,
        })
    }

    /// Serves one HTTP request through the whole stack.
    pub async fn serve<B>(self: Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // 1. request id and timing
        let started = Instant::now();
        let audit_id = req
            .headers()
            .get("audit-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (parts, body) = req.into_parts();
        let query = Query::parse(parts.uri.query().unwrap_or_default());
        let target = request_info::parse(&parts.method, parts.uri.path(), &query);
        let (verb, resource, namespace) = match &target {
            Target::Resource(r) => (
                r.verb,
                r.resource.clone(),
                r.namespace.clone().unwrap_or_default(),
            ),
            _ => (method_verb(&parts.method), String::new(), String::new()),
        };
        let ctx = Ctx {
            audit_id: &audit_id,
            verb,
            resource: &resource,
            namespace: &namespace,
            started,
        };
        // 3. body limit
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let err = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::too_large(MAX_BODY_BYTES)
                } else {
                    ApiError::bad_request(format!("reading the request body failed: {e}"))
                };
                return self.finish(err.into_response(), &ctx, None);
            }
        };
        let mut r = Req {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            headers: parts.headers,
            body,
            user: None,
        };
        // 5. authentication
        let public = matches!(target, Target::Health(_));
        if !public {
            match self.authn.authenticate(&r.headers) {
                Some(u) => r.user = Some(u),
                None => {
                    let resp = ApiError::unauthorized().into_response();
                    return self.finish(resp, &ctx, None);
                }
            }
        }
        let user = r.user.as_ref().map(|u| u.name.clone());
        // 6. in-flight limits (watch is long-running and exempt)
        // Probes and static documents are exempt too: a kubelet probe or the aggregator's
        // availability check answered 429 would restart the pod or mark the API unavailable
        // (kube-apiserver's APF puts them in the exempt priority level).
        let exempt = matches!(
            target,
            Target::Health(_) | Target::Discovery(_) | Target::OpenApi(_)
        );
        let _permit = if verb == "watch" || exempt {
            None
        } else {
            let sem = if matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ) {
                &self.mutating
            } else {
                &self.read_only
            };
            match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let resp = ApiError::too_many_requests().into_response();
                    return self.finish(resp, &ctx, user.as_deref());
                }
            }
        };
        // 8. authorization
        if let Decision::Deny(why) = self.authorize(&r, &target) {
            let resp = ApiError::forbidden(why).into_response();
            return self.finish(resp, &ctx, user.as_deref());
        }
        // 2 + 7 + 9: the handler in its own task (panic guard), under the timeout unless watch.
        let app = self.clone();
        let is_watch = verb == "watch";
        let task = tokio::spawn(async move { app.route(target, r).await });
        let result = if is_watch {
            task.await
        } else {
            match tokio::time::timeout(self.timeout, task).await {
                Ok(r) => r,
                Err(_) => {
                    let mut e = ApiError::internal(
                        "the request did not complete within the allowed duration",
                    );
                    e.code = 504;
                    e.reason = "Timeout";
                    return self.finish(e.into_response(), &ctx, user.as_deref());
                }
            }
        };
        let resp = match result {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => e.into_response(),
            Err(join) => {
                tracing::error!(audit_id = %audit_id, error = %join, "handler panicked");
                ApiError::internal("an internal error occurred while handling the request")
                    .into_response()
            }
        };
        self.finish(resp, &ctx, user.as_deref())
    }

    fn finish(
        &self,
        mut resp: Response<Body>,
        ctx: &Ctx<'_>,
        user: Option<&str>,
    ) -> Response<Body> {
        let Ctx {
            audit_id,
            verb,
            resource,
            namespace,
            started,
        } = *ctx;
        if let Ok(v) = HeaderValue::from_str(audit_id) {
            resp.headers_mut().insert("audit-id", v);
        }
        let code = resp.status().as_u16();
        let secs = started.elapsed().as_secs_f64();
        self.metrics.observe(verb, resource, code, secs);
        tracing::info!(
            audit_id,
            verb,
            resource,
            namespace,
            user = user.unwrap_or(""),
            code,
            latency_ms = secs * 1000.0,
            "request"
        );
        resp
    }

    fn authorize(&self, req: &Req, target: &Target) -> Decision {
        match (&req.user, target) {
            (_, Target::Health(_)) => Decision::Allow,
            (Some(_), _) => Decision::Allow,
            (None, _) => Decision::Deny("anonymous requests are not allowed".into()),
        }
    }

    async fn route(self: Arc<Self>, target: Target, req: Req) -> Result<Response<Body>, ApiError> {
        let get_only = |m: &Method| matches!(*m, Method::GET | Method::HEAD);
        match target {
            Target::Resource(rr) => crate::kube::handlers::handle(&self, &rr, req).await,
            Target::Discovery(d) if get_only(&req.method) => Ok(self.discovery(d, &req)),
            Target::OpenApi(o) if get_only(&req.method) => Ok(self.openapi(o, &req)),
            Target::Health(name) => Ok(self.health(&name).await),
            Target::Version if get_only(&req.method) => Ok(text(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"major": "0", "minor": "1", "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")), "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH)}).to_string(),
            )),
            Target::Metrics if get_only(&req.method) => Ok(text(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.render())),
            Target::Kfp(_) => Ok(text(
                StatusCode::NOT_IMPLEMENTED,
                "application/json",
                serde_json::json!({"code": 12, "message": "the KFP v2beta1 REST API is not served yet by this server", "details": []}).to_string(),
            )),
            Target::Discovery(_) | Target::OpenApi(_) | Target::Version | Target::Metrics => {
                Err(ApiError::method_not_allowed(req.method.as_str(), &req.path))
            }
            Target::NotFound => Err(ApiError::path_not_found()),
        }
    }

    fn discovery(&self, d: DiscoveryPath, req: &Req) -> Response<Body> {
        let inm = req.header(header::IF_NONE_MATCH.as_str());
        match d {
            DiscoveryPath::Api => docs::serve(&self.docs.api, inm, "application/json", false),
            DiscoveryPath::Apis
                if docs::wants_discovery_v2(req.header(header::ACCEPT.as_str())) =>
            {
                docs::serve(&self.docs.apis_v2, inm, docs::DISCOVERY_V2, false)
            }
            DiscoveryPath::Apis => docs::serve(&self.docs.apis, inm, "application/json", false),
            DiscoveryPath::Group => docs::serve(&self.docs.group, inm, "application/json", false),
            DiscoveryPath::GroupVersion => {
                docs::serve(&self.docs.group_version, inm, "application/json", false)
            }
        }
    }

    fn openapi(&self, o: OpenApiPath, req: &Req) -> Response<Body> {
        let inm = req.header(header::IF_NONE_MATCH.as_str());
        match o {
            OpenApiPath::V2 => docs::serve(&self.docs.openapi_v2, inm, "application/json", false),
            OpenApiPath::V3Root => {
                docs::serve(&self.docs.openapi_v3_root, inm, "application/json", false)
            }
            OpenApiPath::V3Group => match req.query.get("hash") {
                Some(h) if h != self.docs.openapi_v3_group.hash => {
                    docs::redirect_to_hash(&self.docs.openapi_v3_group)
                }
                Some(_) => docs::serve(&self.docs.openapi_v3_group, inm, "application/json", true),
                None => docs::serve(&self.docs.openapi_v3_group, inm, "application/json", false),
            },
        }
    }

    async fn health(&self, name: &str) -> Response<Body> {
        if name != "readyz" {
            return text(StatusCode::OK, "text/plain; charset=utf-8", "ok".into());
        }
        if *self.shutdown.borrow() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "[-]shutdown failed: reason withheld\nreadyz check failed".into(),
            );
        }
        match tokio::time::timeout(Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => text(StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
            Ok(Err(e)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("[-]store failed: {e}\nreadyz check failed"),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "[-]store failed: timed out\nreadyz check failed".into(),
            ),
        }
    }
}

/// What the one log line and the metrics of a request need.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    audit_id: &'a str,
    verb: &'a str,
    resource: &'a str,
    namespace: &'a str,
    started: Instant,
}

/// The application as a `tower::Service`, so the whole stack can be driven in-process (for
/// example by `kube::Client::new(AppService(app), "default")`) without a socket.
#[derive(Clone)]
pub struct AppService(pub Arc<App>);

impl<B> tower::Service<Request<B>> for AppService
where
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { Ok(app.serve(req).await) })
    }
}

fn method_verb(m: &Method) -> &'static str {
    match *m {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
