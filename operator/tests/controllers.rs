//! The VM and VMI controllers against a real kube-apiserver, kube-controller-manager
//! (garbage collector) and kube-scheduler. One operator process serves every test; each
//! test has its own namespace. The tests play kubelet and virt-handler where needed.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use crds::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_tests::{TestNamespace, shared};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
/// How long an object may take to be gone: the dependents of a deleted VM or pool go by
/// kube-controller-manager's garbage collector, which learns the CRDs' kinds only at its
/// discovery resync (every 30 s) and retries a dependent it could not map with a doubling
/// back-off (10 s, 20 s, 41 s): shortly after the control plane starts, a delete can wait
/// for the GC longer than `T`.
const GONE: Duration = Duration::from_secs(90);

/// The one operator of this test binary.
static OPERATOR: OnceLock<Operator> = OnceLock::new();

struct Env {
    client: Client,
    ns: TestNamespace,
    vms: Api<VirtualMachine>,
    vmis: Api<VirtualMachineInstance>,
    pods: Api<Pod>,
}

/// The shared control plane, the operator, the fake node, and a namespace for this test.
async fn env(prefix: &str) -> Env {
    let cp = shared().await;
    OPERATOR.get_or_init(|| start_operator(cp, "shared", "virt-controller"));
    let client = cp.client().await.unwrap();
    ensure_node(&client, NODE, json!({"kubernetes.io/hostname": NODE})).await;
    let ns = TestNamespace::create(cp, prefix).await.unwrap();
    fake_kubelet(client.clone(), ns.name(), NODE);
    Env {
        vms: Api::namespaced(client.clone(), ns.name()),
        vmis: Api::namespaced(client.clone(), ns.name()),
        pods: Api::namespaced(client.clone(), ns.name()),
        client,
        ns,
    }
}

fn operator_log() -> String {
    OPERATOR.get().map(|o| o.log_tail()).unwrap_or_default()
}

impl Env {
    async fn create_vm(&self, vm: VirtualMachine) {
        self.vms.create(&PostParams::default(), &vm).await.unwrap();
    }

    /// The VMI of `name`, once it exists and is not being deleted (optionally other than `not_uid`).
    async fn vmi(&self, name: &str, not_uid: Option<&str>) -> VirtualMachineInstance {
        let vmis = self.vmis.clone();
        eventually(
            &format!(
                "VMI {name} (not {not_uid:?}); operator log:\n{}",
                operator_log()
            ),
            T,
            || {
                let vmis = vmis.clone();
                async move {
                    vmis.get_opt(name).await.unwrap().filter(|v| {
                        v.metadata.deletion_timestamp.is_none() && v.uid().as_deref() != not_uid
                    })
                }
            },
        )
        .await
    }

    /// The launcher pod of `vmi`.
    async fn pod(&self, vmi: &VirtualMachineInstance) -> Pod {
        let pods = self.pods.clone();
        let selector = format!("kubevirt.io/created-by={}", vmi.uid().unwrap());
        eventually(
            &format!("the launcher pod of {}", vmi.name_any()),
            T,
            || {
                let (pods, selector) = (pods.clone(), selector.clone());
                async move {
                    let list = pods
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .unwrap();
                    assert!(
                        list.items.len() <= 1,
                        "more than one launcher pod for one VMI"
                    );
                    list.items.into_iter().next()
                }
            },
        )
        .await
    }

