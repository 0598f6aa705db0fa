//! The crate's one error type.

use std::path::PathBuf;

/// What starting or running the device plugins can fail with. Messages do not repeat their
/// source; print the chain (`ferrovirt_runtime::chain`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work, named as the flag that sets it.
    #[error("{flag}: {message}")]
    Config { flag: &'static str, message: String },
    #[error("device plugin directory {}", path.display())]
    PluginDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {}", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("registering {resource} with the kubelet")]
    Register {
        resource: String,
        #[source]
        source: tonic::Status,
    },
    #[error("watching {} for changes", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {resource} device plugin stopped")]
    Task {
        resource: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
