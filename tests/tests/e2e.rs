//! End to end on the real node: the real control plane, virt-controller, virt-handler and
//! virt-api (host processes from target/debug), and a real node (kubelet, containerd,
//! kube-proxy; tests/src/node.rs) that runs each launcher pod from the virt-launcher image
//! with its containerDisk and kernel-boot images pulled from the node's registry as
//! containers of the pod; libvirt and a QEMU guest (software emulation) inside. Each test
//! applies manifests with the control plane's kubectl and watches the guest's serial
//! console (the per-VMI directory is a hostPath the host sees too). One node and one push
//! of the images per test binary.
//!
//! The guests boot one at a time (a lock): two cores emulating several guests at once
//! would make every boot slow.
//!
//! Needs the images: `hack/build-images.sh --no-push` (hack/setup.sh runs it).

use std::time::{Duration, Instant};

use crds::{VirtualMachine, VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::paths::{SERIAL_LOG, SERIAL_SOCKET};
use ferrovirt_node_contract::pod::{
    COMPUTE_CONTAINER, CONTAINER_DISK_BINARY_CONTAINER, volume_container,
};
use ferrovirt_tests::aggregation::{VirtApi, start_virt_api, virtctl_path};
use ferrovirt_tests::console::Client;
use ferrovirt_tests::guest::{READY_LINE, console_exchange};
use ferrovirt_tests::manifests::GUEST_KERNEL_IMAGE;
use ferrovirt_tests::node::RealNode;
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, manifests, shared};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::{Mutex, OnceCell};

/// Pulls, the pod sandbox, booting, powering off and restarting under emulation on 2
/// loaded cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The kernel-boot and containerDisk images the tests' manifests name.
const KERNEL_BOOT_DEMO: &str = "registry:5000/kubevirt/alpine-ext-kernel-boot-demo:devel";
const CIRROS: &str = "registry:5000/kubevirt/cirros-container-disk-demo:devel";

/// Ferrovirt on one real node, shared by the binary's tests.
struct RealStack {
    node: RealNode,
    stack: Stack,
    _virt_api: VirtApi,
}

impl RealStack {
    /// The last lines of the components' and the node's logs, for failure messages.
    fn log_tails(&self, lines: usize) -> String {
        format!(
            "{}\n{}",
            self.stack.log_tails(lines),
            self.node.log_tails(lines)
        )
    }
}

impl std::ops::Deref for RealStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

static STACK: OnceCell<RealStack> = OnceCell::const_new();
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn stack() -> (&'static ControlPlane, &'static RealStack) {
    let cp = shared().await;
    let stack = STACK
        .get_or_init(|| async {
            let guests = [GUEST_KERNEL_IMAGE, KERNEL_BOOT_DEMO, CIRROS];
            let (node, launcher) = RealNode::with_images(cp, "e2e", &guests)
                .await
                .unwrap_or_else(|e| panic!("starting the real node: {e}"));
            let virt_api = start_virt_api(cp)
                .await
                .unwrap_or_else(|e| panic!("starting virt-api: {e}"));
            let stack = Stack::start_on_real_node(cp, &node, &launcher)
                .await
                .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}\n{}", node.log_tails(20)));
            RealStack {
                node,
                stack,
                _virt_api: virt_api,
            }
        })
        .await;
    (cp, stack)
}

/// A VM that boots the test guest's kernel directly, with a cloud-init disk whose user
/// data prints `marker`.
fn kernel_boot_vm(name: &str, run_strategy: &str, marker: &str) -> String {
    manifests::kernel_boot_vm(
        name,
        run_strategy,
        Some(&format!("#!/bin/sh\necho {marker}")),
    )
}

async fn kubectl(
    cp: &ControlPlane,
    ns: &TestNamespace,
    args: &[&str],
    stdin: Option<&str>,
) -> String {
    let mut all = vec!["-n", ns.name()];
    all.extend_from_slice(args);
    let out = cp
        .kubectl_with_stdin(all.clone(), stdin)
        .await
        .expect("running kubectl");
    assert!(out.success(), "kubectl {all:?} failed: {}", out.stderr);
    out.stdout
}

