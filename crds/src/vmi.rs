//! The VirtualMachineInstance: one running guest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodDNSConfig, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{DomainSpec, Network, Volume};

/// The desired state of a VirtualMachineInstance: its virtual hardware, the volumes and
/// networks behind it, and where it may run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    shortname = "vmi",
    shortname = "vmis",
    category = "all",
    category = "kubevirt",
    doc = "VirtualMachineInstance is a running virtual machine: one guest in one launcher pod.",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.interfaces[0].ipAddress"),
    printcolumn(name = "NodeName", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(name = "Live-Migratable", type_ = "string", json_path = ".status.conditions[?(@.type=='LiveMigratable')].status", priority = 1),
    printcolumn(name = "Paused", type_ = "string", json_path = ".status.conditions[?(@.type=='Paused')].status", priority = 1),
    validation = crate::rules::name_fits_a_label(),
    validation = crate::rules::vmi_spec_unchanged(),
    validation = crate::rules::vmi_grace_period_only_lowered(),
    validation = crate::rules::probe_needs_the_pod_network("readinessProbe"),
    validation = crate::rules::probe_needs_the_pod_network("livenessProbe")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.domain.devices.disks) || self.domain.devices.disks.all(d, has(self.volumes) && self.volumes.exists(v, v.name == d.name))",
     "message": "every disk in domain.devices.disks needs a volume of the same name in volumes"},
    {"rule": "!has(self.domain.devices.filesystems) || self.domain.devices.filesystems.all(f, has(self.volumes) && self.volumes.exists(v, v.name == f.name))",
     "message": "every filesystem in domain.devices.filesystems needs a volume of the same name in volumes",
     "fieldPath": ".domain.devices.filesystems"},
    {"rule": "!has(self.domain.devices.filesystems) || !has(self.domain.devices.disks) || self.domain.devices.filesystems.all(f, !self.domain.devices.disks.exists(d, d.name == f.name))",
     "message": "a volume is either a disk or a filesystem: a name in domain.devices.filesystems is also in domain.devices.disks",
     "fieldPath": ".domain.devices.filesystems"},
    {"rule": "!has(self.domain.devices.filesystems) || !has(self.volumes) || self.volumes.all(v, !self.domain.devices.filesystems.exists(f, f.name == v.name) || has(v.configMap) || has(v.secret) || has(v.serviceAccount) || has(v.downwardAPI) || has(v.persistentVolumeClaim) || has(v.dataVolume))",
     "message": "virtiofs shares only configMap, secret, serviceAccount, downwardAPI, persistentVolumeClaim and dataVolume volumes (KubeVirt's): a volume in domain.devices.filesystems is of another kind",
     "fieldPath": ".domain.devices.filesystems"},
    {"rule": "!has(self.domain.devices.interfaces) || self.domain.devices.interfaces.all(i, has(self.networks) && self.networks.exists(n, n.name == i.name))",
     "message": "every interface in domain.devices.interfaces needs a network of the same name in networks"},
    {"rule": "!has(self.livenessProbe) || !has(self.startStrategy) || self.startStrategy != 'Paused'",
     "message": "either startStrategy Paused or a livenessProbe: pausing a VMI with a liveness probe is not supported",
     "fieldPath": ".livenessProbe"},
    {"rule": "!has(self.livenessProbe) || !has(self.livenessProbe.successThreshold) || self.livenessProbe.successThreshold <= 1",
     "message": "successThreshold must be 1 for a liveness probe",
     "fieldPath": ".livenessProbe.successThreshold"}
]))]
pub struct VirtualMachineInstanceSpec {
    /// The virtual hardware of the guest.
    pub domain: DomainSpec,
    /// The guest's architecture: `amd64`, the one Ferrovirt's nodes have (KubeVirt's
    /// default there). Others are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'amd64'",
        "message": crate::expand::ARCHITECTURE_REFUSED
    }]))]
    pub architecture: Option<String>,
    /// The storage behind the disks and filesystems. A volume without a disk or
    /// filesystem of the same name gets a virtio disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(v, self.exists_one(w, w.name == v.name))",
        "message": "volume names must be unique"
    }, {
        "rule": "self.filter(v, has(v.serviceAccount)).size() <= 1",
        "message": "must have max one serviceAccount volume set"
    }]))]
    pub volumes: Vec<Volume>,
    /// The networks the interfaces connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(n, self.exists_one(m, m.name == n.name))",
        "message": "network names must be unique"
    }]))]
    pub networks: Vec<Network>,
    /// How long the guest gets to shut down after a stop or delete before it is powered
    /// off. Defaults to 30 seconds; 0 powers it off at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Labels a node must have for the VMI to be scheduled on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Node and pod affinity for the VMI's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the VMI's pod tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// The guest's hostname. Defaults to the VMI's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub hostname: Option<String>,
    /// With `hostname`, the guest's fully qualified name is
    /// `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub subdomain: Option<String>,
    /// What happens to the VMI when its node is drained. Only `None`: the launcher pod is
    /// evicted like any pod and the guest stops. KubeVirt's `LiveMigrate` and
    /// `LiveMigrateIfPossible` need live migration and `External` needs KubeVirt's
    /// eviction webhook; Ferrovirt has neither, so they are refused with that reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'None'",
        "message": "only None is supported: LiveMigrate and LiveMigrateIfPossible need live migration and External needs an eviction webhook, which Ferrovirt does not implement"
    }]))]
    pub eviction_strategy: Option<EvictionStrategy>,
    /// `Paused` starts the guest with its vCPUs stopped: the VMI runs with the `Paused`
    /// condition until `virtctl unpause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<StartStrategy>,
    /// The PriorityClass of the VMI's pod (its scheduling priority and preemption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// The scheduler that places the VMI's pod; the default scheduler when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub scheduler_name: Option<String>,
    /// How the VMI's pod is spread across topology domains (the pod's
    /// `topologySpreadConstraints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// The DNS policy of the VMI's pod; with the pod network the guest gets the pod's
    /// name servers and search domains over DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<DnsPolicy>,
    /// DNS settings added to the pod's (name servers, searches, options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    /// When the guest is ready for traffic: kubelet runs this probe against the launcher
    /// pod's compute container, and the VMI's `Ready` condition follows that container's
    /// readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<crate::Probe>,
    /// Whether the guest is alive: when this probe fails, kubelet stops the launcher
    /// pod's compute container, the VMI ends, and its VM's runStrategy decides what
    /// follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<crate::Probe>,
}

