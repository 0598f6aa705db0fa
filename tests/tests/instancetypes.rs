//! Instancetypes and preferences (instancetype.kubevirt.io/v1beta1) on the real API server
//! with virt-api's webhooks, and one guest booted from KubeVirt's vm-cirros-clarge.yaml:
//! what the instancetype sets is what the guest sees (its vCPUs and memory, read inside the
//! guest), what it does not implement is refused by name, a template that sets what the
//! instancetype sets is refused as KubeVirt refuses it, and a missing instancetype is named
//! in the VM's status and Events until it exists.
//!
//! Also KubeVirt's contract with CDI (DataVolumes), on the same stack with a stand-in for
//! CDI: a guest booted from the claim of a DataVolume its VM made.

use std::time::Duration;

use crds::{VirtualMachine, VirtualMachineInstance, VmiPhase};
use ferrovirt_tests::webhooks::shared_virt_api_with_webhooks;
use ferrovirt_tests::{ControlPlane, KubectlOutput, Stack, TestNamespace, examples_dir, shared};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// A boot with 4 vCPUs under emulation on 2 loaded cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

static STACK: OnceCell<Stack> = OnceCell::const_new();

async fn stack() -> (&'static ControlPlane, &'static Stack) {
    let cp = shared().await;
    shared_virt_api_with_webhooks().await;
    let stack = STACK
        .get_or_init(|| async {
            Stack::start(cp, "it-node")
                .await
                .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"))
        })
        .await;
    (cp, stack)
}

async fn apply(cp: &ControlPlane, ns: &TestNamespace, manifest: &str) -> KubectlOutput {
    cp.kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(manifest))
        .await
        .expect("kubectl runs")
}

