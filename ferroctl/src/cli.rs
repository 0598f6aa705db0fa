//! ferroctl's command line: kubectl's connection flags and virtctl's commands.

use std::path::PathBuf;

use runtime::LogFormat;

const LATER: &str = "Not implemented yet (later work): console, vnc, pause, unpause and the other \
virtctl commands; Ferrovirt's virt-api serves start, stop and restart today.";

/// Control Ferrovirt (and KubeVirt-compatible) virtual machines: start, stop, restart.
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
    /// Print the client's and the server's (virt-api's) version.
    Version,
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
            Command::Version => return None,
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
    fn help_says_what_is_not_there_yet() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("console, vnc"), "{help}");
        assert!(parse(&["console", "vm1"]).is_err());
    }
}
