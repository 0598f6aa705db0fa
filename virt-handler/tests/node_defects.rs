//! Regression tests for the node-side defects of issue 14, with the handler binary against
//! the real control plane, the real launcher, libvirt and QEMU (see common/cluster.rs).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    Fixture, Handler, create_scheduled_with, guest_spec, set_config, wait_until,
};
use common::{Proc, domain_info, guest_cmdline, start_launcher, start_launcher_with};
use crds::{VirtualMachineInstance, VmiPhase};
use ferrovirt_node_contract::paths::{LAUNCHER_SOCKET, SERIAL_LOG, SERIAL_SOCKET};
use ferrovirt_node_contract::protocol::DomainState;
use ferrovirt_tests::shared;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;

/// A VMI on the test's node, its launcher, and what became of it.
struct Started {
    vmi: VirtualMachineInstance,
    launcher: Proc,
}

async fn start(
    api: &Api<VirtualMachineInstance>,
    node: &str,
    run_dir: &Path,
    name: &str,
    spec: serde_json::Value,
) -> Started {
    let vmi = create_scheduled_with(api, name, node, spec).await;
    let uid = vmi.uid().unwrap();
    let launcher = start_launcher(&run_dir.join("vmis").join(&uid), name, &uid, 0);
    Started { vmi, launcher }
}

// Namespace and VMI names stay short: libvirt's monitor socket path under the per-VMI
// directory (<run-dir>/vmis/<uid>/libvirt/lib/qemu/domain-1-<ns>_<name>/monitor.sock)
// must fit in a UNIX socket address.

/// Waits until the handler moved the VMI past Scheduled (Running or a final phase).
async fn settled(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    handler: &Handler,
) -> VirtualMachineInstance {
    wait_until(api, name, handler, "Running or a final phase", |p| {
        matches!(
            p,
            Some(VmiPhase::Running | VmiPhase::Failed | VmiPhase::Succeeded)
        )
    })
    .await
}

/// The VMI must have failed with `reason` and a Ready message containing every `words`.
/// A VMI that runs instead is deleted (its guest destroyed) before the test fails.
async fn assert_refused(
    api: &Api<VirtualMachineInstance>,
    started: &mut Started,
    handler: &Handler,
    reason: &str,
    words: &[&str],
) {
    let name = started.vmi.name_any();
    let v = settled(api, &name, handler).await;
    let status = v.status.clone().unwrap_or_default();
    if status.phase == Some(VmiPhase::Running) {
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        started.launcher.wait_exit(Duration::from_secs(60));
        panic!("VMI {name} ran, want it refused ({reason}: {words:?})");
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let message = ready.and_then(|c| c.message.clone()).unwrap_or_default();
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(VmiPhase::Failed), Some(reason)),
        "{name}: {message}"
    );
    for w in words {
        assert!(message.contains(w), "{name}: {message:?} lacks {w:?}");
    }
}

/// A claim `name` in the fixture's namespace bound to a hostPath PersistentVolume of `dir`
/// (what virt-handler resolves a claim's directory from).
async fn virtiofs_claim(f: &Fixture, name: &str, dir: &Path) {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use kube::api::PostParams;
    let pv_name = format!("{}-{name}", f.ns.name());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": dir}}
    }))
    .unwrap();
    Api::<PersistentVolume>::all(f.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"volumeName": pv_name, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Mi"}}}
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), f.ns.name())
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
}

/// The test guest with one more disk, `hd`, backed by `volume`; destroyed at once on
/// delete.
fn with_host_disk(volume: serde_json::Value) -> serde_json::Value {
    let mut spec = guest_spec();
    spec["terminationGracePeriodSeconds"] = json!(0);
    spec["domain"]["devices"]["disks"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "hd", "disk": {}}));
    let mut volume = volume;
    volume["name"] = json!("hd");
    spec["volumes"].as_array_mut().unwrap().push(volume);
    spec
}

