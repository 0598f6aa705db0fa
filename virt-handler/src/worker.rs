//! One task per VMI on this node: waits for its launcher, has the domain defined and
//! started (or finds it already running after a handler restart), follows its events
//! into VMI status, and stops the guest when the VMI is deleted.

use std::sync::Arc;
use std::time::Duration;

use crds::VirtualMachineInstance;
use ferrovirt_node_contract::client::{EventStream, LauncherClient};
use ferrovirt_node_contract::pod::DEFAULT_GRACE_SECONDS;
use ferrovirt_node_contract::protocol::Event;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Virtualization;
use crate::context::Context;
use crate::network::status::interfaces as network_status;
use crate::resets::{Change, ResetWindow};
use crate::status::{Observation, RESET_LOOP, RESET_WINDOW_SECONDS};
use crate::{Error, Result, chain};

pub type VmiRx = watch::Receiver<Option<Arc<VirtualMachineInstance>>>;

pub struct Worker {
    pub tx: watch::Sender<Option<Arc<VirtualMachineInstance>>>,
    pub task: JoinHandle<()>,
}

/// How often the launcher's socket is tried until it answers. The VMI comes to the node
/// as soon as the launcher's container runs (virt-controller's `ready_for_node`), about
/// 0.1 s before the launcher listens: a connect that fails costs next to nothing.
const POLL: Duration = Duration::from_millis(50);
/// How often the launcher is asked for the guest's DHCP leases until it has them all.
const LEASE_POLL: Duration = Duration::from_millis(500);

pub fn spawn(ctx: Arc<Context>, vmi: Arc<VirtualMachineInstance>) -> Worker {
    let uid = vmi.uid().unwrap_or_default();
    let span = tracing::info_span!("vmi", ns = %vmi.namespace().unwrap_or_default(), name = %vmi.name_any(), %uid);
    let (tx, rx) = watch::channel(Some(vmi.clone()));
    let task = tokio::spawn(
        async move {
            ctx.metrics.worker_started();
            let mut backoff = crate::watch::Backoff::default();
            let mut changes = rx.clone();
            loop {
                match follow(&ctx, &vmi, rx.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        // An API outage: retry soon, and at once when the VMI changes
                        // (a delete must not wait for the pause).
                        let pause = backoff.next_pause();
                        tracing::warn!(error = %chain(&e), retry_in_ms = pause.as_millis() as u64, "following the VMI failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            changed = changes.changed() => if changed.is_err() {
                                tokio::time::sleep(pause).await;
                            }
                        }
                    }
                }
                if gone(&rx) && !crate::vmi_dir::launcher_alive(&ctx.run_dir.vmi(&uid).socket()).await {
                    break;
                }
            }
            ctx.metrics.worker_ended();
            tracing::info!("no longer following the VMI");
        }
        .instrument(span),
    );
    Worker { tx, task }
}

fn latest(rx: &VmiRx) -> Option<Arc<VirtualMachineInstance>> {
    rx.borrow().clone()
}

/// The VMI is gone or being deleted.
fn deleting(rx: &VmiRx) -> bool {
    latest(rx).is_none_or(|v| v.metadata.deletion_timestamp.is_some())
}

fn is_final(rx: &VmiRx) -> bool {
    latest(rx)
        .and_then(|v| v.status.as_ref().and_then(|s| s.phase))
        .is_some_and(|p| p.is_final())
}

fn gone(rx: &VmiRx) -> bool {
    latest(rx).is_none()
}

