//! KubeVirt's validation of a VMI spec (pkg/virt-api/webhooks/validating-webhook/admitters,
//! pkg/storage/admitters), for Ferrovirt's subset, plus what the node side
//! (virt-handler/src/domain) would refuse at start. What the CRD schema and its CEL rules
//! already refuse (crds/src) is not checked again.
//!
//! Every message names its field: kubectl prints only the message, not the causes.
//! Where KubeVirt's own message names it, that message is kept word for word; where it
//! does not, the field is put in front (`<field>: <KubeVirt's message>`).

use serde_json::Value;

use super::quantity;
use super::review::Cause;

/// The most vCPUs (sockets × cores × threads) the node side gives a guest.
pub const MAX_VCPUS: u64 = 512;
/// The least guest memory the node side accepts, in thousandths of a byte.
const MIN_MEMORY: u64 = 1_048_576_000;
/// The machine types the node side supports, in KubeVirt's `allowed values` form.
const MACHINE_TYPES: &str = "[q35 pc-q35-*]";

/// The causes to refuse a VMI spec found at `path` (`spec`, or `spec.template.spec` of a
/// VM). Empty: accepted.
pub fn spec(path: &str, s: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    names(path, s, &mut causes);
    memory(path, &s["domain"], &mut causes);
    cpu(path, &s["domain"], &mut causes);
    machine(path, &s["domain"], &mut causes);
    firmware(path, &s["domain"], &mut causes);
    disks(path, &s["domain"]["devices"], &mut causes);
    downward_metrics(path, s, &mut causes);
    interfaces(path, s, &mut causes);
    cloud_init(path, s, &mut causes);
    causes
}

const DNS_LABEL_ERROR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_dns_label(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.chars().all(|c| ok_char(c) || c == '-')
        && s.starts_with(ok_char)
        && s.ends_with(ok_char)
}

/// `hostname` a DNS label, `subdomain` a DNS subdomain (the schema limits only length).
fn names(path: &str, s: &Value, causes: &mut Vec<Cause>) {
    if let Some(h) = s["hostname"].as_str().filter(|h| !h.is_empty())
        && !is_dns_label(h)
    {
        let field = format!("{path}.hostname");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} does not conform to the kubernetes DNS_LABEL rules : {DNS_LABEL_ERROR}"
            ),
        ));
    }
    if let Some(d) = s["subdomain"].as_str().filter(|d| !d.is_empty())
        && !d.split('.').all(is_dns_label)
    {
        let field = format!("{path}.subdomain");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} does not conform to the kubernetes DNS_SUBDOMAIN rules : {DNS_SUBDOMAIN_ERROR}"
            ),
        ));
    }
}

/// The quantity in thousandths, when above zero.
fn positive(v: &Value) -> Option<u64> {
    quantity::millis(v).filter(|q| *q > 0)
}

fn memory(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let guest = &domain["memory"]["guest"];
    let requests = &domain["resources"]["requests"]["memory"];
    let limits = &domain["resources"]["limits"]["memory"];
    let guest_field = format!("{path}.domain.memory.guest");
    let requests_field = format!("{path}.domain.resources.requests.memory");
    let limits_field = format!("{path}.domain.resources.limits.memory");
    if guest.is_null() && positive(requests).is_none() && positive(limits).is_none() {
        causes.push(Cause::required(
            &guest_field,
            format!(
                "no memory requested, at least one of '{guest_field}' or '{requests_field}' must be set"
            ),
        ));
        return;
    }
    // A guest memory equal to the request is the default taken from it (or said twice):
    // only the request is named then.
    let own_guest = if guest == requests {
        &Value::Null
    } else {
        guest
    };
    for (field, q) in [(&requests_field, requests), (&guest_field, own_guest)] {
        if positive(q).is_some_and(|v| v < MIN_MEMORY) {
            causes.push(Cause::invalid(
                field,
                format!(
                    "{field} '{}': must be greater than or equal to 1Mi.",
                    quantity::text(q)
                ),
            ));
        }
    }
    hugepages(path, domain, causes);
    if let Some(limit) = positive(limits) {
        if positive(requests).is_some_and(|r| r > limit) {
            causes.push(Cause::invalid(
                &requests_field,
                format!(
                    "{requests_field} '{}' is greater than {limits_field} '{}'",
                    quantity::text(requests),
                    quantity::text(limits)
                ),
            ));
        }
        if positive(own_guest).is_some_and(|g| g > limit) {
            causes.push(Cause::invalid(
                &guest_field,
                format!(
                    "{guest_field} '{}' must be equal to or less than the memory limit {limits_field} '{}'",
                    quantity::text(guest),
                    quantity::text(limits)
                ),
            ));
        }
    }
}

