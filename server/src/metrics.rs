//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    syncs: AtomicU64,
    edits_applied: AtomicU64,
    records_pulled: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    sync_latency: Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn sync_done(
        &self,
        applied: usize,
        rejected: &[sync_protocol::Rejection],
        pulled: usize,
        took: Duration,
    ) {
        self.syncs.fetch_add(1, Relaxed);
        self.edits_applied.fetch_add(applied as u64, Relaxed);
        self.records_pulled.fetch_add(pulled as u64, Relaxed);
        if !rejected.is_empty() {
            let mut map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
            for r in rejected {
                *map.entry(r.code.as_str().to_owned()).or_default() += 1;
            }
        }
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.sync_latency.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.sync_latency.count.fetch_add(1, Relaxed);
        self.sync_latency
            .sum_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn request_done(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route.to_owned(), status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "mam_syncs_total",
            "Sync requests completed.",
            self.syncs.load(Relaxed),
        );
        counter(
            "mam_edits_applied_total",
            "Edits applied to records.",
            self.edits_applied.load(Relaxed),
        );
        counter(
            "mam_records_pulled_total",
            "Records sent to phones.",
            self.records_pulled.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP mam_edits_rejected_total Edits refused, by code."
        );
        let _ = writeln!(out, "# TYPE mam_edits_rejected_total counter");
        for (code, n) in self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "mam_edits_rejected_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP mam_http_requests_total HTTP requests, by route and status."
        );
        let _ = writeln!(out, "# TYPE mam_http_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "mam_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let h = &self.sync_latency;
        let _ = writeln!(out, "# HELP mam_sync_seconds Time to serve a sync request.");
        let _ = writeln!(out, "# TYPE mam_sync_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "mam_sync_seconds_bucket{{le=\"{bound}\"}} {}",
                h.counts[i].load(Relaxed)
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(out, "mam_sync_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "mam_sync_seconds_sum {}",
            h.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "mam_sync_seconds_count {count}");
        out
    }
}
