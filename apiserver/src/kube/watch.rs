//! Watch: the JSON event stream (`{"type":...,"object":...}` per line) of ADDED, MODIFIED,
//! DELETED, BOOKMARK and ERROR events, as kube-apiserver streams it.
//!
//! - `resourceVersion` unset or `"0"`: synthetic ADDED events for the current state, then changes.
//! - `resourceVersion=N`: changes after N; a compacted N gets HTTP 200 with an ERROR event
//!   carrying a 410 `Status` (Argo CD's RetryWatcher needs the event, not an HTTP error).
//! - `sendInitialEvents=true` (watch-list, client-go's default): ADDED per object, then a BOOKMARK
//!   annotated `k8s.io/initial-events-end: "true"` at the list's revision, then changes.
//! - Bookmarks (`allowWatchBookmarks`) from the store when idle and 2 s before the deadline, at
//!   the newest revision the watch has passed (writes it does not select included); every
//!   event, bookmarks included, carries a resourceVersion and is in the negotiated form (JSON,
//!   PartialObjectMetadata or Table).
//! - The stream ends at `timeoutSeconds` (default random 30-60 min), at shutdown, or when the
//!   client goes away.
//! - An event of an object over 16 KiB is written around the object's bytes as the feed holds
//!   them (one copy for all its watchers); smaller ones are one line each.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use kfp_storage::{Object, ReadAt, Revision, WatchItem, WatchRequest};
use serde_json::json;
use tokio_stream::StreamExt;

use super::handlers::{list_request, watch_timeout};
use super::output::{self, Output};
use super::params::ListOptions;
use crate::app::{App, Req};
use crate::body::Body;
use crate::error::ApiError;
use crate::request_info::ResourceRequest;
use kfp_apiservice::resource::Resource;

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

/// Objects up to this size are copied into one line per watcher (one chunk or DATA frame);
/// a larger one goes out as three pieces around the object's bytes as the store shares them,
/// so the watchers of an event share one copy of a large object instead of holding one each
/// (a slow watcher holds its piece until its socket drains).
const SHARE_ABOVE: usize = 16 * 1024;

/// One event on the wire: a whole line, or its head, the shared object and its tail.
enum Line {
    One(Bytes),
    Shared([Bytes; 3]),
}

impl Line {
    /// The body pieces to write, in order (never an empty one, which would end a chunked body).
    fn pieces(self) -> impl Iterator<Item = Bytes> {
        match self {
            Line::One(b) => [Some(b), None, None],
            Line::Shared([h, o, t]) => [Some(h), Some(o), Some(t)],
        }
        .into_iter()
        .flatten()
    }
}

fn head(kind: &str) -> Option<Bytes> {
    Some(Bytes::from_static(match kind {
        "ADDED" => b"{\"type\":\"ADDED\",\"object\":",
        "MODIFIED" => b"{\"type\":\"MODIFIED\",\"object\":",
        "DELETED" => b"{\"type\":\"DELETED\",\"object\":",
        _ => return None,
    }))
}

fn encode(res: &'static Resource, event: &str, data: &Bytes, out: Output) -> Line {
    match out {
        Output::Json if data.len() > SHARE_ABOVE => match head(event) {
            Some(h) => Line::Shared([h, data.clone(), Bytes::from_static(b"}\n")]),
            None => Line::One(line(event, data)),
        },
        _ => Line::One(line(event, &transformed(res, data, out))),
    }
}

/// The object in the negotiated form (itself for JSON, or when it cannot be transformed).
fn transformed(res: &'static Resource, data: &Bytes, out: Output) -> Bytes {
    output::object(res, data, out).unwrap_or_else(|_| data.clone())
}

/// A BOOKMARK: an object of the kind with only a resourceVersion (and the initial-events-end
/// annotation), put through the same transform as every other event of the stream, so a
/// metadata watch gets a `PartialObjectMetadata` and a Table watch a `Table`, as
/// kube-apiserver's watch encoder does.
fn bookmark(res: &'static Resource, rev: Revision, initial_end: bool, out: Output) -> Bytes {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj =
        json!({"kind": res.kind, "apiVersion": kfp_apiservice::API_VERSION, "metadata": meta});
    let obj = Bytes::from(serde_json::to_vec(&obj).unwrap_or_default());
    line("BOOKMARK", &transformed(res, &obj, out))
}

