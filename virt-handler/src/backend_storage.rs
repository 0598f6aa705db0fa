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
//! The claim is a hostPath or local volume, as every claim Ferrovirt's node uses; its
//! directory here is where virt-handler makes the sub-paths (as the launcher's user).

use std::path::Path;

use crds::{BACKEND_STORAGE_VOLUME, VirtualMachineInstance};
use ferrovirt_node_contract::paths::{
    BACKEND_STORAGE_DIR_IN_POD, BACKEND_STORAGE_SWTPM, LIBVIRT_DIR,
};
use kube::ResourceExt;

use crate::firmware::nvram_file;
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

/// The error of a claim whose directory cannot be found (`why`).
pub fn unusable(claim: &str, why: String) -> Error {
    Error::volume(BACKEND_STORAGE_VOLUME, format!("claim {claim:?}: {why}"))
}

/// Prepares the claim at `claim_dir` (its directory on this host) for the VMI whose
/// per-VMI directory is `host_dir`: the sub-paths it uses, owned by the launcher's user; the
/// EFI variables copied from `vars_template` unless the claim has them; the link of the
/// launcher's swtpm state into the claim. Blocking (small file operations).
pub fn prepare(
    vmi: &VirtualMachineInstance,
    claim_dir: &Path,
    host_dir: &Path,
    vars_template: Option<&str>,
) -> Result<()> {
    let owner = launcher_owner(host_dir)?;
    // The claim is the VM's own: the launcher's user reaches into it (as QEMU opens a
    // claim's disk image as that user).
    give(claim_dir, owner)?;
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
        let state = claim_dir.join(BACKEND_STORAGE_SWTPM);
        mkdir_for(&state, owner)?;
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
        tracing::info!(state = %state.display(), "swtpm's state is on the backend-storage claim");
    }
    if vmi.spec.persistent_efi()
        && let Some(template) = vars_template
    {
        let file = nvram_file(claim_dir, &vmi.name_any());
        mkdir_for(file.parent().unwrap_or(claim_dir), owner)?;
        if !file.exists() {
            let tmp = file.with_extension("fd.tmp");
            std::fs::copy(template, &tmp).map_err(Error::io("copying EFI variables to", &tmp))?;
            std::fs::rename(&tmp, &file).map_err(Error::io("renaming", &tmp))?;
            tracing::info!(nvram = %file.display(), "EFI variables created on the backend-storage claim");
        }
        give(&file, owner)?;
    }
    Ok(())
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
        let template = root.path().join("VARS.fd");
        std::fs::write(&template, b"template").unwrap();
        let spec = serde_json::json!({"domain": {"devices": {"tpm": {"persistent": true}},
            "firmware": {"bootloader": {"efi": {"persistent": true}}}}});
        let t = Some(template.to_str().unwrap());
        // Without a firmware UUID the TPM's state could not be found again: refused.
        let e = prepare(&vmi(spec.clone(), Some("c1")), &claim_dir, &host_dir, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.domain.firmware.uuid"), "{e}");
        let mut v = vmi(spec, Some("c1"));
        v.spec.domain.firmware.as_mut().unwrap().uuid =
            Some("913202c6-7f3b-5cb4-ba74-282986f246de".into());
        prepare(&v, &claim_dir, &host_dir, t).unwrap();
        assert_eq!(
            std::fs::read_link(host_dir.join("libvirt/lib/swtpm")).unwrap(),
            Path::new("/var/run/ferrovirt-private/backend-storage/swtpm")
        );
        assert!(claim_dir.join("swtpm").is_dir());
        let vars = claim_dir.join("nvram/vm1_VARS.fd");
        assert_eq!(std::fs::read(&vars).unwrap(), b"template");
        // The guest's writes are kept: a second start copies nothing over them.
        std::fs::write(&vars, b"written by the guest").unwrap();
        prepare(&v, &claim_dir, &host_dir, t).unwrap();
        assert_eq!(std::fs::read(&vars).unwrap(), b"written by the guest");
    }
}
