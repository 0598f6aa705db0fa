//! What the API server refuses before any Ferrovirt component sees it, tried with kubectl as
//! a user would: changes to a VMI's spec (issue 14, defect 3), names too long for the
//! launcher pod's label (defect 5) and KubeVirt annotations Ferrovirt does not implement
//! (defect 4). Each refusal must name the field or annotation; the updates KubeVirt allows
//! must still work.

use std::fmt::Write as _;

use ferrovirt_tests::{ControlPlane, KubectlOutput, TestNamespace, repo_root, shared};

use super::shown;

/// A VM (`kind` VirtualMachine, the valid VM of [`super::vm`]) or a VMI of the same spec,
/// with the given metadata and template annotations (YAML maps on one line, `{}` for none).
fn manifest(kind: &str, name: &str, annotations: &str, template_annotations: &str) -> String {
    let vm = super::vm(
        name,
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    )
    .replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  annotations: {annotations}\n"),
    );
    if kind == "VirtualMachine" {
        return vm.replace(
            "  template:\n",
            &format!("  template:\n    metadata:\n      annotations: {template_annotations}\n"),
        );
    }
    let (head, template) = vm.split_once("spec:\n").expect("the VM has a spec");
    let (_, spec) = template
        .split_once("    spec:\n")
        .expect("the VM has a template spec");
    let spec: String = spec.lines().map(|l| format!("{}\n", &l[4..])).collect();
    format!(
        "{}spec:\n{spec}",
        head.replace("kind: VirtualMachine", "kind: VirtualMachineInstance")
    )
}

/// Creates the object of [`manifest`] without annotations.
async fn create(cp: &ControlPlane, ns: &TestNamespace, kind: &str, name: &str) {
    apply(cp, ns, &manifest(kind, name, "{}", "{}"), false)
        .await
        .expect_success();
}

