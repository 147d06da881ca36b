//! Prometheus metrics: a `prometheus-client` registry, encoded in the Prometheus text format
//! (version 0.0.4) on `GET /metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// The server's series. Counters are registered without their `_total` suffix: the encoder
/// adds it, so `mam_syncs` is exposed as `mam_syncs_total`.
pub struct Metrics {
    registry: Registry,
    syncs: Counter,
    edits_applied: Counter,
    records_pulled: Counter,
    rejected: Family<RejectionLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    sync_latency: Histogram,
    resident: Gauge,
    cpu: Counter<f64, AtomicU64>,
    /// Held while `cpu` catches up with the process, so two scrapes cannot add the same time.
    cpu_update: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            syncs: Counter::default(),
            edits_applied: Counter::default(),
            records_pulled: Counter::default(),
            rejected: Family::default(),
            requests: Family::default(),
            sync_latency: Histogram::new(BUCKETS),
            resident: Gauge::default(),
            cpu: Counter::default(),
            cpu_update: Mutex::new(()),
        };
        let mut registry = Registry::default();
        registry.register(
            "mam_syncs",
            "Sync requests completed",
            metrics.syncs.clone(),
        );
        registry.register(
            "mam_edits_applied",
            "Edits applied to records",
            metrics.edits_applied.clone(),
        );
        registry.register(
            "mam_records_pulled",
            "Records sent to phones",
            metrics.records_pulled.clone(),
        );
        registry.register(
            "mam_edits_rejected",
            "Edits refused, by code",
            metrics.rejected.clone(),
        );
        registry.register(
            "mam_http_requests",
            "HTTP requests, by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "mam_sync_seconds",
            "Time to serve a sync request",
            metrics.sync_latency.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process (Linux)",
            metrics.resident.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of this process (Linux)",
            metrics.cpu.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn sync_done(
        &self,
        applied: usize,
        rejected: &[sync_protocol::Rejection],
        pulled: usize,
        took: Duration,
    ) {
        self.syncs.inc();
        self.edits_applied.inc_by(applied as u64);
        self.records_pulled.inc_by(pulled as u64);
        for r in rejected {
            self.rejected
                .get_or_create(&RejectionLabels {
                    code: r.code.as_str().to_owned(),
                })
                .inc();
        }
        self.sync_latency.observe(took.as_secs_f64());
    }

    pub fn request_done(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The Prometheus text format of every series.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_bytes() {
            self.resident.set(bytes as i64);
        }
        if let Some(seconds) = cpu_seconds() {
            let _one = self.cpu_update.lock().unwrap_or_else(|e| e.into_inner());
            let counted = self.cpu.get();
            if seconds > counted {
                self.cpu.inc_by(seconds - counted);
            }
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .expect("encoding into a String does not fail");
        out
    }
}

/// This process's resident memory, from `/proc/self/statm` (pages of 4 KiB).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The user and system CPU time this process has used, from `/proc/self/stat`.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on x86 and ARM.
    Some((user + system) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_names_types_and_labels() {
        let metrics = Metrics::default();
        let fresh = metrics.render();
        assert!(fresh.contains("mam_syncs_total 0"), "{fresh}");
        assert!(
            !fresh.contains("mam_edits_rejected_total"),
            "a labelled series appears with its first sample"
        );
        metrics.request_done("/v1/sync", 401);
        let refused = sync_protocol::Rejection {
            seq: 1,
            code: sync_protocol::RejectCode::InvalidValue,
            field: Some("sex".into()),
            message: "sex: required".into(),
            message_vi: None,
            rule: Some("required".into()),
        };
        metrics.sync_done(3, &[refused], 5, Duration::from_millis(20));
        let text = metrics.render();
        for line in [
            "# HELP mam_syncs_total Sync requests completed.",
            "# TYPE mam_syncs_total counter",
            "mam_syncs_total 1",
            "mam_edits_applied_total 3",
            "mam_records_pulled_total 5",
            "# TYPE mam_edits_rejected_total counter",
            "mam_edits_rejected_total{code=\"invalid_value\"} 1",
            "mam_http_requests_total{route=\"/v1/sync\",status=\"401\"} 1",
            "# TYPE mam_sync_seconds histogram",
            "mam_sync_seconds_bucket{le=\"0.01\"} 0",
            "mam_sync_seconds_bucket{le=\"0.025\"} 1",
            "mam_sync_seconds_bucket{le=\"1\"} 1",
            "mam_sync_seconds_bucket{le=\"+Inf\"} 1",
            "mam_sync_seconds_sum 0.02",
            "mam_sync_seconds_count 1",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
