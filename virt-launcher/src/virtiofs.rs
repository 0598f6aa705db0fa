//! virtiofsd for the VMI's filesystems (KubeVirt's `filesystems` with `virtiofs`): one
//! per shared volume, started by the launcher before the domain, which connects to its
//! vhost-user socket (libvirt's `<filesystem>` with `<source socket>`). KubeVirt runs the
//! Rust virtiofsd unprivileged in a container of its own (`--sandbox=none`); Debian 12 has
//! only QEMU 7.2's C virtiofsd (`/usr/lib/qemu/virtiofsd`, package qemu-system-common, in
//! the launcher image), which needs privilege for its sandbox: it runs as root of a user
//! namespace of its own (the launcher's user mapped to root, nothing else), where it may
//! chroot into the shared directory. Its socket is made here and handed over as an open
//! file (`--fd`): the C virtiofsd would otherwise lock a file under `/var/run/virtiofsd`,
//! which the launcher's user may not write. It ends when QEMU's connection closes.
//!
//! The C virtiofsd drops its supplementary groups (`setgroups(0, NULL)`, the fix of
//! CVE-2022-0358) and exits when that fails; in a user namespace made without privilege
//! `setgroups` is always refused (the kernel's rule for mapping the group), and a pod's
//! process has supplementary groups (its `fsGroup`). A seccomp filter of the launcher's
//! makes that one call a no-op returning success: virtiofsd keeps the launcher's own
//! groups, no more.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ferrovirt_node_contract::protocol::VirtiofsShare;

use crate::helpers::{Running, runs_as};
use crate::{Error, Result};

/// Debian's C virtiofsd (QEMU 7.2, package qemu-system-common).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// The running virtiofsd processes by socket.
static RUNNING: Running<VirtiofsShare> = Running::new();

/// virtiofsd's arguments for `share` with its listening socket at file descriptor `fd`:
/// chroot into the shared directory (its namespace sandbox would mount a /proc, which a
/// container's masked /proc does not allow), KubeVirt's `cache=auto`, and the open-file
/// limit left as it is (raising the hard limit needs a privilege of the node).
pub fn args(share: &VirtiofsShare, fd: i32) -> Vec<String> {
    vec![
        format!("--fd={fd}"),
        "-o".into(),
        format!("source={}", share.source),
        "-o".into(),
        "sandbox=chroot".into(),
        "-o".into(),
        "cache=auto".into(),
        "--rlimit-nofile=0".into(),
    ]
}

/// Starts virtiofsd for each share (blocking); one already running with the same share is
/// kept (a repeated define).
pub fn start(shares: &[VirtiofsShare]) -> Result<()> {
    for share in shares {
        let mut all = RUNNING.lock();
        if runs_as(&mut all, &share.socket, share) {
            continue;
        }
        let fail = |m: String| Error::Virtiofs(format!("volume {:?}: {m}", share.volume));
        if !Path::new(&share.source).is_dir() {
            return Err(fail(format!(
                "{} is not a directory the launcher sees",
                share.source
            )));
        }
        let socket = Path::new(&share.socket);
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| fail(format!("binding {}: {e}", socket.display())))?;
        let fd = listener.as_raw_fd();
        let log = socket.with_extension("log");
        let stderr = std::fs::File::create(&log).map_err(Error::io("creating", &log))?;
        let mut cmd = Command::new(VIRTIOFSD);
        cmd.args(args(share, fd))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let maps = IdMaps::of_this_process();
        // SAFETY: between fork and exec the closure only makes system calls on memory
        // prepared before the fork (no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || {
                // The listening socket stays open across exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                maps.enter()
            });
        }
        let child = cmd.spawn().map_err(|e| {
            fail(format!(
                "starting {VIRTIOFSD}: {e} (Debian's qemu-system-common has it; the launcher \
                 image installs it; a user namespace needs a seccomp profile that allows \
                 unshare)"
            ))
        })?;
        drop(listener);
        tracing::info!(volume = %share.volume, socket = %share.socket, source = %share.source,
            pid = child.id(), "virtiofsd started");
        all.insert(share.socket.clone(), (share.clone(), child));
    }
    Ok(())
}

/// The user and group maps of a user namespace where this process's user and group are
/// root, written by the child itself (allowed for its own ids), and the seccomp filter
/// that turns `setgroups` into a no-op.
struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    filter: Vec<libc::sock_filter>,
}

impl IdMaps {
    fn of_this_process() -> Self {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        IdMaps {
            uid_map: format!("0 {uid} 1").into_bytes(),
            gid_map: format!("0 {gid} 1").into_bytes(),
            filter: setgroups_succeeds(),
        }
    }

    /// Enters a new user namespace and a mount namespace it owns (chroot needs that), as
    /// root there, and installs the filter. Only system calls on memory made before:
    /// callable between fork and exec.
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: unshare has no memory preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        write_proc(c"/proc/self/uid_map", &self.uid_map)?;
        // An unprivileged process must give up setgroups before it maps its group.
        match write_proc(c"/proc/self/setgroups", b"deny") {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            _ => {}
        }
        write_proc(c"/proc/self/gid_map", &self.gid_map)?;
        let prog = libc::sock_fprog {
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with plain values, and a filter program that outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// A seccomp program: `setgroups` returns 0 without effect, every other call is allowed.
fn setgroups_succeeds() -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let nr = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_setgroups as u32,
        },
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Writes `data` to a /proc file with plain system calls (no allocation).
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path; the fd is closed on every path.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_its_source_from_a_chroot_on_the_given_socket() {
        let share = VirtiofsShare {
            volume: "app".into(),
            socket: "/run/x/virtiofs-app.sock".into(),
            source: "/var/run/ferrovirt-private/config-map/1".into(),
        };
        let a = args(&share, 7);
        assert_eq!(a[0], "--fd=7");
        assert!(
            a.windows(2)
                .any(|w| w == ["-o", "source=/var/run/ferrovirt-private/config-map/1"])
        );
        assert!(a.windows(2).any(|w| w == ["-o", "sandbox=chroot"]));
    }
}