/// KubeVirt's hugepages rule: the VM's memory (the request, else the guest memory, else
/// the limit) is at least one page and a whole number of pages. The schema allows only
/// the page sizes of x86_64 (2Mi, 1Gi).
fn hugepages(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let size = &domain["memory"]["hugepages"]["pageSize"];
    let Some(page) = positive(size) else {
        return;
    };
    let page_field = format!("{path}.domain.memory.hugepages.pageSize");
    let Some((field, q, memory)) = [
        (
            "resources.requests.memory",
            &domain["resources"]["requests"]["memory"],
        ),
        ("memory.guest", &domain["memory"]["guest"]),
        (
            "resources.limits.memory",
            &domain["resources"]["limits"]["memory"],
        ),
    ]
    .into_iter()
    .find_map(|(f, q)| positive(q).map(|m| (format!("{path}.domain.{f}"), q, m))) else {
        return;
    };
    let (memory_text, page_text) = (quantity::text(q), quantity::text(size));
    if memory < page {
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} '{memory_text}' must be equal to or larger than page size {page_field} '{page_text}'"
            ),
        ));
    } else if memory % page != 0 {
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} '{memory_text}' is not a multiple of the page size {page_field} '{page_text}'"
            ),
        ));
    }
}

fn cpu(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let requests = &domain["resources"]["requests"]["cpu"];
    let limits = &domain["resources"]["limits"]["cpu"];
    if let (Some(r), Some(l)) = (positive(requests), positive(limits))
        && r > l
    {
        let field = format!("{path}.domain.resources.requests.cpu");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} '{}' is greater than {path}.domain.resources.limits.cpu '{}'",
                quantity::text(requests),
                quantity::text(limits)
            ),
        ));
    }
    let cpu = &domain["cpu"];
    let count = |k: &str| cpu[k].as_u64().unwrap_or(1);
    let vcpus = if ["sockets", "cores", "threads"]
        .iter()
        .all(|k| cpu[*k].is_null())
    {
        // The node's topology without one: a socket per CPU of the limit, else the request.
        positive(limits)
            .or_else(|| positive(requests))
            .map_or(1, |m| m.div_ceil(1000))
    } else {
        count("sockets") * count("cores") * count("threads")
    };
    if vcpus > MAX_VCPUS {
        let field = format!("{path}.domain.cpu");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field}: {vcpus} vCPUs (sockets × cores × threads, or the CPU limit or request) is more than the {MAX_VCPUS} Ferrovirt supports"
            ),
        ));
    }
    dedicated(path, domain, vcpus, causes);
    hotplug(path, domain, causes);
    numa_and_realtime(path, domain, vcpus, causes);
    if let Some(model) = cpu["model"].as_str()
        && !matches!(model, "host-passthrough" | "host-model")
        && (model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        let field = format!("{path}.domain.cpu.model");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} '{model}' is not a CPU model: use host-passthrough, host-model or a libvirt model name (letters, digits, '-', '_', '.')"
            ),
        ));
    }
}

