use std::path::PathBuf;

/// Everything that can go wrong while starting or using the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "control-plane binaries missing in {dir}: {missing}; build them with `hack/setup.sh` \
         (everything) or `hack/build-control-plane.sh` (control plane only), or set \
         KUBEBUILDER_ASSETS to a directory that has them"
    )]
    MissingBinaries { dir: PathBuf, missing: String },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("generating certificates")]
    Pki(#[from] rcgen::Error),

    #[error("kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// The API server answered with an error status.
    #[error("{message} ({reason}, {code})")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },

    #[error("the API server rejected CRD {name}: {message}")]
    CrdRejected { name: String, message: String },

    /// An admission policy the API server refused, or whose CEL it could not type-check.
    #[error("admission policy {name}: {message}")]
    PolicyRejected { name: String, message: String },

    #[error("Kubernetes client")]
    Kube(#[source] kube::Error),

    #[error("{component} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    Startup {
        component: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            // Its Display repeats the whole Status; the message says it all.
            kube::Error::Api(status) => Error::Api {
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            other => Error::Kube(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a short description to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
