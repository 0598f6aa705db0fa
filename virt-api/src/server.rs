//! The HTTPS accept loop: rustls handshake, the verified client certificate's common name,
//! then HTTP/1.1 requests to [`crate::handler`] (console and VNC websockets to
//! [`crate::console`]).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authn::common_name;
use crate::handler::{App, Peer, handle, status_reply};
use crate::status::Status;
use crate::{Error, Result};

/// Largest request body read (the options documents are tiny).
const MAX_BODY: usize = 64 * 1024;
/// Largest AdmissionReview read: an object and its old version, each up to the 1.5 MiB
/// etcd allows, with room for the review around them.
const MAX_ADMISSION_BODY: usize = 4 * 1024 * 1024;

/// Binds `addr`; returns the bound address and the serving task.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake");
                        return;
                    }
                };
                let first = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first());
                let peer = Arc::new(Peer {
                    verified: first.is_some(),
                    common_name: first.and_then(|c| common_name(c)),
                });
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let peer = peer.clone();
                    async move {
                        if let crate::route::Route::Subresource(t) =
                            crate::route::parse(req.uri().path())
                            && crate::console::is_stream(req.method(), &t)
                        {
                            return Ok(crate::console::handle(&app, &peer, req, &t).await);
                        }
                        let (parts, body) = req.into_parts();
                        let max = if crate::admission::Hook::from_path(parts.uri.path()).is_some() {
                            MAX_ADMISSION_BODY
                        } else {
                            MAX_BODY
                        };
                        let limited = http_body_util::Limited::new(body, max);
                        let reply = match limited.collect().await {
                            Ok(b) => {
                                handle(
                                    &app,
                                    &peer,
                                    &parts.method,
                                    parts.uri.path(),
                                    &parts.headers,
                                    &b.to_bytes(),
                                )
                                .await
                            }
                            Err(_) => status_reply(&Status::bad_request(
                                "request body too large or unreadable",
                            )),
                        };
                        Ok::<_, std::convert::Infallible>(reply)
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(%remote, error = %e, "connection");
                }
            });
        }
    });
    Ok((bound, task))
}
