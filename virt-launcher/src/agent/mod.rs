//! The QEMU guest agent (docs/guest-agent.md): libvirt's agent lifecycle events say when
//! the guest's qemu-ga opened or closed its channel; while it is connected the launcher
//! asks it for the OS and the interfaces (virDomainQemuAgentCommand), at once and then
//! every [`POLL`], and publishes the result as an [`AgentState`] that virt-handler
//! follows (`watch_agent`). `guest_agent_info`, `guest_users` and `guest_filesystems` ask
//! the agent when they are requested.

mod exec;
mod parse;

use std::os::raw::{c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_node_contract::agent::{
    AgentState, GuestAgentInfo, GuestExecResult, GuestFilesystem, GuestFsInfo, GuestUser,
    INFO_LIST_LIMIT,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use virt::connect::Connect;
use virt::sys;

use crate::hypervisor::Hypervisor;
use crate::{Error, Result};

/// How often a connected agent is asked again (KubeVirt's default for the OS and
/// interfaces is 10 s too).
const POLL: Duration = Duration::from_secs(10);
/// Until the agent answered once: it may open its channel before it serves commands.
const RETRY: Duration = Duration::from_secs(1);

/// What libvirt's agent lifecycle event said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Connected,
    Disconnected,
}

pub struct Agent {
    hv: Arc<Hypervisor>,
    state: watch::Sender<AgentState>,
}

impl Agent {
    /// Subscribes to the agent lifecycle events of `conn` and follows them.
    pub fn start(conn: &Connect, hv: Arc<Hypervisor>) -> Result<Arc<Agent>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        register(conn, tx)?;
        let agent = Arc::new(Agent {
            hv,
            state: watch::channel(AgentState::default()).0,
        });
        tokio::spawn(follow(agent.clone(), rx));
        Ok(agent)
    }

    /// The current state and each change.
    pub fn subscribe(&self) -> watch::Receiver<AgentState> {
        self.state.subscribe()
    }

    /// KubeVirt's `guestosinfo` answer, asked of the agent now.
    pub async fn info(&self) -> Result<GuestAgentInfo> {
        let hv = self.connected()?;
        tokio::task::spawn_blocking(move || {
            let ask = |c: &str| hv.agent_command(c);
            let (version, supported_commands) = parse::info(&ask("guest-info")?)?;
            let mut users = parse::users(&ask("guest-get-users")?)?;
            users.truncate(INFO_LIST_LIMIT);
            let mut disks = parse::filesystems(&ask("guest-get-fsinfo")?)?;
            disks.truncate(INFO_LIST_LIMIT);
            Ok(GuestAgentInfo {
                version,
                supported_commands,
                hostname: Some(parse::host_name(&ask("guest-get-host-name")?)?),
                os: parse::os_info(&ask("guest-get-osinfo")?)?,
                timezone: Some(parse::timezone(&ask("guest-get-timezone")?)?),
                user_list: users,
                fs_info: GuestFsInfo { disks },
            })
        })
        .await?
    }

    pub async fn users(&self) -> Result<Vec<GuestUser>> {
        let hv = self.connected()?;
        tokio::task::spawn_blocking(move || parse::users(&hv.agent_command("guest-get-users")?))
            .await?
    }

    pub async fn filesystems(&self) -> Result<Vec<GuestFilesystem>> {
        let hv = self.connected()?;
        tokio::task::spawn_blocking(move || {
            parse::filesystems(&hv.agent_command("guest-get-fsinfo")?)
        })
        .await?
    }

    /// `guest-ping` within `timeout_seconds` (a `guestAgentPing` probe).
    pub async fn ping(&self, timeout_seconds: u32) -> Result<()> {
        let hv = self.connected()?;
        tokio::task::spawn_blocking(move || exec::ping(&hv, timeout_seconds)).await?
    }

    /// Runs a command in the guest, waiting at most `timeout_seconds` (an `exec` probe).
    pub async fn exec(
        &self,
        command_line: Vec<String>,
        timeout_seconds: u32,
    ) -> Result<GuestExecResult> {
        let hv = self.connected()?;
        tokio::task::spawn_blocking(move || exec::exec(&hv, &command_line, timeout_seconds)).await?
    }

    fn connected(&self) -> Result<Arc<Hypervisor>> {
        if self.state.borrow().connected {
            Ok(self.hv.clone())
        } else {
            Err(Error::Agent("the guest agent is not connected".into()))
        }
    }

    /// The OS and interfaces, asked now; `None` when the agent did not answer.
    async fn poll(&self) -> Option<AgentState> {
        let hv = self.hv.clone();
        let asked = tokio::task::spawn_blocking(move || -> Result<AgentState> {
            let os = parse::os_info(&hv.agent_command("guest-get-osinfo")?)?;
            let interfaces = parse::interfaces(&hv.agent_command("guest-network-get-interfaces")?)?;
            Ok(AgentState {
                connected: true,
                os: Some(os),
                interfaces,
            })
        })
        .await;
        match asked.map_err(Error::from).and_then(|r| r) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::info!(error = %crate::chain(&e), "asking the guest agent failed");
                None
            }
        }
    }
}

/// Follows lifecycle events and polls while connected.
async fn follow(agent: Arc<Agent>, mut events: UnboundedReceiver<Lifecycle>) {
    let mut connected = false;
    let mut answered = false;
    loop {
        let wait = if answered { POLL } else { RETRY };
        tokio::select! {
            event = events.recv() => match event {
                Some(Lifecycle::Connected) => {
                    tracing::info!("guest agent connected");
                    connected = true;
                    answered = false;
                    agent.state.send_if_modified(|s| !std::mem::replace(&mut s.connected, true));
                }
                Some(Lifecycle::Disconnected) => {
                    if connected {
                        tracing::info!("guest agent disconnected");
                    }
                    connected = false;
                    agent.state.send_if_modified(|s| std::mem::replace(&mut s.connected, false));
                    continue;
                }
                None => return,
            },
            _ = tokio::time::sleep(wait), if connected => {}
        }
        if !connected {
            continue;
        }
        if let Some(new) = agent.poll().await {
            answered = true;
            // A disconnect may have come in while asking: its event is handled next.
            agent.state.send_if_modified(|s| {
                let changed = *s != new;
                *s = new;
                changed
            });
        }
    }
}

/// libvirt's VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE for every domain of `conn`.
fn register(conn: &Connect, tx: UnboundedSender<Lifecycle>) -> Result<()> {
    let cb: sys::virConnectDomainEventAgentLifecycleCallback = Some(on_agent_lifecycle);
    // SAFETY: as for the lifecycle callback (crate::lifecycle): libvirt calls it with its
    // own signature although the register function takes the generic type.
    let generic: sys::virConnectDomainEventGenericCallback = unsafe { std::mem::transmute(cb) };
    crate::lifecycle::register_one(conn, sys::VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, generic, tx)
}

unsafe extern "C" fn on_agent_lifecycle(
    _conn: sys::virConnectPtr,
    _dom: sys::virDomainPtr,
    state: c_int,
    reason: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: opaque is the sender registered above, alive until libvirt frees it.
    let tx = unsafe { &*(opaque as *const UnboundedSender<Lifecycle>) };
    tracing::debug!(state, reason, "libvirt agent lifecycle event");
    let event = match state as u32 {
        sys::VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED => Lifecycle::Connected,
        _ => Lifecycle::Disconnected,
    };
    let _ = tx.send(event);
}
