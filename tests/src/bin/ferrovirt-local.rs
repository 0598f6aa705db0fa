//! Starts the same control plane as the tests, detached, in a fixed directory
//! (`hack/local-up.sh` runs `ferrovirt-local up --dir .ferrovirt`), registers and starts
//! virt-api on it the way the tests do (`ferrovirt-local virt-api`), and starts devnode,
//! virt-controller and virt-handler with the tests' own commands (`ferrovirt-local node`,
//! `hack/local-up.sh --dev`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ferrovirt_tests::aggregation::{self, Cluster};
use ferrovirt_tests::{Assets, ControlPlane, Preinstall, Supervision};

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
    Up {
        /// Install nothing of Ferrovirt (no CRDs, no admission policies): `helm install`
        /// brings them, as on a user's cluster (hack/local-up.sh without --dev).
        #[arg(long)]
        bare: bool,
    },
    /// Say whether it is running.
    Status,
    /// Install deploy/rbac, register virt-api as the aggregated server of
    /// subresources.kubevirt.io and start it detached (pid file `pids/virt-api.pid`),
    /// unless it already runs; returns once the APIServices are Available.
    VirtApi {
        /// virt-api's HTTPS port on 127.0.0.1 (the APIServices name it).
        #[arg(long, default_value_t = 18445)]
        port: u16,
        /// virt-api's /metrics and /healthz port on 127.0.0.1.
        #[arg(long, default_value_t = 18446)]
        metrics_port: u16,
    },
    /// Start devnode as node NAME, fill its QEMU capabilities cache, and start
    /// virt-controller and virt-handler for it, detached (pid files `pids/<component>.pid`),
    /// each unless it already runs: the commands the tests' devnode stacks start.
    Node {
        /// The Node's name.
        #[arg(long)]
        name: String,
        /// The node's run dir (per-VMI directories, capabilities cache).
        #[arg(long, default_value = "/var/run/ferrovirt")]
        run_dir: PathBuf,
        /// virt-controller's /metrics and /healthz port on 127.0.0.1.
        #[arg(long, default_value_t = 18443)]
        controller_metrics_port: u16,
        /// virt-handler's /metrics and /healthz port on 127.0.0.1.
        #[arg(long, default_value_t = 18444)]
        handler_metrics_port: u16,
        /// virt-handler's server for virt-api on 127.0.0.1.
        #[arg(long, default_value_t = 18186)]
        handler_server_port: u16,
    },
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
        Cmd::Up { bare } => {
            if running.len() == COMPONENTS.len() {
                tracing::info!("control plane already running in {}", dir.display());
                if !bare {
                    // Brings the CRDs and admission policies of this checkout to the cluster.
                    let client = ferrovirt_tests::client_from(&dir.join("kubeconfig")).await?;
                    ferrovirt_tests::install_api(&client).await?;
                }
            } else if !running.is_empty() {
                bail!(
                    "part of the control plane is running ({}); run hack/local-down.sh first",
                    running.join(", ")
                );
            } else {
                let preinstall = if bare {
                    Preinstall::Nothing
                } else {
                    Preinstall::FerrovirtApi
                };
                let cp = ControlPlane::start_with(&dir, Supervision::Detached, preinstall).await?;
                // Dropping a detached control plane leaves its processes running.
                tracing::info!(server = cp.server(), "control plane up");
            }
            let assets = Assets::locate()?;
            println!("export KUBECONFIG={}", dir.join("kubeconfig").display());
            println!("export PATH={}:$PATH", assets.dir().display());
        }
        Cmd::VirtApi { port, metrics_port } => {
            if running.len() != COMPONENTS.len() {
                bail!("the control plane is not running; run hack/local-up.sh");
            }
            let cluster = Cluster::from_dir(&dir)?;
            // RBAC and APIServices are re-applied every time, so a changed checkout (or a
            // changed port) takes effect.
            let kubeconfig = aggregation::register(&cluster, port).await?;
            let client = ferrovirt_tests::client_from(&dir.join("kubeconfig")).await?;
            let process = ensure_running(
                &dir,
                "virt-api",
                aggregation::virt_api_command(&kubeconfig, port, metrics_port),
            )?;
            aggregation::wait_available(&client, &process).await?;
            tracing::info!(port, "virt-api Available");
            // Its admission webhooks, only now that it answers (failurePolicy: Fail).
            ferrovirt_tests::webhooks::register_on(&cluster, &client, port, &process.log).await?;
            tracing::info!(port, "virt-api's admission webhooks answer");
        }
        Cmd::Node {
            name,
            run_dir,
            controller_metrics_port,
            handler_metrics_port,
            handler_server_port,
        } => {
            if running.len() != COMPONENTS.len() {
                bail!("the control plane is not running; run hack/local-up.sh");
            }
            let kubeconfig = dir.join("kubeconfig");
            let state_dir = dir.join("devnode");
            ensure_running(
                &dir,
                "devnode",
                ferrovirt_tests::devnode_command(&kubeconfig, &name, &state_dir, None),
            )?;
            ensure_running(
                &dir,
                "virt-controller",
                ferrovirt_tests::virt_controller_command(
                    &kubeconfig,
                    &run_dir,
                    controller_metrics_port,
                ),
            )?;
            if pid_of(&dir, "virt-handler").is_none() {
                // As the chart's virt-handler init container: the first VM then does not
                // wait about 4 s for libvirt's probe (docs/boot-time.md).
                tracing::info!("filling the node's QEMU capabilities cache");
                let log = dir.join("logs").join("warm-capabilities.log");
                ferrovirt_tests::warm_capabilities(&run_dir, log)?.await?;
            }
            ensure_running(
                &dir,
                "virt-handler",
                ferrovirt_tests::virt_handler_command(
                    &kubeconfig,
                    &name,
                    &run_dir,
                    handler_metrics_port,
                    handler_server_port,
                ),
            )?;
        }
    }
    Ok(())
}

/// The running `component` of `dir` (its pid file), or `cmd` started now, detached, in
/// `dir` (local-down.sh stops what runs there), logging to `logs/<component>.log`.
fn ensure_running(
    dir: &std::path::Path,
    component: &str,
    mut cmd: std::process::Command,
) -> anyhow::Result<ferrovirt_tests::Process> {
    let log = dir.join("logs").join(format!("{component}.log"));
    if let Some(pid) = pid_of(dir, component) {
        tracing::info!(pid, "{component} already running");
        return Ok(ferrovirt_tests::Process {
            name: component.into(),
            pid,
            log,
        });
    }
    cmd.current_dir(dir);
    let process = ferrovirt_tests::spawn_detached(component, cmd, &log, &dir.join("pids"))?;
    tracing::info!(pid = process.pid, log = %log.display(), "{component} started");
    Ok(process)
}

/// Whether `<dir>/pids/<component>.pid` names a live process that runs in `dir` (the
/// working directory of every process local-up starts; guards against a reused pid).
fn running(dir: &std::path::Path, component: &str) -> bool {
    pid_of(dir, component).is_some()
}

/// The pid of `<dir>/pids/<component>.pid` when that process runs in `dir`.
fn pid_of(dir: &std::path::Path, component: &str) -> Option<u32> {
    let pid = std::fs::read_to_string(dir.join("pids").join(format!("{component}.pid"))).ok()?;
    let pid: u32 = pid.trim().parse().ok()?;
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .is_ok_and(|cwd| cwd == dir)
        .then_some(pid)
}