    /// Waits for the pod to be bound to the fake node by the scheduler, then makes it ready.
    async fn run_pod(&self, vmi: &VirtualMachineInstance) -> Pod {
        let pod = self.pod(vmi).await;
        let pods = self.pods.clone();
        let name = pod.name_any();
        let bound = tokio::time::timeout(T, async {
            loop {
                let p = pods.get(&name).await.unwrap();
                if p.spec.as_ref().unwrap().node_name.as_deref() == Some(NODE) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if bound.is_err() {
            let p = pods.get(&name).await.unwrap();
            panic!(
                "the scheduler did not bind {name} to {NODE}: {:?}",
                p.status.and_then(|s| s.conditions)
            );
        }
        make_pod_ready(&self.pods, &name).await;
        pod
    }

    async fn vmi_phase(&self, name: &str, phase: &str) -> VirtualMachineInstance {
        let vmis = self.vmis.clone();
        eventually(
            &format!(
                "VMI {name} in phase {phase}; operator log:\n{}",
                operator_log()
            ),
            T,
            || {
                let vmis = vmis.clone();
                async move {
                    vmis.get_opt(name).await.unwrap().filter(|v| {
                        v.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) == Some(phase)
                    })
                }
            },
        )
        .await
    }

    async fn printable(&self, name: &str, want: &str) -> VirtualMachine {
        self.vm_where(&format!("printableStatus {want}"), name, |vm| {
            vm.status
                .as_ref()
                .and_then(|s| s.printable_status.as_deref())
                == Some(want)
        })
        .await
    }

    async fn vm_where(
        &self,
        what: &str,
        name: &str,
        f: impl Fn(&VirtualMachine) -> bool + Clone,
    ) -> VirtualMachine {
        let vms = self.vms.clone();
        let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let last2 = last.clone();
        let result = tokio::time::timeout(T, async move {
            loop {
                let vm = vms.get(name).await.unwrap();
                *last2.lock().unwrap() = format!("{:?}", vm.status);
                if f(&vm) {
                    return vm;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        match result {
            Ok(vm) => vm,
            Err(_) => panic!(
                "VM {name}: {what} not reached; last status {}\noperator log:\n{}",
                last.lock().unwrap(),
                operator_log()
            ),
        }
    }

    /// Waits for an Event of this namespace that `matches`.
    async fn event_where(&self, what: &str, matches: impl Fn(&Event) -> bool + Clone) {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns.name());
        eventually(what, T, || {
            let events = events.clone();
            let matches = matches.clone();
            async move {
                let list = events.list(&ListParams::default()).await.unwrap();
                list.items.iter().any(matches).then_some(())
            }
        })
        .await;
    }

    async fn gone<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        eventually(
            &format!("{name} to be gone; operator log:\n{}", operator_log()),
            GONE,
            || {
                let api = api.clone();
                async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
            },
        )
        .await
    }
}

fn condition<'a>(vm: &'a VirtualMachine, type_: &str) -> Option<&'a crds::Condition> {
    vm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn always_runs_the_vm_and_replaces_a_finished_instance() {
    let e = env("always").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({}),
    ))
    .await;
    let vmi = e.vmi("vm1", None).await;
    let owner = &vmi.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("VirtualMachine", Some(true))
    );
    assert_eq!(vmi.labels()["app"], "vm1", "template labels are copied");

    let pod = e.run_pod(&vmi).await;
    let c = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["virt-launcher".to_string()][..])
    );
    assert_eq!(pod.labels()["kubevirt.io"], "virt-launcher");
    let scheduled = e.vmi_phase("vm1", "Scheduled").await;
    assert_eq!(
        scheduled.status.as_ref().unwrap().node_name.as_deref(),
        Some(NODE)
    );
    assert_eq!(scheduled.labels()["kubevirt.io/nodeName"], NODE);
    e.printable("vm1", "Starting").await;

    // virt-handler reports the guest running, then its shutdown.
    set_vmi_phase(&e.vmis, "vm1", "Running").await;
    let vm = e.printable("vm1", "Running").await;
    let st = vm.status.as_ref().unwrap();
    assert_eq!(
        (st.created, st.observed_generation, st.desired_generation),
        (Some(true), vm.metadata.generation, vm.metadata.generation)
    );
    set_vmi_phase(&e.vmis, "vm1", "Succeeded").await;
    let replaced = e.vmi("vm1", vmi.uid().as_deref()).await;
    assert_ne!(replaced.uid(), vmi.uid());

    // Events and metrics tell about it.
    e.event_where("a SuccessfulCreate event for the VM", |ev| {
        ev.reason.as_deref() == Some("SuccessfulCreate")
            && ev.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("VirtualMachine")
    })
    .await;
    let metrics = OPERATOR.get().unwrap().metrics();
    assert!(metrics.contains("kubevirt_vmi_phase_count{"), "{metrics}");
    assert!(
        metrics.contains("ferrovirt_operator_reconcile_total{controller=\"vm\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rerun_on_failure_replaces_a_failed_instance_but_respects_a_shutdown() {
    let e = env("rerun").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "RerunOnFailure"}),
        json!({}),
    ))
    .await;
    let first = e.vmi("vm1", None).await;
    e.run_pod(&first).await;
    e.vmi_phase("vm1", "Scheduled").await;
    set_vmi_phase(&e.vmis, "vm1", "Running").await;
    set_vmi_phase(&e.vmis, "vm1", "Failed").await;
    // The replacement's guest powers off as soon as its VMI exists, possibly before the VM
    // controller has seen that VMI alive: the Start request that made it is used up all
    // the same, so nothing starts after the shutdown (failed once in CI under load).
    e.vmi("vm1", first.uid().as_deref()).await;
    set_vmi_phase(&e.vmis, "vm1", "Running").await;
    set_vmi_phase(&e.vmis, "vm1", "Succeeded").await;
    e.gone(&e.vmis, "vm1").await;
    // The VM may show Stopped while its Succeeded VMI still exists (created true); once the
    // VMI is gone the next status says created false.
    e.vm_where("printableStatus Stopped, created false", "vm1", |vm| {
        vm.status.as_ref().is_some_and(|s| {
            s.printable_status.as_deref() == Some("Stopped") && s.created == Some(false)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        e.vmis.get_opt("vm1").await.unwrap().is_none(),
        "a guest shutdown must not be followed by a restart"
    );
}

#[tokio::test]
async fn once_runs_one_instance_and_keeps_it_when_it_finishes() {
    let e = env("once").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Once"}),
        json!({}),
    ))
    .await;
    let vmi = e.vmi("vm1", None).await;
    e.run_pod(&vmi).await;
    e.vmi_phase("vm1", "Scheduled").await;
    set_vmi_phase(&e.vmis, "vm1", "Running").await;
    set_vmi_phase(&e.vmis, "vm1", "Failed").await;
    e.printable("vm1", "Stopped").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = e.vmis.get("vm1").await.unwrap();
    assert_eq!(still.uid(), vmi.uid(), "Once must not restart");
}

