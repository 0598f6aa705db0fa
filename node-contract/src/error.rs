//! The launcher client's errors.

use std::path::PathBuf;

use crate::protocol::{FailureKind, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("launcher socket")]
    Socket(#[source] std::io::Error),

    #[error("launcher socket")]
    Frame(#[from] crate::frame::FrameError),

    #[error("malformed message")]
    Json(#[from] serde_json::Error),

    #[error("launcher closed the connection")]
    Closed,

    /// The launcher answered `{"error":..}`: its kind and its error chain.
    #[error("launcher answered: {message}")]
    Remote { kind: FailureKind, message: String },

    #[error("unexpected answer {0:?}")]
    Unexpected(Box<Response>),
}

impl Error {
    /// The launcher said asking again cannot help: the VMI fails with the message. Every
    /// other error (a transient or no-domain answer, the socket, a closed connection) may
    /// pass when asked again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Remote {
                kind: FailureKind::Permanent,
                ..
            }
        )
    }

    /// The launcher answered that it has no domain.
    pub fn is_no_domain(&self) -> bool {
        matches!(
            self,
            Error::Remote {
                kind: FailureKind::NoDomain,
                ..
            }
        )
    }
}
