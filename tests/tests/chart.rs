//! The Helm chart (deploy/helm/ferrovirt): `helm lint --strict`, `helm template`, a
//! server-side dry run of everything it renders against the real kube-apiserver, its
//! schema refusing wrong values by name, and its CRDs, policies and roles equal to their
//! one source in the repository. helm comes from `hack/build-helm.sh` (or `$HELM`).

use std::collections::BTreeMap;

use ferrovirt_tests::helm::{
    KUBE_VERSION, chart, documents, find, kind_name, run as run_helm, template, try_template,
};
use ferrovirt_tests::{TestNamespace, repo_root, shared};
use serde_yaml::Value;

#[test]
fn helm_lint_strict_passes() {
    let chart = chart();
    let (ok, stdout, stderr) = run_helm(&[
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "-n",
        "kubevirt",
        "--kube-version",
        KUBE_VERSION,
    ]);
    assert!(
        ok && stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "helm lint --strict failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn template_renders_every_component_with_probes_priority_and_requests() {
    let docs = documents(&template("kubevirt", &[]));
    let controller = find(&docs, "Deployment", "virt-controller");
    assert_eq!(controller["spec"]["replicas"], Value::from(2));
    let api = find(&docs, "Deployment", "virt-api");
    let handler = find(&docs, "DaemonSet", "virt-handler");
    for (workload, account) in [
        (controller, "kubevirt-controller"),
        (api, "kubevirt-apiserver"),
        (handler, "kubevirt-handler"),
    ] {
        let name = kind_name(workload).1;
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], Value::from(account), "{name}");
        find(&docs, "ServiceAccount", account);
        find(&docs, "ClusterRole", account);
        assert_eq!(
            pod["priorityClassName"],
            Value::from("kubevirt-cluster-critical"),
            "{name}"
        );
        let container = &pod["containers"][0];
        let image = container["image"].as_str().unwrap_or_default();
        assert_eq!(
            image,
            format!("10.250.0.1:5000/ferrovirt/{name}:0.1.0"),
            "{name}'s image"
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["path"],
                Value::from("/healthz"),
                "{name} {probe}"
            );
        }
        for resource in ["cpu", "memory"] {
            assert!(
                !container["resources"]["requests"][resource].is_null(),
                "{name} requests no {resource}"
            );
        }
        assert!(
            container["args"]
                .as_sequence()
                .unwrap()
                .contains(&Value::from("--log-format=plain")),
            "{name} args: {:?}",
            container["args"]
        );
    }
    // The launcher image virt-controller puts into every launcher pod.
    assert!(
        controller["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from(
                "--launcher-image=10.250.0.1:5000/ferrovirt/virt-launcher:0.1.0"
            ))
    );
    let handler_security = &handler["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(handler_security["privileged"], Value::from(true));
    // The containerDisk containers' files are /proc/<pid>/root of another pod's process.
    assert_eq!(
        handler["spec"]["template"]["spec"]["hostPID"],
        Value::from(true)
    );
    for restricted in [controller, api] {
        let security = &restricted["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(security["runAsNonRoot"], Value::from(true));
        assert_eq!(security["readOnlyRootFilesystem"], Value::from(true));
    }
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "virt-controller")["spec"]["minAvailable"],
        Value::from(1)
    );
    assert_eq!(
        find(&docs, "ConfigMap", "kubevirt-config")["data"]["useEmulation"],
        Value::from("false")
    );
    for apiservice in ferrovirt_tests::aggregation::APISERVICES {
        let svc = find(&docs, "APIService", apiservice);
        assert_eq!(svc["spec"]["service"]["name"], Value::from("virt-api"));
        assert!(
            svc["spec"]["caBundle"].is_null(),
            "virt-api writes the caBundle"
        );
    }
    // The webhooks are the ones virt-api serves (the harness's table of them).
    for (name, config, resource, operations, path) in ferrovirt_tests::webhooks::WEBHOOKS {
        let kind = if *config == ferrovirt_tests::webhooks::MUTATING {
            "MutatingWebhookConfiguration"
        } else {
            "ValidatingWebhookConfiguration"
        };
        let hooks = find(&docs, kind, config)["webhooks"].as_sequence().unwrap();
        let hook = hooks
            .iter()
            .find(|h| h["name"] == *name)
            .unwrap_or_else(|| panic!("{config} has no webhook {name}"));
        assert_eq!(hook["clientConfig"]["service"]["path"], Value::from(*path));
        assert_eq!(hook["failurePolicy"], Value::from("Fail"));
        assert_eq!(hook["rules"][0]["resources"][0], Value::from(*resource));
        let (group, version) = ferrovirt_tests::webhooks::group_version(resource);
        assert_eq!(hook["rules"][0]["apiGroups"][0], Value::from(group));
        assert_eq!(hook["rules"][0]["apiVersions"][0], Value::from(version));
        let ops: Vec<&str> = operations.split(", ").collect();
        assert_eq!(
            hook["rules"][0]["operations"],
            serde_yaml::to_value(ops).unwrap()
        );
    }
}