#[tokio::test]
async fn manual_acts_on_start_restart_and_stop_requests_and_halted_has_no_instance() {
    let e = env("manual").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Manual"}),
        json!({}),
    ))
    .await;
    e.create_vm(vm_manifest("vm2", json!({"running": false}), json!({})))
        .await;
    e.printable("vm1", "Stopped").await;
    e.printable("vm2", "Stopped").await;
    assert!(e.vmis.get_opt("vm1").await.unwrap().is_none());

    request(&e.vms, "vm1", json!([{"action": "Start"}])).await;
    let first = e.vmi("vm1", None).await;
    e.vm_where("start request cleared", "vm1", |vm| {
        vm.status
            .as_ref()
            .is_some_and(|s| s.state_change_requests.is_empty())
    })
    .await;

    // Restart: stop this instance, then start.
    request(
        &e.vms,
        "vm1",
        json!([{"action": "Stop", "uid": first.uid()}, {"action": "Start"}]),
    )
    .await;
    let second = e.vmi("vm1", first.uid().as_deref()).await;
    e.vm_where("restart requests cleared", "vm1", |vm| {
        vm.status
            .as_ref()
            .is_some_and(|s| s.state_change_requests.is_empty())
    })
    .await;

    request(
        &e.vms,
        "vm1",
        json!([{"action": "Stop", "uid": second.uid()}]),
    )
    .await;
    e.gone(&e.vmis, "vm1").await;
    e.printable("vm1", "Stopped").await;
    e.vm_where("stop request cleared", "vm1", |vm| {
        vm.status
            .as_ref()
            .is_some_and(|s| s.state_change_requests.is_empty())
    })
    .await;

    // running: false behaves as Halted; true as Always.
    assert!(e.vmis.get_opt("vm2").await.unwrap().is_none());
    e.vms
        .patch(
            "vm2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"running": true}})),
        )
        .await
        .unwrap();
    e.vmi("vm2", None).await;
    e.vms
        .patch(
            "vm2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"running": false}})),
        )
        .await
        .unwrap();
    e.gone(&e.vmis, "vm2").await;
    e.printable("vm2", "Stopped").await;
}

#[tokio::test]
async fn a_template_change_while_running_requires_a_restart() {
    let e = env("restartreq").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({}),
    ))
    .await;
    let first = e.vmi("vm1", None).await;
    let gen1 = e.vms.get("vm1").await.unwrap().metadata.generation;
    e.vm_where("observedGeneration", "vm1", |vm| {
        vm.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == gen1)
    })
    .await;

    let patch = json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}});
    let changed = e
        .vms
        .patch("vm1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let vm = e
        .vm_where("RestartRequired", "vm1", |vm| {
            condition(vm, "RestartRequired").is_some_and(|c| c.status == "True")
        })
        .await;
    let st = vm.status.unwrap();
    assert_eq!(st.desired_generation, changed.metadata.generation);
    assert_eq!(
        st.observed_generation, gen1,
        "the running VMI is from the old template"
    );

    // A runStrategy-only change needs no restart and is observed by the running instance.
    request(
        &e.vms,
        "vm1",
        json!([{"action": "Stop", "uid": first.uid()}, {"action": "Start"}]),
    )
    .await;
    e.vmi("vm1", first.uid().as_deref()).await;
    let vm = e
        .vm_where("RestartRequired cleared after the restart", "vm1", |vm| {
            condition(vm, "RestartRequired").is_none()
                && vm.status.as_ref().unwrap().observed_generation == vm.metadata.generation
        })
        .await;
    assert_eq!(
        vm.status.unwrap().desired_generation,
        vm.metadata.generation
    );
}

#[tokio::test]
async fn an_instance_that_fails_before_running_backs_off_as_crash_loop() {
    let e = env("crashloop").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({}),
    ))
    .await;
    let first = e.vmi("vm1", None).await;
    let pod = e.pod(&first).await;
    fail_pod(&e.pods, &pod.name_any(), "ErrImagePull").await;
    // The VMI fails with the pod's reason (and goes at once: Always replaces it).
    let vm = e.printable("vm1", "CrashLoopBackOff").await;
    e.event_where(
        "an event of the VMI's failure with the pod's reason",
        |ev| {
            ev.reason.as_deref() == Some("Failed")
                && ev
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("ErrImagePull"))
        },
    )
    .await;
    let sf = vm.status.unwrap().start_failure.expect("startFailure");
    assert_eq!(sf.consecutive_fail_count, Some(1));
    assert_eq!(sf.last_failed_vmi_uid, first.uid());
    let retry = sf.retry_after_timestamp.expect("retryAfterTimestamp").0;
    // Nothing starts during the back-off; a new VMI comes after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        e.vmis
            .get_opt("vm1")
            .await
            .unwrap()
            .is_none_or(|v| v.uid() == first.uid())
    );
    let second = e.vmi("vm1", first.uid().as_deref()).await;
    let created = second.metadata.creation_timestamp.unwrap().0;
    assert!(
        created
            >= retry
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .unwrap(),
        "created {created} before {retry}"
    );
    e.printable("vm1", "Starting").await;
}

