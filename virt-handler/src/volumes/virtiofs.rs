//! Volumes shared with the guest as filesystems (`spec.domain.devices.filesystems`,
//! virtiofs), as KubeVirt shares them: a configMap, secret, serviceAccount or downwardAPI
//! volume is the launcher pod's own directory of its files (node-contract's
//! [`ConfigVolume::dir_in_pod`]), so kubelet's updates reach the guest; a
//! persistentVolumeClaim or dataVolume volume is its claim's directory (behind KubeVirt's
//! [`STORAGE_FEATURE_GATE`]). The launcher runs a virtiofsd per share on the socket the
//! domain's `<filesystem>` names (`VmiDir::virtiofs_socket`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::VirtualMachineInstanceSpec;
use ferrovirt_node_contract::paths::VmiDir;
use ferrovirt_node_contract::protocol::VirtiofsShare;

use super::config;
use crate::{Error, Result};

/// KubeVirt's feature gate for virtiofs on persistentVolumeClaim and dataVolume volumes
/// (alpha, off by default), in `feature-gates` of the `kubevirt-config` ConfigMap.
pub const STORAGE_FEATURE_GATE: &str = "EnableVirtioFsStorageVolumes";

/// Whether the volume `name` is shared as a filesystem rather than attached as a disk.
pub fn is_filesystem(spec: &VirtualMachineInstanceSpec, name: &str) -> bool {
    spec.domain
        .devices
        .filesystems
        .iter()
        .any(|f| f.name == name)
}

/// The virtiofsd processes the launcher starts for the VMI's filesystems. `vmi_dir` is the
/// per-VMI directory as the launcher sees it; `claims` maps the names of claim volumes to
/// their directory; `storage_allowed`: [`STORAGE_FEATURE_GATE`] is on.
pub fn shares(
    spec: &VirtualMachineInstanceSpec,
    vmi_dir: &Path,
    claims: &BTreeMap<String, super::ClaimDir>,
    storage_allowed: bool,
) -> Result<Vec<VirtiofsShare>> {
    let dir = VmiDir::new(vmi_dir);
    let mut out = Vec::new();
    for (i, fs) in spec.domain.devices.filesystems.iter().enumerate() {
        let field = format!("spec.domain.devices.filesystems[{i}]");
        let Some((index, volume)) = spec
            .volumes
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == fs.name)
        else {
            return Err(Error::unsupported(
                format!("{field}.name"),
                format!("'{}' not found: no volume of that name", fs.name),
            ));
        };
        if spec.domain.devices.disks.iter().any(|d| d.name == fs.name) {
            return Err(Error::unsupported(
                format!("{field}.name"),
                format!("volume '{}' is both a disk and a filesystem", fs.name),
            ));
        }
        let source = if let Some(source) = volume.config_source() {
            PathBuf::from(config::kind(source).dir_in_pod(index))
        } else if let Some(claim) = volume.claim_name() {
            if !storage_allowed {
                // KubeVirt's words.
                return Err(Error::unsupported(
                    field,
                    format!(
                        "virtiofs is not allowed: virtiofs feature gate is not enabled for PVC \
                         (add {STORAGE_FEATURE_GATE} to feature-gates in the kubevirt-config ConfigMap)"
                    ),
                ));
            }
            let dir = claims.get(&fs.name).ok_or_else(|| {
                Error::volume(&fs.name, format!("claim {claim:?} has no directory here"))
            })?;
            if dir.block {
                // virt-controller refuses it before the pod (PvcVolumeModeUnsupported).
                return Err(Error::unsupported(
                    field,
                    format!(
                        "claim {claim:?} has volumeMode Block: a block device cannot be shared \
                         as a filesystem"
                    ),
                ));
            }
            dir.launcher.clone()
        } else {
            return Err(Error::unsupported(
                field,
                format!(
                    "volume '{}' cannot be shared: virtiofs shares configMap, secret, \
                     serviceAccount, downwardAPI, persistentVolumeClaim and dataVolume volumes",
                    fs.name
                ),
            ));
        };
        out.push(VirtiofsShare {
            volume: fs.name.clone(),
            socket: dir.virtiofs_socket(&fs.name).display().to_string(),
            source: source.display().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn config_volumes_share_the_pods_directory_and_claims_theirs_behind_the_gate() {
        let s = spec(serde_json::json!({
            "domain": {"devices": {"filesystems": [
                {"name": "cm", "virtiofs": {}}, {"name": "sa", "virtiofs": {}},
                {"name": "pv", "virtiofs": {}}]}},
            "volumes": [
                {"name": "root", "containerDisk": {"image": "x"}},
                {"name": "cm", "configMap": {"name": "app"}},
                {"name": "sa", "serviceAccount": {"serviceAccountName": "robot"}},
                {"name": "pv", "persistentVolumeClaim": {"claimName": "c"}}
            ]
        }));
        let claim = super::super::ClaimDir {
            launcher: PathBuf::from("/var/run/ferrovirt-private/vmi-disks/3"),
            in_pod: true,
            image_size: None,
            block: false,
        };
        let pvcs = BTreeMap::from([("pv".to_owned(), claim)]);
        let got = shares(&s, Path::new("/vmi"), &pvcs, true).unwrap();
        let pairs: Vec<_> = got
            .iter()
            .map(|s| (s.volume.as_str(), s.socket.as_str(), s.source.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "cm",
                    "/vmi/virtiofs-cm.sock",
                    "/var/run/ferrovirt-private/config-map/1"
                ),
                (
                    "sa",
                    "/vmi/virtiofs-sa.sock",
                    "/var/run/secrets/kubernetes.io/serviceaccount"
                ),
                (
                    "pv",
                    "/vmi/virtiofs-pv.sock",
                    "/var/run/ferrovirt-private/vmi-disks/3"
                ),
            ]
        );
        assert!(is_filesystem(&s, "cm") && !is_filesystem(&s, "root"));
        let err = shares(&s, Path::new("/vmi"), &pvcs, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.domain.devices.filesystems[2]")
                && err.contains("virtiofs feature gate is not enabled for PVC"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_missing_volume_a_disk_and_an_unshareable_kind_by_field() {
        for (json, wanted) in [
            (
                serde_json::json!({"domain": {"devices": {"filesystems": [{"name": "gone", "virtiofs": {}}]}}}),
                "spec.domain.devices.filesystems[0].name: 'gone' not found",
            ),
            (
                serde_json::json!({"domain": {"devices": {"disks": [{"name": "cm"}], "filesystems": [{"name": "cm", "virtiofs": {}}]}},
                    "volumes": [{"name": "cm", "configMap": {"name": "a"}}]}),
                "both a disk and a filesystem",
            ),
            (
                serde_json::json!({"domain": {"devices": {"filesystems": [{"name": "root", "virtiofs": {}}]}},
                    "volumes": [{"name": "root", "containerDisk": {"image": "x"}}]}),
                "spec.domain.devices.filesystems[0]: volume 'root' cannot be shared",
            ),
        ] {
            let err = shares(&spec(json), Path::new("/vmi"), &BTreeMap::new(), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{err}");
        }
    }
}
