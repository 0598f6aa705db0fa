//! The helper processes the launcher starts before the domain, each on a socket QEMU
//! connects to: passt for the passt binding's interfaces, virtiofsd for filesystems.
//! A repeated define keeps a helper that still runs with the same configuration.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Mutex, MutexGuard};

/// Running helpers by socket, each with the configuration it was started with.
pub struct Running<T>(Mutex<BTreeMap<String, (T, Child)>>);

impl<T: PartialEq> Running<T> {
    pub const fn new() -> Self {
        Running(Mutex::new(BTreeMap::new()))
    }

    /// The helpers, locked while one is started.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (T, Child)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the helper on `socket` in `all` runs with `config` (then it is kept).
pub fn runs_as<T: PartialEq>(
    all: &mut BTreeMap<String, (T, Child)>,
    socket: &str,
    config: &T,
) -> bool {
    all.get_mut(socket)
        .is_some_and(|(same, child)| same == config && matches!(child.try_wait(), Ok(None)))
}
