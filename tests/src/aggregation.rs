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
use crate::kubectl;
use crate::pki::{Pki, Usage};
use crate::process::{self, Process};
use crate::{Assets, ControlPlane, Error, KubectlOutput, Result, workspace_bin};

/// Where virt-api's Service lives, as in a KubeVirt install.
pub const NAMESPACE: &str = "kubevirt";
pub const SERVICE: &str = "virt-api";
/// The APIServices virt-api serves.
pub const APISERVICES: &[&str] = &[
    "v1.subresources.kubevirt.io",
    "v1alpha3.subresources.kubevirt.io",
];
/// virt-api's own user (client certificate), bound in deploy/rbac/rbac.yaml.
pub const VIRT_API_USER: &str = "ferrovirt:virt-api";
/// Ferrovirt's RBAC (KubeVirt's user-facing ClusterRoles and virt-api's own), relative to
/// the repository root.
pub const RBAC_FILE: &str = "deploy/rbac/rbac.yaml";

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

/// What registering virt-api needs of a cluster: the tests' [`ControlPlane`] or the
/// detached one of `hack/local-up.sh` (which this process did not start).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    server: String,
    pki: Pki,
    kubectl: PathBuf,
}

impl Cluster {
    pub fn of(cp: &ControlPlane) -> Self {
        Self {
            dir: cp.dir().to_path_buf(),
            server: cp.server().to_string(),
            pki: cp.pki().clone(),
            kubectl: cp.kubectl_path(),
        }
    }

    /// The control plane whose files are in `dir` (its `kubeconfig` names the server).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let kubeconfig = dir.join("kubeconfig");
        let text = std::fs::read_to_string(&kubeconfig)
            .context(|| format!("reading {}", kubeconfig.display()))?;
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .ok_or_else(|| Error::Startup {
                component: "virt-api".into(),
                reason: format!("no server in {}", kubeconfig.display()),
                tail: String::new(),
                log: kubeconfig.clone(),
            })?
            .to_string();
        Ok(Self {
            dir: dir.to_path_buf(),
            server,
            pki: Pki::ensure(&dir.join("pki"))?,
            kubectl: Assets::locate()?.kubectl(),
        })
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// `kubectl apply -f -` of `yaml` as the admin.
    pub async fn apply(&self, yaml: &str) -> Result<()> {
        let out = kubectl::run(
            &self.kubectl,
            &self.admin_kubeconfig(),
            &self.dir.join("kubectl-cache"),
            ["apply", "-f", "-"],
            Some(yaml),
        )
        .await?;
        if !out.success() {
            return Err(Error::Startup {
                component: "virt-api".into(),
                reason: format!("kubectl apply failed: {}", out.stderr.trim()),
                tail: String::new(),
                log: self.admin_kubeconfig(),
            });
        }
        Ok(())
    }
}

/// Registers virt-api on `port` (Namespace, ExternalName Service, APIServices) and installs
/// [`RBAC_FILE`]; returns the kubeconfig virt-api runs with (user [`VIRT_API_USER`]).
pub async fn register(cluster: &Cluster, port: u16) -> Result<PathBuf> {
    let kubeconfig = cluster_user_kubeconfig(cluster, VIRT_API_USER, &[])?;
    cluster.apply(&rbac_yaml()?).await?;
    cluster.apply(&registration(port)).await?;
    Ok(kubeconfig)
}

/// The text of [`RBAC_FILE`].
pub fn rbac_yaml() -> Result<String> {
    let path = crate::repo_root().join(RBAC_FILE);
    std::fs::read_to_string(&path).context(|| format!("reading {}", path.display()))
}

