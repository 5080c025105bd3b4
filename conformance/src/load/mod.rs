//! `kfp-load`: load scenarios against any server that serves `pipelines.kubeflow.org/v2beta1`
//! (this one, or a kube-apiserver with KFP 2.17's CRDs from `apiservice/deploy/crds/`),
//! through the public API only, as a kubeconfig describes it. Each run yields a [`Report`]:
//! throughput, latency percentiles, answers by status, and — given the server's PID — its CPU
//! time per request and memory from `/proc`.
//!
//! This module owns the scenarios and their figures; the command line is `src/bin/kfp-load.rs`.
//! It must not link or reach into the server: a figure here is what a client sees.

pub mod scenario;
pub mod stats;
pub mod target;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

pub use scenario::{Budget, Scenario, run};
pub use stats::{Latency, Recorder};
pub use target::{Conn, Proto, Target};

/// The API group's path prefix.
pub const GROUP_PATH: &str = "/apis/pipelines.kubeflow.org/v2beta1";

/// The server's figures over one run, from `/proc/PID`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// Server CPU time (user + system, all threads) per operation, milliseconds.
    pub cpu_ms_per_op: f64,
    /// Server CPU time over the run, milliseconds.
    pub cpu_ms: f64,
    /// Resident memory before the run, MiB.
    pub rss_mib_before: f64,
    /// Resident memory after the run, MiB.
    pub rss_mib_after: f64,
    /// Peak resident memory of the process so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// One scenario run against one server.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The server (its URL).
    pub target: String,
    /// Wire protocol.
    pub proto: Proto,
    /// Concurrent clients (connections, watchers).
    pub concurrency: usize,
    /// Operations measured (requests, full lists, deliveries).
    pub ops: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Failures by HTTP status or `transport`.
    pub errors: BTreeMap<String, u64>,
    /// Wall-clock time of the measured part, seconds.
    pub duration_s: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Latency of one operation, milliseconds.
    pub latency_ms: Latency,
    /// Response bytes per operation.
    pub bytes_per_op: f64,
    /// The server's CPU and memory, when its PID was given.
    pub server: Option<ServerFigures>,
    /// Figures of this scenario only (items listed, watchers connected, …).
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Prints reports as a table; with two servers per scenario, a ratio line after each pair.
pub fn table(reports: &[Report], compare: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<28} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  errors",
        "scenario",
        "server",
        "ops",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "KiB/op",
        "cpu-ms/op",
        "RSS MiB"
    );
    for (i, r) in reports.iter().enumerate() {
        let (cpu, rss) = match &r.server {
            Some(s) => (
                format!("{:.3}", s.cpu_ms_per_op),
                format!("{:.0}", s.rss_mib_after),
            ),
            None => ("-".into(), "-".into()),
        };
        let errors = if r.errors.is_empty() {
            "none".to_owned()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let label: String = r.target.chars().take(28).collect();
        let _ = writeln!(
            out,
            "{:<14} {:<28} {:>9} {:>11.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>9} {:>9}  {}",
            r.scenario,
            label,
            r.ops,
            r.throughput,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.bytes_per_op / 1024.0,
            cpu,
            rss,
            errors
        );
        if !r.extra.is_empty() {
            let extra: Vec<String> = r.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "{:<14} {}", "", extra.join(" "));
        }
        if compare && i % 2 == 1 {
            let a = &reports[i - 1];
            let ratio = |x: f64, y: f64| {
                if y > 0.0 {
                    format!("{:.2}x", x / y)
                } else {
                    "-".into()
                }
            };
            let cpu = match (&a.server, &r.server) {
                (Some(x), Some(y)) => ratio(y.cpu_ms_per_op, x.cpu_ms_per_op),
                _ => "-".into(),
            };
            let rss = match (&a.server, &r.server) {
                (Some(x), Some(y)) => ratio(y.rss_mib_after, x.rss_mib_after),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<14} first vs second: throughput {}, p50 {}, p99 {}, CPU per op {}, RSS {} (above 1: the first is better)",
                "",
                ratio(a.throughput, r.throughput),
                ratio(r.latency_ms.p50, a.latency_ms.p50),
                ratio(r.latency_ms.p99, a.latency_ms.p99),
                cpu,
                rss
            );
        }
    }
    out
}

impl ServerFigures {
    fn between(before: stats::ProcSample, after: stats::ProcSample, ops: u64) -> ServerFigures {
        let cpu = after.cpu_ms - before.cpu_ms;
        ServerFigures {
            cpu_ms_per_op: if ops > 0 { cpu / ops as f64 } else { 0.0 },
            cpu_ms: cpu,
            rss_mib_before: mib(before.rss_kib),
            rss_mib_after: mib(after.rss_kib),
            peak_rss_mib: mib(after.hwm_kib),
        }
    }
}
