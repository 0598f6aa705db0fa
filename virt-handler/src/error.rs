//! The crate's one error type. Variants that fail a VMI carry the reason written to its
//! status (see [`Error::reason`]).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec value the domain conversion does not support; names the field.
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },

    /// KVM does not work on this node and the cluster does not allow emulation.
    #[error(
        "KVM is not usable on this node ({0}) and software emulation is not allowed: set \
         useEmulation: \"true\" in the kubevirt-config ConfigMap to allow it"
    )]
    KvmUnavailable(String),

    /// A volume could not be prepared; names the volume.
    #[error("volume {volume:?}: {message}")]
    Volume { volume: String, message: String },

    /// The pod's container of a containerDisk or kernel-boot image does not answer on its
    /// socket (volumes/containerdisk.rs).
    #[error(
        "image {image:?}: its container {container} in the launcher pod does not answer ({message})"
    )]
    ImageNotFound {
        image: String,
        container: String,
        message: String,
    },

    /// The image lacks what the spec names (a file, the one disk under `/disk/`).
    #[error("{field}: {message}")]
    NotInImage { field: String, message: String },

    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{program} failed: {message}")]
    Command { program: String, message: String },

    /// Preparing the pod's network namespace (network/).
    #[error("pod network: {message}")]
    Network { message: String },

    #[error("KVM probe")]
    Probe(#[source] std::io::Error),

    /// The VMI was deleted and is gone from the cache: nothing left to do for it.
    #[error("the VMI is gone")]
    VmiGone,

    #[error("launcher")]
    Launcher(#[from] ferrovirt_node_contract::Error),

    #[error("kubernetes API")]
    Kube(#[from] kube::Error),

    #[error("json")]
    Json(#[from] serde_json::Error),

    #[error("starting")]
    Runtime(#[source] ferrovirt_runtime::Error),

    /// The certificates of the server for virt-api (server/).
    #[error("handler certificates: {0}")]
    Certificate(String),

    #[error("TLS")]
    Tls(#[from] rustls::Error),

    #[error("worker task")]
    Join(#[from] tokio::task::JoinError),

    #[error("device plugins")]
    DevicePlugins(#[source] ferrovirt_device_plugin::Error),
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

    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn volume(volume: &str, message: impl Into<String>) -> Error {
        Error::Volume {
            volume: volume.to_owned(),
            message: message.into(),
        }
    }

    /// The machine-readable reason a VMI fails with, and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unsupported { .. } => "UnsupportedSpec",
            Error::KvmUnavailable(_) => "KVMUnavailable",
            Error::Volume { .. } | Error::ImageNotFound { .. } | Error::NotInImage { .. } => {
                "VolumePreparationFailed"
            }
            Error::Io { .. } | Error::Command { .. } => "VolumePreparationFailed",
            Error::Launcher(_) => "LauncherFailed",
            Error::Network { .. } => "NetworkSetupFailed",
            _ => "Internal",
        }
    }

    /// Whether retrying can help (API and socket hiccups), as opposed to a spec or node
    /// problem that fails the VMI.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Kube(_) | Error::Join(_) | Error::Json(_))
    }
}

/// An error and its sources, `: `-separated, for one log line or one status message.
pub use ferrovirt_runtime::chain;
