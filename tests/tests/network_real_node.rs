//! Pod networking on the real node (kubelet, containerd, the CNI bridge, kube-proxy): a
//! VMI with the masquerade binding boots from the Ferrovirt guest's containerDisk in a
//! launcher pod with a network namespace of its own; virt-handler prepares that namespace
//! (docs/networking.md); the guest gets 10.0.2.2 by DHCP; `kubectl get vmi` shows the pod's
//! IP; another pod pings the guest and GETs its httpd through the pod IP and through a
//! ClusterIP Service made by `ferroctl expose`. Every address is inside the node's
//! namespaces, which the harness creates.

use std::time::{Duration, Instant};

use ferrovirt_tests::aggregation::{ferroctl, start_virt_api};
use ferrovirt_tests::helm::image_layout;
use ferrovirt_tests::node::{RealNode, busybox_layout};
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, shared};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The Ferrovirt guest's disk under the name KubeVirt's examples use (real_vm.rs too).
const DISK: &str = "kubevirt/cirros-container-disk-demo:devel";

fn guest_layout() -> std::path::PathBuf {
    let reference = format!("registry:5000/{DISK}");
    let layout = ferrovirt_tests::guest::cache_dir()
        .join("image-build/oci")
        .join(format!("guest-{}", reference.replace(['/', ':'], "_")));
    assert!(
        layout.join("index.json").is_file(),
        "{} missing: build the images with `hack/build-images.sh --no-push`",
        layout.display()
    );
    layout
}

async fn kubectl(cp: &ControlPlane, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    cp.kubectl(all)
        .await
        .expect("kubectl runs")
        .expect_success()
        .to_string()
}

/// Runs `script` in the client pod until its output contains `want` (kube-proxy and the
/// guest's httpd may need a moment); returns the last output.
async fn eventually(cp: &ControlPlane, ns: &str, script: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let out = cp
            .kubectl(["exec", "-n", ns, "client", "--", "/bin/sh", "-c", script])
            .await
            .expect("kubectl runs");
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains(want) || start.elapsed() > Duration::from_secs(60) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_guest_is_reached_from_another_pod_by_pod_ip_and_service() {
    let cp = shared().await;
    let node = RealNode::start(cp)
        .await
        .unwrap_or_else(|e| panic!("starting the real node: {e}"));
    let launcher = node
        .push(
            &image_layout("virt-launcher"),
            "ferrovirt/virt-launcher:net",
        )
        .await
        .unwrap_or_else(|e| panic!("pushing virt-launcher: {e}"));
    node.push(&guest_layout(), DISK)
        .await
        .unwrap_or_else(|e| panic!("pushing the guest's containerDisk: {e}"));
    let busybox = node
        .push(&busybox_layout().unwrap(), "ferrovirt/busybox:1.35")
        .await
        .unwrap_or_else(|e| panic!("pushing busybox: {e}"));
    let _virt_api = start_virt_api(cp).await.unwrap();
    let stack = Stack::start_on_real_node(cp, &node, &launcher)
        .await
        .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}\n{}", node.log_tails(20)));
    let ns = TestNamespace::create(cp, "net-node").await.unwrap();
    let ns = ns.name();
    let logs = || format!("{}\n{}", stack.log_tails(30), node.log_tails(30));

    let yaml = format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: web
spec:
  domain:
    memory: {{guest: 256Mi}}
    devices:
      disks: [{{name: containerdisk, disk: {{bus: virtio}}}}]
      interfaces: [{{name: default, masquerade: {{}}}}]
  networks: [{{name: default, pod: {{}}}}]
  volumes: [{{name: containerdisk, containerDisk: {{image: registry:5000/{DISK}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {busybox}
    command: [/bin/sh, -c, 'sleep 3600']
",
        node = node.name()
    );
    cp.kubectl_with_stdin(["apply", "-n", ns, "-f", "-"], Some(&yaml))
        .await
        .unwrap()
        .expect_success();
    let applied = Instant::now();

    // The guest's DHCP line, in the serial log of the per-VMI directory.
    let vmis: Api<crds::VirtualMachineInstance> = Api::namespaced(cp.client().await.unwrap(), ns);
    let uid = loop {
        if let Some(vmi) = vmis.get_opt("web").await.unwrap()
            && let Some(uid) = vmi.metadata.uid.clone()
            && std::fs::read_to_string(stack.vmi_dir(&uid).join("serial0.log"))
                .is_ok_and(|t| t.contains("FERROVIRT IP: 10.0.2.2"))
        {
            break uid;
        }
        assert!(
            applied.elapsed() < BOOT_TIMEOUT,
            "the guest printed no DHCP address:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "MEASURE real node: apply -> guest's DHCP address in {:.1} s",
        applied.elapsed().as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(cp.client().await.unwrap(), ns);
    let launcher_pod = pods
        .list(&ListParams::default().labels(&format!("kubevirt.io/created-by={uid}")))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the launcher pod");
    let pod_ip = launcher_pod
        .status
        .unwrap()
        .pod_ip
        .expect("the launcher pod's IP");

    // kubectl get vmi shows the pod's IP (the printer column reads status.interfaces[0]).
    let table = kubectl(cp, ns, &["get", "vmi", "web"]).await;
    assert!(
        table.contains(&pod_ip),
        "kubectl get vmi lacks {pod_ip}:\n{table}"
    );

    // From another pod: ping and HTTP through the pod IP (everything is forwarded: no ports).
    let ping = eventually(
        cp,
        ns,
        &format!("ping -c 3 -W 2 {pod_ip}"),
        " 0% packet loss",
    )
    .await;
    assert!(
        ping.contains(" 0% packet loss"),
        "ping {pod_ip}: {ping}\n{}",
        logs()
    );
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {pod_ip} 80");
    let http = eventually(cp, ns, &get, "ferrovirt guest").await;
    assert!(
        http.contains("ferrovirt guest"),
        "GET {pod_ip}:80: {http}\n{}",
        logs()
    );

    // Through a ClusterIP Service made by ferroctl expose (kube-proxy on the node).
    ferroctl(
        &cp.kubeconfig(),
        &[
            "-n",
            ns,
            "expose",
            "vmi",
            "web",
            "--name",
            "web",
            "--port",
            "8000",
            "--target-port",
            "80",
        ],
    )
    .await
    .unwrap()
    .expect_success();
    let cluster_ip = kubectl(
        cp,
        ns,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await;
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 8000");
    let http = eventually(cp, ns, &get, "ferrovirt guest").await;
    assert!(
        http.contains("ferrovirt guest"),
        "GET {cluster_ip}:8000 (Service): {http}\n{}",
        logs()
    );

    kubectl(cp, ns, &["delete", "vmi", "web", "--wait=false"]).await;
}
