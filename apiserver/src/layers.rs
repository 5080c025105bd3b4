//! The request layers, one concern each, as `tower` layers built from small async functions
//! ([`Middleware`]). [`crate::stack`] composes them, in order, in one place; nothing here knows
//! its neighbours except through request and response extensions:
//!
//! - request extensions carry what outer layers learned: the [`Target`] and [`Query`]
//!   (request info), the [`UserInfo`] (authentication), [`crate::auth::PeerCertificates`] (TLS);
//! - response extensions carry what the log line needs back out: [`Tags`] (verb, resource,
//!   namespace) and [`User`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::app::{App, MAX_BODY_BYTES, Req};
use crate::auth::{Attributes, Authenticator, Authorizer, Decision, UserInfo};
use crate::body::Body;
use crate::error::ApiError;
use crate::kube::params::Query;
use crate::request_info::{self, Target};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body every layer sees (not read until the router asks for it).
pub struct ReqBody(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>);

impl ReqBody {
    /// Boxes any body.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ReqBody(body.map_err(Into::into).boxed_unsync())
    }
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}
/// A request through the stack.
pub type HttpRequest = Request<ReqBody>;
/// A response through the stack.
pub type HttpResponse = Response<Body>;
/// A response still being computed.
pub type Pending = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;

/// The rest of the stack, as a layer sees it: one `Arc` to clone, called by value. A layer
/// costs a request one boxed future and no other allocation.
#[derive(Clone)]
pub struct Next(Arc<dyn Fn(HttpRequest) -> Pending + Send + Sync>);

impl Next {
    /// The stack below, as a function.
    pub fn new(f: impl Fn(HttpRequest) -> Pending + Send + Sync + 'static) -> Self {
        Next(Arc::new(f))
    }

    /// Runs the rest of the stack on `req`.
    pub fn run(&self, req: HttpRequest) -> Pending {
        (self.0)(req)
    }
}

/// [`Next`] as a `tower::Service` (always ready, never failing).
impl Service<HttpRequest> for Next {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Infallibly;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpRequest) -> Infallibly {
        Infallibly(self.run(req))
    }
}

/// A response future as a service's `Result` with no error.
pub struct Infallibly(Pending);

impl Future for Infallibly {
    type Output = Result<HttpResponse, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

/// What a [`Middleware`] is made of.
pub trait Handler: Fn(HttpRequest, Next) -> Pending + Clone + Send + Sync + 'static {}

impl<F> Handler for F where F: Fn(HttpRequest, Next) -> Pending + Clone + Send + Sync + 'static {}

// === impl Middleware ===

/// A layer made of an async function `(request, next) -> response`.
#[derive(Clone)]
pub struct Middleware<F> {
    f: F,
}

/// Wraps `f` as a layer.
pub fn middleware<F: Handler>(f: F) -> Middleware<F> {
    Middleware { f }
}

impl<F: Handler> Layer<Next> for Middleware<F> {
    type Service = Next;

