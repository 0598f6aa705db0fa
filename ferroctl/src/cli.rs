//! ferroctl's command line: kubectl's connection flags and virtctl's commands.

use std::path::PathBuf;

use runtime::LogFormat;

const LATER: &str = "Not in ferroctl (virtctl has them): migrate, port-forward, ssh, scp, \
screenshot, guest agent commands, image upload, expand; expose of a replica set.";

/// Control Ferrovirt (and KubeVirt-compatible) virtual machines: start, stop, restart,
/// pause, unpause, and reach them: serial console and VNC.
#[derive(clap::Parser, Debug)]
#[command(name = "ferroctl", version, after_help = LATER)]
pub struct Cli {
    /// Kubeconfig file (default: KUBECONFIG, a list like kubectl's, else ~/.kube/config,
    /// else the in-cluster service account).
    #[arg(long, global = true, env = "FERROCTL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, env = "FERROCTL_CONTEXT")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short, long, global = true, env = "FERROCTL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log format of diagnostics on stderr (RUST_LOG filters them; default warn).
    #[arg(long, global = true, env = "FERROCTL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a VirtualMachine.
    Start {
        name: String,
        /// Ask the API server to validate the change without making it.
        #[arg(long, env = "FERROCTL_DRY_RUN")]
        dry_run: bool,
    },
    /// Stop a VirtualMachine.
    Stop {
        name: String,
        #[command(flatten)]
        flags: StopFlags,
    },
    /// Restart a VirtualMachine (stop its instance, then start a new one).
    Restart {
        name: String,
        #[command(flatten)]
        flags: StopFlags,
    },
    /// Attach to a VMI's serial console (Ctrl+] leaves). Works with a pipe on stdin too:
    /// after the input ends, output is printed until the console is quiet for a second.
    Console {
        /// The VMI (a VM's VMI has the VM's name).
        name: String,
        /// Minutes to wait for the VMI to run.
        #[arg(long, env = "FERROCTL_TIMEOUT", default_value_t = 5)]
        timeout: u64,
    },
    /// Proxy a VMI's VNC display to a local TCP port (printed as {"port":N}).
    Vnc {
        name: String,
        #[command(flatten)]
        flags: VncFlags,
    },
    /// Pause a VMI (`pause vmi NAME`; `vm NAME` pauses the VM's VMI).
    Pause {
        kind: ResourceKind,
        name: String,
        /// Ask virt-api to check the request without pausing.
        #[arg(long, env = "FERROCTL_DRY_RUN")]
        dry_run: bool,
    },
    /// Unpause a paused VMI (`unpause vmi NAME`).
    Unpause {
        kind: ResourceKind,
        name: String,
        #[arg(long, env = "FERROCTL_DRY_RUN")]
        dry_run: bool,
    },
    /// Create a Service for a VM's or VMI's guest (`expose vm NAME --port 80 --name SVC`),
    /// selecting its launcher pod, as virtctl's expose.
    Expose {
        kind: ResourceKind,
        name: String,
        #[command(flatten)]
        flags: ExposeFlags,
    },
    /// Print the client's and the server's (virt-api's) version.
    Version,
}

/// `expose`'s Service, virtctl's flags.
#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct ExposeFlags {
    /// Name of the Service.
    #[arg(long = "name", id = "service_name")]
    pub service_name: String,
    /// The port the Service serves on (default: the pod-network interface's `ports`).
    #[arg(long)]
    pub port: Option<i32>,
    /// The guest's port (number or name) the Service sends to (default: --port).
    #[arg(long)]
    pub target_port: Option<String>,
    /// ClusterIP, NodePort or LoadBalancer.
    #[arg(long = "type", default_value = "ClusterIP")]
    pub r#type: String,
    /// TCP, UDP or SCTP.
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// Name of the Service's port.
    #[arg(long)]
    pub port_name: Option<String>,
    /// The ClusterIP to ask for (`None`: a headless Service).
    #[arg(long)]
    pub cluster_ip: Option<String>,
}

/// `vm` or `vmi`: both name the VMI, as a VM's VMI has its name (also `virtualmachine(s)`, `virtualmachineinstance(s)`, any case), as
/// virtctl's pause takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Vm,
    Vmi,
}

impl std::str::FromStr for ResourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vm" | "vms" | "virtualmachine" | "virtualmachines" => Ok(Self::Vm),
            "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => Ok(Self::Vmi),
            _ => Err(format!("{s:?}: the resource type must be vm or vmi")),
        }
    }
}

/// `vnc`'s local listener, as virtctl's.
#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct VncFlags {
    /// Only run the proxy and print its port as JSON (the default and only mode: ferroctl
    /// starts no viewer).
    #[arg(long)]
    pub proxy_only: bool,
    /// Local port (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