fn example(file: &str) -> String {
    let path = examples_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Asserts that kubectl refused `manifest` and printed each of `names`.
async fn refused(cp: &ControlPlane, ns: &TestNamespace, row: &str, manifest: &str, names: &[&str]) {
    let out = apply(cp, ns, manifest).await;
    assert!(
        !out.success(),
        "{row}: accepted, should be refused:\n{manifest}"
    );
    for name in names {
        assert!(
            out.stderr.contains(name),
            "{row}: the refusal does not name {name:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn what_ferrovirt_does_not_implement_or_what_conflicts_is_refused_by_name() {
    let cp = shared().await;
    shared_virt_api_with_webhooks().await;
    let ns = TestNamespace::create(cp, "it-refused").await.unwrap();
    let out = apply(cp, &ns, &example("clarge.yaml")).await;
    assert!(out.success(), "clarge.yaml: {}", out.stderr);

    // KubeVirt's example as shipped: its template sets memory.guest, which clarge sets too;
    // KubeVirt's VM webhook refuses it so.
    refused(
        cp,
        &ns,
        "vm-cirros-clarge.yaml",
        &example("vm-cirros-clarge.yaml"),
        &[
            "spec.template.spec.domain.memory.guest",
            "conflicts with selected instance type",
        ],
    )
    .await;

    let vm = |spec_extra: Value| {
        let mut vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "v"},
            "spec": {"runStrategy": "Halted",
                     "instancetype": {"kind": "VirtualMachineInstancetype", "name": "clarge"},
                     "template": {"spec": {"domain": {"devices": {}}}}}});
        for (k, v) in spec_extra.as_object().unwrap() {
            vm["spec"][k] = v.clone();
        }
        vm.to_string()
    };
    // KubeVirt's arm64 preferences are accepted as objects; a VM using one is refused.
    let arm = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachinePreference",
        "metadata": {"name": "arm"},
        "spec": {"preferredArchitecture": "arm64", "requirements": {"architecture": "arm64"}}});
    let out = apply(cp, &ns, &arm.to_string()).await;
    assert!(out.success(), "an arm64 preference: {}", out.stderr);
    let rows: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a CPU count in the template",
            vm(json!({"template": {"spec": {"domain": {"cpu": {"cores": 2}, "devices": {}}}}})),
            vec!["spec.template.spec.domain.cpu.cores", "conflicts with selected instance type"],
        ),
        (
            "inferFromVolume with a kind",
            vm(json!({"instancetype": {"inferFromVolume": "root", "kind": "VirtualMachineInstancetype"}})),
            vec!["spec.instancetype", "Kind already set, should be cleared before setting inferFromVolume"],
        ),
        (
            "inferFromVolume naming no volume",
            vm(json!({"instancetype": {"inferFromVolume": "root"}})),
            vec!["spec.instancetype.inferFromVolume: unable to find volume root to infer defaults"],
        ),
        (
            "a kind that is no instancetype",
            vm(json!({"instancetype": {"kind": "Pod", "name": "clarge"}})),
            vec!["spec.instancetype.kind", "must be VirtualMachineInstancetype or VirtualMachineClusterInstancetype"],
        ),
        (
            "an instancetype field Ferrovirt does not implement",
            json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
                   "metadata": {"name": "gpus"},
                   "spec": {"cpu": {"guest": 2}, "memory": {"guest": "1Gi"},
                            "gpus": [{"name": "gpu", "deviceName": "nvidia.com/GP102GL"}]}})
            .to_string(),
            vec![r#"unknown field "spec.gpus""#],
        ),
        (
            "a preference field Ferrovirt does not implement",
            json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineClusterPreference",
                   "metadata": {"name": "needs"},
                   "spec": {"devices": {"preferredSoundModel": "ich9"}}})
            .to_string(),
            vec![r#"unknown field "spec.devices.preferredSoundModel""#],
        ),
        (
            "a preference's Hyper-V enlightenments (KubeVirt's Windows preferences)",
            json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachinePreference",
                   "metadata": {"name": "windows"},
                   "spec": {"features": {"preferredHyperv": {"relaxed": {}, "spinlocks": {"spinlocks": 8191}}}}})
            .to_string(),
            vec!["spec.features.preferredHyperv", "Hyper-V enlightenments are not supported"],
        ),
        (
            "a preference for another architecture, used",
            vm(json!({"preference": {"kind": "VirtualMachinePreference", "name": "arm"}})),
            vec!["spec.template.spec.architecture", "Unsupported value: \"arm64\"", "Ferrovirt's nodes are amd64"],
        ),
        (
            "an instancetype's overcommitPercent with hugepages",
            json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
                   "metadata": {"name": "over"},
                   "spec": {"cpu": {"guest": 1}, "memory": {"guest": "1Gi", "overcommitPercent": 10,
                                                              "hugepages": {"pageSize": "2Mi"}}}})
            .to_string(),
            vec!["spec.memory", "overcommitPercent cannot be used with hugepages"],
        ),
        (
            "an instancetype's supplementalPool",
            json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
                   "metadata": {"name": "pool"},
                   "spec": {"cpu": {"guest": 1}, "memory": {"guest": "1Gi"}, "ioThreadsPolicy": "supplementalPool"}})
            .to_string(),
            vec!["spec.ioThreadsPolicy", "needs QEMU 9 and libvirt 10"],
        ),
        (
            "an unimplemented KubeVirt annotation on a VM",
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                   "metadata": {"name": "hooked", "annotations": {"hooks.kubevirt.io/hookSidecars": "[]"}},
                   "spec": {"runStrategy": "Halted", "instancetype": {"kind": "VirtualMachineInstancetype", "name": "clarge"},
                            "template": {"spec": {"domain": {"devices": {}}}}}})
            .to_string(),
            vec!["hooks.kubevirt.io/hookSidecars", "not implemented by Ferrovirt"],
        ),
    ];
    for (row, manifest, names) in rows {
        refused(cp, &ns, row, &manifest, &names).await;
    }
    // A preference that needs more than clarge gives (KubeVirt checks it in its webhook).
    let needs_more = json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachinePreference",
        "metadata": {"name": "needs-more"},
        "spec": {"requirements": {"cpu": {"guest": 8}, "memory": {"guest": "1Gi"}}}});
    let out = apply(cp, &ns, &needs_more.to_string()).await;
    assert!(
        out.success(),
        "a preference with requirements: {}",
        out.stderr
    );
    refused(
        cp,
        &ns,
        "a VM that provides less than its preference requires",
        &vm(json!({"preference": {"kind": "VirtualMachinePreference", "name": "needs-more"}})),
        &[
            "spec.instancetype",
            "failure checking preference requirements: insufficient CPU resources of 4 vCPU provided by instance type, preference requires 8 vCPU",
        ],
    )
    .await;
    // The same VM without the conflicting fields is accepted.
    let out = apply(cp, &ns, &vm(json!({}))).await;
    assert!(
        out.success(),
        "a VM that leaves the size to clarge: {}",
        out.stderr
    );

    // inferFromVolume: the claim's labels name the instancetype (KubeVirt's
    // instancetype.kubevirt.io/default-instancetype and -kind), resolved on create.
    let claim = |name: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "labels": labels},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        .to_string()
    };
    for manifest in [
        claim(
            "labelled",
            json!({"instancetype.kubevirt.io/default-instancetype": "clarge",
            "instancetype.kubevirt.io/default-instancetype-kind": "VirtualMachineInstancetype"}),
        ),
        claim("plain", json!({})),
    ] {
        let out = apply(cp, &ns, &manifest).await;
        assert!(out.success(), "{}", out.stderr);
    }
    let inferring = |name: &str, claim: &str, matcher: Value, memory: Value| {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
               "spec": {"runStrategy": "Halted", "instancetype": matcher,
                        "template": {"spec": {"domain": {"memory": memory, "devices": {}},
                            "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": claim}}]}}}})
        .to_string()
    };
    let out = apply(
        cp,
        &ns,
        &inferring(
            "inferred",
            "labelled",
            json!({"inferFromVolume": "root"}),
            Value::Null,
        ),
    )
    .await;
    assert!(
        out.success(),
        "inferFromVolume from a labelled claim: {}",
        out.stderr
    );
    let vms: Api<VirtualMachine> = Api::namespaced(cp.client().await.unwrap(), ns.name());
    let stored = vms
        .get("inferred")
        .await
        .unwrap()
        .spec
        .instancetype
        .unwrap();
    assert_eq!(
        (
            stored.name.as_deref(),
            stored.kind.as_deref(),
            stored.infer_from_volume.as_deref()
        ),
        (Some("clarge"), Some("VirtualMachineInstancetype"), None)
    );
    refused(
        cp,
        &ns,
        "inferFromVolume from a claim without the label",
        &inferring(
            "uninferred",
            "plain",
            json!({"inferFromVolume": "root"}),
            Value::Null,
        ),
        &[
            "spec.instancetype.inferFromVolume",
            "instancetype.kubevirt.io/default-instancetype",
        ],
    )
    .await;
    // Policy Ignore: the VM is created without an instancetype, with its own memory.
    let ignore = json!({"inferFromVolume": "root", "inferFromVolumeFailurePolicy": "Ignore"});
    let out = apply(
        cp,
        &ns,
        &inferring("ignored", "plain", ignore, json!({"guest": "64Mi"})),
    )
    .await;
    assert!(
        out.success(),
        "inferFromVolume with policy Ignore: {}",
        out.stderr
    );
    assert!(
        vms.get("ignored")
            .await
            .unwrap()
            .spec
            .instancetype
            .is_none()
    );
}

