//! The Node's labels: schedulable, KVM usable, and how guests are virtualized, kept in
//! step with the probe and the `kubevirt-config` ConfigMap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::Result;
use crate::config::{self, CONFIG_MAP, ClusterConfig};
use crate::context::Context;

use ferrovirt_node_contract::pod::VIRT_HANDLER_FIELD_MANAGER as FIELD_MANAGER;

/// The cluster configuration now (`kubevirt-config` in `namespace`).
pub async fn cluster_config(
    client: &kube::Client,
    namespace: &str,
    default_emulation: bool,
) -> Result<ClusterConfig> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api.get_opt(CONFIG_MAP).await?;
    Ok(ClusterConfig::from_data(
        cm.as_ref().and_then(|c| c.data.as_ref()),
        default_emulation,
    ))
}

/// Applies the Node's labels (server-side, forced): virt-handler owns these labels and
/// sends all of them each time, so a label it no longer sends is removed. Its Node
/// annotation has a manager of its own (server/), or one apply would drop the other's field.
async fn label(client: &kube::Client, node: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": labels},
    });
    api.patch(
        node,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Labels the Node now and whenever the configuration changes (checked every 30 s). A
/// failure is retried every 2 s and told on the Node as a Warning Event (once per distinct
/// error): without its labels no VMI is scheduled there, which users would otherwise see only
/// as Pending pods.
pub async fn keep_labelled(ctx: Arc<Context>) {
    let mut last: Option<BTreeMap<String, String>> = None;
    let mut told: Option<String> = None;
    loop {
        match cluster_config(&ctx.client, &ctx.namespace, ctx.use_emulation_default).await {
            Ok(c) => {
                let cpu_manager = c.feature_gates.contains(config::CPU_MANAGER_FEATURE_GATE)
                    && config::static_cpu_manager(ctx.cpu_manager_state.as_deref());
                let realtime =
                    config::realtime_capable(std::path::Path::new(config::RT_RUNTIME_SYSCTL));
                let labels = config::node_labels(&ctx.kvm, c.use_emulation, cpu_manager, realtime);
                if last.as_ref() != Some(&labels) {
                    match label(&ctx.client, &ctx.node, &labels).await {
                        Ok(()) => {
                            tracing::info!(node = %ctx.node, ?labels, "node labelled");
                            last = Some(labels);
                            told = None;
                        }
                        Err(e) => {
                            let error = crate::chain(&e);
                            tracing::warn!(node = %ctx.node, %error, "labelling the node failed");
                            if told.as_ref() != Some(&error) {
                                ctx.warn_node(
                                    "FailedNodeLabel",
                                    format!("virt-handler cannot label its Node: {error}"),
                                )
                                .await;
                                told = Some(error);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %crate::chain(&e), "reading kubevirt-config failed"),
        }
        tokio::time::sleep(Duration::from_secs(if last.is_some() { 30 } else { 2 })).await;
    }
}
