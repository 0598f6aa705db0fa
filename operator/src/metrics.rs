//! Prometheus metrics, served as text on `--metrics-addr` at `/metrics`.

use std::sync::RwLock;
use std::time::Instant;

use crds::VirtualMachineInstance;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
    pub node: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    requests: Family<RequestLabels, Counter>,
    vmi_phases: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    /// The VMIs counted by phase and node at each scrape.
    vmis: RwLock<Option<Store<VirtualMachineInstance>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let requests = Family::<RequestLabels, Counter>::default();
        let vmi_phases = Family::<PhaseLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "ferrovirt_operator_reconcile",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "ferrovirt_operator_reconcile_errors",
            "Reconciles that failed, by controller and error reason (the Event reason)",
            errors.clone(),
        );
        registry.register(
            "ferrovirt_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            durations.clone(),
        );
        registry.register(
            "ferrovirt_operator_api_requests",
            "Write and read requests the controllers sent to the API server (watches not counted)",
            requests.clone(),
        );
        registry.register(
            "kubevirt_vmi_phase_count",
            "VirtualMachineInstances by phase (lower case, as KubeVirt) and node",
            vmi_phases.clone(),
        );
        registry.register(
            "ferrovirt_operator_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            requests,
            vmi_phases,
            leader,
            vmis: RwLock::new(None),
        }
    }
}

impl Metrics {
    /// Starts timing a reconcile; the returned guard records its duration when dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub fn error(&self, controller: &'static str, e: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                reason: e.reason(),
            })
            .inc();
    }

    /// Counts one API request.
    pub fn request(&self, verb: &'static str, resource: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { verb, resource })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The VMI store to count phases from (set each time the controllers start).
    pub fn count_vmis_from(&self, store: Store<VirtualMachineInstance>) {
        *self.vmis.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// The controllers stopped (the lease was lost): their cache no longer tells the truth.
    pub fn stop_counting_vmis(&self) {
        *self.vmis.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.vmi_phases.clear();
        if let Some(store) = self.vmis.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            for vmi in store.state() {
                let status = vmi.status.as_ref();
                let phase = status
                    .and_then(|s| s.phase)
                    .map_or("pending".to_string(), |p| p.as_str().to_lowercase());
                let node = status
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "<none>".into());
                self.vmi_phases
                    .get_or_create(&PhaseLabels { phase, node })
                    .inc();
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// `/metrics` and `/healthz` on the shared endpoint (`ferrovirt_runtime::serve`).
impl ferrovirt_runtime::Endpoint for Metrics {
    fn metrics(&self) -> String {
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_by_reason() {
        let m = Metrics::default();
        drop(m.reconcile("vm"));
        m.error("vm", &Error::Conflict("vm x".into()));
        m.request("create", "virtualmachineinstances");
        let text = m.encode();
        assert!(
            text.contains("ferrovirt_operator_reconcile_total{controller=\"vm\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "ferrovirt_operator_reconcile_errors_total{controller=\"vm\",reason=\"Conflict\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ferrovirt_operator_reconcile_duration_seconds_count{controller=\"vm\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("ferrovirt_operator_api_requests_total{verb=\"create\",resource=\"virtualmachineinstances\"} 1"));
    }
}
