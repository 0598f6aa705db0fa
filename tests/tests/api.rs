//! Ferrovirt's kubevirt.io/v1 CRDs on a real kube-apiserver: established, KubeVirt's example
//! manifests accepted or rejected by name, invalid VMs rejected naming the field, and
//! `kubectl explain` / `kubectl get` showing what KubeVirt users expect.

#[path = "api/admission.rs"]
mod admission;

use std::fmt::Write as _;

use ferrovirt_tests::{TestNamespace, example_files, examples_dir, shared};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

#[tokio::test]
async fn crds_are_established() {
    let cp = shared().await;
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await.unwrap());
    let expected = crds::all();
    assert!(!expected.is_empty(), "crds::all() returned no CRDs");
    for crd in expected {
        let name = crd.metadata.name.expect("a CRD has a name");
        let served = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        let conditions = served.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "CRD {name} is not {wanted}: {conditions:?}"
            );
        }
    }
    // The short names and categories resolve through discovery, as KubeVirt's do.
    let out = cp.kubectl(["get", "vm,vmi,vms,vmis", "-A"]).await.unwrap();
    out.expect_success();
    let out = cp.kubectl(["get", "kubevirt", "-A"]).await.unwrap();
    out.expect_success();
}

/// What `kubectl apply --dry-run=server` must do with a file.
#[derive(Debug)]
enum Expect {
    Accepted,
    /// Rejected, with this substring in kubectl's message.
    Rejected(&'static str),
}
use Expect::{Accepted, Rejected};

/// Every file of ../shared/kubevirt-examples/ and its expected outcome.
const EXAMPLES: &[(&str, Expect)] = &[
    // Accepted; with clarge stored and virt-api's webhook registered, vm-cirros-clarge.yaml
    // is refused as KubeVirt refuses it (its template sets memory.guest, which clarge sets):
    // tests/tests/instancetypes.rs.
    ("clarge.yaml", Accepted),
    ("vm-alpine-multipvc.yaml", Accepted),
    ("vm-cirros-clarge.yaml", Accepted),
    ("vm-cirros.yaml", Accepted),
    // Runs as KubeVirt's: operator/tests/controllers.rs
    // a_pool_from_kubevirts_example_scales_and_deletes_its_vms.
    ("vm-pool-cirros.yaml", Accepted),
    ("vmi-alpine-efi.yaml", Accepted),
    ("vmi-ephemeral.yaml", Accepted),
    ("vmi-fedora.yaml", Accepted),
    ("vmi-host-disk.yaml", Accepted),
    ("vmi-kernel-boot.yaml", Accepted),
    ("vmi-masquerade.yaml", Accepted),
    ("vmi-migratable.yaml", Accepted),
    ("vmi-nocloud.yaml", Accepted),
    ("vmi-pvc.yaml", Accepted),
    // Runs as KubeVirt's: operator/tests/controllers.rs
    // a_replica_set_from_kubevirts_example_scales_replaces_and_deletes_its_instances.
    ("vmi-replicaset-cirros.yaml", Accepted),
    ("vmi-sata.yaml", Accepted),
];

#[tokio::test]
async fn kubevirt_examples_dry_run() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "examples").await.unwrap();
    let files = example_files();
    let on_disk: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();

    let mut table = String::new();
    let mut failures = 0;
    for (file, path) in on_disk.iter().zip(&files) {
        let expect = EXAMPLES.iter().find(|(f, _)| f == file).map(|(_, e)| e);
        let out = cp.dry_run_apply(ns.name(), path).await.unwrap();
        let message = shown(&out);
        let ok = match expect {
            Some(Accepted) => out.success(),
            Some(Rejected(substring)) => !out.success() && out.stderr.contains(substring),
            None => false,
        };
        if !ok {
            failures += 1;
        }
        let _ = writeln!(
            table,
            "{mark} {file:<28} expected {expect:<70} got {got}: {message}",
            mark = if ok { "ok  " } else { "FAIL" },
            expect = match expect {
                Some(Accepted) => "accepted".to_string(),
                Some(Rejected(s)) => format!("rejected with {s}"),
                None => "(file not in the test's table)".to_string(),
            },
            got = if out.success() {
                "accepted"
            } else {
                "rejected"
            },
        );
    }
    for (file, _) in EXAMPLES {
        if !on_disk.iter().any(|f| f == file) {
            failures += 1;
            let _ = writeln!(
                table,
                "FAIL {file:<28} listed in the table but missing in {}",
                examples_dir().display()
            );
        }
    }
    println!("KubeVirt examples, kubectl apply --dry-run=server:\n{table}");
    assert_eq!(
        failures, 0,
        "{failures} example(s) did not behave as expected:\n{table}"
    );
}

