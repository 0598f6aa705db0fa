//! A small async client of the launcher's command socket, for virt-handler and tests.
//!
//! ```no_run
//! # async fn f() -> ferrovirt_node_contract::Result<()> {
//! use ferrovirt_node_contract::client::LauncherClient;
//! let mut launcher = LauncherClient::connect("/var/run/ferrovirt/vmis/UID/launcher.sock").await?;
//! let info = launcher.define_and_start("<domain type='qemu'>...</domain>").await?;
//! let mut events = LauncherClient::connect("/var/run/ferrovirt/vmis/UID/launcher.sock")
//!     .await?
//!     .watch_events()
//!     .await?;
//! while let Some(event) = events.next().await? { /* ... */ }
//! # Ok(()) }
//! ```

use std::path::Path;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::agent::{AgentState, GuestAgentInfo, GuestFilesystem, GuestUser};
use crate::frame::LineReader;
use crate::protocol::{
    DhcpInterface, DomainInfo, Event, Lease, OpenFile, PasstInterface, Pong, Request, Response,
    VirtiofsShare,
};
use crate::{Error, Result};

pub struct LauncherClient {
    lines: LineReader<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    peer: Option<Peer>,
}

/// The launcher process at the other end of the socket (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// In the caller's PID namespace.
    pub pid: u32,
    pub uid: u32,
}

