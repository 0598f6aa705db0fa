//! Golden tests of the domain conversion: every `tests/golden/<case>.yaml` VMI converts
//! to `tests/golden/<case>.xml`, which libvirt's own schema accepts
//! (`virt-xml-validate`). Regenerate with `UPDATE_GOLDEN=1 cargo test -p virt-handler
//! --test golden`. Unsupported values fail naming the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crds::VirtualMachineInstance;
use ferrovirt_node_contract::paths::{claim_device_in_pod, claim_dir_in_pod};
use kube::ResourceExt;
use serde::Deserialize;
use virt_handler::config::Virtualization;
use virt_handler::domain::{HostNode, Input, convert};
use virt_handler::volumes::{ClaimDir, HostDiskPolicy, plan};

const VMI_DIR: &str = "/var/run/ferrovirt/vmi";
/// The kernel-boot container's image as the launcher sees it (`/proc/<pid>/root`).
const KERNEL_ROOT: &str = "/proc/4242/root";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn convert_vmi(vmi: &VirtualMachineInstance) -> virt_handler::Result<String> {
    let virtualization = match vmi
        .annotations()
        .get("ferrovirt.test/virtualization")
        .map(String::as_str)
    {
        Some("emulation") => Virtualization::Emulation,
        _ => Virtualization::Kvm,
    };
    // Claims where the launcher pod mounts them, or has their device: the annotation
    // `ferrovirt.test/block-claims` names the volumes whose claim is in block mode.
    let block: Vec<String> = vmi
        .annotations()
        .get("ferrovirt.test/block-claims")
        .map(|names| names.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let pvcs: BTreeMap<String, ClaimDir> = vmi
        .spec
        .volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.claim_name().is_some())
        .map(|(i, v)| {
            let block = block.contains(&v.name);
            let dir = ClaimDir {
                launcher: PathBuf::from(match block {
                    true => claim_device_in_pod(i),
                    false => claim_dir_in_pod(i),
                }),
                in_pod: true,
                image_size: None,
                block,
            };
            (v.name.clone(), dir)
        })
        .collect();
    let vmi_dir = Path::new(VMI_DIR);
    // KubeVirt's example puts its host disk under /var/data, the goldens under /data:
    // the cluster allows both directories and has the HostDisk feature gate on.
    let host_disks = HostDiskPolicy::allow(&["/var/data", "/data"]);
    let plans = plan(&vmi.spec, vmi_dir, &pvcs, &host_disks)?;
    convert(&Input {
        namespace: &vmi.namespace().unwrap(),
        name: &vmi.name_any(),
        uid: &vmi.uid().unwrap(),
        spec: &vmi.spec,
        virtualization,
        vmi_dir,
        kernel_root: Path::new(KERNEL_ROOT),
        volumes: &plans,
        // A launcher pod with two CPUs of its own (the dedicated-CPU cases), on a host
        // with one NUMA node.
        pod_cpus: &[2, 3],
        host_nodes: &[HostNode {
            id: 0,
            cpus: vec![0, 1, 2, 3],
        }],
    })
}

fn validate(xml_file: &Path) {
    let out = Command::new("virt-xml-validate")
        .arg(xml_file)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (package libvirt-clients; run hack/setup.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("xmllint: not found"),
        "virt-xml-validate needs xmllint: install libxml2-utils (hack/setup.sh)"
    );
    assert!(
        out.status.success(),
        "libvirt's schema rejects {}: {}{}",
        xml_file.display(),
        String::from_utf8_lossy(&out.stdout),
        stderr
    );
}

