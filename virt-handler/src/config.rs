//! The cluster configuration virt-handler reads, and the KVM-or-emulation decision.
//!
//! KubeVirt's `spec.configuration.developerConfiguration.useEmulation` lives here in the
//! ConfigMap `kubevirt-config` of the handler's namespace, key `useEmulation` (the older
//! KubeVirt spelling `debug.useEmulation` is accepted too). Without the ConfigMap or the
//! key, the `--use-emulation` flag decides (default false).
//!
//! The same ConfigMap carries KubeVirt's `feature-gates` (comma-separated, the ConfigMap
//! era's key; only `HostDisk` changes anything here) and Ferrovirt's
//! `ferrovirt.hostDiskPathPrefixes` ([`crate::volumes::hostdisk`]), and Ferrovirt's
//! `ferrovirt.networkBindings`: the network binding plugins registered, as KubeVirt's CR
//! registers them in `spec.configuration.network.binding` (comma-separated names; an
//! interface's `binding.name` must be one, and Ferrovirt implements `passt`).

use std::collections::{BTreeMap, BTreeSet};

use crate::kvm::KvmStatus;
use crate::volumes::hostdisk::{self, HostDiskPolicy};
use crate::{Error, Result};
use ferrovirt_node_contract::pod::{
    CPU_MANAGER_LABEL, CPU_MANAGER_LABEL_DEPRECATED, NODE_SCHEDULABLE_LABEL, REALTIME_LABEL,
};

/// KubeVirt's key for the enabled feature gates in `kubevirt-config`.
pub const FEATURE_GATES: &str = "feature-gates";

/// Ferrovirt's key for the registered network binding plugins in `kubevirt-config`.
pub const NETWORK_BINDINGS: &str = "ferrovirt.networkBindings";

/// What the handler reads from `kubevirt-config` when a VMI starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterConfig {
    pub use_emulation: bool,
    pub feature_gates: BTreeSet<String>,
    pub host_disks: HostDiskPolicy,
    /// The registered network binding plugins ([`NETWORK_BINDINGS`]).
    pub network_bindings: BTreeSet<String>,
}

/// A comma-separated list's items, trimmed, empty ones left out.
fn list(data: Option<&BTreeMap<String, String>>, key: &str) -> BTreeSet<String> {
    data.and_then(|d| d.get(key))
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl ClusterConfig {
    /// From the ConfigMap's data (`None`: no ConfigMap); `default_emulation` applies when
    /// it does not say.
    pub fn from_data(data: Option<&BTreeMap<String, String>>, default_emulation: bool) -> Self {
        let feature_gates = list(data, FEATURE_GATES);
        let host_disks = HostDiskPolicy::from_config(
            feature_gates.contains(hostdisk::FEATURE_GATE),
            data.and_then(|d| d.get(hostdisk::PREFIXES_KEY))
                .map(String::as_str),
        );
        ClusterConfig {
            use_emulation: use_emulation(data, default_emulation),
            feature_gates,
            host_disks,
            network_bindings: list(data, NETWORK_BINDINGS),
        }
    }
}

pub const CONFIG_MAP: &str = "kubevirt-config";
const KEYS: [&str; 2] = ["useEmulation", "debug.useEmulation"];

/// How a guest's CPU is virtualized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtualization {
    Kvm,
    /// Software emulation (QEMU's TCG).
    Emulation,
}

impl Virtualization {
    /// The value of VMI `status.virtualization`.
    pub fn status_value(self) -> &'static str {
        match self {
            Virtualization::Kvm => "KVM",
            Virtualization::Emulation => "Emulation",
        }
    }

    /// The libvirt domain type.
    pub fn domain_type(self) -> &'static str {
        match self {
            Virtualization::Kvm => "kvm",
            Virtualization::Emulation => "qemu",
        }
    }
}

/// `useEmulation` from the ConfigMap's data, or `default` when it does not say.
pub fn use_emulation(data: Option<&BTreeMap<String, String>>, default: bool) -> bool {
    data.and_then(|d| KEYS.iter().find_map(|k| d.get(*k)))
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(default)
}

/// KVM when it works; emulation only when allowed; otherwise the VMI fails.
pub fn decide(kvm: &KvmStatus, allow_emulation: bool) -> Result<Virtualization> {
    match kvm {
        KvmStatus::Usable => Ok(Virtualization::Kvm),
        KvmStatus::Unusable(_) if allow_emulation => Ok(Virtualization::Emulation),
        KvmStatus::Unusable(why) => Err(Error::KvmUnavailable(why.clone())),
    }
}

/// KubeVirt's feature gate for dedicated CPUs: without it no node is labelled
/// `kubevirt.io/cpumanager=true`.
pub const CPU_MANAGER_FEATURE_GATE: &str = "CPUManager";

/// Whether kubelet runs the static CPU manager policy, from its state file (`{"policyName":
/// "static", ...}`), as KubeVirt's handler reads it; false when the file is missing or
/// names another policy.
pub fn static_cpu_manager(state: Option<&std::path::Path>) -> bool {
    let Some(path) = state else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v["policyName"].as_str() == Some("static"))
}

/// Where the kernel says how long realtime threads may run each period (-1: unthrottled).
pub const RT_RUNTIME_SYSCTL: &str = "/proc/sys/kernel/sched_rt_runtime_us";

/// Whether realtime vCPUs can run here, as KubeVirt's handler decides it: the kernel does
/// not throttle realtime threads (`kernel.sched_rt_runtime_us` = -1). Elsewhere a thread in
/// a pod's cgroup gets SCHED_FIFO only if the cgroup has a realtime budget, which kubelet
/// never gives one under cgroup v1.
pub fn realtime_capable(sysctl: &std::path::Path) -> bool {
    std::fs::read_to_string(sysctl).is_ok_and(|v| v.trim() == "-1")
}

