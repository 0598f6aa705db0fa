//! The launcher pod's disk containers (docs/contracts.md, "The launcher pod"): one
//! container per containerDisk volume (`volume<name>`) and one for `kernelBoot.container`
//! (`kernel-boot`), each running the image it names, so the node pulls the image as it
//! pulls any container's. They run `container-disk`, copied from the launcher image by the
//! init container `container-disk-binary` into an emptyDir, since these images are `FROM
//! scratch`; it listens on `<vmi-dir>/container-disks/<container>.sock`, where virt-handler
//! finds the container's process and reads the image through `/proc/<pid>/root`.

use std::collections::BTreeMap;

use crds::{PullPolicy, VirtualMachineInstance};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use ferrovirt_node_contract::paths::{CONTAINER_DISKS_DIR, VMI_DIR_IN_POD};
use ferrovirt_node_contract::pod::{
    CONTAINER_DISK_BIN_DIR_IN_POD, CONTAINER_DISK_BINARY_CONTAINER, CONTAINER_DISK_COMMAND,
    KERNEL_BOOT_CONTAINER, volume_container,
};

use crate::{Error, Result};

/// The emptyDir holding the copy of `container-disk`.
pub const BINARY_VOLUME: &str = "container-disk-binary";
/// The longest container name Kubernetes accepts (a DNS label).
const CONTAINER_NAME_MAX: usize = 63;

/// The disk containers, the init container that gives them their program, and the
/// emptyDir between them; all empty when the VMI has no containerDisk and no kernel-boot
/// container.
pub struct Disks {
    pub init: Vec<Container>,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

/// `vmi_dir_volume` is the name of the pod's volume of the per-VMI directory;
/// `guaranteed`: the pod must be of the Guaranteed QoS class (dedicated CPUs), so every
/// container requests what it is limited to.
pub fn render(
    vmi: &VirtualMachineInstance,
    launcher_image: &str,
    vmi_dir_volume: &str,
    guaranteed: bool,
) -> Result<Disks> {
    let mut containers = Vec::new();
    for (i, v) in vmi.spec.volumes.iter().enumerate() {
        let Some(cd) = &v.container_disk else {
            continue;
        };
        let name = volume_container(&v.name);
        if name.len() > CONTAINER_NAME_MAX {
            return Err(Error::InvalidSpec(format!(
                "spec.volumes[{i}].name: {:?} is too long for a containerDisk: its container \
                 {name:?} must fit in {CONTAINER_NAME_MAX} characters",
                v.name
            )));
        }
        containers.push(container(
            name,
            &cd.image,
            cd.image_pull_policy,
            vmi_dir_volume,
            guaranteed,
        ));
    }
    if let Some(k) = vmi.spec.kernel_boot_container() {
        containers.push(container(
            KERNEL_BOOT_CONTAINER.into(),
            &k.image,
            k.image_pull_policy,
            vmi_dir_volume,
            guaranteed,
        ));
    }
    if containers.is_empty() {
        return Ok(Disks {
            init: vec![],
            containers,
            volumes: vec![],
        });
    }
    let init = Container {
        name: CONTAINER_DISK_BINARY_CONTAINER.into(),
        image: Some(launcher_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            CONTAINER_DISK_COMMAND.into(),
            "--copy-to".into(),
            binary_path(),
        ]),
        volume_mounts: Some(vec![mount(
            BINARY_VOLUME,
            CONTAINER_DISK_BIN_DIR_IN_POD,
            false,
        )]),
        resources: Some(small_resources(guaranteed)),
        security_context: Some(super::security::disk()),
        ..Default::default()
    };
    Ok(Disks {
        init: vec![init],
        containers,
        volumes: vec![Volume {
            name: BINARY_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }],
    })
}

/// Where the disk containers find `container-disk`.
fn binary_path() -> String {
    format!("{CONTAINER_DISK_BIN_DIR_IN_POD}/{CONTAINER_DISK_COMMAND}")
}

fn container(
    name: String,
    image: &str,
    pull: Option<PullPolicy>,
    vmi_dir_volume: &str,
    guaranteed: bool,
) -> Container {
    let socket = format!("{VMI_DIR_IN_POD}/{CONTAINER_DISKS_DIR}/{name}.sock");
    Container {
        name,
        image: Some(image.into()),
        // Unset: the API server's default (Always for `:latest` or no tag, else
        // IfNotPresent), as KubeVirt's own default of the VMI's field.
        image_pull_policy: pull.map(|p| {
            match p {
                PullPolicy::Always => "Always",
                PullPolicy::IfNotPresent => "IfNotPresent",
                PullPolicy::Never => "Never",
            }
            .into()
        }),
        command: Some(vec![binary_path(), "--socket".into(), socket]),
        volume_mounts: Some(vec![
            mount(BINARY_VOLUME, CONTAINER_DISK_BIN_DIR_IN_POD, true),
            mount(vmi_dir_volume, VMI_DIR_IN_POD, false),
        ]),
        resources: Some(small_resources(guaranteed)),
        security_context: Some(super::security::disk()),
        ..Default::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// KubeVirt's figures for its container-disk containers: the program sleeps in `poll`.
/// `guaranteed`: requested as limited (KubeVirt's for a Guaranteed launcher pod).
fn small_resources(guaranteed: bool) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.into());
    let (cpu, memory) = if guaranteed {
        ("10m", "40Mi")
    } else {
        ("1m", "1Mi")
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q("10m")),
            ("memory".to_string(), q("40Mi")),
        ])),
        ..Default::default()
    }
}
