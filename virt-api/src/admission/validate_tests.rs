//! Tables of refused and accepted specs: each refused one must name its field, in the
//! cause and in the message a client prints.

use serde_json::{Value, json};

use super::*;

/// A spec the node side runs: 64Mi of memory, one containerDisk.
fn good() -> Value {
    json!({
        "domain": {"resources": {"requests": {"memory": "64Mi"}},
                   "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
        "volumes": [{"name": "root", "containerDisk": {"image": "cirros"}}]
    })
}

/// `good()` with the JSON `value` at `pointer` (created as needed).
fn with(pointer: &str, value: Value) -> Value {
    let mut s = good();
    let mut at = &mut s;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match at {
            Value::Array(a) => {
                let idx: usize = part.parse().unwrap();
                &mut a[idx]
            }
            _ => {
                let map = at.as_object_mut().unwrap();
                if last {
                    map.insert(part.to_string(), value);
                    return s;
                }
                map.entry(part.to_string()).or_insert(json!({}))
            }
        };
        if last {
            *at = value;
            return s;
        }
    }
    s
}

/// `good()` with `iface` as its only interface, on the pod network.
fn on_pod_network(iface: Value) -> Value {
    let mut s = with("/domain/devices/interfaces", json!([iface]));
    s["networks"] = json!([{"name": "default", "pod": {}}]);
    s
}