/// Ferrovirt's own corpus (`tests/corpus/`): one manifest per feature of KubeVirt's user
/// guide that VM manifests use, written for Ferrovirt. Each is either accepted, and then
/// shown working where the user sees it by the test named (the README's table lists
/// them), or refused naming the field (or annotation). `kubectl apply --dry-run=server`
/// with the CRDs and admission policies installed.
const CORPUS: &[(&str, Expect, &str)] = &[
    (
        "run-strategy-manual.yaml",
        Accepted,
        "operator/tests/controllers.rs manual_acts_on_start_restart_and_stop_requests",
    ),
    (
        "cloud-init-nocloud.yaml",
        Accepted,
        "tests/tests/e2e.rs (the cloud-init line on the console)",
    ),
    (
        "cloud-init-secret.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (user and network data read in the guest; the VMI names a missing Secret)",
    ),
    (
        "node-placement.yaml",
        Accepted,
        "operator/src/pod.rs renders_the_contract; controllers.rs",
    ),
    (
        "dns-config.yaml",
        Accepted,
        "controllers.rs scheduling_and_dns_fields_reach_the_launcher_pod",
    ),
    (
        "scheduling.yaml",
        Accepted,
        "controllers.rs scheduling_and_dns_fields_reach_the_launcher_pod",
    ),
    (
        "start-paused.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused",
    ),
    (
        "cpu-features.yaml",
        Accepted,
        "node_defects.rs start_strategy_paused (flags in /proc/cpuinfo)",
    ),
    (
        "clock.yaml",
        Accepted,
        "node_defects.rs start_strategy_paused (RTC offset, no HPET)",
    ),
    (
        "watchdog.yaml",
        Accepted,
        "node_defects.rs start_strategy_paused (8086:25ab on the PCI bus)",
    ),
    (
        "rng-no-balloon.yaml",
        Accepted,
        "virt-handler/tests/golden.rs",
    ),
    (
        "masquerade-ports.yaml",
        Accepted,
        "tests/tests/network_real_node.rs",
    ),
    (
        "passt.yaml",
        Accepted,
        "tests/tests/network_real_node.rs masquerade_guests_are_reached_from_pods_and_from_each_other (the passt guest: the pod's IPv4 and IPv6 addresses from passt, port 80 forwarded, 8080 not)",
    ),
    ("efi.yaml", Accepted, "virt-handler/tests/golden.rs efi"),
    (
        "instancetype.yaml",
        Accepted,
        "tests/tests/instancetypes.rs",
    ),
    (
        "liveness-probe.yaml",
        Accepted,
        "operator/src/pod/probes.rs (an httpGet probe on the pod's address); tests/tests/e2e.rs probes_drive_ready_and_a_failing_liveness_probe_replaces_the_vmi",
    ),
    (
        "guest-agent-ping.yaml",
        Accepted,
        "tests/tests/e2e.rs probes_drive_ready_and_a_failing_liveness_probe_replaces_the_vmi (Ready only with the agent answering)",
    ),
    (
        "datavolume-template.yaml",
        Accepted,
        "tests/tests/instancetypes.rs a_vm_with_data_volume_templates_boots_from_the_claim_cdi_fills (with a stand-in for CDI: the VM creates the DataVolume, waits Provisioning, the guest boots from its claim); without CDI refused by virt-api naming the field (tests/tests/webhooks.rs)",
    ),
    (
        "multus.yaml",
        Rejected("spec.template.spec.networks[1].multus: Invalid value: Multus is not supported"),
        "",
    ),
    (
        "configmap-volume.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (a ConfigMap's key read in the guest from its cfgdata disk; the VMI names a missing ConfigMap)",
    ),
    (
        "secret-volume.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (a Secret's key read in the guest from its disk labelled by volumeLabel)",
    ),
    (
        "serviceaccount-volume.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (the ServiceAccount's namespace and token read in the guest from its cfgdata disk)",
    ),
    (
        "downwardapi-volume.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (the VMI's labels read in the guest from its disk)",
    ),
    (
        "downward-metrics.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (the metrics disk read in the guest twice, Time and the VM's TotalCPUTime grown; the vhostmd virtio-serial port answered); without the DownwardMetrics gate refused naming the field (virt-handler/tests/node_defects.rs)",
    ),
    (
        "cdrom-tray.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused (a read-only CD-ROM with its medium, one with its tray open and none); golden.rs disks-buses",
    ),
    (
        "hugepages.yaml",
        Accepted,
        "tests/tests/e2e.rs (the launcher pod's hugepages-2Mi, the host's free hugepages drop by the guest's memory while it runs)",
    ),
    (
        "dedicated-cpu.yaml",
        Accepted,
        "tests/tests/e2e.rs dedicated_cpus_pin_the_vcpu_to_the_pods_own_cpu (a Guaranteed launcher pod on the real node's static CPU manager, QEMU's vCPU thread on the pod's own CPU); golden.rs dedicated-cpus",
    ),
    (
        "numa-realtime.yaml",
        Accepted,
        "tests/tests/e2e.rs dedicated_cpus_pin_the_vcpu_to_the_pods_own_cpu (maxSockets: the guest's possible CPUs 0-1, online 0; NUMA passthrough: one guest node with its vCPU and memory; realtime: not scheduled where the node is not labelled kubevirt.io/realtime=true, as in KubeVirt); golden.rs numa-realtime-hotplug; virt-handler/tests/node_defects.rs start_strategy_paused (a paused realtime guest's vCPU 0 thread runs SCHED_FIFO)",
    ),
    (
        "tpm.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused (/sys/class/tpm/tpm0 in the guest, TPM 2.0)",
    ),
    (
        "tpm-persistent.yaml",
        Accepted,
        "tests/tests/instancetypes.rs a_persistent_tpm_keeps_its_state_on_the_vms_claim_across_a_restart (the VM's backend-storage claim; the guest's TPM state kept across a stop and start)",
    ),
    (
        "gpu.yaml",
        Rejected(
            "spec.template.spec.domain.devices.gpus: Invalid value: GPU passthrough is not supported",
        ),
        "",
    ),
    (
        "eviction-live-migrate.yaml",
        Rejected("need live migration"),
        "",
    ),
    (
        "hook-sidecar.yaml",
        Rejected("hooks.kubevirt.io/hookSidecars"),
        "",
    ),
    (
        "tablet.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs (a virtio tablet and a USB one's xHCI controller in the guest)",
    ),
    (
        "virtio-transitional.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused (transitional virtio ids on the guest's PCI bus); tests/tests/instancetypes.rs (the preference's field reaches the VMI); golden.rs virtio-transitional",
    ),
    (
        "guest-agent.yaml",
        Accepted,
        "tests/tests/guest_agent.rs (guestOSInfo, AgentConnected, virtctl guestosinfo/userlist/fslist)",
    ),
    (
        "io-threads.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused (QEMU runs the auto pool's and the dedicated IOThreads); golden.rs iothreads-multiqueue",
    ),
    (
        "io-threads-supplemental-pool.yaml",
        Rejected("spec.template.spec.domain.ioThreadsPolicy"),
        "",
    ),
    (
        "block-multiqueue.yaml",
        Accepted,
        "virt-handler/tests/node_defects.rs start_strategy_paused (2 queues in the guest's /sys/block/vda/mq with 2 vCPUs)",
    ),
    (
        "vsock.yaml",
        Rejected("spec.template.spec.domain.devices.autoattachVSOCK"),
        "",
    ),
    (
        "secure-boot.yaml",
        Accepted,
        "virt-handler/tests/golden.rs efi-secure-boot (SMM on; the test guest is unsigned)",
    ),
    (
        "virtiofs-configmap.yaml",
        Accepted,
        "tests/tests/e2e.rs run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff (the ConfigMap mounted in the guest with mount -t virtiofs and read); golden.rs virtiofs",
    ),
];

