//! Ferrovirt's own components on top of a control plane: devnode (the node), the
//! operator and virt-handler, started from the workspace's built binaries. End-to-end
//! tests use [`Stack::start`]; the launcher pods that devnode runs are stopped when the test
//! binary exits (`devnode stop-all`), so no QEMU outlives the tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrovirt_node_contract::paths::RunDir;
use ferrovirt_node_contract::pod::{KVM_RESOURCE, NODE_SCHEDULABLE_LABEL};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::error::IoContext;
use crate::node::RealNode;
use crate::{ControlPlane, Process, Result, process};

/// The namespace of Ferrovirt's own objects (leader lease, cluster configuration).
pub const SYSTEM_NAMESPACE: &str = "kubevirt";

/// A running Ferrovirt node and controllers.
pub struct Stack {
    /// The Node's name.
    pub node_name: String,
    /// The host's per-node run dir (`<run-dir>/vmis/<vmi uid>/` per VMI).
    pub run_dir: PathBuf,
    /// devnode's state dir (pod logs under `pods/`).
    pub state_dir: PathBuf,
    kubeconfig: PathBuf,
    logs: PathBuf,
    handler: Mutex<Process>,
    /// virt-handler's flags beyond the common ones (a real node's device-plugin directory),
    /// for [`Stack::restart_handler`].
    handler_extra: Vec<std::ffi::OsString>,
}

/// A workspace binary (`target/debug/<name>`, or under `$CARGO_TARGET_DIR`, or in
/// `$FERROVIRT_BIN_DIR` when set, e.g. `target/release` for bench/node.sh). Panics with the
/// command to build it when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROVIRT_BIN_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join("target"))
            .join("debug"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries with `cargo build --workspace --bins` \
         (hack/test.sh does)",
        path.display()
    );
    path
}

/// The guest image store that `hack/build-guest-images.sh` fills. Panics with the command
/// to build it when it is missing.
pub fn image_store() -> PathBuf {
    let store = crate::assets::cache_dir().join("images");
    assert!(
        store.join("index.tsv").is_file(),
        "the guest image store {} is missing: run hack/build-guest-images.sh (or hack/setup.sh)",
        store.display()
    );
    store
}

/// The pid of the QEMU running libvirt domain `domain` (`<namespace>_<name>`) among this
/// host's processes, if one runs.
pub fn qemu_of(domain: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.starts_with("/usr/bin/qemu-system")
            && cmdline.contains(&format!("guest={domain},")))
        .then_some(pid)
    })
}

