//! Running as the non-root `qemu` user (uid 107) of the launcher pod, as KubeVirt's
//! non-root mode does (docs/security.md): libvirt runs unprivileged in this process and
//! QEMU as the same user. The per-VMI directory is a hostPath the node creates root's;
//! virt-handler hands it to uid 107 as soon as it appears, and the launcher waits for that.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long the launcher waits for virt-handler to hand it its directory.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(120);

/// As a non-root user libvirt keeps its cache, config and runtime files under that user's
/// XDG directories (`$HOME/.cache/libvirt`, ...), which are the image's home in a pod and
/// the host's on devnode: point them into the per-VMI libvirt root, so everything the
/// launcher writes stays in the VMI's directory. Nothing for root.
///
/// # Safety
/// Sets environment variables: call it before any other thread starts.
pub unsafe fn user_dirs(vmi_dir: &Path) {
    if euid() == 0 {
        return;
    }
    let root = ferrovirt_node_contract::paths::VmiDir::new(vmi_dir).libvirt_root();
    for (var, sub) in [
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_RUNTIME_DIR", "run"),
    ] {
        // SAFETY: the caller's promise: no other thread.
        unsafe { std::env::set_var(var, root.join(sub)) };
    }
}

/// Waits until this process may write `dir`: at once for root or once virt-handler has
/// handed the directory to the launcher's user; fails after `timeout` naming the owner
/// it needs.
pub async fn wait_writable(dir: &Path, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut told = false;
    while !writable(dir) {
        if started.elapsed() >= timeout {
            return Err(Error::NotHandedOver {
                dir: dir.to_owned(),
                uid: euid(),
                waited: timeout.as_secs(),
            });
        }
        if !told {
            tracing::info!(dir = %dir.display(), uid = euid(), "waiting for virt-handler to hand the VMI directory to this user");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if told {
        tracing::info!(waited = ?started.elapsed(), "VMI directory handed over");
    }
    Ok(())
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writable_directory_is_not_waited_for_and_a_missing_one_times_out() {
        let dir = tempfile::tempdir().unwrap();
        wait_writable(dir.path(), Duration::ZERO).await.unwrap();
        let gone = dir.path().join("gone");
        let e = wait_writable(&gone, Duration::from_millis(120))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("virt-handler") && e.contains("gone"), "{e}");
    }
}
