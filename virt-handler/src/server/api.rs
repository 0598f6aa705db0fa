//! The accept loop and the routes: `/v1/namespaces/<ns>/virtualmachineinstances/<name>/
//! {console,vnc,pause,unpause}?uid=<vmi uid>`. Only clients whose certificate chains to
//! the CA bundle get past the TLS handshake (virt-api); the uid names the per-VMI
//! directory and is checked to be one before it reaches a path.

use std::sync::Arc;

use bytes::Bytes;
use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::handler_api::valid_uid;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::sessions::Kind;
use super::tls::Reloading;
use super::{Shared, stream};
use crate::{Error, chain};

type Reply = Response<Full<Bytes>>;

pub async fn serve(listener: TcpListener, certs: Reloading, shared: Arc<Shared>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(certs.config());
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&shared, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%remote, error = %e, "connection");
            }
        });
    }
}

/// A plain-text answer (virt-api turns it into a Kubernetes Status).
pub fn text(code: StatusCode, message: impl Into<String>) -> Reply {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(message.into())))
        .expect("a valid response")
}

/// A JSON answer (the guest agent's, in KubeVirt's shape).
fn json(body: &serde_json::Value) -> Reply {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn route(shared: &Arc<Shared>, req: hyper::Request<hyper::body::Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let uid = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("uid="))
        .unwrap_or_default()
        .to_owned();
    let (ns, name, sub) = match parts.as_slice() {
        ["v1", "namespaces", ns, "virtualmachineinstances", name, sub] => {
            (ns.to_string(), name.to_string(), sub.to_string())
        }
        _ => return text(StatusCode::NOT_FOUND, format!("no route {path}")),
    };
    if !valid_uid(&uid) {
        return text(
            StatusCode::BAD_REQUEST,
            "the query needs the VMI's uid (uid=...)",
        );
    }
    let dir = shared.run_dir.vmi(&uid);
    if !dir.path().is_dir() {
        return text(
            StatusCode::NOT_FOUND,
            format!("VMI {ns}/{name} ({uid}) has no directory on this node"),
        );
    }
    let span = tracing::info_span!("vmi", %ns, %name, %uid);
    let method = req.method().clone();
    async move {
        match (method, sub.as_str()) {
            (Method::GET, "console") => {
                stream::upgrade(
                    req,
                    dir.serial_socket(),
                    shared.sessions.open(&uid, Kind::Console),
                )
                .await
            }
            (Method::GET, "vnc") => {
                stream::upgrade(req, dir.vnc_socket(), shared.sessions.open(&uid, Kind::Vnc)).await
            }
            (Method::PUT, "pause" | "unpause") => {
                let pause = sub == "pause";
                match launcher(&dir.socket(), pause).await {
                    Ok(()) => {
                        tracing::info!(pause, "done for virt-api");
                        text(StatusCode::OK, "")
                    }
                    Err(e) => {
                        tracing::warn!(pause, error = %chain(&e), "failed");
                        text(StatusCode::INTERNAL_SERVER_ERROR, chain(&e))
                    }
                }
            }
            (Method::GET, sub) if crate::agent::is_subresource(sub) => {
                match crate::agent::answer(&dir.socket(), sub).await {
                    Ok(body) => json(&body),
                    Err(e) => {
                        tracing::info!(sub, error = %chain(&e), "guest agent request failed");
                        text(StatusCode::INTERNAL_SERVER_ERROR, chain(&e))
                    }
                }
            }
            (m, _) => text(StatusCode::METHOD_NOT_ALLOWED, format!("{m} {path}")),
        }
    }
    .instrument(span)
    .await
}

async fn launcher(socket: &std::path::Path, pause: bool) -> Result<(), Error> {
    let mut c = LauncherClient::connect(socket).await?;
    if pause {
        c.pause().await?;
    } else {
        c.unpause().await?;
    }
    Ok(())
}
