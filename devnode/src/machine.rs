//! What the node reports about the machine: capacity and system info.

use crate::{Error, Result};
use k8s_openapi::api::core::v1::NodeSystemInfo;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
    pub pods: u32,
    pub info: NodeSystemInfo,
}

/// Kubernetes' name for the architecture Rust was built for.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` of /proc/meminfo as a quantity in Ki.
pub fn parse_meminfo(meminfo: &str) -> Option<String> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{kib}Ki"))
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

impl Capacity {
    pub fn detect(state_dir: &Path) -> Result<Self> {
        let cpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").map_err(Error::io("read /proc/meminfo"))?;
        let memory = parse_meminfo(&meminfo)
            .ok_or_else(|| Error::Invalid("no MemTotal in /proc/meminfo".into()))?;
        let fs = nix::sys::statvfs::statvfs(state_dir)
            .map_err(Error::sys(format!("statvfs {}", state_dir.display())))?;
        let storage = fs.blocks() as u64 * fs.fragment_size() as u64;
        let uts = nix::sys::utsname::uname().map_err(Error::sys("uname"))?;
        let info = NodeSystemInfo {
            architecture: arch().into(),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("devnode://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: uts.release().to_string_lossy().into_owned(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.35.0-devnode".into(),
            machine_id: read_trim("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image: os_image(),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        };
        Ok(Capacity {
            cpu: cpu.to_string(),
            memory,
            ephemeral_storage: storage.to_string(),
            pods: 110,
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meminfo_total_in_kib() {
        let m = "MemTotal:       24683656 kB\nMemFree:        21568100 kB\n";
        assert_eq!(super::parse_meminfo(m).as_deref(), Some("24683656Ki"));
        assert_eq!(super::parse_meminfo("nothing"), None);
    }
}
