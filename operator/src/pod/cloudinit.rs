//! The Secrets of cloud-init volumes (`userDataSecretRef`, `networkDataSecretRef`), as
//! KubeVirt gives them to its launcher pod: each a secret volume mounted read-only in the
//! compute container ([`CloudInitSecret`]), where virt-handler reads the data through the
//! launcher's `/proc/<pid>/root` (docs/contracts.md). The node mounts the Secret with its
//! own rights, as for any pod: nothing else on the node reads Secrets, and the pod does
//! not start until the Secret exists (the node's FailedMount Events name it).

use crds::VirtualMachineInstance;
use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};

use ferrovirt_node_contract::paths::CloudInitSecret;

/// The secret volumes and the compute container's mounts of them.
pub fn render(vmi: &VirtualMachineInstance) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(ci) = &v.cloud_init_no_cloud else {
            continue;
        };
        for (which, secret) in [
            (CloudInitSecret::UserData, &ci.user_data_secret_ref),
            (CloudInitSecret::NetworkData, &ci.network_data_secret_ref),
        ] {
            let Some(secret) = secret else { continue };
            volumes.push(Volume {
                name: which.pod_volume(i),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: which.pod_volume(i),
                mount_path: which.dir_in_pod(i),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    (volumes, mounts)
}

/// The names of the Secrets a VMI's cloud-init volumes read, by pod volume.
pub fn secrets(vmi: &VirtualMachineInstance) -> Vec<(String, String)> {
    render(vmi)
        .0
        .into_iter()
        .filter_map(|v| Some((v.name, v.secret?.secret_name?)))
        .collect()
}
