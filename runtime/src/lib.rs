//! What every Ferrovirt binary shares, so each exists once: `--log-format` and the
//! tracing setup, the Kubernetes client from a kubeconfig, the error chain for logs and
//! conditions, the `/metrics` + `/healthz` endpoint, and the shutdown signal.
//!
//! Components keep their own `Error` enums; this crate's [`Error`] is what its few
//! fallible functions return, for them to wrap.

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "endpoint")]
mod http;
mod logging;

#[cfg(feature = "client")]
pub use client::{kube_client, kube_config};
#[cfg(feature = "endpoint")]
pub use http::{Endpoint, serve};
pub use logging::{LogFormat, init_logging};

/// What this crate's functions can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[cfg(feature = "client")]
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[cfg(feature = "client")]
    #[error("finding the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[cfg(feature = "client")]
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error: cause: cause`: an error and its sources on one line, for logs, Events and
/// conditions. Messages do not repeat their source, so each part appears once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Where the development tools keep what they download and build (guests, images,
/// binaries), by hack/lib.sh's rule: `$FERROVIRT_CACHE`, else `$XDG_CACHE_HOME/ferrovirt`,
/// else `~/.cache/ferrovirt`.
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    let set = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
    if let Some(dir) = set("FERROVIRT_CACHE") {
        return PathBuf::from(dir);
    }
    let base = set("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(set("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
    });
    base.join("ferrovirt")
}

/// Resolves on SIGTERM (what kubelet sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_source_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
