//! What the handler's integration tests share (each test binary uses a part of it).
#![allow(dead_code, unused_imports)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ferrovirt_tests::guest::READY_LINE as GUEST_LINE;
pub use ferrovirt_tests::guest::cache_dir as cache;
pub use ferrovirt_tests::wait::wait_until as wait_for;
/// TCG on a shared 2-core machine with other guests booting in parallel.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The guest's kernel command line, or a failure saying how to build the guest.
pub fn guest_cmdline() -> String {
    let images = cache().join("images/ferrovirt_guest-kernel_latest/boot");
    assert!(
        images.join("vmlinuz").is_file() && images.join("initrd.img").is_file(),
        "{} lacks vmlinuz/initrd.img: run hack/build-guest-images.sh",
        images.display()
    );
    ferrovirt_tests::guest::kernel_boot().cmdline
}

/// The workspace's virt-launcher (hack/setup.sh and `cargo test --workspace` build it).
pub fn launcher_binary() -> PathBuf {
    ferrovirt_tests::workspace_bin("virt-launcher")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < timeout,
                "process {} did not exit within {timeout:?}",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts a launcher on `dir` (host path, no mount namespace) and waits until it is ready
/// and has probed QEMU's capabilities. Its log is `<dir>.launcher.log`.
pub fn start_launcher(dir: &Path, name: &str, uid: &str, grace: u64) -> Proc {
    start_launcher_with(dir, name, uid, grace, &[])
}

/// [`start_launcher`] with extra environment (the launcher's flags all have an env).
pub fn start_launcher_with(
    dir: &Path,
    name: &str,
    uid: &str,
    grace: u64,
    env: &[(&str, &str)],
) -> Proc {
    start_launcher_wrapped(&[], dir, name, uid, grace, env)
}

/// [`start_launcher_with`], the launcher run by `wrapper` (e.g. `nsenter --net=...
/// --`, which execs it: the child is still the launcher).
pub fn start_launcher_wrapped(
    wrapper: &[&str],
    dir: &Path,
    name: &str,
    uid: &str,
    grace: u64,
    env: &[(&str, &str)],
) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    start_disk_container(dir, KERNEL_BOOT_CONTAINER, GUEST_KERNEL_IMAGE);
    let log = dir.with_extension("launcher.log");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(launcher_binary());
            c
        }
        None => Command::new(launcher_binary()),
    };
    let p = Proc(
        cmd.args([
            "--vmi-namespace",
            "default",
            "--vmi-name",
            name,
            "--vmi-uid",
            uid,
        ])
        .arg("--vmi-dir")
        .arg(dir)
        .args(["--grace-period-seconds", &grace.to_string()])
        .arg("--capabilities-cache")
        .arg(capabilities_cache())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn virt-launcher"),
    );
    wait_for(Duration::from_secs(30), "launcher ready", || {
        dir.join("ready").exists()
    });
    // libvirt's capability probe runs a daemonized QEMU; killing the launcher (no PID
    // namespace here) in the middle of it would orphan that QEMU. Wait for its end.
    wait_for(Duration::from_secs(60), "QEMU capabilities probed", || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains("QEMU capabilities ready") || l.contains("probing QEMU capabilities")
        })
    });
    p
}

/// The test guest's kernel-boot image, in the image store.
pub const GUEST_KERNEL_IMAGE: &str = "ferrovirt/guest-kernel:latest";
pub use ferrovirt_node_contract::pod::KERNEL_BOOT_CONTAINER;

/// Plays the launcher pod's disk container `container` of `image` for the per-VMI
/// directory `dir`, as devnode does (`devnode container-disk`, chrooted into the image's
/// directory of the image store): virt-handler finds it through its socket. It ends when
/// its socket is gone (the launcher removes it on exit; the test's directory goes).
pub fn start_disk_container(dir: &Path, container: &str, image: &str) {
    let root = cache()
        .join("images")
        .join(ferrovirt_node_contract::imagestore::dir_name(image));
    assert!(
        root.is_dir(),
        "{} is missing: run hack/build-guest-images.sh",
        root.display()
    );
    let socket = ferrovirt_node_contract::paths::VmiDir::new(dir).container_disk_socket(container);
    let log = dir.with_extension(format!("{container}.log"));
    let mut child = Command::new(ferrovirt_tests::workspace_bin("devnode"))
        .arg("container-disk")
        .arg("--socket")
        .arg(&socket)
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn devnode container-disk");
    // Reaped when it ends.
    std::thread::spawn(move || child.wait());
    wait_for(
        Duration::from_secs(10),
        "the disk container's socket",
        || socket.exists(),
    );
}

/// Shared between the launchers of these tests, as a node shares it between its launchers.
fn capabilities_cache() -> PathBuf {
    let dir = std::env::temp_dir().join("ferrovirt-virt-handler-test-capabilities");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits for `line` in a serial log.
pub fn wait_for_line(log: &Path, line: &str) {
    ferrovirt_tests::wait::wait_for_line(log, line, BOOT_TIMEOUT);
}

/// The launcher's view of its domain (there must be one).
pub async fn domain_info(socket: &Path) -> ferrovirt_node_contract::protocol::DomainInfo {
    ferrovirt_node_contract::client::LauncherClient::connect(socket)
        .await
        .unwrap()
        .domain_info()
        .await
        .unwrap()
        .expect("a defined domain")
}
