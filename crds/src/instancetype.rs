//! `instancetype.kubevirt.io/v1beta1`: instancetypes (the size of a VM: vCPUs, memory) and
//! preferences (defaults for its devices, firmware and machine), namespaced and cluster
//! wide, as KubeVirt serves them (`staging/src/kubevirt.io/api/instancetype/v1beta1`).
//!
//! Only the fields Ferrovirt applies are in the schema; a manifest that sets another one
//! (for example `spec.features.preferredHyperv`) is refused by the
//! API server with the field named. How a VM's instancetype and preference are applied to
//! its instance is [`crate::expand`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    DiskBus, Efi, FeatureState, Hugepages, InputBus, InputType, InterfaceMasquerade,
    InterfaceModel, IoThreadsPolicy, Numa, Realtime, Rng, Tpm, VideoType,
};

/// The API group of instancetypes and preferences.
pub const GROUP: &str = "instancetype.kubevirt.io";
/// The version Ferrovirt serves.
pub const VERSION: &str = "v1beta1";

/// A namespaced instancetype: the vCPUs and memory of the VMs that reference it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "instancetype.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineInstancetype",
    namespaced,
    shortname = "vminstancetype",
    shortname = "vminstancetypes",
    shortname = "vmf",
    shortname = "vmfs",
    doc = "VirtualMachineInstancetype sets the vCPUs and memory of the VirtualMachines that reference it in spec.instancetype."
)]
pub struct VirtualMachineInstancetypeSpec {
    #[serde(flatten)]
    pub spec: InstancetypeSpec,
}

/// A cluster-wide instancetype.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "instancetype.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineClusterInstancetype",
    shortname = "vmclusterinstancetype",
    shortname = "vmclusterinstancetypes",
    shortname = "vmcf",
    shortname = "vmcfs",
    doc = "VirtualMachineClusterInstancetype is a cluster-wide VirtualMachineInstancetype."
)]
pub struct VirtualMachineClusterInstancetypeSpec {
    #[serde(flatten)]
    pub spec: InstancetypeSpec,
}

/// A namespaced preference: defaults for the VMs that reference it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "instancetype.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachinePreference",
    namespaced,
    shortname = "vmpref",
    shortname = "vmprefs",
    shortname = "vmp",
    shortname = "vmps",
    doc = "VirtualMachinePreference holds defaults (disk bus, NIC model, firmware, machine type, CPU topology) for the VirtualMachines that reference it in spec.preference; what a VM sets itself wins."
)]
pub struct VirtualMachinePreferenceSpec {
    #[serde(flatten)]
    pub spec: PreferenceSpec,
}

/// A cluster-wide preference.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "instancetype.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineClusterPreference",
    shortname = "vmcp",
    shortname = "vmcps",
    doc = "VirtualMachineClusterPreference is a cluster-wide VirtualMachinePreference."
)]
pub struct VirtualMachineClusterPreferenceSpec {
    #[serde(flatten)]
    pub spec: PreferenceSpec,
}

/// What an instancetype sets. A VM that references it must not set these fields itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancetypeSpec {
    /// The guest's vCPUs.
    pub cpu: CpuInstancetype,
    /// The guest's memory.
    pub memory: MemoryInstancetype,
    /// Labels a node must have for the VM's instance to be scheduled on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Annotations put on the VM's instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The guest's IOThreads policy, as a VMI's `spec.domain.ioThreadsPolicy`: `shared` or
    /// `auto` (`supplementalPool` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self != 'supplementalPool'",
        "message": crate::SUPPLEMENTAL_POOL_REFUSED
    }]))]
    pub io_threads_policy: Option<IoThreadsPolicy>,
    /// The scheduler of the VM's launcher pod, as a VMI's `spec.schedulerName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub scheduler_name: Option<String>,
}

