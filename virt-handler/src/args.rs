//! Command line. Every flag has an env; the defaults follow docs/contracts.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use ferrovirt_node_contract::paths::{DEFAULT_RUN_DIR, VMI_DIR_IN_POD};

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "virt-handler",
    version,
    about = "Ferrovirt's node agent: runs the VMIs scheduled to this node"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    #[arg(long, env = "VIRT_HANDLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Run one `hlt` under KVM and exit 0 when it worked (used by the handler itself,
    /// which kills it after a timeout).
    #[command(hide = true)]
    ProbeKvm {
        #[arg(long, default_value = "/dev/kvm")]
        device: PathBuf,
    },
    /// Attach this terminal to a VMI's serial console on this node
    /// (`<run-dir>/vmis/<uid>/serial0.sock`); Ctrl-] detaches.
    Console {
        /// The VMI's uid.
        uid: String,
    },
    /// Print the libvirt domain XML of a VMI manifest, as the handler would define it
    /// (for debugging and benchmarks; volumes are planned, not prepared).
    DomainXml {
        /// A VirtualMachineInstance manifest (YAML or JSON); `-` for stdin.
        vmi: PathBuf,
        /// Software emulation (domain type qemu) instead of KVM.
        #[arg(long)]
        emulation: bool,
        /// The per-VMI directory as the launcher sees it.
        #[arg(long, default_value = VMI_DIR_IN_POD)]
        vmi_dir: PathBuf,
        /// The kernel-boot image's root as the launcher sees it (on a node
        /// `/proc/<pid of the pod's kernel-boot container>/root`).
        #[arg(long, default_value = "/")]
        kernel_root: PathBuf,
        /// Allow hostDisk volumes under this directory (repeatable), as the HostDisk
        /// feature gate and `ferrovirt.hostDiskPathPrefixes` in `kubevirt-config` would.
        #[arg(long = "host-disk-prefix")]
        host_disk_prefixes: Vec<String>,
    },
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The Node this handler serves. Defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The node run dir shared with devnode and the launchers; per VMI `<run-dir>/vmis/<uid>/`.
    #[arg(long, env = "FERROVIRT_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    /// A kubeconfig file; without it the in-cluster config or `$KUBECONFIG` is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The namespace of the `kubevirt-config` ConfigMap.
    #[arg(long, env = "VIRT_HANDLER_NAMESPACE", default_value = "kubevirt")]
    pub namespace: String,

    /// Allow software emulation when KVM is unusable, unless `kubevirt-config` says otherwise.
    #[arg(long, env = "FERROVIRT_USE_EMULATION", default_value_t = false)]
    pub use_emulation: bool,

    /// Where Prometheus metrics are served (`/metrics`); empty for none.
    #[arg(
        long,
        env = "VIRT_HANDLER_METRICS_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub metrics_addr: MetricsAddr,

    /// The per-VMI directory as the launcher sees it (its pod's mount); `host` when the
    /// launcher sees the host path (a launcher run without a mount namespace).
    #[arg(
        long,
        env = "VIRT_HANDLER_LAUNCHER_VMI_DIR",
        default_value = VMI_DIR_IN_POD
    )]
    pub launcher_vmi_dir: String,

    /// HTTPS address of the server for virt-api (console, VNC, pause; mutual TLS); empty
    /// for none.
    #[arg(
        long,
        env = "VIRT_HANDLER_SERVER_LISTEN",
        default_value = "0.0.0.0:8186"
    )]
    pub server_listen: MetricsAddr,

    /// The host virt-api dials to reach this handler (a DaemonSet sets the pod's IP from
    /// the downward API); published on the Node with the listen port. Default: the listen
    /// address when it is a specific one, else the Node's InternalIP.
    #[arg(long, env = "VIRT_HANDLER_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// The kubelet device plugins (unset `--device-plugin-dir`: none, as on devnode).
    #[command(flatten)]
    pub device_plugins: ferrovirt_device_plugin::Args,

    /// kubelet's CPU manager state file: its policy `static` (with KubeVirt's `CPUManager`
    /// feature gate) makes the Node labelled `kubevirt.io/cpumanager=true`, where VMIs with
    /// dedicated CPUs go. Default: `cpu_manager_state` beside `--device-plugin-dir` (the
    /// kubelet's directory); neither set: the node has no CPU manager (devnode).
    #[arg(long, env = "VIRT_HANDLER_CPU_MANAGER_STATE")]
    pub cpu_manager_state: Option<PathBuf>,

    /// The KVM device to probe.
    #[arg(long, env = "VIRT_HANDLER_KVM_DEVICE", default_value = "/dev/kvm")]
    pub kvm_device: PathBuf,

    /// How long the KVM probe may take before KVM counts as unusable.
    #[arg(
        long,
        env = "VIRT_HANDLER_KVM_PROBE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub kvm_probe_timeout_ms: u64,
}

impl RunArgs {
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr.0
    }

    /// The server for virt-api, unless `--server-listen` is empty.
    pub fn server(&self) -> Option<crate::server::Config> {
        Some(crate::server::Config {
            listen: self.server_listen.0?,
            advertise: self.advertise_address.clone().filter(|a| !a.is_empty()),
            node: self.node_name(),
            namespace: self.namespace.clone(),
            run_dir: ferrovirt_node_contract::paths::RunDir::new(&self.run_dir),
        })
    }
}

/// The same log flags and output as every Ferrovirt binary.
pub use ferrovirt_runtime::{LogFormat, init_logging};

/// `--metrics-addr` and `--server-listen`: an address, or empty for no endpoint. Anything else is refused when
/// the flags are parsed, so a typo cannot silently turn metrics off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|e| {
            format!("{s:?} is not an address like 127.0.0.1:8443 ({e}); empty for none")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_run_flags_and_the_probe() {
        let a = Args::parse_from([
            "virt-handler",
            "--node-name",
            "n1",
            "--run-dir",
            "/tmp/r",
            "--log-format",
            "json",
            "--metrics-addr",
            "",
        ]);
        assert_eq!(a.run.node_name(), "n1");
        assert_eq!(a.run.run_dir, PathBuf::from("/tmp/r"));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.run.metrics_addr(), None);
        let typo = Args::try_parse_from(["virt-handler", "--metrics-addr", "127.0.0.1:84433"]);
        assert!(typo.unwrap_err().to_string().contains("not an address"));
        assert!(a.command.is_none());
        let p = Args::parse_from(["virt-handler", "probe-kvm", "--device", "/dev/null"]);
        assert!(
            matches!(p.command, Some(Command::ProbeKvm { device }) if device.as_path() == std::path::Path::new("/dev/null"))
        );
    }
}
