use std::process::ExitCode;

use clap::Parser;
use virt_launcher::args::{Args, init_logging};

fn main() -> ExitCode {
    // `virt-launcher probe ...`: a VMI's exec or guestAgentPing probe, run by kubelet in
    // the compute container.
    if std::env::args().nth(1).as_deref() == Some(virt_launcher::probe::SUBCOMMAND) {
        let args = virt_launcher::probe::ProbeArgs::parse_from(std::env::args().skip(1));
        return virt_launcher::probe::run(&args);
    }
    // `virt-launcher warm-capabilities ...`: the node's capabilities cache filled before
    // the first VM (the virt-handler DaemonSet's init container).
    if std::env::args().nth(1).as_deref() == Some(virt_launcher::capcache::WARM_SUBCOMMAND) {
        let args = virt_launcher::capcache::WarmArgs::parse_from(std::env::args().skip(1));
        init_logging(args.log_format, "info");
        return match virt_launcher::capcache::warm(&args.capabilities_cache) {
            Ok(took) => {
                tracing::info!(?took, dir = %args.capabilities_cache.display(), "QEMU capabilities cached");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "virt-launcher warm-capabilities failed: {}",
                    virt_launcher::chain(&e)
                );
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    init_logging(args.log_format, "info");
    // SAFETY: no other thread runs yet (the runtime starts below).
    unsafe { virt_launcher::user_dirs(&args.vmi_dir) };
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let code = runtime.block_on(virt_launcher::run(args));
            // Do not wait for a client still connected or a libvirt call in flight.
            runtime.shutdown_background();
            Ok(code?)
        });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The last line of the log: the pod's termination message
            // (FallbackToLogsOnError), which virt-controller copies into the VMI's status.
            eprintln!("virt-launcher failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
