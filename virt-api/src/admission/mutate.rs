//! KubeVirt's defaults on create (`pkg/defaults`, the VM and VMI mutators), for the fields
//! of Ferrovirt's CRDs, each only where the node side converts the result
//! (virt-handler/src/domain). Pure functions on the object's JSON: a value of an
//! unexpected type is left alone (the schema refuses it after this webhook).

use serde_json::{Map, Value, json};

use super::quantity;

/// The machine type a VMI gets without one (KubeVirt's amd64 default, and the only family
/// the node side supports).
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
/// The name of the network and interface given to a VMI that has neither (the same name
/// virt-controller gives them when a preference names their model).
pub use crds::expand::DEFAULT_NETWORK;

/// KubeVirt's namespace for firmware UUIDs derived from a VM's name
/// (`CalculateLegacyUUID` in pkg/virt-controller/watch/vm/firmware.go).
const FIRMWARE_UUID_NAMESPACE: uuid::Uuid = uuid::uuid!("6a1a24a1-4061-4607-8bf4-a3963d0c5895");

/// The firmware UUID KubeVirt derives from a VM's name: a name-based (SHA-1) UUID, the
/// same for every start of the VM.
pub fn firmware_uuid(vm_name: &str) -> String {
    uuid::Uuid::new_v5(&FIRMWARE_UUID_NAMESPACE, vm_name.as_bytes()).to_string()
}

/// Defaults of a new VirtualMachine (KubeVirt's VM mutator): the template's machine type,
/// a firmware UUID derived from the VM's name and a random SMBIOS serial. The rest of KubeVirt's defaults are
/// applied to each VMI the VM creates.
pub fn vm(vm: &mut Value) {
    let name = vm["metadata"]["name"].as_str().map(str::to_string);
    let Some(domain) = vm
        .pointer_mut("/spec/template/spec/domain")
        .filter(|d| d.is_object())
    else {
        return;
    };
    machine_type(domain);
    // A name made by generateName is not known yet: a random UUID is as stable, since
    // it is stored in the VM.
    let uuid = name.as_deref().map_or_else(random_uuid, firmware_uuid);
    set_firmware_uuid(domain, uuid);
    // KubeVirt's VM mutator: a random SMBIOS serial, stored, so the same for every start.
    if let Some(firmware) = child(domain, "firmware")
        && is_empty_text(&firmware["serial"])
    {
        firmware["serial"] = json!(random_uuid());
    }
}

/// Defaults of a new VirtualMachineInstance (KubeVirt's VMI mutator, `pkg/defaults`).
/// A VMI a VM owns gets the UUID derived from the VM's name when its template has none
/// (a VM stored before this webhook); any other VMI a random one, as in KubeVirt.
/// A new VMI starts without status, whatever its manifest carries (one exported from a
/// cluster has one): the VMI CRD has no status subresource that would drop it, and the
/// components write it from the start (KubeVirt's mutator replaces it with Pending).
pub fn vmi(vmi: &mut Value) {
    if let Some(object) = vmi.as_object_mut() {
        object.remove("status");
    }
    let owner = owning_vm(vmi);
    let Some(spec) = vmi.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(domain) = spec.get_mut("domain").filter(|d| d.is_object()) {
        machine_type(domain);
        cpu_request_from_limit(domain);
        guest_memory(domain);
        cpu_topology(domain);
        let uuid = owner.as_deref().map_or_else(random_uuid, firmware_uuid);
        set_firmware_uuid(domain, uuid);
        if let Some(devices) = child(domain, "devices") {
            devices
                .as_object_mut()
                .expect("child() returns objects")
                .entry("autoattachSerialConsole")
                .or_insert(Value::Bool(true));
        }
    }
    pod_network(spec);
    volume_disks(spec);
    disk_buses(spec);
}

/// The VM a VMI belongs to: its controller owner reference of kind VirtualMachine.
fn owning_vm(vmi: &Value) -> Option<String> {
    vmi["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "VirtualMachine" && r["controller"] == true)?["name"]
        .as_str()
        .map(str::to_string)
}

fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `v[key]` as an object, inserted empty when missing; None when it is something else.
fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = v.as_object_mut()?;
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.is_object().then_some(entry)
}

fn is_empty_text(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("")
}

fn machine_type(domain: &mut Value) {
    if let Some(machine) = child(domain, "machine")
        && is_empty_text(&machine["type"])
    {
        machine["type"] = json!(DEFAULT_MACHINE_TYPE);
    }
}

fn set_firmware_uuid(domain: &mut Value, uuid: String) {
    if let Some(firmware) = child(domain, "firmware")
        && is_empty_text(&firmware["uuid"])
    {
        firmware["uuid"] = json!(uuid);
    }
}

