//! qemu-ga's replies (`{"return": ...}`, its QAPI schema's names) turned into KubeVirt's
//! shapes (`ferrovirt_node_contract::agent`), as KubeVirt's launcher maps them
//! (pkg/virt-launcher/virtwrap/agent-poller).

use ferrovirt_node_contract::agent::{
    GuestAgentCommand, GuestFilesystem, GuestFsDisk, GuestInterface, GuestOsInfo, GuestUser,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The `return` member of a reply.
pub(super) fn ret<T: DeserializeOwned>(command: &str, reply: &str) -> Result<T> {
    #[derive(Deserialize)]
    struct Reply<T> {
        #[serde(rename = "return")]
        ret: T,
    }
    serde_json::from_str::<Reply<T>>(reply)
        .map(|r| r.ret)
        .map_err(|e| Error::Agent(format!("{command}: unexpected reply ({e}): {reply}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct OsInfo {
    id: Option<String>,
    name: Option<String>,
    pretty_name: Option<String>,
    version: Option<String>,
    version_id: Option<String>,
    kernel_release: Option<String>,
    kernel_version: Option<String>,
    machine: Option<String>,
}

/// `guest-get-osinfo`.
pub fn os_info(reply: &str) -> Result<GuestOsInfo> {
    let o: OsInfo = ret("guest-get-osinfo", reply)?;
    Ok(GuestOsInfo {
        name: o.name,
        kernel_release: o.kernel_release,
        version: o.version,
        pretty_name: o.pretty_name,
        version_id: o.version_id,
        kernel_version: o.kernel_version,
        machine: o.machine,
        id: o.id,
    })
}

#[derive(Deserialize)]
struct Info {
    version: Option<String>,
    #[serde(default)]
    supported_commands: Vec<Command>,
}

#[derive(Deserialize)]
struct Command {
    name: String,
    #[serde(default)]
    enabled: bool,
}

/// `guest-info`: the agent's version and its commands.
pub fn info(reply: &str) -> Result<(Option<String>, Vec<GuestAgentCommand>)> {
    let i: Info = ret("guest-info", reply)?;
    let commands = i
        .supported_commands
        .into_iter()
        .map(|c| GuestAgentCommand {
            name: c.name,
            enabled: c.enabled,
        })
        .collect();
    Ok((i.version, commands))
}

/// `guest-get-host-name`.
pub fn host_name(reply: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct HostName {
        #[serde(rename = "host-name")]
        host_name: String,
    }
    Ok(ret::<HostName>("guest-get-host-name", reply)?.host_name)
}

/// `guest-get-timezone`, as KubeVirt formats it: `"<zone>, <offset>"`.
pub fn timezone(reply: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct Tz {
        #[serde(default)]
        zone: String,
        offset: i64,
    }
    let tz: Tz = ret("guest-get-timezone", reply)?;
    Ok(format!("{}, {}", tz.zone, tz.offset))
}

/// `guest-get-users`.
pub fn users(reply: &str) -> Result<Vec<GuestUser>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct User {
        user: String,
        domain: Option<String>,
        login_time: Option<serde_json::Number>,
    }
    let users: Vec<User> = ret("guest-get-users", reply)?;
    Ok(users
        .into_iter()
        .map(|u| GuestUser {
            user_name: u.user,
            domain: u.domain,
            login_time: u.login_time,
        })
        .collect())
}

/// `guest-get-fsinfo`.
pub fn filesystems(reply: &str) -> Result<Vec<GuestFilesystem>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Fs {
        name: String,
        mountpoint: String,
        #[serde(rename = "type")]
        fs_type: String,
        #[serde(default)]
        used_bytes: u64,
        #[serde(default)]
        total_bytes: u64,
        #[serde(default)]
        disk: Vec<Disk>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Disk {
        serial: Option<String>,
        bus_type: String,
    }
    let fs: Vec<Fs> = ret("guest-get-fsinfo", reply)?;
    Ok(fs
        .into_iter()
        .map(|f| GuestFilesystem {
            disk_name: f.name,
            mount_point: f.mountpoint,
            file_system_type: f.fs_type,
            used_bytes: f.used_bytes,
            total_bytes: f.total_bytes,
            disk: f
                .disk
                .into_iter()
                .map(|d| GuestFsDisk {
                    serial: d.serial,
                    bus_type: d.bus_type,
                })
                .collect(),
        })
        .collect())
}

/// `guest-network-get-interfaces`, without loopback (KubeVirt reports the guest's
/// interfaces for status.interfaces, where `lo` has no place).
pub fn interfaces(reply: &str) -> Result<Vec<GuestInterface>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Iface {
        name: String,
        hardware_address: Option<String>,
        #[serde(default)]
        ip_addresses: Vec<Addr>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Addr {
        ip_address: String,
    }
    let ifaces: Vec<Iface> = ret("guest-network-get-interfaces", reply)?;
    Ok(ifaces
        .into_iter()
        .filter(|i| i.name != "lo")
        .map(|i| GuestInterface {
            interface_name: i.name,
            mac: i.hardware_address,
            ip_addresses: i.ip_addresses.into_iter().map(|a| a.ip_address).collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replies of Debian 12's qemu-ga 7.2 in the test guest (hack/guest).
    const OSINFO: &str = r##"{"return": {"name": "Ferrovirt test guest", "kernel-release": "6.1.0-57-amd64", "version": "2 (1e952f6aa7d6719c)", "pretty-name": "Ferrovirt test guest 2 (busybox, Debian kernel 6.1.0-57-amd64)", "version-id": "2", "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)", "machine": "x86_64", "id": "ferrovirt"}}"##;
    const IFACES: &str = r#"{"return": [{"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}], "hardware-address": "00:00:00:00:00:00"}, {"name": "eth0", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.2", "prefix": 24}, {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64}], "statistics": {"tx-packets": 0}, "hardware-address": "02:00:00:aa:bb:cc"}]}"#;

    #[test]
    fn os_info_maps_to_kubevirts_fields() {
        let os = os_info(OSINFO).unwrap();
        assert_eq!(os.id.as_deref(), Some("ferrovirt"));
        assert_eq!(os.name.as_deref(), Some("Ferrovirt test guest"));
        assert_eq!(os.kernel_release.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(os.version_id.as_deref(), Some("2"));
        assert_eq!(os.machine.as_deref(), Some("x86_64"));
        assert!(os.kernel_version.unwrap().starts_with("#1 SMP"));
        assert!(
            os.pretty_name
                .unwrap()
                .starts_with("Ferrovirt test guest 2")
        );
    }

    #[test]
    fn users_filesystems_and_the_rest() {
        let u = users(r#"{"return": [{"login-time": 1796255763.25, "user": "root"}]}"#).unwrap();
        assert_eq!(u[0].user_name, "root");
        assert_eq!(
            u[0].login_time.as_ref().unwrap().as_f64(),
            Some(1796255763.25)
        );
        let fs = filesystems(r#"{"return": [{"name": "sr0", "mountpoint": "/run/cidata", "type": "iso9660", "used-bytes": 376832, "total-bytes": 376832, "disk": [{"serial": "cid", "bus-type": "sata", "bus": 0, "unit": 0, "target": 0}]}]}"#).unwrap();
        assert_eq!(
            (
                fs[0].disk_name.as_str(),
                fs[0].mount_point.as_str(),
                fs[0].file_system_type.as_str()
            ),
            ("sr0", "/run/cidata", "iso9660")
        );
        assert_eq!(fs[0].total_bytes, 376832);
        assert_eq!(fs[0].disk[0].bus_type, "sata");
        assert_eq!(fs[0].disk[0].serial.as_deref(), Some("cid"));
        assert!(filesystems(r#"{"return": []}"#).unwrap().is_empty());
        assert_eq!(
            host_name(r#"{"return": {"host-name": "ferrovirt"}}"#).unwrap(),
            "ferrovirt"
        );
        assert_eq!(
            timezone(r#"{"return": {"zone": "UTC", "offset": 0}}"#).unwrap(),
            "UTC, 0"
        );
        let (v, cmds) = info(r#"{"return": {"version": "7.2.0", "supported_commands": [{"enabled": true, "name": "guest-ping", "success-response": true}, {"enabled": false, "name": "guest-exec", "success-response": true}]}}"#).unwrap();
        assert_eq!(v.as_deref(), Some("7.2.0"));
        assert_eq!(
            (cmds[0].name.as_str(), cmds[0].enabled, cmds[1].enabled),
            ("guest-ping", true, false)
        );
    }

    #[test]
    fn interfaces_leave_loopback_out() {
        let i = interfaces(IFACES).unwrap();
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].interface_name, "eth0");
        assert_eq!(i[0].mac.as_deref(), Some("02:00:00:aa:bb:cc"));
        assert_eq!(i[0].ip_addresses, ["10.0.2.2", "fe80::1"]);
    }

    #[test]
    fn errors_name_the_command_and_the_reply() {
        let e = os_info(r#"{"error": {"class": "CommandNotFound"}}"#).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("guest-get-osinfo") && m.contains("CommandNotFound"),
            "{m}"
        );
    }
}