/// Polls `check` every 500 ms until it returns Some, or panics naming `what` and the logs.
async fn wait_for<T, F, Fut>(stack: &RealStack, what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > timeout {
            panic!(
                "timed out after {}s waiting for {what}\n{}",
                timeout.as_secs(),
                stack.log_tails(25)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The running VMI of a VM (phase Running), optionally one other than `not_uid`.
async fn running_vmi(
    stack: &RealStack,
    vmis: &Api<VirtualMachineInstance>,
    name: &str,
    not_uid: Option<&str>,
) -> VirtualMachineInstance {
    wait_for(
        stack,
        &format!("VMI {name} Running"),
        BOOT_TIMEOUT,
        || async {
            let vmi = vmis.get_opt(name).await.ok().flatten()?;
            let running = vmi.status.as_ref()?.phase == Some(VmiPhase::Running);
            let other = not_uid.is_none_or(|uid| vmi.metadata.uid.as_deref() != Some(uid));
            (running && other).then_some(vmi)
        },
    )
    .await
}

fn uid(vmi: &VirtualMachineInstance) -> String {
    vmi.metadata.uid.clone().expect("a stored VMI has a uid")
}

/// The message of VMI `name`'s `PodScheduled=False` condition: why the scheduler does not
/// place its launcher pod.
async fn not_scheduled(
    stack: &RealStack,
    vmis: &Api<VirtualMachineInstance>,
    name: &str,
) -> String {
    wait_for(
        stack,
        &format!("VMI {name}'s PodScheduled=False condition"),
        Duration::from_secs(60),
        || async {
            let vmi = vmis.get_opt(name).await.ok().flatten()?;
            vmi.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
                .message
        },
    )
    .await
}

/// Waits until the guest's serial log holds `line`; returns the whole log.
async fn console_shows(stack: &RealStack, vmi_uid: &str, line: &str) -> String {
    let log = stack.vmi_dir(vmi_uid).join(SERIAL_LOG);
    wait_for(
        stack,
        &format!("{line:?} in {}", log.display()),
        BOOT_TIMEOUT,
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains(line).then_some(text)
        },
    )
    .await
}

/// The pid of the QEMU process of a VMI, if one runs: a process of the node's pods.
fn qemu_pid(stack: &RealStack, namespace: &str, name: &str) -> Option<u32> {
    let guest = format!("guest={namespace}_{name},");
    let pids = stack.node.pod_pids_matching(&["qemu-system", &guest]);
    pids.first().copied()
}

async fn gone<K>(stack: &RealStack, api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(stack, &format!("{name} deleted"), BOOT_TIMEOUT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// A VM boots on the real node, survives a handler restart, and a delete powers it off
/// through ACPI. Its guest memory is in 2Mi hugepages and it has a TPM (issue 11): the
/// launcher pod requests hugepages-2Mi, the host's free hugepages drop by the guest's
/// memory while it runs and come back after, and the guest sees TPM 2.0 as tpm0. A VMI
/// asking for 1Gi pages, which the node does not have, stays unscheduled and says so.
#[tokio::test]
async fn vm_boots_survives_a_handler_restart_and_delete_powers_off_through_acpi() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-boot").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());

    // The node offers 2Mi hugepages (hack/node/up.sh's pool).
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity = nodes
        .get(&stack.node_name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.capacity)
        .and_then(|c| c.get(HUGEPAGES_RESOURCE).cloned());
    assert!(
        capacity.as_ref().is_some_and(|q| q.0 != "0"),
        "node {} offers no {HUGEPAGES_RESOURCE} ({capacity:?}): hack/node/up.sh allocates the pool",
        stack.node_name
    );
    // 1Gi pages, which the node does not offer: the VMI is not scheduled, and says why.
    let mut huge_1g = manifests::kernel_boot_vmi("huge-1g", serde_json::json!([]));
    huge_1g["spec"]["domain"]["memory"] =
        serde_json::json!({"guest": "1Gi", "hugepages": {"pageSize": "1Gi"}});
    kubectl(cp, &ns, &["apply", "-f", "-"], Some(&huge_1g.to_string())).await;
    let why = not_scheduled(stack, &vmis, "huge-1g").await;
    assert!(why.contains("Insufficient hugepages-1Gi"), "{why}");
    kubectl(cp, &ns, &["delete", "vmi", "huge-1g"], None).await;

    let free_before = hugepages_free();
    kubectl(
        cp,
        &ns,
        &["apply", "-f", "-"],
        Some(&with_hugepages_and_tpm(&kernel_boot_vm(
            "demo",
            "Always",
            "hello-from-user-data",
        ))),
    )
    .await;
    let vmi = running_vmi(stack, &vmis, "demo", None).await;
    let vmi_uid = uid(&vmi);
    let log = console_shows(stack, &vmi_uid, READY_LINE).await;

    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo hello-from-user-data"),
        "the guest did not print its cloud-init line:\n{log}"
    );
    // The guest's memory is in the node's hugepages: the launcher pod requests them, and
    // the host's free hugepages are fewer by the guest's memory while it runs.
    let compute = launcher_pod(&pods, &vmi_uid)
        .await
        .spec
        .unwrap()
        .containers
        .into_iter()
        .find(|c| c.name == COMPUTE_CONTAINER)
        .unwrap();
    let resources = compute.resources.unwrap();
    let guest_memory = format!("{}Mi", manifests::GUEST_MEMORY_MIB);
    for list in [resources.requests, resources.limits] {
        assert_eq!(
            list.unwrap_or_default()
                .get(HUGEPAGES_RESOURCE)
                .map(|q| q.0.as_str()),
            Some(guest_memory.as_str())
        );
    }
    let guest_pages = u64::from(manifests::GUEST_MEMORY_MIB) / 2;
    wait_for(
        stack,
        &format!("{guest_pages} fewer free hugepages than the {free_before} before demo"),
        Duration::from_secs(30),
        || async { (hugepages_free() + guest_pages == free_before).then_some(()) },
    )
    .await;
    let status = vmi.status.clone().unwrap();
    assert_eq!(status.node_name.as_deref(), Some(stack.node_name.as_str()));
    assert_eq!(
        status.virtualization.as_deref(),
        Some("Emulation"),
        "KVM hangs here: the VMI must say it is emulated"
    );

    // The console is a real, interactive serial line.
    // It also has its TPM 2.0 (swtpm in the launcher pod).
    let answer = console_exchange(
        &stack.vmi_dir(&vmi_uid).join(SERIAL_SOCKET),
        "echo TPM$(cat /sys/class/tpm/tpm0/tpm_version_major) FERRO$((6*7))",
        "FERRO42",
    );
    assert!(answer.contains("TPM2 FERRO42"), "{answer}");

    // The VM's status tells the truth.
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vm = wait_for(
        stack,
        "VM demo Running and ready",
        Duration::from_secs(60),
        || async {
            let vm = vms.get("demo").await.ok()?;
            let s = vm.status.clone()?;
            (s.printable_status.as_deref() == Some("Running") && s.ready == Some(true))
                .then_some(vm)
        },
    )
    .await;
    assert_eq!(vm.status.unwrap().created, Some(true));

    // virt-handler killed and started again: the guest keeps running, the same QEMU, and
    // its console still answers.
    let qemu = qemu_pid(stack, ns.name(), "demo").expect("QEMU of demo runs");
    let old_handler = stack.handler_pid();
    stack.restart_handler().unwrap();
    assert_ne!(stack.handler_pid(), old_handler);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        qemu_pid(stack, ns.name(), "demo"),
        Some(qemu),
        "the guest's QEMU changed across a handler restart"
    );
    assert_eq!(
        vmi_phase(&vmis, "demo", &vmi_uid).await,
        Some(VmiPhase::Running)
    );
    let answer = console_exchange(
        &stack.vmi_dir(&vmi_uid).join(SERIAL_SOCKET),
        "echo STILL$((40+2))",
        "STILL42",
    );
    assert!(answer.contains("STILL42"));

    // Deleting powers the guest off through ACPI, and nothing of it remains: only the new
    // handler can see that through.
    let serial_log = stack.vmi_dir(&vmi_uid).join(SERIAL_LOG);
    kubectl(cp, &ns, &["delete", "vm", "demo", "--wait=false"], None).await;
    // The per-VMI directory goes away once the guest is down: read the log while it exists.
    let mut last = String::new();
    wait_for(
        stack,
        "the guest's power-button line after kubectl delete",
        BOOT_TIMEOUT,
        || {
            if let Ok(text) = std::fs::read_to_string(&serial_log) {
                last = text;
            }
            let seen = last.contains("FERROVIRT POWER BUTTON: powering off");
            async move { seen.then_some(()) }
        },
    )
    .await;
    gone(stack, &vmis, "demo").await;
    wait_for(stack, "the launcher pod deleted", BOOT_TIMEOUT, || async {
        pods.list(&ListParams::default().labels(&format!("kubevirt.io/created-by={vmi_uid}")))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    wait_for(
        stack,
        "no QEMU process of demo",
        Duration::from_secs(30),
        || async { qemu_pid(stack, ns.name(), "demo").is_none().then_some(()) },
    )
    .await;
    wait_for(
        stack,
        "the per-VMI directory removed",
        Duration::from_secs(60),
        || async { (!stack.vmi_dir(&vmi_uid).exists()).then_some(()) },
    )
    .await;
    wait_for(
        stack,
        &format!("the {free_before} free hugepages back after demo"),
        Duration::from_secs(30),
        || async { (hugepages_free() == free_before).then_some(()) },
    )
    .await;
}

/// The node's resource of 2Mi hugepages.
const HUGEPAGES_RESOURCE: &str = "hugepages-2Mi";

/// The host's free hugepages (of the default size, 2Mi): `HugePages_Free` in /proc/meminfo.
fn hugepages_free() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no HugePages_Free in /proc/meminfo:\n{meminfo}"))
}

/// A VM manifest with its guest memory in 2Mi hugepages and a TPM (issue 11). The guest
/// boots Debian's bzImage: QEMU 7.2 gives no TPM to an ELF kernel booted through PVH
/// (virt-handler refuses that, see volumes/prepare.rs).
fn with_hugepages_and_tpm(manifest: &str) -> String {
    let mut vm: VirtualMachine = serde_yaml::from_str(manifest).expect("a VM");
    let domain = &mut vm.spec.template.spec.domain;
    domain.memory.get_or_insert_default().hugepages = Some(crds::Hugepages {
        page_size: crds::HugepageSize::Size2Mi,
    });
    domain.devices.tpm = Some(crds::Tpm::default());
    let kernel = domain
        .firmware
        .as_mut()
        .and_then(|f| f.kernel_boot.as_mut())
        .and_then(|k| k.container.as_mut())
        .expect("a kernel boot");
    kernel.kernel_path = Some("/boot/vmlinuz".into());
    serde_json::to_string(&vm).unwrap()
}

/// Powers the guest off from inside (a clean shutdown, as a user's `poweroff` would):
/// types the command until QEMU closes the console, since a line typed while the shell
/// is still starting is lost.
fn guest_poweroff(stack: &RealStack, vmi_uid: &str) {
    use ferrovirt_tests::guest::{ConsoleError, try_console_exchange};
    let socket = stack.vmi_dir(vmi_uid).join(SERIAL_SOCKET);
    // Nothing answers: the exchange ends when QEMU closes the console.
    if let Err(ConsoleError::Timeout(seen)) = try_console_exchange(
        &socket,
        "sync; poweroff -f",
        "(a line the guest never prints)",
        Duration::from_secs(90),
    ) {
        panic!(
            "the guest did not power off within 90s of typing poweroff on its console: {seen:?}"
        );
    }
}

async fn vmi_phase(vmis: &Api<VirtualMachineInstance>, name: &str, uid: &str) -> Option<VmiPhase> {
    let vmi = vmis.get_opt(name).await.ok().flatten()?;
    (vmi.metadata.uid.as_deref() == Some(uid)).then_some(())?;
    vmi.status?.phase
}

/// A claim `name` of 32 MiB in a `WaitForFirstConsumer` class of local volumes, and the
/// local PersistentVolume (64 MiB, on the real node) it can bind
/// ([`ferrovirt_tests::manifests::local_claim`]). The volume's directory is under the
/// host's /tmp, which the node sees alike, and goes when the guard drops; the class and
/// the volume (cluster-scoped, named after the namespace) stay until the control plane
/// goes. A class for each claim: two claims of one class could each bind to the other's
/// volume (WaitForFirstConsumer binds any volume that fits; CI once saw the share claim
/// land on the disk claim's directory).
async fn local_claim(
    cp: &ControlPlane,
    stack: &RealStack,
    ns: &TestNamespace,
    name: &str,
) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ferrovirt-local-pv-")
        .tempdir()
        .unwrap();
    let manifest = ferrovirt_tests::manifests::local_claim(
        &format!("{}-{name}", ns.name()),
        name,
        &dir.path().to_string_lossy(),
        stack.node.name(),
        ("64Mi", "32Mi"),
        false,
    );
    kubectl(cp, ns, &["apply", "-f", "-"], Some(&manifest.to_string())).await;
    dir
}

/// A loop device on a sparse file, detached when dropped (even when the test fails).
struct LoopDevice {
    path: String,
    _file: tempfile::NamedTempFile,
}

impl LoopDevice {
    fn attach(bytes: u64) -> LoopDevice {
        let file = tempfile::Builder::new()
            .prefix("ferrovirt-block-pv-")
            .tempfile_in("/tmp")
            .unwrap();
        file.as_file().set_len(bytes).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .expect("losetup (package mount): the block claim's volume is a loop device");
        assert!(
            out.status.success(),
            "losetup -f --show {} failed (root and /dev/loop* are needed): {}",
            file.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        LoopDevice { path, _file: file }
    }
}

impl Drop for LoopDevice {
    /// Detaches the device, and first the loop device kubelet attaches to it to hold a
    /// reference while a pod maps the volume (`losetup -j` finds it by its backing
    /// device): the node goes with the test binary, before kubelet would let it go. A
    /// device still open (a guest still running) goes once its last user closes it.
    fn drop(&mut self) {
        let held = std::process::Command::new("losetup")
            .args(["-j", &self.path])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for holder in held.lines().filter_map(|l| l.split(':').next()) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", holder])
                .status();
        }
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.path])
            .status();
    }
}

