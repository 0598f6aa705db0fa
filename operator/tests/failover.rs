//! Two operator replicas: one leads, the other stands by; when the leader is killed the
//! standby takes over within seconds, and no VM ever gets a second instance.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crds::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_tests::{TestNamespace, shared};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_and_never_doubles_an_instance() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    ensure_node(&client, NODE, json!({})).await;
    let ns = TestNamespace::create(cp, "failover").await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");

    let mut a = Some(start_operator(cp, "replica-a", "failover"));
    let mut b = Some(start_operator(cp, "replica-b", "failover"));
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("failover")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    };
    let leader = eventually("a leader", Duration::from_secs(30), || {
        holder(leases.clone())
    })
    .await;

    for i in 0..5 {
        vms.create(
            &PostParams::default(),
            &vm_manifest(
                &format!("vm{i}"),
                json!({"runStrategy": "Always"}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    }
    let all_started = || {
        let vmis = vmis.clone();
        async move { (vmis.list(&ListParams::default()).await.unwrap().items.len() == 5).then_some(()) }
    };
    eventually(
        "5 VMIs under the first leader",
        Duration::from_secs(30),
        all_started,
    )
    .await;
    let before: Vec<(String, Option<String>)> = vmis
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|v| (v.name_any(), v.uid()))
        .collect();

    // Kill the leader hard: no chance to release the lease.
    let (dead, survivor) = if leader == "replica-a" {
        (a.take(), b.as_ref())
    } else {
        (b.take(), a.as_ref())
    };
    let killed_at = Instant::now();
    drop(dead);
    let survivor = survivor.unwrap();
    let new_leader = eventually(
        "the standby to take the lease",
        Duration::from_secs(20),
        || {
            let leases = leases.clone();
            let leader = leader.clone();
            async move { holder(leases).await.filter(|h| *h != leader) }
        },
    )
    .await;
    assert_eq!(new_leader, survivor.identity);

    // The new leader acts: a new VM gets its instance.
    vms.create(
        &PostParams::default(),
        &vm_manifest("after", json!({"runStrategy": "Always"}), json!({})),
    )
    .await
    .unwrap();
    eventually(
        &format!(
            "the new leader to start VM 'after'; its log:\n{}",
            survivor.log_tail()
        ),
        Duration::from_secs(30),
        || {
            let vmis = vmis.clone();
            async move { vmis.get_opt("after").await.unwrap().map(|_| ()) }
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "takeover and first action took {took:?}"
    );

    // Nothing was started twice: same VMIs as before, one launcher pod each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vmis.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(after.len(), 6);
    for (name, uid) in &before {
        let now = after
            .iter()
            .find(|v| &v.name_any() == name)
            .expect("VMI still there");
        assert_eq!(
            &now.uid(),
            uid,
            "VMI {name} was replaced across the failover"
        );
    }
    for v in &after {
        let selector = format!("kubevirt.io/created-by={}", v.uid().unwrap());
        let n = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .len();
        assert_eq!(n, 1, "VMI {} has {n} launcher pods", v.name_any());
    }
    let metrics = survivor.metrics();
    assert!(metrics.contains("ferrovirt_operator_leader 1"), "{metrics}");
}
