//! Least privilege (issues 9 and 12): virt-controller and virt-handler run with exactly the
//! roles the Helm chart gives them (rendered by `helm template`, applied to the real
//! kube-apiserver, used through a client certificate of their ServiceAccount's user), and
//! with one rule taken away each fails loudly, not silently: a Warning Event (and for the
//! controller the VMI's status) names the forbidden request, and the component keeps
//! running. devnode runs with the role it documents (deploy/rbac/devnode.yaml): its Node
//! gets Ready, its Lease is renewed, a pod reading a ConfigMap, a Secret and a projected
//! ServiceAccount token runs to Succeeded and is deleted; without patching its Node's
//! status it refuses to start, its last line naming the forbidden request.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crds::VirtualMachineInstance;
use ferrovirt_tests::aggregation::user_kubeconfig;
use ferrovirt_tests::helm::{documents, find, template};
use ferrovirt_tests::{
    ControlPlane, Process, TestNamespace, has_exited, kill_tied, pid_alive, shared, spawn_tied,
    workspace_bin,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const NAMESPACE: &str = "kubevirt";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The chart's roles and bindings named in `objects` (kind, name), renamed for `tag` (its
/// own ServiceAccount user, roles and Lease), with `drop` applied to the ClusterRole's rules.
/// Returns the objects and the user name.
fn chart_rbac(
    tag: &str,
    objects: &[(&str, &str)],
    drop: impl Fn(&mut Vec<Value>),
) -> (Vec<Value>, String) {
    let docs = documents(&template(NAMESPACE, &[]));
    let sa = format!("{tag}-sa");
    let mut out = Vec::new();
    for (kind, name) in objects {
        let mut doc: Value = serde_json::to_value(find(&docs, kind, name)).unwrap();
        doc["metadata"]["name"] = format!("{tag}-{name}").into();
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
                if rule["resources"] == json!(["leases"]) && rule.get("resourceNames").is_some() {
                    rule["resourceNames"] = json!([format!("{tag}-lease")]);
                }
            }
            if *kind == "ClusterRole" {
                drop(rules);
            }
        }
        out.push(doc);
    }
    (out, format!("system:serviceaccount:{NAMESPACE}:{sa}"))
}

const CONTROLLER_RBAC: [(&str, &str); 4] = [
    ("ClusterRole", "kubevirt-controller"),
    ("ClusterRoleBinding", "kubevirt-controller"),
    ("Role", "kubevirt-controller-leader-election"),
    ("RoleBinding", "kubevirt-controller-leader-election"),
];

const HANDLER_RBAC: [(&str, &str); 4] = [
    ("ClusterRole", "kubevirt-handler"),
    ("ClusterRoleBinding", "kubevirt-handler"),
    ("Role", "kubevirt-handler"),
    ("RoleBinding", "kubevirt-handler"),
];

/// Takes `verb` away from the rule on exactly `resources` (and the rule, when it was its
/// only verb).
fn without(resources: Value, verb: &'static str) -> impl Fn(&mut Vec<Value>) {
    move |rules: &mut Vec<Value>| {
        for rule in rules.iter_mut() {
            if rule["resources"] == resources {
                let verbs: Vec<Value> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| *v != verb)
                    .cloned()
                    .collect();
                rule["verbs"] = verbs.into();
            }
        }
        rules.retain(|r| r["verbs"].as_array().is_some_and(|v| !v.is_empty()));
    }
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
    let mut vm = serde_json::from_str::<Value>(
        &serde_json::to_string(
            &serde_yaml::from_str::<Value>(&ferrovirt_tests::manifests::kernel_boot_vm(
                name, "Always", None,
            ))
            .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    // Its launcher pod only has to exist. No node may run it: the devnode test's node is
    // Ready at the same time, and a pod it started would outlive that devnode (killed
    // mid-life) as an orphaned sandbox.
    vm["spec"]["template"]["spec"]["nodeSelector"] = json!({"ferrovirt.test/rbac": "no-node"});
    vm
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

/// The harness's wait with `TIMEOUT`, the component's log tail appended on failure.
async fn eventually<T, F, Fut>(what: &str, log: &Path, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    ferrovirt_tests::wait::eventually_or(what, TIMEOUT, check, || {
        format!("the component's log:\n{}", ferrovirt_tests::tail(log, 40))
    })
    .await
}

/// The first Warning Event (on `object`, when given) whose message says `forbidden`.
async fn forbidden_warning(
    what: &str,
    events: &Api<Event>,
    object: Option<&str>,
    component: &Process,
) -> String {
    eventually(what, &component.log, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| object.is_none_or(|o| e.involved_object.name.as_deref() == Some(o)))
            .filter_map(|e| e.message)
            .find(|m| m.contains("forbidden"))
    })
    .await
}

