//! The kube:// store's watch-driven cache of one kind: every record in every namespace under the
//! prefix, kept by list-then-watch against the host (relisting after 410), with the index fields
//! each object would have in SQL. It serves sorted KFP queries and `get_by_uid`, tells writes
//! when it has seen their revision, and keeps the revision of recent deletes (only the host's
//! DELETED event carries it).
//!
//! Memory: every object's JSON once (shared with query results by reference count) plus its
//! index fields; queries scan every object of the kind (as upstream KFP's Kubernetes mode does).
//! It must not be used for Kubernetes lists, which pass through to the host.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};

use super::{CACHE_PAGE, Inner, WATCH_TIMEOUT, map_err, parse_rv, status_err};
use crate::index::{self, IndexFields};
use crate::query::{Column, Cursor, Op, QueryPage, QueryRequest, Value as Q};
use crate::{Object, Result, Revision, StoreError};

/// Deletes whose revision a caller may still ask for.
const TOMBSTONES: usize = 4096;

struct Entry {
    object: Object,
    fields: IndexFields,
}

#[derive(Default)]
struct State {
    /// By (namespace, name).
    objects: HashMap<(String, String), Entry>,
    /// uid -> (namespace, name).
    by_uid: HashMap<String, (String, String)>,
    /// Host uid -> the deleted object at its deletion's revision.
    tombstones: HashMap<String, Object>,
    tomb_order: VecDeque<String>,
}

pub(crate) struct Cache {
    resource: String,
    /// Whether the first list has been applied.
    listed: std::sync::atomic::AtomicBool,
    state: RwLock<State>,
    /// The newest revision the cache has applied (0 until the first list).
    seen: tokio::sync::watch::Sender<u64>,
}

impl Cache {
    pub(crate) fn new(resource: &str) -> Cache {
        Cache {
            resource: resource.to_owned(),
            listed: Default::default(),
            state: RwLock::default(),
            seen: tokio::sync::watch::Sender::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the cache has seen `revision`; false on timeout.
    pub(crate) async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.seen.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision.0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the first list has been applied.
    pub(crate) async fn synced(&self, timeout: Duration) -> Result<()> {
        use std::sync::atomic::Ordering;
        let mut rx = self.seen.subscribe();
        let wait = async {
            while !self.listed.load(Ordering::Acquire) {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        if tokio::time::timeout(timeout, wait).await.unwrap_or(false) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "the kube:// cache of {} has not listed the host yet",
                self.resource
            )))
        }
    }