/// The vCPUs of an instancetype.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuInstancetype {
    /// How many vCPUs the guest sees; the preference's `cpu.preferredCPUTopology` spreads
    /// them over sockets (the default), cores or threads.
    #[schemars(range(min = 1, max = 512))]
    pub guest: u32,
    /// The CPU model, as in `spec.domain.cpu.model` of a VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Dedicated CPUs (KubeVirt's cx1, d1, n1 and rt1 series), as a VMI's
    /// `cpu.dedicatedCpuPlacement`.
    #[serde(
        default,
        rename = "dedicatedCPUPlacement",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedicated_cpu_placement: Option<bool>,
    /// A dedicated CPU for QEMU's emulator thread, as a VMI's
    /// `cpu.isolateEmulatorThread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate_emulator_thread: Option<bool>,
    /// The guest's NUMA topology, as a VMI's `cpu.numa` (KubeVirt's cx1 and rt1 series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Numa>,
    /// Realtime tuning, as a VMI's `cpu.realtime` (KubeVirt's rt1 series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<Realtime>,
    /// The CPU hotplug headroom, as a VMI's `cpu.maxSockets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub max_sockets: Option<u32>,
}

/// The memory of an instancetype.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.hugepages) || !has(self.overcommitPercent) || self.overcommitPercent == 0",
    "message": "overcommitPercent cannot be used with hugepages: hugepages are requested whole"
}]))]
pub struct MemoryInstancetype {
    /// The amount of memory the guest sees (for example `2Gi`).
    #[schemars(schema_with = "crate::schema::positive_quantity")]
    pub guest: Quantity,
    /// Hugepages backing the guest's memory, as a VMI's `spec.domain.memory.hugepages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
    /// The percentage of the guest's memory the launcher pod does not request from its
    /// node (0 to 100): the instance's `resources.requests.memory` is the guest memory less
    /// this share. Overcommitted memory can run out; use with care.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub overcommit_percent: Option<u32>,
}

/// What a preference sets when the VM does not set it itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceSpec {
    /// How the instancetype's vCPUs are laid out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuPreferences>,
    /// Device defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DevicePreferences>,
    /// Hypervisor feature defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturePreferences>,
    /// Firmware defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<FirmwarePreferences>,
    /// Machine defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachinePreferences>,
    /// The guest's subdomain, when the VM sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub preferred_subdomain: Option<String>,
    /// The grace period of the VM's instance, when the VM sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preferred_termination_grace_period_seconds: Option<i64>,
    /// Annotations put on the VM's instance when it does not carry them already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Sockets per core for the `spread` topology (default 2). Deprecated: use
    /// `cpu.spreadOptions.ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub prefer_spread_socket_to_core_ratio: Option<u32>,
    /// What a VM using the preference must provide: virt-api refuses one that provides
    /// less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<PreferenceRequirements>,
    /// The guest's architecture, when the VM names none. Ferrovirt runs only `amd64`
    /// guests: a VM that ends up with another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_architecture: Option<String>,
}

/// The least a VM using a preference must provide, through its instancetype or its own
/// template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceRequirements {
    /// The fewest vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuRequirement>,
    /// The least guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRequirement>,
    /// The architecture the VM must use (`amd64` unless it names another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

/// The fewest vCPUs a preference needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuRequirement {
    /// vCPUs: the instancetype's `cpu.guest`, or the template's CPUs laid out as the
    /// preference's topology says (sockets by default).
    #[schemars(range(min = 1, max = 512))]
    pub guest: u32,
}

/// The least guest memory a preference needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRequirement {
    /// Guest memory: the instancetype's `memory.guest`, or the template's.
    #[schemars(schema_with = "crate::schema::positive_quantity")]
    pub guest: Quantity,
}

/// CPU topology preferences.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuPreferences {
    /// Where the instancetype's vCPUs go: `sockets` (the default), `cores`, `threads`,
    /// `spread` (over sockets and cores, or as `spreadOptions` says) or `any` (sockets).
    #[serde(
        default,
        rename = "preferredCPUTopology",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_cpu_topology: Option<PreferredCpuTopology>,
    /// How `spread` lays out the vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_options: Option<SpreadOptions>,
}

// Where an instancetype's vCPUs go (KubeVirt's names; the prefer* ones are deprecated).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PreferredCpuTopology {
    Sockets,
    Cores,
    Threads,
    Spread,
    Any,
    PreferSockets,
    PreferCores,
    PreferThreads,
    PreferSpread,
    PreferAny,
}