#[test]
fn values_change_what_renders() {
    let docs = documents(&template(
        "ferro",
        &[
            "--set",
            "emulation=true",
            "--set",
            "logFormat=json",
            "--set",
            "image.registry=registry.example:5000",
            "--set",
            "image.tag=abc123",
            "--set",
            "featureGates={HostDisk}",
            "--set",
            "hostDisk.pathPrefixes={/var/data}",
            "--set",
            "networkBindings={passt}",
        ],
    ));
    let config = &find(&docs, "ConfigMap", "kubevirt-config")["data"];
    assert_eq!(config["ferrovirt.networkBindings"], Value::from("passt"));
    assert_eq!(config["useEmulation"], Value::from("true"));
    assert_eq!(config["feature-gates"], Value::from("HostDisk"));
    assert_eq!(
        config["ferrovirt.hostDiskPathPrefixes"],
        Value::from("/var/data")
    );
    let handler = find(&docs, "DaemonSet", "virt-handler");
    assert_eq!(handler["metadata"]["namespace"], Value::from("ferro"));
    let container = &handler["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        Value::from("registry.example:5000/ferrovirt/virt-handler:abc123")
    );
    assert!(
        container["args"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from("--log-format=json"))
    );
    assert!(
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/data"),
        "the allowed host-disk directory is not mounted into virt-handler"
    );

    assert!(
        container["args"]
            .as_sequence()
            .unwrap()
            .contains(&Value::from("--advertise-address=$(POD_IP)")),
        "virt-handler must publish its pod IP for virt-api"
    );
    let without = documents(&template("kubevirt", &["--set", "admissionPolicies=false"]));
    assert!(
        !without
            .iter()
            .any(|d| kind_name(d).0.starts_with("ValidatingAdmissionPolicy")),
        "admissionPolicies=false still renders the policies"
    );

    // A ServiceMonitor only where the Prometheus Operator's API is served.
    let (ok, _, stderr) = try_template(
        "kubevirt",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    assert!(
        !ok && stderr.contains("metrics.serviceMonitor.enabled")
            && stderr.contains("monitoring.coreos.com/v1"),
        "a ServiceMonitor without its API must fail naming the value: {stderr}"
    );
    let docs = documents(&template(
        "kubevirt",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
        ],
    ));
    let monitor = find(&docs, "ServiceMonitor", "kubevirt");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        Value::from("metrics")
    );
}

