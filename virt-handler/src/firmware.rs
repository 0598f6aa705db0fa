//! The guest's firmware files: Debian's OVMF builds for EFI guests and the per-VMI copy of
//! the EFI variables. The domain conversion points at them; volume preparation copies the
//! variables template.

use crds::DomainSpec;

/// Debian's OVMF (package `ovmf`), 4 MiB flash layout.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Secure Boot capable code (needs SMM) with Microsoft's keys enrolled in the variables.
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The per-VMI copy of the EFI variables, relative to the per-VMI directory.
pub const EFI_VARS_FILE: &str = "efi-vars.fd";

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