/// Polls `check` until it returns Some, or panics naming `what` with the logs.
async fn wait_for<T, F, Fut>(stack: &Stack, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    ferrovirt_tests::wait::eventually_or(what, BOOT_TIMEOUT, check, || stack.log_tails(25)).await
}

/// vm-cirros-clarge.yaml as it boots: the template's memory.guest removed (the one change
/// KubeVirt needs too), runStrategy Always, a namespaced preference for cores and BIOS, and
/// user data that prints what the guest sees.
fn cirros_clarge() -> String {
    let mut vm: Value = serde_yaml::from_str(&example("vm-cirros-clarge.yaml")).unwrap();
    let spec = &mut vm["spec"];
    spec["runStrategy"] = json!("Always");
    spec["preference"] = json!({"kind": "VirtualMachinePreference", "name": "cores"});
    let template = &mut spec["template"]["spec"];
    template["domain"].as_object_mut().unwrap().remove("memory");
    let script = "#!/bin/sh\necho \"FV-CPUS=$(grep -c ^processor /proc/cpuinfo) FV-CORES=$(grep -m1 '^cpu cores' /proc/cpuinfo | sed 's/.*: //') FV-MEMKB=$(sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo) FV-END\"\n";
    for volume in template["volumes"].as_array_mut().unwrap() {
        if volume.get("cloudInitNoCloud").is_some() {
            volume["cloudInitNoCloud"]["userData"] = json!(script);
        }
    }
    serde_json::to_string(&vm).unwrap()
}

const PREFERENCE: &str = r#"
apiVersion: instancetype.kubevirt.io/v1beta1
kind: VirtualMachinePreference
metadata: {name: cores}
spec:
  cpu: {preferredCPUTopology: cores}
  firmware: {preferredUseBios: true}
  devices: {preferredDiskBus: virtio}
"#;

