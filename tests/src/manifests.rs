//! Manifests the end-to-end tests and the node benchmark apply.

/// The image-store reference of the test guest's kernel and initrd (hack/build-guest-images.sh).
pub const GUEST_KERNEL_IMAGE: &str = "ferrovirt/guest-kernel:latest";
/// The kernel command line the test guest boots fastest with.
pub const GUEST_KERNEL_ARGS: &str = "console=ttyS0 quiet cryptomgr.notests";
/// The guest memory of the test VMs.
pub const GUEST_MEMORY_MIB: u32 = 128;

/// A VM that boots the test guest's kernel directly (the fastest boot). With `user_data`,
/// it also gets a cloud-init NoCloud disk with that user data.
pub fn kernel_boot_vm(name: &str, run_strategy: &str, user_data: Option<&str>) -> String {
    let (devices, volumes) = match user_data {
        None => ("        devices: {}\n".to_string(), String::new()),
        Some(data) => (
            "        devices:\n          disks:\n          - name: cloudinit\n            disk:\n              bus: virtio\n"
                .to_string(),
            format!(
                "      volumes:\n      - name: cloudinit\n        cloudInitNoCloud:\n          userData: |\n{}",
                data.lines().map(|l| format!("            {l}\n")).collect::<String>()
            ),
        ),
    };
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: {run_strategy}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 30
      domain:
        memory:
          guest: {GUEST_MEMORY_MIB}Mi
        firmware:
          kernelBoot:
            kernelArgs: {GUEST_KERNEL_ARGS}
            container:
              image: {GUEST_KERNEL_IMAGE}
              kernelPath: /boot/vmlinux
              initrdPath: /boot/initrd.img
{devices}{volumes}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_boot_vm_parses_with_and_without_cloud_init() {
        let plain: crds::VirtualMachine =
            serde_yaml::from_str(&kernel_boot_vm("a", "Always", None)).unwrap();
        let spec = &plain.spec.template.spec;
        assert!(spec.domain.devices.disks.is_empty() && spec.volumes.is_empty());
        let boot = spec
            .domain
            .firmware
            .as_ref()
            .unwrap()
            .kernel_boot
            .as_ref()
            .unwrap();
        assert_eq!(boot.container.as_ref().unwrap().image, GUEST_KERNEL_IMAGE);

        let with: crds::VirtualMachine = serde_yaml::from_str(&kernel_boot_vm(
            "b",
            "RerunOnFailure",
            Some("#!/bin/sh\necho hi"),
        ))
        .unwrap();
        let spec = &with.spec.template.spec;
        assert_eq!(spec.domain.devices.disks[0].name, "cloudinit");
        let data = spec.volumes[0]
            .cloud_init_no_cloud
            .as_ref()
            .unwrap()
            .user_data
            .as_deref();
        assert_eq!(data, Some("#!/bin/sh\necho hi\n"));
    }
}
