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

use crate::frame::LineReader;
use crate::protocol::{DomainInfo, Event, OpenFile, Pong, Request, Response};
use crate::{Error, Result};

pub struct LauncherClient {
    lines: LineReader<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
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
        let (read, write) = stream.into_split();
        Ok(LauncherClient {
            lines: LineReader::new(BufReader::new(read)),
            write,
        })
    }

    /// Sends one request and reads its response; `{"error":..}` becomes [`Error::Remote`].
    pub async fn request(&mut self, request: &Request) -> Result<Response> {
        self.write
            .write_all(request.to_line().as_bytes())
            .await
            .map_err(Error::Socket)?;
        match read(&mut self.lines).await? {
            Response::Error(message) => Err(Error::Remote(message)),
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
        let request = Request::DefineAndStart {
            domain_xml: domain_xml.to_owned(),
            paused,
        };
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

    /// `None` before any domain was defined.
    pub async fn domain_info(&mut self) -> Result<Option<DomainInfo>> {
        match self.request(&Request::DomainInfo).await? {
            Response::DomainInfo(info) => Ok(info),
            other => Err(Error::Unexpected(Box::new(other))),
        }
    }

    /// Presses the guest's ACPI power button.
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

async fn read(lines: &mut LineReader<BufReader<OwnedReadHalf>>) -> Result<Response> {
    let line = lines.next_line().await?.ok_or(Error::Closed)?;
    Ok(serde_json::from_str(&line)?)
}
