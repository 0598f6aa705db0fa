//! The node run dir and what lies in it (docs/contracts.md, "Paths and caches").
//!
//! On the host: `<run-dir>/vmis/<vmi-uid>/` per VMI and `<run-dir>/capabilities/` for
//! the node-wide cache of libvirt's QEMU probe. In the launcher pod the two are mounted at
//! [`VMI_DIR_IN_POD`] and [`CAPABILITIES_DIR_IN_POD`].

use std::path::{Path, PathBuf};

/// The node run dir when `--run-dir`/`FERROVIRT_RUN_DIR` names none.
pub const DEFAULT_RUN_DIR: &str = "/var/run/ferrovirt";
/// `<run-dir>/vmis/`: one directory per VMI, named by its uid.
pub const VMIS_DIR: &str = "vmis";
/// `<run-dir>/capabilities/`: libvirt's QEMU capabilities probe, shared by the launchers.
pub const CAPABILITIES_DIR: &str = "capabilities";
/// Where the per-VMI directory is mounted inside the launcher pod.
pub const VMI_DIR_IN_POD: &str = "/var/run/ferrovirt/vmi";
/// Where the capabilities cache is mounted inside the launcher pod.
pub const CAPABILITIES_DIR_IN_POD: &str = "/var/run/ferrovirt/capabilities";

/// The user and group the launcher, its libvirt and QEMU run as in the launcher pod
/// (KubeVirt's non-root `qemu` user, 107): the owner of each per-VMI directory, of the
/// files virt-handler prepares in it and of the capabilities cache. `<run-dir>/vmis`
/// itself stays root's with mode 0700, so a launcher that sees the host's run dir (on
/// devnode) cannot reach another VMI's directory; its own is mounted into its pod.
pub const LAUNCHER_UID: u32 = 107;
/// See [`LAUNCHER_UID`].
pub const LAUNCHER_GID: u32 = 107;

/// The launcher's command socket, in the per-VMI directory.
pub const LAUNCHER_SOCKET: &str = "launcher.sock";
/// Created by the launcher once its socket listens; the pod's readiness probe tests it.
pub const READY_FILE: &str = "ready";
/// The guest's serial console (a unix socket QEMU serves).
pub const SERIAL_SOCKET: &str = "serial0.sock";
/// The QEMU guest agent's channel (`org.qemu.guest_agent.0`): QEMU serves it, the
/// launcher's libvirt is its one client (docs/guest-agent.md).
pub const GUEST_AGENT_SOCKET: &str = "guest-agent.sock";
/// QEMU's copy of the serial console, rotated by the launcher to `serial0.log.1`.
pub const SERIAL_LOG: &str = "serial0.log";
/// The guest's VNC display.
pub const VNC_SOCKET: &str = "vnc.sock";
/// The sockets of the pod's disk containers (`<container name>.sock`): virt-handler
/// connects to one to learn its process (SO_PEERCRED) and reads the image through
/// `/proc/<pid>/root`.
pub const CONTAINER_DISKS_DIR: &str = "container-disks";
/// Where the launcher pod mounts the Secrets of cloud-init volumes (KubeVirt mounts them
/// under `/var/run/kubevirt-private/secret`): see [`CloudInitSecret`].
pub const CLOUD_INIT_SECRETS_DIR_IN_POD: &str = "/var/run/ferrovirt-private/cloud-init";
/// Where the launcher pod mounts the VMI's backend-storage claim (KubeVirt's
/// `persistent-state-for-…` PVC, volume `vm-state`), which keeps a persistent TPM's state
/// in [`BACKEND_STORAGE_SWTPM`] and a persistent EFI variable store in
/// [`BACKEND_STORAGE_NVRAM`], KubeVirt's sub-paths of that claim.
pub const BACKEND_STORAGE_DIR_IN_POD: &str = "/var/run/ferrovirt-private/backend-storage";
/// The claim's directory of swtpm's state (`<firmware uuid>/tpm2/…` in it, as libvirt lays
/// it out).
pub const BACKEND_STORAGE_SWTPM: &str = "swtpm";
/// The claim's directory of the EFI variables (`<VMI name>_VARS.fd`, KubeVirt's name).
pub const BACKEND_STORAGE_NVRAM: &str = "nvram";

