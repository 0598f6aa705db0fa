//! The VirtualMachine controller: keeps the VM's one instance (named like the VM,
//! controlled by it) in line with its runStrategy and state change requests, and writes
//! the VM's status.

use std::sync::Arc;
use std::time::Duration;

use crds::{
    Condition, RunStrategy, VirtualMachine, VirtualMachineInstance, VirtualMachineStartFailure,
    VirtualMachineStateChangeRequest, VirtualMachineStatus, VmiPhase,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::ending::{self, Ending};
use crate::instance::{
    TEMPLATE_HASH_ANNOTATION, VM_GENERATION_ANNOTATION, instance_for, template_hash,
};
use crate::instancetype::{self, Resolved};
use crate::printable::{Facts, VmiFacts, printable_status};
use crate::strategy::{self, Decision, Inputs, StartFailures, VmiView};
use crate::{Context, Error, Result, writes};

const CONTROLLER: &str = "vm";
const RESYNC: Duration = Duration::from_secs(300);

#[instrument(skip(ctx, vm), fields(vm = %format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any())))]
pub async fn reconcile(vm: Arc<VirtualMachine>, ctx: Arc<Context>) -> Result<Action> {
    let key = format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any());
    crate::context::measured(CONTROLLER, &key, &ctx, reconcile_vm(&vm, &ctx)).await
}

pub fn error_policy(vm: Arc<VirtualMachine>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any());
    crate::context::retry_after(&ctx, CONTROLLER, &key, e)
}

async fn reconcile_vm(vm: &VirtualMachine, ctx: &Context) -> Result<Action> {
    let (Some(ns), Some(name), Some(uid)) = (vm.namespace(), vm.metadata.name.clone(), vm.uid())
    else {
        return Err(Error::InvalidObject(
            "VM without namespace, name or UID".into(),
        ));
    };
    let rv = vm.resource_version().unwrap_or_default();
    if ctx.own_writes.is_stale(&uid, &rv) {
        // Our last write is not in the cache yet; its watch event brings it.
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    }
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &ns);

    // What is seen: the VM, the VMI of its name in the cache, the instancetype and
    // preference versions (a VM whose instancetype cannot be found does not start: the
    // Failure condition and a Warning Event name it).
    let found = ctx.cached_vmi(&ns, &name);
    if ctx.own_creates.unseen(&uid, found.is_some()) {
        // The VMI created in an earlier pass is not in the cache yet; its watch event
        // brings it (a create now would be refused as AlreadyExists).
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    }
    let resolved = if vm.meta().deletion_timestamp.is_some() {
        None
    } else {
        Some(instancetype::sync(vm, ctx).await)
    };
    // Its DataVolumes (CDI): created from its templates; the instance waits for them.
    let mut data_volumes = match resolved {
        Some(_) => crate::datavolume::sync_vm(vm, ctx).await,
        None => Default::default(),
    };
    let seen = Seen {
        vm,
        found: found.as_deref(),
        now: Timestamp::now(),
        max_backoff: ctx.settings.max_crash_loop_backoff,
    };
    let mut plan = plan(&seen, resolved);
    let gate = data_volumes.gate();
    if gate.hold_start && matches!(plan.write, InstanceWrite::Create(_)) {
        plan.write = InstanceWrite::None;
    }
    if let Some(e) = gate.error {
        plan.error.get_or_insert(e);
    }
    plan.requeue = plan.requeue.min(gate.requeue.unwrap_or(plan.requeue));
    let done = execute(vm, &plan, &vmis, &vms, ctx).await?;
    let mut next = plan_status(&seen, &plan, &done);
    let old_status = vm.status.clone().unwrap_or_default();
    let (status, change) = (&mut next.status, &mut next.printable_change);
    if let Some((reason, note)) =
        crate::datavolume::show_vm(status, change, &old_status, &data_volumes)
    {
        next.events.push(PlannedEvent {
            type_: EventType::Warning,
            reason,
            note,
        });
    }
    // A claim of its volumes the scheduler has not bound yet.
    let binding = crate::volume_binding::show_vm(
        vm,
        plan.replacing,
        &mut next.status,
        &mut next.printable_change,
        &old_status,
        ctx,
    )
    .await;
    plan.requeue = plan.requeue.min(binding.unwrap_or(plan.requeue));

    if leaves_status_to_cache(&old_status, &plan, &done, &next) {
        // The VMI's watch event wakes this VM (its VMI is then in the cache) and that pass
        // writes the status once; this is the fallback.
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    }
    if let Some(status) = &next.status {
        let written =
            writes::replace_status(&vms, &done.current, status, &ctx.metrics, "virtualmachines")
                .await?;
        ctx.own_writes.wrote_over(&done.current, &written);
        if let Some((from, to)) = &next.printable_change {
            tracing::info!(from = %from, to = %to, "VM status changed");
        }
        // Told once the status that counts them is written: a lost race tells them again.
        for e in &next.events {
            ctx.event(vm.object_ref(&()), e.type_, &e.reason, e.note.clone());
        }
    }
    match done.error.or(plan.error) {
        Some(e) => Err(e),
        None => Ok(Action::requeue(plan.requeue)),
    }
}