/// KubeVirt's rules for dedicated CPUs (`validateCpuPinning`, `validateCPUIsolatorThread`):
/// whole CPUs, requested as limited, at most two threads per core; an isolated emulator
/// thread only with dedicated CPUs. `vcpus` is the guest's count.
fn dedicated(path: &str, domain: &Value, vcpus: u64, causes: &mut Vec<Cause>) {
    let cpu = &domain["cpu"];
    let is_dedicated = cpu["dedicatedCpuPlacement"].as_bool() == Some(true);
    if cpu["isolateEmulatorThread"].as_bool() == Some(true) && !is_dedicated {
        let field = format!("{path}.domain.cpu.isolateEmulatorThread");
        causes.push(Cause::invalid(
            &field,
            format!("{field}: IsolateEmulatorThread should be only set in combination with DedicatedCPUPlacement"),
        ));
    }
    if !is_dedicated {
        return;
    }
    let requests = &domain["resources"]["requests"]["cpu"];
    let limits = &domain["resources"]["limits"]["cpu"];
    let (request_field, limit_field) = (
        format!("{path}.domain.resources.requests.cpu"),
        format!("{path}.domain.resources.limits.cpu"),
    );
    for (v, field) in [(requests, &request_field), (limits, &limit_field)] {
        if let Some(m) = quantity::millis(v)
            && m % 1000 != 0
        {
            causes.push(Cause::invalid(
                field,
                format!(
                    "{field}: provided resources CPU {} must be an integer when DedicatedCPUPlacement is true (got '{}')",
                    if field == &request_field { "requests" } else { "limits" },
                    quantity::text(v)
                ),
            ));
        }
    }
    let (r, l) = (positive(requests), positive(limits));
    if let (Some(r), Some(l)) = (r, l)
        && r != l
    {
        causes.push(Cause::invalid(
            &request_field,
            format!(
                "{request_field} or {limit_field} must be equal when DedicatedCPUPlacement is true"
            ),
        ));
    }
    let topology_set = ["sockets", "cores", "threads"]
        .iter()
        .any(|k| !cpu[*k].is_null());
    if topology_set
        && (r.is_some() || l.is_some())
        && r != Some(vcpus * 1000)
        && l != Some(vcpus * 1000)
    {
        causes.push(Cause::invalid(
            &request_field,
            format!(
                "{request_field} or {limit_field} must not be provided at the same time with {path}.domain.cpu.cores when DedicatedCPUPlacement is true (unless they equal the {vcpus} vCPUs)"
            ),
        ));
    }
    if let Some(t) = cpu["threads"].as_u64()
        && t > 2
    {
        causes.push(Cause::invalid(
            format!("{path}.domain.cpu.threads"),
            format!(
                "Not more than two threads must be provided at {path}.domain.cpu.threads (got {t}) when DedicatedCPUPlacement is true"
            ),
        ));
    }
}

/// KubeVirt's CPU hotplug rule (`validateCPUHotplug`): the sockets fit in `maxSockets`.
/// Ferrovirt's own: the headroom's vCPUs stay within what the node side gives a guest.
fn hotplug(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let cpu = &domain["cpu"];
    let Some(max) = cpu["maxSockets"].as_u64() else {
        return;
    };
    let count = |k: &str| cpu[k].as_u64().unwrap_or(1);
    if count("sockets") > max {
        let field = format!("{path}.domain.cpu.sockets");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} ({}) is more than {path}.domain.cpu.maxSockets ({max}), the most sockets the guest may have",
                count("sockets")
            ),
        ));
    }
    let most = max * count("cores") * count("threads");
    if most > MAX_VCPUS {
        let field = format!("{path}.domain.cpu.maxSockets");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field}: {most} vCPUs at most (maxSockets × cores × threads) is more than the {MAX_VCPUS} Ferrovirt supports"
            ),
        ));
    }
}

