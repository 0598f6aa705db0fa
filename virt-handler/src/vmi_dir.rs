//! The per-VMI directories under `<run-dir>/vmis/` on the host.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn vmis(&self) -> PathBuf {
        self.root.join("vmis")
    }

    /// `<run-dir>/vmis/<uid>` on the host.
    pub fn vmi(&self, uid: &str) -> PathBuf {
        self.vmis().join(uid)
    }

    pub fn socket(&self, uid: &str) -> PathBuf {
        self.vmi(uid).join("launcher.sock")
    }

    /// The uids that have a directory.
    pub fn uids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.vmis()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes a VMI's directory. Only call it when the launcher has exited.
    pub fn remove(&self, uid: &str) -> Result<()> {
        let dir = self.vmi(uid);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", dir)(e)),
        }
    }
}

/// Whether a launcher answers on `socket` (connect only; the launcher accepts at once).
pub async fn launcher_alive(socket: &Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}