/// What one reconcile of a VM sees.
pub(crate) struct Seen<'a> {
    pub vm: &'a VirtualMachine,
    /// The cached VMI of the VM's name, whoever controls it.
    pub found: Option<&'a VirtualMachineInstance>,
    pub now: Timestamp,
    /// The cap of the crash-loop back-off.
    pub max_backoff: Duration,
}

/// The write to the VM's instance a reconcile makes.
#[derive(Debug)]
pub(crate) enum InstanceWrite {
    None,
    /// Create this VMI.
    Create(Box<VirtualMachineInstance>),
    /// Delete the VM's VMI (its name and uid are the plan's `vmi`).
    Delete,
    /// Switch the VM's spec to start (`runStrategy: Always` or `running: true`).
    SwitchToAlways,
}

/// An Event to tell about the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlannedEvent {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

/// The writes of one reconcile, decided from what it saw ([`plan`]).
pub(crate) struct Plan<'a> {
    /// The VMI this VM controls.
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// A VMI of the VM's name that another owner controls.
    pub foreign: bool,
    pub strategy: RunStrategy,
    pub decision: Decision,
    /// The VM is to run: a new instance replaces one that ended.
    pub replacing: bool,
    pub start_failure: Option<VirtualMachineStartFailure>,
    /// The instance seen failed to start, and was not counted yet.
    pub new_failure: bool,
    /// How the instance ended, if it did.
    pub ending: Option<Ending>,
    /// The state change requests with a Start request added, written (guarded) before the
    /// VMI is deleted, so the restart survives a lost race or a crash in between.
    pub store_start_request: Option<Vec<VirtualMachineStateChangeRequest>>,
    pub write: InstanceWrite,
    /// Told once the delete succeeded.
    pub stop_event: Option<PlannedEvent>,
    /// The generation to write in the VMI's annotation (its template is unchanged).
    pub annotate_generation: Option<i64>,
    /// The generation the VMI was made from, as its annotation says.
    pub observed_generation: Option<i64>,
    pub template_hash: String,
    /// Resolving the instancetype or rendering the VMI failed.
    pub error: Option<Error>,
    pub requeue: Duration,
    /// The instancetype and preference as resolved.
    pub resolved: Option<Resolved>,
}