    fn layer(&self, inner: Next) -> Next {
        let f = self.f.clone();
        Next::new(move |req| f(req, inner.clone()))
    }
}

// === what layers tell each other ===

/// Verb, resource and namespace of a request, for the log line and metrics.
#[derive(Clone, Debug, Default)]
pub struct Tags {
    /// The Kubernetes verb (or the method for non-resource paths).
    pub verb: &'static str,
    /// The resource.
    pub resource: String,
    /// The namespace.
    pub namespace: String,
}

/// The authenticated user's name, for the log line.
#[derive(Clone, Debug)]
pub struct User(pub String);

/// The request id (`Audit-Id`).
#[derive(Clone, Debug)]
pub struct AuditId(pub String);

fn target(req: &HttpRequest) -> Option<&Target> {
    req.extensions().get::<Target>()
}

fn verb_of(req: &HttpRequest) -> &'static str {
    match target(req) {
        Some(Target::Resource(r)) => r.verb,
        _ => method_verb(req.method()),
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

// === the layers, outermost first ===

/// A request taking longer than this (other than a watch) is logged at info.
const SLOW_REQUEST_SECS: f64 = 1.0;

/// Request id, timing, and the one log line and metrics sample of every request.
pub fn request_log(app: Arc<App>) -> Middleware<impl Handler> {
    middleware(move |mut req: HttpRequest, next: Next| {
        let app = app.clone();
        let fut: Pending = Box::pin(async move {
            let started = Instant::now();
            let audit_id = req
                .headers()
                .get("audit-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            req.extensions_mut().insert(AuditId(audit_id.clone()));
            let mut resp = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&audit_id) {
                resp.headers_mut().insert("audit-id", v);
            }
            let tags = resp.extensions().get::<Tags>().cloned().unwrap_or_default();
            let user = resp.extensions().get::<User>().map(|u| u.0.clone());
            let code = resp.status().as_u16();
            let secs = started.elapsed().as_secs_f64();
            app.metrics.observe(tags.verb, &tags.resource, code, secs);
            // As kube-apiserver's httplog (its level 3): a line for every request at debug;
            // server errors and slow requests (not watches, which are long by design) also at
            // warn and info, so a default log shows what needs attention without costing a
            // formatted write per request.
            macro_rules! log_request {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        audit_id,
                        verb = tags.verb,
                        resource = tags.resource,
                        namespace = tags.namespace,
                        user = user.as_deref().unwrap_or(""),
                        code,
                        latency_ms = secs * 1000.0,
                        "request"
                    )
                };
            }
            if code >= 500 {
                log_request!(tracing::Level::WARN)
            } else if secs >= SLOW_REQUEST_SECS && tags.verb != "watch" {
                log_request!(tracing::Level::INFO)
            } else {
                log_request!(tracing::Level::DEBUG)
            }
            resp
        });
        fut
    })
}

/// Panic guard: a panic anywhere inside (a handler, or re-raised from the timeout's task)
/// becomes a 500 `Status`, never a dropped connection. It catches the unwind around each poll
/// instead of spawning a task, so a request costs no extra task hop.
pub fn panic_guard() -> Middleware<impl Handler> {
    middleware(|req: HttpRequest, next: Next| {
        let fut: Pending = Box::pin(async move {
            let id = req.extensions().get::<AuditId>().map(|a| a.0.clone());
            match (CatchUnwind {
                inner: next.run(req),
            })
            .await
            {
                Ok(resp) => resp,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(
                        audit_id = id.as_deref().unwrap_or(""),
                        panic = what,
                        "handler panicked"
                    );
                    ApiError::internal("an internal error occurred while handling the request")
                        .into_response()
                }
            }
        });
        fut
    })
}

/// A future whose panics are caught (as `Err(payload)`) instead of unwinding further.
struct CatchUnwind {
    inner: Pending,
}