/// KubeVirt's rules for the guest's NUMA passthrough (`validateNUMA`) and realtime
/// (`validateRealtime`): NUMA passthrough maps dedicated CPUs and hugepages onto the host's
/// nodes, so it needs both; realtime needs dedicated CPUs and the NUMA passthrough. The
/// realtime mask names vCPUs the guest has (up to its hotplug headroom). `vcpus` is the
/// guest's count.
fn numa_and_realtime(path: &str, domain: &Value, vcpus: u64, causes: &mut Vec<Cause>) {
    let cpu = &domain["cpu"];
    let dedicated = cpu["dedicatedCpuPlacement"].as_bool() == Some(true);
    let numa = cpu["numa"]["guestMappingPassthrough"].is_object();
    let numa_field = format!("{path}.domain.cpu.numa.guestMappingPassthrough");
    let dedicated_field = format!("{path}.domain.cpu.dedicatedCpuPlacement");
    if numa && !dedicated {
        causes.push(Cause::invalid(
            &numa_field,
            format!(
                "{numa_field} maps the guest's vCPUs to the host NUMA nodes of their dedicated CPUs: set {dedicated_field} to true"
            ),
        ));
    }
    if numa && !domain["memory"]["hugepages"].is_object() {
        causes.push(Cause::invalid(
            &numa_field,
            format!(
                "{numa_field} puts each guest NUMA cell's memory on its host node's hugepages: set {path}.domain.memory.hugepages"
            ),
        ));
    }
    if !cpu["realtime"].is_object() {
        return;
    }
    let realtime_field = format!("{path}.domain.cpu.realtime");
    if !dedicated {
        causes.push(Cause::required(
            &dedicated_field,
            format!(
                "{realtime_field} runs the vCPUs at realtime priority on CPUs of their own: set {dedicated_field} to true"
            ),
        ));
    }
    if !numa {
        causes.push(Cause::required(
            &numa_field,
            format!(
                "{realtime_field} needs the guest's NUMA cells on the host's: set {numa_field}"
            ),
        ));
    }
    let headroom = cpu["maxSockets"].as_u64().map_or(vcpus, |m| {
        m * cpu["cores"].as_u64().unwrap_or(1) * cpu["threads"].as_u64().unwrap_or(1)
    });
    let realtime: Result<crds::Realtime, _> = serde_json::from_value(cpu["realtime"].clone());
    if let Ok(r) = realtime
        && let Err(why) = r.vcpus(u32::try_from(headroom).unwrap_or(u32::MAX))
    {
        let field = format!("{realtime_field}.mask");
        causes.push(Cause::invalid(&field, format!("{field}: {why}")));
    }
}

fn machine(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let Some(t) = domain["machine"]["type"].as_str().filter(|t| !t.is_empty()) else {
        return;
    };
    let versioned = t
        .strip_prefix("pc-q35-")
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if t != "q35" && !versioned {
        let field = format!("{path}.domain.machine.type");
        causes.push(Cause::invalid(
            &field,
            format!("{field} is not supported: {t} (allowed values: {MACHINE_TYPES})"),
        ));
    }
}

fn firmware(path: &str, domain: &Value, causes: &mut Vec<Cause>) {
    let firmware = &domain["firmware"];
    if firmware["bootloader"]["bios"]["useSerial"] == true
        && domain["devices"]["autoattachSerialConsole"] == false
    {
        let field = format!("{path}.domain.firmware.bootloader.bios.useSerial");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field} needs the serial console, but {path}.domain.devices.autoattachSerialConsole is false"
            ),
        ));
    }
    let kernel_boot = &firmware["kernelBoot"];
    if kernel_boot.is_object() && kernel_boot["container"].is_null() {
        if kernel_boot["kernelArgs"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
        {
            let field = format!("{path}.domain.firmware.kernelBoot.kernelArgs");
            causes.push(Cause::invalid(
                &field,
                format!("{field}: kernel arguments cannot be provided without an external kernel"),
            ));
        } else {
            let field = format!("{path}.domain.firmware.kernelBoot.container");
            causes.push(Cause::required(
                &field,
                format!(
                    "{field} must be set: Ferrovirt boots a kernel only from a container image"
                ),
            ));
        }
    }
}