/// A VMI with host disk `volume` must be refused naming `words`.
async fn refuse_host_disk(f: &Fixture, name: &str, volume: serde_json::Value, words: &[&str]) {
    let dir = f.run_dir.path();
    let mut s = start(&f.api, &f.node, dir, name, with_host_disk(volume)).await;
    assert_refused(&f.api, &mut s, &f.handler, "UnsupportedSpec", words).await;
}

/// Defect 1: a hostDisk is refused unless the HostDisk feature gate is on, must lie under
/// a directory the cluster allows (after normalising `..`), and is never reached through
/// a symbolic link; the refusal names the field in VMI status. An allowed one still works.
#[tokio::test]
async fn host_disks_need_the_gate_and_an_allowed_directory_and_never_follow_links() {
    let f = Fixture::start(shared().await, "hd").await;
    let (api, handler, node, run_dir) = (&f.api, &f.handler, &f.node, &f.run_dir);

    // Without the feature gate: /etc/shadow is not attached.
    let shadow = json!({"hostDisk": {"path": "/etc/shadow", "type": "Disk"}});
    refuse_host_disk(
        &f,
        "sh",
        shadow,
        &["spec.volumes[1].hostDisk", "HostDisk", "feature-gates"],
    )
    .await;

    // KubeVirt's downward metrics need their feature gate too (not on here): refused
    // naming the volume and the gate, as KubeVirt's webhook names them.
    refuse_host_disk(
        &f,
        "dm",
        json!({"downwardMetrics": {}}),
        &[
            "spec.volumes[1].downwardMetrics",
            "DownwardMetrics feature gate is not enabled",
        ],
    )
    .await;

    // The gate on, one allowed directory.
    let base = tempfile::Builder::new()
        .prefix("hd")
        .tempdir_in("/tmp")
        .unwrap();
    let allowed = base.path().join("allowed");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
    set_config(
        &f.client,
        f.ns.name(),
        &[
            ("feature-gates", "HostDisk"),
            ("ferrovirt.hostDiskPathPrefixes", allowed.to_str().unwrap()),
        ],
    )
    .await;

    // `..` out of the allowed directory.
    let escape = format!("{}/../escaped.img", allowed.display());
    let hd = json!({"hostDisk": {"path": escape, "type": "DiskOrCreate", "capacity": "1Mi"}});
    refuse_host_disk(
        &f,
        "dd",
        hd,
        &[
            "spec.volumes[1].hostDisk.path",
            "ferrovirt.hostDiskPathPrefixes",
        ],
    )
    .await;
    assert!(
        !base.path().join("escaped.img").exists(),
        "a file was created outside"
    );

    // A symbolic link inside the allowed directory that leads out of it.
    let linked = format!("{}/link/x.img", allowed.display());
    let hd = json!({"hostDisk": {"path": linked, "type": "DiskOrCreate", "capacity": "1Mi"}});
    refuse_host_disk(
        &f,
        "ln",
        hd,
        &["spec.volumes[1].hostDisk.path", "symbolic link"],
    )
    .await;
    assert!(
        !outside.join("x.img").exists(),
        "a file was created through the link"
    );

    // Inside the allowed directory: created and attached.
    let ok = allowed.join("disks/ok.img");
    let hd = json!({"hostDisk": {"path": ok, "type": "DiskOrCreate", "capacity": "2Mi"}});
    let mut s = start(api, node, run_dir.path(), "ok", with_host_disk(hd)).await;
    let v = settled(api, "ok", handler).await;
    assert_eq!(
        v.status.as_ref().and_then(|s| s.phase),
        Some(VmiPhase::Running),
        "{:?}\n{}",
        v.status,
        handler.log_text()
    );
    assert_eq!(std::fs::metadata(&ok).unwrap().len(), 2 << 20);
    // QEMU started paused for the check of its open files, then the guest was let run;
    // that pause is not the user's and does not show.
    let socket = run_dir
        .path()
        .join("vmis")
        .join(s.vmi.uid().unwrap())
        .join(LAUNCHER_SOCKET);
    let info = domain_info(&socket).await;
    assert_eq!(info.state, DomainState::Running, "{info:?}");
    let conditions = api.get("ok").await.unwrap().status.unwrap().conditions;
    assert!(
        !conditions.iter().any(|c| c.type_ == "Paused"),
        "{conditions:?}"
    );
    api.delete("ok", &DeleteParams::default()).await.unwrap();
    s.launcher.wait_exit(Duration::from_secs(60));
}

