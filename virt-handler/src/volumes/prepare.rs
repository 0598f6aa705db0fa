//! Host-side volume and firmware preparation in the per-VMI directory. Blocking: run it
//! in `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crds::DomainSpec;

use ferrovirt_node_contract::pod::{KERNEL_BOOT_CONTAINER, volume_container};

use super::containerdisk::{self, ImageRoots};
use super::hostdisk::FileId;
use super::{Planned, Prep, config, nocloud_files, read_secrets};
use crate::firmware::{EFI_VARS_FILE, efi_firmware};
use crate::{Error, Result};

/// Prepares every planned volume under `host_dir` (the per-VMI directory on the host);
/// containerDisk overlays are backed by the image's file as the launcher opens it, through
/// `images` (the pod's disk containers, [`containerdisk::locate_all`]); cloud-init
/// Secrets are read where the launcher pod mounts them, through `launcher_root` (the
/// launcher's `/proc/<pid>/root`, when virt-handler sees its pid).
/// Disks that already exist (a handler restart half way) are kept: they may hold data.
/// Returns the host disks as checked: volume index and the file's identity, which QEMU's
/// open file must match.
pub fn prepare(
    plans: &[Planned],
    host_dir: &Path,
    images: &ImageRoots,
    launcher_root: Option<&Path>,
    uid: &str,
    hostname: &str,
) -> Result<Vec<(usize, FileId)>> {
    let mut host_disks = Vec::new();
    let dir = host_dir.join(super::DIR);
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let owner = launcher_owner(host_dir)?;
    give(&dir, owner)?;
    for p in plans {
        let _span = tracing::info_span!("volume", name = %p.name).entered();
        match &p.prep {
            Prep::ContainerDisk {
                image,
                path,
                file,
                index,
            } => {
                let target = host_dir.join(file);
                if target.exists() {
                    give(&target, owner)?;
                    continue;
                }
                let container = volume_container(&p.name);
                let root = images.get(&container).ok_or_else(|| Error::ImageNotFound {
                    image: image.clone(),
                    container,
                    message: "not found".into(),
                })?;
                let field = match path {
                    Some(_) => format!("spec.volumes[{index}].containerDisk.path"),
                    None => format!("spec.volumes[{index}].containerDisk.image"),
                };
                let in_image = containerdisk::disk_path(root, path.as_deref(), &field)?;
                let (host, backing) = root.file(&in_image);
                let (format, size) = image_info(&host)?;
                // The backing path is the launcher's (`/proc/<pid in the pod>/root/...`),
                // which means nothing here: `-u` keeps qemu-img from opening it.
                let tmp = tmp_path(&target);
                run(Command::new("qemu-img")
                    .args(["create", "-q", "-u", "-f", "qcow2", "-F", &format, "-b"])
                    .arg(&backing)
                    .arg(&tmp)
                    .arg(size.to_string()))?;
                give(&tmp, owner)?;
                rename(&tmp, &target)?;
                tracing::info!(%image, backing = %backing.display(), overlay = %target.display(), "containerDisk overlay created");
            }
            Prep::EmptyDisk { capacity, file } => {
                let target = host_dir.join(file);
                if target.exists() {
                    give(&target, owner)?;
                    continue;
                }
                let tmp = tmp_path(&target);
                run(Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(&tmp)
                    .arg(capacity.to_string()))?;
                give(&tmp, owner)?;
                rename(&tmp, &target)?;
                tracing::info!(capacity, "emptyDisk created");
            }
            Prep::CloudInit {
                source,
                file,
                index,
            } => {
                let target = host_dir.join(file);
                let secrets = read_secrets(&p.name, *index, source, launcher_root)?;
                let files = nocloud_files(&p.name, source, &secrets, uid, hostname)?;
                make_iso(&target, "cidata", &files)?;
                give(&target, owner)?;
                tracing::info!(iso = %target.display(), "cloud-init NoCloud disk created");
            }
            Prep::Config {
                kind,
                label,
                file,
                index,
            } => {
                let target = host_dir.join(file);
                let files = config::read_files(&p.name, *index, *kind, launcher_root)?;
                make_iso(&target, label, &files)?;
                give(&target, owner)?;
                tracing::info!(iso = %target.display(), label, kind = kind.field(), "config volume disk created");
            }
            Prep::HostDisk {
                create,
                prefix,
                index,
            } => {
                let field = format!("spec.volumes[{index}].hostDisk.path");
                let made = (*create, "a hostDisk of type Disk is not made");
                let id =
                    super::hostdisk::open_confined(&field, &p.name, prefix, &p.path, made, owner)?;
                host_disks.push((*index, id));
            }
            Prep::DownwardMetrics { file } => {
                let target = host_dir.join(file);
                ferrovirt_node_contract::downward_metrics::create_disk(&target)
                    .map_err(Error::io("creating", &target))?;
                give(&target, owner)?;
                tracing::info!(disk = %target.display(), "downward metrics disk created");
            }
            Prep::Pvc {
                claim,
                index,
                in_pod,
                create,
            } => {
                let dir = p.path.parent().unwrap_or(Path::new("/"));
                let made = (*in_pod, *create);
                super::claim::open(*index, &p.name, claim, dir, made, launcher_root, owner)?;
            }
            Prep::PvcDevice {
                claim,
                index,
                in_pod,
            } => {
                super::claim::open_device(
                    *index,
                    &p.name,
                    claim,
                    &p.path,
                    *in_pod,
                    launcher_root,
                    owner,
                )?;
            }
        }
    }
    Ok(host_disks)
}

