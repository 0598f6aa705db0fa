//! Ferrovirt's kubevirt.io/v1 CRDs on a real kube-apiserver: established, KubeVirt's example
//! manifests accepted or rejected by name, invalid VMs rejected naming the field, and
//! `kubectl explain` / `kubectl get` showing what KubeVirt users expect.

#[path = "api/admission.rs"]
mod admission;

use std::fmt::Write as _;

use ferrovirt_tests::{TestNamespace, example_files, examples_dir, shared};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

#[tokio::test]
async fn crds_are_established() {
    let cp = shared().await;
    let api: Api<CustomResourceDefinition> = Api::all(cp.client().await.unwrap());
    let expected = crds::all();
    assert!(!expected.is_empty(), "crds::all() returned no CRDs");
    for crd in expected {
        let name = crd.metadata.name.expect("a CRD has a name");
        let served = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        let conditions = served.status.and_then(|s| s.conditions).unwrap_or_default();
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "CRD {name} is not {wanted}: {conditions:?}"
            );
        }
    }
    // The short names and categories resolve through discovery, as KubeVirt's do.
    let out = cp.kubectl(["get", "vm,vmi,vms,vmis", "-A"]).await.unwrap();
    out.expect_success();
    let out = cp.kubectl(["get", "kubevirt", "-A"]).await.unwrap();
    out.expect_success();
}

/// What `kubectl apply --dry-run=server` must do with a file.
#[derive(Debug)]
enum Expect {
    Accepted,
    /// Rejected, with this substring in kubectl's message.
    Rejected(&'static str),
}
use Expect::{Accepted, Rejected};

/// Every file of ../shared/kubevirt-examples/ and its expected outcome.
const EXAMPLES: &[(&str, Expect)] = &[
    // Accepted; with clarge stored and virt-api's webhook registered, vm-cirros-clarge.yaml
    // is refused as KubeVirt refuses it (its template sets memory.guest, which clarge sets):
    // tests/tests/instancetypes.rs.
    ("clarge.yaml", Accepted),
    ("vm-alpine-multipvc.yaml", Accepted),
    ("vm-cirros-clarge.yaml", Accepted),
    ("vm-cirros.yaml", Accepted),
    (
        "vm-pool-cirros.yaml",
        Rejected(r#"no matches for kind "VirtualMachinePool""#),
    ),
    ("vmi-alpine-efi.yaml", Accepted),
    ("vmi-ephemeral.yaml", Accepted),
    ("vmi-fedora.yaml", Accepted),
    ("vmi-host-disk.yaml", Accepted),
    ("vmi-kernel-boot.yaml", Accepted),
    ("vmi-masquerade.yaml", Accepted),
    ("vmi-migratable.yaml", Accepted),
    ("vmi-nocloud.yaml", Accepted),
    ("vmi-pvc.yaml", Accepted),
    (
        "vmi-replicaset-cirros.yaml",
        Rejected(r#"no matches for kind "VirtualMachineInstanceReplicaSet""#),
    ),
    ("vmi-sata.yaml", Accepted),
];

#[tokio::test]
async fn kubevirt_examples_dry_run() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "examples").await.unwrap();
    let files = example_files();
    let on_disk: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();

    let mut table = String::new();
    let mut failures = 0;
    for (file, path) in on_disk.iter().zip(&files) {
        let expect = EXAMPLES.iter().find(|(f, _)| f == file).map(|(_, e)| e);
        let out = cp.dry_run_apply(ns.name(), path).await.unwrap();
        let message = shown(&out);
        let ok = match expect {
            Some(Accepted) => out.success(),
            Some(Rejected(substring)) => !out.success() && out.stderr.contains(substring),
            None => false,
        };
        if !ok {
            failures += 1;
        }
        let _ = writeln!(
            table,
            "{mark} {file:<28} expected {expect:<70} got {got}: {message}",
            mark = if ok { "ok  " } else { "FAIL" },
            expect = match expect {
                Some(Accepted) => "accepted".to_string(),
                Some(Rejected(s)) => format!("rejected with {s}"),
                None => "(file not in the test's table)".to_string(),
            },
            got = if out.success() {
                "accepted"
            } else {
                "rejected"
            },
        );
    }
    for (file, _) in EXAMPLES {
        if !on_disk.iter().any(|f| f == file) {
            failures += 1;
            let _ = writeln!(
                table,
                "FAIL {file:<28} listed in the table but missing in {}",
                examples_dir().display()
            );
        }
    }
    println!("KubeVirt examples, kubectl apply --dry-run=server:\n{table}");
    assert_eq!(
        failures, 0,
        "{failures} example(s) did not behave as expected:\n{table}"
    );
}

/// A minimal valid VM, with `spec_extra` lines inserted into `spec` and `domain_extra`
/// into `spec.template.spec.domain`.
fn vm(name: &str, spec_extra: &str, domain_extra: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
{spec_extra}  template:
    spec:
      domain:
{domain_extra}        devices:
          disks:
          - name: containerdisk
            disk:
              bus: virtio
      volumes:
      - name: containerdisk
        containerDisk:
          image: quay.io/kubevirt/cirros-container-disk-demo
"
    )
}

