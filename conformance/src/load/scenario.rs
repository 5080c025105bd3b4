//! The scenarios: `seed`, `create`, `get`, `list`, `watch-fanout`, `mixed` and `kfp-list`.
//!
//! Each worker holds its own connection (HTTP/1.1) or shares one of a few (HTTP/2) and sends
//! one request after another, as wrk does; a run ends after a duration or a count
//! ([`Budget`]). Every wait is bounded: requests by `--request-timeout`, watch fan-out by its
//! settle time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::stats::{ProcSample, Recorder, proc_samples};
use super::target::{Conn, Proto, Target};
use super::{GROUP_PATH, Report, ServerFigures};

/// When a run ends: after a duration, or after a number of operations (shared by all workers).
#[derive(Clone, Debug)]
pub enum Budget {
    /// Run for this long.
    Duration(Duration),
    /// Run this many operations in all.
    Count(u64),
}

struct Tickets {
    budget: Budget,
    start: Instant,
    taken: AtomicU64,
}

impl Tickets {
    fn new(budget: Budget) -> Arc<Tickets> {
        Arc::new(Tickets {
            budget,
            start: Instant::now(),
            taken: AtomicU64::new(0),
        })
    }

    /// The next operation's sequence number, or `None` when the budget is spent.
    fn take(&self) -> Option<u64> {
        match self.budget {
            Budget::Duration(d) => {
                if self.start.elapsed() >= d {
                    return None;
                }
                Some(self.taken.fetch_add(1, Ordering::Relaxed))
            }
            Budget::Count(n) => {
                let i = self.taken.fetch_add(1, Ordering::Relaxed);
                (i < n).then_some(i)
            }
        }
    }
}

/// A scenario and its own options.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// `P` Pipelines and `P x V` PipelineVersions named `PREFIX-i` and `PREFIX-i-vj`, the
    /// specs taken round-robin from the given IR files; existing objects are kept (resumable).
    Seed {
        /// Pipelines.
        pipelines: u64,
        /// Versions per pipeline.
        versions: u64,
    },
    /// New versions under `PREFIX-0`, with unique names.
    Create,
    /// GET of one version by name.
    Get {
        /// The version's name.
        name: String,
    },
    /// LIST of versions: the first page again and again, or (`full`) every page following
    /// `continue`.
    List {
        /// Page size.
        limit: u64,
        /// `labelSelector`.
        selector: Option<String>,
        /// Follow `continue` to the end; one operation is the whole list.
        full: bool,
    },
    /// W watchers of the namespace's Pipelines while one writer patches a label at a rate.
    WatchFanout {
        /// Watchers.
        watchers: usize,
        /// Label patches.
        writes: u64,
        /// Patches per second.
        rate: f64,
        /// Watch streams per HTTP/2 connection.
        streams_per_conn: usize,
        /// How long to wait for the last deliveries after the last write.
        settle: Duration,
    },
    /// Reads and writes together: 90% GET of a random seeded version, 9% LIST of 50 with a
    /// label selector, 1% create.
    Mixed {
        /// Seeded pipelines to pick from.
        pipelines: u64,
        /// Seeded versions per pipeline.
        versions: u64,
    },
    /// The KFP REST view's sorted, filtered pages, following `next_page_token`.
    KfpList {
        /// `page_size`.
        page_size: u64,
        /// Pages per walk (one operation is one page).
        pages: u64,
        /// `sort_by`.
        sort_by: String,
        /// A `display_name` substring filter.
        substring: Option<String>,
    },
}

impl Scenario {
    /// The scenario's name on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Seed { .. } => "seed",
            Scenario::Create => "create",
            Scenario::Get { .. } => "get",
            Scenario::List { full: false, .. } => "list",
            Scenario::List { full: true, .. } => "list-full",
            Scenario::WatchFanout { .. } => "watch-fanout",
            Scenario::Mixed { .. } => "mixed",
            Scenario::KfpList { .. } => "kfp-list",
        }
    }
}

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// Namespace of every object.
    pub namespace: String,
    /// Object name prefix.
    pub prefix: String,
    /// Concurrent workers (connections for HTTP/1.1).
    pub concurrency: usize,
    /// Wire protocol.
    pub proto: Proto,
    /// When the run ends.
    pub budget: Budget,
    /// IR files whose specs new versions carry (round-robin).
    pub specs: Vec<Spec>,
    /// Limit for one request.
    pub request_timeout: Duration,
}