#[tokio::test]
async fn the_corpus_is_accepted_or_refused_by_name() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "corpus").await.unwrap();
    let dir = ferrovirt_tests::repo_root().join("tests/corpus");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut table = String::new();
    let mut failures = 0;
    let (mut accepted, mut refused) = (0, 0);
    for file in &on_disk {
        let expect = CORPUS.iter().find(|(f, _, _)| f == file);
        let out = cp.dry_run_apply(ns.name(), &dir.join(file)).await.unwrap();
        let ok = match expect {
            Some((_, Accepted, _)) => out.success(),
            Some((_, Rejected(s), _)) => !out.success() && out.stderr.contains(s),
            None => false,
        };
        if out.success() {
            accepted += 1;
        } else {
            refused += 1;
        }
        failures += usize::from(!ok);
        let _ = writeln!(
            table,
            "{} {file:<28} expected {:?}, got {}: {}",
            if ok { "ok  " } else { "FAIL" },
            expect.map(|(_, e, _)| e),
            if out.success() {
                "accepted"
            } else {
                "rejected"
            },
            shown(&out),
        );
    }
    for (file, _, _) in CORPUS {
        if !on_disk.iter().any(|f| f == file) {
            failures += 1;
            let _ = writeln!(
                table,
                "FAIL {file:<28} in the table but not in {}",
                dir.display()
            );
        }
    }
    println!(
        "corpus: {} manifests, {accepted} accepted, {refused} refused by name\n{table}",
        on_disk.len()
    );
    assert_eq!(failures, 0, "{table}");
}

