//! A persistentVolumeClaim's or dataVolume's disk, as KubeVirt has it:
//! - a filesystem claim holds it as `disk.img`. The launcher pod mounts the claim
//!   (node-contract's `claim_dir_in_pod`), whatever volume is behind it; virt-handler
//!   reaches that directory through the launcher's `/proc/<pid>/root`, resolved inside the
//!   launcher's tree, and opens the image there without following a symbolic link;
//! - a block claim (`volumeMode: Block`) is the disk: the launcher pod has the device
//!   (node-contract's `claim_device_in_pod`), which virt-handler opens the same way,
//!   requires to be a block device and gives to the launcher's user; QEMU opens it by that
//!   path in the launcher's mount namespace. Nothing is made; its size is the device's.
//!
//! A launcher outside a pod (virt-handler's own tests) uses the claim's hostPath or local
//! volume directly: its directory, or for a block claim its device (the administrator's
//! path, links in it resolved once, as kubelet does), which must be a block device.
//!
//! A missing image is made, as KubeVirt's launcher does (it turns such a claim into a
//! `DiskOrCreate` host disk): sparse, the claim's requested size (its capacity when that is
//! smaller or nothing was requested), rounded down to whole MiB; when the filesystem has
//! less room, up to [`TOLERATED_SHORTFALL_PERCENT`] less is tolerated (the image is then
//! the room there is), more is an error naming the claim. A read-only claim's image is
//! never made.

use std::fs::File;
use std::path::{Path, PathBuf};

use ferrovirt_node_contract::paths::CLAIM_DISK_IMAGE;

use super::hostdisk::{FileId, open_confined, open_device_confined};
use super::launcher_root::open_in_root;
use crate::{Error, Result};

/// KubeVirt's default `pvcTolerateLessSpaceUpToPercent`.
pub const TOLERATED_SHORTFALL_PERCENT: u64 = 10;
const MIB: u64 = 1 << 20;

/// A claim volume's directory (or device), as [`super::plan`] needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimDir {
    /// The directory as the launcher (QEMU, virtiofsd) sees it; for a block claim, the
    /// device.
    pub launcher: PathBuf,
    /// It is the launcher pod's mount or device (reached through the launcher's root),
    /// not a path of this host.
    pub in_pod: bool,
    /// The size a missing disk image is made (None: the claim tells none, or is a device).
    pub image_size: Option<u64>,
    /// The claim is in block mode: `launcher` is its device.
    pub block: bool,
}

/// The size KubeVirt gives a claim's disk image: the request when the capacity is larger
/// or unknown, else the capacity; whole MiB.
pub fn image_size(request: Option<u64>, capacity: Option<u64>) -> Option<u64> {
    let size = match (request, capacity) {
        (Some(r), Some(c)) => r.min(c),
        (r, c) => r.or(c)?,
    };
    Some(size / MIB * MIB).filter(|s| *s > 0)
}

/// The image's size on a filesystem with `available` bytes free: `wanted`, or the room
/// there is when that is short by at most [`TOLERATED_SHORTFALL_PERCENT`].
pub fn fit(wanted: u64, available: u64) -> std::result::Result<u64, String> {
    if available >= wanted {
        return Ok(wanted);
    }
    if available.saturating_mul(100) >= wanted * (100 - TOLERATED_SHORTFALL_PERCENT) {
        return Ok(available / MIB * MIB);
    }
    Err(format!(
        "not enough space for the disk image: {wanted} bytes wanted, {available} available \
         (up to {TOLERATED_SHORTFALL_PERCENT}% less is tolerated)"
    ))
}

/// Opens (making it when missing and allowed) the disk image of the claim volume
/// `spec.volumes[index]` named `volume`, whose directory is `dir` (as the launcher sees
/// it), and gives it to the launcher's user.
pub fn open(
    index: usize,
    volume: &str,
    claim: &str,
    dir: &Path,
    (in_pod, create): (bool, Option<u64>),
    launcher_root: Option<&Path>,
    owner: (u32, u32),
) -> Result<FileId> {
    let unusable = |m: String| Error::volume(volume, format!("claim {claim:?}: {m}"));
    // Held open while the image is: the directory as this handler reaches it.
    let (held, here) = reach(dir, in_pod, launcher_root, &unusable)?;
    let image = here.join(CLAIM_DISK_IMAGE);
    let create = match create {
        Some(wanted) if std::fs::symlink_metadata(&image).is_err() => {
            Some(fit(wanted, available(&here)?).map_err(unusable)?)
        }
        _ => None,
    };
    let field = format!("spec.volumes[{index}]");
    let id = open_confined(
        &field,
        volume,
        &here,
        &image,
        (
            create,
            "the claim is read-only or tells no size, so none is made",
        ),
        owner,
    )
    // Name the image as the launcher sees it, not by this handler's descriptor.
    .map_err(|e| as_seen(e, claim, &image, &dir.join(CLAIM_DISK_IMAGE)))?;
    drop(held);
    Ok(id)
}

