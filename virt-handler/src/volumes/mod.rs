//! Volumes: what each VMI volume becomes on the node. [`plan`] is pure (names and paths);
//! [`prepare`] does the host-side work in the per-VMI directory.

mod claim;
mod cloudinit;
mod config;
pub mod containerdisk;
pub mod hostdisk;
pub(crate) mod launcher_root;
mod prepare;
pub mod virtiofs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::{CloudInitNoCloudSource, HostDiskType, VirtualMachineInstanceSpec};
use ferrovirt_node_contract::paths::{CLAIM_DISK_IMAGE, ConfigVolume};

pub use claim::{ClaimDir, image_size};
pub use cloudinit::{SecretData, meta_data, nocloud_files, read_secrets};
pub use hostdisk::HostDiskPolicy;
pub(crate) use prepare::{give, launcher_owner};
pub use prepare::{prepare, prepare_firmware};

use crate::{Error, Result};
use crds::quantity;

/// The sub-directory of the per-VMI directory that holds prepared disks.
pub const DIR: &str = "volumes";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// A prepared disk's file, relative to the per-VMI directory.
fn local_file(volume: &str, ext: &str) -> String {
    format!("{DIR}/{volume}.{ext}")
}

/// The extension of the downward metrics disk's file.
const DOWNWARD_METRICS_EXT: &str = "vhostmd";

/// The downwardMetrics volume's disk (at most one), as the launcher sees it under
/// `vmi_dir`: the file the launcher keeps rewriting.
pub fn downward_metrics_disk(spec: &VirtualMachineInstanceSpec, vmi_dir: &Path) -> Option<PathBuf> {
    let v = spec.volumes.iter().find(|v| v.downward_metrics.is_some())?;
    Some(vmi_dir.join(local_file(&v.name, DOWNWARD_METRICS_EXT)))
}

/// One volume, planned.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub name: String,
    /// The disk's path as the launcher (QEMU) sees it.
    pub path: PathBuf,
    pub format: Format,
    /// The volume itself is read-only (a read-only PVC).
    pub read_only: bool,
    pub prep: Prep,
}

impl Planned {
    /// The disk is a block device (`<disk type="block">`), not a file.
    pub fn is_block(&self) -> bool {
        matches!(self.prep, Prep::PvcDevice { .. })
    }
}

/// What [`prepare`] does for a volume. `file` is relative to the per-VMI directory.
#[derive(Clone, Debug, PartialEq)]
pub enum Prep {
    /// A qcow2 overlay on the image's disk file, read through the pod's container of the
    /// image; the image is never written. `index` is the volume's position in the spec.
    ContainerDisk {
        image: String,
        path: Option<String>,
        file: String,
        index: usize,
    },
    /// A sparse qcow2 of `capacity` bytes.
    EmptyDisk { capacity: u64, file: String },
    /// A `cidata` ISO. `index` is the volume's position in the spec (its Secrets' mount
    /// in the launcher pod, and the field in errors).
    CloudInit {
        source: CloudInitNoCloudSource,
        file: String,
        index: usize,
    },
    /// A host file under `prefix` (an allowed directory), opened without following
    /// symbolic links; with `create`, a sparse raw file of that many bytes when missing.
    /// `index` is the volume's position in the spec (for the field in errors).
    HostDisk {
        create: Option<u64>,
        prefix: PathBuf,
        index: usize,
    },
    /// A filesystem claim's `disk.img` ([`claim`]): made of `create` bytes when missing
    /// (None: never); `in_pod`: the directory is the launcher pod's mount. `index` is the
    /// volume's position in the spec.
    Pvc {
        claim: String,
        index: usize,
        in_pod: bool,
        create: Option<u64>,
    },
    /// A block claim's device ([`claim`]), the guest's disk as it is; `in_pod`: the
    /// launcher pod's device. `index` is the volume's position in the spec.
    PvcDevice {
        claim: String,
        index: usize,
        in_pod: bool,
    },
    /// An ISO 9660 disk labelled `label` holding the files of a configMap, secret,
    /// serviceAccount or downwardAPI volume, read where the launcher pod has them.
    /// `index` is the volume's position in the spec.
    Config {
        kind: ConfigVolume,
        label: String,
        file: String,
        index: usize,
    },
    /// KubeVirt's downward metrics disk (vhostmd's format), created holding no metrics;
    /// the launcher rewrites it while the guest runs.
    DownwardMetrics { file: String },
}

