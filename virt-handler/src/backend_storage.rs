//! KubeVirt's backend storage on the node: a VMI with a persistent TPM or a persistent EFI
//! variable store keeps that state on its claim (`persistent-state-for-…`, which
//! virt-controller made and names in `status.volumeStatus`), mounted in the launcher pod at
//! [`BACKEND_STORAGE_DIR_IN_POD`]. The claim holds KubeVirt's sub-paths:
//! - `swtpm/`: swtpm's state (`<firmware uuid>/tpm2/tpm2-00.permall`, libvirt's layout).
//!   The launcher's embedded libvirt keeps swtpm's state under `<its root>/lib/swtpm`; that
//!   is made a symbolic link into the claim as the launcher sees it, and the domain's TPM
//!   has `persistent_state='yes'`, so libvirt never removes it;
//! - `nvram/`: the EFI variables, `<VMI name>_VARS.fd`, copied from OVMF's template once
//!   and then kept (the domain's `<nvram>` names it, [`crate::firmware::nvram`]).
//!
//! virt-handler reaches the claim where the launcher pod mounts it (through the launcher's
//! `/proc/<pid>/root`, resolved in that tree), so any storage the node mounts serves; a
//! launcher outside a pod (virt-handler's own tests) uses the claim's hostPath or local
//! volume. The claim's content is the VM owner's (any pod of the namespace may mount the
//! claim): every entry virt-handler makes or gives there is reached from the claim's
//! directory one name at a time, never through a symbolic link, so nothing outside the
//! claim is made or given away.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crds::{BACKEND_STORAGE_VOLUME, VirtualMachineInstance};
use ferrovirt_node_contract::paths::{
    BACKEND_STORAGE_DIR_IN_POD, BACKEND_STORAGE_NVRAM, BACKEND_STORAGE_SWTPM, LIBVIRT_DIR,
};
use kube::ResourceExt;

use crate::volumes::launcher_root::fd_path;
use crate::volumes::{give, launcher_owner};
use crate::{Error, Result};

/// Where the embedded libvirt keeps swtpm's state, under its root (libvirt 9.0's
/// `swtpmStorageDir` of `qemu:///embed`).
const LIBVIRT_SWTPM_DIR: &str = "lib/swtpm";

/// The claim `vmi` keeps its state on: None when it needs none; an error naming the
/// volume when virt-controller has not named one (the launcher pod then lacks it too).
pub fn claim(vmi: &VirtualMachineInstance) -> Result<Option<&str>> {
    if !vmi.spec.needs_backend_storage() {
        return Ok(None);
    }
    vmi.status
        .as_ref()
        .and_then(|s| s.backend_storage_claim())
        .map(Some)
        .ok_or_else(|| {
            Error::volume(
                BACKEND_STORAGE_VOLUME,
                "status.volumeStatus names no backend-storage claim (virt-controller names it before it makes the launcher pod)",
            )
        })
}

/// The error of a claim whose directory cannot be found or used (`why`).
pub fn unusable(claim: &str, why: String) -> Error {
    Error::volume(BACKEND_STORAGE_VOLUME, format!("claim {claim:?}: {why}"))
}

/// Opens the claim's directory where the launcher pod mounts it, resolved inside the
/// launcher's tree `launcher_root` (its `/proc/<pid>/root`); `None` when the launcher has
/// no such mount (a launcher outside a pod).
pub fn open_in_launcher(launcher_root: &Path) -> Option<File> {
    crate::volumes::launcher_root::open_in_launcher(launcher_root, BACKEND_STORAGE_DIR_IN_POD)
        .ok()
        .filter(|d| d.metadata().is_ok_and(|m| m.is_dir()))
}

/// Opens the claim's directory at `dir` on this host (its hostPath or local volume, for a
/// launcher outside a pod), not through a link at its end.
pub fn open_on_host(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
}