impl LauncherClient {
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.to_owned(),
                source,
            })?;
        // SO_PEERCRED: the launcher's pid as the kernel gives it, in our PID namespace
        // (its own `Pong::pid` is in the pod's).
        let peer = stream.peer_cred().ok().and_then(|c| {
            let pid = u32::try_from(c.pid()?).ok().filter(|p| *p > 0)?;
            Some(Peer { pid, uid: c.uid() })
        });
        let (read, write) = stream.into_split();
        Ok(LauncherClient {
            lines: LineReader::new(BufReader::new(read)),
            write,
            peer,
        })
    }

    /// The launcher's pid (in the caller's PID namespace) and uid, from SO_PEERCRED at
    /// connect; `None` when the kernel could not map the pid (a PID namespace not below
    /// ours).
    pub fn peer(&self) -> Option<Peer> {
        self.peer
    }

    /// Sends one request and reads its response; `{"error":..}` becomes [`Error::Remote`]
    /// with the launcher's kind ([`Error::is_permanent`]).
    pub async fn request(&mut self, request: &Request) -> Result<Response> {
        self.write
            .write_all(request.to_line().as_bytes())
            .await
            .map_err(Error::Socket)?;
        match read(&mut self.lines).await? {
            Response::Error(f) => Err(Error::Remote {
                kind: f.kind,
                message: f.message,
            }),
            response => Ok(response),
        }
    }

    pub async fn ping(&mut self) -> Result<Pong> {
        match self.request(&Request::Ping).await? {
            Response::Pong(pong) => Ok(pong),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    pub async fn define_and_start(&mut self, domain_xml: &str) -> Result<DomainInfo> {
        self.define_and_start_with(domain_xml, false).await
    }

    /// [`Self::define_and_start`]; with `paused` the vCPUs wait for [`Self::unpause`].
    pub async fn define_and_start_with(
        &mut self,
        domain_xml: &str,
        paused: bool,
    ) -> Result<DomainInfo> {
        self.define_and_start_full(domain_xml, paused, Vec::new())
            .await
    }

    /// [`Self::define_and_start_with`], the launcher first serving `dhcp`.
    pub async fn define_and_start_full(
        &mut self,
        domain_xml: &str,
        paused: bool,
        dhcp: Vec<DhcpInterface>,
    ) -> Result<DomainInfo> {
        self.define_and_start_net(domain_xml, paused, false, dhcp, Vec::new(), Vec::new())
            .await
    }

    /// Define and start with everything the pod network and the filesystems need first:
    /// the launcher's DHCP servers, passt and virtiofsd processes. `start_paused` as
    /// [`Self::define_and_start_paused`].
    pub async fn define_and_start_net(
        &mut self,
        domain_xml: &str,
        paused: bool,
        start_paused: bool,
        dhcp: Vec<DhcpInterface>,
        passt: Vec<PasstInterface>,
        virtiofs: Vec<VirtiofsShare>,
    ) -> Result<DomainInfo> {
        self.start(Request::DefineAndStart {
            domain_xml: domain_xml.to_owned(),
            paused,
            start_paused,
            dhcp,
            passt,
            virtiofs,
        })
        .await
    }

    /// [`Self::define_and_start_full`] for a guest the user wants started paused (the
    /// VMI's `startStrategy: Paused`): its vCPUs wait for [`Self::unpause`], and the pause
    /// is reported like any other.
    pub async fn define_and_start_paused(
        &mut self,
        domain_xml: &str,
        dhcp: Vec<DhcpInterface>,
    ) -> Result<DomainInfo> {
        self.define_and_start_net(domain_xml, false, true, dhcp, Vec::new(), Vec::new())
            .await
    }

    async fn start(&mut self, request: Request) -> Result<DomainInfo> {
        match self.request(&request).await? {
            Response::DomainInfo(Some(info)) => Ok(info),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// The files QEMU holds open.
    pub async fn open_files(&mut self) -> Result<Vec<OpenFile>> {
        match self.request(&Request::OpenFiles).await? {
            Response::OpenFiles(files) => Ok(files),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// The DHCP leases the launcher acknowledged.
    pub async fn leases(&mut self) -> Result<Vec<Lease>> {
        match self.request(&Request::Leases).await? {
            Response::Leases(leases) => Ok(leases),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// `None` before any domain was defined.
    pub async fn domain_info(&mut self) -> Result<Option<DomainInfo>> {
        match self.request(&Request::DomainInfo).await? {
            Response::DomainInfo(info) => Ok(info),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Presses the guest's ACPI power button.
    /// Has the launcher keep the guest's downward metrics coming: the disk at `disk`
    /// rewritten, the channel whose socket is `channel` answered (launcher paths).
    pub async fn downward_metrics(
        &mut self,
        node_name: &str,
        disk: Option<&Path>,
        channel: Option<&Path>,
    ) -> Result<()> {
        let path = |p: Option<&Path>| p.map(|p| p.display().to_string());
        self.expect_ok(Request::DownwardMetrics {
            node_name: node_name.to_owned(),
            disk: path(disk),
            channel: path(channel),
        })
        .await
    }

    pub async fn shutdown(&mut self) -> Result<()> {
        self.expect_ok(Request::Shutdown).await
    }

    pub async fn destroy(&mut self) -> Result<()> {
        self.expect_ok(Request::Destroy).await
    }

    pub async fn pause(&mut self) -> Result<()> {
        self.expect_ok(Request::Pause).await
    }

    pub async fn unpause(&mut self) -> Result<()> {
        self.expect_ok(Request::Unpause).await
    }

    /// Turns the connection into the launcher's event stream: every event since the
    /// launcher started, then live ones.
    pub async fn watch_events(mut self) -> Result<EventStream> {
        self.expect_ok(Request::WatchEvents).await?;
        Ok(EventStream {
            lines: self.lines,
            _write: self.write,
        })
    }

    /// Turns the connection into the launcher's guest agent stream: its state now, then
    /// each change. A launcher without agent support answers with a permanent
    /// [`Error::Remote`] (bad request).
    pub async fn watch_agent(mut self) -> Result<AgentStream> {
        self.expect_ok(Request::WatchAgent).await?;
        Ok(AgentStream {
            lines: self.lines,
            _write: self.write,
        })
    }

    /// KubeVirt's guest agent info, asked of the agent now.
    pub async fn guest_agent_info(&mut self) -> Result<GuestAgentInfo> {
        match self.request(&Request::GuestAgentInfo).await? {
            Response::GuestAgentInfo(info) => Ok(*info),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// The guest's logged-in users, asked of the agent now.
    pub async fn guest_users(&mut self) -> Result<Vec<GuestUser>> {
        match self.request(&Request::GuestUsers).await? {
            Response::GuestUsers(users) => Ok(users),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// The guest's mounted filesystems, asked of the agent now.
    pub async fn guest_filesystems(&mut self) -> Result<Vec<GuestFilesystem>> {
        match self.request(&Request::GuestFilesystems).await? {
            Response::GuestFilesystems(fs) => Ok(fs),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    async fn expect_ok(&mut self, request: Request) -> Result<()> {
        match self.request(&request).await? {
            Response::Ok => Ok(()),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }
}

pub struct EventStream {
    lines: LineReader<BufReader<OwnedReadHalf>>,
    /// Dropping the write half would tell the launcher we left.
    _write: OwnedWriteHalf,
}

impl EventStream {
    /// The next event; `None` when the launcher has exited.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        match read(&mut self.lines).await {
            Ok(Response::Event(event)) => Ok(Some(event)),
            Ok(other) => Err(Error::Unexpected(Box::new(other))),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub struct AgentStream {
    lines: LineReader<BufReader<OwnedReadHalf>>,
    _write: OwnedWriteHalf,
}

impl AgentStream {
    /// The next agent state; `None` when the launcher has exited.
    pub async fn next(&mut self) -> Result<Option<AgentState>> {
        match read(&mut self.lines).await {
            Ok(Response::Agent(state)) => Ok(Some(state)),
            Ok(other) => Err(Error::Unexpected(Box::new(other))),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

async fn read(lines: &mut LineReader<BufReader<OwnedReadHalf>>) -> Result<Response> {
    let line = lines.next_line().await?.ok_or(Error::Closed)?;
    Ok(serde_json::from_str(&line)?)
}
