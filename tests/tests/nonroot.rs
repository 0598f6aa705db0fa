//! Least privilege on the node (issue 12, part 3; docs/security.md): on devnode, whose
//! launchers are host processes that see the host's run dir, two VMIs run; the guest's
//! QEMU and its launcher run as uid 107 (KubeVirt's non-root `qemu` user) without
//! effective capabilities, and a launcher cannot reach another VMI's directory: as uid
//! 107 in launcher A's own mount namespace (nsenter + setpriv, the kernel's permission
//! check, nothing mocked), VMI B's directory, log and socket are refused with EACCES,
//! while A's own directory, at its mount point in the pod, is readable; and another
//! non-root user cannot read A's directory either.
//!
//! (A hostDisk outside the allowed directories, or with `..`, is refused: virt-handler's
//! tests/node_defects.rs, `host_disks_need_the_gate_and_an_allowed_directory_and_never_follow_links`.
//! The real node runs the same launcher pods as containers: real_vm.rs boots one.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::VirtualMachineInstance;
use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::paths::{LAUNCHER_SOCKET, SERIAL_LOG};
use ferrovirt_node_contract::paths::{LAUNCHER_UID, RunDir, VMI_DIR_IN_POD};
use ferrovirt_tests::{Stack, TestNamespace, manifests, qemu_of, shared};
use kube::api::{Api, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(240);

/// A VMI booting the test guest's kernel (a kernel-boot disk container) with a cloud-init
/// disk (a file virt-handler prepares for QEMU).
fn vmi(name: &str) -> VirtualMachineInstance {
    serde_json::from_value(manifests::kernel_boot_vmi(
        name,
        json!([{"name": "ci", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho nonroot\n"}}]),
    ))
    .expect("a VMI")
}

/// The Uid and Gid lines of `/proc/<pid>/status` (real, effective, saved, fs) and CapEff.
fn ids(pid: u32) -> (Vec<u32>, Vec<u32>, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_string()
    };
    let nums = |s: String| s.split_whitespace().map(|n| n.parse().unwrap()).collect();
    (nums(field("Uid:")), nums(field("Gid:")), field("CapEff:"))
}

/// Runs `args` as `uid` (gid `uid`, no supplementary groups) in the mount namespace of
/// `pid`; returns (success, stderr).
fn as_user_in_mounts_of(pid: u32, uid: u32, args: &[&str]) -> (bool, String) {
    let id = uid.to_string();
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args([
            "setpriv",
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .expect("nsenter and setpriv (util-linux) are needed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn uid_of(vmis: &Api<VirtualMachineInstance>, name: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(uid) = vmis.get(name).await.unwrap().metadata.uid {
            return uid;
        }
        assert!(started.elapsed() < TIMEOUT, "VMI {name} has no uid");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn launchers_and_qemu_run_as_uid_107_and_cannot_reach_another_vmis_directory() {
    let cp = shared().await;
    let stack = Stack::start(cp, "nonroot-node")
        .await
        .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"));
    let client = cp.client().await.unwrap();
    let ns = TestNamespace::create(cp, "nonroot").await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns.name());
    for name in ["a", "b"] {
        vmis.create(&PostParams::default(), &vmi(name))
            .await
            .unwrap();
    }
    let (a, b) = (uid_of(&vmis, "a").await, uid_of(&vmis, "b").await);
    let (dir_a, dir_b) = (stack.vmi_dir(&a), stack.vmi_dir(&b));

    // A boots: its QEMU read the kernel through the disk container's /proc/<pid>/root and
    // opened the cloud-init disk virt-handler made, both as uid 107.
    let domain = format!("{}_a", ns.name());
    let qemu = stack.wait_booted(&a, &domain, TIMEOUT).await;
    let launcher = LauncherClient::connect(dir_a.join(LAUNCHER_SOCKET))
        .await
        .expect("A's launcher answers")
        .peer()
        .expect("SO_PEERCRED of A's launcher")
        .pid;
    let u = LAUNCHER_UID;
    for (what, pid) in [("launcher", launcher), ("QEMU", qemu)] {
        let (uids, gids, cap_eff) = ids(pid);
        assert_eq!(uids, [u, u, u, u], "{what} (pid {pid}) Uid");
        assert_eq!(gids, [u, u, u, u], "{what} (pid {pid}) Gid");
        assert_eq!(cap_eff, "0000000000000000", "{what} (pid {pid}) CapEff");
    }

    // B's launcher is up, so its directory holds its socket and files.
    let started = Instant::now();
    while !dir_b.join(LAUNCHER_SOCKET).exists() {
        assert!(
            started.elapsed() < TIMEOUT,
            "VMI b's launcher did not start:\n{}",
            stack.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let vmis_dir = RunDir::new(&stack.run_dir).vmis();
    let m = std::fs::metadata(&vmis_dir).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o777),
        (0, 0o700),
        "{}",
        vmis_dir.display()
    );
    for d in [&dir_a, &dir_b] {
        let m = std::fs::metadata(d).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (u, u, 0o700),
            "{}",
            d.display()
        );
    }

    // As A's user in A's mount namespace: A's own directory, at its mount point, is
    // readable (the way in works) ...
    let own = format!("{VMI_DIR_IN_POD}/serial0.log");
    let (ok, err) = as_user_in_mounts_of(launcher, u, &["cat", &own]);
    assert!(ok, "uid {u} could not read its own {own}: {err}");
    // ... B's directory, its serial log and its command socket are not.
    let p = |f: &str| dir_b.join(f).display().to_string();
    for (what, args) in [
        ("list B's directory", vec!["ls".to_string(), p("")]),
        (
            "read B's serial log",
            vec!["cat".to_string(), p(SERIAL_LOG)],
        ),
        (
            "open B's socket",
            vec!["cat".to_string(), p(LAUNCHER_SOCKET)],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = as_user_in_mounts_of(launcher, u, &args);
        assert!(!ok, "uid {u} in A's mount namespace could {what}");
        assert!(
            err.contains("Permission denied"),
            "{what}: refused, but not with EACCES: {err}"
        );
    }
    // Another non-root user cannot read A's directory, even at its mount point.
    let (ok, err) = as_user_in_mounts_of(launcher, u + 1, &["cat", &own]);
    assert!(
        !ok && err.contains("Permission denied"),
        "uid {}: {err}",
        u + 1
    );

    for name in ["a", "b"] {
        vmis.delete(name, &Default::default()).await.unwrap();
    }
    let started = Instant::now();
    while qemu_of(&domain).is_some() || Path::new(&dir_b).join(LAUNCHER_SOCKET).exists() {
        assert!(started.elapsed() < TIMEOUT, "the VMIs did not stop");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