/// A CPU limit without a request: the request is the limit.
fn cpu_request_from_limit(domain: &mut Value) {
    let limit = domain["resources"]["limits"]["cpu"].clone();
    if limit.is_null() {
        return;
    }
    if let Some(requests) = child(domain, "resources").and_then(|r| child(r, "requests"))
        && requests["cpu"].is_null()
    {
        requests["cpu"] = limit;
    }
}

fn nonzero(v: &Value) -> bool {
    quantity::millis(v).is_some_and(|q| q > 0)
}

/// `memory.guest` is the memory request, else the memory limit.
fn guest_memory(domain: &mut Value) {
    if !domain["memory"]["guest"].is_null() {
        return;
    }
    let resources = &domain["resources"];
    let from = [
        &resources["requests"]["memory"],
        &resources["limits"]["memory"],
    ]
    .into_iter()
    .find(|q| nonzero(q))
    .cloned();
    if let Some(q) = from
        && let Some(memory) = child(domain, "memory")
    {
        memory["guest"] = q;
    }
}

/// Without sockets, cores and threads: one socket per CPU of the limit (else the
/// request), rounded up, at least one; one core, one thread.
fn cpu_topology(domain: &mut Value) {
    let cpu = &domain["cpu"];
    if ["sockets", "cores", "threads"]
        .iter()
        .any(|k| !cpu[k].is_null())
    {
        return;
    }
    let resources = &domain["resources"];
    let amount = [&resources["limits"]["cpu"], &resources["requests"]["cpu"]]
        .into_iter()
        .find(|q| !q.is_null())
        .map(quantity::millis);
    let sockets = match amount {
        None => 1,
        Some(Some(m)) if m > 0 => m.div_ceil(1000),
        // An amount that is not a quantity is refused by the schema; zero stays one.
        Some(Some(_)) => 1,
        Some(None) => return,
    };
    if let Some(cpu) = child(domain, "cpu") {
        cpu["sockets"] = json!(sockets);
        cpu["cores"] = json!(1);
        cpu["threads"] = json!(1);
    }
}

/// No networks and no interfaces: the pod network with a bridge interface (KubeVirt's
/// default binding): the node bridges the guest onto the launcher pod's interface
/// (docs/networking.md), or, where the pod shares the host's network namespace (devnode),
/// gives it user-mode networking.
fn pod_network(spec: &mut Value) {
    let none = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
    if !none(&spec["networks"]) || !none(&spec["domain"]["devices"]["interfaces"]) {
        return;
    }
    let Some(devices) = spec.get_mut("domain").and_then(|d| child(d, "devices")) else {
        return;
    };
    devices["interfaces"] = json!([{"name": DEFAULT_NETWORK, "bridge": {}}]);
    spec["networks"] = json!([{"name": DEFAULT_NETWORK, "pod": {}}]);
}

/// A disk for each volume without one and not shared as a filesystem, appended in the
/// order of the volumes (KubeVirt's `SetDefaultVolumeDisk`).
fn volume_disks(spec: &mut Value) {
    let Some(volumes) = spec["volumes"].as_array() else {
        return;
    };
    let filesystems = &spec["domain"]["devices"]["filesystems"];
    let is_filesystem = |name: &str| {
        filesystems
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == name))
    };
    let names: Vec<String> = volumes
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .filter(|name| !is_filesystem(name))
        .collect();
    let Some(devices) = spec.get_mut("domain").and_then(|d| child(d, "devices")) else {
        return;
    };
    if devices["disks"].is_null() {
        devices["disks"] = json!([]);
    }
    let Some(disks) = devices["disks"].as_array_mut() else {
        return;
    };
    for name in names {
        if !disks.iter().any(|d| d["name"] == name.as_str()) {
            disks.push(json!({"name": name}));
        }
    }
    if disks.is_empty() {
        devices
            .as_object_mut()
            .expect("child() returns objects")
            .remove("disks");
    }
}

/// A disk with neither `disk` nor `cdrom` is a `disk`; a disk's bus is virtio and a
/// cdrom's sata, the buses the node uses when none is given; a cdrom is `readonly` with
/// its `tray` `closed` unless it says otherwise (KubeVirt's defaults).
fn disk_buses(spec: &mut Value) {
    let Some(disks) = spec
        .pointer_mut("/domain/devices/disks")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for disk in disks.iter_mut().filter(|d| d.is_object()) {
        if disk["disk"].is_null() && disk["cdrom"].is_null() {
            disk["disk"] = json!({});
        }
        for (target, bus) in [("disk", "virtio"), ("cdrom", "sata")] {
            if disk[target].is_object() && disk[target]["bus"].is_null() {
                disk[target]["bus"] = json!(bus);
            }
        }
        if let Some(cdrom) = disk.get_mut("cdrom").filter(|c| c.is_object()) {
            for (field, value) in [("readonly", json!(true)), ("tray", json!("closed"))] {
                if cdrom[field].is_null() {
                    cdrom[field] = value;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