fn disks(path: &str, devices: &Value, causes: &mut Vec<Cause>) {
    let Some(disks) = devices["disks"].as_array() else {
        return;
    };
    let mut boot_orders = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let at = format!("{path}.domain.devices.disks[{i}]");
        if disk["cdrom"]["bus"] == "virtio" {
            let field = format!("{at}.cdrom.bus");
            causes.push(Cause::invalid(
                &field,
                format!("{field}: Bus type virtio is invalid for CD-ROM device"),
            ));
        }
        if disk["disk"]["bus"] == "sata" && disk["disk"]["readOnly"] == true {
            let field = format!("{at}.disk.bus");
            causes.push(Cause::invalid(
                &field,
                format!("{field}: sata hard-disks do not support read-only."),
            ));
        }
        if let Some(serial) = disk["serial"].as_str()
            && (serial.is_empty()
                || !serial
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            causes.push(Cause::invalid(
                format!("{at}.serial"),
                format!(
                    "{at} must be made up of the following characters [A-Za-z0-9_.-], if specified"
                ),
            ));
        }
        if let Some(order) = disk["bootOrder"].as_u64() {
            if boot_orders.contains(&order) {
                let field = format!("{at}.bootOrder");
                causes.push(Cause::invalid(
                    &field,
                    format!("Boot order for {field} already set for a different device."),
                ));
            }
            boot_orders.push(order);
        }
    }
}

/// KubeVirt's rules for the downwardMetrics volume: at most one, and its disk a disk on
/// the virtio bus. (Its feature gate is virt-handler's to check, in kubevirt-config.)
fn downward_metrics(path: &str, s: &Value, causes: &mut Vec<Cause>) {
    let volumes = s["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let metrics: Vec<&Value> = volumes
        .iter()
        .filter(|v| v.get("downwardMetrics").is_some())
        .collect();
    if metrics.len() > 1 {
        let field = format!("{path}.volumes");
        causes.push(Cause::invalid(
            &field,
            format!("{field} must have max one downwardMetric volume set"),
        ));
    }
    let disks = s["domain"]["devices"]["disks"].as_array();
    for (i, disk) in disks
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !metrics.iter().any(|v| v["name"] == disk["name"]) {
            continue;
        }
        let at = format!("{path}.domain.devices.disks[{i}].disk");
        if disk.get("disk").is_none() && (disk.get("cdrom").is_some() || disk.get("lun").is_some())
        {
            causes.push(Cause::required(
                &at,
                format!(
                    "DownwardMetrics volume must be mapped to a disk, but disk is not set on {at}."
                ),
            ));
        } else if let Some(bus) = disk["disk"]["bus"].as_str().filter(|b| *b != "virtio") {
            causes.push(Cause::invalid(
                format!("{at}.bus"),
                format!(
                    "DownwardMetrics volume must be mapped to virtio bus, but {at}.bus is set to {bus}"
                ),
            ));
        }
    }
}

fn interfaces(path: &str, s: &Value, causes: &mut Vec<Cause>) {
    networks_and_bindings(path, s, causes);
    if let Some(interfaces) = s["domain"]["devices"]["interfaces"].as_array() {
        for (i, iface) in interfaces.iter().enumerate() {
            let on_pod_network = s["networks"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["name"] == iface["name"] && n["pod"].is_object())
            });
            if on_pod_network {
                ports(
                    &format!("{path}.domain.devices.interfaces[{i}]"),
                    iface,
                    causes,
                );
            }
        }
    }
    if let Some(networks) = s["networks"].as_array() {
        for (i, network) in networks.iter().enumerate() {
            if let Some(cidr) = network["pod"]["vmNetworkCIDR"].as_str()
                && !is_ipv4_cidr(cidr)
            {
                let field = format!("{path}.networks[{i}].pod.vmNetworkCIDR");
                causes.push(Cause::invalid(
                    &field,
                    format!(
                        "{field} '{cidr}' is not an IPv4 network in CIDR form with a prefix of 1 to 30 bits"
                    ),
                ));
            }
        }
    }
}

