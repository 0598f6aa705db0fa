//! The Node object and its heartbeat (Lease in kube-node-lease and the Ready condition).

use crate::{
    Ctx, Result,
    machine::{self, Capacity},
};
use chrono::{SecondsFormat, Utc};
use ferrovirt_node_contract::pod::KVM_RESOURCE;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "devnode";
const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Resources as KubeVirt's device plugins advertise them, plus the machine's.
pub fn resources(c: &Capacity) -> Value {
    json!({
        "cpu": c.cpu,
        "memory": c.memory,
        "pods": c.pods.to_string(),
        "ephemeral-storage": c.ephemeral_storage,
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        KVM_RESOURCE: "1k",
        "devices.kubevirt.io/tun": "1k",
        "devices.kubevirt.io/vhost-net": "1k",
    })
}

/// The Node's metadata and spec as devnode applies them.
pub fn node_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine::arch(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": machine::arch(),
            },
        },
        "spec": {},
    })
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    since: &str,
    beat: &str,
) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastHeartbeatTime": beat, "lastTransitionTime": since})
}

/// The Node's status: capacity, conditions (Ready=True), addresses, system info.
pub fn node_status(name: &str, c: &Capacity, ready_since: &str, beat: &str) -> Value {
    let res = resources(c);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "capacity": res,
            "allocatable": res,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "devnode has sufficient memory available", ready_since, beat),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "devnode has no disk pressure", ready_since, beat),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "devnode has sufficient PID available", ready_since, beat),
                condition("Ready", "True", "KubeletReady", "devnode is posting ready status", ready_since, beat),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": c.info,
        },
    })
}

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Removes the not-ready taint the API server puts on every new Node. In a full cluster
/// the node lifecycle controller does this once the node is Ready; devnode's clusters may
/// not run that controller, and devnode only ever reports Ready, so it does it itself.
async fn clear_not_ready_taint(nodes: &Api<Node>, name: &str) -> Result<()> {
    let node = nodes.get(name).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    if taints.iter().all(|t| t.key != NOT_READY_TAINT) {
        return Ok(());
    }
    let kept: Vec<_> = taints
        .into_iter()
        .filter(|t| t.key != NOT_READY_TAINT)
        .collect();
    let patch = json!({"spec": {"taints": kept}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    nodes.patch(name, &params, &Patch::Merge(&patch)).await?;
    tracing::info!(node = name, "removed the {NOT_READY_TAINT} taint");
    Ok(())
}

fn pp() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates the Node and reports it Ready.
/// Returns the time Ready became True, for the heartbeat to keep.
pub async fn register(ctx: &Ctx, c: &Capacity) -> Result<String> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    nodes
        .patch(
            &ctx.node_name,
            &pp(),
            &Patch::Apply(node_object(&ctx.node_name)),
        )
        .await?;
    let t = now();
    nodes
        .patch_status(
            &ctx.node_name,
            &pp(),
            &Patch::Apply(node_status(&ctx.node_name, c, &t, &t)),
        )
        .await?;
    clear_not_ready_taint(&nodes, &ctx.node_name).await?;
    tracing::info!(node = %ctx.node_name, cpu = %c.cpu, memory = %c.memory, "node registered");
    Ok(t)
}

async fn beat(ctx: &Ctx, c: &Capacity, ready_since: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node = nodes.get(&ctx.node_name).await;
    let node = match node {
        Ok(n) => n,
        // Someone deleted the Node: register it again, as kubelet does.
        Err(kube::Error::Api(e)) if e.code == 404 => {
            nodes
                .patch(
                    &ctx.node_name,
                    &pp(),
                    &Patch::Apply(node_object(&ctx.node_name)),
                )
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    let t = now();
    nodes
        .patch_status(
            &ctx.node_name,
            &pp(),
            &Patch::Apply(node_status(&ctx.node_name, c, ready_since, &t)),
        )
        .await?;
    clear_not_ready_taint(&nodes, &ctx.node_name).await?;
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let micro = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": ctx.node_name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": ctx.node_name,
                                 "uid": node.metadata.uid.unwrap_or_default()}],
        },
        "spec": {"holderIdentity": ctx.node_name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro},
    });
    leases
        .patch(&ctx.node_name, &pp(), &Patch::Apply(lease))
        .await?;
    Ok(())
}

/// Renews the Lease and the Ready heartbeat every 10 s, forever.
pub async fn heartbeat(ctx: Arc<Ctx>, c: Capacity, ready_since: String) {
    loop {
        if let Err(e) = beat(&ctx, &c, &ready_since).await {
            tracing::warn!(error = %crate::chain(&e), "node heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
