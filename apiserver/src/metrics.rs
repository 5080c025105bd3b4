//! Prometheus metrics with kube-apiserver's names where they apply:
//! `apiserver_request_total{verb,resource,code}`, `apiserver_request_duration_seconds{verb,resource}`
//! and `apiserver_longrunning_requests{verb,resource}` (open watches). Rendered in the text
//! format at `/metrics` by `prometheus-client`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbResource {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchEventLabels {
    resource: String,
    r#type: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<VerbResource, Histogram>,
    longrunning: Family<VerbResource, Gauge>,
    store: Family<OperationLabels, Histogram>,
    watch_events: Family<WatchEventLabels, Counter>,
}

/// One watch's `apiserver_watch_events` counters, by event type.
pub struct WatchEvents {
    family: Family<WatchEventLabels, Counter>,
    resource: &'static str,
    by_kind: [Option<Counter>; 3],
}

impl WatchEvents {
    /// Counts one event sent to this watch's client.
    pub fn inc(&mut self, kind: kfp_storage::EventKind) {
        let slot = match kind {
            kfp_storage::EventKind::Added => 0,
            kfp_storage::EventKind::Modified => 1,
            kfp_storage::EventKind::Deleted => 2,
        };
        let (family, resource) = (&self.family, self.resource);
        self.by_kind[slot]
            .get_or_insert_with(|| {
                family
                    .get_or_create(&WatchEventLabels {
                        resource: resource.to_owned(),
                        r#type: kind.as_str().to_owned(),
                    })
                    .clone()
            })
            .inc();
    }
}

/// Decrements the open-watch gauge when the watch ends.
pub struct WatchGuard {
    gauge: Gauge,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<VerbResource, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        let longrunning = Family::<VerbResource, Gauge>::default();
        let store = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        let watch_events = Family::<WatchEventLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource.",
            duration.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches).",
            longrunning.clone(),
        );
        registry.register(
            "kfp_store_operation_duration_seconds",
            "Store operation latency by operation and result (ok or the error kind).",
            store.clone(),
        );
        registry.register(
            "apiserver_watch_events",
            "Number of events sent to watch clients, by resource and event type.",
            watch_events.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            duration,
            longrunning,
            store,
            watch_events,
        })
    }

    /// Records one finished request. Kubernetes verbs are upper-cased as kube-apiserver's
    /// metrics have them (`LIST`); KFP operations keep their RPC names (`ListPipelines`).
    pub fn observe(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        let verb = if verb.chars().any(|c| c.is_ascii_uppercase()) {
            verb.to_owned()
        } else {
            verb.to_uppercase()
        };
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.clone(),
                resource: resource.to_owned(),
                code: code.to_string(),
            })
            .inc();
        if verb != "WATCH" {
            self.duration
                .get_or_create(&VerbResource {
                    verb,
                    resource: resource.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// Records one store operation.
    pub fn observe_store(&self, operation: &str, result: &str, seconds: f64) {
        self.store
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
                result: result.to_owned(),
            })
            .observe(seconds);
    }

    /// The event counters of one watch: each series is looked up once per watch and event
    /// type, not once per delivery (a write to 10,000 watchers would otherwise take the
    /// family's lock and allocate its labels 10,000 times).
    pub fn watch_events(&self, resource: &'static str) -> WatchEvents {
        WatchEvents {
            family: self.watch_events.clone(),
            resource,
            by_kind: [None, None, None],
        }
    }

    /// Counts an open watch until the guard drops.
    pub fn watch_started(&self, resource: &str) -> WatchGuard {
        let gauge = self
            .longrunning
            .get_or_create(&VerbResource {
                verb: "WATCH".into(),
                resource: resource.to_owned(),
            })
            .clone();
        gauge.inc();
        WatchGuard { gauge }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kube_apiserver_names() {
        let m = Metrics::new();
        m.observe("get", "pipelines", 200, 0.01);
        let g = m.watch_started("pipelines");
        let text = m.render();
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"GET\",resource=\"pipelines\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_bucket"));
        assert!(
            text.contains(
                "apiserver_longrunning_requests{verb=\"WATCH\",resource=\"pipelines\"} 1"
            )
        );
        m.observe_store("get", "ok", 0.001);
        let mut one = m.watch_events("pipelines");
        let mut two = m.watch_events("pipelines");
        one.inc(kfp_storage::EventKind::Added);
        one.inc(kfp_storage::EventKind::Added);
        two.inc(kfp_storage::EventKind::Added);
        two.inc(kfp_storage::EventKind::Deleted);
        let text = m.render();
        assert!(
            text.contains(
                "kfp_store_operation_duration_seconds_count{operation=\"get\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("apiserver_watch_events_total{resource=\"pipelines\",type=\"ADDED\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "apiserver_watch_events_total{resource=\"pipelines\",type=\"DELETED\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("type=\"MODIFIED\""), "{text}");
        drop(g);
        assert!(
            m.render().contains(
                "apiserver_longrunning_requests{verb=\"WATCH\",resource=\"pipelines\"} 0"
            )
        );
    }
}
