//! The handler binary against the real control plane: what the controller tests share.
//! A test plays the operator (it marks VMIs Scheduled on the handler's node) and devnode
//! (it starts the launcher without a mount namespace, hence `--launcher-vmi-dir host`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_tests::{ControlPlane, TestNamespace};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Proc, guest_cmdline};

pub struct Handler {
    /// Killed when the handler is dropped.
    pub proc: Proc,
    pub log: PathBuf,
}

impl Handler {
    pub fn start(
        cp: &ControlPlane,
        node: &str,
        run_dir: &Path,
        ns: &str,
        extra: &[&str],
    ) -> Handler {
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
                    // An ephemeral port: `Handler::metrics` finds it in the log.
                    "--metrics-addr",
                    "127.0.0.1:0",
                    // No server for virt-api: handlers of parallel tests would share its port.
                    "--server-listen",
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
        Handler { proc, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The body of the handler's `/metrics`, from the address its log says it bound.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let log = strip_ansi(&self.log_text());
        let addr = log
            .lines()
            .find(|l| l.contains("serving /metrics and /healthz"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .unwrap_or_else(|| panic!("virt-handler did not log its metrics address:\n{log}"))
            .to_string();
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: handler\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }
}

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn setup(
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

pub async fn wait_labels(client: &Client, node: &str, want: &[(&str, &str)], handler: &Handler) {
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

/// The kernel-boot test guest with a cloud-init disk and a NIC.
pub fn guest_spec() -> serde_json::Value {
    json!({
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
    })
}

/// Creates the test guest's VMI and marks it Scheduled on `node`, as the operator does.
pub async fn create_scheduled(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    node: &str,
) -> VirtualMachineInstance {
    create_scheduled_with(api, name, node, guest_spec()).await
}

/// Creates a VMI with `spec` and marks it Scheduled on `node`, as the operator does.
pub async fn create_scheduled_with(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    node: &str,
    spec: serde_json::Value,
) -> VirtualMachineInstance {
    let vmi = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name},
        "spec": spec,
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
    api.patch(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap()
        .uid()
        .map(|_| vmi)
        .unwrap()
}

pub async fn wait_phase(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    phase: VmiPhase,
    handler: &Handler,
) -> VirtualMachineInstance {
    wait_until(api, name, handler, &format!("phase {phase}"), |p| {
        p == Some(phase)
    })
    .await
}

/// Waits (up to 120 s) until the VMI's phase satisfies `done`.
pub async fn wait_until(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    handler: &Handler,
    want: &str,
    done: impl Fn(Option<VmiPhase>) -> bool,
) -> VirtualMachineInstance {
    let start = Instant::now();
    loop {
        let v = api.get(name).await.unwrap();
        if done(v.status.as_ref().and_then(|s| s.phase)) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "VMI {name} status {:?}, want {want}\nhandler log:\n{}",
            v.status,
            handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn temp_run_dir() -> tempfile::TempDir {
    // Short: libvirt's monitor socket under <run-dir>/vmis/<uid>/libvirt/... must fit in
    // a UNIX socket address.
    tempfile::Builder::new()
        .prefix("vh")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Sets keys of the namespace's `kubevirt-config` (the cluster configuration the handler
/// reads when a VMI starts).
pub async fn set_config(client: &Client, ns: &str, data: &[(&str, &str)]) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    cms.patch(
        "kubevirt-config",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": data})),
    )
    .await
    .unwrap();
}

/// A test's namespace and node with a handler on it (emulation allowed).
pub struct Fixture {
    pub client: Client,
    pub ns: TestNamespace,
    pub node: String,
    pub run_dir: tempfile::TempDir,
    pub handler: Handler,
    /// VMIs in the test's namespace.
    pub api: Api<VirtualMachineInstance>,
}

impl Fixture {
    /// `prefix` names the namespace: keep it short (libvirt's socket paths include it).
    pub async fn start(cp: &ControlPlane, prefix: &str) -> Fixture {
        let (client, ns, node) = setup(cp, prefix, "true").await;
        let run_dir = temp_run_dir();
        let handler = Handler::start(cp, &node, run_dir.path(), ns.name(), &[]);
        let api = Api::namespaced(client.clone(), ns.name());
        Fixture {
            client,
            ns,
            node,
            run_dir,
            handler,
            api,
        }
    }
}
