//! kube-rs against `serve --dev`: typed `Api<Pipeline>` / `Api<PipelineVersion>` CRUD, the
//! runtime `watcher` with the default (list + watch) and streaming-list strategies, a watcher
//! that survives a server restart on the same data directory without missing an event, and a
//! watcher that falls behind, gets 410 and re-lists.

use std::time::Duration;

use futures::StreamExt;
use kfp_apiservice::{Pipeline, PipelineSpec, PipelineVersion};
use kfp_conformance::{DevServer, corpus};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};

mod common;
use common::client;

fn pipeline(name: &str) -> Pipeline {
    let mut p = Pipeline {
        spec: PipelineSpec {
            display_name: Some(format!("{name} display")),
            ..Default::default()
        },
        ..Default::default()
    }
    .with_type_meta();
    p.metadata.name = Some(name.to_owned());
    p
}

fn version(name: &str, pipeline: &str) -> PipelineVersion {
    let docs = kfp_apiservice::yaml::read_documents(
        &std::fs::read(corpus().join("k8s/hello_world.yaml")).expect("read"),
    )
    .expect("yaml");
    let mut v: PipelineVersion =
        serde_json::from_value(docs[1].value.clone()).expect("corpus version");
    v.metadata = Default::default();
    v.metadata.name = Some(name.to_owned());
    v.spec.pipeline_name = Some(pipeline.to_owned());
    v
}

async fn next_event<S>(stream: &mut S, what: &str) -> Event<PipelineVersion>
where
    S: futures::Stream<Item = Result<Event<PipelineVersion>, watcher::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(e))) => return e,
            Ok(Some(Err(_))) => continue, // the watcher retries by itself (backoff)
            Ok(None) => panic!("watcher ended waiting for {what}"),
            Err(_) => panic!("no event within 30 s waiting for {what}"),
        }
    }
}

fn name_of(v: &PipelineVersion) -> String {
    v.metadata.name.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud() {
    let s = DevServer::start("kube-crud");
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "team-a");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "team-a");
    let p = pipelines
        .create(&PostParams::default(), &pipeline("p1"))
        .await
        .expect("create pipeline");
    assert!(p.metadata.uid.is_some() && p.metadata.resource_version.is_some());
    let v = versions
        .create(&PostParams::default(), &version("p1-v1", "p1"))
        .await
        .expect("create version");
    assert_eq!(
        v.status.as_ref().map(|s| s.conditions[0].reason.as_str()),
        Some("READY")
    );
    assert_eq!(
        v.metadata
            .owner_references
            .as_ref()
            .map(|r| r[0].uid.clone()),
        p.metadata.uid.clone()
    );

    let got = versions.get("p1-v1").await.expect("get");
    assert_eq!(got.spec.pipeline_spec, v.spec.pipeline_spec);
    let list = versions
        .list(&ListParams::default().labels(&format!(
            "pipelines.kubeflow.org/pipeline-id={}",
            p.metadata.uid.clone().unwrap_or_default()
        )))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);

    let mut changed = got.clone();
    changed.spec.display_name = Some("Replaced".into());
    let replaced = versions
        .replace("p1-v1", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_eq!(replaced.spec.display_name.as_deref(), Some("Replaced"));
    // A stale resourceVersion is a conflict.
    let stale = versions
        .replace("p1-v1", &PostParams::default(), &changed)
        .await;
    assert!(matches!(stale, Err(kube::Error::Api(e)) if e.code == 409));
    let patched = versions
        .patch(
            "p1-v1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"tags": {"team": "ml"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched
            .spec
            .tags
            .as_ref()
            .and_then(|t| t.get("team"))
            .map(String::as_str),
        Some("ml")
    );
    let applied = pipelines
        .patch(
            "p2",
            &PatchParams::apply("conformance"),
            &Patch::Apply(pipeline("p2")),
        )
        .await
        .expect("server-side apply creates");
    assert_eq!(applied.spec.display_name.as_deref(), Some("p2 display"));
    pipelines
        .delete("p1", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        matches!(versions.get("p1-v1").await, Err(kube::Error::Api(e)) if e.code == 404),
        "versions go with their Pipeline"
    );
}

