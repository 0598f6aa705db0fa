//! The handler binary against a real API server (tests/ harness), the real launcher,
//! libvirt and QEMU. The test plays the operator: it marks the VMI Scheduled on the
//! handler's node and starts the launcher as devnode would (without a mount namespace,
//! hence `--launcher-vmi-dir host`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Handler, create_scheduled, setup, temp_run_dir, wait_labels, wait_phase};
use common::{GUEST_LINE, domain_info, start_launcher, wait_for, wait_for_line};
use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::protocol::DomainState;
use ferrovirt_tests::shared;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

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
            // No kubelet, so no static CPU manager: no dedicated CPUs here.
            ("kubevirt.io/cpumanager", "false"),
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

    let metrics = handler.metrics().await;
    for line in [
        "virt_handler_domains_started_total 1\n",
        "virt_handler_vmi_workers 1\n",
        "virt_handler_vmi_start_seconds_count 1\n",
        if kvm.usable() {
            "virt_handler_kvm_usable 1\n"
        } else {
            "virt_handler_kvm_usable 0\n"
        },
    ] {
        assert!(
            metrics.contains(line),
            "{line:?} missing from /metrics:\n{metrics}"
        );
    }

    // A handler restart leaves the guest alone and picks it up again.
    let sock = dir.join("launcher.sock");
    let before = domain_info(&sock).await;
    drop(handler);
    let handler = Handler::start(cp, &node, run_dir.path(), ns.name(), &[]);
    wait_for(
        Duration::from_secs(30),
        "the restarted handler resyncing",
        || handler.log_text().contains("domain found; resyncing"),
    );
    let after = domain_info(&sock).await;
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
    let metrics = handler.metrics().await;
    for line in [
        "virt_handler_vmi_failures_total{reason=\"KVMUnavailable\"} 1\n",
        "virt_handler_domains_started_total 0\n",
        "virt_handler_kvm_usable 0\n",
    ] {
        assert!(
            metrics.contains(line),
            "{line:?} missing from /metrics:\n{metrics}"
        );
    }
    drop(handler);
}
