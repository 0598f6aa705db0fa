//! The VirtualMachineInstance controller: one launcher pod per VMI, and the VMI's phase
//! from the pod until Scheduled (virt-handler owns it from there). A finalizer keeps a
//! deleted VMI until its pod has shut the guest down or is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crds::{
    Condition, PhaseTransitionTimestamp, VirtualMachineInstance, VirtualMachineInstanceStatus,
    VmiPhase,
};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::pod::{self, COMPUTE_CONTAINER, GRACE_MARGIN_SECONDS};
use crate::{Context, Error, Result, writes};

/// The VMI controller's finalizer (KubeVirt's VMI finalizer, which its controller removes
/// once no launcher pod is left).
pub const FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
/// The node label of a scheduled VMI; virt-handler selects its VMIs by it.
pub use ferrovirt_node_contract::pod::NODE_NAME_LABEL;
/// How long past its deletion deadline a terminating pod may take before the node is
/// taken to be gone and the pod is removed by force.
const STUCK_POD_SLACK: Duration = Duration::from_secs(30);

const CONTROLLER: &str = "vmi";
/// The resource of the VMI writes, as the request metrics name it.
const VMIS: &str = "virtualmachineinstances";
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a VMI whose launcher pod waits for a cloud-init Secret is looked at again: the
/// node's FailedMount Events come without a change of the pod.
const SECRET_WAIT_RETRY: Duration = Duration::from_secs(3);
/// How long after its bind (to the second) a launcher pod that does not run yet waits
/// before its node alone is written into the VMI's `status.activePods`: most pods run by
/// then, and their node comes with the Scheduled write instead of a write of its own
/// (bench/scale: 0.85 requests per VM).
const BIND_SETTLE: Duration = Duration::from_secs(3);
/// How long after its creation (to the second) a new launcher pod that neither runs nor
/// was refused by the scheduler waits before the VMI's first status (Scheduling) is
/// written: most pods are bound and run by then, and the VMI goes from Pending to
/// Scheduled in one write, with the node, instead of a Scheduling write before it
/// (bench/scale). A pod that runs is written at once: this holds no boot up.
const POD_SETTLE: Duration = Duration::from_secs(3);
/// When a VMI whose launcher pod was just created is looked at again if the pod's own
/// watch event (which brings its first status) has not come by then.
const POD_EVENT_FALLBACK: Duration = Duration::from_secs(5);

#[instrument(skip(ctx, vmi), fields(vmi = %format!("{}/{}", vmi.namespace().unwrap_or_default(), vmi.name_any())))]
pub async fn reconcile(vmi: Arc<VirtualMachineInstance>, ctx: Arc<Context>) -> Result<Action> {
    let key = format!("{}/{}", vmi.namespace().unwrap_or_default(), vmi.name_any());
    crate::context::measured(CONTROLLER, &key, &ctx, reconcile_vmi(&vmi, &ctx)).await
}

pub fn error_policy(vmi: Arc<VirtualMachineInstance>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", vmi.namespace().unwrap_or_default(), vmi.name_any());
    crate::context::retry_after(&ctx, CONTROLLER, &key, e)
}

struct Names {
    ns: String,
    name: String,
    uid: String,
    pod: String,
}

fn names(vmi: &VirtualMachineInstance) -> Result<Names> {
    let (Some(ns), Some(name), Some(uid)) = (vmi.namespace(), vmi.metadata.name.clone(), vmi.uid())
    else {
        return Err(Error::InvalidObject(
            "VMI without namespace, name or UID".into(),
        ));
    };
    let pod = pod::pod_name(&name, &uid);
    Ok(Names { ns, name, uid, pod })
}

async fn reconcile_vmi(vmi: &VirtualMachineInstance, ctx: &Context) -> Result<Action> {
    let n = names(vmi)?;
    if ctx
        .own_writes
        .is_stale(&n.uid, &vmi.resource_version().unwrap_or_default())
    {
        // Our last write is not in the cache yet; its watch event brings it.
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    }
    tell_failure_from_elsewhere(vmi, &n, ctx);
    let mut seen = observe(vmi, &n, ctx).await?;
    // No launcher pod until its DataVolumes (datavolume.rs) and its backend-storage claim
    // (backend_storage.rs) are ready.
    if seen.pod.is_none() && !deleting(vmi) && has_finalizer(vmi) {
        match gates(vmi, ctx, &mut seen.block_claims).await? {
            Gate::Write(status, ready) => {
                let vmis = Api::namespaced(ctx.client.clone(), &n.ns);
                let old = vmi.status.clone().unwrap_or_default();
                write_status(vmi, &old, *status, None, &vmis, seen.now, ctx).await?;
                return Ok(match ready {
                    true => Action::await_change(),
                    false => Action::requeue(crate::datavolume::POLL),
                });
            }
            Gate::FirstConsumer => {
                if let Some(action) = first_consumer(vmi, &n, &seen, ctx).await? {
                    return Ok(action);
                }
            }
            Gate::Open => end_first_consumer(vmi, &n, ctx).await?,
        }
    }
    let planned = plan(&seen, &ctx.settings.launcher);
    execute(&seen, &n, planned, ctx).await
}

/// What the gates before the launcher pod decide ([`gates`]).
enum Gate {
    /// Write this status; then whether the pod may be made (the write's watch event brings
    /// the next pass) or not (looked at again after the DataVolumes' poll).
    Write(Box<VirtualMachineInstanceStatus>, bool),
    /// A DataVolume waits for its first consumer: a temporary pod consumes the claims.
    FirstConsumer,
    /// The launcher pod may be made.
    Open,
}

/// The gates before a VMI's launcher pod: its DataVolumes ([`crate::datavolume::gate_vmi`]),
/// its claims ([`crate::claims::gate_vmi`]), then its backend storage
/// ([`crate::backend_storage::gate_vmi`]); the claims in block mode go to `block` (the
/// pod's devices).
async fn gates(
    vmi: &VirtualMachineInstance,
    ctx: &Context,
    block: &mut pod::BlockClaims,
) -> Result<Gate> {
    use crate::datavolume::DvGate;
    let mut first_consumer = false;
    match crate::datavolume::gate_vmi(vmi, ctx).await? {
        Some((status, DvGate::FirstConsumer)) => {
            if Some(&status) != vmi.status.as_ref() {
                return Ok(Gate::Write(Box::new(status), true));
            }
            first_consumer = true;
        }
        Some((status, gate)) => {
            return Ok(Gate::Write(Box::new(status), gate == DvGate::Ready));
        }
        None => {}
    }
    let claims = crate::claims::gate_vmi(vmi, ctx).await?;
    *block = claims.block;
    if let Some((status, ready)) = claims.write {
        return Ok(Gate::Write(Box::new(status), ready));
    }
    if let Some((status, ready)) = crate::backend_storage::gate_vmi(vmi, ctx).await? {
        return Ok(Gate::Write(Box::new(status), ready));
    }
    Ok(match first_consumer {
        true => Gate::FirstConsumer,
        false => Gate::Open,
    })
}

