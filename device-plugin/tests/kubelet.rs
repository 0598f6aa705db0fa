//! The device plugins with the real kubelet of a real node (hack/node/, docs/real-node.md):
//! the Node advertises the resources, the scheduler places a pod that requests
//! `devices.kubevirt.io/tun` by them, and the container can open `/dev/net/tun` while a pod
//! without the request has no such device. After a kubelet restart the plugins register
//! again and a new pod gets the device. When the plugins stop, the kubelet drops them.
//!
//! The plugins run in this process on the host: their sockets go into the node's
//! `/var/lib/kubelet/device-plugins`, which the host sees as `<node dir>/var/lib/kubelet/
//! device-plugins`, and the device nodes are the host's (the node shares the host's /dev).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrovirt_device_plugin::{Config, DevicePlugins, HostDevice};
use ferrovirt_tests::node::{RealNode, busybox_layout};
use ferrovirt_tests::{ControlPlane, TestNamespace, repo_root, shared};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};

/// Hang guards, not speed checks: a node status update (every 10 s), a pod start.
const PATIENCE: Duration = Duration::from_secs(120);

/// Device counts by resource name.
type Counts = BTreeMap<String, u64>;

/// The node's `status.capacity` and `status.allocatable` of the devices.kubevirt.io
/// resources (`1k` is 1000).
async fn advertised(nodes: &Api<Node>, name: &str) -> (Counts, Counts) {
    let status = nodes.get(name).await.unwrap().status.unwrap_or_default();
    let ours = |m: Option<BTreeMap<String, Quantity>>| -> Counts {
        m.unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with("devices.kubevirt.io/"))
            .map(|(k, v)| {
                let n = crds::quantity::bytes(&v).unwrap_or_else(|| panic!("{k}: {v:?}"));
                (k, n)
            })
            .collect()
    };
    (ours(status.capacity), ours(status.allocatable))
}

/// Waits until the node advertises `want` as (capacity, allocatable).
async fn wait_for_node(nodes: &Api<Node>, node: &RealNode, want: &(Counts, Counts)) {
    let mut seen = advertised(nodes, node.name()).await;
    let waited = tokio::time::timeout(PATIENCE, async {
        while &seen != want {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = advertised(nodes, node.name()).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "node {}: (capacity, allocatable) {seen:?}, want {want:?}\n{}",
        node.name(),
        node.log_tails(20)
    );
}

fn pod(name: &str, node: &RealNode, image: &str, tun: bool) -> Pod {
    let limits = if tun {
        serde_json::json!({"devices.kubevirt.io/tun": "1"})
    } else {
        serde_json::json!({})
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            // The scheduler places it by the node's allocatable devices.
            "nodeSelector": {"kubernetes.io/hostname": node.name()},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["/bin/sh", "-c", "sleep 3600"],
                "resources": {"limits": limits},
            }],
        },
    }))
    .unwrap()
}

async fn start_pod(cp: &ControlPlane, ns: &TestNamespace, node: &RealNode, pod: Pod) {
    let pods: Api<Pod> = Api::namespaced(cp.client().await.unwrap(), ns.name());
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = tokio::time::timeout(
        PATIENCE,
        await_condition(pods.clone(), &name, conditions::is_pod_running()),
    )
    .await;
    let status = pods.get(&name).await.unwrap().status;
    assert!(
        matches!(running, Ok(Ok(_))),
        "pod {name} is not Running: {status:?}\n{}",
        node.log_tails(20)
    );
}

/// What `script` prints (stdout and stderr) in the pod's container.
async fn run_in(cp: &ControlPlane, ns: &TestNamespace, pod: &str, script: &str) -> String {
    let out = cp
        .kubectl(["exec", "-n", ns.name(), pod, "--", "/bin/sh", "-c", script])
        .await
        .unwrap();
    out.expect_success().to_string()
}

/// How often the kubelet's log says a plugin registered `resource`.
fn registrations(node: &RealNode, resource: &str) -> usize {
    let needle = format!(
        "Got registration request from device plugin with resource\" resourceName=\"{resource}\""
    );
    std::fs::read_to_string(node.log("kubelet"))
        .unwrap_or_default()
        .matches(&needle)
        .count()
}

