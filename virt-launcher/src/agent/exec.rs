//! The probes' requests (`guest_ping`, `guest_exec`): KubeVirt's virt-probe asks the guest
//! agent the same way, `guest-ping`, or `guest-exec` followed by `guest-exec-status` until
//! the command exits or the probe's time is up.

use std::time::{Duration, Instant};

use ferrovirt_node_contract::agent::GuestExecResult;
use serde::Deserialize;
use serde_json::json;

use super::parse::ret;
use crate::hypervisor::Hypervisor;
use crate::protocol::DomainState;
use crate::{Error, Result};

/// How often `guest-exec-status` is asked while the command runs.
const STATUS_POLL: Duration = Duration::from_millis(100);

/// `guest-ping`, answered within `timeout_seconds`. A guest paused for no fault (a user's
/// pause, a paused start) answers nothing but passes, as KubeVirt suppresses the probe's
/// failure then; one paused by an I/O error or a crash fails.
pub fn ping(hv: &Hypervisor, timeout_seconds: u32) -> Result<()> {
    if let Some(info) = hv.info()?
        && info.state == DomainState::Paused
        && !paused_by_a_fault(&info.reason)
    {
        return Ok(());
    }
    let reply = hv.agent_execute(&json!({"execute": "guest-ping"}), timeout(timeout_seconds))?;
    ret::<serde_json::Value>("guest-ping", &reply).map(|_| ())
}

/// Runs `command_line` in the guest and waits at most `timeout_seconds` for its exit.
pub fn exec(
    hv: &Hypervisor,
    command_line: &[String],
    timeout_seconds: u32,
) -> Result<GuestExecResult> {
    let (path, args) = command_line
        .split_first()
        .ok_or_else(|| Error::Agent("guest-exec: an empty command".into()))?;
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds.max(1).into());
    #[derive(Deserialize)]
    struct Started {
        pid: i64,
    }
    let started: Started = ret(
        "guest-exec",
        &hv.agent_execute(
            &json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args}}),
            timeout(timeout_seconds),
        )?,
    )?;
    loop {
        let status: Status = ret(
            "guest-exec-status",
            &hv.agent_execute(
                &json!({"execute": "guest-exec-status", "arguments": {"pid": started.pid}}),
                timeout(timeout_seconds),
            )?,
        )?;
        if status.exited || Instant::now() >= deadline {
            return Ok(status.result());
        }
        std::thread::sleep(STATUS_POLL);
    }
}

/// `guest-exec-status`'s answer (qemu-ga's GuestExecStatus, output left out).
#[derive(Debug, Deserialize)]
struct Status {
    exited: bool,
    #[serde(default)]
    exitcode: Option<i64>,
    #[serde(default)]
    signal: Option<i64>,
}

impl Status {
    fn result(&self) -> GuestExecResult {
        GuestExecResult {
            exit_code: if self.exited { self.exitcode } else { None },
            signal: self.signal,
        }
    }
}

/// libvirt's pause reasons (`hypervisor::reason_name`) that are faults.
fn paused_by_a_fault(reason: &str) -> bool {
    matches!(
        reason,
        "ioerror" | "crashed" | "postcopyfailed" | "watchdog" | "apierror"
    ) || reason.starts_with("unknown")
}

/// libvirt's agent timeout for one command of a probe: the probe's own, at least 1 s.
fn timeout(timeout_seconds: u32) -> i32 {
    i32::try_from(timeout_seconds.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fault_pause_fails_a_ping() {
        assert!(!paused_by_a_fault("user"));
        assert!(!paused_by_a_fault("startingup"));
        assert!(paused_by_a_fault("ioerror"));
        assert!(paused_by_a_fault("crashed"));
    }

    #[test]
    fn exec_status_replies() {
        let done: Status = ret("s", r#"{"return":{"exited":true,"exitcode":3}}"#).unwrap();
        assert_eq!(done.result().exit_code, Some(3));
        assert!(!done.result().succeeded());
        let running: Status = ret("s", r#"{"return":{"exited":false}}"#).unwrap();
        assert_eq!(running.result(), GuestExecResult::default());
        let killed: Status = ret("s", r#"{"return":{"exited":true,"signal":9}}"#).unwrap();
        assert_eq!(killed.result().signal, Some(9));
        assert!(ret::<Status>("s", r#"{"error":{"desc":"x"}}"#).is_err());
    }
}
