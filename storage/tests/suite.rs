//! The store conformance suite (`kfp_storage::testing`) on every SQL backend: SQLite always,
//! PostgreSQL and MariaDB under scripts/test. Each case gets a fresh, empty database.

mod common;

use std::sync::{Arc, Mutex};

use kfp_storage::testing::{self, Harness, Options};
use kfp_storage::{Backend, Indexer};

struct Sql {
    server: common::Server,
    /// Databases made so far; SQLite's directories are removed when the harness drops.
    made: Mutex<Vec<common::Backend>>,
}

#[async_trait::async_trait]
impl Harness for Sql {
    fn name(&self) -> String {
        self.server.name.to_owned()
    }

    async fn open(&self, indexer: Arc<dyn Indexer>, options: Options) -> Backend {
        let db = self.server.fresh().await;
        let mut config = common::config(&db.url);
        config.indexer = indexer;
        if let Some(n) = options.ring_capacity {
            config.feed.ring_capacity = n;
        }
        let opened = kfp_storage::open(config).await.unwrap();
        self.made.lock().unwrap().push(db);
        opened
    }
}

#[tokio::test]
async fn every_sql_backend_passes_the_store_suite() {
    for server in common::servers() {
        let h = Sql {
            server,
            made: Mutex::new(Vec::new()),
        };
        testing::run(&h).await;
    }
}
