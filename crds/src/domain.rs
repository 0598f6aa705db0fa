//! `spec.domain`: the virtual hardware of a VirtualMachineInstance.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why `ioThreadsPolicy: supplementalPool` is refused (a VMI's, an instancetype's).
pub const SUPPLEMENTAL_POOL_REFUSED: &str = "supplementalPool maps each disk's queues over a pool of IOThreads (QEMU's iothread-vq-mapping), which needs QEMU 9 and libvirt 10; Ferrovirt's nodes run QEMU 7.2 and libvirt 9.0: use shared or auto";

/// The virtual hardware of the guest: CPU, memory, firmware, machine and devices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    /// Resources requested for and limiting the VMI's pod (cpu, memory). When
    /// `memory.guest` is not set, the memory request is the guest's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The CPU topology and model of the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// The memory the guest sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The emulated machine type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// Firmware: BIOS or EFI bootloader, SMBIOS serial and UUID, or a direct kernel boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Hypervisor features exposed to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// The devices attached to the guest: disks, network interfaces, consoles, RNG.
    #[serde(default)]
    pub devices: Devices,
    /// What a reboot of the guest does: `Reboot` (the default) reboots it in place;
    /// `Terminate` ends the VMI, so that its VirtualMachine's controller can start a new
    /// one with the current configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_policy: Option<RebootPolicy>,
    /// The guest's real-time clock and timers. Unset: UTC with the hypervisor's timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<crate::Clock>,
    /// How virtio disks share IOThreads (QEMU threads that do their I/O): `shared` (one
    /// thread for all, plus one per disk with `dedicatedIOThread`) or `auto` (a pool of up
    /// to two per requested CPU, disks assigned round-robin). Unset: no IOThreads unless
    /// a disk asks for a dedicated one (then as `shared`). `supplementalPool` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self != 'supplementalPool'",
        "message": SUPPLEMENTAL_POOL_REFUSED
    }]))]
    pub io_threads_policy: Option<IoThreadsPolicy>,
    /// The IOThreads of `ioThreadsPolicy: supplementalPool`, which is refused, so a
    /// `supplementalPoolThreadCount` is refused too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<DiskIoThreads>,
}

impl Devices {
    /// The input device `autoattachInputDevice` adds (KubeVirt's `default-0`), if it does:
    /// it is on and the guest has no input device.
    pub fn autoattached_input(&self) -> Option<Input> {
        (self.autoattach_input_device == Some(true) && self.inputs.is_empty()).then(|| Input {
            name: "default-0".into(),
            type_: InputType::Tablet,
            bus: None,
        })
    }
}

/// A section of a VMI's `domain.resources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceSection {
    Requests,
    Limits,
}

impl ResourceSection {
    /// Its field under `resources`.
    pub fn field(self) -> &'static str {
        match self {
            ResourceSection::Requests => "requests",
            ResourceSection::Limits => "limits",
        }
    }
}

impl DomainSpec {
    /// The `cpu` of the first of `order`'s sections that sets one: the section, the
    /// quantity, and its whole CPUs rounded up (None: not a CPU amount). None when neither
    /// section sets one. The one reading of a VMI's CPU amount, for the launcher pod's
    /// dedicated CPUs and the node side's topology and IOThreads.
    pub fn resource_cpus(
        &self,
        order: [ResourceSection; 2],
    ) -> Option<(ResourceSection, &Quantity, Option<u64>)> {
        let res = self.resources.as_ref()?;
        order.into_iter().find_map(|section| {
            let list = match section {
                ResourceSection::Requests => res.requests.as_ref(),
                ResourceSection::Limits => res.limits.as_ref(),
            }?;
            let q = list.get("cpu")?;
            Some((
                section,
                q,
                crate::quantity::millis(q).map(|m| m.div_ceil(1000)),
            ))
        })
    }