fn b64(data: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(data.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn push(list: &mut Value, item: Value) {
    list.as_array_mut().unwrap().push(item);
}

#[test]
fn the_good_spec_is_accepted() {
    assert_eq!(spec("spec", &good()), vec![]);
    // Dedicated CPUs: whole, requested as limited, or from the topology.
    for (cpu, resources) in [
        (
            json!({"dedicatedCpuPlacement": true, "isolateEmulatorThread": true}),
            json!({"requests": {"memory": "64Mi"}}),
        ),
        (
            json!({"dedicatedCpuPlacement": true, "cores": 2}),
            json!({"requests": {"memory": "64Mi", "cpu": "2"}, "limits": {"cpu": "2"}}),
        ),
    ] {
        let mut s = with("/domain/cpu", cpu);
        s["domain"]["resources"] = resources;
        assert_eq!(spec("spec", &s), vec![], "{s}");
    }
}

/// `good()` with `cpu`, in 2Mi hugepages when `hugepages`.
fn numa_realtime(cpu: Value, hugepages: bool) -> Value {
    let mut s = with("/domain/cpu", cpu);
    if hugepages {
        s["domain"]["memory"] = json!({"hugepages": {"pageSize": "2Mi"}});
    }
    s
}

#[test]
fn refused_table() {
    // (spec, the field named, a part of the message)
    let dedicated = |cpu: Value, resources: Value| {
        let mut s = with("/domain/cpu", cpu);
        s["domain"]["resources"] = resources;
        s
    };
    let rows: Vec<(Value, &str, &str)> = vec![
        (
            with("/domain/cpu", json!({"isolateEmulatorThread": true})),
            "spec.domain.cpu.isolateEmulatorThread",
            "IsolateEmulatorThread should be only set in combination with DedicatedCPUPlacement",
        ),
        (
            dedicated(
                json!({"dedicatedCpuPlacement": true}),
                json!({"requests": {"memory": "64Mi", "cpu": "1500m"}}),
            ),
            "spec.domain.resources.requests.cpu",
            "provided resources CPU requests must be an integer when DedicatedCPUPlacement is true (got '1500m')",
        ),
        (
            dedicated(
                json!({"dedicatedCpuPlacement": true}),
                json!({"requests": {"memory": "64Mi", "cpu": "1"}, "limits": {"cpu": "2"}}),
            ),
            "spec.domain.resources.requests.cpu",
            "spec.domain.resources.requests.cpu or spec.domain.resources.limits.cpu must be equal when DedicatedCPUPlacement is true",
        ),
        (
            dedicated(
                json!({"dedicatedCpuPlacement": true, "cores": 2}),
                json!({"requests": {"memory": "64Mi", "cpu": "1"}}),
            ),
            "spec.domain.resources.requests.cpu",
            "must not be provided at the same time with spec.domain.cpu.cores",
        ),
        (
            with(
                "/domain/cpu",
                json!({"dedicatedCpuPlacement": true, "threads": 4}),
            ),
            "spec.domain.cpu.threads",
            "Not more than two threads must be provided at spec.domain.cpu.threads (got 4)",
        ),
        (
            json!({"domain": {}}),
            "spec.domain.memory.guest",
            "no memory requested, at least one of 'spec.domain.memory.guest' or 'spec.domain.resources.requests.memory' must be set",
        ),
        (
            with("/domain/resources/requests/memory", json!("512Ki")),
            "spec.domain.resources.requests.memory",
            "spec.domain.resources.requests.memory '512Ki': must be greater than or equal to 1Mi.",
        ),
        (
            with("/domain/memory", json!({"guest": "1000k"})),
            "spec.domain.memory.guest",
            "spec.domain.memory.guest '1000k': must be greater than or equal to 1Mi.",
        ),
        (
            with("/domain/resources/limits", json!({"memory": "32Mi"})),
            "spec.domain.resources.requests.memory",
            "spec.domain.resources.requests.memory '64Mi' is greater than spec.domain.resources.limits.memory '32Mi'",
        ),
        (
            with("/domain/resources", json!({"limits": {"memory": "64Mi"}})).pipe(|mut s| {
                s["domain"]["memory"] = json!({"guest": "128Mi"});
                s
            }),
            "spec.domain.memory.guest",
            "spec.domain.memory.guest '128Mi' must be equal to or less than the memory limit spec.domain.resources.limits.memory '64Mi'",
        ),
        (
            with("/domain/memory", json!({"hugepages": {"pageSize": "1Gi"}})),
            "spec.domain.resources.requests.memory",
            "spec.domain.resources.requests.memory '64Mi' must be equal to or larger than page size spec.domain.memory.hugepages.pageSize '1Gi'",
        ),
        (
            with(
                "/domain",
                json!({"memory": {"guest": "65Mi", "hugepages": {"pageSize": "2Mi"}}, "devices": {}}),
            ),
            "spec.domain.memory.guest",
            "spec.domain.memory.guest '65Mi' is not a multiple of the page size spec.domain.memory.hugepages.pageSize '2Mi'",
        ),
        (
            with(
                "/domain/resources",
                json!({"requests": {"memory": "64Mi", "cpu": "2"}, "limits": {"cpu": "1"}}),
            ),
            "spec.domain.resources.requests.cpu",
            "spec.domain.resources.requests.cpu '2' is greater than spec.domain.resources.limits.cpu '1'",
        ),
        (
            with("/domain/cpu", json!({"sockets": 64, "cores": 16})),
            "spec.domain.cpu",
            "spec.domain.cpu: 1024 vCPUs",
        ),
        (
            with("/domain/resources/limits", json!({"cpu": "600"})),
            "spec.domain.cpu",
            "spec.domain.cpu: 600 vCPUs",
        ),
        (
            with("/domain/cpu", json!({"model": "Skylake Client"})),
            "spec.domain.cpu.model",
            "spec.domain.cpu.model 'Skylake Client' is not a CPU model",
        ),
        (
            with("/domain/machine", json!({"type": "pc-i440fx-7.2"})),
            "spec.domain.machine.type",
            "spec.domain.machine.type is not supported: pc-i440fx-7.2 (allowed values: [q35 pc-q35-*])",
        ),
        (
            with("/domain/machine", json!({"type": "pc-q35-"})),
            "spec.domain.machine.type",
            "is not supported: pc-q35-",
        ),
        (
            with(
                "/domain/firmware",
                json!({"bootloader": {"bios": {"useSerial": true}}}),
            )
            .pipe(|mut s| {
                s["domain"]["devices"]["autoattachSerialConsole"] = json!(false);
                s
            }),
            "spec.domain.firmware.bootloader.bios.useSerial",
            "spec.domain.firmware.bootloader.bios.useSerial needs the serial console",
        ),
        (
            with(
                "/domain/firmware",
                json!({"kernelBoot": {"kernelArgs": "console=ttyS0"}}),
            ),
            "spec.domain.firmware.kernelBoot.kernelArgs",
            "kernel arguments cannot be provided without an external kernel",
        ),
        (
            with("/domain/firmware", json!({"kernelBoot": {}})),
            "spec.domain.firmware.kernelBoot.container",
            "spec.domain.firmware.kernelBoot.container must be set",
        ),
        (
            with(
                "/domain/devices/disks/0",
                json!({"name": "root", "cdrom": {"bus": "virtio"}}),
            ),
            "spec.domain.devices.disks[0].cdrom.bus",
            "spec.domain.devices.disks[0].cdrom.bus: Bus type virtio is invalid for CD-ROM device",
        ),
        (
            with(
                "/domain/devices/disks/0",
                json!({"name": "root", "disk": {"bus": "sata", "readOnly": true}}),
            ),
            "spec.domain.devices.disks[0].disk.bus",
            "spec.domain.devices.disks[0].disk.bus: sata hard-disks do not support read-only.",
        ),
        (
            with("/domain/devices/disks/0/serial", json!("a+b")),
            "spec.domain.devices.disks[0].serial",
            "spec.domain.devices.disks[0] must be made up of the following characters [A-Za-z0-9_.-], if specified",
        ),
        (
            with("/domain/devices/disks/0/serial", json!("")),
            "spec.domain.devices.disks[0].serial",
            "must be made up of the following characters",
        ),
        (
            with(
                "/domain/devices/disks",
                json!([{"name": "root", "bootOrder": 1}, {"name": "ci", "bootOrder": 1}]),
            ),
            "spec.domain.devices.disks[1].bootOrder",
            "Boot order for spec.domain.devices.disks[1].bootOrder already set for a different device.",
        ),
        (
            with(
                "/volumes",
                json!([{"name": "root", "containerDisk": {"image": "cirros"}},
                       {"name": "m1", "downwardMetrics": {}}, {"name": "m2", "downwardMetrics": {}}]),
            ),
            "spec.volumes",
            "spec.volumes must have max one downwardMetric volume set",
        ),
        (
            with("/domain/devices/disks/0/disk/bus", json!("sata")).pipe(|mut s| {
                s["volumes"] = json!([{"name": "root", "downwardMetrics": {}}]);
                s
            }),
            "spec.domain.devices.disks[0].disk.bus",
            "DownwardMetrics volume must be mapped to virtio bus, but spec.domain.devices.disks[0].disk.bus is set to sata",
        ),
        (
            with(
                "/domain/devices/disks/0",
                json!({"name": "root", "cdrom": {}}),
            )
            .pipe(|mut s| {
                s["volumes"] = json!([{"name": "root", "downwardMetrics": {}}]);
                s
            }),
            "spec.domain.devices.disks[0].disk",
            "DownwardMetrics volume must be mapped to a disk, but disk is not set on spec.domain.devices.disks[0].disk.",
        ),
        (
            on_pod_network(json!({"name": "default", "bridge": {}, "ports": [{"port": 80}]})),
            "spec.domain.devices.interfaces[0].ports",
            "spec.domain.devices.interfaces[0].ports: ports are only forwarded with the masquerade binding",
        ),
        (
            on_pod_network(
                json!({"name": "default", "masquerade": {}, "ports": [{"name": "http", "port": 80}, {"name": "http", "port": 8080}]}),
            ),
            "spec.domain.devices.interfaces[0].ports[1].name",
            "spec.domain.devices.interfaces[0].ports[1].name: Duplicate name of the port: http",
        ),
        (
            on_pod_network(
                json!({"name": "default", "masquerade": {}, "ports": [{"name": "Web_1", "port": 80}]}),
            ),
            "spec.domain.devices.interfaces[0].ports[0].name",
            "spec.domain.devices.interfaces[0].ports[0].name: Invalid name of the port: Web_1",
        ),
        (
            on_pod_network(json!({"name": "default"})),
            "spec.domain.devices.interfaces[0]",
            "spec.domain.devices.interfaces[0]: logical default interface must have exactly one binding method or binding plugin",
        ),
        (
            on_pod_network(json!({"name": "default", "bridge": {}, "masquerade": {}})),
            "spec.domain.devices.interfaces[0]",
            "logical default interface must have exactly one binding method",
        ),
        (
            on_pod_network(json!({"name": "default", "passtBinding": {}, "masquerade": {}})),
            "spec.domain.devices.interfaces[0]",
            "logical default interface must have exactly one binding method",
        ),
        (
            on_pod_network(json!({"name": "default", "binding": {"name": "slirp"}})),
            "spec.domain.devices.interfaces[0].binding.name",
            "spec.domain.devices.interfaces[0].binding.name: network binding plugin 'slirp' is not implemented",
        ),
        (
            on_pod_network(
                json!({"name": "default", "masquerade": {}, "macAddress": "02-00-00-00-00-00"}),
            ),
            "spec.domain.devices.interfaces[0].macAddress",
            "spec.domain.devices.interfaces[0].macAddress: The requested MAC address is reserved for the in-pod bridge. Please choose another one.",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "default", "masquerade": {}}));
                push(&mut s["networks"], json!({"name": "spare"}));
                s
            },
            "spec.networks[1].name",
            "spec.networks[1].name 'spare' not found.",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "default", "masquerade": {}}));
                push(
                    &mut s["domain"]["devices"]["interfaces"],
                    json!({"name": "default", "bridge": {}}),
                );
                s
            },
            "spec.domain.devices.interfaces[1].name",
            "spec.domain.devices.interfaces[1].name: Only one interface can be connected to one specific network",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "a", "masquerade": {}}));
                s["networks"] = json!([{"name": "a", "pod": {}}, {"name": "b", "pod": {}}]);
                push(
                    &mut s["domain"]["devices"]["interfaces"],
                    json!({"name": "b", "bridge": {}}),
                );
                s
            },
            "spec.interfaces",
            "more than one interface is connected to a pod network in spec.interfaces",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "a.b", "masquerade": {}}));
                s["networks"][0]["name"] = json!("a.b");
                s
            },
            "spec.domain.devices.interfaces[0].name",
            "Network interface name can only contain alphabetical characters, numbers, dashes (-) or underscores (_)",
        ),
        (
            on_pod_network(
                json!({"name": "default", "masquerade": {}, "ports": [{"name": "a-very-long-port-name", "port": 80}]}),
            ),
            "spec.domain.devices.interfaces[0].ports[0].name",
            "Invalid name of the port: a-very-long-port-name",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "default", "masquerade": {}}));
                s["networks"][0]["pod"] = json!({"vmNetworkCIDR": "10.0.2.0/31"});
                s
            },
            "spec.networks[0].pod.vmNetworkCIDR",
            "spec.networks[0].pod.vmNetworkCIDR '10.0.2.0/31' is not an IPv4 network",
        ),
        (
            {
                let mut s = on_pod_network(json!({"name": "default", "masquerade": {}}));
                s["networks"][0]["pod"] = json!({"vmNetworkCIDR": "fd00::/64"});
                s
            },
            "spec.networks[0].pod.vmNetworkCIDR",
            "is not an IPv4 network",
        ),
        (
            with(
                "/volumes/0",
                json!({"name": "root", "cloudInitNoCloud": {"userDataBase64": "not base64!"}}),
            ),
            "spec.volumes[0].cloudInitNoCloud.userDataBase64",
            "spec.volumes[0].cloudInitNoCloud.userDataBase64 is not a valid base64 value.",
        ),
        (
            with(
                "/volumes/0",
                json!({"name": "root", "cloudInitNoCloud": {"userData": "", "networkDataBase64": ""}}),
            ),
            "spec.volumes[0].cloudInitNoCloud",
            "spec.volumes[0].cloudInitNoCloud must have at least one userdatasource or one networkdatasource set.",
        ),
        // KubeVirt's 2048-byte limit on inline data, counted after base64 decoding.
        (
            with(
                "/volumes/0",
                json!({"name": "root", "cloudInitNoCloud": {"userData": "x".repeat(2049)}}),
            ),
            "spec.volumes[0].cloudInitNoCloud",
            "spec.volumes[0].cloudInitNoCloud userdata exceeds 2048 byte limit. Should use UserDataSecretRef for larger data.",
        ),
        (
            with(
                "/volumes/0",
                json!({"name": "root", "cloudInitNoCloud": {"networkDataBase64": b64(&[0; 2049])}}),
            ),
            "spec.volumes[0].cloudInitNoCloud",
            "spec.volumes[0].cloudInitNoCloud networkdata exceeds 2048 byte limit. Should use NetworkDataSecretRef for larger data.",
        ),
        (
            with("/domain/cpu", json!({"sockets": 2, "maxSockets": 1})),
            "spec.domain.cpu.sockets",
            "spec.domain.cpu.sockets (2) is more than spec.domain.cpu.maxSockets (1)",
        ),
        (
            with("/domain/cpu", json!({"cores": 2, "maxSockets": 300})),
            "spec.domain.cpu.maxSockets",
            "600 vCPUs at most",
        ),
        (
            numa_realtime(json!({"numa": {"guestMappingPassthrough": {}}}), true),
            "spec.domain.cpu.numa.guestMappingPassthrough",
            "set spec.domain.cpu.dedicatedCpuPlacement to true",
        ),
        (
            numa_realtime(
                json!({"dedicatedCpuPlacement": true, "numa": {"guestMappingPassthrough": {}}}),
                false,
            ),
            "spec.domain.cpu.numa.guestMappingPassthrough",
            "set spec.domain.memory.hugepages",
        ),
        (
            numa_realtime(json!({"dedicatedCpuPlacement": true, "realtime": {}}), true),
            "spec.domain.cpu.numa.guestMappingPassthrough",
            "spec.domain.cpu.realtime needs the guest's NUMA cells on the host's",
        ),
        (
            numa_realtime(
                json!({"dedicatedCpuPlacement": true, "cores": 2,
                       "numa": {"guestMappingPassthrough": {}}, "realtime": {"mask": "0-2"}}),
                true,
            ),
            "spec.domain.cpu.realtime.mask",
            "names vCPU 2, but the guest has vCPUs 0 to 1",
        ),
        (
            with("/hostname", json!("My_Host")),
            "spec.hostname",
            "spec.hostname does not conform to the kubernetes DNS_LABEL rules : a lowercase RFC 1123 label",
        ),
        (
            with("/subdomain", json!("a..b")),
            "spec.subdomain",
            "spec.subdomain does not conform to the kubernetes DNS_SUBDOMAIN rules",
        ),
    ];
    for (s, field, message) in rows {
        let causes = spec("spec", &s);
        assert_eq!(causes.len(), 1, "{field}: {causes:?}\n{s}");
        assert_eq!(causes[0].field, field, "{s}");
        assert!(
            causes[0].message.contains(message),
            "{field}: {:?} lacks {message:?}",
            causes[0].message
        );
        assert!(
            causes[0].message.contains(field)
                || causes[0]
                    .message
                    .contains(field.rsplit_once('.').unwrap().0),
            "the message names the field: {}",
            causes[0].message
        );
    }
}

