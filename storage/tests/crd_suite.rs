//! The store conformance suite (`kfp_storage::testing`) on the CRD backend (`kube://`), against
//! the test host (`kfp_storage::testing::host`: kube-apiserver's custom-resource semantics over
//! a fresh SQLite store per case). The host's compaction stands in for etcd's, so the 410 cases
//! run; its idle watches bookmark every 20 ms, so "the revision a watch has passed" is seen
//! through the host as a real cluster would show it (at its own bookmark interval).
//!
//! With `KFP_TEST_KUBECONFIG` naming a cluster, the same suite also runs there: each case on its
//! own namespace prefix (`kfp-test-PID-N-`, namespaces the store makes and the test deletes),
//! without the cases that compact on demand (the host compacts on its own schedule).

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
    let client = host_client(&kubeconfig).await;
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

/// A create in a namespace the host does not have: without a prefix the host's 404 names the
/// namespace (as kube-apiserver's own answer); with one, the store makes the host namespace.
#[tokio::test]
async fn missing_host_namespaces_are_named_or_made_under_a_prefix() {
    let db = common::servers().remove(0).fresh().await;
    let host_store = Arc::new(SqlStore::open(common::config(&db.url)).await.unwrap());
    let host = Host::start_with_namespaces(
        host_store as Arc<dyn Store>,
        &["pipelineversions"],
        &["default"],
    )
    .await;
    let kubeconfig =
        std::path::Path::new(db.url.trim_start_matches("sqlite://")).with_file_name("kubeconfig");
    host.write_kubeconfig(&kubeconfig);
    let open = |prefix: &str| {
        let mut config = StoreConfig::new(format!(
            "kube://?kubeconfig={}&namespace-prefix={prefix}",
            kubeconfig.display()
        ));
        config.kinds = kinds();
        kfp_storage::open(config)
    };
    let object = |ns: &str| {
        serde_json::json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "PipelineVersion",
            "metadata": {"name": "v", "namespace": ns, "uid": format!("u-{ns}")}, "spec": {}})
    };
    let plain = open("").await.unwrap().store;
    let key = kfp_storage::Key::new("pipelineversions", "team-a", "v");
    let err = plain.create(&key, object("team-a")).await.unwrap_err();
    assert_eq!(
        err,
        kfp_storage::StoreError::NotFound(kfp_storage::Key::new("namespaces", "", "team-a"))
    );
    assert!(
        !host.has_namespace("team-a"),
        "nothing made without a prefix"
    );
    let made = plain
        .create(
            &kfp_storage::Key::new("pipelineversions", "default", "v"),
            object("default"),
        )
        .await
        .unwrap();
    assert_eq!(made.key.namespace, "default");

    let prefixed = open("kfp-").await.unwrap().store;
    let o = prefixed.create(&key, object("team-a")).await.unwrap();
    assert!(host.has_namespace("kfp-team-a"));
    assert_eq!(o.key, key, "the public namespace is unprefixed");
    assert_eq!(prefixed.get(&key).await.unwrap().revision, o.revision);
    // A second object in it: the namespace exists now; nothing else is made.
    let key2 = kfp_storage::Key::new("pipelineversions", "team-a", "w");
    let mut second = object("team-a");
    second["metadata"]["name"] = "w".into();
    second["metadata"]["uid"] = "u-w".into();
    prefixed.create(&key2, second).await.unwrap();
    assert!(!host.has_namespace("kfp-default"));
}

/// The suite against a real cluster named by `KFP_TEST_KUBECONFIG` (none in CI: then this
/// test says so and passes without running anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_backend_passes_the_store_suite_on_a_real_cluster() {
    let Ok(kubeconfig) = std::env::var("KFP_TEST_KUBECONFIG") else {
        eprintln!("KFP_TEST_KUBECONFIG is not set: the suite ran against the test host only");
        return;
    };
    on_a_cluster(kubeconfig).await;
}

/// The real-cluster run itself, on the test host as a cluster would be: no definitions
/// installed, only `default` and `kube-system` namespaces, no compaction on demand — so the
/// prefixes, the namespaces the store makes and the cleanup run in CI too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cluster_run_passes_on_the_test_host_standing_in_for_a_cluster() {
    let db = common::servers().remove(0).fresh().await;
    let host_store = Arc::new(SqlStore::open(common::config(&db.url)).await.unwrap());
    let host = Host::start_with_namespaces(
        host_store as Arc<dyn Store>,
        &[],
        &["default", "kube-system"],
    )
    .await;
    let kubeconfig =
        std::path::Path::new(db.url.trim_start_matches("sqlite://")).with_file_name("kubeconfig");
    host.write_kubeconfig(&kubeconfig);
    on_a_cluster(kubeconfig.display().to_string()).await;
    assert!(host.installed("pipelineversions"));
}

/// The suite with [`Cluster`] against the cluster `kubeconfig` names, then its cleanup.
async fn on_a_cluster(kubeconfig: String) {
    let client = host_client(&kubeconfig).await;
    kfp_storage::crd::CrdStore::install_definitions(&client, &kinds())
        .await
        .unwrap();
    let h = Cluster {
        kubeconfig,
        run: format!("kfp-test-{}-", std::process::id()),
        cases: std::sync::atomic::AtomicU32::new(0),
    };
    match std::env::var("KFP_TEST_CASE") {
        Ok(only) => {
            let (_, case) = testing::CASES.iter().find(|(n, _)| *n == only).unwrap();
            case(&h).await;
        }
        Err(_) => testing::run(&h).await,
    }
    // The namespaces the cases made (their records go with them).
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let made = namespaces
        .list(
            &kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=kfp-apiserver"),
        )
        .await
        .unwrap();
    let mut deleted = 0;
    for ns in made.items {
        let name = ns.metadata.name.unwrap_or_default();
        if name.starts_with(&h.run) {
            namespaces.delete(&name, &Default::default()).await.unwrap();
            deleted += 1;
        }
    }
    assert!(deleted > 0, "the cases made their prefixed namespaces");
}

struct Cluster {
    kubeconfig: String,
    /// This run's namespace prefix; each case adds its number.
    run: String,
    cases: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Harness for Cluster {
    fn name(&self) -> String {
        "crd (KFP_TEST_KUBECONFIG)".into()
    }

    async fn open(&self, indexer: Arc<dyn Indexer>, _options: Options) -> Backend {
        let n = self
            .cases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut config = StoreConfig::new(format!(
            "kube://?kubeconfig={}&namespace-prefix={}{n}-",
            self.kubeconfig, self.run
        ));
        config.indexer = indexer;
        config.kinds = kinds();
        let opened = kfp_storage::open(config).await.unwrap();
        Backend {
            store: opened.store,
            maintenance: None,
        }
    }

    fn counts_remaining(&self) -> bool {
        false
    }
}

/// The store's own client for the cluster `kubeconfig` names.
async fn host_client(kubeconfig: impl AsRef<std::path::Path>) -> kube::Client {
    let loc = kfp_storage::crd::Location {
        kubeconfig: Some(kubeconfig.as_ref().display().to_string()),
        ..Default::default()
    };
    kfp_storage::crd::client(&loc).await.unwrap()
}
