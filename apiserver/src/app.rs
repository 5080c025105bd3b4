//! The application: shared state ([`App`]), the request as handlers see it ([`Req`]), the
//! routes for health, version, metrics, discovery and OpenAPI, and [`AppService`], the whole
//! stack (assembled in [`crate::stack`]) as one `tower::Service`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body as HttpBody;
use kfp_storage::Store;
use tokio::sync::{Semaphore, watch};
use tower::Service;

use crate::auth::{AllowAuthenticated, Authenticator, Authorizer, UserInfo};
use crate::body::Body;
use crate::docs::{self, Docs};
use crate::error::ApiError;
use crate::kube::params::Query;
use crate::layers::Next;
use crate::metrics::Metrics;
use crate::request_info::{DiscoveryPath, OpenApiPath, Target};

/// kube-apiserver's request body limit.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// Limits of the pipeline.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent read-only requests (kube-apiserver: 400).
    pub read_only: usize,
    /// Concurrent mutating requests (kube-apiserver: 200).
    pub mutating: usize,
    /// Non-watch request timeout, covering the body read (kube-apiserver: 60 s).
    pub timeout: Duration,
    /// A connection must send a request's headers within this (kube-apiserver: 32 s); it also
    /// closes HTTP/1.1 connections that sit idle waiting for their next request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 and HTTP/2).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_only: 400,
            mutating: 200,
            timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
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
    pub authn: Arc<dyn Authenticator>,
    /// Who may do what.
    pub authz: Arc<dyn Authorizer>,
    /// Limits of the stack and the connections.
    pub limits: Limits,
    /// Flips to true when the server shuts down (ends watches).
    pub shutdown: watch::Receiver<bool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The KFP view's namespaces and download policy.
    pub kfp: crate::kfp::KfpConfig,
    pub(crate) read_only: Arc<Semaphore>,
    pub(crate) mutating: Arc<Semaphore>,
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
    /// A new application that lets every authenticated user do everything.
    pub fn new(
        store: Arc<dyn Store>,
        authn: impl Authenticator + 'static,
        shutdown: watch::Receiver<bool>,
        limits: Limits,
    ) -> Arc<App> {
        Self::with_authorizer(
            store,
            Arc::new(authn),
            Arc::new(AllowAuthenticated),
            shutdown,
            limits,
        )
    }

    /// A new application with its authenticator and authorizer.
    pub fn with_authorizer(
        store: Arc<dyn Store>,
        authn: Arc<dyn Authenticator>,
        authz: Arc<dyn Authorizer>,
        shutdown: watch::Receiver<bool>,
        limits: Limits,
    ) -> Arc<App> {
        Self::build(
            store,
            authn,
            authz,
            shutdown,
            limits,
            crate::kfp::KfpConfig::default(),
        )
    }

    /// A new application with every part given.
    pub fn build(
        store: Arc<dyn Store>,
        authn: Arc<dyn Authenticator>,
        authz: Arc<dyn Authorizer>,
        shutdown: watch::Receiver<bool>,
        limits: Limits,
        kfp: crate::kfp::KfpConfig,
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
            authz,
            shutdown,
            metrics,
            kfp,
            read_only: Arc::new(Semaphore::new(limits.read_only)),
            mutating: Arc::new(Semaphore::new(limits.mutating)),
            limits,
        })
    }

    /// Answers a request that passed the stack.
    pub async fn route(
        self: Arc<Self>,
        target: Target,
        req: Req,
    ) -> Result<Response<Body>, ApiError> {
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
            // Routed to `crate::kfp::serve` before the body is read; never here.
            Target::Kfp(_) => Err(ApiError::path_not_found()),
            Target::Discovery(_) | Target::OpenApi(_) | Target::Version | Target::Metrics => {
                Err(ApiError::method_not_allowed(req.method.as_str(), &req.path))
            }
            Target::NotFound => Err(ApiError::path_not_found()),
        }
    }

    fn discovery(&self, d: DiscoveryPath, req: &Req) -> Response<Body> {
        let inm = req.header(header::IF_NONE_MATCH.as_str());
        match d {
            // client-go's `downloadLegacy` keeps the aggregated `/apis` answer only when `/api`
            // is aggregated too (or 404): this server has no core group, so the aggregated
            // answer is an empty list; plain `Accept` still gets the legacy `APIVersions`.
            DiscoveryPath::Api if docs::wants_discovery_v2(req.header(header::ACCEPT.as_str())) => {
                docs::serve(&self.docs.api_v2, inm, docs::DISCOVERY_V2, false)
            }
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
            OpenApiPath::V2 => {
                let accept = req.header(header::ACCEPT.as_str());
                match (docs::openapi_v2_format(accept), &self.docs.openapi_v2_pb) {
                    (Some(docs::V2Format::Json), _) => {
                        docs::serve(&self.docs.openapi_v2, inm, "application/json", false)
                    }
                    (Some(docs::V2Format::Protobuf), Some(pb)) => {
                        docs::serve(pb, inm, docs::OPENAPI_V2_PB_CONTENT_TYPE, false)
                    }
                    _ => ApiError::not_acceptable(format!(
                        "only the following media types are accepted: application/json, {}",
                        kfp_apiservice::openapi_pb::MEDIA_TYPE
                    ))
                    .into_response(),
                }
            }
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
            Ok(Err(e)) => {
                // As kube-apiserver's `[-]etcd failed: reason withheld`: the cause is logged.
                tracing::warn!(error = %e, "readyz: the store check failed");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "[-]store failed: reason withheld\nreadyz check failed".into(),
                )
            }
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "[-]store failed: timed out\nreadyz check failed".into(),
            ),
        }
    }
}

/// The whole stack as a `tower::Service`, so it can be driven in-process (for example by
/// `kube::Client::new(AppService::new(app), "default")`) as well as by the server.
#[derive(Clone)]
pub struct AppService(Next);

impl AppService {
    /// The stack over `app`.
    pub fn new(app: Arc<App>) -> Self {
        AppService(crate::stack::build(app))
    }
}

impl<B> Service<Request<B>> for AppService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = crate::layers::Infallibly;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.call(req.map(crate::layers::ReqBody::new))
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
