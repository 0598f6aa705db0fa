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
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a VMI whose launcher pod waits for a cloud-init Secret is looked at again: the
/// node's FailedMount Events come without a change of the pod.
const SECRET_WAIT_RETRY: Duration = Duration::from_secs(3);

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
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &n.ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &n.ns);
    let cached = ctx
        .cached_pod(&n.ns, &n.pod)
        .filter(|p| created_by(p, &n.uid));

    let phase = vmi.status.as_ref().and_then(|s| s.phase);
    if let Some(before) = ctx.phases.swap(&n.uid, phase)
        && before != phase
        && phase == Some(VmiPhase::Failed)
    {
        // Failed by virt-handler (the controller's own writes tell about themselves).
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
    if vmi.meta().deletion_timestamp.is_some() {
        return cleanup(vmi, &n, cached, &vmis, &pods, ctx).await;
    }
    if !vmi.finalizers().iter().any(|f| f == FINALIZER) {
        let written = writes::add_finalizer(
            &vmis,
            vmi,
            FINALIZER,
            &ctx.metrics,
            "virtualmachineinstances",
        )
        .await?;
        ctx.own_writes.wrote_over(vmi, &written);
        // The write triggers the next reconcile.
        return Ok(Action::await_change());
    }

    let old = vmi.status.clone().unwrap_or_default();
    if phase.is_some_and(VmiPhase::is_final) {
        // A finished VMI keeps no running pod.
        if let Some(p) = cached.as_deref()
            && !pod_finished(p)
            && p.meta().deletion_timestamp.is_none()
        {
            delete_pod(vmi, p, &pods, ctx).await?;
        }
        return Ok(Action::requeue(RESYNC));
    }

    // dataVolume volumes: no launcher pod until their DataVolumes are ready (datavolume.rs).
    if cached.is_none()
        && let Some((status, ready)) = crate::datavolume::gate_vmi(vmi, ctx).await?
    {
        write_status(vmi, &old, status, &vmis, ctx).await?;
        return Ok(match ready {
            true => Action::await_change(),
            false => Action::requeue(crate::datavolume::POLL),
        });
    }

    // The pod: the cache, else the API server (the cache may not have seen a new pod).
    let mut pod = cached.map(|p| (*p).clone());
    let mut status = old.clone();
    if pod.is_none() && matches!(phase, None | Some(VmiPhase::Pending)) {
        match pod::render(vmi, &ctx.settings.launcher) {
            Ok(rendered) => match writes::create(&pods, &rendered, &ctx.metrics, "pods").await {
                Ok(Some(created)) => {
                    ctx.event(
                        vmi.object_ref(&()),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created virtual machine pod {}", n.pod),
                    );
                    pod = Some(created);
                }
                Ok(None) => pod = writes::get(&pods, &n.pod, &ctx.metrics, "pods").await?,
                Err(e) => {
                    // As KubeVirt: the API server's reason on the VMI (condition Synchronized
                    // False, FailedCreate) and in a Warning Event; the retry backs off.
                    let message = crate::error::api_message(&e);
                    let e = Error::FailedCreatePod(n.name.clone(), e);
                    ctx.event(
                        vmi.object_ref(&()),
                        EventType::Warning,
                        e.reason(),
                        format!("Error creating pod: {message}"),
                    );
                    status.phase = Some(VmiPhase::Pending);
                    let failed = format!("failed to create virtual machine pod: {message}");
                    set_condition(
                        &mut status.conditions,
                        synchronized_failure(e.reason(), &failed),
                    );
                    write_status(vmi, &old, status, &vmis, ctx).await?;
                    return Err(e);
                }
            },
            Err(e) => {
                // A spec that cannot run fails the VMI for good.
                ctx.event(
                    vmi.object_ref(&()),
                    EventType::Warning,
                    e.reason(),
                    ferrovirt_runtime::chain(&e),
                );
                status.phase = Some(VmiPhase::Failed);
                status.reason = Some(e.reason().to_string());
                set_condition(
                    &mut status.conditions,
                    failure_condition(e.reason(), &ferrovirt_runtime::chain(&e)),
                );
                write_status(vmi, &old, status, &vmis, ctx).await?;
                return Ok(Action::await_change());
            }
        }
    } else if pod.is_none() {
        pod = writes::get(&pods, &n.pod, &ctx.metrics, "pods")
            .await?
            .filter(|p| created_by(p, &n.uid));
    }

    let mut plan = plan_from_pod(vmi, &old, status, pod.as_ref());
    if plan.reads_mount_failure
        && let Some(p) = pod.as_ref()
        && let Some(message) = secret_mount_failure(vmi, p, ctx).await
    {
        plan.mount_failure(&old, message);
    }
    for (type_, reason, note) in std::mem::take(&mut plan.events) {
        ctx.event(vmi.object_ref(&()), type_, reason, note);
    }
    let (status, label_node, requeue) = (plan.status, plan.label_node, plan.requeue);

    if let Some(node) = &label_node
        && vmi.labels().get(NODE_NAME_LABEL) != Some(node)
    {
        let patch = json!({"metadata": {"labels": {NODE_NAME_LABEL: node}}});
        let labelled = writes::merge_patch_metadata(
            &vmis,
            vmi,
            patch,
            &ctx.metrics,
            "virtualmachineinstances",
        )
        .await?;
        ctx.own_writes.wrote_over(vmi, &labelled);
        // The status write below tests the resourceVersion: use the labelled one.
        let mut v = vmi.clone();
        v.metadata.resource_version = labelled.metadata.resource_version;
        write_status(&v, &old, status, &vmis, ctx).await?;
    } else {
        write_status(vmi, &old, status, &vmis, ctx).await?;
    }
    Ok(Action::requeue(requeue))
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

/// Writes `status` if it differs from `old`, records the phase change and tells about it.
/// Handler-owned and final phases are only written while the VMI is not final (the test
/// of the resourceVersion makes sure nobody wrote in between).
async fn write_status(
    vmi: &VirtualMachineInstance,
    old: &VirtualMachineInstanceStatus,
    mut status: VirtualMachineInstanceStatus,
    vmis: &Api<VirtualMachineInstance>,
    ctx: &Context,
) -> Result<()> {
    let changed_phase = status.phase != old.phase;
    if changed_phase && let Some(p) = status.phase {
        status
            .phase_transition_timestamps
            .push(PhaseTransitionTimestamp {
                phase: Some(p),
                phase_transition_timestamp: Some(Time(Timestamp::now())),
            });
    }
    if &status == old {
        return Ok(());
    }
    let written =
        writes::replace_status(vmis, vmi, &status, &ctx.metrics, "virtualmachineinstances").await?;
    if let Some(uid) = vmi.uid() {
        ctx.phases.swap(&uid, status.phase);
        ctx.own_writes.wrote_over(vmi, &written);
    }
    if changed_phase && let Some(p) = status.phase {
        let from = old.phase.map_or("(none)", VmiPhase::as_str);
        tracing::info!(
            from,
            to = p.as_str(),
            reason = status.reason.as_deref().unwrap_or(""),
            node = status.node_name.as_deref().unwrap_or(""),
            "VMI phase changed"
        );
        // Only a failure is an Event, as in KubeVirt: the other phases are in the status
        // (phaseTransitionTimestamps), and an Event each would cost a request per step.
        if p == VmiPhase::Failed {
            // A failure's Event says what failed, not only its reason.
            let failure = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Failure")
                .and_then(|c| c.message.as_deref());
            let note = match (status.reason.as_deref(), failure) {
                (Some(r), Some(m)) if m != r => format!("{from} -> {p}: {r}: {m}"),
                (Some(r), _) => format!("{from} -> {p}: {r}"),
                (None, _) => format!("{from} -> {p}"),
            };
            ctx.event(vmi.object_ref(&()), EventType::Warning, p.as_str(), note);
        }
    }
    Ok(())
}

/// A deleted VMI: ask the pod to shut the guest down (deleting it with the VMI's grace
/// period: the launcher turns SIGTERM into an ACPI shutdown), wait until it has finished
/// or is gone, then let the VMI go.
async fn cleanup(
    vmi: &VirtualMachineInstance,
    n: &Names,
    cached: Option<Arc<Pod>>,
    vmis: &Api<VirtualMachineInstance>,
    pods: &Api<Pod>,
    ctx: &Context,
) -> Result<Action> {
    if !vmi.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let pod = match cached {
        Some(p) => Some((*p).clone()),
        None => writes::get(pods, &n.pod, &ctx.metrics, "pods")
            .await?
            .filter(|p| created_by(p, &n.uid)),
    };
    if let Some(p) = &pod {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let node_gone = match &node {
            None => true, // never scheduled: nothing runs, the API server deletes it at once
            Some(node) => {
                let nodes: Api<Node> = Api::all(ctx.client.clone());
                writes::get(&nodes, node, &ctx.metrics, "nodes")
                    .await?
                    .is_none()
            }
        };
        let deadline = p.meta().deletion_timestamp.as_ref().map(|t| t.0);
        let stuck = deadline.is_some_and(|d| {
            Timestamp::now()
                > d + SignedDuration::try_from(STUCK_POD_SLACK).unwrap_or(SignedDuration::ZERO)
        });
        if pod_finished(p) || node_gone || stuck {
            // The guest is down (or nothing can run it any more): the pod goes now.
            let grace = if pod_finished(p) && !node_gone && !stuck {
                None
            } else {
                Some(0)
            };
            if p.meta().deletion_timestamp.is_none() || grace == Some(0) {
                let uid = p.uid().unwrap_or_default();
                writes::delete(pods, &n.pod, &uid, grace, &ctx.metrics, "pods")
                    .await
                    .map_err(|e| Error::FailedDeletePod(n.pod.clone(), e))?;
            }
            if node_gone || stuck {
                tracing::info!(pod = %n.pod, node = node.as_deref().unwrap_or(""), node_gone, stuck, "removed the launcher pod by force");
            }
        } else {
            if p.meta().deletion_timestamp.is_none() {
                delete_pod(vmi, p, pods, ctx).await?;
            }
            // Pod updates wake the reconcile; the deadline is the fallback.
            let grace = pod::grace_seconds(vmi) + GRACE_MARGIN_SECONDS;
            return Ok(Action::requeue(
                Duration::from_secs(grace as u64) + STUCK_POD_SLACK,
            ));
        }
    }
    writes::remove_finalizer(
        vmis,
        vmi,
        FINALIZER,
        &ctx.metrics,
        "virtualmachineinstances",
    )
    .await?;
    ctx.phases.forget(&n.uid);
    ctx.own_writes.forget(&n.uid);
    tracing::info!("the guest is down, released the VMI");
    Ok(Action::await_change())
}

/// Deletes the launcher pod with the VMI's grace period plus the margin.
async fn delete_pod(
    vmi: &VirtualMachineInstance,
    p: &Pod,
    pods: &Api<Pod>,
    ctx: &Context,
) -> Result<()> {
    let name = p.name_any();
    let grace = (pod::grace_seconds(vmi) + GRACE_MARGIN_SECONDS) as u32;
    writes::delete(
        pods,
        &name,
        &p.uid().unwrap_or_default(),
        Some(grace),
        &ctx.metrics,
        "pods",
    )
    .await
    .map_err(|e| Error::FailedDeletePod(name.clone(), e))?;
    ctx.event(
        vmi.object_ref(&()),
        EventType::Normal,
        "SuccessfulDelete",
        format!("Deleted virtual machine pod {name} (grace period {grace}s)"),
    );
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