/// With the chart's role, nothing the component asked for was refused.
fn assert_nothing_forbidden(component: &Process) {
    let log = std::fs::read_to_string(&component.log).unwrap();
    assert!(!log.contains("forbidden"), "with the chart's role:\n{log}");
}

#[tokio::test]
async fn virt_controller_runs_with_the_charts_role_and_fails_loudly_without_one_rule() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "rbac").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    // Exactly the chart's role: a VM gets its VMI and the VMI its launcher pod.
    let (objects, user) = chart_rbac("full", &CONTROLLER_RBAC, |_| {});
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
    // A VM sized by an instancetype with a cluster-wide preference: both read, their
    // versions stored in ControllerRevisions, the VMI built from them.
    let instancetype = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineInstancetype", "metadata": {"name": "rbac-small", "namespace": ns.name()},
        "spec": {"cpu": {"guest": 2}, "memory": {"guest": "96Mi"}}});
    let preference = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClusterPreference", "metadata": {"name": "rbac-cores"},
        "spec": {"cpu": {"preferredCPUTopology": "cores"}}});
    for object in [instancetype, preference] {
        let out = cp
            .kubectl_with_stdin(["apply", "-f", "-"], Some(&object.to_string()))
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
    }
    let mut sized = vm("sized");
    sized["spec"]["template"]["spec"]["domain"]
        .as_object_mut()
        .unwrap()
        .remove("memory");
    sized["spec"]["instancetype"] =
        json!({"kind": "VirtualMachineInstancetype", "name": "rbac-small"});
    sized["spec"]["preference"] = json!({"name": "rbac-cores"});
    vms.create(
        &PostParams::default(),
        &serde_json::from_value(sized).unwrap(),
    )
    .await
    .unwrap();
    let cpu = eventually(
        "the VMI of VM sized, from its instancetype",
        &full.log,
        || async { vmis.get_opt("sized").await.ok()??.spec.domain.cpu },
    )
    .await;
    assert_eq!((cpu.sockets, cpu.cores), (Some(1), Some(2)), "{cpu:?}");
    let status = vms.get("sized").await.unwrap().status.unwrap();
    assert!(
        status.instancetype_ref.is_some() && status.preference_ref.is_some(),
        "{status:?}"
    );
    // KubeVirt's replica set and pool examples: the set's VMIs and the pool's VMs (with
    // the pool's ControllerRevision) created, and both statuses written.
    for file in ["vmi-replicaset-cirros.yaml", "vm-pool-cirros.yaml"] {
        let path = ferrovirt_tests::examples_dir().join(file);
        let out = cp
            .kubectl(["apply", "-n", ns.name(), "-f", path.to_str().unwrap()])
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
    }
    for (resource, name) in [
        ("vmirs", "vmi-replicaset-cirros"),
        ("vmpool", "vm-pool-cirros"),
    ] {
        eventually(
            &format!("{resource} {name} with 3 replicas"),
            &full.log,
            || async {
                let out = cp
                    .kubectl([
                        "get",
                        resource,
                        name,
                        "-n",
                        ns.name(),
                        "-o",
                        "jsonpath={.status.replicas}",
                    ])
                    .await
                    .ok()?;
                (out.stdout == "3").then_some(())
            },
        )
        .await;
    }
    eventually("the pool's VM vm-pool-cirros-2", &full.log, || async {
        vms.get_opt("vm-pool-cirros-2").await.ok()?
    })
    .await;
    assert_nothing_forbidden(&full);
    kill_tied(Some(&[full.pid]));

    // The same role without creating pods: the VMI and an Event say so, and the controller
    // stays up.
    let (objects, user) = chart_rbac(
        "nopods",
        &CONTROLLER_RBAC,
        without(json!(["pods"]), "create"),
    );
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
    let warning = forbidden_warning(
        "a Warning Event naming the forbidden pod create",
        &events,
        None,
        &crippled,
    )
    .await;
    assert!(warning.contains("pods"), "{warning}");
    assert!(
        pid_alive(crippled.pid),
        "virt-controller exited instead of reporting"
    );
    kill_tied(Some(&[crippled.pid]));
}