/// Defect 10: a kernel-boot image that exists but lacks the kernel file fails naming the
/// file and the image, not as a missing image. And a TPM with an ELF kernel is refused.
#[tokio::test]
async fn a_missing_kernel_file_is_named_with_its_image() {
    let f = Fixture::start(shared().await, "kf").await;
    let (api, handler, node, run_dir) = (&f.api, &f.handler, &f.node, &f.run_dir);
    let mut spec = guest_spec();
    spec["domain"]["firmware"]["kernelBoot"]["container"]["kernelPath"] =
        json!("/boot/does-not-exist");
    let mut s = start(api, node, run_dir.path(), "nk", spec).await;
    assert_refused(
        api,
        &mut s,
        handler,
        "VolumePreparationFailed",
        &[
            "spec.domain.firmware.kernelBoot.container.kernelPath",
            "/boot/does-not-exist is not a file in image \"ferrovirt/guest-kernel:latest\"",
        ],
    )
    .await;
    let v = api.get("nk").await.unwrap();
    let ready = v.status.unwrap().conditions;
    let message = ready.iter().find_map(|c| c.message.clone()).unwrap();
    assert!(
        !message.contains("not in the image store"),
        "the image exists; only the file is missing: {message}"
    );

    // A TPM with an ELF kernel (PVH boot) is refused naming the TPM: QEMU 7.2 overwrites
    // the BIOS's ACPI tables then, and the guest would see neither TPM nor ACPI.
    let mut spec = guest_spec();
    spec["domain"]["firmware"]["kernelBoot"]["container"]["kernelPath"] = json!("/boot/vmlinux");
    spec["domain"]["devices"]["tpm"] = json!({});
    let mut s = start(api, node, run_dir.path(), "elf", spec).await;
    assert_refused(
        api,
        &mut s,
        handler,
        "UnsupportedSpec",
        &[
            "spec.domain.devices.tpm",
            "kernelPath /boot/vmlinux",
            "bzImage",
        ],
    )
    .await;
}

/// A launcher answer that asking again cannot help (libvirt refuses a CPU model it does
/// not know) fails the VMI with the launcher's message, as before the answers had kinds;
/// transient ones are retried instead (node-contract's `FailureKind`).
#[tokio::test]
async fn a_permanent_launcher_failure_fails_the_vmi_with_its_message() {
    let f = Fixture::start(shared().await, "pf").await;
    let (api, handler, node, run_dir) = (&f.api, &f.handler, &f.node, &f.run_dir);
    let mut spec = guest_spec();
    spec["terminationGracePeriodSeconds"] = json!(0);
    spec["domain"]["cpu"] = json!({"model": "NoSuchModel"});
    let mut s = start(api, node, run_dir.path(), "pm", spec).await;
    assert_refused(
        api,
        &mut s,
        handler,
        "LauncherFailed",
        &["launcher answered: libvirt: ", "NoSuchModel"],
    )
    .await;
}

/// The test guest without an init to run: the kernel panics, and `panic=1` resets the
/// guest a second later, over and over, inside the same QEMU. Without `quiet` every boot
/// prints its log. Destroyed at once on delete.
fn panicking_guest() -> serde_json::Value {
    let mut spec = guest_spec();
    spec["terminationGracePeriodSeconds"] = json!(0);
    let cmdline = guest_cmdline().replace("quiet", "");
    spec["domain"]["firmware"]["kernelBoot"]["kernelArgs"] = json!(format!(
        "{cmdline} panic=1 rdinit=/nonexistent init=/nonexistent"
    ));
    spec
}

