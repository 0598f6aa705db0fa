//! Tables of KubeVirt's defaults: an input spec, and the fields it must come out with.

use serde_json::{Value, json};

use super::*;

fn vmi_with(spec: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": "v", "namespace": "n"}, "spec": spec})
}

fn defaulted(spec: Value) -> Value {
    let mut v = vmi_with(spec);
    vmi(&mut v);
    v["spec"].take()
}

#[test]
fn a_bare_vmi_gets_kubevirts_defaults() {
    let s = defaulted(json!({"domain": {"resources": {"requests": {"memory": "64Mi"}}}}));
    let d = &s["domain"];
    assert_eq!(d["machine"]["type"], "q35");
    assert_eq!(d["memory"]["guest"], "64Mi");
    assert_eq!(d["cpu"], json!({"sockets": 1, "cores": 1, "threads": 1}));
    assert_eq!(d["devices"]["autoattachSerialConsole"], true);
    assert_eq!(
        d["devices"]["interfaces"],
        json!([{"name": "default", "bridge": {}}])
    );
    assert_eq!(s["networks"], json!([{"name": "default", "pod": {}}]));
    let uuid = d["firmware"]["uuid"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
    // Not defaulted: the node picks the CPU model (host-model needs KVM), and a VMI with
    // no volumes has no disks.
    assert!(d["cpu"]["model"].is_null());
    assert!(d["devices"]["disks"].is_null());
}

#[test]
fn defaults_table() {
    // (what, input spec, JSON pointer below spec, expected value)
    let rows: Vec<(&str, Value, &str, Value)> = vec![
        (
            "machine type kept",
            json!({"domain": {"machine": {"type": "pc-q35-7.2"}}}),
            "/domain/machine/type",
            json!("pc-q35-7.2"),
        ),
        (
            "empty machine type",
            json!({"domain": {"machine": {"type": ""}}}),
            "/domain/machine/type",
            json!("q35"),
        ),
        (
            "guest memory from the limit",
            json!({"domain": {"resources": {"limits": {"memory": "1Gi"}}}}),
            "/domain/memory/guest",
            json!("1Gi"),
        ),
        (
            "request before limit",
            json!({"domain": {"resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "1Gi"}}}}),
            "/domain/memory/guest",
            json!("512Mi"),
        ),
        (
            "guest memory kept",
            json!({"domain": {"memory": {"guest": "2Gi"}, "resources": {"requests": {"memory": "1Gi"}}}}),
            "/domain/memory/guest",
            json!("2Gi"),
        ),
        (
            "integer memory request",
            json!({"domain": {"resources": {"requests": {"memory": 134217728}}}}),
            "/domain/memory/guest",
            json!(134217728),
        ),
        (
            "cpu request from the limit",
            json!({"domain": {"resources": {"limits": {"cpu": "2"}}}}),
            "/domain/resources/requests/cpu",
            json!("2"),
        ),
        (
            "sockets from the cpu limit",
            json!({"domain": {"resources": {"limits": {"cpu": "3"}, "requests": {"cpu": "1"}}}}),
            "/domain/cpu",
            json!({"sockets": 3, "cores": 1, "threads": 1}),
        ),
        (
            "sockets from the cpu request, rounded up",
            json!({"domain": {"resources": {"requests": {"cpu": "1500m"}}}}),
            "/domain/cpu/sockets",
            json!(2),
        ),
        (
            "a given topology is kept as given",
            json!({"domain": {"cpu": {"cores": 2}}}),
            "/domain/cpu",
            json!({"cores": 2}),
        ),
        (
            "model only: topology still defaulted",
            json!({"domain": {"cpu": {"model": "Skylake-Client"}}}),
            "/domain/cpu",
            json!({"model": "Skylake-Client", "sockets": 1, "cores": 1, "threads": 1}),
        ),
        (
            "a disk for each volume without one, in volume order",
            json!({"domain": {"devices": {"disks": [{"name": "b", "cdrom": {}}]}},
                   "volumes": [{"name": "a", "emptyDisk": {"capacity": "1Gi"}},
                               {"name": "b", "emptyDisk": {"capacity": "1Gi"}},
                               {"name": "c", "cloudInitNoCloud": {"userData": "x"}}]}),
            "/domain/devices/disks",
            json!([{"name": "b", "cdrom": {"bus": "sata", "readonly": true, "tray": "closed"}},
                   {"name": "a", "disk": {"bus": "virtio"}},
                   {"name": "c", "disk": {"bus": "virtio"}}]),
        ),
        (
            "no disk for a volume shared as a filesystem",
            json!({"domain": {"devices": {"filesystems": [{"name": "cm", "virtiofs": {}}]}},
                   "volumes": [{"name": "root", "emptyDisk": {"capacity": "1Gi"}},
                               {"name": "cm", "configMap": {"name": "app"}}]}),
            "/domain/devices/disks",
            json!([{"name": "root", "disk": {"bus": "virtio"}}]),
        ),
        (
            "a cdrom keeps the readonly and tray it has",
            json!({"domain": {"devices": {"disks": [{"name": "b", "cdrom": {"bus": "scsi", "readonly": false, "tray": "open"}}]}},
                   "volumes": [{"name": "b", "emptyDisk": {"capacity": "1Gi"}}]}),
            "/domain/devices/disks",
            json!([{"name": "b", "cdrom": {"bus": "scsi", "readonly": false, "tray": "open"}}]),
        ),
        (
            "a disk with no target is a virtio disk",
            json!({"domain": {"devices": {"disks": [{"name": "a"}, {"name": "b", "disk": {"readOnly": true}}]}},
                   "volumes": [{"name": "a", "emptyDisk": {"capacity": "1Gi"}}, {"name": "b", "emptyDisk": {"capacity": "1Gi"}}]}),
            "/domain/devices/disks",
            json!([{"name": "a", "disk": {"bus": "virtio"}}, {"name": "b", "disk": {"readOnly": true, "bus": "virtio"}}]),
        ),
        (
            "a given bus is kept",
            json!({"domain": {"devices": {"disks": [{"name": "a", "disk": {"bus": "scsi"}}]}},
                   "volumes": [{"name": "a", "emptyDisk": {"capacity": "1Gi"}}]}),
            "/domain/devices/disks/0/disk/bus",
            json!("scsi"),
        ),
        (
            "serial console off is kept",
            json!({"domain": {"devices": {"autoattachSerialConsole": false}}}),
            "/domain/devices/autoattachSerialConsole",
            json!(false),
        ),
        (
            "firmware uuid kept",
            json!({"domain": {"firmware": {"uuid": "11111111-2222-3333-4444-555555555555"}}}),
            "/domain/firmware/uuid",
            json!("11111111-2222-3333-4444-555555555555"),
        ),
        (
            "an interface given: no default network",
            json!({"domain": {"devices": {"interfaces": [{"name": "n1", "masquerade": {}}]}},
                   "networks": [{"name": "n1", "pod": {}}]}),
            "/networks",
            json!([{"name": "n1", "pod": {}}]),
        ),
        (
            "only a network given: no default interface",
            json!({"domain": {}, "networks": [{"name": "n1", "pod": {}}]}),
            "/domain/devices/interfaces",
            Value::Null,
        ),
    ];
    for (what, spec, pointer, want) in rows {
        let s = defaulted(spec);
        let got = s.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(got, want, "{what}: {s}");
    }
}

#[test]
fn a_vmi_of_a_vm_gets_the_vms_derived_uuid() {
    let mut v = vmi_with(json!({"domain": {}}));
    v["metadata"]["ownerReferences"] =
        json!([{"kind": "VirtualMachine", "name": "vm1", "controller": true, "uid": "x"}]);
    vmi(&mut v);
    assert_eq!(
        v["spec"]["domain"]["firmware"]["uuid"],
        firmware_uuid("vm1")
    );
}

#[test]
fn a_new_vmi_starts_without_the_status_its_manifest_carries() {
    let mut v = vmi_with(json!({"domain": {}}));
    v["status"] = json!({"phase": "Running", "nodeName": "elsewhere"});
    vmi(&mut v);
    assert!(v.get("status").is_none(), "{v}");
}

#[test]
fn a_vm_gets_machine_type_and_the_uuid_kubevirt_derives_from_its_name() {
    // KubeVirt's CalculateLegacyUUID("testvm"): uuid.NewSHA1(6a1a24a1-..., "testvm").
    let expected = uuid::Uuid::new_v5(
        &uuid::uuid!("6a1a24a1-4061-4607-8bf4-a3963d0c5895"),
        b"testvm",
    );
    assert_eq!(firmware_uuid("testvm"), expected.to_string());
    assert_eq!(expected.get_version_num(), 5);
    let mut v = json!({"metadata": {"name": "testvm"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}}});
    vm(&mut v);
    let domain = &v["spec"]["template"]["spec"]["domain"];
    assert_eq!(domain["machine"]["type"], "q35");
    assert_eq!(domain["firmware"]["uuid"], firmware_uuid("testvm"));
    let serial = domain["firmware"]["serial"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(serial).unwrap().get_version_num(), 4);
    let mut kept = json!({"metadata": {"name": "v"}, "spec": {"template": {"spec": {"domain": {
        "firmware": {"serial": "s-1", "uuid": "u"}}}}}});
    vm(&mut kept);
    assert_eq!(
        kept["spec"]["template"]["spec"]["domain"]["firmware"],
        json!({"serial": "s-1", "uuid": "u"})
    );
    // The VMI defaults are not written into the template (as in KubeVirt).
    assert!(domain["cpu"].is_null());
    assert!(v["spec"]["template"]["spec"]["networks"].is_null());
}

#[test]
fn objects_of_the_wrong_shape_are_left_for_the_schema_to_refuse() {
    for spec in [
        json!("nope"),
        json!({"domain": "nope"}),
        json!({"domain": {"devices": "x", "machine": 3}}),
        json!({"domain": {"devices": {"disks": "x"}}, "volumes": [{"name": "a"}]}),
    ] {
        // Must not panic.
        let _ = defaulted(spec);
    }
    let mut no_template = json!({"metadata": {"name": "v"}, "spec": {"runStrategy": "Always"}});
    vm(&mut no_template);
    assert_eq!(
        no_template,
        json!({"metadata": {"name": "v"}, "spec": {"runStrategy": "Always"}}),
        "a VM without a template is not given one"
    );
}
