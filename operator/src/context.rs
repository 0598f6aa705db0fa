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
    /// The VMs whose VMI the VM controller created and the cache does not show yet.
    pub own_creates: OwnCreates,
    /// The Events to publish, in order, by one writer ([`Context::event`]).
    events: tokio::sync::mpsc::UnboundedSender<(Event, ObjectReference)>,
}

impl Context {
    /// The shared state; starts the Event writer on the current Tokio runtime (it ends
    /// when the context is dropped, once it has published what it was given).
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
        let (events, mut queue) =
            tokio::sync::mpsc::unbounded_channel::<(Event, ObjectReference)>();
        let writer_metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some((ev, object)) = queue.recv().await {
                writer_metrics.request("create", "events");
                if let Err(e) = recorder.publish(&ev, &object).await {
                    tracing::debug!(error = %e, reason = %ev.reason, "publishing an event failed");
                }
            }
        });
        Self {
            client,
            settings,
            metrics,
            vmis,
            pods,
            backoff: Backoff::default(),
            phases: PhaseMemory::default(),
            own_writes: OwnWrites::default(),
            own_creates: OwnCreates::default(),
            events,
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
    /// a reconcile. One writer publishes them one at a time, in order (as client-go's
    /// event broadcaster does for KubeVirt): a burst of Events (a thousand VMs started at
    /// once) waits its turn instead of taking the API server from the writes the VMs
    /// wait for (bench/scale).
    pub fn event(&self, object: ObjectReference, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if self.events.send((ev, object)).is_err() {
            tracing::debug!(reason, "the event writer has ended; the event is dropped");
        }
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
/// equality only, as Kubernetes asks. A record the cache never caught up with (the object
/// was deleted first) is dropped after [`CACHE_LAG_BOUND`].
#[derive(Default)]
pub struct OwnWrites(Mutex<Records<Vec<String>>>);

/// How long a record of the controllers' own writes waits for the cache to show them: the
/// watch cache lags by much less, and an object deleted before its cache showed the write
/// never does. A record dropped too early costs what it saves (a lost race or a second
/// create refused as AlreadyExists), no harm.
pub const CACHE_LAG_BOUND: Duration = Duration::from_secs(10);

/// Records by UID with the time of their last change; pruned of those older than
/// [`CACHE_LAG_BOUND`] at most once per that bound, so memory stays bounded by the objects
/// written recently.
struct Records<T> {
    map: HashMap<String, (T, Instant)>,
    pruned: Instant,
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records {
            map: HashMap::new(),
            pruned: Instant::now(),
        }
    }
}

impl<T> Records<T> {
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.pruned) >= CACHE_LAG_BOUND {
            self.map
                .retain(|_, (_, at)| now.duration_since(*at) < CACHE_LAG_BOUND);
            self.pruned = now;
        }
    }

    /// The record of `uid`, unless it is older than the bound.
    fn get(&self, uid: &str, now: Instant) -> Option<&T> {
        self.map
            .get(uid)
            .filter(|(_, at)| now.duration_since(*at) < CACHE_LAG_BOUND)
            .map(|(t, _)| t)
    }
}

impl OwnWrites {
    /// This controller wrote over version `before` of object `uid`, and the server answered
    /// with version `after`. A write the server found to change nothing keeps the version:
    /// no watch event follows it, so it is not recorded (the cache is not behind).
    pub fn wrote(&self, uid: &str, before: &str, after: &str) {
        self.wrote_at(uid, before, after, Instant::now());
    }

    /// [`Self::wrote`] of object `before` (read) and `after` (as the server answered the
    /// write): its UID and both resourceVersions.
    pub fn wrote_over<K: kube::Resource>(&self, before: &K, after: &K) {
        let rv = |o: &K| o.meta().resource_version.clone().unwrap_or_default();
        if let Some(uid) = &before.meta().uid {
            self.wrote(uid, &rv(before), &rv(after));
        }
    }

