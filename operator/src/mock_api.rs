//! The mock-API tier (in the style of kube-rs/controller-rs's `fixtures.rs`): a kube
//! Client over a mock service, and an API server stand-in that answers the requests a
//! reconcile is expected to send, one by one in order, checking each. Events (published in
//! the background, in any order) are answered on the side and collected. For the write
//! sequences that would otherwise need the slow control-plane tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crds::VirtualMachineInstance;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use crate::metrics::Metrics;
use crate::pod::LauncherConfig;
use crate::{Context, Settings};

/// One expected request: its method, the path and query it must start with, and the
/// answer (status and JSON body) given to it; `check` looks at its JSON body.
pub(crate) struct Expect {
    pub method: Method,
    pub path: String,
    pub check: Box<dyn Fn(&Value) + Send>,
    pub status: StatusCode,
    pub answer: Value,
}

impl Expect {
    pub fn new(method: Method, path: impl Into<String>, answer: Value) -> Self {
        Expect {
            method,
            path: path.into(),
            check: Box::new(|_| {}),
            status: StatusCode::OK,
            answer,
        }
    }

    pub fn checking(mut self, check: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// The API server's answer to a lost race (a Conflict Status).
pub(crate) fn conflict(what: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Conflict", "code": 409,
        "message": format!("Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"),
    })
}

/// The stand-in API server's side of the mock.
pub(crate) struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    /// The VMI cache the context reads.
    pub vmis: Writer<VirtualMachineInstance>,
    /// The launcher pod cache the context reads.
    pub pods: Writer<Pod>,
}

/// What the stand-in saw: the requests it answered in order (method and path), and the
/// reasons of the Events published.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub requests: Vec<String>,
    pub events: Vec<String>,
}

impl ApiServer {
    /// Puts `vmi` in the controllers' VMI cache.
    pub fn cache(&mut self, vmi: VirtualMachineInstance) {
        self.vmis.apply_watcher_event(&watcher::Event::Apply(vmi));
    }

    /// Puts `pod` in the controllers' pod cache.
    pub fn cache_pod(&mut self, pod: Pod) {
        self.pods.apply_watcher_event(&watcher::Event::Apply(pod));
    }

    /// Answers `expected` in order while `reconcile` runs; then answers the Events still
    /// coming for up to `events` of them (they are published in the background). Panics
    /// naming the request that was not the one expected.
    pub async fn serve<F: std::future::Future>(
        &mut self,
        expected: Vec<Expect>,
        events: usize,
        reconcile: F,
    ) -> (F::Output, Seen) {
        let handle = &mut self.handle;
        let server = async move {
            let mut seen = Seen::default();
            let mut expected = expected.into_iter();
            let mut next = expected.next();
            while next.is_some() || seen.events.len() < events {
                let Some((request, send)) =
                    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                        .await
                        .ok()
                        .flatten()
                else {
                    panic!(
                        "no request came; still expected {:?}, saw {seen:?}",
                        next.as_ref().map(|e| (&e.method, &e.path))
                    );
                };
                let method = request.method().clone();
                let path = request.uri().to_string();
                let body = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if method == Method::POST && path.contains("/events") {
                    seen.events
                        .push(body["reason"].as_str().unwrap_or_default().to_string());
                    send.send_response(response(StatusCode::CREATED, &body));
                    continue;
                }
                let Some(e) = next.take() else {
                    panic!("unexpected request {method} {path} after the expected ones: {body}");
                };
                assert_eq!(
                    (&method, path.starts_with(&e.path)),
                    (&e.method, true),
                    "request {} was {method} {path}, expected {} {}: {body}",
                    seen.requests.len() + 1,
                    e.method,
                    e.path
                );
                (e.check)(&body);
                seen.requests.push(format!("{method} {}", e.path));
                send.send_response(response(e.status, &e.answer));
                next = expected.next();
            }
            seen
        };
        tokio::join!(reconcile, server)
    }
}

fn response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A context whose client talks to the returned stand-in, with empty caches.
pub(crate) fn context() -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (vmi_store, vmis) = reflector::store::<VirtualMachineInstance>();
    let (pod_store, pods) = reflector::store::<Pod>();
    let settings = Settings {
        launcher: LauncherConfig {
            image: "ferrovirt/virt-launcher:dev".into(),
            node_run_dir: PathBuf::from("/var/run/ferrovirt"),
        },
        concurrency: 1,
        max_crash_loop_backoff: Duration::from_secs(300),
        config_namespace: "kubevirt".into(),
    };
    let ctx = Context::new(
        client,
        settings,
        Arc::new(Metrics::default()),
        vmi_store,
        pod_store,
    );
    (Arc::new(ctx), ApiServer { handle, vmis, pods })
}
