//! The QEMU guest agent as the launcher reports it (docs/guest-agent.md): the state it
//! streams to virt-handler (`watch_agent`), and the answers of the `guest_agent_info`,
//! `guest_users` and `guest_filesystems` requests, which are KubeVirt's API shapes
//! (`VirtualMachineInstanceGuestAgentInfo`, `VirtualMachineInstanceGuestOSUser`,
//! `VirtualMachineInstanceFileSystem`, field names as KubeVirt writes them), so virt-handler
//! and virt-api pass them on unchanged.

use serde::{Deserialize, Serialize};

/// The agent's connection and what virt-handler writes into VMI status from it. The
/// launcher sends it on `watch_agent` first as it is, then whenever it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// libvirt's agent lifecycle: the guest's agent opened its channel (and answers).
    pub connected: bool,
    /// `guest-get-osinfo`, kept after a disconnect (the last the agent said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<GuestOsInfo>,
    /// `guest-network-get-interfaces`, loopback left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<GuestInterface>,
}

/// KubeVirt's `VirtualMachineInstanceGuestOSInfo` (`status.guestOSInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestOsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A network interface inside the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestInterface {
    /// The guest's name for it (`eth0`).
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses without their prefix length, IPv4 first as the agent lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
}

/// KubeVirt's `VirtualMachineInstanceGuestAgentInfo` (`virtctl guestosinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestAgentInfo {
    #[serde(
        default,
        rename = "guestAgentVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_commands: Vec<GuestAgentCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Always present, as in KubeVirt (a Go struct is never omitted).
    #[serde(default)]
    pub os: GuestOsInfo,
    /// `"<zone>, <offset in seconds>"`, as KubeVirt formats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// At most [`INFO_LIST_LIMIT`] users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_list: Vec<GuestUser>,
    #[serde(default)]
    pub fs_info: GuestFsInfo,
}

/// A command run in the guest by the agent (`guest-exec`, then `guest-exec-status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExecResult {
    /// The command's exit code; `None` when it still ran at the timeout or ended by a
    /// signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The signal that ended it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
}

impl GuestExecResult {
    /// The command ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// How many users and filesystems `guestosinfo` carries (KubeVirt's limit); `userlist` and
/// `filesystemlist` have them all.
pub const INFO_LIST_LIMIT: usize = 10;

/// A command the agent knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAgentCommand {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enabled: bool,
}

/// KubeVirt's `VirtualMachineInstanceFileSystemInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFsInfo {
    /// KubeVirt writes `null` for none (a Go slice without omitempty): read as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub disks: Vec<GuestFilesystem>,
}

/// KubeVirt's `VirtualMachineInstanceGuestOSUser`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestUser {
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Seconds since the epoch (fractional), the earliest login of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_time: Option<serde_json::Number>,
}

/// KubeVirt's `VirtualMachineInstanceFileSystem`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestFilesystem {
    pub disk_name: String,
    pub mount_point: String,
    pub file_system_type: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<GuestFsDisk>,
}

/// KubeVirt's `VirtualMachineInstanceFileSystemDisk`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestFsDisk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub bus_type: String,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// KubeVirt's list answers (`VirtualMachineInstanceGuestOSUserList`,
/// `VirtualMachineInstanceFileSystemList`): `{"metadata":{},"items":[...]}`.
pub fn list<T: Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::json!({ "metadata": {}, "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_agent_info_has_kubevirts_field_names() {
        let info = GuestAgentInfo {
            version: Some("7.2.0".into()),
            supported_commands: vec![GuestAgentCommand {
                name: "guest-ping".into(),
                enabled: true,
            }],
            hostname: Some("g".into()),
            os: GuestOsInfo {
                kernel_release: Some("6.1.0".into()),
                version_id: Some("2".into()),
                ..Default::default()
            },
            timezone: Some("UTC, 0".into()),
            user_list: vec![GuestUser {
                user_name: "root".into(),
                domain: None,
                login_time: Some(1796255763.into()),
            }],
            fs_info: GuestFsInfo::default(),
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["guestAgentVersion"], "7.2.0");
        assert_eq!(v["supportedCommands"][0]["enabled"], true);
        assert_eq!(v["os"]["kernelRelease"], "6.1.0");
        assert_eq!(v["os"]["versionId"], "2");
        assert_eq!(v["userList"][0]["userName"], "root");
        assert_eq!(v["userList"][0]["loginTime"], 1796255763);
        assert_eq!(v["fsInfo"]["disks"], serde_json::json!([]));
        let back: GuestAgentInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
        // KubeVirt's own null list reads as empty.
        let go: GuestFsInfo = serde_json::from_str(r#"{"disks":null}"#).unwrap();
        assert!(go.disks.is_empty());
    }

    #[test]
    fn lists_are_kubevirts_list_objects() {
        let fs = GuestFilesystem {
            disk_name: "vdb".into(),
            mount_point: "/run/cidata".into(),
            file_system_type: "iso9660".into(),
            used_bytes: 2048,
            total_bytes: 2048,
            disk: vec![GuestFsDisk {
                serial: None,
                bus_type: "virtio".into(),
            }],
        };
        let v = list(&[fs]);
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["items"][0]["diskName"], "vdb");
        assert_eq!(v["items"][0]["mountPoint"], "/run/cidata");
        assert_eq!(v["items"][0]["fileSystemType"], "iso9660");
        assert_eq!(v["items"][0]["disk"][0]["busType"], "virtio");
        assert_eq!(
            list::<GuestUser>(&[]),
            serde_json::json!({"metadata": {}, "items": []})
        );
    }
}
