use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::components::{self, Layout, Ports};
use crate::error::IoContext;
use crate::kubectl::{self, KubectlOutput};
use crate::pki::Pki;
use crate::process::{self, Process};
use crate::{Assets, Error, Result};

const ETCD_TIMEOUT: Duration = Duration::from_secs(60);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(180);
const CONTROLLERS_TIMEOUT: Duration = Duration::from_secs(90);
const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// Field manager of the CRDs the harness installs.
const FIELD_MANAGER: &str = "ferrovirt-harness";

/// How the processes relate to the process that starts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervision {
    /// They die with this process (tests).
    Tied,
    /// They keep running, each with a pid file in `<dir>/pids/` (local-up).
    Detached,
}

/// What of Ferrovirt a control plane installs once it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preinstall {
    /// The CRDs and the admission policies ([`install_api`]), as the integration tests need.
    FerrovirtApi,
    /// Nothing: the test installs Ferrovirt itself, as a user does (`helm install`).
    Nothing,
}

/// A running control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
/// on loopback ports, with an admin kubeconfig and Ferrovirt's CRDs established.
#[derive(Debug)]
pub struct ControlPlane {
    layout: Layout,
    assets: Assets,
    pki: Pki,
    server: String,
    ports: Ports,
    /// Behind a lock: [`ControlPlane::restart_apiserver`] replaces the apiserver's entry.
    processes: std::sync::Mutex<Vec<Process>>,
    supervision: Supervision,
}

impl ControlPlane {
    /// Starts a control plane whose files live in `dir`, and installs Ferrovirt's API
    /// ([`install_api`]: the CRDs of `crds::all()` and the admission policies).
    /// A PKI already in `dir/pki` is reused; so is etcd's data.
    pub async fn start(dir: &Path, supervision: Supervision) -> Result<Self> {
        Self::start_with(dir, supervision, Preinstall::FerrovirtApi).await
    }

    /// [`ControlPlane::start`], installing what `preinstall` says: with
    /// [`Preinstall::Nothing`] the cluster has none of Ferrovirt, as before a user's
    /// `helm install`.
    pub async fn start_with(
        dir: &Path,
        supervision: Supervision,
        preinstall: Preinstall,
    ) -> Result<Self> {
        let started = Instant::now();
        let assets = Assets::locate()?;
        let layout = Layout::new(dir);
        for d in [layout.logs(), layout.root().join("kubeconfigs")] {
            std::fs::create_dir_all(&d).context(|| format!("creating {}", d.display()))?;
        }
        let pki = Pki::ensure(&layout.pki_dir())?;
        let ports = Ports::free().context(|| "finding free loopback ports".to_string())?;
        let server = format!("https://127.0.0.1:{}", ports.apiserver);
        write(
            &layout.kubeconfig(),
            &components::kubeconfig(&server, &pki, "admin"),
        )?;
        for c in ["kube-controller-manager", "kube-scheduler"] {
            write(
                &layout.component_kubeconfig(c),
                &components::kubeconfig(&server, &pki, c),
            )?;
        }

        let cp = Self {
            layout,
            assets,
            pki,
            server,
            ports,
            processes: std::sync::Mutex::new(Vec::new()),
            supervision,
        };
        tracing::info!(dir = %dir.display(), server = %cp.server, "starting control plane");
        for component in components::components(&cp.assets, &cp.layout, &cp.pki, ports) {
            let proc = cp.spawn(&component)?;
            cp.lock_processes().push(proc);
            match component.name {
                "etcd" => cp.wait_etcd(ports.etcd_client).await?,
                "kube-apiserver" => cp.wait_apiserver().await?,
                _ => {}
            }
        }
        let client = cp.client().await?;
        cp.wait_controllers(&client).await?;
        if preinstall == Preinstall::FerrovirtApi {
            install_api(&client).await?;
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "control plane ready"
        );
        Ok(cp)
    }

    /// `https://127.0.0.1:<port>`
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding the PKI, logs, kubeconfigs and etcd data.
    pub fn dir(&self) -> &Path {
        self.layout.root()
    }

