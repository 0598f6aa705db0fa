//! The VMI controller's write sequences against the mock API ([`crate::mock_api`]): the
//! finalizer, its lost race, the launcher pod's create and, from its watch event, the
//! guarded status (a refused create, one that found the pod there), the node label and
//! Scheduled in one write, a final VMI's pod delete, and a deleted VMI's cleanup (the pod
//! asked to shut the guest down, removed by force once its node is gone, the finalizer
//! released).

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
async fn the_launcher_pod_is_created_then_its_watch_event_brings_scheduling_guarded() {
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
        Expect::new(Method::POST, format!("{PODS}?"), pod.clone())
            .status(StatusCode::CREATED)
            .checking(move |p| {
                assert_eq!(p["metadata"]["name"], json!(name));
                assert_eq!(
                    p["metadata"]["labels"]["kubevirt.io/created-by"],
                    json!("u-vmi")
                );
            }),
    ];
    let (result, seen) = api
        .serve(expected, 1, reconcile(Arc::new(v.clone()), ctx.clone()))
        .await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(Duration::from_secs(5)),
        "no status in the pass that creates the pod: the pod's watch event brings it"
    );
    assert_eq!(seen.events, ["SuccessfulCreate"]);

    // The pod's watch event: it is in the cache, and the status says Scheduling.
    api.cache_pod(serde_json::from_value(pod).unwrap());
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "9")).checking(|ops| {
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "5"})
            );
            let status = &ops[1]["value"];
            assert_eq!(status["phase"], json!("Scheduling"), "{status}");
            assert_eq!(status["activePods"], json!({"u-pod": ""}), "{status}");
        }),
    ];
    let (result, _) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    result.unwrap();
}

#[tokio::test]
async fn a_running_pod_makes_the_vmi_scheduled_with_its_node_label_in_one_write() {
    let (ctx, mut api) = context();
    api.cache_pod(serde_json::from_value(launcher_pod("Running")).unwrap());
    let mut v = vmi(json!([FINALIZER]));
    v.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    v.status = Some(
        serde_json::from_value(json!({"phase": "Scheduling", "activePods": {"u-pod": "n1"}}))
            .unwrap(),
    );
    let expected = vec![
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "5"})
            );
            assert_eq!(
                ops[1],
                json!({"op": "add", "path": "/metadata/labels/kubevirt.io~1nodeName", "value": "n1"})
            );
            let status = &ops[2]["value"];
            assert_eq!(status["phase"], json!("Scheduled"), "{status}");
            assert_eq!(status["nodeName"], json!("n1"), "{status}");
            assert_eq!(ops.as_array().map(Vec::len), Some(3), "{ops}");
        }),
    ];
    let (result, seen) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    result.unwrap();
    assert!(seen.events.is_empty(), "{:?}", seen.events);
}

/// The VMI's launcher pod on node n1, in `phase`, its launcher container waiting, running
/// or ended.
fn launcher_pod(phase: &str) -> Value {
    let state = match phase {
        "Running" => json!({"running": {}}),
        "Pending" => json!({"waiting": {"reason": "ContainerCreating"}}),
        _ => json!({"terminated": {"exitCode": 0}}),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": crate::pod::pod_name("g", "u-vmi"), "namespace": "ns", "uid": "u-pod",
                     "resourceVersion": "3", "labels": {"kubevirt.io/created-by": "u-vmi"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "compute", "image": "i"}]},
        "status": {"phase": phase, "containerStatuses": [{"name": "compute", "ready": phase == "Running",
            "restartCount": 0, "image": "i", "imageID": "", "state": state}]},
    })
}

fn not_found(what: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "NotFound", "code": 404, "message": format!("{what} not found"),
    })
}

/// `v` deleted (its deletionTimestamp set), in `phase`.
fn deleted(mut v: VirtualMachineInstance, phase: &str) -> VirtualMachineInstance {
    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    v.status = Some(serde_json::from_value(json!({"phase": phase})).unwrap());
    v
}

/// The read of node n1, which exists.
fn node_n1() -> Expect {
    Expect::new(
        Method::GET,
        "/api/v1/nodes/n1",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
}

fn pod_path() -> String {
    format!("{PODS}/{}", crate::pod::pod_name("g", "u-vmi"))
}

#[tokio::test]
async fn a_deleted_vmi_whose_guest_runs_asks_the_pod_to_shut_it_down_and_waits() {
    let (ctx, mut api) = context();
    api.cache_pod(serde_json::from_value(launcher_pod("Running")).unwrap());
    let v = deleted(vmi(json!([FINALIZER])), "Running");
    let expected = vec![
        // The node still there: the guest shuts down in its own time.
        node_n1(),
        Expect::new(Method::DELETE, pod_path(), launcher_pod("Running")).checking(|body| {
            assert_eq!(body["gracePeriodSeconds"], json!(45), "{body}");
            assert_eq!(body["preconditions"]["uid"], json!("u-pod"), "{body}");
        }),
    ];
    let (result, seen) = api.serve(expected, 1, reconcile(Arc::new(v), ctx)).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(Duration::from_secs(75)),
        "the pod's updates wake the pass; its deadline and the slack are the fallback"
    );
    assert_eq!(seen.events, ["SuccessfulDelete"]);
}

