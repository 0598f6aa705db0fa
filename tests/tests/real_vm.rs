//! A VM on the real node (issue 9): kubelet and containerd run the launcher pod from the
//! virt-launcher image, and pull the containerDisk of KubeVirt's `vm-cirros.yaml` as a
//! container of that pod (docs/contracts.md, "The launcher pod"); virt-handler reads the
//! disk through that container's process. The example is applied unchanged but for
//! `runStrategy: Always`; the guest boots and its console answers through virt-api and
//! KubeVirt's virtctl.
//!
//! Needs the images: `hack/build-images.sh --no-push` (the OCI layouts in
//! `$FERROVIRT_CACHE/image-build/oci/`, pushed here to the node's registry).

use std::time::{Duration, Instant};

use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::pod::{CONTAINER_DISK_BINARY_CONTAINER, volume_container};
use ferrovirt_tests::aggregation::{start_virt_api, virtctl_path};
use ferrovirt_tests::console::Client;
use ferrovirt_tests::guest::READY_LINE;
use ferrovirt_tests::helm::image_layout;
use ferrovirt_tests::node::RealNode;
use ferrovirt_tests::{Stack, TestNamespace, examples_dir, shared};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Pulls, the sandbox and a TCG boot on two loaded cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);
/// The containerDisk `vm-cirros.yaml` names; the node's containerd mirrors `registry:5000`
/// to its own registry, path unchanged (docs/real-node.md).
const CIRROS: &str = "kubevirt/cirros-container-disk-demo:devel";

/// The OCI layout `hack/build-images.sh` makes of an image of the image store.
fn guest_layout(reference: &str) -> std::path::PathBuf {
    let layout = ferrovirt_tests::guest::cache_dir()
        .join("image-build/oci")
        .join(format!("guest-{}", reference.replace(['/', ':'], "_")));
    assert!(
        layout.join("index.json").is_file(),
        "the containerDisk image {reference} is missing at {}: build the images with \
         `hack/build-images.sh --no-push` (hack/setup.sh does)",
        layout.display()
    );
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_cirros_boots_on_the_real_node_from_its_container_disk_and_its_console_answers() {
    let cp = shared().await;
    let node = RealNode::start(cp)
        .await
        .unwrap_or_else(|e| panic!("starting the real node: {e}"));
    let launcher = node
        .push(
            &image_layout("virt-launcher"),
            "ferrovirt/virt-launcher:real-vm",
        )
        .await
        .unwrap_or_else(|e| panic!("pushing virt-launcher: {e}"));
    node.push(&guest_layout(&format!("registry:5000/{CIRROS}")), CIRROS)
        .await
        .unwrap_or_else(|e| panic!("pushing the cirros containerDisk: {e}"));
    let _virt_api = start_virt_api(cp)
        .await
        .unwrap_or_else(|e| panic!("starting virt-api: {e}"));
    let stack = Stack::start_on_real_node(cp, &node, &launcher)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "starting Ferrovirt for the real node: {e}\n{}",
                node.log_tails(20)
            )
        });
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "real-vm").await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let logs = || format!("{}\n{}", stack.log_tails(30), node.log_tails(30));

    let cirros = examples_dir().join("vm-cirros.yaml");
    let kubectl = |args: Vec<String>| {
        let mut all = vec!["-n".to_string(), ns.name().to_string()];
        all.extend(args);
        async move {
            let out = cp.kubectl(all.clone()).await.expect("kubectl runs");
            assert!(out.success(), "kubectl {all:?}: {}", out.stderr);
        }
    };
    kubectl(vec![
        "apply".into(),
        "-f".into(),
        cirros.display().to_string(),
    ])
    .await;
    let applied = Instant::now();
    kubectl(
        [
            "patch",
            "vm",
            "vm-cirros",
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Always"}}"#,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;

    // The guest's first console line, in the serial log the launcher writes in the per-VMI
    // directory (a hostPath of the pod).
    let (vmi, log) = loop {
        let vmi = vmis.get_opt("vm-cirros").await.unwrap();
        if let Some(vmi) = vmi
            && let Some(uid) = vmi.metadata.uid.clone()
            && let Ok(text) = std::fs::read_to_string(stack.vmi_dir(&uid).join("serial0.log"))
            && text.contains(READY_LINE)
        {
            break (vmi, text);
        }
        assert!(
            applied.elapsed() < BOOT_TIMEOUT,
            "vm-cirros did not boot on the real node:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let boot = applied.elapsed();
    eprintln!(
        "MEASURE real node: runStrategy Always to {READY_LINE:?} in {:.1} s",
        boot.as_secs_f64()
    );
    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo 'printed from cloud-init userdata'"),
        "vm-cirros did not print its cloud-init line:\n{log}"
    );

    // A real pod on the real node, with the disk as a container of it.
    let uid = vmi.metadata.uid.clone().unwrap();
    let pod = pods
        .list(&ListParams::default().labels(&format!("kubevirt.io/created-by={uid}")))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the launcher pod");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(node.name()));
    assert_eq!(
        spec.init_containers.unwrap()[0].name,
        CONTAINER_DISK_BINARY_CONTAINER
    );
    let disk = spec
        .containers
        .iter()
        .find(|c| c.name == volume_container("containerdisk"))
        .expect("the containerDisk's container");
    assert_eq!(
        disk.image.as_deref(),
        Some(format!("registry:5000/{CIRROS}").as_str())
    );
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

    // The console through virt-api and virt-handler, with KubeVirt's virtctl.
    let vmi_phase = vmis
        .get("vm-cirros")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase);
    assert_eq!(vmi_phase, Some(VmiPhase::Running), "{}", logs());
    let mut console = Client::spawn(
        &virtctl_path(),
        &cp.kubeconfig(),
        &["-n", ns.name(), "console", "vm-cirros"],
    )
    .unwrap();
    console.send(b"echo fv-$((6*7))\n").unwrap();
    console.expect("fv-42", false, STEP).await;
    console.send(b"\x1d").unwrap();
    let _ = console.exit(STEP).await;

    // Stopping: the pod goes, and with it every container.
    kubectl(["delete", "vm", "vm-cirros"].map(String::from).to_vec()).await;
    let stopped = Instant::now();
    while pods
        .get_opt(&pod.metadata.name.clone().unwrap())
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            stopped.elapsed() < STEP * 2,
            "the launcher pod is still there:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