    /// The guest's vCPUs as its CPU topology gives them: sockets × cores × threads, each
    /// defaulting to 1 (virt-api's webhook sets the topology of every VMI).
    pub fn vcpus(&self) -> u32 {
        self.cpu.as_ref().map_or(1, |c| {
            c.sockets.unwrap_or(1).max(1)
                * c.cores.unwrap_or(1).max(1)
                * c.threads.unwrap_or(1).max(1)
        })
    }
}

/// The options of the supplementalPool IOThreads policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.supplementalPoolThreadCount)",
    "message": "supplementalPoolThreadCount sizes the IOThreads of ioThreadsPolicy supplementalPool, which needs QEMU 9 and libvirt 10; Ferrovirt's nodes run QEMU 7.2 and libvirt 9.0: use ioThreadsPolicy shared or auto"
}]))]
pub struct DiskIoThreads {
    /// How many IOThreads the supplementalPool policy allocates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_pool_thread_count: Option<u32>,
}

/// KubeVirt's IOThreads policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IoThreadsPolicy {
    Shared,
    Auto,
    SupplementalPool,
}

// What a reboot of the guest does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RebootPolicy {
    Reboot,
    Terminate,
}

/// Compute resources of the VMI's pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// The minimum resources the VMI needs (for example `memory: 64Mi`, `cpu: 500m`).
    /// Scheduling uses these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// The most resources the VMI may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

/// The guest's CPU topology and model. The guest sees sockets × cores × threads vCPUs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// Cores per socket. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub cores: Option<u32>,
    /// Sockets. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub sockets: Option<u32>,
    /// The most sockets the guest can have: KubeVirt's CPU hotplug headroom. The guest's
    /// machine has maxSockets × cores × threads vCPUs, of which sockets × cores × threads
    /// are online (`/sys/devices/system/cpu/present` shows them all, `online` the ones in
    /// use). At least `sockets`. Unset: no headroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub max_sockets: Option<u32>,
    /// Threads per core. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub threads: Option<u32>,
    /// The CPU model: `host-passthrough`, `host-model`, or a named libvirt model such as
    /// `Skylake-Client`. Under software emulation only named models and the default apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// CPU features (libvirt's names, e.g. `pcid`, `sse4.2`, `pni`) required or disabled on
    /// top of the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(f, self.exists_one(g, g.name == f.name))",
        "message": "CPU feature names must be unique"
    }]))]
    pub features: Vec<CpuFeature>,
    /// Each vCPU on a CPU of its own: the launcher pod is Guaranteed (whole CPUs, its
    /// requests its limits), so kubelet's static CPU manager gives it CPUs no other pod
    /// runs on, and each vCPU is pinned to one of them. The pod goes only to a node
    /// labelled `kubevirt.io/cpumanager=true` (virt-handler's label where kubelet runs
    /// the static policy, with KubeVirt's `CPUManager` feature gate). false or unset: the
    /// vCPUs share the node's CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_cpu_placement: Option<bool>,
    /// With `dedicatedCpuPlacement`: one more dedicated CPU, for QEMU's emulator thread
    /// (its I/O and timers) alone, away from the vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate_emulator_thread: Option<bool>,
    /// The guest's NUMA topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Numa>,
    /// Tuning for realtime workloads: the vCPUs of `mask` (all by default) run with the
    /// node's SCHED_FIFO policy at priority 1, and the guest gets no PMU. Needs
    /// `dedicatedCpuPlacement` and `numa.guestMappingPassthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<Realtime>,
}

/// The guest's NUMA topology (KubeVirt's `NUMA`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Numa {
    /// The guest's NUMA cells follow the host NUMA nodes of the launcher pod's dedicated
    /// CPUs: one cell per host node, with the vCPUs pinned there and its share of the
    /// guest's memory, in hugepages bound to that node. Needs `dedicatedCpuPlacement` and
    /// `memory.hugepages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mapping_passthrough: Option<NumaGuestMappingPassthrough>,
}

/// KubeVirt's NUMA passthrough strategy; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NumaGuestMappingPassthrough {}

