//! A [`Store`] decorator that times every operation into the server's metrics
//! (`kfp_store_operation_duration_seconds{operation,result}`), so handlers stay unaware of it.

use std::sync::Arc;
use std::time::Instant;

use kfp_storage::query::{QueryPage, QueryRequest};
use kfp_storage::{
    Key, ListPage, ListRequest, Object, Preconditions, Result, Revision, Store, StoreError,
    WatchRequest, WatchStream,
};

use crate::metrics::Metrics;

/// Times the inner store.
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        InstrumentedStore { inner, metrics }
    }

    fn done<T>(&self, op: &str, started: Instant, r: &Result<T>) {
        let result = match r {
            Ok(_) => "ok",
            Err(StoreError::NotFound(_)) => "not_found",
            Err(StoreError::AlreadyExists(_)) => "already_exists",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(StoreError::Gone { .. }) => "gone",
            Err(StoreError::TooLarge { .. }) => "too_large",
            Err(StoreError::Invalid(_)) => "invalid",
            Err(StoreError::Unavailable(_)) => "unavailable",
            Err(StoreError::Internal(_)) => "internal",
        };
        self.metrics
            .observe_store(op, result, started.elapsed().as_secs_f64());
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let r = $call.await;
        $self.done($op, started, &r);
        r
    }};
}

#[async_trait::async_trait]
impl Store for InstrumentedStore {
    async fn get(&self, key: &Key) -> Result<Object> {
        timed!(self, "get", self.inner.get(key))
    }
    async fn get_by_uid(&self, resource: &str, uid: &str) -> Result<Object> {
        timed!(self, "get_by_uid", self.inner.get_by_uid(resource, uid))
    }
    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        timed!(self, "list", self.inner.list(req))
    }
    async fn query(&self, req: &QueryRequest) -> Result<QueryPage> {
        timed!(self, "query", self.inner.query(req))
    }
    async fn dangling_label_values(
        &self,
        resource: &str,
        label: &str,
        owner_resource: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        timed!(
            self,
            "dangling_label_values",
            self.inner
                .dangling_label_values(resource, label, owner_resource, after, limit)
        )
    }
    async fn create(&self, key: &Key, object: serde_json::Value) -> Result<Object> {
        timed!(self, "create", self.inner.create(key, object))
    }
    async fn create_all(&self, objects: Vec<(Key, serde_json::Value)>) -> Result<Vec<Object>> {
        timed!(self, "create_all", self.inner.create_all(objects))
    }
    async fn update(
        &self,
        key: &Key,
        object: serde_json::Value,
        pre: &Preconditions,
    ) -> Result<Object> {
        timed!(self, "update", self.inner.update(key, object, pre))
    }
    async fn delete(&self, key: &Key, pre: &Preconditions) -> Result<Object> {
        timed!(self, "delete", self.inner.delete(key, pre))
    }
    async fn watch(&self, req: &WatchRequest) -> Result<WatchStream> {
        timed!(self, "watch", self.inner.watch(req))
    }
    async fn current_revision(&self) -> Result<Revision> {
        timed!(self, "current_revision", self.inner.current_revision())
    }
    async fn ping(&self) -> Result<()> {
        timed!(self, "ping", self.inner.ping())
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
