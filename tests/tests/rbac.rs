//! Least privilege (issues 9 and 12): virt-controller runs with exactly the role the Helm
//! chart gives it (rendered by `helm template`, applied to the real kube-apiserver, used
//! through a client certificate of its ServiceAccount's user), and with one rule taken
//! away it fails loudly: the VMI's status and a Warning Event name the forbidden request,
//! and the controller keeps running.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::VirtualMachineInstance;
use ferrovirt_tests::aggregation::user_kubeconfig;
use ferrovirt_tests::helm::{documents, find, template};
use ferrovirt_tests::{
    ControlPlane, Process, TestNamespace, kill_tied, pid_alive, shared, spawn_tied, workspace_bin,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const NAMESPACE: &str = "kubevirt";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The chart's roles and bindings of virt-controller, renamed for `tag` (its own
/// ServiceAccount user, ClusterRole and Lease), with `drop` applied to the ClusterRole's
/// rules. Returns the objects and the user name.
fn controller_rbac(tag: &str, drop: impl Fn(&mut Vec<Value>)) -> (Vec<Value>, String) {
    let docs = documents(&template(NAMESPACE, &[]));
    let sa = format!("{tag}-controller");
    let lease = format!("{tag}-lease");
    let mut out = Vec::new();
    for (kind, name) in [
        ("ClusterRole", "kubevirt-controller"),
        ("ClusterRoleBinding", "kubevirt-controller"),
        ("Role", "kubevirt-controller-leader-election"),
        ("RoleBinding", "kubevirt-controller-leader-election"),
    ] {
        let mut doc: Value = serde_json::to_value(find(&docs, kind, name)).unwrap();
        let renamed = format!("{tag}-{name}");
        doc["metadata"]["name"] = renamed.clone().into();
        if let Some(role) = doc.get_mut("roleRef") {
            role["name"] = format!("{tag}-{}", role["name"].as_str().unwrap()).into();
        }
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                s["name"] = sa.clone().into();
            }
        }
        if let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules.iter_mut() {
                // The Lease's name is in the role: this copy's Lease is its own.
                if rule.get("resourceNames").is_some() {
                    rule["resourceNames"] = json!([lease]);
                }
            }
            if kind == "ClusterRole" {
                drop(rules);
            }
        }
        out.push(doc);
    }
    (out, format!("system:serviceaccount:{NAMESPACE}:{sa}"))
}

async fn apply(cp: &ControlPlane, objects: &[Value]) {
    let client = cp.client().await.unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply("rbac-test"),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
        ));
        let obj: DynamicObject = serde_json::from_value(o.clone()).unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if kind.starts_with("Cluster") {
            Api::all_with(client.clone(), &ar)
        } else {
            Api::namespaced_with(client.clone(), NAMESPACE, &ar)
        };
        api.patch(
            name,
            &PatchParams::apply("rbac-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
}

/// virt-controller as `user`, with its own Lease.
fn start_controller(cp: &ControlPlane, kubeconfig: &Path, tag: &str) -> Process {
    let mut cmd = Command::new(workspace_bin("virt-controller"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--leader-election-namespace", NAMESPACE])
        .args(["--lease-name", &format!("{tag}-lease")])
        .args(["--metrics-addr", "127.0.0.1:0"]);
    spawn_tied(
        "virt-controller",
        cmd,
        &cp.log(&format!("virt-controller-{tag}")),
    )
    .unwrap()
}

fn vm(name: &str) -> Value {
    serde_json::from_str::<Value>(
        &serde_json::to_string(
            &serde_yaml::from_str::<Value>(&ferrovirt_tests::manifests::kernel_boot_vm(
                name, "Always", None,
            ))
            .unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
}

async fn create_vm(cp: &ControlPlane, ns: &str, name: &str) {
    let api: Api<crds::VirtualMachine> = Api::namespaced(cp.client().await.unwrap(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(vm(name)).unwrap(),
    )
    .await
    .unwrap();
}

async fn eventually<T, F, Fut>(what: &str, log: &Path, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{what} within {TIMEOUT:?}; virt-controller's log:\n{}",
            ferrovirt_tests::tail(log, 40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn virt_controller_runs_with_the_charts_role_and_fails_loudly_without_one_rule() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "rbac").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    // Exactly the chart's role: a VM gets its VMI and the VMI its launcher pod.
    let (objects, user) = controller_rbac("full", |_| {});
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &["system:serviceaccounts"]).unwrap();
    let full = start_controller(cp, &kubeconfig, "full");
    create_vm(cp, ns.name(), "allowed").await;
    eventually("the launcher pod of VM allowed", &full.log, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("virt-launcher-allowed-"))
            })
            .then_some(())
    })
    .await;
    // Its VM status written too, and nothing it asked for was refused.
    let vms: Api<crds::VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    eventually("VM allowed's printableStatus", &full.log, || async {
        vms.get("allowed").await.ok()?.status?.printable_status
    })
    .await;
    let log = std::fs::read_to_string(&full.log).unwrap();
    assert!(!log.contains("forbidden"), "with the chart's role:\n{log}");
    kill_tied(Some(&[full.pid]));

    // The same role without creating pods: the VMI and an Event say so, and the controller
    // stays up.
    let (objects, user) = controller_rbac("nopods", |rules| {
        for rule in rules.iter_mut() {
            if rule["resources"] == json!(["pods"]) {
                let verbs: Vec<Value> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| *v != "create")
                    .cloned()
                    .collect();
                rule["verbs"] = verbs.into();
            }
        }
    });
    let rules = serde_json::to_string(&objects[0]["rules"]).unwrap();
    assert!(
        rules.contains("\"pods\"") && !rules.contains("\"create\",\"delete\"]}"),
        "{rules}"
    );
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &["system:serviceaccounts"]).unwrap();
    let crippled = start_controller(cp, &kubeconfig, "nopods");
    create_vm(cp, ns.name(), "forbidden").await;
    let condition = eventually(
        "a VMI condition naming the forbidden pod create",
        &crippled.log,
        || async {
            let vmi = vmis.get_opt("forbidden").await.ok()??;
            let conditions = serde_json::to_string(&vmi.status?.conditions).ok()?;
            conditions.contains("forbidden").then_some(conditions)
        },
    )
    .await;
    assert!(
        condition.contains("FailedCreate") && condition.contains("pods"),
        "{condition}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let warning = eventually(
        "a Warning Event naming the forbidden pod create",
        &crippled.log,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.message)
                .find(|m| m.contains("forbidden"))
        },
    )
    .await;
    assert!(warning.contains("pods"), "{warning}");
    assert!(
        pid_alive(crippled.pid),
        "virt-controller exited instead of reporting"
    );
    kill_tied(Some(&[crippled.pid]));
}