#[tokio::test]
async fn vm_cirros_clarge_waits_for_its_instancetype_then_boots_with_its_vcpus_and_memory() {
    let (cp, stack) = stack().await;
    let ns = TestNamespace::create(cp, "it-boot").await.unwrap();
    let client = cp.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    // Before clarge exists: accepted, and the VM says what it waits for.
    let out = apply(cp, &ns, &cirros_clarge()).await;
    assert!(out.success(), "vm-cirros-clarge: {}", out.stderr);
    let missing = r#"VirtualMachineInstancetype.instancetype.kubevirt.io "clarge" not found"#;
    wait_for(
        stack,
        "the VM's Failure condition naming clarge",
        || async {
            let vm = vms.get("vm-cirros-clarge").await.ok()?;
            vm.status?.conditions.into_iter().find(|c| {
                c.type_ == "Failure"
                    && c.reason.as_deref() == Some("FailedFindInstancetype")
                    && c.message.as_deref() == Some(missing)
            })
        },
    )
    .await;
    // The Event is written after the condition (and may be aggregated): wait for it too.
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    wait_for(
        stack,
        "a FailedFindInstancetype Event on the VM naming clarge",
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("FailedFindInstancetype")
                        && e.note.as_deref() == Some(missing)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some("vm-cirros-clarge")
                })
        },
    )
    .await;
    assert!(
        vmis.get_opt("vm-cirros-clarge").await.unwrap().is_none(),
        "started without its instancetype"
    );

    // clarge and the preference appear: the VM starts from them.
    for manifest in [example("clarge.yaml"), PREFERENCE.to_string()] {
        let out = apply(cp, &ns, &manifest).await;
        assert!(out.success(), "{}", out.stderr);
    }
    let vmi = wait_for(stack, "VMI vm-cirros-clarge Running", || async {
        let vmi = vmis.get_opt("vm-cirros-clarge").await.ok()??;
        (vmi.status.as_ref()?.phase == Some(VmiPhase::Running)).then_some(vmi)
    })
    .await;
    let domain = &vmi.spec.domain;
    let cpu = domain.cpu.as_ref().expect("the VMI has a CPU topology");
    assert_eq!(
        (cpu.sockets, cpu.cores, cpu.threads),
        (Some(1), Some(4), Some(1)),
        "cores, as preferred"
    );
    assert_eq!(
        domain
            .memory
            .as_ref()
            .and_then(|m| m.guest.as_ref())
            .map(|q| q.0.as_str()),
        Some("2Gi")
    );
    let boot = domain.firmware.as_ref().and_then(|f| f.bootloader.as_ref());
    assert!(
        boot.is_some_and(|b| b.bios.is_some()),
        "BIOS, as preferred: {boot:?}"
    );
    assert_eq!(
        vmi.metadata.annotations.as_ref().unwrap()["kubevirt.io/instancetype-name"],
        "clarge"
    );
    assert_eq!(
        vmi.metadata.annotations.as_ref().unwrap()["kubevirt.io/preference-name"],
        "cores"
    );

    // The version used is kept in ControllerRevisions owned by the VM, named in its status.
    let vm = vms.get("vm-cirros-clarge").await.unwrap();
    let status = vm.status.unwrap();
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), ns.name());
    for status_ref in [
        status.instancetype_ref.unwrap(),
        status.preference_ref.unwrap(),
    ] {
        let name = status_ref
            .controller_revision_ref
            .and_then(|r| r.name)
            .expect("a revision name");
        let rev = revisions
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("ControllerRevision {name}: {e}"));
        let owner = &rev.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("VirtualMachine", vm.metadata.uid.as_deref().unwrap())
        );
        assert_eq!(
            rev.data.unwrap().0["metadata"]["name"],
            status_ref.name.unwrap().as_str()
        );
    }

    // Inside the guest: 4 vCPUs on 4 cores, and about 2 GiB.
    let log_path = stack
        .vmi_dir(vmi.metadata.uid.as_deref().unwrap())
        .join("serial0.log");
    let line = wait_for(stack, "the guest's FV-CPUS line", || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        log.lines()
            .find(|l| l.contains("FV-CPUS=") && l.contains("FV-END") && !l.contains("$("))
            .map(str::to_string)
    })
    .await;
    let field = |name: &str| -> u64 {
        let at = line
            .find(name)
            .unwrap_or_else(|| panic!("{name} missing in {line:?}"))
            + name.len();
        line[at..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
    };
    println!("the guest printed: {line}");
    assert_eq!(field("FV-CPUS="), 4, "{line}");
    assert_eq!(field("FV-CORES="), 4, "{line}");
    let mem_kb = field("FV-MEMKB=");
    assert!(
        (1_800_000..=2_097_152).contains(&mem_kb),
        "MemTotal {mem_kb} kB is not about 2 GiB: {line}"
    );

    let out = cp
        .kubectl([
            "delete",
            "-n",
            ns.name(),
            "vm",
            "vm-cirros-clarge",
            "--wait=false",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
}

/// KubeVirt's further instancetype and preference fields (those its common-instancetypes
/// use: hugepages and overcommit, IOThreads, the scheduler; TPM, SMM, dedicated IOThreads,
/// multi-queue, virtio-transitional, requirements) reach the instance and its launcher pod. The instancetype's
/// node selector matches no node, so the pod is made but no guest boots: what each field
/// does in a guest is shown by the tests the README names for it.
#[tokio::test]
async fn further_instancetype_and_preference_fields_reach_the_instance_and_its_pod() {
    let (cp, stack) = stack().await;
    let ns = TestNamespace::create(cp, "it-fields").await.unwrap();
    let client = cp.client().await.unwrap();
    let manifests = [
        json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
               "metadata": {"name": "shaped"},
               "spec": {"cpu": {"guest": 1},
                        "memory": {"guest": "256Mi", "overcommitPercent": 50},
                        "ioThreadsPolicy": "auto", "schedulerName": "default-scheduler",
                        "nodeSelector": {"ferrovirt.test/nowhere": "true"}}}),
        json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachinePreference",
               "metadata": {"name": "linux"},
               "spec": {"devices": {"preferredTPM": {}, "preferredDiskBus": "virtio",
                                    "preferredDiskDedicatedIoThread": true,
                                    "preferredBlockMultiQueue": true,
                                    "preferredAutoattachMemBalloon": false,
                                    "preferredUseVirtioTransitional": true},
                        "features": {"preferredSmm": {}},
                        "requirements": {"cpu": {"guest": 1}, "memory": {"guest": "256Mi"}}}}),
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "shaped"},
               "spec": {"runStrategy": "Always",
                        "instancetype": {"kind": "VirtualMachineInstancetype", "name": "shaped"},
                        "preference": {"kind": "VirtualMachinePreference", "name": "linux"},
                        "template": {"spec": {"terminationGracePeriodSeconds": 0,
                            "domain": {"devices": {"disks": [{"name": "root"}]}},
                            "volumes": [{"name": "root", "containerDisk": {"image": "ferrovirt/guest-disk:latest"}}]}}}}),
    ];
    for manifest in manifests {
        let out = apply(cp, &ns, &manifest.to_string()).await;
        assert!(out.success(), "{}: {}", manifest["kind"], out.stderr);
    }
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let vmi = wait_for(stack, "VMI shaped", || async {
        vmis.get_opt("shaped").await.ok()?
    })
    .await;
    let spec = serde_json::to_value(&vmi.spec).unwrap();
    let domain = &spec["domain"];
    assert_eq!(domain["memory"]["guest"], "256Mi", "{domain}");
    assert_eq!(
        domain["resources"]["requests"]["memory"], "128Mi",
        "50% overcommitted: {domain}"
    );
    assert_eq!(domain["ioThreadsPolicy"], "auto", "{domain}");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert!(domain["devices"]["tpm"].is_object(), "{domain}");
    assert!(domain["features"]["smm"].is_object(), "{domain}");
    assert_eq!(domain["devices"]["blockMultiQueue"], true, "{domain}");
    assert_eq!(domain["devices"]["autoattachMemBalloon"], false, "{domain}");
    assert_eq!(domain["devices"]["useVirtioTransitional"], true, "{domain}");
    assert_eq!(
        domain["devices"]["disks"][0]["dedicatedIOThread"], true,
        "{domain}"
    );
    assert_eq!(
        domain["devices"]["disks"][0]["disk"]["bus"], "virtio",
        "{domain}"
    );

    // The launcher pod requests the overcommitted memory (128Mi), plus the overhead of a
    // 256Mi guest with a TPM (30 + 50 + 64 + 1 + 8), from the instancetype's scheduler.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns.name());
    let pod = launcher_pod_of(stack, &pods, &vmi).await;
    let pod_spec = pod.spec.unwrap();
    assert_eq!(
        pod_spec.scheduler_name.as_deref(),
        Some("default-scheduler")
    );
    let requests = pod_spec.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap();
    assert_eq!(requests["memory"].0, "281Mi", "{requests:?}");

    let out = cp
        .kubectl(["delete", "-n", ns.name(), "vm", "shaped", "--wait=false"])
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);

    // Dedicated CPUs (KubeVirt's d1 series): the instance asks for them, its launcher pod is
    // Guaranteed (two whole CPUs: the vCPU and the emulator thread's) and goes only to a
    // node with the static CPU manager, which devnode is not.
    for manifest in [
        json!({"apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
               "metadata": {"name": "d1-like"},
               "spec": {"cpu": {"guest": 1, "dedicatedCPUPlacement": true, "isolateEmulatorThread": true},
                        "memory": {"guest": "128Mi"}}}),
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "pinned"},
               "spec": {"runStrategy": "Always",
                        "instancetype": {"kind": "VirtualMachineInstancetype", "name": "d1-like"},
                        "template": {"spec": {"terminationGracePeriodSeconds": 0,
                            "domain": {"devices": {"disks": [{"name": "root"}]}},
                            "volumes": [{"name": "root", "containerDisk": {"image": "ferrovirt/guest-disk:latest"}}]}}}}),
    ] {
        let out = apply(cp, &ns, &manifest.to_string()).await;
        assert!(out.success(), "{}: {}", manifest["kind"], out.stderr);
    }
    let vmi = wait_for(stack, "VMI pinned", || async {
        vmis.get_opt("pinned").await.ok()?
    })
    .await;
    let cpu = vmi.spec.domain.cpu.clone().unwrap_or_default();
    assert_eq!(
        (cpu.dedicated_cpu_placement, cpu.isolate_emulator_thread),
        (Some(true), Some(true))
    );
    let pod = launcher_pod_of(stack, &pods, &vmi).await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.qos_class.as_deref()),
        Some("Guaranteed")
    );
    let pod_spec = pod.spec.unwrap();
    let resources = pod_spec.containers[0].resources.clone().unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "2");
    assert_eq!(
        pod_spec.node_selector.unwrap()["kubevirt.io/cpumanager"],
        "true"
    );
    let out = cp
        .kubectl(["delete", "-n", ns.name(), "vm", "pinned", "--wait=false"])
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
}