#[test]
fn every_case_matches_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");
    let mut mismatched = Vec::new();
    for case in &cases {
        let vmi: VirtualMachineInstance =
            serde_yaml::from_str(&std::fs::read_to_string(case).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let xml = convert_vmi(&vmi)
            .unwrap_or_else(|e| panic!("{}: {}", case.display(), virt_handler::chain(&e)));
        let golden = case.with_extension("xml");
        if update {
            std::fs::write(&golden, &xml).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(xml.as_str()) {
            mismatched.push(format!("{}:\n{xml}", golden.display()));
        }
        validate(&golden);
    }
    assert!(
        mismatched.is_empty(),
        "conversion differs from the golden files (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatched.join("\n")
    );
}

/// (what, VMI spec as YAML, the field the error must name)
const REJECTED: &[(&str, &str, &str)] = &[
    (
        "host disk outside the allowed directories",
        "domain: {memory: {guest: 64Mi}, devices: {}}\nvolumes: [{name: h, hostDisk: {path: /etc/shadow, type: Disk}}]",
        "spec.volumes[0].hostDisk.path",
    ),
    (
        "host disk escaping with ..",
        "domain: {memory: {guest: 64Mi}, devices: {}}\nvolumes: [{name: h, hostDisk: {path: /var/data/../../tmp/x.img, type: DiskOrCreate, capacity: 1Mi}}]",
        "spec.volumes[0].hostDisk.path",
    ),
    (
        "no memory",
        "domain: {devices: {}}",
        "spec.domain.memory.guest",
    ),
    (
        "bad memory",
        "domain: {memory: {guest: 12Q}, devices: {}}",
        "spec.domain.memory.guest",
    ),
    (
        "i440fx",
        "domain: {memory: {guest: 64Mi}, machine: {type: pc}, devices: {}}",
        "spec.domain.machine.type",
    ),
    (
        "virtio cdrom",
        "domain: {memory: {guest: 64Mi}, devices: {disks: [{name: a, cdrom: {bus: virtio}}]}}\nvolumes: [{name: a, emptyDisk: {capacity: 1Gi}}]",
        "spec.domain.devices.disks[0].cdrom.bus",
    ),
    (
        "disk without volume",
        "domain: {memory: {guest: 64Mi}, devices: {disks: [{name: a}]}}",
        "spec.domain.devices.disks[0].name",
    ),
    (
        "interface without network",
        "domain: {memory: {guest: 64Mi}, devices: {interfaces: [{name: a}]}}",
        "spec.domain.devices.interfaces[0].name",
    ),
    (
        "ports",
        "domain: {memory: {guest: 64Mi}, devices: {interfaces: [{name: a, masquerade: {}, ports: [{port: 80}]}]}}\nnetworks: [{name: a, pod: {}}]",
        "spec.domain.devices.interfaces[0].ports",
    ),
    (
        "non-pod network",
        "domain: {memory: {guest: 64Mi}, devices: {interfaces: [{name: a}]}}\nnetworks: [{name: a}]",
        "spec.networks[0]",
    ),
    (
        "bad cidr",
        "domain: {memory: {guest: 64Mi}, devices: {interfaces: [{name: a}]}}\nnetworks: [{name: a, pod: {vmNetworkCIDR: nope}}]",
        "spec.networks[0].pod.vmNetworkCIDR",
    ),
    (
        "host-passthrough under TCG",
        "domain: {memory: {guest: 64Mi}, cpu: {model: host-passthrough}, devices: {}}",
        "spec.domain.cpu.model",
    ),
    (
        "bad cpu model",
        "domain: {memory: {guest: 64Mi}, cpu: {model: \"a b\"}, devices: {}}",
        "spec.domain.cpu.model",
    ),
    (
        "relative kernel path",
        "domain: {memory: {guest: 64Mi}, firmware: {kernelBoot: {container: {image: x, kernelPath: vmlinuz}}}, devices: {}}",
        "spec.domain.firmware.kernelBoot.container.kernelPath",
    ),
    (
        "kernel boot without container",
        "domain: {memory: {guest: 64Mi}, firmware: {kernelBoot: {kernelArgs: x}}, devices: {}}",
        "spec.domain.firmware.kernelBoot.container",
    ),
    (
        "useSerial without serial",
        "domain: {memory: {guest: 64Mi}, firmware: {bootloader: {bios: {useSerial: true}}}, devices: {autoattachSerialConsole: false}}",
        "spec.domain.firmware.bootloader.bios.useSerial",
    ),
    (
        "duplicate boot order",
        "domain: {memory: {guest: 64Mi}, devices: {disks: [{name: a, bootOrder: 1}, {name: b, bootOrder: 1}]}}\nvolumes: [{name: a, emptyDisk: {capacity: 1Gi}}, {name: b, emptyDisk: {capacity: 1Gi}}]",
        "bootOrder",
    ),
    (
        "bad disk serial",
        "domain: {memory: {guest: 64Mi}, devices: {disks: [{name: a, serial: \"a b\"}]}}\nvolumes: [{name: a, emptyDisk: {capacity: 1Gi}}]",
        "spec.domain.devices.disks[0].serial",
    ),
    (
        "kvmclock under TCG",
        "domain: {memory: {guest: 64Mi}, clock: {timer: {kvm: {}}}, devices: {}}",
        "spec.domain.clock.timer.kvm",
    ),
    (
        "hypervclock under TCG",
        "domain: {memory: {guest: 64Mi}, clock: {utc: {}, timer: {hyperv: {present: true}}}, devices: {}}",
        "spec.domain.clock.timer.hyperv",
    ),
    (
        "secure boot without SMM",
        "domain: {memory: {guest: 64Mi}, features: {smm: {enabled: false}}, firmware: {bootloader: {efi: {}}}, devices: {}}",
        "spec.domain.features.smm",
    ),
    (
        "watchdog without a model",
        "domain: {memory: {guest: 64Mi}, devices: {watchdog: {name: w}}}",
        "spec.domain.devices.watchdog",
    ),
    (
        "guest memory not a multiple of the hugepage size",
        "domain: {memory: {guest: 65Mi, hugepages: {pageSize: 2Mi}}, devices: {}}",
        "spec.domain.memory.hugepages.pageSize",
    ),
    (
        "supplementalPool IOThreads",
        "domain: {memory: {guest: 64Mi}, ioThreadsPolicy: supplementalPool, devices: {}}",
        "spec.domain.ioThreadsPolicy",
    ),
    (
        "a dedicated IOThread on a sata disk",
        "domain: {memory: {guest: 64Mi}, devices: {disks: [{name: a, disk: {bus: sata}, dedicatedIOThread: true}]}}\nvolumes: [{name: a, emptyDisk: {capacity: 1Gi}}]",
        "spec.domain.devices.disks[0].dedicatedIOThread",
    ),
    (
        "VSOCK without vhost_vsock",
        "domain: {memory: {guest: 64Mi}, devices: {autoattachVSOCK: true}}",
        "spec.domain.devices.autoattachVSOCK",
    ),
    (
        "zero empty disk",
        "domain: {memory: {guest: 64Mi}, devices: {}}\nvolumes: [{name: a, emptyDisk: {capacity: \"0\"}}]",
        "spec.volumes[0].emptyDisk.capacity",
    ),
];

#[test]
fn unsupported_values_fail_naming_the_field() {
    for (what, spec, field) in REJECTED {
        let doc = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: x, namespace: d, uid: u, annotations: {{ferrovirt.test/virtualization: emulation}}}}\nspec:\n{}",
            spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        let vmi: VirtualMachineInstance =
            serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{what}: {e}"));
        let err = convert_vmi(&vmi).expect_err(what);
        let text = err.to_string();
        assert!(
            text.contains(field),
            "{what}: {text:?} does not name {field}"
        );
        assert_eq!(err.reason(), "UnsupportedSpec", "{what}: {text}");
    }
}

