//! A real Kubernetes node for a test's control plane: containerd, kubelet and kube-proxy in
//! a network namespace of their own, with an image registry on the host end of its veth.
//! `hack/node/up.sh` and `hack/node/down.sh` do the work (the same scripts as
//! `hack/local-up.sh`); docs/real-node.md describes the node.
//!
//! Each node takes an index N (1..=250, held by a lock file while it runs; 0 is
//! `hack/local-up.sh`'s) and with it the addresses `10.250.N.1` (host end, registry) and
//! `10.250.N.2` (the node), so test binaries can run nodes side by side.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::control_plane::tail;
use crate::error::IoContext;
use crate::{ControlPlane, Error, Result, process, repo_root};

/// Where the index locks live (`/run/lock/ferrovirt-node-<N>.lock`).
const LOCK_DIR: &str = "/run/lock";

/// A running node; [`Drop`] removes it (processes, namespaces, veth, iptables, cgroups).
/// Its files and logs stay in [`RealNode::dir`], inside the control plane's directory.
#[derive(Debug)]
pub struct RealNode {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    node_ip: String,
    host_ip: String,
    registry: String,
    holder_pid: u32,
    /// Holds the index for as long as the node runs (flock, released when closed).
    _index_lock: File,
}

impl RealNode {
    /// Starts a node against `cp` and returns once the Node is Ready. Fails, naming what
    /// is missing and `hack/build-node.sh`, when the node's binaries are not built.
    pub async fn start(cp: &ControlPlane) -> Result<Self> {
        let started = Instant::now();
        let (index, lock) = take_index()?;
        let name = format!("ferrovirt-node-t{index}");
        let dir = cp.dir().join(format!("node-{index}"));
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let script_log = dir.join("up.log");
        // Whatever happens to this value, the node goes when the test binary exits.
        let mut down = Command::new("bash");
        down.arg(repo_root().join("hack/node/down.sh"))
            .arg("--dir")
            .arg(&dir);
        process::run_at_exit(down);

        tracing::info!(name, dir = %dir.display(), "starting a real node");
        let log =
            File::create(&script_log).context(|| format!("creating {}", script_log.display()))?;
        let kubeconfig = cp.kubeconfig();
        let index_arg = index.to_string();
        let ident = ["--name", name.as_str(), "--index", index_arg.as_str()];
        // The index lock is ours, so a node still holding this index was left by a test
        // process that was killed: remove it first.
        run_script("down.sh", &ident, &log).await?;
        let mut up_args: Vec<&OsStr> = vec![
            "--dir".as_ref(),
            dir.as_os_str(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--pki".as_ref(),
            cp.pki().dir().as_os_str(),
        ];
        up_args.extend(ident.iter().map(OsStr::new));
        let status = run_script("up.sh", &up_args, &log).await?;
        if !status.success() {
            return Err(Error::Startup {
                component: format!("node {name}"),
                reason: format!("hack/node/up.sh exited with {status}"),
                tail: tail(&script_log, 15),
                log: script_log,
            });
        }
        let env = read_env(&dir.join("node.env"))?;
        let get = |key: &str| -> Result<String> {
            env.get(key).cloned().ok_or_else(|| Error::Startup {
                component: format!("node {name}"),
                reason: format!("{key} missing from node.env"),
                log: dir.join("node.env"),
                tail: String::new(),
            })
        };
        let node = Self {
            node_ip: get("NODE_IP")?,
            host_ip: get("NODE_HOST_IP")?,
            registry: get("NODE_REGISTRY")?,
            holder_pid: get("NODE_HOLDER_PID")?.parse().unwrap_or(0),
            name,
            dir,
            kubeconfig,
            _index_lock: lock,
        };
        tracing::info!(
            name = node.name,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "real node Ready"
        );
        Ok(node)
    }

    /// The Node's name (`ferrovirt-node-t<N>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address (its InternalIP; kubelet listens there).
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    /// The host end of the node's veth: the registry's and the API server's address as the
    /// node sees them.
    pub fn host_ip(&self) -> &str {
        &self.host_ip
    }

    /// `<host ip>:5000`, plain HTTP: push with [`RealNode::push`], pull as
    /// `<registry>/<path>:<tag>`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The node's directory: configs in `etc/`, logs in `logs/`, its `/var` in `var/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of `containerd`, `kubelet`, `kube-proxy`, `registry` or `holder`.
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    /// The process whose network and mount namespaces are the node's: enter them with
    /// `nsenter -t <pid> -n -m`.
    pub fn holder_pid(&self) -> u32 {
        self.holder_pid
    }

    /// The pid of a node component (`containerd`, `kubelet`, `kube-proxy`, `registry`).
    pub fn pid(&self, component: &str) -> Option<u32> {
        let file = self.dir.join("pids").join(format!("{component}.pid"));
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// The last lines of each component's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        ["kubelet", "containerd", "kube-proxy", "registry"]
            .iter()
            .map(|c| format!("--- {} ---\n{}", c, tail(&self.log(c), lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pushes an OCI image layout (a directory) to the node's registry as
    /// `<registry>/<path>`, with `crane` (hack/build-node.sh builds it).
    pub async fn push(&self, layout: &Path, path: &str) -> Result<String> {
        let crane = crate::assets::cache_dir()
            .join(format!("crane-v{CRANE_VERSION}"))
            .join("crane");
        require(&crane)?;
        let reference = format!("{}/{path}", self.registry);
        let out = tokio::process::Command::new(&crane)
            .args(["push", "--insecure"])
            .arg(layout)
            .arg(&reference)
            .stdin(Stdio::null())
            .output()
            .await
            .context(|| format!("running {}", crane.display()))?;
        if !out.status.success() {
            return Err(Error::Io {
                context: format!(
                    "crane push {} {reference}: {}",
                    layout.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                source: std::io::Error::other("crane push failed"),
            });
        }
        Ok(reference)
    }

    /// Starts a node ([`RealNode::start`]) and pushes to its registry the virt-launcher image
    /// (as `ferrovirt/virt-launcher:<tag>`) and the containerDisk / kernel-boot images of
    /// `guests`, named as manifests name them (`registry:5000/kubevirt/...`,
    /// `ferrovirt/guest-kernel:latest`; see [`mirror_path`]). Returns the node and the
    /// launcher image's reference, for [`crate::Stack::start_on_real_node`]. The images are
    /// the OCI layouts `hack/build-images.sh --no-push` writes (hack/setup.sh runs it).
    pub async fn with_images(
        cp: &ControlPlane,
        tag: &str,
        guests: &[&str],
    ) -> Result<(Self, String)> {
        let node = Self::start(cp).await?;
        let started = Instant::now();
        let launcher = node
            .push(
                &crate::helm::image_layout("virt-launcher"),
                &format!("ferrovirt/virt-launcher:{tag}"),
            )
            .await?;
        for guest in guests {
            node.push(&guest_layout(guest)?, mirror_path(guest)).await?;
        }
        tracing::info!(
            node = node.name,
            images = guests.len() + 1,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "images pushed to the node's registry"
        );
        Ok((node, launcher))
    }

    /// Runs a command in the node's namespaces, returning its output.
    pub fn exec(&self, program: &Path, args: &[&str]) -> Result<std::process::Output> {
        Command::new("nsenter")
            .args(["-t", &self.holder_pid.to_string(), "-n", "-m", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("running {} in node {}", program.display(), self.name))
    }

    /// `crictl <args>` against the node's containerd; panics with its output on failure.
    pub fn crictl(&self, args: &[&str]) -> String {
        let crictl = crate::assets::cache_dir()
            .join(format!("cri-tools-v{CRI_TOOLS_VERSION}"))
            .join("crictl");
        let config = self.dir.join("etc/crictl.yaml");
        let mut all = vec!["--config", config.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let out = self.exec(&crictl, &all).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "crictl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every process in the node's pods (the node's cgroups: pod sandboxes, containers,
    /// and what they started, such as a launcher's QEMU), with its command name and RSS.
    /// The node's own components (kubelet, containerd, kube-proxy) are not in there.
    pub fn pod_processes(&self) -> Vec<NodeProcess> {
        let Some(root) = ["memory", "pids", "cpu,cpuacct", "systemd"]
            .iter()
            .map(|h| {
                Path::new("/sys/fs/cgroup")
                    .join(h)
                    .join("ferrovirt")
                    .join(&self.name)
            })
            .find(|d| d.is_dir())
        else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        collect_cgroup_pids(&root, &mut pids);
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter().filter_map(NodeProcess::read).collect()
    }

    /// The pids of the processes in the node's pods whose command line contains every
    /// one of `words` (a launcher's QEMU: `qemu-system`, `guest=<namespace>_<name>,`).
    pub fn pod_pids_matching(&self, words: &[&str]) -> Vec<u32> {
        self.pod_processes()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
                    let line = String::from_utf8_lossy(&c).replace('\0', " ");
                    words.iter().all(|w| line.contains(w))
                })
            })
            .map(|p| p.pid)
            .collect()
    }
}

/// The path under which an image named `reference` in a manifest is pushed to the node's
/// registry: the node's containerd mirrors `registry:5000` (KubeVirt's examples), quay.io,
/// docker.io, registry.k8s.io and ghcr.io to it with the path unchanged
/// (docs/real-node.md), and a name without a registry host is docker.io's.
pub fn mirror_path(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, path)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            path
        }
        _ => reference,
    }
}

/// The OCI layout `hack/build-images.sh` makes of an image of the guest image store
/// (`reference` as the store's index.tsv names it); an error naming the command when it is
/// missing.
pub fn guest_layout(reference: &str) -> Result<PathBuf> {
    let layout = crate::assets::cache_dir()
        .join("image-build/oci")
        .join(format!("guest-{}", reference.replace(['/', ':'], "_")));
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    Err(Error::Io {
        context: format!(
            "the containerDisk image {reference} is missing at {}: build the images with \
             `hack/build-images.sh --no-push` (hack/setup.sh does)",
            layout.display()
        ),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// A process on the node ([`RealNode::pod_processes`], [`NodeProcess::read`]).
#[derive(Clone, Debug)]
pub struct NodeProcess {
    pub pid: u32,
    /// `/proc/<pid>/comm`: the first 15 bytes of the program's name.
    pub comm: String,
    /// Resident memory (`VmRSS`) in KiB.
    pub rss_kib: u64,
}

impl NodeProcess {
    /// The process `pid` now; `None` when it has gone.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let rss_kib = field("VmRSS:")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Some(Self {
            pid,
            comm: field("Name:")?,
            rss_kib,
        })
    }
}

fn collect_cgroup_pids(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_cgroup_pids(&entry.path(), pids);
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(repo_root().join("hack/node/down.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::error!(
                node = self.name,
                stderr = %String::from_utf8_lossy(&o.stderr),
                "hack/node/down.sh failed"
            ),
            Err(e) => tracing::error!(node = self.name, error = %e, "running hack/node/down.sh"),
        }
    }
}

/// The versions hack/lib.sh names (`CRANE_VERSION`, `CRI_TOOLS_VERSION`).
const CRANE_VERSION: &str = "0.22.1";
const CRI_TOOLS_VERSION: &str = "1.37.0";

/// The OCI layout of the busybox image hack/build-node.sh makes from Debian's busybox-static
/// (`/bin/sh`, `nc`, `cat`, `sleep`, `hostname`, ...).
pub fn busybox_layout() -> Result<PathBuf> {
    let layout = crate::assets::cache_dir().join("node-images/busybox");
    require(&layout.join("index.json"))?;
    Ok(layout)
}

fn require(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    Err(Error::Io {
        context: format!("{} is missing: run hack/build-node.sh", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// Runs `bash hack/node/<script> <args>` with its output appended to `log`.
async fn run_script<S: AsRef<OsStr>>(
    script: &str,
    args: &[S],
    log: &File,
) -> Result<std::process::ExitStatus> {
    let output = || {
        log.try_clone()
            .context(|| "opening the node's up.log".to_string())
    };
    tokio::process::Command::new("bash")
        .arg(repo_root().join("hack/node").join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(output()?)
        .stderr(output()?)
        .status()
        .await
        .context(|| format!("running hack/node/{script}"))
}

/// The first free index in 1..=250, with the lock that holds it.
fn take_index() -> Result<(u8, File)> {
    std::fs::create_dir_all(LOCK_DIR).context(|| format!("creating {LOCK_DIR}"))?;
    for index in 1..=250u8 {
        let path = Path::new(LOCK_DIR).join(format!("ferrovirt-node-{index}.lock"));
        let file = File::create(&path).context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok((index, file));
        }
    }
    Err(Error::Io {
        context: "all 250 node indexes are taken".to_string(),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

fn read_env(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
