//! Table tests of the VMI controller's plan from the launcher pod ([`plan_from_pod`]): the
//! VMI's status, the node label and the FailedMount Event, without an API server.

use super::*;

fn vmi(phase: Option<&str>, secret: bool) -> VirtualMachineInstance {
    let volumes = if secret {
        r#"volumes: [{name: ci, cloudInitNoCloud: {userDataSecretRef: {name: ud}}}]"#
    } else {
        "volumes: []"
    };
    let status = phase.map_or(String::new(), |p| format!("status: {{phase: {p}}}"));
    serde_yaml::from_str(&format!(
        "metadata: {{name: g, namespace: ns, uid: u-vmi}}\nspec: {{domain: {{devices: {{}}}}, {volumes}}}\n{status}"
    ))
    .unwrap()
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(&format!("metadata: {{name: p, uid: u-pod}}\n{yaml}")).unwrap()
}

const READY: &str = "spec: {containers: [{name: compute}], nodeName: n1}\nstatus: {phase: Running, containerStatuses: [{name: compute, ready: true, restartCount: 0, image: i, imageID: '', state: {running: {}}}]}";
const BOUND_WAITING: &str = "spec: {containers: [{name: compute}], nodeName: n1}\nstatus: {phase: Pending, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {waiting: {reason: ContainerCreating}}}]}";
const LAUNCHER_DONE: &str = "spec: {containers: [{name: compute}], nodeName: n1}\nstatus: {phase: Running, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: i, imageID: '', state: {terminated: {exitCode: 0}}}]}";
const POD_FAILED: &str = "spec: {containers: [{name: compute}], nodeName: n1}\nstatus: {phase: Failed, reason: Evicted, message: 'the node ran out of memory'}";

/// What, the VMI, its pod, and the phase and reason it must end with.
type Case<'a> = (
    &'static str,
    VirtualMachineInstance,
    Option<&'a Pod>,
    VmiPhase,
    Option<&'static str>,
);

fn planned(v: &VirtualMachineInstance, p: Option<&Pod>) -> PodPlan {
    let old = v.status.clone().unwrap_or_default();
    plan_from_pod(v, &old, old.clone(), p, Timestamp::now())
}

#[test]
fn the_phase_follows_the_pod() {
    let ready = pod(READY);
    let waiting = pod(BOUND_WAITING);
    let done = pod(LAUNCHER_DONE);
    let failed = pod(POD_FAILED);
    let cases: Vec<Case> = vec![
        (
            "no pod could be made",
            vmi(None, false),
            None,
            VmiPhase::Pending,
            None,
        ),
        (
            "a pod bound, launcher not ready",
            vmi(None, false),
            Some(&waiting),
            VmiPhase::Scheduling,
            None,
        ),
        (
            "the launcher ready on its node",
            vmi(Some("Scheduling"), false),
            Some(&ready),
            VmiPhase::Scheduled,
            None,
        ),
        (
            "the pod gone while Scheduling",
            vmi(Some("Scheduling"), false),
            None,
            VmiPhase::Failed,
            Some("LauncherPodMissing"),
        ),
        (
            "the pod gone while Running",
            vmi(Some("Running"), false),
            None,
            VmiPhase::Failed,
            Some("LauncherPodMissing"),
        ),
        (
            "the launcher ended with 0",
            vmi(Some("Running"), false),
            Some(&done),
            VmiPhase::Succeeded,
            None,
        ),
        (
            "the pod failed",
            vmi(Some("Running"), false),
            Some(&failed),
            VmiPhase::Failed,
            Some("Evicted"),
        ),
        (
            "a final phase stays",
            vmi(Some("Succeeded"), false),
            Some(&failed),
            VmiPhase::Succeeded,
            None,
        ),
    ];
    for (what, v, p, phase, reason) in cases {
        let plan = planned(&v, p);
        assert_eq!(
            (plan.status.phase, plan.status.reason.as_deref()),
            (Some(phase), reason),
            "{what}"
        );
        assert!(
            !plan.reads_mount_failure && plan.events.is_empty(),
            "{what}"
        );
    }
}