/// Firmware files: the per-VMI copy of the EFI variables, and the kernel-boot files,
/// which must be in the kernel-boot container's image.
pub fn prepare_firmware(domain: &DomainSpec, host_dir: &Path, images: &ImageRoots) -> Result<()> {
    if let Some((code, vars)) = efi_firmware(domain) {
        for f in [code, vars] {
            if !Path::new(f).is_file() {
                return Err(Error::Command {
                    program: "OVMF".into(),
                    message: format!("{f} is missing: install the ovmf package (hack/setup.sh)"),
                });
            }
        }
        let target = host_dir.join(EFI_VARS_FILE);
        if !target.exists() {
            std::fs::copy(vars, &target).map_err(Error::io("copying EFI variables to", &target))?;
        }
        give(&target, launcher_owner(host_dir)?)?;
    }
    let container = domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
        .and_then(|k| k.container.as_ref());
    if let Some(c) = container {
        let root = images
            .get(KERNEL_BOOT_CONTAINER)
            .ok_or_else(|| Error::ImageNotFound {
                image: c.image.clone(),
                container: KERNEL_BOOT_CONTAINER.into(),
                message: "not found".into(),
            })?;
        for (field, path) in [
            ("kernelPath", &c.kernel_path),
            ("initrdPath", &c.initrd_path),
        ] {
            let Some(path) = path else { continue };
            let field = format!("spec.domain.firmware.kernelBoot.container.{field}");
            containerdisk::check_path(path, &field)?;
            if !containerdisk::plain_file(&root.host, path) {
                return Err(Error::NotInImage {
                    field,
                    message: format!("{path} is not a file in image {:?}", c.image),
                });
            }
        }
        if let Some(kernel) = &c.kernel_path
            && crds::Tpm::present(domain.devices.tpm.as_ref())
            && is_elf(&root.host.join(kernel.trim_start_matches('/')))
        {
            return Err(Error::unsupported(
                "spec.domain.devices.tpm",
                format!(
                    "QEMU gives no TPM to an ELF kernel booted directly (PVH): the BIOS's ACPI tables are overwritten, so the guest sees neither the TPM nor ACPI; kernelPath {kernel} is one: boot a bzImage (vmlinuz) instead"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `path` is an ELF file (an unpacked `vmlinux`, which QEMU boots through PVH).
fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

/// The owner of the per-VMI directory: the launcher's user (uid 107) once virt-handler
/// handed it over (`vmi_dir::hand_over`), root for a launcher running as root. QEMU runs
/// as that user, so every file prepared for it is given to that user.
pub(crate) fn launcher_owner(host_dir: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(host_dir).map_err(Error::io("inspecting", host_dir))?;
    Ok((m.uid(), m.gid()))
}

/// Gives `path` (not followed if a link) to `owner` unless it has it already.
pub(crate) fn give(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).map_err(Error::io("inspecting", path))?;
    if (m.uid(), m.gid()) != (uid, gid) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(Error::io("giving to the launcher's user", path))?;
    }
    Ok(())
}

fn tmp_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    target.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(Error::io("renaming", from))
}

fn run(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| Error::Command {
        program: program.clone(),
        message: format!("{e}: install it (hack/setup.sh)"),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            program,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The format and virtual size `qemu-img` sees in an image's disk file.
fn image_info(path: &Path) -> Result<(String, u64)> {
    let json = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path))?;
    let info: serde_json::Value = serde_json::from_str(&json)?;
    let missing = |what: &str| Error::Command {
        program: "qemu-img".into(),
        message: format!("no {what} for {}", path.display()),
    };
    let format = info["format"].as_str().ok_or_else(|| missing("format"))?;
    // A backing file of the image's own would be opened by QEMU outside the image.
    if info.get("backing-filename").is_some() {
        return Err(Error::Command {
            program: "qemu-img".into(),
            message: format!("{} has a backing file of its own; refused", path.display()),
        });
    }
    let size = info["virtual-size"]
        .as_u64()
        .ok_or_else(|| missing("virtual size"))?;
    Ok((format.to_owned(), size))
}

/// Writes an ISO 9660 image (Joliet and Rock Ridge names) with the volume id `label`
/// holding `files`, each at its relative path.
fn make_iso(target: &Path, label: &str, files: &[(impl AsRef<Path>, Vec<u8>)]) -> Result<()> {
    let staging = tmp_path(&target.with_extension("d"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(Error::io("creating", &staging))?;
    for (name, data) in files {
        let name = name.as_ref();
        if name.is_absolute()
            || name
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::Command {
                program: "genisoimage".into(),
                message: format!("{} is not a relative path", name.display()),
            });
        }
        let f = staging.join(name);
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        std::fs::write(&f, data).map_err(Error::io("writing", &f))?;
    }
    let tmp = tmp_path(target);
    let args = |cmd: &mut Command| {
        cmd.args(["-quiet", "-output"])
            .arg(&tmp)
            .args(["-volid", label, "-joliet", "-rock"])
            .arg(&staging);
    };
    let mut geniso = Command::new("genisoimage");
    args(&mut geniso);
    let result = match run(&mut geniso) {
        Err(Error::Command { message, .. }) if message.contains("install it") => {
            let mut xorriso = Command::new("xorriso");
            xorriso.args(["-as", "mkisofs"]);
            args(&mut xorriso);
            run(&mut xorriso).map_err(|e| match e {
                Error::Command { message, .. } if message.contains("install it") => {
                    Error::Command {
                        program: "genisoimage/xorriso".into(),
                        message: "neither is installed: install genisoimage (hack/setup.sh)".into(),
                    }
                }
                e => e,
            })
        }
        other => other,
    };
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    rename(&tmp, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::containerdisk::ImageRoot;
    use crate::volumes::{Format, HostDiskPolicy, plan};
    use std::collections::BTreeMap;

    /// An image's tree at `dir` (as a disk container's `/proc/<pid>/root`), seen by the
    /// launcher at `/proc/<pid>/root`.
    fn roots(container: &str, image: &str, dir: &Path, pid: u32) -> ImageRoots {
        ImageRoots::from([(
            container.to_owned(),
            ImageRoot {
                image: image.into(),
                container: container.into(),
                host: dir.to_owned(),
                launcher: PathBuf::from(format!("/proc/{pid}/root")),
            },
        )])
    }

    /// Real qemu-img and genisoimage, as the node uses them.
    #[test]
    fn prepares_overlay_empty_disk_iso_and_host_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("images/disk");
        let store = roots("volumeroot", "example/disk:1", &image, 42);
        let disk_dir = image.join("disk");
        std::fs::create_dir_all(&disk_dir).unwrap();
        let base = disk_dir.join("base.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("16M"))
        .unwrap();
        let before = std::fs::read(&base).unwrap();

        let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {}},
            "volumes": [
                {"name": "root", "containerDisk": {"image": "example/disk:1"}},
                {"name": "scratch", "emptyDisk": {"capacity": "64Mi"}},
                {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\n", "networkData": "version: 2\n"}},
                {"name": "host", "hostDisk": {"path": tmp.path().join("h/d.img").to_str().unwrap(), "type": "DiskOrCreate", "capacity": "8Mi"}}
            ]
        })).unwrap();
        let vmi_dir = tmp.path().join("vmi");
        let hd = HostDiskPolicy::allow(&[tmp.path().to_str().unwrap()]);
        let plans = plan(&spec, &vmi_dir, &BTreeMap::new(), &hd).unwrap();
        // Handed to the launcher's user, as virt-handler does when the node makes it.
        std::fs::create_dir_all(&vmi_dir).unwrap();
        std::os::unix::fs::chown(&vmi_dir, Some(107), Some(107)).unwrap();
        prepare(&plans, &vmi_dir, &store, None, "uid-1", "vm1").unwrap();
        // Twice is fine (handler restart).
        prepare(&plans, &vmi_dir, &store, None, "uid-1", "vm1").unwrap();
        // QEMU runs as the launcher's user: every file prepared for it is that user's.
        for f in [
            vmi_dir.join("volumes"),
            vmi_dir.join("volumes/root.qcow2"),
            vmi_dir.join("volumes/scratch.qcow2"),
            tmp.path().join("h/d.img"),
        ] {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!((m.uid(), m.gid()), (107, 107), "{}", f.display());
        }

        let info = |p: &Path| -> serde_json::Value {
            serde_json::from_str(
                &run(Command::new("qemu-img")
                    .args(["info", "--output=json", "-U"])
                    .arg(p))
                .unwrap(),
            )
            .unwrap()
        };
        let overlay = info(&vmi_dir.join("volumes/root.qcow2"));
        assert_eq!(overlay["format"], "qcow2");
        assert_eq!(
            overlay["backing-filename"], "/proc/42/root/disk/base.qcow2",
            "the image's disk as the launcher opens it"
        );
        assert_eq!(overlay["backing-filename-format"], "qcow2");
        assert_eq!(overlay["virtual-size"], 16 << 20);
        assert_eq!(
            info(&vmi_dir.join("volumes/scratch.qcow2"))["virtual-size"],
            64 << 20
        );
        let host = std::fs::metadata(tmp.path().join("h/d.img")).unwrap();
        assert_eq!(host.len(), 8 << 20);
        assert_eq!(
            std::fs::read(&base).unwrap(),
            before,
            "the image store file is never written"
        );

        let iso = std::fs::read(vmi_dir.join("volumes/ci.iso")).unwrap();
        // ISO 9660 primary volume descriptor at 32 KiB: volume id at offset 40.
        assert_eq!(&iso[0x8001..0x8006], b"CD001");
        assert_eq!(
            std::str::from_utf8(&iso[0x8028..0x8028 + 6]).unwrap(),
            "cidata"
        );
        let text = String::from_utf8_lossy(&iso);
        assert!(text.contains("instance-id: uid-1") && text.contains("local-hostname: vm1"));
        assert!(text.contains("version: 2"));
        assert_eq!(plans[2].format, Format::Raw);
    }

    /// A configMap and a downwardAPI volume as the launcher pod has them become ISOs
    /// with KubeVirt's label (or volumeLabel) and a file per key.
    #[test]
    fn config_volumes_become_labelled_isos_of_their_files() {
        use ferrovirt_node_contract::paths::ConfigVolume;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("launcher-root");
        for (dir, files) in [
            (
                ConfigVolume::ConfigMap.dir_in_pod(0),
                &[
                    ("greeting", &b"hello from a ConfigMap\n"[..]),
                    ("app.conf", b"x=1\n"),
                ][..],
            ),
            (
                ConfigVolume::DownwardApi.dir_in_pod(1),
                &[("labels", &b"app=\"web\"\n"[..])][..],
            ),
        ] {
            let dir = root.join(dir.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            for (name, data) in files {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
        let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {}},
            "volumes": [
                {"name": "cm", "configMap": {"name": "app"}},
                {"name": "dapi", "downwardAPI": {"volumeLabel": "podinfo", "fields": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]
        }))
        .unwrap();
        let vmi_dir = tmp.path().join("vmi");
        std::fs::create_dir_all(&vmi_dir).unwrap();
        let plans = plan(
            &spec,
            &vmi_dir,
            &BTreeMap::new(),
            &HostDiskPolicy::default(),
        )
        .unwrap();
        prepare(&plans, &vmi_dir, &ImageRoots::new(), Some(&root), "u", "h").unwrap();
        for (iso, label, name, data) in [
            (
                "cm.iso",
                "cfgdata",
                "greeting",
                &b"hello from a ConfigMap\n"[..],
            ),
            ("cm.iso", "cfgdata", "app.conf", b"x=1\n"),
            ("dapi.iso", "podinfo", "labels", b"app=\"web\"\n"),
        ] {
            let iso = vmi_dir.join("volumes").join(iso);
            let bytes = std::fs::read(&iso).unwrap();
            assert_eq!(&bytes[0x8001..0x8006], b"CD001");
            assert_eq!(
                std::str::from_utf8(&bytes[0x8028..0x8028 + label.len()]).unwrap(),
                label
            );
            assert_eq!(props::extract(&iso, name), data);
        }
        // Without the launcher's files: the field named.
        let err = prepare(&plans, &vmi_dir, &ImageRoots::new(), None, "u", "h")
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.volumes[0].configMap"), "{err}");
    }

    #[test]
    fn missing_host_disk_and_pvc_file_fail_naming_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {}},
            "volumes": [{"name": "host", "hostDisk": {"path": tmp.path().join("d.img").to_str().unwrap(), "type": "Disk"}}]
        })).unwrap();
        let hd = HostDiskPolicy::allow(&[tmp.path().to_str().unwrap()]);
        let plans = plan(&spec, tmp.path(), &BTreeMap::new(), &hd).unwrap();
        let err = prepare(&plans, tmp.path(), &ImageRoots::new(), None, "u", "h").unwrap_err();
        assert!(
            err.to_string().contains("volume \"host\"")
                && err.to_string().contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_kernel_file_is_named_apart_from_a_missing_image() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("kernel");
        let store = roots("kernel-boot", "ferrovirt/guest-kernel:latest", &image, 7);
        let boot = image.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz"), b"k").unwrap();
        let domain = |image: &str, kernel: &str| -> DomainSpec {
            serde_json::from_value(
                serde_json::json!({"devices": {}, "firmware": {"kernelBoot": {
                "container": {"image": image, "kernelPath": kernel}}}}),
            )
            .unwrap()
        };
        prepare_firmware(
            &domain("ferrovirt/guest-kernel:latest", "/boot/vmlinuz"),
            tmp.path(),
            &store,
        )
        .unwrap();
        let err = prepare_firmware(
            &domain("ferrovirt/guest-kernel:latest", "/boot/does-not-exist"),
            tmp.path(),
            &store,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.reason(), "VolumePreparationFailed");
        assert!(
            msg.starts_with("spec.domain.firmware.kernelBoot.container.kernelPath: /boot/does-not-exist is not a file in image \"ferrovirt/guest-kernel:latest\"")
                && !msg.contains("build-guest-images"),
            "{msg}"
        );
        let err = prepare_firmware(
            &domain("example/none:1", "/boot/vmlinuz"),
            tmp.path(),
            &ImageRoots::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("image \"example/none:1\"") && err.contains("kernel-boot"),
            "{err}"
        );
        std::os::unix::fs::symlink("/etc/hostname", boot.join("link")).unwrap();
        let err = prepare_firmware(
            &domain("ferrovirt/guest-kernel:latest", "/boot/link"),
            tmp.path(),
            &store,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/boot/link is not a file"),
            "a link leaves the image: {err}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        pub(super) fn extract(iso: &Path, name: &str) -> Vec<u8> {
            let out = Command::new("isoinfo")
                .args(["-R", "-i"])
                .arg(iso)
                .args(["-x", &format!("/{name}")])
                .output()
                .expect("isoinfo (package genisoimage; run hack/setup.sh)");
            assert!(
                out.status.success(),
                "isoinfo: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        proptest! {
            // A real genisoimage per case: few cases, large inputs.
            #![proptest_config(ProptestConfig::with_cases(12))]

            /// Whatever the bytes (binary, unicode, up to 256 KiB), the guest reads back
            /// exactly what the spec gave, under the names cloud-init looks for.
            #[test]
            fn the_cidata_iso_holds_the_exact_bytes(
                user in proptest::collection::vec(any::<u8>(), 0..262_144),
                network in "\\PC{0,2000}",
            ) {
                let tmp = tempfile::tempdir().unwrap();
                let iso = tmp.path().join("ci.iso");
                let files = vec![
                    ("user-data", user.clone()),
                    ("meta-data", b"instance-id: u\n".to_vec()),
                    ("network-config", network.clone().into_bytes()),
                ];
                make_iso(&iso, "cidata", &files).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(extract(&iso, "user-data"), user);
                prop_assert_eq!(extract(&iso, "network-config"), network.into_bytes());
                prop_assert_eq!(extract(&iso, "meta-data"), b"instance-id: u\n".to_vec());
            }
        }
    }
}