/// KubeVirt's temporary pod for DataVolumes waiting for their first consumer
/// ([`pod::render_first_consumer`]): made unless it exists; the VMI looks again after the
/// DataVolumes' poll. `None`: it cannot be rendered, which the launcher pod's plan tells.
async fn first_consumer(
    vmi: &VirtualMachineInstance,
    n: &Names,
    seen: &Seen<'_>,
    ctx: &Context,
) -> Result<Option<Action>> {
    let name = pod::first_consumer_pod_name(&n.name, &n.uid);
    if ctx.cached_pod(&n.ns, &name).is_none() {
        let Ok(rendered) =
            pod::render_first_consumer(vmi, &ctx.settings.launcher, &seen.block_claims)
        else {
            return Ok(None);
        };
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.ns);
        if writes::create(&pods, &rendered, &ctx.metrics, "pods")
            .await?
            .is_some()
        {
            tracing::info!(pod = %name, "a DataVolume waits for its first consumer: made a temporary pod to consume its claim");
            ctx.event(
                vmi.object_ref(&()),
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created WaitForFirstConsumer temporary pod {name}"),
            );
        }
    }
    Ok(Some(Action::requeue(crate::datavolume::POLL)))
}

/// The temporary pod of [`first_consumer`], deleted once the launcher pod may be made.
async fn end_first_consumer(vmi: &VirtualMachineInstance, n: &Names, ctx: &Context) -> Result<()> {
    let name = pod::first_consumer_pod_name(&n.name, &n.uid);
    let Some(p) = ctx.cached_pod(&n.ns, &name) else {
        return Ok(());
    };
    if p.meta().deletion_timestamp.is_some() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.ns);
    let uid = p.uid().unwrap_or_default();
    if writes::delete(&pods, &name, &uid, None, &ctx.metrics, "pods").await? {
        tracing::info!(pod = %name, "the DataVolumes are ready: deleted the temporary pod");
        ctx.event(
            vmi.object_ref(&()),
            EventType::Normal,
            "SuccessfulDelete",
            format!("Deleted WaitForFirstConsumer temporary pod {name}"),
        );
    }
    Ok(())
}

/// A VMI failed by virt-handler (the controller's own writes tell about themselves): a
/// Warning Event with the phase it came from and why.
fn tell_failure_from_elsewhere(vmi: &VirtualMachineInstance, n: &Names, ctx: &Context) {
    let phase = vmi.status.as_ref().and_then(|s| s.phase);
    if let Some(before) = ctx.phases.swap(&n.uid, phase)
        && before != phase
        && phase == Some(VmiPhase::Failed)
    {
        let from = before.map_or("(none)", VmiPhase::as_str);
        let why = crate::ending::Ending::of(vmi).map_or_else(String::new, |e| {
            if e.detail == e.reason {
                e.reason
            } else {
                format!("{}: {}", e.reason, e.detail)
            }
        });
        tracing::info!(from, to = "Failed", reason = %why, "VMI phase changed");
        ctx.event(
            vmi.object_ref(&()),
            EventType::Warning,
            VmiPhase::Failed.as_str(),
            format!("{from} -> Failed: {why}"),
        );
    }
}

/// What one reconcile of a VMI sees: the VMI, its launcher pod, and for a deleted VMI
/// whether that pod's node is gone.
pub(crate) struct Seen<'a> {
    pub vmi: &'a VirtualMachineInstance,
    /// The launcher pod this VMI created: the cache's, else the API server's where the plan
    /// depends on it ([`reads_pod`]; the cache may not have seen a new pod yet).
    pub pod: Option<Arc<Pod>>,
    /// The pod of a deleted VMI has no node, or its node is gone: nothing runs the guest.
    pub node_gone: bool,
    pub now: Timestamp,
    /// The VMI's claim volumes in block mode, read by the claims gate before the pod is
    /// rendered ([`crate::claims`]); empty otherwise.
    pub block_claims: pod::BlockClaims,
}

fn deleting(vmi: &VirtualMachineInstance) -> bool {
    vmi.meta().deletion_timestamp.is_some()
}

fn has_finalizer(vmi: &VirtualMachineInstance) -> bool {
    vmi.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether a pod the cache lacks is read from the API server: for a deleted VMI still held
/// by the finalizer, and for a VMI past Pending and not final. A new VMI (no phase, or
/// Pending) without a cached pod creates it instead; a final VMI goes by the cache.
pub(crate) fn reads_pod(vmi: &VirtualMachineInstance) -> bool {
    let phase = vmi.status.as_ref().and_then(|s| s.phase);
    has_finalizer(vmi)
        && (deleting(vmi)
            || !(matches!(phase, None | Some(VmiPhase::Pending))
                || phase.is_some_and(VmiPhase::is_final)))
}

/// Reads what the plan decides from (see [`Seen`]).
async fn observe<'a>(
    vmi: &'a VirtualMachineInstance,
    n: &Names,
    ctx: &Context,
) -> Result<Seen<'a>> {
    let mut pod = ctx
        .cached_pod(&n.ns, &n.pod)
        .filter(|p| created_by(p, &n.uid));
    if pod.is_none() && reads_pod(vmi) {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.ns);
        pod = writes::get(&pods, &n.pod, &ctx.metrics, "pods")
            .await?
            .filter(|p| created_by(p, &n.uid))
            .map(Arc::new);
    }
    let mut node_gone = false;
    if deleting(vmi)
        && has_finalizer(vmi)
        && let Some(p) = &pod
    {
        node_gone = match p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            None => true, // never scheduled: nothing runs, the API server deletes it at once
            Some(node) => {
                let nodes: Api<Node> = Api::all(ctx.client.clone());
                writes::get(&nodes, node, &ctx.metrics, "nodes")
                    .await?
                    .is_none()
            }
        };
    }
    Ok(Seen {
        vmi,
        pod,
        node_gone,
        now: Timestamp::now(),
        block_claims: pod::BlockClaims::new(),
    })
}