/// The minimal VM with `template_extra` lines in `spec.template.spec` (its probes).
fn probed_vm(name: &str, template_extra: &str) -> String {
    vm(
        name,
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    )
    .replacen(
        "    spec:\n      domain:\n",
        &format!("    spec:\n{template_extra}      domain:\n"),
        1,
    )
}

/// A minimal valid VM, with `spec_extra` lines inserted into `spec` and `domain_extra`
/// into `spec.template.spec.domain`.
fn vm(name: &str, spec_extra: &str, domain_extra: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
{spec_extra}  template:
    spec:
      domain:
{domain_extra}        devices:
          disks:
          - name: containerdisk
            disk:
              bus: virtio
      volumes:
      - name: containerdisk
        containerDisk:
          image: quay.io/kubevirt/cirros-container-disk-demo
"
    )
}

/// [`vm`] with the volumes `volumes` added and a filesystem (virtiofs) named `fs`.
fn fs_vm(name: &str, volumes: &str, fs: &str) -> String {
    vm(
        name,
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    )
    .replace(
        "        devices:\n",
        &format!(
            "        devices:\n          filesystems:\n          - {{name: {fs}, virtiofs: {{}}}}\n"
        ),
    )
    .replace("      volumes:\n", &format!("      volumes:\n{volumes}"))
}