/// Prepares the claim, opened as `claim_dir` ([`open_in_launcher`], [`open_on_host`]; named
/// `claim` in errors), for the VMI whose per-VMI directory is `host_dir`: the sub-paths it
/// uses, owned by the launcher's user; the EFI variables copied from `vars_template` unless
/// the claim has them; the link of the launcher's swtpm state into the claim. Blocking
/// (small file operations).
pub fn prepare(
    vmi: &VirtualMachineInstance,
    claim: &str,
    claim_dir: &File,
    host_dir: &Path,
    vars_template: Option<&str>,
) -> Result<()> {
    let owner = launcher_owner(host_dir)?;
    let refuse = |why: String| unusable(claim, why);
    // The claim is the VM's own: the launcher's user reaches into it (as QEMU opens a
    // claim's disk image as that user).
    give_file(claim_dir, owner).map_err(|e| refuse(format!("giving its directory: {e}")))?;
    if crds::Tpm::persistent(vmi.spec.domain.devices.tpm.as_ref()) {
        // libvirt keeps swtpm's state per domain UUID: without the firmware UUID the VM's
        // name gives (virt-api's mutator sets it, as KubeVirt's), each VMI would find none.
        let uuid = vmi
            .spec
            .domain
            .firmware
            .as_ref()
            .and_then(|f| f.uuid.as_ref());
        if uuid.is_none() {
            return Err(Error::unsupported(
                "spec.domain.firmware.uuid",
                "a persistent TPM keeps its state per firmware UUID, and this VMI has none \
                 (virt-api's mutating webhook gives a VM's instances the UUID of its name): \
                 register virt-api's webhooks",
            ));
        }
        subdir(claim_dir, BACKEND_STORAGE_SWTPM, owner).map_err(refuse)?;
        let lib = host_dir.join(LIBVIRT_DIR).join("lib");
        if !lib.exists() {
            mkdir_for(&host_dir.join(LIBVIRT_DIR), owner)?;
            mkdir_for(&lib, owner)?;
        }
        let target = Path::new(BACKEND_STORAGE_DIR_IN_POD).join(BACKEND_STORAGE_SWTPM);
        link(
            &host_dir.join(LIBVIRT_DIR).join(LIBVIRT_SWTPM_DIR),
            &target,
            owner,
        )?;
        tracing::info!(claim, "swtpm's state is on the backend-storage claim");
    }
    if vmi.spec.persistent_efi()
        && let Some(template) = vars_template
    {
        let nvram = subdir(claim_dir, BACKEND_STORAGE_NVRAM, owner).map_err(refuse)?;
        let name = format!("{}_VARS.fd", vmi.name_any());
        let file = fd_path(&nvram).join(&name);
        let shown = format!("{BACKEND_STORAGE_NVRAM}/{name}");
        match std::fs::symlink_metadata(&file) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(refuse(format!("{shown} is not a regular file"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tmp = fd_path(&nvram).join(format!("{name}.tmp"));
                copy_new(Path::new(template), &tmp)
                    .map_err(|e| refuse(format!("copying EFI variables to {shown}.tmp: {e}")))?;
                std::fs::rename(&tmp, &file)
                    .map_err(|e| refuse(format!("renaming {shown}.tmp: {e}")))?;
                tracing::info!(claim, nvram = %shown, "EFI variables created on the backend-storage claim");
            }
            Err(e) => return Err(refuse(format!("inspecting {shown}: {e}"))),
        }
        give(&file, owner)?;
    }
    Ok(())
}

/// The directory `name` in `dir`, made if missing and given to `owner`; refused when it is
/// a link or not a directory (the claim's content may be anyone's in its namespace).
fn subdir(dir: &File, name: &str, owner: (u32, u32)) -> std::result::Result<File, String> {
    let at = fd_path(dir).join(name);
    match std::fs::create_dir(&at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making {name}: {e}")),
    }
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&at)
        .map_err(|e| {
            let link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_symlink());
            match e.raw_os_error() {
                _ if link => format!("{name} is a symbolic link; it must be a directory"),
                Some(libc::ENOTDIR) => format!("{name} is not a directory"),
                _ => format!("opening {name}: {e}"),
            }
        })?;
    give_file(&d, owner).map_err(|e| format!("giving {name}: {e}"))?;
    Ok(d)
}

/// Gives the opened file to `owner` unless it has it already.
fn give_file(f: &File, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    let m = f.metadata()?;
    if (m.uid(), m.gid()) != (uid, gid) {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Copies `from` to the new file `to` (a leftover one removed first; never through a link).
fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    std::io::copy(&mut File::open(from)?, &mut out)?;
    out.sync_all()
}

fn mkdir_for(dir: &Path, owner: (u32, u32)) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    give(dir, owner)
}

