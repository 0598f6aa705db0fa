//! What the plugins serve and where: the devices, how many of each, the directories.

use std::path::{Path, PathBuf};

use crate::api;
use crate::error::{Error, Result};

/// The resource prefix of KubeVirt's device plugins (`devices.kubevirt.io/kvm`).
pub const RESOURCE_NAMESPACE: &str = "devices.kubevirt.io";
/// How many devices each resource advertises (KubeVirt's `--max-devices` default): the
/// host device node is shared, so the count only caps how many pods can use it at once.
pub const DEFAULT_MAX_DEVICES: u32 = 1000;

/// One host device node handed to containers as an extended resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// The resource's name after [`RESOURCE_NAMESPACE`]; also the prefix of device IDs.
    pub name: String,
    /// The device node, the same on the host and in the container.
    pub path: PathBuf,
    /// Open the node once at start: the first open of `/dev/net/tun` or `/dev/vhost-net`
    /// loads their kernel module.
    pub pre_open: bool,
}

impl HostDevice {
    /// KubeVirt's permanent device plugins: `kvm` (`/dev/kvm`), `tun` (`/dev/net/tun`) and
    /// `vhost-net` (`/dev/vhost-net`).
    pub fn permanent() -> Vec<HostDevice> {
        let dev = |name: &str, path: &str, pre_open| HostDevice {
            name: name.into(),
            path: path.into(),
            pre_open,
        };
        vec![
            dev("kvm", "/dev/kvm", false),
            dev("tun", "/dev/net/tun", true),
            dev("vhost-net", "/dev/vhost-net", true),
        ]
    }

    /// `devices.kubevirt.io/<name>`.
    pub fn resource_name(&self) -> String {
        format!("{RESOURCE_NAMESPACE}/{}", self.name)
    }

    /// The plugin's socket in the plugin directory, `kubevirt-<name>.sock` as KubeVirt names it.
    pub fn socket_name(&self) -> String {
        format!("kubevirt-{}.sock", self.name)
    }
}

/// Everything [`crate::DevicePlugins::run`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The kubelet's device plugin directory, holding its `kubelet.sock` and the plugins'
    /// sockets (`/var/lib/kubelet/device-plugins`).
    pub plugin_dir: PathBuf,
    /// Where the host's root is seen, for the health checks of the device nodes (`/`, or
    /// `/proc/1/root` in a pod with the host's PID namespace, so `/dev` need not be mounted).
    /// The paths handed to the kubelet are always the host's own.
    pub device_root: PathBuf,
    /// How many devices each resource advertises.
    pub max_devices: u32,
    /// The device cgroup permissions of the devices in containers (`r`, `w`, `m`).
    pub permissions: String,
    /// The resources.
    pub devices: Vec<HostDevice>,
}

impl Config {
    /// KubeVirt's defaults: the permanent devices, [`DEFAULT_MAX_DEVICES`] each, the host's
    /// root as it is, and [`default_permissions`].
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Self {
        Config {
            plugin_dir: plugin_dir.into(),
            device_root: PathBuf::from("/"),
            max_devices: DEFAULT_MAX_DEVICES,
            permissions: default_permissions().into(),
            devices: HostDevice::permanent(),
        }
    }

