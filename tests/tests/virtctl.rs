//! KubeVirt's own virtctl (built unchanged from the Go module proxy by
//! `hack/build-virtctl.sh`) against Ferrovirt: virt-api registered in a real kube-apiserver,
//! the operator acting on what virtctl asks. Each check mirrors one of the ferroctl tests in
//! subresources.rs, so both clients are held to the same observable effects. A missing
//! virtctl fails the test with the command that builds it.

use ferrovirt_tests::aggregation::{
    StopOnDrop, apply_in, assert_requests, fake_vmi, fake_vmi_with, role_binding, shared_virt_api,
    start_operator, user_kubeconfig, virtctl, virtctl_version, vm_json, vmi_field, wait_vmi,
};
use ferrovirt_tests::manifests::kernel_boot_vm;
use ferrovirt_tests::{ControlPlane, KubectlOutput, TestNamespace, shared};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Tests that create VMs run one at a time: one of them starts the operator, which would
/// act on the others' VMs.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Runs virtctl as the admin in `ns`.
async fn vctl(cp: &ControlPlane, ns: &str, args: &[&str]) -> KubectlOutput {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    virtctl(&cp.kubeconfig(), &all).await.unwrap()
}

/// virt-api's gitVersion, as the aggregator serves it.
async fn server_git_version(cp: &ControlPlane) -> String {
    let out = cp
        .kubectl(["get", "--raw", "/apis/subresources.kubevirt.io/v1/version"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(out.expect_success()).unwrap();
    v["gitVersion"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn virtctl_version_prints_client_and_server_versions() {
    let cp = shared().await;
    shared_virt_api().await;
    let server = server_git_version(cp).await;

    // A user with no role of its own: kubevirt.io:default (deploy/rbac) lets every
    // authenticated user read the version, as in KubeVirt.
    let nobody = user_kubeconfig(cp, "nobody", &[]).unwrap();
    for kubeconfig in [cp.kubeconfig(), nobody] {
        let out = virtctl(&kubeconfig, &["version"]).await.unwrap();
        let printed = out.expect_success();
        assert!(
            printed.contains(&format!(
                "Client Version: version.Info{{GitVersion:\"v{}\"",
                virtctl_version()
            )),
            "{out}"
        );
        assert!(
            printed.contains(&format!(
                "Server Version: version.Info{{GitVersion:\"{server}\""
            )),
            "{out}"
        );
        assert!(printed.contains("Compiler:\"rustc\""), "{out}");
    }
}

#[tokio::test]
async fn virtctl_start_and_stop_a_halted_vm_and_the_operator_runs_it() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-halted").await.unwrap();
    let n = ns.name();
    apply_in(cp, n, &kernel_boot_vm("vm1", "Halted", None)).await;
    let operator = StopOnDrop(start_operator(cp).unwrap());

    let out = vctl(cp, n, &["start", "vm1"]).await;
    assert_eq!(out.expect_success().trim(), "VM vm1 was scheduled to start");
    let vm = vm_json(cp, n, "vm1").await;
    assert_eq!(
        vm["spec"]["runStrategy"], "Always",
        "KubeVirt starts a Halted VM by switching it to Always"
    );
    wait_vmi(
        cp,
        n,
        "vm1",
        &operator.0,
        "VMI created after virtctl start",
        |v| v.is_some(),
    )
    .await;

    let out = vctl(cp, n, &["stop", "vm1"]).await;
    assert_eq!(out.expect_success().trim(), "VM vm1 was scheduled to stop");
    assert_eq!(vm_json(cp, n, "vm1").await["spec"]["runStrategy"], "Halted");
    wait_vmi(
        cp,
        n,
        "vm1",
        &operator.0,
        "VMI deleted after virtctl stop",
        |v| v.is_none_or(|v| v.metadata.deletion_timestamp.is_some()),
    )
    .await;
}

#[tokio::test]
async fn virtctl_start_stop_restart_write_kubevirts_state_change_requests() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-manual").await.unwrap();
    let n = ns.name();
    apply_in(cp, n, &kernel_boot_vm("manual", "Manual", None)).await;
    apply_in(cp, n, &kernel_boot_vm("always", "Always", None)).await;

    schedules(cp, n, "start", "manual", json!([{"action": "Start"}])).await;

    // A running instance: stop replaces the pending Start with a Stop for it.
    fake_vmi(cp, n, "manual", "Running").await;
    let uid = vmi_field(cp, n, "manual", ".metadata.uid").await;
    let stop = json!([{"action": "Stop", "uid": uid}]);
    schedules(cp, n, "stop", "manual", stop).await;

    // restart: Stop for the running instance, then Start.
    fake_vmi(cp, n, "always", "Running").await;
    let uid = vmi_field(cp, n, "always", ".metadata.uid").await;
    let restart = json!([{"action": "Stop", "uid": uid}, {"action": "Start"}]);
    schedules(cp, n, "restart", "always", restart).await;
}

/// `virtctl start --paused`: KubeVirt's start request with data `paused: "true"`, also for
/// a Halted VM (whose start otherwise flips the run strategy); the controller turns it
/// into the instance's `startStrategy: Paused` (operator/tests/controllers.rs).
#[tokio::test]
async fn virtctl_start_paused_writes_kubevirts_paused_start_request() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-paused").await.unwrap();
    let n = ns.name();
    apply_in(cp, n, &kernel_boot_vm("manual", "Manual", None)).await;
    apply_in(cp, n, &kernel_boot_vm("halted", "Halted", None)).await;
    let paused = json!([{"action": "Start", "data": {"paused": "true"}}]);
    for vm in ["manual", "halted"] {
        let out = vctl(cp, n, &["start", "--paused", vm]).await;
        assert_eq!(
            out.expect_success().trim(),
            format!("VM {vm} was scheduled to start")
        );
        assert_requests(&vm_json(cp, n, vm).await, paused.clone());
    }
    // The Halted VM's spec is left to the controller.
    let vm = vm_json(cp, n, "halted").await;
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
}

/// `virtctl <verb> <vm>` succeeds with virtctl's line and leaves `requests` on the VM.
async fn schedules(cp: &ControlPlane, n: &str, verb: &str, vm: &str, requests: Value) {
    let out = vctl(cp, n, &[verb, vm]).await;
    assert_eq!(
        out.expect_success().trim(),
        format!("VM {vm} was scheduled to {verb}")
    );
    assert_requests(&vm_json(cp, n, vm).await, requests);
}

/// A 409 as virtctl prints it: its own prefix, then apimachinery's StatusError text with
/// KubeVirt's message; exit code 1; the VM is not written.
#[tokio::test]
async fn virtctl_prints_kubevirts_409_and_nothing_is_written() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-409").await.unwrap();
    let n = ns.name();
    apply_in(cp, n, &kernel_boot_vm("always", "Always", None)).await;
    let rv = vm_json(cp, n, "always").await["metadata"]["resourceVersion"].clone();

    let out = vctl(cp, n, &["start", "always"]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    // virtctl checks the server's version after any error and warns that it is not a
    // KubeVirt v1.7 (true: it is Ferrovirt's virt-api), then prints the error.
    let server = server_git_version(cp).await;
    assert_eq!(
        out.stderr,
        format!(
            "You are using a client virtctl version that is different from the KubeVirt \
             version running in the cluster\nClient Version: v{}\nServer Version: {server}\n\n\
             Error starting VirtualMachine Operation cannot be fulfilled on \
             virtualmachine.kubevirt.io \"always\": Always does not support manual start \
             requests\n",
            virtctl_version()
        ),
        "{out}"
    );
    assert_eq!(
        vm_json(cp, n, "always").await["metadata"]["resourceVersion"],
        rv,
        "a refused start wrote the VM"
    );
}

/// KubeVirt's roles from deploy/rbac with KubeVirt's client: a `kubevirt.io:view` user's
/// `virtctl start` is refused (kube-apiserver's Forbidden, as virtctl prints it) and writes
/// nothing; a `kubevirt.io:edit` user's is served.
#[tokio::test]
async fn virtctl_start_is_refused_for_kubevirt_view_and_served_for_kubevirt_edit() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-rbac").await.unwrap();
    let n = ns.name();
    for (user, role) in [
        ("viewer", "kubevirt.io:view"),
        ("editor", "kubevirt.io:edit"),
    ] {
        apply_in(cp, n, &role_binding(user, role)).await;
    }
    apply_in(cp, n, &kernel_boot_vm("vm1", "Manual", None)).await;
    let rv = vm_json(cp, n, "vm1").await["metadata"]["resourceVersion"].clone();

    let viewer = user_kubeconfig(cp, "viewer", &[]).unwrap();
    let out = virtctl(&viewer, &["-n", n, "start", "vm1"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out}");
    let last = out.stderr.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "Error starting VirtualMachine virtualmachines.subresources.kubevirt.io \"vm1\" is \
             forbidden: User \"viewer\" cannot update resource \"virtualmachines/start\" in API \
             group \"subresources.kubevirt.io\" in the namespace \"{n}\""
        ),
        "{out}"
    );
    assert_eq!(
        vm_json(cp, n, "vm1").await["metadata"]["resourceVersion"],
        rv,
        "a refused start wrote the VM"
    );

    let editor = user_kubeconfig(cp, "editor", &[]).unwrap();
    let out = virtctl(&editor, &["-n", n, "start", "vm1"]).await.unwrap();
    assert_eq!(out.expect_success().trim(), "VM vm1 was scheduled to start");
    assert_requests(&vm_json(cp, n, "vm1").await, json!([{"action": "Start"}]));
}

