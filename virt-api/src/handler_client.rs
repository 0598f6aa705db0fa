//! virt-api's side of the virt-api → virt-handler connection: which handler serves a VMI
//! (the address its handler published on the VMI's Node), mutual TLS with the certificates
//! of [`crate::handler_certs`], a PUT (pause, unpause), a GET (the guest agent's answers)
//! and a websocket (console, VNC).
//! Failures are answered as KubeVirt answers them: the handler cannot be reached → 400
//! (KubeVirt's `getVirtHandlerFor`), the handler refused → 500 with its words.

use std::sync::Arc;

use bytes::Bytes;
use ferrovirt_node_contract::handler_api::{ADDRESS_ANNOTATION, SERVER_NAME, vmi_path};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::handler_certs::HandlerTls;
use crate::status::Status;

/// KubeVirt's websocket subprotocol of console and VNC streams.
pub const PLAIN_PROTOCOL: &str = "plain.kubevirt.io";

/// A VMI's handler: where it listens and how to reach the VMI there.
pub struct Target {
    pub address: String,
    /// The handler's path for the subresource.
    pub path: String,
}

/// The handler of the node in the VMI's `status.nodeName`, for `subresource`.
pub async fn target(
    client: &kube::Client,
    vmi: &Value,
    subresource: &str,
) -> Result<Target, Status> {
    let ns = vmi["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = vmi["metadata"]["name"].as_str().unwrap_or_default();
    let uid = vmi["metadata"]["uid"].as_str().unwrap_or_default();
    let node = vmi["status"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(Status::bad_request(&format!(
            "Unable to connect to VirtualMachineInstance {name}: it has no status.nodeName"
        )));
    }
    let n = Api::<Node>::all(client.clone())
        .get_opt(node)
        .await
        .map_err(|e| {
            Status::internal(&format!(
                "reading Node {node}: {}",
                crate::kubevirt::message(&e)
            ))
        })?
        .ok_or_else(|| {
            Status::bad_request(&format!(
                "Node {node} of VirtualMachineInstance {name} does not exist"
            ))
        })?;
    let address = n
        .metadata
        .annotations
        .and_then(|a| a.get(ADDRESS_ANNOTATION).cloned())
        .ok_or_else(|| {
            Status::bad_request(&format!(
                "virt-handler on node {node} has not published its address ({ADDRESS_ANNOTATION}): is it running with its server on?"
            ))
        })?;
    Ok(Target {
        address,
        path: vmi_path(ns, name, subresource, uid),
    })
}

async fn connect(tls: &HandlerTls, address: &str) -> Result<TlsStream<TcpStream>, Status> {
    let config: Arc<rustls::ClientConfig> = tls.config().ok_or_else(|| {
        Status::internal(
            "the certificates for virt-handler are not made yet; retry in a few seconds",
        )
    })?;
    let tcp = TcpStream::connect(address).await.map_err(|e| {
        Status::bad_request(&format!(
            "Unable to connect to virt-handler at {address}: {e}"
        ))
    })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Status::bad_request(&format!("TLS with virt-handler at {address}: {e}")))
}

/// PUT the target path; the handler's refusal becomes a 500 with its message.
pub async fn put(tls: &HandlerTls, t: &Target) -> Result<(), Status> {
    call(tls, t, http::Method::PUT).await.map(drop)
}

/// GET the target path: the handler's answer, or its refusal as a 500 with its message.
pub async fn get(tls: &HandlerTls, t: &Target) -> Result<Bytes, Status> {
    call(tls, t, http::Method::GET).await
}

async fn call(tls: &HandlerTls, t: &Target, method: http::Method) -> Result<Bytes, Status> {
    let stream = connect(tls, &t.address).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Status::internal(&format!("virt-handler: {e}")))?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(&t.path)
        .header(http::header::HOST, SERVER_NAME)
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| Status::internal(&format!("virt-handler: {e}")))?;
    let code = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if code.is_success() {
        Ok(body)
    } else {
        Err(Status::internal(String::from_utf8_lossy(&body).trim()))
    }
}

/// The handler's websocket for the target path.
pub async fn dial(
    tls: &HandlerTls,
    t: &Target,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, Status> {
    let stream = connect(tls, &t.address).await?;
    let mut req = format!("wss://{SERVER_NAME}{}", t.path)
        .into_client_request()
        .map_err(|e| Status::internal(&format!("websocket request: {e}")))?;
    req.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(PLAIN_PROTOCOL),
    );
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(Status::internal(body.trim()))
        }
        Err(e) => Err(Status::internal(&format!("websocket to virt-handler: {e}"))),
    }
}
