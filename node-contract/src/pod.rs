//! The launcher pod's metadata and defaults (docs/contracts.md, "The launcher pod"), and
//! the field managers the components write with.

/// Label on every launcher pod: `kubevirt.io=virt-launcher`.
pub const APP_LABEL: &str = "kubevirt.io";
pub const APP_LABEL_VALUE: &str = "virt-launcher";
/// The UID of the VMI a launcher pod runs.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";
/// The guest's hostname as KubeVirt derives it (the VMI's name up to its first dot, or
/// `spec.hostname`).
pub const VM_NAME_LABEL: &str = "vm.kubevirt.io/name";
/// The libvirt domain's name.
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// The node label of a scheduled VMI; virt-handler selects its VMIs by it.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// KubeVirt's device-plugin resource for /dev/kvm; devnode advertises it.
pub const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// The binary the launcher pod's container runs.
pub const LAUNCHER_COMMAND: &str = "virt-launcher";

/// The VMI's grace period when it sets none (KubeVirt's default), in seconds: the API's
/// `crds::rules::DEFAULT_GRACE_PERIOD_SECONDS`, kept here so the launcher needs no API types
/// (a test keeps the two equal).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The field manager of virt-controller's writes, and its Events' reporting controller.
pub const VIRT_CONTROLLER_FIELD_MANAGER: &str = "virt-controller";
/// The field manager of virt-handler's writes (VMI status, node labels), and its Events'
/// reporting controller.
pub const VIRT_HANDLER_FIELD_MANAGER: &str = "virt-handler";

/// The label selector of launcher pods, `kubevirt.io=virt-launcher`.
pub fn launcher_selector() -> String {
    format!("{APP_LABEL}={APP_LABEL_VALUE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_grace_period_is_the_apis() {
        assert_eq!(
            DEFAULT_GRACE_SECONDS,
            crds::rules::DEFAULT_GRACE_PERIOD_SECONDS
        );
    }

    #[test]
    fn selector_is_the_app_label() {
        assert_eq!(launcher_selector(), "kubevirt.io=virt-launcher");
    }
}