/// Options of the `spread` topology.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadOptions {
    /// `SocketsCores` (the default): `ratio` cores per socket; `CoresThreads`: `ratio`
    /// threads per core; `SocketsCoresThreads`: 2 threads per core, `ratio` cores per
    /// socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub across: Option<SpreadAcross>,
    /// The ratio (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub ratio: Option<u32>,
}

// What the spread topology spreads across.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SpreadAcross {
    SocketsCores,
    CoresThreads,
    SocketsCoresThreads,
}

/// Device preferences.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevicePreferences {
    /// The bus of disks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_disk_bus: Option<DiskBus>,
    /// The bus of CD-ROMs that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_cdrom_bus: Option<DiskBus>,
    /// The model of network interfaces that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_interface_model: Option<InterfaceModel>,
    /// The masquerade binding for pod-network interfaces that name no binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_interface_masquerade: Option<InterfaceMasquerade>,
    /// `autoattachSerialConsole`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_serial_console: Option<bool>,
    /// `autoattachGraphicsDevice`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_graphics_device: Option<bool>,
    /// A virtio RNG, when the VM has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_rng: Option<Rng>,
    /// A TPM, when the VM has none.
    #[serde(
        default,
        rename = "preferredTPM",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_tpm: Option<Tpm>,
    /// `autoattachMemBalloon`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_mem_balloon: Option<bool>,
    /// `blockMultiQueue`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_block_multi_queue: Option<bool>,
    /// `dedicatedIOThread` of virtio disks that do not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_disk_dedicated_io_thread: Option<bool>,
    /// The bus of input devices that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_input_bus: Option<InputBus>,
    /// `autoattachInputDevice`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_autoattach_input_device: Option<bool>,
    /// The kind of input devices that name none: `tablet`, the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_input_type: Option<InputType>,
    /// The video device's type, when the VM names no video device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_video_type: Option<VideoType>,
    /// `networkInterfaceMultiqueue`, when the VM does not set it.
    #[serde(
        default,
        rename = "preferredNetworkInterfaceMultiQueue",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_network_interface_multi_queue: Option<bool>,
    /// `useVirtioTransitional`, when the VM does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_virtio_transitional: Option<bool>,
}

/// Hypervisor feature preferences. `preferredHyperv` and `preferredKvm` are refused with
/// the reason, as the VMI's `hyperv` and `kvm`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.preferredHyperv)",
    "fieldPath": ".preferredHyperv",
    "message": crate::HYPERV_REFUSED
}, {
    "rule": "!has(self.preferredKvm)",
    "fieldPath": ".preferredKvm",
    "message": crate::KVM_FEATURES_REFUSED
}]))]
pub struct FeaturePreferences {
    /// ACPI, when the VM does not set `features.acpi.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_acpi: Option<FeatureState>,
    /// System Management Mode, when the VM does not set `features.smm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_smm: Option<FeatureState>,
    /// KubeVirt's Hyper-V enlightenments; refused (they need KVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub preferred_hyperv: Option<serde_json::Value>,
    /// KubeVirt's KVM features (`hidden`); refused (they need KVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub preferred_kvm: Option<serde_json::Value>,
}

/// Firmware preferences, used when the VM names no bootloader.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwarePreferences {
    /// Boot through SeaBIOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_bios: Option<bool>,
    /// Show SeaBIOS's output on the serial console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_bios_serial: Option<bool>,
    /// Boot through UEFI with these options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_efi: Option<Efi>,
    /// Deprecated: boot through UEFI (use `preferredEfi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_efi: Option<bool>,
    /// Deprecated: Secure Boot with UEFI (use `preferredEfi.secureBoot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_use_secure_boot: Option<bool>,
}

/// Machine preferences.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachinePreferences {
    /// The machine type, when the VM names none (`q35` or `pc-q35-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_machine_type: Option<String>,
}

