//! A VM's `WaitingForVolumeBinding` (KubeVirt's printableStatus): the VM is to run, and a
//! claim of its template's `persistentVolumeClaim` or `dataVolume` volumes exists but is
//! not Bound yet. KubeVirt shows it below Running, the claim and DataVolume errors,
//! ErrorUnschedulable and Provisioning, and above the image pull errors, Starting,
//! CrashLoopBackOff and Stopped.
//!
//! With a `WaitForFirstConsumer` class it shows from the VMI's creation until the scheduler
//! binds the claim as it places the launcher pod; a claim that cannot bind leaves the pod
//! unschedulable, which shows as ErrorUnschedulable (the scheduler's message in the VMI).
//!
//! The claims are read with a GET per claim, only while the status would otherwise be one
//! of those below it and the VM is to run (no claim watch: most VMs have none), and looked
//! at again every [`POLL`] while one is unbound.

use std::time::Duration;

use crds::printable_status as ps;
use crds::{VirtualMachine, VirtualMachineStatus};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::Context;

/// How often a VM waiting for a claim's binding looks again.
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// The printable statuses `WaitingForVolumeBinding` takes precedence over.
fn below_waiting(shown: &str) -> bool {
    matches!(
        shown,
        ps::ERR_IMAGE_PULL
            | ps::IMAGE_PULL_BACK_OFF
            | ps::STARTING
            | ps::CRASH_LOOP_BACK_OFF
            | ps::STOPPED
            | ps::UNKNOWN
    )
}

/// A claim's phase is not Bound (it exists: a missing claim is the VMI's
/// `FailedPvcNotFound`, shown as ErrorPvcNotFound).
fn unbound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
}

/// Shows `WaitingForVolumeBinding` in the VM's status to write (`status`, None: unchanged
/// from `old`) and its printableStatus `change` when the VM is `set_to_start` and a claim
/// of its template is unbound. Returns when to look again (a claim was unbound).
pub(crate) async fn show_vm(
    vm: &VirtualMachine,
    set_to_start: bool,
    status: &mut Option<VirtualMachineStatus>,
    change: &mut Option<(String, String)>,
    old: &VirtualMachineStatus,
    ctx: &Context,
) -> Option<Duration> {
    let current = status.as_ref().unwrap_or(old);
    let shown_now = current.printable_status.as_deref().unwrap_or_default();
    if !set_to_start || !below_waiting(shown_now) {
        return None;
    }
    let volumes = &vm.spec.template.spec.volumes;
    let ns = vm.namespace().unwrap_or_default();
    if !crate::claims::read(&ns, volumes, ctx)
        .await
        .values()
        .any(unbound)
    {
        return None;
    }
    let mut next = current.clone();
    next.printable_status = Some(ps::WAITING_FOR_VOLUME_BINDING.into());
    let before = old.printable_status.clone().unwrap_or_default();
    *change = (before != ps::WAITING_FOR_VOLUME_BINDING)
        .then(|| (before, ps::WAITING_FOR_VOLUME_BINDING.to_string()));
    *status = (&next != old).then_some(next);
    Some(POLL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_statuses_below_it_give_way() {
        for s in [
            ps::ERR_IMAGE_PULL,
            ps::STARTING,
            ps::CRASH_LOOP_BACK_OFF,
            ps::STOPPED,
            ps::UNKNOWN,
        ] {
            assert!(below_waiting(s), "{s}");
        }
        for s in [
            ps::RUNNING,
            ps::TERMINATING,
            ps::STOPPING,
            ps::PAUSED,
            ps::ERROR_PVC_NOT_FOUND,
            ps::ERROR_UNSCHEDULABLE,
            ps::PROVISIONING,
            ps::DATA_VOLUME_ERROR,
        ] {
            assert!(!below_waiting(s), "{s}");
        }
    }

    #[test]
    fn a_claim_is_unbound_until_its_phase_says_bound() {
        let pvc = |status: serde_json::Value| -> PersistentVolumeClaim {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "status": status}))
                .unwrap()
        };
        assert!(unbound(&pvc(serde_json::json!({}))));
        assert!(unbound(&pvc(serde_json::json!({"phase": "Pending"}))));
        assert!(!unbound(&pvc(serde_json::json!({"phase": "Bound"}))));
    }
}