/// The Secret of a cloud-init volume's `userDataSecretRef` or `networkDataSecretRef`. The
/// launcher pod has it as the secret volume [`Self::pod_volume`], mounted read-only at
/// [`Self::dir_in_pod`]; virt-handler reads the first of [`Self::keys`] there through
/// `/proc/<launcher pid>/root` and writes it into the `cidata` disk. `index` is the
/// volume's position in the VMI's `spec.volumes`, so any volume name fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudInitSecret {
    UserData,
    NetworkData,
}

impl CloudInitSecret {
    /// The keys read, first found first (KubeVirt's).
    pub fn keys(self) -> [&'static str; 2] {
        match self {
            CloudInitSecret::UserData => ["userdata", "userData"],
            CloudInitSecret::NetworkData => ["networkdata", "networkData"],
        }
    }

    fn word(self) -> &'static str {
        self.keys()[0]
    }

    /// The launcher pod's volume of this Secret.
    pub fn pod_volume(self, index: usize) -> String {
        format!("cloudinit-{index}-{}", self.word())
    }

    /// Where the launcher pod mounts it.
    pub fn dir_in_pod(self, index: usize) -> String {
        format!("{CLOUD_INIT_SECRETS_DIR_IN_POD}/{index}/{}", self.word())
    }
}
/// Where the launcher pod mounts the configMap, secret and downwardAPI volumes of a VMI
/// (KubeVirt mounts them under `/var/run/kubevirt-private/`): see [`ConfigVolume`].
pub const CONFIG_VOLUMES_DIR_IN_POD: &str = "/var/run/ferrovirt-private";
/// Where the node mounts the credentials of the pod's ServiceAccount in every container
/// (Kubernetes' own path; KubeVirt reads a serviceAccount volume's files there).
pub const SERVICE_ACCOUNT_DIR_IN_POD: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A configMap, secret, serviceAccount or downwardAPI volume of a VMI. The launcher pod
/// has the first three as a pod volume of the same kind, [`Self::pod_volume`], mounted
/// read-only in the compute container at [`Self::dir_in_pod`]; a serviceAccount volume is
/// the pod's own ServiceAccount, whose credentials the node mounts at
/// [`SERVICE_ACCOUNT_DIR_IN_POD`]. virt-handler reads the files there through
/// `/proc/<launcher pid>/root` and writes them into an ISO 9660 disk. `index` is the
/// volume's position in the VMI's `spec.volumes`, so any volume name fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigVolume {
    ConfigMap,
    Secret,
    ServiceAccount,
    DownwardApi,
}

impl ConfigVolume {
    /// The VMI's field that makes the volume this kind (`configMap`, ...).
    pub fn field(self) -> &'static str {
        match self {
            ConfigVolume::ConfigMap => "configMap",
            ConfigVolume::Secret => "secret",
            ConfigVolume::ServiceAccount => "serviceAccount",
            ConfigVolume::DownwardApi => "downwardAPI",
        }
    }

    /// The kind's directory under [`CONFIG_VOLUMES_DIR_IN_POD`] and the prefix of its pod
    /// volumes (KubeVirt's directory names).
    fn word(self) -> &'static str {
        match self {
            ConfigVolume::ConfigMap => "config-map",
            ConfigVolume::Secret => "secret",
            ConfigVolume::ServiceAccount => "service-account",
            ConfigVolume::DownwardApi => "downwardapi",
        }
    }

    /// The launcher pod's volume of this VMI volume; `None` for a serviceAccount volume
    /// (the node's own ServiceAccount volume of the pod).
    pub fn pod_volume(self, index: usize) -> Option<String> {
        (self != ConfigVolume::ServiceAccount).then(|| format!("{}-{index}", self.word()))
    }

    /// Where the launcher pod has its files.
    pub fn dir_in_pod(self, index: usize) -> String {
        match self {
            ConfigVolume::ServiceAccount => SERVICE_ACCOUNT_DIR_IN_POD.to_owned(),
            _ => format!("{CONFIG_VOLUMES_DIR_IN_POD}/{}/{index}", self.word()),
        }
    }
}

