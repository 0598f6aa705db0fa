//! A VM's instancetype and preference applied to a VMI spec, as KubeVirt applies them
//! (`pkg/instancetype/apply` and `pkg/instancetype/preference/apply`), for the fields
//! Ferrovirt serves. Pure: virt-controller uses it to build the instance, virt-api to
//! refuse a VM whose template sets what its instancetype sets.
//!
//! An instancetype's fields are the instancetype's alone: a template that sets one of them
//! is a conflict, named by its path (KubeVirt's message: `VM field(s) <paths> conflicts
//! with selected instance type`). A preference's fields are defaults: what the template
//! sets wins.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::instancetype::{InstancetypeSpec, PreferenceSpec, PreferredCpuTopology, SpreadAcross};
use crate::{
    Bios, Bootloader, Cpu, Disk, DiskBus, DiskTarget, Efi, Features, Firmware, Interface,
    InterfaceBridge, Machine, Memory, Network, PodNetwork, ResourceRequirements,
    VirtualMachineInstanceSpec, quantity,
};

/// The architecture of Ferrovirt's nodes, the default of a VMI that names none.
pub const DEFAULT_ARCHITECTURE: &str = "amd64";
/// Why a VMI of another architecture is refused.
pub const ARCHITECTURE_REFUSED: &str = "Ferrovirt's nodes are amd64 (x86_64): a guest of another architecture (arm64, s390x) has no node to run on";

/// The name of the default pod network and its interface, as KubeVirt names them.
pub const DEFAULT_NETWORK: &str = "default";

/// The fields of a template that conflict with its instancetype, each a path under the
/// base given to [`apply`] (`spec.template.spec.domain.memory.guest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conflicts(pub Vec<String>);

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VM field(s) {} conflicts with selected instance type",
            self.0.join(", ")
        )
    }
}

impl std::error::Error for Conflicts {}