#[tokio::test]
async fn an_unschedulable_pod_shows_the_schedulers_reason() {
    let e = env("unsched").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({"nodeSelector": {"ferrovirt.io/nowhere": "true"}}),
    ))
    .await;
    let vmi = e.vmi("vm1", None).await;
    let pod = e.pod(&vmi).await;
    assert_eq!(
        pod.spec.as_ref().unwrap().node_selector.as_ref().unwrap()["ferrovirt.io/nowhere"],
        "true"
    );
    let vm = e.printable("vm1", "ErrorUnschedulable").await;
    let c = condition(&vm, "PodScheduled").expect("PodScheduled copied to the VM");
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    let vmi = e.vmi_phase("vm1", "Scheduling").await;
    let c = vmi
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert!(
        c.message.unwrap_or_default().contains("node"),
        "the scheduler's message"
    );
}

/// KubeVirt's WaitingForVolumeBinding: the VM is to run and its claim is not bound yet.
/// The launcher pod names a scheduler nobody runs, so neither the scheduler's verdict
/// (ErrorUnschedulable, which KubeVirt ranks higher) nor a placement comes in between;
/// once a volume is bound to the claim, the VM is back to Starting.
#[tokio::test]
async fn a_vm_waits_for_its_claims_binding() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let e = env("binding").await;
    let class = format!("{}-immediate", e.ns.name());
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Mi"}}}
    }))
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(e.client.clone(), e.ns.name());
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({"schedulerName": "ferrovirt-nobody",
               "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}),
    ))
    .await;
    let vm = e.printable("vm1", "WaitingForVolumeBinding").await;
    assert!(
        condition(&vm, "Failure").is_none(),
        "waiting is not a failure: {:?}",
        vm.status
    );

    // A volume reserved for the claim: the binder binds them (its path is never mounted:
    // no pod of this test is placed).
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": class},
        "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Delete",
                 "claimRef": {"namespace": e.ns.name(), "name": "data"},
                 "hostPath": {"path": "/nonexistent/ferrovirt-binding-test"}}
    }))
    .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(e.client.clone());
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    e.printable("vm1", "Starting").await;
    let phase = pvcs.get("data").await.unwrap().status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Bound"));
    e.vms.delete("vm1", &DeleteParams::default()).await.unwrap();
    pvs.delete(&class, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn deleting_the_vm_removes_instance_and_pod_in_background_and_foreground() {
    let e = env("cascade").await;
    for (name, policy) in [
        ("bg", DeleteParams::background()),
        ("fg", DeleteParams::foreground()),
    ] {
        e.create_vm(vm_manifest(
            name,
            json!({"runStrategy": "Always"}),
            json!({}),
        ))
        .await;
        let vmi = e.vmi(name, None).await;
        let pod = e.run_pod(&vmi).await;
        e.vmi_phase(name, "Scheduled").await;
        e.vms.delete(name, &policy).await.unwrap();
        e.gone(&e.vms, name).await;
        e.gone(&e.vmis, name).await;
        e.gone(&e.pods, &pod.name_any()).await;
    }
}

#[tokio::test]
async fn the_finalizer_never_sticks_when_pod_or_node_is_gone() {
    let e = env("finalizer").await;
    // A VMI on its own, whose pod is removed under it while it runs.
    let vm = vm_manifest("lone", json!({}), json!({}));
    let vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "lone"}, "spec": vm.spec.template.spec,
    }))
    .unwrap();
    let vmi = e.vmis.create(&PostParams::default(), &vmi).await.unwrap();
    let pod = e.run_pod(&vmi).await;
    e.vmi_phase("lone", "Scheduled").await;
    set_vmi_phase(&e.vmis, "lone", "Running").await;
    e.pods
        .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let failed = e.vmi_phase("lone", "Failed").await;
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some("LauncherPodMissing")
    );
    e.vmis
        .delete("lone", &DeleteParams::default())
        .await
        .unwrap();
    e.gone(&e.vmis, "lone").await;

    // A VMI whose node disappears: deletion removes the pod by force and lets the VMI go.
    // The node is tainted so that the other tests' pods (which run at the same time and
    // expect node1) never land on it.
    ensure_tainted_node(
        &e.client,
        "doomed",
        json!({"ferrovirt.io/doomed": e.ns.name()}),
        json!([{"key": "ferrovirt.io/doomed", "effect": "NoSchedule"}]),
    )
    .await;
    let mut vm = vm_manifest(
        "doomed",
        json!({"runStrategy": "Always"}),
        json!({"nodeSelector": {"ferrovirt.io/doomed": e.ns.name()},
               "tolerations": [{"key": "ferrovirt.io/doomed", "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    vm.spec.template.spec.termination_grace_period_seconds = Some(600);
    e.create_vm(vm).await;
    let vmi = e.vmi("doomed", None).await;
    let pod = e.pod(&vmi).await;
    eventually("the pod bound to the doomed node", T, || {
        let (pods, name) = (e.pods.clone(), pod.name_any());
        async move {
            pods.get(&name)
                .await
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .filter(|n| n == "doomed")
        }
    })
    .await;
    make_pod_ready(&e.pods, &pod.name_any()).await;
    e.vmi_phase("doomed", "Scheduled").await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(e.client.clone());
    nodes
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    e.vms
        .patch(
            "doomed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
        )
        .await
        .unwrap();
    e.gone(&e.vmis, "doomed").await;
    e.gone(&e.pods, &pod.name_any()).await;
    e.printable("doomed", "Stopped").await;
}

#[tokio::test]
async fn a_launcher_pod_the_api_server_refuses_shows_on_the_vmi_and_in_a_warning_event() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let e = env("podrefused").await;
    // A quota of no pods: admission cannot refuse the VM for it, the API server refuses the
    // pod. (No quota controller runs here: the status is written as it would write it.)
    let quotas: Api<ResourceQuota> = Api::namespaced(e.client.clone(), e.ns.name());
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let status = json!({"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}});
    quotas
        .patch_status("no-pods", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({}),
    ))
    .await;
    let vmis = e.vmis.clone();
    let vmi = eventually(
        &format!(
            "VMI vm1 with condition Synchronized=False FailedCreate; operator log:\n{}",
            operator_log()
        ),
        T,
        || {
            let vmis = vmis.clone();
            async move {
                let vmi = vmis.get_opt("vm1").await.unwrap()?;
                let c = vmi
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Synchronized")?
                    .clone();
                (c.status == "False" && c.reason.as_deref() == Some("FailedCreate"))
                    .then_some((vmi, c))
            }
        },
    )
    .await;
    let (vmi, c) = vmi;
    let message = c.message.unwrap_or_default();
    assert!(
        message.starts_with("failed to create virtual machine pod: "),
        "{message}"
    );
    assert!(
        message.contains("exceeded quota: no-pods"),
        "the API server's reason: {message}"
    );
    assert_eq!(
        vmi.status.as_ref().unwrap().phase.map(|p| p.as_str()),
        Some("Pending")
    );

    e.event_where(
        "a Warning event FailedCreate on the VMI naming the quota",
        |ev| {
            ev.type_.as_deref() == Some("Warning")
                && ev.reason.as_deref() == Some("FailedCreate")
                && ev.regarding.as_ref().and_then(|r| r.kind.as_deref())
                    == Some("VirtualMachineInstance")
                && ev
                    .note
                    .as_deref()
                    .is_some_and(|n| n.contains("exceeded quota: no-pods"))
        },
    )
    .await;
    // The VM shows it too (KubeVirt copies the VMI's conditions).
    e.vm_where("the VMI's Synchronized condition", "vm1", |vm| {
        condition(vm, "Synchronized").is_some_and(|c| c.reason.as_deref() == Some("FailedCreate"))
    })
    .await;

    // Once the quota is gone the pod is made (after the back-off) and the condition goes.
    quotas
        .delete("no-pods", &DeleteParams::default())
        .await
        .unwrap();
    e.pod(&vmi).await;
    e.vm_where("the Synchronized condition gone", "vm1", |vm| {
        condition(vm, "Synchronized").is_none()
    })
    .await;
    let vmi = e.vmis.get("vm1").await.unwrap();
    assert!(
        vmi.status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Synchronized")
    );
}

/// KubeVirt passes the VMI's scheduling and DNS fields to the launcher pod: the API server
/// resolves the PriorityClass to the pod's priority, the named scheduler binds it, and
/// the pod carries the DNS settings (which the guest gets from the pod over DHCP).
#[tokio::test]
async fn scheduling_and_dns_fields_reach_the_launcher_pod() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let e = env("sched").await;
    let classes: Api<PriorityClass> = Api::all(e.client.clone());
    let class: PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": "ferrovirt-test-high"}, "value": 1000}))
            .unwrap();
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(err) => panic!("creating the PriorityClass: {err}"),
    }
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always"}),
        json!({
            "priorityClassName": "ferrovirt-test-high",
            "schedulerName": "default-scheduler",
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "vm1"}}}],
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["10.0.0.53"], "searches": ["example.test"]},
        }),
    ))
    .await;
    let vmi = e.vmi("vm1", None).await;
    let pod = e.run_pod(&vmi).await;
    let spec = pod.spec.unwrap();
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("ferrovirt-test-high")
    );
    assert_eq!(
        spec.priority,
        Some(1000),
        "the API server resolved the class"
    );
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(
        spec.topology_spread_constraints.unwrap()[0].topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(spec.dns_policy.as_deref(), Some("None"));
    assert_eq!(spec.dns_config.unwrap().nameservers.unwrap(), ["10.0.0.53"]);

    // A PriorityClass that does not exist: the API server refuses the pod, and the VMI
    // says why.
    e.create_vm(vm_manifest(
        "vm2",
        json!({"runStrategy": "Always"}),
        json!({"priorityClassName": "no-such-class"}),
    ))
    .await;
    let vmis = e.vmis.clone();
    let message = eventually(
        &format!(
            "VMI vm2 Synchronized=False naming the class; operator log:\n{}",
            operator_log()
        ),
        T,
        || {
            let vmis = vmis.clone();
            async move {
                let vmi = vmis.get_opt("vm2").await.unwrap()?;
                let c = vmi
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Synchronized")?;
                (c.status == "False").then_some(c.message.unwrap_or_default())
            }
        },
    )
    .await;
    assert!(message.contains("no-such-class"), "{message}");
}

