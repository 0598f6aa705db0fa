//! The per-VMI directories under `<run-dir>/vmis/` on the host: the layout is the node
//! contract's [`RunDir`]; here is what virt-handler does with it.

use std::path::Path;

pub use ferrovirt_node_contract::paths::RunDir;

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
