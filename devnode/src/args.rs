//! Command line: every flag also reads an environment variable `DEVNODE_...`.

use crate::{Ctx, Error, Result, machine};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "devnode",
    version,
    about = "kubelet's stand-in: runs Ferrovirt's pods bound to its Node as host processes"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Per-container supervisor (internal): runs one container in new namespaces.
    #[command(hide = true)]
    Shim { spec: PathBuf },
    /// Runs a command inside a container's PID and mount namespaces (internal, for probes).
    #[command(hide = true)]
    Nsexec {
        pid: i32,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// A pod's sandbox (internal): PID 1 of a pod's shared PID namespace; reaps orphans,
    /// exits on SIGTERM.
    #[command(hide = true)]
    Pause,
    /// devnode's stand-in for the disk containers' program (internal; see
    /// devnode/src/containerdisk.rs).
    #[command(hide = true)]
    ContainerDisk {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        copy_to: Option<PathBuf>,
        /// The image's directory in the image store: chroot there after binding.
        #[arg(long)]
        root: Option<PathBuf>,
        /// The container's runAsUser: the socket is made as this user, who runs the rest
        /// (the chroot needs root first).
        #[arg(long)]
        uid: Option<u32>,
        /// The container's runAsGroup.
        #[arg(long)]
        gid: Option<u32>,
    },
    /// Kills every container recorded in the state dir (what local-down runs after
    /// stopping devnode: devnode itself never kills pods when it exits).
    StopAll {
        #[arg(long, env = "DEVNODE_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrovirt/devnode";

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kubeconfig file; without it the usual inference (KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, env = "DEVNODE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Node to register (default: the hostname).
    #[arg(long, env = "DEVNODE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where Ferrovirt's binaries are (default: the directory of the devnode executable).
    #[arg(long, env = "DEVNODE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Images whose repository starts with this run `<bin-dir>/<last path segment>`.
    #[arg(long, env = "DEVNODE_IMAGE_PREFIX", default_value = "ferrovirt/")]
    pub image_prefix: String,
    /// The image store: a container image that is a directory here (an image reference
    /// with '/' and ':' as '_', laid out as the image) is a containerDisk or kernel-boot
    /// image, served by devnode's stand-in disk containers. Defaults to
    /// `images` in hack/lib.sh's cache directory (`$FERROVIRT_CACHE`, else
    /// `$XDG_CACHE_HOME/ferrovirt`, else `~/.cache/ferrovirt`; hack/build-guest-images.sh).
    #[arg(long, env = "DEVNODE_IMAGE_STORE")]
    pub image_store: Option<PathBuf>,
    /// Per-pod state: logs, emptyDirs, rendered volumes, process records.
    #[arg(long, env = "DEVNODE_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// CPU capacity to report, a Kubernetes quantity (default: the machine's CPUs).
    #[arg(long, env = "DEVNODE_CPU")]
    pub cpu: Option<String>,
    /// Memory capacity to report, a Kubernetes quantity (default: the machine's memory).
    #[arg(long, env = "DEVNODE_MEMORY")]
    pub memory: Option<String>,
    /// Pod capacity to report.
    #[arg(long, env = "DEVNODE_MAX_PODS", default_value_t = 110)]
    pub max_pods: u32,
    #[arg(long, env = "DEVNODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

pub use ferrovirt_runtime::{LogFormat, init_logging};

impl RunArgs {
    pub async fn context(&self) -> Result<Ctx> {
        let config =
            ferrovirt_runtime::kube_config(self.kubeconfig.as_deref(), "ferrovirt-devnode")
                .await
                .map_err(Error::Runtime)?;
        let api_host = config.cluster_url.host().unwrap_or("127.0.0.1").to_string();
        let api_port = config.cluster_url.port_u16().unwrap_or(443);
        let client = kube::Client::try_from(config)?;
        let self_exe = std::env::current_exe().map_err(Error::io("find the devnode executable"))?;
        let bin_dir = match &self.bin_dir {
            Some(d) => d.clone(),
            None => self_exe
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => hostname::get()
                .map_err(Error::io("read the hostname"))?
                .to_string_lossy()
                .to_lowercase(),
        };
        std::fs::create_dir_all(self.state_dir.join("pods"))
            .map_err(Error::io(format!("create {}", self.state_dir.display())))?;
        Ok(Ctx {
            client,
            node_name,
            bin_dir,
            image_prefix: self.image_prefix.clone(),
            image_store: self.image_store.clone().unwrap_or_else(default_image_store),
            state_dir: self.state_dir.clone(),
            api_host,
            api_port,
            self_exe,
        })
    }

    pub fn capacity(&self, state_dir: &Path) -> Result<machine::Capacity> {
        let mut c = machine::Capacity::detect(state_dir)?;
        if let Some(cpu) = &self.cpu {
            c.cpu = cpu.clone();
        }
        if let Some(mem) = &self.memory {
            c.memory = mem.clone();
        }
        c.pods = self.max_pods;
        Ok(c)
    }
}

/// `images` in hack/lib.sh's cache directory ([`ferrovirt_runtime::cache_dir`]).
pub fn default_image_store() -> PathBuf {
    ferrovirt_runtime::cache_dir().join("images")
}
