//! virt-handler's Prometheus metrics on prometheus-client (OpenMetrics text), served on
//! `--metrics-addr` at `/metrics` by the shared endpoint (`ferrovirt_runtime::serve`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The handler's metrics. Counters get OpenMetrics' `_total` suffix when rendered.
pub struct Metrics {
    registry: Registry,
    domains_started: Counter,
    status_writes: Counter,
    workers: Gauge,
    kvm_usable: Gauge,
    failures: Family<ReasonLabels, Counter>,
    start: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            domains_started: Counter::default(),
            status_writes: Counter::default(),
            workers: Gauge::default(),
            kvm_usable: Gauge::default(),
            failures: Family::default(),
            // 0.25 s to about 2 min: TCG boots take seconds, KVM ones less than one.
            start: Histogram::new(exponential_buckets(0.25, 2.0, 10)),
            registry: Registry::default(),
        };
        registry.register(
            "virt_handler_domains_started",
            "Domains defined and started",
            m.domains_started.clone(),
        );
        registry.register(
            "virt_handler_status_writes",
            "VMI status patches written",
            m.status_writes.clone(),
        );
        registry.register(
            "virt_handler_vmi_workers",
            "VMIs this handler follows",
            m.workers.clone(),
        );
        registry.register(
            "virt_handler_kvm_usable",
            "1 when the KVM probe ran a guest",
            m.kvm_usable.clone(),
        );
        registry.register(
            "virt_handler_vmi_failures",
            "VMIs failed by this handler, by reason",
            m.failures.clone(),
        );
        registry.register(
            "virt_handler_vmi_start_seconds",
            "From following a Scheduled VMI to its domain started (launcher wait, volumes, define and start)",
            m.start.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a VMI failure under the error's reason.
    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A domain started, `d` after its worker began following the VMI.
    pub fn domain_started(&self, d: Duration) {
        self.domains_started.inc();
        self.start.observe(d.as_secs_f64());
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn worker_started(&self) {
        self.workers.inc();
    }

    pub fn worker_ended(&self) {
        self.workers.dec();
    }

    pub fn set_kvm_usable(&self, usable: bool) {
        self.kvm_usable.set(i64::from(usable));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `/metrics` (OpenMetrics text, the endpoint's default content type) and `/healthz`.
impl ferrovirt_runtime::Endpoint for Metrics {
    fn metrics(&self) -> String {
        self.render()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn renders_every_metric_with_its_value() {
        let m = super::Metrics::default();
        m.failure("KVMUnavailable");
        m.failure("KVMUnavailable");
        m.domain_started(Duration::from_millis(1500));
        m.status_written();
        m.worker_started();
        m.worker_started();
        m.worker_ended();
        m.set_kvm_usable(true);
        let text = m.render();
        for line in [
            "virt_handler_vmi_failures_total{reason=\"KVMUnavailable\"} 2\n",
            "virt_handler_domains_started_total 1\n",
            "virt_handler_status_writes_total 1\n",
            "virt_handler_vmi_workers 1\n",
            "virt_handler_kvm_usable 1\n",
            "virt_handler_vmi_start_seconds_sum 1.5\n",
            "virt_handler_vmi_start_seconds_count 1\n",
            "virt_handler_vmi_start_seconds_bucket{le=\"2.0\"} 1\n",
            "virt_handler_vmi_start_seconds_bucket{le=\"1.0\"} 0\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