/// The launcher pod of `vmi`, once the controller has made it.
async fn launcher_pod_of(
    stack: &Stack,
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    vmi: &VirtualMachineInstance,
) -> k8s_openapi::api::core::v1::Pod {
    let uid = vmi.metadata.uid.clone().unwrap();
    let what = format!(
        "the launcher pod of VMI {}",
        kube::ResourceExt::name_any(vmi)
    );
    wait_for(stack, &what, || async {
        let selector = format!("{}={uid}", ferrovirt_node_contract::pod::CREATED_BY_LABEL);
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
}

/// A VM booting the test guest's disk from the DataVolume `dv` its template makes, with
/// `dv_spec` as the DataVolume's spec.
fn data_volume_vm(name: &str, dv: &str, dv_spec: Value) -> String {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
           "spec": {"runStrategy": "Always",
                    "dataVolumeTemplates": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                                             "metadata": {"name": dv}, "spec": dv_spec}],
                    "template": {"spec": {
                        "terminationGracePeriodSeconds": 5,
                        "domain": {"memory": {"guest": "128Mi"},
                                   "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
                        "volumes": [{"name": "root", "dataVolume": {"name": dv}}]}}}})
    .to_string()
}

/// KubeVirt's contract with CDI, with a stand-in for CDI (ferrovirt_tests::cdi: CDI's
/// DataVolume CRD and an importer; CDI itself is not on this machine): a DataVolume spec
/// field CDI does not have is refused by name when the VM is applied; the VM creates its
/// DataVolume, owned by it, and shows Provisioning with no instance until the importer has
/// filled the claim of the DataVolume's name and set it Succeeded (DataVolumeError when CDI
/// fails); then the instance runs and the guest boots from that claim's disk to its ready
/// line. A VMI whose DataVolume is
/// still importing waits in Pending, its DataVolumesReady condition naming it.
#[tokio::test]
async fn a_vm_with_data_volume_templates_boots_from_the_claim_cdi_fills() {
    use ferrovirt_tests::cdi;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use kube::ResourceExt;
    use kube::api::{DynamicObject, PostParams};
    let (cp, stack) = stack().await;
    let client = cp.client().await.unwrap();
    cdi::install(&client)
        .await
        .expect("installing the stand-in for CDI's DataVolume CRD");
    let ns = TestNamespace::create(cp, "it-dv").await.unwrap();
    let dvs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &crds::cdi::api_resource());
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let storage = json!({"resources": {"requests": {"storage": "1Gi"}}});

    // CDI's schema refuses what it does not know (virt-api's strict dry run), by name.
    refused(
        cp,
        &ns,
        "a DataVolume spec field CDI does not have",
        &data_volume_vm(
            "typo",
            "typo-dv",
            json!({"storage": storage, "sorce": {"blank": {}}}),
        ),
        &["spec.dataVolumeTemplates[0]", "sorce"],
    )
    .await;

    // A VM whose template is a blank DataVolume: applied, and the DataVolume it made.
    let blank_vm = |vm: &'static str, dv: &'static str| {
        let (ns, dvs) = (&ns, &dvs);
        let storage = storage.clone();
        async move {
            let blank = json!({"storage": storage, "source": {"blank": {}}});
            let out = apply(cp, ns, &data_volume_vm(vm, dv, blank)).await;
            assert!(out.success(), "VM {vm}: {}", out.stderr);
            wait_for(
                stack,
                &format!("DataVolume {dv}, made by VM {vm}"),
                || async { dvs.get_opt(dv).await.ok()? },
            )
            .await
        }
    };
    let dv = blank_vm("imported", "imported-dv").await;
    let vm = vms.get("imported").await.unwrap();
    let owner = &dv.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            Some(owner.uid.as_str()),
            owner.controller
        ),
        ("VirtualMachine", vm.metadata.uid.as_deref(), Some(true))
    );
    assert_eq!(dv.data["spec"]["source"], json!({"blank": {}}));
    wait_for(stack, "VM imported Provisioning", || async {
        let status = vms.get("imported").await.ok()?.status?;
        (status.printable_status.as_deref() == Some("Provisioning")).then_some(())
    })
    .await;
    assert!(
        vmis.get_opt("imported").await.unwrap().is_none(),
        "the instance started before its DataVolume was ready"
    );

    // CDI fails another VM's import: DataVolumeError, as KubeVirt shows it.
    blank_vm("broken", "broken-dv").await;
    cdi::set_status(&client, ns.name(), "broken-dv", json!({"phase": "Failed"}))
        .await
        .unwrap();
    wait_for(stack, "VM broken DataVolumeError", || async {
        let status = vms.get("broken").await.ok()?.status?;
        (status.printable_status.as_deref() == Some("DataVolumeError")).then_some(())
    })
    .await;
    assert!(vmis.get_opt("broken").await.unwrap().is_none());
    vms.delete("broken", &Default::default()).await.unwrap();

    // A VMI of a DataVolume that is still importing waits for it, saying so.
    let waiting = DynamicObject::new("waiting-dv", &crds::cdi::api_resource())
        .data(json!({"spec": {"storage": storage, "source": {"blank": {}}}}));
    dvs.create(&PostParams::default(), &waiting).await.unwrap();
    cdi::set_status(
        &client,
        ns.name(),
        "waiting-dv",
        json!({"phase": "ImportInProgress"}),
    )
    .await
    .unwrap();
    let vmi: VirtualMachineInstance =
        serde_json::from_value(ferrovirt_tests::manifests::kernel_boot_vmi(
            "waits",
            json!([{"name": "data", "dataVolume": {"name": "waiting-dv"}}]),
        ))
        .unwrap();
    vmis.create(&PostParams::default(), &vmi).await.unwrap();
    let condition = wait_for(stack, "VMI waits: DataVolumesReady False", || async {
        let status = vmis.get("waits").await.ok()?.status?;
        let c = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "DataVolumesReady" && c.status == "False")?;
        (status.phase == Some(VmiPhase::Pending)).then_some(c)
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("NotAllDVsReady"));
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains("DataVolume waiting-dv is ImportInProgress")),
        "{condition:?}"
    );
    vmis.delete("waits", &Default::default()).await.unwrap();

    // CDI's importer fills the claim; the instance starts and boots from it.
    let dir = tempfile::Builder::new()
        .prefix("fv-dv-")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        // The launcher's user (qemu, 107) reaches the disk through it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let image = ferrovirt_tests::guest::cache_dir().join("guests/disk.qcow2");
    assert!(
        image.is_file(),
        "{} is missing: run hack/build-guest-images.sh",
        image.display()
    );
    // CDI's class binds on first consumer (KubeVirt's contract): the DataVolume waits for
    // one, so the VM starts its instance, whose temporary pod consumes the claim and gets
    // it bound; CDI then imports, and the launcher pod follows.
    cdi::wait_for_first_consumer(
        &client,
        ns.name(),
        "imported-dv",
        dir.path(),
        &stack.node_name,
    )
    .await
    .expect("the stand-in's claim waiting for its first consumer");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let temp = wait_for(stack, "VMI imported's temporary pod", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|p| {
            p.annotations()
                .get("kubevirt.io/ephemeral-provisioning")
                .is_some_and(|v| v == "true")
        })
    })
    .await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    wait_for(
        stack,
        "the DataVolume's claim bound through the temporary pod",
        || async {
            let phase = pvcs.get("imported-dv").await.ok()?.status?.phase?;
            (phase == "Bound").then_some(())
        },
    )
    .await;
    let status = vmis
        .get("imported")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    let waiting = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DataVolumesReady")
        .and_then(|c| c.message.clone());
    assert_eq!(status.phase, Some(VmiPhase::Pending), "{status:?}");
    assert!(
        waiting
            .as_deref()
            .is_some_and(|m| m.contains("DataVolume imported-dv is WaitForFirstConsumer")),
        "{waiting:?}"
    );
    cdi::fill(&image, dir.path()).expect("the stand-in importer");
    cdi::succeed(&client, ns.name(), "imported-dv")
        .await
        .unwrap();
    let vmi = wait_for(stack, "VMI imported Running", || async {
        let vmi = vmis.get_opt("imported").await.ok()??;
        (vmi.status.as_ref()?.phase == Some(VmiPhase::Running)).then_some(vmi)
    })
    .await;
    let ready = vmi
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "DataVolumesReady")
        .cloned();
    assert_eq!(
        ready.map(|c| (c.status, c.reason)),
        Some(("True".to_string(), Some("AllDVsReady".to_string())))
    );
    let log_path = stack
        .vmi_dir(vmi.metadata.uid.as_deref().unwrap())
        .join("serial0.log");
    wait_for(
        stack,
        "the guest's ready line, booted from the claim",
        || async {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.contains(ferrovirt_tests::guest::READY_LINE)
                .then_some(())
        },
    )
    .await;
    wait_for(stack, "VM imported Running", || async {
        let status = vms.get("imported").await.ok()?.status?;
        (status.printable_status.as_deref() == Some("Running")).then_some(())
    })
    .await;
    wait_for(stack, "the temporary pod deleted", || async {
        let gone = match pods.get_opt(&temp.name_any()).await.ok()? {
            None => true,
            Some(p) => p.metadata.deletion_timestamp.is_some(),
        };
        gone.then_some(())
    })
    .await;
    let out = cp
        .kubectl(["delete", "-n", ns.name(), "vm", "imported", "--wait=false"])
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
}