/// Applies `instancetype` and then `preference` to `spec` and `annotations` (the
/// instance's). `base` is the path of `spec` in the object the caller reports on
/// (`spec.template.spec` for a VM, `spec` for a VMI). On conflicts nothing of the
/// preference is applied and the conflicts are returned.
pub fn apply(
    base: &str,
    instancetype: Option<&InstancetypeSpec>,
    preference: Option<&PreferenceSpec>,
    spec: &mut VirtualMachineInstanceSpec,
    annotations: &mut BTreeMap<String, String>,
) -> Result<(), Conflicts> {
    if let Some(it) = instancetype {
        let mut conflicts = Vec::new();
        cpu(base, it, preference, spec, &mut conflicts);
        memory(base, it, spec, &mut conflicts);
        node_selector(base, it, spec, &mut conflicts);
        if let Some(policy) = it.io_threads_policy {
            match spec.domain.io_threads_policy {
                Some(_) => conflicts.push(format!("{base}.domain.ioThreadsPolicy")),
                None => spec.domain.io_threads_policy = Some(policy),
            }
        }
        if let Some(scheduler) = &it.scheduler_name {
            match spec.scheduler_name {
                Some(_) => conflicts.push(format!("{base}.schedulerName")),
                None => spec.scheduler_name = Some(scheduler.clone()),
            }
        }
        for (key, value) in it.annotations.iter().flatten() {
            match annotations.get(key) {
                Some(v) if v != value => conflicts.push(format!("annotations.{key}")),
                Some(_) => {}
                None => {
                    annotations.insert(key.clone(), value.clone());
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(Conflicts(conflicts));
        }
    }
    if let Some(p) = preference {
        apply_preference(p, spec, annotations);
    }
    Ok(())
}

fn has(
    map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> bool {
    map.as_ref().is_some_and(|m| m.contains_key(key))
}

fn cpu(
    base: &str,
    it: &InstancetypeSpec,
    preference: Option<&PreferenceSpec>,
    spec: &mut VirtualMachineInstanceSpec,
    conflicts: &mut Vec<String>,
) {
    let before = conflicts.len();
    let resources = spec.domain.resources.clone().unwrap_or_default();
    if has(&resources.requests, "cpu") {
        conflicts.push(format!("{base}.domain.resources.requests.cpu"));
    }
    if has(&resources.limits, "cpu") {
        conflicts.push(format!("{base}.domain.resources.limits.cpu"));
    }
    let cpu = spec.domain.cpu.get_or_insert_with(Cpu::default);
    for (set, name) in [
        (cpu.sockets.is_some(), "sockets"),
        (cpu.cores.is_some(), "cores"),
        (cpu.threads.is_some(), "threads"),
        (cpu.model.is_some() && it.cpu.model.is_some(), "model"),
        (
            cpu.dedicated_cpu_placement == Some(true) && it.cpu.dedicated_cpu_placement.is_some(),
            "dedicatedCpuPlacement",
        ),
        (
            cpu.isolate_emulator_thread == Some(true) && it.cpu.isolate_emulator_thread.is_some(),
            "isolateEmulatorThread",
        ),
        (cpu.numa.is_some() && it.cpu.numa.is_some(), "numa"),
        (
            cpu.realtime.is_some() && it.cpu.realtime.is_some(),
            "realtime",
        ),
    ] {
        if set {
            conflicts.push(format!("{base}.domain.cpu.{name}"));
        }
    }
    if conflicts.len() > before {
        return;
    }
    if let Some(model) = &it.cpu.model {
        cpu.model = Some(model.clone());
    }
    if let Some(d) = it.cpu.dedicated_cpu_placement {
        cpu.dedicated_cpu_placement = Some(d);
    }
    if let Some(i) = it.cpu.isolate_emulator_thread {
        cpu.isolate_emulator_thread = Some(i);
    }
    if let Some(n) = &it.cpu.numa {
        cpu.numa = Some(n.clone());
    }
    if let Some(r) = &it.cpu.realtime {
        cpu.realtime = Some(r.clone());
    }
    // KubeVirt takes the instancetype's maxSockets over the VM's without a conflict.
    if let Some(m) = it.cpu.max_sockets {
        cpu.max_sockets = Some(m);
    }
    let (sockets, cores, threads) = topology(it.cpu.guest, preference);
    cpu.sockets = Some(sockets);
    cpu.cores = Some(cores);
    cpu.threads = Some(threads);
}

/// Sockets, cores and threads for `vcpus` as the preference lays them out (KubeVirt's
/// `applyGuestCPUTopology`): all on sockets unless the preference says otherwise.
pub fn topology(vcpus: u32, preference: Option<&PreferenceSpec>) -> (u32, u32, u32) {
    use PreferredCpuTopology as T;
    if vcpus <= 1 {
        return (1, 1, 1);
    }
    let cpu = preference.and_then(|p| p.cpu.as_ref());
    match cpu
        .and_then(|c| c.preferred_cpu_topology)
        .unwrap_or(T::Sockets)
    {
        T::Cores | T::PreferCores => (1, vcpus, 1),
        T::Threads | T::PreferThreads => (1, 1, vcpus),
        T::Sockets | T::PreferSockets | T::Any | T::PreferAny => (vcpus, 1, 1),
        T::Spread | T::PreferSpread => {
            let options = cpu.and_then(|c| c.spread_options.as_ref());
            let ratio = options
                .and_then(|o| o.ratio)
                .or(preference.and_then(|p| p.prefer_spread_socket_to_core_ratio))
                .unwrap_or(2)
                .max(1);
            match options
                .and_then(|o| o.across)
                .unwrap_or(SpreadAcross::SocketsCores)
            {
                SpreadAcross::SocketsCores => (vcpus / ratio, ratio, 1),
                SpreadAcross::CoresThreads => (1, vcpus / ratio, ratio),
                SpreadAcross::SocketsCoresThreads => (vcpus / 2 / ratio, ratio, 2),
            }
        }
    }
}

/// Whether the spread topology of `preference` divides `vcpus` without remainder
/// (KubeVirt's `CheckSpreadCPUTopology`). `None`: it does, or no spread is asked for;
/// else KubeVirt's message.
pub fn spread_mismatch(vcpus: u32, preference: Option<&PreferenceSpec>) -> Option<String> {
    use PreferredCpuTopology as T;
    let cpu = preference.and_then(|p| p.cpu.as_ref())?;
    if !matches!(
        cpu.preferred_cpu_topology,
        Some(T::Spread | T::PreferSpread)
    ) {
        return None;
    }
    let (sockets, cores, threads) = topology(vcpus, preference);
    (sockets * cores * threads != vcpus || sockets == 0 || cores == 0).then(|| {
        format!(
            "Instancetype CPU Guest is not divisible by PreferSpreadSocketToCoreRatio: {vcpus} vCPUs cannot be spread as {sockets} sockets x {cores} cores x {threads} threads"
        )
    })
}

/// A preference's requirement the VM does not meet: the fields that fall short and
/// KubeVirt's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub fields: Vec<String>,
    pub message: String,
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failure checking preference requirements: {}",
            self.message
        )
    }
}