/// Realtime tuning (KubeVirt's `Realtime`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Realtime {
    /// The realtime vCPUs, in libvirt's cpuset syntax (`0-3,^1`, `0,2`); empty or unset:
    /// all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^[0-9,^ -]*$"))]
    pub mask: Option<String>,
}

impl Realtime {
    /// The realtime vCPUs of a guest with `vcpus` of them: the mask's (libvirt's cpuset
    /// syntax: `a`, `a-b`, `^a` to exclude, comma separated), all without one. The error
    /// says what in the mask is wrong (a vCPU the guest does not have, an empty set).
    pub fn vcpus(&self, vcpus: u32) -> Result<Vec<u32>, String> {
        let mask = self.mask.as_deref().unwrap_or("").trim();
        if mask.is_empty() {
            return Ok((0..vcpus).collect());
        }
        let mut on = std::collections::BTreeSet::new();
        let mut off = std::collections::BTreeSet::new();
        for part in mask.split(',').map(str::trim) {
            let (set, range) = match part.strip_prefix('^') {
                Some(r) => (&mut off, r),
                None => (&mut on, part),
            };
            let num = |t: &str| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{part:?} is not a vCPU, a range a-b or ^vCPU"))
            };
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(range)?, num(range)?),
            };
            if b < a {
                return Err(format!("{part:?} is a range that ends before it starts"));
            }
            if b >= vcpus {
                return Err(format!(
                    "{part:?} names vCPU {b}, but the guest has vCPUs 0 to {}",
                    vcpus.saturating_sub(1)
                ));
            }
            set.extend(a..=b);
        }
        let chosen: Vec<u32> = on.difference(&off).copied().collect();
        if chosen.is_empty() {
            return Err(format!("{mask:?} leaves no vCPU"));
        }
        Ok(chosen)
    }
}

impl Cpu {
    /// Whether the guest's NUMA cells pass the host's through (`numa.guestMappingPassthrough`).
    pub fn numa_passthrough(&self) -> bool {
        self.numa
            .as_ref()
            .is_some_and(|n| n.guest_mapping_passthrough.is_some())
    }
}

/// A CPU feature and what to do with it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuFeature {
    /// libvirt's name of the feature.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9_.-]*$"))]
    pub name: String,
    /// `require` (the default): the guest gets it, and the VMI fails where the host cannot
    /// give it; `force`: the guest gets it regardless; `optional`: if the host can;
    /// `disable`: the guest does not get it; `forbid`: the VMI fails where the host has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<CpuFeaturePolicy>,
}

/// libvirt's CPU feature policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CpuFeaturePolicy {
    Force,
    Require,
    Optional,
    Disable,
    Forbid,
}

/// The guest's memory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// The amount of memory the guest sees (for example `128Mi`). Defaults to the memory
    /// request in `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_positive_quantity")]
    pub guest: Option<Quantity>,
    /// Back the guest's memory with hugepages of this size, which the node must offer
    /// (its `hugepages-<size>` resource): the launcher pod requests the guest's memory in
    /// them. The guest's memory must be a multiple of the page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
}

/// Hugepages backing the guest's memory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hugepages {
    /// The page size: `2Mi` or `1Gi`, the sizes of x86_64.
    pub page_size: HugepageSize,
}

/// A hugepage size of x86_64.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HugepageSize {
    #[default]
    #[serde(rename = "2Mi")]
    Size2Mi,
    #[serde(rename = "1Gi")]
    Size1Gi,
}

impl HugepageSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            HugepageSize::Size2Mi => 2 << 20,
            HugepageSize::Size1Gi => 1 << 30,
        }
    }

    /// The quantity as written (`2Mi`, `1Gi`), also the suffix of Kubernetes' resource
    /// name `hugepages-<size>`.
    pub fn as_str(self) -> &'static str {
        match self {
            HugepageSize::Size2Mi => "2Mi",
            HugepageSize::Size1Gi => "1Gi",
        }
    }
}

/// The emulated machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// The QEMU machine type, for example `q35` (the default) or `pc-q35-7.2`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
}

