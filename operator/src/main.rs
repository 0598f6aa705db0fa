//! `operator`: Ferrovirt's VM and VMI controllers. Everything lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = virt_controller::Args::parse();
    ferrovirt_runtime::init_logging(args.log_format, "info");
    virt_controller::run(args).await?;
    Ok(())
}
