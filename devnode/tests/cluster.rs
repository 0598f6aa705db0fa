//! devnode against a real control plane (etcd, kube-apiserver, controller-manager,
//! kube-scheduler from `hack/build-control-plane.sh`). Each test starts its own devnode
//! (own node name and state dir) and pins its pods to that node with a nodeSelector, so the
//! real scheduler places them. Needs root (PID and mount namespaces).

use ferrovirt_tests::{ControlPlane, TestNamespace, shared};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const DEVNODE: &str = env!("CARGO_BIN_EXE_devnode");
const TIMEOUT: Duration = Duration::from_secs(60);

/// A devnode process for one test; killed with its pods when dropped.
struct DevNode {
    name: String,
    state: tempfile::TempDir,
    child: Child,
}

impl DevNode {
    fn start(cp: &ControlPlane, test: &str) -> DevNode {
        assert!(
            nix_is_root(),
            "devnode's tests need root: PID and mount namespaces (run them as root, as CI does)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "devnode-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // /tmp/fv-<test pid>-…: hack/test.sh names pods whose test has ended as leaks.
        let state = tempfile::Builder::new()
            .prefix(&format!("fv-{}-", std::process::id()))
            .tempdir_in("/tmp")
            .expect("state dir");
        let child = spawn(cp, &name, state.path());
        DevNode { name, state, child }
    }

    /// Starts devnode again on the same node and state dir (after [`DevNode::stop`]).
    fn restart(&mut self, cp: &ControlPlane) {
        self.child = spawn(cp, &self.name, self.state.path());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("devnode.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(DEVNODE)
            .arg("stop-all")
            .arg("--state-dir")
            .arg(self.state.path())
            .stdout(Stdio::null())
            .status();
    }
}

/// A devnode process for node `name` with state dir `state`, logging (appending) to
/// `<state>/devnode.log`.
fn spawn(cp: &ControlPlane, name: &str, state: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("devnode.log"))
        .expect("devnode log");
    Command::new(DEVNODE)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--node-name", name])
        .arg("--state-dir")
        .arg(state)
        .arg("--bin-dir")
        .arg(Path::new(DEVNODE).parent().expect("bin dir"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start devnode")
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

async fn setup(test: &str) -> (&'static ControlPlane, kube::Client, TestNamespace, DevNode) {
    let cp = shared().await;
    let client = cp.client().await.expect("client");
    let ns = TestNamespace::create(cp, test).await.expect("namespace");
    let node = DevNode::start(cp, test);
    (cp, client, ns, node)
}

/// A pod running `ferrovirt/devnode-testpod` with `args`, pinned by label to `node`.
fn pod(name: &str, node: &DevNode, policy: &str, args: &[&str], extra: Value) -> Pod {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node.name},
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "main", "image": "ferrovirt/devnode-testpod:dev", "args": args}],
        },
    });
    merge(&mut p["spec"], extra);
    serde_json::from_value(p).expect("pod")
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