#[tokio::test]
async fn invalid_vms_are_rejected_naming_the_field() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "invalid-vms").await.unwrap();

    // The valid base is accepted, so each rejection below is due to its one change.
    let base = vm(
        "valid",
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    );
    let out = cp
        .kubectl_with_stdin(
            ["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
            Some(&base),
        )
        .await
        .unwrap();
    out.expect_success();

    let cases: &[(&str, String, &[&str])] = &[
        (
            "misspelled field",
            vm(
                "misspelled",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n        cpuu:\n          cores: 1\n",
            ),
            &["spec.template.spec.domain.cpuu"],
        ),
        (
            "negative memory",
            vm(
                "negative-memory",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: -1Gi\n",
            ),
            &["spec.template.spec.domain.memory.guest"],
        ),
        (
            "running and runStrategy",
            vm(
                "both",
                "  running: true\n  runStrategy: Always\n",
                "        memory:\n          guest: 128Mi\n",
            ),
            &["running", "runStrategy"],
        ),
        (
            "evictionStrategy LiveMigrate (no live migration)",
            vm(
                "evict",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "    spec:\n      domain:",
                "    spec:\n      evictionStrategy: LiveMigrate\n      domain:",
            ),
            &["spec.template.spec.evictionStrategy", "need live migration"],
        ),
        (
            "an unknown startStrategy",
            vm(
                "start",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "    spec:\n      domain:",
                "    spec:\n      startStrategy: Running\n      domain:",
            ),
            &["spec.template.spec.startStrategy", "Paused"],
        ),
        (
            "a keyboard input (KubeVirt has tablets only)",
            vm(
                "keyboard",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "        devices:\n",
                "        devices:\n          inputs:\n          - {name: k, type: keyboard}\n",
            ),
            &["spec.template.spec.domain.devices.inputs[0].type", "tablet"],
        ),
        (
            "a tablet on the PS/2 bus",
            vm(
                "ps2",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "        devices:\n",
                "        devices:\n          inputs:\n          - {name: t, type: tablet, bus: ps2}\n",
            ),
            &["spec.template.spec.domain.devices.inputs[0].bus", "virtio"],
        ),
        (
            "two serviceAccount volumes (KubeVirt allows one)",
            vm(
                "two-sa",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "      volumes:\n",
                "      volumes:\n      - {name: sa1, serviceAccount: {serviceAccountName: a}}\n      - {name: sa2, serviceAccount: {serviceAccountName: b}}\n",
            ),
            &[
                "spec.template.spec.volumes",
                "must have max one serviceAccount volume set",
            ],
        ),
        (
            "a configMap volume without its name",
            vm(
                "cm-no-name",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "      volumes:\n",
                "      volumes:\n      - {name: cm, configMap: {volumeLabel: x}}\n",
            ),
            &["spec.template.spec.volumes[0].configMap.name"],
        ),
        (
            "a host device (no device passthrough)",
            vm(
                "hostdev",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "        devices:\n",
                "        devices:\n          hostDevices:\n          - {name: nic, deviceName: intel.com/qat}\n",
            ),
            &[
                "spec.template.spec.domain.devices.hostDevices",
                "host device passthrough is not supported",
            ],
        ),
        (
            "a video device without the graphics device (KubeVirt's rule)",
            vm(
                "video",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "        devices:\n",
                "        devices:\n          autoattachGraphicsDevice: false\n          video: {type: virtio}\n",
            ),
            &[
                "spec.template.spec.domain.devices.video",
                "Video configuration is not allowed when autoattachGraphicsDevice is set to false",
            ],
        ),
        (
            "a lun disk (no SCSI passthrough)",
            vm(
                "lun",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "            disk:\n              bus: virtio\n",
                "            lun: {bus: scsi, reservation: true}\n",
            ),
            &[
                "spec.template.spec.domain.devices.disks[0].lun",
                "SCSI passthrough",
            ],
        ),
        (
            "Hyper-V enlightenments (they need KVM)",
            vm(
                "hyperv",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n        features:\n          hyperv: {relaxed: {}, vapic: {}, spinlocks: {spinlocks: 8191}}\n",
            ),
            &[
                "spec.template.spec.domain.features.hyperv",
                "Hyper-V enlightenments are not supported",
                "TCG",
            ],
        ),
        (
            "kvm.hidden (it needs KVM)",
            vm(
                "kvm-hidden",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n        features:\n          kvm: {hidden: true}\n",
            ),
            &["spec.template.spec.domain.features.kvm", "TCG"],
        ),
        (
            "a probe with two handlers",
            probed_vm(
                "probe-two",
                "      readinessProbe: {guestAgentPing: {}, exec: {command: [cat, /x]}}\n",
            ),
            &[
                "spec.template.spec.readinessProbe",
                "must have exactly one probe type set",
            ],
        ),
        (
            "a grpc probe (Kubernetes', not KubeVirt's)",
            probed_vm("probe-grpc", "      livenessProbe: {grpc: {port: 9000}}\n"),
            &["spec.template.spec.livenessProbe.grpc"],
        ),
        (
            "a probe port past 65535",
            probed_vm(
                "probe-port",
                "      livenessProbe: {tcpSocket: {port: 2147483648}}\n",
            ),
            &["spec.template.spec.livenessProbe.tcpSocket.port"],
        ),
        (
            "a liveness probe needing two successes",
            probed_vm(
                "probe-success",
                "      livenessProbe: {guestAgentPing: {}, successThreshold: 2}\n",
            ),
            &[
                "spec.template.spec.livenessProbe.successThreshold",
                "must be 1 for a liveness probe",
            ],
        ),
        (
            "a liveness probe on a paused start",
            probed_vm(
                "probe-paused",
                "      startStrategy: Paused\n      livenessProbe: {guestAgentPing: {}}\n",
            ),
            &["spec.template.spec.livenessProbe", "startStrategy"],
        ),
        (
            "an exec probe without a command",
            probed_vm("probe-exec", "      readinessProbe: {exec: {}}\n"),
            &["spec.template.spec.readinessProbe", "exec needs a command"],
        ),
        (
            "a VMI's tcpSocket probe without the pod network",
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: probe-tcp}\n\
             spec:\n  domain: {memory: {guest: 128Mi}}\n  livenessProbe: {tcpSocket: {port: 1500}}\n"
                .to_string(),
            &[
                "spec.livenessProbe",
                "only allowed if the Pod Network is attached",
            ],
        ),
        (
            "a filesystem naming no volume",
            fs_vm("fs-none", "      - {name: cm, configMap: {name: app}}\n", "gone"),
            &[
                "spec.template.spec.domain.devices.filesystems",
                "every filesystem in domain.devices.filesystems needs a volume",
            ],
        ),
        (
            "a volume that is both a disk and a filesystem",
            fs_vm("fs-disk", "", "containerdisk"),
            &[
                "spec.template.spec.domain.devices.filesystems",
                "a volume is either a disk or a filesystem",
            ],
        ),
        (
            "a filesystem of a volume kind virtiofs does not share",
            fs_vm("fs-kind", "      - {name: scratch, emptyDisk: {capacity: 1Gi}}\n", "scratch"),
            &[
                "spec.template.spec.domain.devices.filesystems",
                "virtiofs shares only configMap, secret, serviceAccount, downwardAPI",
            ],
        ),
        (
            "a virtiofs option KubeVirt does not have",
            fs_vm("fs-opt", "      - {name: cm, configMap: {name: app}}\n", "cm")
                .replace("virtiofs: {}", "virtiofs: {cache: always}"),
            &["spec.template.spec.domain.devices.filesystems[0].virtiofs.cache"],
        ),
    ];
    let mut report = String::new();
    let mut failures = 0;
    for (what, manifest, fields) in cases {
        let out = cp
            .kubectl_with_stdin(
                ["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
                Some(manifest),
            )
            .await
            .unwrap();
        let ok = !out.success() && fields.iter().all(|f| out.stderr.contains(f));
        if !ok {
            failures += 1;
        }
        let _ = writeln!(
            report,
            "{} {what}: expected a rejection naming {fields:?}, got {}: {}",
            if ok { "ok  " } else { "FAIL" },
            if out.success() {
                "accepted"
            } else {
                "rejected"
            },
            shown(&out),
        );
    }
    println!("{report}");
    assert_eq!(failures, 0, "{report}");
}

