//! What virt-controller's integration tests share: the virt-controller binary as a child process,
//! a fake Node and a fake kubelet (no node runs pods in this tier), and waiting.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crds::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_node_contract::pod::NODE_SCHEDULABLE_LABEL;
use ferrovirt_tests::{ControlPlane, Process, has_exited, kill_tied, spawn_tied, tail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub const NODE: &str = "node1";

/// An operator process; killed when dropped and when the test binary dies.
pub struct Operator {
    pub process: Process,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub identity: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        kill_tied(Some(&[self.process.pid]));
    }
}

impl Operator {
    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// Whether the operator process has exited.
    pub fn exited(&self) -> bool {
        has_exited(self.process.pid)
    }

    /// `/metrics` of this operator.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator binary: `$FERROVIRT_BIN_DIR/virt-controller` when that is set (the harness's
/// convention, e.g. to run a release build or an older build), else the one cargo built.
pub fn operator_bin() -> PathBuf {
    match std::env::var_os("FERROVIRT_BIN_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("virt-controller"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_virt-controller")),
    }
}

/// Starts the operator binary against `cp`, with a short lease for the failover tests.
pub fn start_operator(cp: &ControlPlane, identity: &str, lease: &str) -> Operator {
    let log = std::env::temp_dir().join(format!(
        "ferrovirt-virt-controller-{}-{identity}.log",
        std::process::id()
    ));
    let metrics_port = free_port();
    let mut cmd = Command::new(operator_bin());
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--leader-election-namespace",
            "default",
            "--lease-name",
            lease,
            "--identity",
            identity,
        ])
        .args([
            "--lease-duration",
            "4",
            "--lease-retry",
            "0.5",
            "--crash-loop-max-backoff",
            "30",
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        );
    Operator {
        process: spawn_tied(&format!("virt-controller-{identity}"), cmd, &log)
            .expect("starting the virt-controller binary"),
        log,
        metrics_port,
        identity: identity.to_string(),
    }
}

pub use ferrovirt_tests::wait::eventually;

/// A Node that the scheduler can place launcher pods on (Ready, with the KVM device).
pub async fn ensure_node(client: &Client, name: &str, labels: serde_json::Value) {
    ensure_tainted_node(client, name, labels, serde_json::Value::Null).await
}

/// [`ensure_node`] with `taints` (a JSON list) in place of the not-ready taint, so that only
/// pods that tolerate them land on it.
pub async fn ensure_tainted_node(
    client: &Client,
    name: &str,
    labels: serde_json::Value,
    taints: serde_json::Value,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    // As virt-handler labels its Node once it runs: launcher pods select such nodes.
    let mut labels = labels;
    if !labels.is_object() {
        labels = json!({});
    }
    labels[NODE_SCHEDULABLE_LABEL] = json!("true");
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating node {name}: {e}"),
    }
    // The TaintNodesByCondition admission plugin taints new nodes not-ready; no node
    // lifecycle controller runs here to lift it.
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": taints}})),
        )
        .await
        .unwrap();
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "500", "devices.kubevirt.io/kvm": "1k"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Plays kubelet for pods on `node` in `ns`: a pod being deleted finishes (Succeeded, as
/// the launcher exits after the guest's shutdown) and is removed. Runs until the test ends.
pub fn fake_kubelet(client: Client, ns: &str, node: &'static str) {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list {
                    let on_node =
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
                    if on_node && p.metadata.deletion_timestamp.is_some() {
                        let _ = set_pod_status(&pods, &p.name_any(), json!({"phase": "Succeeded"}))
                            .await;
                        let _ = pods
                            .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

pub async fn set_pod_status(
    pods: &Api<Pod>,
    name: &str,
    status: serde_json::Value,
) -> kube::Result<Pod> {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
}

/// The launcher came up: pod Running, `compute` ready, as kubelet reports it.
pub async fn make_pod_ready(pods: &Api<Pod>, name: &str) {
    let now = "2026-01-01T00:00:00Z";
    set_pod_status(
        pods,
        name,
        json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "compute", "ready": true, "restartCount": 0, "image": "ferrovirt/virt-launcher:dev",
                                   "imageID": "", "started": true, "state": {"running": {"startedAt": now}}}],
        }),
    )
    .await
    .unwrap();
}

/// The launcher died before the guest ran.
pub async fn fail_pod(pods: &Api<Pod>, name: &str, reason: &str) {
    let now = "2026-01-01T00:00:00Z";
    set_pod_status(
        pods,
        name,
        json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "compute", "ready": false, "restartCount": 0, "image": "ferrovirt/virt-launcher:dev",
                                   "imageID": "", "state": {"terminated": {"exitCode": 1, "reason": reason, "startedAt": now, "finishedAt": now}}}],
        }),
    )
    .await
    .unwrap();
}

/// Writes the VMI's phase as virt-handler would.
pub async fn set_vmi_phase(vmis: &Api<VirtualMachineInstance>, name: &str, phase: &str) {
    let mut status = json!({"phase": phase});
    if phase == "Running" {
        status["phaseTransitionTimestamps"] =
            json!([{"phase": "Running", "phaseTransitionTimestamp": "2026-01-01T00:00:00Z"}]);
    }
    let vmi = vmis.get(name).await.unwrap();
    let mut merged = serde_json::to_value(vmi.status.unwrap_or_default()).unwrap();
    for (k, v) in status.as_object().unwrap() {
        if k == "phaseTransitionTimestamps" {
            let list = merged.get_mut(k).and_then(|l| l.as_array_mut());
            match list {
                Some(l) => l.extend(v.as_array().unwrap().iter().cloned()),
                None => merged[k] = v.clone(),
            }
        } else {
            merged[k] = v.clone();
        }
    }
    let pp = PatchParams {
        field_manager: Some("virt-handler".into()),
        ..Default::default()
    };
    vmis.patch(name, &pp, &Patch::Merge(&json!({"status": merged})))
        .await
        .unwrap();
}

/// A VM manifest with 64 MiB of guest memory.
pub fn vm_manifest(
    name: &str,
    run: serde_json::Value,
    extra_spec: serde_json::Value,
) -> VirtualMachine {
    let mut spec = json!({
        "domain": {"memory": {"guest": "64Mi"}, "devices": {}},
        "terminationGracePeriodSeconds": 0,
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut vm = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    });
    for (k, v) in run.as_object().unwrap() {
        vm["spec"][k] = v.clone();
    }
    serde_json::from_value(vm).unwrap()
}

/// Writes state change requests as KubeVirt's start/stop/restart subresources do.
pub async fn request(vms: &Api<VirtualMachine>, name: &str, requests: serde_json::Value) {
    let patch = json!([{"op": "add", "path": "/status/stateChangeRequests", "value": requests}]);
    let p: json_patch::Patch = serde_json::from_value(patch).unwrap();
    let pp = PatchParams {
        field_manager: Some("virt-api".into()),
        ..Default::default()
    };
    vms.patch_status(name, &pp, &Patch::Json::<()>(p))
        .await
        .unwrap();
}
