//! KubeVirt's downward metrics on this node (node-contract's `downward_metrics`): the
//! `DownwardMetrics` feature gate, read from kubevirt-config like `HostDisk`'s, and what
//! the launcher is asked to keep fed once the domain runs. The disk itself is a volume
//! (volumes/), the channel a device of the domain (domain/).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crds::VirtualMachineInstanceSpec;
use ferrovirt_node_contract::downward_metrics::{CHANNEL_SOCKET, FEATURE_GATE};

use crate::{Error, Result};

/// Why the gate refuses a field (KubeVirt's webhook's words, and where to turn it on).
const GATE_OFF: &str =
    "DownwardMetrics feature gate is not enabled (kubevirt-config's feature-gates)";

/// Refuses downward metrics, naming the field, unless the `DownwardMetrics` feature gate
/// is among `gates`, as KubeVirt's webhook does.
pub fn check_gate(spec: &VirtualMachineInstanceSpec, gates: &BTreeSet<String>) -> Result<()> {
    if gates.contains(FEATURE_GATE) {
        return Ok(());
    }
    if let Some(i) = spec
        .volumes
        .iter()
        .position(|v| v.downward_metrics.is_some())
    {
        return Err(Error::unsupported(
            format!("spec.volumes[{i}].downwardMetrics"),
            format!("downwardMetrics disks are not allowed: {GATE_OFF}"),
        ));
    }
    if spec.domain.devices.downward_metrics.is_some() {
        return Err(Error::unsupported(
            "spec.domain.devices.downwardMetrics",
            format!("downwardMetrics virtio serial is not allowed: {GATE_OFF}"),
        ));
    }
    Ok(())
}

/// The channel's socket under the per-VMI directory `vmi_dir`, when the VMI has the device.
pub fn channel_socket(spec: &VirtualMachineInstanceSpec, vmi_dir: &Path) -> Option<PathBuf> {
    spec.domain
        .devices
        .downward_metrics
        .as_ref()
        .map(|_| vmi_dir.join(CHANNEL_SOCKET))
}

/// What the launcher keeps fed (launcher paths): the disk and the channel; `None` when the
/// VMI has neither.
pub fn wanted(
    spec: &VirtualMachineInstanceSpec,
    vmi_dir: &Path,
) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
    let disk = crate::volumes::downward_metrics_disk(spec, vmi_dir);
    let channel = channel_socket(spec, vmi_dir);
    (disk.is_some() || channel.is_some()).then_some((disk, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_gate_names_the_field() {
        let both = spec(serde_json::json!({
            "domain": {"devices": {"downwardMetrics": {}}},
            "volumes": [{"name": "root", "containerDisk": {"image": "x"}},
                        {"name": "metrics", "downwardMetrics": {}}]
        }));
        let off = BTreeSet::from(["HostDisk".to_owned()]);
        let e = check_gate(&both, &off).unwrap_err().to_string();
        assert!(
            e.contains("spec.volumes[1].downwardMetrics") && e.contains(FEATURE_GATE),
            "{e}"
        );
        let device = spec(serde_json::json!({"domain": {"devices": {"downwardMetrics": {}}}}));
        let e = check_gate(&device, &off).unwrap_err().to_string();
        assert!(
            e.contains("spec.domain.devices.downwardMetrics")
                && e.contains("DownwardMetrics feature gate is not enabled"),
            "{e}"
        );
        let on = BTreeSet::from([FEATURE_GATE.to_owned()]);
        check_gate(&both, &on).unwrap();
        let dir = Path::new("/v");
        assert_eq!(
            wanted(&both, dir),
            Some((
                Some(PathBuf::from("/v/volumes/metrics.vhostmd")),
                Some(PathBuf::from("/v/downwardmetrics.sock"))
            ))
        );
        assert_eq!(wanted(&spec(serde_json::json!({"domain": {}})), dir), None);
    }
}
