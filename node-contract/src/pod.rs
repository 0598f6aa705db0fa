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
/// KubeVirt's stable selector label of a VMI's launcher pod (`virtctl expose` and
/// `ferroctl expose` select by it); its value is [`vmi_id`] of the VMI's name.
pub const VMI_ID_LABEL: &str = "vmi.kubevirt.io/id";

/// The value of [`VMI_ID_LABEL`], as KubeVirt computes it: the VMI's name when it fits a
/// label value (63 characters), else its first 54 characters, `-` and the first 8 hex
/// digits of the name's SHA-1.
pub fn vmi_id(vmi_name: &str) -> String {
    const MAX: usize = 63;
    const HASH: usize = 8;
    if vmi_name.len() <= MAX {
        return vmi_name.to_owned();
    }
    let hash = sha1_smol::Sha1::from(vmi_name).digest().to_string();
    format!("{}-{}", &vmi_name[..MAX - HASH - 1], &hash[..HASH])
}

/// The launcher pod's container that runs virt-launcher (kubelet probes it; its logs are
/// the launcher's).
pub const COMPUTE_CONTAINER: &str = "compute";

/// The libvirt domain's name.
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// The node label of a scheduled VMI; virt-handler selects its VMIs by it.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// On a Node: "true" once its virt-handler runs (it has probed KVM, its device plugins and
/// status writer are up), as KubeVirt's virt-handler sets it.
pub const NODE_SCHEDULABLE_LABEL: &str = "kubevirt.io/schedulable";
/// On a Node: "true" where kubelet runs the static CPU manager policy (so a Guaranteed pod
/// gets CPUs of its own) and KubeVirt's `CPUManager` feature gate is on, as KubeVirt's
/// virt-handler sets it; a VMI with dedicated CPUs goes only there.
pub const CPU_MANAGER_LABEL: &str = "kubevirt.io/cpumanager";
/// KubeVirt's older name of [`CPU_MANAGER_LABEL`], which its handler also sets.
pub const CPU_MANAGER_LABEL_DEPRECATED: &str = "cpumanager";
/// On a Node: "true" where realtime threads are not throttled (`kernel.sched_rt_runtime_us`
/// is -1), as KubeVirt's virt-handler sets it; a VMI with `cpu.realtime` goes only there.
pub const REALTIME_LABEL: &str = "kubevirt.io/realtime";
/// KubeVirt's device-plugin resource for /dev/kvm; devnode advertises it.
pub const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// KubeVirt's device-plugin resource for /dev/net/tun: QEMU opens the tap virt-handler
/// made in the pod's network namespace through it (docs/networking.md); devnode
/// advertises it too.
pub const TUN_RESOURCE: &str = "devices.kubevirt.io/tun";
/// The binary the launcher pod's container runs.
pub const LAUNCHER_COMMAND: &str = "virt-launcher";
/// `virt-launcher probe ...`: the command of the compute container's probes for a VMI's
/// `exec` and `guestAgentPing` probes (KubeVirt's virt-probe).
pub const PROBE_SUBCOMMAND: &str = "probe";

/// The init container that copies [`CONTAINER_DISK_COMMAND`] from the launcher image into
/// the pod's [`CONTAINER_DISK_BIN_DIR_IN_POD`] emptyDir (KubeVirt's name): containerDisk
/// images are `FROM scratch` and bring no program of their own.
pub const CONTAINER_DISK_BINARY_CONTAINER: &str = "container-disk-binary";
/// The container of `kernelBoot.container`'s image.
pub const KERNEL_BOOT_CONTAINER: &str = "kernel-boot";
/// The container of a containerDisk volume is `volume<volume name>` (KubeVirt's name).
pub const VOLUME_CONTAINER_PREFIX: &str = "volume";
/// The small static program the disk containers run (deploy/images/container-disk.c): it
/// listens on the unix socket it is given, so virt-handler finds its process
/// (SO_PEERCRED) and reads the image through `/proc/<pid>/root`. `--copy-to <file>` copies
/// the program itself (what the init container runs); `--socket <path>` serves.
pub const CONTAINER_DISK_COMMAND: &str = "container-disk";
/// Where the launcher image holds [`CONTAINER_DISK_COMMAND`].
pub const CONTAINER_DISK_IN_LAUNCHER_IMAGE: &str = "/usr/local/bin/container-disk";
/// The emptyDir, shared by the init container and the disk containers, that holds the copy.
pub const CONTAINER_DISK_BIN_DIR_IN_POD: &str = "/var/run/ferrovirt/container-disk-binary";

/// The name of the container that serves containerDisk volume `volume`.
pub fn volume_container(volume: &str) -> String {
    format!("{VOLUME_CONTAINER_PREFIX}{volume}")
}

/// The VMI's grace period when it sets none (KubeVirt's default), in seconds: the API's
/// `crds::rules::DEFAULT_GRACE_PERIOD_SECONDS`, kept here so the launcher needs no API types
/// (a test keeps the two equal).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The field manager of virt-controller's writes, and its Events' reporting controller.
pub const VIRT_CONTROLLER_FIELD_MANAGER: &str = "virt-controller";
/// The field manager of virt-handler's writes (VMI status, node labels), and its Events'
/// reporting controller.
pub const VIRT_HANDLER_FIELD_MANAGER: &str = "virt-handler";
/// The field manager of virt-handler's address annotation on its Node (a server-side apply
/// beside the node labels', so each keeps its own fields).
pub const VIRT_HANDLER_ADDRESS_FIELD_MANAGER: &str = "virt-handler-address";

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
    fn container_names_are_kubevirts() {
        assert_eq!(volume_container("containerdisk"), "volumecontainerdisk");
        assert_eq!(KERNEL_BOOT_CONTAINER, "kernel-boot");
    }

    #[test]
    fn vmi_ids_are_kubevirts() {
        assert_eq!(vmi_id("vm1"), "vm1");
        let long = "a".repeat(70);
        // KubeVirt's CalculateVirtualMachineInstanceID (hash checked with Python's hashlib).
        assert_eq!(vmi_id(&long), format!("{}-ed6c69d9", "a".repeat(54)));
        assert_eq!(vmi_id(&long).len(), 63);
    }

    #[test]
    fn selector_is_the_app_label() {
        assert_eq!(launcher_selector(), "kubevirt.io=virt-launcher");
    }
}