/// The TPM's resetCount, read in the guest with a raw TPM2_ReadClock command written to
/// /dev/tpm0 (busybox's printf, dd and od): it counts the TPM's power-ups, so it grows
/// from one boot to the next only when the TPM's state was kept.
fn tpm_reset_count(stack: &Stack, vmi_uid: &str) -> u32 {
    use ferrovirt_node_contract::paths::SERIAL_SOCKET;
    // TPM_ST_NO_SESSIONS, 10 bytes, TPM_CC_ReadClock, written in one write (the driver
    // takes a command whole; the shell's printf writes it piecemeal); the answer is its
    // 35 bytes in hex.
    let command = r"printf '\200\001\000\000\000\012\000\000\001\201' >/tmp/rc; exec 3<>/dev/tpm0; dd if=/tmp/rc bs=10 count=1 >&3 2>/dev/null; echo R''C$(dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \n')E''ND; exec 3>&-";
    let answer = ferrovirt_tests::guest::console_exchange(
        &stack.vmi_dir(vmi_uid).join(SERIAL_SOCKET),
        command,
        "END",
    );
    let hex = answer
        .rsplit("RC")
        .next()
        .and_then(|t| t.split("END").next())
        .unwrap_or_default();
    // Header (10 bytes), time (8), clock (8), then resetCount (4, big endian).
    assert!(
        hex.len() == 70 && hex.starts_with("80010000002300000000"),
        "TPM2_ReadClock did not succeed: {answer:?}"
    );
    u32::from_str_radix(&hex[52..60], 16).unwrap()
}

