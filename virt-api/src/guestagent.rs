//! The guest agent subresources of a VMI, as KubeVirt's virt-api serves them
//! (pkg/virt-api/rest/subresource.go: GuestOSInfo, UserList, FilesystemList): `GET`
//! `guestosinfo`, `userlist` and `filesystemlist` on a running VMI whose agent is connected
//! (the `AgentConnected` condition); the VMI's virt-handler asks the launcher, which asks
//! the agent, and the answer comes back in KubeVirt's shape (docs/guest-agent.md). The
//! checks and the reply are here; [`crate::handler`] does the requests.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::status::{Kind, Status};

/// The subresources this module serves.
pub const SUBRESOURCES: &[&str] = &["guestosinfo", "userlist", "filesystemlist"];

/// KubeVirt's checks: the VMI runs and its agent is connected (409 otherwise, in
/// KubeVirt's words).
pub fn check(vmi: &Value) -> Result<(), Status> {
    let name = vmi["metadata"]["name"].as_str().unwrap_or_default();
    if vmi["status"]["phase"] != "Running" {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            name,
            "VMI is not running",
        ));
    }
    let connected = vmi["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "AgentConnected"));
    if !connected {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            name,
            "VMI does not have guest agent connected",
        ));
    }
    Ok(())
}

/// virt-handler's answer as the reply to the client: JSON, passed on as it is.
pub fn reply(body: Bytes) -> Result<Response<Full<Bytes>>, Status> {
    if serde_json::from_slice::<Value>(&body).is_err() {
        return Err(Status::internal("virt-handler's answer is not JSON"));
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_read_as_kubevirts() {
        let vmi = |phase: &str, conditions: Value| json!({"metadata": {"name": "v1"}, "status": {"phase": phase, "conditions": conditions}});
        let e = check(&vmi("Scheduled", json!([]))).unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            e.message(),
            "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"v1\": VMI is not running"
        );
        let e = check(&vmi(
            "Running",
            json!([{"type": "Ready", "status": "True"}]),
        ))
        .unwrap_err();
        assert!(
            e.message()
                .ends_with("VMI does not have guest agent connected"),
            "{}",
            e.message()
        );
        check(&vmi(
            "Running",
            json!([{"type": "AgentConnected", "status": "True"}]),
        ))
        .unwrap();
    }
}
