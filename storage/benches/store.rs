//! Store benchmark (not a test): prints creates/s, gets/s, list-page latency and watch delivery
//! latency for each backend. Run with `scripts/bench-storage` (starts PostgreSQL and MariaDB) or
//! `cargo bench -p kfp-storage --bench store` with `KFP_TEST_POSTGRES_URL` / `KFP_TEST_MYSQL_URL`
//! set. `KFP_BENCH_OBJECTS` (default 100000) sets the data size; `KFP_BENCH_BACKENDS` (comma
//! list) picks backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kfp_storage::query::{Column, QueryRequest};
use kfp_storage::{
    Key, LabelSelector, ListRequest, Preconditions, SqlStore, Store, StoreConfig, WatchItem,
    WatchRequest,
};
use serde_json::json;
use tokio_stream::StreamExt;

mod common;

use common::{R, ns, object, template};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(name: &str, url: &str, n: usize) {
    let mut config = StoreConfig::new(url);
    config.max_connections = 16;
    let s = SqlStore::open(config).await.unwrap();
    let t = Arc::new(template());
    let size = serde_json::to_vec(&object(&t, 0)).unwrap().len();
    println!("## {name}: {n} PipelineVersions of {size} bytes");

    // Creates: 16 concurrent writers.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, t, next) = (s.clone(), t.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let v = object(&t, i);
                let key = Key::new(R, &ns(), v["metadata"]["name"].as_str().unwrap());
                s.create(&key, v).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "creates: {:.0}/s (16 writers, {n} objects in {secs:.1} s)",
        n as f64 / secs
    );

    // Gets: 16 concurrent readers for 5 s.
    let count = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for r in 0..16 {
        let (s, count) = (s.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = r * 7919;
            while Instant::now() < deadline {
                i = (i + 104_729) % n;
                s.get(&Key::new(R, &ns(), &format!("v{i:07}")))
                    .await
                    .unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "gets: {:.0}/s (16 readers, 5 s)",
        count.load(Ordering::Relaxed) as f64 / 5.0
    );

    // List pages of 500: first page and a deep continue, label selector, key order.
    let mut lat = Vec::new();
    let mut req = ListRequest {
        resource: R.into(),
        namespace: Some(ns()),
        labels: LabelSelector::parse("team=t3").unwrap(),
        limit: Some(500),
        ..Default::default()
    };
    let mut pages = 0;
    for _ in 0..60 {
        let t0 = Instant::now();
        let page = s.list(&req).await.unwrap();
        lat.push(t0.elapsed());
        pages += 1;
        req.continue_token = page.continue_token;
        if req.continue_token.is_none() {
            req.continue_token = None;
        }
    }
    lat.sort();
    println!(
        "list page 500, labelSelector=team=t3: p50 {:.1} ms, p99 {:.1} ms ({pages} pages)",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );

    // KFP-style sorted page of 500: sort by created_at desc, substring filter none, with total.
    let mut lat = Vec::new();
    let mut q = QueryRequest {
        resource: R.into(),
        terms: Vec::new(),
        namespace: Some(ns()),
        predicates: vec![],
        sort: Column::CreatedAt,
        descending: true,
        after: None,
        limit: 500,
    };
    for _ in 0..40 {
        let t0 = Instant::now();
        let page = s.query(&q).await.unwrap();
        lat.push(t0.elapsed());
        q.after = page.next;
    }
    lat.sort();
    println!(
        "sorted page 500 (created_at desc, with total count): p50 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );

    // Watch delivery: 200 label patches paced at 100/s, one watcher; write ack -> event.
    let from = s.current_revision().await.unwrap();
    let mut w = s
        .watch(&WatchRequest {
            resource: R.into(),
            namespace: Some(ns()),
            from,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..200 {
        let key = Key::new(R, &ns(), &format!("v{:07}", i % n));
        let mut v = s.get(&key).await.unwrap().json().unwrap();
        v["metadata"]["labels"]["touched"] = json!(i.to_string());
        let t0 = Instant::now();
        let o = s.update(&key, v, &Preconditions::default()).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchItem::Event { revision, .. } if revision == o.revision => break,
                WatchItem::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lat.sort();
    println!(
        "watch delivery after commit: p50 {:.2} ms, p99 {:.2} ms (200 updates)",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("KFP_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let wanted =
        std::env::var("KFP_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres,mariadb".into());
    let dir = std::env::temp_dir().join(format!("kfp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    sqlx::any::install_default_drivers();
    for backend in wanted.split(',') {
        let url = match backend {
            "sqlite" => Some(format!("sqlite://{}/bench.db", dir.display())),
            "postgres" => std::env::var("KFP_TEST_POSTGRES_URL").ok(),
            "mariadb" => std::env::var("KFP_TEST_MYSQL_URL").ok(),
            _ => None,
        };
        match url {
            Some(url) => run(backend, &url, n).await,
            None => println!("## {backend}: skipped (no URL; use scripts/bench-storage)\n"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