/// The virt-api command for a registered virt-api on loopback `port`.
pub fn virt_api_command(kubeconfig: &Path, port: u16, metrics_port: u16) -> Command {
    let mut cmd = Command::new(workspace_bin("virt-api"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--service", SERVICE, "--namespace", NAMESPACE])
        .args(["--tls-san", "localhost,127.0.0.1"])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        );
    cmd
}

/// Registers virt-api (see [`register`]), starts it tied to this process and waits until
/// the APIServices are Available.
pub async fn start_virt_api(cp: &ControlPlane) -> Result<VirtApi> {
    start_virt_api_with(cp, &[]).await
}

/// [`start_virt_api`] with more flags (`--console-ping-interval 500ms`).
pub async fn start_virt_api_with(cp: &ControlPlane, extra: &[&str]) -> Result<VirtApi> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let kubeconfig = register(&Cluster::of(cp), port).await?;
    let mut cmd = virt_api_command(&kubeconfig, port, metrics_port);
    cmd.args(extra);
    let log = cp.log("virt-api");
    let started = Instant::now();
    let process = process::spawn_tied("virt-api", cmd, &log)?;
    wait_available(&cp.client().await?, &process).await?;
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

/// Waits until both APIServices are Available; fails with virt-api's log tail when it
/// exits or they are not Available in time.
pub async fn wait_available(client: &Client, virt_api: &Process) -> Result<()> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
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
    cluster_user_kubeconfig(&Cluster::of(cp), user, groups)
}