/// How a VM names its instancetype (`spec.instancetype`): by `name`, or by
/// `inferFromVolume`, which virt-api's mutating webhook turns into a name and kind when the
/// VM is created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.name) != has(self.inferFromVolume)",
     "message": "set either name or inferFromVolume"},
    {"rule": "!has(self.inferFromVolume) || !has(self.kind)",
     "message": "Kind already set, should be cleared before setting inferFromVolume"}
]))]
pub struct InstancetypeMatcher {
    /// The instancetype's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// `VirtualMachineClusterInstancetype` (the default) or `VirtualMachineInstancetype`
    /// (in the VM's namespace); the plural and lower-case spellings are accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.lowerAscii() in ['virtualmachineinstancetype', 'virtualmachineinstancetypes', 'virtualmachineclusterinstancetype', 'virtualmachineclusterinstancetypes']",
        "message": "must be VirtualMachineInstancetype or VirtualMachineClusterInstancetype"
    }]))]
    pub kind: Option<String>,
    /// The ControllerRevision holding the version of the instancetype to use. Set by
    /// the user to pin a version; virt-controller records the one it took in
    /// `status.instancetypeRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// The volume (a `persistentVolumeClaim`) whose labels
    /// `instancetype.kubevirt.io/default-instancetype` and `...-kind` name the
    /// instancetype. Resolved when the VM is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub infer_from_volume: Option<String>,
    /// `Reject` (the default): a volume that names none refuses the VM. `Ignore`: the VM
    /// is created without an instancetype then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_from_volume_failure_policy: Option<InferFromVolumeFailurePolicy>,
}

// What an inferFromVolume that finds nothing does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InferFromVolumeFailurePolicy {
    Reject,
    Ignore,
}

/// How a VM names its preference (`spec.preference`): by `name`, or by `inferFromVolume`
/// (the labels `instancetype.kubevirt.io/default-preference` and `...-kind`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.name) != has(self.inferFromVolume)",
     "message": "set either name or inferFromVolume"},
    {"rule": "!has(self.inferFromVolume) || !has(self.kind)",
     "message": "Kind already set, should be cleared before setting inferFromVolume"}
]))]
pub struct PreferenceMatcher {
    /// The preference's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// `VirtualMachineClusterPreference` (the default) or `VirtualMachinePreference` (in
    /// the VM's namespace); the plural and lower-case spellings are accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.lowerAscii() in ['virtualmachinepreference', 'virtualmachinepreferences', 'virtualmachineclusterpreference', 'virtualmachineclusterpreferences']",
        "message": "must be VirtualMachinePreference or VirtualMachineClusterPreference"
    }]))]
    pub kind: Option<String>,
    /// The ControllerRevision holding the version of the preference to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// The volume (a `persistentVolumeClaim`) whose labels name the preference. Resolved
    /// when the VM is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub infer_from_volume: Option<String>,
    /// `Reject` (the default) or `Ignore`, as for instancetypes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_from_volume_failure_policy: Option<InferFromVolumeFailurePolicy>,
}

/// Which instancetype or preference version a VM uses (`status.instancetypeRef`,
/// `status.preferenceRef`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancetypeStatusRef {
    /// The instancetype's or preference's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The ControllerRevision holding the version in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_revision_ref: Option<ControllerRevisionRef>,
}

/// A ControllerRevision in the VM's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerRevisionRef {
    /// The ControllerRevision's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// KubeVirt's labels of a volume that name its default instancetype and preference.
pub const DEFAULT_INSTANCETYPE_LABEL: &str = "instancetype.kubevirt.io/default-instancetype";
pub const DEFAULT_INSTANCETYPE_KIND_LABEL: &str =
    "instancetype.kubevirt.io/default-instancetype-kind";
pub const DEFAULT_PREFERENCE_LABEL: &str = "instancetype.kubevirt.io/default-preference";
pub const DEFAULT_PREFERENCE_KIND_LABEL: &str = "instancetype.kubevirt.io/default-preference-kind";

/// Whether a matcher's kind means the cluster-wide resource (no kind: yes).
pub fn is_cluster_kind(kind: Option<&str>) -> bool {
    kind.is_none_or(|k| k.to_ascii_lowercase().contains("cluster"))
}
