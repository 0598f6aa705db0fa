//! persistentVolumeClaim and dataVolume volumes, as KubeVirt gives them to its launcher
//! pod: the claim as a pod volume, which the compute container has
//! - mounted at node-contract's [`claim_dir_in_pod`] for a filesystem claim (read-only when
//!   the VMI's volume says so): the guest's disk is the claim's `disk.img`;
//! - as a device (`volumeDevices`) at node-contract's [`claim_device_in_pod`] for a claim in
//!   `volumeMode: Block`: the guest's disk is the device.
//!
//! The node mounts or maps it with its own storage driver, whatever the volume behind the
//! claim, and the scheduler places the pod where the claim can be used: a claim of a
//! `WaitForFirstConsumer` class is bound then, to a volume the pod's node reaches. Which
//! claims are in block mode the VMI controller reads before it makes the pod
//! (`crate::claims`), which also keeps the pod back while a claim is missing.

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, Volume, VolumeDevice, VolumeMount,
};

use ferrovirt_node_contract::paths::{claim_device_in_pod, claim_dir_in_pod, claim_pod_volume};

/// The positions in `spec.volumes` of the claim volumes whose claim is in block mode.
pub type BlockClaims = std::collections::BTreeSet<usize>;

/// The claims of a VMI as its launcher pod has them.
#[derive(Debug, Default)]
pub struct Rendered {
    pub volumes: Vec<Volume>,
    /// The compute container's mounts (filesystem claims).
    pub mounts: Vec<VolumeMount>,
    /// The compute container's devices (block claims).
    pub devices: Vec<VolumeDevice>,
}

/// The pod volumes, and the compute container's mounts and devices, of the VMI's claims;
/// `block` holds the positions of the volumes whose claim is in block mode.
pub fn render(vmi: &VirtualMachineInstance, block: &BlockClaims) -> Rendered {
    let mut out = Rendered::default();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(claim) = v.claim_name() else {
            continue;
        };
        let read_only = v
            .persistent_volume_claim
            .as_ref()
            .and_then(|p| p.read_only)
            .filter(|r| *r);
        out.volumes.push(Volume {
            name: claim_pod_volume(i),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_owned(),
                read_only,
            }),
            ..Default::default()
        });
        if block.contains(&i) {
            // A device has no read-only flag of its own: the pod volume's read_only makes
            // the node map it read-only, and the guest's disk is read-only as well.
            out.devices.push(VolumeDevice {
                name: claim_pod_volume(i),
                device_path: claim_device_in_pod(i),
            });
        } else {
            out.mounts.push(VolumeMount {
                name: claim_pod_volume(i),
                mount_path: claim_dir_in_pod(i),
                read_only,
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi() -> VirtualMachineInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"},
            "spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "boot", "containerDisk": {"image": "x"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}},
                {"name": "root", "dataVolume": {"name": "dv1"}}
            ]}
        }))
        .unwrap()
    }

    /// The pod volumes of [`vmi`]'s two claims, whatever their mode.
    fn assert_claim_volumes(volumes: &[Volume]) {
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
    }

    #[test]
    fn each_claim_is_a_pod_volume_mounted_by_its_index() {
        let Rendered {
            volumes,
            mounts,
            devices,
        } = render(&vmi(), &BlockClaims::new());
        assert_claim_volumes(&volumes);
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
        assert_eq!(devices, []);
    }

    #[test]
    fn a_block_claim_is_a_device_of_the_compute_container_not_a_mount() {
        // The dataVolume's claim in block mode; the read-only persistentVolumeClaim too.
        let Rendered {
            volumes,
            mounts,
            devices,
        } = render(&vmi(), &BlockClaims::from([1, 2]));
        assert_claim_volumes(&volumes);
        assert_eq!(mounts, []);
        let shown: Vec<_> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.device_path.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("claim-1", "/dev/ferrovirt-vmi-disks/1"),
                ("claim-2", "/dev/ferrovirt-vmi-disks/2")
            ]
        );
        // One of each: only the block claim is a device.
        let r = render(&vmi(), &BlockClaims::from([2]));
        assert_eq!(
            (r.mounts.len(), r.mounts[0].name.as_str(), r.devices.len()),
            (1, "claim-1", 1)
        );
        assert_eq!(r.devices[0].device_path, "/dev/ferrovirt-vmi-disks/2");
    }
}
