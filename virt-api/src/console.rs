//! `console` and `vnc` (GET, websocket): the client's websocket (subprotocol
//! `plain.kubevirt.io`, binary frames) bridged to the handler's, the payload bytes passed
//! through unchanged. Before the upgrade the request is authorized, the VMI checked as
//! KubeVirt checks it and the handler dialled, so every refusal is a Kubernetes Status.
//! While the stream is open virt-api pings the client every `--console-ping-interval`:
//! proxies that drop idle connections see traffic on a quiet console. A close from the
//! handler (the guest's socket closed, or a newer session replaced this one) is passed to
//! the client with its code and reason; a broken connection to the handler is a 1011.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use crate::handler::{App, Peer, authorize, fetch_vmi, status_reply};
use crate::handler_client::{self, PLAIN_PROTOCOL};
use crate::route::Target;
use crate::status::Status;
use crate::vmi;

type Reply = Response<Full<Bytes>>;

/// Whether a request is for a stream this module serves.
pub fn is_stream(method: &http::Method, t: &Target) -> bool {
    method == http::Method::GET
        && t.resource == "virtualmachineinstances"
        && matches!(t.subresource.as_str(), "console" | "vnc")
}

/// Answers the upgrade (or refuses it) and bridges in the background.
pub async fn handle(
    app: &std::sync::Arc<App>,
    peer: &Peer,
    mut req: hyper::Request<hyper::body::Incoming>,
    t: &Target,
) -> Reply {
    let reply = match prepare(app, peer, &req, t).await {
        Ok((handler_ws, accept)) => {
            let upgrade = hyper::upgrade::on(&mut req);
            let ping = app.ping_interval;
            let what = format!("{}/{} {}", t.namespace, t.name, t.subresource);
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(up) => {
                        let client =
                            WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None)
                                .await;
                        let why = bridge(client, handler_ws, ping).await;
                        tracing::info!(stream = %what, why, "stream closed");
                    }
                    Err(e) => tracing::warn!(stream = %what, error = %e, "websocket upgrade"),
                }
            });
            tracing::info!(namespace = %t.namespace, vmi = %t.name, subresource = %t.subresource, "stream opened");
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "Upgrade")
                .header(http::header::UPGRADE, "websocket")
                .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
                .header(http::header::SEC_WEBSOCKET_PROTOCOL, PLAIN_PROTOCOL)
                .body(Full::new(Bytes::new()))
                .expect("a valid response")
        }
        Err(s) => status_reply(&s),
    };
    app.metrics.count(
        &format!("{}/{}", t.resource, t.subresource),
        reply.status().as_u16(),
    );
    reply
}

type HandlerWs = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn prepare(
    app: &App,
    peer: &Peer,
    req: &hyper::Request<hyper::body::Incoming>,
    t: &Target,
) -> Result<(HandlerWs, String), Status> {
    authorize(app, peer, req.method(), req.uri().path(), req.headers(), t).await?;
    let h = req.headers();
    let is_ws = h
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = h
        .get(http::header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_ws)
        .ok_or_else(|| {
            Status::bad_request("websocket: the client is not using the websocket protocol")
        })?;
    let accept = derive_accept_key(key.as_bytes());
    let vmi = fetch_vmi(app, t).await?;
    match t.subresource.as_str() {
        "console" => vmi::console(&vmi)?,
        _ => vmi::vnc(&vmi)?,
    }
    let target = handler_client::target(&app.client, &vmi, &t.subresource).await?;
    let ws = handler_client::dial(&app.handler_tls, &target).await?;
    Ok((ws, accept))
}

/// Copies messages both ways until one side ends; returns why.
async fn bridge<C>(
    mut client: WebSocketStream<C>,
    mut handler: HandlerWs,
    ping: Option<Duration>,
) -> &'static str
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ticker = tokio::time::interval(ping.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = client.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if handler.send(Message::Binary(b)).await.is_err() {
                        let _ = client.send(broken()).await;
                        return "virt-handler went away";
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if handler.send(Message::binary(t.as_bytes().to_vec())).await.is_err() {
                        let _ = client.send(broken()).await;
                        return "virt-handler went away";
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = handler.send(closing(None)).await;
                    return "the client closed";
                }
                Some(Ok(_)) => {}
            },
            msg = handler.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if client.send(Message::Binary(b)).await.is_err() {
                        let _ = handler.send(closing(None)).await;
                        return "the client went away";
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = client.send(closing(frame)).await;
                    return "virt-handler closed the stream";
                }
                None | Some(Err(_)) => {
                    let _ = client.send(broken()).await;
                    return "virt-handler went away";
                }
                Some(Ok(_)) => {}
            },
            _ = ticker.tick(), if ping.is_some() => {
                if client.send(Message::Ping(Bytes::from_static(b"keep alive"))).await.is_err() {
                    let _ = handler.send(closing(None)).await;
                    return "the client went away (ping)";
                }
            }
        }
    }
}

/// The close frame for the client when the connection to virt-handler broke: 1011, so
/// clients report an error rather than a normal end.
fn broken() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Error,
        reason: "the connection to virt-handler broke".into(),
    }))
}

/// A close frame: the handler's, or a normal closure.
fn closing(frame: Option<CloseFrame>) -> Message {
    Message::Close(Some(frame.unwrap_or(CloseFrame {
        code: CloseCode::Normal,
        reason: "the stream ended".into(),
    })))
}
