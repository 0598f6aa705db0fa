//! The handler binary against a real API server (tests/ harness), the real launcher,
//! libvirt and QEMU. The test plays the operator: it marks the VMI Scheduled on the
//! handler's node and starts the launcher as devnode would (without a mount namespace,
//! hence `--launcher-vmi-dir host`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{GUEST_LINE, Proc, guest_cmdline, start_launcher, wait_for, wait_for_line};
use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_tests::{ControlPlane, TestNamespace, shared};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use virt_launcher::client::LauncherClient;
use virt_launcher::protocol::DomainState;

struct Handler {
    /// Killed when the handler is dropped.
    _proc: Proc,
    log: PathBuf,
}

impl Handler {
    fn start(cp: &ControlPlane, node: &str, run_dir: &Path, ns: &str, extra: &[&str]) -> Handler {
        let log = run_dir.join(format!(
            "handler-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let proc = Proc(
            Command::new(env!("CARGO_BIN_EXE_virt-handler"))
                .arg("--kubeconfig")
                .arg(cp.kubeconfig())
                .args([
                    "--node-name",
                    node,
                    "--namespace",
                    ns,
                    "--metrics-addr",
                    "",
                    "--launcher-vmi-dir",
                    "host",
                ])
                .arg("--run-dir")
                .arg(run_dir)
                .args(extra)
                .env("RUST_LOG", "info,kube_client=warn")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn virt-handler"),
        );
        Handler { _proc: proc, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn setup(
    cp: &ControlPlane,
    prefix: &str,
    use_emulation: &str,
) -> (Client, TestNamespace, String) {
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, prefix).await.unwrap();
    let node = format!("vh-{}", ns.name());
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let cm =
        json!({"metadata": {"name": "kubevirt-config"}, "data": {"useEmulation": use_emulation}});
    cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
        .await
        .unwrap();
    (client, ns, node)
}

async fn wait_labels(client: &Client, node: &str, want: &[(&str, &str)], handler: &Handler) {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let n = nodes.get(node).await.unwrap();
        if want
            .iter()
            .all(|(k, v)| n.labels().get(*k).map(String::as_str) == Some(*v))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node labels {:?}, want {want:?}\n{}",
            n.labels(),
            handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the VMI and marks it Scheduled on `node`, as the operator does.
async fn create_scheduled(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    node: &str,
) -> VirtualMachineInstance {
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 60,
            "domain": {
                "memory": {"guest": "256Mi"},
                "firmware": {"kernelBoot": {
                    "kernelArgs": guest_cmdline(),
                    "container": {"image": "ferrovirt/guest-kernel:latest", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"}
                }},
                "devices": {"interfaces": [{"name": "default", "masquerade": {}}], "disks": [{"name": "ci", "disk": {}}]}
            },
            "volumes": [{"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\nhello from the controller test\n"}}],
            "networks": [{"name": "default", "pod": {}}]
        }
    });
    let vmi = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(vmi).unwrap(),
        )
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Scheduled", "nodeName": node,
        "phaseTransitionTimestamps": [{"phase": "Scheduled", "phaseTransitionTimestamp": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap()
        .uid()
        .map(|_| vmi)
        .unwrap()
}

async fn wait_phase(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    phase: VmiPhase,
    handler: &Handler,
) -> VirtualMachineInstance {
    let start = Instant::now();
    loop {
        let v = api.get(name).await.unwrap();
        if v.status.as_ref().and_then(|s| s.phase) == Some(phase) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "VMI {name} status {:?}, want phase {phase}\nhandler log:\n{}",
            v.status,
            handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn temp_run_dir() -> tempfile::TempDir {
    // Short: libvirt's monitor socket under <run-dir>/vmis/<uid>/libvirt/... must fit in
    // a UNIX socket address.
    tempfile::Builder::new()
        .prefix("vh")
        .tempdir_in("/tmp")
        .unwrap()
}

#[tokio::test]
async fn vmi_runs_survives_a_handler_restart_and_powers_off_on_delete() {
    let cp = shared().await;
    let (client, ns, node) = setup(cp, "h", "true").await;
    let run_dir = temp_run_dir();
    let handler = Handler::start(cp, &node, run_dir.path(), ns.name(), &[]);
    // This machine's KVM decides what the handler must say.
    let kvm = virt_handler::kvm::probe(
        Path::new(env!("CARGO_BIN_EXE_virt-handler")),
        Path::new("/dev/kvm"),
        Duration::from_secs(2),
    );
    let (kvm_label, virt_label, virt_status) = if kvm.usable() {
        ("true", "kvm", "KVM")
    } else {
        ("false", "emulation", "Emulation")
    };
    wait_labels(
        &client,
        &node,
        &[
            ("kubevirt.io/schedulable", "true"),
            ("ferrovirt.io/kvm", kvm_label),
            ("ferrovirt.io/virtualization", virt_label),
        ],
        &handler,
    )
    .await;

    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let started = Instant::now();
    let vmi = create_scheduled(&api, "g", &node).await;
    let uid = vmi.uid().unwrap();
    let dir = run_dir.path().join("vmis").join(&uid);
    let mut launcher = start_launcher(&dir, "g", &uid, 60);

    let running = wait_phase(&api, "g", VmiPhase::Running, &handler).await;
    let status = running.status.unwrap();
    assert_eq!(status.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(status.virtualization.as_deref(), Some(virt_status));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{:?}",
        status.conditions
    );
    assert_eq!(status.interfaces[0].name.as_deref(), Some("default"));
    assert!(
        status.interfaces[0]
            .mac
            .as_deref()
            .is_some_and(|m| m.starts_with("02:"))
    );
    let phases: Vec<_> = status
        .phase_transition_timestamps
        .iter()
        .filter_map(|p| p.phase)
        .collect();
    assert_eq!(phases, [VmiPhase::Scheduled, VmiPhase::Running]);
    let log = dir.join("serial0.log");
    wait_for_line(&log, GUEST_LINE);
    eprintln!(
        "MEASURE VMI Scheduled -> {GUEST_LINE:?} through the handler: {:.1}s ({virt_status})",
        started.elapsed().as_secs_f64()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("FERROVIRT CLOUD-INIT: hello from the controller test")
    );

    // A handler restart leaves the guest alone and picks it up again.
    let sock = dir.join("launcher.sock");
    let before = LauncherClient::connect(&sock)
        .await
        .unwrap()
        .domain_info()
        .await
        .unwrap()
        .unwrap();
    drop(handler);
    let handler = Handler::start(cp, &node, run_dir.path(), ns.name(), &[]);
    wait_for(
        Duration::from_secs(30),
        "the restarted handler resyncing",
        || handler.log_text().contains("domain found; resyncing"),
    );
    let after = LauncherClient::connect(&sock)
        .await
        .unwrap()
        .domain_info()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.state, after.qemu_pid),
        (DomainState::Running, before.qemu_pid),
        "the guest was touched"
    );
    assert_eq!(
        api.get("g").await.unwrap().status.unwrap().phase,
        Some(VmiPhase::Running)
    );

    // Deleting the VMI powers the guest off through ACPI; the launcher exits 0 and the
    // per-VMI directory goes.
    let deleted = Instant::now();
    api.delete("g", &DeleteParams::default()).await.unwrap();
    let code = launcher.wait_exit(Duration::from_secs(90));
    assert_eq!(
        code,
        Some(0),
        "ACPI poweroff; handler log:\n{}",
        handler.log_text()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("POWER BUTTON"),
        "the guest saw the ACPI power button"
    );
    eprintln!(
        "MEASURE VMI delete -> launcher exit: {:.1}s",
        deleted.elapsed().as_secs_f64()
    );
    wait_for(
        Duration::from_secs(40),
        "the per-VMI directory removed",
        || !dir.exists(),
    );
    drop(handler);
}

#[tokio::test]
async fn without_kvm_and_without_emulation_the_vmi_fails_naming_use_emulation() {
    let cp = shared().await;
    let (client, ns, node) = setup(cp, "nokvm", "false").await;
    let run_dir = temp_run_dir();
    let handler = Handler::start(
        cp,
        &node,
        run_dir.path(),
        ns.name(),
        &["--kvm-device", "/nonexistent/kvm"],
    );
    wait_labels(
        &client,
        &node,
        &[
            ("ferrovirt.io/kvm", "false"),
            ("ferrovirt.io/virtualization", "none"),
        ],
        &handler,
    )
    .await;

    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let vmi = create_scheduled(&api, "g", &node).await;
    let uid = vmi.uid().unwrap();
    let _launcher = start_launcher(&run_dir.path().join("vmis").join(&uid), "g", &uid, 5);
    let failed = wait_phase(&api, "g", VmiPhase::Failed, &handler)
        .await
        .status
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("KVMUnavailable"));
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .as_deref()
            .is_some_and(|m| m.contains("useEmulation")),
        "{ready:?}"
    );
    drop(handler);
}