/// A pipeline spec ready to be put in a PipelineVersion: `"pipelineSpec":{…}` and, when the
/// file has one, `,"platformSpec":{…}`, as JSON text.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The file it came from.
    pub file: String,
    json: String,
}

impl Spec {
    /// Reads a compiled pipeline (IR YAML: the PipelineSpec, then an optional PlatformSpec).
    pub fn load(path: &std::path::Path) -> Result<Spec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut docs = Vec::new();
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).map_err(|e| format!("{}: {e}", path.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        let mut it = docs.into_iter();
        let spec = it
            .next()
            .ok_or_else(|| format!("{}: empty", path.display()))?;
        let mut json = format!("\"pipelineSpec\":{spec}");
        if let Some(platform) = it.next() {
            json.push_str(&format!(",\"platformSpec\":{platform}"));
        }
        Ok(Spec {
            file: path.display().to_string(),
            json,
        })
    }

    /// Size of the spec's JSON.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the spec is empty (never, for a loaded one).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

fn version_body(name: &str, pipeline: &str, team: u64, spec: &Spec) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"pipelines.kubeflow.org/v2beta1","kind":"PipelineVersion","metadata":{{"name":"{name}","labels":{{"team":"t{team}"}}}},"spec":{{"pipelineName":"{pipeline}",{}}}}}"#,
        spec.json
    ))
}

