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

use crate::instancetype::{InstancetypeSpec, PreferenceSpec, PreferredCpuTopology, SpreadAcross};
use crate::{
    Bios, Bootloader, Cpu, Disk, DiskTarget, Efi, Features, Firmware, Interface, InterfaceBridge,
    Machine, Memory, Network, PodNetwork, VirtualMachineInstanceSpec,
};

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
    } else if has(&resources.requests, "memory") {
        Some("domain.resources.requests.memory")
    } else if has(&resources.limits, "memory") {
        Some("domain.resources.limits.memory")
    } else {
        None
    };
    match conflict {
        Some(field) => conflicts.push(format!("{base}.{field}")),
        None => memory.guest = Some(it.memory.guest.clone()),
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
