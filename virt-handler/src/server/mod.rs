//! virt-handler's HTTPS API for virt-api, over mutual TLS (KubeVirt's handler console
//! server): a VMI's serial console and VNC display as websockets (subprotocol
//! `plain.kubevirt.io`, binary frames) bridged to the sockets in its per-VMI directory,
//! and pause/unpause through its launcher. One console and one VNC session per VMI: a new
//! one ends the old one (with a websocket close), as in KubeVirt.
//!
//! Certificates: virt-api owns the CA and writes the handlers' serving certificate and the
//! CA bundle into the Secret [`SERVER_CERTS_SECRET`]; the handler serves only once that
//! Secret exists, re-reads it every [`RELOAD`] and requires a client certificate that
//! chains to the bundle (virt-api's). The handler publishes where it listens on its Node
//! ([`ADDRESS_ANNOTATION`]) so virt-api finds it also when it runs as a DaemonSet pod.
//! docs/virt-handler.md, "The server for virt-api".

mod api;
mod sessions;
mod stream;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrovirt_node_contract::handler_api::{ADDRESS_ANNOTATION, SERVER_CERTS_SECRET};
use ferrovirt_node_contract::paths::RunDir;
use ferrovirt_node_contract::pod::VIRT_HANDLER_ADDRESS_FIELD_MANAGER as FIELD_MANAGER;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::net::TcpListener;

use crate::{Error, Result, chain};

/// How often the certificate Secret is read again (rotation reaches the handler this fast).
pub const RELOAD: Duration = Duration::from_secs(30);

/// What the server needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The host virt-api dials (IP or name); the port is the listen port.
    pub advertise: Option<String>,
    pub node: String,
    /// Namespace of [`SERVER_CERTS_SECRET`].
    pub namespace: String,
    pub run_dir: RunDir,
}

/// What every request shares.
pub(crate) struct Shared {
    pub run_dir: RunDir,
    pub sessions: Arc<sessions::Sessions>,
}

/// Binds the listener (a bind failure stops the handler), then in the background waits for
/// the certificates, publishes the address on the Node and serves.
pub async fn spawn(client: kube::Client, config: Config) -> Result<SocketAddr> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(Error::io("binding", config.listen.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(Error::io("binding", config.listen.to_string()))?;
    let shared = Arc::new(Shared {
        run_dir: config.run_dir.clone(),
        sessions: Arc::default(),
    });
    tokio::spawn(async move {
        let certs = tls::Reloading::wait(&client, &config.namespace).await;
        let address = match advertised(&client, &config, bound).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %chain(&e), "cannot tell virt-api where this handler listens: consoles will not reach this node");
                return;
            }
        };
        publish(&client, &config.node, &address).await;
        tokio::spawn(
            certs
                .clone()
                .keep_fresh(client.clone(), config.namespace.clone()),
        );
        tracing::info!(%bound, %address, secret = SERVER_CERTS_SECRET, "serving console, VNC, pause and unpause for virt-api");
        api::serve(listener, certs, shared).await;
    });
    Ok(bound)
}

/// `host:port` for virt-api: `--advertise-address`, else the listen address when it is a
/// specific one, else the Node's InternalIP.
async fn advertised(client: &kube::Client, config: &Config, bound: SocketAddr) -> Result<String> {
    let port = bound.port();
    let host = match &config.advertise {
        Some(a) => a.clone(),
        None if !bound.ip().is_unspecified() => bound.ip().to_string(),
        None => {
            let node = Api::<Node>::all(client.clone()).get(&config.node).await?;
            node.status
                .and_then(|s| s.addresses)
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address)
                .ok_or_else(|| {
                    Error::unsupported(
                        "--advertise-address",
                        "not set, the listen address is unspecified and the Node has no InternalIP",
                    )
                })?
        }
    };
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// Applies [`ADDRESS_ANNOTATION`] on the Node (server-side, forced, with a field manager
/// of its own beside the node labeller's), retrying until it is written.
async fn publish(client: &kube::Client, node: &str, address: &str) {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "annotations": {ADDRESS_ANNOTATION: address}},
    });
    loop {
        match api
            .patch(
                node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%node, error = %chain(&Error::from(e)), "writing the handler address on the Node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