    fn wrote_at(&self, uid: &str, before: &str, after: &str, now: Instant) {
        if before == after {
            return;
        }
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.prune(now);
        let (versions, at) = records
            .map
            .entry(uid.to_string())
            .or_insert_with(|| (Vec::new(), now));
        versions.push(before.to_string());
        *at = now;
    }

    /// Whether version `rv` of `uid` is one this controller has written over (the cache
    /// lags behind). Any other version means the cache caught up: the record is dropped.
    pub fn is_stale(&self, uid: &str, rv: &str) -> bool {
        self.is_stale_at(uid, rv, Instant::now())
    }

    fn is_stale_at(&self, uid: &str, rv: &str, now: Instant) -> bool {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match records.get(uid, now) {
            Some(versions) if versions.iter().any(|v| v == rv) => true,
            _ => {
                records.map.remove(uid);
                false
            }
        }
    }

    /// The object is gone.
    pub fn forget(&self, uid: &str) {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.map.remove(uid);
    }

    /// How many objects have records (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().map.len()
    }
}

/// The VMs whose VMI the VM controller created and its VMI cache does not show yet, by VM
/// UID: until it does, a reconcile of the VM would find no VMI and create it again (the API
/// server refuses that as AlreadyExists, a wasted request). Dropped when the cache shows a
/// VMI of the VM, or after [`CACHE_LAG_BOUND`].
#[derive(Default)]
pub struct OwnCreates(Mutex<Records<()>>);

impl OwnCreates {
    /// The VM controller created the VMI of VM `vm_uid`.
    pub fn created(&self, vm_uid: &str) {
        self.created_at(vm_uid, Instant::now());
    }

    fn created_at(&self, vm_uid: &str, now: Instant) {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        records.prune(now);
        records.map.insert(vm_uid.to_string(), ((), now));
    }

    /// Whether the VMI of `vm_uid` was created and the cache does not show it yet; `cached`
    /// says whether the cache shows a VMI of the VM (which ends the record).
    pub fn unseen(&self, vm_uid: &str, cached: bool) -> bool {
        self.unseen_at(vm_uid, cached, Instant::now())
    }

    fn unseen_at(&self, vm_uid: &str, cached: bool, now: Instant) -> bool {
        let mut records = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if records.map.is_empty() {
            return false;
        }
        let pending = !cached && records.get(vm_uid, now).is_some();
        if !pending {
            records.map.remove(vm_uid);
        }
        pending
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
    fn own_writes_of_an_object_deleted_before_the_cache_showed_them_are_dropped() {
        let w = OwnWrites::default();
        let t0 = Instant::now();
        w.wrote_at("gone", "1", "2", t0);
        assert!(w.is_stale_at("gone", "1", t0 + Duration::from_secs(1)));
        assert!(
            !w.is_stale_at("gone", "1", t0 + CACHE_LAG_BOUND),
            "after the bound the record no longer holds a reconcile back"
        );
        // Never asked about again (the VM was deleted): pruned by a later write.
        w.wrote_at("gone", "3", "4", t0);
        let later = t0 + CACHE_LAG_BOUND * 2;
        w.wrote_at("other", "1", "2", later);
        assert_eq!(w.len(), 1, "only the recent record is kept");
        assert!(w.is_stale_at("other", "1", later));
    }

    #[test]
    fn an_own_create_holds_the_vm_back_until_the_cache_shows_its_vmi() {
        let c = OwnCreates::default();
        let t0 = Instant::now();
        assert!(!c.unseen_at("vm", false, t0), "nothing created");
        c.created_at("vm", t0);
        assert!(
            c.unseen_at("vm", false, t0),
            "created, not in the cache yet"
        );
        assert!(!c.unseen_at("other", false, t0), "per VM");
        assert!(!c.unseen_at("vm", true, t0), "the cache shows it");
        assert!(!c.unseen_at("vm", false, t0), "the record went with it");
        c.created_at("vm", t0);
        assert!(
            !c.unseen_at("vm", false, t0 + CACHE_LAG_BOUND),
            "a VMI the cache never showed (deleted at once) is created again after the bound"
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