#[test]
fn scheduled_names_the_node_in_status_and_label() {
    let plan = planned(&vmi(Some("Scheduling"), false), Some(&pod(READY)));
    assert_eq!(plan.status.node_name.as_deref(), Some("n1"));
    assert_eq!(plan.label_node.as_deref(), Some("n1"));
    assert_eq!(
        plan.status.active_pods,
        Some(BTreeMap::from([("u-pod".to_string(), "n1".to_string())]))
    );
    assert_eq!(plan.requeue, RESYNC);
}

#[test]
fn a_pod_waiting_for_its_secret_is_looked_at_again_and_the_failure_told_once() {
    let v = vmi(Some("Scheduling"), true);
    let mut plan = planned(&v, Some(&pod(BOUND_WAITING)));
    assert!(plan.reads_mount_failure);
    assert_eq!(plan.requeue, SECRET_WAIT_RETRY);
    let old = v.status.clone().unwrap_or_default();
    plan.mount_failure(&old, "secret \"ud\" not found".into());
    let said = |s: &VirtualMachineInstanceStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == SYNCHRONIZED)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    assert_eq!(
        said(&plan.status),
        Some((
            Some("FailedMount".into()),
            Some("secret \"ud\" not found".into())
        ))
    );
    assert_eq!(
        plan.events,
        [(
            EventType::Warning,
            "FailedMount",
            "secret \"ud\" not found".to_string()
        )]
    );
    // The next pass, the condition already there: no second Event.
    let mut again = planned(&v, Some(&pod(BOUND_WAITING)));
    again.mount_failure(&plan.status, "secret \"ud\" not found".into());
    assert!(again.events.is_empty(), "{:?}", again.events);
}

// The whole reconcile's plan ([`plan`]): the finalizer, the deleted VMI's cleanup, the
// final VMI's pod, the pod's create and the spec that cannot run.

fn launcher() -> pod::LauncherConfig {
    pod::LauncherConfig {
        image: "ferrovirt/virt-launcher:dev".into(),
        node_run_dir: std::path::PathBuf::from("/var/run/ferrovirt"),
    }
}

/// A VMI with 64Mi of guest memory (what the pod's render needs), `phase`, finalizer or
/// not, deleted or not.
fn vmi_with(phase: Option<&str>, finalizer: bool, deleted: bool) -> VirtualMachineInstance {
    let mut v: VirtualMachineInstance = serde_yaml::from_str(
        "metadata: {name: g, namespace: ns, uid: u-vmi}\nspec: {domain: {memory: {guest: 64Mi}, devices: {}}}",
    )
    .unwrap();
    if let Some(p) = phase {
        v.status = Some(serde_yaml::from_str(&format!("phase: {p}")).unwrap());
    }
    if finalizer {
        v.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    if deleted {
        v.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    }
    v
}

/// `yaml`'s pod, deleted at `deleted` (seconds after the epoch) if given.
fn pod_deleted(yaml: &str, deleted: Option<i64>) -> Arc<Pod> {
    let mut p = pod(yaml);
    p.metadata.deletion_timestamp = deleted.map(|s| Time(Timestamp::from_second(s).unwrap()));
    Arc::new(p)
}

fn seen(vmi: &VirtualMachineInstance, pod: Option<Arc<Pod>>, node_gone: bool) -> Seen<'_> {
    Seen {
        vmi,
        pod,
        node_gone,
        // 100 s after the epoch: a pod deleted at 0 with 30 s grace is past its deadline.
        now: Timestamp::from_second(100).unwrap(),
        block_claims: Default::default(),
    }
}

/// The graceful delete of pod `p` for the default grace (30 s) and margin (15 s).
fn graceful() -> PodDelete {
    PodDelete {
        name: "p".into(),
        uid: "u-pod".into(),
        grace: Some(45),
        event: Some("Deleted virtual machine pod p (grace period 45s)".into()),
        forced: None,
    }
}