/// KubeVirt's `rebootPolicy: Terminate`: the first guest reset ends the VMI (its VM's
/// controller would start a new one) instead of rebooting in place.
#[tokio::test]
async fn reboot_policy_terminate_ends_the_vmi_at_the_first_guest_reset() {
    let f = Fixture::start(shared().await, "rt").await;
    let mut spec = panicking_guest();
    spec["domain"]["rebootPolicy"] = json!("Terminate");
    let mut s = start(&f.api, &f.node, f.run_dir.path(), "once", spec).await;
    let done = wait_until(&f.api, "once", &f.handler, "a final phase", |p| {
        p.is_some_and(VmiPhase::is_final)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(VmiPhase::Succeeded), None),
        "{:?}",
        status.conditions
    );
    assert_eq!(s.launcher.wait_exit(Duration::from_secs(60)), Some(0));
    let serial = f
        .run_dir
        .path()
        .join("vmis")
        .join(s.vmi.uid().unwrap())
        .join(SERIAL_LOG);
    let boots = std::fs::read_to_string(serial)
        .unwrap()
        .matches("Linux version")
        .count();
    assert_eq!(boots, 1, "the guest booted again");
}

/// The serial log limit the reset-loop test gives its launcher.
const SERIAL_LOG_MAX: u64 = 16 * 1024;

