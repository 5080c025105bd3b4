//! The change feed and watch fan-out.
//!
//! A backend's tailer publishes committed changes, strictly in revision order, with
//! [`Feed::publish`]. The feed keeps the newest events in a ring (for cheap replay) and sends each
//! one once on a broadcast channel; every watch is a stream that subscribes *first*, then replays
//! (from the ring, or from the database through [`History`] for older revisions), then follows
//! the channel, dropping anything at or below the last revision it sent (kine's recipe). Events are
//! shared (`Arc`), so fan-out costs no copies.
//!
//! The channel carries weak references: only the ring, bounded in bytes, keeps events alive. A
//! watcher whose client stopped reading therefore pins no objects (with strong references it
//! pinned the channel's last 4,096 events, up to 24 GiB of 3 MiB objects and their previous
//! states); one that reaches an event already gone from the ring gets it from the events read
//! back for lagging watchers (one read at a time, a page up to the ring, kept for up to 10 s in
//! a second bounded map and shared, so N slow watchers of large objects cost one copy and one
//! read, not N pages of up to 16 MiB each). A watcher that falls behind the channel, or asks
//! for a compacted revision, gets [`WatchItem::Error`] with Gone and its stream ends — never a
//! silently dropped event.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::index::Indexed;
use crate::selector::Field;
use crate::{Key, Result, Revision, StoreError, WatchRequest, WatchStream};

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventKind {
    /// The watch event type on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(EventKind::Added),
            "MODIFIED" => Some(EventKind::Modified),
            "DELETED" => Some(EventKind::Deleted),
            _ => None,
        }
    }
}

/// The filterable view of one object state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The object's JSON (resourceVersion set).
    pub object: Bytes,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its generic indexed columns, for field selectors.
    pub columns: Indexed,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The change's revision.
    pub revision: Revision,
    /// What happened.
    pub kind: EventKind,
    /// Which object.
    pub key: Key,
    /// The object after the change; for a delete, its last state with `revision` as
    /// resourceVersion.
    pub current: State,
    /// The object before the change (absent for creates).
    pub prev: Option<State>,
}

/// What the channel carries: an event's revision and a weak reference to it (the ring holds the
/// event itself).
#[derive(Clone)]
struct Sent {
    revision: Revision,
    event: Weak<Event>,
}

/// What a watch delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// An event as this watcher sees it (selector transitions become ADDED/DELETED).
    Event {
        /// ADDED, MODIFIED or DELETED.
        kind: EventKind,
        /// The event's revision.
        revision: Revision,
        /// The object JSON to send.
        object: Bytes,
    },
    /// Everything up to this revision has been delivered.
    Bookmark(Revision),
    /// The watch cannot continue (Gone, Unavailable); the stream ends after this.
    Error(StoreError),
}

/// Where a watch replays events older than the ring from.
#[async_trait::async_trait]
pub trait History: Send + Sync + 'static {
    /// Events with `from < revision <= until`, oldest first, at most `limit` (fewer when the
    /// backend bounds a page in bytes, but at least one while any remain).
    async fn events(&self, from: Revision, until: Revision, limit: usize) -> Result<Vec<Event>>;
    /// The oldest revision a watch may start from.
    async fn compacted(&self) -> Result<Revision>;
}

/// Feed settings.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Events kept in memory for replay.
    pub ring_capacity: usize,
    /// Bytes of objects the ring may hold (an event counts its object and its previous
    /// state); the oldest events leave first, and watches from before the ring replay from the
    /// database. Bounds the ring's memory whatever the objects' sizes.
    pub ring_max_bytes: usize,
    /// How far a watcher may fall behind before it gets Gone.
    pub channel_capacity: usize,
    /// How often an idle watch gets a bookmark.
    pub bookmark_interval: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            ring_capacity: 1024,
            ring_max_bytes: 16 << 20,
            channel_capacity: 4096,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// The newest events and the bytes they hold.
#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
}

impl Event {
    /// The bytes this event keeps alive (objects and key; labels and columns are small).
    fn size(&self) -> usize {
        self.current.object.len()
            + self.prev.as_ref().map_or(0, |p| p.object.len())
            + self.key.name.len()
            + self.key.namespace.len()
            + self.key.resource.len()
    }
}