/// How a VMI starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StartStrategy {
    /// With the vCPUs stopped, until the VMI is unpaused.
    Paused,
}

/// The pod's DNS policy (Kubernetes' `dnsPolicy` values).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DnsPolicy {
    ClusterFirstWithHostNet,
    ClusterFirst,
    Default,
    None,
}

impl DnsPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsPolicy::ClusterFirstWithHostNet => "ClusterFirstWithHostNet",
            DnsPolicy::ClusterFirst => "ClusterFirst",
            DnsPolicy::Default => "Default",
            DnsPolicy::None => "None",
        }
    }
}

// What happens to a VMI when its node is drained.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EvictionStrategy {
    None,
    /// KubeVirt's; refused by the schema's rule (no live migration).
    LiveMigrate,
    /// KubeVirt's; refused by the schema's rule (no live migration).
    LiveMigrateIfPossible,
    /// KubeVirt's; refused by the schema's rule (no eviction webhook).
    External,
}

/// The observed state of a VirtualMachineInstance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    /// Where the VMI is in its life: Pending, Scheduling, Scheduled, Running, Succeeded,
    /// Failed or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VmiPhase>,
    /// A short, machine-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Conditions: Ready, Paused, LiveMigratable, PodScheduled, Failure and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<VirtualMachineInstanceCondition>,
    /// The node the VMI runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The guest's network interfaces as the node sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VirtualMachineInstanceNetworkInterface>,
    /// The guest operating system, as its agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "guestOSInfo")]
    pub guest_os_info: Option<GuestOsInfo>,
    /// When the VMI entered each phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_transition_timestamps: Vec<PhaseTransitionTimestamp>,
    /// The VMI's pods: pod UID to node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_pods: Option<BTreeMap<String, String>>,
    /// How the guest's CPU is virtualized on its node: `KVM` or `Emulation` (software,
    /// TCG).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualization: Option<String>,
    /// The spec generation the node side acted on last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The volumes' state. Ferrovirt writes the backend-storage entry
    /// (`persistent-state-for-this-vm`: the claim that holds a persistent TPM's or EFI
    /// variable store's state), as KubeVirt's virt-controller does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_status: Vec<VolumeStatus>,
}

/// KubeVirt's backend storage: the label (and name prefix) of the PVC that keeps a VM's
/// persistent TPM and EFI state (`persistent-state-for: <vm name>`).
pub const BACKEND_STORAGE_LABEL: &str = "persistent-state-for";
/// The `status.volumeStatus` name of the backend-storage claim (KubeVirt's `VolumeName`).
pub const BACKEND_STORAGE_VOLUME: &str = "persistent-state-for-this-vm";