/// Decides the writes from what was seen; `resolved` is the instancetype and preference
/// resolution (None for a VM being deleted). Pure.
pub(crate) fn plan<'a>(seen: &Seen<'a>, resolved: Option<Result<Resolved>>) -> Plan<'a> {
    let vm = seen.vm;
    let uid = vm.uid().unwrap_or_default();
    let old = vm.status.clone().unwrap_or_default();
    let strategy = vm.spec.effective_run_strategy();
    let foreign = seen.found.is_some_and(|v| !controlled_by(v, &uid));
    let vmi = seen.found.filter(|v| controlled_by(v, &uid));
    let view = vmi.map(view_of);
    let now = seen.now;

    // Start failures first, so a VMI that died before running starts the back-off
    // before its replacement is due.
    let prev = old.start_failure.as_ref().map(|f| StartFailures {
        last_failed_vmi_uid: f.last_failed_vmi_uid.clone().unwrap_or_default(),
        consecutive: f.consecutive_fail_count.unwrap_or(0).max(0) as u32,
    });
    let (failures, new_failure) = strategy::next_start_failures(prev.as_ref(), view, strategy);
    let start_failure = failures.map(|f| {
        let retry_after = if new_failure {
            let delay = strategy::backoff_delay(
                f.consecutive,
                seen.max_backoff,
                jitter(&f.last_failed_vmi_uid),
            );
            Some(Time(
                now + SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO),
            ))
        } else {
            old.start_failure
                .as_ref()
                .and_then(|s| s.retry_after_timestamp.clone())
        };
        VirtualMachineStartFailure {
            last_failed_vmi_uid: Some(f.last_failed_vmi_uid),
            retry_after_timestamp: retry_after,
            consecutive_fail_count: Some(f.consecutive as i32),
        }
    });
    let backoff_left = start_failure
        .as_ref()
        .and_then(|f| f.retry_after_timestamp.as_ref())
        .map(|t| t.0.duration_since(now))
        .filter(|d| d.is_positive())
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO);

    let inputs = Inputs {
        strategy,
        vmi: view,
        requests: &old.state_change_requests,
        status_run_strategy: old.run_strategy,
        backoff_left,
    };
    let decision = if vm.meta().deletion_timestamp.is_some() || foreign {
        Decision::Nothing
    } else {
        strategy::decide(&inputs)
    };
    let replacing = strategy::is_set_to_start(&inputs);
    let ending = vmi.and_then(Ending::of);
    let (resolved, mut error) = match resolved {
        None => (None, None),
        Some(Ok(r)) => (Some(r), None),
        Some(Err(e)) => (None, Some(e)),
    };

    let mut requeue = RESYNC;
    let mut store_start_request = None;
    let mut stop_event = None;
    let write = match decision {
        Decision::Nothing => InstanceWrite::None,
        Decision::WaitBackoff(left) => {
            requeue = left + Duration::from_millis(100);
            InstanceWrite::None
        }
        Decision::Start => match &resolved {
            Some(r) => {
                let mut new = instance_for(vm);
                match instancetype::expand(vm, r, &mut new) {
                    Ok(()) => InstanceWrite::Create(Box::new(new)),
                    Err(e) => {
                        error = Some(e);
                        InstanceWrite::None
                    }
                }
            }
            None => InstanceWrite::None,
        },
        Decision::Stop | Decision::StopAndRequestStart => {
            if decision == Decision::StopAndRequestStart
                && !strategy::has_start_request(&old.state_change_requests)
            {
                let mut requests = old.state_change_requests.clone();
                requests.push(VirtualMachineStateChangeRequest::default());
                store_start_request = Some(requests);
            }
            if let Some(e) = ending.as_ref().filter(|_| !new_failure) {
                // The guest ran and stopped (or failed): say so each time, since a
                // replacement follows at once (KubeVirt backs off only from instances
                // that never ran).
                let then = if replacing {
                    "starting a new instance"
                } else {
                    "not restarted"
                };
                stop_event = Some(PlannedEvent {
                    type_: if e.phase == VmiPhase::Failed {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: e.reason.clone(),
                    note: format!("{}; runStrategy {strategy:?}: {then}", e.message()),
                });
            }
            InstanceWrite::Delete
        }
        Decision::SwitchToAlways => InstanceWrite::SwitchToAlways,
    };

    // Keep the VMI's generation annotation current while its template is unchanged.
    let template_hash = template_hash(vm);
    let mut observed_generation = vm.metadata.generation;
    let mut annotate_generation = None;
    if let Some(v) = vmi {
        let ann = v.annotations();
        let same_template = ann.get(TEMPLATE_HASH_ANNOTATION) == Some(&template_hash);
        let vmi_generation = ann
            .get(VM_GENERATION_ANNOTATION)
            .and_then(|g| g.parse::<i64>().ok());
        observed_generation = vmi_generation;
        if same_template
            && vmi_generation != vm.metadata.generation
            && v.meta().deletion_timestamp.is_none()
        {
            annotate_generation = vm.metadata.generation;
        }
    }

    Plan {
        vmi,
        foreign,
        strategy,
        decision,
        replacing,
        start_failure,
        new_failure,
        ending,
        store_start_request,
        write,
        stop_event,
        annotate_generation,
        observed_generation,
        template_hash,
        error,
        requeue,
        resolved,
    }
}