impl Stack {
    /// Starts devnode (node `name`), the operator and virt-handler against `cp`, with
    /// software emulation allowed (KVM hangs on these machines), and waits for the Node to
    /// be Ready.
    pub async fn start(cp: &ControlPlane, name: &str) -> Result<Self> {
        let store = image_store();
        // Unix socket paths are limited to 108 bytes: keep the per-VMI dirs short.
        let base = PathBuf::from(format!("/tmp/fv-{}-{name}", std::process::id()));
        let run_dir = base.join("run");
        let state_dir = base.join("node");
        let logs = cp.dir().join("logs");
        for dir in [&run_dir, &state_dir, &logs] {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        process::remove_at_exit(&base);
        let mut stop_all = Command::new(workspace_bin("devnode"));
        stop_all.arg("stop-all").arg("--state-dir").arg(&state_dir);
        process::run_at_exit(stop_all);

        configure_cluster(cp).await?;
        let kubeconfig = cp.kubeconfig();

        process::spawn_tied(
            "devnode",
            devnode_command(&kubeconfig, name, &state_dir, Some(&store)),
            &logs.join(format!("devnode-{name}.log")),
        )?;

        // The node's QEMU capabilities cache, filled as the chart's virt-handler init
        // container fills it, while the node comes up: the first VM starts as fast as the
        // later ones (bench/node.sh's first boot). All devnode stacks on this machine share
        // one, so only the first spends the probe's 4 s of CPU; the others' warm-up is
        // libvirt's check of the files, which also notices a stale one.
        share_capabilities_cache(&run_dir)?;
        let warm = warm_capabilities(&run_dir, logs.join(format!("warm-capabilities-{name}.log")))?;

        spawn_controller(&kubeconfig, name, &run_dir, &logs, &[])?;

        let stack = Self {
            node_name: name.to_string(),
            handler: Mutex::new(spawn_handler(&kubeconfig, name, &run_dir, &logs)?),
            handler_extra: Vec::new(),
            run_dir,
            state_dir,
            kubeconfig,
            logs,
        };
        stack.wait_node_ready(cp).await?;
        stack.wait_handler_ready(cp).await?;
        warm.await?;
        Ok(stack)
    }

    /// Ferrovirt's controllers for a real node (kubelet + containerd, [`RealNode`]): the
    /// launcher pods run as real containers from `launcher_image` (pushed to the node's
    /// registry), their containerDisks are containers of the pod pulled by the node. No
    /// devnode. virt-controller and virt-handler run as host processes: the handler serves
    /// the node (`--node-name`) with its device plugins registered in the node's kubelet
    /// directory (docs/real-node.md, "Entering the node"), and its run dir is under /tmp,
    /// a path that the host and the node (whose /var and /run are its own) see alike, so
    /// the pods' hostPath volumes of it are the handler's directories.
    pub async fn start_on_real_node(
        cp: &ControlPlane,
        node: &RealNode,
        launcher_image: &str,
    ) -> Result<Self> {
        let name = node.name().to_string();
        let base = PathBuf::from(format!("/tmp/fv-{}-{name}", std::process::id()));
        let run_dir = base.join("run");
        let state_dir = base.join("node");
        let logs = cp.dir().join("logs");
        for dir in [&run_dir, &state_dir, &logs] {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        process::remove_at_exit(&base);
        configure_cluster(cp).await?;
        let kubeconfig = cp.kubeconfig();

        spawn_controller(
            &kubeconfig,
            &name,
            &run_dir,
            &logs,
            &["--launcher-image", launcher_image],
        )?;
        let plugins = node.dir().join("var/lib/kubelet/device-plugins");
        let handler_extra = vec!["--device-plugin-dir".into(), plugins.into_os_string()];
        let handler = spawn_handler_with(&kubeconfig, &name, &run_dir, &logs, &handler_extra)?;
        let stack = Self {
            node_name: name,
            handler: Mutex::new(handler),
            handler_extra,
            run_dir,
            state_dir,
            kubeconfig,
            logs,
        };
        stack.wait_node_ready(cp).await?;
        stack.wait_handler_ready(cp).await?;
        stack.wait_kvm_resource(cp).await?;
        Ok(stack)
    }

    /// The per-VMI directory of a VMI on the host.
    pub fn vmi_dir(&self, vmi_uid: &str) -> PathBuf {
        RunDir::new(&self.run_dir).vmi(vmi_uid).dir
    }

    /// Waits until the guest of VMI `vmi_uid` has printed its ready line and its QEMU
    /// (libvirt domain `domain`, `<namespace>_<name>`) runs on this host; returns QEMU's
    /// pid, or panics after `timeout` with the stack's logs. For devnode, whose launchers
    /// are host processes.
    pub async fn wait_booted(&self, vmi_uid: &str, domain: &str, timeout: Duration) -> u32 {
        let log = self.vmi_dir(vmi_uid).join("serial0.log");
        let started = Instant::now();
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|t| t.contains(crate::guest::READY_LINE))
                && let Some(qemu) = qemu_of(domain)
            {
                return qemu;
            }
            assert!(
                started.elapsed() < timeout,
                "domain {domain} did not boot within {} s:\n{}",
                timeout.as_secs(),
                self.log_tails(40)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills virt-handler with SIGKILL (guests keep running) and starts a new one.
    pub fn restart_handler(&self) -> Result<()> {
        let mut handler = self.handler.lock().unwrap_or_else(|e| e.into_inner());
        process::kill_tied(Some(&[handler.pid]));
        *handler = spawn_handler_with(
            &self.kubeconfig,
            &self.node_name,
            &self.run_dir,
            &self.logs,
            &self.handler_extra,
        )?;
        Ok(())
    }

    /// The pid of the running virt-handler.
    pub fn handler_pid(&self) -> u32 {
        self.handler.lock().unwrap_or_else(|e| e.into_inner()).pid
    }

    /// The logs of the stack's components.
    pub fn logs_dir(&self) -> &Path {
        &self.logs
    }

    /// The last `lines` lines of each component's log and of each launcher pod's log, for
    /// failure messages (the directories are removed when the test binary exits).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .ends_with(&format!("-{}.log", self.node_name))
                })
            })
            .collect();
        for pod in std::fs::read_dir(self.state_dir.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.path().extension().is_some_and(|e| e == "log") {
                    logs.push(file.path());
                }
            }
        }
        logs.sort();
        logs.iter()
            .map(|log| {
                format!(
                    "--- last lines of {} ---\n{}",
                    log.display(),
                    crate::control_plane::tail(log, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_node_ready(&self, cp: &ControlPlane) -> Result<()> {
        let what = format!(
            "Node {} Ready (devnode log in {})",
            self.node_name,
            self.logs.display()
        );
        self.wait_node(cp, what, |node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .await
    }

    /// Waits until virt-handler has labelled the Node schedulable, that is until it runs (it
    /// starts following VMIs after its KVM probe, which takes 2 s where KVM hangs). A
    /// user's `helm install --wait` waits for the same: the handler's readiness.
    async fn wait_handler_ready(&self, cp: &ControlPlane) -> Result<()> {
        let what = format!(
            "Node {} labelled {NODE_SCHEDULABLE_LABEL}=true by virt-handler (log in {})",
            self.node_name,
            self.logs.display()
        );
        self.wait_node(cp, what, |node| {
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NODE_SCHEDULABLE_LABEL))
                .is_some_and(|v| v == "true")
        })
        .await
    }

    /// Waits until the Node offers the KVM device plugin's resource, which every launcher
    /// pod requests.
    async fn wait_kvm_resource(&self, cp: &ControlPlane) -> Result<()> {
        let what = format!(
            "Node {} allocatable {KVM_RESOURCE} (virt-handler's device plugin; log in {})",
            self.node_name,
            self.logs.display()
        );
        self.wait_node(cp, what, |node| {
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(KVM_RESOURCE))
                .is_some_and(|q| q.0 != "0")
        })
        .await
    }

    /// Polls the Node until `done` holds, for up to 60 s.
    async fn wait_node(
        &self,
        cp: &ControlPlane,
        what: String,
        done: impl Fn(&Node) -> bool,
    ) -> Result<()> {
        let nodes: Api<Node> = Api::all(cp.client().await?);
        let started = Instant::now();
        loop {
            if nodes
                .get_opt(&self.node_name)
                .await?
                .is_some_and(|n| done(&n))
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(crate::Error::Timeout { what, seconds: 60 });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The QEMU capabilities cache every devnode stack on this machine uses: under /tmp, so
/// that launchers running as a user other than root (nonroot.rs) reach it too.
const SHARED_CAPABILITIES: &str = "/tmp/ferrovirt-test-qemu-capabilities";

/// Makes the run dir's capabilities cache a link to [`SHARED_CAPABILITIES`].
fn share_capabilities_cache(run_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let shared = Path::new(SHARED_CAPABILITIES);
    std::fs::create_dir_all(shared).context(|| format!("creating {}", shared.display()))?;
    std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o755))
        .context(|| format!("opening {} to launchers", shared.display()))?;
    let link = RunDir::new(run_dir).capabilities();
    std::os::unix::fs::symlink(shared, &link).context(|| format!("linking {}", link.display()))
}

/// Starts `virt-launcher warm-capabilities` into the capabilities cache of `run_dir` (as
/// the chart's virt-handler init container does), logging to `log`; the future ends with
/// its exit, an error with its log when it failed. The tests' devnode stacks and
/// `ferrovirt-local node` (hack/local-up.sh --dev) run it.
pub fn warm_capabilities(
    run_dir: &Path,
    log: PathBuf,
) -> Result<impl std::future::Future<Output = Result<()>> + use<>> {
    let out = std::fs::File::create(&log).context(|| format!("creating {}", log.display()))?;
    let err = out
        .try_clone()
        .context(|| format!("opening {}", log.display()))?;
    let mut child = Command::new(workspace_bin("virt-launcher"))
        .arg("warm-capabilities")
        .arg("--capabilities-cache")
        .arg(RunDir::new(run_dir).capabilities())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context(|| "starting virt-launcher warm-capabilities".to_string())?;
    Ok(async move {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .context(|| "waiting for virt-launcher warm-capabilities".to_string())?;
        if status.success() {
            return Ok(());
        }
        Err(crate::Error::Startup {
            component: "virt-launcher warm-capabilities".into(),
            reason: status.to_string(),
            tail: crate::tail(&log, 20),
            log,
        })
    })
}

// How each of Ferrovirt's components is started on a devnode stack: the tests' stacks and
// `ferrovirt-local node` (hack/local-up.sh --dev) both start exactly these commands.

/// devnode serving node `node`, its pods' state in `state_dir`; containerDisk and
/// kernel-boot images from `image_store`, else its default (hack/lib.sh's cache).
pub fn devnode_command(
    kubeconfig: &Path,
    node: &str,
    state_dir: &Path,
    image_store: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(workspace_bin("devnode"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node])
        .arg("--state-dir")
        .arg(state_dir);
    if let Some(store) = image_store {
        cmd.arg("--image-store").arg(store);
    }
    cmd
}

/// virt-controller for launchers whose node run dir is `run_dir`, its /metrics and
/// /healthz on 127.0.0.1:`metrics_port`.
pub fn virt_controller_command(kubeconfig: &Path, run_dir: &Path, metrics_port: u16) -> Command {
    let mut cmd = Command::new(workspace_bin("virt-controller"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--node-run-dir")
        .arg(run_dir)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")]);
    cmd
}

/// virt-handler of node `node`: its run dir `run_dir`, /metrics and /healthz on
/// 127.0.0.1:`metrics_port`, and its server for virt-api (console, VNC, pause) on
/// 127.0.0.1:`server_port`, which it publishes on the Node for virt-api.
pub fn virt_handler_command(
    kubeconfig: &Path,
    node: &str,
    run_dir: &Path,
    metrics_port: u16,
    server_port: u16,
) -> Command {
    let mut cmd = Command::new(workspace_bin("virt-handler"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node])
        .arg("--run-dir")
        .arg(run_dir)
        .args(["--namespace", SYSTEM_NAMESPACE])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--server-listen", &format!("127.0.0.1:{server_port}")]);
    cmd
}

fn spawn_controller(
    kubeconfig: &Path,
    node: &str,
    run_dir: &Path,
    logs: &Path,
    extra: &[&str],
) -> Result<()> {
    let mut operator = virt_controller_command(kubeconfig, run_dir, free_port()?);
    operator.args(extra);
    process::spawn_tied(
        "virt-controller",
        operator,
        &logs.join(format!("virt-controller-{node}.log")),
    )?;
    Ok(())
}

fn spawn_handler(kubeconfig: &Path, node: &str, run_dir: &Path, logs: &Path) -> Result<Process> {
    spawn_handler_with(kubeconfig, node, run_dir, logs, &[] as &[&OsStr])
}

fn spawn_handler_with(
    kubeconfig: &Path,
    node: &str,
    run_dir: &Path,
    logs: &Path,
    extra: &[impl AsRef<OsStr>],
) -> Result<Process> {
    let mut handler = virt_handler_command(kubeconfig, node, run_dir, free_port()?, free_port()?);
    handler.args(extra);
    process::spawn_tied(
        "virt-handler",
        handler,
        &logs.join(format!("virt-handler-{node}.log")),
    )
}

/// The `kubevirt` namespace and the cluster configuration that allows software emulation
/// (KubeVirt's `useEmulation`), as an administrator of a machine without working KVM sets it,
/// with KubeVirt's `DownwardMetrics` feature gate on (the end-to-end tests read the metrics
/// in a guest; the gate's refusal is node_defects.rs's, in a namespace of its own) and its
/// `CPUManager` gate (the real node's handler then labels it for dedicated CPUs) and its
/// `EnableVirtioFsStorageVolumes` gate (a claim shared over virtiofs, in e2e.rs) and its
/// `NUMA` gate (NUMA passthrough, in e2e.rs).
async fn configure_cluster(cp: &ControlPlane) -> Result<()> {
    let client = cp.client().await?;
    let apply = PatchParams::apply("ferrovirt-tests").force();
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(SYSTEM_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(SYSTEM_NAMESPACE, &apply, &Patch::Apply(&ns))
        .await?;
    let config = ConfigMap {
        metadata: ObjectMeta {
            name: Some("kubevirt-config".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("useEmulation".to_string(), "true".to_string()),
                (
                    "feature-gates".to_string(),
                    "DownwardMetrics,CPUManager,EnableVirtioFsStorageVolumes,NUMA".to_string(),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client, SYSTEM_NAMESPACE)
        .patch("kubevirt-config", &apply, &Patch::Apply(&config))
        .await?;
    Ok(())
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context(|| "finding a free port".to_string())?;
    Ok(listener
        .local_addr()
        .context(|| "finding a free port".to_string())?
        .port())
}
