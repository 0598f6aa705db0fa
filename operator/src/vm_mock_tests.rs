//! The VM controller's write sequences against the mock API ([`crate::mock_api`]): each
//! request in order, with what it carries.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::mock_api::{Expect, conflict, context};

const VMS: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines";
const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances";

fn vm(run_strategy: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm1", "namespace": "ns", "uid": "u-vm", "generation": 1, "resourceVersion": "10"},
        "spec": {"runStrategy": run_strategy, "template": {"spec": {"domain": {"devices": {}}}}},
    }))
    .unwrap()
}

/// `vm` as the API server answers a write of it: `status` and resourceVersion `rv`.
fn written(vm: &VirtualMachine, status: &Value, rv: &str) -> Value {
    let mut v = serde_json::to_value(vm).unwrap();
    v["metadata"]["resourceVersion"] = json!(rv);
    v["status"] = status.clone();
    v
}

/// The JSON patch's operations must test resourceVersion `rv` first.
fn tests_version(ops: &Value, rv: &str) {
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        "{ops}"
    );
}

/// The write of `vm`'s whole status, guarded by its version 10 and answered with version
/// 12; `check` looks at the status written.
fn status_write(vm: &VirtualMachine, check: impl Fn(&Value) + Send + 'static) -> Expect {
    Expect::new(
        Method::PATCH,
        format!("{VMS}/vm1/status?"),
        written(vm, &json!({}), "12"),
    )
    .checking(move |ops| {
        tests_version(ops, "10");
        assert_eq!(ops[1]["path"], "/status");
        check(&ops[1]["value"]);
    })
}