/// The size of [`local_block_claim`]'s device: 48 MiB (98304 sectors), which the guest
/// finds it by.
const BLOCK_CLAIM_BYTES: u64 = 48 << 20;

/// A claim `name` in `volumeMode: Block` of a `WaitForFirstConsumer` class of its own, and
/// the local PersistentVolume (block mode, on the real node) it can bind: a loop device
/// of [`BLOCK_CLAIM_BYTES`] the test makes, which the node sees as the host does (/dev is
/// the host's in the node's mount namespace). The class and the volume stay until the
/// control plane goes; the device goes when the guard drops.
async fn local_block_claim(
    cp: &ControlPlane,
    stack: &RealStack,
    ns: &TestNamespace,
    name: &str,
) -> LoopDevice {
    let device = LoopDevice::attach(BLOCK_CLAIM_BYTES);
    let manifest = ferrovirt_tests::manifests::local_claim(
        &format!("{}-{name}", ns.name()),
        name,
        &device.path,
        stack.node.name(),
        ("48Mi", "48Mi"),
        true,
    );
    kubectl(cp, ns, &["apply", "-f", "-"], Some(&manifest.to_string())).await;
    device
}

/// `kernel_boot_vm` whose cloud-init data come from the Secrets `<name>-userdata` (key
/// `userdata`) and `<name>-networkdata` (key `networkData`, KubeVirt's second spelling).
fn kernel_boot_vm_with_secrets(name: &str, run_strategy: &str) -> String {
    let mut vm: VirtualMachine =
        serde_yaml::from_str(&manifests::kernel_boot_vm(name, run_strategy, Some("#")))
            .expect("a VM");
    let volume = &mut vm.spec.template.spec.volumes[0];
    volume.cloud_init_no_cloud = Some(crds::CloudInitNoCloudSource {
        user_data_secret_ref: Some(crds::LocalObjectReference {
            name: format!("{name}-userdata"),
        }),
        network_data_secret_ref: Some(crds::LocalObjectReference {
            name: format!("{name}-networkdata"),
        }),
        ..Default::default()
    });
    // Config volumes (issue 11): a ConfigMap (KubeVirt's label cfgdata), a Secret with
    // its own label, the namespace's default ServiceAccount, and the VMI's labels and
    // annotations; each a virtio disk.
    let template = &mut vm.spec.template;
    template
        .metadata
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .insert("example.com/note".into(), "from-the-vmi".into());
    let config: Vec<crds::Volume> = serde_json::from_value(serde_json::json!([
        {"name": "app-config", "configMap": {"name": format!("{name}-config")}},
        {"name": "app-secret", "secret": {"secretName": format!("{name}-secret"), "volumeLabel": "secdata"}},
        {"name": "sa", "serviceAccount": {"serviceAccountName": "default"}},
        {"name": "podinfo", "downwardAPI": {"volumeLabel": "podinfo", "fields": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "meta/annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
        ]}},
        {"name": "metrics", "downwardMetrics": {}}
    ]))
    .unwrap();
    // And KubeVirt's downward metrics device, the vhostmd virtio-serial port.
    template.spec.domain.devices.downward_metrics = Some(crds::DownwardMetrics {});
    for v in config {
        template.spec.domain.devices.disks.push(crds::Disk {
            name: v.name.clone(),
            ..Default::default()
        });
        template.spec.volumes.push(v);
    }
    // A claim (issue 11), blank: virt-handler makes its disk.img.
    template.spec.domain.devices.disks.push(crds::Disk {
        name: "data".into(),
        ..Default::default()
    });
    template.spec.volumes.push(
        serde_json::from_value(
            serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}}),
        )
        .unwrap(),
    );
    // A claim in volumeMode Block: the launcher pod's device is the guest's disk.
    template.spec.domain.devices.disks.push(crds::Disk {
        name: "block".into(),
        ..Default::default()
    });
    template.spec.volumes.push(
        serde_json::from_value(
            serde_json::json!({"name": "block", "persistentVolumeClaim": {"claimName": format!("{name}-block")}}),
        )
        .unwrap(),
    );
    // The same ConfigMap shared as a filesystem (virtiofs), which the guest mounts by the
    // volume's name.
    template.spec.volumes.push(
        serde_json::from_value(
            serde_json::json!({"name": "app-fs", "configMap": {"name": format!("{name}-config")}}),
        )
        .unwrap(),
    );
    template.spec.domain.devices.filesystems.push(
        serde_json::from_value(serde_json::json!({"name": "app-fs", "virtiofs": {}})).unwrap(),
    );
    // And a claim shared as a filesystem (KubeVirt's EnableVirtioFsStorageVolumes gate,
    // which the tests' kubevirt-config sets).
    template.spec.volumes.push(
        serde_json::from_value(
            serde_json::json!({"name": "share", "persistentVolumeClaim": {"claimName": format!("{name}-share")}}),
        )
        .unwrap(),
    );
    template.spec.domain.devices.filesystems.push(
        serde_json::from_value(serde_json::json!({"name": "share", "virtiofs": {}})).unwrap(),
    );
    serde_json::to_string(&vm).unwrap()
}

/// One metric of vhostmd's XML: (type, context, unit, name, value).
type VhostmdMetric = (String, String, String, String, String);