impl Future for CatchUnwind {
    type Output = Result<HttpResponse, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Request info: what the request is about (KFP prefix first), before anything else reads it.
pub fn request_info() -> Middleware<impl Handler> {
    middleware(|mut req: HttpRequest, next: Next| {
        let fut: Pending = Box::pin(async move {
            let query = Query::parse(req.uri().query().unwrap_or_default());
            let mut t = request_info::parse(req.method(), req.uri().path(), &query);
            // The plain-HTTP KFP listener serves the KFP view and nothing else.
            if req
                .extensions()
                .get::<crate::server::PlainKfpListener>()
                .is_some()
                && !matches!(t, Target::Kfp(_))
            {
                t = Target::NotFound;
            }
            let mut tags = match &t {
                Target::Resource(r) => Tags {
                    verb: r.verb,
                    resource: r.resource.clone(),
                    namespace: r.namespace.clone().unwrap_or_default(),
                },
                // KFP requests are labelled by their operation (`ListPipelines`, ...).
                Target::Kfp(op) => Tags {
                    verb: op.name(),
                    resource: op.resource().to_owned(),
                    namespace: String::new(),
                },
                _ => Tags {
                    verb: method_verb(req.method()),
                    ..Default::default()
                },
            };
            req.extensions_mut().insert(t);
            req.extensions_mut().insert(query);
            let mut resp = next.run(req).await;
            if let Some(ns) = resp.extensions_mut().remove::<crate::kfp::KfpNamespace>() {
                tags.namespace = ns.0;
            }
            resp.extensions_mut().insert(tags);
            resp
        });
        fut
    })
}

/// Whether a request may change state (every method but GET, HEAD and OPTIONS), as
/// kube-apiserver splits its in-flight limits.
fn is_mutating(req: &HttpRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Timeout for everything but watch, covering the body read: 504 `Status` when it fires. A
/// mutating request runs on in its own task after the timeout, so a write (with its cascade)
/// completes rather than stopping half-way, and keeps its in-flight slot until it really ends
/// (as kube-apiserver's timeout filter does). A read has nothing to finish: it is dropped at
/// the timeout, which releases its slot, and costs no task hop on the fast path.
pub fn timeout(limit: Duration) -> Middleware<impl Handler> {
    fn timed_out() -> HttpResponse {
        let mut e = ApiError::internal("the request did not complete within the allowed duration");
        e.code = 504;
        e.reason = "Timeout";
        e.into_response()
    }
    middleware(move |req: HttpRequest, next: Next| {
        let fut: Pending = Box::pin(async move {
            if verb_of(&req) == "watch" {
                return next.run(req).await;
            }
            if !is_mutating(&req) {
                return tokio::time::timeout(limit, next.run(req))
                    .await
                    .unwrap_or_else(|_| timed_out());
            }
            let task = tokio::spawn(next.run(req));
            match tokio::time::timeout(limit, task).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Ok(Err(_)) => ApiError::internal("the request was cancelled").into_response(),
                Err(_) => timed_out(),
            }
        });
        fut
    })
}

/// Authentication: health probes excepted, a request is from a user or it is a 401 — decided
/// from headers and the connection's certificates only, before the body is read.
/// Impersonation is not supported: a request asking for it is refused (403), never served as
/// the caller.
pub fn authentication(authn: Arc<dyn Authenticator>) -> Middleware<impl Handler> {
    middleware(move |mut req: HttpRequest, next: Next| {
        let authn = authn.clone();
        let fut: Pending = Box::pin(async move {
            if target(&req).is_some_and(Target::is_probe) {
                return next.run(req).await;
            }
            let user = match authn.authenticate(req.headers(), req.extensions()).await {
                Ok(Some(u)) => u,
                Ok(None) => return ApiError::unauthorized().into_response(),
                Err(e) => {
                    tracing::info!(error = %e, "authentication failed");
                    return ApiError::unauthorized().into_response();
                }
            };
            if req
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("impersonate-"))
            {
                let mut resp = ApiError::forbidden(format!(
                    "User {:?} cannot impersonate: impersonation is not supported by this server",
                    user.name
                ))
                .into_response();
                resp.extensions_mut().insert(User(user.name));
                return resp;
            }
            let name = user.name.clone();
            req.extensions_mut().insert(user);
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(User(name));
            resp
        });
        fut
    })
}

/// In-flight limits, separate for mutating and read-only requests: 429 + Retry-After. Watches
/// (long-running), probes and discovery/OpenAPI documents hold no slot: a probe or the
/// aggregator's availability check answered 429 would restart the pod or mark the API
/// unavailable (kube-apiserver's APF exempts them too).
pub fn in_flight(read_only: Arc<Semaphore>, mutating: Arc<Semaphore>) -> Middleware<impl Handler> {
    middleware(move |req: HttpRequest, next: Next| {
        let (read_only, mutating) = (read_only.clone(), mutating.clone());
        let fut: Pending = Box::pin(async move {
            let exempt = matches!(
                target(&req),
                Some(Target::Health(_) | Target::Discovery(_) | Target::OpenApi(_))
            );
            let verb = verb_of(&req);
            if exempt || verb == "watch" {
                return next.run(req).await;
            }
            let sem = if is_mutating(&req) {
                mutating
            } else {
                read_only
            };
            let Ok(_permit) = sem.try_acquire_owned() else {
                return ApiError::too_many_requests().into_response();
            };
            next.run(req).await
        });
        fut
    })
}

