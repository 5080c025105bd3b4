//! KFP REST list benchmark (not a test): the latency of `GET /apis/v2beta1/pipelines` pages, as
//! the dashboard asks for them (sorted by `created_at desc`, an `IS_SUBSTRING` filter on the
//! name — and on the display name — matching 10% of the rows, pages of 10 and 100, following
//! `next_page_token`), through the whole in-process stack
//! (request info, authentication, the KFP view, the store's SQL, JSON encoding; no TLS or socket),
//! over 10k and 100k pipelines. Prints p50 / p90 / p99 / max per case.
//!
//! Run with `scripts/bench-kfp-list` (starts PostgreSQL) or `cargo bench -p kfp-apiserver --bench
//! kfp_list` with `KFP_TEST_POSTGRES_URL` set. `KFP_BENCH_SIZES` (comma list, default
//! `10000,100000`) and `KFP_BENCH_BACKENDS` (default `sqlite,postgres`) narrow it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kfp_apiserver::app::{App, AppService, Limits};
use kfp_apiserver::auth::TokenAuthenticator;
use kfp_storage::{Key, Store};
use serde_json::{Value, json};
use tower::Service;

const TOKEN: &str = "bench";
const NS: &str = "default";

fn name(i: usize) -> String {
    format!("p{i:07}-team-{}", i % 10)
}

fn pipeline(i: usize) -> Value {
    json!({
        "apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
        "metadata": {"name": name(i), "namespace": NS,
            "uid": format!("00000000-0000-4000-8000-{i:012}"), "generation": 1,
            // One creation second per ten pipelines: ties exercise the uid tie-break.
            "creationTimestamp": format!("2026-01-{:02}T{:02}:{:02}:{:02}Z",
                1 + (i / 10 / 86_400) % 28, (i / 10 / 3600) % 24, (i / 10 / 60) % 60, (i / 10) % 60),
            "managedFields": [{"manager": "kfp-rest-api", "operation": "Update",
                "apiVersion": "pipelines.kubeflow.org/v2beta1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:displayName": {}, "f:description": {}}}}]},
        "spec": {"displayName": format!("Pipeline {i} of team-{}", i % 10),
                 "description": "A pipeline seeded by the KFP list benchmark."}
    })
}

async fn seed(store: &Arc<dyn Store>, n: usize) {
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<(Key, Value)> = (i..(i + 1000).min(n))
            .map(|j| (Key::new("pipelines", NS, &name(j)), pipeline(j)))
            .collect();
        i += batch.len();
        store.create_all(batch).await.expect("seed");
    }
    eprintln!(
        "  seeded {n} pipelines in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn get(app: &Arc<App>, uri: &str) -> (Duration, Value) {
    let req = http::Request::get(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let started = Instant::now();
    let resp = AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let took = started.elapsed();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (took, serde_json::from_slice(&body).expect("json"))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run_case(app: &Arc<App>, n: usize, page_size: usize, key: &str, backend: &str) {
    let enc = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let mut times = Vec::new();
    // 20 walks of 10 pages each, one team's substring per walk (10% of the rows match).
    for walk in 0..20 {
        let filter = format!(
            r#"{{"predicates":[{{"key":"{key}","operation":"IS_SUBSTRING","string_value":"team-{}"}}]}}"#,
            walk % 10
        );
        let mut token = String::new();
        for _ in 0..10 {
            let uri = format!(
                "/apis/v2beta1/pipelines?page_size={page_size}&sort_by=created_at%20desc&filter={}&page_token={}",
                enc(&enc(&filter)),
                enc(&token)
            );
            let (t, page) = get(app, &uri).await;
            times.push(t);
            assert_eq!(
                page["total_size"],
                json!(n / 10),
                "the count is the filter's"
            );
            match page["next_page_token"].as_str() {
                Some(next) => token = next.to_owned(),
                None => break,
            }
        }
    }
    times.sort();
    println!(
        "| {backend} | {n} | {key} | {page_size} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        times.len(),
        pct(&times, 0.50),
        pct(&times, 0.90),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sizes: Vec<usize> = std::env::var("KFP_BENCH_SIZES")
            .unwrap_or_else(|_| "10000,100000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let wanted =
            std::env::var("KFP_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        println!("| backend | pipelines | filter on | page size | pages | p50 ms | p90 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for &n in &sizes {
            let mut urls = Vec::new();
            if wanted.contains("sqlite") {
                let dir =
                    std::env::temp_dir().join(format!("kfp-bench-list-{n}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                urls.push(("sqlite", format!("sqlite://{}/store.db", dir.display())));
            }
            if wanted.contains("postgres") {
                match std::env::var("KFP_TEST_POSTGRES_URL") {
                    Ok(base) if !base.is_empty() => {
                        use sqlx::Connection;
                        sqlx::any::install_default_drivers();
                        let db = format!("kfp_bench_list_{n}_{}", std::process::id());
                        let mut conn = sqlx::AnyConnection::connect(&base).await.expect("postgres");
                        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                            .execute(&mut conn)
                            .await
                            .expect("create database");
                        let (prefix, _) = base.rsplit_once('/').expect("URL ends with /DB");
                        urls.push(("postgres", format!("{prefix}/{db}")));
                    }
                    _ => eprintln!("note: KFP_TEST_POSTGRES_URL not set; PostgreSQL skipped"),
                }
            }
            for (backend, url) in urls {
                let backend_store = kfp_storage::open(kfp_apiserver::store::config(&url))
                    .await
                    .expect("store");
                let store = backend_store.store.clone();
                eprintln!("{backend}, {n} pipelines:");
                seed(&store, n).await;
                if backend == "postgres" {
                    // The steady state autovacuum keeps: statistics (a fresh bulk load has none
                    // yet, and the planner then sorts every match instead of walking an index)
                    // and the visibility map (without it every index-only scan behind
                    // `total_size` visits the heap for each row: twice the time).
                    use sqlx::Connection;
                    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("postgres");
                    sqlx::query("VACUUM (ANALYZE) kfp_objects")
                        .execute(&mut conn)
                        .await
                        .expect("vacuum");
                }
                let (_tx, rx) = tokio::sync::watch::channel(false);
                let app = App::new(
                    store.clone(),
                    TokenAuthenticator::single(TOKEN, "bench", &["system:masters"]),
                    rx,
                    Limits::default(),
                );
                // Warm the caches once, then measure.
                let _ = get(&app, "/apis/v2beta1/pipelines?page_size=10").await;
                for key in ["name", "display_name"] {
                    for page_size in [10, 100] {
                        run_case(&app, n, page_size, key, backend).await;
                    }
                }
                store.close().await;
            }
        }
    });
}
