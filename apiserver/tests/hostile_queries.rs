//! Query strings and paths a hostile or careless client sends, through the whole stack: each
//! gets kube-apiserver's answer (or a clear 4xx), never a 500, a panic or a misrouted request.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use kfp_apiserver::app::{App, AppService, Limits};
use serde_json::{Value, json};
use tower::Service;

const TOKEN: &str = "hostile-token";
const BASE: &str = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/h/pipelines";

/// Status, Content-Type and body; a watch is read until its `timeoutSeconds` ends it.
async fn call(app: &Arc<App>, method: &str, uri: &str, body: Value) -> (u16, String, String) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let a = common::send(
        app,
        TOKEN,
        method,
        uri,
        &[("content-type", "application/json")],
        body,
    )
    .await;
    (a.status, a.header("content-type").to_owned(), a.text())
}

async fn seeded(
    name: &str,
) -> (
    Arc<App>,
    kfp_storage::SqlStore,
    tokio::sync::watch::Sender<bool>,
    u64,
) {
    let (app, store, tx) = common::sqlite_app(name, TOKEN, &[], Limits::default()).await;
    let mut rv = 0;
    for n in ["a", "b", "c"] {
        let (code, _, body) = call(
            &app,
            "POST",
            BASE,
            json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
                   "metadata": {"name": n}, "spec": {}}),
        )
        .await;
        assert_eq!(code, 201, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        rv = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("rv");
    }
    (app, store, tx, rv)
}

