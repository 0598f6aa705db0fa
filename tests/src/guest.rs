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

/// How a console exchange ([`try_console_exchange`]) failed; each carries what the console
/// printed before.
#[derive(Debug)]
pub enum ConsoleError {
    /// The socket could not be reached.
    Connect(std::io::Error),
    /// The guest closed the console (it powered off, or its QEMU went).
    Closed(String),
    /// Reading or typing failed.
    Io(std::io::Error, String),
    /// The answer did not come in time.
    Timeout(String),
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::Connect(e) => write!(f, "connecting to the console: {e}"),
            ConsoleError::Closed(seen) => write!(f, "the console closed; it printed {seen:?}"),
            ConsoleError::Io(e, seen) => write!(f, "{e}; the console printed {seen:?}"),
            ConsoleError::Timeout(seen) => write!(f, "no answer in time; it printed {seen:?}"),
        }
    }
}

impl std::error::Error for ConsoleError {}

/// Types `command` on the guest's serial console socket (`serial0.sock` in its per-VMI
/// directory) until `expect` appears, and returns what came back. The command is typed
/// again every `timeout / 12` (at least 1 s): the first bytes may reach the shell before
/// its prompt.
pub fn try_console_exchange(
    socket: &std::path::Path,
    command: &str,
    expect: &str,
    timeout: std::time::Duration,
) -> Result<String, ConsoleError> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(ConsoleError::Connect)?;
    let started = Instant::now();
    let mut seen = String::new();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| ConsoleError::Io(e, String::new()))?;
    let retype = (timeout / 12).max(Duration::from_secs(1));
    let mut last_sent = None::<Instant>;
    while started.elapsed() < timeout {
        if last_sent.is_none_or(|t| t.elapsed() > retype) {
            if let Err(e) = stream.write_all(format!("{command}\n").as_bytes()) {
                return Err(ConsoleError::Io(e, seen));
            }
            last_sent = Some(Instant::now());
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => return Err(ConsoleError::Closed(seen)),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(ConsoleError::Io(e, seen)),
        }
        if seen.contains(expect) {
            return Ok(seen);
        }
    }
    Err(ConsoleError::Timeout(seen))
}

/// [`try_console_exchange`] within 60 s, or a panic saying what the console printed.
pub fn console_exchange(socket: &std::path::Path, command: &str, expect: &str) -> String {
    try_console_exchange(socket, command, expect, std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "the console at {} did not answer {command:?} with {expect:?}: {e}",
                socket.display()
            )
        })
}