/// The metrics of vhostmd's XML as KubeVirt writes it, in order.
fn vhostmd_metrics(xml: &str) -> Vec<VhostmdMetric> {
    let attr = |tag: &str, name: &str| {
        tag.split(&format!("{name}=\"")[..])
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let inner = |m: &str, el: &str| {
        m.split(&format!("<{el}>")[..])
            .nth(1)
            .and_then(|r| r.split(&format!("</{el}>")[..]).next())
            .unwrap_or_default()
            .to_owned()
    };
    xml.split("<metric ")
        .skip(1)
        .map(|m| {
            let tag = m.split('>').next().unwrap_or_default();
            let (kind, context, unit) =
                (attr(tag, "type"), attr(tag, "context"), attr(tag, "unit"));
            (kind, context, unit, inner(m, "name"), inner(m, "value"))
        })
        .collect()
}

/// The value of the metric `name` of `context`.
fn metric<'a>(metrics: &'a [VhostmdMetric], context: &str, name: &str) -> &'a str {
    metrics
        .iter()
        .find(|m| m.1 == context && m.3 == name)
        .map_or("", |m| m.4.as_str())
}

/// What the guest printed between `begin` and `end` lines.
fn between<'a>(answer: &'a str, begin: &str, end: &str) -> &'a str {
    let start = answer.rfind(begin).map_or(0, |i| i + begin.len());
    let stop = answer[start..]
        .find(end)
        .map_or(answer.len(), |i| start + i);
    &answer[start..stop]
}

/// The metrics disk read in the guest as vhostmd's vm-dump-metrics reads it: the device
/// whose first bytes are vhostmd's signature, with O_DIRECT (past the guest's cache), the
/// XML after the 16-byte header.
/// The last lines of the compute container's log of `vmi`'s launcher pod, as the node keeps
/// it (`/var/log/pods/<namespace>_<pod>_<uid>/compute/`), for failure messages.
fn launcher_log(stack: &RealStack, vmi: &VirtualMachineInstance) -> String {
    let prefix = format!(
        "{}_virt-launcher-{}-",
        vmi.metadata.namespace.as_deref().unwrap_or_default(),
        vmi.metadata.name.as_deref().unwrap_or_default()
    );
    let pods = stack.node.dir().join("var/log/pods");
    std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with(&prefix))
        .map(|d| ferrovirt_tests::tail(&d.path().join("compute/0.log"), 40))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_metrics_disk(socket: &std::path::Path) -> String {
    let answer = console_exchange(
        socket,
        "for d in /dev/vd?; do [ \"$(head -c 4 $d)\" = mvbd ] && M=$d; done; echo DM\"\"BEGIN; dd if=$M bs=4096 count=4 iflag=direct 2>/dev/null | tr -d '\\000' | tail -c +17; echo DM\"\"END",
        "DMEND",
    );
    between(&answer, "DMBEGIN", "DMEND").replace('\r', "")
}

/// KubeVirt's downward metrics as a guest reads them (issue 11): the disk holds the
/// host's and the VM's metrics with KubeVirt's names, types, units and contexts, from
/// this node (its name, QEMU's version, the guest's memory and vCPUs), and a read after
/// the refresh period shows a later `Time` and more VM `TotalCPUTime`; the virtio-serial
/// port `org.github.vhostmd.1` answers `GET /metrics/XML` with the same metrics and
/// anything else with `INVALID REQUEST`.
fn downward_metrics_in_the_guest(
    stack: &RealStack,
    socket: &std::path::Path,
    vmi: &VirtualMachineInstance,
) {
    let started = Instant::now();
    // The launcher writes the disk every 5 s from when the domain runs; a first write that
    // failed (the domain still starting) is written again a period later.
    let (xml, first) = loop {
        let xml = read_metrics_disk(socket);
        let metrics = vhostmd_metrics(&xml);
        if !metrics.is_empty() || started.elapsed() > Duration::from_secs(30) {
            break (xml, metrics);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "MEASURE downward metrics: first read with metrics {:.1} s after the guest looked",
        started.elapsed().as_secs_f64()
    );
    if first.is_empty() {
        panic!(
            "no metrics on the disk for 30 s:\n{xml}\nthe launcher's log:\n{}",
            launcher_log(stack, vmi)
        );
    }
    let shape: Vec<(&str, &str, &str, &str)> = first
        .iter()
        .map(|m| (m.3.as_str(), m.0.as_str(), m.1.as_str(), m.2.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("HostName", "string", "host", ""),
            ("HostSystemInfo", "string", "host", ""),
            ("VirtualizationVendor", "string", "host", ""),
            ("VirtProductInfo", "string", "host", ""),
            ("TotalCPUTime", "real64", "vm", "s"),
            ("ResourceProcessorLimit", "int64", "vm", ""),
            (
                "PhysicalMemoryAllocatedToVirtualSystem",
                "uint64",
                "vm",
                "KiB"
            ),
            ("ResourceMemoryLimit", "uint64", "vm", "KiB"),
            ("NumberOfPhysicalCPUs", "int64", "host", ""),
            ("TotalCPUTime", "real64", "host", "s"),
            ("FreePhysicalMemory", "uint64", "host", "KiB"),
            ("FreeVirtualMemory", "uint64", "host", "KiB"),
            ("MemoryAllocatedToVirtualServers", "uint64", "host", "KiB"),
            ("UsedVirtualMemory", "uint64", "host", "KiB"),
            ("PagedInMemory", "uint64", "host", "KiB"),
            ("PagedOutMemory", "uint64", "host", "KiB"),
            ("Time", "int64", "host", "s"),
        ],
        "the metrics disk as the guest read it:\n{xml}"
    );
    let node = vmi.status.as_ref().and_then(|s| s.node_name.clone());
    assert_eq!(
        Some(metric(&first, "host", "HostName")),
        node.as_deref(),
        "{xml}"
    );
    assert_eq!(
        metric(&first, "host", "VirtualizationVendor"),
        "kubevirt.io"
    );
    assert!(
        metric(&first, "host", "VirtProductInfo").starts_with("QEMU 7."),
        "{xml}"
    );
    assert_eq!(metric(&first, "vm", "ResourceProcessorLimit"), "1", "{xml}");
    let guest_kib = (manifests::GUEST_MEMORY_MIB * 1024).to_string();
    assert_eq!(
        metric(&first, "vm", "PhysicalMemoryAllocatedToVirtualSystem"),
        guest_kib,
        "{xml}"
    );
    let free: u64 = metric(&first, "host", "FreePhysicalMemory")
        .parse()
        .unwrap();
    assert!(free > 0, "{xml}");
    let time = |m: &[VhostmdMetric]| -> i64 { metric(m, "host", "Time").parse().unwrap() };
    let cpu = |m: &[VhostmdMetric]| -> f64 { metric(m, "vm", "TotalCPUTime").parse().unwrap() };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (time(&first) - now).abs() < 600,
        "Time is not this clock's: {xml}"
    );
    // Rewritten every 5 s: read again until a later rewrite shows a later Time and more
    // CPU time of the guest (which the reads themselves keep busy), within a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let later = loop {
        std::thread::sleep(Duration::from_secs(1));
        let again = vhostmd_metrics(&read_metrics_disk(socket));
        if again.len() == first.len() && time(&again) > time(&first) && cpu(&again) > cpu(&first) {
            break again;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "in 60 s the metrics disk did not show a later Time and more guest CPU time: {again:?}\nfirst:\n{xml}"
        );
    };

    // The virtio-serial device: the guest writes the request to its port and reads the
    // answer (at most one request a second, as KubeVirt).
    let answer = console_exchange(
        socket,
        "for p in /sys/class/virtio-ports/vport*; do [ \"$(cat $p/name)\" = org.github.vhostmd.1 ] && P=/dev/${p##*/}; done; exec 3<>$P; printf 'GET /metrics/XML\\n\\n' >&3; echo CH\"\"BEGIN; timeout 10 sed '/<\\/metrics>/q' <&3; printf 'GET /nope\\n\\n' >&3; timeout 10 head -n 1 <&3; exec 3<&-; echo CH\"\"END",
        "CHEND",
    );
    let channel = between(&answer, "CHBEGIN", "CHEND").replace('\r', "");
    let over_channel = vhostmd_metrics(&channel);
    let names = |m: &[VhostmdMetric]| m.iter().map(|m| m.3.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&over_channel),
        names(&first),
        "the channel's answer:\n{channel}"
    );
    assert_eq!(
        metric(&over_channel, "host", "HostName"),
        metric(&first, "host", "HostName")
    );
    assert!(time(&over_channel) >= time(&later), "{channel}");
    assert!(
        channel.contains("INVALID REQUEST"),
        "another request was not refused:\n{channel}"
    );
    println!(
        "downward metrics checked in the guest in {:.1} s; the disk's first read:\n{xml}\nthe port's answer:\n{channel}",
        started.elapsed().as_secs_f64()
    );
}