fn pipeline_body(name: &str) -> Bytes {
    Bytes::from(
        json!({"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline",
               "metadata": {"name": name}, "spec": {"displayName": format!("load {name}"),
               "description": "made by kfp-load"}})
        .to_string(),
    )
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// What one request got.
struct Answer {
    status: u16,
    body: Option<Bytes>,
    len: u64,
}

/// Sends `req` and reads the whole answer, keeping the body when `keep`.
async fn exchange(
    conn: &mut Conn,
    req: http::Request<http_body_util::Full<Bytes>>,
    keep: bool,
    limit: Duration,
) -> Result<Answer, String> {
    let fut = async {
        let resp = conn.send(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if keep {
            let b = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            return Ok(Answer {
                status,
                len: b.len() as u64,
                body: Some(b),
            });
        }
        let mut len = 0u64;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.map_err(|e| e.to_string())?.into_data() {
                len += d.len() as u64;
            }
        }
        Ok(Answer {
            status,
            body: None,
            len,
        })
    };
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// One worker's connection, reopened after a transport error.
struct Worker {
    target: Target,
    proto: Proto,
    conn: Option<Conn>,
    limit: Duration,
}

impl Worker {
    fn new(target: &Target, proto: Proto, limit: Duration) -> Worker {
        Worker {
            target: target.clone(),
            proto,
            conn: None,
            limit,
        }
    }

    async fn call(
        &mut self,
        rec: &mut Recorder,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: Bytes,
        keep: bool,
    ) -> Option<Answer> {
        if self.conn.as_ref().is_none_or(Conn::is_closed) {
            match self.target.connect(self.proto).await {
                Ok(c) => self.conn = Some(c),
                Err(_) => {
                    rec.failure("connect");
                    return None;
                }
            }
        }
        let conn = self.conn.as_mut()?;
        let req = self.target.request(method, path, ct, body);
        let t = Instant::now();
        match exchange(conn, req, keep, self.limit).await {
            Ok(a) => {
                rec.record(a.status, t.elapsed(), a.len);
                Some(a)
            }
            Err(e) => {
                rec.failure(if e == "timeout" {
                    "timeout"
                } else {
                    "transport"
                });
                self.conn = None;
                None
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    cont: Option<String>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct ListHead {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ObjectHead {
    metadata: ListMeta,
}

/// Runs `scenario` against `target` and measures it.
pub async fn run(target: &Target, common: &Common, scenario: &Scenario) -> Result<Report, String> {
    let before = proc_samples(&target.pids);
    let mut extra = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    let (mut rec, ops, elapsed) = match scenario {
        Scenario::Seed {
            pipelines,
            versions,
        } => seed(target, common, *pipelines, *versions, &mut extra).await?,
        Scenario::Create => create(target, common).await?,
        Scenario::Get { name } => {
            let path = format!(
                "{GROUP_PATH}/namespaces/{}/pipelineversions/{name}",
                common.namespace
            );
            same_get(target, common, path).await
        }
        Scenario::List {
            limit,
            selector,
            full: false,
        } => {
            let path = versions_page(common, *limit, selector.as_deref());
            same_get(target, common, path).await
        }
        Scenario::List {
            limit,
            selector,
            full: true,
        } => list_full(target, common, *limit, selector.as_deref(), &mut extra).await,
        Scenario::WatchFanout {
            watchers,
            writes,
            rate,
            streams_per_conn,
            settle,
        } => {
            fanout(
                target,
                common,
                *watchers,
                *writes,
                *rate,
                *streams_per_conn,
                *settle,
                before,
                &mut extra,
            )
            .await?
        }
        Scenario::Mixed {
            pipelines,
            versions,
        } => mixed(target, common, *pipelines, *versions, &mut extra).await?,
        Scenario::KfpList {
            page_size,
            pages,
            sort_by,
            substring,
        } => {
            kfp_list(
                target,
                common,
                *page_size,
                *pages,
                sort_by,
                substring.as_deref(),
                &mut extra,
            )
            .await
        }
    };
    let elapsed = elapsed.unwrap_or_else(|| t0.elapsed());
    let after = proc_samples(&target.pids);
    let ops = ops.unwrap_or(rec.samples() as u64);
    let ok = rec.ok();
    let bytes = rec.bytes;
    let latency = rec.latency();
    let concurrency = match scenario {
        Scenario::WatchFanout { watchers, .. } => *watchers,
        _ => common.concurrency,
    };
    Ok(Report {
        scenario: scenario.name().to_owned(),
        target: target.label.clone(),
        proto: common.proto,
        concurrency,
        ops,
        ok: ok.min(ops),
        errors: rec.errors(),
        duration_s: elapsed.as_secs_f64(),
        throughput: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: latency,
        bytes_per_op: if ops > 0 {
            bytes as f64 / ops as f64
        } else {
            0.0
        },
        server: before
            .zip(after)
            .map(|(b, a)| ServerFigures::between(b, a, ops)),
        extra,
    })
}

type Outcome = (Recorder, Option<u64>, Option<Duration>);

/// C workers, each sending what `make(worker, seq)` builds until the budget is spent.
/// The first page of the namespace's versions, optionally by label selector.
fn versions_page(common: &Common, limit: u64, selector: Option<&str>) -> String {
    let mut path = format!(
        "{GROUP_PATH}/namespaces/{}/pipelineversions?limit={limit}",
        common.namespace
    );
    if let Some(s) = selector {
        path.push_str(&format!("&labelSelector={}", enc(s)));
    }
    path
}

/// GET of one path, again and again.
async fn same_get(target: &Target, common: &Common, path: String) -> Outcome {
    simple(target, common, move |_, _| {
        (Method::GET, path.clone(), None, Bytes::new())
    })
    .await
}

async fn simple<F>(target: &Target, common: &Common, make: F) -> Outcome
where
    F: Fn(usize, u64) -> (Method, String, Option<&'static str>, Bytes) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let tickets = Tickets::new(common.budget.clone());
    let mut tasks = Vec::new();
    for w in 0..common.concurrency {
        let (make, tickets) = (make.clone(), tickets.clone());
        let mut worker = Worker::new(target, common.proto, common.request_timeout);
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            while let Some(i) = tickets.take() {
                let (m, path, ct, body) = make(w, i);
                worker.call(&mut rec, m, &path, ct, body, false).await;
            }
            rec
        }));
    }
    let mut rec = Recorder::default();
    for t in tasks {
        if let Ok(r) = t.await {
            rec.merge(r);
        }
    }
    (rec, None, None)
}

/// Creates the namespace on servers that have namespaces (a kube-apiserver); ours answers 404.
async fn ensure_namespace(target: &Target, common: &Common) -> Result<(), String> {
    let mut w = Worker::new(target, common.proto, common.request_timeout);
    let mut rec = Recorder::default();
    let body =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": common.namespace}})
            .to_string();
    let a = w
        .call(
            &mut rec,
            Method::POST,
            "/api/v1/namespaces",
            Some("application/json"),
            body.into(),
            false,
        )
        .await;
    match a.map(|a| a.status) {
        Some(201 | 404 | 409) => Ok(()),
        other => Err(format!(
            "creating namespace {}: {other:?}",
            common.namespace
        )),
    }
}

async fn ensure_pipeline(target: &Target, common: &Common, name: &str) -> Result<(), String> {
    let mut w = Worker::new(target, common.proto, common.request_timeout);
    let mut rec = Recorder::default();
    let path = format!("{GROUP_PATH}/namespaces/{}/pipelines", common.namespace);
    match w
        .call(
            &mut rec,
            Method::POST,
            &path,
            Some("application/json"),
            pipeline_body(name),
            false,
        )
        .await
        .map(|a| a.status)
    {
        Some(201 | 409) => Ok(()),
        other => Err(format!("creating pipeline {name}: {other:?}")),
    }
}

async fn seed(
    target: &Target,
    common: &Common,
    pipelines: u64,
    versions: u64,
    extra: &mut std::collections::BTreeMap<String, Value>,
) -> Result<Outcome, String> {
    ensure_namespace(target, common).await?;
    let ns = &common.namespace;
    let prefix = common.prefix.clone();
    let one = |n: u64| Common {
        budget: Budget::Count(n),
        ..common.clone()
    };
    let p_path = format!("{GROUP_PATH}/namespaces/{ns}/pipelines");
    let pfx = prefix.clone();
    let (mut rec, _, _) = simple(target, &one(pipelines), move |_, i| {
        (
            Method::POST,
            p_path.clone(),
            Some("application/json"),
            pipeline_body(&format!("{pfx}-{i}")),
        )
    })
    .await;
    let v_path = format!("{GROUP_PATH}/namespaces/{ns}/pipelineversions");
    let specs = common.specs.clone();
    let t = Instant::now();
    let (vrec, _, _) = simple(target, &one(pipelines * versions), move |_, k| {
        let (p, v) = (k / versions.max(1), k % versions.max(1));
        let spec = &specs[(k as usize) % specs.len()];
        let body = version_body(
            &format!("{prefix}-{p}-v{v}"),
            &format!("{prefix}-{p}"),
            k % 10,
            spec,
        );
        (Method::POST, v_path.clone(), Some("application/json"), body)
    })
    .await;
    extra.insert(
        "versions_per_s".into(),
        json!(((pipelines * versions) as f64 / t.elapsed().as_secs_f64()).round()),
    );
    rec.merge(vrec);
    // Objects that already existed are kept: a second seed is a no-op, not an error.
    let existing = rec.outcomes.remove("409").unwrap_or(0);
    if existing > 0 {
        rec.outcomes.insert(super::stats::EXISTED.into(), existing);
    }
    extra.insert("already_existed".into(), json!(existing));
    extra.insert(
        "created".into(),
        json!(rec.outcomes.get("201").copied().unwrap_or(0)),
    );
    Ok((rec, None, None))
}

fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:x}", ms % 0xff_ffff_ffff)
}

async fn create(target: &Target, common: &Common) -> Result<Outcome, String> {
    ensure_namespace(target, common).await?;
    let pipeline = format!("{}-0", common.prefix);
    ensure_pipeline(target, common, &pipeline).await?;
    let path = format!(
        "{GROUP_PATH}/namespaces/{}/pipelineversions",
        common.namespace
    );
    let (specs, id, prefix) = (common.specs.clone(), run_id(), common.prefix.clone());
    Ok(simple(target, common, move |w, i| {
        let spec = &specs[(i as usize) % specs.len()];
        let body = version_body(&format!("{prefix}-c{id}-{w}-{i}"), &pipeline, i % 10, spec);
        (Method::POST, path.clone(), Some("application/json"), body)
    })
    .await)
}

async fn list_full(
    target: &Target,
    common: &Common,
    limit: u64,
    selector: Option<&str>,
    extra: &mut std::collections::BTreeMap<String, Value>,
) -> Outcome {
    let base = versions_page(common, limit, selector);
    let tickets = Tickets::new(common.budget.clone());
    let (pages, items) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..common.concurrency {
        let (tickets, base, pages, items) =
            (tickets.clone(), base.clone(), pages.clone(), items.clone());
        let mut worker = Worker::new(target, common.proto, common.request_timeout);
        tasks.push(tokio::spawn(async move {
            let (mut lists, mut page_rec) = (Recorder::default(), Recorder::default());
            while tickets.take().is_some() {
                let t = Instant::now();
                let mut cont: Option<String> = None;
                let mut failed = None;
                // A full list ends at an empty continue; 100,000 pages is a bound, not a size.
                for _ in 0..100_000 {
                    let path = match &cont {
                        Some(c) => format!("{base}&continue={}", enc(c)),
                        None => base.clone(),
                    };
                    let Some(a) = worker
                        .call(&mut page_rec, Method::GET, &path, None, Bytes::new(), true)
                        .await
                    else {
                        failed = Some("transport".to_owned());
                        break;
                    };
                    if a.status != 200 {
                        failed = Some(a.status.to_string());
                        break;
                    }
                    let head: ListHead =
                        match serde_json::from_slice(a.body.as_deref().unwrap_or_default()) {
                            Ok(h) => h,
                            Err(_) => {
                                failed = Some("bad-body".into());
                                break;
                            }
                        };
                    pages.fetch_add(1, Ordering::Relaxed);
                    items.fetch_add(head.items.len() as u64, Ordering::Relaxed);
                    lists.bytes += a.len;
                    cont = head.metadata.cont.filter(|c| !c.is_empty());
                    if cont.is_none() {
                        break;
                    }
                }
                match failed {
                    None => lists.record(200, t.elapsed(), 0),
                    Some(f) => lists.failure(&f),
                }
            }
            (lists, page_rec)
        }));
    }
    let (mut rec, mut page_rec) = (Recorder::default(), Recorder::default());
    for t in tasks {
        if let Ok((l, p)) = t.await {
            rec.merge(l);
            page_rec.merge(p);
        }
    }
    let lists = rec.samples().max(1) as u64;
    extra.insert("pages".into(), json!(pages.load(Ordering::Relaxed)));
    extra.insert(
        "items_per_list".into(),
        json!(items.load(Ordering::Relaxed) / lists),
    );
    extra.insert("page_p99_ms".into(), json!(page_rec.latency().p99));
    (rec, None, None)
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: ObjectHead,
}

/// What one watcher saw: (resourceVersion, when) of each MODIFIED event.
type Seen = Vec<(u64, Instant)>;

#[allow(clippy::too_many_arguments)]
async fn fanout(
    target: &Target,
    common: &Common,
    watchers: usize,
    writes: u64,
    rate: f64,
    streams_per_conn: usize,
    settle: Duration,
    before: Option<ProcSample>,
    extra: &mut std::collections::BTreeMap<String, Value>,
) -> Result<Outcome, String> {
    ensure_namespace(target, common).await?;
    let name = format!("{}-fanout", common.prefix);
    ensure_pipeline(target, common, &name).await?;
    let ns = common.namespace.clone();
    let limit = common.request_timeout;
    // The revision to watch from: the list's, so every watcher starts at the same point.
    let mut w = Worker::new(target, common.proto, limit);
    let mut scratch = Recorder::default();
    let list = format!("{GROUP_PATH}/namespaces/{ns}/pipelines?limit=1");
    let a = w
        .call(&mut scratch, Method::GET, &list, None, Bytes::new(), true)
        .await
        .ok_or("list for the start revision failed")?;
    let head: ListHead = serde_json::from_slice(a.body.as_deref().unwrap_or_default())
        .map_err(|e| format!("list: {e}"))?;
    let rv = head
        .metadata
        .resource_version
        .ok_or("list has no resourceVersion")?;
    let watch_path = format!(
        "{GROUP_PATH}/namespaces/{ns}/pipelines?watch=true&resourceVersion={rv}&fieldSelector={}&timeoutSeconds=3600",
        enc(&format!("metadata.name={name}"))
    );

    // Connect every watcher, 64 handshakes at a time.
    let connected = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut h2_conns: Vec<Conn> = Vec::new();
    if common.proto == Proto::Http2 {
        for _ in 0..watchers.div_ceil(streams_per_conn.max(1)) {
            h2_conns.push(target.connect(Proto::Http2).await?);
        }
    }
    let connect_start = Instant::now();
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let shared = h2_conns
            .get(i / streams_per_conn.max(1))
            .and_then(Conn::share);
        let (target, path, connected, gate, mut stop) = (
            target.clone(),
            watch_path.clone(),
            connected.clone(),
            gate.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut conn = match shared {
                Some(c) => c,
                None => match target.connect(Proto::Http1).await {
                    Ok(c) => c,
                    Err(_) => return Err("connect"),
                },
            };
            let req = target.request(Method::GET, &path, None, Bytes::new());
            let resp = match tokio::time::timeout(limit, conn.send(req)).await {
                Ok(Ok(r)) if r.status() == 200 => r,
                Ok(Ok(_)) => return Err("status"),
                _ => return Err("transport"),
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.into_body();
            let mut lines = Lines::default();
            let mut seen: Seen = Vec::with_capacity(writes as usize);
            // One wait on the stop signal for the whole watch, not one per frame.
            let stopped = stop.wait_for(|s| *s);
            tokio::pin!(stopped);
            loop {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = &mut stopped => break,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                lines.feed(&data, Instant::now(), &mut seen);
                if seen.len() as u64 >= writes {
                    break;
                }
            }
            Ok(seen)
        }));
    }
    // All watchers connect, or the run stops waiting (one request timeout per 1,000 watchers).
    let connect_deadline = Instant::now() + limit * (1 + (watchers / 1000) as u32);
    while connected.load(Ordering::Relaxed) < watchers && Instant::now() < connect_deadline {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n_connected = connected.load(Ordering::Relaxed);
    extra.insert("watchers_connected".into(), json!(n_connected));
    extra.insert(
        "connect_s".into(),
        json!((connect_start.elapsed().as_secs_f64() * 100.0).round() / 100.0),
    );
    if let Some(b) = before {
        // Let the server finish setting the watches up before reading its memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(idle) = proc_samples(&target.pids) {
            let per = (idle.rss_kib.saturating_sub(b.rss_kib) * 1024) / n_connected.max(1) as u64;
            extra.insert("rss_bytes_per_idle_watcher".into(), json!(per));
        }
    }

    // The writer: one connection, label patches paced at `rate`.
    let mut writer = Worker::new(target, common.proto, limit);
    let mut wrec = Recorder::default();
    let patch_path = format!("{GROUP_PATH}/namespaces/{ns}/pipelines/{name}");
    let mut acks: HashMap<u64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let write_start = Instant::now();
    let mut last_write = write_start;
    for i in 0..writes {
        tick.tick().await;
        last_write = Instant::now();
        let body = json!({"metadata": {"labels": {"kfp-load-seq": format!("{}-{i}", run_id())}}})
            .to_string();
        if let Some(a) = writer
            .call(
                &mut wrec,
                Method::PATCH,
                &patch_path,
                Some("application/merge-patch+json"),
                body.into(),
                true,
            )
            .await
            && a.status == 200
            && let Ok(o) =
                serde_json::from_slice::<ObjectHead>(a.body.as_deref().unwrap_or_default())
            && let Some(rv) = o.metadata.resource_version.and_then(|r| r.parse().ok())
        {
            acks.insert(rv, Instant::now());
        }
    }
    let write_span = last_write.duration_since(write_start).as_secs_f64();
    // Deliveries still in flight get `settle` after the last write; then every watcher stops.
    let settle_end = Instant::now() + settle;
    while Instant::now() < settle_end && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut rec = Recorder::default();
    let mut delivered = 0u64;
    let mut early = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(seen)) => {
                for (rv, at) in seen {
                    if let Some(ack) = acks.get(&rv) {
                        delivered += 1;
                        if at < *ack {
                            early += 1;
                        }
                        rec.sample(at.saturating_duration_since(*ack));
                    }
                }
            }
            Ok(Err(e)) => rec.failure(e),
            Err(_) => rec.failure("panic"),
        }
    }
    let expected = acks.len() as u64 * n_connected as u64;
    *rec.outcomes.entry("200".into()).or_default() += delivered;
    if expected > delivered {
        *rec.outcomes.entry("undelivered".into()).or_default() += expected - delivered;
    }
    let wlat = wrec.latency();
    extra.insert("writes_acked".into(), json!(acks.len()));
    extra.insert("write_errors".into(), json!(wrec.errors()));
    extra.insert(
        "write_rate_per_s".into(),
        json!(if writes > 1 && write_span > 0.0 {
            ((writes - 1) as f64 / write_span * 100.0).round() / 100.0
        } else {
            0.0
        }),
    );
    extra.insert("write_p99_ms".into(), json!(wlat.p99));
    extra.insert("delivered".into(), json!(delivered));
    extra.insert("expected".into(), json!(expected));
    extra.insert("delivered_before_ack".into(), json!(early));
    Ok((rec, Some(delivered), Some(write_start.elapsed())))
}

