//! The real node (hack/node/, docs/real-node.md): kubelet, containerd and kube-proxy in a
//! network namespace, against the shared control plane. Pods run from images pushed to the
//! node's registry; their logs, exec, pod-to-pod traffic and a ClusterIP Service work as in
//! any cluster. One node per test binary.

use std::time::Duration;

use ferrovirt_tests::node::{RealNode, busybox_layout};
use ferrovirt_tests::{ControlPlane, TestNamespace, shared};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::wait::{await_condition, conditions};
use tokio::sync::OnceCell;

static NODE: OnceCell<RealNode> = OnceCell::const_new();
/// Pulling, creating the sandbox and starting a container on a loaded machine.
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// The port the busybox server of [`server_pod`] answers on, with an HTTP response `pong`.
const SERVER_PORT: u16 = 8080;

async fn node() -> (&'static ControlPlane, &'static RealNode) {
    let cp = shared().await;
    let node = NODE
        .get_or_init(|| async {
            RealNode::start(cp)
                .await
                .unwrap_or_else(|e| panic!("starting the real node: {e}"))
        })
        .await;
    (cp, node)
}

/// Pushes the busybox image to the node's registry (once per binary) and returns the
/// reference pods use.
async fn busybox(node: &RealNode) -> String {
    static PUSHED: OnceCell<String> = OnceCell::const_new();
    PUSHED
        .get_or_init(|| async {
            let layout = busybox_layout().unwrap_or_else(|e| panic!("{e}"));
            node.push(&layout, "ferrovirt/busybox:1.35")
                .await
                .unwrap_or_else(|e| panic!("pushing busybox: {e}"))
        })
        .await
        .clone()
}

fn pod_yaml(name: &str, node: &RealNode, image: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [/bin/sh, -c, {script:?}]
",
        node = node.name()
    )
}

/// A pod that prints `hello from <pod>` and then answers every connection on
/// [`SERVER_PORT`] with an HTTP response whose body is `pong` (see [`body`]).
fn server_pod(name: &str, node: &RealNode, image: &str) -> String {
    pod_yaml(
        name,
        node,
        image,
        // It reads the request up to its blank line first: closing with unread data would
        // reset the connection under the answer.
        &r#"echo hello from $(hostname); exec nc -ll -p PORT -e sh -c 'while read l && [ ${#l} -gt 1 ]; do :; done; echo -e "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\npong"'"#
            .replace("PORT", &SERVER_PORT.to_string()),
    )
}

/// Applies a pod and waits until it runs; returns it.
async fn run_pod(cp: &ControlPlane, ns: &TestNamespace, node: &RealNode, yaml: &str) -> Pod {
    cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(yaml))
        .await
        .unwrap()
        .expect_success();
    let name = serde_yaml::from_str::<Pod>(yaml)
        .unwrap()
        .metadata
        .name
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client().await.unwrap(), ns.name());
    let running = tokio::time::timeout(
        POD_TIMEOUT,
        await_condition(pods.clone(), &name, conditions::is_pod_running()),
    )
    .await;
    let pod = pods.get(&name).await.unwrap();
    assert!(
        matches!(running, Ok(Ok(_))),
        "pod {name} is not Running after {POD_TIMEOUT:?}: {:?}\n{}",
        pod.status,
        node.log_tails(20)
    );
    pod
}

async fn exec(cp: &ControlPlane, ns: &TestNamespace, pod: &str, script: &str) -> String {
    cp.kubectl(["exec", "-n", ns.name(), pod, "--", "/bin/sh", "-c", script])
        .await
        .unwrap()
        .expect_success()
        .to_string()
}

#[tokio::test]
async fn the_node_is_ready_with_its_own_runtime_and_address() {
    let (cp, node) = node().await;
    let nodes: Api<Node> = Api::all(cp.client().await.unwrap());
    let n = nodes.get(node.name()).await.unwrap();
    let status = n.status.unwrap();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("the Node has a Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(info.container_runtime_version, "containerd://2.4.2");
    assert_eq!(info.kubelet_version, "v1.35.4");
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == node.node_ip()),
        "{addresses:?}"
    );
}