async fn apply(
    cp: &ControlPlane,
    ns: &TestNamespace,
    manifest: &str,
    dry_run: bool,
) -> KubectlOutput {
    let mut args = vec!["apply", "-n", ns.name(), "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    cp.kubectl_with_stdin(args, Some(manifest)).await.unwrap()
}

async fn kubectl(cp: &ControlPlane, args: &[&str]) -> KubectlOutput {
    cp.kubectl(args).await.unwrap()
}

#[track_caller]
fn expect_refused(out: &KubectlOutput, what: &str, wanted: &[&str]) {
    assert!(
        !out.success() && wanted.iter().all(|w| out.stderr.contains(w)),
        "{what}: expected a refusal naming {wanted:?}, got:\n{out}"
    );
}

/// `kubectl patch <kind> <name> --type merge -p <patch>` in `ns`, with `extra` arguments.
async fn merge_patch(
    cp: &ControlPlane,
    ns: &TestNamespace,
    object: &str,
    patch: &str,
    extra: &[&str],
) -> KubectlOutput {
    let (kind, name) = object.split_once('/').expect("kind/name");
    let mut args = vec![
        "patch",
        kind,
        name,
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        patch,
    ];
    args.extend_from_slice(extra);
    kubectl(cp, &args).await
}

/// A field of a stored object, by JSONPath.
async fn field(cp: &ControlPlane, ns: &TestNamespace, object: &str, jsonpath: &str) -> String {
    let path = format!("jsonpath={{{jsonpath}}}");
    let out = kubectl(cp, &["get", object, "-n", ns.name(), "-o", &path]).await;
    out.expect_success().to_string()
}

#[tokio::test]
async fn vmi_spec_updates_are_refused_naming_the_field() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "vmi-update").await.unwrap();
    create(cp, &ns, "VirtualMachineInstance", "frozen").await;

    // The issue's command: refused, naming the field, and the stored spec is unchanged.
    let memory = r#"{"spec":{"domain":{"memory":{"guest":"256Mi"}}}}"#;
    let out = merge_patch(cp, &ns, "vmi/frozen", memory, &[]).await;
    let restricted = "update of VMI object is restricted";
    expect_refused(
        &out,
        "patch of spec.domain.memory.guest",
        &[restricted, "spec.domain.memory"],
    );
    let guest = field(cp, &ns, "vmi/frozen", ".spec.domain.memory.guest").await;
    assert_eq!(guest, "128Mi", "the refused patch left the spec as it was");
    // A top-level field of the spec is refused the same way.
    let hostname = r#"{"spec":{"hostname":"other"}}"#;
    let out = merge_patch(cp, &ns, "vmi/frozen", hostname, &[]).await;
    expect_refused(
        &out,
        "patch of spec.hostname",
        &[restricted, "spec.hostname"],
    );
    // The grace period may only go down (virtctl stop --force --grace-period): where none
    // was, from the default (30 s); raising it is refused by name.
    let grace = |s: u32| format!(r#"{{"spec":{{"terminationGracePeriodSeconds":{s}}}}}"#);
    let wanted = [
        restricted,
        "spec.terminationGracePeriodSeconds",
        "can only be lowered",
    ];
    let out = merge_patch(cp, &ns, "vmi/frozen", &grace(31), &[]).await;
    expect_refused(&out, "above the default where none was", &wanted);
    merge_patch(cp, &ns, "vmi/frozen", &grace(20), &[])
        .await
        .expect_success();
    let graceful = manifest("VirtualMachineInstance", "graceful", "{}", "{}").replacen(
        "\nspec:\n",
        "\nspec:\n  terminationGracePeriodSeconds: 30\n",
        1,
    );
    apply(cp, &ns, &graceful, false).await.expect_success();
    merge_patch(cp, &ns, "vmi/graceful", &grace(5), &[])
        .await
        .expect_success();
    let out = merge_patch(cp, &ns, "vmi/graceful", &grace(6), &[]).await;
    expect_refused(&out, "a raised grace period", &wanted);

    // What KubeVirt lets a user change: labels and annotations; the components write status.
    let vmi = ["vmi", "frozen", "-n", ns.name()];
    kubectl(cp, &[&["label"], &vmi[..], &["team=a"]].concat())
        .await
        .expect_success();
    kubectl(
        cp,
        &[&["annotate"], &vmi[..], &["example.com/note=x"]].concat(),
    )
    .await
    .expect_success();
    // The status is in the VMI itself (no status subresource, as KubeVirt's VMI CRD), and
    // only those who may patch virtualmachineinstances/status change it (the policy in
    // deploy/policies/vmi-status.yaml): an admin here, the components in a cluster.
    let phase = r#"{"status":{"phase":"Pending"}}"#;
    merge_patch(cp, &ns, "vmi/frozen", phase, &[])
        .await
        .expect_success();
    // A user who may patch VMIs but not their status: labels yes, status no, by name.
    let editor = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: vmi-editor}\n\
         rules: [{apiGroups: [kubevirt.io], resources: [virtualmachineinstances], verbs: [get, patch]}]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: vmi-editor}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: vmi-editor}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: vmi-editor}]\n";
    apply(cp, &ns, editor, false).await.expect_success();
    let label = r#"{"metadata":{"labels":{"team":"b"}}}"#;
    merge_patch(cp, &ns, "vmi/frozen", label, &["--as=vmi-editor"])
        .await
        .expect_success();
    let running = r#"{"status":{"phase":"Running"}}"#;
    let out = merge_patch(cp, &ns, "vmi/frozen", running, &["--as=vmi-editor"]).await;
    expect_refused(
        &out,
        "a status patch by a user without virtualmachineinstances/status",
        &["status", "virtualmachineinstances/status"],
    );
    let phase = field(cp, &ns, "vmi/frozen", ".status.phase").await;
    assert_eq!(
        phase, "Pending",
        "the refused patch left the status as it was"
    );
    // Applying the unchanged manifest again is no change.
    create(cp, &ns, "VirtualMachineInstance", "frozen").await;

    // A VM's template stays editable (the VM shows RestartRequired for a running VMI).
    create(cp, &ns, "VirtualMachine", "editable").await;
    let memory = r#"{"spec":{"template":{"spec":{"domain":{"memory":{"guest":"256Mi"}}}}}}"#;
    merge_patch(cp, &ns, "vm/editable", memory, &[])
        .await
        .expect_success();
    let guest = field(
        cp,
        &ns,
        "vm/editable",
        ".spec.template.spec.domain.memory.guest",
    )
    .await;
    assert_eq!(guest, "256Mi");
}

#[tokio::test]
async fn names_longer_than_63_characters_are_refused() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "long-names").await.unwrap();
    let longest = "a".repeat(63);
    let too_long = "b".repeat(64);
    for kind in ["VirtualMachine", "VirtualMachineInstance"] {
        apply(cp, &ns, &manifest(kind, &longest, "{}", "{}"), true)
            .await
            .expect_success();
        let out = apply(cp, &ns, &manifest(kind, &too_long, "{}", "{}"), true).await;
        expect_refused(
            &out,
            &format!("{kind} with a 64-character name"),
            &["metadata.name", "at most 63", "vm.kubevirt.io/name"],
        );
    }
}

