use std::process::ExitCode;

use clap::Parser;
use virt_launcher::args::{Args, init_logging};

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    init_logging(args.log_format, "info");
    let runtime = tokio::runtime::Runtime::new()?;
    let code = runtime.block_on(virt_launcher::run(args))?;
    // Do not wait for a client still connected or a libvirt call in flight.
    runtime.shutdown_background();
    Ok(ExitCode::from(code))
}
