//! persistentVolumeClaim and dataVolume volumes, as KubeVirt gives them to its launcher
//! pod: the claim as a pod volume, mounted in the compute container at node-contract's
//! [`claim_dir_in_pod`] (read-only when the VMI's volume says so). The node mounts it with
//! its own storage driver, whatever the volume behind the claim, and the scheduler places
//! the pod where the claim can be used: a claim of a `WaitForFirstConsumer` class is bound
//! then, to a volume the pod's node reaches. Only filesystem claims are mounted; the VMI
//! controller keeps the pod from being made while a claim is missing or in block mode
//! (`crate::claims`).

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume, VolumeMount};

use ferrovirt_node_contract::paths::{claim_dir_in_pod, claim_pod_volume};

/// The pod volumes and the compute container's mounts of the VMI's claims.
pub fn render(vmi: &VirtualMachineInstance) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(claim) = v.claim_name() else {
            continue;
        };
        let read_only = v
            .persistent_volume_claim
            .as_ref()
            .and_then(|p| p.read_only)
            .filter(|r| *r);
        volumes.push(Volume {
            name: claim_pod_volume(i),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_owned(),
                read_only,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: claim_pod_volume(i),
            mount_path: claim_dir_in_pod(i),
            read_only,
            ..Default::default()
        });
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_claim_is_a_pod_volume_mounted_by_its_index() {
        let vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"},
            "spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "boot", "containerDisk": {"image": "x"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}},
                {"name": "root", "dataVolume": {"name": "dv1"}}
            ]}
        }))
        .unwrap();
        let (volumes, mounts) = render(&vmi);
        let shown: Vec<_> = volumes
            .iter()
            .map(|v| {
                let c = v.persistent_volume_claim.as_ref().unwrap();
                (v.name.as_str(), c.claim_name.as_str(), c.read_only)
            })
            .collect();
        assert_eq!(
            shown,
            [("claim-1", "c1", Some(true)), ("claim-2", "dv1", None)]
        );
        let shown: Vec<_> = mounts
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "claim-1",
                    "/var/run/ferrovirt-private/vmi-disks/1",
                    Some(true)
                ),
                ("claim-2", "/var/run/ferrovirt-private/vmi-disks/2", None)
            ]
        );
    }
}