/// Restarts the node's kubelet the way it happens on any node: the process ends and is
/// started again (by hack/node/up.sh, which keeps what still runs).
async fn restart_kubelet(cp: &ControlPlane, node: &RealNode) {
    let pid = node.pid("kubelet").expect("the kubelet's pid file");
    let killed = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(killed.success(), "kill {pid}");
    let proc = format!("/proc/{pid}");
    tokio::time::timeout(PATIENCE, async {
        while Path::new(&proc).exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the kubelet exits on SIGTERM");
    // "<name> <index>", written by up.sh for down.sh.
    let id = std::fs::read_to_string(node.dir().join("node.id")).unwrap();
    let (name, index) = id.trim().split_once(' ').expect("node.id: <name> <index>");
    let up = tokio::process::Command::new("bash")
        .arg(repo_root().join("hack/node/up.sh"))
        .arg("--dir")
        .arg(node.dir())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .arg("--pki")
        .arg(cp.pki().dir())
        .args(["--name", name, "--index", index])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        up.status.success(),
        "hack/node/up.sh: {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
}

#[tokio::test]
async fn the_kubelet_advertises_the_devices_and_a_pod_gets_tun() {
    let cp = shared().await;
    let node = RealNode::start(cp)
        .await
        .unwrap_or_else(|e| panic!("starting the real node: {e}"));
    let nodes: Api<Node> = Api::all(cp.client().await.unwrap());
    let plugin_dir = node.dir().join("var/lib/kubelet/device-plugins");
    let config = Config::new(&plugin_dir);
    let max = u64::from(config.max_devices);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugins = tokio::spawn(DevicePlugins::run(config, async {
        let _ = stopped.await;
    }));

    // Every resource counts max devices; those whose node is missing on this host are
    // all Unhealthy, so none of them is allocatable.
    let mut capacity = BTreeMap::new();
    let mut allocatable = BTreeMap::new();
    for d in HostDevice::permanent() {
        let present = Path::new(&d.path).exists();
        capacity.insert(d.resource_name(), max);
        allocatable.insert(d.resource_name(), if present { max } else { 0 });
    }
    assert_eq!(
        allocatable["devices.kubevirt.io/tun"], max,
        "this host has no /dev/net/tun"
    );
    let advertising = (capacity.clone(), allocatable);
    wait_for_node(&nodes, &node, &advertising).await;

    let image = node
        .push(
            &busybox_layout().unwrap_or_else(|e| panic!("{e}")),
            "ferrovirt/busybox:1.35",
        )
        .await
        .unwrap_or_else(|e| panic!("pushing busybox: {e}"));
    let ns = TestNamespace::create(cp, "device-plugin").await.unwrap();
    start_pod(cp, &ns, &node, pod("with-tun", &node, &image, true)).await;
    start_pod(cp, &ns, &node, pod("without", &node, &image, false)).await;

    // Opening works (the device cgroup allows it); reading an unconfigured tun fails with
    // EBADFD, where a refused open would say "Operation not permitted".
    let probe = "ls -l /dev/net/tun 2>&1; cat /dev/net/tun 2>&1; true";
    let with = run_in(cp, &ns, "with-tun", probe).await;
    assert!(with.contains("10, 200"), "{with}");
    assert!(with.contains("File descriptor in bad state"), "{with}");
    let without = run_in(cp, &ns, "without", probe).await;
    assert!(without.contains("No such file or directory"), "{without}");

    // A kubelet restart removes the plugin sockets and serves a new kubelet.sock: the plugins
    // serve and register again, and the new kubelet hands tun to a new pod.
    let registered_before = registrations(&node, "devices.kubevirt.io/tun");
    restart_kubelet(cp, &node).await;
    let waited = tokio::time::timeout(PATIENCE, async {
        while registrations(&node, "devices.kubevirt.io/tun") <= registered_before {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "no new registration of tun\n{}",
        node.log_tails(30)
    );
    start_pod(cp, &ns, &node, pod("after-restart", &node, &image, true)).await;
    let after = run_in(cp, &ns, "after-restart", probe).await;
    assert!(after.contains("File descriptor in bad state"), "{after}");

    // Stopped plugins withdraw their devices: the kubelet counts none of any resource.
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, plugins)
        .await
        .expect("the plugins stop")
        .unwrap()
        .unwrap();
    let none: Counts = capacity.keys().map(|k| (k.clone(), 0)).collect();
    wait_for_node(&nodes, &node, &(none.clone(), none)).await;
    let left: Vec<_> = std::fs::read_dir(&plugin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("kubevirt-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
