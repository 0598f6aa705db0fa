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
    plan_from_pod(v, &old, old.clone(), p)
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
