//! What both controllers share: the client, caches, settings, metrics and the event
//! recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crds::{VirtualMachineInstance, VmiPhase};
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
    /// Failed reconciles in a row, per object: their retries back off.
    pub backoff: Backoff,
    /// The phase each VMI had when the VMI controller last saw it.
    pub phases: PhaseMemory,
    /// The versions of VMs and VMIs the controllers have overwritten themselves.
    pub own_writes: OwnWrites,
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
            backoff: Backoff::default(),
            phases: PhaseMemory::default(),
            own_writes: OwnWrites::default(),
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

/// Runs one reconcile of `controller` for the object `key`, counting it, timing it and
/// counting its error; a success ends the object's back-off.
pub async fn measured<F>(
    controller: &'static str,
    key: &str,
    ctx: &Context,
    reconcile: F,
) -> crate::Result<kube::runtime::controller::Action>
where
    F: std::future::Future<Output = crate::Result<kube::runtime::controller::Action>>,
{
    let _timer = ctx.metrics.reconcile(controller);
    let result = reconcile.await;
    match &result {
        Ok(_) => ctx.backoff.succeeded(controller, key),
        Err(e) => ctx.metrics.error(controller, e),
    }
    result
}

/// After a failed reconcile: a lost race is retried at once; anything else backs off
/// (1 s, doubling per failure in a row, at most [`Backoff::MAX`]), as KubeVirt's work
/// queues do, so a failure that persists (a pod the API server refuses) is not retried in
/// a hot loop. Changes of the object still wake its reconcile at once.
pub fn retry_after(
    ctx: &Context,
    controller: &'static str,
    key: &str,
    e: &crate::Error,
) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    if e.is_conflict() {
        Action::requeue(Duration::from_millis(200))
    } else {
        let delay = ctx.backoff.failed(controller, key);
        tracing::warn!(object = key, error = %ferrovirt_runtime::chain(e), retry_in_s = delay.as_secs_f64(), "reconcile failed");
        Action::requeue(delay)
    }
}

/// The phase of each VMI as the VMI controller last saw or wrote it, by UID: a phase change
/// written by someone else (virt-handler) is told in an Event too.
#[derive(Default)]
pub struct PhaseMemory(Mutex<HashMap<String, Option<VmiPhase>>>);

impl PhaseMemory {
    /// Records `phase` for `uid`; returns the phase seen before, if the VMI was seen before.
    pub fn swap(&self, uid: &str, phase: Option<VmiPhase>) -> Option<Option<VmiPhase>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(uid.to_string(), phase)
    }

    /// The VMI is gone.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// The resourceVersions of objects this controller has since written over, by UID. Until
/// the watch cache shows the write, a reconcile of an object in one of these versions
/// would decide on stale data and its guarded write could only lose the race (a wasted
/// request, then a retry): it waits for the cache instead. The versions are compared for
/// equality only, as Kubernetes asks.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, Vec<String>>>);

impl OwnWrites {
    /// This controller wrote over version `before` of object `uid`, and the server answered
    /// with version `after`. A write the server found to change nothing keeps the version:
    /// no watch event follows it, so it is not recorded (the cache is not behind).
    pub fn wrote(&self, uid: &str, before: &str, after: &str) {
        if before == after {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(uid.to_string())
            .or_default()
            .push(before.to_string());
    }

    /// Whether version `rv` of `uid` is one this controller has written over (the cache
    /// lags behind). Any other version means the cache caught up: the record is dropped.
    pub fn is_stale(&self, uid: &str, rv: &str) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(uid) {
            Some(versions) if versions.iter().any(|v| v == rv) => true,
            Some(_) => {
                map.remove(uid);
                false
            }
            None => false,
        }
    }

    /// The object is gone.
    pub fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// After a reconcile skipped for a stale cache: the watch event of the controller's own
/// write wakes it sooner; this is the fallback.
pub const STALE_CACHE_RETRY: Duration = Duration::from_secs(2);

/// A controller's name and an object's key.
type ObjectKey = (&'static str, String);

/// Failures in a row per object and controller, and when the last one was.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectKey, (u32, Instant)>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records one more failure and returns how long to wait before the next try.
    pub fn failed(&self, controller: &'static str, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Objects that went away while failing are forgotten after a while.
        if map.len() > 1024 {
            map.retain(|_, (_, at)| now.duration_since(*at) < Self::MAX * 2);
        }
        let entry = map.entry((controller, key.to_string())).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        Self::delay(entry.0)
    }

    /// The object reconciled fine: its next failure starts from the base again.
    pub fn succeeded(&self, controller: &'static str, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() {
            map.remove(&(controller, key.to_string()));
        }
    }

    /// The delay after `failures` failures in a row.
    pub fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (Self::BASE * 2u32.pow(doublings)).min(Self::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_writes_mark_overwritten_versions_stale_until_the_cache_moves_on() {
        let w = OwnWrites::default();
        assert!(!w.is_stale("u", "1"), "nothing written");
        w.wrote("u", "1", "2");
        w.wrote("u", "2", "3");
        assert!(w.is_stale("u", "1"));
        assert!(w.is_stale("u", "2"));
        assert!(!w.is_stale("other", "1"), "per object");
        assert!(!w.is_stale("u", "3"), "the cache shows the write");
        assert!(!w.is_stale("u", "1"), "the record went with it");
        w.wrote("u", "3", "4");
        w.forget("u");
        assert!(!w.is_stale("u", "3"));
        w.wrote("u", "4", "4");
        assert!(
            !w.is_stale("u", "4"),
            "a write that changed nothing brings no watch event: the cache is current"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        assert_eq!(Backoff::delay(1), Duration::from_secs(1));
        assert_eq!(Backoff::delay(2), Duration::from_secs(2));
        assert_eq!(Backoff::delay(5), Duration::from_secs(16));
        assert_eq!(Backoff::delay(40), Backoff::MAX);
        let b = Backoff::default();
        assert_eq!(b.failed("vmi", "ns/a"), Duration::from_secs(1));
        assert_eq!(b.failed("vmi", "ns/a"), Duration::from_secs(2));
        assert_eq!(
            b.failed("vm", "ns/a"),
            Duration::from_secs(1),
            "per controller"
        );
        b.succeeded("vmi", "ns/a");
        assert_eq!(b.failed("vmi", "ns/a"), Duration::from_secs(1));
    }
}