/// `virtctl start --paused` on a Manual VM: the Start request with data paused=true
/// becomes the instance's `startStrategy: Paused`; a plain Start request does not.
#[tokio::test]
async fn a_paused_start_request_creates_a_paused_instance() {
    let e = env("startpaused").await;
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Manual"}),
        json!({}),
    ))
    .await;
    e.printable("vm1", "Stopped").await;
    request(
        &e.vms,
        "vm1",
        json!([{"action": "Start", "data": {"paused": "true"}}]),
    )
    .await;
    let vmi = e.vmi("vm1", None).await;
    assert_eq!(vmi.spec.start_strategy, Some(crds::StartStrategy::Paused));
    e.vm_where("start request cleared", "vm1", |vm| {
        vm.status
            .as_ref()
            .is_some_and(|s| s.state_change_requests.is_empty())
    })
    .await;
    // The template is unchanged: the next plain start runs.
    let vm = e.vms.get("vm1").await.unwrap();
    assert_eq!(vm.spec.template.spec.start_strategy, None);
}

/// Without CDI, and without virt-api (which refuses them first): a VM with
/// dataVolumeTemplates creates no instance and names the field and CDI in its Failure
/// condition; a VMI with a dataVolume volume gets no launcher pod and stays Pending, its
/// DataVolumesReady condition saying the same. Never accepted and ignored.
#[tokio::test]
async fn data_volumes_without_cdi_are_named_in_the_status() {
    let e = env("nocdi").await;
    let volumes = json!({"volumes": [{"name": "root", "dataVolume": {"name": "imported"}}]});
    let templates = json!([{"metadata": {"name": "imported"},
                            "spec": {"storage": {}, "source": {"blank": {}}}}]);
    e.create_vm(vm_manifest(
        "vm1",
        json!({"runStrategy": "Always", "dataVolumeTemplates": templates}),
        volumes.clone(),
    ))
    .await;
    let vm = e
        .vm_where("a Failure condition naming CDI", "vm1", |vm| {
            vm.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Failure"
                        && c.reason.as_deref() == Some("FailedDataVolumeCreate")
                        && c.message
                            .as_deref()
                            .is_some_and(|m| m.starts_with("spec.dataVolumeTemplates needs CDI"))
                })
            })
        })
        .await;
    assert!(
        e.vmis.get_opt("vm1").await.unwrap().is_none(),
        "started without its DataVolume: {:?}",
        vm.status
    );

    let mut vmi = serde_json::to_value(vm_manifest("x", json!({}), volumes).spec.template).unwrap();
    vmi["apiVersion"] = json!("kubevirt.io/v1");
    vmi["kind"] = json!("VirtualMachineInstance");
    vmi["metadata"] = json!({"name": "vmi1"});
    let vmi: VirtualMachineInstance = serde_json::from_value(vmi).unwrap();
    e.vmis.create(&PostParams::default(), &vmi).await.unwrap();
    let vmis = e.vmis.clone();
    let condition = eventually(
        &format!(
            "VMI vmi1 DataVolumesReady False; operator log:\n{}",
            operator_log()
        ),
        T,
        || {
            let vmis = vmis.clone();
            async move {
                let status = vmis.get("vmi1").await.unwrap().status?;
                (status.phase == Some(crds::VmiPhase::Pending))
                    .then_some(())
                    .and(
                        status
                            .conditions
                            .into_iter()
                            .find(|c| c.type_ == "DataVolumesReady" && c.status == "False"),
                    )
            }
        },
    )
    .await;
    assert_eq!(condition.reason.as_deref(), Some("CDINotInstalled"));
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("spec.volumes[0].dataVolume needs CDI")),
        "{condition:?}"
    );
    let pods = e
        .pods
        .list(&ListParams::default().labels("kubevirt.io/created-by"))
        .await
        .unwrap();
    assert!(
        pods.items.is_empty(),
        "a launcher pod without its DataVolume"
    );
}