#[tokio::test]
async fn huge_limits_and_timeouts_are_clamped_not_500_or_a_panic() {
    let (app, _store, _tx, _) = seeded("huge").await;
    let (code, _, body) = call(
        &app,
        "GET",
        &format!("{BASE}?limit=9223372036854775807"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    let (code, _, body) = call(&app, "GET", &format!("{BASE}?limit=banana"), Value::Null).await;
    assert_eq!(code, 400, "{body}");
    // The stream must open (a deadline that overflows used to panic); timeoutSeconds=1 on a
    // second request shows the same handler still ends watches on time.
    let req = Request::builder()
        .uri(format!(
            "{BASE}?watch=true&timeoutSeconds=18446744073709551615"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let (code, _, _) = call(
        &app,
        "GET",
        &format!("{BASE}?watch=true&timeoutSeconds=1"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn get_checks_its_resource_version() {
    let (app, _store, _tx, rv) = seeded("get-rv").await;
    let (code, _, body) = call(
        &app,
        "GET",
        &format!("{BASE}/a?resourceVersion=abc"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("resourceVersion: Invalid value: \\\"abc\\\""),
        "{body}"
    );
    for ok in ["", "0", &rv.to_string(), "1"] {
        let (code, _, body) = call(
            &app,
            "GET",
            &format!("{BASE}/a?resourceVersion={ok}"),
            Value::Null,
        )
        .await;
        assert_eq!(code, 200, "resourceVersion={ok}: {body}");
    }
    let (code, _, body) = call(
        &app,
        "GET",
        &format!("{BASE}/a?resourceVersion={}", rv + 1000),
        Value::Null,
    )
    .await;
    assert_eq!(code, 504, "a revision the store has not reached: {body}");
    assert!(body.contains("Too large resource version"), "{body}");
}

#[tokio::test]
async fn continue_with_a_resource_version_is_refused() {
    let (app, _store, _tx, rv) = seeded("continue-rv").await;
    let (_, _, body) = call(&app, "GET", &format!("{BASE}?limit=1"), Value::Null).await;
    let page: Value = serde_json::from_str(&body).expect("json");
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let (code, _, body) = call(
        &app,
        "GET",
        &format!("{BASE}?limit=1&continue={token}&resourceVersion={rv}"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("specifying resource version is not allowed when using continue"),
        "{body}"
    );
    let (code, _, _) = call(
        &app,
        "GET",
        &format!("{BASE}?limit=1&continue={token}&resourceVersion=0"),
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "resourceVersion=0 is allowed with continue");
}

#[tokio::test]
async fn empty_namespace_segments_and_boolean_spellings_route_as_kube_apiserver_does() {
    let (app, _store, _tx, _) = seeded("routes").await;
    let (code, _, _) = call(
        &app,
        "GET",
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces//pipelines",
        Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    for q in ["watch=TRUE", "watch=yes", "watch"] {
        let (code, _, body) = call(
            &app,
            "GET",
            &format!("{BASE}?{q}&timeoutSeconds=1"),
            Value::Null,
        )
        .await;
        assert_eq!(code, 200);
        assert!(
            body.lines().all(|l| l.starts_with("{\"type\":")) && body.contains("\"ADDED\""),
            "{q} is a watch (apimachinery reads any value but 0/false as true): {body}"
        );
    }
    let (code, _, body) = call(&app, "GET", &format!("{BASE}?watch=False"), Value::Null).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"kind\":\"PipelineList\""), "{body}");
}

/// The body that used to occupy the server for more than a minute (`a: [[[...` as YAML) is
/// refused at once, before the YAML parser's quadratic path, with the list unchanged.
#[tokio::test]
async fn deeply_nested_yaml_is_refused_at_once() {
    let (app, _store, _tx, _) = seeded("yaml-depth").await;
    let (_, _, before) = call(&app, "GET", BASE, Value::Null).await;
    let body = format!(
        "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\nmetadata:\n  name: deep\nspec:\n  displayName: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let a = common::send(
        &app,
        TOKEN,
        "POST",
        BASE,
        &[("content-type", "application/yaml")],
        body,
    )
    .await;
    assert_eq!(a.status, 400);
    let text = a.text();
    assert!(text.contains("nested deeper than 128 levels"), "{text}");
    let (_, _, after) = call(&app, "GET", BASE, Value::Null).await;
    let items = |s: &str| serde_json::from_str::<Value>(s).expect("json")["items"].clone();
    assert_eq!(items(&before), items(&after), "nothing was written");
}

/// Duplicate keys in a body, as kube-apiserver judges them by `fieldValidation`: Strict refuses
/// (400, nothing written), Warn (the default) writes the last value and warns, Ignore writes it
/// silently — in JSON and YAML bodies and in merge patches alike.
#[tokio::test]
async fn duplicate_keys_are_judged_by_field_validation() {
    let (app, _store, _tx, _) = seeded("dups").await;
    let send = |method: &'static str, uri: String, ct: &'static str, body: String| {
        let app = app.clone();
        async move {
            let a = common::send(&app, TOKEN, method, &uri, &[("content-type", ct)], body).await;
            (a.status, a.header("warning").to_owned(), a.text())
        }
    };
    let json = |name: &str| {
        format!(
            r#"{{"apiVersion":"pipelines.kubeflow.org/v2beta1","kind":"Pipeline","metadata":{{"name":"{name}"}},"spec":{{"displayName":"first","displayName":"last"}}}}"#
        )
    };
    let (code, _, body) = send(
        "POST",
        format!("{BASE}?fieldValidation=Strict"),
        "application/json",
        json("strict"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(r#"strict decoding error: duplicate field \"spec.displayName\""#),
        "{body}"
    );
    let (code, _, _) = call(&app, "GET", &format!("{BASE}/strict"), Value::Null).await;
    assert_eq!(code, 404, "nothing was written");
    let (code, warning, body) =
        send("POST", BASE.to_owned(), "application/json", json("warned")).await;
    assert_eq!(code, 201, "{body}");
    assert!(
        warning.contains(r#"duplicate field \"spec.displayName\""#),
        "{warning}"
    );
    assert!(body.contains(r#""displayName":"last""#), "{body}");
    let (code, warning, _) = send(
        "POST",
        format!("{BASE}?fieldValidation=Ignore"),
        "application/json",
        json("ignored"),
    )
    .await;
    assert_eq!((code, warning.as_str()), (201, ""));
    let yaml = "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\nmetadata:\n  name: y\nspec:\n  displayName: a\n  displayName: b\n";
    let (code, _, body) = send(
        "POST",
        format!("{BASE}?fieldValidation=Strict"),
        "application/yaml",
        yaml.to_owned(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, warning, _) =
        send("POST", BASE.to_owned(), "application/yaml", yaml.to_owned()).await;
    assert_eq!(code, 201);
    assert!(
        warning.contains("duplicate field"),
        "YAML bodies warn too: {warning}"
    );
    let (code, _, body) = send(
        "PATCH",
        format!("{BASE}/a?fieldValidation=Strict"),
        "application/merge-patch+json",
        r#"{"spec":{"description":"x","description":"y"}}"#.to_owned(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
}