/// Defect 6: a guest that panics and resets inside the same QEMU every few seconds is
/// shown as in a reset loop (condition, Ready=False, a Warning Event), and its serial log
/// stays capped by rotation.
#[tokio::test]
async fn a_guest_in_a_reset_loop_shows_in_status_and_its_serial_log_is_capped() {
    let f = Fixture::start(shared().await, "rl").await;
    let (api, handler, node, run_dir) = (&f.api, &f.handler, &f.node, &f.run_dir);
    let spec = panicking_guest();
    let vmi = create_scheduled_with(api, "loop", node, spec).await;
    let uid = vmi.uid().unwrap();
    let dir = run_dir.path().join("vmis").join(&uid);
    let max = SERIAL_LOG_MAX.to_string();
    let mut launcher = start_launcher_with(
        &dir,
        "loop",
        &uid,
        0,
        &[("VIRT_LAUNCHER_SERIAL_LOG_MAX_BYTES", &max)],
    );
    let serial = dir.join(SERIAL_LOG);

    // Status: the loop condition and Ready=False.
    let begin = Instant::now();
    let status = loop {
        let status = api.get("loop").await.unwrap().status.unwrap_or_default();
        let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
        if cond("GuestResetLoop").is_some_and(|c| c.status == "True")
            && cond("Ready").is_some_and(|c| c.status == "False")
        {
            break status;
        }
        if begin.elapsed() > Duration::from_secs(150) {
            let tail: String = std::fs::read_to_string(&serial)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n");
            let resets = std::fs::read_to_string(&serial)
                .unwrap_or_default()
                .matches("Linux version")
                .count();
            api.delete("loop", &DeleteParams::default()).await.unwrap();
            panic!(
                "no reset loop in the VMI's status after 150 s ({resets} boots in serial0.log): \
                 phase {:?}, conditions {:?}\n\
                 serial log (last lines, reversed):\n{tail}\nhandler log:\n{}",
                status.phase,
                status.conditions,
                handler.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        status.phase,
        Some(VmiPhase::Running),
        "the guest still runs"
    );
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "GuestResetLoop")
        .unwrap();
    assert!(
        cond.message
            .as_deref()
            .is_some_and(|m| m.contains("since it started")),
        "{cond:?}"
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("GuestResetLoop"), "{ready:?}");

    // A Warning Event on the VMI.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(f.client.clone(), f.ns.name());
    let begin = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("GuestResetLoop")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("loop")
        });
        if found {
            break;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(30),
            "no Warning Event GuestResetLoop on the VMI: {:?}",
            list.items
                .iter()
                .map(|e| (&e.reason, &e.note))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The serial log: rotated once over the limit, never far above it.
    let rotated = dir.join("serial0.log.1");
    let begin = Instant::now();
    while !rotated.exists() {
        assert!(
            begin.elapsed() < Duration::from_secs(120),
            "serial0.log was never rotated (now {} bytes, limit {SERIAL_LOG_MAX})",
            std::fs::metadata(&serial).map(|m| m.len()).unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..10 {
        let len = std::fs::metadata(&serial).unwrap().len();
        assert!(
            len <= 2 * SERIAL_LOG_MAX,
            "serial0.log holds {len} bytes, limit {SERIAL_LOG_MAX}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rotated_len = std::fs::metadata(&rotated).unwrap().len();
    assert!(rotated_len > SERIAL_LOG_MAX, "{rotated_len}");

    api.delete("loop", &DeleteParams::default()).await.unwrap();
    launcher.wait_exit(Duration::from_secs(60));
}

/// KubeVirt's `startStrategy: Paused`: the guest starts with its vCPUs stopped, and the
/// VMI says so (Running, Paused=True PausedByUser) until it is unpaused; then it boots.
/// The same boot (one boot for both, to keep CI short) shows in the guest what
/// `cpu.features`, `clock` and the devices gave it: popcnt on and SSE3 (`pni`) off on top of
/// QEMU's TCG model, no HPET clocksource, a real-time clock an hour ahead, the 6300ESB
/// watchdog, the memory balloon KubeVirt attaches by default, two tablets: one on the
/// virtio bus, one on USB (its xHCI controller), and the TPM 2.0 swtpm emulates (`tpm0`).
/// With 2 vCPUs, `blockMultiQueue` gives its virtio disk two queues, and the `auto`
/// IOThreads pool (two per requested CPU; none is requested, so KubeVirt counts one and the
/// pool is 2) with the disk's dedicated thread runs as
/// QEMU's threads `IO iothread1` and `IO iothread2`. A claim's directory shared as a
/// filesystem (virtiofs) is mounted by the volume's name, read and written.
/// `useVirtioTransitional` makes the disk, NIC, balloon, RNG and virtio-serial controller
/// transitional: the guest's PCI bus shows their transitional ids (1af4:1000-1005, behind
/// the PCIe-to-PCI bridge libvirt adds for them) and none of their modern ones; the
/// virtio tablet, virtio-gpu and virtiofs keep theirs, as in KubeVirt.
#[tokio::test]
async fn start_strategy_paused_holds_the_guest_until_unpaused_and_devices_show_inside() {
    let f = Fixture::start(shared().await, "sp").await;
    let mut spec = guest_spec();
    spec["startStrategy"] = json!("Paused");
    spec["terminationGracePeriodSeconds"] = json!(0);
    spec["domain"]["cpu"] = json!({"cores": 2,
        "features": [{"name": "popcnt"}, {"name": "pni", "policy": "disable"}]});
    spec["domain"]["ioThreadsPolicy"] = json!("auto");
    spec["domain"]["devices"]["blockMultiQueue"] = json!(true);
    spec["domain"]["devices"]["disks"][0]["dedicatedIOThread"] = json!(true);
    spec["domain"]["clock"] =
        json!({"utc": {"offsetSeconds": 3600}, "timer": {"hpet": {"present": false}}});
    spec["domain"]["devices"]["watchdog"] =
        json!({"name": "wd", "i6300esb": {"action": "poweroff"}});
    spec["domain"]["devices"]["tpm"] = json!({});
    spec["domain"]["devices"]["video"] = json!({"type": "virtio"});
    spec["domain"]["devices"]["useVirtioTransitional"] = json!(true);
    spec["domain"]["devices"]["rng"] = json!({});
    spec["domain"]["devices"]["inputs"] = json!([
        {"name": "tablet1", "type": "tablet", "bus": "virtio"},
        {"name": "tablet2", "type": "tablet"}
    ]);
    // Two SATA CD-ROM drives with a 1 MiB medium each, one with its tray open.
    for (name, cdrom) in [
        ("cd-open", json!({"tray": "open"})),
        ("cd-shut", json!({"readonly": true})),
    ] {
        spec["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "cdrom": cdrom}));
        spec["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "emptyDisk": {"capacity": "1Mi"}}));
    }
    // A claim's directory shared as a filesystem (virtiofs), with KubeVirt's gate on.
    let claim_dir = tempfile::tempdir().unwrap();
    std::fs::write(claim_dir.path().join("hello"), "from-the-claim\n").unwrap();
    virtiofs_claim(&f, "data", claim_dir.path()).await;
    set_config(
        &f.client,
        f.ns.name(),
        &[("feature-gates", "EnableVirtioFsStorageVolumes,NUMA")],
    )
    .await;
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}));
    spec["domain"]["devices"]["filesystems"] = json!([{"name": "data", "virtiofs": {}}]);
    let mut s = start(&f.api, &f.node, f.run_dir.path(), "held", spec).await;
    let dir = f.run_dir.path().join("vmis").join(s.vmi.uid().unwrap());
    let paused_condition = |v: &VirtualMachineInstance| {
        v.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Paused")
                .map(|c| (c.status.clone(), c.reason.clone()))
        })
    };
    let started = Instant::now();
    let v = loop {
        let v = f.api.get("held").await.unwrap();
        if v.status.as_ref().and_then(|s| s.phase) == Some(VmiPhase::Running)
            && paused_condition(&v).is_some()
        {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "VMI held: {:?}\n{}",
            v.status,
            f.handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        paused_condition(&v),
        Some(("True".into(), Some("PausedByUser".into())))
    );
    let socket = dir.join(LAUNCHER_SOCKET);
    assert_eq!(domain_info(&socket).await.state, DomainState::Paused);
    // A paused guest prints nothing: not even the kernel's first line.
    let serial = dir.join(SERIAL_LOG);
    let printed = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(!printed.contains("Linux version"), "{printed}");

    // Unpaused (what virtctl unpause asks of the handler), it boots and the condition goes.
    let mut launcher = ferrovirt_node_contract::client::LauncherClient::connect(&socket)
        .await
        .unwrap();
    launcher.unpause().await.unwrap();
    common::wait_for_line(&serial, common::GUEST_LINE);
    let started = Instant::now();
    while paused_condition(&f.api.get("held").await.unwrap()).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the Paused condition stayed\n{}",
            f.handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What the guest has, read on its console. `X$((6*7))` echoes as typed but prints X42.
    let console = dir.join(SERIAL_SOCKET);
    let out = ferrovirt_tests::guest::console_exchange(
        &console,
        "echo X$((6*7)) $(grep -cw popcnt /proc/cpuinfo) $(grep -cw pni /proc/cpuinfo) \
         $(date +%s) $(cat /sys/devices/system/clocksource/clocksource0/available_clocksource) \
         $(cat /sys/bus/pci/devices/*/device | tr '\n' ,) \
         $(cat /sys/bus/virtio/devices/*/device | tr '\n' ,) \
         TPM$(cat /sys/class/tpm/tpm0/tpm_version_major) MQ$(ls /sys/block/vda/mq | wc -l) \
         Y$((6*7))",
        "Y42",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("X42 "))
        .unwrap_or_else(|| panic!("no answer line in:\n{out}"));
    eprintln!("the guest answered: {line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words[1].parse::<u32>().unwrap() >= 1,
        "popcnt required: {line}"
    );
    assert_eq!(words[2], "0", "pni (SSE3) disabled: {line}");
    let guest_time: i64 = words[3].parse().unwrap();
    assert!(
        (guest_time - now - 3600).abs() < 300,
        "the guest's clock is not an hour ahead: guest {guest_time}, host {now}"
    );
    assert!(!line.contains("hpet"), "HPET not present: {line}");
    assert!(
        line.contains("0x25ab"),
        "the 6300ESB watchdog (8086:25ab) is on the PCI bus: {line}"
    );
    assert!(
        line.contains(" TPM2 "),
        "the emulated TPM 2.0 is the guest's tpm0: {line}"
    );
    assert!(
        line.contains(" MQ2 "),
        "blockMultiQueue: the virtio disk has a queue per vCPU (2): {line}"
    );
    // The IOThreads run in QEMU: the auto pool's shared thread and the disk's own, named
    // by libvirt's ids, which QEMU's command line gives the disk (with its two queues).
    let domain = format!("{}_held", f.ns.name());
    let qemu = ferrovirt_tests::qemu_of(&domain).expect("the guest's QEMU runs");
    let mut threads: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("IO iothread"))
        .collect();
    threads.sort();
    assert_eq!(
        threads,
        ["IO iothread1", "IO iothread2"],
        "QEMU's I/O threads"
    );
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    // libvirt writes -device as JSON ("num-queues":2) or as key=value.
    let cmdline = String::from_utf8_lossy(&cmdline)
        .replace('"', "")
        .replace(':', "=");
    assert!(
        cmdline.contains("num-queues=2") && cmdline.contains("iothread=iothread2"),
        "the disk's queues and dedicated IOThread reach QEMU: {cmdline}"
    );
    let on_bus = |id: &str| {
        line.split_whitespace()
            .any(|w| w.split(',').any(|d| d == id))
    };
    assert!(
        on_bus("0x0005"),
        "a virtio balloon (device 5) is on the virtio bus: {line}"
    );
    assert!(
        on_bus("0x0012"),
        "the virtio tablet (virtio input, device 18) is on the virtio bus: {line}"
    );
    assert!(
        on_bus("0x000d"),
        "the USB tablet's xHCI controller (1b36:000d) is on the PCI bus: {line}"
    );
    assert!(
        on_bus("0x1050") && !on_bus("0x1111"),
        "video type virtio: virtio-gpu (1af4:1050) on the PCI bus, not the VGA (1234:1111): {line}"
    );
    // useVirtioTransitional: the transitional PCI ids of the net, block, balloon, console
    // (virtio-serial) and entropy devices, none of their modern ones (0x1040 + type).
    for (id, device) in [
        ("0x1000", "net"),
        ("0x1001", "block"),
        ("0x1002", "balloon"),
        ("0x1003", "virtio-serial"),
        ("0x1005", "rng"),
        (
            "0x000e",
            "the PCIe-to-PCI bridge (1b36:000e) libvirt puts them behind",
        ),
    ] {
        assert!(
            on_bus(id),
            "useVirtioTransitional: {device} ({id}) on the PCI bus: {line}"
        );
    }
    for id in ["0x1041", "0x1042", "0x1043", "0x1044", "0x1045"] {
        assert!(
            !on_bus(id),
            "useVirtioTransitional: no modern virtio device {id} on the PCI bus: {line}"
        );
    }
    assert!(
        on_bus("0x1052"),
        "the virtio tablet keeps its modern model (1af4:1052), as in KubeVirt: {line}"
    );
    // The CD-ROM drives: the open one has no medium to read, the closed one its 1 MiB;
    // both read-only. The SATA drivers may still be loading after the ready line: the
    // command is typed again until both drives answer.
    let out = ferrovirt_tests::guest::console_exchange(
        &console,
        "modprobe -a sr_mod ahci; echo CD-$(for d in /dev/sr?; do dd if=$d of=/dev/null bs=2048 count=1 2>/dev/null && echo medium || echo none; done | sort | tr '\\n' ,)$(cat /sys/block/sr*/ro | tr -d '\\n')",
        "CD-medium,none,11",
    );
    assert!(out.contains("CD-medium,none,11"), "{out}");
    // The claim's directory, mounted by the volume's name: read, and written through.
    let out = ferrovirt_tests::guest::console_exchange(
        &console,
        "modprobe virtiofs; mkdir -p /data; mount -t virtiofs data /data && echo from-the-guest > /data/guest && echo PV-$(cat /data/hello)",
        "PV-from-the-claim",
    );
    assert!(out.contains("PV-from-the-claim"), "{out}");
    assert_eq!(
        std::fs::read_to_string(claim_dir.path().join("guest")).unwrap(),
        "from-the-guest\n",
        "the guest's file in the claim's directory"
    );

    f.api
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    s.launcher.wait_exit(Duration::from_secs(60));

    // Realtime vCPUs (KubeVirt's rt1 fields), started paused: the handler gives vCPU 0's
    // thread SCHED_FIFO before the guest would run. The launcher here is a host process in
    // the machine's root cpu cgroup, which has a realtime budget (a pod's cgroup has none,
    // docs/real-node.md). Its CPUs are the machine's: one vCPU fewer, and the emulator
    // thread on the last, make them exactly its dedicated CPUs.
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(
        cpus >= 2,
        "dedicated CPUs for a vCPU and the emulator need 2 CPUs"
    );
    ensure_free_hugepages(32);
    let mut rt = guest_spec();
    rt["startStrategy"] = json!("Paused");
    rt["terminationGracePeriodSeconds"] = json!(0);
    rt["domain"]["devices"]["interfaces"] = json!([]);
    rt["networks"] = json!([]);
    rt["domain"]["memory"] = json!({"guest": "64Mi", "hugepages": {"pageSize": "2Mi"}});
    rt["domain"]["cpu"] = json!({"sockets": cpus - 1, "dedicatedCpuPlacement": true,
        "isolateEmulatorThread": true, "numa": {"guestMappingPassthrough": {}},
        "realtime": {"mask": "0"}});
    let mut s = start(&f.api, &f.node, f.run_dir.path(), "rt", rt).await;
    let v = settled(&f.api, "rt", &f.handler).await;
    assert_eq!(
        v.status.as_ref().and_then(|s| s.phase),
        Some(VmiPhase::Running),
        "{:?}\n{}",
        v.status,
        f.handler.log_text()
    );
    let qemu = ferrovirt_tests::qemu_of(&format!("{}_rt", f.ns.name())).expect("rt's QEMU");
    let vcpu0 = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("CPU 0/"))
        })
        .and_then(|t| t.file_name().to_str()?.parse::<i32>().ok())
        .expect("QEMU's vCPU 0 thread");
    assert_eq!(
        virt_handler::realtime::policy(vcpu0),
        Some(libc::SCHED_FIFO),
        "vCPU 0's thread {vcpu0} of QEMU {qemu}"
    );
    eprintln!("MEASURE realtime: vCPU 0's thread {vcpu0} runs SCHED_FIFO");
    f.api.delete("rt", &DeleteParams::default()).await.unwrap();
    s.launcher.wait_exit(Duration::from_secs(60));
}

/// At least `pages` free 2Mi hugepages on the host: the kernel's pool is raised if needed
/// (as hack/node/up.sh raises it; the pool is shared and never lowered).
fn ensure_free_hugepages(pages: u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let free: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no HugePages_Free in /proc/meminfo:\n{meminfo}"));
    if free >= pages {
        return;
    }
    let pool = "/proc/sys/vm/nr_hugepages";
    let now: u64 = std::fs::read_to_string(pool)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(pool, (now + pages - free).to_string())
        .unwrap_or_else(|e| panic!("raising {pool} (needs root): {e}"));
}
