//! The shared endpoint over a real TCP connection: metrics from a prometheus-client
//! registry, health that can fail, 404 and 405, and a bind failure that is an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrovirt_runtime::{Endpoint, serve};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Component {
    registry: Registry,
    requests: Counter,
    healthy: AtomicBool,
}

impl Endpoint for Component {
    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
    fn health(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("watch stream down".into())
        }
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_metrics_health_and_refusals() {
    let mut registry = Registry::default();
    let requests = Counter::default();
    registry.register("test_requests", "Requests", requests.clone());
    let component = Arc::new(Component {
        registry,
        requests,
        healthy: AtomicBool::new(true),
    });
    let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), component.clone())
        .await
        .unwrap();
    component.requests.inc();

    let metrics = get(addr, "GET", "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("test_requests_total 1"), "{metrics}");
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );

    assert!(get(addr, "GET", "/healthz").await.ends_with("\r\n\r\nok\n"));
    component.healthy.store(false, Ordering::Relaxed);
    let sick = get(addr, "GET", "/healthz").await;
    assert!(
        sick.starts_with("HTTP/1.1 503") && sick.ends_with("watch stream down\n"),
        "{sick}"
    );

    assert!(get(addr, "GET", "/nope").await.starts_with("HTTP/1.1 404"));
    assert!(
        get(addr, "POST", "/metrics")
            .await
            .starts_with("HTTP/1.1 405")
    );

    // The port is taken: a second server on it fails with the address in the error.
    let err = serve(addr, component).await.unwrap_err();
    assert_eq!(err.to_string(), format!("binding {addr}"));
    task.abort();
}