/// The guest's firmware.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// The UUID the guest sees in SMBIOS, such as `5d307ca9-b3ef-428c-8861-06e72d69f223`.
    /// Defaults to one derived from the VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub uuid: Option<String>,
    /// The serial number the guest sees in SMBIOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Which bootloader starts the guest: BIOS (the default) or EFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// Boot a kernel and initrd taken from a container image directly, without a
    /// bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
}

/// The bootloader. At most one of `bios` and `efi` may be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.bios) && has(self.efi))",
    "message": "set at most one of bios and efi"
}]))]
pub struct Bootloader {
    /// Boot through SeaBIOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    /// Boot through UEFI (OVMF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
}

/// SeaBIOS options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bios {
    /// Show the BIOS output on the serial console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_serial: Option<bool>,
}

/// UEFI options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Efi {
    /// Enforce Secure Boot. KubeVirt's default is true; it needs SMM in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Keep the EFI variables (NVRAM) across the VM's restarts: as KubeVirt, they live on
    /// the VM's backend-storage PVC (`persistent-state-for-<vm>-…`, made by
    /// virt-controller in `vmStateStorageClass`), else in the VMI's own directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

/// A kernel and initrd booted directly.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelBoot {
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    /// The container image that holds the kernel and initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<KernelBootContainer>,
}

/// Where the kernel and initrd of a kernel boot are found. At least one of `kernelPath`
/// and `initrdPath` must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.kernelPath) || has(self.initrdPath)",
    "message": "set kernelPath, initrdPath or both"
}]))]
pub struct KernelBootContainer {
    /// The image that holds the kernel and initrd.
    pub image: String,
    /// The absolute path of the kernel inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    /// The absolute path of the initrd inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// When to pull the image: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
}

// When a container image is pulled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Why `features.hyperv` is refused (a VMI's, a preference's `preferredHyperv`).
pub const HYPERV_REFUSED: &str = "Hyper-V enlightenments are not supported: QEMU offers them only to guests run by KVM, and Ferrovirt's nodes run guests under TCG software emulation (KVM does not work on them), where they do not exist";
/// Why `features.kvm` is refused (a VMI's, a preference's `preferredKvm`).
pub const KVM_FEATURES_REFUSED: &str = "features.kvm (hiding KVM from the guest) is not supported: it applies only to guests run by KVM, and Ferrovirt's nodes run guests under TCG software emulation (KVM does not work on them)";

/// Hypervisor features. `hyperv` and `kvm` are refused with the reason.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.hyperv)",
    "fieldPath": ".hyperv",
    "message": HYPERV_REFUSED
}, {
    "rule": "!has(self.kvm)",
    "fieldPath": ".kvm",
    "message": KVM_FEATURES_REFUSED
}]))]
pub struct Features {
    /// ACPI, which lets the guest power off cleanly when asked. Enabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi: Option<FeatureState>,
    /// System Management Mode, which EFI Secure Boot needs (on with Secure Boot even when
    /// unset; disabling it there is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smm: Option<FeatureState>,
    /// KubeVirt's Hyper-V enlightenments; refused (they need KVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub hyperv: Option<serde_json::Value>,
    /// KubeVirt's KVM features (`hidden`); refused (they need KVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub kvm: Option<serde_json::Value>,
}

/// Whether a feature is on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureState {
    /// On when true or unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A volume shared with the guest as a filesystem (KubeVirt's `filesystems`), over
/// virtiofs: the guest mounts it by the volume's name, `mount -t virtiofs <name> <dir>`.
/// configMap, secret, serviceAccount and downwardAPI volumes share the pod's files
/// (updates included); persistentVolumeClaim and dataVolume volumes their claim's
/// directory, behind KubeVirt's `EnableVirtioFsStorageVolumes` feature gate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Filesystem {
    /// The volume shared; also the tag the guest mounts.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Share it over virtiofs (the one kind of filesystem KubeVirt has).
    pub virtiofs: FilesystemVirtiofs,
}

