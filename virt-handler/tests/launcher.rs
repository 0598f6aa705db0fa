//! The handler's node-side path against the real virt-launcher, libvirt and QEMU: plan
//! and prepare the volumes of a kernel-boot VMI of the Ferrovirt guest (with a
//! containerDisk, an emptyDisk, a cloud-init disk and a NIC), convert it, have the
//! launcher define and start it, see the guest's lines on the serial log, then power it
//! off through ACPI.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    GUEST_LINE, KERNEL_BOOT_CONTAINER, cache, guest_cmdline, start_launcher, wait_for_line,
};

use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::paths::{LAUNCHER_SOCKET, SERIAL_LOG, SERIAL_SOCKET, VNC_SOCKET};
use ferrovirt_node_contract::protocol::{DomainState, Event, StopReason};
use virt_handler::config::Virtualization;
use virt_handler::domain::{Input, convert};
use virt_handler::kvm::probe;
use virt_handler::volumes::{plan, prepare, prepare_firmware};

#[tokio::test]
async fn kernel_boot_vmi_boots_under_the_real_launcher() {
    let kernel_image = "ferrovirt/guest-kernel:latest";
    let cmdline = guest_cmdline();
    let disk = cache().join("images/ferrovirt_guest-disk_latest/disk/ferrovirt-guest.qcow2");
    assert!(
        disk.is_file(),
        "{} is missing: run hack/build-guest-images.sh",
        disk.display()
    );
    let disk_mtime = std::fs::metadata(&disk).unwrap().modified().unwrap();

    let kvm = probe(
        Path::new(env!("CARGO_BIN_EXE_virt-handler")),
        Path::new("/dev/kvm"),
        Duration::from_secs(2),
    );
    let virtualization = if kvm.usable() {
        Virtualization::Kvm
    } else {
        Virtualization::Emulation
    };
    eprintln!("KVM: {kvm:?} -> {virtualization:?}");

    let vmi: crds::VirtualMachineInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        // A short uid: libvirt's monitor socket path under a /tmp run dir must stay within
        // the 108 bytes of a UNIX socket address (in a pod the dir is /var/run/ferrovirt/vmi).
        "metadata": {"name": "guest", "namespace": "default", "uid": "vmi-1"},
        "spec": {
            "domain": {
                "memory": {"guest": "256Mi"},
                "firmware": {"uuid": "c0ffee00-0000-4000-8000-000000000001", "kernelBoot": {
                    "kernelArgs": cmdline,
                    "container": {"image": kernel_image, "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.img"}
                }},
                "devices": {
                    "disks": [{"name": "cloudinit", "disk": {"bus": "virtio"}}, {"name": "root", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}],
                    "rng": {}
                }
            },
            "volumes": [
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\nhello from virt-handler\n"}},
                {"name": "root", "containerDisk": {"image": "ferrovirt/guest-disk:latest"}},
                {"name": "scratch", "emptyDisk": {"capacity": "64Mi"}}
            ],
            "networks": [{"name": "default", "pod": {}}]
        }
    }))
    .unwrap();

    let run_dir = tempfile::Builder::new()
        .prefix("vh")
        .tempdir_in("/tmp")
        .unwrap();
    let uid = vmi.metadata.uid.clone().unwrap();
    let dir = run_dir.path().join("vmis").join(&uid);
    std::fs::create_dir_all(&dir).unwrap();

    let mut launcher = start_launcher(&dir, "guest", &uid, 120);

    // What the worker does: plan, prepare, convert, define and start.
    let started = Instant::now();
    let plans = plan(&vmi.spec, &dir, &BTreeMap::new(), &Default::default()).unwrap();
    // The images in place in the store: this launcher runs on the host, without a pod.
    let images =
        virt_handler::volumes::containerdisk::from_store(&vmi.spec, &cache().join("images"));
    prepare_firmware(&vmi.spec.domain, &dir, &images).unwrap();
    prepare(&plans, &dir, &images, None, &uid, "guest").unwrap();
    let prepared = started.elapsed();
    let xml = convert(&Input {
        namespace: "default",
        name: "guest",
        uid: &uid,
        spec: &vmi.spec,
        virtualization,
        vmi_dir: &dir,
        kernel_root: &images[KERNEL_BOOT_CONTAINER].launcher,
        volumes: &plans,
        pod_cpus: &[],
        host_nodes: &[],
    })
    .unwrap();
    let mut client = LauncherClient::connect(dir.join(LAUNCHER_SOCKET))
        .await
        .unwrap();
    let info = client
        .define_and_start(&xml)
        .await
        .unwrap_or_else(|e| panic!("{}\n{xml}", ferrovirt_runtime::chain(&e)));
    assert_eq!(info.state, DomainState::Running);
    assert_eq!(info.name, "default_guest");
    let mut events = LauncherClient::connect(dir.join(LAUNCHER_SOCKET))
        .await
        .unwrap()
        .watch_events()
        .await
        .unwrap();
    assert_eq!(events.next().await.unwrap(), Some(Event::Started));

    let log = dir.join(SERIAL_LOG);
    wait_for_line(&log, GUEST_LINE);
    eprintln!(
        "MEASURE volumes prepared in {prepared:?}; define_and_start -> {GUEST_LINE:?} in {:.1}s ({virtualization:?})",
        started.elapsed().as_secs_f64()
    );
    let serial = std::fs::read_to_string(&log).unwrap();
    assert!(
        serial.contains("FERROVIRT CLOUD-INIT: hello from virt-handler"),
        "cloud-init line missing:\n{serial}"
    );
    assert!(
        serial.contains(&format!("FERROVIRT INSTANCE-ID: {uid}")),
        "instance-id missing:\n{serial}"
    );
    assert!(
        dir.join(SERIAL_SOCKET).exists() && dir.join(VNC_SOCKET).exists(),
        "console sockets missing"
    );

    // `virt-handler console` reaches the guest's shell: a command in, its answer out,
    // and Ctrl-] detaches.
    {
        use std::io::{Read, Write};
        let mut console = Command::new(env!("CARGO_BIN_EXE_virt-handler"))
            .arg("--run-dir")
            .arg(run_dir.path())
            .args(["console", &uid])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Watchdog: a console that never answers fails the test instead of hanging it.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, pid) = (done.clone(), console.id() as i32);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: kill(2) on the console process this test started and still waits for.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut stdin = console.stdin.take().unwrap();
        stdin.write_all(b"\necho console-$((40+2))\n").unwrap();
        let mut stdout = console.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut seen, mut buf) = (String::new(), [0u8; 512]);
            while !seen.contains("console-42") {
                match stdout.read(&mut buf) {
                    Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => break,
                }
            }
            // Hand the pipe back: dropping it here would make the console's next write to
            // stdout fail, and the console exit, before the test presses Ctrl-].
            (seen, stdout)
        });
        let (seen, _stdout) = reader.join().unwrap();
        assert!(
            seen.contains("console-42"),
            "no answer through virt-handler console: {seen:?}"
        );
        stdin.write_all(&[0x1d]).unwrap();
        assert!(
            console.wait().unwrap().success(),
            "Ctrl-] ends the console with 0"
        );
    }

    client.shutdown().await.unwrap();
    assert_eq!(
        events.next().await.unwrap(),
        Some(Event::Stopped {
            reason: StopReason::Shutdown
        })
    );
    let code = launcher.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "a clean poweroff ends the launcher with 0");
    assert_eq!(
        std::fs::metadata(&disk).unwrap().modified().unwrap(),
        disk_mtime,
        "the image store file was written"
    );
}
