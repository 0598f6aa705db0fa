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