/// Runs until the domain has stopped (status written), or the VMI went away before any
/// domain ran. Errors are transient: the caller retries.
async fn follow(ctx: &Arc<Context>, first: &VirtualMachineInstance, mut rx: VmiRx) -> Result<()> {
    let uid = first.uid().unwrap_or_default();
    let socket = ctx.run_dir.vmi(&uid).socket();
    let began = Instant::now();

    // 1. The launcher, once it answers.
    let mut launcher = loop {
        if let Ok(mut c) = LauncherClient::connect(&socket).await
            && c.ping().await.is_ok()
        {
            break c;
        }
        if deleting(&rx) || is_final(&rx) {
            tracing::info!("VMI deleted or finished before its launcher was ready");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = rx.changed() => {}
        }
    };

    // 2. The domain: running already (handler restart), or to be started.
    let mut virtualization = None;
    let interfaces = match launcher.domain_info().await? {
        Some(info) => {
            tracing::info!(state = ?info.state, reason = %info.reason, "domain found; resyncing");
            crate::network::cached_status(
                &first.spec,
                &uid,
                &hostname(first),
                &ctx.run_dir.vmi(&uid).dir,
            )
        }
        None if deleting(&rx) => return Ok(()),
        None => match start(ctx, &rx, &mut launcher, began.elapsed()).await {
            Ok((v, planned)) => {
                virtualization = Some(v);
                planned
            }
            Err(Error::VmiGone) => {
                tracing::info!("VMI gone before its domain was started");
                return Ok(());
            }
            Err(e) if is_permanent(&e) => {
                let reason = e.reason();
                tracing::warn!(reason, error = %chain(&e), "the VMI cannot run");
                ctx.metrics.failure(reason);
                let obs = Observation::Failed {
                    reason: reason.into(),
                    message: chain(&e),
                };
                ctx.write_status(first, &obs).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        },
    };

    // 3. Its events, into status, until it stops.
    let events = LauncherClient::connect(&socket)
        .await?
        .watch_events()
        .await?;
    let running = RunningAs {
        virtualization,
        interfaces,
    };
    follow_events(ctx, first, rx, events, &socket, running).await
}

/// What a Running observation carries besides the phase.
struct RunningAs {
    virtualization: Option<Virtualization>,
    interfaces: Option<crate::network::Planned>,
}

/// The guest's hostname: `spec.hostname`, else the VMI's name.
fn hostname(vmi: &VirtualMachineInstance) -> String {
    vmi.spec.hostname.clone().unwrap_or_else(|| vmi.name_any())
}

/// Whether the error fails the VMI: a spec or node problem, or a launcher answer that
/// asking again cannot help. Any other launcher error (a transient or no-domain answer,
/// the socket) is retried with the worker's backoff.
fn is_permanent(e: &Error) -> bool {
    match e {
        Error::Launcher(e) => e.is_permanent(),
        e => !e.is_transient(),
    }
}

/// Prepares the pod network, the volumes and converts, then asks the launcher to define
/// and start the domain. Logs where the node side spent its time (`launcher_wait_ms` is
/// since the worker started). Returns the interfaces' status when the pod network was
/// prepared.
async fn start(
    ctx: &Arc<Context>,
    rx: &VmiRx,
    launcher: &mut LauncherClient,
    waited: Duration,
) -> Result<(Virtualization, Option<crate::network::Planned>)> {
    let vmi = latest(rx).ok_or(Error::VmiGone)?;
    let t0 = Instant::now();
    let config =
        crate::node::cluster_config(&ctx.client, &ctx.namespace, ctx.use_emulation_default).await?;
    let virtualization = crate::config::decide(&ctx.kvm, config.use_emulation)?;
    crate::downward_metrics::check_gate(&vmi.spec, &config.feature_gates)?;
    crate::domain::check_numa_gate(&vmi.spec, &config.feature_gates)?;
    let host_disks = config.host_disks.resolve_on_node();
    let attachment = prepare_network(ctx, &vmi, launcher, &config.network_bindings).await?;
    let t_net = Instant::now();
    let virtiofs_storage = config
        .feature_gates
        .contains(crate::volumes::virtiofs::STORAGE_FEATURE_GATE);
    let crate::context::PreparedDomain {
        xml,
        host_disks: checked,
        virtiofs,
    } = ctx
        .prepare_domain(
            &vmi,
            virtualization,
            &host_disks,
            virtiofs_storage,
            &attachment,
            launcher.peer().map(|p| p.pid),
        )
        .await?;
    tracing::debug!(%xml, "domain XML");
    let t1 = Instant::now();
    let (dhcp, passt, interfaces) = match attachment {
        crate::network::Attachment::Pod(plan) => {
            let passt =
                crate::network::passt(&plan, &ctx.launcher_dir(&vmi.uid().unwrap_or_default()));
            (plan.dhcp, passt, Some(plan.status))
        }
        crate::network::Attachment::UserMode => (Vec::new(), Vec::new(), None),
    };
    // With host disks, QEMU starts paused: the guest runs only once the files QEMU opened
    // are the ones checked (a path swapped for a symbolic link in between is caught).
    // `startStrategy: Paused` starts it paused for the user: it stays so until unpaused.
    let start_paused = vmi.spec.start_strategy == Some(crds::StartStrategy::Paused);
    // Realtime vCPUs get their policy before the guest runs (realtime.rs), so QEMU starts
    // paused for them too.
    let realtime = vmi
        .spec
        .domain
        .cpu
        .as_ref()
        .is_some_and(|c| c.realtime.is_some());
    let info = launcher
        .define_and_start_net(
            &xml,
            (!checked.is_empty() || realtime) && !start_paused,
            start_paused,
            dhcp,
            passt,
            virtiofs,
        )
        .await?;
    if !checked.is_empty() {
        verify_host_disks(launcher, &checked, !start_paused && !realtime).await?;
    }
    if realtime {
        set_realtime(launcher, &vmi, !start_paused).await?;
    }
    let launcher_dir = ctx.launcher_dir(&vmi.uid().unwrap_or_default());
    if let Some((disk, channel)) = crate::downward_metrics::wanted(&vmi.spec, &launcher_dir) {
        launcher
            .downward_metrics(&ctx.node, disk.as_deref(), channel.as_deref())
            .await?;
    }
    let t2 = Instant::now();
    ctx.metrics.domain_started(waited + (t2 - t0));
    tracing::info!(
        state = ?info.state, qemu_pid = ?info.qemu_pid, ?virtualization,
        launcher_wait_ms = waited.as_millis() as u64,
        prepare_ms = (t1 - t0).as_millis() as u64,
        network_ms = (t_net - t0).as_millis() as u64,
        define_and_start_ms = (t2 - t1).as_millis() as u64,
        "domain started"
    );
    Ok((virtualization, interfaces))
}

/// The pod network in the launcher's network namespace (network/), found through the
/// launcher's pid from SO_PEERCRED; user-mode networking when the launcher shares ours.
async fn prepare_network(
    ctx: &Arc<Context>,
    vmi: &VirtualMachineInstance,
    launcher: &LauncherClient,
    registered: &std::collections::BTreeSet<String>,
) -> Result<crate::network::Attachment> {
    if vmi.spec.domain.devices.interfaces.is_empty() {
        return Ok(crate::network::Attachment::UserMode);
    }
    let Some(peer) = launcher.peer() else {
        return Err(Error::Network {
            message: "the launcher's pid is not visible from virt-handler's PID namespace \
                      (virt-handler needs hostPID)"
                .into(),
        });
    };
    let spec = vmi.spec.clone();
    let uid = vmi.uid().unwrap_or_default();
    let hostname = hostname(vmi);
    let dir = ctx.run_dir.vmi(&uid).dir;
    let registered = registered.clone();
    tokio::task::spawn_blocking(move || {
        crate::network::prepare(&crate::network::Target {
            spec: &spec,
            uid: &uid,
            hostname: &hostname,
            pid: peer.pid,
            owner: peer.uid,
            vmi_dir: &dir,
            registered: &registered,
        })
    })
    .await?
}

/// Every checked host disk must be among QEMU's open files; then the guest may run.
/// Otherwise the domain is destroyed and the VMI fails naming the volume's path.
async fn verify_host_disks(
    launcher: &mut LauncherClient,
    checked: &[(usize, crate::volumes::hostdisk::FileId)],
    then_run: bool,
) -> Result<()> {
    let open = launcher.open_files().await?;
    let missing = checked
        .iter()
        .find(|(_, id)| !open.iter().any(|f| f.dev == id.dev && f.ino == id.ino));
    if let Some((index, _)) = missing {
        tracing::warn!(
            index,
            "QEMU opened another file than the checked host disk; destroying the domain"
        );
        if let Err(e) = launcher.destroy().await {
            tracing::warn!(error = %chain(&Error::from(e)), "destroy failed");
        }
        return Err(Error::unsupported(
            format!("spec.volumes[{index}].hostDisk.path"),
            "the file changed between the handler's check and QEMU's open (a path component \
             replaced?); refused",
        ));
    }
    if then_run {
        launcher.unpause().await?;
    }
    Ok(())
}

/// SCHED_FIFO for the realtime vCPUs of the paused guest, then runs it when `then_run`. A
/// refusal destroys the domain: the VMI fails naming `spec.domain.cpu.realtime`.
async fn set_realtime(
    launcher: &mut LauncherClient,
    vmi: &VirtualMachineInstance,
    then_run: bool,
) -> Result<()> {
    let Some(pid) = launcher.peer().map(|p| p.pid) else {
        return Err(Error::unsupported(
            "spec.domain.cpu.realtime",
            "the launcher's pid is not visible from virt-handler's PID namespace \
             (virt-handler needs hostPID)",
        ));
    };
    let spec = vmi.spec.clone();
    let set = tokio::task::spawn_blocking(move || crate::realtime::apply(&spec, pid)).await?;
    if let Err(e) = set {
        tracing::warn!(error = %e, "realtime vCPUs refused; destroying the domain");
        if let Err(d) = launcher.destroy().await {
            tracing::warn!(error = %chain(&Error::from(d)), "destroy failed");
        }
        return Err(e);
    }
    if then_run {
        launcher.unpause().await?;
    }
    Ok(())
}

/// Follows the event stream; on deletion presses the power button, and destroys the
/// domain when the grace period has passed.
async fn follow_events(
    ctx: &Arc<Context>,
    first: &VirtualMachineInstance,
    mut rx: VmiRx,
    mut events: EventStream,
    socket: &std::path::Path,
    running: RunningAs,
) -> Result<()> {
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut destroy_at = far;
    let mut resets = ResetWindow::default();
    let mut stopping = false;
    let mut destroyed = false;
    let mut agent = crate::agent::watch(socket).await;
    // The addresses appear once the guest holds its DHCP lease (network/status.rs): the
    // launcher is asked for its leases until every pod-network interface has one.
    let planned = running.interfaces.clone();
    let mut shown = match &planned {
        // A handler restart finds the lease taken already: shown at once.
        Some(p) => Some(network_status(p, &leases(socket).await)),
        None => None,
    };
    let mut domain_running = false;
    let mut lease_poll = tokio::time::interval(LEASE_POLL);
    // The guest agent's interfaces, merged into what `shown` has (network/status.rs).
    let mut guest_ifaces = Vec::new();
    let uid = first.uid().unwrap_or_default();
    let merged = |shown: &Option<Vec<crds::VirtualMachineInstanceNetworkInterface>>,
                  guest: &[ferrovirt_node_contract::agent::GuestInterface]| {
        if shown.is_none() && guest.is_empty() {
            return None;
        }
        let base = shown
            .clone()
            .unwrap_or_else(|| crate::status::interfaces(&first.spec, &uid));
        Some(crate::network::status::with_agent(base, guest, &first.spec))
    };
    loop {
        if deleting(&rx) && !stopping {
            stopping = true;
            let grace = latest(&rx)
                .and_then(|v| v.spec.termination_grace_period_seconds)
                .or(first.spec.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS)
                .max(0) as u64;
            destroy_at = Instant::now() + Duration::from_secs(grace);
            tracing::info!(grace, "VMI deleted: asking the guest to power off (ACPI)");
            if grace > 0
                && let Err(e) = request(socket, Req::Shutdown).await
            {
                tracing::warn!(error = %chain(&e), "ACPI shutdown request failed");
            }
        }
        tokio::select! {
            event = events.next() => {
                let obs = match event {
                    Ok(Some(Event::Started | Event::Resumed)) => {
                        domain_running = true;
                        Observation::Running {
                            virtualization: running.virtualization,
                            interfaces: merged(&shown, &guest_ifaces),
                        }
                    }
                    Ok(Some(Event::Paused)) => {
                        domain_running = false;
                        Observation::Paused
                    }
                    Ok(Some(Event::Rebooted { count })) => {
                        let change = resets.reset(count, Instant::now());
                        tracing::info!(total = resets.total(), ?change, "the guest reset itself");
                        if change == Change::LoopStarted {
                            ctx.warn(first, "GuestResetLoop", format!(
                                "the guest reset itself {} times within {} s ({} since it started): \
                                 it is probably crashing while it boots; its serial console shows why",
                                RESET_LOOP, RESET_WINDOW_SECONDS, resets.total()
                            )).await;
                        }
                        resets.observation()
                    }
                    Ok(Some(Event::Stopped { reason })) => {
                        tracing::info!(?reason, "domain stopped");
                        let obs = Observation::Stopped { reason, deleting: stopping || deleting(&rx) };
                        ctx.write_status(first, &obs).await?;
                        return Ok(());
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!(?event, "launcher went away without reporting a stop");
                        ctx.write_status(first, &Observation::LauncherGone { deleting: stopping || deleting(&rx) }).await?;
                        return Ok(());
                    }
                };
                ctx.write_status(first, &obs).await?;
            }
            changed = rx.changed(), if !stopping => {
                if changed.is_err() {
                    // The controller dropped us (shutting down): leave the guest alone.
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(resets.quiet_at().unwrap_or(far)), if resets.quiet_at().is_some() => {
                if resets.tick(Instant::now()).is_some() {
                    tracing::info!(total = resets.total(), "the guest stopped resetting");
                    ctx.write_status(first, &resets.observation()).await?;
                }
            }
            _ = lease_poll.tick(), if domain_running && !stopping && shown.as_ref() != planned.as_ref().map(|p| &p.entries) => {
                let Some(planned) = &planned else { continue };
                let leases = leases(socket).await;
                let now = network_status(planned, &leases);
                if shown.as_ref() != Some(&now) {
                    tracing::info!(?leases, "the guest took its DHCP lease");
                    shown = Some(now);
                    let list = merged(&shown, &guest_ifaces).unwrap_or_default();
                    ctx.write_status(first, &Observation::Interfaces(list)).await?;
                }
            }
            state = crate::agent::next(&mut agent), if agent.is_some() => match state {
                Some(state) => {
                    let changed = state.interfaces != guest_ifaces;
                    guest_ifaces = state.interfaces.clone();
                    ctx.write_status(first, &Observation::Agent(state)).await?;
                    if changed && domain_running && let Some(list) = merged(&shown, &guest_ifaces) {
                        tracing::info!(interfaces = ?guest_ifaces, "the guest agent reports its interfaces");
                        ctx.write_status(first, &Observation::Interfaces(list)).await?;
                    }
                }
                None => agent = None,
            },
            _ = tokio::time::sleep_until(destroy_at), if stopping && !destroyed => {
                tracing::warn!("grace period over: destroying the domain");
                destroyed = true;
                if let Err(e) = request(socket, Req::Destroy).await {
                    tracing::warn!(error = %chain(&e), "destroy request failed");
                }
            }
        }
    }
}

/// The launcher's DHCP leases; none when it cannot be asked (asked again later).
async fn leases(socket: &std::path::Path) -> Vec<ferrovirt_node_contract::protocol::Lease> {
    let asked = async { LauncherClient::connect(socket).await?.leases().await };
    asked.await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "asking for the DHCP leases");
        Vec::new()
    })
}

enum Req {
    Shutdown,
    Destroy,
}

/// One request on its own connection (the event stream holds the other).
async fn request(socket: &std::path::Path, req: Req) -> Result<()> {
    let mut c = LauncherClient::connect(socket).await?;
    match req {
        Req::Shutdown => c.shutdown().await?,
        Req::Destroy => c.destroy().await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_node_contract::protocol::FailureKind;

    fn launcher(kind: FailureKind) -> Error {
        Error::Launcher(ferrovirt_node_contract::Error::Remote {
            kind,
            message: "m".into(),
        })
    }

    #[test]
    fn only_a_permanent_launcher_answer_or_a_spec_problem_fails_the_vmi() {
        assert!(is_permanent(&launcher(FailureKind::Permanent)));
        assert!(!is_permanent(&launcher(FailureKind::Transient)), "retried");
        assert!(!is_permanent(&launcher(FailureKind::NoDomain)), "retried");
        assert!(
            !is_permanent(&Error::Launcher(ferrovirt_node_contract::Error::Closed)),
            "a socket problem is retried"
        );
        assert!(is_permanent(&Error::unsupported("spec.x", "no")));
    }
}