/// A watch stream cut into lines: whole lines are parsed where they lie in a frame, and only
/// a line's unfinished tail is kept for the next frame.
#[derive(Default)]
struct Lines {
    tail: Vec<u8>,
}

impl Lines {
    /// Records each MODIFIED event completed by `data`, seen at `now`.
    fn feed(&mut self, data: &[u8], now: Instant, seen: &mut Seen) {
        if self.tail.is_empty() {
            let rest = watch_lines(data, now, seen);
            self.tail.extend_from_slice(rest);
        } else {
            self.tail.extend_from_slice(data);
            let used = self.tail.len() - watch_lines(&self.tail, now, seen).len();
            self.tail.drain(..used);
        }
    }
}

/// Records each MODIFIED event among the whole lines of `data`, seen at `now`; returns the
/// unfinished tail after the last newline.
fn watch_lines<'a>(data: &'a [u8], now: Instant, seen: &mut Seen) -> &'a [u8] {
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        if let Ok(ev) = serde_json::from_slice::<WatchEvent>(&rest[..nl])
            && ev.kind == "MODIFIED"
            && let Some(rv) = ev
                .object
                .metadata
                .resource_version
                .and_then(|r| r.parse().ok())
        {
            seen.push((rv, now));
        }
        rest = &rest[nl + 1..];
    }
    rest
}

