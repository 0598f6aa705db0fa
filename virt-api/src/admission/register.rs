//! Writes virt-api's serving CA into the webhook configurations that point at it (every
//! webhook's `clientConfig.caBundle`), the way [`crate::register`] does for the
//! APIServices. The configurations are created by whoever installs Ferrovirt; until they
//! exist (or virt-api may write them) this keeps trying, less often as time goes on.

use std::time::Duration;

use k8s_openapi::ByteString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};

/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(4);

/// A webhook configuration virt-api serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    Mutating(String),
    Validating(String),
}

/// Writes `ca_pem` into each configuration, retrying until all are done.
pub async fn inject_ca_bundle(client: Client, configs: Vec<Config>, ca_pem: String) {
    let bundle = ByteString(ca_pem.into_bytes());
    let mut pending = configs;
    let mut wait = Duration::from_secs(1);
    let mut logged = false;
    while !pending.is_empty() {
        let mut left = Vec::new();
        for config in pending {
            match write(&client, &config, &bundle).await {
                Ok(n) => tracing::info!(?config, webhooks = n, "webhook caBundle written"),
                Err(e) => {
                    if !logged {
                        tracing::warn!(?config, error = %runtime::chain(&e),
                            "cannot write the webhook caBundle yet; retrying");
                    }
                    left.push(config);
                }
            }
        }
        logged = logged || !left.is_empty();
        pending = left;
        if !pending.is_empty() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
    }
}

/// Sets the caBundle of every webhook of one configuration; returns how many it has.
async fn write(client: &Client, config: &Config, bundle: &ByteString) -> kube::Result<usize> {
    let (kind, name) = match config {
        Config::Mutating(n) => ("MutatingWebhookConfiguration", n),
        Config::Validating(n) => ("ValidatingWebhookConfiguration", n),
    };
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let mut c = api.get(name).await?;
    let bundle = serde_json::to_value(bundle).expect("bytes serialize");
    let hooks = c.data["webhooks"].as_array_mut();
    let n = hooks.as_ref().map_or(0, |h| h.len());
    for hook in hooks.into_iter().flatten() {
        hook["clientConfig"]["caBundle"] = bundle.clone();
    }
    api.replace(name, &PostParams::default(), &c).await?;
    Ok(n)
}
