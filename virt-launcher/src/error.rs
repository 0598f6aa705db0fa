//! The crate's one error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libvirt's message only: its Display repeats code and domain, and `source()` again.
    #[error("libvirt: {}", .0.message())]
    Libvirt(virt::error::Error),

    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("launcher socket")]
    Socket(#[source] std::io::Error),

    #[error("launcher socket")]
    Frame(#[from] ferrovirt_node_contract::frame::FrameError),

    #[error("malformed message")]
    Json(#[from] serde_json::Error),

    #[error("no domain defined")]
    NoDomain,

    #[error("this launcher already runs domain {running:?}, not {requested:?}")]
    OtherDomain { running: String, requested: String },

    #[error("domain {0:?} already ran and stopped; a launcher runs one VM in its lifetime")]
    AlreadyStopped(String),

    #[error("libvirt event loop: {0}")]
    EventLoop(String),

    #[error("setting child subreaper")]
    Subreaper(#[source] std::io::Error),

    #[error("DHCP server on {bridge}")]
    Dhcp {
        bridge: String,
        #[source]
        source: std::io::Error,
    },

    #[error("DHCP configuration: {0}")]
    DhcpConfig(String),

    #[error("passt: {0}")]
    Passt(String),

    #[error("guest agent: {0}")]
    Agent(String),

    #[error(
        "{dir} is not writable by uid {uid} after {waited} s: virt-handler hands each VMI's directory to the launcher's user; is virt-handler running on this node?"
    )]
    NotHandedOver {
        dir: std::path::PathBuf,
        uid: u32,
        waited: u64,
    },

    #[error("libvirt worker")]
    Join(#[from] tokio::task::JoinError),
}

impl From<virt::error::Error> for Error {
    fn from(e: virt::error::Error) -> Self {
        Error::Libvirt(e)
    }
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
