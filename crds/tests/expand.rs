//! Tables of the instancetype and preference expansion (crds::expand): what the instance
//! gets, what conflicts, and KubeVirt's CPU topologies.

use std::collections::BTreeMap;

use crds::expand::{self, Conflicts};
use crds::instancetype::{InstancetypeSpec, PreferenceSpec};
use crds::{DiskBus, InterfaceModel, VirtualMachineInstanceSpec};

fn it(yaml: &str) -> InstancetypeSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn pref(yaml: &str) -> PreferenceSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn spec(yaml: &str) -> VirtualMachineInstanceSpec {
    serde_yaml::from_str(yaml).unwrap()
}

const CLARGE: &str = "{cpu: {guest: 4}, memory: {guest: 2Gi}}";
const TEMPLATE: &str = r#"
domain:
  devices:
    disks: [{name: root}, {name: ci, disk: {bus: sata}}, {name: cd, cdrom: {}}]
    interfaces: [{name: default}]
networks: [{name: default, pod: {}}]
volumes: [{name: root, containerDisk: {image: cirros}}]
"#;

fn run(
    i: Option<&InstancetypeSpec>,
    p: Option<&PreferenceSpec>,
    s: &str,
) -> Result<(VirtualMachineInstanceSpec, BTreeMap<String, String>), Conflicts> {
    let mut spec = spec(s);
    let mut annotations = BTreeMap::from([("mine".to_string(), "1".to_string())]);
    expand::apply("spec.template.spec", i, p, &mut spec, &mut annotations)?;
    Ok((spec, annotations))
}

#[test]
fn an_instancetype_sets_vcpus_on_sockets_and_memory() {
    let (s, _) = run(Some(&it(CLARGE)), None, TEMPLATE).unwrap();
    let cpu = s.domain.cpu.unwrap();
    assert_eq!(
        (cpu.sockets, cpu.cores, cpu.threads),
        (Some(4), Some(1), Some(1))
    );
    assert_eq!(s.domain.memory.unwrap().guest.unwrap().0, "2Gi");
}

#[test]
fn a_template_that_sets_what_the_instancetype_sets_conflicts_by_name() {
    let rows = [
        (
            "domain: {memory: {guest: 128Mi}}",
            "spec.template.spec.domain.memory.guest",
        ),
        (
            "domain: {resources: {requests: {memory: 64Mi}}}",
            "spec.template.spec.domain.resources.requests.memory",
        ),
        (
            "domain: {resources: {limits: {memory: 64Mi}}}",
            "spec.template.spec.domain.resources.limits.memory",
        ),
        (
            "domain: {resources: {requests: {cpu: '1'}}}",
            "spec.template.spec.domain.resources.requests.cpu",
        ),
        (
            "domain: {resources: {limits: {cpu: '1'}}}",
            "spec.template.spec.domain.resources.limits.cpu",
        ),
        (
            "domain: {cpu: {sockets: 1}}",
            "spec.template.spec.domain.cpu.sockets",
        ),
        (
            "domain: {cpu: {cores: 2}}",
            "spec.template.spec.domain.cpu.cores",
        ),
        (
            "domain: {cpu: {threads: 2}}",
            "spec.template.spec.domain.cpu.threads",
        ),
        (
            "{domain: {}, nodeSelector: {a: b}}",
            "spec.template.spec.nodeSelector",
        ),
    ];
    let instancetype = it("{cpu: {guest: 2}, memory: {guest: 1Gi}, nodeSelector: {x: y}}");
    for (template, field) in rows {
        let err = run(Some(&instancetype), None, template).unwrap_err();
        assert_eq!(err.0, vec![field.to_string()], "{template}");
        assert_eq!(
            err.to_string(),
            format!("VM field(s) {field} conflicts with selected instance type")
        );
    }
    // A CPU model conflicts only when the instancetype sets one too.
    let with_model = it("{cpu: {guest: 2, model: Skylake-Client}, memory: {guest: 1Gi}}");
    let err = run(Some(&with_model), None, "domain: {cpu: {model: Haswell}}").unwrap_err();
    assert_eq!(
        err.0,
        vec!["spec.template.spec.domain.cpu.model".to_string()]
    );
    let (s, _) = run(Some(&it(CLARGE)), None, "domain: {cpu: {model: Haswell}}").unwrap();
    assert_eq!(s.domain.cpu.unwrap().model.as_deref(), Some("Haswell"));
    // An annotation of the instancetype with another value on the instance.
    let annotated =
        it("{cpu: {guest: 1}, memory: {guest: 1Gi}, annotations: {mine: '2', theirs: x}}");
    let err = run(Some(&annotated), None, TEMPLATE).unwrap_err();
    assert_eq!(err.0, vec!["annotations.mine".to_string()]);
}

