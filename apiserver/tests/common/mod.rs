//! What the in-process suites share: an app over a fresh SQLite store.

use std::sync::Arc;

use kfp_apiserver::app::{App, Limits};
use kfp_apiserver::auth::TokenAuthenticator;
use kfp_storage::{SqlStore, Store};

/// The app (accepting `token` for an admin in `groups`), its store, and the shutdown sender
/// (kept alive by the caller).
pub async fn sqlite_app(
    name: &str,
    token: &str,
    groups: &[&str],
    limits: Limits,
) -> (Arc<App>, SqlStore, tokio::sync::watch::Sender<bool>) {
    let dir = std::env::temp_dir().join(format!("kfp-in-process-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqlStore::open(kfp_apiserver::store::config(&format!(
        "sqlite://{}/store.db",
        dir.display()
    )))
    .await
    .expect("store");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    let app = App::new(
        dyn_store,
        TokenAuthenticator::single(token, "admin", groups),
        rx,
        limits,
    );
    (app, store, tx)
}
