//! The VMI controller's write sequences against the mock API ([`crate::mock_api`]): the
//! finalizer, its lost race, and the launcher pod's create followed by the guarded status.

use std::sync::Arc;
use std::time::Duration;

use crds::VirtualMachineInstance;
use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use crate::mock_api::{Expect, context};
use crate::vmi_controller::{FINALIZER, error_policy, reconcile};

const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances";
const PODS: &str = "/api/v1/namespaces/ns/pods";

fn vmi(finalizers: Value) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "g", "namespace": "ns", "uid": "u-vmi", "resourceVersion": "5", "finalizers": finalizers},
        "spec": {"domain": {"memory": {"guest": "64Mi"}, "devices": {}}},
    }))
    .unwrap()
}

/// `v` as the API server answers a write of it, at resourceVersion `rv`.
fn answered(v: &VirtualMachineInstance, rv: &str) -> Value {
    let mut o = serde_json::to_value(v).unwrap();
    o["metadata"]["resourceVersion"] = json!(rv);
    o
}

#[tokio::test]
async fn a_new_vmi_gets_the_finalizer_first_testing_the_list_it_was_read_with() {
    let (ctx, mut api) = context();
    let v = vmi(Value::Null);
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            assert_eq!(
                ops,
                &json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
                ])
            );
        }),
    ];
    let (result, _) = api
        .serve(expected, 0, reconcile(Arc::new(v.clone()), ctx.clone()))
        .await;
    assert_eq!(
        result.unwrap(),
        Action::await_change(),
        "the write's own watch event brings the next pass"
    );

    // Another finalizer there already: appended after it, that list tested.
    let mut other = vmi(json!(["example.org/keep"]));
    // Another VMI: the first one's own write holds a pass of it back until the cache shows it.
    other.metadata.uid = Some("u-other".into());
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&other, "7")).checking(|ops| {
            assert_eq!(
                ops,
                &json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["example.org/keep"]},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
                ])
            );
        }),
    ];
    let (result, _) = api
        .serve(expected, 0, reconcile(Arc::new(other), ctx))
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_finalizer_list_changed_meanwhile_is_a_lost_race_retried_at_once() {
    let (ctx, mut api) = context();
    let v = vmi(Value::Null);
    // The API server's answer to a JSON patch whose test failed.
    let invalid = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Invalid", "code": 422,
        "message": "the server rejected our request due to an error in our request",
    });
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), invalid)
            .status(StatusCode::UNPROCESSABLE_ENTITY),
    ];
    let (result, _) = api
        .serve(expected, 0, reconcile(Arc::new(v.clone()), ctx.clone()))
        .await;
    let e = result.expect_err("the lost race fails the pass");
    assert!(e.is_conflict(), "{e:?}");
    assert_eq!(
        error_policy(Arc::new(v), &e, ctx),
        Action::requeue(Duration::from_millis(200))
    );
}

#[tokio::test]
async fn the_launcher_pod_is_created_then_the_status_says_scheduling_guarded() {
    let (ctx, mut api) = context();
    let v = vmi(json!([FINALIZER]));
    let pod_name = crate::pod::pod_name("g", "u-vmi");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": "ns", "uid": "u-pod", "resourceVersion": "8",
                     "labels": {"kubevirt.io/created-by": "u-vmi"}},
        "spec": {"containers": [{"name": "compute", "image": "i"}]},
        "status": {"phase": "Pending"},
    });
    let name = pod_name.clone();
    let expected = vec![
        Expect::new(Method::POST, format!("{PODS}?"), pod)
            .status(StatusCode::CREATED)
            .checking(move |p| {
                assert_eq!(p["metadata"]["name"], json!(name));
                assert_eq!(
                    p["metadata"]["labels"]["kubevirt.io/created-by"],
                    json!("u-vmi")
                );
            }),
        Expect::new(
            Method::PATCH,
            format!("{VMIS}/g/status?"),
            answered(&v, "9"),
        )
        .checking(|ops| {
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "5"})
            );
            let status = &ops[1]["value"];
            assert_eq!(status["phase"], json!("Scheduling"), "{status}");
            assert_eq!(status["activePods"], json!({"u-pod": ""}), "{status}");
        }),
    ];
    let (result, seen) = api.serve(expected, 1, reconcile(Arc::new(v), ctx)).await;
    result.unwrap();
    assert_eq!(seen.events, ["SuccessfulCreate"]);
}
