//! gRPC over unix sockets: a client channel to a socket path (the kubelet's, or in tests a
//! plugin's) and a server on a bound listener.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server};

use crate::error::{Error, Result};

/// How long connecting and each call may take (the kubelet allows its plugins 10 s to dial).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC channel to the unix socket at `path`, connected (or the reason it is not). The
/// authority is `localhost`, as the kubelet's own clients send it.
pub async fn connect(path: &Path) -> Result<Channel> {
    let socket = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds `path` after removing what a previous run left there.
pub fn listen(path: &Path) -> Result<UnixListener> {
    let err = |source| Error::Listen {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    UnixListener::bind(path).map_err(err)
}

/// Serves `service` on `listener` until `stop` resolves; then lets running calls finish.
pub async fn serve<S>(
    listener: UnixListener,
    service: S,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    S: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    Server::builder()
        .serve_with_incoming_shutdown(service, UnixListenerStream::new(listener), stop)
        .await
}

/// A file's identity, to tell a socket from the one that replaced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl FileId {
    /// `None` when nothing is at `path`.
    pub fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}