/// Also cloud-init from Secrets (issue 12), on the real node's kubelet: the VM is applied
/// before its Secrets exist, so its launcher pod waits (kubelet's FailedMount) and the VMI
/// names the missing Secret; once they exist it boots, and the guest reads user data
/// larger than the 2048 bytes allowed inline, and the network config, from its NoCloud
/// disk. The next VMI reads them again.
///
/// And configMap, secret, serviceAccount and downwardAPI volumes (issue 11): the missing
/// ConfigMap is named in the VMI as well; once it exists the guest mounts each ISO disk
/// and reads its files: the ConfigMap's key on a disk labelled cfgdata, the Secret's on
/// one labelled by its volumeLabel, the ServiceAccount's namespace, token and CA, and
/// the VMI's labels and annotations. The same ConfigMap, shared as a filesystem
/// (virtiofs), is mounted in the guest by its volume's name and read.
///
/// And a claim in `volumeMode: Block` (issue 11) on a local block volume (a loop device):
/// kubelet maps it into the launcher pod, the guest writes to its disk, the test reads
/// that from the loop device, and the next VMI reads it back.
#[tokio::test]
async fn run_strategy_always_boots_a_new_vmi_after_a_guest_poweroff() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-always").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    let claim_dir = local_claim(cp, stack, &ns, "always-data").await;
    let share_dir = local_claim(cp, stack, &ns, "always-share").await;
    let block_device = local_block_claim(cp, stack, &ns, "always-block").await;
    std::fs::write(share_dir.path().join("from-host"), "host-wrote-this\n").unwrap();
    kubectl(
        cp,
        &ns,
        &["apply", "-f", "-"],
        Some(&kernel_boot_vm_with_secrets("always", "Always")),
    )
    .await;
    let waiting = wait_for(
        stack,
        "VMI always Scheduling with a FailedMount condition naming its Secret and ConfigMap",
        BOOT_TIMEOUT,
        || async {
            let status = vmis.get_opt("always").await.ok().flatten()?.status?;
            let c = status.conditions.iter().find(|c| {
                c.type_ == "Synchronized" && c.reason.as_deref() == Some("FailedMount")
            })?;
            let message = c.message.clone()?;
            (status.phase == Some(VmiPhase::Scheduling)
                && message.contains("spec.volumes[1].configMap"))
            .then_some(message)
        },
    )
    .await;
    assert!(
        waiting.starts_with("spec.volumes[0].cloudInitNoCloud.")
            && (waiting.contains("secret \"always-userdata\" not found")
                || waiting.contains("secret \"always-networkdata\" not found")),
        "the condition does not name the field and the Secret: {waiting}"
    );
    assert!(
        waiting.contains(
            "spec.volumes[1].configMap: ConfigMap \"always-config\": MountVolume.SetUp failed"
        ) && waiting.contains("configmap \"always-config\" not found"),
        "the condition does not name the field and the ConfigMap: {waiting}"
    );

    let padding = "# padding\n".repeat(300);
    let user_data = format!("#!/bin/sh\necho from-secret-first\n{padding}");
    assert!(user_data.len() > 2048, "more than inline data may hold");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    for (name, key, value) in [
        ("always-userdata", "userdata", user_data.as_str()),
        (
            "always-networkdata",
            "networkData",
            "# net-from-secret\nversion: 1\nconfig: []\n",
        ),
    ] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "stringData": {key: value}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "always-secret"}, "stringData": {"password": "s3cret-value"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let config: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "always-config"},
        "data": {"greeting": "hello-from-configmap", "app.conf": "x=1\n"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let vmi = running_vmi(stack, &vmis, "always", None).await;
    let first = uid(&vmi);
    let log = console_shows(stack, &first, READY_LINE).await;
    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo from-secret-first"),
        "the guest did not print the Secret's user data:\n{log}"
    );
    let socket = stack.vmi_dir(&first).join(SERIAL_SOCKET);
    let expect = format!("UD-{}", user_data.len());
    let answer = console_exchange(&socket, "echo UD-$(wc -c < /run/cidata/user-data)", &expect);
    assert!(answer.contains(&expect), "{answer}");
    let answer = console_exchange(
        &socket,
        "echo NET-$(grep -c net.from.secret /run/cidata/network-config)",
        "NET-1",
    );
    assert!(answer.contains("NET-1"), "{answer}");
    // The config volumes' disks: each mounted by its device, then read by label.
    let answer = console_exchange(
        &socket,
        "mkdir -p /m; for d in /dev/vd?; do n=${d#/dev/}; mkdir -p /m/$n; grep -q \" /m/$n \" /proc/mounts || mount -r $d /m/$n; done; echo MOUNTED-$(grep -c ' /m/' /proc/mounts)",
        "MOUNTED-5",
    );
    assert!(answer.contains("MOUNTED-5"), "{answer}");
    for (command, expect) in [
        // The ConfigMap's keys as files, on a disk labelled cfgdata (KubeVirt's default):
        // the ISO's volume id, at byte 32808 of the device.
        (
            "echo CM=$(cat /m/*/greeting)-$(cat /m/*/app.conf)-$(for m in /m/*; do [ -f $m/greeting ] && dd if=/dev/${m#/m/} bs=1 skip=32808 count=32 2>/dev/null; done)".to_owned(),
            "CM=hello-from-configmap-x=1-cfgdata".to_owned(),
        ),
        // The Secret's key on the disk labelled by its volumeLabel.
        (
            "echo SEC=$(cat /m/$(basename $(findfs LABEL=secdata))/password)".to_owned(),
            "SEC=s3cret-value".to_owned(),
        ),
        // The ServiceAccount's namespace, token (a JWT) and CA certificate.
        (
            "echo SA=$(cat /m/*/namespace)-$(head -c 3 /m/*/token)-$(grep -l BEGIN /m/*/ca.crt | wc -l)-$(for m in /m/*; do [ -f $m/token ] && dd if=/dev/${m#/m/} bs=1 skip=32808 count=32 2>/dev/null; done)".to_owned(),
            format!("SA={}-eyJ-1-cfgdata", ns.name()),
        ),
        // The VMI's labels and annotations, as the pod's (downwardAPI), by its label.
        (
            "d=/m/$(basename $(findfs LABEL=podinfo)); echo DAPI=$(grep -c '^app=\"always\"' $d/labels)$(grep -c '^example.com/note=\"from-the-vmi\"' $d/meta/annotations)".to_owned(),
            "DAPI=11".to_owned(),
        ),
    ] {
        let answer = console_exchange(&socket, &command, &expect);
        assert!(answer.contains(&expect), "{command}: {answer}");
    }
    // The ConfigMap shared over virtiofs: mounted by its volume's name, its keys as files.
    let expect = "FS=hello-from-configmap-x=1-1";
    if let Err(e) = ferrovirt_tests::guest::try_console_exchange(
        &socket,
        "modprobe virtiofs; mkdir -p /fs; mount -t virtiofs app-fs /fs && echo FS=$(cat /fs/greeting)-$(cat /fs/app.conf)-$(grep -c ' /fs virtiofs ' /proc/mounts)",
        expect,
        Duration::from_secs(60),
    ) {
        let virtiofsd = stack.vmi_dir(&first).join("virtiofs-app-fs.log");
        panic!(
            "the guest did not read the ConfigMap through virtiofs ({expect}): {e}\nvirtiofsd's log {}:\n{}\n{}",
            virtiofsd.display(),
            std::fs::read_to_string(&virtiofsd).unwrap_or_default(),
            stack.log_tails(25)
        );
    }
    // The claim shared over virtiofs: the guest reads what is on the volume and writes to it.
    let expect = "SHARE=host-wrote-this";
    if let Err(e) = ferrovirt_tests::guest::try_console_exchange(
        &socket,
        "mkdir -p /share; mount -t virtiofs share /share && echo guest-wrote-this > /share/from-guest && echo SHARE=$(cat /share/from-host)",
        expect,
        Duration::from_secs(60),
    ) {
        let virtiofsd = stack.vmi_dir(&first).join("virtiofs-share.log");
        panic!(
            "the guest did not share the claim through virtiofs ({expect}): {e}\nvirtiofsd's log {}:\n{}\n{}",
            virtiofsd.display(),
            std::fs::read_to_string(&virtiofsd).unwrap_or_default(),
            stack.log_tails(25)
        );
    }
    assert_eq!(
        std::fs::read_to_string(share_dir.path().join("from-guest")).unwrap_or_default(),
        "guest-wrote-this\n",
        "the guest's file on the shared claim"
    );
    downward_metrics_in_the_guest(stack, &socket, &vmi);
    // The claim: its disk.img made of the claim's size (32 MiB, 65536 sectors), a disk of
    // the guest; what the guest writes is in the file on the volume.
    let find_data =
        "for b in /sys/block/vd*; do [ $(cat $b/size) = 65536 ] && d=/dev/${b##*/}; done";
    let answer = console_exchange(
        &socket,
        &format!("{find_data}; printf PVC-MARKER-1 > $d && sync && echo WROTE-$d"),
        "WROTE-/dev/vd",
    );
    assert!(answer.contains("WROTE-/dev/vd"), "{answer}");
    let image = claim_dir.path().join("disk.img");
    let written = std::fs::read(&image).unwrap_or_default();
    assert_eq!(
        (written.len(), written.get(..12)),
        (32 << 20, Some(&b"PVC-MARKER-1"[..])),
        "{} does not hold what the guest wrote",
        image.display()
    );
    // The VMI's volumeStatus names the claim behind each claim volume, bound: KubeVirt's
    // persistentVolumeClaimInfo (the volume's capacity, the claim's request, its mode).
    for (volume, claim, mode, capacity, request) in [
        ("data", "always-data", "Filesystem", "64Mi", "32Mi"),
        ("block", "always-block", "Block", "48Mi", "48Mi"),
    ] {
        let shown = vmi.status.as_ref().and_then(|s| {
            let v = s.volume_status.iter().find(|v| v.name == volume)?;
            v.persistent_volume_claim_info.clone()
        });
        let info = serde_json::to_value(&shown).unwrap();
        assert_eq!(
            [
                &info["claimName"],
                &info["volumeMode"],
                &info["capacity"]["storage"],
                &info["requests"]["storage"]
            ],
            [claim, mode, capacity, request]
                .map(serde_json::Value::from)
                .each_ref(),
            "volumeStatus of volume {volume}: {:?}",
            vmi.status.as_ref().map(|s| &s.volume_status)
        );
    }
    // The block claim: the loop device itself is the guest's disk (48 MiB, 98304
    // sectors); what the guest writes is on the device.
    let find_block =
        "for b in /sys/block/vd*; do [ $(cat $b/size) = 98304 ] && d=/dev/${b##*/}; done";
    let answer = console_exchange(
        &socket,
        &format!("{find_block}; printf BLK-MARKER-1 > $d && sync && echo BWROTE-$d"),
        "BWROTE-/dev/vd",
    );
    assert!(answer.contains("BWROTE-/dev/vd"), "{answer}");
    let mut written = [0u8; 12];
    {
        use std::io::Read;
        std::fs::File::open(&block_device.path)
            .and_then(|mut f| f.read_exact(&mut written))
            .unwrap_or_else(|e| panic!("reading {}: {e}", block_device.path));
    }
    assert_eq!(
        &written, b"BLK-MARKER-1",
        "{} does not hold what the guest wrote",
        block_device.path
    );

    // As KubeVirt: the data stay in the Secret, never in the VMI.
    let spec = serde_json::to_string(&vmi.spec).unwrap();
    assert!(
        !spec.contains("from-secret"),
        "the Secret's data leaked into the VMI: {spec}"
    );

    guest_poweroff(stack, &first);
    let second = running_vmi(stack, &vmis, "always", Some(&first)).await;
    let log = console_shows(stack, &uid(&second), READY_LINE).await;
    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo from-secret-first"),
        "the second VMI did not read the Secret:\n{log}"
    );
    // The claim outlives the VMI: the new guest reads what the first one wrote.
    let socket = stack.vmi_dir(&uid(&second)).join(SERIAL_SOCKET);
    let answer = console_exchange(
        &socket,
        &format!("{find_data}; echo READ-$(head -c 12 $d)"),
        "READ-PVC-MARKER-1",
    );
    assert!(answer.contains("READ-PVC-MARKER-1"), "{answer}");
    let answer = console_exchange(
        &socket,
        &format!("{find_block}; echo BREAD-$(head -c 12 $d)"),
        "BREAD-BLK-MARKER-1",
    );
    assert!(answer.contains("BREAD-BLK-MARKER-1"), "{answer}");
    kubectl(cp, &ns, &["delete", "vm", "always"], None).await;
}