/// Opens the device of the block-mode claim volume `spec.volumes[index]` named `volume`,
/// at `device` as the launcher sees it (`in_pod`: in the launcher pod, reached through
/// `launcher_root`; else a path of this host), requires a block device, gives it to the
/// launcher's user and tells its size in bytes.
pub fn open_device(
    index: usize,
    volume: &str,
    claim: &str,
    device: &Path,
    in_pod: bool,
    launcher_root: Option<&Path>,
    owner: (u32, u32),
) -> Result<u64> {
    let unusable = |m: String| Error::volume(volume, format!("claim {claim:?}: {m}"));
    let field = format!("spec.volumes[{index}]");
    let (Some(dir), Some(name)) = (device.parent(), device.file_name()) else {
        return Err(unusable(format!("{} names no device", device.display())));
    };
    // Held open while the device is: its directory as this handler reaches it.
    let (held, here) = reach(dir, in_pod, launcher_root, &unusable)?;
    let (_, size) = open_device_confined(&field, volume, &here, &here.join(name), owner)
        .map_err(|e| as_seen(e, claim, &here.join(name), device))?;
    drop(held);
    if size == 0 {
        return Err(unusable(format!("{} is empty (0 bytes)", device.display())));
    }
    tracing::info!(volume, claim, device = %device.display(), size, "block claim device");
    Ok(size)
}

/// The directory `dir` as the launcher sees it, as this handler reaches it: through the
/// launcher's root, resolved inside its tree (`in_pod`; the descriptor returned is held
/// open while the path is used), or as it is on this host.
fn reach(
    dir: &Path,
    in_pod: bool,
    launcher_root: Option<&Path>,
    unusable: &dyn Fn(String) -> Error,
) -> Result<(Option<File>, PathBuf)> {
    if !in_pod {
        return Ok((None, dir.to_path_buf()));
    }
    let root = launcher_root.ok_or_else(|| {
        unusable("the launcher pod's files are out of reach (no launcher process)".into())
    })?;
    let root = File::open(root).map_err(Error::io("opening", root))?;
    let d = open_in_root(&root, &dir.to_string_lossy())
        .map_err(|e| unusable(format!("{} in the launcher pod: {e}", dir.display())))?;
    let here = super::launcher_root::fd_path(&d);
    Ok((Some(d), here))
}

/// `e` naming `seen` (the path as the launcher sees it) where it named `here` (this
/// handler's way to it), and the claim.
fn as_seen(e: Error, claim: &str, here: &Path, seen: &Path) -> Error {
    let fix = |m: String| m.replace(&here.display().to_string(), &seen.display().to_string());
    match e {
        Error::Volume { volume, message } => {
            Error::volume(&volume, format!("claim {claim:?}: {}", fix(message)))
        }
        Error::Unsupported { field, message } => Error::Unsupported {
            field,
            message: format!("claim {claim:?}: {}", fix(message)),
        },
        e => e,
    }
}