/// A delete of the launcher pod.
#[derive(Debug, PartialEq)]
pub(crate) struct PodDelete {
    pub name: String,
    pub uid: String,
    /// None: the pod's own grace period.
    pub grace: Option<u32>,
    /// Told once the delete is sent (a delete that asks the guest to shut down).
    pub event: Option<String>,
    /// Why the pod is removed by force (its node is gone, or it is stuck past its
    /// deadline), for the log.
    pub forced: Option<&'static str>,
}

/// The writes of one reconcile of a VMI, decided from what it saw ([`plan`]).
#[derive(Debug)]
pub(crate) enum Plan {
    /// Nothing to write: look again as the action says.
    Wait(Action),
    /// Add the finalizer (testing the list it was read with); its watch event brings the
    /// next pass.
    AddFinalizer,
    /// Delete the launcher pod, then look again as the action says.
    DeletePod(PodDelete, Action),
    /// A deleted VMI whose guest is down (or that nothing can run any more): the pod's
    /// delete if one is still to send, then the finalizer removed.
    Release(Option<PodDelete>),
    /// Create this launcher pod, and tell it in this `SuccessfulCreate` Event if any
    /// ([`pod_created_event`]); the status follows from the pod's watch event (the next
    /// pass), from the pod read back when one was there already, or
    /// ([`plan_create_failure`]) from the refusal.
    CreatePod(Box<Pod>, Option<String>),
    /// The spec cannot run: the VMI fails for good with this status and Event.
    Unrunnable(PodPlan),
    /// Write the status (and the node label) from the launcher pod.
    Status(PodPlan),
}

/// Decides a reconcile's writes from what it saw. Pure (rendering the pod included).
pub(crate) fn plan(seen: &Seen, launcher: &pod::LauncherConfig) -> Plan {
    let vmi = seen.vmi;
    let pod = seen.pod.as_deref();
    if deleting(vmi) {
        return plan_cleanup(seen);
    }
    if !has_finalizer(vmi) {
        return Plan::AddFinalizer;
    }
    let old = vmi.status.clone().unwrap_or_default();
    if old.phase.is_some_and(VmiPhase::is_final) {
        // A finished VMI keeps no running pod.
        return match pod {
            Some(p) if !pod_finished(p) && p.meta().deletion_timestamp.is_none() => {
                Plan::DeletePod(graceful_delete(vmi, p), Action::requeue(RESYNC))
            }
            _ => Plan::Wait(Action::requeue(RESYNC)),
        };
    }
    if pod.is_none() && matches!(old.phase, None | Some(VmiPhase::Pending)) {
        return match pod::render(vmi, launcher, &seen.block_claims) {
            Ok(rendered) => {
                let event = pod_created_event(vmi, &rendered);
                Plan::CreatePod(Box::new(rendered), event)
            }
            // A spec that cannot run fails the VMI for good.
            Err(e) => Plan::Unrunnable(plan_unrunnable(
                &old,
                e.reason(),
                &ferrovirt_runtime::chain(&e),
            )),
        };
    }
    Plan::Status(plan_from_pod(vmi, &old, old.clone(), pod, seen.now))
}

/// The `SuccessfulCreate` Event of a new launcher pod, on a VMI that no VM controls. A
/// VM's VMI goes without: its VM's own `SuccessfulCreate` told the start, and the pod is in
/// the VMI's `status.activePods` (KubeVirt tells both; one Event less is one request less
/// per VM, bench/scale).
pub(crate) fn pod_created_event(vmi: &VirtualMachineInstance, pod: &Pod) -> Option<String> {
    let by_vm = vmi
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "VirtualMachine");
    (!by_vm).then(|| format!("Created virtual machine pod {}", pod.name_any()))
}

/// A deleted VMI: ask the pod to shut the guest down (deleting it with the VMI's grace
/// period: the launcher turns SIGTERM into an ACPI shutdown), wait until it has finished
/// or is gone, then let the VMI go.
fn plan_cleanup(seen: &Seen) -> Plan {
    let vmi = seen.vmi;
    if !has_finalizer(vmi) {
        return Plan::Wait(Action::await_change());
    }
    let Some(p) = seen.pod.as_deref() else {
        return Plan::Release(None);
    };
    let deadline = p.meta().deletion_timestamp.as_ref().map(|t| t.0);
    let stuck = deadline.is_some_and(|d| {
        seen.now > d + SignedDuration::try_from(STUCK_POD_SLACK).unwrap_or(SignedDuration::ZERO)
    });
    let finished = pod_finished(p);
    if finished || seen.node_gone || stuck {
        // The guest is down (or nothing can run it any more): the pod goes now.
        let forced = if seen.node_gone {
            Some("its node is gone")
        } else if stuck {
            Some("it is stuck past its deadline")
        } else {
            None
        };
        let grace = forced.map(|_| 0);
        let delete =
            (p.meta().deletion_timestamp.is_none() || grace == Some(0)).then(|| PodDelete {
                name: p.name_any(),
                uid: p.uid().unwrap_or_default(),
                grace,
                event: None,
                forced,
            });
        return Plan::Release(delete);
    }
    // Pod updates wake the reconcile; the deadline is the fallback.
    let grace = pod::grace_seconds(vmi) + GRACE_MARGIN_SECONDS;
    let again = Action::requeue(Duration::from_secs(grace as u64) + STUCK_POD_SLACK);
    if p.meta().deletion_timestamp.is_none() {
        Plan::DeletePod(graceful_delete(vmi, p), again)
    } else {
        Plan::Wait(again)
    }
}

/// The launcher pod's delete with the VMI's grace period plus the margin, told in an Event.
fn graceful_delete(vmi: &VirtualMachineInstance, p: &Pod) -> PodDelete {
    let name = p.name_any();
    let grace = (pod::grace_seconds(vmi) + GRACE_MARGIN_SECONDS) as u32;
    PodDelete {
        event: Some(format!(
            "Deleted virtual machine pod {name} (grace period {grace}s)"
        )),
        name,
        uid: p.uid().unwrap_or_default(),
        grace: Some(grace),
        forced: None,
    }
}

