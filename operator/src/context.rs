//! What both controllers share: the client, caches, settings, metrics and the event
//! recorder.

use std::sync::Arc;

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::metrics::Metrics;
use crate::{FIELD_MANAGER, Settings};

/// The controllers' shared state.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub vmis: Store<VirtualMachineInstance>,
    pub pods: Store<Pod>,
    recorder: Recorder,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        vmis: Store<VirtualMachineInstance>,
        pods: Store<Pod>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            settings,
            metrics,
            vmis,
            pods,
            recorder,
        }
    }

    /// The cached VMI `namespace/name`.
    pub fn cached_vmi(&self, namespace: &str, name: &str) -> Option<Arc<VirtualMachineInstance>> {
        self.vmis.get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached pod `namespace/name`.
    pub fn cached_pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// Publishes an Event about `object` in the background: events never hold up or fail
    /// a reconcile.
    pub fn event(&self, object: ObjectReference, type_: EventType, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let metrics = self.metrics.clone();
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            metrics.request("create", "events");
            if let Err(e) = recorder.publish(&ev, &object).await {
                tracing::debug!(error = %e, "publishing an event failed");
            }
        });
    }
}

/// Runs one reconcile of `controller`, counting it, timing it and counting its error.
pub async fn measured<F>(
    controller: &'static str,
    ctx: &Context,
    reconcile: F,
) -> crate::Result<kube::runtime::controller::Action>
where
    F: std::future::Future<Output = crate::Result<kube::runtime::controller::Action>>,
{
    let _timer = ctx.metrics.reconcile(controller);
    let result = reconcile.await;
    if let Err(e) = &result {
        ctx.metrics.error(controller, e);
    }
    result
}

/// After a failed reconcile: a lost race is retried at once, anything else after 2 s.
pub fn retry_after(object: &str, e: &crate::Error) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    if e.is_conflict() {
        Action::requeue(std::time::Duration::from_millis(200))
    } else {
        tracing::warn!(object, error = %crate::telemetry::chain(e), "reconcile failed");
        Action::requeue(std::time::Duration::from_secs(2))
    }
}
