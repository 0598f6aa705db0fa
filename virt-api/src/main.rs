//! virt-api: Ferrovirt's admission webhooks (defaulting and validation of VirtualMachines
//! and VirtualMachineInstances) and the `subresources.kubevirt.io/v1` aggregated API
//! (start, stop, restart, pause, unpause, console, vnc).
//!
//! Not built yet: the CRD schema in `crds/` is today's only admission layer. This binary
//! says so and exits non-zero, so nothing mistakes it for a working server.

use clap::Parser;

/// Ferrovirt's admission webhooks and subresource API server (not implemented yet).
#[derive(Parser, Debug)]
#[command(name = "virt-api", version, about, long_about = None)]
struct Args {
    /// Log format: plain or json.
    #[arg(long, env = "VIRT_API_LOG_FORMAT", default_value = "plain")]
    log_format: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if args.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    tracing::error!("virt-api is not implemented yet: webhooks and subresources come in a later issue");
    std::process::ExitCode::from(2)
}