fn cluster_user_kubeconfig(cluster: &Cluster, user: &str, groups: &[&str]) -> Result<PathBuf> {
    let file_name: String = user
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = cluster.dir.join("kubeconfigs");
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{file_name}.kubeconfig"));
    if !cluster.pki.cert(&file_name).exists() {
        cluster
            .pki
            .issue("ca", &file_name, user, groups, Usage::Client, vec![])?;
    }
    // Rewritten when it differs: a local cluster started again has a new API server port.
    // Through a rename, so a test reading it concurrently never sees half a file.
    let text = components::kubeconfig(&cluster.server, &cluster.pki, &file_name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = dir.join(format!(".{file_name}.kubeconfig.{}", std::process::id()));
        std::fs::write(&tmp, &text).context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).context(|| format!("writing {}", path.display()))?;
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

/// Namespace, Service and APIServices for virt-api on `port` (its RBAC is in [`RBAC_FILE`]).
pub fn registration(port: u16) -> String {
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
    docs.join("---\n")
}

/// Runs the workspace's `ferroctl` with `kubeconfig` and `args`.
pub async fn ferroctl(kubeconfig: &Path, args: &[&str]) -> Result<KubectlOutput> {
    run_client(&workspace_bin("ferroctl"), kubeconfig, args).await
}

/// Runs a kubectl-style client (`--kubeconfig F args...`) with stdin closed.
async fn run_client(program: &Path, kubeconfig: &Path, args: &[&str]) -> Result<KubectlOutput> {
    let out = tokio::process::Command::new(program)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context(|| format!("running {}", program.display()))?;
    Ok(KubectlOutput {
        args: args.iter().map(|a| a.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The version of KubeVirt's virtctl that `hack/build-virtctl.sh` builds (`VIRTCTL_VERSION`
/// overrides it, as for the script).
pub fn virtctl_version() -> String {
    std::env::var("VIRTCTL_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.7.0".into())
}

/// KubeVirt's virtctl as `hack/build-virtctl.sh` builds it:
/// `$FERROVIRT_CACHE/kubevirt-v<version>/virtctl`. Panics with the command that builds it
/// when it is missing.
pub fn virtctl_path() -> PathBuf {
    let version = virtctl_version();
    let path = crate::assets::cache_dir()
        .join(format!("kubevirt-v{version}"))
        .join("virtctl");
    assert!(
        path.is_file(),
        "KubeVirt's virtctl v{version} is missing at {}: build it with hack/build-virtctl.sh \
         (or hack/setup.sh)",
        path.display()
    );
    path
}

/// Runs KubeVirt's virtctl ([`virtctl_path`]) with `kubeconfig` and `args`.
pub async fn virtctl(kubeconfig: &Path, args: &[&str]) -> Result<KubectlOutput> {
    run_client(&virtctl_path(), kubeconfig, args).await
}

/// Starts the workspace's operator (VM and VMI controllers) against `cp`, tied to this
/// process; [`stop_tied`] stops it.
pub fn start_operator(cp: &ControlPlane) -> Result<Process> {
    let mut cmd = Command::new(workspace_bin("virt-controller"));
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)]);
    process::spawn_tied("virt-controller", cmd, &cp.log("virt-controller"))
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

// ---- what the subresource tests (ferroctl and virtctl) share ---------------------------

/// A tied process stopped when dropped, also when the test fails: an operator must not act
/// on the VMs of the tests that run after it.
pub struct StopOnDrop(pub Process);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop_tied(&self.0);
    }
}

/// `kubectl apply -n <ns> -f -` of `yaml`; panics when it fails.
pub async fn apply_in(cp: &ControlPlane, ns: &str, yaml: &str) {
    cp.kubectl_with_stdin(["apply", "-n", ns, "-f", "-"], Some(yaml))
        .await
        .expect("kubectl runs")
        .expect_success();
}

/// The VM `name` in `ns` as JSON; panics when it cannot be read.
pub async fn vm_json(cp: &ControlPlane, ns: &str, name: &str) -> serde_json::Value {
    let out = cp
        .kubectl(["get", "vm", name, "-n", ns, "-o", "json"])
        .await
        .expect("kubectl runs");
    serde_json::from_str(out.expect_success()).expect("kubectl prints JSON")
}

/// A field of the VMI `name` (a kubectl jsonpath such as `.metadata.uid`).
pub async fn vmi_field(cp: &ControlPlane, ns: &str, name: &str, path: &str) -> String {
    let out = cp
        .kubectl([
            "get",
            "vmi",
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
        .await
        .expect("kubectl runs");
    out.expect_success().to_string()
}

/// A VMI of the VM's name in `phase`, as if a controller had made it (no operator runs).
pub async fn fake_vmi(cp: &ControlPlane, ns: &str, name: &str, phase: &str) {
    fake_vmi_with(cp, ns, name, phase, |_| {}).await
}

/// [`fake_vmi`] with its spec changed by `edit` first (e.g. no serial console).
pub async fn fake_vmi_with(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    phase: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let mut vm: serde_json::Value =
        serde_yaml::from_str(&crate::manifests::kernel_boot_vm(name, "Always", None))
            .expect("the test VM parses");
    edit(&mut vm["spec"]["template"]["spec"]);
    let vmi = serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name},
        "spec": vm["spec"]["template"]["spec"],
    });
    apply_in(cp, ns, &vmi.to_string()).await;
    let patch = serde_json::json!({"status": {"phase": phase}}).to_string();
    cp.kubectl(["patch", "vmi", name, "-n", ns, "--type=merge", "-p", &patch])
        .await
        .expect("kubectl runs")
        .expect_success();
}

/// Waits until `done(vmi)` holds for the VMI `name` (None: it does not exist); panics
/// after `timeout` with `what` and the operator's log tail.
pub async fn wait_vmi(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    operator: &Process,
    what: &str,
    done: impl Fn(Option<&DynamicObject>) -> bool,
) -> Option<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let vmis: Api<DynamicObject> = Api::namespaced_with(
        cp.client().await.expect("admin client"),
        ns,
        &ApiResource::from_gvk(&gvk),
    );
    let started = Instant::now();
    loop {
        let vmi = vmis.get_opt(name).await.expect("reading the VMI");
        if done(vmi.as_ref()) {
            return vmi;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!(
                "{what}: not so 60 s later; operator log:\n{}",
                tail(&operator.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the VM's `status.stateChangeRequests`; panics with the VM when they differ.
#[track_caller]
pub fn assert_requests(vm: &serde_json::Value, expected: serde_json::Value) {
    assert_eq!(vm["status"]["stateChangeRequests"], expected, "{vm:#}");
}

/// A RoleBinding named `user` of the ClusterRole `role` to the user `user`.
pub fn role_binding(user: &str, role: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {user}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {user}\n"
    )
}
