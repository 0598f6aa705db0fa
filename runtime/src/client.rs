//! The Kubernetes client every component builds the same way.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::{Error, Result};

/// A client from `kubeconfig` when given, otherwise by the usual inference
/// (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account). `user_agent` names the
/// component in the API server's audit log and request metrics.
pub async fn kube_client(kubeconfig: Option<&Path>, user_agent: &str) -> Result<Client> {
    Client::try_from(kube_config(kubeconfig, user_agent).await?).map_err(Error::Client)
}

/// The configuration [`kube_client`] builds its client from, for a component that also
/// needs the cluster's address.
pub async fn kube_config(kubeconfig: Option<&Path>, user_agent: &str) -> Result<Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let err = |source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await.map_err(Error::InferConfig)?,
    };
    if let Ok(agent) = user_agent.parse() {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    Ok(config)
}
