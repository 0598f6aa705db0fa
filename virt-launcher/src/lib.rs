//! virt-launcher: one per VMI, in its pod. Hosts an embedded libvirt for its one VM,
//! serves a command socket for virt-handler, and exits with the guest's outcome.
//!
//! The socket protocol, its client and the per-VMI directory's layout are in
//! `ferrovirt-node-contract` (node-contract/), which virt-handler uses without libvirt.

mod agent;
pub mod args;
pub mod capcache;
mod dhcp;
mod downward_metrics;
mod error;
mod eventloop;
mod events;
mod guard;
mod helpers;
mod hypervisor;
mod lifecycle;
mod nonroot;
mod passt;
pub mod probe;
pub mod seriallog;
mod server;
mod supervisor;
mod virtiofs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_node_contract::paths::VmiDir;
// The wire types, reached as `crate::protocol` by the server, supervisor and hypervisor.
use ferrovirt_node_contract::protocol;

pub use args::Args;
pub use error::{Error, Result};
pub use nonroot::user_dirs;

use events::EventLog;
use guard::ExitGuard;
use hypervisor::Hypervisor;
use supervisor::Supervisor;

/// How long the launcher keeps serving after the domain stopped, so the handler reads
/// the final event and state.
const DRAIN: Duration = Duration::from_secs(1);

/// Runs the launcher to its end; returns the process exit code.
pub async fn run(args: Args) -> Result<u8> {
    tracing::info!(
        namespace = %args.vmi_namespace, name = %args.vmi_name, uid = %args.vmi_uid,
        dir = %args.vmi_dir.display(), "virt-launcher starting"
    );
    guard::set_child_subreaper()?;
    let paths = VmiDir::new(&args.vmi_dir);
    std::fs::create_dir_all(&paths.dir).map_err(Error::io("creating", &paths.dir))?;
    nonroot::wait_writable(&paths.dir, nonroot::HANDOVER_WAIT).await?;
    // A launcher killed with -9 leaves its ready file: not ready until the socket listens.
    let _ = std::fs::remove_file(paths.ready());

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let root = paths.libvirt_root();
    if let Some(shared) = &args.capabilities_cache {
        capcache::seed(shared, &root);
    }
    let hv_root = root.clone();
    let hv = Arc::new(tokio::task::spawn_blocking(move || Hypervisor::open(&hv_root, tx)).await??);
    let destroy = hv.clone();
    let _guard = ExitGuard::new(
        move || destroy.destroy_all(),
        vec![paths.ready(), paths.socket()],
        Some(paths.container_disks()),
    );

    let log = Arc::new(EventLog::default());
    let agent = agent::Agent::start(hv.connection(), hv.clone())?;
    let listener = server::bind(&paths.socket())?;
    tokio::spawn(server::serve(listener, hv.clone(), log.clone(), agent));
    tokio::spawn(guard::reap_qemu_zombies());
    tokio::spawn(seriallog::keep_capped(
        paths.serial_log(),
        args.serial_log_max_bytes,
    ));
    tokio::spawn(probe_capabilities(
        hv.clone(),
        root,
        args.capabilities_cache.clone(),
    ));
    std::fs::write(paths.ready(), b"").map_err(Error::io("writing", paths.ready()))?;
    tracing::info!(socket = %paths.socket().display(), "ready");

    let grace = Duration::from_secs(args.grace_period_seconds);
    let outcome = Supervisor::new(hv, log, rx, grace).run().await?;
    let code = outcome.exit_code();
    tracing::info!(?outcome, code, "domain done; draining before exit");
    tokio::time::sleep(DRAIN).await;
    Ok(code)
}

/// Probes QEMU while the handler has not asked for anything yet, then shares the result.
async fn probe_capabilities(hv: Arc<Hypervisor>, root: PathBuf, shared: Option<PathBuf>) {
    let probed = tokio::task::spawn_blocking(move || {
        capcache::probe_and_share(&hv, &root, shared.as_deref())
    })
    .await;
    match probed {
        Ok(Ok(took)) => tracing::info!(?took, "QEMU capabilities ready"),
        Ok(Err(e)) => tracing::warn!(error = %chain(&e), "probing QEMU capabilities"),
        Err(e) => tracing::warn!(error = %e, "probing QEMU capabilities"),
    }
}

/// An error and its sources, `: `-separated, for one log line or one `{"error":..}`.
pub use ferrovirt_runtime::chain;