#[test]
fn kubevirt_cpu_topologies() {
    // (preference, vCPUs, sockets, cores, threads)
    let rows = [
        ("{}", 4, (4, 1, 1)),
        ("{cpu: {preferredCPUTopology: sockets}}", 4, (4, 1, 1)),
        ("{cpu: {preferredCPUTopology: preferSockets}}", 4, (4, 1, 1)),
        ("{cpu: {preferredCPUTopology: any}}", 4, (4, 1, 1)),
        ("{cpu: {preferredCPUTopology: cores}}", 4, (1, 4, 1)),
        ("{cpu: {preferredCPUTopology: preferCores}}", 4, (1, 4, 1)),
        ("{cpu: {preferredCPUTopology: threads}}", 4, (1, 1, 4)),
        ("{cpu: {preferredCPUTopology: spread}}", 8, (4, 2, 1)),
        (
            "{cpu: {preferredCPUTopology: spread, spreadOptions: {ratio: 4}}}",
            8,
            (2, 4, 1),
        ),
        (
            "{preferSpreadSocketToCoreRatio: 4, cpu: {preferredCPUTopology: spread}}",
            8,
            (2, 4, 1),
        ),
        (
            "{cpu: {preferredCPUTopology: spread, spreadOptions: {across: CoresThreads}}}",
            8,
            (1, 4, 2),
        ),
        (
            "{cpu: {preferredCPUTopology: spread, spreadOptions: {across: SocketsCoresThreads}}}",
            8,
            (2, 2, 2),
        ),
        ("{cpu: {preferredCPUTopology: cores}}", 1, (1, 1, 1)),
    ];
    for (p, vcpus, want) in rows {
        assert_eq!(
            expand::topology(vcpus, Some(&pref(p))),
            want,
            "{p} with {vcpus} vCPUs"
        );
    }
    let spread = pref("{cpu: {preferredCPUTopology: spread}}");
    assert!(expand::spread_mismatch(8, Some(&spread)).is_none());
    let message = expand::spread_mismatch(3, Some(&spread)).expect("3 vCPUs do not spread by 2");
    assert!(message.contains("3 vCPUs"), "{message}");
    assert!(expand::spread_mismatch(3, Some(&pref("{}"))).is_none());
}