/// Events read back for lagging watchers, by revision, the order they were read in (the
/// earliest read leave first, so the page just read stays for the watchers behind the one that
/// read it) and the bytes they hold.
#[derive(Default)]
struct Recalled {
    events: BTreeMap<Revision, Arc<Event>>,
    order: VecDeque<(Revision, tokio::time::Instant)>,
    bytes: usize,
}

impl Recalled {
    /// Drops the earliest read while `over` says the map holds too much.
    fn evict_while(&mut self, over: impl Fn(&Recalled, tokio::time::Instant) -> bool) {
        while let Some(&(rev, at)) = self.order.front() {
            if !over(self, at) {
                break;
            }
            self.order.pop_front();
            if let Some(old) = self.events.remove(&rev) {
                self.bytes -= old.size();
            }
        }
    }
}

/// How long an event read back for lagging watchers is kept: long enough for the watchers
/// behind the one that read it; then the bytes go back (the tailer's polls expire them on a
/// quiet server).
const RECALL_KEEP: Duration = Duration::from_secs(10);

/// How many events one read for lagging watchers asks for (the backend also stops a page at
/// its byte bound).
const RECALL_PAGE: usize = 64;

/// The in-memory side of the change feed of one store instance.
pub struct Feed {
    config: FeedConfig,
    ring: Mutex<Ring>,
    /// Replaced by [`Feed::reset`]: the old sender's watchers see the channel close.
    tx: Mutex<broadcast::Sender<Sent>>,
    latest: AtomicU64,
    /// Events that left the ring before some watcher got to them, read back from the database
    /// once and shared by every watcher that lags past them (bounded like the ring).
    recalled: Mutex<Recalled>,
    /// One database read for lagging watchers at a time: the others wait and then find what
    /// it read, instead of each reading (and holding) its own copy.
    recall_read: tokio::sync::Mutex<()>,
    /// Counts [`Feed::reset`]s. A watch remembers the value it subscribed under and sends no
    /// bookmark once it has moved: a reset raises `latest` past events that were never sent,
    /// and a bookmark at it would tell the client it had seen them.
    resets: AtomicU64,
}