/// KubeVirt's network admitter, for what the schema and CEL leave (an interface without a
/// network and unique network names are CEL rules): every network used by an interface,
/// interface names unique and of KubeVirt's characters, exactly one binding each, at most
/// one pod network. The node refuses the same (virt-handler/src/network/plan.rs).
fn networks_and_bindings(path: &str, s: &Value, causes: &mut Vec<Cause>) {
    let empty = Vec::new();
    let interfaces = s["domain"]["devices"]["interfaces"]
        .as_array()
        .unwrap_or(&empty);
    let networks = s["networks"].as_array().unwrap_or(&empty);
    let name = |v: &Value| v["name"].as_str().unwrap_or_default().to_owned();
    for (i, network) in networks.iter().enumerate() {
        if !interfaces.iter().any(|f| name(f) == name(network)) {
            let field = format!("{path}.networks[{i}].name");
            causes.push(Cause::required(
                &field,
                format!("{field} '{}' not found.", name(network)),
            ));
        }
    }
    if networks.iter().filter(|n| n["pod"].is_object()).count() > 1 {
        let field = format!("{path}.interfaces");
        causes.push(Cause::duplicate(
            &field,
            format!("more than one interface is connected to a pod network in {field}"),
        ));
    }
    for (i, iface) in interfaces.iter().enumerate() {
        let at = format!("{path}.domain.devices.interfaces[{i}]");
        let n = name(iface);
        if interfaces[..i].iter().any(|f| name(f) == n) {
            let field = format!("{at}.name");
            causes.push(Cause::duplicate(
                &field,
                format!("{field}: Only one interface can be connected to one specific network"),
            ));
        }
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            let field = format!("{at}.name");
            causes.push(Cause::invalid(
                &field,
                format!(
                    "{field}: Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)"
                ),
            ));
        }
        let bindings = [
            "bridge",
            "masquerade",
            "sriov",
            "passt",
            "passtBinding",
            "binding",
        ]
        .iter()
        .filter(|b| !iface[**b].is_null())
        .count();
        if bindings != 1 {
            causes.push(Cause::invalid(
                &at,
                format!(
                    "{at}: logical {n} interface must have exactly one binding method or binding plugin"
                ),
            ));
        }
        // KubeVirt runs a plugin's sidecar image; Ferrovirt implements one plugin itself,
        // so another name can never start (whether passt is registered in the cluster
        // configuration, virt-handler checks when the VMI starts).
        if let Some(plugin) = iface["binding"]["name"].as_str()
            && plugin != PASST_PLUGIN
        {
            let field = format!("{at}.binding.name");
            causes.push(Cause::invalid(
                &field,
                format!(
                    "{field}: network binding plugin '{plugin}' is not implemented: Ferrovirt implements '{PASST_PLUGIN}' (register it in kubevirt-config's ferrovirt.networkBindings)"
                ),
            ));
        }
        // KubeVirt keeps this MAC for the in-pod bridge of masquerade.
        if iface["masquerade"].is_object()
            && iface["macAddress"]
                .as_str()
                .is_some_and(|m| m.replace('-', ":").eq_ignore_ascii_case(RESERVED_MAC))
        {
            let field = format!("{at}.macAddress");
            causes.push(Cause::invalid(
                &field,
                format!(
                    "{field}: The requested MAC address is reserved for the in-pod bridge. Please choose another one."
                ),
            ));
        }
    }
}

/// The binding plugin Ferrovirt implements (virt-handler's `network::plan::PASST_PLUGIN`).
const PASST_PLUGIN: &str = "passt";
/// The MAC KubeVirt reserves for masquerade's in-pod bridge.
const RESERVED_MAC: &str = "02:00:00:00:00:00";