#[test]
fn preferences_fill_only_what_the_template_leaves_unset() {
    let p = pref(
        r#"
cpu: {preferredCPUTopology: cores}
devices:
  preferredDiskBus: sata
  preferredCdromBus: scsi
  preferredInterfaceModel: e1000e
  preferredInterfaceMasquerade: {}
  preferredAutoattachGraphicsDevice: false
  preferredRng: {}
features: {preferredAcpi: {enabled: false}}
firmware: {preferredUseEfi: true, preferredUseSecureBoot: false}
machine: {preferredMachineType: pc-q35-7.2}
preferredSubdomain: sub
preferredTerminationGracePeriodSeconds: 7
annotations: {mine: '2', theirs: x}
"#,
    );
    let (s, annotations) = run(Some(&it(CLARGE)), Some(&p), TEMPLATE).unwrap();
    let cpu = s.domain.cpu.as_ref().unwrap();
    assert_eq!(
        (cpu.sockets, cpu.cores, cpu.threads),
        (Some(1), Some(4), Some(1))
    );
    let disks = &s.domain.devices.disks;
    assert_eq!(
        disks[0].disk.as_ref().unwrap().bus,
        Some(DiskBus::Sata),
        "unset bus"
    );
    assert_eq!(
        disks[1].disk.as_ref().unwrap().bus,
        Some(DiskBus::Sata),
        "the template's"
    );
    assert_eq!(disks[2].cdrom.as_ref().unwrap().bus, Some(DiskBus::Scsi));
    assert_eq!(disks.len(), 3, "every volume has its disk already");
    let iface = &s.domain.devices.interfaces[0];
    assert_eq!(iface.model, Some(InterfaceModel::E1000e));
    assert!(iface.masquerade.is_some() && iface.bridge.is_none());
    assert_eq!(s.domain.devices.autoattach_graphics_device, Some(false));
    assert!(s.domain.devices.rng.is_some());
    assert_eq!(
        s.domain
            .features
            .as_ref()
            .unwrap()
            .acpi
            .as_ref()
            .unwrap()
            .enabled,
        Some(false)
    );
    let boot = s
        .domain
        .firmware
        .as_ref()
        .unwrap()
        .bootloader
        .as_ref()
        .unwrap();
    assert_eq!(boot.efi.as_ref().unwrap().secure_boot, Some(false));
    assert!(boot.bios.is_none());
    assert_eq!(
        s.domain.machine.as_ref().unwrap().machine_type.as_deref(),
        Some("pc-q35-7.2")
    );
    assert_eq!(s.subdomain.as_deref(), Some("sub"));
    assert_eq!(s.termination_grace_period_seconds, Some(7));
    assert_eq!(
        annotations["mine"], "1",
        "the instance's own annotation wins"
    );
    assert_eq!(annotations["theirs"], "x");

    // What the template sets wins over every preference.
    let set = r#"
domain:
  machine: {type: q35}
  features: {acpi: {enabled: true}}
  firmware: {bootloader: {bios: {}}}
  devices:
    autoattachGraphicsDevice: true
    disks: [{name: root, disk: {bus: virtio}}]
    interfaces: [{name: default, model: virtio, bridge: {}}]
networks: [{name: default, pod: {}}]
subdomain: own
terminationGracePeriodSeconds: 0
"#;
    let (s, _) = run(None, Some(&p), set).unwrap();
    assert_eq!(
        s.domain.machine.unwrap().machine_type.as_deref(),
        Some("q35")
    );
    assert_eq!(s.domain.features.unwrap().acpi.unwrap().enabled, Some(true));
    let boot = s.domain.firmware.unwrap().bootloader.unwrap();
    assert!(boot.bios.is_some() && boot.efi.is_none());
    assert_eq!(s.domain.devices.autoattach_graphics_device, Some(true));
    assert_eq!(
        s.domain.devices.disks[0].disk.as_ref().unwrap().bus,
        Some(DiskBus::Virtio)
    );
    let iface = &s.domain.devices.interfaces[0];
    assert_eq!(iface.model, Some(InterfaceModel::Virtio));
    assert!(iface.masquerade.is_none());
    assert_eq!(s.subdomain.as_deref(), Some("own"));
    assert_eq!(s.termination_grace_period_seconds, Some(0));
    assert!(s.domain.cpu.is_none(), "no instancetype: no topology");
}

#[test]
fn the_preferred_bus_reaches_the_disk_of_a_volume_without_one() {
    let p = pref("{devices: {preferredDiskBus: sata}}");
    let (s, _) = run(
        None,
        Some(&p),
        "{domain: {memory: {guest: 64Mi}}, volumes: [{name: root, containerDisk: {image: c}}]}",
    )
    .unwrap();
    let disk = &s.domain.devices.disks[0];
    assert_eq!(
        (disk.name.as_str(), disk.disk.as_ref().unwrap().bus),
        ("root", Some(DiskBus::Sata))
    );
}

#[test]
fn the_preferred_model_reaches_the_default_interface() {
    let p = pref("{devices: {preferredInterfaceModel: e1000e, preferredInterfaceMasquerade: {}}}");
    let (s, _) = run(None, Some(&p), "domain: {memory: {guest: 64Mi}}").unwrap();
    assert_eq!(s.networks.len(), 1);
    assert!(s.networks[0].pod.is_some());
    let iface = &s.domain.devices.interfaces[0];
    assert_eq!(
        (iface.name.as_str(), iface.model),
        ("default", Some(InterfaceModel::E1000e))
    );
    // As in KubeVirt, the default interface has its binding (bridge) before the
    // preference's masquerade could apply.
    assert!(iface.bridge.is_some() && iface.masquerade.is_none());
}