fn forced(grace: Option<u32>, why: Option<&'static str>) -> PodDelete {
    PodDelete {
        name: "p".into(),
        uid: "u-pod".into(),
        grace,
        event: None,
        forced: why,
    }
}

/// A plan, in a form to compare: its kind and the pod delete it sends.
fn summary(plan: &Plan) -> (String, Option<&PodDelete>, Option<Action>) {
    match plan {
        Plan::Wait(a) => ("wait".into(), None, Some(a.clone())),
        Plan::AddFinalizer => ("add finalizer".into(), None, None),
        Plan::DeletePod(d, a) => ("delete pod".into(), Some(d), Some(a.clone())),
        Plan::Release(d) => ("release".into(), d.as_ref(), None),
        Plan::CreatePod(p, _) => (format!("create {}", p.name_any()), None, None),
        Plan::Unrunnable(p) => (format!("unrunnable {:?}", p.status.reason), None, None),
        Plan::Status(p) => (format!("status {:?}", p.status.phase), None, None),
    }
}

/// What, the VMI, its pod, whether the pod's node is gone, and the plan's [`summary`].
type PlanCase<'a> = (
    &'a str,
    VirtualMachineInstance,
    Option<Arc<Pod>>,
    bool,
    (String, Option<PodDelete>, Option<Action>),
);

#[test]
fn the_plan_follows_the_finalizer_the_deletion_and_the_pod() {
    let running = || pod_deleted(READY, None);
    // A pod's deletionTimestamp is its deadline: 50 plus the slack (30 s) is past at 100,
    // 90 is not.
    let stuck = || pod_deleted(READY, Some(50));
    let going = || pod_deleted(READY, Some(90));
    let finished = || pod_deleted(POD_FAILED, None);
    let finished_going = || pod_deleted(POD_FAILED, Some(90));
    // Back after the grace, the margin and the slack: 30 + 15 + 30 s.
    let again = Action::requeue(Duration::from_secs(75));
    let resync = Action::requeue(RESYNC);
    let pod_name = pod::pod_name("g", "u-vmi");
    let cases: Vec<PlanCase> = vec![
        (
            "deleted, not ours to hold",
            vmi_with(Some("Running"), false, true),
            Some(running()),
            false,
            ("wait".into(), None, Some(Action::await_change())),
        ),
        (
            "deleted, no pod: released",
            vmi_with(Some("Running"), true, true),
            None,
            false,
            ("release".into(), None, None),
        ),
        (
            "deleted, the guest runs: the pod asked to shut it down",
            vmi_with(Some("Running"), true, true),
            Some(running()),
            false,
            ("delete pod".into(), Some(graceful()), Some(again.clone())),
        ),
        (
            "deleted, the pod shutting down: wait",
            vmi_with(Some("Running"), true, true),
            Some(going()),
            false,
            ("wait".into(), None, Some(again)),
        ),
        (
            "deleted, the pod finished: deleted with its own grace, released",
            vmi_with(Some("Running"), true, true),
            Some(finished()),
            false,
            ("release".into(), Some(forced(None, None)), None),
        ),
        (
            "deleted, the finished pod already going: released",
            vmi_with(Some("Running"), true, true),
            Some(finished_going()),
            false,
            ("release".into(), None, None),
        ),
        (
            "deleted, the node gone: the pod removed by force",
            vmi_with(Some("Running"), true, true),
            Some(going()),
            true,
            (
                "release".into(),
                Some(forced(Some(0), Some("its node is gone"))),
                None,
            ),
        ),
        (
            "deleted, the pod stuck past its deadline: removed by force",
            vmi_with(Some("Running"), true, true),
            Some(stuck()),
            false,
            (
                "release".into(),
                Some(forced(Some(0), Some("it is stuck past its deadline"))),
                None,
            ),
        ),
        (
            "new: the finalizer first",
            vmi_with(None, false, false),
            None,
            false,
            ("add finalizer".into(), None, None),
        ),
        (
            "final, the pod still runs: deleted",
            vmi_with(Some("Failed"), true, false),
            Some(running()),
            false,
            ("delete pod".into(), Some(graceful()), Some(resync.clone())),
        ),
        (
            "final, the pod finished: nothing",
            vmi_with(Some("Succeeded"), true, false),
            Some(finished()),
            false,
            ("wait".into(), None, Some(resync.clone())),
        ),
        (
            "final, the pod going: nothing",
            vmi_with(Some("Succeeded"), true, false),
            Some(going()),
            false,
            ("wait".into(), None, Some(resync)),
        ),
        (
            "new, with the finalizer: the pod created",
            vmi_with(None, true, false),
            None,
            false,
            (format!("create {pod_name}"), None, None),
        ),
        (
            "pending, no pod: the pod created",
            vmi_with(Some("Pending"), true, false),
            None,
            false,
            (format!("create {pod_name}"), None, None),
        ),
        (
            "scheduling with the pod: status",
            vmi_with(Some("Scheduling"), true, false),
            Some(running()),
            false,
            ("status Some(Scheduled)".into(), None, None),
        ),
        (
            "scheduling, the pod gone: status",
            vmi_with(Some("Scheduling"), true, false),
            None,
            false,
            ("status Some(Failed)".into(), None, None),
        ),
    ];
    for (what, v, p, node_gone, (kind, delete, action)) in cases {
        let planned = plan(&seen(&v, p, node_gone), &launcher());
        assert_eq!(summary(&planned), (kind, delete.as_ref(), action), "{what}");
    }
}

