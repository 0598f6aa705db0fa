//! Runtime bad input (issue 12): a VMI whose claim does not exist or is not bound, or whose
//! node has no space left in its run dir ends Failed with a reason and message that name
//! the problem, and a Warning Event; a VMI whose containerDisk image the node cannot pull
//! stays Scheduling with the node's reason (ErrImagePull, ImagePullBackOff) and message,
//! naming the image, in its Synchronized condition, as KubeVirt does, and one whose
//! cloud-init Secret does not exist stays Scheduling naming the Secret (FailedMount); a VM
//! that was already running keeps the same guest, and no component restarts.
//!
//! (Refused earlier, by the schema or the webhook, and tested in webhooks.rs: names over 63
//! characters, bad quantities, disks without volumes, invalid base64 cloud-init data; and
//! host disks outside the allowed directories in virt-handler's node_defects.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::paths::SERIAL_LOG;
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, manifests, shared};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(240);

/// A VMI booting the test guest's kernel, with extra volumes (each also a disk).
fn vmi(name: &str, volumes: Value, node_selector: Option<Value>) -> VirtualMachineInstance {
    let mut vmi = manifests::kernel_boot_vmi(name, volumes);
    vmi["spec"]["nodeSelector"] = node_selector.unwrap_or(Value::Null);
    serde_json::from_value(vmi).expect("a VMI")
}

