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

/// A VMI (JSON) that boots the test guest's kernel, with `volumes` (KubeVirt's JSON) each
/// attached as a virtio disk, and a 5 s grace period.
pub fn kernel_boot_vmi(name: &str, volumes: serde_json::Value) -> serde_json::Value {
    let disks: Vec<serde_json::Value> = volumes
        .as_array()
        .expect("volumes are a list")
        .iter()
        .map(|v| serde_json::json!({"name": v["name"], "disk": {"bus": "virtio"}}))
        .collect();
    serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "domain": {
                "memory": {"guest": format!("{GUEST_MEMORY_MIB}Mi")},
                "firmware": {"kernelBoot": {
                    "kernelArgs": GUEST_KERNEL_ARGS,
                    "container": {
                        "image": GUEST_KERNEL_IMAGE,
                        "kernelPath": "/boot/vmlinux",
                        "initrdPath": "/boot/initrd.img"
                    }
                }},
                "devices": {"disks": disks}
            },
            "volumes": volumes
        }
    })
}

/// A local PersistentVolume of `path` (a directory, or with `block` a block device) on
/// `node`, of `capacity`, in a `WaitForFirstConsumer` class of its own, and the claim
/// `claim` of `request` in that class: the scheduler binds them when it places the
/// claim's first pod. The class and the volume are both named `class` (cluster-scoped:
/// make it unique, e.g. after the namespace). A `List` of the class, the volume and the
/// claim, in that order.
pub fn local_claim(
    class: &str,
    claim: &str,
    path: &str,
    node: &str,
    (capacity, request): (&str, &str),
    block: bool,
) -> serde_json::Value {
    let mode = if block { "Block" } else { "Filesystem" };
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": class},
         "provisioner": "kubernetes.io/no-provisioner",
         "volumeBindingMode": "WaitForFirstConsumer"},
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": {"name": class},
         "spec": {"capacity": {"storage": capacity}, "accessModes": ["ReadWriteOnce"],
                  "volumeMode": mode,
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                  "local": {"path": path},
                  "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                      {"key": "kubernetes.io/hostname", "operator": "In",
                       "values": [node]}]}]}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": claim},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                  "volumeMode": mode,
                  "resources": {"requests": {"storage": request}}}}
    ]})
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

    #[test]
    fn kernel_boot_vmi_attaches_each_volume_as_a_disk() {
        let vmi: crds::VirtualMachineInstance = serde_json::from_value(kernel_boot_vmi(
            "v",
            serde_json::json!([{"name": "ci", "cloudInitNoCloud": {"userData": "x"}}]),
        ))
        .unwrap();
        assert_eq!(vmi.spec.domain.devices.disks[0].name, "ci");
        assert_eq!(vmi.spec.volumes[0].name, "ci");
        assert_eq!(vmi.spec.termination_grace_period_seconds, Some(5));
    }
}
