//! The test guest of `hack/build-guest-images.sh` (docs/guests.md), as every test and
//! benchmark finds it: its ready line and its kernel-boot files in the cache.

use std::path::PathBuf;

pub use crate::assets::cache_dir;

/// The line the test guest prints on its serial console once it is up.
pub const READY_LINE: &str = "FERROVIRT GUEST READY";

/// The guest's kernel-boot files (`<cache>/guests/`).
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Its kernel command line (console on ttyS0, the guest's own switches).
    pub cmdline: String,
}

/// The kernel-boot guest, or a failure that says how to build it.
pub fn kernel_boot() -> KernelBoot {
    let dir = cache_dir().join("guests");
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    assert!(
        kernel.is_file() && initrd.is_file(),
        "the test guest's vmlinuz/initrd.img are missing in {}: run hack/build-guest-images.sh \
         (or hack/setup.sh)",
        dir.display()
    );
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run hack/build-guest-images.sh",
                dir.join("cmdline").display()
            )
        })
        .trim()
        .to_owned();
    KernelBoot {
        kernel,
        initrd,
        cmdline,
    }
}

/// Types `command` on the guest's serial console socket (`serial0.sock` in its per-VMI
/// directory) and returns what came back once `expect` appeared; panics after 60 s with
/// what the console printed. The command is typed again every 5 s: the first bytes may
/// reach the shell before its prompt.
pub fn console_exchange(socket: &std::path::Path, command: &str, expect: &str) -> String {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a read timeout");
    let started = Instant::now();
    let mut seen = String::new();
    let mut last_sent = None::<Instant>;
    while started.elapsed() < Duration::from_secs(60) {
        if last_sent.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            stream
                .write_all(format!("{command}\n").as_bytes())
                .unwrap_or_else(|e| panic!("typing on the console: {e}"));
            last_sent = Some(Instant::now());
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the console: {e}"),
        }
        if seen.contains(expect) {
            return seen;
        }
    }
    panic!("the console did not answer {command:?} with {expect:?}; it printed:\n{seen}");
}
