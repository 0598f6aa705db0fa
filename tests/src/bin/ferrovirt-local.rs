//! Starts the same control plane as the tests, detached, in a fixed directory
//! (`hack/local-up.sh` runs `ferrovirt-local up --dir .ferrovirt`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ferrovirt_tests::{Assets, ControlPlane, Supervision};

#[derive(Parser)]
#[command(
    about = "Ferrovirt's local control plane (etcd, kube-apiserver, controller manager, scheduler)"
)]
struct Args {
    /// Directory for the PKI, etcd data, logs, pid files and kubeconfig.
    #[arg(
        long,
        env = "FERROVIRT_LOCAL_DIR",
        default_value = ".ferrovirt",
        global = true
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the control plane in the background, install the CRDs, print the environment.
    Up,
    /// Say whether it is running.
    Status,
}

const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(ferrovirt_tests::DEFAULT_LOG_FILTER)
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let running: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|c| running(&dir, c))
        .collect();

    match args.command {
        Cmd::Status => {
            for c in COMPONENTS {
                println!(
                    "{c}: {}",
                    if running.contains(&c) {
                        "running"
                    } else {
                        "stopped"
                    }
                );
            }
            if running.len() != COMPONENTS.len() {
                std::process::exit(1);
            }
        }
        Cmd::Up => {
            if running.len() == COMPONENTS.len() {
                tracing::info!("control plane already running in {}", dir.display());
                // Brings the CRDs and admission policies of this checkout to the cluster.
                let client = ferrovirt_tests::client_from(&dir.join("kubeconfig")).await?;
                ferrovirt_tests::install_api(&client).await?;
            } else if !running.is_empty() {
                bail!(
                    "part of the control plane is running ({}); run hack/local-down.sh first",
                    running.join(", ")
                );
            } else {
                let cp = ControlPlane::start(&dir, Supervision::Detached).await?;
                // Dropping a detached control plane leaves its processes running.
                tracing::info!(server = cp.server(), "control plane up");
            }
            let assets = Assets::locate()?;
            println!("export KUBECONFIG={}", dir.join("kubeconfig").display());
            println!("export PATH={}:$PATH", assets.dir().display());
        }
    }
    Ok(())
}

/// Whether `<dir>/pids/<component>.pid` names a live process that runs in `dir` (the
/// working directory of every process local-up starts; guards against a reused pid).
fn running(dir: &std::path::Path, component: &str) -> bool {
    let Ok(pid) = std::fs::read_to_string(dir.join("pids").join(format!("{component}.pid"))) else {
        return false;
    };
    std::fs::read_link(format!("/proc/{}/cwd", pid.trim())).is_ok_and(|cwd| cwd == dir)
}
