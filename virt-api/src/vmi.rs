//! The VMI subresources' checks, as KubeVirt's virt-api makes them before it goes to the
//! handler (pkg/virt-api/rest: console.go, vnc.go, lifecycle.go), on the VMI's JSON.

use serde_json::Value;

use crate::status::{Kind, Status};

fn phase(vmi: &Value) -> &str {
    vmi["status"]["phase"].as_str().unwrap_or_default()
}

fn name(vmi: &Value) -> &str {
    vmi["metadata"]["name"].as_str().unwrap_or_default()
}

/// KubeVirt's `HasCondition(vmi, Paused)`: the condition is there (any status).
pub fn has_paused_condition(vmi: &Value) -> bool {
    vmi["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Paused"))
}

/// `console`: a serial console, a VMI that has not failed and runs.
pub fn console(vmi: &Value) -> Result<(), Status> {
    if vmi["spec"]["domain"]["devices"]["autoattachSerialConsole"] == Value::Bool(false) {
        return Err(Status::bad_request("No serial consoles are present."));
    }
    if phase(vmi) == "Failed" {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            name(vmi),
            "VMI is in failed status",
        ));
    }
    if phase(vmi) != "Running" {
        return Err(Status::bad_request("VMI is not running"));
    }
    Ok(())
}

/// `vnc`: a graphics device and a running VMI.
pub fn vnc(vmi: &Value) -> Result<(), Status> {
    if vmi["spec"]["domain"]["devices"]["autoattachGraphicsDevice"] == Value::Bool(false) {
        return Err(Status::bad_request("No graphics devices are present."));
    }
    if phase(vmi) != "Running" {
        return Err(Status::bad_request("VMI is not running"));
    }
    Ok(())
}

/// `pause`: running and not paused. KubeVirt's message for a VMI that does not run says
/// "VM is not running"; it is kept.
pub fn pause(vmi: &Value) -> Result<(), Status> {
    let n = name(vmi);
    if phase(vmi) != "Running" {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            n,
            "VM is not running",
        ));
    }
    // A paused guest answers no exec, HTTP or TCP probe: kubelet would stop it. A
    // guestAgentPing probe of a paused guest passes (virt-launcher probe).
    let liveness = &vmi["spec"]["livenessProbe"];
    if liveness.is_object() && liveness.get("guestAgentPing").is_none() {
        return Err(Status::forbidden(&format!(
            "virtualmachineinstance.kubevirt.io \"{n}\" is forbidden: Pausing VMIs with a \
             non-GuestAgentPing LivenessProbe is not supported"
        )));
    }
    if has_paused_condition(vmi) {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            n,
            "VMI is already paused",
        ));
    }
    Ok(())
}

/// `unpause`: running and paused.
pub fn unpause(vmi: &Value) -> Result<(), Status> {
    let n = name(vmi);
    if phase(vmi) != "Running" {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            n,
            "VMI is not running",
        ));
    }
    if !has_paused_condition(vmi) {
        return Err(Status::conflict(
            Kind::VirtualMachineInstance,
            n,
            "VMI is not paused",
        ));
    }
    Ok(())
}

/// `dryRun: ["All"]` in a pause/unpause options body (the handler is then not called).
pub fn dry_run(body: &[u8]) -> Result<bool, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(&format!(
            "Can not unmarshal Request body to struct, error: {e}"
        ))
    })?;
    Ok(v["dryRun"]
        .as_array()
        .and_then(|a| a.first())
        .is_some_and(|d| d == "All"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(phase: &str, extra: Value) -> Value {
        let mut v = json!({"metadata": {"name": "v1"}, "spec": {"domain": {"devices": {}}}, "status": {"phase": phase}});
        if let Some(o) = extra.as_object() {
            for (k, val) in o {
                match k.as_str() {
                    "devices" => v["spec"]["domain"]["devices"] = val.clone(),
                    "conditions" => v["status"]["conditions"] = val.clone(),
                    _ => {}
                }
            }
        }
        v
    }

    #[test]
    fn console_and_vnc_refusals_read_as_kubevirts() {
        let no_serial = vmi(
            "Running",
            json!({"devices": {"autoattachSerialConsole": false}}),
        );
        assert_eq!(
            console(&no_serial).unwrap_err().message(),
            "No serial consoles are present."
        );
        let e = console(&vmi("Scheduled", json!({}))).unwrap_err();
        assert_eq!((e.code, e.message()), (400, "VMI is not running"));
        assert_eq!(console(&vmi("Failed", json!({}))).unwrap_err().code, 409);
        console(&vmi("Running", json!({}))).unwrap();
        let no_vnc = vmi(
            "Running",
            json!({"devices": {"autoattachGraphicsDevice": false}}),
        );
        assert_eq!(
            vnc(&no_vnc).unwrap_err().message(),
            "No graphics devices are present."
        );
        vnc(&vmi("Running", json!({}))).unwrap();
    }

    #[test]
    fn pause_and_unpause_follow_the_paused_condition() {
        let running = vmi("Running", json!({}));
        let paused = vmi(
            "Running",
            json!({"conditions": [{"type": "Paused", "status": "True"}]}),
        );
        pause(&running).unwrap();
        let mut probed = running.clone();
        probed["spec"]["livenessProbe"] = json!({"exec": {"command": ["true"]}});
        assert!(
            pause(&probed)
                .unwrap_err()
                .message()
                .ends_with("Pausing VMIs with a non-GuestAgentPing LivenessProbe is not supported")
        );
        probed["spec"]["livenessProbe"] = json!({"guestAgentPing": {}});
        pause(&probed).unwrap();
        assert!(
            pause(&paused)
                .unwrap_err()
                .message()
                .ends_with("VMI is already paused")
        );
        assert!(
            pause(&vmi("Pending", json!({})))
                .unwrap_err()
                .message()
                .ends_with("VM is not running")
        );
        unpause(&paused).unwrap();
        assert!(
            unpause(&running)
                .unwrap_err()
                .message()
                .ends_with("VMI is not paused")
        );
        assert_eq!(unpause(&vmi("Succeeded", json!({}))).unwrap_err().code, 409);
        assert!(dry_run(br#"{"dryRun":["All"]}"#).unwrap());
        assert!(!dry_run(b"{}").unwrap());
        assert!(!dry_run(b"").unwrap());
        assert_eq!(dry_run(b"{").unwrap_err().code, 400);
    }
}
