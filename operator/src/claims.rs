//! The claims of a VMI's persistentVolumeClaim volumes, before its launcher pod is made
//! (KubeVirt's virt-controller reads them from its claim cache when it renders the pod):
//! - a claim that does not exist keeps the VMI Pending with condition Synchronized False,
//!   reason `FailedPvcNotFound` (KubeVirt's), naming the claim and the field; the pod is
//!   made once the claim is there (looked at again every 2 s, the DataVolumes' poll);
//! - a claim in `volumeMode: Block` is refused the same way, reason
//!   `PvcVolumeModeUnsupported`: Ferrovirt mounts filesystem claims only (the disk is the
//!   claim's `disk.img`), and a pod mounting a block claim would never start;
//! - a claim that exists but is not bound yet does not hold the pod back: the scheduler
//!   binds a `WaitForFirstConsumer` claim when it places the pod, and keeps the pod (and
//!   so the VMI) unscheduled, saying why, while an `Immediate` claim waits for a volume.
//!
//! dataVolume volumes are gated by their DataVolume ([`crate::datavolume`]), whose claim
//! CDI makes in filesystem mode for Ferrovirt's DataVolumes.

use crds::{VirtualMachineInstance, VirtualMachineInstanceStatus, VmiPhase};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::Api;

use crate::backend_storage::{SYNCHRONIZED, not_synchronized};
use crate::{Context, Result};

/// KubeVirt's reason for a claim that does not exist.
pub(crate) const NOT_FOUND: &str = "FailedPvcNotFound";
/// A block-mode claim, which Ferrovirt does not mount.
pub(crate) const BLOCK_MODE: &str = "PvcVolumeModeUnsupported";

/// Why the claim of `spec.volumes[index]` keeps the pod from being made, if it does
/// (reason, message). Pure.
pub(crate) fn refusal(
    index: usize,
    claim: &str,
    pvc: Option<&PersistentVolumeClaim>,
) -> Option<(&'static str, String)> {
    let field = format!("spec.volumes[{index}].persistentVolumeClaim.claimName");
    let Some(pvc) = pvc else {
        return Some((NOT_FOUND, format!("didn't find PVC {claim} ({field})")));
    };
    let mode = pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    (mode == Some("Block")).then(|| {
        (
            BLOCK_MODE,
            format!(
                "PVC {claim} ({field}) has volumeMode Block, which Ferrovirt does not support: \
                 use a Filesystem claim holding the disk as disk.img"
            ),
        )
    })
}

/// The VMI's claims before its pod: the status to write while one keeps the pod back
/// (Pending, Synchronized False saying why), or once none does any more (the condition
/// removed), and whether the pod may be made. `None`: no claim volume, past Pending, or
/// nothing to say.
pub(crate) async fn gate_vmi(
    vmi: &VirtualMachineInstance,
    ctx: &Context,
) -> Result<Option<(VirtualMachineInstanceStatus, bool)>> {
    let old = vmi.status.clone().unwrap_or_default();
    if !matches!(old.phase, None | Some(VmiPhase::Pending)) {
        return Ok(None);
    }
    let claims: Vec<(usize, &str)> = vmi
        .spec
        .volumes
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, v.persistent_volume_claim.as_ref()?.claim_name.as_str())))
        .collect();
    if claims.is_empty() {
        return Ok(None);
    }
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &vmi.namespace().unwrap_or_default());
    let mut status = old.clone();
    for (i, claim) in claims {
        ctx.metrics.request("get", "persistentvolumeclaims");
        let pvc = pvcs.get_opt(claim).await?;
        if let Some((reason, message)) = refusal(i, claim, pvc.as_ref()) {
            not_synchronized(&mut status, reason, message);
            return Ok(Some((status, false)));
        }
    }
    status.conditions.retain(|c| {
        !(c.type_ == SYNCHRONIZED && matches!(c.reason.as_deref(), Some(NOT_FOUND | BLOCK_MODE)))
    });
    Ok((status != old).then_some((status, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(mode: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"volumeMode": mode}
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_or_block_mode_claim_is_refused_by_name_and_field() {
        let (reason, message) = refusal(2, "c", None).unwrap();
        assert_eq!(reason, "FailedPvcNotFound");
        assert_eq!(
            message,
            "didn't find PVC c (spec.volumes[2].persistentVolumeClaim.claimName)"
        );
        let (reason, message) = refusal(0, "c", Some(&pvc(Some("Block")))).unwrap();
        assert_eq!(reason, "PvcVolumeModeUnsupported");
        assert!(
            message.starts_with(
                "PVC c (spec.volumes[0].persistentVolumeClaim.claimName) has volumeMode Block"
            ),
            "{message}"
        );
        assert_eq!(refusal(0, "c", Some(&pvc(Some("Filesystem")))), None);
        // The API server's default mode is Filesystem.
        assert_eq!(refusal(0, "c", Some(&pvc(None))), None);
    }
}
