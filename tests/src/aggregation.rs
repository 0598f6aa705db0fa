//! virt-api registered in the test control plane as the aggregated API server of
//! `subresources.kubevirt.io`, and the clients the subresource tests need.
//!
//! How the aggregator reaches virt-api without kube-proxy: the APIService points at a
//! Service of `type: ExternalName` with `externalName: localhost`, and virt-api listens on
//! a loopback port, which the APIService names. kube-apiserver's cluster routing
//! (`proxy.ResolveCluster`) dials `<externalName>:<APIService port>` for such a Service;
//! its endpoint routing (`--enable-aggregator-routing=true`) refuses ExternalName
//! Services, and the EndpointSlices it would use instead may not hold loopback
//! addresses, so the control plane runs with cluster routing.
//!
//! virt-api makes its serving certificate at start and writes its CA into the
//! APIServices' `caBundle` itself; the harness waits until both are Available.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::AuthInfo;
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::components;
use crate::control_plane::tail;
use crate::error::IoContext;
use crate::pki::Usage;
use crate::process::{self, Process};
use crate::{ControlPlane, Error, KubectlOutput, Result, workspace_bin};

/// Where virt-api's Service lives, as in a KubeVirt install.
pub const NAMESPACE: &str = "kubevirt";
pub const SERVICE: &str = "virt-api";
/// The APIServices virt-api serves.
pub const APISERVICES: &[&str] = &[
    "v1.subresources.kubevirt.io",
    "v1alpha3.subresources.kubevirt.io",
];
/// virt-api's own user (client certificate) and its ClusterRole.
pub const VIRT_API_USER: &str = "ferrovirt:virt-api";

const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A running virt-api, registered and Available.
#[derive(Debug)]
pub struct VirtApi {
    pub process: Process,
    /// Its HTTPS port on 127.0.0.1 (what the APIService names).
    pub port: u16,
    /// Its plain-HTTP /metrics and /healthz port.
    pub metrics_port: u16,
    /// From spawning the process to both APIServices Available.
    pub ready_after: Duration,
}

impl VirtApi {
    /// Its resident set size in KiB (VmRSS), for the figures the tests print.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

static SHARED: OnceCell<std::result::Result<VirtApi, String>> = OnceCell::const_new();

/// The virt-api of this test binary, on the shared control plane, started on first use.
/// Panics with the reason (and virt-api's log tail) when it cannot be made Available.
pub async fn shared_virt_api() -> &'static VirtApi {
    let cp = crate::shared().await;
    let result = SHARED
        .get_or_init(|| async {
            start_virt_api(cp)
                .await
                .map_err(|e| crate::shared::error_chain(&e))
        })
        .await;
    match result {
        Ok(v) => v,
        Err(message) => panic!("virt-api did not become Available: {message}"),
    }
}

/// Registers virt-api (Namespace, ExternalName Service, APIServices, its RBAC), starts it
/// tied to this process and waits until the APIServices are Available.
pub async fn start_virt_api(cp: &ControlPlane) -> Result<VirtApi> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let kubeconfig = user_kubeconfig(cp, VIRT_API_USER, &[])?;
    cp.kubectl_with_stdin(["apply", "-f", "-"], Some(&registration(port)))
        .await?
        .expect_success();

    let mut cmd = Command::new(workspace_bin("virt-api"));
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--service", SERVICE, "--namespace", NAMESPACE])
        .args(["--tls-san", "localhost,127.0.0.1"])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        );
    let log = cp.log("virt-api");
    let started = Instant::now();
    let process = process::spawn_tied("virt-api", cmd, &log)?;
    wait_available(cp, &process).await?;
    let ready_after = started.elapsed();
    tracing::info!(
        port,
        ready_ms = ready_after.as_millis() as u64,
        "virt-api Available"
    );
    Ok(VirtApi {
        process,
        port,
        metrics_port,
        ready_after,
    })
}

