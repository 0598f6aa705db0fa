use std::process::ExitCode;

use clap::Parser;
use virt_handler::args::{Args, Command, init_logging};

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Some(Command::ProbeKvm { device }) => Ok(virt_handler::kvm::probe_main(&device)),
        None => {
            init_logging(args.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(virt_handler::controller::run(args.run))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
