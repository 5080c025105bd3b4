//! What a scenario measured: latencies (every sample kept, in microseconds, so percentiles are
//! exact), answers by HTTP status or transport error, bytes; and the server process's CPU time
//! and memory read from `/proc`, when its PID is given. Nothing here talks to a server.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The outcome of a create that found the object already there: a success for `seed`, which
/// is resumable.
pub const EXISTED: &str = "409-existed";

fn is_ok(outcome: &str) -> bool {
    (outcome.starts_with('2') && outcome.len() == 3) || outcome == EXISTED
}

/// Samples of one worker; merged at the end of a run.
#[derive(Default, Debug)]
pub struct Recorder {
    lat_us: Vec<u32>,
    /// Answers by outcome: `"200"`, `"409"`, `"transport"`, …
    pub outcomes: BTreeMap<String, u64>,
    /// Response body bytes.
    pub bytes: u64,
}

impl Recorder {
    /// Records one answered request.
    pub fn record(&mut self, status: u16, latency: Duration, bytes: u64) {
        self.lat_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        *self.outcomes.entry(status.to_string()).or_default() += 1;
        self.bytes += bytes;
    }

    /// Records one latency sample that is not a request (a delivery, a full list).
    pub fn sample(&mut self, latency: Duration) {
        self.lat_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// Records a request that got no HTTP answer.
    pub fn failure(&mut self, what: &str) {
        *self.outcomes.entry(what.to_owned()).or_default() += 1;
    }

    /// Adds another worker's samples.
    pub fn merge(&mut self, other: Recorder) {
        self.lat_us.extend(other.lat_us);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        self.bytes += other.bytes;
    }

    /// How many samples.
    pub fn samples(&self) -> usize {
        self.lat_us.len()
    }

    /// Answers with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| is_ok(k))
            .map(|(_, v)| v)
            .sum()
    }

    /// Everything that is not a 2xx answer.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.outcomes
            .iter()
            .filter(|(k, _)| !is_ok(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Latency percentiles in milliseconds.
    pub fn latency(&mut self) -> Latency {
        self.lat_us.sort_unstable();
        let n = self.lat_us.len();
        let at = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            f64::from(self.lat_us[rank - 1]) / 1000.0
        };
        let mean = if n == 0 {
            0.0
        } else {
            self.lat_us.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64 / 1000.0
        };
        Latency {
            mean,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Latency summary, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// A reading of a process: CPU time used so far and memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU time of all threads, milliseconds.
    pub cpu_ms: f64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// Peak resident memory since the process started, KiB.
    pub hwm_kib: u64,
}

fn clock_ticks() -> f64 {
    // getconf is POSIX and on every Linux; USER_HZ is 100 on every mainstream kernel build.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The sum of [`proc_sample`] over `pids` (a server made of several processes, such as
/// kube-apiserver and etcd); `None` when there are none or one of them cannot be read.
pub fn proc_samples(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(ProcSample::default(), |sum, &pid| {
        let s = proc_sample(pid)?;
        Some(ProcSample {
            cpu_ms: sum.cpu_ms + s.cpu_ms,
            rss_kib: sum.rss_kib + s.rss_kib,
            hwm_kib: sum.hwm_kib + s.hwm_kib,
        })
    })
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` when the process is gone or this is not
/// Linux.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_ms: ticks * 1000.0 / clock_ticks(),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut r = Recorder::default();
        for ms in 1..=100u64 {
            r.record(200, Duration::from_millis(ms), 10);
        }
        r.record(404, Duration::from_millis(500), 0);
        r.failure("transport");
        let l = r.latency();
        assert_eq!(l.p50, 51.0);
        assert_eq!(l.p99, 100.0);
        assert_eq!(l.max, 500.0);
        assert_eq!(r.ok(), 100);
        assert_eq!(r.errors().get("404"), Some(&1));
        assert_eq!(r.errors().get("transport"), Some(&1));
        assert_eq!(r.bytes, 1000);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = proc_sample(std::process::id()).expect("/proc/self");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let me = std::process::id();
        let two = proc_samples(&[me, me]).expect("twice");
        assert!(
            two.rss_kib > s.rss_kib && two.hwm_kib >= 2 * s.hwm_kib,
            "{two:?} {s:?}"
        );
        assert!(two.cpu_ms >= 2.0 * s.cpu_ms);
        assert!(proc_samples(&[]).is_none());
        assert!(
            proc_samples(&[me, u32::MAX]).is_none(),
            "a missing process is no figure"
        );
    }
}