    /// The admin kubeconfig (group system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig()
    }

    /// The cluster's certificates; [`Pki::issue`] signs new ones (nodes, webhooks).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The `kubectl` that matches the control plane's version.
    pub fn kubectl_path(&self) -> PathBuf {
        self.assets.kubectl()
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, ...).
    pub fn log(&self, component: &str) -> PathBuf {
        self.layout.log(component)
    }

    pub fn processes(&self) -> Vec<Process> {
        self.lock_processes().clone()
    }

    /// A new admin client. Make one per test: a client is bound to the Tokio runtime that
    /// first used it, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.layout.kubeconfig()).await
    }

    /// `kubectl apply --dry-run=server -n <namespace> -f <file>`: what admission says of a
    /// manifest, changing nothing.
    pub async fn dry_run_apply(&self, namespace: &str, file: &Path) -> Result<KubectlOutput> {
        self.kubectl([
            "apply".as_ref(),
            "--dry-run=server".as_ref(),
            "-n".as_ref(),
            namespace.as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
        ])
        .await
    }

    /// Runs the control plane's `kubectl` with the admin kubeconfig.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_with_stdin(args, None).await
    }

    /// Runs `kubectl` with `stdin` as its standard input (for `-f -`).
    pub async fn kubectl_with_stdin<I, S>(
        &self,
        args: I,
        stdin: Option<&str>,
    ) -> Result<KubectlOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        kubectl::run(
            &self.assets.kubectl(),
            &self.layout.kubeconfig(),
            &self.layout.kubectl_cache(),
            args,
            stdin,
        )
        .await
    }

    /// Stops the processes of a tied control plane now (they stop at exit anyway).
    pub fn stop(&self) {
        if self.supervision == Supervision::Tied {
            let pids: Vec<u32> = self.lock_processes().iter().map(|p| p.pid).collect();
            process::kill_tied(Some(&pids));
        }
    }

    /// An API server outage: kills kube-apiserver (SIGKILL, as a crash or a node loss
    /// would), keeps it down for `downtime`, starts it again with the same flags and port,
    /// and returns once it is ready. etcd and the controllers keep running, so everything
    /// stored survives. Only for tied control planes (tests); everything else in the test
    /// binary that uses this control plane sees the outage too, so outage tests belong in
    /// a test binary of their own.
    pub async fn restart_apiserver(&self, downtime: Duration) -> Result<()> {
        self.restart_component("kube-apiserver", downtime).await
    }

    /// [`Self::restart_apiserver`] for any component of the control plane (`etcd`,
    /// `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`): SIGKILL, `downtime`,
    /// then the same flags and ports again, returning once it answers (etcd, the API
    /// server) or has started (the others). etcd keeps its data directory.
    pub async fn restart_component(&self, name: &str, downtime: Duration) -> Result<()> {
        assert_eq!(
            self.supervision,
            Supervision::Tied,
            "restarting components is for the tests' control planes"
        );
        let component = components::components(&self.assets, &self.layout, &self.pki, self.ports)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the control plane has no component {name}"));
        let old = {
            let procs = self.lock_processes();
            procs
                .iter()
                .find(|p| p.name == component.name)
                .map(|p| p.pid)
        };
        if let Some(pid) = old {
            process::kill_tied(Some(&[pid]));
        }
        tracing::info!(
            component = name,
            downtime_ms = downtime.as_millis() as u64,
            "stopped"
        );
        tokio::time::sleep(downtime).await;
        let proc = self.spawn(&component)?;
        {
            let mut procs = self.lock_processes();
            procs.retain(|p| p.name != component.name);
            procs.push(proc);
        }
        match name {
            "etcd" => self.wait_etcd(self.ports.etcd_client).await?,
            "kube-apiserver" => self.wait_apiserver().await?,
            _ => {}
        }
        tracing::info!(component = name, "running again");
        Ok(())
    }

    /// The pid of a running control-plane component.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.lock_processes()
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.pid)
    }

    fn spawn(&self, component: &components::Component) -> Result<Process> {
        let log = self.layout.log(component.name);
        let mut cmd = Command::new(&component.program);
        cmd.args(&component.args).current_dir(self.layout.root());
        match self.supervision {
            Supervision::Tied => process::spawn_tied(component.name, cmd, &log),
            Supervision::Detached => {
                process::spawn_detached(component.name, cmd, &log, &self.layout.pids())
            }
        }
    }

    /// The name of a component that has exited, if any.
    fn exited_component(&self) -> Option<String> {
        self.lock_processes()
            .iter()
            .find(|p| process::has_exited(p.pid))
            .map(|p| p.name.clone())
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, Vec<Process>> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn wait_etcd(&self, port: u16) -> Result<()> {
        self.wait_for(
            "etcd",
            ETCD_TIMEOUT,
            || async move { etcd_healthy(port).await },
        )
        .await
    }

    async fn wait_apiserver(&self) -> Result<()> {
        let kubeconfig = self.layout.kubeconfig();
        self.wait_for("kube-apiserver", APISERVER_TIMEOUT, || {
            let kubeconfig = kubeconfig.clone();
            async move {
                let client = client_from(&kubeconfig).await?;
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("a valid request");
                Ok(client
                    .request_text(req)
                    .await
                    .is_ok_and(|body| body.trim() == "ok"))
            }
        })
        .await
    }

    /// The `default` ServiceAccount of namespace `default` appears once the controller
    /// manager's serviceaccount controller runs: proof that it is connected and working.
    async fn wait_controllers(&self, client: &Client) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        self.wait_for("kube-controller-manager", CONTROLLERS_TIMEOUT, || {
            let api = api.clone();
            async move { Ok(api.get_opt("default").await?.is_some()) }
        })
        .await?;
        if let Some(name) = self.exited_component() {
            return Err(self.startup_error(&name, "exited".to_string()));
        }
        Ok(())
    }

    /// Polls `ready` until it says yes, failing early when `component` exits.
    async fn wait_for<F, Fut>(&self, component: &str, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let started = Instant::now();
        let mut last_error = String::from("not ready yet");
        loop {
            match ready().await {
                Ok(true) => {
                    tracing::debug!(
                        component,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "ready"
                    );
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => last_error = e.to_string(),
            }
            if let Some(name) = self.exited_component() {
                return Err(self.startup_error(&name, "exited".to_string()));
            }
            if started.elapsed() > timeout {
                return Err(self.startup_error(
                    component,
                    format!("not ready after {}s ({last_error})", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn startup_error(&self, component: &str, reason: String) -> Error {
        let log = self.layout.log(component);
        Error::Startup {
            component: component.to_string(),
            reason,
            tail: tail(&log, 40),
            log,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs Ferrovirt's API: the CRDs, then the admission policies that refer to them.
/// Idempotent (server-side apply), so it also updates an existing cluster.
pub async fn install_api(client: &Client) -> Result<()> {
    install_crds(client, crds::all()).await?;
    crate::install_admission_policies(client).await
}

/// Server-side applies the CRDs and waits until each is Established.
pub async fn install_crds(client: &Client, crds: Vec<CustomResourceDefinition>) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|e| match Error::from(e) {
                Error::Api { message, .. } => Error::CrdRejected {
                    name: name.clone(),
                    message,
                },
                other => other,
            })?;
        names.push(name);
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(CRD_TIMEOUT, established).await {
            Ok(result) => {
                result.map_err(|e| Error::Timeout {
                    what: format!("CRD {name} ({e})"),
                    seconds: 0,
                })?;
            }
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("CRD {name} to be Established"),
                    seconds: CRD_TIMEOUT.as_secs(),
                });
            }
        }
    }
    tracing::info!(crds = ?names, "CRDs established");
    Ok(())
}

/// An admin client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn etcd_healthy(port: u16) -> Result<bool> {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return Ok(false);
    };
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Ok(false);
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    Ok(response.contains("\"health\":\"true\""))
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).context(|| format!("writing {}", path.display()))
}
