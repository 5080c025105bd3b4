//! The store conformance suite (`kfp_storage::testing`) on the CRD backend (`kube://`), against
//! the test host (`kfp_storage::testing::host`: kube-apiserver's custom-resource semantics over
//! a fresh SQLite store per case). The host's compaction stands in for etcd's, so the 410 cases
//! run; its idle watches bookmark every 20 ms, so "the revision a watch has passed" is seen
//! through the host as a real cluster would show it (at its own bookmark interval).
//!
//! Not yet: the same suite against a real cluster (`KFP_TEST_KUBECONFIG`); see docs/status.md.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kfp_storage::testing::host::Host;
use kfp_storage::testing::{self, Harness, Options};
use kfp_storage::{Backend, Indexer, Maintenance, SqlStore, Store, StoreConfig};

struct Crd {
    /// Hosts and their databases made so far, kept until the harness drops.
    made: Mutex<Vec<(Host, common::Backend)>>,
}

fn kinds() -> std::collections::BTreeMap<String, String> {
    [(
        "pipelineversions".to_owned(),
        "PipelineVersionRecord".to_owned(),
    )]
    .into()
}

#[async_trait::async_trait]
impl Harness for Crd {
    fn name(&self) -> String {
        "crd (test host over sqlite)".into()
    }

    async fn open(&self, indexer: Arc<dyn Indexer>, options: Options) -> Backend {
        let db = common::servers().remove(0).fresh().await;
        let mut host_config = common::config(&db.url);
        if let Some(n) = options.ring_capacity {
            host_config.feed.ring_capacity = n;
        }
        host_config.feed.bookmark_interval = Duration::from_millis(20);
        let host_store = Arc::new(SqlStore::open(host_config).await.unwrap());
        let host = Host::start(host_store.clone() as Arc<dyn Store>, &["pipelineversions"]).await;
        let kubeconfig = std::path::Path::new(db.url.trim_start_matches("sqlite://"))
            .with_file_name("kubeconfig");
        host.write_kubeconfig(&kubeconfig);
        let mut config = StoreConfig::new(format!("kube://?kubeconfig={}", kubeconfig.display()));
        config.indexer = indexer;
        config.kinds = kinds();
        let opened = kfp_storage::open(config).await.unwrap();
        assert!(opened.maintenance.is_none(), "the host keeps the history");
        self.made.lock().unwrap().push((host, db));
        Backend {
            store: opened.store,
            maintenance: Some(host_store as Arc<dyn Maintenance>),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_backend_passes_the_store_suite_on_the_test_host() {
    let h = Crd {
        made: Mutex::new(Vec::new()),
    };
    // KFP_TEST_CASE=name runs one case (for debugging; RUST_LOG shows the backend's logs).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    match std::env::var("KFP_TEST_CASE") {
        Ok(only) => {
            let (_, case) = testing::CASES.iter().find(|(n, _)| *n == only).unwrap();
            case(&h).await;
        }
        Err(_) => testing::run(&h).await,
    }
}

#[tokio::test]
async fn a_host_without_the_definitions_is_a_clear_error_until_they_are_installed() {
    let db = common::servers().remove(0).fresh().await;
    let host_store = Arc::new(SqlStore::open(common::config(&db.url)).await.unwrap());
    let host = Host::start(host_store as Arc<dyn Store>, &[]).await;
    let kubeconfig =
        std::path::Path::new(db.url.trim_start_matches("sqlite://")).with_file_name("kubeconfig");
    host.write_kubeconfig(&kubeconfig);
    let url = format!("kube://?kubeconfig={}", kubeconfig.display());
    let mut config = StoreConfig::new(url.clone());
    config.kinds = kinds();
    let err = kfp_storage::open(config.clone()).await.err().unwrap();
    assert!(err.to_string().contains("install the CRDs"), "{err}");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    kfp_storage::crd::CrdStore::install_definitions(&client, &kinds())
        .await
        .unwrap();
    assert!(host.installed("pipelineversions"));
    let opened = kfp_storage::open(config).await.unwrap();
    opened.store.ping().await.unwrap();
    // An empty host (revision 0) is listed too: a uid lookup answers NotFound, not Unavailable.
    let missing = opened.store.get_by_uid("pipelineversions", "nope").await;
    assert!(
        matches!(missing, Err(kfp_storage::StoreError::NotFound(_))),
        "{missing:?}"
    );
}
