//! Test backends: a fresh SQLite file always; a fresh PostgreSQL and MariaDB database when
//! `KFP_TEST_POSTGRES_URL` / `KFP_TEST_MYSQL_URL` name a server (scripts/test starts both on
//! 127.0.0.1). With `KFP_TEST_REQUIRE_ALL_BACKENDS=1` (set by scripts/test) a missing server is a
//! failure, never a skip.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kfp_storage::{SqlStore, StoreConfig};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A backend under test: its name and a URL to a fresh, empty database.
pub struct Backend {
    pub name: &'static str,
    pub url: String,
    _dir: Option<tempdir::TempDir>,
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn fresh_server_db(base: &str, scheme: &str) -> String {
    use sqlx::Connection;
    let db = unique("kfp_t");
    let mut conn = sqlx::AnyConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {scheme} test server {base}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, rest) = base.rsplit_once('/').expect("URL ends with /DBNAME");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{prefix}/{db}{query}")
}

/// A database server under test (SQLite needs none).
pub struct Server {
    pub name: &'static str,
    /// `KFP_TEST_*_URL` of the server; `None` for SQLite.
    base: Option<(String, &'static str)>,
}

/// Every server available (all three under scripts/test).
pub fn servers() -> Vec<Server> {
    sqlx::any::install_default_drivers();
    let mut out = vec![Server {
        name: "sqlite",
        base: None,
    }];
    let require = std::env::var("KFP_TEST_REQUIRE_ALL_BACKENDS").as_deref() == Ok("1");
    for (name, var, scheme) in [
        ("postgres", "KFP_TEST_POSTGRES_URL", "postgres"),
        ("mariadb", "KFP_TEST_MYSQL_URL", "mysql"),
    ] {
        match std::env::var(var) {
            Ok(base) if !base.is_empty() => out.push(Server {
                name,
                base: Some((base, scheme)),
            }),
            _ if require => panic!("{var} is not set but KFP_TEST_REQUIRE_ALL_BACKENDS=1"),
            _ => eprintln!(
                "note: {var} not set; {name} not tested (run ./scripts/test for all backends)"
            ),
        }
    }
    out
}

impl Server {
    /// A fresh, empty database on this server.
    pub async fn fresh(&self) -> Backend {
        match &self.base {
            None => {
                let dir = std::env::temp_dir().join(unique("kfp-storage-test"));
                std::fs::create_dir_all(&dir).unwrap();
                Backend {
                    name: self.name,
                    url: format!("sqlite://{}/store.db", dir.display()),
                    _dir: Some(tempdir::TempDir(dir)),
                }
            }
            Some((base, scheme)) => Backend {
                name: self.name,
                url: fresh_server_db(base, scheme).await,
                _dir: None,
            },
        }
    }
}

/// A fresh database on every server available.
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for s in servers() {
        out.push(s.fresh().await);
    }
    out
}

/// Test settings: quick polling and bookmarks.
pub fn config(url: &str) -> StoreConfig {
    let mut c = StoreConfig::new(url);
    c.poll_interval = Duration::from_millis(50);
    c
}

pub async fn open(url: &str) -> SqlStore {
    SqlStore::open(config(url)).await.unwrap()
}