#[tokio::test]
async fn a_start_creates_the_vmi_and_its_watch_event_brings_the_one_status_write() {
    let (ctx, mut api) = context();
    let vm = vm("Always");
    let mut created = instance_for(&vm);
    created.metadata.uid = Some("u-vmi".into());
    created.metadata.resource_version = Some("11".into());
    let expected = vec![
        Expect::new(
            Method::POST,
            format!("{VMIS}?"),
            serde_json::to_value(&created).unwrap(),
        )
        .status(StatusCode::CREATED)
        .checking(|vmi| {
            assert_eq!(
                vmi["metadata"]["finalizers"],
                json!([crate::vmi_controller::FINALIZER]),
                "the VMI controller's finalizer comes with the create"
            );
            let owner = &vmi["metadata"]["ownerReferences"][0];
            assert_eq!(
                (&owner["uid"], &owner["controller"]),
                (&json!("u-vm"), &json!(true))
            );
        }),
    ];
    // The create alone: the worker is free for the next VM after one round trip.
    let (result, seen) = api.serve(expected, 1, reconcile_vm(&vm, &ctx)).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(crate::context::STALE_CACHE_RETRY)
    );
    assert_eq!(seen.events, ["SuccessfulCreate"]);
    assert_eq!(seen.requests, [format!("POST {VMIS}?")]);

    // Its VMI not yet in the cache: no second create (it would be refused as
    // AlreadyExists) and no status; the VMI's watch event brings the next pass.
    let (result, seen) = api.serve(vec![], 0, reconcile_vm(&vm, &ctx)).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(crate::context::STALE_CACHE_RETRY)
    );
    assert!(seen.requests.is_empty(), "{seen:?}");

    // The VMI in the cache: the status is written once, of that VMI.
    api.cache(created);
    let expected = vec![status_write(&vm, |status| {
        assert_eq!(status["created"], json!(true), "{status}");
        assert_eq!(status["runStrategy"], json!("Always"), "{status}");
        assert_eq!(status["printableStatus"], json!("Starting"), "{status}");
    })];
    let (result, seen) = api.serve(expected, 0, reconcile_vm(&vm, &ctx)).await;
    assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    assert!(seen.events.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_start_request_is_dropped_in_the_pass_that_creates_its_vmi() {
    let (ctx, mut api) = context();
    let mut vm = vm("Manual");
    vm.status = Some(
        serde_json::from_value(json!({"stateChangeRequests": [{"action": "Start"}]})).unwrap(),
    );
    let mut created = serde_json::to_value(instance_for(&vm)).unwrap();
    created["metadata"]["uid"] = json!("u-vmi");
    created["metadata"]["resourceVersion"] = json!("11");
    let expected = vec![
        Expect::new(Method::POST, format!("{VMIS}?"), created).status(StatusCode::CREATED),
        status_write(&vm, |status| {
            // Left in place, a VMI that ended before the cache showed it would be
            // started again.
            assert_eq!(status["stateChangeRequests"], Value::Null, "{status}");
            assert_eq!(status["created"], json!(true), "{status}");
        }),
    ];
    let (result, seen) = api.serve(expected, 1, reconcile_vm(&vm, &ctx)).await;
    assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(seen.events, ["SuccessfulCreate"]);
}

#[tokio::test]
async fn a_lost_race_on_the_status_is_retried_at_once() {
    let (ctx, mut api) = context();
    let vm = vm("Halted");
    let expected = vec![
        Expect::new(
            Method::PATCH,
            format!("{VMS}/vm1/status?"),
            conflict("virtualmachines.kubevirt.io \"vm1\""),
        )
        .status(StatusCode::CONFLICT)
        .checking(|ops| tests_version(ops, "10")),
    ];
    let (result, seen) = api.serve(expected, 0, reconcile_vm(&vm, &ctx)).await;
    let e = result.expect_err("a lost race fails the reconcile");
    assert!(e.is_conflict(), "{e:?}");
    assert_eq!(
        error_policy(Arc::new(vm), &e, ctx),
        Action::requeue(Duration::from_millis(200)),
        "a lost race is retried at once, without the back-off"
    );
    assert!(seen.events.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_rerun_after_a_crash_stores_its_start_request_before_deleting_the_vmi() {
    let (ctx, mut api) = context();
    let vm = vm("RerunOnFailure");
    let mut vmi = instance_for(&vm);
    vmi.metadata.uid = Some("u-vmi".into());
    vmi.status = Some(
        serde_json::from_value(json!({
            "phase": "Failed", "reason": "GuestCrashed",
            "phaseTransitionTimestamps": [{"phase": "Running"}, {"phase": "Failed"}],
            "conditions": [{"type": "Ready", "status": "False", "reason": "GuestCrashed", "message": "boom"}],
        }))
        .unwrap(),
    );
    api.cache(vmi.clone());
    let requests = json!({"stateChangeRequests": [{"action": "Start"}]});
    let mut deleted = serde_json::to_value(&vmi).unwrap();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-12-03T07:00:00Z");
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMS}/vm1/status?"), written(&vm, &requests, "11"))
            .checking(|ops| {
                tests_version(ops, "10");
                assert_eq!(
                    ops[1],
                    json!({"op": "add", "path": "/status/stateChangeRequests", "value": [{"action": "Start"}]})
                );
            }),
        Expect::new(Method::DELETE, format!("{VMIS}/vm1?"), deleted).checking(|body| {
            assert_eq!(body["preconditions"]["uid"], json!("u-vmi"), "{body}");
        }),
        Expect::new(Method::PATCH, format!("{VMS}/vm1/status?"), written(&vm, &requests, "12"))
            .checking(|ops| {
                // Guarded by the version the Start request's write answered.
                tests_version(ops, "11");
                let status = &ops[1]["value"];
                assert_eq!(
                    status["stateChangeRequests"],
                    json!([{"action": "Start"}]),
                    "kept until the new VMI exists: {status}"
                );
                assert_eq!(status["printableStatus"], json!("Stopped"), "{status}");
            }),
    ];
    let (result, seen) = api.serve(expected, 2, reconcile_vm(&vm, &ctx)).await;
    assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    let mut events = seen.events.clone();
    events.sort();
    assert_eq!(events, ["GuestCrashed", "SuccessfulDelete"]);
    assert_eq!(
        seen.requests,
        [
            format!("PATCH {VMS}/vm1/status?"),
            format!("DELETE {VMIS}/vm1?"),
            format!("PATCH {VMS}/vm1/status?"),
        ]
    );
}