/// How stop and restart stop the guest.
#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct StopFlags {
    /// Use --grace-period instead of the VMI's own.
    #[arg(long, env = "FERROCTL_FORCE")]
    pub force: bool,
    /// Seconds the guest gets to shut down (needs --force, as in virtctl; restart
    /// accepts only 0).
    #[arg(long, env = "FERROCTL_GRACE_PERIOD", requires = "force")]
    pub grace_period: Option<i64>,
    /// Ask the API server to validate the change without making it.
    #[arg(long, env = "FERROCTL_DRY_RUN")]
    pub dry_run: bool,
}

impl Command {
    /// The subresource and the options body of a lifecycle command.
    pub fn request(&self) -> Option<(&str, &str, serde_json::Value)> {
        use serde_json::json;
        let dry = |d: bool| if d { json!(["All"]) } else { json!(null) };
        let mut body = match self {
            Command::Start { name, dry_run } => {
                ("start", name.as_str(), json!({"dryRun": dry(*dry_run)}))
            }
            Command::Stop { name, flags } => (
                "stop",
                name.as_str(),
                json!({"gracePeriod": flags.grace_period, "dryRun": dry(flags.dry_run)}),
            ),
            Command::Restart { name, flags } => (
                "restart",
                name.as_str(),
                json!({"gracePeriodSeconds": flags.grace_period, "dryRun": dry(flags.dry_run)}),
            ),
            _ => return None,
        };
        if let Some(o) = body.2.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferroctl").chain(args.iter().copied()))
    }

    #[test]
    fn kubectl_connection_flags_anywhere() {
        let c = parse(&[
            "start",
            "vm1",
            "-n",
            "ns1",
            "--context",
            "c1",
            "--kubeconfig",
            "/k",
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("ns1"));
        assert_eq!(c.context.as_deref(), Some("c1"));
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(c.command.request().unwrap().0, "start");
    }

    #[test]
    fn stop_grace_period_needs_force_and_goes_in_the_body() {
        assert!(parse(&["stop", "vm1", "--grace-period", "0"]).is_err());
        let c = parse(&["stop", "vm1", "--force", "--grace-period", "0"]).unwrap();
        let (sub, name, body) = c.command.request().unwrap();
        assert_eq!((sub, name), ("stop", "vm1"));
        assert_eq!(body, serde_json::json!({"gracePeriod": 0}));
    }

    #[test]
    fn restart_force_and_dry_run() {
        let c = parse(&["restart", "vm1", "--force", "--grace-period=0", "--dry-run"]).unwrap();
        let (_, _, body) = c.command.request().unwrap();
        assert_eq!(
            body,
            serde_json::json!({"gracePeriodSeconds": 0, "dryRun": ["All"]})
        );
    }

    #[test]
    fn help_says_what_is_not_there() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("port-forward"), "{help}");
        assert!(!help.contains("console, vnc"), "{help}");
    }

    #[test]
    fn console_vnc_pause_parse_as_virtctls() {
        let c = parse(&["console", "vm1", "--timeout", "1"]).unwrap();
        assert_eq!(
            c.command,
            Command::Console {
                name: "vm1".into(),
                timeout: 1
            }
        );
        let v = parse(&["vnc", "vm1", "--proxy-only", "--port", "5901"]).unwrap();
        let Command::Vnc { flags, .. } = v.command else {
            panic!()
        };
        assert!(flags.proxy_only && flags.port == 5901);
        let p = parse(&["pause", "vmi", "vm1"]).unwrap();
        assert_eq!(
            p.command,
            Command::Pause {
                kind: ResourceKind::Vmi,
                name: "vm1".into(),
                dry_run: false
            }
        );
        assert!(parse(&["unpause", "VirtualMachineInstance", "vm1"]).is_ok());
        assert!(parse(&["pause", "pod", "vm1"]).is_err());
        assert!(
            parse(&["pause", "vm1"]).is_err(),
            "virtctl's syntax names the kind"
        );
        assert!(p.command.request().is_none());
    }

    #[test]
    fn expose_takes_virtctls_flags() {
        let c = parse(&[
            "expose",
            "vm",
            "vm1",
            "--name",
            "svc",
            "--port",
            "80",
            "--target-port",
            "http",
            "--type",
            "NodePort",
        ])
        .unwrap();
        let Command::Expose { kind, name, flags } = c.command else {
            panic!()
        };
        assert_eq!((kind, name.as_str()), (ResourceKind::Vm, "vm1"));
        assert_eq!(flags.service_name, "svc");
        assert_eq!(flags.port, Some(80));
        assert_eq!(flags.target_port.as_deref(), Some("http"));
        assert_eq!(
            (flags.r#type.as_str(), flags.protocol.as_str()),
            ("NodePort", "TCP")
        );
        assert!(
            parse(&["expose", "vm", "vm1"]).is_err(),
            "--name is required"
        );
    }
}