/// What the writes of a [`Plan`] came to.
pub(crate) struct Done {
    /// The VM as last written: its resourceVersion guards the status write.
    pub current: VirtualMachine,
    /// The VMI created in this pass. Its watch event brings the status write
    /// ([`leaves_status_to_cache`]); when this pass writes the status itself, the status
    /// tells of it at once (created, its Ready condition), so that the watch event finds
    /// the status current and writes nothing (one VM status write per start, not two).
    pub started: Option<VirtualMachineInstance>,
    pub start_expected: bool,
    pub stop_expected: bool,
    /// The generation the VMI's annotation now says.
    pub observed_generation: Option<i64>,
    pub error: Option<Error>,
}

/// Makes the plan's writes, in order: the Start request (its failure ends the reconcile),
/// the instance write, the VMI's generation annotation.
async fn execute(
    vm: &VirtualMachine,
    plan: &Plan<'_>,
    vmis: &Api<VirtualMachineInstance>,
    vms: &Api<VirtualMachine>,
    ctx: &Context,
) -> Result<Done> {
    let mut done = Done {
        current: vm.clone(),
        started: None,
        start_expected: false,
        stop_expected: false,
        observed_generation: plan.observed_generation,
        error: None,
    };
    let uid = vm.uid().unwrap_or_default();
    if let Some(requests) = &plan.store_start_request {
        let ops =
            vec![json!({"op": "add", "path": "/status/stateChangeRequests", "value": requests})];
        let patched = writes::json_patch(
            vms,
            vm,
            writes::guarded(vm, ops),
            true,
            &ctx.metrics,
            "virtualmachines",
        )
        .await?;
        ctx.own_writes.wrote_over(vm, &patched);
        done.current.metadata.resource_version = patched.metadata.resource_version;
    }
    let outcome = match &plan.write {
        InstanceWrite::None => Ok(()),
        InstanceWrite::Create(new) => start(vm, new, vmis, ctx).await.map(|created| {
            if created.is_some() {
                ctx.own_creates.created(&uid);
            }
            done.start_expected = true;
            done.started = created;
        }),
        InstanceWrite::Delete => {
            let v = plan.vmi.expect("a delete comes with the VMI");
            stop(vm, v, vmis, ctx).await.map(|()| {
                done.stop_expected = true;
                if let Some(e) = &plan.stop_event {
                    ctx.event(vm.object_ref(&()), e.type_, &e.reason, e.note.clone());
                }
            })
        }
        InstanceWrite::SwitchToAlways => switch_to_always(vm, vms, ctx).await,
    };
    if let Decision::WaitBackoff(left) = plan.decision {
        tracing::info!(
            seconds = left.as_secs(),
            "start delayed by the crash-loop back-off"
        );
    }
    done.error = outcome.err();
    if let (Some(g), Some(v)) = (plan.annotate_generation, plan.vmi) {
        let patch = json!({"metadata": {"annotations": {VM_GENERATION_ANNOTATION: g.to_string()}}});
        match writes::merge_patch_metadata(vmis, v, patch, &ctx.metrics, "virtualmachineinstances")
            .await
        {
            Ok(_) => done.observed_generation = Some(g),
            Err(e) => tracing::debug!(error = %e, "bumping the VMI's generation annotation"),
        }
    }
    Ok(done)
}

/// The status a reconcile writes, and what it tells.
#[derive(Debug, Default)]
pub(crate) struct StatusPlan {
    /// None: the status is unchanged.
    pub status: Option<VirtualMachineStatus>,
    /// Told once the status is written.
    pub events: Vec<PlannedEvent>,
    /// `printableStatus` before and after, when it changes.
    pub printable_change: Option<(String, String)>,
}