/// A small xorshift generator: the mix of a run, not security.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn mixed(
    target: &Target,
    common: &Common,
    pipelines: u64,
    versions: u64,
    extra: &mut std::collections::BTreeMap<String, Value>,
) -> Result<Outcome, String> {
    ensure_namespace(target, common).await?;
    let ns = common.namespace.clone();
    let tickets = Tickets::new(common.budget.clone());
    let id = run_id();
    let mut tasks = Vec::new();
    for w in 0..common.concurrency {
        let (tickets, ns, id, prefix, specs) = (
            tickets.clone(),
            ns.clone(),
            id.clone(),
            common.prefix.clone(),
            common.specs.clone(),
        );
        let mut worker = Worker::new(target, common.proto, common.request_timeout);
        tasks.push(tokio::spawn(async move {
            let mut recs = [Recorder::default(), Recorder::default(), Recorder::default()];
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
            while let Some(i) = tickets.take() {
                let roll = next(&mut rng) % 100;
                let (p, v) = (next(&mut rng) % pipelines.max(1), next(&mut rng) % versions.max(1));
                if roll < 90 {
                    let path = format!("{GROUP_PATH}/namespaces/{ns}/pipelineversions/{prefix}-{p}-v{v}");
                    worker.call(&mut recs[0], Method::GET, &path, None, Bytes::new(), false).await;
                } else if roll < 99 {
                    let path = format!("{GROUP_PATH}/namespaces/{ns}/pipelineversions?limit=50&labelSelector=team%3Dt{}", i % 10);
                    worker.call(&mut recs[1], Method::GET, &path, None, Bytes::new(), false).await;
                } else {
                    let path = format!("{GROUP_PATH}/namespaces/{ns}/pipelineversions");
                    let spec = &specs[(i as usize) % specs.len()];
                    let body = version_body(&format!("{prefix}-m{id}-{w}-{i}"), &format!("{prefix}-{p}"), i % 10, spec);
                    worker.call(&mut recs[2], Method::POST, &path, Some("application/json"), body, false).await;
                }
            }
            recs
        }));
    }
    let mut all = [
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    ];
    for t in tasks {
        if let Ok(recs) = t.await {
            for (a, r) in all.iter_mut().zip(recs) {
                a.merge(r);
            }
        }
    }
    let mut rec = Recorder::default();
    for (name, mut r) in ["get", "list50", "create"].into_iter().zip(all) {
        let l = r.latency();
        extra.insert(format!("{name}_ops"), json!(r.samples()));
        extra.insert(format!("{name}_p99_ms"), json!(l.p99));
        rec.merge(r);
    }
    Ok((rec, None, None))
}