/// The status of a VMI whose spec cannot run: Failed with the reason, and a Warning Event.
pub(crate) fn plan_unrunnable(
    old: &VirtualMachineInstanceStatus,
    reason: &'static str,
    message: &str,
) -> PodPlan {
    let mut status = old.clone();
    status.phase = Some(VmiPhase::Failed);
    status.reason = Some(reason.to_string());
    set_condition(&mut status.conditions, failure_condition(reason, message));
    PodPlan {
        status,
        label_node: None,
        requeue: RESYNC,
        reads_mount_failure: false,
        events: vec![(EventType::Warning, reason, message.to_string())],
    }
}

/// The status after the API server refused the launcher pod, as KubeVirt has it: Pending,
/// with the API server's reason in condition Synchronized False (FailedCreate); the retry
/// backs off.
pub(crate) fn plan_create_failure(
    old: &VirtualMachineInstanceStatus,
    reason: &str,
    message: &str,
) -> VirtualMachineInstanceStatus {
    let mut status = old.clone();
    status.phase = Some(VmiPhase::Pending);
    let failed = format!("failed to create virtual machine pod: {message}");
    set_condition(
        &mut status.conditions,
        synchronized_failure(reason, &failed),
    );
    status
}

/// Makes the plan's writes.
async fn execute(seen: &Seen<'_>, n: &Names, planned: Plan, ctx: &Context) -> Result<Action> {
    let vmi = seen.vmi;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &n.ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.ns);
    let old = vmi.status.clone().unwrap_or_default();
    match planned {
        Plan::Wait(action) => Ok(action),
        Plan::AddFinalizer => {
            let written = writes::add_finalizer(&vmis, vmi, FINALIZER, &ctx.metrics, VMIS).await?;
            ctx.own_writes.wrote_over(vmi, &written);
            // The write triggers the next reconcile.
            Ok(Action::await_change())
        }
        Plan::DeletePod(d, action) => {
            delete_pod(vmi, &d, &pods, ctx).await?;
            Ok(action)
        }
        Plan::Release(d) => {
            if let Some(d) = &d {
                delete_pod(vmi, d, &pods, ctx).await?;
            }
            writes::remove_finalizer(&vmis, vmi, FINALIZER, &ctx.metrics, VMIS).await?;
            ctx.phases.forget(&n.uid);
            ctx.own_writes.forget(&n.uid);
            tracing::info!("the guest is down, released the VMI");
            Ok(Action::await_change())
        }
        Plan::CreatePod(rendered, event) => {
            let pod = match writes::create(&pods, &rendered, &ctx.metrics, "pods").await {
                Ok(Some(_)) => {
                    if let Some(note) = event {
                        ctx.event(
                            vmi.object_ref(&()),
                            EventType::Normal,
                            "SuccessfulCreate",
                            note,
                        );
                    }
                    // The status follows from the new pod's watch event, in a pass of its
                    // own, as in KubeVirt (its VMI stays Pending in the pass that creates
                    // the pod): the worker is free for the next pod at once, and by then the
                    // pod is often bound, so Scheduling carries its node and needs no
                    // write of its own for it (bench/scale).
                    return Ok(Action::requeue(POD_EVENT_FALLBACK));
                }
                Ok(None) => writes::get(&pods, &n.pod, &ctx.metrics, "pods").await?,
                Err(e) => {
                    // As KubeVirt: the API server's reason on the VMI and in a Warning Event.
                    let message = crate::error::api_message(&e);
                    let e = Error::FailedCreatePod(n.name.clone(), e);
                    ctx.event(
                        vmi.object_ref(&()),
                        EventType::Warning,
                        e.reason(),
                        format!("Error creating pod: {message}"),
                    );
                    let status = plan_create_failure(&old, e.reason(), &message);
                    write_status(vmi, &old, status, None, &vmis, seen.now, ctx).await?;
                    return Err(e);
                }
            };
            let status = plan_from_pod(vmi, &old, old.clone(), pod.as_ref(), seen.now);
            write_pod_plan(vmi, &old, status, pod.as_ref(), &vmis, seen.now, ctx).await
        }
        Plan::Unrunnable(mut p) => {
            for (type_, reason, note) in std::mem::take(&mut p.events) {
                ctx.event(vmi.object_ref(&()), type_, reason, note);
            }
            write_status(vmi, &old, p.status, None, &vmis, seen.now, ctx).await?;
            Ok(Action::await_change())
        }
        Plan::Status(p) => {
            let pod = seen.pod.as_deref();
            write_pod_plan(vmi, &old, p, pod, &vmis, seen.now, ctx).await
        }
    }
}