/// Plans every volume of `spec` (but its filesystems, [`virtiofs::shares`]). `vmi_dir` is
/// the per-VMI directory as the launcher sees it; `claims` maps the names of claim
/// volumes to their directory; `host_disks` says whether and where `hostDisk` volumes are
/// allowed.
pub fn plan(
    spec: &VirtualMachineInstanceSpec,
    vmi_dir: &Path,
    claims: &BTreeMap<String, ClaimDir>,
    host_disks: &HostDiskPolicy,
) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        // Shared as a filesystem (virtiofs::shares), not a disk.
        if virtiofs::is_filesystem(spec, &v.name) {
            continue;
        }
        let field = |f: &str| format!("spec.volumes[{i}].{f}");
        let local = |ext: &str| {
            let file = local_file(&v.name, ext);
            (vmi_dir.join(&file), file)
        };
        let planned = if let Some(cd) = &v.container_disk {
            let (path, file) = local("qcow2");
            let prep = Prep::ContainerDisk {
                image: cd.image.clone(),
                path: cd.path.clone(),
                file,
                index: i,
            };
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Qcow2,
                read_only: false,
                prep,
            }
        } else if let Some(ed) = &v.empty_disk {
            let capacity = quantity::bytes(&ed.capacity)
                .filter(|c| *c > 0)
                .ok_or_else(|| {
                    Error::unsupported(
                        field("emptyDisk.capacity"),
                        format!("{:?} is not a size", ed.capacity.0),
                    )
                })?;
            let (path, file) = local("qcow2");
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Qcow2,
                read_only: false,
                prep: Prep::EmptyDisk { capacity, file },
            }
        } else if let Some(ci) = &v.cloud_init_no_cloud {
            let (path, file) = local("iso");
            let prep = Prep::CloudInit {
                source: ci.clone(),
                file,
                index: i,
            };
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Raw,
                read_only: false,
                prep,
            }
        } else if let Some(hd) = &v.host_disk {
            let (path, prefix) = host_disks.confine(i, &hd.path)?;
            let create = match hd.disk_type {
                HostDiskType::Disk => None,
                HostDiskType::DiskOrCreate => {
                    let cap = hd
                        .capacity
                        .as_ref()
                        .and_then(quantity::bytes)
                        .filter(|c| *c > 0)
                        .ok_or_else(|| {
                            Error::unsupported(
                                field("hostDisk.capacity"),
                                "DiskOrCreate needs a positive capacity",
                            )
                        })?;
                    Some(cap)
                }
            };
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Raw,
                read_only: false,
                prep: Prep::HostDisk {
                    create,
                    prefix,
                    index: i,
                },
            }
        } else if let Some(claim) = v.claim_name() {
            // A persistentVolumeClaim, or a dataVolume's claim (virt-controller made the pod
            // only once its DataVolume had succeeded).
            let dir = claims.get(&v.name).ok_or_else(|| {
                Error::volume(&v.name, format!("claim {claim:?} has no directory here"))
            })?;
            let read_only = v
                .persistent_volume_claim
                .as_ref()
                .and_then(|p| p.read_only)
                .unwrap_or(false);
            if dir.block {
                Planned {
                    name: v.name.clone(),
                    path: dir.launcher.clone(),
                    format: Format::Raw,
                    read_only,
                    prep: Prep::PvcDevice {
                        claim: claim.to_string(),
                        index: i,
                        in_pod: dir.in_pod,
                    },
                }
            } else {
                Planned {
                    name: v.name.clone(),
                    path: dir.launcher.join(CLAIM_DISK_IMAGE),
                    format: Format::Raw,
                    read_only,
                    prep: Prep::Pvc {
                        claim: claim.to_string(),
                        index: i,
                        in_pod: dir.in_pod,
                        create: dir.image_size.filter(|_| !read_only),
                    },
                }
            }
        } else if v.downward_metrics.is_some() {
            let (path, file) = local(DOWNWARD_METRICS_EXT);
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Raw,
                // As KubeVirt: the guest only reads it.
                read_only: true,
                prep: Prep::DownwardMetrics { file },
            }
        } else if let Some(source) = v.config_source() {
            let (path, file) = local("iso");
            Planned {
                name: v.name.clone(),
                path,
                format: Format::Raw,
                read_only: false,
                prep: Prep::Config {
                    kind: config::kind(source),
                    label: source.label().to_owned(),
                    file,
                    index: i,
                },
            }
        } else {
            return Err(Error::unsupported(
                format!("spec.volumes[{i}]"),
                "set exactly one volume source",
            ));
        };
        out.push(planned);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_paths_in_the_vmi_dir() {
        let spec: VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"devices": {}},
            "volumes": [
                {"name": "root", "containerDisk": {"image": "quay.io/x/y"}},
                {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}},
                {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config"}},
                {"name": "host", "hostDisk": {"path": "/data/d.img", "type": "DiskOrCreate", "capacity": "10Mi"}},
                {"name": "pv", "persistentVolumeClaim": {"claimName": "c", "readOnly": true}},
                {"name": "cm", "configMap": {"name": "app"}},
                {"name": "sa", "serviceAccount": {"serviceAccountName": "robot"}},
                {"name": "dapi", "downwardAPI": {"volumeLabel": "DAPI"}},
                {"name": "dv", "dataVolume": {"name": "imported"}}
            ]
        }))
        .unwrap();
        let dir = |d: &str, in_pod| ClaimDir {
            launcher: PathBuf::from(d),
            in_pod,
            image_size: Some(1 << 30),
            block: false,
        };
        let pvcs = BTreeMap::from([
            ("pv".to_owned(), dir("/pv/c", false)),
            (
                "dv".to_owned(),
                dir("/var/run/ferrovirt-private/vmi-disks/8", true),
            ),
        ]);
        let hd = HostDiskPolicy::allow(&["/data"]);
        let p = plan(&spec, Path::new("/vmi"), &pvcs, &hd).unwrap();
        assert_eq!(p[0].path, Path::new("/vmi/volumes/root.qcow2"));
        assert_eq!(
            p[1].prep,
            Prep::EmptyDisk {
                capacity: 1 << 30,
                file: "volumes/scratch.qcow2".into()
            }
        );
        assert_eq!(
            (p[2].path.as_path(), p[2].format),
            (Path::new("/vmi/volumes/ci.iso"), Format::Raw)
        );
        assert_eq!(
            p[3].prep,
            Prep::HostDisk {
                create: Some(10 << 20),
                prefix: "/data".into(),
                index: 3
            }
        );
        let err = plan(&spec, Path::new("/vmi"), &pvcs, &HostDiskPolicy::default()).unwrap_err();
        assert!(
            err.to_string().contains("spec.volumes[3].hostDisk"),
            "{err}"
        );
        assert_eq!(
            (p[4].path.as_path(), p[4].read_only),
            (Path::new("/pv/c/disk.img"), true)
        );
        // KubeVirt's label, cfgdata, unless volumeLabel names another.
        let config: Vec<_> = p[5..8]
            .iter()
            .map(|p| match &p.prep {
                Prep::Config {
                    kind, label, file, ..
                } => (*kind, label.as_str(), file.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            config,
            [
                (ConfigVolume::ConfigMap, "cfgdata", "volumes/cm.iso"),
                (ConfigVolume::ServiceAccount, "cfgdata", "volumes/sa.iso"),
                (ConfigVolume::DownwardApi, "DAPI", "volumes/dapi.iso"),
            ]
        );
        // A dataVolume is the claim of its name, as a persistentVolumeClaim.
        // Where the launcher pod mounts it; its image is made when missing.
        assert_eq!(
            (p[8].path.as_path(), p[8].read_only, &p[8].prep),
            (
                Path::new("/var/run/ferrovirt-private/vmi-disks/8/disk.img"),
                false,
                &Prep::Pvc {
                    claim: "imported".into(),
                    index: 8,
                    in_pod: true,
                    create: Some(1 << 30)
                }
            )
        );
        // A read-only claim's image is never made.
        assert_eq!(
            p[4].prep,
            Prep::Pvc {
                claim: "c".into(),
                index: 4,
                in_pod: false,
                create: None
            }
        );
        let err = plan(&spec, Path::new("/vmi"), &BTreeMap::new(), &hd).unwrap_err();
        assert!(err.to_string().contains("claim \"c\""), "{err}");
    }
}