#[test]
fn a_guest_memory_defaulted_from_the_request_is_not_named_twice() {
    let mut s = with(
        "/domain/resources",
        json!({"requests": {"memory": "512Ki"}}),
    );
    s["domain"]["memory"] = json!({"guest": "512Ki"});
    let fields: Vec<String> = spec("spec", &s).into_iter().map(|c| c.field).collect();
    assert_eq!(fields, ["spec.domain.resources.requests.memory"]);
    let mut s = with("/domain/resources/limits", json!({"memory": "32Mi"}));
    s["domain"]["memory"] = json!({"guest": "64Mi"});
    let fields: Vec<String> = spec("spec", &s).into_iter().map(|c| c.field).collect();
    assert_eq!(fields, ["spec.domain.resources.requests.memory"]);
}

#[test]
fn accepted_table() {
    for s in [
        with("/domain/machine", json!({"type": "pc-q35-7.2"})),
        with(
            "/domain/cpu",
            json!({"model": "host-passthrough", "sockets": 2, "cores": 2}),
        ),
        with(
            "/domain/cpu",
            json!({"sockets": 8, "cores": 8, "threads": 8}),
        ),
        with(
            "/domain/resources/limits",
            json!({"memory": "64Mi", "cpu": "500m"}),
        ),
        with("/domain/memory", json!({"guest": "1Mi"})),
        with("/domain/memory", json!({"hugepages": {"pageSize": "2Mi"}})),
        // KubeVirt's cx1 and rt1 VMIs, and the hotplug headroom.
        numa_realtime(
            json!({"dedicatedCpuPlacement": true, "isolateEmulatorThread": true, "maxSockets": 1,
                   "numa": {"guestMappingPassthrough": {}}}),
            true,
        ),
        numa_realtime(
            json!({"dedicatedCpuPlacement": true, "sockets": 2, "maxSockets": 4,
                   "numa": {"guestMappingPassthrough": {}}, "realtime": {"mask": "0-3,^1"}}),
            true,
        ),
        with(
            "/domain/devices/disks/0",
            json!({"name": "root", "cdrom": {"bus": "sata"}}),
        ),
        with("/domain/devices/disks/0/serial", json!("disk-1_a.b")),
        // KubeVirt's downward metrics: the volume on a virtio disk (or a volume without a
        // disk, which gets one), and the device.
        with("/volumes", json!([{"name": "root", "downwardMetrics": {}}])).pipe(|mut s| {
            s["domain"]["devices"]["downwardMetrics"] = json!({});
            s
        }),
        with(
            "/volumes",
            json!([{"name": "root", "containerDisk": {"image": "cirros"}}, {"name": "m", "downwardMetrics": {}}]),
        ),
        {
            let mut s = on_pod_network(json!({"name": "default", "masquerade": {}}));
            s["networks"][0]["pod"] = json!({"vmNetworkCIDR": "10.1.0.0/16"});
            s
        },
        with("/hostname", json!("my-host")),
        // vmi-masquerade.yaml's interface, and ports of both protocols without names.
        on_pod_network(
            json!({"name": "default", "masquerade": {}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        ),
        on_pod_network(
            json!({"name": "default", "masquerade": {}, "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}, {"name": "web-8080", "port": 8080}]}),
        ),
        on_pod_network(json!({"name": "default", "bridge": {}, "ports": []})),
        // passt, the core binding and the plugin, with ports; another MAC with masquerade.
        on_pod_network(
            json!({"name": "default", "passtBinding": {}, "ports": [{"name": "http", "port": 80}]}),
        ),
        on_pod_network(json!({"name": "default", "binding": {"name": "passt"}})),
        on_pod_network(
            json!({"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}),
        ),
        with(
            "/volumes/0",
            json!({"name": "root", "cloudInitNoCloud": {"userDataBase64": "I2Nsb3VkLWNvbmZpZwo=", "networkDataBase64": ""}}),
        ),
        // At the limit, and larger data through Secrets.
        with(
            "/volumes/0",
            json!({"name": "root", "cloudInitNoCloud": {"userData": "x".repeat(2048), "networkDataBase64": b64(&[0; 2048])}}),
        ),
        with(
            "/volumes/0",
            json!({"name": "root", "cloudInitNoCloud": {"userDataSecretRef": {"name": "ud"}, "networkDataSecretRef": {"name": "nd"}}}),
        ),
        with("/subdomain", json!("a.b-c")),
        with(
            "/domain/firmware",
            json!({"kernelBoot": {"container": {"image": "k", "kernelPath": "/boot/vmlinuz"}}}),
        ),
        json!({"domain": {"resources": {"limits": {"memory": 67108864}}}}),
    ] {
        assert_eq!(spec("spec", &s), vec![], "{s}");
    }
}

#[test]
fn a_vm_names_template_fields_and_every_cause_is_kept() {
    let s =
        json!({"domain": {"machine": {"type": "pc"}, "cpu": {"model": "a b"}}, "hostname": "X"});
    let causes = spec("spec.template.spec", &s);
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.template.spec.hostname",
            "spec.template.spec.domain.memory.guest",
            "spec.template.spec.domain.cpu.model",
            "spec.template.spec.domain.machine.type",
        ]
    );
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}