#[test]
fn schema_refuses_a_wrong_value_naming_it() {
    for (set, named) in [
        ("emulation=maybe", "/emulation"),
        ("logFormat=xml", "/logFormat"),
        ("virtApi.replicas=0", "/virtApi/replicas"),
        ("virtController.replicas=0", "/virtController/replicas"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("nodeRunDir=relative/dir", "/nodeRunDir"),
        (
            "virtHandler.resources.requests.memory=lots",
            "/virtHandler/resources/requests/memory",
        ),
        ("virtControler.replicas=3", "virtControler"),
    ] {
        let (ok, _, stderr) = try_template("kubevirt", &["--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(
            stderr.contains("schema") && stderr.contains(named),
            "--set {set}: the refusal does not name {named}: {stderr}"
        );
    }
}

/// The CRDs the chart installs are exactly the generated ones (crds::all(), which
/// crds/tests/yaml_up_to_date.rs checks against crds/yaml/, the chart's `crds/` link).
#[test]
fn chart_crds_are_the_generated_ones() {
    let (ok, stdout, stderr) = run_helm(&["show", "crds", chart().to_str().unwrap()]);
    assert!(ok, "helm show crds failed: {stderr}");
    let mut in_chart: BTreeMap<String, Value> = documents(&stdout)
        .into_iter()
        .map(|d| (kind_name(&d).1, d))
        .collect();
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        let generated = serde_yaml::to_value(&crd).unwrap();
        let chart_crd = in_chart
            .remove(&name)
            .unwrap_or_else(|| panic!("the chart has no CRD {name}"));
        assert!(
            chart_crd == generated,
            "the chart's CRD {name} differs from the generated one: run `cargo run -p ferrovirt-crds --bin crdgen`"
        );
    }
    assert!(
        in_chart.is_empty(),
        "the chart has CRDs nobody generates: {:?}",
        in_chart.keys()
    );
}

/// The admission policies come from deploy/policies, and every ClusterRole, Role and
/// binding of deploy/rbac/rbac.yaml (KubeVirt's user-facing roles, virt-api's
/// permissions) is in the chart unchanged, less the User subjects of the out-of-cluster
/// components.
#[test]
fn chart_policies_and_roles_are_the_repository_ones() {
    let rendered = documents(&template("kubevirt", &[]));
    let read = |p: &str| documents(&std::fs::read_to_string(repo_root().join(p)).unwrap());
    let mut expected = read("deploy/policies/kubevirt-annotations.yaml");
    let rbac_kinds = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    for mut doc in read("deploy/rbac/rbac.yaml") {
        if !rbac_kinds.contains(&kind_name(&doc).0.as_str()) {
            continue;
        }
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_sequence_mut) {
            subjects.retain(|s| s["kind"] != "User");
        }
        expected.push(doc);
    }
    let names: Vec<(String, String)> = expected.iter().map(kind_name).collect();
    for wanted in ["kubevirt.io:view", "kubevirt.io:edit", "kubevirt-apiserver"] {
        assert!(
            names.iter().any(|(_, n)| n == wanted),
            "{wanted} is not in the sources"
        );
    }
    for doc in &expected {
        let (kind, name) = kind_name(doc);
        assert!(
            find(&rendered, &kind, &name) == doc,
            "the chart's {kind} {name} differs from its source:\n{}",
            serde_yaml::to_string(find(&rendered, &kind, &name)).unwrap()
        );
    }
}

/// Everything the chart renders (with its CRDs) is accepted by the real kube-apiserver in
/// a server-side dry run: schemas, RBAC references, webhook and APIService shapes.
#[tokio::test]
async fn server_side_dry_run_accepts_every_object() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "chart").await.unwrap();
    let rendered = template(
        ns.name(),
        &[
            "--include-crds",
            "--set",
            "emulation=true",
            "--set",
            "hostDisk.pathPrefixes={/var/data}",
        ],
    );
    let objects = documents(&rendered).len();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferrovirt.yaml");
    std::fs::write(&file, &rendered).unwrap();
    // Without -n: every namespaced object names its namespace (the release's, and
    // kube-system for virt-api's authentication reader binding).
    let out = cp
        .kubectl(["apply", "--dry-run=server", "-f", file.to_str().unwrap()])
        .await
        .unwrap();
    let stdout = out.expect_success();
    let accepted = stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted, objects,
        "{objects} objects rendered, {accepted} accepted:\n{out}"
    );
}

/// Each workload the chart deploys has its Dockerfile in deploy/images, whose entrypoint is
/// the component's binary, and a non-root image user exactly where the chart demands
/// `runAsNonRoot` (the launcher's command is `virt-launcher` on the image's PATH).
#[test]
fn images_match_the_chart() {
    let docs = documents(&template("kubevirt", &[]));
    for name in [
        "virt-controller",
        "virt-api",
        "virt-handler",
        "virt-launcher",
    ] {
        let path = repo_root().join(format!("deploy/images/{name}.Dockerfile"));
        let dockerfile = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let last = |directive: &str| {
            dockerfile
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix(directive))
                .unwrap_or_else(|| panic!("{} has no {directive}", path.display()))
                .trim()
                .to_string()
        };
        assert_eq!(
            last("ENTRYPOINT "),
            format!("[\"/usr/local/bin/{name}\"]"),
            "{name}"
        );
        let non_root = !last("USER ").starts_with("0");
        let workload = docs.iter().find(|d| {
            matches!(kind_name(d).0.as_str(), "Deployment" | "DaemonSet") && kind_name(d).1 == name
        });
        if let Some(workload) = workload {
            let security =
                &workload["spec"]["template"]["spec"]["containers"][0]["securityContext"];
            assert_eq!(
                security["runAsNonRoot"] == true,
                non_root,
                "{name}: the image's USER and the chart's runAsNonRoot disagree"
            );
        } else {
            assert_eq!(name, "virt-launcher", "the chart deploys no {name}");
        }
    }
}