#[tokio::test]
async fn invalid_vms_are_rejected_naming_the_field() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "invalid-vms").await.unwrap();

    // The valid base is accepted, so each rejection below is due to its one change.
    let base = vm(
        "valid",
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    );
    let out = cp
        .kubectl_with_stdin(
            ["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
            Some(&base),
        )
        .await
        .unwrap();
    out.expect_success();

    let cases: &[(&str, String, &[&str])] = &[
        (
            "misspelled field",
            vm(
                "misspelled",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n        cpuu:\n          cores: 1\n",
            ),
            &["spec.template.spec.domain.cpuu"],
        ),
        (
            "negative memory",
            vm(
                "negative-memory",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: -1Gi\n",
            ),
            &["spec.template.spec.domain.memory.guest"],
        ),
        (
            "running and runStrategy",
            vm(
                "both",
                "  running: true\n  runStrategy: Always\n",
                "        memory:\n          guest: 128Mi\n",
            ),
            &["running", "runStrategy"],
        ),
        (
            "evictionStrategy LiveMigrate (no live migration)",
            vm(
                "evict",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "    spec:\n      domain:",
                "    spec:\n      evictionStrategy: LiveMigrate\n      domain:",
            ),
            &["spec.template.spec.evictionStrategy", "need live migration"],
        ),
        (
            "an unknown startStrategy",
            vm(
                "start",
                "  runStrategy: Halted\n",
                "        memory:\n          guest: 128Mi\n",
            )
            .replace(
                "    spec:\n      domain:",
                "    spec:\n      startStrategy: Running\n      domain:",
            ),
            &["spec.template.spec.startStrategy", "Paused"],
        ),
    ];
    let mut report = String::new();
    let mut failures = 0;
    for (what, manifest, fields) in cases {
        let out = cp
            .kubectl_with_stdin(
                ["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
                Some(manifest),
            )
            .await
            .unwrap();
        let ok = !out.success() && fields.iter().all(|f| out.stderr.contains(f));
        if !ok {
            failures += 1;
        }
        let _ = writeln!(
            report,
            "{} {what}: expected a rejection naming {fields:?}, got {}: {}",
            if ok { "ok  " } else { "FAIL" },
            if out.success() {
                "accepted"
            } else {
                "rejected"
            },
            shown(&out),
        );
    }
    println!("{report}");
    assert_eq!(failures, 0, "{report}");
}

#[tokio::test]
async fn kubectl_explain_and_columns() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "kubectl-ux").await.unwrap();

    // The OpenAPI document of a new CRD is published shortly after it is Established.
    let mut explain = cp
        .kubectl(["explain", "vm.spec.runStrategy"])
        .await
        .unwrap();
    for _ in 0..50 {
        if explain.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        explain = cp
            .kubectl(["explain", "vm.spec.runStrategy"])
            .await
            .unwrap();
    }
    let text = explain.expect_success();
    let description = text
        .split_once("DESCRIPTION:")
        .map(|(_, d)| d.trim())
        .unwrap_or_else(|| panic!("no DESCRIPTION in kubectl explain:\n{text}"));
    assert!(
        text.contains("FIELD: runStrategy")
            && description.len() > 40
            && !description.starts_with("<empty>"),
        "kubectl explain vm.spec.runStrategy has no real description:\n{text}"
    );

    let manifest = vm(
        "columns",
        "  runStrategy: Halted\n",
        "        memory:\n          guest: 128Mi\n",
    );
    cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(&manifest))
        .await
        .unwrap()
        .expect_success();
    let get = cp.kubectl(["get", "vm", "-n", ns.name()]).await.unwrap();
    let header: Vec<&str> = get
        .expect_success()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "AGE", "STATUS", "READY"],
        "kubectl get vm columns:\n{get}"
    );
    assert!(
        get.stdout.contains("columns"),
        "the VM is not listed:\n{get}"
    );
}

/// What kubectl printed: stdout when it succeeded, else stderr, on one line.
fn shown(out: &ferrovirt_tests::KubectlOutput) -> String {
    one_line(if out.success() {
        &out.stdout
    } else {
        &out.stderr
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