async fn watch_strategy(config: watcher::Config, name: &str) {
    let s = DevServer::start(name);
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "ns");
    pipelines
        .create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    for i in 0..3 {
        versions
            .create(&PostParams::default(), &version(&format!("v{i}"), "p"))
            .await
            .expect("version");
    }
    let mut w = watcher::watcher(versions.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match next_event(&mut w, "initial list").await {
            Event::Init => {}
            Event::InitApply(v) => initial.push(name_of(&v)),
            Event::InitDone => break,
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, vec!["v0", "v1", "v2"]);
    versions
        .create(&PostParams::default(), &version("v3", "p"))
        .await
        .expect("v3");
    match next_event(&mut w, "v3").await {
        Event::Apply(v) => assert_eq!(name_of(&v), "v3"),
        other => panic!("{other:?}"),
    }
    versions
        .delete("v0", &DeleteParams::default())
        .await
        .expect("delete v0");
    match next_event(&mut w, "delete v0").await {
        Event::Delete(v) => assert_eq!(name_of(&v), "v0"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_with_list_then_watch() {
    watch_strategy(watcher::Config::default(), "kube-listwatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_with_streaming_list() {
    watch_strategy(
        watcher::Config::default().streaming_lists(),
        "kube-streaming",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_a_restart_without_missing_events() {
    let dir = std::env::temp_dir().join(format!(
        "kfp-conformance-kube-restart-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = format!("127.0.0.1:{}", kfp_conformance::free_port());
    let mut s = DevServer::start_with(dir.clone(), false, &addr, &[]);
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "ns");
    pipelines
        .create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    let mut w = watcher::watcher(versions.clone(), watcher::Config::default()).boxed();
    loop {
        if let Event::InitDone = next_event(&mut w, "init").await {
            break;
        }
    }
    versions
        .create(&PostParams::default(), &version("before", "p"))
        .await
        .expect("before");
    assert!(
        matches!(next_event(&mut w, "before").await, Event::Apply(v) if name_of(&v) == "before")
    );
    assert_eq!(s.stop(), 0);
    drop(s);
    let s = DevServer::start_with(dir.clone(), true, &addr, &[]);
    versions
        .create(&PostParams::default(), &version("after", "p"))
        .await
        .expect("after");
    // The watcher resumes from its last resourceVersion: it sees `after` (a re-list would
    // start with Init events instead; either way nothing may be missed).
    loop {
        match next_event(&mut w, "after restart").await {
            Event::Apply(v) | Event::InitApply(v) if name_of(&v) == "after" => break,
            _ => {}
        }
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_old_history_from_the_database() {
    let s = DevServer::start_with(
        std::env::temp_dir().join(format!(
            "kfp-conformance-kube-replay-{}",
            std::process::id()
        )),
        true,
        &format!("127.0.0.1:{}", kfp_conformance::free_port()),
        &["--watch-ring-capacity", "8"],
    );
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "ns");
    pipelines
        .create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    for i in 0..40 {
        versions
            .create(&PostParams::default(), &version(&format!("v{i}"), "p"))
            .await
            .expect("v");
    }
    // From revision 1: older than the 8-event ring, so replayed from the change feed table.
    let mut raw = versions
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    let mut names = Vec::new();
    while names.len() < 40 {
        let ev = tokio::time::timeout(Duration::from_secs(30), raw.next())
            .await
            .expect("event in 30 s")
            .expect("open");
        match ev.expect("decodes") {
            WatchEvent::Added(v) => names.push(name_of(&v)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        names,
        (0..40).map(|i| format!("v{i}")).collect::<Vec<_>>(),
        "in revision order"
    );
}

/// A watcher whose resourceVersion was compacted while it was disconnected gets a 410 ERROR
/// event when it resumes, and kube-rs re-lists and sees everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_resume_gets_410_and_the_watcher_relists() {
    let dir = std::env::temp_dir().join(format!("kfp-conformance-kube-410-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = format!("127.0.0.1:{}", kfp_conformance::free_port());
    let mut a = DevServer::start_with(dir.clone(), false, &addr, &[]);
    let c = client(&a).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "ns");
    pipelines
        .create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    let first = versions
        .create(&PostParams::default(), &version("v0", "p"))
        .await
        .expect("v0");
    let mut w = watcher::watcher(versions.clone(), watcher::Config::default()).boxed();
    loop {
        if let Event::InitDone = next_event(&mut w, "init").await {
            break;
        }
    }
    assert_eq!(a.stop(), 0);
    drop(a);
    // Meanwhile another server on the same data compacts everything but the last revision.
    let mut b = DevServer::start_with(
        dir.clone(),
        false,
        &format!("127.0.0.1:{}", kfp_conformance::free_port()),
        &[
            "--compaction-keep-revisions",
            "1",
            "--compaction-keep-seconds",
            "0",
            "--compaction-interval-seconds",
            "1",
        ],
    );
    let cb = client(&b).await;
    let vb: Api<PipelineVersion> = Api::namespaced(cb, "ns");
    for i in 1..21 {
        vb.create(&PostParams::default(), &version(&format!("v{i}"), "p"))
            .await
            .expect("v");
    }
    let old = first.metadata.resource_version.clone().unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let exact = ListParams::default()
            .at(&old)
            .matching(kube::api::VersionMatch::Exact);
        match vb.list(&exact).await {
            Err(kube::Error::Api(e)) if e.code == 410 => break,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compaction did not happen in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.stop(), 0);
    drop(b);
    let _a2 = DevServer::start_with(dir.clone(), true, &addr, &[]);
    let mut relisted = false;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match next_event(&mut w, "re-list after 410").await {
            Event::Init => {
                relisted = true;
                seen.clear();
            }
            Event::InitApply(v) | Event::Apply(v) => {
                seen.insert(name_of(&v));
            }
            Event::InitDone if relisted => break,
            _ => {}
        }
    }
    assert_eq!(seen.len(), 21, "{seen:?}");
}

/// How many watch requests on pipelineversions the server has logged.
fn watches_logged(s: &DevServer) -> usize {
    std::fs::read_to_string(s.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            (l.contains("verb=watch") || l.contains("verb=\"watch\""))
                && l.contains("pipelineversions")
        })
        .count()
}

/// A watcher on a label selector that was idle but caught up keeps moving: the server's
/// bookmarks carry the revisions of writes it does not select, so after a compaction past its
/// start it re-watches from its last bookmark and is served — no 410, no re-list. The periodic
/// bookmark interval stays at its default (60 s): the bookmark that matters here is the one 2 s
/// before each 4 s watch ends.
async fn filtered_watcher_across_compaction(config: watcher::Config, name: &str) {
    let dir = std::env::temp_dir().join(format!("kfp-conformance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = DevServer::start_with(
        dir,
        true,
        &format!("127.0.0.1:{}", kfp_conformance::free_port()),
        &[
            "--compaction-keep-revisions",
            "1",
            "--compaction-keep-seconds",
            "0",
            "--compaction-interval-seconds",
            "1",
            // Like kube-apiserver's watch cache, the ring serves a resume it still holds even
            // when the database has compacted it; a ring of 1 sends every resume to the
            // database, where a compacted revision is 410.
            "--watch-ring-capacity",
            "1",
        ],
    );
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let versions: Api<PipelineVersion> = Api::namespaced(c, "ns");
    pipelines
        .create(&PostParams::default(), &pipeline("p"))
        .await
        .expect("pipeline");
    let labelled = |n: &str, sel: &str| {
        let mut v = version(n, "p");
        v.metadata.labels = Some([("sel".to_owned(), sel.to_owned())].into());
        v
    };
    let first = versions
        .create(&PostParams::default(), &labelled("picked", "yes"))
        .await
        .expect("picked");
    // Each watch ends after 4 s (a bookmark 2 s before), so the watcher re-watches often. A
    // task keeps polling it (a watcher only works while polled), forwarding its events.
    let mut inner = watcher::watcher(versions.clone(), config.labels("sel=yes").timeout(4)).boxed();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let pump = tokio::spawn(async move {
        while let Some(e) = inner.next().await {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
    let mut w = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    loop {
        match next_event(&mut w, "initial list").await {
            Event::Init | Event::InitApply(_) => {}
            Event::InitDone => break,
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    for i in 0..10 {
        versions
            .create(
                &PostParams::default(),
                &labelled(&format!("other{i}"), "no"),
            )
            .await
            .expect("unselected write");
    }
    // Wait (bounded) until the watcher's start revision is compacted away...
    let old = first.metadata.resource_version.clone().unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lp = ListParams::default()
            .at(&old)
            .matching(kube::api::VersionMatch::Exact);
        match versions.list(&lp).await {
            Err(kube::Error::Api(e)) if e.code == 410 => break,
            _ if std::time::Instant::now() > deadline => panic!("no compaction within 30 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // ... and until the watcher has opened a new watch after that.
    let after_compaction = watches_logged(&s);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while watches_logged(&s) <= after_compaction {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not re-watch within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    versions
        .create(&PostParams::default(), &labelled("after", "yes"))
        .await
        .expect("after");
    match next_event(&mut w, "after").await {
        Event::Apply(v) => assert_eq!(name_of(&v), "after"),
        other => panic!("expected the new object without a re-list (410), got {other:?}"),
    }
    // A 410 would have made the watcher re-list: Init, InitApply, InitDone before `after`.
    pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_list_watch_watcher_resumes_across_compaction_from_its_bookmark() {
    filtered_watcher_across_compaction(watcher::Config::default(), "kube-bm-lw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_streaming_watcher_resumes_across_compaction_from_its_bookmark() {
    filtered_watcher_across_compaction(watcher::Config::default().streaming_lists(), "kube-bm-sl")
        .await;
}

/// What client-go 1.30+ sends to discovery endpoints (`acceptDiscoveryFormats`).
const CLIENT_GO_DISCOVERY_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;q=0.9";

async fn get_bytes(c: &Client, path: &str, accept: &str) -> (String, Vec<u8>) {
    let req = http::Request::get(path)
        .header("accept", accept)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let resp = c.send(req).await.expect("send");
    assert_eq!(resp.status(), 200, "{path}");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (ct, body.to_vec())
}

async fn get_with_accept(c: &Client, path: &str, accept: &str) -> (String, serde_json::Value) {
    let (ct, body) = get_bytes(c, path, accept).await;
    (ct, serde_json::from_slice(&body).expect("json"))
}

/// client-go's `DiscoveryClient.downloadLegacy` asks `/api` with the aggregated Accept and
/// keeps the aggregated `/apis` answer only if `/api` answered in the aggregated type too
/// (`isV2ContentType` on the response's Content-Type) or 404; a legacy `APIVersions` answer
/// makes `GroupsAndMaybeResources` drop the aggregated resources and fetch every group version
/// one by one. This server has no core group: `/api` answers an empty aggregated list, and a
/// plain Accept still gets the legacy document older kubectl reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_answers_client_go_in_the_aggregated_form() {
    let s = DevServer::start("kube-discovery");
    let c = client(&s).await;
    let aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let (ct, api) = get_with_accept(&c, "/api", CLIENT_GO_DISCOVERY_ACCEPT).await;
    assert_eq!(ct, aggregated);
    assert_eq!(api["kind"], "APIGroupDiscoveryList");
    assert_eq!(api["items"], serde_json::json!([]));
    let (ct, apis) = get_with_accept(&c, "/apis", CLIENT_GO_DISCOVERY_ACCEPT).await;
    assert_eq!(ct, aggregated);
    assert_eq!(
        apis["items"][0]["metadata"]["name"],
        "pipelines.kubeflow.org"
    );
    let (ct, legacy) = get_with_accept(&c, "/api", "application/json").await;
    assert!(
        ct.starts_with("application/json") && !ct.contains("apidiscovery"),
        "{ct}"
    );
    assert_eq!(legacy["kind"], "APIVersions");
}

/// client-go's `OpenAPISchema()` (Argo CD's diffing, kubectl's v2 fallback) asks `/openapi/v2`
/// for gnostic's protobuf and `proto.Unmarshal`s it into `openapi_v2.Document`. The protobuf
/// answer decodes as that message and says exactly what the JSON document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v2_is_served_as_gnostic_protobuf() {
    use prost::Message;
    let s = DevServer::start("kube-openapi-pb");
    let c = client(&s).await;
    let (ct, pb) = get_bytes(
        &c,
        "/openapi/v2",
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    )
    .await;
    assert_eq!(
        ct,
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let decoded = kfp_apiservice::openapi_pb::pb::Document::decode(pb.as_slice())
        .expect("a gnostic openapi.v2.Document");
    let (ct, json) = get_with_accept(&c, "/openapi/v2", "application/json").await;
    assert_eq!(ct, "application/json");
    assert_eq!(
        decoded,
        kfp_apiservice::openapi_pb::document(&json).expect("convertible"),
        "the protobuf and the JSON document agree"
    );
    let defs = &decoded
        .definitions
        .as_ref()
        .expect("definitions")
        .additional_properties;
    assert!(
        defs.iter()
            .any(|d| d.name == "org.kubeflow.pipelines.v2beta1.PipelineVersion"),
        "the kinds' schemas are there"
    );
}

async fn send_raw(
    c: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    accept: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", accept)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let resp = c.send(req).await.expect("send");
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// The answers client-go's `apierrors` helpers and controllers branch on, as kube-apiserver
/// gives them: `force` on a non-apply patch and an apply without `fieldManager` are 422
/// `Invalid` (`IsInvalid`); deleting an object that has finalizers is 200 with the object
/// carrying `deletionTimestamp` (not 202); the Table's `Age` column is of type `date`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_wording_as_kube_apiserver() {
    let s = DevServer::start("kube-status-codes");
    let c = client(&s).await;
    let base = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/ns/pipelines";
    let (code, _) = send_raw(
        &c,
        "POST",
        base,
        "application/json",
        "application/json",
        r#"{"apiVersion":"pipelines.kubeflow.org/v2beta1","kind":"Pipeline","metadata":{"name":"p","finalizers":["example.com/keep"]},"spec":{}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let (code, status) = send_raw(
        &c,
        "PATCH",
        &format!("{base}/p?force=true"),
        "application/merge-patch+json",
        "application/json",
        r#"{"spec":{"displayName":"x"}}"#,
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    let (code, status) = send_raw(
        &c,
        "PATCH",
        &format!("{base}/p"),
        "application/apply-patch+yaml",
        "application/json",
        "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\nmetadata:\n  name: p\n",
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("fieldManager: Required value")),
        "{status}"
    );
    let (code, table) = send_raw(
        &c,
        "GET",
        base,
        "application/json",
        "application/json;as=Table;g=meta.k8s.io;v=v1",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let age = table["columnDefinitions"]
        .as_array()
        .and_then(|cols| cols.iter().find(|c| c["name"] == "Age"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(age["type"], "date", "{table}");
    let (code, deleted) = send_raw(
        &c,
        "DELETE",
        &format!("{base}/p"),
        "application/json",
        "application/json",
        "",
    )
    .await;
    assert_eq!(
        code, 200,
        "a delete that waits for finalizers is 200, not 202"
    );
    assert_eq!(deleted["kind"], "Pipeline");
    assert!(
        deleted["metadata"]["deletionTimestamp"].is_string(),
        "{deleted}"
    );
}

/// The lines of a watch stream that ends by its own `timeoutSeconds`.
async fn watch_lines(c: &Client, path: &str, accept: &str) -> Vec<serde_json::Value> {
    let (_, body) = tokio::time::timeout(Duration::from_secs(30), get_bytes(c, path, accept))
        .await
        .expect("the watch ends by its timeoutSeconds");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

fn event_rv(e: &serde_json::Value) -> u64 {
    e["object"]["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("every event carries a resourceVersion")
}

/// Raw watch streams as client-go reads them: a watch with a label selector gets a BOOKMARK at
/// the revision of a later write it does not select (kube-apiserver's cacher sends its
/// progress), and metadata / Table watch-lists end with an initial-events-end BOOKMARK in the
/// negotiated kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_carry_progress_and_the_negotiated_kind() {
    let s = DevServer::start("kube-bookmarks");
    let c = client(&s).await;
    let pipelines: Api<Pipeline> = Api::namespaced(c.clone(), "ns");
    let mut picked = pipeline("picked");
    picked.metadata.labels = Some([("bm".to_owned(), "yes".to_owned())].into());
    let picked = pipelines
        .create(&PostParams::default(), &picked)
        .await
        .expect("picked");
    let mut other = pipeline("other");
    other.metadata.labels = Some([("bm".to_owned(), "no".to_owned())].into());
    let other = pipelines
        .create(&PostParams::default(), &other)
        .await
        .expect("other");
    let rv = |p: &Pipeline| -> u64 {
        p.metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("rv")
    };
    let base = "/apis/pipelines.kubeflow.org/v2beta1/namespaces/ns/pipelines";
    let events = watch_lines(
        &c,
        &format!(
            "{base}?watch=true&labelSelector=bm%3Dyes&allowWatchBookmarks=true&timeoutSeconds=3&resourceVersion={}",
            rv(&picked)
        ),
        "application/json",
    )
    .await;
    let last = events.last().expect("a bookmark before the deadline");
    assert_eq!(last["type"], "BOOKMARK", "{events:?}");
    assert_eq!(
        event_rv(last),
        rv(&other),
        "past the write the selector does not match"
    );
    let watch_list = format!(
        "{base}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3"
    );
    for (accept, kind) in [
        (
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            "PartialObjectMetadata",
        ),
        ("application/json;as=Table;g=meta.k8s.io;v=v1", "Table"),
    ] {
        let events = watch_lines(&c, &watch_list, accept).await;
        let end = events
            .iter()
            .position(|e| {
                let meta = if kind == "Table" {
                    &e["object"]["rows"][0]["object"]["metadata"]
                } else {
                    &e["object"]["metadata"]
                };
                e["type"] == "BOOKMARK"
                    && meta["annotations"]["k8s.io/initial-events-end"] == "true"
            })
            .unwrap_or_else(|| panic!("{accept}: no initial-events-end bookmark: {events:?}"));
        assert_eq!(end, 2, "{accept}: two ADDED, then the end marker");
        assert!(
            events.iter().all(|e| e["object"]["kind"] == kind),
            "{accept}: every event, the bookmarks included, is a {kind}"
        );
    }
}
