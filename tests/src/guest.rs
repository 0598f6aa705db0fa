//! The test guest of `hack/build-guest-images.sh` (docs/guests.md), as every test and
//! benchmark finds it: its ready line and its kernel-boot files in the cache.

use std::path::PathBuf;

pub use crate::assets::cache_dir;

/// The line the test guest prints on its serial console once it is up.
pub const READY_LINE: &str = "FERROVIRT GUEST READY";

/// The guest's kernel-boot files (`<cache>/guests/`).
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Its kernel command line (console on ttyS0, the guest's own switches).
    pub cmdline: String,
}

/// The kernel-boot guest, or a failure that says how to build it.
pub fn kernel_boot() -> KernelBoot {
    let dir = cache_dir().join("guests");
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    assert!(
        kernel.is_file() && initrd.is_file(),
        "the test guest's vmlinuz/initrd.img are missing in {}: run hack/build-guest-images.sh \
         (or hack/setup.sh)",
        dir.display()
    );
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run hack/build-guest-images.sh",
                dir.join("cmdline").display()
            )
        })
        .trim()
        .to_owned();
    KernelBoot {
        kernel,
        initrd,
        cmdline,
    }
}
