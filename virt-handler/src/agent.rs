//! The QEMU guest agent on the node side (docs/guest-agent.md): the launcher's agent
//! state into VMI status (`status.guestOSInfo` and the `AgentConnected` condition, as
//! KubeVirt's virt-handler writes them), and the answers virt-api asks for (`guestosinfo`,
//! `userlist`, `filesystemlist`), passed on in KubeVirt's shapes.

use std::path::Path;

use crds::{Condition, GuestOsInfo, VirtualMachineInstanceStatus};
use ferrovirt_node_contract::agent::{self, AgentState};
use ferrovirt_node_contract::client::{AgentStream, LauncherClient};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{Error, chain};

/// KubeVirt's condition type: present (True) while the agent is connected, removed
/// when it is not.
pub const AGENT_CONNECTED: &str = "AgentConnected";

/// The launcher's agent stream; `None` (logged) when the launcher cannot give one: an
/// older launcher without agent support, or one that went away (its events say so).
pub async fn watch(socket: &Path) -> Option<AgentStream> {
    let outcome = async { LauncherClient::connect(socket).await?.watch_agent().await }.await;
    match outcome {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::info!(error = %chain(&Error::from(e)), "no guest agent stream from the launcher");
            None
        }
    }
}

/// The stream's next state; never ready without a stream; `None` once it ended.
pub async fn next(stream: &mut Option<AgentStream>) -> Option<AgentState> {
    match stream {
        Some(s) => s.next().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Writes what `state` says into `status`: the OS once the agent named it (kept after a
/// disconnect, as KubeVirt keeps it), and the `AgentConnected` condition.
pub fn apply(status: &mut VirtualMachineInstanceStatus, state: &AgentState, now: &Time) {
    if let Some(os) = &state.os {
        status.guest_os_info = Some(os_info(os));
    }
    if state.connected {
        // KubeVirt's condition: status True, no reason; the time of the first sighting.
        if !status.conditions.iter().any(|c| c.type_ == AGENT_CONNECTED) {
            crds::condition::set(
                &mut status.conditions,
                Condition {
                    type_: AGENT_CONNECTED.into(),
                    status: "True".into(),
                    reason: None,
                    message: None,
                    last_probe_time: None,
                    last_transition_time: Some(now.clone()),
                },
            );
        }
    } else {
        crds::condition::remove(&mut status.conditions, AGENT_CONNECTED);
    }
}

fn os_info(os: &agent::GuestOsInfo) -> GuestOsInfo {
    GuestOsInfo {
        name: os.name.clone(),
        id: os.id.clone(),
        pretty_name: os.pretty_name.clone(),
        version: os.version.clone(),
        version_id: os.version_id.clone(),
        kernel_release: os.kernel_release.clone(),
        kernel_version: os.kernel_version.clone(),
        machine: os.machine.clone(),
    }
}

/// virt-api's agent subresources: `guestosinfo`, `userlist`, `filesystemlist`.
pub fn is_subresource(sub: &str) -> bool {
    matches!(sub, "guestosinfo" | "userlist" | "filesystemlist")
}

/// The JSON answer of subresource `sub` (see [`is_subresource`]), asked of the launcher.
pub async fn answer(socket: &Path, sub: &str) -> Result<serde_json::Value, Error> {
    let mut c = LauncherClient::connect(socket).await?;
    Ok(match sub {
        "guestosinfo" => serde_json::to_value(c.guest_agent_info().await?)?,
        "userlist" => agent::list(&c.guest_users().await?),
        _ => agent::list(&c.guest_filesystems().await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    #[test]
    fn connected_agent_sets_os_and_condition_and_a_disconnect_removes_it() {
        let mut s = VirtualMachineInstanceStatus::default();
        let os = agent::GuestOsInfo {
            kernel_release: Some("6.1.0-57-amd64".into()),
            id: Some("ferrovirt".into()),
            ..Default::default()
        };
        let up = AgentState {
            connected: true,
            os: Some(os),
            interfaces: vec![],
        };
        apply(&mut s, &up, &t(1));
        let info = s.guest_os_info.clone().unwrap();
        assert_eq!(info.kernel_release.as_deref(), Some("6.1.0-57-amd64"));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["guestOSInfo"]["kernelRelease"], "6.1.0-57-amd64");
        assert_eq!(v["guestOSInfo"]["id"], "ferrovirt");
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()),
            ("AgentConnected", "True", None)
        );
        // Again, later: the condition keeps its time.
        apply(&mut s, &up, &t(9));
        assert_eq!(s.conditions[0].last_transition_time, Some(t(1)));

        let down = AgentState {
            connected: false,
            ..up.clone()
        };
        apply(&mut s, &down, &t(20));
        assert!(s.conditions.is_empty(), "KubeVirt removes AgentConnected");
        assert_eq!(s.guest_os_info, Some(info), "the last OS info stays");
    }
}