/// Writes a [`PodPlan`]: the node's FailedMount word read where the plan asks for it, its
/// Events, then the node label and the status in one write.
async fn write_pod_plan(
    vmi: &VirtualMachineInstance,
    old: &VirtualMachineInstanceStatus,
    mut plan: PodPlan,
    pod: Option<&Pod>,
    vmis: &Api<VirtualMachineInstance>,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action> {
    if plan.reads_mount_failure
        && let Some(p) = pod
        && let Some(message) = secret_mount_failure(vmi, p, ctx).await
    {
        plan.mount_failure(old, message);
    }
    for (type_, reason, note) in std::mem::take(&mut plan.events) {
        ctx.event(vmi.object_ref(&()), type_, reason, note);
    }
    // The volumes in the Scheduled write, their claims bound by then (KubeVirt keeps
    // `volumeStatus` from its claim cache; virt-handler owns the status from here).
    if plan.status.phase == Some(VmiPhase::Scheduled) && old.phase != Some(VmiPhase::Scheduled) {
        let ns = vmi.namespace().unwrap_or_default();
        let pvcs = crate::claims::read(&ns, &vmi.spec.volumes, ctx).await;
        crate::claims::show_volumes(vmi, &mut plan.status, &pvcs);
    }
    let label = plan.label_node.as_deref();
    write_status(vmi, old, plan.status, label, vmis, now, ctx).await?;
    Ok(Action::requeue(plan.requeue))
}

/// What a VMI's status becomes from its launcher pod, decided without the API: the status,
/// the node to label the VMI with, when to look again, and whether the node's FailedMount
/// Events are to be read ([`PodPlan::mount_failure`] adds what they say).
#[derive(Debug)]
pub(crate) struct PodPlan {
    pub status: VirtualMachineInstanceStatus,
    /// The VMI's `kubevirt.io/nodeName` label to write.
    pub label_node: Option<String>,
    pub requeue: Duration,
    /// The pod waits for its cloud-init Secrets: the node's FailedMount Events name them.
    pub reads_mount_failure: bool,
    /// Events to tell (type, reason, note).
    pub events: Vec<(EventType, &'static str, String)>,
}

impl PodPlan {
    /// The node's FailedMount message for the pod: in condition Synchronized, and a
    /// Warning Event unless `old` says it already, as for an image it cannot pull.
    pub fn mount_failure(&mut self, old: &VirtualMachineInstanceStatus, message: String) {
        let said = old
            .conditions
            .iter()
            .any(|c| c.type_ == SYNCHRONIZED && c.message.as_ref() == Some(&message));
        set_condition(
            &mut self.status.conditions,
            synchronized_failure("FailedMount", &message),
        );
        if !said {
            self.events
                .push((EventType::Warning, "FailedMount", message));
        }
    }
}

/// The VMI's status from `old` and its launcher pod `pod` (None: none could be made, or it
/// is gone). Pure: the phase up to Scheduled, the pod's failures, and once the node runs the
/// VMI only what the node side cannot say (a pod gone or ended).
pub(crate) fn plan_from_pod(
    vmi: &VirtualMachineInstance,
    old: &VirtualMachineInstanceStatus,
    mut status: VirtualMachineInstanceStatus,
    pod: Option<&Pod>,
    now: Timestamp,
) -> PodPlan {
    let phase = old.phase;
    if pod.is_some() {
        // The pod exists: nothing left to report of creating it.
        remove_condition(&mut status.conditions, SYNCHRONIZED);
    }
    let mut label_node: Option<String> = None;
    let mut requeue = RESYNC;
    let mut reads_mount_failure = false;
    match (phase, pod) {
        // Not yet processed, and no pod could be made: stays Pending.
        (None | Some(VmiPhase::Pending), None) => status.phase = Some(VmiPhase::Pending),
        (None | Some(VmiPhase::Pending | VmiPhase::Scheduling), Some(p)) => {
            status.phase = Some(VmiPhase::Scheduling);
            set_active_pod(&mut status, p);
            if pod_down(p) {
                // The pod failed (or went) before the guest ever ran.
                let (reason, message) = pod_failure(p);
                status.phase = Some(VmiPhase::Failed);
                status.reason = Some(reason.clone());
                set_condition(&mut status.conditions, failure_condition(&reason, &message));
            } else if let Some(unschedulable) = unschedulable_condition(p) {
                let unschedulable = with_selector_hint(unschedulable, &vmi.spec);
                set_condition(&mut status.conditions, unschedulable);
            } else if let Some((reason, message)) = image_error(p) {
                // As KubeVirt: a container image the node cannot pull (a containerDisk,
                // the kernel-boot image, the launcher's) keeps the VMI Scheduling with
                // the node's reason and message in condition Synchronized.
                set_condition(
                    &mut status.conditions,
                    synchronized_failure(&reason, &message),
                );
            } else if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone())
                && ready_for_node(p)
            {
                remove_condition(&mut status.conditions, "PodScheduled");
                status.phase = Some(VmiPhase::Scheduled);
                status.node_name = Some(node.clone());
                label_node = node_label(&node).map(str::to_string);
            } else if scheduled(p) {
                remove_condition(&mut status.conditions, "PodScheduled");
                if pod::cloudinit::may_wait_for_secret(vmi, p) {
                    // The node starts the pod only once its cloud-init Secrets exist; its
                    // FailedMount Events name the Secret ([`PodPlan::mount_failure`]).
                    requeue = SECRET_WAIT_RETRY;
                    reads_mount_failure = true;
                }
            }
        }
        (Some(VmiPhase::Scheduling), None) => {
            status.phase = Some(VmiPhase::Failed);
            status.reason = Some("LauncherPodMissing".into());
            set_condition(
                &mut status.conditions,
                failure_condition("LauncherPodMissing", "the launcher pod is gone"),
            );
        }
        // virt-handler owns these phases; the pod decides only when the node side cannot.
        (Some(VmiPhase::Scheduled | VmiPhase::Running | VmiPhase::Unknown), None) => {
            status.phase = Some(VmiPhase::Failed);
            status.reason = Some("LauncherPodMissing".into());
            set_condition(
                &mut status.conditions,
                failure_condition("LauncherPodMissing", "the launcher pod is gone"),
            );
        }
        (Some(VmiPhase::Scheduled | VmiPhase::Running | VmiPhase::Unknown), Some(p)) => {
            set_active_pod(&mut status, p);
            match pod_phase(p) {
                // The launcher ended while the pod's disk containers still run.
                _ if compute_exit(p) == Some(0) => status.phase = Some(VmiPhase::Succeeded),
                _ if compute_exit(p).is_some() => {
                    let (reason, message) = pod_failure(p);
                    status.phase = Some(VmiPhase::Failed);
                    status.reason = Some(reason.clone());
                    set_condition(&mut status.conditions, failure_condition(&reason, &message));
                }
                "Failed" => {
                    let (reason, message) = pod_failure(p);
                    status.phase = Some(VmiPhase::Failed);
                    status.reason = Some(reason.clone());
                    set_condition(&mut status.conditions, failure_condition(&reason, &message));
                }
                // The launcher exits 0 only after the guest shut down cleanly.
                "Succeeded" => status.phase = Some(VmiPhase::Succeeded),
                _ => {}
            }
            // A readiness probe: Ready is the launcher pod's (virt-handler's otherwise).
            if status.phase == Some(VmiPhase::Running)
                && let Some(ready) = pod::probes::ready_condition(vmi, &status.conditions, p)
            {
                set_condition(&mut status.conditions, ready);
            }
        }
        // Final phases are never changed.
        (Some(VmiPhase::Succeeded | VmiPhase::Failed), _) => {}
    }
    // A pod just bound and not running yet: its node alone is not written into
    // activePods before BIND_SETTLE has passed since the bind. A pod that runs by then is
    // written once, with the VMI Scheduled.
    if status.phase == Some(VmiPhase::Scheduling)
        && let Some(p) = pod
        && let Some(left) = bind_settling(p, now)
    {
        let listed = p.uid().is_some_and(|uid| {
            old.active_pods
                .as_ref()
                .is_some_and(|a| a.contains_key(&uid))
        });
        let mut held = status.clone();
        held.active_pods = old.active_pods.clone();
        if listed && &held == old {
            status = held;
            requeue = requeue.min(left);
        }
    }
    // The first status of a new pod that does not run yet waits for it to run (the pod's
    // watch events, its bind and its start, bring the next passes), POD_SETTLE after its
    // creation at the most; a pod the scheduler refused, or whose image the node cannot
    // pull, is told at once.
    if status.phase == Some(VmiPhase::Scheduling)
        && matches!(old.phase, None | Some(VmiPhase::Pending))
        && let Some(p) = pod
        && unschedulable_condition(p).is_none()
        && image_error(p).is_none()
        && let Some(left) = settling(p.meta().creation_timestamp.as_ref(), POD_SETTLE, now)
    {
        status = old.clone();
        requeue = requeue.min(left);
        // The node's FailedMount word is read once the VMI is Scheduling.
        reads_mount_failure = false;
    }
    PodPlan {
        status,
        label_node,
        requeue,
        reads_mount_failure,
        events: Vec::new(),
    }
}

/// The node's word on a cloud-init Secret it cannot mount for the launcher pod `p`: its
/// FailedMount Events ([`pod::cloudinit::mount_failure`]). A failed read is only logged.
async fn secret_mount_failure(
    vmi: &VirtualMachineInstance,
    p: &Pod,
    ctx: &Context,
) -> Option<String> {
    let (uid, ns) = (p.uid()?, p.namespace()?);
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    let params =
        ListParams::default().fields(&format!("involvedObject.uid={uid},reason=FailedMount"));
    ctx.metrics.request("list", "events");
    match events.list(&params).await {
        Ok(list) => pod::cloudinit::mount_failure(vmi, &list.items),
        Err(e) => {
            tracing::warn!(error = %e, "reading the launcher pod's FailedMount Events failed");
            None
        }
    }
}

/// A status write: the status with its phase transition stamped, and the phase change to
/// log and perhaps tell.
#[derive(Debug)]
pub(crate) struct StatusWrite {
    pub status: VirtualMachineInstanceStatus,
    /// The phase before and after, when it changes.
    pub phase_change: Option<(Option<VmiPhase>, VmiPhase)>,
    /// A failure's Warning Event note (only a failure is an Event, as in KubeVirt: the
    /// other phases are in the status, and an Event each would cost a request per step).
    pub failed_event: Option<String>,
}

/// What writing `status` over `old` comes to (None: nothing changed, nothing is written).
/// Pure.
pub(crate) fn plan_status_write(
    old: &VirtualMachineInstanceStatus,
    mut status: VirtualMachineInstanceStatus,
    now: Timestamp,
) -> Option<StatusWrite> {
    let phase_change = status
        .phase
        .filter(|p| Some(*p) != old.phase)
        .map(|p| (old.phase, p));
    if let Some((_, p)) = phase_change {
        status
            .phase_transition_timestamps
            .push(PhaseTransitionTimestamp {
                phase: Some(p),
                phase_transition_timestamp: Some(Time(now)),
            });
    }
    if &status == old {
        return None;
    }
    let failed_event = phase_change
        .filter(|(_, p)| *p == VmiPhase::Failed)
        .map(|(from, p)| {
            let from = from.map_or("(none)", VmiPhase::as_str);
            // A failure's Event says what failed, not only its reason.
            let failure = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Failure")
                .and_then(|c| c.message.as_deref());
            match (status.reason.as_deref(), failure) {
                (Some(r), Some(m)) if m != r => format!("{from} -> {p}: {r}: {m}"),
                (Some(r), _) => format!("{from} -> {p}: {r}"),
                (None, _) => format!("{from} -> {p}"),
            }
        });
    Some(StatusWrite {
        status,
        phase_change,
        failed_event,
    })
}

/// Writes `status` if it differs from `old` ([`plan_status_write`]) and the node label
/// `label` if the VMI lacks it, in one guarded JSON patch of the VMI (its CRD has no status
/// subresource, as KubeVirt's: [`vmi_writes`]); records the phase change and tells about
/// it. Handler-owned and final phases are only written while the VMI is not final (the
/// test of the resourceVersion makes sure nobody wrote in between).
#[allow(clippy::too_many_arguments)]
async fn write_status(
    vmi: &VirtualMachineInstance,
    old: &VirtualMachineInstanceStatus,
    status: VirtualMachineInstanceStatus,
    label: Option<&str>,
    vmis: &Api<VirtualMachineInstance>,
    now: Timestamp,
    ctx: &Context,
) -> Result<()> {
    let w = plan_status_write(old, status, now);
    let Some(ops) = vmi_writes(vmi, w.as_ref().map(|w| &w.status), label)? else {
        return Ok(());
    };
    let written = writes::json_patch(vmis, vmi, ops, false, &ctx.metrics, VMIS).await?;
    ctx.own_writes.wrote_over(vmi, &written);
    let Some(w) = w else {
        return Ok(());
    };
    if let Some(uid) = vmi.uid() {
        ctx.phases.swap(&uid, w.status.phase);
    }
    if let Some((from, to)) = w.phase_change {
        tracing::info!(
            from = from.map_or("(none)", VmiPhase::as_str),
            to = to.as_str(),
            reason = w.status.reason.as_deref().unwrap_or(""),
            node = w.status.node_name.as_deref().unwrap_or(""),
            "VMI phase changed"
        );
    }
    if let Some(note) = w.failed_event {
        ctx.event(
            vmi.object_ref(&()),
            EventType::Warning,
            VmiPhase::Failed.as_str(),
            note,
        );
    }
    Ok(())
}

/// The guarded JSON patch of the VMI that writes `status` (None: unchanged) and the node
/// label `label` where the VMI does not carry it yet; None when neither is to be written.
/// Pure.
pub(crate) fn vmi_writes(
    vmi: &VirtualMachineInstance,
    status: Option<&VirtualMachineInstanceStatus>,
    label: Option<&str>,
) -> Result<Option<Vec<serde_json::Value>>> {
    let label =
        label.filter(|node| vmi.labels().get(NODE_NAME_LABEL).map(String::as_str) != Some(*node));
    let mut ops = Vec::new();
    if let Some(node) = label {
        ops.push(writes::set_label(vmi, NODE_NAME_LABEL, node));
    }
    if let Some(status) = status {
        ops.push(json!({"op": "add", "path": "/status", "value": serde_json::to_value(status)?}));
    }
    Ok((!ops.is_empty()).then(|| writes::guarded(vmi, ops)))
}

/// Sends a planned delete of the launcher pod, then tells its Event or logs the force.
async fn delete_pod(
    vmi: &VirtualMachineInstance,
    d: &PodDelete,
    pods: &Api<Pod>,
    ctx: &Context,
) -> Result<()> {
    writes::delete(pods, &d.name, &d.uid, d.grace, &ctx.metrics, "pods")
        .await
        .map_err(|e| Error::FailedDeletePod(d.name.clone(), e))?;
    if let Some(note) = &d.event {
        ctx.event(
            vmi.object_ref(&()),
            EventType::Normal,
            "SuccessfulDelete",
            note.clone(),
        );
    }
    if let Some(why) = d.forced {
        tracing::info!(pod = %d.name, why, "removed the launcher pod by force");
    }
    Ok(())
}

/// The value of the VMI's [`NODE_NAME_LABEL`] for `node`. A node name may be longer than a
/// label value can be (253 against 63 characters): such a VMI goes without the label rather
/// than never becoming Scheduled (virt-handler finds its VMIs by their pods' node).
fn node_label(node: &str) -> Option<&str> {
    (node.len() <= pod::LABEL_VALUE_MAX).then_some(node)
}

fn created_by(p: &Pod, vmi_uid: &str) -> bool {
    p.labels()
        .get(pod::CREATED_BY_LABEL)
        .is_some_and(|u| u == vmi_uid)
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_finished(p: &Pod) -> bool {
    matches!(pod_phase(p), "Succeeded" | "Failed")
}

/// Down or going down: finished, its launcher container ended (the disk containers may
/// still run), or being deleted; KubeVirt's `isPodDownOrGoingDown`.
fn pod_down(p: &Pod) -> bool {
    pod_finished(p) || compute_exit(p).is_some() || p.meta().deletion_timestamp.is_some()
}

/// The launcher container's exit code, once it has ended.
fn compute_exit(p: &Pod) -> Option<i32> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == COMPUTE_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// The first container (init containers first) waiting because its image cannot be
/// pulled: its reason (`ErrImagePull`, `ImagePullBackOff`) and the node's message, which
/// names the image. KubeVirt's `checkForContainerImageError`.
fn image_error(p: &Pod) -> Option<(String, String)> {
    let s = p.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            matches!(reason, "ErrImagePull" | "ImagePullBackOff").then(|| {
                let message = w.message.clone().unwrap_or_default();
                let message = if message.contains(&c.image) {
                    message
                } else {
                    format!("container {} (image {}): {message}", c.name, c.image)
                };
                (reason.to_string(), message)
            })
        })
}