/// The VM's status after the plan's writes came to `done`. Pure.
pub(crate) fn plan_status(seen: &Seen, plan: &Plan, done: &Done) -> StatusPlan {
    let vm = seen.vm;
    let name = vm.name_any();
    let now = seen.now;
    let old = vm.status.clone().unwrap_or_default();
    let strategy = plan.strategy;
    let mut requests = plan
        .store_start_request
        .clone()
        .unwrap_or_else(|| old.state_change_requests.clone());
    // Status, of the instance as it now is: the cached one, or the one just created.
    let shown = done.started.as_ref().or(plan.vmi);
    let mut status = old.clone();
    status.created = Some(shown.is_some());
    status.ready = Some(shown.is_some_and(|v| condition_true(vmi_conditions(v), "Ready")));
    if old.run_strategy.is_some() || shown.is_some() || done.start_expected {
        status.run_strategy = Some(strategy);
    }
    // A Start request is done once its VMI exists, the one just created included: waiting
    // for the cache to show that VMI alive would leave the request in place if the VMI
    // finished first, and a second start would follow its end (RerunOnFailure after a
    // guest that shut down at once).
    if strategy::first_request_done(&requests, shown.map(view_of)) {
        requests.remove(0);
    }
    status.state_change_requests = requests;
    status.start_failure = plan.start_failure.clone();
    status.observed_generation = done.observed_generation;
    status.desired_generation = vm.metadata.generation;
    if let Some(r) = &plan.resolved {
        status.instancetype_ref = r.instancetype_ref();
        status.preference_ref = r.preference_ref();
    }
    let restart_required = shown.is_some_and(|v| {
        v.meta().deletion_timestamp.is_none()
            && !view_of(v).phase.is_some_and(VmiPhase::is_final)
            && v.annotations().get(TEMPLATE_HASH_ANNOTATION) != Some(&plan.template_hash)
    });
    let error = done.error.as_ref().or(plan.error.as_ref());
    let failure = match (error, plan.foreign) {
        (Some(e), _) => Some((e.reason().to_string(), ferrovirt_runtime::chain(e))),
        (None, true) => Some((
            "FailedCreate".to_string(),
            format!(
                "VirtualMachineInstance {name} exists and is not controlled by this VirtualMachine"
            ),
        )),
        (None, false) => None,
    };
    let carry = Carry {
        ending: plan.ending.as_ref(),
        failed_start_uid: status
            .start_failure
            .as_ref()
            .and_then(|f| f.last_failed_vmi_uid.as_deref()),
        replacing: plan.replacing,
    };
    status.conditions = conditions(
        &old.conditions,
        shown,
        failure,
        restart_required,
        &carry,
        &Time(now),
    );
    let facts = Facts {
        vm_deleting: vm.meta().deletion_timestamp.is_some(),
        vmi: shown.map(|v| VmiFacts {
            phase: view_of(v).phase,
            deleting: v.meta().deletion_timestamp.is_some(),
            paused: condition_true(vmi_conditions(v), "Paused"),
            unschedulable: vmi_conditions(v).iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            }),
            pvc_not_found: vmi_conditions(v).iter().any(|c| {
                c.type_ == "Synchronized"
                    && c.status == "False"
                    && c.reason.as_deref() == Some(crate::claims::NOT_FOUND)
            }),
        }),
        start_expected: done.start_expected,
        stop_expected: done.stop_expected,
        start_failures: status
            .start_failure
            .as_ref()
            .and_then(|f| f.consecutive_fail_count)
            .unwrap_or(0)
            .max(0) as u32,
        strategy: Some(strategy),
    };
    let printable = printable_status(&facts);
    status.printable_status = Some(printable.to_string());
    if status == old {
        return StatusPlan::default();
    }

    let mut events = Vec::new();
    if plan.new_failure
        && let (Some(e), Some(f)) = (&plan.ending, &status.start_failure)
    {
        let wait = f
            .retry_after_timestamp
            .as_ref()
            .map_or(0, |t| t.0.duration_since(now).as_secs().max(0));
        let count = f.consecutive_fail_count.unwrap_or(1);
        events.push(PlannedEvent {
            type_: EventType::Warning,
            reason: e.reason.clone(),
            note: format!(
                "{}; start failure {count} in a row, the next start waits {wait}s",
                e.message()
            ),
        });
    }
    let before = old.printable_status.clone();
    let printable_change = (before.as_deref() != Some(printable))
        .then(|| (before.clone().unwrap_or_default(), printable.to_string()));
    // The statuses that need the user's attention are Warning Events; the others are in
    // the status only (an Event per step costs a request per VM each).
    if printable_change.is_some()
        && matches!(
            printable,
            "CrashLoopBackOff" | "ErrorUnschedulable" | "Unknown"
        )
    {
        events.push(PlannedEvent {
            type_: EventType::Warning,
            reason: printable.to_string(),
            note: format!(
                "printableStatus {} -> {printable}",
                before.as_deref().unwrap_or("(none)")
            ),
        });
    }
    StatusPlan {
        status: Some(status),
        events,
        printable_change,
    }
}

