//! `chaos`: the soak of issue 12 on this machine. See bench/chaos/README.md.

use std::time::Duration;

use clap::Parser;
use ferrovirt_chaos::{Options, run};
use ferrovirt_runtime::LogFormat;

/// SIGKILL one seeded-random component per cycle on a local cluster running VMs, and
/// count what went wrong. Exits 1 when anything did.
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Args {
    /// Faults to inject.
    #[arg(long, default_value_t = 50)]
    cycles: u32,
    /// Seed of the target choice (default: from the clock; printed in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// VMs: half Always, 30 % RerunOnFailure, the rest Halted.
    #[arg(long, default_value_t = 10)]
    vms: usize,
    /// Seconds the cluster gets to settle after a fault.
    #[arg(long, default_value_t = 240)]
    settle_timeout: u64,
    /// Stop after this many minutes even if cycles remain.
    #[arg(long, default_value_t = 180)]
    time_limit_minutes: u64,
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferrovirt_runtime::init_logging(args.log_format, "info");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let opts = Options {
        seed,
        cycles: args.cycles,
        vms: args.vms,
        settle_timeout: Duration::from_secs(args.settle_timeout),
        time_limit: Duration::from_secs(args.time_limit_minutes * 60),
        ..Options::default()
    };
    tracing::info!(?opts, "chaos soak");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = run(&opts) => report?,
        // Exit normally, so that the harness stops what it started (launcher pods and their
        // QEMU outlive devnode, as containers outlive a kubelet).
        _ = tokio::signal::ctrl_c() => std::process::exit(130),
        _ = term.recv() => std::process::exit(143),
    };
    println!("{report}");
    if report.total_violations() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
