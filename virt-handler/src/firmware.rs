//! The guest's firmware files: Debian's OVMF builds for EFI guests and the per-VMI copy of
//! the EFI variables. The domain conversion points at them; volume preparation copies the
//! variables template.

use std::path::{Path, PathBuf};

use crds::{DomainSpec, VirtualMachineInstanceSpec};
use ferrovirt_node_contract::paths::{BACKEND_STORAGE_DIR_IN_POD, BACKEND_STORAGE_NVRAM};

/// Debian's OVMF (package `ovmf`), 4 MiB flash layout.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Secure Boot capable code (needs SMM) with Microsoft's keys enrolled in the variables.
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The per-VMI copy of the EFI variables, relative to the per-VMI directory.
pub const EFI_VARS_FILE: &str = "efi-vars.fd";

/// The EFI variables' file as the launcher sees it: with `efi.persistent` on the
/// backend-storage claim (KubeVirt's `<VMI name>_VARS.fd`, [`nvram_file`]),
/// else the per-VMI copy in `vmi_dir`.
pub fn nvram(spec: &VirtualMachineInstanceSpec, vmi_dir: &Path, vmi_name: &str) -> PathBuf {
    if spec.persistent_efi() {
        nvram_file(Path::new(BACKEND_STORAGE_DIR_IN_POD), vmi_name)
    } else {
        vmi_dir.join(EFI_VARS_FILE)
    }
}

/// The EFI variables' file in a backend-storage claim (KubeVirt's name):
/// `nvram/<VMI name>_VARS.fd` under `claim_dir`.
pub fn nvram_file(claim_dir: &Path, vmi_name: &str) -> PathBuf {
    claim_dir
        .join(BACKEND_STORAGE_NVRAM)
        .join(format!("{vmi_name}_VARS.fd"))
}

/// Which OVMF files an EFI guest uses: (code, variables template), or `None` for BIOS.
pub fn efi_firmware(domain: &DomainSpec) -> Option<(&'static str, &'static str)> {
    let efi = domain
        .firmware
        .as_ref()?
        .bootloader
        .as_ref()?
        .efi
        .as_ref()?;
    // KubeVirt's default for secureBoot is true.
    if efi.secure_boot.unwrap_or(true) {
        Some((OVMF_CODE_SECURE, OVMF_VARS_SECURE))
    } else {
        Some((OVMF_CODE, OVMF_VARS))
    }
}
