//! The request stack, assembled here and nowhere else, outermost layer first. The order is
//! kube-apiserver's `DefaultBuildHandlerChain`; each position says why it is there. Reordering
//! needs review: docs/architecture.md and docs/kubernetes-api.md describe this list line by line.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::app::App;
use crate::layers::{self, Next};

/// Builds the stack over `app`.
pub fn build(app: Arc<App>) -> Next {
    ServiceBuilder::new()
        // 1. Request id (Audit-Id), timing, the one log line and the metrics sample: outermost,
        //    so every answer — a 401, a 429, a timeout, a panic's 500 — is logged and counted.
        .layer(layers::request_log(app.clone()))
        // 2. Panic guard: a panic anywhere inside (caught around each poll, no extra task) is
        //    a 500 `Status`, never a dropped connection.
        .layer(layers::panic_guard())
        // 3. Request info: verb, resource, namespace, name from method, path and query (KFP
        //    paths recognised first) — every later layer decides on it.
        .layer(layers::request_info())
        // 4. Timeout (not for watch), 504: outside authentication and the body read, so a
        //    slow authenticator or a client that stalls its body cannot hold a request forever.
        //    Writes run on in their own task past it (and keep their slot); reads are dropped.
        .layer(layers::timeout(app.limits.timeout))
        // 5. Authentication, before anything reads the body: an unauthenticated client is
        //    answered 401 however large a body it announces.
        .layer(layers::authentication(app.authn.clone()))
        // 6. In-flight limits (mutating / read-only), 429: after authentication so anonymous
        //    traffic cannot take the slots; inside the timeout's task, so a handler that outlives
        //    its timeout keeps its slot until it really ends.
        .layer(layers::in_flight(
            app.read_only.clone(),
            app.mutating.clone(),
        ))
        // 7. Authorization on the Kubernetes attributes (the same for both views).
        .layer(layers::authorization(app.authz.clone()))
        // 8. The router: reads the body only now (3 MiB, 413), then the handlers.
        .service(layers::router(app))
}
