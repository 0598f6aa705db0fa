//! libvirt probes QEMU's capabilities (it runs QEMU and asks it over QMP) the first time
//! an embedded root needs them: about 4 s per QEMU binary here, on every VMI's first
//! start, since each VMI has a fresh root. An optional node-wide directory shares the
//! probe results between launchers. Copying is safe: libvirt checks each cached file
//! (QEMU binary, libvirt and kernel versions, ...) and probes again when it is stale.
//!
//! `virt-launcher warm-capabilities` fills that directory before any VMI needs it (the
//! virt-handler DaemonSet's init container runs it, with the launcher's image, so the
//! files describe the binaries the launchers run): then the node's first VM starts as
//! fast as the later ones.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The first argument that selects [`warm`] instead of the launcher.
pub const WARM_SUBCOMMAND: &str = "warm-capabilities";

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "virt-launcher warm-capabilities",
    about = "Probes QEMU's capabilities once into the node's shared cache directory"
)]
pub struct WarmArgs {
    /// The node-wide cache directory the launchers get as --capabilities-cache.
    #[arg(long, env = "VIRT_LAUNCHER_CAPABILITIES_CACHE")]
    pub capabilities_cache: PathBuf,

    #[arg(long, env = "VIRT_LAUNCHER_LOG_FORMAT", value_enum, default_value_t = crate::args::LogFormat::Plain)]
    pub log_format: crate::args::LogFormat,
}

/// Has a libvirt of its own (in a temporary root, seeded from `shared`) probe QEMU, and
/// copies the results into `shared` where it lacks them. Returns how long the probe took:
/// libvirt's own check of a seeded file, about 0.2 s, when `shared` already had it.
pub fn warm(shared: &Path) -> Result<Duration> {
    let root = std::env::temp_dir().join(format!("warm-caps-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(Error::io("creating", &root))?;
    let probed = (|| {
        copy_missing(shared, &dir_in(&root));
        let started = Instant::now();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let hv = crate::hypervisor::Hypervisor::open(&root, tx)?;
        hv.probe_capabilities()?;
        drop(hv);
        let took = started.elapsed();
        copy_missing(&dir_in(&root), shared);
        Ok(took)
    })();
    let _ = std::fs::remove_dir_all(&root);
    probed
}

/// Where the embedded driver keeps its probe results.
pub fn dir_in(libvirt_root: &Path) -> PathBuf {
    libvirt_root.join("cache/qemu/capabilities")
}

/// Copies `*.xml` files from `from` into `to` when `to` lacks them; best effort.
pub fn copy_missing(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    if let Err(e) = std::fs::create_dir_all(to) {
        tracing::warn!(dir = %to.display(), error = %e, "capabilities cache");
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let target = to.join(&name);
        if !name.to_string_lossy().ends_with(".xml") || target.exists() {
            continue;
        }
        // Write aside and rename, so a concurrent launcher never reads half a file.
        let tmp = to.join(format!(
            ".{}.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // Readable by every launcher, whichever user it runs as (libvirt writes 0600; the
        // file describes QEMU, nothing secret).
        let copied = std::fs::copy(entry.path(), &tmp)
            .and_then(|_| std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)))
            .and_then(|_| std::fs::rename(&tmp, &target));
        match copied {
            Ok(()) => tracing::debug!(file = %target.display(), "capabilities cache copied"),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(file = %target.display(), error = %e, "capabilities cache");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copies_only_missing_xml() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("a.xml"), "new").unwrap();
        std::fs::write(from.path().join("b.xml"), "new").unwrap();
        std::fs::write(from.path().join("c.txt"), "x").unwrap();
        std::fs::write(to.path().join("a.xml"), "old").unwrap();
        super::copy_missing(from.path(), to.path());
        let read = |n: &str| std::fs::read_to_string(to.path().join(n)).ok();
        assert_eq!(read("a.xml").as_deref(), Some("old"));
        assert_eq!(read("b.xml").as_deref(), Some("new"));
        assert_eq!(read("c.txt"), None);
    }
}
