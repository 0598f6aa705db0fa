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
/// shares the results in `shared`. Returns how long the probe took: libvirt's own check
/// of a seeded file, about 0.2 s, when `shared` already had it.
pub fn warm(shared: &Path) -> Result<Duration> {
    let root = std::env::temp_dir().join(format!("warm-caps-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(Error::io("creating", &root))?;
    let probed = (|| {
        seed(shared, &root);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let hv = crate::hypervisor::Hypervisor::open(&root, tx)?;
        probe_and_share(&hv, &root, Some(shared))
    })();
    let _ = std::fs::remove_dir_all(&root);
    probed
}

/// Gives the embedded libvirt at `libvirt_root` the node's shared probe results, before
/// it opens; best effort.
pub fn seed(shared: &Path, libvirt_root: &Path) {
    copy_changed(shared, &dir_in(libvirt_root));
}

/// Has `hv` (whose root is `libvirt_root`) probe QEMU now rather than in the first define,
/// then shares what it wrote in `shared`: a file libvirt found stale and probed again
/// replaces the shared copy, so a QEMU upgraded in place is probed once per node, not once
/// per VM. Blocks; returns how long the probe took.
pub(crate) fn probe_and_share(
    hv: &crate::hypervisor::Hypervisor,
    libvirt_root: &Path,
    shared: Option<&Path>,
) -> Result<Duration> {
    let started = Instant::now();
    hv.probe_capabilities()?;
    let took = started.elapsed();
    if let Some(shared) = shared {
        copy_changed(&dir_in(libvirt_root), shared);
    }
    Ok(took)
}

/// Where the embedded driver keeps its probe results.
fn dir_in(libvirt_root: &Path) -> PathBuf {
    libvirt_root.join("cache/qemu/capabilities")
}

/// Copies the `*.xml` files of `from` into `to` where `to` lacks them or holds other
/// contents; best effort.
fn copy_changed(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    if let Err(e) = std::fs::create_dir_all(to) {
        tracing::warn!(dir = %to.display(), error = %e, "capabilities cache");
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(".xml") {
            continue;
        }
        let target = to.join(&name);
        // The files are a few hundred KiB: comparing costs less than a needless probe.
        if let (Ok(new), Ok(old)) = (std::fs::read(entry.path()), std::fs::read(&target))
            && new == old
        {
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_new_and_changed_xml_only() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("stale.xml"), "probed again").unwrap();
        std::fs::write(from.path().join("new.xml"), "new").unwrap();
        std::fs::write(from.path().join("same.xml"), "same").unwrap();
        std::fs::write(from.path().join("c.txt"), "x").unwrap();
        std::fs::write(to.path().join("stale.xml"), "old").unwrap();
        std::fs::write(to.path().join("same.xml"), "same").unwrap();
        std::fs::set_permissions(
            to.path().join("same.xml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        super::copy_changed(from.path(), to.path());
        let read = |n: &str| std::fs::read_to_string(to.path().join(n)).ok();
        assert_eq!(read("stale.xml").as_deref(), Some("probed again"));
        assert_eq!(read("new.xml").as_deref(), Some("new"));
        assert_eq!(read("c.txt"), None);
        let mode = |n: &str| {
            std::fs::metadata(to.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("new.xml"), 0o644);
        // An unchanged file is not written again.
        assert_eq!(mode("same.xml"), 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(to.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