#[test]
fn bios_and_preferred_efi() {
    let (s, _) = run(
        None,
        Some(&pref(
            "{firmware: {preferredUseBios: true, preferredUseBiosSerial: true}}",
        )),
        "domain: {}",
    )
    .unwrap();
    let boot = s.domain.firmware.unwrap().bootloader.unwrap();
    assert_eq!(boot.bios.unwrap().use_serial, Some(true));
    let (s, _) = run(
        None,
        Some(&pref(
            "{firmware: {preferredEfi: {secureBoot: false}, preferredUseSecureBoot: true}}",
        )),
        "domain: {}",
    )
    .unwrap();
    let boot = s.domain.firmware.unwrap().bootloader.unwrap();
    assert_eq!(
        boot.efi.unwrap().secure_boot,
        Some(false),
        "preferredEfi wins"
    );
}

#[test]
fn conflicts_leave_preferences_unapplied() {
    let p = pref("{machine: {preferredMachineType: pc-q35-7.2}}");
    let err = run(
        Some(&it(CLARGE)),
        Some(&p),
        "domain: {memory: {guest: 1Gi}, cpu: {cores: 1}}",
    )
    .unwrap_err();
    assert_eq!(
        err.0,
        vec![
            "spec.template.spec.domain.cpu.cores".to_string(),
            "spec.template.spec.domain.memory.guest".to_string()
        ]
    );
}

#[test]
fn the_kubevirt_example_clarge_reads() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/kubevirt-examples/clarge.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let clarge: crds::VirtualMachineInstancetype = serde_yaml::from_str(&text).unwrap();
    assert_eq!(clarge.spec.spec.cpu.guest, 4);
    assert_eq!(clarge.spec.spec.memory.guest.0, "2Gi");
}

#[test]
fn an_instancetype_sets_hugepages_overcommit_iothreads_and_scheduler() {
    let instancetype = it(
        "{cpu: {guest: 2}, memory: {guest: 2Gi, hugepages: {pageSize: 2Mi}}, \
         ioThreadsPolicy: auto, schedulerName: edge-scheduler}",
    );
    let (s, _) = run(Some(&instancetype), None, TEMPLATE).unwrap();
    let memory = s.domain.memory.as_ref().unwrap();
    assert_eq!(
        serde_json::to_value(&memory.hugepages).unwrap(),
        serde_json::json!({"pageSize": "2Mi"})
    );
    assert_eq!(
        serde_json::to_value(s.domain.io_threads_policy).unwrap(),
        serde_json::json!("auto")
    );
    assert_eq!(s.scheduler_name.as_deref(), Some("edge-scheduler"));
    // KubeVirt's overcommit: the instance requests the guest memory less the percentage.
    for (percent, request) in [(25, "1536Mi"), (10, "1932735283"), (100, "0Mi")] {
        let over = it(&format!(
            "{{cpu: {{guest: 1}}, memory: {{guest: 2Gi, overcommitPercent: {percent}}}}}"
        ));
        let (s, _) = run(Some(&over), None, TEMPLATE).unwrap();
        let requests = s.domain.resources.unwrap().requests.unwrap();
        assert_eq!(requests["memory"].0, request, "{percent}%");
        assert_eq!(s.domain.memory.unwrap().guest.unwrap().0, "2Gi");
    }
    // What the template sets itself conflicts, by name.
    let rows = [
        (
            "domain: {memory: {hugepages: {pageSize: 1Gi}}}",
            "spec.template.spec.domain.memory.hugepages",
        ),
        (
            "domain: {ioThreadsPolicy: shared}",
            "spec.template.spec.domain.ioThreadsPolicy",
        ),
        (
            "{domain: {}, schedulerName: other}",
            "spec.template.spec.schedulerName",
        ),
    ];
    for (template, field) in rows {
        let err = run(Some(&instancetype), None, template).unwrap_err();
        assert_eq!(err.0, vec![field.to_string()], "{template}");
    }
}