impl Feed {
    /// A feed whose history starts after `start`.
    pub fn new(config: FeedConfig, start: Revision) -> Arc<Self> {
        let (tx, _) = broadcast::channel(config.channel_capacity.max(1));
        Arc::new(Feed {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(config.ring_capacity.min(4096)),
                bytes: 0,
            }),
            config,
            tx: Mutex::new(tx),
            recalled: Mutex::new(Recalled::default()),
            recall_read: tokio::sync::Mutex::new(()),
            latest: AtomicU64::new(start.0),
            resets: AtomicU64::new(0),
        })
    }

    /// The newest revision published.
    pub fn latest(&self) -> Revision {
        Revision(self.latest.load(Ordering::Acquire))
    }

    /// Publishes committed events; they must come in strictly increasing revision order, each
    /// above [`Feed::latest`]. Events at or below it are ignored (a re-read after a retry).
    pub fn publish(&self, events: Vec<Event>) {
        // The tailer publishes at every poll, events or not: read-back events expire here too
        // when the server is quiet.
        self.recalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evict_while(|_, at| at.elapsed() > RECALL_KEEP);
        for ev in events {
            if ev.revision <= self.latest() {
                continue;
            }
            let ev = Arc::new(ev);
            let rev = ev.revision;
            {
                let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
                if self.config.ring_capacity > 0 {
                    ring.bytes += ev.size();
                    ring.events.push_back(ev.clone());
                }
                while ring.events.len() > self.config.ring_capacity
                    || (ring.bytes > self.config.ring_max_bytes && !ring.events.is_empty())
                {
                    if let Some(old) = ring.events.pop_front() {
                        ring.bytes -= old.size();
                    }
                }
            }
            // No receivers is fine. The ring holds the event; the channel only points at it.
            let _ = self.sender().send(Sent {
                revision: rev,
                event: Arc::downgrade(&ev),
            });
            drop(ev);
            // Published after sending, so a watcher that reads `latest` and then finds its
            // channel empty has received everything up to it.
            self.latest.store(rev.0, Ordering::Release);
        }
    }

    fn sender(&self) -> broadcast::Sender<Sent> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The tailer found history it never saw compacted away: moves to `rev`, empties the ring and
    /// ends every current watch (their clients re-watch from their last revision, which then
    /// answers Gone if it is older than the compaction), so no watcher silently misses an event.
    pub fn reset(&self, rev: Revision) {
        // Counted before `latest` moves: a watch that reads the raised `latest` (Acquire, which
        // pairs with the AcqRel below) then sees the new count and sends no bookmark.
        self.resets.fetch_add(1, Ordering::AcqRel);
        let (tx, _) = broadcast::channel(self.config.channel_capacity.max(1));
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = tx;
        *self.ring.lock().unwrap_or_else(|p| p.into_inner()) = Ring::default();
        *self.recalled.lock().unwrap_or_else(|p| p.into_inner()) = Recalled::default();
        self.latest.fetch_max(rev.0, Ordering::AcqRel);
    }

    fn recalled(&self, rev: Revision) -> Option<Arc<Event>> {
        let recalled = self.recalled.lock().unwrap_or_else(|p| p.into_inner());
        recalled.events.get(&rev).cloned()
    }

    /// The event at `rev`, which has left the ring: from what lagging watchers already read
    /// back, or read from `history` with the events after it (one read at a time, shared).
    /// `Ok(None)`: the history no longer has it (compacted).
    async fn recall(&self, rev: Revision, history: &dyn History) -> Result<Option<Arc<Event>>> {
        if let Some(ev) = self.recalled(rev) {
            return Ok(Some(ev));
        }
        let _reading = self.recall_read.lock().await;
        if let Some(ev) = self.recalled(rev) {
            return Ok(Some(ev));
        }
        // Up to the ring, which still has the rest (`latest` moves after the send, so it may
        // not have reached `rev` yet).
        let front = self
            .ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .front()
            .map(|e| e.revision);
        let until = match front {
            Some(f) if f > rev => Revision(f.0 - 1),
            _ => self.latest().max(rev),
        };
        let page = history
            .events(Revision(rev.0.saturating_sub(1)), until, RECALL_PAGE)
            .await?;
        let mut found = None;
        let mut recalled = self.recalled.lock().unwrap_or_else(|p| p.into_inner());
        for ev in page {
            let ev = Arc::new(ev);
            if ev.revision == rev {
                found = Some(ev.clone());
            }
            if self.config.ring_capacity > 0 && !recalled.events.contains_key(&ev.revision) {
                recalled.bytes += ev.size();
                recalled
                    .order
                    .push_back((ev.revision, tokio::time::Instant::now()));
                recalled.events.insert(ev.revision, ev);
            }
        }
        // Twice the ring's bytes: a page read back (the backend stops one at about the ring's
        // bound) fits beside the previous one.
        let (count, bytes) = (self.config.ring_capacity, 2 * self.config.ring_max_bytes);
        recalled.evict_while(|r, at| {
            r.events.len() > count || r.bytes > bytes || at.elapsed() > RECALL_KEEP
        });
        Ok(found)
    }

    fn ring_after(&self, from: Revision) -> (Option<Revision>, Vec<Arc<Event>>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let first = ring.events.front().map(|e| e.revision);
        let events = ring
            .events
            .iter()
            .filter(|e| e.revision > from)
            .cloned()
            .collect();
        (first, events)
    }

    /// Starts a watch.
    pub fn watch(self: &Arc<Self>, req: WatchRequest, history: Arc<dyn History>) -> WatchStream {
        // Subscribed now, not at the first poll: events published from here on are the watch's
        // even if its reader starts later (it lags rather than misses them).
        let resets = self.resets.load(Ordering::Acquire);
        let rx = self.sender().subscribe();
        Box::pin(watch_stream(self.clone(), req, history, rx, resets))
    }
}