/// Polls until `check` holds for the pod; panics with its status and devnode's log otherwise.
async fn wait_pod(
    api: &Api<Pod>,
    name: &str,
    node: &DevNode,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let start = Instant::now();
    loop {
        let pod = api.get_opt(name).await.expect("get pod");
        if let Some(p) = &pod
            && check(p)
        {
            return p.clone();
        }
        if start.elapsed() > TIMEOUT {
            let status = pod.map(|p| serde_json::to_string_pretty(&p.status).unwrap_or_default());
            panic!(
                "pod {name}: {what} not reached in {TIMEOUT:?}; status: {status:?}\ndevnode log:\n{}",
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn main_status(p: &Pod) -> Value {
    let s = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    serde_json::to_value(s).unwrap_or_default()
}

fn main_pid(p: &Pod) -> i32 {
    let id = main_status(p)["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    id.strip_prefix("devnode://")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("containerID {id:?}"))
}

fn condition(p: &Pod, kind: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// Host PIDs of processes whose command line contains `token`.
fn processes_with(token: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(token) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn node_registers_ready_with_kubevirt_devices_and_a_lease() {
    let (_cp, client, _ns, node) = setup("node").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    let n = loop {
        if let Some(n) = nodes.get_opt(&node.name).await.expect("get node") {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                break n;
            }
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "node {} not Ready; devnode log:\n{}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = serde_json::to_value(n.status.unwrap()).unwrap();
    assert_eq!(status["allocatable"]["devices.kubevirt.io/kvm"], "1k");
    assert_eq!(status["capacity"]["pods"], "110");
    assert!(
        status["allocatable"]["cpu"].is_string() && status["allocatable"]["memory"].is_string()
    );
    assert_eq!(
        status["addresses"][0],
        json!({"type": "InternalIP", "address": "127.0.0.1"})
    );
    let labels = n.metadata.labels.unwrap();
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert!(n.spec.unwrap().taints.unwrap_or_default().is_empty());
    // The first heartbeat writes the Lease right after the Node turns Ready, as kubelet's
    // does: wait for it rather than race it.
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease = loop {
        if let Some(lease) = leases
            .get_opt(&node.name)
            .await
            .expect("reading the node's lease")
        {
            break lease;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "node {} has no Lease in kube-node-lease; devnode log:\n{}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(node.name.as_str())
    );
}

#[tokio::test]
async fn scheduled_pods_run_to_succeeded_and_failed_with_exit_codes() {
    let (_cp, client, ns, node) = setup("exit").await;
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    api.create(
        &PostParams::default(),
        &pod("ok", &node, "Never", &["exit", "0"], json!({})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &pod("three", &node, "Never", &["exit", "3"], json!({})),
    )
    .await
    .unwrap();
    let ok = wait_pod(&api, "ok", &node, "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        ok.spec.as_ref().unwrap().node_name.as_deref(),
        Some(node.name.as_str()),
        "bound by the scheduler"
    );
    assert_eq!(condition(&ok, "PodScheduled").as_deref(), Some("True"));
    let t = &main_status(&ok)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed")),
        "{t}"
    );
    let three = wait_pod(&api, "three", &node, "Failed", |p| phase(p) == "Failed").await;
    let t = &main_status(&three)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error")),
        "{t}"
    );
    assert_eq!(three.status.unwrap().pod_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn host_path_is_mounted_and_env_is_resolved() {
    let (_cp, client, ns, node) = setup("volume").await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello"), "hi").unwrap();
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    let mount = json!({
        "volumes": [{"name": "data", "hostPath": {"path": data.path(), "type": "Directory"}}],
        "containers": [{
            "name": "main", "image": "ferrovirt/devnode-testpod:dev",
            "args": ["check-file", "/mnt/devnode-test/hello"],
            "volumeMounts": [{"name": "data", "mountPath": "/mnt/devnode-test"}],
        }],
    });
    api.create(
        &PostParams::default(),
        &pod("mounted", &node, "Never", &[], mount),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "mounted", &node, "a terminal phase", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(
        phase(&p),
        "Succeeded",
        "the file in the hostPath is visible at its mountPath: {:?}",
        main_status(&p)
    );
    assert!(
        !Path::new("/mnt/devnode-test/hello").exists(),
        "the bind mount stayed inside the pod's mount namespace"
    );

    let env = json!({"containers": [{
        "name": "main", "image": "ferrovirt/devnode-testpod:dev",
        "args": ["print-env", "MY_NAME", "MY_NS", "MY_IP", "GREETING"],
        "env": [
            {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "value": "hello $(MY_NAME)"},
        ],
    }]});
    api.create(
        &PostParams::default(),
        &pod("env", &node, "Never", &[], env),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "env", &node, "Succeeded", |p| phase(p) == "Succeeded").await;
    let uid = p.metadata.uid.unwrap();
    let log_path: PathBuf = node
        .state
        .path()
        .join("pods")
        .join(format!("{}_env_{uid}", ns.name()))
        .join("main.log");
    let log = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    for line in [
        "MY_NAME=env".to_string(),
        format!("MY_NS={}", ns.name()),
        "MY_IP=127.0.0.1".into(),
        "GREETING=hello env".into(),
    ] {
        assert!(log.contains(&line), "{line:?} in {log}");
    }
}

#[tokio::test]
async fn deletion_sends_sigterm_and_removes_the_pod() {
    let (_cp, client, ns, node) = setup("delete").await;
    let out = tempfile::tempdir().unwrap();
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    let spec = json!({
        "volumes": [{"name": "out", "hostPath": {"path": out.path(), "type": "DirectoryOrCreate"}}],
        "containers": [{
            "name": "main", "image": "ferrovirt/devnode-testpod:dev",
            "args": ["wait-term", "/out/term", "/out/armed"],
            "volumeMounts": [{"name": "out", "mountPath": "/out"}],
            "readinessProbe": {"exec": {"command": ["cat", "/out/armed"]}, "periodSeconds": 1},
        }],
    });
    api.create(
        &PostParams::default(),
        &pod("term", &node, "Always", &[], spec),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "term", &node, "Running and Ready", |p| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    assert!(main_status(&p)["state"]["running"]["startedAt"].is_string());
    api.delete("term", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while api.get_opt("term").await.unwrap().is_some() {
        assert!(
            start.elapsed() < TIMEOUT,
            "pod not removed after deletion; devnode log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("term")).unwrap_or_default(),
        "SIGTERM\n",
        "the container got SIGTERM; devnode log:\n{}",
        node.log()
    );
}

#[tokio::test]
async fn foreign_image_waits_with_err_image_pull() {
    let (_cp, client, ns, node) = setup("image").await;
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    let spec = json!({"containers": [{"name": "main", "image": "docker.io/library/busybox:1.36"}]});
    api.create(
        &PostParams::default(),
        &pod("foreign", &node, "Always", &[], spec),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "foreign", &node, "a waiting reason", |p| {
        main_status(p)["state"]["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    let msg = main_status(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("ferrovirt/") && msg.contains("busybox"),
        "{msg}"
    );
}

#[tokio::test]
async fn killing_the_main_process_kills_its_daemonized_child() {
    let (_cp, client, ns, node) = setup("orphans").await;
    let token = format!("devnode-orphan-{}-{}", std::process::id(), node.name);
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    api.create(
        &PostParams::default(),
        &pod("daemon", &node, "Never", &["daemonize", &token], json!({})),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "daemon", &node, "Running", |p| phase(p) == "Running").await;
    let start = Instant::now();
    while processes_with(&format!("sleep\0{token}")).is_empty() {
        assert!(start.elapsed() < TIMEOUT, "the daemon never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = main_pid(&p);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the main process");
    let start = Instant::now();
    while !processes_with(&format!("sleep\0{token}")).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemonized child outlived its pod's main process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = wait_pod(&api, "daemon", &node, "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(main_status(&p)["state"]["terminated"]["exitCode"], 137);
}

#[tokio::test]
async fn readiness_probe_on_a_mounted_file_and_adoption_across_devnode_restarts() {
    let (cp, client, ns, mut node) = setup("ready").await;
    let dir = tempfile::tempdir().unwrap();
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    let spec = json!({
        "volumes": [{"name": "vmi", "hostPath": {"path": dir.path(), "type": "Directory"}}],
        "containers": [{
            "name": "main", "image": "ferrovirt/devnode-testpod:dev", "args": ["sleep", "x"],
            "volumeMounts": [{"name": "vmi", "mountPath": "/var/run/ferrovirt/vmi"}],
            "readinessProbe": {"exec": {"command": ["test", "-e", "/var/run/ferrovirt/vmi/ready"]}, "periodSeconds": 1},
        }],
    });
    api.create(
        &PostParams::default(),
        &pod("probe", &node, "Always", &[], spec),
    )
    .await
    .unwrap();
    let p = wait_pod(&api, "probe", &node, "Running", |p| phase(p) == "Running").await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    std::fs::write(dir.path().join("ready"), "").unwrap();
    let p = wait_pod(&api, "probe", &node, "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    let pid = main_pid(&p);

    // devnode stops: the pod keeps running; a new devnode adopts it.
    node.stop();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container outlived devnode's exit"
    );
    node.restart(cp);
    api.delete(
        "probe",
        &DeleteParams {
            grace_period_seconds: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let start = Instant::now();
    while api.get_opt("probe").await.unwrap().is_some() {
        assert!(
            start.elapsed() < TIMEOUT,
            "adopted pod not removed; devnode log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the adopted container was stopped; devnode log:\n{}",
        node.log()
    );
}

/// `<state>/pods/<ns>_<name>_<uid>` of a pod.
fn pod_dir(node: &DevNode, p: &Pod) -> PathBuf {
    let m = &p.metadata;
    node.state.path().join("pods").join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// The entries of `<state>/pods/`.
fn pod_dirs(node: &DevNode) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(node.state.path().join("pods"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Polls until `path` is gone; panics with the state dir and devnode's log otherwise.
async fn wait_gone(node: &DevNode, path: &Path, what: &str) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < TIMEOUT,
            "{what}: {} still exists; pods/ holds {:?}; devnode log:\n{}",
            path.display(),
            pod_dirs(node),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 14, defect 2: a deleted pod's state directory goes with it, and a devnode that
/// starts removes those of pods that no longer exist (left by a crash or an earlier
/// cluster), never one of a pod that still runs.
#[tokio::test]
async fn deleted_pods_leave_no_state_directory() {
    let (cp, client, ns, mut node) = setup("cleanup").await;
    let api: Api<Pod> = Api::namespaced(client, ns.name());
    api.create(
        &PostParams::default(),
        &pod("done", &node, "Never", &["exit", "0"], json!({})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &pod("running", &node, "Always", &["sleep", "x"], json!({})),
    )
    .await
    .unwrap();
    let done = wait_pod(&api, "done", &node, "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let running = wait_pod(&api, "running", &node, "Running", |p| phase(p) == "Running").await;
    let (done_dir, running_dir) = (pod_dir(&node, &done), pod_dir(&node, &running));
    assert!(
        done_dir.is_dir() && running_dir.is_dir(),
        "both pods have a state dir: {:?}",
        pod_dirs(&node)
    );

    // Deleting a finished pod removes its directory, logs included (kubelet does too).
    api.delete("done", &DeleteParams::default()).await.unwrap();
    wait_gone(&node, &done_dir, "the directory of deleted pod done").await;

    // While devnode is down, a pod of an earlier cluster left its directory behind.
    node.stop();
    let stale = node.state.path().join("pods").join(format!(
        "{}_gone_0b8f6a5e-1111-2222-3333-444455556666",
        ns.name()
    ));
    std::fs::create_dir_all(stale.join("volumes").join("scratch")).unwrap();
    std::fs::write(stale.join("main.log"), "from an earlier cluster\n").unwrap();
    node.restart(cp);
    wait_gone(
        &node,
        &stale,
        "the directory of a pod that no longer exists, at devnode's start",
    )
    .await;
    let pid = main_pid(
        &wait_pod(&api, "running", &node, "Running after the restart", |p| {
            phase(p) == "Running"
        })
        .await,
    );
    assert!(
        running_dir.join("main.log").is_file(),
        "the running pod's directory is kept: {:?}",
        pod_dirs(&node)
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the running pod kept running"
    );

    // Deleting a running pod stops it and then removes its directory.
    api.delete(
        "running",
        &DeleteParams {
            grace_period_seconds: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_gone(&node, &running_dir, "the directory of deleted pod running").await;
    assert_eq!(
        pod_dirs(&node),
        Vec::<String>::new(),
        "devnode log:\n{}",
        node.log()
    );
}
