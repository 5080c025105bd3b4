//! The KFP v2beta1 REST view in-process, through the whole stack: the raw HTTP shapes the KFP
//! dashboard and the generated clients send, checked field by field against
//! `shared/kfp/KFP_REST_FACTS.md`; one object in two views; page tokens under concurrent writes
//! (SQLite and PostgreSQL); uploads in one transaction; errors in KFP's shapes; authorization on
//! the Kubernetes attributes; `package_url` downloads.

mod common;

use std::sync::Arc;

use kfp_apiserver::app::{App, Limits};
use kfp_apiserver::auth::{
    AllowAuthenticated, Attributes, Authorizer, Decision, TokenAuthenticator,
};
use kfp_apiserver::kfp::KfpConfig;
use kfp_storage::{Store, WatchItem, WatchRequest};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use common::{Answer, send};

const TOKEN: &str = "kfp-token";

fn corpus(path: &str) -> Vec<u8> {
    let p = format!("{}/../../shared/corpus/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

async fn app_with(
    url: &str,
    kfp: KfpConfig,
    authz: Arc<dyn Authorizer>,
) -> (Arc<App>, Arc<dyn Store>, tokio::sync::watch::Sender<bool>) {
    let backend = kfp_storage::open(kfp_apiserver::store::config(url))
        .await
        .expect("store");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = App::build(
        backend.store.clone(),
        Arc::new(TokenAuthenticator::single(TOKEN, "alice", &["team"])),
        authz,
        rx,
        Limits::default(),
        kfp,
    );
    (app, backend.store, tx)
}

async fn sqlite(
    name: &str,
    kfp: KfpConfig,
) -> (Arc<App>, Arc<dyn Store>, tokio::sync::watch::Sender<bool>) {
    let url = common::store_urls(&format!("kfp-{name}")).await.remove(0).1;
    app_with(&url, kfp, Arc::new(AllowAuthenticated)).await
}

fn multipart(file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "kfpboundary7d3";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A multipart POST of `bytes` as `uploadfile` to one of the upload endpoints.
async fn post_file(
    app: &Arc<App>,
    endpoint: &str,
    query: &str,
    file_name: &str,
    bytes: &[u8],
) -> Answer {
    let (ct, body) = multipart(file_name, bytes);
    send(
        app,
        TOKEN,
        "POST",
        &format!("/apis/v2beta1/pipelines/{endpoint}{query}"),
        &[("content-type", &ct)],
        body,
    )
    .await
}

async fn upload(app: &Arc<App>, query: &str, file_name: &str, bytes: &[u8]) -> Answer {
    post_file(app, "upload", query, file_name, bytes).await
}

async fn upload_version(app: &Arc<App>, query: &str, file_name: &str, bytes: &[u8]) -> Answer {
    post_file(app, "upload_version", query, file_name, bytes).await
}

async fn get(app: &Arc<App>, uri: &str) -> Answer {
    send(
        app,
        TOKEN,
        "GET",
        uri,
        &[("accept", "application/json")],
        "",
    )
    .await
}

fn json_of(a: &Answer) -> Value {
    assert_eq!(a.header("content-type"), "application/json", "{}", a.text());
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.text()))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

fn is_kfp_time(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && !s.contains('.')
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn the_dashboards_requests_and_kfps_json_field_by_field() {
    let (app, _store, _tx) = sqlite("shapes", KfpConfig::default()).await;
    let hello = corpus("hello_world.yaml");

    // The dashboard's upload: empty display_name and description mean "not given".
    let r = upload(
        &app,
        "?name=hello-world&display_name=&description=",
        "hello_world.yaml",
        &hello,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = json_of(&r);
    assert_eq!(
        keys(&p),
        ["created_at", "display_name", "name", "pipeline_id"],
        "empty fields omitted, snake_case: {p}"
    );
    assert_eq!(p["name"], "hello-world");
    assert_eq!(p["display_name"], "hello-world");
    assert!(is_kfp_time(p["created_at"].as_str().unwrap()), "{p}");
    let pid = p["pipeline_id"].as_str().unwrap().to_owned();
    assert_eq!(pid.len(), 36, "a uuid");

    // Then it lists the versions to find the new one.
    let r = get(
        &app,
        &format!("/apis/v2beta1/pipelines/{pid}/versions?page_size=1&sort_by=created_at%20desc"),
    )
    .await;
    let list = json_of(&r);
    assert_eq!(keys(&list), ["pipeline_versions", "total_size"], "{list}");
    assert_eq!(list["total_size"], 1);
    let v = &list["pipeline_versions"][0];
    assert_eq!(v["pipeline_id"], pid.as_str());
    assert_eq!(
        v["name"], "hello-world",
        "the upload's version has the pipeline's name"
    );
    assert_eq!(v["display_name"], "hello-world");
    assert!(
        v["pipeline_spec"]["pipelineInfo"]["name"] == "hello-world",
        "{v}"
    );
    for absent in [
        "package_url",
        "code_source_url",
        "description",
        "tags",
        "error",
    ] {
        assert!(v.get(absent).is_none(), "{absent} omitted: {v}");
    }
    let vid = v["pipeline_version_id"].as_str().unwrap().to_owned();

    // A second version, with description and code source, from the dashboard's upload_version.
    let r = upload_version(
        &app,
        &format!("?name=v2&pipelineid={pid}&display_name=Second&description=the%20second&code_source_url=https%3A%2F%2Fgit%2Fx"),
        "hello_world.yaml",
        &hello,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = json_of(&r);
    assert_eq!(v2["name"], "v2");
    assert_eq!(v2["display_name"], "Second");
    assert_eq!(v2["description"], "the second");
    assert_eq!(v2["code_source_url"], "https://git/x");

    // A multi-document IR: GET wraps pipeline_spec and platform_spec.
    let r = upload(
        &app,
        "?name=kubernetes-platform",
        "kubernetes_platform.yaml",
        &corpus("kubernetes_platform.yaml"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kp = json_of(&r)["pipeline_id"].as_str().unwrap().to_owned();
    let vs = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/{kp}/versions")).await);
    let kvid = vs["pipeline_versions"][0]["pipeline_version_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kv = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines/{kp}/versions/{kvid}"),
        )
        .await,
    );
    assert_eq!(
        keys(&kv["pipeline_spec"]),
        ["pipeline_spec", "platform_spec"],
        "wrapped as KFP does"
    );
    assert!(kv["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"].is_object());

    // Named operations with string_value, double URL-encoded as the dashboard sends them.
    let filter =
        r#"{"predicates":[{"key":"name","operation":"IS_SUBSTRING","string_value":"hello"}]}"#;
    for sort in [
        "created_at%20desc",
        "name",
        "display_name%20asc",
        "name+desc",
    ] {
        let uri = format!(
            "/apis/v2beta1/pipelines?page_size=10&sort_by={sort}&filter={}",
            enc(&enc(filter))
        );
        let list = json_of(&get(&app, &uri).await);
        assert_eq!(list["total_size"], 1, "{sort}: {list}");
        assert_eq!(list["pipelines"][0]["pipeline_id"], pid.as_str());
    }
    // The SDK's form: a numeric operation with stringValue, encoded once.
    let sdk = r#"{"predicates": [{"operation": 1, "key": "display_name", "stringValue": "hello-world"}]}"#;
    let list = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines?filter={}", enc(sdk)),
        )
        .await,
    );
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1);
    // kfp.Client's empty parameters.
    let list = json_of(
        &get(
            &app,
            "/apis/v2beta1/pipelines?page_token=&page_size=10&sort_by=",
        )
        .await,
    );
    assert_eq!(list["total_size"], 2);
    let order: Vec<(String, String)> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["created_at"].as_str().unwrap().to_owned(),
                p["pipeline_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "created_at ascending by default, ties by id");
    // No match: `{}`.
    let none = r#"{"predicates":[{"key":"name","operation":"EQUALS","string_value":"nope"}]}"#;
    let r = get(
        &app,
        &format!("/apis/v2beta1/pipelines?filter={}", enc(none)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r), json!({}), "an empty list is {{}}");
    // created_at ranges run in SQL (upstream's Kubernetes mode refuses them).
    let since = r#"{"predicates":[{"key":"created_at","operation":"GREATER_THAN_EQUALS","timestamp_value":"2020-01-01T00:00:00Z"}]}"#;
    let list = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines?filter={}", enc(since)),
        )
        .await,
    );
    assert_eq!(list["total_size"], 2);
    let before = r#"{"predicates":[{"key":"created_at","operation":"LESS_THAN","timestamp_value":"2020-01-01T00:00:00Z"}]}"#;
    assert_eq!(
        json_of(
            &get(
                &app,
                &format!("/apis/v2beta1/pipelines?filter={}", enc(before))
            )
            .await
        ),
        json!({})
    );

    // Get by id, by name (the generated client percent-encodes), and the version.
    let got = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/{pid}")).await);
    assert_eq!(got, p);
    let by_name = json_of(&get(&app, "/apis/v2beta1/pipelines/names/hello-world?namespace=").await);
    assert_eq!(by_name, p);
    let v1 = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines/{pid}/versions/{vid}"),
        )
        .await,
    );
    assert_eq!(v1["pipeline_version_id"], vid.as_str());
    // KFP ignores the pipeline id segment when looking a version up.
    let other = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/any/versions/{vid}")).await);
    assert_eq!(other["pipeline_version_id"], vid.as_str());

    // Update: display name and tags; `{}` clears tags; name is immutable.
    let r = send(
        &app,
        TOKEN,
        "PATCH",
        &format!("/apis/v2beta1/pipelines/{pid}"),
        &[("content-type", "application/json")],
        r#"{"display_name":"Hello!","tags":{"team":"ml","tier":"gold"},"name":"ignored"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = json_of(&r);
    assert_eq!(
        (u["display_name"].as_str(), u["name"].as_str()),
        (Some("Hello!"), Some("hello-world"))
    );
    assert_eq!(u["tags"], json!({"team": "ml", "tier": "gold"}));
    let tag = r#"{"predicates":[{"key":"tags.team","operation":"EQUALS","string_value":"ml"}]}"#;
    let list = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines?filter={}", enc(tag)),
        )
        .await,
    );
    assert_eq!(list["total_size"], 1, "tag filters run on the index");
    let r = send(
        &app,
        TOKEN,
        "PATCH",
        &format!("/apis/v2beta1/pipelines/{pid}"),
        &[],
        r#"{"tags":{"team":"data"}}"#,
    )
    .await;
    assert_eq!(
        json_of(&r)["tags"],
        json!({"team": "data"}),
        "replaced, not merged"
    );
    assert_eq!(
        json_of(&r)["display_name"],
        "Hello!",
        "an empty display_name changes nothing"
    );
    let r = send(
        &app,
        TOKEN,
        "PATCH",
        &format!("/apis/v2beta1/pipelines/{pid}"),
        &[],
        r#"{"tags":{}}"#,
    )
    .await;
    assert!(json_of(&r).get("tags").is_none(), "cleared: {}", r.text());
    let r = send(
        &app,
        TOKEN,
        "PATCH",
        &format!("/apis/v2beta1/pipelines/{pid}/versions/{vid}"),
        &[],
        r#"{"display_name":"First"}"#,
    )
    .await;
    assert_eq!(json_of(&r)["display_name"], "First");

    // Health, as kfp.Client's constructor and the dashboard read it (no credentials needed).
    let h = send(&app, "wrong-token", "GET", "/apis/v2beta1/healthz", &[], "").await;
    let h = json_of(&h);
    assert_eq!(h["multi_user"], false);
    assert_eq!(h["pipeline_store"], "kubernetes");
    assert!(h["commit_sha"].is_string() && h["tag_name"].is_string());

    // Metrics label KFP requests by their operation.
    let m = get(&app, "/metrics").await.text();
    for want in [
        r#"apiserver_request_total{verb="UploadPipeline",resource="pipelines",code="200"}"#,
        r#"apiserver_request_total{verb="ListPipelineVersions",resource="pipelineversions",code="200"}"#,
        r#"apiserver_request_total{verb="UpdatePipeline",resource="pipelines",code="200"}"#,
    ] {
        assert!(m.contains(want), "{want} in:\n{m}");
    }
}