#[test]
fn device_and_feature_preferences_fill_what_the_template_leaves_unset() {
    let preference = pref(
        "{devices: {preferredTPM: {}, preferredAutoattachMemBalloon: false, \
         preferredBlockMultiQueue: true, preferredDiskDedicatedIoThread: true, \
         preferredNetworkInterfaceMultiQueue: true, preferredVideoType: virtio, \
         preferredDiskBus: virtio, preferredInputBus: virtio, \
         preferredUseVirtioTransitional: true}, \
         features: {preferredSmm: {}}}",
    );
    let template = r#"
domain:
  devices:
    disks: [{name: root}, {name: ci, disk: {bus: sata}}, {name: own, dedicatedIOThread: false}]
    inputs: [{name: t, type: tablet}, {name: u, type: tablet, bus: usb}]
volumes: [{name: root, containerDisk: {image: cirros}}]
"#;
    let (s, _) = run(None, Some(&preference), template).unwrap();
    let d = &s.domain.devices;
    assert!(d.tpm.is_some());
    assert_eq!(d.autoattach_mem_balloon, Some(false));
    assert_eq!(d.block_multi_queue, Some(true));
    assert_eq!(d.network_interface_multiqueue, Some(true));
    assert_eq!(d.use_virtio_transitional, Some(true));
    assert_eq!(
        d.video.as_ref().map(|v| v.type_),
        Some(crds::VideoType::Virtio)
    );
    let dedicated: Vec<(&str, Option<bool>)> = d
        .disks
        .iter()
        .map(|k| (k.name.as_str(), k.dedicated_io_thread))
        .collect();
    // Only virtio disks get it (the sata one does not), and the template's own value stays.
    assert_eq!(
        dedicated,
        [("root", Some(true)), ("ci", None), ("own", Some(false))]
    );
    let buses: Vec<String> = d
        .inputs
        .iter()
        .map(|i| serde_json::to_value(i.bus).unwrap().to_string())
        .collect();
    assert_eq!(buses, ["\"virtio\"", "\"usb\""]);
    assert!(s.domain.features.unwrap().smm.is_some());
    // The template's own choices win.
    let own = "domain: {devices: {tpm: {enabled: false}, blockMultiQueue: false, autoattachMemBalloon: true, useVirtioTransitional: false}, features: {smm: {enabled: false}}}";
    let (s, _) = run(None, Some(&preference), own).unwrap();
    let d = &s.domain.devices;
    assert_eq!(d.tpm.as_ref().unwrap().enabled, Some(false));
    assert_eq!(d.block_multi_queue, Some(false));
    assert_eq!(d.autoattach_mem_balloon, Some(true));
    assert_eq!(d.use_virtio_transitional, Some(false));
    assert_eq!(s.domain.features.unwrap().smm.unwrap().enabled, Some(false));
}

#[test]
fn preference_requirements_are_checked_as_kubevirt_checks_them() {
    let preference = pref("{requirements: {cpu: {guest: 2}, memory: {guest: 2Gi}}}");
    let check = |i: Option<&InstancetypeSpec>, p: &PreferenceSpec, s: &str| {
        expand::check_requirements("spec.template.spec", i, Some(p), &spec(s))
    };
    // An instancetype that provides enough, or too little.
    assert_eq!(check(Some(&it(CLARGE)), &preference, "domain: {}"), Ok(()));
    let small = it("{cpu: {guest: 1}, memory: {guest: 4Gi}}");
    let err = check(Some(&small), &preference, "domain: {}").unwrap_err();
    assert_eq!(err.fields, ["spec.instancetype"]);
    assert_eq!(
        err.to_string(),
        "failure checking preference requirements: insufficient CPU resources of 1 vCPU provided by instance type, preference requires 2 vCPU"
    );
    let err = check(
        Some(&it("{cpu: {guest: 4}, memory: {guest: 1Gi}}")),
        &preference,
        "domain: {}",
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "insufficient Memory resources of 1Gi provided by instance type, preference requires 2Gi"
    );
    // Without an instancetype: the template's CPUs as the preference lays them out.
    let enough = "domain: {cpu: {sockets: 2}, memory: {guest: 2Gi}}";
    assert_eq!(check(None, &preference, enough), Ok(()));
    let err = check(
        None,
        &preference,
        "domain: {cpu: {cores: 2}, memory: {guest: 2Gi}}",
    )
    .unwrap_err();
    assert_eq!(err.fields, ["spec.template.spec.domain.cpu.sockets"]);
    assert!(
        err.message.contains("provided as sockets"),
        "{}",
        err.message
    );
    let on_cores = pref("{cpu: {preferredCPUTopology: cores}, requirements: {cpu: {guest: 2}}}");
    assert_eq!(check(None, &on_cores, "domain: {cpu: {cores: 2}}"), Ok(()));
    let err = check(
        None,
        &preference,
        "domain: {cpu: {sockets: 2}, resources: {requests: {memory: 1Gi}}}",
    )
    .unwrap_err();
    assert_eq!(err.fields, ["spec.template.spec.domain.memory"]);
    assert!(
        err.message.contains("of 1Gi provided by VirtualMachine"),
        "{}",
        err.message
    );
    // No requirements, nothing to check.
    assert_eq!(check(None, &pref("{}"), "domain: {}"), Ok(()));
}

