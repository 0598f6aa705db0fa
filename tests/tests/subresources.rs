//! The subresources API (`subresources.kubevirt.io`) on a real kube-apiserver: virt-api
//! registered as an aggregated API server, reached through the aggregator by kubectl and
//! ferroctl, with KubeVirt's discovery, lifecycle semantics and messages, and its
//! authentication and authorization.

use std::time::{Duration, Instant};

use ferrovirt_tests::aggregation::{
    StopOnDrop, apply_in as apply, assert_requests, direct_client, fake_vmi, fake_vmi_with,
    ferroctl, role_binding, shared_virt_api, start_operator, user_kubeconfig, vm_json, vmi_field,
};
use ferrovirt_tests::manifests::kernel_boot_vm;
use ferrovirt_tests::{ControlPlane, KubectlOutput, TestNamespace, Usage, shared};

/// The common name of the API server's proxy client certificate (the harness's PKI).
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tokio::sync::Mutex;

fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
    ))
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ))
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test]
async fn discovery_lists_the_served_subresources_in_both_versions() {
    let cp = shared().await;
    let virt_api = shared_virt_api().await;
    for version in ["v1", "v1alpha3"] {
        let path = format!("/apis/subresources.kubevirt.io/{version}");
        let out = cp.kubectl(["get", "--raw", &path]).await.unwrap();
        let list: Value = serde_json::from_str(out.expect_success()).unwrap();
        assert_eq!(list["kind"], "APIResourceList", "{list}");
        assert_eq!(
            list["groupVersion"],
            format!("subresources.kubevirt.io/{version}")
        );
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("no resources in {list}"))
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for wanted in [
            "virtualmachines/start",
            "virtualmachines/stop",
            "virtualmachines/restart",
            "virtualmachineinstances/console",
            "virtualmachineinstances/vnc",
            "virtualmachineinstances/pause",
            "virtualmachineinstances/unpause",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
    }
    let out = cp
        .kubectl(["get", "--raw", "/apis/subresources.kubevirt.io/v1/version"])
        .await
        .unwrap();
    let version: Value = serde_json::from_str(out.expect_success()).unwrap();
    assert!(
        version["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{version}"
    );
    let out = ferroctl(&cp.kubeconfig(), &["version"]).await.unwrap();
    let printed = out.expect_success();
    assert!(
        printed.contains(&format!(
            "Server Version: {}",
            version["gitVersion"].as_str().unwrap()
        )),
        "{out}"
    );
    // kubectl's own discovery (aggregated by kube-apiserver) takes the documents.
    cp.kubectl(["api-resources", "--api-group=subresources.kubevirt.io"])
        .await
        .unwrap()
        .expect_success();
    // Figures, not assertions.
    eprintln!(
        "virt-api: Available {} ms after spawn, RSS {:?} KiB",
        virt_api.ready_after.as_millis(),
        virt_api.rss_kib()
    );
}

// ---- helpers ---------------------------------------------------------------------------

/// Tests that create VMs run one at a time: one of them starts the operator, which would
/// act on the others' VMs and VMIs.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Runs ferroctl as the admin in `ns`.
async fn ferro(cp: &ControlPlane, ns: &str, args: &[&str]) -> KubectlOutput {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ferroctl(&cp.kubeconfig(), &all).await.unwrap()
}

// ---- lifecycle -------------------------------------------------------------------------

#[tokio::test]
async fn manual_start_and_stop_write_state_change_requests_as_kubevirt() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-manual").await.unwrap();
    apply(cp, ns.name(), &kernel_boot_vm("vm1", "Manual", None)).await;

    let out = ferro(cp, ns.name(), &["start", "vm1"]).await;
    assert_eq!(out.expect_success().trim(), "VM vm1 was scheduled to start");
    let vm = vm_json(cp, ns.name(), "vm1").await;
    assert_requests(&vm, json!([{"action": "Start"}]));
    assert_eq!(
        vm["spec"]["runStrategy"], "Manual",
        "start leaves a Manual VM's strategy"
    );

    // A second start while the first is pending: KubeVirt's "already underway" (500).
    let out = ferro(cp, ns.name(), &["start", "vm1"]).await;
    assert!(!out.success(), "{out}");
    assert_eq!(
        out.stderr.trim(),
        "error: Internal error occurred: unable to complete request: stop/start already underway"
    );

    // With an instance running, stop replaces the pending requests with a Stop for it.
    fake_vmi(cp, ns.name(), "vm1", "Running").await;
    let uid = cp
        .kubectl([
            "get",
            "vmi",
            "vm1",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await
        .unwrap()
        .expect_success()
        .to_string();
    let out = ferro(cp, ns.name(), &["stop", "vm1"]).await;
    assert_eq!(out.expect_success().trim(), "VM vm1 was scheduled to stop");
    assert_requests(
        &vm_json(cp, ns.name(), "vm1").await,
        json!([{"action": "Stop", "uid": uid}]),
    );
}

#[tokio::test]
async fn halted_vm_starts_through_ferroctl_and_the_operator_runs_it() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-halted").await.unwrap();
    apply(cp, ns.name(), &kernel_boot_vm("vm1", "Halted", None)).await;
    let operator = StopOnDrop(start_operator(cp).unwrap());

    let started = Instant::now();
    let out = ferro(cp, ns.name(), &["start", "vm1"]).await;
    out.expect_success();
    eprintln!(
        "ferroctl start, process start to exit: {} ms",
        started.elapsed().as_millis()
    );
    let vm = vm_json(cp, ns.name(), "vm1").await;
    assert_eq!(
        vm["spec"]["runStrategy"], "Always",
        "KubeVirt starts a Halted VM by switching it to Always"
    );

    let vmis: Api<DynamicObject> =
        Api::namespaced_with(cp.client().await.unwrap(), ns.name(), &vmi_resource());
    let mut vmi = None;
    while vmi.is_none() {
        vmi = vmis.get_opt("vm1").await.unwrap();
        if started.elapsed() > Duration::from_secs(60) {
            panic!(
                "no VMI 60 s after ferroctl start; operator log:\n{}",
                tail(&operator.0.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "ferroctl start to VMI created: {} ms",
        started.elapsed().as_millis()
    );

    let out = ferro(cp, ns.name(), &["stop", "vm1"]).await;
    out.expect_success();
    let vm = vm_json(cp, ns.name(), "vm1").await;
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    // The operator acts on it: the VMI is deleted.
    let stopping = Instant::now();
    loop {
        let vmi = vmis.get_opt("vm1").await.unwrap();
        if vmi.is_none_or(|v| v.metadata.deletion_timestamp.is_some()) {
            break;
        }
        if stopping.elapsed() > Duration::from_secs(60) {
            panic!(
                "VMI not deleted 60 s after ferroctl stop; operator log:\n{}",
                tail(&operator.0.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn restart_requests_stop_then_start_and_refused_forced_requests_change_nothing() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-restart").await.unwrap();
    let n = ns.name();
    apply(cp, n, &kernel_boot_vm("always", "Always", None)).await;
    apply(cp, n, &kernel_boot_vm("halted", "Halted", None)).await;
    fake_vmi(cp, n, "always", "Running").await;
    fake_vmi(cp, n, "halted", "Running").await;
    let uid = vmi_field(cp, n, "always", ".metadata.uid").await;

    let out = ferro(cp, n, &["restart", "always"]).await;
    assert_eq!(
        out.expect_success().trim(),
        "VM always was scheduled to restart"
    );
    let vm = vm_json(cp, n, "always").await;
    let requests = json!([{"action": "Stop", "uid": uid}, {"action": "Start"}]);
    assert_eq!(vm["status"]["stateChangeRequests"], requests, "{vm:#}");

    // A forced restart while that one is pending is refused before anything is written.
    let out = ferro(cp, n, &["restart", "always", "--force", "--grace-period=0"]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.trim().ends_with("stop/start already underway"),
        "{out}"
    );
    assert_eq!(
        vmi_field(cp, n, "always", ".spec.terminationGracePeriodSeconds").await,
        "30"
    );
    let out = ferro(cp, n, &["restart", "always", "--force", "--grace-period=5"]).await;
    assert_eq!(
        out.stderr.trim(),
        "error: For force restart, only gracePeriod=0 is supported for now"
    );

    // Halted with a running instance: only a shorter grace period stops it, written to the
    // VMI first (the one change of a VMI's spec the CRD allows: lowering it).
    let out = ferro(cp, n, &["stop", "halted", "--force", "--grace-period", "0"]).await;
    assert_eq!(
        out.expect_success().trim(),
        "VM halted was scheduled to stop",
        "{out}"
    );
    assert_eq!(
        vmi_field(cp, n, "halted", ".spec.terminationGracePeriodSeconds").await,
        "0"
    );
    let uid = vmi_field(cp, n, "halted", ".metadata.uid").await;
    assert_eq!(
        vm_json(cp, n, "halted").await["status"]["stateChangeRequests"],
        json!([{"action": "Stop", "uid": uid}])
    );
    // Raising it again is refused by name, by the API server itself.
    let out = cp
        .kubectl([
            "patch",
            "vmi",
            "halted",
            "-n",
            n,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"terminationGracePeriodSeconds":30}}"#,
        ])
        .await
        .unwrap();
    assert!(
        !out.success()
            && out.stderr.contains("spec.terminationGracePeriodSeconds")
            && out.stderr.contains("can only be lowered"),
        "{out}"
    );
}

/// Each refusal: ferroctl exits 1 with KubeVirt's message on one line, and the VM is
/// not written (same resourceVersion).
#[tokio::test]
async fn refusals_carry_kubevirts_409_messages_and_change_nothing() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-409").await.unwrap();
    for (name, strategy) in [
        ("always", "Always"),
        ("manual", "Manual"),
        ("halted", "Halted"),
        ("running", "Manual"),
    ] {
        apply(cp, ns.name(), &kernel_boot_vm(name, strategy, None)).await;
    }
    fake_vmi(cp, ns.name(), "running", "Running").await;
    fake_vmi(cp, ns.name(), "halted", "Running").await;

    let prefix = "error: Operation cannot be fulfilled on virtualmachine.kubevirt.io";
    let cases: &[(&[&str], String)] = &[
        (
            &["start", "always"],
            format!("{prefix} \"always\": Always does not support manual start requests"),
        ),
        (
            &["start", "running"],
            format!("{prefix} \"running\": VM is already running"),
        ),
        (
            &["stop", "manual"],
            format!("{prefix} \"manual\": VM is not running"),
        ),
        (
            &["restart", "halted"],
            format!(
                "{prefix} \"halted\": RunStategy Halted does not support manual restart requests"
            ),
        ),
        (
            &["restart", "manual"],
            format!("{prefix} \"manual\": VM is not running: Halted"),
        ),
        (
            &["stop", "halted"],
            format!(
                "{prefix} \"halted\": Halted only supports manual stop requests with a shorter graceperiod"
            ),
        ),
        (
            &["start", "nosuchvm"],
            "error: virtualmachine.kubevirt.io \"nosuchvm\" not found".to_string(),
        ),
    ];
    for (args, message) in cases {
        let name = args[1];
        let before = (name != "nosuchvm").then_some(name);
        let rv = match before {
            Some(n) => Some(vm_json(cp, ns.name(), n).await["metadata"]["resourceVersion"].clone()),
            None => None,
        };
        let out = ferro(cp, ns.name(), args).await;
        assert!(!out.success(), "{out}");
        assert_eq!(out.stderr.trim(), message, "ferroctl {args:?}");
        if let (Some(n), Some(rv)) = (before, rv) {
            let after = vm_json(cp, ns.name(), n).await;
            assert_eq!(
                after["metadata"]["resourceVersion"], rv,
                "{args:?} wrote the VM: {after:#}"
            );
        }
    }
}

// ---- authentication and authorization --------------------------------------------------

const SUB: &str = "subresources.kubevirt.io";

/// The API server's answer to a SubjectAccessReview for `user` in namespace `ns`;
/// `resource` may name a subresource (`virtualmachines/start`).
async fn allowed(
    cp: &ControlPlane,
    ns: &str,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
) -> bool {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {
            "namespace": ns, "verb": verb, "group": group,
            "resource": resource, "subresource": sub,
        }},
    });
    let out = cp
        .kubectl_with_stdin(
            ["create", "-o", "json", "-f", "-"],
            Some(&review.to_string()),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(out.expect_success()).unwrap();
    answer["status"]["allowed"] == json!(true)
}

fn start_path(ns: &str, vm: &str) -> String {
    format!("/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/{vm}/start")
}

/// PUT `path` on `client`: Ok(()) or the API error's code and message; a failure below
/// HTTP (TLS) is Err((0, why)).
async fn put(client: &kube::Client, path: &str) -> Result<(), (u16, String)> {
    let req = http::Request::put(path).body(b"{}".to_vec()).unwrap();
    match client.request_text(req).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err((s.code, s.message)),
        Err(e) => Err((0, e.to_string())),
    }
}

#[tokio::test]
/// KubeVirt's roles from deploy/rbac/rbac.yaml (installed with virt-api's registration):
/// `kubevirt.io:view` may read a VM but not start it; `kubevirt.io:edit` may start it.
async fn kubevirt_view_cannot_start_and_kubevirt_edit_can() {
    let cp = shared().await;
    let virt_api = shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-rbac").await.unwrap();
    apply(cp, ns.name(), &role_binding("viewer", "kubevirt.io:view")).await;
    apply(cp, ns.name(), &role_binding("editor", "kubevirt.io:edit")).await;
    apply(cp, ns.name(), &kernel_boot_vm("vm1", "Manual", None)).await;
    apply(cp, ns.name(), &kernel_boot_vm("vm2", "Manual", None)).await;
    let rv = |vm: Value| vm["metadata"]["resourceVersion"].clone();
    let before = rv(vm_json(cp, ns.name(), "vm1").await);

    // As KubeVirt's roles have it: view gets no console, vnc or lifecycle subresource;
    // edit gets them all (tests/tests/console.rs uses the console with both roles).
    for (verb, resource) in [
        ("get", "virtualmachineinstances/console"),
        ("get", "virtualmachineinstances/vnc"),
        ("update", "virtualmachineinstances/pause"),
        ("update", "virtualmachines/start"),
        ("update", "virtualmachines/stop"),
        ("update", "virtualmachines/restart"),
    ] {
        assert!(
            !allowed(cp, ns.name(), "viewer", verb, SUB, resource).await,
            "kubevirt.io:view may {verb} {resource}"
        );
        assert!(
            allowed(cp, ns.name(), "editor", verb, SUB, resource).await,
            "kubevirt.io:edit may not {verb} {resource}"
        );
    }

    // The viewer reads the VM.
    let viewer = user_kubeconfig(cp, "viewer", &[]).unwrap();
    let as_viewer = ferrovirt_tests::client_from(&viewer).await.unwrap();
    let vms: Api<DynamicObject> = Api::namespaced_with(as_viewer, ns.name(), &vm_resource());
    vms.get("vm1").await.unwrap();

    // Through kube-apiserver: its own authorization refuses the viewer first.
    let out = ferroctl(&viewer, &["-n", ns.name(), "start", "vm1"])
        .await
        .unwrap();
    assert!(!out.success(), "{out}");
    let line = out.stderr.trim();
    assert!(
        line.starts_with("error: forbidden: ")
            && line.contains("cannot update resource \"virtualmachines/start\""),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");

    // Straight to virt-api as the front proxy would send it: virt-api's own
    // SubjectAccessReview refuses the viewer.
    let proxy = |user: &'static str| {
        direct_client(
            cp,
            virt_api,
            Some(FRONT_PROXY_CLIENT),
            user,
            &["system:authenticated"],
        )
    };
    let (code, message) = put(
        &proxy("viewer").await.unwrap(),
        &start_path(ns.name(), "vm1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("User \"viewer\" cannot update resource \"virtualmachines/start\""),
        "{message}"
    );
    assert_eq!(
        rv(vm_json(cp, ns.name(), "vm1").await),
        before,
        "a refused start wrote the VM"
    );

    // The editor: through the API server with ferroctl, and directly.
    let editor = user_kubeconfig(cp, "editor", &[]).unwrap();
    let out = ferroctl(&editor, &["-n", ns.name(), "start", "vm1"])
        .await
        .unwrap();
    out.expect_success();
    assert_requests(
        &vm_json(cp, ns.name(), "vm1").await,
        json!([{"action": "Start"}]),
    );
    put(
        &proxy("editor").await.unwrap(),
        &start_path(ns.name(), "vm2"),
    )
    .await
    .unwrap();
    assert_requests(
        &vm_json(cp, ns.name(), "vm2").await,
        json!([{"action": "Start"}]),
    );
}

#[tokio::test]
async fn virt_api_refuses_clients_without_the_front_proxy_certificate() {
    let cp = shared().await;
    let virt_api = shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-authn").await.unwrap();
    apply(cp, ns.name(), &kernel_boot_vm("vm1", "Manual", None)).await;
    let before = vm_json(cp, ns.name(), "vm1").await["metadata"]["resourceVersion"].clone();
    let path = start_path(ns.name(), "vm1");
    let masters = ["system:masters", "system:authenticated"];
    let direct = |cert: Option<&'static str>| direct_client(cp, virt_api, cert, "admin", &masters);

    // No client certificate: the headers alone are not believed.
    let (code, message) = put(&direct(None).await.unwrap(), &path).await.unwrap_err();
    assert_eq!(
        (code, message.as_str()),
        (401, "request is not authenticated")
    );

    // Signed by the front-proxy CA but not an allowed name.
    cp.pki()
        .issue(
            "front-proxy-ca",
            "mallory",
            "mallory",
            &[],
            Usage::Client,
            vec![],
        )
        .unwrap();
    let (code, message) = put(&direct(Some("mallory")).await.unwrap(), &path)
        .await
        .unwrap_err();
    assert_eq!(code, 401, "{message}");
    assert!(message.contains("requestheader-allowed-names"), "{message}");

    // A certificate of another CA (the cluster's admin): refused at the TLS handshake.
    let (code, message) = put(&direct(Some("admin")).await.unwrap(), &path)
        .await
        .unwrap_err();
    assert_eq!(
        code, 0,
        "answered instead of failing the handshake: {message}"
    );

    assert_eq!(
        vm_json(cp, ns.name(), "vm1").await["metadata"]["resourceVersion"],
        before,
        "a refused request wrote the VM"
    );
    // The same request with the front proxy's certificate is served.
    put(&direct(Some(FRONT_PROXY_CLIENT)).await.unwrap(), &path)
        .await
        .unwrap();
    assert_requests(
        &vm_json(cp, ns.name(), "vm1").await,
        json!([{"action": "Start"}]),
    );
}

/// kube-controller-manager's clusterrole-aggregation-controller (which the harness runs)
/// folds KubeVirt's roles into the built-in ones through their aggregate-to-* labels: a user
/// bound to plain `view` reads VMs but cannot start them, one bound to plain `edit` can
/// start them.
#[tokio::test]
async fn builtin_view_and_edit_aggregate_kubevirts_roles() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-aggr").await.unwrap();
    let n = ns.name();
    apply(cp, n, &role_binding("plain-viewer", "view")).await;
    apply(cp, n, &role_binding("plain-editor", "edit")).await;
    apply(cp, n, &kernel_boot_vm("vm1", "Manual", None)).await;

    // The aggregation controller works asynchronously: wait until `view` and `edit` hold
    // KubeVirt's rules.
    let started = Instant::now();
    for (role, group, resource) in [
        ("view", "kubevirt.io", "virtualmachines"),
        ("edit", "subresources.kubevirt.io", "virtualmachines/start"),
    ] {
        loop {
            let out = cp
                .kubectl(["get", "clusterrole", role, "-o", "json"])
                .await
                .unwrap();
            let json: Value = serde_json::from_str(out.expect_success()).unwrap();
            let has = json["rules"].as_array().into_iter().flatten().any(|r| {
                r["apiGroups"] == json!([group])
                    && r["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.contains(&json!(resource)))
            });
            if has {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "clusterrole {role} has no rule for {group} {resource} after 60 s: {json:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A SubjectAccessReview: the API server's own answer for the user in namespace n.
    let may = |user, verb, group, resource| allowed(cp, n, user, verb, group, resource);
    assert!(may("plain-viewer", "get", "kubevirt.io", "virtualmachines").await);
    assert!(!may("plain-viewer", "update", SUB, "virtualmachines/start").await);
    assert!(may("plain-editor", "update", SUB, "virtualmachines/start").await);

    // And the real thing: ferroctl as the plain editor starts the VM, as the viewer not.
    let viewer = user_kubeconfig(cp, "plain-viewer", &[]).unwrap();
    let out = ferroctl(&viewer, &["-n", n, "start", "vm1"]).await.unwrap();
    assert!(out.stderr.starts_with("error: forbidden: "), "{out}");
    let editor = user_kubeconfig(cp, "plain-editor", &[]).unwrap();
    ferroctl(&editor, &["-n", n, "start", "vm1"])
        .await
        .unwrap()
        .expect_success();
    assert_requests(&vm_json(cp, n, "vm1").await, json!([{"action": "Start"}]));
}

/// ferroctl's one-line refusals for the VMI subresources, decided by virt-api with
/// KubeVirt's codes and messages before any node is involved (`--timeout 0`: no waiting for
/// the VMI to run).
#[tokio::test]
async fn ferroctl_console_vnc_pause_refusals_are_one_line() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "sub-vmi").await.unwrap();
    let n = ns.name();
    fake_vmi(cp, n, "sched", "Scheduled").await;
    fake_vmi_with(cp, n, "noserial", "Running", |spec| {
        spec["domain"]["devices"]["autoattachSerialConsole"] = json!(false);
    })
    .await;
    let conflict = "error: Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io";
    let cases: &[(&[&str], String)] = &[
        (
            &["console", "sched", "--timeout", "0"],
            "error: VMI is not running".into(),
        ),
        (
            &["console", "noserial", "--timeout", "0"],
            "error: No serial consoles are present.".into(),
        ),
        (
            &["console", "nosuch"],
            "error: virtualmachineinstance.kubevirt.io \"nosuch\" not found".into(),
        ),
        (
            &["vnc", "sched", "--proxy-only"],
            "error: VMI is not running".into(),
        ),
        (
            &["pause", "vmi", "sched"],
            format!("{conflict} \"sched\": VM is not running"),
        ),
        (
            &["unpause", "vmi", "sched"],
            format!("{conflict} \"sched\": VMI is not running"),
        ),
        (
            &["pause", "vmi", "sched", "--dry-run"],
            format!("{conflict} \"sched\": VM is not running"),
        ),
    ];
    for (args, message) in cases {
        let out = ferro(cp, n, args).await;
        assert!(!out.success(), "{out}");
        assert_eq!(out.stderr.trim(), message, "ferroctl {args:?}");
    }
}