#[test]
fn the_domain_xml_subcommand_prints_the_same_domain() {
    let case = golden_dir().join("kernel-boot-emulation.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_virt-handler"))
        .args([
            "domain-xml",
            "--emulation",
            "--vmi-dir",
            VMI_DIR,
            "--kernel-root",
            KERNEL_ROOT,
        ])
        .arg(&case)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(case.with_extension("xml")).unwrap()
    );
}

/// The examples of ../shared/kubevirt-examples whose conversion fails on purpose, and
/// the field the error names.
const EXAMPLES_REJECTED: &[(&str, &str)] = &[
    // User-mode networking forwards no ports (docs/virt-handler.md).
    (
        "vmi-masquerade.yaml",
        "spec.domain.devices.interfaces[0].ports",
    ),
];

/// The VMI spec inside a KubeVirt manifest: a VMI, or the template of a VM, a replica set
/// or a pool. `None` for other kinds.
fn vmi_of(doc: &serde_json::Value) -> Option<VirtualMachineInstance> {
    let template = match doc["kind"].as_str()? {
        "VirtualMachineInstance" => doc.clone(),
        "VirtualMachine" | "VirtualMachineInstanceReplicaSet" => doc["spec"]["template"].clone(),
        "VirtualMachinePool" => doc["spec"]["virtualMachineTemplate"]["spec"]["template"].clone(),
        _ => return None,
    };
    let vmi = serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {
            "name": doc["metadata"]["name"], "namespace": "default",
            "uid": "99999999-9999-4999-8999-999999999999",
            "annotations": {"ferrovirt.test/virtualization": "emulation"}
        },
        "spec": template["spec"],
    });
    Some(serde_json::from_value(vmi).unwrap_or_else(|e| panic!("{}: {e}", doc["metadata"]["name"])))
}

#[test]
fn kubevirt_examples_convert_to_valid_domains() {
    let files = ferrovirt_tests::example_files();
    let out = tempfile::tempdir().unwrap();
    let mut converted = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = serde_json::Value::deserialize(doc).unwrap();
            let Some(vmi) = vmi_of(&doc) else { continue };
            match (
                convert_vmi(&vmi),
                EXAMPLES_REJECTED.iter().find(|(f, _)| *f == name),
            ) {
                (Ok(xml), None) => {
                    let path = out.path().join(name.replace(".yaml", ".xml"));
                    std::fs::write(&path, xml).unwrap();
                    validate(&path);
                    converted += 1;
                }
                (Err(e), Some((_, field))) => assert!(e.to_string().contains(field), "{name}: {e}"),
                (Ok(_), Some(_)) => panic!("{name} converts now: take it off EXAMPLES_REJECTED"),
                (Err(e), None) => panic!("{name}: {}", virt_handler::chain(&e)),
            }
        }
    }
    assert!(converted >= 10, "only {converted} examples converted");
}