/// KubeVirt's rules for the `ports` of an interface on the pod network (number and
/// protocol are the schema's): names unique and IANA service names. Ferrovirt also
/// refuses them with the bridge binding, as the node would (docs/networking.md): a
/// bridged guest has the pod's address and gets every port, so a list that limits
/// nothing is refused rather than silently ignored.
fn ports(at: &str, iface: &Value, causes: &mut Vec<Cause>) {
    let Some(ports) = iface["ports"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    if iface["bridge"].is_object() {
        let field = format!("{at}.ports");
        causes.push(Cause::invalid(
            &field,
            format!(
                "{field}: ports are only forwarded with the masquerade binding (a bridged guest has the pod's address and gets every port)"
            ),
        ));
    }
    let mut seen = Vec::new();
    for (j, port) in ports.iter().enumerate() {
        let Some(name) = port["name"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        let field = format!("{at}.ports[{j}].name");
        if seen.contains(&name) {
            causes.push(Cause::duplicate(
                &field,
                format!("{field}: Duplicate name of the port: {name}"),
            ));
        }
        if !is_port_name(name) {
            causes.push(Cause::invalid(
                &field,
                format!("{field}: Invalid name of the port: {name}"),
            ));
        }
        seen.push(name);
    }
}

/// An IANA service name (Kubernetes' `IsValidPortName`): 1 to 15 lowercase letters,
/// digits and single hyphens inside, at least one letter.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// KubeVirt's limit on inline cloud-init data (`cloudInitUserMaxLen`,
/// `cloudInitNetworkMaxLen`): every edit of a VM sends the whole object to the nodes, so
/// more goes in a Secret (`userDataSecretRef`, `networkDataSecretRef`).
pub const CLOUD_INIT_MAX_BYTES: usize = 2048;

/// Base64 cloud-init data must decode (the node decodes it when it writes the disk),
/// inline user and network data, decoded, must fit in [`CLOUD_INIT_MAX_BYTES`], and a
/// volume must have some data (empty strings and names count as none), each refused
/// with KubeVirt's message. At most one source of each is the CRD's CEL rule.
fn cloud_init(path: &str, s: &Value, causes: &mut Vec<Cause>) {
    let Some(volumes) = s["volumes"].as_array() else {
        return;
    };
    for (i, volume) in volumes.iter().enumerate() {
        let source = &volume["cloudInitNoCloud"];
        if !source.is_object() {
            continue;
        }
        let at = format!("{path}.volumes[{i}].cloudInitNoCloud");
        let set = |v: &Value| v.as_str().is_some_and(|t| !t.is_empty());
        let any_source = [
            "userData",
            "userDataBase64",
            "networkData",
            "networkDataBase64",
        ]
        .iter()
        .any(|k| set(&source[*k]))
            || ["userDataSecretRef", "networkDataSecretRef"]
                .iter()
                .any(|k| set(&source[*k]["name"]));
        if !any_source {
            causes.push(Cause::invalid(
                &at,
                format!("{at} must have at least one userdatasource or one networkdatasource set."),
            ));
        }
        for (what, text_key, b64_key, secret_ref) in [
            (
                "userdata",
                "userData",
                "userDataBase64",
                "UserDataSecretRef",
            ),
            (
                "networkdata",
                "networkData",
                "networkDataBase64",
                "NetworkDataSecretRef",
            ),
        ] {
            let mut len = source[text_key].as_str().map_or(0, str::len);
            if let Some(text) = source[b64_key].as_str() {
                match serde_json::from_value::<k8s_openapi::ByteString>(Value::from(text)) {
                    Ok(bytes) => len = len.max(bytes.0.len()),
                    Err(_) => {
                        let field = format!("{at}.{b64_key}");
                        causes.push(Cause::invalid(
                            &field,
                            format!("{field} is not a valid base64 value."),
                        ));
                    }
                }
            }
            if len > CLOUD_INIT_MAX_BYTES {
                causes.push(Cause::invalid(
                    &at,
                    format!(
                        "{at} {what} exceeds {CLOUD_INIT_MAX_BYTES} byte limit. Should use {secret_ref} for larger data."
                    ),
                ));
            }
        }
    }
}

fn is_ipv4_cidr(cidr: &str) -> bool {
    cidr.split_once('/').is_some_and(|(addr, prefix)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| (1..=30).contains(&p))
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