#[tokio::test]
async fn a_pod_from_the_registry_runs_and_answers_logs_and_exec() {
    let (cp, node) = node().await;
    let image = busybox(node).await;
    let ns = TestNamespace::create(cp, "node-pod").await.unwrap();
    let pod = run_pod(cp, &ns, node, &server_pod("hello", node, &image)).await;
    assert_eq!(
        pod.status.unwrap().container_statuses.unwrap()[0].image,
        image
    );

    let mut logs = String::new();
    for _ in 0..20 {
        logs = cp
            .kubectl(["logs", "-n", ns.name(), "hello"])
            .await
            .unwrap()
            .expect_success()
            .to_string();
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(logs.trim(), "hello from hello");

    let out = exec(
        cp,
        &ns,
        "hello",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname",
    )
    .await;
    assert!(out.contains("nc -ll -p 8080"), "{out}");
    assert!(out.trim_end().ends_with("hello"), "{out}");
}

#[tokio::test]
async fn a_demo_image_name_resolves_to_the_local_registry() {
    let (cp, node) = node().await;
    let layout = busybox_layout().unwrap();
    // KubeVirt's examples name quay.io/kubevirt/...; containerd pulls that path from the
    // node's registry (docs/real-node.md).
    node.push(&layout, "kubevirt/ferrovirt-mirror-check:v1")
        .await
        .unwrap();
    let ns = TestNamespace::create(cp, "node-mirror").await.unwrap();
    let pod = run_pod(
        cp,
        &ns,
        node,
        &pod_yaml(
            "mirror",
            node,
            "quay.io/kubevirt/ferrovirt-mirror-check:v1",
            "echo mirrored; sleep 3600",
        ),
    )
    .await;
    assert!(pod.status.unwrap().container_statuses.unwrap()[0].ready);
    // containerd holds the image under the name the pod asked for (its status may show
    // another name of the same digest, e.g. the busybox pushed by the other tests).
    let crictl = node.crictl(&["images", "-o", "json"]);
    assert!(
        crictl.contains("\"quay.io/kubevirt/ferrovirt-mirror-check:v1\""),
        "{crictl}"
    );
}

#[tokio::test]
async fn pods_reach_each_other_directly_and_through_a_cluster_ip_service() {
    let (cp, node) = node().await;
    let image = busybox(node).await;
    let ns = TestNamespace::create(cp, "node-net").await.unwrap();
    let server = run_pod(cp, &ns, node, &server_pod("server", node, &image)).await;
    let client = run_pod(
        cp,
        &ns,
        node,
        &pod_yaml("client", node, &image, "sleep 3600"),
    )
    .await;
    let server_ip = server.status.unwrap().pod_ip.unwrap();
    let client_ip = client.status.unwrap().pod_ip.unwrap();
    assert_ne!(server_ip, client_ip);

    let direct = exec(
        cp,
        &ns,
        "client",
        &format!("echo | nc -w 5 {server_ip} {SERVER_PORT}"),
    )
    .await;
    assert_eq!(body(&direct), "pong", "pod to pod {server_ip}: {direct:?}");

    // The `kubernetes` Service leads to the API server (in-cluster clients): plain HTTP to
    // its TLS port gets Go's TLS server's answer, so the connection reached it.
    let api = exec(
        cp,
        &ns,
        "client",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT",
    )
    .await;
    assert!(
        api.starts_with("HTTP/1.0 400 Bad Request"),
        "the API server through the kubernetes Service: {api:?}"
    );

    let service = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: server}}
spec:
  selector: {{app: server}}
  ports: [{{port: 80, targetPort: {SERVER_PORT}}}]
"
    );
    cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(&service))
        .await
        .unwrap()
        .expect_success();
    let cluster_ip = cp
        .kubectl([
            "get",
            "service",
            "server",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await
        .unwrap()
        .expect_success()
        .to_string();
    // kube-proxy programs the Service once it sees its EndpointSlice: retry briefly.
    let mut through_service = String::new();
    for _ in 0..30 {
        through_service = exec(
            cp,
            &ns,
            "client",
            &format!("echo | nc -w 2 {cluster_ip} 80 || true"),
        )
        .await;
        if body(&through_service) == "pong" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        body(&through_service),
        "pong",
        "ClusterIP {cluster_ip}:80 through kube-proxy\n{}",
        node.log_tails(20)
    );

    // The API server reaches the pod itself (its proxy subresource dials the pod IP).
    let proxied = cp
        .kubectl([
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/{}/pods/server:{SERVER_PORT}/proxy/",
                ns.name()
            ),
        ])
        .await
        .unwrap();
    assert_eq!(body(proxied.expect_success()), "pong", "{proxied}");
}

/// The last line of a server's answer (the body of [`server_pod`]'s HTTP response).
fn body(answer: &str) -> &str {
    answer.trim_end().lines().last().unwrap_or("").trim()
}
