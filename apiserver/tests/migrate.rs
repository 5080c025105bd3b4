//! `kfp-apiserver migrate --from mysql://`: a MariaDB database with KFP 2.17's tables, loaded
//! with rows made from every corpus pipeline (several versions each, tags, a shared pipeline, a
//! name that is not a Kubernetes name, rows in state CREATING, specs that are invalid), migrates
//! into SQLite and PostgreSQL with every id and creation time kept; the KFP REST view finds the
//! objects by their old ids; a second run writes nothing; a run stopped half-way and run again
//! ends with the same result; a dry run writes nothing.
//!
//! Needs `KFP_TEST_MYSQL_URL` (scripts/test starts MariaDB); without it the test says so and
//! passes only when `KFP_TEST_REQUIRE_ALL_BACKENDS` is not 1.

mod common;

use std::sync::Arc;

use kfp_apiserver::app::{App, Limits};
use kfp_apiserver::auth::{AllowAuthenticated, TokenAuthenticator};
use kfp_apiserver::kfp::KfpConfig;
use kfp_apiserver::migrate::{self, Kind, Migrator, Namespaces, Outcome, Report};
use kfp_conformance::kfp_db::{Fixture, kfp_database};
use kfp_storage::{ListRequest, Store};
use serde_json::{Value, json};

/// Streams the KFP database at `source` through `m`.
async fn run(source: &str, ns: &Namespaces, mut m: Migrator) -> Report {
    migrate::kfp_db::migrate(source, ns, &mut m, &mut |_, _| {})
        .await
        .expect("the source and the target answer");
    m.finish()
}

async fn open(url: &str) -> Arc<dyn Store> {
    kfp_storage::open(kfp_apiserver::store::config(url))
        .await
        .expect("target store")
        .store
}

