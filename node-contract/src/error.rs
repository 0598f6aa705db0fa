//! The launcher client's errors.

use std::path::PathBuf;

use crate::protocol::Response;

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

    /// The launcher answered `{"error":..}`.
    #[error("launcher answered: {0}")]
    Remote(String),

    #[error("unexpected answer {0:?}")]
    Unexpected(Box<Response>),
}