#[tokio::test]
async fn a_deleted_vmi_is_released_once_its_pod_finished() {
    let (ctx, mut api) = context();
    api.cache_pod(serde_json::from_value(launcher_pod("Succeeded")).unwrap());
    let v = deleted(vmi(json!([FINALIZER])), "Succeeded");
    let expected = vec![
        node_n1(),
        // The finished pod goes with its own grace period, then the finalizer.
        Expect::new(Method::DELETE, pod_path(), launcher_pod("Succeeded")).checking(|body| {
            assert_eq!(body.get("gracePeriodSeconds"), None, "{body}");
        }),
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            assert_eq!(
                ops,
                &json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": [FINALIZER]},
                    {"op": "remove", "path": "/metadata/finalizers/0"},
                ])
            );
        }),
    ];
    let (result, seen) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(seen.events.is_empty(), "{:?}", seen.events);
}

#[tokio::test]
async fn a_deleted_vmi_without_a_pod_reads_the_api_server_then_is_released() {
    let (ctx, mut api) = context();
    let v = deleted(vmi(json!(["example.org/keep", FINALIZER])), "Running");
    let expected = vec![
        // Not in the cache: the API server is asked (the cache may be behind).
        Expect::new(Method::GET, pod_path(), not_found("pod")).status(StatusCode::NOT_FOUND),
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            assert_eq!(
                ops,
                &json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["example.org/keep", FINALIZER]},
                    {"op": "remove", "path": "/metadata/finalizers/1"},
                ])
            );
        }),
    ];
    let (result, _) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_deleted_vmi_whose_node_is_gone_has_its_pod_removed_by_force() {
    let (ctx, mut api) = context();
    api.cache_pod(serde_json::from_value(launcher_pod("Running")).unwrap());
    let v = deleted(vmi(json!([FINALIZER])), "Running");
    let expected = vec![
        Expect::new(Method::GET, "/api/v1/nodes/n1", not_found("node"))
            .status(StatusCode::NOT_FOUND),
        Expect::new(Method::DELETE, pod_path(), launcher_pod("Running")).checking(|body| {
            assert_eq!(body["gracePeriodSeconds"], json!(0), "{body}");
        }),
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")),
    ];
    let (result, _) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_final_vmi_has_its_running_pod_deleted_with_the_grace_period() {
    let (ctx, mut api) = context();
    api.cache_pod(serde_json::from_value(launcher_pod("Running")).unwrap());
    let mut v = vmi(json!([FINALIZER]));
    v.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
    let expected = vec![
        Expect::new(Method::DELETE, pod_path(), launcher_pod("Running")).checking(|body| {
            assert_eq!(body["gracePeriodSeconds"], json!(45), "{body}");
        }),
    ];
    let (result, seen) = api.serve(expected, 1, reconcile(Arc::new(v), ctx)).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(seen.events, ["SuccessfulDelete"]);
}

#[tokio::test]
async fn a_refused_pod_is_told_in_the_status_and_an_event_and_the_pass_fails() {
    let (ctx, mut api) = context();
    let v = vmi(json!([FINALIZER]));
    let forbidden = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Forbidden", "code": 403,
        "message": "pods \"x\" is forbidden: exceeded quota: q",
    });
    let expected = vec![
        Expect::new(Method::POST, format!("{PODS}?"), forbidden).status(StatusCode::FORBIDDEN),
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            assert_eq!(
                ops[0],
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "5"})
            );
            let status = &ops[1]["value"];
            assert_eq!(status["phase"], json!("Pending"), "{status}");
            let c = &status["conditions"][0];
            assert_eq!(
                (&c["type"], &c["status"], &c["reason"]),
                (&json!("Synchronized"), &json!("False"), &json!("FailedCreate")),
                "{status}"
            );
            assert_eq!(
                c["message"],
                json!("failed to create virtual machine pod: pods \"x\" is forbidden: exceeded quota: q")
            );
        }),
    ];
    let (result, seen) = api
        .serve(expected, 1, reconcile(Arc::new(v.clone()), ctx.clone()))
        .await;
    let e = result.expect_err("a refused pod fails the pass");
    assert!(matches!(e, crate::Error::FailedCreatePod(..)), "{e:?}");
    assert_eq!(seen.events, ["FailedCreate"]);
    assert_eq!(
        error_policy(Arc::new(v), &e, ctx),
        Action::requeue(Duration::from_secs(1)),
        "the retry backs off"
    );
}

#[tokio::test]
async fn a_pod_that_exists_already_is_read_and_the_status_follows_it() {
    let (ctx, mut api) = context();
    let v = vmi(json!([FINALIZER]));
    let exists = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "AlreadyExists", "code": 409, "message": "pods exists",
    });
    let expected = vec![
        Expect::new(Method::POST, format!("{PODS}?"), exists).status(StatusCode::CONFLICT),
        Expect::new(Method::GET, pod_path(), launcher_pod("Pending")),
        Expect::new(Method::PATCH, format!("{VMIS}/g?"), answered(&v, "6")).checking(|ops| {
            let status = &ops[1]["value"];
            assert_eq!(status["phase"], json!("Scheduling"), "{status}");
            assert_eq!(status["activePods"], json!({"u-pod": "n1"}), "{status}");
        }),
    ];
    let (result, seen) = api.serve(expected, 0, reconcile(Arc::new(v), ctx)).await;
    result.unwrap();
    assert!(
        seen.events.is_empty(),
        "no pod of ours was created: {:?}",
        seen.events
    );
}