/// virt-handler as `user` for `node`, without a server for virt-api (its certificate Secret
/// is another role's) and without device plugins (no kubelet here).
fn start_handler(cp: &ControlPlane, kubeconfig: &Path, node: &str, run_dir: &Path) -> Process {
    let mut cmd = Command::new(workspace_bin("virt-handler"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node, "--namespace", NAMESPACE])
        .args(["--metrics-addr", "", "--server-listen", ""])
        .arg("--run-dir")
        .arg(run_dir);
    spawn_tied(
        "virt-handler",
        cmd,
        &cp.log(&format!("virt-handler-{node}")),
    )
    .unwrap()
}

#[tokio::test]
async fn virt_handler_runs_with_the_charts_role_and_fails_loudly_without_one_rule() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let run = tempfile::Builder::new()
        .prefix(&format!("fv-{}-rbac", std::process::id()))
        .tempdir_in("/tmp")
        .unwrap();

    // Exactly the chart's role: the handler labels its Node schedulable.
    let (objects, user) = chart_rbac("hfull", &HANDLER_RBAC, |_| {});
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &["system:serviceaccounts"]).unwrap();
    for node in ["rbac-full", "rbac-nolabel"] {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let full = start_handler(cp, &kubeconfig, "rbac-full", &run.path().join("full"));
    eventually(
        "the Node labelled kubevirt.io/schedulable",
        &full.log,
        || async {
            let node = nodes.get("rbac-full").await.ok()?;
            (node.metadata.labels?.get("kubevirt.io/schedulable")? == "true").then_some(())
        },
    )
    .await;
    assert_nothing_forbidden(&full);
    kill_tied(Some(&[full.pid]));

    // Without patching Nodes: a Warning Event on the Node says so, and the handler stays up.
    let (objects, user) = chart_rbac(
        "hnolabel",
        &HANDLER_RBAC,
        without(json!(["nodes"]), "patch"),
    );
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &["system:serviceaccounts"]).unwrap();
    let crippled = start_handler(cp, &kubeconfig, "rbac-nolabel", &run.path().join("nolabel"));
    let events: Api<Event> = Api::all(client.clone());
    let warning = forbidden_warning(
        "a Warning Event on the Node naming the forbidden patch",
        &events,
        Some("rbac-nolabel"),
        &crippled,
    )
    .await;
    assert!(
        warning.contains("cannot label its Node") && warning.contains("nodes"),
        "{warning}"
    );
    let labels = nodes.get("rbac-nolabel").await.unwrap().metadata.labels;
    assert!(
        labels
            .as_ref()
            .is_none_or(|l| !l.contains_key("kubevirt.io/schedulable")),
        "{labels:?}"
    );
    assert!(
        pid_alive(crippled.pid),
        "virt-handler exited instead of reporting"
    );
    kill_tied(Some(&[crippled.pid]));
}