/// The guest's video device.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VideoDevice {
    /// `vga` (QEMU's standard VGA), `virtio` (virtio-gpu) or `bochs` (a display without
    /// VGA's legacy parts).
    #[serde(rename = "type")]
    pub type_: VideoType,
}

/// A video device model.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VideoType {
    #[default]
    Vga,
    Virtio,
    Bochs,
}

impl VideoType {
    /// libvirt's name of the model.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoType::Vga => "vga",
            VideoType::Virtio => "virtio",
            VideoType::Bochs => "bochs",
        }
    }
}

/// virtiofs; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct FilesystemVirtiofs {}

/// The guest's devices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.video) || !has(self.autoattachGraphicsDevice) || self.autoattachGraphicsDevice",
    "fieldPath": ".video",
    "message": "Video configuration is not allowed when autoattachGraphicsDevice is set to false"
}]))]
pub struct Devices {
    /// The disks, each backed by the volume of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(d, self.exists_one(e, e.name == d.name))",
        "message": "disk names must be unique"
    }]))]
    pub disks: Vec<Disk>,
    /// Volumes shared with the guest as filesystems (virtiofs), each named by its volume;
    /// a volume is either a disk or a filesystem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(f, self.exists_one(g, g.name == f.name))",
        "message": "filesystem names must be unique"
    }]))]
    pub filesystems: Vec<Filesystem>,
    /// The network interfaces, each connected to the network of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(i, self.exists_one(j, j.name == i.name))",
        "message": "interface names must be unique"
    }]))]
    pub interfaces: Vec<Interface>,
    /// Attach a serial console (ttyS0). Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_serial_console: Option<bool>,
    /// Attach a graphics device and a VNC server. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_graphics_device: Option<bool>,
    /// The graphics device's model (default `vga`); needs the graphics device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoDevice>,
    /// Attach a virtio random number generator fed by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<Rng>,
    /// Attach a virtio memory balloon (with memory statistics every 10 s). Defaults to
    /// true, as in KubeVirt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_mem_balloon: Option<bool>,
    /// A watchdog device and what it does when the guest stops feeding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<Watchdog>,
    /// Input devices: tablets (an absolute pointer, so a VNC cursor follows the guest's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub inputs: Vec<Input>,
    /// Attach a tablet (`default-0`, on USB unless a preference names the bus) when the
    /// guest has no input device. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoattach_input_device: Option<bool>,
    /// An emulated TPM 2.0 (swtpm), on unless `enabled` is false. Its state lives as long
    /// as the VMI, or with `persistent: true` on the VM's backend-storage PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
    /// Give each virtio disk as many queues as the guest has vCPUs (virtio-blk
    /// multi-queue). Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_multi_queue: Option<bool>,
    /// Give each virtio NIC as many queue pairs as the guest has vCPUs (virtio-net
    /// multi-queue, on a multi-queue tap). Needs a tap: the bridge and masquerade
    /// bindings on a pod network; passt and user-mode networking have one queue.
    #[serde(
        default,
        rename = "networkInterfaceMultiqueue",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interface_multiqueue: Option<bool>,
    /// Make every virtio device transitional (`virtio-transitional`: legacy and modern
    /// virtio on a conventional PCI slot) for guests whose drivers predate virtio 1.0,
    /// as KubeVirt does. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_virtio_transitional: Option<bool>,
    /// Attach a virtio VSOCK device with a CID of its own. Refused when true: VSOCK needs
    /// the node kernel's vhost_vsock module (`/dev/vhost-vsock`), which Ferrovirt's nodes
    /// lack. Defaults to false.
    #[serde(
        default,
        rename = "autoattachVSOCK",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self",
        "message": "VSOCK needs the vhost_vsock kernel module on the node (/dev/vhost-vsock), which the kernel of Ferrovirt's nodes does not have; false or unset attaches none"
    }]))]
    pub autoattach_vsock: Option<bool>,
    /// GPUs passed through from the node. Refused unless empty: Ferrovirt has no device
    /// passthrough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::refused_list")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "size(self) == 0",
        "message": "GPU passthrough is not supported: Ferrovirt has no device passthrough (no device plugins for GPUs or vGPUs, no VFIO devices in the domain)"
    }]))]
    pub gpus: Vec<serde_json::Value>,
    /// Host devices (PCI or mediated) passed through from the node. Refused unless empty:
    /// Ferrovirt has no device passthrough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::refused_list")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "size(self) == 0",
        "message": "host device passthrough is not supported: Ferrovirt has no device passthrough (no device plugins for PCI or mediated devices, no VFIO devices in the domain)"
    }]))]
    pub host_devices: Vec<serde_json::Value>,
    /// KubeVirt's downward metrics over a virtio-serial port named `org.github.vhostmd.1`:
    /// the guest writes `GET /metrics/XML` and a blank line, and reads the host and VM
    /// metrics in vhostmd's XML. Needs the `DownwardMetrics` feature gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<DownwardMetrics>,
}

