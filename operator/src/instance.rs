//! The VMI a VM runs as (KubeVirt's `SetupVMIFromVM`): pure, shared by the VM controller
//! and the instancetype expansion.

use std::collections::BTreeMap;

use crds::{StartStrategy, VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::strategy;
use crate::vmi_controller::FINALIZER;

/// The VM generation a VMI was created from (or last found equal to), as KubeVirt names it.
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// A hash of the template spec a VMI was created from: a VM whose template hashes
/// differently while the VMI runs needs a restart.
pub const TEMPLATE_HASH_ANNOTATION: &str = "ferrovirt.io/template-hash";

/// A stable 64-bit FNV-1a hash of the template spec's JSON (field order is the struct's,
/// maps are sorted): the same template hashes the same across operator versions. The
/// instancetype and preference matchers count too, when the VM has one (another
/// instancetype needs a restart, as in KubeVirt); a VM without them hashes as before.
pub fn template_hash(vm: &VirtualMachine) -> String {
    let mut bytes = serde_json::to_vec(&vm.spec.template.spec).unwrap_or_default();
    if vm.spec.instancetype.is_some() || vm.spec.preference.is_some() {
        let matchers = (&vm.spec.instancetype, &vm.spec.preference);
        bytes.extend(serde_json::to_vec(&matchers).unwrap_or_default());
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The VMI the VM runs as: its name, the template's labels and annotations, the VM as
/// controller, and the finalizer of the VMI controller set right away (one write fewer).
pub fn instance_for(vm: &VirtualMachine) -> VirtualMachineInstance {
    let template = &vm.spec.template;
    let meta = template.metadata.as_ref();
    let mut annotations: BTreeMap<String, String> =
        meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    if let Some(g) = vm.metadata.generation {
        annotations.insert(VM_GENERATION_ANNOTATION.into(), g.to_string());
    }
    annotations.insert(TEMPLATE_HASH_ANNOTATION.into(), template_hash(vm));
    let owner = controller_ref(vm);
    VirtualMachineInstance {
        metadata: ObjectMeta {
            name: vm.metadata.name.clone(),
            namespace: vm.metadata.namespace.clone(),
            labels: meta.and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: VirtualMachineInstanceSpec {
            start_strategy: template.spec.start_strategy.or_else(|| {
                let requests = vm.status.as_ref().map(|s| &s.state_change_requests[..]);
                strategy::has_start_paused_request(requests.unwrap_or_default())
                    .then_some(StartStrategy::Paused)
            }),
            ..template.spec.clone()
        },
        status: None,
    }
}

/// The VM as the controller of what it owns (its instance, its ControllerRevisions).
pub(crate) fn controller_ref(vm: &VirtualMachine) -> OwnerReference {
    OwnerReference {
        api_version: VirtualMachine::api_version(&()).into_owned(),
        kind: VirtualMachine::kind(&()).into_owned(),
        name: vm.name_any(),
        uid: vm.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::RunStrategy;

    fn vm(yaml: &str) -> VirtualMachine {
        serde_yaml::from_str(yaml).unwrap()
    }

    const VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm1, namespace: ns, uid: u-vm, generation: 3}
spec:
  runStrategy: Always
  template:
    metadata: {labels: {app: a}, annotations: {note: x}}
    spec: {domain: {memory: {guest: 64Mi}, devices: {}}}
"#;

    #[test]
    fn instance_carries_name_labels_owner_and_finalizer() {
        let vmi = instance_for(&vm(VM));
        assert_eq!(vmi.metadata.name.as_deref(), Some("vm1"));
        assert_eq!(vmi.labels()["app"], "a");
        assert_eq!(vmi.annotations()["note"], "x");
        assert_eq!(vmi.annotations()[VM_GENERATION_ANNOTATION], "3");
        let o = &vmi.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("VirtualMachine", "u-vm", Some(true))
        );
        assert_eq!(vmi.finalizers(), [FINALIZER.to_string()]);
    }

    #[test]
    fn a_start_paused_request_starts_the_instance_paused() {
        let plain = instance_for(&vm(VM));
        assert_eq!(plain.spec.start_strategy, None);
        let mut asked = vm(VM);
        asked.status = Some(
            serde_json::from_value(serde_json::json!({
                "stateChangeRequests": [{"action": "Start", "data": {"paused": "true"}}]
            }))
            .unwrap(),
        );
        assert_eq!(
            instance_for(&asked).spec.start_strategy,
            Some(StartStrategy::Paused)
        );
        // A plain start request, or paused data on a later request, starts it running.
        asked.status = Some(serde_json::from_value(serde_json::json!({
            "stateChangeRequests": [{"action": "Start"}, {"action": "Start", "data": {"paused": "true"}}]
        })).unwrap());
        assert_eq!(instance_for(&asked).spec.start_strategy, None);
        // The template's own startStrategy stays.
        let mut template = vm(VM);
        template.spec.template.spec.start_strategy = Some(StartStrategy::Paused);
        assert_eq!(
            instance_for(&template).spec.start_strategy,
            Some(StartStrategy::Paused)
        );
    }

    #[test]
    fn template_hash_changes_with_the_spec_only() {
        let a = vm(VM);
        let mut b = a.clone();
        b.spec.run_strategy = Some(RunStrategy::Halted);
        assert_eq!(template_hash(&a), template_hash(&b));
        b.spec.template.spec.termination_grace_period_seconds = Some(5);
        assert_ne!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c.spec.instancetype = Some(crds::InstancetypeMatcher {
            name: Some("clarge".into()),
            ..Default::default()
        });
        assert_ne!(template_hash(&a), template_hash(&c), "another instancetype");
    }
}