#[test]
fn a_spec_that_cannot_run_fails_the_vmi_with_an_event() {
    let mut v = vmi_with(None, true, false);
    v.spec.domain.memory = None;
    let Plan::Unrunnable(p) = plan(&seen(&v, None, false), &launcher()) else {
        panic!("a VMI without guest memory cannot run");
    };
    assert_eq!(
        (p.status.phase, p.status.reason.as_deref()),
        (Some(VmiPhase::Failed), Some("InvalidSpec"))
    );
    let failure = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failure")
        .unwrap();
    assert!(
        failure
            .message
            .as_deref()
            .unwrap()
            .contains("no guest memory"),
        "{failure:?}"
    );
    assert_eq!(p.events.len(), 1);
    assert_eq!(
        (p.events[0].0, p.events[0].1),
        (EventType::Warning, "InvalidSpec")
    );
}

#[test]
fn a_pod_the_cache_lacks_is_read_only_where_the_plan_needs_it() {
    let cases = [
        ("new, no finalizer yet", vmi_with(None, false, false), false),
        ("new: creates it", vmi_with(None, true, false), false),
        (
            "pending: creates it",
            vmi_with(Some("Pending"), true, false),
            false,
        ),
        (
            "scheduling",
            vmi_with(Some("Scheduling"), true, false),
            true,
        ),
        ("running", vmi_with(Some("Running"), true, false), true),
        (
            "final: the cache",
            vmi_with(Some("Failed"), true, false),
            false,
        ),
        (
            "deleted, held",
            vmi_with(Some("Succeeded"), true, true),
            true,
        ),
        (
            "deleted, not held",
            vmi_with(Some("Running"), false, true),
            false,
        ),
    ];
    for (what, v, reads) in cases {
        assert_eq!(reads_pod(&v), reads, "{what}");
    }
}

#[test]
fn a_refused_pod_leaves_the_vmi_pending_with_the_api_servers_reason() {
    let old = vmi_with(None, true, false).status.unwrap_or_default();
    let status = plan_create_failure(&old, "FailedCreate", "pods \"x\" is forbidden: quota");
    assert_eq!(status.phase, Some(VmiPhase::Pending));
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == SYNCHRONIZED)
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        (
            "False",
            Some("FailedCreate"),
            Some("failed to create virtual machine pod: pods \"x\" is forbidden: quota")
        )
    );
}