/// The downward metrics channel; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DownwardMetrics {}

/// A virtual TPM 2.0.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tpm {
    /// false leaves the guest without a TPM (defaults to true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Keep the TPM's state across the VM's restarts: as KubeVirt, it lives on the VM's
    /// backend-storage PVC (and the TPM is a CRB one, KubeVirt's model for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

impl Tpm {
    /// Whether the guest gets the TPM (KubeVirt's `tpm.HasDevice`).
    pub fn present(tpm: Option<&Tpm>) -> bool {
        tpm.is_some_and(|t| t.enabled != Some(false))
    }

    /// Whether the guest gets a TPM whose state persists (KubeVirt's
    /// `tpm.HasPersistentDevice`).
    pub fn persistent(tpm: Option<&Tpm>) -> bool {
        Tpm::present(tpm) && tpm.is_some_and(|t| t.persistent == Some(true))
    }
}

/// An input device. KubeVirt has tablets only, on the USB bus (the default; the domain then
/// gets a USB controller) or the virtio bus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// The device's name (its libvirt alias is `ua-<name>`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub name: String,
    /// The kind of device: `tablet`, the only one KubeVirt has.
    #[serde(rename = "type")]
    pub type_: InputType,
    /// The bus: `usb` (the default, also when empty) or `virtio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<InputBus>,
}

/// An input device's kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InputType {
    #[default]
    Tablet,
}

/// An input device's bus; KubeVirt reads an empty one as `usb`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InputBus {
    #[serde(rename = "usb")]
    Usb,
    #[serde(rename = "virtio")]
    Virtio,
    #[serde(rename = "")]
    Unset,
}

impl InputBus {
    /// Whether the device sits on the USB bus (`usb`, or empty).
    pub fn is_usb(bus: Option<InputBus>) -> bool {
        !matches!(bus, Some(InputBus::Virtio))
    }
}

/// A watchdog. On x86 the only model is Intel's 6300ESB.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.i6300esb)",
    "message": "a watchdog needs its model: i6300esb"
}]))]
pub struct Watchdog {
    /// The device's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Intel 6300ESB watchdog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i6300esb: Option<I6300EsbWatchdog>,
}

/// The Intel 6300ESB watchdog.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct I6300EsbWatchdog {
    /// What the watchdog does when it expires: `reset` (the default), `poweroff` or
    /// `shutdown` (the guest is asked to shut down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<WatchdogAction>,
}

/// A watchdog's action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WatchdogAction {
    Poweroff,
    Reset,
    Shutdown,
}

/// A virtio-rng device; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Rng {}

