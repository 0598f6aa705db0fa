//! A few Prometheus metrics, served as text on `/metrics` by a tiny HTTP server.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub domains_started: AtomicU64,
    pub status_writes: AtomicU64,
    pub workers: AtomicI64,
    pub kvm_usable: AtomicI64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Worker start to domain started: (sum in microseconds, count).
    start: Mutex<(u64, u64)>,
}

impl Metrics {
    /// Counts a VMI failure under the error's reason.
    pub fn failure(&self, reason: &'static str) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Records how long a VMI took from its worker's start to a started domain.
    pub fn observe_start(&self, d: std::time::Duration) {
        let mut s = self.start.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += d.as_micros() as u64;
        s.1 += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        gauge(
            "virt_handler_domains_started_total",
            "counter",
            "Domains defined and started.",
            self.domains_started.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "virt_handler_status_writes_total",
            "counter",
            "VMI status patches written.",
            self.status_writes.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "virt_handler_vmi_workers",
            "gauge",
            "VMIs this handler follows.",
            self.workers.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "virt_handler_kvm_usable",
            "gauge",
            "1 when the KVM probe ran a guest.",
            self.kvm_usable.load(Ordering::Relaxed).to_string(),
        );
        let (sum, count) = *self.start.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(&format!(
            "# HELP virt_handler_vmi_start_seconds From following a Scheduled VMI to its domain started (launcher wait, volumes, define and start).\n\
             # TYPE virt_handler_vmi_start_seconds summary\n\
             virt_handler_vmi_start_seconds_sum {:.6}\nvirt_handler_vmi_start_seconds_count {count}\n",
            sum as f64 / 1e6
        ));
        out.push_str("# HELP virt_handler_vmi_failures_total VMIs failed by this handler, by reason.\n# TYPE virt_handler_vmi_failures_total counter\n");
        for (reason, n) in self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!(
                "virt_handler_vmi_failures_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        out
    }
}

/// `/metrics` (Prometheus text format 0.0.4) and `/healthz` on the shared endpoint.
impl ferrovirt_runtime::Endpoint for Metrics {
    fn metrics(&self) -> String {
        self.render()
    }
    fn content_type(&self) -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_failures_by_reason() {
        let m = super::Metrics::default();
        m.failure("KVMUnavailable");
        m.failure("KVMUnavailable");
        m.observe_start(std::time::Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("virt_handler_vmi_failures_total{reason=\"KVMUnavailable\"} 2"));
        assert!(text.contains("virt_handler_vmi_start_seconds_sum 1.500000\nvirt_handler_vmi_start_seconds_count 1\n"), "{text}");
    }
}