/// Where the launcher pod mounts the claims of a VMI's persistentVolumeClaim and dataVolume
/// volumes (KubeVirt mounts them at `/var/run/kubevirt-private/vmi-disks/<volume name>`):
/// the pod volume [`claim_pod_volume`], mounted in the compute container at
/// [`claim_dir_in_pod`] (a filesystem claim; a block claim is a device, see
/// [`CLAIM_DEVICES_DIR_IN_POD`]). QEMU opens a disk's [`CLAIM_DISK_IMAGE`] there, and virtiofsd
/// shares the directory; virt-handler checks (or creates) the image through
/// `/proc/<launcher pid>/root`. `index` is the volume's position in the VMI's
/// `spec.volumes`, so any volume name fits.
pub const CLAIMS_DIR_IN_POD: &str = "/var/run/ferrovirt-private/vmi-disks";
/// The disk image on a filesystem claim (KubeVirt's name, as CDI writes it).
pub const CLAIM_DISK_IMAGE: &str = "disk.img";

/// The launcher pod's volume of the claim of `spec.volumes[index]`.
pub fn claim_pod_volume(index: usize) -> String {
    format!("claim-{index}")
}

/// Where the launcher pod mounts the claim of `spec.volumes[index]`.
pub fn claim_dir_in_pod(index: usize) -> String {
    format!("{CLAIMS_DIR_IN_POD}/{index}")
}

/// Where the launcher pod has the device of a block-mode claim (`volumeMode: Block`): the
/// claim's pod volume [`claim_pod_volume`] is a `volumeDevices` entry of the compute
/// container at [`claim_device_in_pod`], and QEMU opens that device as the guest's disk
/// (`<disk type="block">`); virt-handler checks it is a block device and gives it to the
/// launcher's user through `/proc/<launcher pid>/root`. KubeVirt puts the device at
/// `/dev/<volume name>`; Ferrovirt names it by the volume's position, as its mounts, so no
/// volume name can land on a device the launcher needs (`/dev/kvm`, `/dev/net/tun`).
pub const CLAIM_DEVICES_DIR_IN_POD: &str = "/dev/ferrovirt-vmi-disks";

/// Whether a claim of this `spec.volumeMode` is a block device (the API server's default
/// is Filesystem).
pub fn claim_is_block(volume_mode: Option<&str>) -> bool {
    volume_mode == Some("Block")
}

/// Where the launcher pod has the device of the block-mode claim of `spec.volumes[index]`.
pub fn claim_device_in_pod(index: usize) -> String {
    format!("{CLAIM_DEVICES_DIR_IN_POD}/{index}")
}

/// Root of the launcher's embedded libvirt.
pub const LIBVIRT_DIR: &str = "libvirt";

/// The node run dir on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// `<run-dir>/vmis`.
    pub fn vmis(&self) -> PathBuf {
        self.root.join(VMIS_DIR)
    }

    /// `<run-dir>/vmis/<uid>`.
    pub fn vmi(&self, uid: &str) -> VmiDir {
        VmiDir::new(self.vmis().join(uid))
    }

    /// `<run-dir>/capabilities`.
    pub fn capabilities(&self) -> PathBuf {
        self.root.join(CAPABILITIES_DIR)
    }
}

/// One VMI's directory: on the host under [`RunDir::vmi`], or [`VMI_DIR_IN_POD`] as the
/// launcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmiDir {
    pub dir: PathBuf,
}