    /// The deleted object of host uid `host_uid`, once the cache has seen its deletion.
    pub(crate) async fn tombstone(&self, host_uid: &str, timeout: Duration) -> Option<Object> {
        let mut rx = self.seen.subscribe();
        let wait = async {
            loop {
                if let Some(o) = self.write().tombstones.remove(host_uid) {
                    return Some(o);
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    pub(crate) fn by_uid(&self, uid: &str) -> Option<Object> {
        let s = self.read();
        let k = s.by_uid.get(uid)?;
        s.objects.get(k).map(|e| e.object.clone())
    }

    fn upsert(s: &mut State, indexer: &dyn crate::Indexer, o: Object) -> Result<()> {
        let fields = index::index_fields(indexer, &o.key.resource, &o.json()?);
        let k = (o.key.namespace.clone(), o.key.name.clone());
        if let Some(old) = s.objects.get(&k)
            && old.object.uid != o.uid
        {
            s.by_uid.remove(&old.object.uid);
        }
        s.by_uid.insert(o.uid.clone(), k.clone());
        s.objects.insert(k, Entry { object: o, fields });
        Ok(())
    }

    fn remove(s: &mut State, host_uid: String, o: Object) {
        let k = (o.key.namespace.clone(), o.key.name.clone());
        if let Some(old) = s.objects.remove(&k) {
            s.by_uid.remove(&old.object.uid);
        }
        if s.tomb_order.len() >= TOMBSTONES
            && let Some(oldest) = s.tomb_order.pop_front()
        {
            s.tombstones.remove(&oldest);
        }
        s.tomb_order.push_back(host_uid.clone());
        s.tombstones.insert(host_uid, o);
    }

    /// A sorted, filtered page, as the SQL backends answer it (text compares bytewise; case
    /// folding is Unicode for every column).
    pub(crate) fn query(&self, req: &QueryRequest) -> QueryPage {
        let s = self.read();
        let mut rows: Vec<(Q, &Entry)> = s
            .objects
            .values()
            .filter(|e| {
                req.namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == e.object.key.namespace)
                    && req
                        .terms
                        .iter()
                        .all(|(k, v)| e.fields.columns.terms.get(k) == Some(v))
                    && req
                        .predicates
                        .iter()
                        .all(|p| matches(&value(e, p.column), &p.op))
            })
            .map(|e| (value(e, req.sort), e))
            .collect();
        let total = rows.len() as u64;
        rows.sort_by(|(a, x), (b, y)| {
            let o = a.cmp(b).then_with(|| x.object.uid.cmp(&y.object.uid));
            if req.descending { o.reverse() } else { o }
        });
        let start = match &req.after {
            None => 0,
            Some(c) => rows.partition_point(|(v, e)| {
                let o = v.cmp(&c.value).then_with(|| e.object.uid.cmp(&c.uid));
                // Skip the rows up to and including the cursor in the page order.
                if req.descending { o.is_ge() } else { o.is_le() }
            }),
        };
        let page: Vec<&(Q, &Entry)> = rows[start..].iter().take(req.limit).collect();
        let more = start + page.len() < rows.len();
        let next = page.last().filter(|_| more).map(|(v, e)| Cursor {
            value: v.clone(),
            uid: e.object.uid.clone(),
        });
        QueryPage {
            items: page.iter().map(|(_, e)| e.object.clone()).collect(),
            total,
            next,
        }
    }
}

fn value(e: &Entry, c: Column) -> Q {
    match c {
        Column::Uid => Q::Text(e.object.uid.clone()),
        Column::Name => Q::Text(e.object.key.name.clone()),
        Column::Namespace => Q::Text(e.object.key.namespace.clone()),
        Column::CreatedAt => Q::Int(e.fields.created_at),
        Column::Indexed(i) => Q::Text(e.fields.columns.get(i).to_owned()),
    }
}

fn matches(v: &Q, op: &Op) -> bool {
    match op {
        Op::Eq(x) => v == x,
        Op::Ne(x) => v != x,
        Op::Gt(x) => v > x,
        Op::Ge(x) => v >= x,
        Op::Lt(x) => v < x,
        Op::Le(x) => v <= x,
        Op::In(xs) => xs.contains(v),
        Op::Substring(s) => {
            matches!(v, Q::Text(t) if t.to_lowercase().contains(&s.to_lowercase()))
        }
        Op::Contains(s) => matches!(v, Q::Text(t) if t.contains(s.as_str())),
    }
}

/// Keeps `cache` in step with the host until the store closes: list every page, then watch from
/// the list's revision; relist after 410; retry after errors once a second.
pub(crate) async fn run(cache: Arc<Cache>, inner: Arc<Inner>) {
    let api = match inner.api(&cache.resource, None) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(resource = %cache.resource, error = %e, "kube:// cache not started");
            return;
        }
    };
    let retry = || tokio::time::sleep(Duration::from_secs(1));
    'relist: loop {
        // List every page at one revision.
        let mut state = State::default();
        let mut token: Option<String> = None;
        let mut revision = None;
        loop {
            let lp = ListParams {
                label_selector: inner.scope_selector(),
                limit: Some(CACHE_PAGE),
                continue_token: token.clone(),
                ..Default::default()
            };
            let page = match api.list(&lp).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(resource = %cache.resource, error = %map_err(None, e), "kube:// cache list failed");
                    retry().await;
                    continue 'relist;
                }
            };
            if revision.is_none() {
                match parse_rv(page.metadata.resource_version.as_deref()) {
                    Ok(r) => revision = Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, "kube:// cache");
                        retry().await;
                        continue 'relist;
                    }
                }
            }
            for record in page.items {
                match inner.unwrap(&cache.resource, record) {
                    Ok(Some(o)) => {
                        if let Err(e) = Cache::upsert(&mut state, inner.indexer.as_ref(), o) {
                            tracing::error!(error = %e, "kube:// cache: a record is not JSON");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "kube:// cache: a record has no object"),
                }
            }
            token = page.metadata.continue_.filter(|c| !c.is_empty());
            if token.is_none() {
                break;
            }
        }
        let mut from = revision.unwrap_or_default();
        {
            let mut s = cache.write();
            state.tombstones = std::mem::take(&mut s.tombstones);
            state.tomb_order = std::mem::take(&mut s.tomb_order);
            *s = state;
        }
        cache
            .listed
            .store(true, std::sync::atomic::Ordering::Release);
        cache.seen.send_modify(|r| *r = (*r).max(from.0));
        // Follow.
        loop {
            let wp = WatchParams {
                label_selector: inner.scope_selector(),
                timeout: Some(WATCH_TIMEOUT),
                bookmarks: true,
                ..Default::default()
            };
            let started = tokio::time::Instant::now();
            let mut stream = match api.watch(&wp, &from.to_string()).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    tracing::warn!(resource = %cache.resource, error = %map_err(None, e), "kube:// cache watch failed");
                    retry().await;
                    continue;
                }
            };
            while let Some(ev) = stream.next().await {
                let applied = match ev {
                    Ok(WatchEvent::Added(r) | WatchEvent::Modified(r)) => {
                        match inner.unwrap(&cache.resource, r) {
                            Ok(Some(o)) => {
                                let rev = o.revision;
                                let mut s = cache.write();
                                Cache::upsert(&mut s, inner.indexer.as_ref(), o).map(|()| rev)
                            }
                            Ok(None) => continue,
                            Err(e) => Err(e),
                        }
                    }
                    Ok(WatchEvent::Deleted(r)) => {
                        let host_uid = r.metadata.uid.clone().unwrap_or_default();
                        match inner.unwrap(&cache.resource, r) {
                            Ok(Some(o)) => {
                                let rev = o.revision;
                                Cache::remove(&mut cache.write(), host_uid, o);
                                Ok(rev)
                            }
                            Ok(None) => continue,
                            Err(e) => Err(e),
                        }
                    }
                    Ok(WatchEvent::Bookmark(b)) => parse_rv(Some(&b.metadata.resource_version)),
                    Ok(WatchEvent::Error(s)) => {
                        match status_err(None, s.code, &s.reason, &s.message) {
                            StoreError::Gone { .. } => continue 'relist,
                            e => Err(e),
                        }
                    }
                    Err(e) => Err(map_err(None, e)),
                };
                match applied {
                    Ok(rev) => {
                        from = from.max(rev);
                        cache.seen.send_modify(|r| *r = (*r).max(from.0));
                    }
                    Err(e) => {
                        tracing::warn!(resource = %cache.resource, error = %e, "kube:// cache watch");
                        break;
                    }
                }
            }
            // A host that ends watches at once (or fails them) is asked again once a second.
            if started.elapsed() < Duration::from_secs(1) {
                retry().await;
            }
        }
    }
}
