//! Caps the serial console's copy, `<vmi-dir>/serial0.log`, which QEMU itself writes (the
//! domain's `<serial><log file=... append='on'/>`: QEMU opens it with `O_APPEND`, there
//! is no virtlogd in the pod). When it is over the limit it is copied to `serial0.log.1`
//! (replacing the previous copy) and truncated in place: QEMU keeps its descriptor, and
//! `O_APPEND` makes its next write land at the new end. What the guest prints between the
//! copy and the truncation (microseconds) is lost; at most twice the limit stays on disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the size is checked.
const EVERY: Duration = Duration::from_secs(1);

/// The rotated copy of `log`: `<log>.1`.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Checks `log` every second for the launcher's lifetime.
pub async fn keep_capped(log: PathBuf, max_bytes: u64) {
    loop {
        tokio::time::sleep(EVERY).await;
        let path = log.clone();
        match tokio::task::spawn_blocking(move || rotate_if_over(&path, max_bytes)).await {
            Ok(Ok(true)) => tracing::info!(log = %log.display(), max_bytes, "serial log rotated"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(log = %log.display(), error = %e, "rotating the serial log")
            }
            Err(e) => tracing::warn!(error = %e, "rotating the serial log"),
        }
    }
}

/// Rotates `log` when it holds more than `max_bytes`; `Ok(true)` when it did.
pub fn rotate_if_over(log: &Path, max_bytes: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    let target = rotated(log);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::copy(log, &tmp)?;
    std::fs::rename(&tmp, &target)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A writer holding an O_APPEND descriptor (as QEMU does) keeps writing at the end.
    #[test]
    fn rotates_over_the_limit_under_an_appending_writer() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial0.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_if_over(&log, 100).unwrap());
        writer.write_all(b"b").unwrap();
        assert!(rotate_if_over(&log, 100).unwrap());
        assert_eq!(std::fs::read(rotated(&log)).unwrap().len(), 101);
        writer.write_all(b"after").unwrap();
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"after",
            "no hole, no old bytes"
        );
        assert!(!rotate_if_over(&dir.path().join("absent.log"), 1).unwrap());
    }
}