    /// Refuses what cannot work, naming the flag: no devices, a count of 0, permissions
    /// other than `r`/`w`/`m`, a device name the kubelet would refuse or two alike, a relative
    /// device path, a plugin directory that is not there.
    pub fn validate(&self) -> Result<()> {
        let bad = |flag, message: String| Err(Error::Config { flag, message });
        if self.max_devices == 0 {
            return bad("--max-devices", "must be at least 1".into());
        }
        if self.permissions.is_empty() || !self.permissions.chars().all(|c| "rwm".contains(c)) {
            return bad(
                "--device-permissions",
                format!("{:?} is not a combination of r, w and m", self.permissions),
            );
        }
        if self.devices.is_empty() {
            return bad("devices", "no device to serve".into());
        }
        for (i, d) in self.devices.iter().enumerate() {
            if !is_dns_label(&d.name) {
                return bad(
                    "devices",
                    format!(
                        "{:?} is not a DNS label (a-z, 0-9, '-', at most 63)",
                        d.name
                    ),
                );
            }
            if self.devices[..i].iter().any(|o| o.name == d.name) {
                return bad("devices", format!("{:?} appears twice", d.name));
            }
            if !d.path.is_absolute() {
                return bad(
                    "devices",
                    format!("{}: not an absolute path", d.path.display()),
                );
            }
            // Device IDs are the name and a number; the kubelet allows 63 characters.
            if d.name.len() + self.max_devices.to_string().len() > 63 {
                return bad(
                    "--max-devices",
                    format!("device IDs of {:?} get too long", d.name),
                );
            }
        }
        match std::fs::metadata(&self.plugin_dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::PluginDir {
                path: self.plugin_dir.clone(),
                source: std::io::Error::other("not a directory"),
            }),
            Err(source) => Err(Error::PluginDir {
                path: self.plugin_dir.clone(),
                source,
            }),
        }
    }

    /// The kubelet's registration socket.
    pub fn kubelet_socket(&self) -> PathBuf {
        self.plugin_dir.join(api::KUBELET_SOCKET)
    }

    /// Where the health check looks for a device node: `path` under [`Config::device_root`].
    pub fn seen_path(&self, path: &Path) -> PathBuf {
        self.device_root
            .join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// `rw`, or `rwm` on a unified cgroup v2 host, as KubeVirt chooses: older runc's eBPF
/// device filter refuses `access()` on a device without `m`, and libvirt probes with it.
pub fn default_permissions() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "rwm"
    } else {
        "rw"
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The flags a component that runs the plugins offers (virt-handler flattens these).
/// The group has its own id: a flattened `Args` would clash with the component's own.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "device-plugins")]
pub struct Args {
    /// The kubelet's device plugin directory (`/var/lib/kubelet/device-plugins` on a
    /// node). Unset: no device plugins (a node without a kubelet, like devnode's).
    #[arg(long, env = "FERROVIRT_DEVICE_PLUGIN_DIR")]
    pub device_plugin_dir: Option<PathBuf>,

    /// How many devices each of devices.kubevirt.io/kvm, /tun and /vhost-net advertises.
    #[arg(long, env = "FERROVIRT_MAX_DEVICES", default_value_t = DEFAULT_MAX_DEVICES)]
    pub max_devices: u32,

    /// Where the host's root is seen for the device health checks (`/proc/1/root` with the
    /// host's PID namespace and no /dev mount).
    #[arg(long, env = "FERROVIRT_DEVICE_ROOT", default_value = "/")]
    pub device_root: PathBuf,

    /// The devices' cgroup permissions in containers; default `rw` (`rwm` on cgroup v2).
    #[arg(long, env = "FERROVIRT_DEVICE_PERMISSIONS")]
    pub device_permissions: Option<String>,
}

impl Args {
    /// The plugins' configuration, or `None` when `--device-plugin-dir` is unset.
    pub fn config(&self) -> Option<Config> {
        let dir = self.device_plugin_dir.as_ref()?;
        let mut config = Config::new(dir);
        config.max_devices = self.max_devices;
        config.device_root = self.device_root.clone();
        if let Some(p) = &self.device_permissions {
            config.permissions = p.clone();
        }
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn kvm_is_the_resource_launcher_pods_request() {
        let kvm = &HostDevice::permanent()[0];
        assert_eq!(
            kvm.resource_name(),
            ferrovirt_node_contract::pod::KVM_RESOURCE
        );
        let names: Vec<_> = HostDevice::permanent()
            .iter()
            .map(|d| (d.resource_name(), d.socket_name(), d.path.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("devices.kubevirt.io/kvm", "kubevirt-kvm.sock", "/dev/kvm"),
                (
                    "devices.kubevirt.io/tun",
                    "kubevirt-tun.sock",
                    "/dev/net/tun"
                ),
                (
                    "devices.kubevirt.io/vhost-net",
                    "kubevirt-vhost-net.sock",
                    "/dev/vhost-net"
                ),
            ]
            .map(|(r, s, p)| (r.to_string(), s.to_string(), PathBuf::from(p)))
        );
    }

    #[test]
    fn validate_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Config::new(dir.path());
        ok.validate().unwrap();
        let err = |c: Config| c.validate().unwrap_err().to_string();

        let c = Config {
            max_devices: 0,
            ..ok.clone()
        };
        assert_eq!(err(c), "--max-devices: must be at least 1");
        let c = Config {
            permissions: "rwx".into(),
            ..ok.clone()
        };
        assert!(err(c).starts_with("--device-permissions: \"rwx\""));
        let mut c = ok.clone();
        c.devices[1].name = "Tun".into();
        assert!(err(c).contains("\"Tun\" is not a DNS label"));
        let mut c = ok.clone();
        c.devices[2].name = "kvm".into();
        assert!(err(c).contains("\"kvm\" appears twice"));
        let mut c = ok.clone();
        c.devices[0].path = "dev/kvm".into();
        assert!(err(c).contains("dev/kvm: not an absolute path"));
        let c = Config::new(dir.path().join("missing"));
        assert!(err(c).starts_with("device plugin directory"));
    }

    #[test]
    fn flags_make_the_config() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.args.config(), None);
        let cli = Cli::parse_from([
            "x",
            "--device-plugin-dir",
            "/var/lib/kubelet/device-plugins",
            "--max-devices",
            "10",
            "--device-root",
            "/proc/1/root",
            "--device-permissions",
            "rwm",
        ]);
        let c = cli.args.config().unwrap();
        assert_eq!(c.plugin_dir, Path::new("/var/lib/kubelet/device-plugins"));
        assert_eq!(
            c.kubelet_socket(),
            Path::new("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
        assert_eq!(c.max_devices, 10);
        assert_eq!(c.permissions, "rwm");
        assert_eq!(
            c.seen_path(Path::new("/dev/net/tun")),
            Path::new("/proc/1/root/dev/net/tun")
        );
        assert_eq!(c.devices, HostDevice::permanent());
    }
}
