//! The command socket: newline-delimited JSON, see [`crate::protocol`].

use std::path::Path;
use std::sync::Arc;

use ferrovirt_node_contract::frame::LineReader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use crate::agent::Agent;
use crate::events::EventLog;
use crate::hypervisor::Hypervisor;
use crate::protocol::{Failure, FailureKind, Pong, Request, Response};
use crate::{Error, Result};

/// Binds `path`, replacing a stale socket from an earlier launcher.
pub fn bind(path: &Path) -> Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("removing", path)(e));
        }
        _ => {}
    }
    UnixListener::bind(path).map_err(Error::io("binding", path))
}

pub async fn serve(
    listener: UnixListener,
    hv: Arc<Hypervisor>,
    log: Arc<EventLog>,
    agent: Arc<Agent>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (hv, log, agent) = (hv.clone(), log.clone(), agent.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, hv, log, agent).await {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

async fn connection(
    stream: UnixStream,
    hv: Arc<Hypervisor>,
    log: Arc<EventLog>,
    agent: Arc<Agent>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = LineReader::new(BufReader::new(read));
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(Request::WatchEvents) => {
                send(&mut write, &Response::Ok).await?;
                return watch(lines, write, &log).await;
            }
            Ok(Request::WatchAgent) => {
                send(&mut write, &Response::Ok).await?;
                return watch_agent(lines, write, &agent).await;
            }
            Ok(
                request @ (Request::GuestAgentInfo
                | Request::GuestUsers
                | Request::GuestFilesystems
                | Request::GuestPing { .. }
                | Request::GuestExec { .. }),
            ) => ask_agent(&request, &agent).await,
            Ok(Request::DownwardMetrics {
                node_name,
                disk,
                channel,
            }) => {
                let path = |p: Option<String>| p.map(std::path::PathBuf::from);
                crate::downward_metrics::start(hv.clone(), node_name, path(disk), path(channel));
                Response::Ok
            }
            Ok(request) => {
                tracing::debug!(?request, "request");
                handle(request, hv.clone()).await
            }
            Err(e) => Response::Error(Failure::new(
                FailureKind::Permanent,
                format!("bad request: {e}"),
            )),
        };
        send(&mut write, &response).await?;
    }
    Ok(())
}

/// Runs `start` (blocking) for the helper processes `list` asks for, if any.
async fn start_helpers<T: Clone + Send + 'static>(
    list: &[T],
    start: fn(&[T]) -> crate::Result<()>,
) -> crate::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let list = list.to_vec();
    tokio::task::spawn_blocking(move || start(&list)).await?
}

async fn handle(request: Request, hv: Arc<Hypervisor>) -> Response {
    if request == Request::Ping {
        return Response::Pong(Pong {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
        });
    }
    if request == Request::Leases {
        return Response::Leases(crate::dhcp::leases());
    }
    if let Request::DefineAndStart { dhcp, .. } = &request
        && let Err(e) = crate::dhcp::serve(dhcp).await
    {
        tracing::warn!(error = %crate::chain(&e), "starting the DHCP server failed");
        return failure(&e);
    }
    if let Request::DefineAndStart {
        passt, virtiofs, ..
    } = &request
    {
        if let Err(e) = start_helpers(passt, crate::passt::start).await {
            tracing::warn!(error = %crate::chain(&e), "starting passt failed");
            return failure(&e);
        }
        if let Err(e) = start_helpers(virtiofs, crate::virtiofs::start).await {
            tracing::warn!(error = %crate::chain(&e), "starting virtiofsd failed");
            return failure(&e);
        }
    }
    let outcome = tokio::task::spawn_blocking(move || match request {
        Request::DefineAndStart {
            domain_xml,
            paused,
            start_paused,
            ..
        } => hv
            .define_and_start(&domain_xml, paused, start_paused)
            .map(|i| Response::DomainInfo(Some(i))),
        Request::OpenFiles => hv.open_files().map(Response::OpenFiles),
        Request::DomainInfo => hv.info().map(Response::DomainInfo),
        Request::Shutdown => hv.shutdown().map(|()| Response::Ok),
        Request::Destroy => hv.destroy().map(|()| Response::Ok),
        Request::Pause => hv.pause().map(|()| Response::Ok),
        Request::Unpause => hv.unpause().map(|()| Response::Ok),
        Request::Ping
        | Request::WatchEvents
        | Request::Leases
        | Request::WatchAgent
        | Request::GuestAgentInfo
        | Request::GuestUsers
        | Request::GuestFilesystems
        | Request::GuestPing { .. }
        | Request::GuestExec { .. }
        | Request::DownwardMetrics { .. } => {
            unreachable!("answered by the caller")
        }
    })
    .await
    .map_err(Error::from)
    .and_then(|r| r);
    outcome.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::chain(&e), kind = ?e.failure_kind(), "request failed");
        failure(&e)
    })
}

/// Replays the history, then streams live events until the client hangs up.
async fn watch(
    mut lines: LineReader<BufReader<OwnedReadHalf>>,
    mut write: OwnedWriteHalf,
    log: &EventLog,
) -> Result<()> {
    let (history, mut live) = log.subscribe();
    for event in history {
        send(&mut write, &Response::Event(event)).await?;
    }
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(event) => send(&mut write, &Response::Event(event)).await?,
                Err(RecvError::Lagged(n)) => tracing::warn!(n, "event watcher lagged"),
                Err(RecvError::Closed) => return Ok(()),
            },
            line = lines.next_line() => match line {
                Ok(Some(_)) => {} // a watcher has nothing more to ask
                _ => return Ok(()),
            },
        }
    }
}

/// The guest agent's answer to one request, asked now.
async fn ask_agent(request: &Request, agent: &Agent) -> Response {
    let answer = match request {
        Request::GuestAgentInfo => agent
            .info()
            .await
            .map(|i| Response::GuestAgentInfo(Box::new(i))),
        Request::GuestUsers => agent.users().await.map(Response::GuestUsers),
        Request::GuestPing { timeout_seconds } => {
            agent.ping(*timeout_seconds).await.map(|()| Response::Ok)
        }
        Request::GuestExec {
            command_line,
            timeout_seconds,
        } => agent
            .exec(command_line.clone(), *timeout_seconds)
            .await
            .map(Response::GuestExec),
        _ => agent.filesystems().await.map(Response::GuestFilesystems),
    };
    answer.unwrap_or_else(|e| {
        // A probe asks every period, and its failures are kubelet's to report (Events).
        if matches!(
            request,
            Request::GuestPing { .. } | Request::GuestExec { .. }
        ) {
            tracing::debug!(?request, error = %crate::chain(&e), "guest agent probe failed");
        } else {
            tracing::info!(?request, error = %crate::chain(&e), "guest agent request failed");
        }
        failure(&e)
    })
}

/// The agent's state now, then each change, until the client hangs up.
async fn watch_agent(
    mut lines: LineReader<BufReader<OwnedReadHalf>>,
    mut write: OwnedWriteHalf,
    agent: &Agent,
) -> Result<()> {
    let mut state = agent.subscribe();
    loop {
        let now = state.borrow_and_update().clone();
        send(&mut write, &Response::Agent(now)).await?;
        tokio::select! {
            changed = state.changed() => if changed.is_err() {
                return Ok(());
            },
            line = lines.next_line() => match line {
                Ok(Some(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}

/// The error's answer: its kind and its chain.
fn failure(e: &Error) -> Response {
    Response::Error(Failure::new(e.failure_kind(), crate::chain(e)))
}

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> Result<()> {
    write
        .write_all(response.to_line().as_bytes())
        .await
        .map_err(Error::Socket)
}