fn error_event(status: &ApiError) -> Bytes {
    line(
        "ERROR",
        &serde_json::to_vec(&status.status()).unwrap_or_default(),
    )
}

/// Reads the whole current state (all pages at one revision) for initial events.
async fn initial_state(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    opts: &ListOptions,
) -> Result<(Vec<Object>, Revision), ApiError> {
    let mut lr = list_request(res, rr, opts);
    lr.limit = Some(500);
    lr.continue_token = None;
    if matches!(lr.at, ReadAt::Exact(_)) {
        lr.at = ReadAt::Latest;
    }
    let mut items = Vec::new();
    loop {
        let page = app
            .registry
            .list(res, &lr)
            .await
            .map_err(ApiError::from_registry)?;
        items.extend(page.items);
        match page.continue_token {
            Some(t) => lr.continue_token = Some(t),
            None => return Ok((items, page.revision)),
        }
    }
}

/// Serves a watch request.
pub async fn watch(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let opts = ListOptions::parse(&req.query, res, true)?;
    let out = output::negotiate(
        req.header(header::ACCEPT.as_str()),
        req.query.get("includeObject"),
    )?;
    let timeout = watch_timeout(&opts);
    // kube-apiserver's watch deadline runs from the request, initial events included.
    let deadline_at = tokio::time::Instant::now().checked_add(timeout);
    let synthetic = opts.send_initial_events || matches!(opts.resource_version.as_str(), "" | "0");
    let (initial, start) = if synthetic {
        initial_state(app, res, rr, &opts).await?
    } else {
        let rev = match opts.at {
            ReadAt::NotOlderThan(r) | ReadAt::Exact(r) => r,
            ReadAt::Latest => Revision(0),
        };
        (Vec::new(), rev)
    };
    let mut stream = app
        .registry
        .watch(
            res,
            &WatchRequest {
                resource: res.plural.to_owned(),
                namespace: rr.namespace.clone(),
                labels: opts.labels.clone(),
                fields: opts.fields.clone(),
                from: start,
                bookmarks: opts.bookmarks,
                // kube-apiserver's bookmark 2 s before the deadline, at the watch's progress.
                bookmark_after: Some(timeout.saturating_sub(std::time::Duration::from_secs(2))),
            },
        )
        .await
        .map_err(ApiError::from_registry)?;
    let mut shutdown = app.shutdown.clone();
    let end_marker = opts.send_initial_events;
    let bookmarks = opts.bookmarks;
    let guard = app.metrics.watch_started(res.plural);
    let mut counted = app.metrics.watch_events(res.plural);
    // The body polls the store's stream itself: a delivery wakes only the connection's task,
    // and the stream (and the store's subscription) goes when hyper drops the body.
    let events = async_stream::stream! {
        let _guard = guard;
        let past = || deadline_at.is_some_and(|d| tokio::time::Instant::now() >= d);
        for o in &initial {
            if past() {
                return;
            }
            for piece in encode(res, "ADDED", &o.data, out).pieces() {
                yield piece;
            }
        }
        drop(initial);
        if end_marker {
            yield bookmark(res, start, true, out);
        }
        let deadline = async {
            match deadline_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        // One wait on the shutdown signal for the whole watch: a new `changed()` per event
        // would join and leave the signal's waiter list (one lock shared by every watch) at
        // every delivery.
        let shutting_down = shutdown.changed();
        tokio::pin!(shutting_down);
        let mut last = start;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = &mut deadline => None,
                _ = &mut shutting_down => None,
            };
            match item {
                Some(WatchItem::Event { kind: ev, revision, object }) => {
                    last = revision;
                    counted.inc(ev);
                    for piece in encode(res, ev.as_str(), &object, out).pieces() {
                        yield piece;
                    }
                }
                Some(WatchItem::Bookmark(rev)) => {
                    last = last.max(rev);
                    if bookmarks {
                        yield bookmark(res, last, false, out);
                    }
                }
                Some(WatchItem::Error(e)) => {
                    let err = match e {
                        kfp_storage::StoreError::Gone { requested, compacted } => ApiError::gone(
                            format!("too old resource version: {} ({})", requested.0, compacted.0),
                        ),
                        other => ApiError::from_store(other, res.plural, ""),
                    };
                    yield error_event(&err);
                    return;
                }
                None => return,
            }
        }
    };
    let body = Body::stream(events);
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