/// The state of one volume of a VMI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// The volume's name.
    pub name: String,
    /// The disk's target in the domain (empty for the backend storage, as in KubeVirt).
    #[serde(default)]
    pub target: String,
    /// The claim behind the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_info: Option<PersistentVolumeClaimInfo>,
}

/// A claim behind a volume, as `status.volumeStatus` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimInfo {
    /// The claim's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// The claim's access modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The claim's volume mode (Filesystem or Block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// The capacity of the volume bound to the claim (its `status.capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<BTreeMap<String, Quantity>>,
    /// What the claim requests (its `spec.resources.requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
}

impl PersistentVolumeClaimInfo {
    /// What `status.volumeStatus` shows of `pvc` behind a VMI's volume (KubeVirt's
    /// `processPVCInfo`): its name, access modes, volume mode, capacity and requests.
    pub fn of(pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> Self {
        let spec = pvc.spec.as_ref();
        PersistentVolumeClaimInfo {
            claim_name: pvc.metadata.name.clone(),
            access_modes: spec
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default(),
            volume_mode: spec.and_then(|s| s.volume_mode.clone()),
            capacity: pvc.status.as_ref().and_then(|s| s.capacity.clone()),
            requests: spec.and_then(|s| s.resources.as_ref()?.requests.clone()),
        }
    }
}

impl VirtualMachineInstanceStatus {
    /// The backend-storage claim this status names (KubeVirt's `CurrentPVCName`).
    pub fn backend_storage_claim(&self) -> Option<&str> {
        self.volume_status
            .iter()
            .find(|v| v.name == BACKEND_STORAGE_VOLUME)?
            .persistent_volume_claim_info
            .as_ref()?
            .claim_name
            .as_deref()
    }
}

// The phase of a VMI. Succeeded and Failed are final.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum VmiPhase {
    /// Accepted, no pod yet.
    Pending,
    /// The pod exists and waits to be scheduled.
    Scheduling,
    /// The pod is on a node and its launcher is ready.
    Scheduled,
    /// The guest runs.
    Running,
    /// The guest shut down on its own or was stopped.
    Succeeded,
    /// The guest or its pod failed.
    Failed,
    /// The VMI's state cannot be known (for example its node is gone).
    Unknown,
}

impl VirtualMachineInstanceSpec {
    /// `firmware.bootloader.efi.persistent: true` (KubeVirt's `HasPersistentEFI`).
    pub fn persistent_efi(&self) -> bool {
        self.domain
            .firmware
            .as_ref()
            .and_then(|f| f.bootloader.as_ref())
            .and_then(|b| b.efi.as_ref())
            .is_some_and(|e| e.persistent == Some(true))
    }

    /// Whether the VMI keeps state on a backend-storage PVC: a persistent TPM or EFI
    /// variable store (KubeVirt's `IsBackendStorageNeeded`).
    pub fn needs_backend_storage(&self) -> bool {
        crate::Tpm::persistent(self.domain.devices.tpm.as_ref()) || self.persistent_efi()
    }

    /// `domain.firmware.kernelBoot.container`: the image of a kernel boot, which the
    /// launcher pod runs as a container (`kernel-boot`) and the node reads it through.
    pub fn kernel_boot_container(&self) -> Option<&crate::KernelBootContainer> {
        self.domain
            .firmware
            .as_ref()?
            .kernel_boot
            .as_ref()?
            .container
            .as_ref()
    }
}

impl VmiPhase {
    /// Succeeded and Failed never change again.
    pub fn is_final(self) -> bool {
        matches!(self, VmiPhase::Succeeded | VmiPhase::Failed)
    }

    /// The phase as KubeVirt writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            VmiPhase::Pending => "Pending",
            VmiPhase::Scheduling => "Scheduling",
            VmiPhase::Scheduled => "Scheduled",
            VmiPhase::Running => "Running",
            VmiPhase::Succeeded => "Succeeded",
            VmiPhase::Failed => "Failed",
            VmiPhase::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for VmiPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition of a VMI: Ready, Paused, LiveMigratable, PodScheduled, Failure.
pub type VirtualMachineInstanceCondition = crate::Condition;

/// A network interface of a running guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceNetworkInterface {
    /// The name of the interface in the VMI spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The guest's primary IP address on this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// All of the guest's IP addresses on this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// The interface's MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The interface's name inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// Where this information came from: domain, guest-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_source: Option<String>,
}

/// The guest operating system.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestOsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// When a VMI entered a phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTransitionTimestamp {
    /// The phase entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VmiPhase>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub phase_transition_timestamp: Option<Time>,
}