/// The CPUs a thread may run on (`Cpus_allowed_list` of /proc/<pid>/task/<tid>/status).
fn allowed_cpus(status: &std::path::Path) -> String {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Dedicated CPUs (issue 11, KubeVirt's dedicatedCpuPlacement) on the real node, whose
/// kubelet runs the static CPU manager: virt-handler labels the Node
/// `kubevirt.io/cpumanager=true`, the launcher pod is Guaranteed with one whole CPU, kubelet
/// gives it a CPU of its own (its CPU manager state names it), and QEMU's vCPU thread runs
/// on that CPU alone while the guest boots. (An isolated emulator thread would need a
/// second CPU of its own, which a 2-core machine with CPU 0 reserved does not have.)
/// The same VM has KubeVirt's cx1 CPU fields: a hotplug headroom of two sockets
/// (`maxSockets`: the guest has room for two vCPUs and runs one) and NUMA passthrough (its
/// one NUMA cell, on the host's one node, holds its vCPUs and memory, in 2Mi hugepages).
/// A realtime VMI (rt1's fields) is not scheduled: this node throttles realtime threads,
/// so virt-handler does not label it `kubevirt.io/realtime=true`, as KubeVirt's would not.
#[tokio::test]
async fn dedicated_cpus_pin_the_vcpu_to_the_pods_own_cpu() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-pinned").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let nodes: Api<Node> = Api::all(client.clone());
    let node = stack.node.name().to_owned();
    wait_for(
        stack,
        "the real node labelled kubevirt.io/cpumanager=true",
        BOOT_TIMEOUT,
        || async {
            let labels = nodes.get(&node).await.ok()?.metadata.labels?;
            (labels.get("kubevirt.io/cpumanager").map(String::as_str) == Some("true")).then_some(())
        },
    )
    .await;

    // Realtime vCPUs only go where realtime threads run unthrottled.
    let labels = nodes.get(&node).await.unwrap().metadata.labels.unwrap();
    assert_eq!(
        labels.get("kubevirt.io/realtime").map(String::as_str),
        Some("false"),
        "this machine's kernel.sched_rt_runtime_us is not -1: {labels:?}"
    );
    let mut realtime = manifests::kernel_boot_vmi("realtime", serde_json::json!([]));
    realtime["spec"]["domain"]["cpu"] = serde_json::json!({
        "dedicatedCpuPlacement": true,
        "numa": {"guestMappingPassthrough": {}},
        "realtime": {}
    });
    realtime["spec"]["domain"]["memory"]["hugepages"] = serde_json::json!({"pageSize": "2Mi"});
    kubectl(cp, &ns, &["apply", "-f", "-"], Some(&realtime.to_string())).await;
    let why = not_scheduled(stack, &vmis, "realtime").await;
    assert!(why.contains("node affinity/selector"), "{why}");
    assert!(
        why.contains("kubevirt.io/realtime=true for spec.domain.cpu.realtime"),
        "the condition does not name the field's node label: {why}"
    );
    kubectl(cp, &ns, &["delete", "vmi", "realtime"], None).await;

    let mut vm: VirtualMachine =
        serde_yaml::from_str(&kernel_boot_vm("pinned", "Always", "pinned-guest")).unwrap();
    let domain = &mut vm.spec.template.spec.domain;
    domain.cpu = Some(crds::Cpu {
        sockets: Some(1),
        cores: Some(1),
        max_sockets: Some(2),
        dedicated_cpu_placement: Some(true),
        numa: Some(crds::Numa {
            guest_mapping_passthrough: Some(Default::default()),
        }),
        ..Default::default()
    });
    domain.memory.get_or_insert_default().hugepages = Some(crds::Hugepages {
        page_size: crds::HugepageSize::Size2Mi,
    });
    kubectl(
        cp,
        &ns,
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(&vm).unwrap()),
    )
    .await;
    let vmi = running_vmi(stack, &vmis, "pinned", None).await;
    let log = console_shows(stack, &uid(&vmi), READY_LINE).await;
    assert!(log.contains("pinned-guest"), "{log}");

    let pod = launcher_pod(&pods, &uid(&vmi)).await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.qos_class.as_deref()),
        Some("Guaranteed")
    );
    // The CPU kubelet gave the pod's compute container.
    let state_file = stack.node.dir().join("var/lib/kubelet/cpu_manager_state");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let given = state["entries"][&pod_uid]["compute"]
        .as_str()
        .unwrap_or_else(|| panic!("{} gives the pod no CPU: {state}", state_file.display()))
        .to_owned();
    assert_ne!(given, state["defaultCpuSet"].as_str().unwrap_or_default());
    // QEMU's vCPU thread runs there and nowhere else.
    let qemu = qemu_pid(stack, ns.name(), "pinned").expect("the guest's QEMU");
    let vcpu_threads: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("CPU 0/"))
        })
        .map(|t| allowed_cpus(&t.path().join("status")))
        .collect();
    assert_eq!(
        vcpu_threads,
        std::slice::from_ref(&given),
        "vCPU 0 of QEMU {qemu}"
    );
    eprintln!("MEASURE dedicated CPU: the pod's CPU {given}, vCPU 0's thread on {given}");

    // In the guest: room for two vCPUs, one online; one NUMA node with that vCPU and all
    // of the guest's memory (the node's MemTotal is the machine's).
    let answer = console_exchange(
        &stack.vmi_dir(&uid(&vmi)).join(SERIAL_SOCKET),
        "echo CPUS possible=$(cat /sys/devices/system/cpu/possible) \
         online=$(cat /sys/devices/system/cpu/online) \
         nodes=$(ls -d /sys/devices/system/node/node* | wc -l) \
         node0=$(cat /sys/devices/system/node/node0/cpulist) \
         $(grep MemTotal /sys/devices/system/node/node0/meminfo) \
         $(grep MemTotal /proc/meminfo) END$((6*7))",
        " END42",
    );
    assert!(
        answer.contains("CPUS possible=0-1 online=0 nodes=1 node0=0 "),
        "{answer}"
    );
    let kib = |i: usize| -> u64 {
        answer
            .split("MemTotal:")
            .nth(i)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no MemTotal number {i} in {answer:?}"))
    };
    let (node0_kib, total_kib) = (kib(1), kib(2));
    assert!(
        node0_kib == total_kib && total_kib > 0,
        "node 0 has {node0_kib} KiB of the guest's {total_kib}: {answer}"
    );
    eprintln!("MEASURE NUMA passthrough: the guest's node 0 has all its {total_kib} KiB");
    kubectl(cp, &ns, &["delete", "vm", "pinned"], None).await;
    gone(stack, &vmis, "pinned").await;
}