impl VmiDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VmiDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(LAUNCHER_SOCKET)
    }

    pub fn ready(&self) -> PathBuf {
        self.dir.join(READY_FILE)
    }

    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join(SERIAL_SOCKET)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join(SERIAL_LOG)
    }

    pub fn vnc_socket(&self) -> PathBuf {
        self.dir.join(VNC_SOCKET)
    }

    /// The socket of the passt process of the guest's interface `interface` (the passt
    /// binding): the launcher starts passt on it, QEMU connects to it.
    pub fn passt_socket(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("passt-{interface}.sock"))
    }

    /// The vhost-user socket of the virtiofsd that shares the volume `volume` with the
    /// guest (a filesystem of the VMI): the launcher starts virtiofsd on it, QEMU connects.
    pub fn virtiofs_socket(&self, volume: &str) -> PathBuf {
        self.dir.join(format!("virtiofs-{volume}.sock"))
    }

    /// `container-disks/`: the disk containers' sockets.
    pub fn container_disks(&self) -> PathBuf {
        self.dir.join(CONTAINER_DISKS_DIR)
    }

    /// The socket of the disk container `container` (`volume<name>` or `kernel-boot`).
    pub fn container_disk_socket(&self, container: &str) -> PathBuf {
        self.container_disks().join(format!("{container}.sock"))
    }

    /// Root of the embedded libvirt; QEMU's own log is `<this>/log/qemu/<domain>.log`.
    pub fn libvirt_root(&self) -> PathBuf {
        self.dir.join(LIBVIRT_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_init_secrets_have_a_volume_and_a_directory_each() {
        let u = CloudInitSecret::UserData;
        let n = CloudInitSecret::NetworkData;
        assert_eq!(u.pod_volume(2), "cloudinit-2-userdata");
        assert_eq!(n.pod_volume(2), "cloudinit-2-networkdata");
        assert_eq!(
            u.dir_in_pod(0),
            "/var/run/ferrovirt-private/cloud-init/0/userdata"
        );
        assert_eq!(n.keys(), ["networkdata", "networkData"]);
    }

    #[test]
    fn config_volumes_have_a_volume_and_a_directory_each() {
        assert_eq!(
            ConfigVolume::ConfigMap.pod_volume(3).as_deref(),
            Some("config-map-3")
        );
        assert_eq!(
            ConfigVolume::DownwardApi.dir_in_pod(0),
            "/var/run/ferrovirt-private/downwardapi/0"
        );
        assert_eq!(
            ConfigVolume::Secret.dir_in_pod(1),
            "/var/run/ferrovirt-private/secret/1"
        );
        assert_eq!(ConfigVolume::ServiceAccount.pod_volume(2), None);
        assert_eq!(
            ConfigVolume::ServiceAccount.dir_in_pod(2),
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
    }

    #[test]
    fn layout_matches_the_contract() {
        let run = RunDir::new(DEFAULT_RUN_DIR);
        let vmi = run.vmi("u1");
        assert_eq!(vmi.path(), Path::new("/var/run/ferrovirt/vmis/u1"));
        assert_eq!(
            vmi.socket(),
            Path::new("/var/run/ferrovirt/vmis/u1/launcher.sock")
        );
        assert_eq!(vmi.ready(), Path::new("/var/run/ferrovirt/vmis/u1/ready"));
        assert_eq!(
            vmi.serial_socket(),
            Path::new("/var/run/ferrovirt/vmis/u1/serial0.sock")
        );
        assert_eq!(
            vmi.serial_log(),
            Path::new("/var/run/ferrovirt/vmis/u1/serial0.log")
        );
        assert_eq!(
            vmi.vnc_socket(),
            Path::new("/var/run/ferrovirt/vmis/u1/vnc.sock")
        );
        assert_eq!(
            vmi.container_disk_socket("kernel-boot"),
            Path::new("/var/run/ferrovirt/vmis/u1/container-disks/kernel-boot.sock")
        );
        assert_eq!(
            run.capabilities(),
            Path::new("/var/run/ferrovirt/capabilities")
        );
    }
}