impl std::error::Error for Unmet {}

/// KubeVirt's check of a preference's `requirements` against what the VM provides: its
/// instancetype's vCPUs and memory, else its template's (`base` is the template spec's
/// path, `spec.template.spec`), the vCPUs counted as the preference lays them out.
pub fn check_requirements(
    base: &str,
    instancetype: Option<&InstancetypeSpec>,
    preference: Option<&PreferenceSpec>,
    spec: &VirtualMachineInstanceSpec,
) -> Result<(), Unmet> {
    use PreferredCpuTopology as T;
    let Some(required) = preference.and_then(|p| p.requirements.as_ref()) else {
        return Ok(());
    };
    let unmet = |fields: Vec<String>, message: String| Err(Unmet { fields, message });
    if let Some(cpu) = &required.cpu {
        if let Some(it) = instancetype {
            if it.cpu.guest < cpu.guest {
                return unmet(
                    vec!["spec.instancetype".into()],
                    format!(
                        "insufficient CPU resources of {} vCPU provided by instance type, preference requires {} vCPU",
                        it.cpu.guest, cpu.guest
                    ),
                );
            }
        } else {
            let c = spec.domain.cpu.clone().unwrap_or_default();
            let (sockets, cores, threads) = (
                c.sockets.unwrap_or(1),
                c.cores.unwrap_or(1),
                c.threads.unwrap_or(1),
            );
            let pref_cpu = preference.and_then(|p| p.cpu.as_ref());
            let topology = pref_cpu
                .and_then(|c| c.preferred_cpu_topology)
                .unwrap_or(T::Sockets);
            let across = pref_cpu
                .and_then(|c| c.spread_options.as_ref())
                .and_then(|o| o.across)
                .unwrap_or(SpreadAcross::SocketsCores);
            let (provided, names): (u32, &[&str]) = match topology {
                T::Threads | T::PreferThreads => (threads, &["threads"]),
                T::Cores | T::PreferCores => (cores, &["cores"]),
                T::Sockets | T::PreferSockets => (sockets, &["sockets"]),
                T::Any | T::PreferAny => {
                    (sockets * cores * threads, &["cores", "sockets", "threads"])
                }
                T::Spread | T::PreferSpread => match across {
                    SpreadAcross::SocketsCores => (sockets * cores, &["sockets", "cores"]),
                    SpreadAcross::CoresThreads => (cores * threads, &["cores", "threads"]),
                    SpreadAcross::SocketsCoresThreads => {
                        (sockets * cores * threads, &["sockets", "cores", "threads"])
                    }
                },
            };
            if provided < cpu.guest {
                return unmet(
                    names
                        .iter()
                        .map(|n| format!("{base}.domain.cpu.{n}"))
                        .collect(),
                    format!(
                        "insufficient CPU resources of {provided} vCPU provided by VirtualMachine, preference requires {} vCPU provided as {}",
                        cpu.guest,
                        match topology {
                            T::Any | T::PreferAny => "cores, sockets and threads".to_string(),
                            T::Spread | T::PreferSpread => format!("{across:?}"),
                            _ => names[0].to_string(),
                        }
                    ),
                );
            }
        }
    }
    if let Some(arch) = &required.architecture {
        // What the VM asks for, else the default virt-api would give it (amd64).
        let asked = spec.architecture.as_deref().unwrap_or(DEFAULT_ARCHITECTURE);
        if asked != arch {
            return unmet(
                vec![format!("{base}.architecture")],
                format!("preference requires architecture {arch} but {asked} is being requested"),
            );
        }
    }
    if let Some(memory) = &required.memory {
        let (field, by, provided) = match instancetype {
            Some(it) => (
                "spec.instancetype".to_string(),
                "instance type",
                Some(it.memory.guest.clone()),
            ),
            None => {
                let resources = spec.domain.resources.as_ref();
                let from = |l: Option<&BTreeMap<String, Quantity>>| {
                    l.and_then(|l| l.get("memory")).cloned()
                };
                let guest = spec
                    .domain
                    .memory
                    .as_ref()
                    .and_then(|m| m.guest.clone())
                    .or_else(|| from(resources.and_then(|r| r.requests.as_ref())))
                    .or_else(|| from(resources.and_then(|r| r.limits.as_ref())));
                (format!("{base}.domain.memory"), "VirtualMachine", guest)
            }
        };
        let bytes = provided.as_ref().and_then(quantity::bytes).unwrap_or(0);
        if bytes < quantity::bytes(&memory.guest).unwrap_or(0) {
            let shown = provided.map_or_else(|| "0".to_string(), |q| q.0);
            return unmet(
                vec![field],
                format!(
                    "insufficient Memory resources of {shown} provided by {by}, preference requires {}",
                    memory.guest.0
                ),
            );
        }
    }
    Ok(())
}