#[test]
fn a_status_write_happens_only_for_a_change_and_stamps_the_phase() {
    let now = Timestamp::from_second(100).unwrap();
    let old = vmi_with(Some("Scheduling"), true, false).status.unwrap();
    assert!(
        plan_status_write(&old, old.clone(), now).is_none(),
        "nothing changed"
    );

    let mut scheduled = old.clone();
    scheduled.phase = Some(VmiPhase::Scheduled);
    let w = plan_status_write(&old, scheduled, now).unwrap();
    assert_eq!(
        w.phase_change,
        Some((Some(VmiPhase::Scheduling), VmiPhase::Scheduled))
    );
    assert_eq!(
        w.status.phase_transition_timestamps,
        [PhaseTransitionTimestamp {
            phase: Some(VmiPhase::Scheduled),
            phase_transition_timestamp: Some(Time(now)),
        }]
    );
    assert_eq!(w.failed_event, None, "only a failure is an Event");

    let missing = plan_from_pod(
        &vmi_with(Some("Scheduling"), true, false),
        &old,
        old.clone(),
        None,
        now,
    );
    let w = plan_status_write(&old, missing.status, now).unwrap();
    assert_eq!(
        w.failed_event.as_deref(),
        Some("Scheduling -> Failed: LauncherPodMissing: the launcher pod is gone")
    );

    // Only a condition changed: written, no phase change.
    let mut cond = old.clone();
    set_condition(
        &mut cond.conditions,
        synchronized_failure("FailedMount", "m"),
    );
    let w = plan_status_write(&old, cond, now).unwrap();
    assert_eq!((w.phase_change, w.failed_event), (None, None));
}

#[test]
fn a_new_pod_is_told_on_a_vmi_no_vm_controls() {
    let alone = vmi_with(None, true, false);
    let Plan::CreatePod(p, event) = plan(&seen(&alone, None, false), &launcher()) else {
        panic!("a new VMI creates its pod");
    };
    assert_eq!(
        event,
        Some(format!("Created virtual machine pod {}", p.name_any()))
    );
    let mut of_vm = alone.clone();
    of_vm.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachine".into(),
            name: "g".into(),
            uid: "u-vm".into(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    let Plan::CreatePod(_, event) = plan(&seen(&of_vm, None, false), &launcher()) else {
        panic!("a new VMI creates its pod");
    };
    assert_eq!(event, None, "the VM's own SuccessfulCreate told the start");
}

#[test]
fn a_pods_node_alone_waits_for_the_settle_after_its_bind() {
    let bound_at = |t: i64| {
        let mut p = pod(BOUND_WAITING);
        p.status.as_mut().unwrap().conditions =
            Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                ..Default::default()
            }]);
        p
    };
    let mut v = vmi(Some("Scheduling"), false);
    v.status.as_mut().unwrap().active_pods =
        Some(BTreeMap::from([("u-pod".to_string(), String::new())]));
    let old = v.status.clone().unwrap();
    let at = |s: i64| Timestamp::from_second(s).unwrap();
    // Bound at 100, seen at 101: the node waits, the pass comes back at the settle's end.
    let held = plan_from_pod(&v, &old, old.clone(), Some(&bound_at(100)), at(101));
    assert_eq!(held.status, old, "nothing to write yet");
    assert_eq!(held.requeue, Duration::from_secs(2));
    // Seen at 103: written.
    let written = plan_from_pod(&v, &old, old.clone(), Some(&bound_at(100)), at(103));
    assert_eq!(
        written.status.active_pods,
        Some(BTreeMap::from([("u-pod".to_string(), "n1".to_string())]))
    );
    assert_eq!(written.requeue, RESYNC);
    // A bind in this clock's future (the API server's clock ahead): written, no wait.
    let skewed = plan_from_pod(&v, &old, old.clone(), Some(&bound_at(200)), at(101));
    assert_eq!(skewed.status, written.status);
    // Running within it: Scheduled with the node at once.
    let ready = plan_from_pod(&v, &old, old.clone(), Some(&pod(READY)), at(101));
    assert_eq!(ready.status.phase, Some(VmiPhase::Scheduled));
    // A pod not listed yet (just created, or a new one) is written at once.
    let mut fresh = old.clone();
    fresh.active_pods = None;
    let first = plan_from_pod(&v, &fresh, fresh.clone(), Some(&bound_at(100)), at(101));
    assert_eq!(
        first.status.active_pods,
        Some(BTreeMap::from([("u-pod".to_string(), "n1".to_string())]))
    );
}