// VirtualMachineInstanceReplicaSet and VirtualMachinePool: KubeVirt's own examples
// (shared/kubevirt-examples) applied as they are with kubectl; this test plays kubelet
// (the fake node) and virt-handler (the phases from Running on, and Ready).

/// Plays virt-handler: the VMI runs and is ready.
async fn run_and_ready(vmis: &Api<VirtualMachineInstance>, name: &str) {
    set_vmi_phase(vmis, name, "Running").await;
    let pp = PatchParams {
        field_manager: Some("virt-handler".into()),
        ..Default::default()
    };
    let vmi = vmis.get(name).await.unwrap();
    let mut conditions = serde_json::to_value(vmi.status.unwrap_or_default().conditions).unwrap();
    let list = conditions.as_array_mut().unwrap();
    list.retain(|c| c["type"] != "Ready");
    list.push(json!({"type": "Ready", "status": "True"}));
    vmis.patch(
        name,
        &pp,
        &Patch::Merge(&json!({"status": {"conditions": list}})),
    )
    .await
    .unwrap();
}

impl Env {
    async fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.name()];
        all.extend_from_slice(args);
        shared()
            .await
            .kubectl(all)
            .await
            .unwrap()
            .expect_success()
            .to_string()
    }

    /// The VMIs with label `selector`, not being deleted, once `done` holds for them.
    async fn vmis_where(
        &self,
        what: &str,
        selector: &str,
        done: impl Fn(&[VirtualMachineInstance]) -> bool + Clone,
    ) -> Vec<VirtualMachineInstance> {
        let vmis = self.vmis.clone();
        eventually(
            &format!("{what}; operator log:\n{}", operator_log()),
            T,
            || {
                let (vmis, done) = (vmis.clone(), done.clone());
                let lp = ListParams::default().labels(selector);
                async move {
                    let mut list: Vec<_> = vmis.list(&lp).await.unwrap().items;
                    list.retain(|v| v.metadata.deletion_timestamp.is_none());
                    done(&list).then_some(list)
                }
            },
        )
        .await
    }

    /// Waits for `path` of the status of `resource/name` (as kubectl's jsonpath prints it)
    /// to read `want`.
    async fn status_reads(&self, resource: &str, name: &str, path: &str, want: &str) {
        let mut last = String::new();
        let started = std::time::Instant::now();
        while started.elapsed() < T {
            last = self
                .kubectl(&["get", resource, name, "-o", &format!("jsonpath={path}")])
                .await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{resource}/{name} {path}: wanted {want:?}, last {last:?}; operator log:\n{}",
            operator_log()
        );
    }

    /// Each VMI's launcher pod bound and all its containers (the containerDisk's too)
    /// running: the VMI is Scheduled.
    async fn schedule_all(&self, vmis: &[VirtualMachineInstance]) {
        for vmi in vmis {
            let pod = self.run_pod(vmi).await;
            let now = "2026-01-01T00:00:00Z";
            let statuses: Vec<_> = pod
                .spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .map(|c| {
                    json!({"name": c.name, "ready": true, "restartCount": 0,
                    "image": c.image, "imageID": "", "started": true,
                    "state": {"running": {"startedAt": now}}})
                })
                .collect();
            set_pod_status(
                &self.pods,
                &pod.name_any(),
                json!({"containerStatuses": statuses}),
            )
            .await
            .unwrap();
            self.vmi_phase(&vmi.name_any(), "Scheduled").await;
        }
    }
}

