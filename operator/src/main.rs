//! `operator`: Ferrovirt's VM, VMI, replica set and pool controllers. Everything lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = virt_controller::Args::parse();
    ferrovirt_runtime::init_logging(args.log_format, "info");
    virt_controller::run(args).await?;
    Ok(())
}