fn memory(
    base: &str,
    it: &InstancetypeSpec,
    spec: &mut VirtualMachineInstanceSpec,
    conflicts: &mut Vec<String>,
) {
    let resources = spec.domain.resources.clone().unwrap_or_default();
    let memory = spec.domain.memory.get_or_insert_with(Memory::default);
    let conflict = if memory.guest.is_some() {
        Some("domain.memory.guest")
    } else if memory.hugepages.is_some() && it.memory.hugepages.is_some() {
        Some("domain.memory.hugepages")
    } else if has(&resources.requests, "memory") {
        Some("domain.resources.requests.memory")
    } else if has(&resources.limits, "memory") {
        Some("domain.resources.limits.memory")
    } else {
        None
    };
    if let Some(field) = conflict {
        conflicts.push(format!("{base}.{field}"));
        return;
    }
    memory.guest = Some(it.memory.guest.clone());
    if let Some(hugepages) = &it.memory.hugepages {
        memory.hugepages = Some(hugepages.clone());
    }
    // KubeVirt's overcommit: the pod requests the guest memory less the percentage.
    if let Some(percent) = it
        .memory
        .overcommit_percent
        .filter(|p| (1..=100).contains(p))
        && let Some(guest) = quantity::bytes(&it.memory.guest)
    {
        let requested = u128::from(guest) * u128::from(100 - percent) / 100;
        let requested = u64::try_from(requested).unwrap_or(guest);
        let requested = if requested % (1 << 20) == 0 {
            format!("{}Mi", requested >> 20)
        } else {
            requested.to_string()
        };
        spec.domain
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert("memory".into(), Quantity(requested));
    }
}