#[tokio::test]
async fn unimplemented_kubevirt_annotations_are_refused_naming_them() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "annotations").await.unwrap();
    const VM: &str = "VirtualMachine";
    const VMI: &str = "VirtualMachineInstance";
    // (kind, metadata annotations, template annotations, None = accepted or Some(words the refusal names))
    let cases: &[(&str, &str, &str, Option<&[&str]>)] = &[
        (
            VM,
            "{hooks.kubevirt.io/hookSidecars: '[]'}",
            "{}",
            Some(&["metadata.annotations", "hooks.kubevirt.io/hookSidecars"]),
        ),
        (
            VM,
            "{}",
            "{hooks.kubevirt.io/hookSidecars: '[]'}",
            Some(&[
                "spec.template.metadata.annotations",
                "hooks.kubevirt.io/hookSidecars",
            ]),
        ),
        (
            VMI,
            "{hooks.kubevirt.io/hookSidecars: '[]'}",
            "{}",
            Some(&["metadata.annotations", "hooks.kubevirt.io/hookSidecars"]),
        ),
        (
            VMI,
            "{kubevirt.io/keep-launcher-alive-after-failure: 'true'}",
            "{}",
            Some(&["kubevirt.io/keep-launcher-alive-after-failure"]),
        ),
        (
            VM,
            "{}",
            "{kubevirt.io/vm-generation: '1'}",
            Some(&[
                "spec.template.metadata.annotations",
                "kubevirt.io/vm-generation",
            ]),
        ),
        (VMI, "{kubevirt.io/vm-generation: '1'}", "{}", None),
        (
            VM,
            "{kubevirt.io/latest-observed-api-version: v1, kubevirt.io/storage-observed-api-version: v1}",
            "{}",
            None,
        ),
        (
            VMI,
            "{kubevirt.io/latest-observed-api-version: v1, kubevirt.io/storage-observed-api-version: v1}",
            "{}",
            None,
        ),
        (
            VM,
            "{example.com/note: a, notkubevirt.io/x: b, kubevirt.io.example.com/z: c}",
            "{example.com/note: x}",
            None,
        ),
    ];
    let mut report = String::new();
    let mut failures = 0;
    for (i, (kind, annotations, template, refused)) in cases.iter().enumerate() {
        let out = apply(
            cp,
            &ns,
            &manifest(kind, &format!("case-{i}"), annotations, template),
            true,
        )
        .await;
        let ok = match refused {
            None => out.success(),
            Some(words) => !out.success() && words.iter().all(|w| out.stderr.contains(w)),
        };
        failures += usize::from(!ok);
        let _ = writeln!(
            report,
            "{} {kind} annotations {annotations} template {template}: expected {}, got {}",
            if ok { "ok  " } else { "FAIL" },
            refused.map_or("accepted".to_string(), |w| format!(
                "a refusal naming {w:?}"
            )),
            shown(&out),
        );
    }
    println!("{report}");
    assert_eq!(failures, 0, "{report}");

    // Adding one to a stored VM is refused too; other annotations can still be added.
    create(cp, &ns, VM, "stored").await;
    let annotate = |annotation: &'static str| {
        let ns = ns.name().to_string();
        async move { kubectl(cp, &["annotate", "vm", "stored", "-n", &ns, annotation]).await }
    };
    let out = annotate("hooks.kubevirt.io/hookSidecars=[]").await;
    let sidecars = ["hooks.kubevirt.io/hookSidecars"];
    expect_refused(
        &out,
        "kubectl annotate with hooks.kubevirt.io/hookSidecars",
        &sidecars,
    );
    annotate("example.com/note=x").await.expect_success();
}

/// A policy whose CEL the API server cannot type-check is weaker than it reads; its status
/// says so. Each policy in deploy/policies/ must be installed with a clean type check.
#[tokio::test]
async fn admission_policies_are_installed_and_type_checked() {
    let cp = shared().await;
    let dir = repo_root().join("deploy").join("policies");
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if value["kind"].as_str() == Some("ValidatingAdmissionPolicy") {
                names.push(
                    value["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }
    names.sort();
    names.dedup();
    assert!(
        !names.is_empty(),
        "no ValidatingAdmissionPolicy in {}",
        dir.display()
    );
    for name in names {
        let out = kubectl(
            cp,
            &[
                "get", "validatingadmissionpolicy", &name, "-o",
                "jsonpath={.metadata.generation} {.status.observedGeneration} warnings={.status.typeChecking.expressionWarnings}",
            ],
        )
        .await;
        let text = out.expect_success().to_string();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert!(
            fields.len() == 3 && fields[0] == fields[1] && fields[2] == "warnings=",
            "policy {name}: generation, observed generation and type-check warnings: {text}"
        );
        let binding = kubectl(
            cp,
            &[
                "get",
                "validatingadmissionpolicybinding",
                &name,
                "-o",
                "jsonpath={.spec.validationActions}",
            ],
        )
        .await;
        assert_eq!(binding.expect_success(), r#"["Deny"]"#, "binding {name}");
    }
}