fn controlled_by(obj: &impl kube::Resource, kind: &str, name: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == kind && o.name == name && o.controller == Some(true))
}

#[tokio::test]
async fn a_replica_set_from_kubevirts_example_scales_replaces_and_deletes_its_instances() {
    let e = env("vmirs").await;
    let (rs, selector) = (
        "vmi-replicaset-cirros",
        "kubevirt.io/vmReplicaSet=vmi-replicaset-cirros",
    );
    let example = ferrovirt_tests::examples_dir().join("vmi-replicaset-cirros.yaml");
    e.kubectl(&["apply", "-f", example.to_str().unwrap()]).await;

    let three = e
        .vmis_where("3 VMIs of the replica set", selector, |l| l.len() == 3)
        .await;
    for vmi in &three {
        assert!(
            vmi.name_any().starts_with(rs),
            "{} is named after the set",
            vmi.name_any()
        );
        assert!(controlled_by(vmi, "VirtualMachineInstanceReplicaSet", rs));
    }
    e.schedule_all(&three).await;
    e.status_reads(
        "vmirs",
        rs,
        "{.status.replicas}/{.status.readyReplicas}",
        "3/0",
    )
    .await;
    e.status_reads("vmirs", rs, "{.status.labelSelector}", selector)
        .await;
    let keep = three[1].name_any();
    run_and_ready(&e.vmis, &keep).await;
    e.status_reads("vmirs", rs, "{.status.readyReplicas}", "1")
        .await;

    // Scale down: the ones not ready go first.
    e.kubectl(&["scale", "vmirs", rs, "--replicas=1"]).await;
    let one = e.vmis_where("1 VMI left", selector, |l| l.len() == 1).await;
    assert_eq!(one[0].name_any(), keep, "the ready instance is kept");
    e.status_reads(
        "vmirs",
        rs,
        "{.status.replicas}/{.status.readyReplicas}",
        "1/1",
    )
    .await;
    e.event_where("a SuccessfulDelete Event of the set", |ev| {
        ev.reason.as_deref() == Some("SuccessfulDelete")
            && ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(rs)
    })
    .await;

    // Scale up.
    e.kubectl(&["scale", "vmirs", rs, "--replicas=2"]).await;
    let two = e.vmis_where("2 VMIs", selector, |l| l.len() == 2).await;
    let added = two.iter().find(|v| v.name_any() != keep).unwrap().clone();
    e.schedule_all(std::slice::from_ref(&added)).await;
    e.status_reads(
        "vmirs",
        rs,
        "{.status.replicas}/{.status.readyReplicas}",
        "2/1",
    )
    .await;

    // A deleted instance is replaced, and so is a finished one.
    e.vmis
        .delete(&added.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let replaced = e
        .vmis_where("the deleted VMI replaced", selector, |l| {
            l.len() == 2 && l.iter().all(|v| v.name_any() != added.name_any())
        })
        .await;
    set_vmi_phase(&e.vmis, &keep, "Failed").await;
    e.vmis_where("the failed VMI replaced", selector, |l| {
        l.len() == 2 && l.iter().all(|v| v.name_any() != keep)
    })
    .await;
    e.event_where("a SuccessfulCreate Event of the set", |ev| {
        ev.reason.as_deref() == Some("SuccessfulCreate")
            && ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(rs)
    })
    .await;

    // Deleting the set deletes its instances (the garbage collector, by the owner references).
    e.kubectl(&["delete", "vmirs", rs]).await;
    e.vmis_where("no VMI of the deleted set", selector, |l| l.is_empty())
        .await;
    drop(replaced);
}

#[tokio::test]
async fn a_pool_from_kubevirts_example_scales_and_deletes_its_vms() {
    let e = env("vmpool").await;
    let pool = "vm-pool-cirros";
    let example = ferrovirt_tests::examples_dir().join("vm-pool-cirros.yaml");
    e.kubectl(&["apply", "-f", example.to_str().unwrap()]).await;

    let selector = "kubevirt.io/vmpool=vm-pool-cirros";
    let three = e
        .vmis_where("the 3 VMs' instances", selector, |l| l.len() == 3)
        .await;
    let mut names: Vec<String> = three.iter().map(|v| v.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        ["vm-pool-cirros-0", "vm-pool-cirros-1", "vm-pool-cirros-2"]
    );
    for name in &names {
        let vm = e.vms.get(name).await.unwrap();
        assert!(controlled_by(&vm, "VirtualMachinePool", pool));
        assert!(vm.labels()["kubevirt.io/vm-pool-revision-name"].starts_with("vm-pool-cirros-"));
    }
    e.schedule_all(&three).await;
    run_and_ready(&e.vmis, "vm-pool-cirros-0").await;
    e.status_reads(
        "vmpool",
        pool,
        "{.status.replicas}/{.status.readyReplicas}",
        "3/1",
    )
    .await;

    // Scale in: VMs not ready go first, then the highest index.
    e.kubectl(&["scale", "vmpool", pool, "--replicas=1"]).await;
    for name in ["vm-pool-cirros-1", "vm-pool-cirros-2"] {
        e.gone(&e.vms, name).await;
    }
    e.status_reads(
        "vmpool",
        pool,
        "{.status.replicas}/{.status.readyReplicas}",
        "1/1",
    )
    .await;

    // Scale out: the lowest free index.
    e.kubectl(&["scale", "vmpool", pool, "--replicas=2"]).await;
    let vmi = e.vmi("vm-pool-cirros-1", None).await;
    e.schedule_all(&[vmi]).await;
    e.status_reads(
        "vmpool",
        pool,
        "{.status.replicas}/{.status.readyReplicas}",
        "2/1",
    )
    .await;
    e.event_where("a SuccessfulCreate Event of the pool", |ev| {
        ev.reason.as_deref() == Some("SuccessfulCreate")
            && ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pool)
    })
    .await;

    // Deleting the pool deletes its VMs and their instances.
    e.kubectl(&["delete", "vmpool", pool]).await;
    for name in ["vm-pool-cirros-0", "vm-pool-cirros-1"] {
        e.gone(&e.vms, name).await;
        e.gone(&e.vmis, name).await;
    }
}