#[test]
fn a_new_pods_first_status_waits_for_it_to_run_for_the_settle() {
    let created_at = |t: i64, yaml: &str| {
        let mut p = pod(yaml);
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(t).unwrap()));
        p
    };
    let unbound = "spec: {containers: [{name: compute}]}\nstatus: {phase: Pending}";
    let at = |s: i64| Timestamp::from_second(s).unwrap();
    let v = vmi(None, false);
    let old = v.status.clone().unwrap_or_default();
    // The plan for a pod created at 100, seen at `seen`; activePods naming `node`.
    let planned_at = |yaml: &str, seen: i64| {
        plan_from_pod(
            &v,
            &old,
            old.clone(),
            Some(&created_at(100, yaml)),
            at(seen),
        )
    };
    let active = |node: &str| Some(BTreeMap::from([("u-pod".to_string(), node.to_string())]));
    // Seen at 101 unbound: nothing written, back at the settle's end.
    let held = planned_at(unbound, 101);
    assert_eq!(held.status, old, "nothing to write yet");
    assert_eq!(held.requeue, Duration::from_secs(2));
    // Seen at 103, still unbound: Scheduling without the node.
    let late = planned_at(unbound, 103);
    assert_eq!(late.status.phase, Some(VmiPhase::Scheduling));
    assert_eq!(late.status.active_pods, active(""));
    // Bound within it, not running: still nothing written, back at the settle's end.
    let bound = planned_at(BOUND_WAITING, 101);
    assert_eq!(bound.status, old, "nothing to write yet");
    assert_eq!(bound.requeue, Duration::from_secs(2));
    // Seen at 103, bound and not running: Scheduling with the node.
    let bound_late = planned_at(BOUND_WAITING, 103);
    assert_eq!(bound_late.status.phase, Some(VmiPhase::Scheduling));
    assert_eq!(bound_late.status.active_pods, active("n1"));
    // Running within it: Scheduled with the node at once, one write from Pending.
    let ready = planned_at(READY, 101);
    assert_eq!(ready.status.phase, Some(VmiPhase::Scheduled));
    assert_eq!(ready.status.active_pods, active("n1"));
    assert_eq!(ready.label_node.as_deref(), Some("n1"));
    // A container image the node cannot pull: told at once.
    let unpullable = planned_at(
        "spec: {containers: [{name: compute, image: example.org/none:1}], nodeName: n1}\nstatus: {phase: Pending, containerStatuses: [{name: compute, ready: false, restartCount: 0, image: example.org/none:1, imageID: '', state: {waiting: {reason: ErrImagePull, message: 'pull access denied'}}}]}",
        101,
    );
    assert_eq!(unpullable.status.phase, Some(VmiPhase::Scheduling));
    assert_ne!(unpullable.status, old);
    // Refused by the scheduler: told at once.
    let refused = created_at(
        100,
        "spec: {containers: [{name: compute}]}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/1 nodes are available'}]}",
    );
    let told = plan_from_pod(&v, &old, old.clone(), Some(&refused), at(101));
    assert_eq!(told.status.phase, Some(VmiPhase::Scheduling));
    assert!(
        told.status
            .conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled"),
        "{:?}",
        told.status.conditions
    );
    // A VMI already Scheduling is not held (its pod's node follows BIND_SETTLE).
    let scheduling = vmi(Some("Scheduling"), false);
    let s_old = scheduling.status.clone().unwrap();
    let again = plan_from_pod(
        &scheduling,
        &s_old,
        s_old.clone(),
        Some(&created_at(100, unbound)),
        at(101),
    );
    assert_eq!(again.status.phase, Some(VmiPhase::Scheduling));
    assert_ne!(again.status, s_old);
}
