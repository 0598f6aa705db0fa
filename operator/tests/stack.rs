//! The VM controller's status against the whole stack (devnode, virt-handler, launchers,
//! QEMU): how instances that fail or stop on the node show on their VirtualMachine. One
//! Stack serves every test of this binary.

mod common;

use std::time::Duration;

use common::eventually;
use crds::{Condition, VirtualMachine, VirtualMachineInstance, VmiPhase};
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, manifests, shared};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::OnceCell;

/// Booting and stopping guests under emulation on 2 loaded cores.
const T: Duration = Duration::from_secs(180);

static STACK: OnceCell<Stack> = OnceCell::const_new();

async fn stack() -> (&'static ControlPlane, &'static Stack) {
    let cp = shared().await;
    let stack = STACK
        .get_or_init(|| async {
            Stack::start(cp, "op-node")
                .await
                .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"))
        })
        .await;
    (cp, stack)
}

fn condition<'a>(vm: &'a VirtualMachine, type_: &str) -> Option<&'a Condition> {
    vm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits for an Event in `ns` that `f` accepts.
async fn event(
    stack: &Stack,
    client: &Client,
    ns: &str,
    what: &str,
    f: impl Fn(&Event) -> bool + Clone,
) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{what}\n{}", stack.log_tails(20)), T, || {
        let (events, f) = (events.clone(), f.clone());
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| f(e))
        }
    })
    .await
}

fn regarding(e: &Event, kind: &str, name: &str) -> bool {
    e.regarding
        .as_ref()
        .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
}

