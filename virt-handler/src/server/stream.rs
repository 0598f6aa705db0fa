//! A websocket (subprotocol `plain.kubevirt.io`, binary frames) bridged to a unix socket
//! of the VMI (serial console or VNC). The unix socket is connected before the upgrade,
//! so a missing one is an HTTP error virt-api can report. The stream ends with a
//! websocket close frame: normal closure (1000) when the guest's side closed or a newer
//! session replaced this one, with the reason in the frame.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::api::text;
use super::sessions::Session;

/// KubeVirt's websocket subprotocol of its console and VNC streams.
pub const PLAIN_PROTOCOL: &str = "plain.kubevirt.io";
/// The close reason when a newer session takes over.
pub const REPLACED: &str = "a newer connection replaced this one";

/// Answers the upgrade and bridges in the background.
pub async fn upgrade(
    mut req: hyper::Request<hyper::body::Incoming>,
    socket: PathBuf,
    session: Session,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let is_ws = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_ws)
    else {
        return text(StatusCode::BAD_REQUEST, "a websocket upgrade is required");
    };
    let accept = derive_accept_key(key.as_bytes());
    let unix = match UnixStream::connect(&socket).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "connecting to the VMI's socket");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("connecting to {}: {e}", socket.display()),
            );
        }
    };
    tracing::info!(socket = %socket.display(), "stream opened for virt-api");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                let why = bridge(ws, unix, session).await;
                tracing::info!(socket = %socket.display(), why, "stream closed");
            }
            Err(e) => tracing::warn!(error = %e, "websocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, PLAIN_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// Copies until one side ends; returns why.
async fn bridge<S>(
    mut ws: WebSocketStream<S>,
    unix: UnixStream,
    mut session: Session,
) -> &'static str
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut from_vmi, mut to_vmi) = unix.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let close = |reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            n = from_vmi.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = ws.send(close("the VMI's socket closed")).await;
                    return "the VMI's socket closed";
                }
                Ok(n) => {
                    if ws.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return "virt-api went away";
                    }
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if to_vmi.write_all(&b).await.is_err() {
                        let _ = ws.send(close("the VMI's socket closed")).await;
                        return "the VMI's socket closed";
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if to_vmi.write_all(t.as_bytes()).await.is_err() {
                        return "the VMI's socket closed";
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "virt-api closed the stream",
                Some(Ok(_)) => {}
            },
            _ = &mut session.replaced => {
                let _ = ws.send(close(REPLACED)).await;
                return "replaced by a newer session";
            }
        }
    }
}
