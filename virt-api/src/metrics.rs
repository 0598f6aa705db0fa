//! virt-api's metrics: requests by subresource and answer code, served by the runtime
//! crate's `/metrics` + `/healthz` endpoint on its own plain-HTTP port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `virtualmachines/start`, ... or `discovery`
    pub subresource: String,
    pub code: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferrovirt_virt_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by subresource and HTTP code",
            requests.clone(),
        );
        Self { registry, requests }
    }
}

impl Metrics {
    pub fn count(&self, subresource: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                subresource: subresource.to_string(),
                code,
            })
            .inc();
    }
}

impl runtime::Endpoint for Metrics {
    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
