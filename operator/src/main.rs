//! `operator`: Ferrovirt's VM and VMI controllers. Everything lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = operator::Args::parse();
    operator::telemetry::init(args.log_format);
    operator::run(args).await?;
    Ok(())
}
