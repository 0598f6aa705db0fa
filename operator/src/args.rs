//! Command-line flags; every flag can also be set through its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use ferrovirt_runtime::LogFormat;

/// Ferrovirt's operator: the VirtualMachine and VirtualMachineInstance controllers.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "virt-controller", version, about)]
pub struct Args {
    /// Kubeconfig to use; without it, the in-cluster config or `$KUBECONFIG`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub launcher: LauncherArgs,

    /// Address of the Prometheus metrics endpoint (`/metrics`, and `/healthz`).
    #[arg(long, env = "FERROVIRT_METRICS_ADDR", default_value = "0.0.0.0:8443")]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub leader: LeaderArgs,

    /// Log format.
    #[arg(
        long,
        env = "FERROVIRT_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,

    /// The cap of the crash-loop back-off between starts of a VM whose VMIs keep failing
    /// before they run (seconds; KubeVirt's is 300).
    #[arg(long, env = "FERROVIRT_CRASH_LOOP_MAX_BACKOFF", value_parser = parse_seconds, default_value = "300")]
    pub crash_loop_max_backoff: Duration,

    /// How many objects each controller reconciles at once.
    #[arg(long, env = "FERROVIRT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
}

/// How the launcher pod is rendered.
#[derive(clap::Args, Debug, Clone)]
pub struct LauncherArgs {
    /// Image of the launcher pod's `compute` container.
    #[arg(
        long,
        env = "FERROVIRT_LAUNCHER_IMAGE",
        default_value = "ferrovirt/virt-launcher:dev"
    )]
    pub launcher_image: String,

    /// The node run dir on the host: each VMI gets `<dir>/vmis/<uid>` as its hostPath.
    #[arg(long, env = "FERROVIRT_RUN_DIR", default_value = ferrovirt_node_contract::paths::DEFAULT_RUN_DIR)]
    pub node_run_dir: PathBuf,
}

/// Leader election with a coordination.k8s.io Lease.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Namespace of the Lease.
    #[arg(
        long,
        env = "FERROVIRT_LEADER_ELECTION_NAMESPACE",
        default_value = "kubevirt"
    )]
    pub leader_election_namespace: String,

    /// Name of the Lease.
    #[arg(long, env = "FERROVIRT_LEASE_NAME", default_value = "virt-controller")]
    pub lease_name: String,

    /// This replica's identity in the Lease (default: hostname and process id).
    #[arg(long, env = "FERROVIRT_IDENTITY")]
    pub identity: Option<String>,

    /// How long a lease stays valid without renewal; a standby takes over after it.
    #[arg(long, env = "FERROVIRT_LEASE_DURATION", value_parser = parse_seconds, default_value = "15")]
    pub lease_duration: Duration,

    /// How often the leader renews and a standby retries (seconds).
    #[arg(long, env = "FERROVIRT_LEASE_RETRY", value_parser = parse_seconds, default_value = "2")]
    pub lease_retry: Duration,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    // NaN is refused too.
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{s}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl LeaderArgs {
    /// The configured identity, or `<hostname>_<pid>`.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "virt-controller".to_string());
            format!("{host}_{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_env_names() {
        let a = Args::try_parse_from([
            "virt-controller",
            "--lease-duration",
            "4",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(a.leader.lease_duration, Duration::from_secs(4));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.launcher.node_run_dir, PathBuf::from("/var/run/ferrovirt"));
        assert_eq!(a.launcher.launcher_image, "ferrovirt/virt-launcher:dev");
        assert!(Args::try_parse_from(["virt-controller", "--lease-duration", "0"]).is_err());
    }
}