/// Every object of both kinds: (resource, namespace, name, uid, object JSON without
/// resourceVersion and managedFields times).
async fn snapshot(store: &Arc<dyn Store>) -> Vec<(String, String, String, String, Value)> {
    let mut out = Vec::new();
    for res in ["pipelines", "pipelineversions"] {
        let page = store
            .list(&ListRequest {
                resource: res.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        for o in page.items {
            let mut v = o.json().unwrap();
            v["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            v["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            out.push((res.to_owned(), o.key.namespace, o.key.name, o.uid, v));
        }
    }
    out
}

fn rfc3339(seconds: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn check_migrated(store: &Arc<dyn Store>, fx: &Fixture) {
    for (pid, (ns, name, created, display)) in &fx.pipelines {
        let o = store
            .get_by_uid("pipelines", pid)
            .await
            .unwrap_or_else(|e| panic!("{pid}: {e}"));
        assert_eq!((&o.key.namespace, &o.key.name), (ns, name));
        let v = o.json().unwrap();
        assert_eq!(v["metadata"]["creationTimestamp"], json!(rfc3339(*created)));
        assert_eq!(v["spec"]["displayName"], json!(display));
        assert_eq!(v["spec"]["tags"], json!({"team": "ml"}));
        if name.starts_with("my-hello-world-") {
            assert_eq!(
                v["metadata"]["annotations"][migrate::ORIGINAL_NAME_ANNOTATION],
                "My Hello World"
            );
        }
    }
    for (vid, (pid, created, spec)) in &fx.versions {
        let o = store
            .get_by_uid("pipelineversions", vid)
            .await
            .unwrap_or_else(|e| panic!("{vid}: {e}"));
        let v = o.json().unwrap();
        assert_eq!(v["metadata"]["creationTimestamp"], json!(rfc3339(*created)));
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], json!(pid));
        assert_eq!(
            v["metadata"]["labels"]["pipelines.kubeflow.org/pipeline-id"],
            json!(pid)
        );
        assert_eq!(&v["spec"]["pipelineSpec"], spec);
        assert_eq!(v["spec"]["tags"], json!({"stage": "prod"}));
        assert_eq!(v["spec"]["codeSourceURL"], "https://example.com/src");
        assert_eq!(v["status"]["conditions"][0]["reason"], "READY");
        assert_eq!(o.key.namespace, fx.pipelines[pid].0);
    }
    for uid in &fx.skipped {
        for res in ["pipelines", "pipelineversions"] {
            assert!(
                store.get_by_uid(res, uid).await.is_err(),
                "{uid} was migrated"
            );
        }
    }
    // The renamed pipeline's first version, named as the pipeline in KFP, is named as the
    // renamed pipeline here (as the REST API names a pipeline's first version).
    let (ns, renamed) = fx
        .pipelines
        .values()
        .find(|(_, n, _, _)| n.starts_with("my-hello-world-"))
        .map(|(ns, n, _, _)| (ns.clone(), n.clone()))
        .unwrap();
    let first = store
        .get(&kfp_storage::Key::new("pipelineversions", &ns, &renamed))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(first["spec"]["versionName"], json!(renamed));
    assert_eq!(first["spec"]["displayName"], "My Hello World");
    assert_eq!(
        first["metadata"]["annotations"][migrate::ORIGINAL_NAME_ANNOTATION],
        "My Hello World"
    );
    let all = snapshot(store).await;
    assert_eq!(all.len(), fx.pipelines.len() + fx.versions.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfp_database_migrates_with_ids_kept() {
    let base = match std::env::var("KFP_TEST_MYSQL_URL") {
        Ok(b) if !b.is_empty() => b,
        _ if std::env::var("KFP_TEST_REQUIRE_ALL_BACKENDS").as_deref() == Ok("1") => {
            panic!("KFP_TEST_MYSQL_URL is not set but KFP_TEST_REQUIRE_ALL_BACKENDS=1")
        }
        _ => {
            eprintln!("note: KFP_TEST_MYSQL_URL not set; the migration from MariaDB is not tested");
            return;
        }
    };
    let (source, fx) = kfp_database(&base, "m").await;
    let ns = Namespaces::default();

    // A dry run: the report of everything, nothing written anywhere.
    let report = run(&source, &ns, Migrator::dry_run()).await;
    assert_eq!(report.written(), 0);
    let would = |kind| {
        report
            .objects
            .iter()
            .filter(|(c, o)| c.kind == kind && *o == Outcome::Created)
            .count()
    };
    assert_eq!(would(Kind::Pipeline), fx.pipelines.len());
    assert_eq!(would(Kind::Version), fx.versions.len());
    assert_eq!(
        report.skipped.len(),
        fx.skipped.len(),
        "{:#?}",
        report.skipped
    );
    let lines = report.lines().join("\n");
    for needle in [
        "not READY",
        "its pipeline is skipped",
        "pipeline spec is invalid",
        "renamed pipeline \"My Hello World\"",
        "renamed version \"My Hello World\"",
        "dry run: nothing written",
    ] {
        assert!(lines.contains(needle), "{needle:?} not in:\n{lines}");
    }

    let resume_urls = common::store_urls("migrate-resume").await;
    for (backend, url) in common::store_urls("migrate").await {
        // Uninterrupted.
        let store = open(&url).await;
        let report = run(&source, &ns, Migrator::new(store.clone(), None)).await;
        assert_eq!(report.failed(), 0, "{backend}: {:#?}", report.lines());
        assert_eq!(report.written(), fx.pipelines.len() + fx.versions.len());
        check_migrated(&store, &fx).await;

        // The KFP REST view finds them by their old ids.
        // (Multi-user, so pipelines of every namespace are visible; shared ones in kubeflow.)
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let app = App::build(
            store.clone(),
            Arc::new(TokenAuthenticator::single(
                "t",
                "admin",
                &["system:masters"],
            )),
            Arc::new(AllowAuthenticated),
            rx,
            Limits::default(),
            KfpConfig {
                multi_user: true,
                ..Default::default()
            },
        );
        let (pid, (_, name, created, _)) = fx.pipelines.iter().next().unwrap();
        let a = common::send(
            &app,
            "t",
            "GET",
            &format!("/apis/v2beta1/pipelines/{pid}"),
            &[],
            "",
        )
        .await;
        assert_eq!(a.status, 200, "{backend}: {}", a.text());
        let p: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(p["pipeline_id"], json!(pid));
        assert_eq!(p["name"], json!(name));
        assert_eq!(p["created_at"], json!(rfc3339(*created)));
        let (vid, (vpid, _, _)) = fx.versions.iter().next().unwrap();
        let a = common::send(
            &app,
            "t",
            "GET",
            &format!("/apis/v2beta1/pipelines/{vpid}/versions/{vid}"),
            &[],
            "",
        )
        .await;
        assert_eq!(a.status, 200, "{backend}: {}", a.text());
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["pipeline_version_id"], json!(vid));
        assert_eq!(v["pipeline_id"], json!(vpid));

        // A second run writes nothing: no revision is taken.
        let before = store.current_revision().await.unwrap();
        let snap = snapshot(&store).await;
        let again = run(&source, &ns, Migrator::new(store.clone(), None)).await;
        assert_eq!(again.written(), 0, "{backend}");
        assert_eq!(again.failed(), 0, "{backend}");
        assert_eq!(store.current_revision().await.unwrap(), before, "{backend}");
        assert!(
            again
                .lines()
                .iter()
                .any(|l| l.starts_with("unchanged Pipeline"))
        );
        store.close().await;

        // Stopped after 7 writes, then run again: the same objects as the uninterrupted run.
        let url2 = resume_urls
            .iter()
            .find(|(b, _)| *b == backend)
            .unwrap()
            .1
            .clone();
        let store2 = open(&url2).await;
        let partial = run(&source, &ns, Migrator::new(store2.clone(), Some(7))).await;
        assert!(partial.stopped_early, "{backend}");
        assert_eq!(partial.written(), 7, "{backend}");
        assert_eq!(snapshot(&store2).await.len(), 7);
        let rest = run(&source, &ns, Migrator::new(store2.clone(), None)).await;
        assert!(!rest.stopped_early);
        assert_eq!(rest.written(), fx.pipelines.len() + fx.versions.len() - 7);
        check_migrated(&store2, &fx).await;
        assert_eq!(snapshot(&store2).await, snap, "{backend}");
        store2.close().await;
    }
}

/// A namespace map moves objects; a name taken by another object in the target is reported as
/// not migrated, and its versions with it, without stopping the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_namespace_map() {
    let Ok(base) = std::env::var("KFP_TEST_MYSQL_URL") else {
        assert_ne!(
            std::env::var("KFP_TEST_REQUIRE_ALL_BACKENDS").as_deref(),
            Ok("1"),
            "KFP_TEST_MYSQL_URL is not set but KFP_TEST_REQUIRE_ALL_BACKENDS=1"
        );
        return;
    };
    let (source, fx) = kfp_database(&base, "c").await;
    let mut ns = Namespaces::default();
    ns.map.insert("team-a".into(), "moved".into());
    let (_, url) = common::store_urls("migrate-conflict").await.remove(0);
    let store = open(&url).await;
    // Someone else's Pipeline where a team-a pipeline would go.
    let (taken_uid, (_, taken_name, _, _)) = fx
        .pipelines
        .iter()
        .find(|(_, (n, _, _, _))| n == "team-a")
        .unwrap();
    store
        .create(
            &kfp_storage::Key::new("pipelines", "moved", taken_name),
            json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
                   "metadata": {"name": taken_name, "namespace": "moved", "uid": "other-uid"}}),
        )
        .await
        .unwrap();
    let report = run(&source, &ns, Migrator::new(store.clone(), None)).await;
    let versions_of_taken = fx
        .versions
        .values()
        .filter(|(p, _, _)| p == taken_uid)
        .count();
    assert_eq!(
        report.failed(),
        1 + versions_of_taken,
        "{:#?}",
        report.lines()
    );
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("already exists with another uid (other-uid)"),
        "{lines}"
    );
    assert!(lines.contains("its pipeline is not migrated"), "{lines}");
    assert!(store.get_by_uid("pipelines", taken_uid).await.is_err());
    for (pid, (n, name, _, _)) in &fx.pipelines {
        if pid == taken_uid {
            continue;
        }
        let o = store.get_by_uid("pipelines", pid).await.unwrap();
        let expected = if n == "team-a" { "moved" } else { n.as_str() };
        assert_eq!((o.key.namespace.as_str(), &o.key.name), (expected, name));
    }
    store.close().await;
}