#[tokio::test]
async fn kubectl_explain_and_columns() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "kubectl-ux").await.unwrap();

    // The OpenAPI document of a new CRD is published shortly after it is Established.
    let mut explain = cp
        .kubectl(["explain", "vm.spec.runStrategy"])
        .await
        .unwrap();
    for _ in 0..50 {
        if explain.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        explain = cp
            .kubectl(["explain", "vm.spec.runStrategy"])
            .await
            .unwrap();
    }
    let text = explain.expect_success();
    let description = text
        .split_once("DESCRIPTION:")
        .map(|(_, d)| d.trim())
        .unwrap_or_else(|| panic!("no DESCRIPTION in kubectl explain:\n{text}"));
    assert!(
        text.contains("FIELD: runStrategy")
            && description.len() > 40
            && !description.starts_with("<empty>"),
        "kubectl explain vm.spec.runStrategy has no real description:\n{text}"
    );

    let manifest = vm(
        "columns",
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    );
    cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(&manifest))
        .await
        .unwrap()
        .expect_success();
    let get = cp.kubectl(["get", "vm", "-n", ns.name()]).await.unwrap();
    assert_eq!(
        columns(&get),
        ["NAME", "AGE", "STATUS", "READY"],
        "kubectl get vm columns:\n{get}"
    );
    assert!(
        get.stdout.contains("columns"),
        "the VM is not listed:\n{get}"
    );
}

