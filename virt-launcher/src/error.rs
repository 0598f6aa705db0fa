//! The crate's one error type.

use std::path::PathBuf;

use ferrovirt_node_contract::protocol::FailureKind;

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

    #[error("virtiofsd: {0}")]
    Virtiofs(String),

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
    /// What a request's caller should make of this error (the `kind` of the socket's
    /// `{"error":..}`): virt-handler retries transient ones and fails the VMI on permanent
    /// ones, so only what asking again may cure is transient.
    pub fn failure_kind(&self) -> FailureKind {
        use virt::enumutil::Enum;
        use virt::error::ErrorNumber;
        match self {
            Error::NoDomain => FailureKind::NoDomain,
            Error::Libvirt(e) => match e.code() {
                Enum::Known(ErrorNumber::NoDomain) => FailureKind::NoDomain,
                Enum::Known(
                    ErrorNumber::OperationTimeout
                    | ErrorNumber::AgentUnresponsive
                    | ErrorNumber::ResourceBusy,
                ) => FailureKind::Transient,
                // QEMU or libvirt refused the domain or the operation.
                _ => FailureKind::Permanent,
            },
            Error::Socket(_)
            | Error::Frame(_)
            | Error::EventLoop(_)
            | Error::Agent(_)
            | Error::Join(_) => FailureKind::Transient,
            Error::Io { .. }
            | Error::Json(_)
            | Error::OtherDomain { .. }
            | Error::AlreadyStopped(_)
            | Error::Subreaper(_)
            | Error::Dhcp { .. }
            | Error::DhcpConfig(_)
            | Error::Passt(_)
            | Error::Virtiofs(_)
            | Error::NotHandedOver { .. } => FailureKind::Permanent,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_asking_again_may_cure_is_transient() {
        let io = || std::io::Error::other("x");
        assert_eq!(Error::NoDomain.failure_kind(), FailureKind::NoDomain);
        assert_eq!(
            Error::Agent("not connected".into()).failure_kind(),
            FailureKind::Transient
        );
        assert_eq!(Error::Socket(io()).failure_kind(), FailureKind::Transient);
        assert_eq!(
            Error::OtherDomain {
                running: "a".into(),
                requested: "b".into()
            }
            .failure_kind(),
            FailureKind::Permanent
        );
        assert_eq!(
            Error::AlreadyStopped("a".into()).failure_kind(),
            FailureKind::Permanent
        );
        assert_eq!(
            Error::Passt("exited".into()).failure_kind(),
            FailureKind::Permanent
        );
    }
}