/// Makes `at` a symbolic link to `target`: an empty directory there (libvirt's own, made
/// before) is replaced; a link already pointing there is kept.
fn link(at: &Path, target: &Path, owner: (u32, u32)) -> Result<()> {
    match std::fs::read_link(at) {
        Ok(t) if t == target => return Ok(()),
        Ok(_) => std::fs::remove_file(at).map_err(Error::io("removing", at))?,
        Err(_) if at.is_dir() => std::fs::remove_dir(at)
            .map_err(Error::io("replacing (it holds swtpm state of its own)", at))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, at).map_err(Error::io("linking", at))?;
    give(at, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(spec: serde_json::Value, claim: Option<&str>) -> VirtualMachineInstance {
        let mut v = serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm1", "namespace": "ns"}, "spec": spec});
        if let Some(c) = claim {
            v["status"] = serde_json::json!({"volumeStatus": [{"name": BACKEND_STORAGE_VOLUME,
                "persistentVolumeClaimInfo": {"claimName": c}}]});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_claim_is_the_one_status_names() {
        let tpm = serde_json::json!({"domain": {"devices": {"tpm": {"persistent": true}}}});
        assert_eq!(claim(&vmi(tpm.clone(), Some("c1"))).unwrap(), Some("c1"));
        let e = claim(&vmi(tpm, None)).unwrap_err().to_string();
        assert!(e.contains(BACKEND_STORAGE_VOLUME), "{e}");
        let plain = serde_json::json!({"domain": {"devices": {"tpm": {}}}});
        assert_eq!(claim(&vmi(plain, None)).unwrap(), None);
    }

    #[test]
    fn prepare_links_swtpm_and_keeps_the_efi_variables() {
        let root = tempfile::tempdir().unwrap();
        let (host_dir, claim_dir) = (root.path().join("vmi"), root.path().join("claim"));
        std::fs::create_dir_all(host_dir.join("libvirt/lib/swtpm")).unwrap();
        std::fs::create_dir_all(&claim_dir).unwrap();
        let claim = open_on_host(&claim_dir).unwrap();
        let template = root.path().join("VARS.fd");
        std::fs::write(&template, b"template").unwrap();
        let spec = serde_json::json!({"domain": {"devices": {"tpm": {"persistent": true}},
            "firmware": {"bootloader": {"efi": {"persistent": true}}}}});
        let t = Some(template.to_str().unwrap());
        // Without a firmware UUID the TPM's state could not be found again: refused.
        let e = prepare(&vmi(spec.clone(), Some("c1")), "c1", &claim, &host_dir, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.domain.firmware.uuid"), "{e}");
        let mut v = vmi(spec, Some("c1"));
        v.spec.domain.firmware.as_mut().unwrap().uuid =
            Some("913202c6-7f3b-5cb4-ba74-282986f246de".into());
        prepare(&v, "c1", &claim, &host_dir, t).unwrap();
        assert_eq!(
            std::fs::read_link(host_dir.join("libvirt/lib/swtpm")).unwrap(),
            Path::new("/var/run/ferrovirt-private/backend-storage/swtpm")
        );
        assert!(claim_dir.join("swtpm").is_dir());
        let vars = claim_dir.join("nvram/vm1_VARS.fd");
        assert_eq!(std::fs::read(&vars).unwrap(), b"template");
        // The guest's writes are kept: a second start copies nothing over them.
        std::fs::write(&vars, b"written by the guest").unwrap();
        prepare(&v, "c1", &claim, &host_dir, t).unwrap();
        assert_eq!(std::fs::read(&vars).unwrap(), b"written by the guest");
    }

    /// The claim's content is anyone's in the VM's namespace: links planted in it never
    /// lead virt-handler (root) to make or give anything outside the claim.
    #[test]
    fn links_in_the_claim_are_refused_and_nothing_outside_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let (host_dir, claim_dir) = (root.path().join("vmi"), root.path().join("claim"));
        let outside = root.path().join("node-files");
        for d in [&host_dir, &claim_dir, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        let template = root.path().join("VARS.fd");
        std::fs::write(&template, b"template").unwrap();
        let efi = serde_json::json!({"domain": {"devices": {},
            "firmware": {"bootloader": {"efi": {"persistent": true}}}}});
        let t = Some(template.to_str().unwrap());
        // nvram/ a link to a directory of the node's.
        std::os::unix::fs::symlink(&outside, claim_dir.join("nvram")).unwrap();
        let claim = open_on_host(&claim_dir).unwrap();
        let e = prepare(&vmi(efi.clone(), Some("c1")), "c1", &claim, &host_dir, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nvram is a symbolic link"), "{e}");
        assert!(
            e.contains(BACKEND_STORAGE_VOLUME) && e.contains("c1"),
            "{e}"
        );
        // The variables' file a link to a node file.
        std::fs::remove_file(claim_dir.join("nvram")).unwrap();
        std::fs::create_dir(claim_dir.join("nvram")).unwrap();
        let node_file = outside.join("passwd");
        std::fs::write(&node_file, b"root:x:0:0").unwrap();
        std::os::unix::fs::symlink(&node_file, claim_dir.join("nvram/vm1_VARS.fd")).unwrap();
        let e = prepare(&vmi(efi.clone(), Some("c1")), "c1", &claim, &host_dir, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nvram/vm1_VARS.fd is not a regular file"), "{e}");
        // A leftover temporary file that is a link: removed, not written through.
        std::fs::remove_file(claim_dir.join("nvram/vm1_VARS.fd")).unwrap();
        std::os::unix::fs::symlink(&node_file, claim_dir.join("nvram/vm1_VARS.fd.tmp")).unwrap();
        prepare(&vmi(efi, Some("c1")), "c1", &claim, &host_dir, t).unwrap();
        assert_eq!(std::fs::read(&node_file).unwrap(), b"root:x:0:0");
        assert_eq!(
            std::fs::read(claim_dir.join("nvram/vm1_VARS.fd")).unwrap(),
            b"template"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }
}