/// The node labels for a probe result and configuration; `cpu_manager`: dedicated CPUs
/// can be had here (the static CPU manager, with the gate on); `realtime`: realtime vCPUs
/// can ([`realtime_capable`]).
pub fn node_labels(
    kvm: &KvmStatus,
    allow_emulation: bool,
    cpu_manager: bool,
    realtime: bool,
) -> BTreeMap<String, String> {
    let virtualization = match decide(kvm, allow_emulation) {
        Ok(Virtualization::Kvm) => "kvm",
        Ok(Virtualization::Emulation) => "emulation",
        Err(_) => "none",
    };
    BTreeMap::from([
        (NODE_SCHEDULABLE_LABEL.to_owned(), "true".to_owned()),
        (CPU_MANAGER_LABEL.to_owned(), cpu_manager.to_string()),
        (
            CPU_MANAGER_LABEL_DEPRECATED.to_owned(),
            cpu_manager.to_string(),
        ),
        (REALTIME_LABEL.to_owned(), realtime.to_string()),
        ("ferrovirt.io/kvm".to_owned(), kvm.usable().to_string()),
        (
            "ferrovirt.io/virtualization".to_owned(),
            virtualization.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_manager_label_follows_kubelets_policy() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("cpu_manager_state");
        assert!(!static_cpu_manager(None));
        assert!(!static_cpu_manager(Some(&state)));
        std::fs::write(
            &state,
            r#"{"policyName":"none","defaultCpuSet":"","checksum":1}"#,
        )
        .unwrap();
        assert!(!static_cpu_manager(Some(&state)));
        std::fs::write(
            &state,
            r#"{"policyName":"static","defaultCpuSet":"0-1","checksum":2}"#,
        )
        .unwrap();
        assert!(static_cpu_manager(Some(&state)));
        let labels = node_labels(&KvmStatus::Usable, false, true, false);
        assert_eq!(
            (
                labels["kubevirt.io/cpumanager"].as_str(),
                labels["cpumanager"].as_str()
            ),
            ("true", "true")
        );
        assert_eq!(
            node_labels(&KvmStatus::Usable, false, false, false)["kubevirt.io/cpumanager"],
            "false"
        );
        assert_eq!(labels["kubevirt.io/realtime"], "false");
        // The realtime label follows kernel.sched_rt_runtime_us.
        let sysctl = dir.path().join("sched_rt_runtime_us");
        std::fs::write(&sysctl, "950000\n").unwrap();
        assert!(!realtime_capable(&sysctl));
        std::fs::write(&sysctl, "-1\n").unwrap();
        assert!(realtime_capable(&sysctl));
        assert!(!realtime_capable(&dir.path().join("missing")));
    }

    #[test]
    fn config_map_overrides_the_flag() {
        let on = BTreeMap::from([("useEmulation".to_owned(), "true".to_owned())]);
        let off = BTreeMap::from([("useEmulation".to_owned(), "false".to_owned())]);
        let old = BTreeMap::from([("debug.useEmulation".to_owned(), "TRUE".to_owned())]);
        assert!(use_emulation(Some(&on), false));
        assert!(!use_emulation(Some(&off), true));
        assert!(use_emulation(Some(&old), false));
        assert!(use_emulation(None, true));
        assert!(!use_emulation(Some(&BTreeMap::new()), false));
    }

    #[test]
    fn reads_feature_gates_and_host_disk_directories() {
        let data = BTreeMap::from([
            (
                "feature-gates".to_owned(),
                "LiveMigration, HostDisk".to_owned(),
            ),
            (
                "ferrovirt.hostDiskPathPrefixes".to_owned(),
                "/var/data,/srv/disks".to_owned(),
            ),
        ]);
        let c = ClusterConfig::from_data(Some(&data), true);
        assert!(c.use_emulation && c.host_disks.enabled);
        assert!(c.feature_gates.contains("LiveMigration"));
        assert_eq!(c.host_disks.prefixes.len(), 2);
        assert!(c.network_bindings.is_empty());
        let with_passt = BTreeMap::from([(
            "ferrovirt.networkBindings".to_owned(),
            " passt, ,other".to_owned(),
        )]);
        assert_eq!(
            ClusterConfig::from_data(Some(&with_passt), false).network_bindings,
            BTreeSet::from(["passt".to_owned(), "other".to_owned()])
        );
        let off = ClusterConfig::from_data(None, false);
        assert!(!off.host_disks.enabled && off.host_disks.prefixes.is_empty());
        // The gate is case-sensitive, as KubeVirt's.
        let lower = BTreeMap::from([("feature-gates".to_owned(), "hostdisk".to_owned())]);
        assert!(
            !ClusterConfig::from_data(Some(&lower), false)
                .host_disks
                .enabled
        );
    }

    #[test]
    fn emulation_only_when_allowed() {
        let broken = KvmStatus::Unusable("hangs".into());
        assert_eq!(
            decide(&KvmStatus::Usable, false).unwrap(),
            Virtualization::Kvm
        );
        assert_eq!(decide(&broken, true).unwrap(), Virtualization::Emulation);
        let err = decide(&broken, false).unwrap_err();
        assert_eq!(err.reason(), "KVMUnavailable");
        assert!(err.to_string().contains("useEmulation"), "{err}");
        assert_eq!(
            node_labels(&broken, false, false, false)["ferrovirt.io/virtualization"],
            "none"
        );
        assert_eq!(
            node_labels(&broken, true, false, false)["ferrovirt.io/virtualization"],
            "emulation"
        );
        assert_eq!(
            node_labels(&KvmStatus::Usable, false, false, false)["ferrovirt.io/kvm"],
            "true"
        );
    }
}
