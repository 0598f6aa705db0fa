//! The command socket: newline-delimited JSON, see [`crate::protocol`].

use std::path::Path;
use std::sync::Arc;

use ferrovirt_node_contract::frame::LineReader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use crate::events::EventLog;
use crate::hypervisor::Hypervisor;
use crate::protocol::{Pong, Request, Response};
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

pub async fn serve(listener: UnixListener, hv: Arc<Hypervisor>, log: Arc<EventLog>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (hv, log) = (hv.clone(), log.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, hv, log).await {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

async fn connection(stream: UnixStream, hv: Arc<Hypervisor>, log: Arc<EventLog>) -> Result<()> {
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
            Ok(request) => {
                tracing::debug!(?request, "request");
                handle(request, hv.clone()).await
            }
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        send(&mut write, &response).await?;
    }
    Ok(())
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
        return Response::Error(crate::chain(&e));
    }
    let outcome = tokio::task::spawn_blocking(move || match request {
        Request::DefineAndStart {
            domain_xml, paused, ..
        } => hv
            .define_and_start(&domain_xml, paused)
            .map(|i| Response::DomainInfo(Some(i))),
        Request::OpenFiles => hv.open_files().map(Response::OpenFiles),
        Request::DomainInfo => hv.info().map(Response::DomainInfo),
        Request::Shutdown => hv.shutdown().map(|()| Response::Ok),
        Request::Destroy => hv.destroy().map(|()| Response::Ok),
        Request::Pause => hv.pause().map(|()| Response::Ok),
        Request::Unpause => hv.unpause().map(|()| Response::Ok),
        Request::Ping | Request::WatchEvents | Request::Leases => {
            unreachable!("answered by the caller")
        }
    })
    .await
    .map_err(Error::from)
    .and_then(|r| r);
    outcome.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::chain(&e), "request failed");
        Response::Error(crate::chain(&e))
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

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> Result<()> {
    write
        .write_all(response.to_line().as_bytes())
        .await
        .map_err(Error::Socket)
}
