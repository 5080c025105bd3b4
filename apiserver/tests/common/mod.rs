//! What the in-process suites share: an app over a fresh SQLite store, or over any store URL.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use kfp_apiserver::app::AppService;
use tower::Service;

use kfp_apiserver::app::{App, Limits};
use kfp_apiserver::auth::TokenAuthenticator;
use kfp_storage::{SqlStore, Store};

/// The app (accepting `token` for an admin in `groups`), its store, and the shutdown sender
/// (kept alive by the caller).
#[allow(dead_code)]
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

/// The app over the store at `url` (any backend `kfp_storage::open` knows), with the admin
/// token, and the shutdown sender.
#[allow(dead_code)]
pub async fn app_on(
    url: &str,
    token: &str,
) -> (Arc<App>, Arc<dyn Store>, tokio::sync::watch::Sender<bool>) {
    let backend = kfp_storage::open(kfp_apiserver::store::config(url))
        .await
        .expect("store");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let app = App::new(
        backend.store.clone(),
        TokenAuthenticator::single(token, "admin", &["system:masters"]),
        rx,
        Limits::default(),
    );
    (app, backend.store, tx)
}

/// Store URLs to run a suite on: a fresh SQLite file always; a fresh PostgreSQL database when
/// `KFP_TEST_POSTGRES_URL` names a server (scripts/test starts one; with
/// `KFP_TEST_REQUIRE_ALL_BACKENDS=1` a missing server is a failure).
#[allow(dead_code)]
pub async fn store_urls(name: &str) -> Vec<(&'static str, String)> {
    let dir = std::env::temp_dir().join(format!("kfp-in-process-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = vec![("sqlite", format!("sqlite://{}/store.db", dir.display()))];
    match std::env::var("KFP_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let db = format!("kfp_a_{}_{}", name.replace('-', "_"), std::process::id());
            let mut conn = sqlx::AnyConnection::connect(&base)
                .await
                .expect("PostgreSQL test server");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut conn)
                .await
                .expect("create database");
            let (prefix, _) = base.rsplit_once('/').expect("URL ends with /DBNAME");
            out.push(("postgres", format!("{prefix}/{db}")));
        }
        _ if std::env::var("KFP_TEST_REQUIRE_ALL_BACKENDS").as_deref() == Ok("1") => {
            panic!("KFP_TEST_POSTGRES_URL is not set but KFP_TEST_REQUIRE_ALL_BACKENDS=1")
        }
        _ => eprintln!("note: KFP_TEST_POSTGRES_URL not set; PostgreSQL not tested"),
    }
    out
}

/// What [`send`] got back.
#[allow(dead_code)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[allow(dead_code)]
impl Answer {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request through the whole in-process stack with a bearer token, read to its end (a
/// watch until its `timeoutSeconds` ends it; 30 s bound a broken stream).
#[allow(dead_code)]
pub async fn send(
    app: &Arc<App>,
    token: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = AppService::new(app.clone())
        .call(req)
        .await
        .expect("infallible");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("answered in time")
        .expect("body")
        .to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// The pipeline spec of the corpus's `hello_world.yaml`.
#[allow(dead_code)]
pub fn hello_world_spec() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/hello_world.yaml"
    );
    let bytes = std::fs::read(path).expect("corpus");
    let docs = kfp_apiservice::yaml::read_documents(&bytes).expect("yaml");
    docs.into_iter().next().expect("one document").value
}
