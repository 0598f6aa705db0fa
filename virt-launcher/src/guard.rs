//! Never leave a QEMU behind.
//!
//! - The launcher is a child subreaper, so QEMU, which libvirt daemonizes, stays its
//!   descendant (and is reaped here) instead of being reparented to the namespace's init.
//! - Every exit path the process controls destroys the domain: normal return
//!   ([`ExitGuard`]'s drop, which also runs while a panic unwinds `run`), and a dead
//!   libvirt event loop ([`emergency_exit`]).
//! - `kill -9` runs no code: there the pod's PID namespace (devnode) or cgroup (kubelet)
//!   takes QEMU down with the launcher, exactly as a container runtime does.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{Error, Result};

/// What takes the domain down: set once the hypervisor is open.
type Destroy = Box<dyn Fn() + Send + Sync>;
static DESTROY: OnceLock<Destroy> = OnceLock::new();

fn destroy_domain() {
    if let Some(destroy) = DESTROY.get() {
        destroy();
    }
}

pub fn set_child_subreaper() -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Subreaper(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// On drop: destroys the domain if it still runs (with `destroy`, given the hypervisor), removes the readiness files, and then
/// the disk containers' sockets in `disk_sockets`: a disk container ends once its socket
/// is gone (deploy/images/container-disk.c), so the pod ends with its launcher.
pub struct ExitGuard {
    pub files: Vec<PathBuf>,
    pub disk_sockets: Option<PathBuf>,
}

impl ExitGuard {
    pub fn new(
        destroy: impl Fn() + Send + Sync + 'static,
        files: Vec<PathBuf>,
        disk_sockets: Option<PathBuf>,
    ) -> Self {
        let _ = DESTROY.set(Box::new(destroy));
        ExitGuard {
            files,
            disk_sockets,
        }
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        destroy_domain();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let sockets = self
            .disk_sockets
            .iter()
            .flat_map(std::fs::read_dir)
            .flatten();
        for e in sockets.flatten() {
            if e.file_name().to_string_lossy().ends_with(".sock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Destroys the domain and exits at once, for failures that leave the launcher blind.
pub fn emergency_exit(code: i32) -> ! {
    destroy_domain();
    std::process::exit(code)
}

/// Reaps QEMU processes that ended up as this process's zombie children. Only
/// `qemu-system*` zombies seen on two consecutive scans are reaped, so a process that
/// libvirt forked and waits for itself is never taken from it.
pub async fn reap_qemu_zombies() {
    let mut seen = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = qemu_zombie_children();
        for pid in now.intersection(&seen) {
            // SAFETY: waitpid on a specific zombie child, non-blocking.
            let rc = unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) };
            tracing::debug!(pid, rc, "reaped QEMU");
        }
        seen = now;
    }
}

fn qemu_zombie_children() -> HashSet<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|s| {
                    parse_stat(&s).is_some_and(|(comm, state, ppid)| {
                        ppid == me && state == 'Z' && comm.starts_with("qemu-system")
                    })
                })
        })
        .collect()
}

/// `pid (comm) state ppid ...` -> (comm, state, ppid); comm may hold spaces and parens.
fn parse_stat(stat: &str) -> Option<(&str, char, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_proc_stat() {
        let s = "4242 (qemu-system-x86) Z 17 4242 4242 0 -1";
        assert_eq!(super::parse_stat(s), Some(("qemu-system-x86", 'Z', 17)));
    }
}
