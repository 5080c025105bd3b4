//! What the kube:// store's cache costs (not a test): live heap bytes per object, counted by
//! jemalloc (the server's allocator), for N PipelineVersions of the hello-world IR held by the test host
//! (`kfp_storage::testing::host` over SQLite in this process). A writer store seeds the host and
//! is closed; then a second store opens (it lists the host into its cache) and the live heap
//! before and after is compared, with the host idle in between. Prints one line per N.
//!
//! `cargo bench -p kfp-storage --bench crd_cache` (`KFP_BENCH_CACHE_OBJECTS`, comma list,
//! default `10000,50000`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kfp_storage::testing::SuiteIndexer;
use kfp_storage::testing::host::Host;
use kfp_storage::{Key, SqlStore, Store, StoreConfig};

mod common;

use common::{R, ns, object, template};

/// The server's allocator; its `stats.allocated` is the live heap.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated and not yet freed, by everything in this process.
fn live() -> i64 {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as i64
}

fn kinds() -> std::collections::BTreeMap<String, String> {
    [(R.to_owned(), "PipelineVersionRecord".to_owned())].into()
}

async fn open(kubeconfig: &std::path::Path) -> Arc<dyn Store> {
    let mut config = StoreConfig::new(format!("kube://?kubeconfig={}", kubeconfig.display()));
    config.indexer = Arc::new(SuiteIndexer);
    config.kinds = kinds();
    kfp_storage::open(config).await.unwrap().store
}

async fn run(n: usize) {
    let dir = std::env::temp_dir().join(format!("kfp-crd-cache-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let host_store = Arc::new(
        SqlStore::open(StoreConfig::new(format!(
            "sqlite://{}",
            dir.join("host.db").display()
        )))
        .await
        .unwrap(),
    );
    let host = Host::start(host_store.clone() as Arc<dyn Store>, &[R]).await;
    let kubeconfig = dir.join("kubeconfig");
    host.write_kubeconfig(&kubeconfig);

    let t = Arc::new(template());
    let size = serde_json::to_vec(&object(&t, 0)).unwrap().len();
    let writer = open(&kubeconfig).await;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (writer, next, t) = (writer.clone(), next.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let v = object(&t, i);
                let key = Key::new(R, &ns(), v["metadata"]["name"].as_str().unwrap());
                writer.create(&key, v).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seeded = started.elapsed();
    writer.close().await;
    drop(writer);
    // Let the closed store's tasks end, then take the baseline with the host idle.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let before = live();
    let opened = Instant::now();
    let reader = open(&kubeconfig).await;
    // A uid lookup is served by the cache once it has listed the host.
    let last = object(&t, n - 1);
    let uid = last["metadata"]["uid"].as_str().unwrap();
    reader.get_by_uid(R, uid).await.unwrap();
    let listed = opened.elapsed();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = live();
    let per_object = (after - before) as f64 / n as f64;
    println!(
        "crd cache, {n} objects of {size} B JSON: {per_object:.0} B of live heap per object \
         ({:.1} MiB in all, {:.2}x the JSON); the first list took {:.2} s (seeding: {:.0} creates/s)",
        (after - before) as f64 / 1048576.0,
        per_object / size as f64,
        listed.as_secs_f64(),
        n as f64 / seeded.as_secs_f64()
    );
    reader.close().await;
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KFP_BENCH_CACHE_OBJECTS")
        .unwrap_or_else(|_| "10000,50000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        rt.block_on(run(n));
    }
}
