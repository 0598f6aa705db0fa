//! `virt-launcher probe`: the command kubelet runs in the compute container for a VMI's
//! `exec` and `guestAgentPing` probes (KubeVirt's virt-probe). It asks this pod's launcher
//! over its socket, which asks the guest agent, and exits 0 when the guest answered (the
//! command's exit code 0, or the ping). The operator renders it (operator/src/pod/probes.rs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::paths::{VMI_DIR_IN_POD, VmiDir};
use ferrovirt_node_contract::protocol::{Request, Response};

/// The first argument that selects this command instead of the launcher.
pub use ferrovirt_node_contract::pod::PROBE_SUBCOMMAND as SUBCOMMAND;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "virt-launcher probe",
    about = "Probes the guest through its agent (a VMI's exec and guestAgentPing probes)"
)]
#[command(group(clap::ArgGroup::new("check").required(true).args(["guest_agent_ping", "command"])))]
pub struct ProbeArgs {
    /// Per-VMI directory holding the launcher's socket.
    #[arg(long, env = "VIRT_LAUNCHER_VMI_DIR", default_value = VMI_DIR_IN_POD)]
    pub vmi_dir: PathBuf,
    /// How long the guest has to answer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub timeout_seconds: u32,
    /// Ask the guest agent for an answer (`guest-ping`).
    #[arg(long)]
    pub guest_agent_ping: bool,
    /// Run this command in the guest (`guest-exec`), with the arguments after `--`.
    #[arg(long)]
    pub command: Option<String>,
    /// The command's arguments.
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl ProbeArgs {
    /// The request to the launcher.
    pub fn request(&self) -> Request {
        match &self.command {
            Some(command) => Request::GuestExec {
                command_line: std::iter::once(command.clone())
                    .chain(self.args.iter().cloned())
                    .collect(),
                timeout_seconds: self.timeout_seconds,
            },
            None => Request::GuestPing {
                timeout_seconds: self.timeout_seconds,
            },
        }
    }
}

/// Runs the probe: exit code 0 when the guest answered as wanted, 1 otherwise; the reason
/// on stdout, where kubelet takes a failed probe's message from.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("virt-launcher probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // kubelet gives the command one second more than the probe's timeout.
    let limit = Duration::from_secs(u64::from(args.timeout_seconds) + 1);
    let verdict = runtime.block_on(async {
        tokio::time::timeout(limit, ask(args))
            .await
            .unwrap_or_else(|_| Err("the launcher did not answer in time".into()))
    });
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn ask(args: &ProbeArgs) -> Result<(), String> {
    let socket = VmiDir::new(&args.vmi_dir).socket();
    let mut client = LauncherClient::connect(&socket)
        .await
        .map_err(|e| format!("the launcher: {}", ferrovirt_runtime::chain(&e)))?;
    let response = client
        .request(&args.request())
        .await
        .map_err(|e| format!("the launcher: {}", ferrovirt_runtime::chain(&e)))?;
    verdict(response)
}

/// Success, or the reason the probe failed.
fn verdict(response: Response) -> Result<(), String> {
    match response {
        Response::Ok => Ok(()),
        Response::GuestExec(r) if r.succeeded() => Ok(()),
        Response::GuestExec(r) => Err(match (r.exit_code, r.signal) {
            (Some(code), _) => format!("the command in the guest exited with {code}"),
            (None, Some(signal)) => format!("the command in the guest ended by signal {signal}"),
            (None, None) => "the command in the guest did not exit in time".into(),
        }),
        Response::Error(e) => Err(e.message),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use ferrovirt_node_contract::agent::GuestExecResult;

    #[test]
    fn kubevirts_two_forms() {
        let exec = ProbeArgs::try_parse_from([
            "probe",
            "--timeout-seconds",
            "3",
            "--command",
            "cat",
            "--",
            "/proc/uptime",
            "-n",
        ])
        .unwrap();
        assert_eq!(
            exec.request(),
            Request::GuestExec {
                command_line: vec!["cat".into(), "/proc/uptime".into(), "-n".into()],
                timeout_seconds: 3
            }
        );
        let ping = ProbeArgs::try_parse_from(["probe", "--guest-agent-ping"]).unwrap();
        assert_eq!(ping.request(), Request::GuestPing { timeout_seconds: 1 });
        assert!(
            ProbeArgs::try_parse_from(["probe"]).is_err(),
            "one check is required"
        );
        assert!(
            ProbeArgs::try_parse_from(["probe", "--guest-agent-ping", "--timeout-seconds", "0"])
                .is_err()
        );
    }

    #[test]
    fn only_an_answer_or_exit_code_0_passes() {
        assert!(verdict(Response::Ok).is_ok());
        let exited = |c| {
            Response::GuestExec(GuestExecResult {
                exit_code: Some(c),
                signal: None,
            })
        };
        assert!(verdict(exited(0)).is_ok());
        assert_eq!(
            verdict(exited(1)).unwrap_err(),
            "the command in the guest exited with 1"
        );
        assert!(verdict(Response::GuestExec(GuestExecResult::default())).is_err());
    }
}