/// How long until [`BIND_SETTLE`] has passed since `p` was bound (the transition of its
/// PodScheduled condition, to the second); None once it has, when not known, or when the
/// bind is in this clock's future (the API server's clock ahead: no wait beyond the settle).
fn bind_settling(p: &Pod, now: Timestamp) -> Option<Duration> {
    let bound = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
        .last_transition_time
        .as_ref();
    settling(bound, BIND_SETTLE, now)
}

/// How long until `settle` has passed since `since`; None once it has, when not known, or
/// when `since` is in this clock's future (no wait beyond `settle`).
fn settling(since: Option<&Time>, settle: Duration, now: Timestamp) -> Option<Duration> {
    let until = since?.0 + SignedDuration::try_from(settle).ok()?;
    Duration::try_from(until.duration_since(now))
        .ok()
        .filter(|left| !left.is_zero() && *left <= settle)
}

fn scheduled(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

/// The pod can be handed to the node (KubeVirt's `IsPodReady`): it runs, and so does every
/// container, the launcher's and the disk containers virt-handler reads images through.
/// Not the compute container's readiness: that is the VMI's readiness probe where it has
/// one, and the launcher's ready file otherwise, which kubelet checks once a second (the
/// first check, at the container's start, always finds it missing). virt-handler waits
/// for the launcher's socket itself, so the hand-over costs no probe period.
fn ready_for_node(p: &Pod) -> bool {
    let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let running = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| c.name == COMPUTE_CONTAINER)
                && cs.len() >= containers
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        });
    pod_phase(p) == "Running" && running
}