fn state_matches(key: &Key, state: &State, req: &WatchRequest) -> bool {
    req.labels.matches(&state.labels)
        && req.fields.matches(|f| {
            Some(match f {
                Field::Name => key.name.clone(),
                Field::Namespace => key.namespace.clone(),
                Field::Indexed(c) => state.columns.get(c).to_owned(),
            })
        })
}

/// What this watcher sees of an event, if anything.
pub(crate) fn project(ev: &Event, req: &WatchRequest) -> Option<WatchItem> {
    if ev.key.resource != req.resource {
        return None;
    }
    if let Some(ns) = &req.namespace
        && &ev.key.namespace != ns
    {
        return None;
    }
    let now = state_matches(&ev.key, &ev.current, req);
    let item = |kind, object: &Bytes| WatchItem::Event {
        kind,
        revision: ev.revision,
        object: object.clone(),
    };
    match ev.kind {
        EventKind::Added | EventKind::Deleted => now.then(|| item(ev.kind, &ev.current.object)),
        EventKind::Modified => {
            let before = ev
                .prev
                .as_ref()
                .is_some_and(|p| state_matches(&ev.key, p, req));
            match (now, before) {
                (true, true) => Some(item(EventKind::Modified, &ev.current.object)),
                (true, false) => Some(item(EventKind::Added, &ev.current.object)),
                (false, true) => {
                    // Left the selection: DELETED with the previous state at this revision.
                    let prev = ev.prev.as_ref()?;
                    let mut obj: serde_json::Value = serde_json::from_slice(&prev.object).ok()?;
                    crate::index::set_resource_version(&mut obj, ev.revision.0);
                    Some(WatchItem::Event {
                        kind: EventKind::Deleted,
                        revision: ev.revision,
                        object: Bytes::from(serde_json::to_vec(&obj).ok()?),
                    })
                }
                (false, false) => None,
            }
        }
    }
}

const HISTORY_PAGE: usize = 1000;

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What woke a live watch.
enum Wake {
    /// The deadline bookmark is due.
    Once,
    /// The broadcast channel had something.
    Received(std::result::Result<Sent, broadcast::error::RecvError>),
    /// The idle-bookmark tick.
    Tick,
}

