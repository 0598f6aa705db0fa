//! devnode: kubelet's stand-in for Ferrovirt's development clusters.
//!
//! It registers a Node, keeps its Lease and Ready condition fresh, and runs the pods the
//! scheduler binds to it as host processes, each container in its own PID, mount and UTS
//! namespace (see [`shim`]), reporting pod status the way kubelet does.

pub mod args;
pub mod containerdisk;
pub mod env;
pub mod image;
pub mod machine;
pub mod node;
pub mod nsexec;
pub mod pod;
pub mod pods;
pub mod probe;
pub mod runtime;
pub mod sandbox;
pub mod shim;
pub mod state;
pub mod status;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

/// devnode's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("connecting to the cluster")]
    Runtime(#[source] ferrovirt_runtime::Error),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Sys(String, #[source] nix::Error),
    #[error("json")]
    Json(#[from] serde_json::Error),
    /// The pod asks for something devnode does not do: the pod is rejected.
    #[error("{0}")]
    Unsupported(String),
    /// The image cannot be mapped to a binary (kubelet's ErrImagePull).
    #[error("{0}")]
    Image(String),
    /// A container's configuration cannot be built yet (kubelet's CreateContainerConfigError).
    #[error("{0}")]
    ContainerConfig(String),
    /// A volume cannot be set up yet (kubelet keeps the pod ContainerCreating).
    #[error("volume {0}")]
    Volume(String, #[source] Box<Error>),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
    pub fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let context = context.into();
        move |e| Error::Sys(context, e)
    }
}

pub use ferrovirt_runtime::chain;

/// Everything the node agent and the pod workers share.
pub struct Ctx {
    pub client: kube::Client,
    pub node_name: String,
    pub bin_dir: PathBuf,
    pub image_prefix: String,
    /// containerDisk and kernel-boot images as directories (`--image-store`).
    pub image_store: PathBuf,
    pub state_dir: PathBuf,
    /// The API server as in-cluster clients reach it: host network, so its real address.
    pub api_host: String,
    pub api_port: u16,
    /// Path of the devnode executable, run again as the per-container shim.
    pub self_exe: PathBuf,
}

/// Runs the node agent until SIGTERM/SIGINT. Pods keep running when it stops.
pub async fn run(args: args::RunArgs) -> Result<()> {
    let ctx = Arc::new(args.context().await?);
    let capacity = args.capacity(&ctx.state_dir)?;
    let ready_since = node::register(&ctx, &capacity).await?;
    let heartbeat = tokio::spawn(node::heartbeat(ctx.clone(), capacity, ready_since));
    let pods = tokio::spawn(pods::run(ctx.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("install SIGTERM handler"))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping devnode, pods keep running"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping devnode, pods keep running"),
        r = heartbeat => tracing::error!(?r, "heartbeat loop ended"),
        r = pods => tracing::error!(?r, "pod watch ended"),
    }
    Ok(())
}