/// KubeVirt's refusals of console, vnc, pause and unpause as virtctl prints them, decided
/// by virt-api before any node is involved (tests/tests/console.rs has the served ones).
/// `--timeout=0`: virtctl's console otherwise retries a 400 for minutes.
#[tokio::test]
async fn virtctl_console_vnc_pause_and_unpause_are_refused_with_kubevirts_messages() {
    let cp = shared().await;
    shared_virt_api().await;
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::create(cp, "vctl-vmi").await.unwrap();
    let n = ns.name();
    fake_vmi(cp, n, "sched", "Scheduled").await;
    fake_vmi_with(cp, n, "noserial", "Running", |spec| {
        spec["domain"]["devices"]["autoattachSerialConsole"] = json!(false);
        spec["domain"]["devices"]["autoattachGraphicsDevice"] = json!(false);
    })
    .await;
    let cases: &[(&[&str], &str)] = &[
        (&["console", "--timeout=0", "sched"], "VMI is not running"),
        (
            &["console", "--timeout=0", "noserial"],
            "No serial consoles are present.",
        ),
        (
            &["console", "--timeout=0", "nosuch"],
            "virtualmachineinstance.kubevirt.io \"nosuch\" not found",
        ),
        (&["vnc", "--proxy-only", "sched"], "VMI is not running"),
        (
            &["vnc", "--proxy-only", "noserial"],
            "No graphics devices are present.",
        ),
        (
            &["pause", "vmi", "sched"],
            "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"sched\": VM is not running",
        ),
        (
            &["unpause", "vmi", "sched"],
            "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"sched\": VMI is not running",
        ),
        (
            &["pause", "vmi", "nosuch"],
            "virtualmachineinstance.kubevirt.io \"nosuch\" not found",
        ),
    ];
    for (args, message) in cases {
        let out = vctl(cp, n, args).await;
        assert!(!out.success(), "virtctl {args:?} succeeded: {out}");
        assert!(
            out.stderr.contains(message),
            "virtctl {args:?}: wanted {message:?}\n{out}"
        );
    }
}