#[tokio::test]
async fn rerun_on_failure_replaces_a_crashed_vmi_but_respects_a_guest_poweroff() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-rerun").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let vms: Api<VirtualMachine> = Api::namespaced(client, ns.name());

    kubectl(
        cp,
        &ns,
        &["apply", "-f", "-"],
        Some(&kernel_boot_vm("rerun", "RerunOnFailure", "rerun")),
    )
    .await;
    let first = uid(&running_vmi(stack, &vmis, "rerun", None).await);
    console_shows(stack, &first, READY_LINE).await;

    // QEMU dies under the guest: the VMI fails and a new one boots.
    let pid = qemu_pid(stack, ns.name(), "rerun").expect("QEMU of rerun runs");
    nix_kill(pid);
    let second = uid(&running_vmi(stack, &vmis, "rerun", Some(&first)).await);
    console_shows(stack, &second, READY_LINE).await;

    // The guest shuts itself down: that is respected, no new VMI.
    guest_poweroff(stack, &second);
    wait_for(stack, "the second VMI Succeeded", BOOT_TIMEOUT, || async {
        (vmi_phase(&vmis, "rerun", &second).await == Some(VmiPhase::Succeeded)).then_some(())
    })
    .await;
    wait_for(
        stack,
        "VM rerun Stopped",
        Duration::from_secs(60),
        || async {
            let status = vms.get("rerun").await.ok()?.status?;
            (status.printable_status.as_deref() == Some("Stopped")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let vmi = vmis.get_opt("rerun").await.unwrap();
    assert!(
        vmi.as_ref()
            .is_none_or(|v| v.metadata.uid.as_deref() == Some(second.as_str())),
        "RerunOnFailure started a new VMI after a clean guest shutdown: {vmi:?}"
    );
    kubectl(cp, &ns, &["delete", "vm", "rerun"], None).await;
}

fn nix_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid} failed");
}

#[tokio::test]
async fn kubevirt_examples_boot_unchanged() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-examples").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let examples = ferrovirt_tests::examples_dir();

    // A kernel boot from a container image, applied as KubeVirt ships it.
    let kernel_boot = examples.join("vmi-kernel-boot.yaml");
    kubectl(
        cp,
        &ns,
        &["apply", "-f", kernel_boot.to_str().unwrap()],
        None,
    )
    .await;
    let vmi = running_vmi(stack, &vmis, "vmi-kernel-boot", None).await;
    console_shows(stack, &uid(&vmi), READY_LINE).await;
    kubectl(cp, &ns, &["delete", "vmi", "vmi-kernel-boot"], None).await;

    // The cirros VM from its containerDisk, with its cloud-init user data; it is Halted as
    // shipped, so it is switched to Always.
    let cirros = examples.join("vm-cirros.yaml");
    kubectl(cp, &ns, &["apply", "-f", cirros.to_str().unwrap()], None).await;
    let applied = Instant::now();
    kubectl(
        cp,
        &ns,
        &[
            "patch",
            "vm",
            "vm-cirros",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Always"}}"#,
        ],
        None,
    )
    .await;
    let vmi = running_vmi(stack, &vmis, "vm-cirros", None).await;
    let log = console_shows(stack, &uid(&vmi), READY_LINE).await;
    eprintln!(
        "MEASURE real node: runStrategy Always to {READY_LINE:?} in {:.1} s",
        applied.elapsed().as_secs_f64()
    );
    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo 'printed from cloud-init userdata'"),
        "vm-cirros did not print its cloud-init line:\n{log}"
    );
    launcher_pod_is_real(stack, &pods, &uid(&vmi)).await;

    // The console through virt-api and virt-handler, with KubeVirt's virtctl.
    let mut console = Client::spawn(
        &virtctl_path(),
        &cp.kubeconfig(),
        &["-n", ns.name(), "console", "vm-cirros"],
    )
    .unwrap();
    console.send(b"echo fv-$((6*7))\n").unwrap();
    console
        .expect("fv-42", false, Duration::from_secs(60))
        .await;
    console.send(b"\x1d").unwrap();
    let _ = console.exit(Duration::from_secs(60)).await;
    kubectl(cp, &ns, &["delete", "vm", "vm-cirros"], None).await;

    // KubeVirt's replica set example, with one replica (three emulated guests would hold
    // the two cores for minutes; operator/tests/controllers.rs runs all three on its test
    // node): its VMI boots on the real node, the set counts it ready, and deleting the set
    // deletes it.
    let shipped = std::fs::read_to_string(examples.join("vmi-replicaset-cirros.yaml")).unwrap();
    let one = shipped.replacen("replicas: 3", "replicas: 1", 1);
    assert_ne!(one, shipped, "the example's replicas line changed");
    kubectl(cp, &ns, &["apply", "-f", "-"], Some(&one)).await;
    let selector = ListParams::default().labels("kubevirt.io/vmReplicaSet=vmi-replicaset-cirros");
    let vmi = wait_for(
        stack,
        "the replica set's VMI Running",
        BOOT_TIMEOUT,
        || async {
            let list = vmis.list(&selector).await.ok()?;
            list.items
                .into_iter()
                .find(|v| v.status.as_ref().and_then(|s| s.phase) == Some(VmiPhase::Running))
        },
    )
    .await;
    console_shows(stack, &uid(&vmi), READY_LINE).await;
    wait_for(
        stack,
        "the replica set's 1/1 ready",
        BOOT_TIMEOUT,
        || async {
            let path = "jsonpath={.status.replicas}/{.status.readyReplicas}";
            let args = [
                "get",
                "vmirs",
                "vmi-replicaset-cirros",
                "-n",
                ns.name(),
                "-o",
                path,
            ];
            let out = cp.kubectl(args).await.ok()?;
            (out.stdout == "1/1").then_some(())
        },
    )
    .await;
    kubectl(cp, &ns, &["delete", "vmirs", "vmi-replicaset-cirros"], None).await;
    gone(stack, &vmis, vmi.metadata.name.as_deref().unwrap()).await;
}