/// Whether the pass that created the VM's VMI leaves the status to the next pass, the one
/// the new VMI's watch event brings, as KubeVirt's controller writes the status of the
/// instance its cache shows: the worker is free for the next VM after one round trip
/// instead of two (the VMI create and the status write), and the status is still written
/// once per start (bench/scale: the VM controller's workers were busy all through a
/// 1,000-VM run, the VMI create and the status write one after the other). Not when the
/// status must tell of this pass itself: a state change request the new VMI fulfils
/// (left in place, a VMI that ended before the cache showed it would be started again),
/// an error, or an Event told once the status is written. Pure.
pub(crate) fn leaves_status_to_cache(
    old: &VirtualMachineStatus,
    plan: &Plan,
    done: &Done,
    next: &StatusPlan,
) -> bool {
    done.started.is_some()
        && old.state_change_requests.is_empty()
        && plan.store_start_request.is_none()
        && plan.error.is_none()
        && done.error.is_none()
        && next.events.is_empty()
}

fn controlled_by(vmi: &VirtualMachineInstance, vm_uid: &str) -> bool {
    vmi.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == vm_uid)
}

fn vmi_conditions(vmi: &VirtualMachineInstance) -> &[Condition] {
    vmi.status.as_ref().map_or(&[][..], |s| &s.conditions[..])
}

fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn view_of(vmi: &VirtualMachineInstance) -> VmiView<'_> {
    let status = vmi.status.as_ref();
    VmiView {
        uid: vmi.metadata.uid.as_deref().unwrap_or(""),
        phase: status.and_then(|s| s.phase),
        deleting: vmi.metadata.deletion_timestamp.is_some(),
        was_running: status.is_some_and(|s| {
            s.phase == Some(VmiPhase::Running)
                || s.phase_transition_timestamps
                    .iter()
                    .any(|t| t.phase == Some(VmiPhase::Running))
        }),
    }
}

/// Spreads the back-off of VMs that fail together: a fraction in [0, 1) from the VMI UID.
fn jitter(seed: &str) -> f64 {
    let h = seed
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    f64::from(h % 1000) / 1000.0
}

/// Creates the VM's instance `vmi`; returns it as created (None: one of its name exists).
async fn start(
    vm: &VirtualMachine,
    vmi: &VirtualMachineInstance,
    vmis: &Api<VirtualMachineInstance>,
    ctx: &Context,
) -> Result<Option<VirtualMachineInstance>> {
    let name = vm.name_any();
    match writes::create(vmis, vmi, &ctx.metrics, "virtualmachineinstances").await {
        Ok(Some(created)) => {
            tracing::info!(vmi = %name, "started: created the VirtualMachineInstance");
            ctx.event(
                vm.object_ref(&()),
                EventType::Normal,
                "SuccessfulCreate",
                format!("Started the virtual machine by creating the new virtual machine instance {name} ({})", created.uid().unwrap_or_default()),
            );
            Ok(Some(created))
        }
        // One VMI per VM: the name is taken until the old one is gone; the cache catches up.
        Ok(None) => Ok(None),
        Err(e) => {
            let e = Error::FailedCreate(name, e);
            ctx.event(
                vm.object_ref(&()),
                EventType::Warning,
                e.reason(),
                ferrovirt_runtime::chain(&e),
            );
            Err(e)
        }
    }
}

