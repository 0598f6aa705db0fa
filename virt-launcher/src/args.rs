//! Command line, per docs/contracts.md ("The launcher pod"). Every flag has an env.

use std::path::PathBuf;

use ferrovirt_node_contract::paths::VMI_DIR_IN_POD;
use ferrovirt_node_contract::pod::DEFAULT_GRACE_SECONDS;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "virt-launcher",
    version,
    about = "Runs one VM with a libvirt of its own"
)]
pub struct Args {
    /// Namespace of the VirtualMachineInstance.
    #[arg(long, env = "VIRT_LAUNCHER_VMI_NAMESPACE")]
    pub vmi_namespace: String,

    /// Name of the VirtualMachineInstance.
    #[arg(long, env = "VIRT_LAUNCHER_VMI_NAME")]
    pub vmi_name: String,

    /// UID of the VirtualMachineInstance.
    #[arg(long, env = "VIRT_LAUNCHER_VMI_UID")]
    pub vmi_uid: String,

    /// Per-VMI directory shared with the node: sockets, libvirt root, logs.
    #[arg(long, env = "VIRT_LAUNCHER_VMI_DIR", default_value = VMI_DIR_IN_POD)]
    pub vmi_dir: PathBuf,

    /// How long a guest has to power off after SIGTERM before it is destroyed.
    #[arg(long, env = "VIRT_LAUNCHER_GRACE_PERIOD_SECONDS", default_value_t = DEFAULT_GRACE_SECONDS as u64)]
    pub grace_period_seconds: u64,

    /// Node-wide directory shared by launchers for libvirt's QEMU capability probes
    /// (optional; saves about 4 s on each VM's first start).
    #[arg(long, env = "VIRT_LAUNCHER_CAPABILITIES_CACHE")]
    pub capabilities_cache: Option<PathBuf>,

    /// The most bytes `serial0.log` (the serial console's copy) may hold before it is
    /// rotated to `serial0.log.1`; at most twice this stays on disk.
    #[arg(
        long,
        env = "VIRT_LAUNCHER_SERIAL_LOG_MAX_BYTES",
        default_value_t = 1 << 20,
        value_parser = clap::value_parser!(u64).range(4096..)
    )]
    pub serial_log_max_bytes: u64,

    #[arg(long, env = "VIRT_LAUNCHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level.
pub use ferrovirt_runtime::{LogFormat, init_logging};