/// A disk of the guest. At most one of `disk` and `cdrom` may be set; with neither, it is a
/// `disk` on the virtio bus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.disk) && has(self.cdrom))",
    "message": "set at most one of disk and cdrom"
}, {
    "rule": "!has(self.lun)",
    "fieldPath": ".lun",
    "message": "lun (SCSI passthrough: the guest sends SCSI commands, reservations included, to the volume's device) is not supported; attach the volume as a disk"
}, {
    "rule": "!has(self.dedicatedIOThread) || !self.dedicatedIOThread || (!has(self.cdrom) && (!has(self.disk) || !has(self.disk.bus) || self.disk.bus == 'virtio'))",
    "messageExpression": "'IOThreads are not supported for disks on a ' + (has(self.cdrom) ? (has(self.cdrom.bus) ? self.cdrom.bus : 'sata') : self.disk.bus) + ' bus'"
}]))]
pub struct Disk {
    /// The disk's name; the volume of the same name backs it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Attach it as a hard disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    /// Attach it as a CD-ROM (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<CdromTarget>,
    /// KubeVirt's SCSI passthrough (LUN); refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub lun: Option<serde_json::Value>,
    /// The boot order: lower boots first; disks without one are not boot devices when
    /// any disk has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub boot_order: Option<u32>,
    /// The serial number the guest sees for this disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub serial: Option<String>,
    /// Give this disk an IOThread of its own, never shared with other disks (virtio disks
    /// only). Implies IOThreads for the guest even without `ioThreadsPolicy`.
    #[serde(
        default,
        rename = "dedicatedIOThread",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedicated_io_thread: Option<bool>,
}

/// A hard disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskTarget {
    /// The bus: virtio (the default), sata or scsi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<DiskBus>,
    /// Expose the disk read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A CD-ROM drive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CdromTarget {
    /// The bus: sata (the default) or scsi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<DiskBus>,
    /// Attach the medium read-only (the default, true).
    #[serde(default, rename = "readonly", skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Whether the drive's tray is `open` (the guest sees no medium) or `closed` (the
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray: Option<TrayState>,
}

/// A CD-ROM drive's tray.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrayState {
    Open,
    Closed,
}

impl TrayState {
    /// libvirt's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrayState::Open => "open",
            TrayState::Closed => "closed",
        }
    }
}

// The bus a disk is attached to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
}

/// A network interface of the guest, connected to the network of the same name. At most
/// one binding (`masquerade`, `bridge`, `passtBinding`, or the binding plugin `binding`)
/// may be set; with none, it is `bridge`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.masquerade), has(self.bridge), has(self.passtBinding), has(self.binding)].filter(b, b).size() <= 1",
    "message": "set at most one binding: masquerade, bridge, passtBinding or binding"
}]))]
pub struct Interface {
    /// The interface's name; the network of the same name connects it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The NIC model: virtio (the default), e1000, e1000e or rtl8139.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<InterfaceModel>,
    /// The MAC address, for example `de:ad:00:00:be:af` (or with `-`): a unicast address
    /// (the first octet even), as libvirt requires. Defaults to a generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^([0-9A-Fa-f][02468AaCcEe](:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f][02468AaCcEe](-[0-9A-Fa-f]{2}){5})$"
    ))]
    pub mac_address: Option<String>,
    /// The guest reaches the pod network through NAT; only the listed ports (all when
    /// none are listed) are forwarded to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<InterfaceMasquerade>,
    /// The guest is bridged to the pod network and takes the pod's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<InterfaceBridge>,
    /// KubeVirt's core passt binding: passt (user-mode networking in the launcher pod)
    /// gives the guest the pod's address; only the listed ports (all when none are
    /// listed) are forwarded to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passt_binding: Option<InterfacePasstBinding>,
    /// A network binding plugin, by the name the cluster configuration registers it
    /// under; Ferrovirt implements `passt` (the same as `passtBinding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<PluginBinding>,
    /// The ports forwarded to the guest (masquerade and passt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

/// The masquerade binding; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfaceMasquerade {}

/// The bridge binding; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfaceBridge {}

/// The passt binding; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfacePasstBinding {}

/// A network binding plugin, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PluginBinding {
    /// The plugin's name as the cluster configuration registers it.
    #[schemars(length(min = 1))]
    pub name: String,
}

// A NIC model.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceModel {
    Virtio,
    E1000,
    E1000e,
    Rtl8139,
}

/// A port forwarded to the guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// A name for the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The protocol: TCP (the default) or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

// A transport protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}