/// devnode's documented role (deploy/rbac/devnode.yaml), renamed for `tag` and bound to
/// its own user, with `drop` applied to the rules. Returns the objects and the user.
fn devnode_rbac(tag: &str, drop: impl Fn(&mut Vec<Value>)) -> (Vec<Value>, String) {
    use serde::Deserialize;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac/devnode.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let user = format!("ferrovirt:devnode-{tag}");
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut doc = Value::deserialize(doc).unwrap();
        if doc.is_null() {
            continue;
        }
        let name = format!("{tag}-{}", doc["metadata"]["name"].as_str().unwrap());
        doc["metadata"]["name"] = name.clone().into();
        if let Some(role) = doc.get_mut("roleRef") {
            role["name"] = name.into();
        }
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                s["name"] = user.clone().into();
            }
        }
        if let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) {
            drop(rules);
        }
        out.push(doc);
    }
    assert_eq!(
        out.len(),
        2,
        "{}: a ClusterRole and its binding",
        file.display()
    );
    (out, user)
}

/// devnode as `kubeconfig`'s user for `node`, its binaries (devnode-testpod) from the
/// workspace.
fn start_devnode(cp: &ControlPlane, kubeconfig: &Path, node: &str, state: &Path) -> Process {
    let mut cmd = Command::new(workspace_bin("devnode"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node])
        .arg("--state-dir")
        .arg(state);
    spawn_tied("devnode", cmd, &cp.log(&format!("devnode-{node}"))).unwrap()
}

#[tokio::test]
async fn devnode_runs_with_its_documented_role_and_fails_loudly_without_one_rule() {
    let cp = shared().await;
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "rbac-devnode").await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let state = tempfile::Builder::new()
        .prefix(&format!("fv-{}-rbac-devnode", std::process::id()))
        .tempdir_in("/tmp")
        .unwrap();

    // Exactly the documented role.
    let (objects, user) = devnode_rbac("dfull", |_| {});
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &[]).unwrap();
    let node = "rbac-devnode-full";
    let full = start_devnode(cp, &kubeconfig, node, &state.path().join("full"));
    eventually("the Node Ready", &full.log, || async {
        let conditions = nodes.get(node).await.ok()?.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    let data = |kind: &str| json!({"metadata": {"name": "rbac"}, kind: {"k": "dmFsdWU="}});
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "rbac"}, "data": {"k": "value"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(data("data")).unwrap(),
        )
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "reads"},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": "ferrovirt/devnode-testpod:dev", "args": ["exit", "0"],
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "rbac", "key": "k"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "rbac", "key": "k"}}}
                ],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/rbac-token"}]
            }],
            "volumes": [{"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}}
            ]}}]
        }
    }))
    .unwrap();
    // The namespace's default ServiceAccount comes a moment after the namespace.
    eventually("the pod created", &full.log, || async {
        pods.create(&PostParams::default(), &pod)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    eventually("the pod Succeeded", &full.log, || async {
        let phase = pods.get("reads").await.ok()?.status?.phase?;
        (phase == "Succeeded").then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    eventually("the node's Lease", &full.log, || async {
        leases.get_opt(node).await.ok()?.map(|_| ())
    })
    .await;
    pods.delete("reads", &Default::default()).await.unwrap();
    eventually("the pod deleted by devnode", &full.log, || async {
        pods.get_opt("reads").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_nothing_forbidden(&full);
    kill_tied(Some(&[full.pid]));

    // Without patching its Node's status: it refuses to start and says why.
    let (objects, user) = devnode_rbac("dnostatus", without(json!(["nodes/status"]), "patch"));
    assert!(
        !serde_json::to_string(&objects[0]["rules"])
            .unwrap()
            .contains("nodes/status"),
        "the rule is gone"
    );
    apply(cp, &objects).await;
    let kubeconfig = user_kubeconfig(cp, &user, &[]).unwrap();
    let crippled = start_devnode(
        cp,
        &kubeconfig,
        "rbac-devnode-nostatus",
        &state.path().join("nostatus"),
    );
    eventually("devnode exits", &crippled.log, || async {
        has_exited(crippled.pid).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&crippled.log).unwrap();
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.contains("forbidden") && last.contains("nodes/status"),
        "devnode's last line does not name the forbidden request: {last}\n{log}"
    );
}