/// The scheduler's PodScheduled=False condition, as a VMI condition.
fn unschedulable_condition(p: &Pod) -> Option<Condition> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(Condition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_probe_time: c.last_probe_time.clone(),
        last_transition_time: c.last_transition_time.clone(),
    })
}

/// The scheduler's words when no node matched the launcher pod's selector, with the
/// feature labels the pod selects for the VMI's fields named ([`pod::feature_selectors`]):
/// the scheduler's message names no label, and these are not the user's own selector.
fn with_selector_hint(mut c: Condition, spec: &crds::VirtualMachineInstanceSpec) -> Condition {
    let features = pod::feature_selectors(spec);
    let message = c.message.as_deref().unwrap_or_default();
    if features.is_empty() || !message.contains("node affinity/selector") {
        return c;
    }
    let named: Vec<String> = features
        .iter()
        .map(|(label, field)| format!("{label}=true for {field}"))
        .collect();
    c.message = Some(format!(
        "{message} (the launcher pod selects nodes labelled {}; virt-handler labels a node so \
         where it can serve the field)",
        named.join(" and ")
    ));
    c
}

/// Why a pod failed: the pod's reason, else its container's terminated or waiting reason.
fn pod_failure(p: &Pod) -> (String, String) {
    let status = p.status.as_ref();
    if let Some(s) = status
        && let Some(reason) = &s.reason
    {
        return (
            reason.clone(),
            s.message
                .clone()
                .unwrap_or_else(|| format!("launcher pod {reason}")),
        );
    }
    let compute = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == COMPUTE_CONTAINER));
    if let Some(state) = compute.and_then(|c| c.state.as_ref()) {
        if let Some(t) = &state.terminated {
            let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
            // The message is the end of the launcher's log (FallbackToLogsOnError), whose
            // last line is the launcher's own account of its failure.
            let msg = t
                .message
                .as_deref()
                .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| format!("{} (exit code {})", l.trim(), t.exit_code))
                .unwrap_or_else(|| format!("virt-launcher exited with code {}", t.exit_code));
            return (reason, msg);
        }
        if let Some(w) = &state.waiting
            && let Some(reason) = &w.reason
        {
            return (reason.clone(), w.message.clone().unwrap_or_default());
        }
    }
    if p.meta().deletion_timestamp.is_some() && !pod_finished(p) {
        return (
            "PodTerminating".into(),
            "the launcher pod is being deleted before the guest ran".into(),
        );
    }
    (
        format!("Pod{}", pod_phase(p)),
        format!("the launcher pod is {}", pod_phase(p)),
    )
}