async fn wait_available(cp: &ControlPlane, virt_api: &Process) -> Result<()> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: Api<DynamicObject> = Api::all_with(cp.client().await?, &ApiResource::from_gvk(&gvk));
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let mut available = 0;
        for name in APISERVICES {
            let svc = api.get(name).await?;
            let conditions = svc.data["status"]["conditions"].as_array().cloned();
            let cond = conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c["type"] == "Available");
            match cond {
                Some(c) if c["status"] == "True" => available += 1,
                Some(c) => last = format!("{name}: {} {}", c["reason"], c["message"]),
                None => last = format!("{name}: no Available condition yet"),
            }
        }
        if available == APISERVICES.len() {
            return Ok(());
        }
        let reason = if process::has_exited(virt_api.pid) {
            Some("exited".to_string())
        } else if started.elapsed() > AVAILABLE_TIMEOUT {
            Some(format!(
                "APIServices not Available after {}s ({last})",
                AVAILABLE_TIMEOUT.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::Startup {
                component: "virt-api".into(),
                reason,
                tail: tail(&virt_api.log, 40),
                log: virt_api.log.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A kubeconfig for the API server that authenticates as `user` in `groups` with a client
/// certificate from the cluster CA (made once per control plane).
pub fn user_kubeconfig(cp: &ControlPlane, user: &str, groups: &[&str]) -> Result<PathBuf> {
    let file_name: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = cp
        .dir()
        .join("kubeconfigs")
        .join(format!("{file_name}.kubeconfig"));
    if !path.exists() {
        cp.pki()
            .issue("ca", &file_name, user, groups, Usage::Client, vec![])?;
        std::fs::write(
            &path,
            components::kubeconfig(cp.server(), cp.pki(), &file_name),
        )
        .context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// A client that talks to virt-api directly (not through kube-apiserver), verifying its
/// serving certificate against the APIService's caBundle, presenting the client
/// certificate `<cert>` of the PKI (none when None) and the request headers the front
/// proxy would send for `user` in `groups`.
pub async fn direct_client(
    cp: &ControlPlane,
    virt_api: &VirtApi,
    cert: Option<&str>,
    user: &str,
    groups: &[&str],
) -> Result<Client> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: Api<DynamicObject> = Api::all_with(cp.client().await?, &ApiResource::from_gvk(&gvk));
    let svc = api.get(APISERVICES[0]).await?;
    let bundle = svc.data["spec"]["caBundle"].as_str().unwrap_or_default();
    let pem = base64_decode(bundle);
    let mut config = Config::new(
        format!("https://127.0.0.1:{}", virt_api.port)
            .parse()
            .expect("a valid URL"),
    );
    config.root_cert = Some(pem_to_der(&pem));
    if let Some(name) = cert {
        config.auth_info = AuthInfo {
            client_certificate: Some(cp.pki().cert(name).display().to_string()),
            client_key: Some(cp.pki().key(name).display().to_string()),
            ..Default::default()
        };
    }
    let header = |v: &str| v.parse().expect("a valid header value");
    config
        .headers
        .push(("x-remote-user".parse().unwrap(), header(user)));
    for g in groups {
        config
            .headers
            .push(("x-remote-group".parse().unwrap(), header(g)));
    }
    Ok(Client::try_from(config)?)
}

/// Namespace, Service and APIServices for virt-api on `port`, and virt-api's RBAC: what
/// its subresources read and write, SubjectAccessReviews, the APIServices' caBundle, and
/// the authentication ConfigMap (the built-in `extension-apiserver-authentication-reader`).
fn registration(port: u16) -> String {
    let mut docs = vec![
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {NAMESPACE}\n\
             spec:\n  type: ExternalName\n  externalName: localhost\n"
        ),
    ];
    for (name, priority) in APISERVICES.iter().zip([15, 10]) {
        let (version, group) = name.split_once('.').expect("version.group");
        docs.push(format!(
            "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {name}\n\
             spec:\n  group: {group}\n  version: {version}\n  groupPriorityMinimum: 1000\n  \
             versionPriority: {priority}\n  service:\n    name: {SERVICE}\n    namespace: {NAMESPACE}\n    \
             port: {port}\n"
        ));
    }
    docs.push(format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {VIRT_API_USER}
rules:
- apiGroups: ["kubevirt.io"]
  resources: ["virtualmachines", "virtualmachineinstances"]
  verbs: ["get", "patch"]
- apiGroups: ["kubevirt.io"]
  resources: ["virtualmachines/status"]
  verbs: ["patch"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
- apiGroups: ["apiregistration.k8s.io"]
  resources: ["apiservices"]
  resourceNames: [{names}]
  verbs: ["get", "patch"]
"#,
        names = APISERVICES.join(", ")
    ));
    docs.push(format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {VIRT_API_USER}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {VIRT_API_USER}\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {VIRT_API_USER}\n"
    ));
    docs.push(format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {SERVICE}-auth-reader\n  \
         namespace: kube-system\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  \
         name: extension-apiserver-authentication-reader\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {VIRT_API_USER}\n"
    ));
    docs.join("---\n")
}

/// Runs the workspace's `ferroctl` with `kubeconfig` and `args`.
pub async fn ferroctl(kubeconfig: &Path, args: &[&str]) -> Result<KubectlOutput> {
    let out = tokio::process::Command::new(workspace_bin("ferroctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context(|| "running ferroctl".into())?;
    Ok(KubectlOutput {
        args: args.iter().map(|a| a.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Starts the workspace's operator (VM and VMI controllers) against `cp`, tied to this
/// process; [`stop_tied`] stops it.
pub fn start_operator(cp: &ControlPlane) -> Result<Process> {
    let mut cmd = Command::new(workspace_bin("operator"));
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)]);
    process::spawn_tied("operator", cmd, &cp.log("operator"))
}

/// Stops a tied process now.
pub fn stop_tied(p: &Process) {
    process::kill_tied(Some(&[p.pid]));
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context(|| "finding a free port".into())?;
    Ok(l.local_addr()
        .context(|| "finding a free port".into())?
        .port())
}

fn base64_decode(s: &str) -> String {
    let v: k8s_openapi::ByteString =
        serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or_default();
    String::from_utf8(v.0).unwrap_or_default()
}

/// The DER certificates of a PEM text.
fn pem_to_der(pem: &str) -> Vec<Vec<u8>> {
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|b64| {
            let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            let v: k8s_openapi::ByteString =
                serde_json::from_value(serde_json::Value::String(compact)).unwrap_or_default();
            v.0
        })
        .collect()
}