#[tokio::test]
async fn errors_in_kfps_shapes_and_codes() {
    let (app, _store, _tx) = sqlite("errors", KfpConfig::default()).await;
    let hello = corpus("hello_world.yaml");
    let gateway = |a: &Answer, status: u16, code: i64, needle: &str| {
        assert_eq!(a.status, status, "{}", a.text());
        let v = json_of(a);
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(
            v["details"][0]["@type"], "type.googleapis.com/google.rpc.Status",
            "{v}"
        );
        let user = v["details"][0]["message"].as_str().unwrap();
        assert!(user.contains(needle), "{needle:?} in {user:?}");
        assert!(
            v["message"].as_str().unwrap().contains(user),
            "the chain ends in the user message"
        );
    };
    let r = get(&app, "/apis/v2beta1/pipelines/missing").await;
    gateway(&r, 404, 5, "Pipeline missing not found");
    let r = get(&app, "/apis/v2beta1/pipelines/names/missing").await;
    gateway(&r, 404, 5, "/missing not found");
    let r = get(&app, "/apis/v2beta1/pipelines/x/versions/missing").await;
    gateway(&r, 404, 5, "PipelineVersion missing not found");
    let r = get(&app, "/apis/v2beta1/pipelines/missing/versions").await;
    gateway(&r, 404, 5, "Pipeline missing not found");

    let create = |body: &'static str| {
        let app = app.clone();
        async move {
            send(
                &app,
                TOKEN,
                "POST",
                "/apis/v2beta1/pipelines",
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let r = create(r#"{"display_name":"only-display"}"#).await;
    assert_eq!(
        json_of(&r)["name"],
        "only-display",
        "name falls back to display_name"
    );
    let r = create(r#"{"name":"only-display"}"#).await;
    gateway(&r, 409, 6, "The name only-display already exist");
    let r = create(r#"{}"#).await;
    gateway(&r, 400, 3, "name is required");
    let r = create(r#"{"name":"My Pipeline"}"#).await;
    gateway(&r, 400, 3, "Invalid pipeline name \"My Pipeline\"");
    let r = create(r#"{"name":"x","unknown":1}"#).await;
    gateway(&r, 400, 3, "unknown field");
    let r = create(r#"{"name":["x"]}"#).await;
    gateway(&r, 400, 3, "invalid request body");
    let r = create(r#"{"name":"bad-tags","tags":{"a.b":"x"}}"#).await;
    assert_eq!(
        r.status,
        400,
        "tag keys are validated by the same rules: {}",
        r.text()
    );

    // Upload errors use the upload handler's shape.
    let r = upload(&app, "?name=hello-world", "hello_world.yaml", &hello).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = json_of(&r)["pipeline_id"].as_str().unwrap().to_owned();
    let r = upload(&app, "?name=hello-world", "hello_world.yaml", &hello).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(keys(&v), ["error_details", "error_message"]);
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("already exist"),
        "{v}"
    );
    let r = upload(&app, "?name=wrong", "notes.txt", b"just text").await;
    assert_eq!(r.status, 400);
    assert!(
        json_of(&r)["error_message"]
            .as_str()
            .unwrap()
            .contains("Unexpected pipeline file format")
    );
    let r = upload_version(&app, "?name=v9", "hello_world.yaml", &hello).await;
    assert_eq!(r.status, 400, "no pipelineid: {}", r.text());
    let r = upload_version(&app, "?name=v9&pipelineid=nope", "hello_world.yaml", &hello).await;
    assert_eq!(
        r.status,
        400,
        "an unknown parent is 400 on the upload endpoint: {}",
        r.text()
    );
    let r = send(
        &app,
        TOKEN,
        "POST",
        "/apis/v2beta1/pipelines/upload?name=x",
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 400, "not multipart: {}", r.text());
    let r = upload_version(
        &app,
        &format!("?name=hello-world&pipelineid={pid}"),
        "hello_world.yaml",
        &hello,
    )
    .await;
    assert_eq!(
        r.status,
        409,
        "a version name is unique under its pipeline: {}",
        r.text()
    );

    // Still has versions: 400 without cascade; gone with cascade=True.
    let r = send(
        &app,
        TOKEN,
        "DELETE",
        &format!("/apis/v2beta1/pipelines/{pid}"),
        &[],
        "",
    )
    .await;
    gateway(&r, 400, 3, "as it has existing pipeline versions");
    let r = send(
        &app,
        TOKEN,
        "DELETE",
        &format!("/apis/v2beta1/pipelines/{pid}?cascade=maybe"),
        &[],
        "",
    )
    .await;
    gateway(&r, 400, 3, "cascade");
    let r = send(
        &app,
        TOKEN,
        "DELETE",
        &format!("/apis/v2beta1/pipelines/{pid}?cascade=True"),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, json_of(&r)), (200, json!({})));
    let r = get(&app, &format!("/apis/v2beta1/pipelines/{pid}")).await;
    gateway(&r, 404, 5, "not found");
    let r = get(
        &app,
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/default/pipelineversions",
    )
    .await;
    assert_eq!(json_of(&r)["items"], json!([]), "the versions went with it");

    // Lists: bad parameters.
    for (q, needle) in [
        ("sort_by=bogus", "Invalid sorting field"),
        ("page_size=-1", "greater than 0"),
        ("page_size=abc", "page_size"),
        ("page_token=garbage", "Invalid page token"),
        ("filter=%7B", "failed to parse valid filter"),
    ] {
        let r = get(&app, &format!("/apis/v2beta1/pipelines?{q}")).await;
        gateway(&r, 400, 3, needle);
    }
    // Routing.
    let r = get(&app, "/apis/v2beta1/runs").await;
    assert_eq!((r.status, json_of(&r)["code"].clone()), (404, json!(5)));
    let r = send(&app, TOKEN, "PUT", "/apis/v2beta1/pipelines", &[], "").await;
    assert_eq!(r.status, 501);
    let r = get(&app, "/apis/v1beta1/pipelines").await;
    assert_eq!(r.status, 501);
    let r = send(
        &app,
        "wrong-token",
        "GET",
        "/apis/v2beta1/pipelines",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "the KFP view is authenticated");
}

#[tokio::test]
async fn every_invalid_corpus_file_is_refused_with_its_validation_message_and_leaves_nothing() {
    let (app, _store, _tx) = sqlite("invalid", KfpConfig::default()).await;
    let dir = format!("{}/../../shared/corpus/invalid", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let r = upload(&app, "?name=candidate", &name, &std::fs::read(&f).unwrap()).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let v = json_of(&r);
        let msg = v["error_message"].as_str().unwrap();
        assert!(
            msg.contains("pipeline spec is invalid") || msg.contains("larger than"),
            "{name}: {msg}"
        );
    }
    let r = get(&app, "/apis/pipelines.kubeflow.org/v2beta1/pipelines").await;
    assert_eq!(
        json_of(&r)["items"],
        json!([]),
        "no Pipeline is left behind by a refused upload"
    );
}

#[tokio::test]
async fn one_object_two_views_in_one_transaction() {
    let (app, store, _tx) = sqlite("views", KfpConfig::default()).await;
    let from = store.current_revision().await.unwrap();
    let watch = |resource: &str| {
        let store = store.clone();
        let resource = resource.to_owned();
        async move {
            store
                .watch(&WatchRequest {
                    resource,
                    from,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let mut watches = [watch("pipelines").await, watch("pipelineversions").await];
    let r = upload(
        &app,
        "?name=hello-world&tags=%7B%22team%22%3A%22ml%22%7D",
        "hello_world.yaml",
        &corpus("hello_world.yaml"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = json_of(&r)["pipeline_id"].as_str().unwrap().to_owned();
    let mut revs = Vec::new();
    for watch in &mut watches {
        match tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await {
            Ok(Some(WatchItem::Event {
                revision, object, ..
            })) => {
                let v: Value = serde_json::from_slice(&object).unwrap();
                revs.push((revision.0, v["kind"].as_str().unwrap().to_owned()));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        revs,
        [
            (from.0 + 1, "Pipeline".to_owned()),
            (from.0 + 2, "PipelineVersion".to_owned())
        ],
        "one transaction, consecutive revisions, parent first"
    );
    // What the Kubernetes view shows of the upload.
    let base = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/default";
    let kp = json_of(&get(&app, &format!("{base}/pipelines/hello-world")).await);
    assert_eq!(kp["metadata"]["uid"], pid.as_str());
    assert_eq!(kp["spec"]["tags"], json!({"team": "ml"}));
    let kv = json_of(&get(&app, &format!("{base}/pipelineversions/hello-world")).await);
    assert_eq!(kv["spec"]["versionName"], "hello-world");
    assert_eq!(kv["spec"]["pipelineName"], "hello-world");
    assert_eq!(
        kv["metadata"]["labels"]["pipelines.kubeflow.org/pipeline-id"],
        pid.as_str()
    );
    assert_eq!(kv["metadata"]["ownerReferences"][0]["uid"], pid.as_str());
    assert_eq!(
        kv["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );
    assert_eq!(kv["status"]["conditions"][0]["reason"], "READY");
    // A second version through KFP is named <pipeline>-<version>.
    let r = upload_version(
        &app,
        &format!("?name=v2&pipelineid={pid}"),
        "x.yaml",
        &corpus("hello_world.yaml"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let kv2 = json_of(&get(&app, &format!("{base}/pipelineversions/hello-world-v2")).await);
    assert_eq!(kv2["spec"]["versionName"], "v2");

    // What kubectl would create, kfp lists with the same uids (no versionName: its object name).
    let spec = common::hello_world_spec();
    let r = send(&app, TOKEN, "POST", &format!("{base}/pipelines"), &[("content-type", "application/json")],
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline", "metadata": {"name": "gitops"}}).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gp = json_of(&r)["metadata"]["uid"].as_str().unwrap().to_owned();
    let r = send(&app, TOKEN, "POST", &format!("{base}/pipelineversions"), &[("content-type", "application/json")],
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion", "metadata": {"name": "gitops-v1"},
               "spec": {"pipelineName": "gitops", "pipelineSpec": spec}}).to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let gv = json_of(&r)["metadata"]["uid"].as_str().unwrap().to_owned();
    let got = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/{gp}")).await);
    assert_eq!(
        (got["name"].as_str(), got["display_name"].as_str()),
        (Some("gitops"), Some("gitops"))
    );
    let vs = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/{gp}/versions")).await);
    assert_eq!(
        vs["pipeline_versions"][0]["pipeline_version_id"],
        gv.as_str()
    );
    assert_eq!(vs["pipeline_versions"][0]["name"], "gitops-v1");
    let by_display =
        r#"{"predicates":[{"key":"display_name","operation":"EQUALS","string_value":"gitops"}]}"#;
    let list = json_of(
        &get(
            &app,
            &format!("/apis/v2beta1/pipelines?filter={}", enc(by_display)),
        )
        .await,
    );
    assert_eq!(
        list["total_size"], 1,
        "display_name falls back to the name in SQL too: {list}"
    );

    // A version whose object name is taken fails the upload as a whole: no Pipeline stays.
    let r = send(&app, TOKEN, "POST", &format!("{base}/pipelineversions"), &[("content-type", "application/json")],
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion", "metadata": {"name": "taken"},
               "spec": {"pipelineName": "gitops", "pipelineSpec": common::hello_world_spec()}}).to_string()).await;
    assert_eq!(r.status, 201);
    let rev = store.current_revision().await.unwrap();
    let r = upload(
        &app,
        "?name=taken",
        "hello_world.yaml",
        &corpus("hello_world.yaml"),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = get(&app, &format!("{base}/pipelines/taken")).await;
    assert_eq!(
        r.status, 404,
        "the Pipeline of the failed upload was not kept"
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        rev,
        "nothing was written"
    );
}

/// Pages under concurrent inserts and deletes: every object that exists throughout is listed
/// exactly once, in order, on every backend.
#[tokio::test]
async fn page_tokens_neither_skip_nor_repeat_under_concurrent_writes() {
    for (backend, url) in common::store_urls("kfp-paging").await {
        let (app, _store, _tx) =
            app_with(&url, KfpConfig::default(), Arc::new(AllowAuthenticated)).await;
        let create = |name: String| {
            let app = app.clone();
            async move {
                let r = send(
                    &app,
                    TOKEN,
                    "POST",
                    "/apis/v2beta1/pipelines",
                    &[],
                    json!({"name": name}).to_string(),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text());
                json_of(&r)["pipeline_id"].as_str().unwrap().to_owned()
            }
        };
        let mut originals = Vec::new();
        for i in 0..25 {
            create(format!("p{i:02}")).await;
            originals.push(format!("p{i:02}"));
        }
        for (sort, descending) in [
            ("name", false),
            ("name desc", true),
            ("display_name", false),
        ] {
            let mut seen: Vec<String> = Vec::new();
            let mut token = String::new();
            let mut round = 0;
            loop {
                let uri = format!(
                    "/apis/v2beta1/pipelines?page_size=7&sort_by={}&page_token={}",
                    enc(sort),
                    enc(&token)
                );
                let page = json_of(&get(&app, &uri).await);
                seen.extend(
                    page["pipelines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["name"].as_str().unwrap().to_owned()),
                );
                // Between pages, others write: before and after the cursor, and a delete of
                // something that is never listed again.
                round += 1;
                let tag = sort.replace([' ', '_'], "-");
                create(format!("a{tag}{round}")).await;
                create(format!("z{tag}{round}")).await;
                match page["next_page_token"].as_str() {
                    Some(t) => token = t.to_owned(),
                    None => break,
                }
                assert!(round < 50, "{backend}: paging ends");
            }
            let listed: Vec<&String> = seen.iter().filter(|n| originals.contains(n)).collect();
            let mut want: Vec<&String> = originals.iter().collect();
            if descending {
                want.reverse();
            }
            assert_eq!(
                listed, want,
                "{backend} {sort}: every original once, in order"
            );
            let mut dedup = seen.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(
                dedup.len(),
                seen.len(),
                "{backend} {sort}: nothing repeated"
            );
        }
        // A token is bound to its sort and filter.
        let page = json_of(&get(&app, "/apis/v2beta1/pipelines?page_size=2&sort_by=name").await);
        let t = page["next_page_token"].as_str().unwrap();
        let r = get(
            &app,
            &format!(
                "/apis/v2beta1/pipelines?page_size=2&sort_by=created_at&page_token={}",
                enc(t)
            ),
        )
        .await;
        assert_eq!(r.status, 400, "{backend}: {}", r.text());
        let r = get(
            &app,
            &format!("/apis/v2beta1/pipelines?page_size=2&page_token={}", enc(t)),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{backend}: the token's own sort applies: {}",
            r.text()
        );
    }
}

/// Allows everything but the namespace `secret`.
struct DenySecret;

#[async_trait::async_trait]
impl Authorizer for DenySecret {
    async fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.namespace == "secret" {
            Decision::Deny(format!("no access to {} {}", attrs.verb, attrs.resource))
        } else {
            Decision::Allow
        }
    }
}

/// Records every decision asked for.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String, String, String)>>);

#[async_trait::async_trait]
impl Authorizer for Recorder {
    async fn authorize(&self, a: &Attributes) -> Decision {
        self.0.lock().unwrap().push((
            a.verb.clone(),
            a.resource.clone(),
            a.namespace.clone(),
            a.name.clone(),
        ));
        Decision::Allow
    }
}

#[tokio::test]
async fn multi_user_namespaces_shared_pipelines_and_the_kubernetes_attributes() {
    let url = common::store_urls("kfp-multi").await.remove(0).1;
    let multi = KfpConfig {
        multi_user: true,
        shared_namespace: "kubeflow".into(),
        ..KfpConfig::default()
    };
    let rec = Arc::new(Recorder::default());
    let (app, _store, _tx) = app_with(&url, multi.clone(), rec.clone()).await;
    let hello = corpus("hello_world.yaml");
    let r = upload(
        &app,
        "?name=hello-world&namespace=team-a",
        "hello_world.yaml",
        &hello,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = json_of(&r);
    assert_eq!(p["namespace"], "team-a");
    let pid = p["pipeline_id"].as_str().unwrap().to_owned();
    let r = upload_version(
        &app,
        &format!("?name=v2&pipelineid={pid}"),
        "hello_world.yaml",
        &hello,
    )
    .await;
    assert_eq!(r.status, 200);
    let vid = json_of(&r)["pipeline_version_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let _ = get(
        &app,
        &format!("/apis/v2beta1/pipelines/{pid}/versions/{vid}"),
    )
    .await;
    let _ = get(&app, "/apis/v2beta1/pipelines?namespace=team-a").await;
    let _ = send(
        &app,
        TOKEN,
        "DELETE",
        &format!("/apis/v2beta1/pipelines/{pid}/versions/{vid}"),
        &[],
        "",
    )
    .await;
    let asked = rec.0.lock().unwrap().clone();
    let s = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    assert_eq!(
        asked,
        vec![
            s("create", "pipelines", "team-a", "hello-world"),
            s("create", "pipelineversions", "team-a", "hello-world"),
            s("get", "pipelines", "team-a", "hello-world"),
            s("create", "pipelineversions", "team-a", "hello-world-v2"),
            s("get", "pipelineversions", "team-a", "hello-world-v2"),
            s("list", "pipelines", "team-a", ""),
            s("delete", "pipelineversions", "team-a", "hello-world-v2"),
        ],
        "the attributes the Kubernetes view would check, so one RBAC covers both views"
    );

    // An empty namespace is shared: stored in the shared namespace, shown without one.
    let r = upload(&app, "?name=shared-one", "hello_world.yaml", &hello).await;
    assert_eq!(r.status, 200);
    assert!(json_of(&r).get("namespace").is_none());
    let r = get(
        &app,
        "/apis/pipelines.kubeflow.org/v2beta1/namespaces/kubeflow/pipelines/shared-one",
    )
    .await;
    assert_eq!(r.status, 200, "kept in the shared namespace");
    let list = json_of(&get(&app, "/apis/v2beta1/pipelines").await);
    assert_eq!(
        list["total_size"], 1,
        "no namespace lists the shared pipelines: {list}"
    );

    // Denied namespaces: 403 on the gateway, 400 on uploads; shared pipelines stay readable.
    let (app, _store, _tx) = app_with(&url, multi, Arc::new(DenySecret)).await;
    let r = get(&app, "/apis/v2beta1/pipelines?namespace=secret").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["code"], 7);
    assert!(
        v["details"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("User 'alice' is not authorized with reason:"),
        "{v}"
    );
    let r = upload(&app, "?name=x&namespace=secret", "hello_world.yaml", &hello).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = get(&app, "/apis/v2beta1/pipelines?namespace=").await;
    assert_eq!(json_of(&r)["total_size"], 1);
}

#[tokio::test]
async fn package_urls_are_downloaded_under_the_policy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hello = corpus("hello_world.yaml");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let hello = hello.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if req.starts_with("GET /hello_world.yaml") {
                    ("200 OK", hello)
                } else if req.starts_with("GET /invalid.yaml") {
                    ("200 OK", b"schemaVersion: 9.9.9\n".to_vec())
                } else {
                    ("404 Not Found", Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    let mut cfg = KfpConfig::default();
    cfg.url_policy.allow_http = true;
    cfg.url_policy.allowed_domains = vec!["127.0.0.1".into()];
    cfg.url_policy.allow_private_addresses = true;
    cfg.url_policy.allow_any_port = true;
    let (app, _store, _tx) = sqlite("url", cfg).await;
    let url = format!("http://127.0.0.1:{port}/hello_world.yaml");
    // CreatePipelineAndVersion: the name falls back to the URL's file name — not a valid object
    // name here, so a name is given.
    let body = json!({"pipeline": {"name": "from-url", "description": "d"},
                      "pipeline_version": {"package_url": {"pipeline_url": url}, "tags": {"src": "url"}}});
    let r = send(
        &app,
        TOKEN,
        "POST",
        "/apis/v2beta1/pipelines/create",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = json_of(&r)["pipeline_id"].as_str().unwrap().to_owned();
    let vs = json_of(&get(&app, &format!("/apis/v2beta1/pipelines/{pid}/versions")).await);
    let v = &vs["pipeline_versions"][0];
    assert_eq!(v["package_url"]["pipeline_url"], url.as_str());
    assert_eq!(v["tags"], json!({"src": "url"}));
    assert_eq!(
        v["description"], "d",
        "the version copies the pipeline's description"
    );
    // CreatePipelineVersion, as the dashboard's "import by URL" and the generated client send it.
    let body = json!({"pipeline_id": pid, "name": "v2", "package_url": {"pipelineUrl": url}});
    let r = send(
        &app,
        TOKEN,
        "POST",
        &format!("/apis/v2beta1/pipelines/{pid}/versions"),
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["name"], "v2");
    let body = json!({"name": "v3", "package_url": {"pipeline_url": url}});
    let r = send(
        &app,
        TOKEN,
        "POST",
        &format!("/apis/v2beta1/pipelines/{pid}/versions"),
        &[],
        body.to_string(),
    )
    .await;
    assert!(
        r.text().contains("Parent pipeline id is empty"),
        "{}",
        r.text()
    );
    for (path, needle) in [
        ("missing.yaml", "404"),
        ("invalid.yaml", "pipeline spec is invalid"),
    ] {
        let body = json!({"pipeline_id": pid, "name": "v4", "package_url": {"pipeline_url": format!("http://127.0.0.1:{port}/{path}")}});
        let r = send(
            &app,
            TOKEN,
            "POST",
            &format!("/apis/v2beta1/pipelines/{pid}/versions"),
            &[],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(needle), "{path}: {}", r.text());
    }
    // The default policy refuses loopback.
    let (strict, _s, _t) = sqlite("url-strict", KfpConfig::default()).await;
    let body = json!({"pipeline": {"name": "nope"}, "pipeline_version": {"package_url": {"pipeline_url": url}}});
    let r = send(
        &strict,
        TOKEN,
        "POST",
        "/apis/v2beta1/pipelines/create",
        &[],
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
}