/// Free bytes on the filesystem holding `dir`, for an unprivileged user.
fn available(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::io("inspecting", dir)(std::io::Error::from_raw_os_error(libc::EINVAL))
    })?;
    // SAFETY: statvfs is plain data, filled by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io("inspecting", dir)(std::io::Error::last_os_error()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_the_request_or_the_smaller_capacity_in_whole_mib() {
        assert_eq!(image_size(Some(10 * MIB + 5), None), Some(10 * MIB));
        assert_eq!(image_size(Some(10 * MIB), Some(8 * MIB)), Some(8 * MIB));
        assert_eq!(image_size(Some(8 * MIB), Some(10 * MIB)), Some(8 * MIB));
        assert_eq!(image_size(None, Some(3 * MIB)), Some(3 * MIB));
        assert_eq!(image_size(None, None), None);
        assert_eq!(image_size(Some(MIB - 1), None), None);
    }

    #[test]
    fn a_short_filesystem_is_tolerated_up_to_ten_percent() {
        assert_eq!(fit(100 * MIB, 200 * MIB), Ok(100 * MIB));
        assert_eq!(fit(100 * MIB, 95 * MIB), Ok(95 * MIB));
        let e = fit(100 * MIB, 80 * MIB).unwrap_err();
        assert!(e.contains("not enough space"), "{e}");
    }

    #[test]
    fn a_missing_image_is_made_and_a_link_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let me = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
        let dir = tmp.path().join("claim");
        std::fs::create_dir(&dir).unwrap();
        open(0, "data", "c", &dir, (false, Some(2 * MIB)), None, me).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("disk.img")).unwrap().len(),
            2 * MIB
        );
        // Kept as it is once there.
        open(0, "data", "c", &dir, (false, Some(4 * MIB)), None, me).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("disk.img")).unwrap().len(),
            2 * MIB
        );
        // A read-only claim without an image: named, nothing made.
        let ro = tmp.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let e = open(1, "data", "c", &ro, (false, None), None, me)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("claim \"c\"") && e.contains("does not exist"),
            "{e}"
        );
        // An image that is a link to a file elsewhere is refused.
        let linked = tmp.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), linked.join("disk.img")).unwrap();
        let e = open(2, "data", "c", &linked, (false, Some(MIB)), None, me)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    /// A loop device on a sparse file of `size` bytes, detached when dropped.
    struct Loop(String, #[allow(dead_code)] tempfile::NamedTempFile);

    impl Loop {
        fn attach(size: u64) -> Loop {
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(size).unwrap();
            let out = std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(file.path())
                .output()
                .expect("losetup (package mount) to make a loop device");
            assert!(
                out.status.success(),
                "losetup -f --show failed (the test needs root and /dev/loop*): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Loop(
                String::from_utf8(out.stdout).unwrap().trim().to_owned(),
                file,
            )
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }

    #[test]
    fn a_block_claim_is_its_device_in_the_launchers_tree_and_nothing_else() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let me = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
        let dev = Loop::attach(3 * MIB);
        // On this host (a launcher outside a pod): the volume's device.
        let size = open_device(0, "data", "c", Path::new(&dev.0), false, None, me).unwrap();
        assert_eq!(size, 3 * MIB);

        // In a launcher's tree: the device node where the pod has it, given to the
        // launcher's user.
        let root = tempfile::tempdir().unwrap();
        let in_pod = ferrovirt_node_contract::paths::claim_device_in_pod(1);
        let node = root.path().join(in_pod.trim_start_matches('/'));
        std::fs::create_dir_all(node.parent().unwrap()).unwrap();
        let rdev = std::fs::metadata(&dev.0).unwrap().rdev();
        let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; a block device node of the loop device's number.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) },
            0
        );
        let size = open_device(
            1,
            "data",
            "c",
            Path::new(&in_pod),
            true,
            Some(root.path()),
            (107, 107),
        )
        .unwrap();
        assert_eq!(size, 3 * MIB);
        let m = std::fs::metadata(&node).unwrap();
        assert!(m.file_type().is_block_device());
        assert_eq!((m.uid(), m.gid()), (107, 107));

        // Anything else at that path is refused, naming the field: a file, a link to the
        // device, nothing.
        let refused = |what: &dyn Fn(&Path)| {
            let _ = std::fs::remove_file(&node);
            what(&node);
            open_device(
                1,
                "data",
                "c",
                Path::new(&in_pod),
                true,
                Some(root.path()),
                me,
            )
            .unwrap_err()
            .to_string()
        };
        let e = refused(&|n| std::fs::write(n, b"x").unwrap());
        assert!(
            e.starts_with("spec.volumes[1]")
                && e.contains("claim \"c\": /dev/ferrovirt-vmi-disks/1 is not a block device"),
            "{e}"
        );
        let e = refused(&|n| std::os::unix::fs::symlink(&dev.0, n).unwrap());
        assert!(e.contains("symbolic link"), "{e}");
        let e = refused(&|_| {});
        assert!(e.contains("does not exist"), "{e}");
        // A directory (a filesystem claim's mount) is not a device either.
        let e = refused(&|n| std::fs::create_dir(n).unwrap());
        assert!(e.contains("is not a block device"), "{e}");
    }
}