#[tokio::test]
async fn a_vm_in_a_crash_loop_shows_why_its_instances_fail() {
    let (cp, stack) = stack().await;
    let ns = TestNamespace::create(cp, "op-crashloop").await.unwrap();
    let client = cp.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    // The image is there, the disk it names is not: the node fails the instance.
    const IMAGE: &str = "ferrovirt/guest-disk:latest";
    let vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "nodisk"},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {"memory": {"guest": "128Mi"}, "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
            "volumes": [{"name": "root", "containerDisk": {"image": IMAGE, "path": "/disk/no-such-file"}}],
        }}},
    }))
    .unwrap();
    vms.create(&PostParams::default(), &vm).await.unwrap();

    // The instance fails on the node and goes at once (Always replaces it); the VM keeps
    // why, in Failure and Ready, through the back-off.
    let vm = eventually(
        &format!(
            "VM nodisk in CrashLoopBackOff with the failure's reason\n{}",
            stack.log_tails(20)
        ),
        T,
        || {
            let vms = vms.clone();
            async move {
                let vm = vms.get("nodisk").await.ok()?;
                let looping =
                    vm.status.as_ref()?.printable_status.as_deref() == Some("CrashLoopBackOff");
                let gone = vm.status.as_ref()?.created == Some(false);
                let failure = condition(&vm, "Failure")?;
                (looping && gone && failure.reason.as_deref() == Some("VolumePreparationFailed"))
                    .then_some(vm)
            }
        },
    )
    .await;
    let status = vm.status.as_ref().unwrap();
    let failed_uid = status
        .start_failure
        .as_ref()
        .and_then(|f| f.last_failed_vmi_uid.clone())
        .expect("startFailure");
    for type_ in ["Failure", "Ready"] {
        let c = condition(&vm, type_).unwrap();
        let message = c.message.as_deref().unwrap_or_default();
        assert_eq!(
            c.reason.as_deref(),
            Some("VolumePreparationFailed"),
            "{type_}: {c:?}"
        );
        assert!(
            message.contains(IMAGE) && message.contains(&failed_uid),
            "{type_} names the image and the instance: {message}"
        );
    }

    // Warning Events: on the VM with the reason, and on the instance for its Failed phase.
    let on_vm = event(
        stack,
        &client,
        ns.name(),
        "a Warning Event on the VM naming the image",
        |e| {
            regarding(e, "VirtualMachine", "nodisk")
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("VolumePreparationFailed")
                && e.note.as_deref().is_some_and(|n| n.contains(IMAGE))
        },
    )
    .await;
    assert!(on_vm.note.unwrap().contains("the next start waits"));
    event(
        stack,
        &client,
        ns.name(),
        "a Warning Event Failed on the instance",
        |e| {
            regarding(e, "VirtualMachineInstance", "nodisk")
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("Failed")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("VolumePreparationFailed") && n.contains(IMAGE))
        },
    )
    .await;
    vms.delete("nodisk", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_guest_that_keeps_powering_off_is_restarted_at_once_and_the_vm_says_why() {
    let (cp, stack) = stack().await;
    let ns = TestNamespace::create(cp, "op-poweroff").await.unwrap();
    let client = cp.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    // The guest powers itself off right after booting (its cloud-init user data).
    let manifest = manifests::kernel_boot_vm("off", "Always", Some("#!/bin/sh\nsync; poweroff -f"));
    let vm: VirtualMachine = serde_yaml::from_str(&manifest).unwrap();
    vms.create(&PostParams::default(), &vm).await.unwrap();

    let first = eventually(
        &format!("the first instance Running\n{}", stack.log_tails(20)),
        T,
        || {
            let vmis = vmis.clone();
            async move {
                let vmi = vmis.get_opt("off").await.ok()??;
                (vmi.status.as_ref()?.phase == Some(VmiPhase::Running)).then(|| vmi.uid().unwrap())
            }
        },
    )
    .await;

    // Once its guest is down, the VM says so while the replacement starts: Ready carries
    // the finished instance's ending (KubeVirt would say only VMINotExists or
    // VMIConditionMissing). The first such window may pass unseen on a slow machine: any
    // instance's will do.
    let vm = eventually(
        &format!(
            "Ready=False GuestShutdown naming a finished instance\n{}",
            stack.log_tails(20)
        ),
        T,
        || {
            let vms = vms.clone();
            async move {
                let vm = vms.get("off").await.ok()?;
                let ready = condition(&vm, "Ready")?;
                let carries = ready.status == "False"
                    && ready.reason.as_deref() == Some("GuestShutdown")
                    && ready.message.as_deref().is_some_and(|m| {
                        m.starts_with("VirtualMachineInstance ") && m.contains(" Succeeded: ")
                    });
                carries.then_some(vm)
            }
        },
    )
    .await;
    assert!(
        matches!(
            vm.status.as_ref().unwrap().printable_status.as_deref(),
            Some("Stopped" | "Starting")
        ),
        "{:?}",
        vm.status
    );

    // As in KubeVirt, an instance that ran is no start failure: the next one starts at
    // once, without a back-off, and each stop is told in an Event.
    let second = eventually(
        &format!("a second instance\n{}", stack.log_tails(20)),
        T,
        || {
            let (vmis, first) = (vmis.clone(), first.clone());
            async move {
                vmis.get_opt("off")
                    .await
                    .ok()?
                    .filter(|v| v.uid().as_deref() != Some(first.as_str()))
            }
        },
    )
    .await;
    let vm = vms.get("off").await.unwrap();
    assert_eq!(
        vm.status.as_ref().unwrap().start_failure,
        None,
        "an instance that ran is no start failure"
    );
    let stopped = event(
        stack,
        &client,
        ns.name(),
        "an Event on the VM about the guest's shutdown",
        |e| {
            regarding(e, "VirtualMachine", "off")
                && e.reason.as_deref() == Some("GuestShutdown")
                && e.note.as_deref().is_some_and(|n| n.contains(&first))
        },
    )
    .await;
    assert!(stopped.note.unwrap().contains("starting a new instance"));
    assert!(second.metadata.creation_timestamp.is_some());
    vms.delete("off", &DeleteParams::default()).await.unwrap();
}
