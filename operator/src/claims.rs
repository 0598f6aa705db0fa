//! The claims of a VMI's persistentVolumeClaim and dataVolume volumes, before its launcher
//! pod is made (KubeVirt's virt-controller reads them from its claim cache when it renders
//! the pod):
//! - a claim that does not exist keeps the VMI Pending with condition Synchronized False,
//!   reason `FailedPvcNotFound` (KubeVirt's), naming the claim and the field; the pod is
//!   made once the claim is there (looked at again every 2 s, the DataVolumes' poll);
//! - a claim in `volumeMode: Block` becomes a device of the launcher pod
//!   ([`crate::pod::claims`]), the guest's disk; shared as a filesystem (virtiofs) it
//!   cannot be, which is refused the same way with reason `PvcVolumeModeUnsupported`;
//! - a claim that exists but is not bound yet does not hold the pod back: the scheduler
//!   binds a `WaitForFirstConsumer` claim when it places the pod, and keeps the pod (and
//!   so the VMI) unscheduled, saying why, while an `Immediate` claim waits for a volume.
//!
//! A dataVolume volume is gated by its DataVolume first ([`crate::datavolume`]); its claim
//! (the DataVolume's name) is then read here as a persistentVolumeClaim's is.

use std::collections::BTreeMap;

use crds::{
    BACKEND_STORAGE_VOLUME, PersistentVolumeClaimInfo, VirtualMachineInstance,
    VirtualMachineInstanceStatus, VmiPhase, VolumeStatus,
};
use ferrovirt_node_contract::paths::claim_is_block;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::Api;

use crate::backend_storage::{SYNCHRONIZED, not_synchronized};
use crate::pod::BlockClaims;
use crate::{Context, Result};

/// KubeVirt's reason for a claim that does not exist.
pub(crate) const NOT_FOUND: &str = "FailedPvcNotFound";
/// A block-mode claim where only a filesystem claim can serve (a virtiofs share).
pub(crate) const BLOCK_MODE: &str = "PvcVolumeModeUnsupported";

/// What the claims gate found: the status to write while a claim keeps the pod back or
/// once none does any more, and whether the pod may be made (`None`: nothing to say); and
/// the block-mode claims the pod renders as devices.
#[derive(Debug, Default)]
pub(crate) struct Gated {
    pub write: Option<(VirtualMachineInstanceStatus, bool)>,
    pub block: BlockClaims,
}

/// Why the claim of `spec.volumes[index]` (its source at `field`) keeps the pod from being
/// made, if it does (reason, message). `filesystem`: the volume is shared as a filesystem.
/// Pure.
pub(crate) fn refusal(
    field: &str,
    claim: &str,
    pvc: Option<&PersistentVolumeClaim>,
    filesystem: bool,
) -> Option<(&'static str, String)> {
    let Some(pvc) = pvc else {
        return Some((NOT_FOUND, format!("didn't find PVC {claim} ({field})")));
    };
    (filesystem && is_block(pvc)).then(|| {
        (
            BLOCK_MODE,
            format!(
                "PVC {claim} ({field}) has volumeMode Block, which cannot be shared as a \
                 filesystem (spec.domain.devices.filesystems): use a Filesystem claim, or \
                 give the guest the device as a disk"
            ),
        )
    })
}

/// The claim is in block mode.
pub(crate) fn is_block(pvc: &PersistentVolumeClaim) -> bool {
    claim_is_block(pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()))
}

/// The VMI's claims before its pod: see [`Gated`]. Nothing is read past Pending or for a
/// VMI without claim volumes.
pub(crate) async fn gate_vmi(vmi: &VirtualMachineInstance, ctx: &Context) -> Result<Gated> {
    let old = vmi.status.clone().unwrap_or_default();
    if !matches!(old.phase, None | Some(VmiPhase::Pending)) {
        return Ok(Gated::default());
    }
    let claims: Vec<(usize, String, &str, bool)> = vmi
        .spec
        .volumes
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let field = match (&v.persistent_volume_claim, &v.data_volume) {
                (Some(_), _) => format!("spec.volumes[{i}].persistentVolumeClaim.claimName"),
                (None, Some(_)) => format!("spec.volumes[{i}].dataVolume.name"),
                (None, None) => return None,
            };
            let shared = vmi
                .spec
                .domain
                .devices
                .filesystems
                .iter()
                .any(|f| f.name == v.name);
            Some((i, field, v.claim_name()?, shared))
        })
        .collect();
    if claims.is_empty() {
        return Ok(Gated::default());
    }
    let pvcs: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &vmi.namespace().unwrap_or_default());
    let mut status = old.clone();
    let mut block = BlockClaims::new();
    for (i, field, claim, shared) in claims {
        ctx.metrics.request("get", "persistentvolumeclaims");
        let pvc = pvcs.get_opt(claim).await?;
        if let Some((reason, message)) = refusal(&field, claim, pvc.as_ref(), shared) {
            not_synchronized(&mut status, reason, message);
            return Ok(Gated {
                write: Some((status, false)),
                block,
            });
        }
        if pvc.as_ref().is_some_and(is_block) {
            block.insert(i);
        }
    }
    status.conditions.retain(|c| {
        !(c.type_ == SYNCHRONIZED && matches!(c.reason.as_deref(), Some(NOT_FOUND | BLOCK_MODE)))
    });
    Ok(Gated {
        write: (status != old).then_some((status, true)),
        block,
    })
}

