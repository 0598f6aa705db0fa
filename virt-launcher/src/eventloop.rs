//! libvirt's default event loop on a dedicated thread. The embedded QEMU driver needs it
//! running before the connection is opened: it watches QEMU's monitor socket with it.

use std::sync::OnceLock;

use crate::{Error, Result};

static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers libvirt's default event implementation and runs it forever on a thread
/// named `libvirt-events`. Idempotent.
pub fn start() -> Result<()> {
    STARTED
        .get_or_init(|| -> Result<(), String> {
            silence_default_error_printer();
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(run)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::EventLoop)
}

fn run() {
    let outcome = std::panic::catch_unwind(|| {
        loop {
            if let Err(e) = virt::event::event_run_default_impl() {
                tracing::error!(error = %e, "libvirt event loop iteration failed");
            }
        }
    });
    // Without the event loop nothing notices QEMU exiting: stop the VM and the launcher.
    if outcome.is_err() {
        tracing::error!("libvirt event loop panicked; destroying the domain and exiting");
        crate::guard::emergency_exit(1);
    }
}

/// libvirt prints every error to stderr by default; the launcher reports them itself.
fn silence_default_error_printer() {
    unsafe extern "C" fn ignore(_: *mut std::os::raw::c_void, _: virt::sys::virErrorPtr) {}
    // SAFETY: installs a global no-op handler; libvirt still records the last error.
    unsafe { virt::sys::virSetErrorFunc(std::ptr::null_mut(), Some(ignore)) };
}