fn failure_condition(reason: &str, message: &str) -> Condition {
    Condition {
        type_: "Failure".into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    }
}

/// KubeVirt's condition of a VMI its controller could not act on (reason and message of
/// the failure), removed once it could.
const SYNCHRONIZED: &str = "Synchronized";

fn synchronized_failure(reason: &str, message: &str) -> Condition {
    Condition {
        type_: SYNCHRONIZED.into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    }
}

fn set_active_pod(status: &mut VirtualMachineInstanceStatus, p: &Pod) {
    if let Some(uid) = p.uid() {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let active = status.active_pods.get_or_insert_with(BTreeMap::new);
        active.retain(|k, _| k == &uid);
        active.insert(uid, node);
    }
}

use crds::condition::{remove as remove_condition, set as set_condition};

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn pod_states() {
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [], nodeName: n1}\nstatus: {phase: Running, containerStatuses: [{name: compute, ready: true, restartCount: 0, image: i, imageID: '', state: {running: {}}}]}",
        );
        assert!(ready_for_node(&p) && scheduled(&p) && !pod_down(&p));
        // The compute container runs but is not ready (the launcher's ready file not yet
        // checked, or a VMI readiness probe waiting for the guest): handed over all the same.
        let unready = pod(
            "metadata: {name: p}\nspec: {containers: [], nodeName: n1}\nstatus: {phase: Running, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {running: {}}}]}",
        );
        assert!(ready_for_node(&unready));
        // Not before it runs.
        let waiting = pod(
            "metadata: {name: p}\nspec: {containers: [], nodeName: n1}\nstatus: {phase: Pending, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {waiting: {reason: ContainerCreating}}}]}",
        );
        assert!(!ready_for_node(&waiting));
        // A disk container that cannot pull its image: not ready, and the node's words.
        let i = pod(
            "metadata: {name: p}\nspec: {containers: [{name: compute}, {name: volumeroot}], nodeName: n1}\nstatus: {phase: Pending, containerStatuses: [\
             {name: compute, ready: true, restartCount: 0, image: i, imageID: '', state: {running: {}}},\
             {name: volumeroot, ready: false, restartCount: 0, image: 'example.org/disk:1', imageID: '', state: {waiting: {reason: ImagePullBackOff, message: 'Back-off pulling image \"example.org/disk:1\"'}}}]}",
        );
        assert!(!ready_for_node(&i) && !pod_down(&i));
        assert_eq!(
            image_error(&i),
            Some((
                "ImagePullBackOff".into(),
                "Back-off pulling image \"example.org/disk:1\"".into()
            ))
        );
        assert_eq!(image_error(&p), None);
        // The launcher ended while a disk container still runs: the pod is down.
        let d = pod(
            "metadata: {name: p}\nspec: {containers: [{name: compute}, {name: volumeroot}], nodeName: n1}\nstatus: {phase: Running, containerStatuses: [\
             {name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 0}}},\
             {name: volumeroot, ready: true, restartCount: 0, image: d, imageID: '', state: {running: {}}}]}",
        );
        assert!(pod_down(&d) && !ready_for_node(&d));
        assert_eq!(compute_exit(&d), Some(0));
        let u = pod(
            "metadata: {name: p}\nspec: {containers: []}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/1 nodes are available'}]}",
        );
        let c = unschedulable_condition(&u).unwrap();
        assert_eq!(
            (c.reason.as_deref(), c.message.as_deref()),
            (Some("Unschedulable"), Some("0/1 nodes are available"))
        );
        // The feature labels the pod selects for the VMI's fields, named.
        let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {}, "cpu": {"dedicatedCpuPlacement": true, "realtime": {}}}
        }))
        .unwrap();
        let selector = Condition {
            message: Some(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
                    .into(),
            ),
            ..c.clone()
        };
        assert_eq!(
            with_selector_hint(selector, &spec).message.as_deref(),
            Some(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                 (the launcher pod selects nodes labelled kubevirt.io/cpumanager=true for \
                 spec.domain.cpu.dedicatedCpuPlacement and kubevirt.io/realtime=true for \
                 spec.domain.cpu.realtime; virt-handler labels a node so where it can serve \
                 the field)"
            )
        );
        let plain = crds::VirtualMachineInstanceSpec::default();
        assert_eq!(with_selector_hint(c.clone(), &plain), c);
        assert!(!ready_for_node(&u));
        let f = pod(
            "metadata: {name: p}\nspec: {containers: []}\nstatus: {phase: Failed, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 2, reason: Error}}}]}",
        );
        assert_eq!(
            pod_failure(&f),
            ("Error".into(), "virt-launcher exited with code 2".into())
        );
        // The end of the launcher's log (FallbackToLogsOnError): its last line.
        let l = pod(
            "metadata: {name: p}\nspec: {containers: []}\nstatus: {phase: Failed, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 1, reason: Error, message: \"INFO started\\nvirt-launcher failed: creating /v/libvirt: No space left on device\\n\"}}}]}",
        );
        assert_eq!(
            pod_failure(&l).1,
            "virt-launcher failed: creating /v/libvirt: No space left on device (exit code 1)"
        );
        let e = pod(
            "metadata: {name: p}\nspec: {containers: []}\nstatus: {phase: Failed, reason: Evicted, message: low memory}",
        );
        assert_eq!(
            pod_failure(&e),
            ("Evicted".to_string(), "low memory".to_string())
        );
    }

    #[test]
    fn node_labels_fit_a_label_value() {
        assert_eq!(node_label("node1"), Some("node1"));
        let long = format!("{}.example.com", "n".repeat(60));
        assert_eq!(node_label(&long), None);
    }
}

#[cfg(test)]
#[path = "vmi_plan_tests.rs"]
mod plan_tests;
