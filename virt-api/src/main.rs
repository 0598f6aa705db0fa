use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = virt_api::args::Args::parse();
    runtime::init_logging(args.log_format, "info");
    if let Err(e) = virt_api::run(args).await {
        tracing::error!(error = %runtime::chain(&e), "virt-api failed");
        return Err(anyhow::anyhow!(runtime::chain(&e)));
    }
    Ok(())
}