#[derive(Deserialize)]
struct KfpPage {
    #[serde(default)]
    pipelines: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    total_size: Option<u64>,
    #[serde(default)]
    next_page_token: Option<String>,
}

async fn kfp_list(
    target: &Target,
    common: &Common,
    page_size: u64,
    pages: u64,
    sort_by: &str,
    substring: Option<&str>,
    extra: &mut std::collections::BTreeMap<String, Value>,
) -> Outcome {
    let mut base = format!(
        "/apis/v2beta1/pipelines?namespace={}&page_size={page_size}&sort_by={}",
        common.namespace,
        enc(sort_by)
    );
    if let Some(s) = substring {
        let filter = json!({"predicates": [{"key": "display_name", "operation": "IS_SUBSTRING", "string_value": s}]});
        base.push_str(&format!("&filter={}", enc(&filter.to_string())));
    }
    let tickets = Tickets::new(common.budget.clone());
    let (items, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..common.concurrency {
        let (tickets, base, items, total) =
            (tickets.clone(), base.clone(), items.clone(), total.clone());
        let mut worker = Worker::new(target, common.proto, common.request_timeout);
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            'walks: while tickets.take().is_some() {
                let mut token: Option<String> = None;
                for _ in 0..pages.max(1) {
                    let path = match &token {
                        Some(t) => format!("{base}&page_token={}", enc(t)),
                        None => base.clone(),
                    };
                    let Some(a) = worker
                        .call(&mut rec, Method::GET, &path, None, Bytes::new(), true)
                        .await
                    else {
                        continue 'walks;
                    };
                    if a.status != 200 {
                        continue 'walks;
                    }
                    let Ok(page) =
                        serde_json::from_slice::<KfpPage>(a.body.as_deref().unwrap_or_default())
                    else {
                        rec.failure("bad-body");
                        continue 'walks;
                    };
                    items.fetch_add(page.pipelines.len() as u64, Ordering::Relaxed);
                    if let Some(t) = page.total_size {
                        total.store(t, Ordering::Relaxed);
                    }
                    token = page.next_page_token.filter(|t| !t.is_empty());
                    if token.is_none() {
                        break;
                    }
                }
            }
            rec
        }));
    }
    let mut rec = Recorder::default();
    for t in tasks {
        if let Ok(r) = t.await {
            rec.merge(r);
        }
    }
    extra.insert("items".into(), json!(items.load(Ordering::Relaxed)));
    extra.insert("total_size".into(), json!(total.load(Ordering::Relaxed)));
    (rec, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_reads_whole_lines_and_keeps_the_tail() {
        let now = Instant::now();
        let mut seen = Seen::new();
        let ev = |t: &str, rv: u64| {
            format!(r#"{{"type":"{t}","object":{{"metadata":{{"resourceVersion":"{rv}"}}}}}}"#)
        };
        let stream = format!(
            "{}\n{}\n{}\n{}\n",
            ev("ADDED", 1),
            ev("MODIFIED", 2),
            ev("BOOKMARK", 3),
            ev("MODIFIED", 4)
        );
        // Every split point, as two frames.
        for cut in 0..=stream.len() {
            seen.clear();
            let mut lines = Lines::default();
            let (a, b) = stream.as_bytes().split_at(cut);
            lines.feed(a, now, &mut seen);
            lines.feed(b, now, &mut seen);
            let revs: Vec<u64> = seen.iter().map(|(rv, _)| *rv).collect();
            assert_eq!(revs, [2, 4], "split at {cut}");
            assert!(lines.tail.is_empty(), "split at {cut}: {:?}", lines.tail);
        }
    }
}