/// Waits for a VMI `keeper` other than `old` to boot; returns its uid.
async fn boot_of_keeper(
    stack: &Stack,
    vmis: &Api<VirtualMachineInstance>,
    old: Option<String>,
) -> String {
    let vmi = wait_for(stack, "a new VMI keeper", || async {
        let vmi = vmis.get_opt("keeper").await.ok()??;
        (vmi.metadata.uid != old).then_some(vmi)
    })
    .await;
    let uid = vmi.metadata.uid.clone().unwrap();
    let domain = format!("{}_keeper", vmi.metadata.namespace.clone().unwrap());
    stack.wait_booted(&uid, &domain, BOOT_TIMEOUT).await;
    uid
}

/// KubeVirt's backend storage (issue 11): a VM with `tpm: {persistent: true}` keeps the
/// TPM's state on a claim of its own. Without `vmStateStorageClass` and without a default
/// StorageClass its VM says why and gets no pod. With the class configured in kubevirt-config
/// (and a hostPath volume of it, bound by kube-controller-manager's binder), virt-controller
/// makes the claim as KubeVirt does (`persistent-state-for-<vm>-…`, its label, 10Mi, owned
/// by the VM), the VMI's volumeStatus names it, the launcher pod mounts it and swtpm's state
/// lies in it; the guest's TPM counts one more power-up after a stop and start (its state
/// was kept; a TPM made afresh would count the same), and deleting the VM deletes the claim.
#[tokio::test]
async fn a_persistent_tpm_keeps_its_state_on_the_vms_claim_across_a_restart() {
    use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    let (cp, stack) = stack().await;
    let ns = TestNamespace::create(cp, "it-state").await.unwrap();
    let client = cp.client().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns.name());
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    let vm = |name: &str| {
        let mut vm: VirtualMachine = serde_yaml::from_str(
            &ferrovirt_tests::manifests::kernel_boot_vm(name, "Always", None),
        )
        .unwrap();
        let domain = &mut vm.spec.template.spec.domain;
        domain.devices.tpm = Some(crds::Tpm {
            persistent: Some(true),
            ..Default::default()
        });
        // QEMU 7.2 gives a TPM to a bzImage only (see volumes/prepare.rs).
        let kernel = domain
            .firmware
            .as_mut()
            .unwrap()
            .kernel_boot
            .as_mut()
            .unwrap();
        kernel.container.as_mut().unwrap().kernel_path = Some("/boot/vmlinuz".into());
        serde_json::to_string(&vm).unwrap()
    };
    let condition = |vm: &VirtualMachine, reason: &str| {
        vm.status.as_ref()?.conditions.iter().find_map(|c| {
            (c.type_ == "Synchronized" && c.reason.as_deref() == Some(reason))
                .then(|| c.message.clone().unwrap_or_default())
        })
    };

    // No vmStateStorageClass and no default StorageClass: the VM says why.
    let out = apply(cp, &ns, &vm("nowhere")).await;
    assert!(out.success(), "{}", out.stderr);
    let why = wait_for(stack, "VM nowhere's FailedBackendStorageCreate", || async {
        condition(
            &vms.get("nowhere").await.ok()?,
            "FailedBackendStorageCreate",
        )
    })
    .await;
    assert_eq!(why, "no default storage class found");
    vms.delete("nowhere", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(stack, "VMI nowhere gone", || async {
        vmis.get_opt("nowhere").await.ok()?.is_none().then_some(())
    })
    .await;

    // The class, configured for backend storage, and a hostPath volume of it.
    let class = format!("{}-state", ns.name());
    let dir = tempfile::tempdir().unwrap();
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": class}, "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate"}))
    .unwrap();
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": class},
        "spec": {"capacity": {"storage": "10Mi"}, "accessModes": ["ReadWriteMany"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": dir.path().to_string_lossy(), "type": "Directory"}}}))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let configs: Api<ConfigMap> =
        Api::namespaced(client.clone(), ferrovirt_tests::SYSTEM_NAMESPACE);
    let config = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kubevirt-config"}, "data": data})
    };
    let manager = PatchParams::apply("backend-storage-test").force();
    configs
        .patch(
            "kubevirt-config",
            &manager,
            &Patch::Apply(config(json!({"vmStateStorageClass": class}))),
        )
        .await
        .unwrap();

    let out = apply(cp, &ns, &vm("keeper")).await;
    assert!(out.success(), "{}", out.stderr);
    let vm_uid = vms.get("keeper").await.unwrap().metadata.uid.unwrap();
    let first = boot_of_keeper(stack, &vmis, None).await;

    // The claim, as KubeVirt makes it, bound to the volume and named in the VMI's status.
    let claims = pvcs
        .list(&ListParams::default().labels("persistent-state-for=keeper"))
        .await
        .unwrap()
        .items;
    assert_eq!(claims.len(), 1, "{claims:?}");
    let claim = &claims[0];
    let claim_name = claim.metadata.name.clone().unwrap();
    assert!(
        claim_name.starts_with("persistent-state-for-keeper-"),
        "{claim_name}"
    );
    let owner = &claim.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VirtualMachine", vm_uid.as_str())
    );
    let spec = claim.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_string()]));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "10Mi"
    );
    assert_eq!(spec.volume_name.as_deref(), Some(class.as_str()));
    let status = vmis.get("keeper").await.unwrap().status.unwrap();
    assert_eq!(status.backend_storage_claim(), Some(claim_name.as_str()));
    let shown = serde_json::to_value(&status.volume_status).unwrap();
    assert_eq!(shown[0]["name"], "persistent-state-for-this-vm", "{shown}");
    assert_eq!(
        shown[0]["persistentVolumeClaimInfo"]["accessModes"],
        json!(["ReadWriteMany"])
    );

    // swtpm keeps its state in the claim, and the guest has its TPM.
    let resets = tpm_reset_count(stack, &first);
    let state = std::fs::read_dir(dir.path().join("swtpm"))
        .unwrap()
        .map(|e| e.unwrap().path().join("tpm2/tpm2-00.permall"))
        .find(|p| p.is_file());
    assert!(
        state.is_some(),
        "no swtpm state in the claim's directory {}",
        dir.path().display()
    );

    // Stopped and started: the same claim, and the TPM's state was kept.
    let run = |strategy: &str| json!({"spec": {"runStrategy": strategy}});
    vms.patch(
        "keeper",
        &PatchParams::default(),
        &Patch::Merge(run("Halted")),
    )
    .await
    .unwrap();
    wait_for(stack, "VMI keeper gone after the stop", || async {
        vmis.get_opt("keeper").await.ok()?.is_none().then_some(())
    })
    .await;
    vms.patch(
        "keeper",
        &PatchParams::default(),
        &Patch::Merge(run("Always")),
    )
    .await
    .unwrap();
    let second = boot_of_keeper(stack, &vmis, Some(first)).await;
    let again = vmis.get("keeper").await.unwrap().status.unwrap();
    assert_eq!(again.backend_storage_claim(), Some(claim_name.as_str()));
    let resets_after = tpm_reset_count(stack, &second);
    eprintln!(
        "MEASURE the TPM's resetCount: {resets} at the first boot, {resets_after} after the restart"
    );
    assert!(
        resets_after > resets,
        "the TPM counts {resets_after} power-ups after the restart, {resets} before: its state was not kept"
    );

    // Deleting the VM deletes its claim.
    vms.delete("keeper", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(stack, "the claim of VM keeper gone with it", || async {
        pvcs.get_opt(&claim_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    configs
        .patch(
            "kubevirt-config",
            &manager,
            &Patch::Apply(config(json!({}))),
        )
        .await
        .unwrap();
}