/// The authorization attributes of a request.
pub fn attributes(req: &HttpRequest, user: UserInfo) -> Attributes {
    let path = req.uri().path().to_owned();
    match target(req) {
        Some(Target::Resource(r)) => Attributes {
            user,
            verb: r.verb.to_owned(),
            resource_request: true,
            api_group: kfp_apiservice::GROUP.to_owned(),
            resource: r.resource.clone(),
            subresource: r.subresource.clone().unwrap_or_default(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            path,
        },
        _ => Attributes {
            user,
            verb: method_verb(req.method()).to_owned(),
            resource_request: false,
            path,
            ..Default::default()
        },
    }
}

/// Authorization: every request but health probes is decided by the [`Authorizer`] on its
/// Kubernetes attributes; 403 `Status` worded as kube-apiserver's.
pub fn authorization(authz: Arc<dyn Authorizer>) -> Middleware<impl Handler> {
    middleware(move |req: HttpRequest, next: Next| {
        let authz = authz.clone();
        let fut: Pending = Box::pin(async move {
            // Probes need no decision; the KFP view authorizes each operation itself, on the
            // attributes only it can know (the namespace in a body, the object an id names).
            if target(&req).is_some_and(|t| t.is_probe() || matches!(t, Target::Kfp(_))) {
                return next.run(req).await;
            }
            let user = req
                .extensions()
                .get::<UserInfo>()
                .cloned()
                .unwrap_or_default();
            let attrs = attributes(&req, user);
            match authz.authorize(&attrs).await {
                Decision::Allow => next.run(req).await,
                Decision::Deny(why) => {
                    ApiError::forbidden(attrs.forbidden_message(&why)).into_response()
                }
            }
        });
        fut
    })
}

/// The innermost service: reads the body (only now, after authorization, under the limit —
/// 413 — and the timeout), then routes.
pub fn router(app: Arc<App>) -> Next {
    Next::new(move |req: HttpRequest| Box::pin(route(app.clone(), req)))
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The connection failed.
    #[error("{0}")]
    Read(String),
}

/// Reads a body under `limit` bytes.
pub async fn read_limited(body: ReqBody, limit: usize) -> Result<Bytes, BodyError> {
    let collected: Result<_, BoxError> = Limited::new(body, limit).collect().await;
    match collected {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// Reads a body under [`MAX_BODY_BYTES`].
async fn read_body(body: ReqBody) -> Result<Bytes, Box<HttpResponse>> {
    match read_limited(body, MAX_BODY_BYTES).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge(_)) => Err(Box::new(
            ApiError::too_large(MAX_BODY_BYTES).into_response(),
        )),
        Err(e) => Err(Box::new(
            ApiError::bad_request(format!("reading the request body failed: {e}")).into_response(),
        )),
    }
}

async fn route(app: Arc<App>, req: HttpRequest) -> HttpResponse {
    let (mut parts, body) = req.into_parts();
    // The KFP view reads its own bodies (multipart uploads up to 32 MiB, authorized first).
    if let Some(Target::Kfp(op)) = parts.extensions.get::<Target>() {
        let op = op.clone();
        return crate::kfp::serve(app, op, parts, body).await;
    }
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::too_large(MAX_BODY_BYTES).into_response();
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let target = parts
        .extensions
        .remove::<Target>()
        .unwrap_or(Target::NotFound);
    let query = parts.extensions.remove::<Query>().unwrap_or_default();
    let user = parts.extensions.remove::<UserInfo>();
    let r = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
        body,
        user,
    };
    match app.route(target, r).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
