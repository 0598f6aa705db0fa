//! The cluster configuration virt-handler reads, and the KVM-or-emulation decision.
//!
//! KubeVirt's `spec.configuration.developerConfiguration.useEmulation` lives here in the
//! ConfigMap `kubevirt-config` of the handler's namespace, key `useEmulation` (the older
//! KubeVirt spelling `debug.useEmulation` is accepted too). Without the ConfigMap or the
//! key, the `--use-emulation` flag decides (default false).

use std::collections::BTreeMap;

use crate::kvm::KvmStatus;
use crate::{Error, Result};

pub const CONFIG_MAP: &str = "kubevirt-config";
const KEYS: [&str; 2] = ["useEmulation", "debug.useEmulation"];

/// How a guest's CPU is virtualized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtualization {
    Kvm,
    /// Software emulation (QEMU's TCG).
    Emulation,
}

impl Virtualization {
    /// The value of VMI `status.virtualization`.
    pub fn status_value(self) -> &'static str {
        match self {
            Virtualization::Kvm => "KVM",
            Virtualization::Emulation => "Emulation",
        }
    }

    /// The libvirt domain type.
    pub fn domain_type(self) -> &'static str {
        match self {
            Virtualization::Kvm => "kvm",
            Virtualization::Emulation => "qemu",
        }
    }
}

/// `useEmulation` from the ConfigMap's data, or `default` when it does not say.
pub fn use_emulation(data: Option<&BTreeMap<String, String>>, default: bool) -> bool {
    data.and_then(|d| KEYS.iter().find_map(|k| d.get(*k)))
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(default)
}

/// KVM when it works; emulation only when allowed; otherwise the VMI fails.
pub fn decide(kvm: &KvmStatus, allow_emulation: bool) -> Result<Virtualization> {
    match kvm {
        KvmStatus::Usable => Ok(Virtualization::Kvm),
        KvmStatus::Unusable(_) if allow_emulation => Ok(Virtualization::Emulation),
        KvmStatus::Unusable(why) => Err(Error::KvmUnavailable(why.clone())),
    }
}

/// The node labels for a probe result and configuration.
pub fn node_labels(kvm: &KvmStatus, allow_emulation: bool) -> BTreeMap<String, String> {
    let virtualization = match decide(kvm, allow_emulation) {
        Ok(Virtualization::Kvm) => "kvm",
        Ok(Virtualization::Emulation) => "emulation",
        Err(_) => "none",
    };
    BTreeMap::from([
        ("kubevirt.io/schedulable".to_owned(), "true".to_owned()),
        ("ferrovirt.io/kvm".to_owned(), kvm.usable().to_string()),
        (
            "ferrovirt.io/virtualization".to_owned(),
            virtualization.to_owned(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_overrides_the_flag() {
        let on = BTreeMap::from([("useEmulation".to_owned(), "true".to_owned())]);
        let off = BTreeMap::from([("useEmulation".to_owned(), "false".to_owned())]);
        let old = BTreeMap::from([("debug.useEmulation".to_owned(), "TRUE".to_owned())]);
        assert!(use_emulation(Some(&on), false));
        assert!(!use_emulation(Some(&off), true));
        assert!(use_emulation(Some(&old), false));
        assert!(use_emulation(None, true));
        assert!(!use_emulation(Some(&BTreeMap::new()), false));
    }

    #[test]
    fn emulation_only_when_allowed() {
        let broken = KvmStatus::Unusable("hangs".into());
        assert_eq!(
            decide(&KvmStatus::Usable, false).unwrap(),
            Virtualization::Kvm
        );
        assert_eq!(decide(&broken, true).unwrap(), Virtualization::Emulation);
        let err = decide(&broken, false).unwrap_err();
        assert_eq!(err.reason(), "KVMUnavailable");
        assert!(err.to_string().contains("useEmulation"), "{err}");
        assert_eq!(
            node_labels(&broken, false)["ferrovirt.io/virtualization"],
            "none"
        );
        assert_eq!(
            node_labels(&broken, true)["ferrovirt.io/virtualization"],
            "emulation"
        );
        assert_eq!(
            node_labels(&KvmStatus::Usable, false)["ferrovirt.io/kvm"],
            "true"
        );
    }
}
