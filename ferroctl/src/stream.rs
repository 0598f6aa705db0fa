//! A VMI's console or VNC websocket through the API server, as virtctl opens it:
//! GET `.../virtualmachineinstances/<name>/<console|vnc>` upgraded to a websocket with
//! subprotocol `plain.kubevirt.io`; the payload is raw bytes in binary frames.

use hyper_util::rt::TokioIo;
use kube::Client;
use kube::client::Body;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::client::GROUP_VERSION;
use crate::{Error, Result};

pub type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens the stream; a refusal is the server's Status message.
pub async fn open(client: &Client, namespace: &str, name: &str, subresource: &str) -> Result<Ws> {
    let path = format!(
        "/apis/{GROUP_VERSION}/namespaces/{namespace}/virtualmachineinstances/{name}/{subresource}"
    );
    let req = http::Request::get(path)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_KEY, generate_key())
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, "plain.kubevirt.io")
        .body(Body::empty())
        .expect("a valid request");
    let res = client.send(req).await.map_err(Error::Transport)?;
    if res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let code = res.status().as_u16();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(Error::Refused { code, message });
    }
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| Error::Stream(format!("upgrading to a websocket: {e}")))?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}
