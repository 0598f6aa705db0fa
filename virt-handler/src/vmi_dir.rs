//! The per-VMI directories under `<run-dir>/vmis/` on the host: the layout is the node
//! contract's [`RunDir`]; here is what virt-handler does with it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub use ferrovirt_node_contract::paths::RunDir;
use ferrovirt_node_contract::paths::{LAUNCHER_GID, LAUNCHER_UID};

use crate::{Error, Result};

/// The uids that have a directory.
pub fn uids(run_dir: &RunDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run_dir.vmis()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Removes a VMI's directory. Only call it when the launcher has exited.
pub fn remove(run_dir: &RunDir, uid: &str) -> Result<()> {
    let dir = run_dir.vmi(uid).dir;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", dir)(e)),
    }
}

/// Whether a launcher answers on `socket` (connect only; the launcher accepts at once).
pub async fn launcher_alive(socket: &Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}

/// Hands the run dir to the launchers' user (docs/security.md): `<run-dir>/vmis` is
/// root's with mode 0700, each `<run-dir>/vmis/<uid>` and `<run-dir>/capabilities` belong
/// to [`LAUNCHER_UID`] with mode 0700. The node (kubelet or devnode) creates a VMI's
/// directory root's when it mounts it into the launcher pod, which then waits until it
/// may write it; so this runs once now and again whenever something appears in
/// `<run-dir>/vmis` (inotify, with a sweep every few seconds besides). Blocking: run it on
/// a thread of its own.
pub fn hand_over_forever(run_dir: RunDir) {
    let watch = Watch::new(&run_dir.vmis());
    if let Err(e) = &watch {
        tracing::warn!(error = %e, dir = %run_dir.vmis().display(), "no inotify on the VMI directories; sweeping them every second");
    }
    loop {
        hand_over(&run_dir);
        match &watch {
            Ok(w) => w.wait(std::time::Duration::from_secs(5)),
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

/// One pass of [`hand_over_forever`]; failures are logged, never fatal.
pub fn hand_over(run_dir: &RunDir) {
    let vmis = run_dir.vmis();
    if let Err(e) = ensure(&vmis, 0, 0, 0o700) {
        tracing::warn!(dir = %vmis.display(), error = %e, "securing the VMI directories");
    }
    let caps = run_dir.capabilities();
    if let Err(e) =
        std::fs::create_dir_all(&caps).and_then(|()| ensure_tree(&caps, LAUNCHER_UID, LAUNCHER_GID))
    {
        tracing::warn!(dir = %caps.display(), error = %e, "handing the capabilities cache to the launchers");
    }
    let Ok(entries) = std::fs::read_dir(&vmis) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        match ensure(&path, LAUNCHER_UID, LAUNCHER_GID, 0o700) {
            Ok(true) => {
                tracing::info!(dir = %path.display(), uid = LAUNCHER_UID, "handed the VMI directory to the launcher's user")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "handing the VMI directory to the launcher's user")
            }
        }
    }
}

/// Gives the directory `path` (never a link, never a file) this owner and mode; true
/// when something changed.
fn ensure(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<bool> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.is_dir() {
        return Ok(false);
    }
    let mut changed = false;
    if (m.uid(), m.gid()) != (uid, gid) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        changed = true;
    }
    if m.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        changed = true;
    }
    Ok(changed)
}

/// The capabilities cache and what root launchers of an older release left in it.
fn ensure_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    if !ensure(dir, uid, gid, 0o700)? {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// An inotify watch on one directory for entries created or moved into it.
struct Watch {
    fd: std::os::fd::OwnedFd,
}

impl Watch {
    fn new(dir: &Path) -> std::io::Result<Watch> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(dir)?;
        // SAFETY: plain syscall; the fd is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw was just returned by inotify_init1.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO;
        // SAFETY: valid fd and C string.
        if unsafe { libc::inotify_add_watch(raw, c.as_ptr(), mask) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Watch { fd })
    }

    /// Returns after an event (drained) or `timeout`.
    fn wait(&self, timeout: std::time::Duration) {
        use std::os::fd::AsRawFd;
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as libc::c_int) };
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer of its length; non-blocking.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_new_vmi_directories_and_the_capabilities_cache_to_the_launchers_user() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let dir = run.vmi("u1").dir;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(run.capabilities()).unwrap();
        std::fs::write(run.capabilities().join("x.xml"), "").unwrap();
        std::fs::write(run.vmis().join("stray-file"), "").unwrap();
        hand_over(&run);
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (107, 107, 0o700));
        let m = std::fs::metadata(run.vmis()).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
        let m = std::fs::metadata(run.capabilities().join("x.xml")).unwrap();
        assert_eq!(m.uid(), 107);
        let m = std::fs::metadata(run.vmis().join("stray-file")).unwrap();
        assert_eq!(m.uid(), 0, "files are left alone");
    }
}
