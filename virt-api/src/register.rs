//! Writes the serving CA into the APIServices that point at virt-api (`spec.caBundle`),
//! so the aggregator trusts the certificate made at this start. The APIServices are
//! created by whoever installs Ferrovirt (the test harness, later the chart); until they
//! exist this keeps trying.

use std::time::Duration;

use k8s_openapi::ByteString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// Patches `caBundle` of each named APIService, retrying every second until all are done.
pub async fn inject_ca_bundle(client: Client, names: Vec<String>, ca_pem: String) {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk(&gvk));
    let patch = json!({"spec": {"caBundle": ByteString(ca_pem.into_bytes())}});
    let mut pending = names;
    let mut logged = false;
    while !pending.is_empty() {
        let mut left = Vec::new();
        for name in pending {
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(apiservice = %name, "caBundle written"),
                Err(e) => {
                    if !logged {
                        tracing::warn!(apiservice = %name, error = %runtime::chain(&e),
                            "cannot write caBundle yet; retrying");
                    }
                    left.push(name);
                }
            }
        }
        logged = logged || !left.is_empty();
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
