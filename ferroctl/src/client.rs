//! The connection, resolved as kubectl resolves it, and the subresource calls.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::Cli;
use crate::{Error, Result};

pub const GROUP_VERSION: &str = "subresources.kubevirt.io/v1";

/// `--kubeconfig`, else `KUBECONFIG` (merged list), else `~/.kube/config`, else in-cluster;
/// `--context` picks the context; the namespace is `-n`, else the context's.
/// `streaming`: a console or VNC stream, which may be quiet for long (no read timeout).
pub async fn connect(cli: &Cli, streaming: bool) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let kubeconfig = match &cli.kubeconfig {
        Some(path) => Some(Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?),
        None => match Kubeconfig::read() {
            Ok(k) => Some(k),
            // Nothing to read: in-cluster, as kubectl does.
            Err(kube::config::KubeconfigError::FindPath) => None,
            Err(e) if std::env::var_os("KUBECONFIG").is_some() => return Err(Error::Kubeconfig(e)),
            Err(_) => None,
        },
    };
    let mut config = match kubeconfig {
        Some(k) => Config::from_custom_kubeconfig(k, &options)
            .await
            .map_err(Error::Kubeconfig)?,
        None => Config::incluster().map_err(Error::NoConfig)?,
    };
    if streaming {
        config.read_timeout = None;
    }
    if let Ok(agent) = concat!("ferroctl/", env!("CARGO_PKG_VERSION")).parse() {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config).map_err(Error::Client)?, namespace))
}

/// PUT `.../namespaces/<ns>/<resource>/<name>/<subresource>` with `body`
/// (`virtualmachines/<vm>/start`, `virtualmachineinstances/<vmi>/pause`, ...).
pub async fn put_subresource(
    client: &Client,
    namespace: &str,
    resource: &str,
    name: &str,
    subresource: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let path =
        format!("/apis/{GROUP_VERSION}/namespaces/{namespace}/{resource}/{name}/{subresource}");
    let req = http::Request::put(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("JSON values serialize"))
        .expect("a valid request");
    client.request_text(req).await?;
    Ok(())
}

/// virt-api's version document.
pub async fn server_version(client: &Client) -> Result<serde_json::Value> {
    let req = http::Request::get(format!("/apis/{GROUP_VERSION}/version"))
        .body(Vec::new())
        .expect("a valid request");
    Ok(client.request(req).await?)
}