fn node_selector(
    base: &str,
    it: &InstancetypeSpec,
    spec: &mut VirtualMachineInstanceSpec,
    conflicts: &mut Vec<String>,
) {
    let Some(selector) = &it.node_selector else {
        return;
    };
    if spec.node_selector.is_some() {
        conflicts.push(format!("{base}.nodeSelector"));
    } else {
        spec.node_selector = Some(selector.clone());
    }
}

fn apply_preference(
    p: &PreferenceSpec,
    spec: &mut VirtualMachineInstanceSpec,
    annotations: &mut BTreeMap<String, String>,
) {
    devices(p, spec);
    if let Some(acpi) = p.features.as_ref().and_then(|f| f.preferred_acpi.as_ref()) {
        let features = spec.domain.features.get_or_insert_with(Features::default);
        match &mut features.acpi {
            Some(state) if state.enabled.is_none() => state.enabled = acpi.enabled,
            Some(_) => {}
            None => features.acpi = Some(acpi.clone()),
        }
    }
    if let Some(smm) = p.features.as_ref().and_then(|f| f.preferred_smm.as_ref()) {
        let features = spec.domain.features.get_or_insert_with(Features::default);
        if features.smm.is_none() {
            features.smm = Some(smm.clone());
        }
    }
    if let Some(f) = &p.firmware {
        firmware(
            f,
            spec.domain.firmware.get_or_insert_with(Firmware::default),
        );
    }
    if let Some(machine_type) = p
        .machine
        .as_ref()
        .and_then(|m| m.preferred_machine_type.as_ref())
    {
        let machine = spec.domain.machine.get_or_insert_with(Machine::default);
        if machine.machine_type.as_deref().is_none_or(str::is_empty) {
            machine.machine_type = Some(machine_type.clone());
        }
    }
    if spec.subdomain.is_none() {
        spec.subdomain = p.preferred_subdomain.clone();
    }
    if spec.architecture.is_none() {
        spec.architecture = p.preferred_architecture.clone();
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = p.preferred_termination_grace_period_seconds;
    }
    for (key, value) in p.annotations.iter().flatten() {
        annotations
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
}

fn devices(p: &PreferenceSpec, spec: &mut VirtualMachineInstanceSpec) {
    let Some(d) = &p.devices else {
        return;
    };
    let devices = &mut spec.domain.devices;
    if devices.autoattach_serial_console.is_none() {
        devices.autoattach_serial_console = d.preferred_autoattach_serial_console;
    }
    if devices.autoattach_graphics_device.is_none() {
        devices.autoattach_graphics_device = d.preferred_autoattach_graphics_device;
    }
    if devices.rng.is_none() {
        devices.rng = d.preferred_rng.clone();
    }
    if devices.tpm.is_none() {
        devices.tpm = d.preferred_tpm.clone();
    }
    if devices.autoattach_mem_balloon.is_none() {
        devices.autoattach_mem_balloon = d.preferred_autoattach_mem_balloon;
    }
    if devices.block_multi_queue.is_none() {
        devices.block_multi_queue = d.preferred_block_multi_queue;
    }
    if let Some(type_) = d.preferred_video_type
        && devices.video.is_none()
    {
        devices.video = Some(crate::VideoDevice { type_ });
    }
    if devices.network_interface_multiqueue.is_none() {
        devices.network_interface_multiqueue = d.preferred_network_interface_multi_queue;
    }
    if devices.use_virtio_transitional.is_none() {
        devices.use_virtio_transitional = d.preferred_use_virtio_transitional;
    }
    // As KubeVirt's VM controller: the autoattached tablet is added before the bus and
    // type preferences apply (`preferredInputType` has nothing to fill: a Ferrovirt input
    // always names its type, `tablet`, the one kind there is).
    if devices.autoattach_input_device.is_none() {
        devices.autoattach_input_device = d.preferred_autoattach_input_device;
    }
    if let Some(input) = devices.autoattached_input() {
        devices.inputs.push(input);
    }
    for input in &mut devices.inputs {
        if input.bus.is_none() {
            input.bus = d.preferred_input_bus;
        }
    }
    // KubeVirt's VM controller gives each volume without a disk its disk before the
    // preference applies (`SetDefaultVolumeDisk`), so the preferred bus reaches it.
    for volume in &spec.volumes {
        if !devices.disks.iter().any(|d| d.name == volume.name) {
            devices.disks.push(Disk {
                name: volume.name.clone(),
                ..Default::default()
            });
        }
    }
    for disk in &mut devices.disks {
        if disk.disk.is_none() && disk.cdrom.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        if let Some(target) = &mut disk.disk
            && target.bus.is_none()
        {
            target.bus = d.preferred_disk_bus;
        }
        // As KubeVirt: only a disk whose bus is virtio by now.
        if let Some(target) = &disk.disk
            && target.bus == Some(DiskBus::Virtio)
            && disk.dedicated_io_thread.is_none()
        {
            disk.dedicated_io_thread = d.preferred_disk_dedicated_io_thread;
        }
        if let Some(target) = &mut disk.cdrom
            && target.bus.is_none()
        {
            target.bus = d.preferred_cdrom_bus;
        }
    }
    // KubeVirt's VM controller gives the instance its default pod network before it
    // applies the preference, so the preferred model reaches that interface too (the
    // VMI's mutating webhook would add the same later, without the model).
    if d.preferred_interface_model.is_some()
        && devices.interfaces.is_empty()
        && spec.networks.is_empty()
    {
        spec.networks.push(Network {
            name: DEFAULT_NETWORK.into(),
            pod: Some(PodNetwork::default()),
            multus: None,
        });
        devices.interfaces.push(Interface {
            name: DEFAULT_NETWORK.into(),
            bridge: Some(InterfaceBridge {}),
            ..Default::default()
        });
    }
    let pod_networks: Vec<&str> = spec
        .networks
        .iter()
        .filter(|n| n.pod.is_some())
        .map(|n| n.name.as_str())
        .collect();
    for iface in &mut devices.interfaces {
        if iface.model.is_none() {
            iface.model = d.preferred_interface_model;
        }
        if let Some(m) = &d.preferred_interface_masquerade
            && iface.masquerade.is_none()
            && iface.bridge.is_none()
            && iface.passt_binding.is_none()
            && iface.binding.is_none()
            && pod_networks.contains(&iface.name.as_str())
        {
            iface.masquerade = Some(m.clone());
        }
    }
}

/// KubeVirt's order: BIOS when preferred and no bootloader is named; else `preferredEfi`;
/// else the deprecated `preferredUseEfi` and `preferredUseSecureBoot`.
fn firmware(p: &crate::instancetype::FirmwarePreferences, firmware: &mut Firmware) {
    let boot = firmware.bootloader.get_or_insert_with(Bootloader::default);
    if p.preferred_use_bios == Some(true) && boot.bios.is_none() && boot.efi.is_none() {
        boot.bios = Some(Bios::default());
    }
    if let (Some(serial), Some(bios)) = (p.preferred_use_bios_serial, &mut boot.bios)
        && bios.use_serial.is_none()
    {
        bios.use_serial = Some(serial);
    }
    if boot.efi.is_none() && boot.bios.is_none() {
        if let Some(efi) = &p.preferred_efi {
            boot.efi = Some(efi.clone());
            return;
        }
        if p.preferred_use_efi == Some(true) {
            boot.efi = Some(Efi::default());
        }
    }
    if let (Some(secure), Some(efi)) = (p.preferred_use_secure_boot, &mut boot.efi)
        && efi.secure_boot.is_none()
    {
        efi.secure_boot = Some(secure);
    }
    if boot.bios.is_none() && boot.efi.is_none() {
        firmware.bootloader = None;
    }
}
