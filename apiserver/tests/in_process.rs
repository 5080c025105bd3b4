//! The whole stack in-process through `AppService` (no socket): the real kube-rs client on top,
//! and the failure paths that need control over the store or the limits: a database that is
//! down (503 + Retry-After, `/readyz` failing, the process answering), the in-flight limit
//! (429 + Retry-After), the body limit (413), and missing credentials (401).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kfp_apiserver::app::{App, AppService, Limits};
use kfp_apiservice::{Pipeline, PipelineSpec};
use kfp_storage::{SqlStore, Store};
use tower::Service;

const TOKEN: &str = "in-process-token";

mod common;

/// The app, its store, and the shutdown sender (kept alive by the caller).
async fn app(name: &str, limits: Limits) -> (Arc<App>, SqlStore, tokio::sync::watch::Sender<bool>) {
    common::sqlite_app(name, TOKEN, &[], limits).await
}

async fn call(
    app: &Arc<App>,
    method: &str,
    uri: &str,
    body: &str,
    auth: bool,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if auth {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn kube_client_runs_on_the_in_process_stack() {
    let (app, _store, _shutdown) = app("kube", Limits::default()).await;
    let client = kube::Client::new(
        tower::ServiceBuilder::new()
            .map_request(|mut r: Request<kube::client::Body>| {
                r.headers_mut().insert(
                    "authorization",
                    format!("Bearer {TOKEN}").parse().expect("header"),
                );
                r
            })
            .service(AppService::new(app)),
        "team-a",
    );
    let api: kube::Api<Pipeline> = kube::Api::default_namespaced(client);
    let mut p = Pipeline {
        spec: PipelineSpec {
            display_name: Some("In process".into()),
            ..Default::default()
        },
        ..Default::default()
    }
    .with_type_meta();
    p.metadata.name = Some("p".into());
    let created = api.create(&Default::default(), &p).await.expect("create");
    assert_eq!(created.metadata.namespace.as_deref(), Some("team-a"));
    let list = api.list(&Default::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn a_database_that_is_down_gives_503_and_readyz_fails_but_the_server_answers() {
    let (app, store, _shutdown) = app("down", Limits::default()).await;
    let (code, _, _) = call(&app, "GET", "/readyz", "", false).await;
    assert_eq!(code, StatusCode::OK);
    store.close().await;
    let (code, headers, body) = call(
        &app,
        "GET",
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines/x",
        "",
        true,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("1")
    );
    assert!(body.contains("\"reason\":\"ServiceUnavailable\""), "{body}");
    assert!(
        body.contains("storage is unavailable; retry later") && !body.contains("pool"),
        "the database's own error text stays in the log: {body}"
    );
    let (code, _, body) = call(&app, "GET", "/readyz", "", false).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("[-]store failed"), "{body}");
    // Discovery never touches the store: the aggregator's availability probe keeps passing.
    let (code, _, _) = call(
        &app,
        "GET",
        "/apis/pipelines.kubeflow.org/v2beta1",
        "",
        true,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn limits_answer_429_413_and_401_with_status_bodies() {
    let limits = Limits {
        read_only: 0,
        mutating: 0,
        ..Limits::default()
    };
    let (app, _store, _shutdown) = app("limits", limits).await;
    let (code, headers, body) = call(
        &app,
        "GET",
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines",
        "",
        true,
    )
    .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("1")
    );
    // The body limit is checked after the in-flight limit (the body is read last): a server
    // with slots answers 413.
    let (roomy, _store2, _shutdown2) = self::app("limits-roomy", Limits::default()).await;
    let big = "x".repeat(kfp_apiserver::app::MAX_BODY_BYTES + 1);
    let (code, _, body) = call(
        &roomy,
        "POST",
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines",
        &big,
        true,
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("RequestEntityTooLarge"));
    let (code, _, body) = call(&app, "GET", "/apis", "", false).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body.contains("\"kind\":\"Status\""));
    // Health probes need no credentials and, like discovery, are never throttled.
    assert_eq!(
        call(&app, "GET", "/livez", "", false).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/apis/pipelines.kubeflow.org/v2beta1",
            "",
            true
        )
        .await
        .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_is_504_and_metrics_show_requests_and_store_latency() {
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let (slow, _store, _shutdown) = app("timeout", limits).await;
    // A body that never arrives keeps the handler waiting past the timeout.
    let (body, _, _tx) = probe(10);
    assert_eq!(
        send(&slow, body, true, 10).await,
        StatusCode::GATEWAY_TIMEOUT
    );

    let (app, _store2, _shutdown2) = app("metrics", Limits::default()).await;
    let (code, _, _) = call(
        &app,
        "GET",
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines/missing",
        "",
        true,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, text) = call(&app, "GET", "/metrics", "", true).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        text.contains(
            "apiserver_request_total{verb=\"GET\",resource=\"pipelines\",code=\"404\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "kfp_store_operation_duration_seconds_count{operation=\"get\",result=\"not_found\"} 1"
        ),
        "{text}"
    );
}

/// A request body that records whether anything polled it, and yields only what its sender
/// sends (never ends while the sender lives).
struct Probe {
    polled: Arc<std::sync::atomic::AtomicBool>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    announced: u64,
}

impl http_body::Body for Probe {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.polled.store(true, std::sync::atomic::Ordering::SeqCst);
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.announced)
    }
}

fn probe(
    announced: u64,
) -> (
    Probe,
    Arc<std::sync::atomic::AtomicBool>,
    tokio::sync::mpsc::Sender<Bytes>,
) {
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (
        Probe {
            polled: polled.clone(),
            rx,
            announced,
        },
        polled,
        tx,
    )
}

async fn send(app: &Arc<App>, body: Probe, auth: bool, announced: u64) -> StatusCode {
    send_as(app, "POST", body, auth, announced).await
}

async fn send_as(
    app: &Arc<App>,
    method: &str,
    body: Probe,
    auth: bool,
    announced: u64,
) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri("/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines")
        .header("content-type", "application/json")
        .header("content-length", announced.to_string());
    if auth {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let req = req.body(body).expect("request");
    AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible")
        .status()
}

#[tokio::test]
async fn an_unauthenticated_body_is_never_read() {
    let (app, _store, _shutdown) = app("unread", Limits::default()).await;
    let announced = 4 << 20;
    let (body, polled, _tx) = probe(announced);
    assert_eq!(
        send(&app, body, false, announced).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !polled.load(std::sync::atomic::Ordering::SeqCst),
        "the 4 MiB body was not touched before the 401"
    );
    // Authenticated but announcing more than the limit: 413, still without reading it.
    let (body, polled, _tx) = probe(announced);
    assert_eq!(
        send(&app, body, true, announced).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_times_out_and_its_handler_keeps_its_slot_until_it_ends() {
    let limits = Limits {
        mutating: 1,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (app, _store, _shutdown) = app("stall", limits).await;
    let (body, polled, tx) = probe(100);
    let started = std::time::Instant::now();
    assert_eq!(
        send(&app, body, true, 100).await,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at the timeout"
    );
    assert!(
        polled.load(std::sync::atomic::Ordering::SeqCst),
        "it was waiting for the body"
    );
    // The handler still waits for its body and holds the only mutating slot.
    let (other, _, _tx2) = probe(2);
    assert_eq!(
        send(&app, other, true, 2).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Ending the body ends the handler (a 400 nobody sees); the slot is free again.
    drop(tx);
    let mut freed = false;
    for _ in 0..200 {
        let (b, _, tx3) = probe(2);
        tx3.send(Bytes::from_static(b"{}")).await.expect("send");
        drop(tx3);
        if send(&app, b, true, 2).await != StatusCode::TOO_MANY_REQUESTS {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the slot was released when the handler ended");
}

/// A read has nothing to finish: at its timeout it is dropped, and its slot is free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_read_times_out_and_frees_its_slot_at_once() {
    let limits = Limits {
        read_only: 1,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (app, _store, _shutdown) = app("stall-read", limits).await;
    let (body, polled, _tx) = probe(100);
    assert_eq!(
        send_as(&app, "GET", body, true, 100).await,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(polled.load(std::sync::atomic::Ordering::SeqCst));
    let (empty, _, tx) = probe(0);
    drop(tx);
    assert_eq!(
        send_as(&app, "GET", empty, true, 0).await,
        StatusCode::OK,
        "the only read-only slot is free as soon as the 504 is answered"
    );
}

#[tokio::test]
async fn impersonation_is_refused_not_ignored() {
    let (app, _store, _shutdown) = app("impersonate", Limits::default()).await;
    let req = Request::builder()
        .uri("/apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("impersonate-user", "someone-else")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = AppService::new(app).call(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