async fn stop(
    vm: &VirtualMachine,
    vmi: &VirtualMachineInstance,
    vmis: &Api<VirtualMachineInstance>,
    ctx: &Context,
) -> Result<()> {
    let name = vmi.name_any();
    let uid = vmi.uid().unwrap_or_default();
    match writes::delete(
        vmis,
        &name,
        &uid,
        None,
        &ctx.metrics,
        "virtualmachineinstances",
    )
    .await
    {
        Ok(_) => {
            tracing::info!(vmi = %name, phase = ?vmi.status.as_ref().and_then(|s| s.phase), "stopped: deleted the VirtualMachineInstance");
            ctx.event(
                vm.object_ref(&()),
                EventType::Normal,
                "SuccessfulDelete",
                format!(
                    "Stopped the virtual machine by deleting the virtual machine instance {uid}"
                ),
            );
            Ok(())
        }
        Err(e) => {
            let e = Error::FailedDelete(name, e);
            ctx.event(
                vm.object_ref(&()),
                EventType::Warning,
                e.reason(),
                ferrovirt_runtime::chain(&e),
            );
            Err(e)
        }
    }
}

/// Halted with a Start request: the spec says Always from now on (as KubeVirt does).
async fn switch_to_always(
    vm: &VirtualMachine,
    vms: &Api<VirtualMachine>,
    ctx: &Context,
) -> Result<()> {
    let ops = match (vm.spec.run_strategy, vm.spec.running) {
        (Some(current), _) => vec![
            json!({"op": "test", "path": "/spec/runStrategy", "value": current}),
            json!({"op": "replace", "path": "/spec/runStrategy", "value": RunStrategy::Always}),
        ],
        (None, running) => writes::guarded(
            vm,
            vec![
                json!({"op": if running.is_some() { "replace" } else { "add" }, "path": "/spec/running", "value": true}),
            ],
        ),
    };
    let written = writes::json_patch(vms, vm, ops, false, &ctx.metrics, "virtualmachines").await?;
    ctx.own_writes.wrote_over(vm, &written);
    Ok(())
}

/// What the conditions carry of an instance that ended.
#[derive(Default)]
struct Carry<'a> {
    /// The current VMI's ending, if it is final.
    ending: Option<&'a Ending>,
    /// `status.startFailure.lastFailedVMIUID`: the crash loop's last failed instance.
    failed_start_uid: Option<&'a str>,
    /// The VM is to run (its strategy and requests say so): a new instance replaces the
    /// one that ended.
    replacing: bool,
}