/// Waits until the VMI has failed; returns its status's words and its Warning Events'.
async fn failure_of(
    stack: &Stack,
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> (String, String) {
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let vmi = vmis.get(name).await.expect("the VMI");
        let status = vmi.status.clone().unwrap_or_default();
        if status.phase == Some(VmiPhase::Failed) {
            // The status as JSON, quotes unescaped so that messages read as written.
            let words = serde_json::to_string(&status)
                .unwrap()
                .replace("\\\"", "\"");
            let warnings: Vec<String> = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await
                .expect("events")
                .items
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect();
            return (words, warnings.join("\n"));
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "VMI {name} did not fail (status {status:?}); logs:\n{}",
            stack.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the VMI's Synchronized condition is False with one of `reasons` (its
/// launcher pod cannot pull an image, or the node cannot mount a volume); returns the
/// VMI's phase and the condition's reason and message.
async fn synchronized_failure_of(
    stack: &Stack,
    vmis: &Api<VirtualMachineInstance>,
    name: &str,
    reasons: &[&str],
) -> (Option<VmiPhase>, String, String) {
    let started = Instant::now();
    loop {
        let status = vmis
            .get(name)
            .await
            .expect("the VMI")
            .status
            .unwrap_or_default();
        let pull = status.conditions.iter().find(|c| {
            c.type_ == "Synchronized"
                && c.status == "False"
                && c.reason.as_deref().is_some_and(|r| reasons.contains(&r))
        });
        if let Some(c) = pull {
            return (
                status.phase,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            );
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "VMI {name} has no Synchronized condition with reason {reasons:?} (status {status:?}); logs:\n{}",
            stack.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn assert_named(what: &str, (status, events): &(String, String), words: &[&str]) {
    for w in words {
        assert!(
            status.contains(w),
            "{what}: the VMI's status does not name {w:?}: {status}"
        );
        assert!(
            events.contains(w),
            "{what}: no Warning Event names {w:?}; events:\n{events}"
        );
    }
}

/// The QEMU of `domain` and its start time (a restarted QEMU has another), if one runs.
fn qemu_of(domain: &str) -> Option<(u32, String)> {
    let pid = ferrovirt_tests::qemu_of(domain)?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .to_string();
    Some((pid, start))
}

/// The pids of the stack's own processes (virt-handler, virt-controller, devnode).
fn component_pids(stack: &Stack, cp: &ControlPlane) -> Vec<(String, u32)> {
    let kubeconfig = cp.kubeconfig().display().to_string();
    let mut out: Vec<(String, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let program = argv.first()?.rsplit('/').next()?.to_string();
            let ours = argv.contains(&kubeconfig);
            (ours && ["virt-controller", "devnode"].contains(&program.as_str()))
                .then_some((program, pid))
        })
        .collect();
    out.push(("virt-handler".into(), stack.handler_pid()));
    out.sort();
    out
}

/// A tiny filesystem that is full, mounted over a path until dropped.
struct FullDisk(PathBuf);

impl FullDisk {
    fn mount(path: &Path) -> FullDisk {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "fv-full"])
            .arg(path)
            .status()
            .expect("mount (util-linux)");
        assert!(ok.success(), "mounting a tmpfs over {}", path.display());
        let disk = FullDisk(path.to_path_buf());
        // Fill it: writing stops at ENOSPC.
        let _ = std::fs::write(path.join("filler"), vec![0u8; 1 << 20]);
        disk
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_is_named_and_nothing_running_is_harmed() {
    let cp = shared().await;
    let stack = Stack::start(cp, "bad-input-node")
        .await
        .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"));
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "bad-input").await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());

    // A guest that runs through all of it, its cloud-init user data from a Secret (under
    // KubeVirt's second key, userData): devnode mounts it as kubelet does.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bystander-userdata"},
        "stringData": {"userData": "#!/bin/sh\necho bystander-from-secret\n"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    vmis.create(
        &PostParams::default(),
        &vmi(
            "bystander",
            json!([{"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "bystander-userdata"}}}]),
            None,
        ),
    )
    .await
    .unwrap();
    let domain = format!("{}_bystander", ns.name());
    let started = Instant::now();
    let uid = loop {
        if let Some(uid) = vmis.get("bystander").await.unwrap().metadata.uid {
            break uid;
        }
        assert!(started.elapsed() < TIMEOUT, "the bystander has no uid");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stack.wait_booted(&uid, &domain, TIMEOUT).await;
    let log = std::fs::read_to_string(stack.vmi_dir(&uid).join(SERIAL_LOG)).unwrap();
    assert!(
        log.contains("FERROVIRT CLOUD-INIT: echo bystander-from-secret"),
        "the bystander did not read its Secret's user data:\n{log}"
    );
    let bystander = qemu_of(&domain).expect("the bystander's QEMU runs");
    let components = component_pids(&stack, cp);
    assert_eq!(components.len(), 3, "{components:?}");

    // A containerDisk image that is not there.
    vmis.create(
        &PostParams::default(),
        &vmi(
            "noimage",
            json!([{"name": "root", "containerDisk": {"image": "example.org/missing/disk:1"}}]),
            None,
        ),
    )
    .await
    .unwrap();
    let (phase, reason, message) = synchronized_failure_of(
        &stack,
        &vmis,
        "noimage",
        &["ErrImagePull", "ImagePullBackOff"],
    )
    .await;
    assert_eq!(phase, Some(VmiPhase::Scheduling), "{reason}: {message}");
    assert!(
        message.contains("example.org/missing/disk:1"),
        "the condition does not name the image: {reason}: {message}"
    );
    vmis.delete("noimage", &Default::default()).await.unwrap();

    // A cloud-init Secret that does not exist: the node does not start the launcher pod
    // (kubelet's FailedMount); the VMI stays Scheduling, naming the field and the Secret
    // in its Synchronized condition and a Warning Event (tests/tests/e2e.rs shows it start
    // once the Secret is made, on the real node).
    vmis.create(
        &PostParams::default(),
        &vmi(
            "nosecret",
            json!([{"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "nosuch-userdata"}}}]),
            None,
        ),
    )
    .await
    .unwrap();
    let (phase, reason, message) =
        synchronized_failure_of(&stack, &vmis, "nosecret", &["FailedMount"]).await;
    assert_eq!(phase, Some(VmiPhase::Scheduling), "{reason}: {message}");
    for words in [
        "spec.volumes[0].cloudInitNoCloud.userDataSecretRef",
        "secret \"nosuch-userdata\" not found",
    ] {
        assert!(
            message.contains(words),
            "the condition does not name {words:?}: {message}"
        );
    }
    let warnings = Api::<Event>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default().fields("involvedObject.name=nosecret,reason=FailedMount"))
        .await
        .unwrap();
    assert!(
        warnings.items.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("\"nosuch-userdata\""))),
        "no FailedMount Event on the VMI names the Secret: {:?}",
        warnings
            .items
            .iter()
            .map(|e| &e.message)
            .collect::<Vec<_>>()
    );
    vmis.delete("nosecret", &Default::default()).await.unwrap();

    // A claim that does not exist, and one that is not bound.
    vmis.create(
        &PostParams::default(),
        &vmi(
            "noclaim",
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "nosuch"}}]),
            None,
        ),
    )
    .await
    .unwrap();
    // As KubeVirt: no launcher pod while the claim is missing; the VMI waits, saying why.
    let (phase, _, message) =
        synchronized_failure_of(&stack, &vmis, "noclaim", &["FailedPvcNotFound"]).await;
    assert_eq!(phase, Some(VmiPhase::Pending));
    assert_eq!(
        message,
        "didn't find PVC nosuch (spec.volumes[0].persistentVolumeClaim.claimName)"
    );
    // A claim in block mode is the guest's disk, but cannot be shared as a filesystem:
    // the VMI waits, naming the claim and why (KubeVirt's reason).
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "blockclaim"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none-here",
                 "volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let mut shared = vmi(
        "blockshare",
        json!([{"name": "share", "persistentVolumeClaim": {"claimName": "blockclaim"}}]),
        None,
    );
    // Shared, so not a disk as well.
    shared
        .spec
        .domain
        .devices
        .disks
        .retain(|d| d.name != "share");
    shared.spec.domain.devices.filesystems =
        serde_json::from_value(json!([{"name": "share", "virtiofs": {}}])).unwrap();
    vmis.create(&PostParams::default(), &shared).await.unwrap();
    let (phase, _, message) =
        synchronized_failure_of(&stack, &vmis, "blockshare", &["PvcVolumeModeUnsupported"]).await;
    assert_eq!(phase, Some(VmiPhase::Pending));
    assert!(
        message.starts_with(
            "PVC blockclaim (spec.volumes[0].persistentVolumeClaim.claimName) has volumeMode \
             Block, which cannot be shared as a filesystem"
        ),
        "{message}"
    );
    vmis.delete("blockshare", &Default::default())
        .await
        .unwrap();

    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "unbound"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none-here",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    vmis.create(
        &PostParams::default(),
        &vmi(
            "unbound",
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "unbound"}}]),
            None,
        ),
    )
    .await
    .unwrap();
    // Its launcher pod mounts the claim, so the scheduler keeps it (and the VMI) waiting
    // for a volume, and says so.
    let started = Instant::now();
    loop {
        let status = vmis
            .get("unbound")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let unschedulable = status.conditions.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            let message = c.message.as_deref().unwrap_or_default();
            assert!(
                message.contains("unbound immediate PersistentVolumeClaims"),
                "{message}"
            );
            assert_ne!(status.phase, Some(VmiPhase::Failed));
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "VMI unbound is not unschedulable (status {status:?}); logs:\n{}",
            stack.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // No space left in the VMI's directory on the node: the VMI waits for a node label
    // while its directory is mounted full, then is scheduled.
    let selector = json!({"ferrovirt.test/full-disk": "yes"});
    let full = vmis
        .create(
            &PostParams::default(),
            &vmi(
                "nospace",
                json!([{"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]),
                Some(selector),
            ),
        )
        .await
        .unwrap();
    let uid = full.metadata.uid.clone().unwrap();
    let _full = FullDisk::mount(&stack.vmi_dir(&uid));
    Api::<Node>::all(client.clone())
        .patch(
            &stack.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"ferrovirt.test/full-disk": "yes"}}})),
        )
        .await
        .unwrap();
    let failed = failure_of(&stack, &client, ns.name(), "nospace").await;
    assert_named("full disk", &failed, &["No space left on device"]);

    // Nothing else was touched.
    assert_eq!(
        qemu_of(&domain),
        Some(bystander.clone()),
        "the bystander's guest changed: {bystander:?}"
    );
    let phase = vmis
        .get("bystander")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase, Some(VmiPhase::Running));
    assert_eq!(
        component_pids(&stack, cp),
        components,
        "a component restarted"
    );
}