/// The launcher pod of VMI `vmi_uid`.
async fn launcher_pod(pods: &Api<Pod>, vmi_uid: &str) -> Pod {
    pods.list(&ListParams::default().labels(&format!("kubevirt.io/created-by={vmi_uid}")))
        .await
        .unwrap()
        .items
        .pop()
        .unwrap_or_else(|| panic!("no launcher pod of VMI {vmi_uid}"))
}

/// The launcher pod of VMI `vmi_uid` is a real pod of the node: its containers run under
/// containerd, the containerDisk is a container of it (the image KubeVirt's example names,
/// pulled through the node's mirror), after the init container that copies the disk
/// containers' program (docs/contracts.md, "The launcher pod").
async fn launcher_pod_is_real(stack: &RealStack, pods: &Api<Pod>, vmi_uid: &str) {
    let pod = launcher_pod(pods, vmi_uid).await;
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(stack.node.name()));
    assert_eq!(
        spec.init_containers.unwrap()[0].name,
        CONTAINER_DISK_BINARY_CONTAINER
    );
    let disk = spec
        .containers
        .iter()
        .find(|c| c.name == volume_container("containerdisk"))
        .expect("the containerDisk's container");
    assert_eq!(disk.image.as_deref(), Some(CIRROS));
    let statuses = pod.status.unwrap().container_statuses.unwrap_or_default();
    assert!(
        statuses
            .iter()
            .all(|s| s.state.as_ref().is_some_and(|s| s.running.is_some())),
        "every container of the launcher pod runs: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| s
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://"))),
        "containers run by containerd: {statuses:?}"
    );
}

/// The condition `type_` of a VMI, if it has one.
fn vmi_condition(vmi: &VirtualMachineInstance, type_: &str) -> Option<crds::Condition> {
    vmi.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Probes as KubeVirt runs them (docs/virt-controller.md, "Probes"): kubelet runs the VMI's
/// guestAgentPing readiness probe and exec liveness probe as `virt-launcher probe` in the
/// compute container, which asks the guest agent. The VMI is Ready only with the agent
/// answering (and `kubectl get vmi` says so); once the liveness command fails in the guest,
/// kubelet stops the compute container, the VMI ends and runStrategy Always starts a new
/// one. The liveness probe waits 20 s (plus KubeVirt's 10) so that a slow boot is not
/// taken for a dead guest.
#[tokio::test]
async fn probes_drive_ready_and_a_failing_liveness_probe_replaces_the_vmi() {
    let (cp, stack) = stack().await;
    let _one = ONE_GUEST_AT_A_TIME.lock().await;
    let ns = TestNamespace::create(cp, "e2e-probes").await.unwrap();
    let client = cp.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let probes = "      readinessProbe:\n        guestAgentPing: {}\n        periodSeconds: 1\n\
                  \x20     livenessProbe:\n        exec:\n          command: [/bin/sh, -c, 'test ! -e /tmp/unhealthy']\n\
                  \x20       initialDelaySeconds: 20\n        periodSeconds: 1\n        failureThreshold: 3\n\
                  \x20     terminationGracePeriodSeconds: 30\n";
    let vm = kernel_boot_vm("probed", "Always", "probed-boot")
        .replace("      terminationGracePeriodSeconds: 30\n", probes);
    assert!(
        vm.contains("livenessProbe"),
        "the probes went into the manifest:\n{vm}"
    );
    kubectl(cp, &ns, &["apply", "-f", "-"], Some(&vm)).await;

    // Running, and Ready never ahead of the guest agent: the handler no longer sets it.
    let vmi = running_vmi(stack, &vmis, "probed", None).await;
    let first = uid(&vmi);
    let ready_early = vmi_condition(&vmi, "Ready").is_some_and(|c| c.status == "True")
        && vmi_condition(&vmi, "AgentConnected").is_none_or(|c| c.status != "True");
    assert!(
        !ready_early,
        "Ready before the guest agent answered: {:?}",
        vmi.status
    );
    let vmi = wait_for(stack, "VMI probed Ready", BOOT_TIMEOUT, || async {
        let vmi = vmis.get_opt("probed").await.ok().flatten()?;
        (vmi.metadata.uid.as_deref() == Some(first.as_str())
            && vmi_condition(&vmi, "Ready")?.status == "True")
            .then_some(vmi)
    })
    .await;
    let agent = vmi_condition(&vmi, "AgentConnected").expect("the guest agent answered the probe");
    assert_eq!(agent.status, "True");
    let columns = kubectl(cp, &ns, &["get", "vmi", "probed", "--no-headers"], None).await;
    assert!(
        columns.split_whitespace().any(|c| c == "True"),
        "kubectl get vmi shows Ready: {columns}"
    );

    // The launcher pod carries the probes as KubeVirt renders them.
    let pod = pods
        .list(&ListParams::default().labels(&format!("kubevirt.io/created-by={first}")))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the launcher pod");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let compute = spec
        .containers
        .iter()
        .find(|c| c.name == COMPUTE_CONTAINER)
        .unwrap();
    let command = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.exec.as_ref()?.command.clone())
            .unwrap_or_default()
            .join(" ")
    };
    assert_eq!(
        command(&compute.readiness_probe),
        "virt-launcher probe --timeout-seconds 1 --guest-agent-ping"
    );
    assert_eq!(
        command(&compute.liveness_probe),
        "virt-launcher probe --timeout-seconds 1 --command /bin/sh -- -c test ! -e /tmp/unhealthy"
    );
    assert!(compute.startup_probe.is_some(), "the launcher's ready file");

    // The liveness command fails in the guest: the VMI ends, and a new one starts.
    console_shows(stack, &first, READY_LINE).await;
    let socket = stack.vmi_dir(&first).join(SERIAL_SOCKET);
    let answer = console_exchange(
        &socket,
        "touch /tmp/unhealthy && echo UNHEALTHY-$((1+1))",
        "UNHEALTHY-2",
    );
    assert!(answer.contains("UNHEALTHY-2"), "{answer}");
    let second = running_vmi(stack, &vmis, "probed", Some(&first)).await;
    assert_ne!(uid(&second), first);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns.name());
    let unhealthy = wait_for(
        stack,
        "kubelet's Liveness probe failed Event",
        BOOT_TIMEOUT,
        || async {
            let list = events
                .list(&ListParams::default().fields("reason=Unhealthy"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .filter_map(|e| e.message)
                .find(|m| m.starts_with("Liveness probe failed"))
        },
    )
    .await;
    assert!(
        unhealthy.contains("the command in the guest exited with 1"),
        "the probe's message says why: {unhealthy}"
    );
    kubectl(cp, &ns, &["delete", "vm", "probed"], None).await;
}
