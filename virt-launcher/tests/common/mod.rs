//! Runs the real virt-launcher binary against a real libvirt and QEMU (TCG).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ferrovirt_node_contract::client::LauncherClient;

/// The line hack/build-guest-images.sh's guest prints once it is up.
pub use ferrovirt_tests::guest::READY_LINE as GUEST_LINE;

pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// The kernel-boot guest, or a failure that says how to build it.
pub fn guest() -> Guest {
    let cache = ferrovirt_tests::cache_dir();
    let dir = cache.join("guests");
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    assert!(
        kernel.is_file() && initrd.is_file(),
        "guest kernel/initrd missing in {}: run hack/build-guest-images.sh",
        dir.display()
    );
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "console=ttyS0 quiet".into());
    Guest {
        kernel,
        initrd,
        cmdline,
    }
}

/// A TCG kernel-boot domain with the serial console on `<vmi-dir>/serial0.sock`.
pub fn domain_xml(name: &str, vmi_dir: &Path, guest: &Guest) -> String {
    let dir = vmi_dir.display();
    format!(
        r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='unix'>
      <source mode='bind' path='{dir}/serial0.sock'/>
      <log file='{dir}/serial0.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>"#,
        kernel = guest.kernel.display(),
        initrd = guest.initrd.display(),
        cmdline = guest.cmdline,
    )
}

pub struct Launcher {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// Killed on drop if the test fails half way (no PID namespace in tests).
    pub qemu_pid: Option<u32>,
}

impl Launcher {
    pub fn start(grace_seconds: u64) -> Launcher {
        let dir = tempfile::Builder::new()
            .prefix("vl-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let child = Command::new(env!("CARGO_BIN_EXE_virt-launcher"))
            .args([
                "--vmi-namespace",
                "default",
                "--vmi-name",
                "test",
                "--vmi-uid",
                "uid-1",
            ])
            .arg("--vmi-dir")
            .arg(dir.path())
            .args(["--grace-period-seconds", &grace_seconds.to_string()])
            .arg("--capabilities-cache")
            .arg(std::env::temp_dir().join("ferrovirt-launcher-test-capabilities"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn virt-launcher");
        let launcher = Launcher {
            child,
            dir,
            qemu_pid: None,
        };
        let ready = launcher.path("ready");
        wait_until(Duration::from_secs(30), "launcher ready file", || {
            ready.exists()
        });
        assert!(
            launcher.path("launcher.sock").exists(),
            "ready before the socket"
        );
        launcher
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn client(&self) -> LauncherClient {
        LauncherClient::connect(self.path("launcher.sock"))
            .await
            .expect("connect to launcher")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "launcher did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// VmRSS of the launcher process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("launcher status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = self.qemu_pid.filter(|p| is_qemu(*p)) {
            // SAFETY: kill(2) on a QEMU this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// True while `pid` is a live (not zombie) qemu-system process.
pub fn is_qemu(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    stat.contains("(qemu-system") && state != "Z"
}

pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `line` in the serial log; returns how long it took.
pub fn wait_for_serial_line(log: &Path, line: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_until(timeout, &format!("{line:?} in {}", log.display()), || {
        std::fs::read_to_string(log).is_ok_and(|s| s.contains(line))
    });
    start.elapsed()
}