/// One watch as a stream, polled by whoever reads it (the HTTP body that writes it to the
/// client): no task or channel of its own between the broadcast and the socket, so a delivery
/// wakes one task, and a watcher whose client stops reading falls behind the broadcast
/// channel and gets Gone.
fn watch_stream(
    feed: Arc<Feed>,
    req: WatchRequest,
    history: Arc<dyn History>,
    mut rx: broadcast::Receiver<Sent>,
    resets: u64,
) -> impl futures_core::Stream<Item = WatchItem> + Send {
    // True while no reset has happened since this watch subscribed; read after `latest`.
    let unreset = move |feed: &Feed| feed.resets.load(Ordering::Acquire) == resets;
    async_stream::stream! {
        // `rx` was subscribed before the past is looked at, so nothing committed in between is
        // missed.
        let mut last = req.from;
        let (ring_first, ring_events) = feed.ring_after(req.from);
        let latest = feed.latest();
        // Replay from the database whatever lies between `from` and the ring.
        let db_until = match ring_first {
            Some(first) => Revision(first.0.saturating_sub(1)),
            None => latest,
        };
        if req.from < db_until {
            match history.compacted().await {
                Ok(compacted) if req.from < compacted => {
                    yield WatchItem::Error(StoreError::Gone {
                        requested: req.from,
                        compacted,
                    });
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    yield WatchItem::Error(e);
                    return;
                }
            }
            while last < db_until {
                let page = match history.events(last, db_until, HISTORY_PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        yield WatchItem::Error(e);
                        return;
                    }
                };
                let Some(end) = page.last().map(|e| e.revision) else {
                    break;
                };
                for ev in &page {
                    if let Some(item) = project(ev, &req) {
                        yield item;
                    }
                }
                last = end;
            }
            last = last.max(db_until);
        }
        for ev in ring_events {
            if ev.revision <= last {
                continue;
            }
            last = ev.revision;
            if let Some(item) = project(&ev, &req) {
                yield item;
            }
        }
        let mut tick = tokio::time::interval(feed.config.bookmark_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let once_at = req
            .bookmark_after
            .filter(|_| req.bookmarks)
            .map(|d| tokio::time::Instant::now() + d);
        let mut once_pending = once_at.is_some();
        let mut once_due = false;
        // One timer for the whole watch: a new sleep per event would register and cancel a
        // timer at every delivery.
        let once_sleep = sleep_until_opt(once_at);
        tokio::pin!(once_sleep);
        loop {
            // The one-off bookmark goes out as soon as it is due and every event received so
            // far has been handled; `latest` is read before the channel is checked (see the
            // tick).
            if once_due {
                let latest = feed.latest();
                if !unreset(&feed) {
                    // This watch's channel is closed and ends it; no bookmark past what it got.
                    once_due = false;
                } else if rx.is_empty() {
                    once_due = false;
                    last = last.max(latest);
                    yield WatchItem::Bookmark(last);
                }
            }
            let wake = tokio::select! {
                _ = &mut once_sleep, if once_pending => Wake::Once,
                received = rx.recv() => Wake::Received(received),
                _ = tick.tick(), if req.bookmarks => Wake::Tick,
            };
            match wake {
                Wake::Once => {
                    once_pending = false;
                    once_due = true;
                }
                Wake::Received(Ok(sent)) => {
                    if sent.revision <= last {
                        continue;
                    }
                    if let Some(ev) = sent.event.upgrade() {
                        last = ev.revision;
                        if let Some(item) = project(&ev, &req) {
                            yield item;
                        }
                        continue;
                    }
                    // The event left the ring before this watch got to it: the watchers
                    // that lag past it share one copy read back from the database.
                    match feed.recall(sent.revision, history.as_ref()).await {
                        Ok(Some(ev)) => {
                            last = ev.revision;
                            if let Some(item) = project(&ev, &req) {
                                yield item;
                            }
                        }
                        Ok(None) => {
                            // Compacted meanwhile: the client must relist.
                            let compacted = history.compacted().await.unwrap_or(sent.revision);
                            yield WatchItem::Error(StoreError::Gone {
                                requested: last,
                                compacted,
                            });
                            return;
                        }
                        Err(e) => {
                            yield WatchItem::Error(e);
                            return;
                        }
                    }
                }
                Wake::Received(Err(broadcast::error::RecvError::Lagged(_))) => {
                    yield WatchItem::Error(StoreError::Gone {
                        requested: last,
                        compacted: feed.latest(),
                    });
                    return;
                }
                Wake::Received(Err(broadcast::error::RecvError::Closed)) => return,
                Wake::Tick => {
                    // Read `latest` first, then check the channel: if it is empty, every event
                    // up to `latest` has been received (publish sends before it stores
                    // `latest`).
                    let latest = feed.latest();
                    if unreset(&feed) && rx.is_empty() && latest >= last {
                        last = latest;
                        yield WatchItem::Bookmark(latest);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelSelector;

    fn state(labels: &[(&str, &str)], rev: u64) -> State {
        State {
            object: Bytes::from(format!(r#"{{"metadata":{{"resourceVersion":"{rev}"}}}}"#)),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            columns: Indexed::default(),
        }
    }

    fn ev(rev: u64, kind: EventKind, cur: &[(&str, &str)], prev: Option<&[(&str, &str)]>) -> Event {
        Event {
            revision: Revision(rev),
            kind,
            key: Key::new("pipelines", "ns", "a"),
            current: state(cur, rev),
            prev: prev.map(|p| state(p, rev - 1)),
        }
    }

    struct NoHistory;
    #[async_trait::async_trait]
    impl History for NoHistory {
        async fn events(&self, _: Revision, _: Revision, _: usize) -> Result<Vec<Event>> {
            Ok(Vec::new())
        }
        async fn compacted(&self) -> Result<Revision> {
            Ok(Revision(0))
        }
    }

    struct VecHistory(Vec<Event>);
    #[async_trait::async_trait]
    impl History for VecHistory {
        async fn events(
            &self,
            from: Revision,
            until: Revision,
            limit: usize,
        ) -> Result<Vec<Event>> {
            Ok(self
                .0
                .iter()
                .filter(|e| e.revision > from && e.revision <= until)
                .take(limit)
                .cloned()
                .collect())
        }
        async fn compacted(&self) -> Result<Revision> {
            Ok(Revision(0))
        }
    }

    /// Ten creates of 1 MiB objects, and a feed whose ring holds the last `kept` of them.
    fn large_events_and_feed(kept: usize) -> (Vec<Event>, Arc<Feed>) {
        let events: Vec<Event> = (1..=10)
            .map(|r| {
                let mut e = ev(r, EventKind::Added, &[], None);
                e.current.object = Bytes::from(vec![b' '; 1 << 20]);
                e
            })
            .collect();
        let feed = Feed::new(
            FeedConfig {
                ring_capacity: 100,
                ring_max_bytes: kept * events[0].size(),
                ..Default::default()
            },
            Revision(0),
        );
        (events, feed)
    }

    /// A watch in its live loop whose client reads nothing yet.
    async fn parked(feed: &Arc<Feed>, history: Arc<dyn History>) -> WatchStream {
        use tokio_stream::StreamExt;
        let mut w = feed.watch(req(""), history);
        let mut next = std::pin::pin!(w.next());
        std::future::poll_fn(|cx| {
            assert!(next.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        w
    }

    /// The revisions of the next `n` events of `w`.
    async fn revisions(w: &mut WatchStream, n: usize) -> Vec<u64> {
        use tokio_stream::StreamExt;
        let mut revs = Vec::new();
        while revs.len() < n {
            match w.next().await {
                Some(WatchItem::Event { revision, .. }) => revs.push(revision.0),
                other => panic!("{other:?}"),
            }
        }
        revs
    }

    #[tokio::test]
    async fn the_channel_pins_no_event_and_a_watcher_past_the_ring_reads_the_database() {
        let (events, feed) = large_events_and_feed(3);
        // A watch in its live loop whose client reads nothing yet, and a bare receiver.
        let mut w = parked(&feed, Arc::new(VecHistory(events.clone()))).await;
        let mut rx = feed.sender().subscribe();
        feed.publish(events);
        // Only the ring keeps events: the seven that left it are freed, whoever lags.
        let mut alive = Vec::new();
        while let Ok(sent) = rx.try_recv() {
            if sent.event.upgrade().is_some() {
                alive.push(sent.revision.0);
            }
        }
        assert_eq!(alive, [8, 9, 10]);
        // The watcher still gets every event once, in order: 1..=7 from the database.
        assert_eq!(revisions(&mut w, 10).await, (1..=10).collect::<Vec<_>>());
    }

    /// A history that counts its reads.
    struct Counted(VecHistory, std::sync::atomic::AtomicUsize);
    #[async_trait::async_trait]
    impl History for Counted {
        async fn events(
            &self,
            from: Revision,
            until: Revision,
            limit: usize,
        ) -> Result<Vec<Event>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.events(from, until, limit).await
        }
        async fn compacted(&self) -> Result<Revision> {
            self.0.compacted().await
        }
    }

    #[tokio::test]
    async fn watchers_lagging_past_the_ring_share_one_read_of_the_database() {
        let (events, feed) = large_events_and_feed(4);
        let history = Arc::new(Counted(
            VecHistory(events.clone()),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        // Five watches in their live loop whose clients read nothing yet.
        let mut watches = Vec::new();
        for _ in 0..5 {
            watches.push(parked(&feed, history.clone()).await);
        }
        feed.publish(events);
        // 1..=6 left the ring (it keeps 7..=10); every watcher gets all ten, in order.
        for w in &mut watches {
            assert_eq!(revisions(w, 10).await, (1..=10).collect::<Vec<_>>());
        }
        // One read of 1..=6 for all five, not one (or six) each.
        assert_eq!(history.1.load(Ordering::Relaxed), 1);
        // Kept for a while, then given back at the tailer's next (empty) publish.
        let held = || feed.recalled.lock().unwrap().events.len();
        assert_eq!(held(), 6);
        feed.publish(Vec::new());
        assert_eq!(held(), 6);
        tokio::time::pause();
        tokio::time::advance(RECALL_KEEP + Duration::from_secs(1)).await;
        feed.publish(Vec::new());
        assert_eq!(held(), 0);
        assert_eq!(feed.recalled.lock().unwrap().bytes, 0);
    }

    fn req(selector: &str) -> WatchRequest {
        WatchRequest {
            resource: "pipelines".into(),
            namespace: Some("ns".into()),
            labels: LabelSelector::parse(selector).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let r = req("team=a");
        let into = ev(
            2,
            EventKind::Modified,
            &[("team", "a")],
            Some(&[("team", "b")]),
        );
        assert!(matches!(
            project(&into, &r),
            Some(WatchItem::Event {
                kind: EventKind::Added,
                ..
            })
        ));
        let out = ev(
            3,
            EventKind::Modified,
            &[("team", "b")],
            Some(&[("team", "a")]),
        );
        match project(&out, &r) {
            Some(WatchItem::Event {
                kind: EventKind::Deleted,
                object,
                revision,
            }) => {
                assert_eq!(revision, Revision(3));
                let v: serde_json::Value = serde_json::from_slice(&object).unwrap();
                assert_eq!(
                    v["metadata"]["resourceVersion"], "3",
                    "DELETED carries the event's revision"
                );
            }
            other => panic!("{other:?}"),
        }
        let neither = ev(
            4,
            EventKind::Modified,
            &[("team", "c")],
            Some(&[("team", "b")]),
        );
        assert_eq!(project(&neither, &r), None);
        let mut other_ns = ev(5, EventKind::Added, &[("team", "a")], None);
        other_ns.key.namespace = "elsewhere".into();
        assert_eq!(project(&other_ns, &r), None);
    }

    #[tokio::test]
    async fn the_ring_is_bounded_in_bytes_and_older_events_replay_from_history() {
        use tokio_stream::StreamExt;
        let events: Vec<Event> = (1..=10)
            .map(|r| ev(r, EventKind::Added, &[], None))
            .collect();
        let size = events[0].size();
        let feed = Feed::new(
            FeedConfig {
                ring_capacity: 100,
                ring_max_bytes: 3 * size + size / 2,
                ..Default::default()
            },
            Revision(0),
        );
        feed.publish(events.clone());
        let (first, kept) = feed.ring_after(Revision(0));
        assert_eq!(first, Some(Revision(8)), "the newest three fit");
        assert_eq!(kept.len(), 3);
        assert!(feed.ring.lock().unwrap().bytes <= 3 * size + size / 2);
        // A watch from before the ring gets every event once, in order.
        let mut w = feed.watch(
            WatchRequest {
                from: Revision(0),
                ..req("")
            },
            Arc::new(VecHistory(events)),
        );
        let mut revs = Vec::new();
        while revs.len() < 10 {
            match w.next().await {
                Some(WatchItem::Event { revision, .. }) => revs.push(revision.0),
                Some(WatchItem::Bookmark(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(revs, (1..=10).collect::<Vec<_>>());
        // An event larger than the whole budget is not kept at all.
        let mut big = ev(11, EventKind::Added, &[], None);
        big.current.object = Bytes::from(vec![b' '; 4 * size]);
        feed.publish(vec![big]);
        assert_eq!(feed.ring_after(Revision(0)).0, None);
        assert_eq!(feed.ring.lock().unwrap().bytes, 0);
    }

    #[tokio::test]
    async fn subscribe_replay_then_live_without_duplicates_or_gaps() {
        use tokio_stream::StreamExt;
        let feed = Feed::new(FeedConfig::default(), Revision(0));
        feed.publish(vec![
            ev(1, EventKind::Added, &[], None),
            ev(2, EventKind::Modified, &[], Some(&[])),
        ]);
        let mut w = feed.watch(
            WatchRequest {
                from: Revision(1),
                ..req("")
            },
            Arc::new(NoHistory),
        );
        feed.publish(vec![ev(3, EventKind::Deleted, &[], None)]);
        let mut revs = Vec::new();
        while let Some(item) = w.next().await {
            if let WatchItem::Event { revision, .. } = item {
                revs.push(revision.0);
            }
            if revs.len() == 2 {
                break;
            }
        }
        assert_eq!(revs, vec![2, 3]);
    }

    #[tokio::test]
    async fn a_lagging_watcher_gets_gone_not_silence() {
        use tokio_stream::StreamExt;
        let config = FeedConfig {
            ring_capacity: 4,
            channel_capacity: 4,
            ..FeedConfig::default()
        };
        let feed = Feed::new(config, Revision(0));
        let mut w = feed.watch(req(""), Arc::new(NoHistory));
        // Let the watch task subscribe.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        feed.publish(
            (1..=400)
                .map(|r| ev(r, EventKind::Added, &[], None))
                .collect(),
        );
        let mut saw_gone = false;
        let mut count = 0;
        while let Some(item) = w.next().await {
            match item {
                WatchItem::Event { .. } => count += 1,
                WatchItem::Error(StoreError::Gone { .. }) => {
                    saw_gone = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            saw_gone,
            "after {count} events the watcher must be told it lagged"
        );
        assert!(count < 400);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_watchers_get_bookmarks_at_the_latest_revision() {
        use tokio_stream::StreamExt;
        let config = FeedConfig {
            bookmark_interval: Duration::from_secs(5),
            ..FeedConfig::default()
        };
        let feed = Feed::new(config, Revision(10));
        let mut w = feed.watch(
            WatchRequest {
                from: Revision(10),
                bookmarks: true,
                ..req("x=y")
            },
            Arc::new(NoHistory),
        );
        tokio::task::yield_now().await;
        feed.publish(vec![ev(11, EventKind::Added, &[], None)]);
        let item = w.next().await.unwrap();
        assert_eq!(
            item,
            WatchItem::Bookmark(Revision(11)),
            "filtered events still advance bookmarks"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_ends_watches_without_a_bookmark_past_what_they_got() {
        use tokio_stream::StreamExt;
        // When the reset's closed channel and a due bookmark wake a watch together, `select!`
        // takes them in a random order; many rounds take both orders.
        for round in 0..64 {
            let config = FeedConfig {
                bookmark_interval: Duration::from_secs(5),
                ..FeedConfig::default()
            };
            let feed = Feed::new(config, Revision(10));
            let mut w = feed.watch(
                WatchRequest {
                    from: Revision(10),
                    bookmarks: true,
                    bookmark_after: Some(Duration::from_secs(1)),
                    ..req("")
                },
                Arc::new(NoHistory),
            );
            feed.publish(vec![ev(11, EventKind::Added, &[], None)]);
            assert!(matches!(
                w.next().await,
                Some(WatchItem::Event {
                    revision: Revision(11),
                    ..
                })
            ));
            // The watch waits with its bookmark timers set; they fire.
            let mut next = std::pin::pin!(w.next());
            std::future::poll_fn(|cx| {
                assert!(next.as_mut().poll(cx).is_pending(), "nothing to send yet");
                std::task::Poll::Ready(())
            })
            .await;
            tokio::time::advance(Duration::from_secs(30)).await;
            // Then, before it runs again: history up to 20 was compacted before this instance
            // read it. The watch must end with nothing that claims 12..=20, so its client
            // resumes from 11 (and gets Gone).
            feed.reset(Revision(20));
            assert_eq!(feed.latest(), Revision(20));
            let rest: Vec<WatchItem> = w.collect().await;
            assert!(
                rest.iter()
                    .all(|i| !matches!(i, WatchItem::Bookmark(r) if *r > Revision(11))),
                "round {round}: {rest:?}"
            );
            // A watch started after the reset gets bookmarks at the new revision as usual.
            let mut w = feed.watch(
                WatchRequest {
                    from: Revision(20),
                    bookmarks: true,
                    ..req("")
                },
                Arc::new(NoHistory),
            );
            feed.publish(vec![ev(21, EventKind::Added, &[], None)]);
            assert!(matches!(
                w.next().await,
                Some(WatchItem::Event {
                    revision: Revision(21),
                    ..
                })
            ));
            tokio::time::advance(Duration::from_secs(6)).await;
            assert_eq!(w.next().await, Some(WatchItem::Bookmark(Revision(21))));
        }
    }
}