/// The part of KubeVirt's pool API Ferrovirt does not implement is refused naming the
/// field (not accepted and ignored); `kubectl get` shows KubeVirt's columns of replica sets
/// and pools.
#[tokio::test]
async fn unimplemented_pool_fields_are_refused_by_name() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "pool-fields").await.unwrap();
    let example = std::fs::read_to_string(examples_dir().join("vm-pool-cirros.yaml")).unwrap();
    let mut report = String::new();
    for field in [
        "nameGeneration: {appendIndexToConfigMapRefs: true}",
        "maxUnavailable: 1",
        "updateStrategy: {proactive: {}}",
        "scaleInStrategy: {proactive: {}}",
        "autohealing: {}",
    ] {
        let name = field.split(':').next().unwrap();
        let manifest = example.replacen(
            "spec:\n  replicas: 3\n",
            &format!("spec:\n  replicas: 3\n  {field}\n"),
            1,
        );
        assert_ne!(manifest, example, "the example's spec changed shape");
        let out = cp
            .kubectl_with_stdin(
                ["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
                Some(&manifest),
            )
            .await
            .unwrap();
        let named = format!("unknown field \"spec.{name}\"");
        if out.success() || !out.stderr.contains(&named) {
            let _ = writeln!(report, "{name}: expected {named}, got {}", shown(&out));
        }
    }
    assert!(report.is_empty(), "{report}");

    for (file, resource) in [
        ("vmi-replicaset-cirros.yaml", "vmirs"),
        ("vm-pool-cirros.yaml", "vmpool"),
    ] {
        let path = examples_dir().join(file);
        cp.kubectl(["apply", "-n", ns.name(), "-f", path.to_str().unwrap()])
            .await
            .unwrap()
            .expect_success();
        let get = cp
            .kubectl(["get", resource, "-n", ns.name()])
            .await
            .unwrap();
        assert_eq!(
            columns(&get),
            ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            "{get}"
        );
    }
}

/// The column names of `kubectl get`'s table (it must have succeeded).
fn columns(get: &ferrovirt_tests::KubectlOutput) -> Vec<&str> {
    get.expect_success()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect()
}

/// What kubectl printed: stdout when it succeeded, else stderr, on one line.
fn shown(out: &ferrovirt_tests::KubectlOutput) -> String {
    one_line(if out.success() {
        &out.stdout
    } else {
        &out.stderr
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
