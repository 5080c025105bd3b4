//! Watch streams as client-go reads them, in-process: bookmarks move past writes the watch does
//! not select (so a filtered informer's resourceVersion advances), and every event of a stream
//! — the initial-events-end bookmark included — is in the negotiated form.

mod common;

use kfp_apiserver::app::Limits;
use serde_json::{Value, json};

const TOKEN: &str = "watch-token";
const BASE: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/w/pipelines";

async fn call(
    app: &std::sync::Arc<kfp_apiserver::app::App>,
    method: &str,
    uri: &str,
    accept: &str,
    body: Value,
) -> (u16, Vec<Value>) {
    let a = common::send(
        app,
        TOKEN,
        method,
        uri,
        &[("content-type", "application/json"), ("accept", accept)],
        body.to_string(),
    )
    .await;
    let docs = a
        .text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    (a.status, docs)
}

async fn create(app: &std::sync::Arc<kfp_apiserver::app::App>, name: &str, labels: Value) -> u64 {
    let (status, docs) = call(
        app,
        "POST",
        BASE,
        "application/json",
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
               "metadata": {"name": name, "labels": labels}, "spec": {}}),
    )
    .await;
    assert_eq!(status, 201, "{docs:?}");
    docs[0]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion")
}

/// Opens a watch (`query` after the collection's path) on the in-process stack and returns its
/// body, to be read frame by frame.
async fn open_watch(
    app: &std::sync::Arc<kfp_apiserver::app::App>,
    query: &str,
) -> kfp_apiserver::body::Body {
    use tower::Service;
    let req = http::Request::builder()
        .uri(format!("{BASE}{query}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = kfp_apiserver::app::AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), 200);
    resp.into_body()
}

fn rv(doc: &Value) -> u64 {
    doc["object"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("every event carries a resourceVersion")
}

#[tokio::test]
async fn a_filtered_watch_bookmarks_past_writes_it_does_not_select() {
    let (app, _store, _shutdown) =
        common::sqlite_app("bm-filter", TOKEN, &[], Limits::default()).await;
    let selected = create(&app, "picked", json!({"bm": "yes"})).await;
    let unrelated = create(&app, "other", json!({"bm": "no"})).await;
    assert!(unrelated > selected);
    // From `selected`: the only later write is one the selector does not match.
    let (status, docs) = call(
        &app,
        "GET",
        &format!(
            "{BASE}?watch=true&labelSelector=bm%3Dyes&allowWatchBookmarks=true\
             &timeoutSeconds=3&resourceVersion={selected}"
        ),
        "application/json",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        docs.iter().all(|d| d["type"] == "BOOKMARK"),
        "nothing selected changed: {docs:?}"
    );
    let last = docs.last().expect("a bookmark 2 s before the deadline");
    assert_eq!(last["object"]["kind"], "Pipeline");
    assert_eq!(
        rv(last),
        unrelated,
        "the bookmark carries the unrelated write's revision, as kube-apiserver's does"
    );
}

#[tokio::test]
async fn metadata_and_table_watch_lists_end_with_a_bookmark_in_the_same_form() {
    let (app, _store, _shutdown) =
        common::sqlite_app("bm-form", TOKEN, &[], Limits::default()).await;
    let created = create(&app, "one", json!({})).await;
    let watch_list = format!(
        "{BASE}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan\
         &allowWatchBookmarks=true&timeoutSeconds=3"
    );
    for (accept, kind, api_version) in [
        (
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            "PartialObjectMetadata",
            "meta.k8s.io/v1",
        ),
        (
            "application/json;as=Table;g=meta.k8s.io;v=v1",
            "Table",
            "meta.k8s.io/v1",
        ),
        (
            "application/json",
            "Pipeline",
            "pipelines.kubeflow.org/v2beta1",
        ),
    ] {
        let (status, docs) = call(&app, "GET", &watch_list, accept, Value::Null).await;
        assert_eq!(status, 200, "{accept}");
        assert_eq!(docs[0]["type"], "ADDED", "{accept}: {docs:?}");
        // A Table carries the bookmark object, transformed, in its one row.
        let meta = |d: &Value| {
            if kind == "Table" {
                d["object"]["rows"][0]["object"]["metadata"].clone()
            } else {
                d["object"]["metadata"].clone()
            }
        };
        let end = docs
            .iter()
            .find(|d| {
                d["type"] == "BOOKMARK"
                    && meta(d)["annotations"]["k8s.io/initial-events-end"] == "true"
            })
            .unwrap_or_else(|| panic!("{accept}: no initial-events-end bookmark in {docs:?}"));
        for d in &docs {
            assert_eq!(d["object"]["kind"], kind, "{accept}: every event: {d}");
            assert_eq!(d["object"]["apiVersion"], api_version, "{accept}: {d}");
        }
        assert_eq!(rv(end), created, "{accept}: at the list's revision");
    }
}

/// kube-apiserver's `timeoutSeconds` runs from the request, not from when the client starts
/// reading: a client that reads a watch only after its deadline gets a stream that has already
/// ended, not one that waits a whole timeout more. Paused time makes the check exact.
#[tokio::test]
async fn the_watch_deadline_runs_from_the_request_not_from_the_first_read() {
    use http_body_util::BodyExt;
    let (app, _store, _shutdown) =
        common::sqlite_app("deadline", TOKEN, &[], Limits::default()).await;
    create(&app, "one", json!({})).await;
    let body = open_watch(
        &app,
        "?watch=true&resourceVersion=0&allowWatchBookmarks=true&timeoutSeconds=5",
    )
    .await;
    // The store has answered; from here on only the clock matters.
    tokio::time::pause();
    let t0 = tokio::time::Instant::now();
    tokio::time::advance(std::time::Duration::from_secs(6)).await;
    let body = tokio::time::timeout(std::time::Duration::from_secs(60), body.collect())
        .await
        .expect("the stream ends")
        .expect("body")
        .to_bytes();
    assert_eq!(
        t0.elapsed(),
        std::time::Duration::from_secs(6),
        "the stream ended at once, not a timeout after the first read"
    );
    assert!(
        body.is_empty(),
        "nothing is sent once the deadline has passed: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A watch that has already delivered events ends when the server shuts down (the stream waits
/// on the shutdown signal once for its whole life, across deliveries).
#[tokio::test]
async fn an_open_watch_ends_at_shutdown_after_deliveries() {
    use http_body_util::BodyExt;
    let (app, _store, shutdown) =
        common::sqlite_app("shutdown", TOKEN, &[], Limits::default()).await;
    let from = create(&app, "zero", json!({})).await;
    let mut body = open_watch(
        &app,
        &format!("?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=600"),
    )
    .await;
    let limit = std::time::Duration::from_secs(30);
    for name in ["one", "two", "three"] {
        let created = create(&app, name, json!({})).await;
        let frame = tokio::time::timeout(limit, body.frame())
            .await
            .expect("the event arrives")
            .expect("the stream is open")
            .expect("infallible");
        let event: Value = serde_json::from_slice(frame.data_ref().expect("data")).expect("JSON");
        assert_eq!(event["type"], "ADDED");
        assert_eq!(rv(&event), created);
    }
    shutdown.send(true).expect("the app holds the receiver");
    let rest = tokio::time::timeout(limit, body.collect())
        .await
        .expect("the stream ends at shutdown, not at its 600 s timeout")
        .expect("infallible")
        .to_bytes();
    assert!(
        rest.is_empty(),
        "nothing after shutdown: {}",
        String::from_utf8_lossy(&rest)
    );
}

/// A large object's event goes out as its head, the object's bytes as the store shares them
/// and its tail (so its watchers share one copy); a small one as one line. Either way the
/// client reads one JSON line per event.
#[tokio::test]
async fn large_objects_are_streamed_around_the_shared_bytes() {
    use http_body_util::BodyExt;
    let (app, _store, _shutdown) =
        common::sqlite_app("shared-lines", TOKEN, &[], Limits::default()).await;
    let from = create(&app, "zero", json!({})).await;
    let mut body = open_watch(
        &app,
        &format!("?watch=true&resourceVersion={from}&timeoutSeconds=600"),
    )
    .await;
    let limit = std::time::Duration::from_secs(30);
    for (name, size) in [("small", 100), ("large", 64 * 1024), ("small-again", 10)] {
        let (status, docs) = call(
            &app,
            "POST",
            BASE,
            "application/json",
            json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
                   "metadata": {"name": name, "annotations": {"pad": "x".repeat(size)}},
                   "spec": {}}),
        )
        .await;
        assert_eq!(status, 201, "{docs:?}");
        let mut frames: Vec<bytes::Bytes> = Vec::new();
        while !frames.last().is_some_and(|f| f.ends_with(b"\n")) {
            let frame = tokio::time::timeout(limit, body.frame())
                .await
                .expect("the event arrives")
                .expect("the stream is open")
                .expect("infallible");
            frames.push(frame.into_data().expect("data"));
        }
        let line: Vec<u8> = frames.concat();
        let event: Value = serde_json::from_slice(&line).expect("one JSON line");
        assert_eq!(event["type"], "ADDED", "{name}");
        assert_eq!(event["object"], docs[0], "{name}: the object as created");
        if size > 16 * 1024 {
            assert_eq!(frames.len(), 3, "{name}: head, object, tail");
            let object: Value = serde_json::from_slice(&frames[1]).expect("the object alone");
            assert_eq!(object, docs[0], "{name}");
        } else {
            assert_eq!(frames.len(), 1, "{name}: one line");
        }
    }
}