#[test]
fn kubevirts_desktop_and_fedora_preferences_apply() {
    // As KubeVirt's rhel.9.desktop: architecture, requirements and an autoattached tablet
    // on the preferred bus.
    let desktop = pref(
        "{preferredArchitecture: amd64, requirements: {architecture: amd64}, \
         devices: {preferredAutoattachInputDevice: true, preferredInputBus: virtio, \
         preferredInputType: tablet}}",
    );
    let (s, _) = run(None, Some(&desktop), TEMPLATE).unwrap();
    assert_eq!(s.architecture.as_deref(), Some("amd64"));
    let inputs: Vec<(String, String)> = s
        .domain
        .devices
        .inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                serde_json::to_value(i.bus).unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        inputs,
        [("default-0".to_string(), "\"virtio\"".to_string())]
    );
    // A template with its own input keeps it and gets none added.
    let own = "domain: {devices: {inputs: [{name: mine, type: tablet, bus: usb}]}}";
    let (s, _) = run(None, Some(&desktop), own).unwrap();
    assert_eq!(s.domain.devices.inputs.len(), 1);
    assert_eq!(s.domain.devices.inputs[0].name, "mine");
    // The architecture requirement, against the default (amd64) or what the VM names.
    let check = |p: &PreferenceSpec, s: &str| {
        expand::check_requirements("spec.template.spec", None, Some(p), &spec(s))
    };
    assert_eq!(check(&desktop, "domain: {}"), Ok(()));
    let arm = pref("{requirements: {architecture: arm64}}");
    let err = check(&arm, "domain: {}").unwrap_err();
    assert_eq!(err.fields, ["spec.template.spec.architecture"]);
    assert_eq!(
        err.message,
        "preference requires architecture arm64 but amd64 is being requested"
    );
}

#[test]
fn kubevirts_cx1_and_rt1_cpu_fields_reach_the_instance_and_conflict_by_name() {
    // KubeVirt's cx1.medium and rt1.medium CPU sections.
    let cx1 = it(
        "{cpu: {guest: 1, dedicatedCPUPlacement: true, isolateEmulatorThread: true, \
                  maxSockets: 1, numa: {guestMappingPassthrough: {}}}, \
                  memory: {guest: 2Gi, hugepages: {pageSize: 2Mi}}}",
    );
    let (s, _) = run(Some(&cx1), None, TEMPLATE).unwrap();
    let cpu = s.domain.cpu.unwrap();
    assert!(cpu.numa_passthrough());
    assert_eq!(cpu.max_sockets, Some(1));
    assert_eq!(cpu.realtime, None);
    let rt1 = it("{cpu: {guest: 1, dedicatedCPUPlacement: true, \
                  numa: {guestMappingPassthrough: {}}, realtime: {}}, \
                  memory: {guest: 4Gi, hugepages: {pageSize: 1Gi}}}");
    let (s, _) = run(Some(&rt1), None, TEMPLATE).unwrap();
    assert_eq!(s.domain.cpu.unwrap().realtime, Some(Default::default()));
    // The VM's own numa or realtime conflicts with the instancetype's; its maxSockets
    // gives way to the instancetype's, as in KubeVirt.
    for (template, field) in [
        (
            "domain: {cpu: {numa: {guestMappingPassthrough: {}}}}",
            "numa",
        ),
        ("domain: {cpu: {realtime: {mask: '0'}}}", "realtime"),
    ] {
        let err = run(Some(&rt1), None, template).unwrap_err();
        assert_eq!(
            err.0,
            vec![format!("spec.template.spec.domain.cpu.{field}")],
            "{template}"
        );
    }
    let (s, _) = run(Some(&cx1), None, "domain: {cpu: {maxSockets: 4}}").unwrap();
    assert_eq!(s.domain.cpu.unwrap().max_sockets, Some(1));
}
