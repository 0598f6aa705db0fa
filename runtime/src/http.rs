//! One HTTP endpoint per binary: `/metrics` (Prometheus or OpenMetrics text from the
//! component's own encoder) and `/healthz` (`ok` while the component says it is healthy).
//! The address comes from a typed flag, so a typo fails at parse time; a bind failure is an
//! error, never a silently missing endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{Error, Result};

/// What the endpoint serves: the component's metrics text and its health.
pub trait Endpoint: Send + Sync + 'static {
    /// The body of `/metrics`.
    fn metrics(&self) -> String;
    /// The `Content-Type` of that body.
    fn content_type(&self) -> &'static str {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    }
    /// `Err(why)` makes `/healthz` answer 503 with the reason.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Binds `addr` and serves [`Endpoint`] until the returned task is aborted. Returns the
/// bound address (useful with port 0).
pub async fn serve<E: Endpoint>(
    addr: SocketAddr,
    endpoint: Arc<E>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(addr = %bound, "serving /metrics and /healthz");
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection");
                    continue;
                }
            };
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let endpoint = endpoint.clone();
                    async move { Ok::<_, Infallible>(respond(&*endpoint, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok((bound, task))
}

fn respond<E: Endpoint + ?Sized>(endpoint: &E, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            (StatusCode::OK, endpoint.content_type(), endpoint.metrics())
        }
        (&hyper::Method::GET, "/healthz" | "/readyz") => match endpoint.health() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        (&hyper::Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
