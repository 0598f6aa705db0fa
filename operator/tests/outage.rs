//! An API server outage longer than the lease: the operator stops leading while it cannot
//! renew, stays alive, wins the lease back once the API server returns and reconciles
//! again. In a test binary of its own: the outage hits everything using its control plane.

mod common;

use std::time::Duration;

use common::*;
use crds::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_tests::{TestNamespace, shared};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const LEASE: &str = "outage";

#[tokio::test]
async fn the_operator_survives_an_api_server_outage_longer_than_its_lease_and_leads_again() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    ensure_node(&client, NODE, json!({})).await;
    let ns = TestNamespace::create(cp, "outage").await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    // The lease lasts 4 s (common::start_operator): a 20 s outage is five times that.
    let op = start_operator(cp, "solo", LEASE);
    vms.create(
        &PostParams::default(),
        &vm_manifest("before", json!({"runStrategy": "Always"}), json!({})),
    )
    .await
    .unwrap();
    eventually(
        &format!("VMI 'before'; operator log:\n{}", op.log_tail()),
        Duration::from_secs(30),
        || {
            let vmis = vmis.clone();
            async move { vmis.get_opt("before").await.unwrap().map(|_| ()) }
        },
    )
    .await;

    cp.restart_apiserver(Duration::from_secs(20)).await.unwrap();
    let back = Timestamp::now();

    // The operator is still there, and leads again: it renews the lease after the outage.
    let client = cp.client().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let started = std::time::Instant::now();
    let holder = loop {
        if op.exited() {
            panic!(
                "the operator exited after the API server outage; its log:\n{}",
                op.log_tail()
            );
        }
        let spec = leases
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec);
        if let Some(spec) = spec.filter(|s| s.renew_time.as_ref().is_some_and(|t| t.0 > back)) {
            break spec.holder_identity;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lease was not renewed after the outage; operator log:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(holder.as_deref(), Some("solo"));

    // And it reconciles: a new VM gets its instance and launcher pod.
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    vms.create(
        &PostParams::default(),
        &vm_manifest("after", json!({"runStrategy": "Always"}), json!({})),
    )
    .await
    .unwrap();
    let vmi = eventually(
        &format!("VMI 'after'; operator log:\n{}", op.log_tail()),
        Duration::from_secs(30),
        || {
            let vmis = vmis.clone();
            async move { vmis.get_opt("after").await.unwrap() }
        },
    )
    .await;
    let selector = format!("kubevirt.io/created-by={}", vmi.uid().unwrap());
    eventually(
        &format!(
            "the launcher pod of 'after'; operator log:\n{}",
            op.log_tail()
        ),
        Duration::from_secs(30),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                pods.list(&ListParams::default().labels(&selector))
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .next()
            }
        },
    )
    .await;
    let metrics = op.metrics();
    assert!(metrics.contains("ferrovirt_operator_leader 1"), "{metrics}");
    assert!(
        !op.exited(),
        "the operator exited; its log:\n{}",
        op.log_tail()
    );
}