/// The VM's conditions: Ready mirrors the VMI's (False when there is none), Failure
/// carries the last reconcile error, RestartRequired shows a template change while the
/// VMI runs, and the VMI's other conditions (PodScheduled, Paused, ...) are copied.
/// Beyond KubeVirt, an instance's ending outlives the instance: while a replacement is
/// due or starting, Ready (False) keeps the reason and message of the one that ended, and
/// while a crash loop lasts, Failure keeps those of the last instance that failed to start.
fn conditions(
    old: &[Condition],
    vmi: Option<&VirtualMachineInstance>,
    failure: Option<(String, String)>,
    restart_required: bool,
    carry: &Carry,
    now: &Time,
) -> Vec<Condition> {
    let now = now.clone();
    let mut out: Vec<Condition> = Vec::new();
    let vmi_ready = vmi
        .map(vmi_conditions)
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let carried_ready = old
        .iter()
        .find(|c| c.type_ == "Ready")
        .filter(|_| carry.replacing && ending::carried_uid(old, "Ready").is_some());
    let not_ready = |reason: &str, message: &str| Condition {
        type_: "Ready".into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let ready = match (vmi_ready, carry.ending, carried_ready) {
        (_, Some(e), _) => e.condition("Ready", "False"),
        (Some(c), None, _) | (None, None, Some(c)) => c.clone(),
        (None, None, None) if vmi.is_none() => not_ready("VMINotExists", "VMI does not exist"),
        (None, None, None) => {
            not_ready("VMIConditionMissing", "VMI is missing the Ready condition")
        }
    };
    out.push(ready);
    if let Some((reason, message)) = failure {
        out.push(Condition {
            type_: "Failure".into(),
            status: "True".into(),
            reason: Some(reason),
            message: Some(message),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    } else if let Some(uid) = carry.failed_start_uid {
        let fresh = carry
            .ending
            .filter(|e| e.uid == uid)
            .map(|e| e.condition("Failure", "True"));
        if let Some(c) = fresh.or_else(|| ending::carried(old, "Failure", uid).cloned()) {
            out.push(c);
        }
    }
    if restart_required {
        out.push(Condition {
            type_: "RestartRequired".into(),
            status: "True".into(),
            reason: Some("TemplateChanged".into()),
            message: Some("a non-live-updatable field was changed in the template spec".into()),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    }
    if let Some(v) = vmi {
        for c in vmi_conditions(v) {
            if !matches!(c.type_.as_str(), "Ready" | "Failure" | "RestartRequired") {
                out.push(c.clone());
            }
        }
    }
    for c in &mut out {
        // Built afresh each time (copies of the VMI's keep the VMI's times): a condition
        // whose status did not change keeps the VM's earlier time.
        crds::condition::carry_times(old, c, &now);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time `s` seconds into the tests' day.
    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    #[test]
    fn ready_condition_without_vmi() {
        let c = conditions(&[], None, None, false, &Carry::default(), &t(0));
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].reason.as_deref()),
            ("Ready", Some("VMINotExists"))
        );
        let c2 = conditions(
            &c,
            None,
            Some(("FailedCreate".into(), "boom".into())),
            false,
            &Carry::default(),
            &t(1),
        );
        assert_eq!(
            c2[0].last_transition_time, c[0].last_transition_time,
            "unchanged conditions keep their time"
        );
        assert_eq!(c2[1].type_, "Failure");
    }

    fn failed_vmi(uid: &str) -> VirtualMachineInstance {
        serde_yaml::from_str(&format!(
            "metadata: {{name: vm1, uid: {uid}}}\nspec: {{domain: {{devices: {{}}}}}}\nstatus:\n  phase: Failed\n  reason: VolumePreparationFailed\n  conditions: [{{type: Ready, status: 'False', reason: VolumePreparationFailed, message: 'image x:1 missing'}}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn an_instance_that_failed_to_start_is_carried_after_it_is_gone() {
        let v = failed_vmi("u1");
        let e = Ending::of(&v).unwrap();
        let carry = Carry {
            ending: Some(&e),
            failed_start_uid: Some("u1"),
            replacing: true,
        };
        let with_vmi = conditions(&[], Some(&v), None, false, &carry, &t(0));
        let ready = with_vmi.iter().find(|c| c.type_ == "Ready").unwrap();
        let failure = with_vmi.iter().find(|c| c.type_ == "Failure").unwrap();
        for c in [ready, failure] {
            assert_eq!(c.reason.as_deref(), Some("VolumePreparationFailed"));
            assert_eq!(
                c.message.as_deref(),
                Some("VirtualMachineInstance u1 Failed: image x:1 missing")
            );
        }
        // The VMI is gone, the back-off runs: both stay.
        let gone = Carry {
            ending: None,
            failed_start_uid: Some("u1"),
            replacing: true,
        };
        let later = conditions(&with_vmi, None, None, false, &gone, &t(0));
        assert_eq!(later, with_vmi, "carried unchanged, times included");
        // A reconcile error takes Failure's place; a stopped VM says VMINotExists again.
        let err = conditions(
            &later,
            None,
            Some(("FailedCreate".into(), "boom".into())),
            false,
            &gone,
            &t(2),
        );
        assert_eq!(
            err.iter()
                .find(|c| c.type_ == "Failure")
                .unwrap()
                .reason
                .as_deref(),
            Some("FailedCreate")
        );
        let stopped = conditions(&later, None, None, false, &Carry::default(), &t(0));
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].reason.as_deref(), Some("VMINotExists"));
    }
}

#[cfg(test)]
#[path = "vm_plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
#[path = "vm_mock_tests.rs"]
mod mock_tests;