/// `status.volumeStatus` with an entry for each of the VMI's volumes (KubeVirt's
/// `updateVolumeStatus`), sorted by name, those of claims with their claim
/// (`persistentVolumeClaimInfo`, from `pvcs` by claim name); entries already there keep
/// what they hold (the backend storage's, a target), an entry of a volume no longer in the
/// spec goes. Pure.
pub(crate) fn show_volumes(
    vmi: &VirtualMachineInstance,
    status: &mut VirtualMachineInstanceStatus,
    pvcs: &BTreeMap<String, PersistentVolumeClaim>,
) {
    let mut old: BTreeMap<String, VolumeStatus> = std::mem::take(&mut status.volume_status)
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    let mut shown: Vec<VolumeStatus> = old.remove(BACKEND_STORAGE_VOLUME).into_iter().collect();
    for volume in &vmi.spec.volumes {
        let mut entry = old.remove(&volume.name).unwrap_or_else(|| VolumeStatus {
            name: volume.name.clone(),
            ..Default::default()
        });
        if let Some(pvc) = volume.claim_name().and_then(|c| pvcs.get(c)) {
            entry.persistent_volume_claim_info = Some(PersistentVolumeClaimInfo::of(pvc));
        }
        shown.push(entry);
    }
    shown.sort_by(|a, b| a.name.cmp(&b.name));
    status.volume_status = shown;
}

/// The claims of `volumes` (a VMI's, or a VM's template's) in `namespace`, by name, as read
/// now (one GET each; a claim that does not exist or cannot be read is left out, the
/// latter logged: as KubeVirt, it does not decide a status).
pub(crate) async fn read(
    namespace: &str,
    volumes: &[crds::Volume],
    ctx: &Context,
) -> BTreeMap<String, PersistentVolumeClaim> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = BTreeMap::new();
    for claim in volumes.iter().filter_map(crds::Volume::claim_name) {
        ctx.metrics.request("get", "persistentvolumeclaims");
        match api.get_opt(claim).await {
            Ok(Some(pvc)) => {
                out.insert(claim.to_string(), pvc);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(claim, error = %e, "reading a claim failed"),
        }
    }
    out
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
    fn a_missing_claim_or_a_shared_block_claim_is_refused_by_name_and_field() {
        let field = "spec.volumes[2].persistentVolumeClaim.claimName";
        let (reason, message) = refusal(field, "c", None, false).unwrap();
        assert_eq!(reason, "FailedPvcNotFound");
        assert_eq!(
            message,
            "didn't find PVC c (spec.volumes[2].persistentVolumeClaim.claimName)"
        );
        // A block claim is the guest's disk; shared as a filesystem it cannot be.
        assert_eq!(refusal(field, "c", Some(&pvc(Some("Block"))), false), None);
        let (reason, message) = refusal(field, "c", Some(&pvc(Some("Block"))), true).unwrap();
        assert_eq!(reason, "PvcVolumeModeUnsupported");
        assert!(
            message.starts_with(
                "PVC c (spec.volumes[2].persistentVolumeClaim.claimName) has volumeMode Block, \
                 which cannot be shared as a filesystem"
            ),
            "{message}"
        );
        assert_eq!(
            refusal(field, "c", Some(&pvc(Some("Filesystem"))), true),
            None
        );
        // The API server's default mode is Filesystem.
        assert_eq!(refusal(field, "c", Some(&pvc(None)), true), None);
        assert!(is_block(&pvc(Some("Block"))));
        assert!(!is_block(&pvc(None)));
    }

    #[test]
    fn each_volume_shows_in_volume_status_its_claims_with_what_they_hold() {
        let vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v"},
            "spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "root", "containerDisk": {"image": "x"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "dv", "dataVolume": {"name": "gone"}}
            ]}
        }))
        .unwrap();
        let mut status: VirtualMachineInstanceStatus = serde_json::from_value(serde_json::json!({
            "volumeStatus": [
                {"name": "persistent-state-for-this-vm", "target": "",
                 "persistentVolumeClaimInfo": {"claimName": "state"}},
                {"name": "root", "target": "vda"},
                {"name": "removed", "target": "vdz"}
            ]
        }))
        .unwrap();
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "32Mi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "64Mi"}}
        }))
        .unwrap();
        let pvcs = BTreeMap::from([("c".to_string(), claim)]);
        show_volumes(&vmi, &mut status, &pvcs);
        assert_eq!(
            serde_json::to_value(&status.volume_status).unwrap(),
            serde_json::json!([
                {"name": "data", "target": "", "persistentVolumeClaimInfo": {
                    "claimName": "c", "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Filesystem", "capacity": {"storage": "64Mi"},
                    "requests": {"storage": "32Mi"}}},
                {"name": "dv", "target": ""},
                {"name": "persistent-state-for-this-vm", "target": "",
                 "persistentVolumeClaimInfo": {"claimName": "state"}},
                {"name": "root", "target": "vda"}
            ])
        );
    }
}
