//! VMI status from the node's observations, as a pure function: the new status and the
//! merge patch that writes it (lists are atomic in the CRD, so they are written whole).

use crds::{
    Condition, PhaseTransitionTimestamp, VirtualMachineInstanceNetworkInterface,
    VirtualMachineInstanceSpec, VirtualMachineInstanceStatus, VmiPhase,
};
use ferrovirt_node_contract::agent::AgentState;
use ferrovirt_node_contract::protocol::StopReason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::config::Virtualization;
use crate::network::mac_address;

/// What the node saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Running {
        virtualization: Option<Virtualization>,
        /// The interfaces as the pod network's plan has them (addresses included);
        /// `None`: from the spec (name and MAC).
        interfaces: Option<Vec<VirtualMachineInstanceNetworkInterface>>,
    },
    Paused,
    /// The domain stopped; `deleting` when the VMI was being deleted (a stop was asked for).
    Stopped {
        reason: StopReason,
        deleting: bool,
    },
    /// The launcher went away without reporting a stop.
    LauncherGone {
        deleting: bool,
    },
    /// The guest agent's state (crate::agent): `status.guestOSInfo`, `AgentConnected`.
    Agent(AgentState),
    /// `status.interfaces` changed while the domain runs (a DHCP lease, the guest agent's
    /// report; network/status.rs); nothing else does.
    Interfaces(Vec<VirtualMachineInstanceNetworkInterface>),
    /// The VMI cannot run here.
    Failed {
        reason: String,
        message: String,
    },
    /// The guest reset itself (inside the same QEMU): `total` since it started, `recent`
    /// within [`RESET_WINDOW_SECONDS`]; `looping` from [`RESET_LOOP`] resets in the window.
    GuestResets {
        total: u64,
        recent: u32,
        looping: bool,
    },
}

/// The condition type Ferrovirt adds for guest resets (not one of KubeVirt's).
pub const RESET_LOOP_CONDITION: &str = "GuestResetLoop";
/// Resets within [`RESET_WINDOW_SECONDS`] that make a reset loop.
pub const RESET_LOOP: u32 = 3;
pub const RESET_WINDOW_SECONDS: u64 = 60;

/// The interfaces as the domain has them: spec name and MAC.
pub fn interfaces(
    spec: &VirtualMachineInstanceSpec,
    uid: &str,
) -> Vec<VirtualMachineInstanceNetworkInterface> {
    spec.domain
        .devices
        .interfaces
        .iter()
        .map(|i| VirtualMachineInstanceNetworkInterface {
            name: Some(i.name.clone()),
            mac: Some(
                i.mac_address
                    .as_ref()
                    .map(|m| m.replace('-', ":").to_ascii_lowercase())
                    .unwrap_or_else(|| mac_address(uid, &i.name)),
            ),
            info_source: Some("domain".into()),
            ..Default::default()
        })
        .collect()
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<&str>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.map(str::to_owned),
        message: message.map(str::to_owned),
        last_probe_time: None,
        last_transition_time: Some(now.clone()),
    }
}

/// Replaces (or removes, with `None`) the condition of `type_`, by Kubernetes' rule for
/// its transition time (`crds::condition`).
fn set_condition(conditions: &mut Vec<Condition>, type_: &str, new: Option<Condition>) {
    match new {
        Some(new) => crds::condition::set(conditions, new),
        None => crds::condition::remove(conditions, type_),
    }
}

/// The Ready condition of a running guest. With a readiness probe, virt-controller sets it
/// from the launcher pod's readiness (the probe runs on the compute container), so the
/// condition there stays; until there is one, the guest is not ready.
fn running_ready(
    spec: &VirtualMachineInstanceSpec,
    conditions: &[Condition],
    now: &Time,
) -> Condition {
    if spec.readiness_probe.is_none() {
        return condition("Ready", true, None, None, now);
    }
    conditions
        .iter()
        // Not the handler's own Ready=False of a pause or a reset loop, which has ended.
        .find(|c| {
            c.type_ == "Ready"
                && !matches!(c.reason.as_deref(), Some("Paused" | RESET_LOOP_CONDITION))
        })
        .cloned()
        .unwrap_or_else(|| {
            condition(
                "Ready",
                false,
                Some(READINESS_PROBE_PENDING),
                Some("the guest has not passed the VMI's readiness probe yet"),
                now,
            )
        })
}

/// The reason of a running VMI's Ready=False until virt-controller reports its readiness
/// probe.
pub const READINESS_PROBE_PENDING: &str = "ReadinessProbePending";

/// The status after `obs`, or `None` when nothing changes (or the phase is final).
pub fn next(
    current: &VirtualMachineInstanceStatus,
    spec: &VirtualMachineInstanceSpec,
    uid: &str,
    node: &str,
    obs: &Observation,
    now: Time,
) -> Option<VirtualMachineInstanceStatus> {
    if current.phase.is_some_and(VmiPhase::is_final) {
        return None;
    }
    let mut s = current.clone();
    s.node_name = Some(node.to_owned());
    if let Observation::Agent(state) = obs {
        crate::agent::apply(&mut s, state, &now);
        return (s != *current).then_some(s);
    }
    if let Observation::Interfaces(list) = obs {
        s.interfaces = list.clone();
        return (s != *current).then_some(s);
    }
    let (phase, reason) = match obs {
        Observation::Running {
            virtualization,
            interfaces: planned,
        } => {
            if let Some(v) = virtualization {
                s.virtualization = Some(v.status_value().into());
            }
            s.interfaces = planned.clone().unwrap_or_else(|| interfaces(spec, uid));
            let ready = running_ready(spec, &s.conditions, &now);
            set_condition(&mut s.conditions, "Ready", Some(ready));
            set_condition(&mut s.conditions, "Paused", None);
            (VmiPhase::Running, None)
        }
        Observation::Paused => {
            let paused = condition(
                "Paused",
                true,
                Some("PausedByUser"),
                Some("VMI was paused by user"),
                &now,
            );
            set_condition(&mut s.conditions, "Paused", Some(paused));
            set_condition(
                &mut s.conditions,
                "Ready",
                Some(condition("Ready", false, Some("Paused"), None, &now)),
            );
            (VmiPhase::Running, None)
        }
        Observation::Stopped { reason, deleting } => match (reason, deleting) {
            (StopReason::Shutdown, _) | (StopReason::Destroyed, true) => {
                (VmiPhase::Succeeded, None)
            }
            (StopReason::Destroyed, false) => (VmiPhase::Failed, Some("GuestDestroyed")),
            (StopReason::Crashed, _) => (VmiPhase::Failed, Some("GuestCrashed")),
            (StopReason::Failed, _) => (VmiPhase::Failed, Some("DomainFailed")),
            (StopReason::Other, _) => (VmiPhase::Failed, Some("DomainStopped")),
        },
        Observation::GuestResets {
            total,
            recent,
            looping,
        } => {
            let times = |n: u64| if n == 1 { "time" } else { "times" };
            let message = format!(
                "the guest reset itself {total} {} since it started, {recent} in the last \
                 {RESET_WINDOW_SECONDS} s; its serial console log (serial0.log) shows why",
                times(*total)
            );
            let (status, reason) = if *looping {
                (true, "GuestResetLoop")
            } else {
                (false, "NoRecentResets")
            };
            set_condition(
                &mut s.conditions,
                RESET_LOOP_CONDITION,
                Some(condition(
                    RESET_LOOP_CONDITION,
                    status,
                    Some(reason),
                    Some(&message),
                    &now,
                )),
            );
            let ready = if *looping {
                condition("Ready", false, Some("GuestResetLoop"), Some(&message), &now)
            } else {
                running_ready(spec, &s.conditions, &now)
            };
            if !s.conditions.iter().any(|c| c.type_ == "Paused") {
                set_condition(&mut s.conditions, "Ready", Some(ready));
            }
            (VmiPhase::Running, None)
        }
        Observation::Agent(_) | Observation::Interfaces(_) => unreachable!("applied above"),
        Observation::LauncherGone { deleting: true } => (VmiPhase::Succeeded, None),
        Observation::LauncherGone { deleting: false } => (VmiPhase::Failed, Some("LauncherExited")),
        Observation::Failed { reason, message } => {
            let ready = condition("Ready", false, Some(reason), Some(message), &now);
            set_condition(&mut s.conditions, "Ready", Some(ready));
            s.reason = Some(reason.clone());
            (VmiPhase::Failed, None)
        }
    };
    if phase.is_final() {
        set_condition(&mut s.conditions, "Paused", None);
        set_condition(&mut s.conditions, crate::agent::AGENT_CONNECTED, None);
        if !matches!(obs, Observation::Failed { .. }) {
            let r = reason.unwrap_or("GuestShutdown");
            set_condition(
                &mut s.conditions,
                "Ready",
                Some(condition("Ready", false, Some(r), None, &now)),
            );
        }
    }
    if let Some(r) = reason {
        s.reason = Some(r.to_owned());
    }
    if s.phase != Some(phase) {
        s.phase = Some(phase);
        s.phase_transition_timestamps
            .push(PhaseTransitionTimestamp {
                phase: Some(phase),
                phase_transition_timestamp: Some(now),
            });
    }
    (s != *current).then_some(s)
}

/// The server-side apply of `status` on VMI `name` (virt-handler applies the whole status,
/// forced: the lists in it, conditions and interfaces, are atomic in the CRD, so each apply
/// replaces them), guarded by `resource_version`: the status was computed from the VMI at
/// that version, and virt-controller writes the phase too, so a newer VMI is a conflict to
/// read again, not one to overwrite. It goes to the VMI itself: the VMI CRD has no status
/// subresource, as KubeVirt's; the apply names no other field, so virt-handler's field
/// manager owns only the status.
pub fn apply(
    name: &str,
    status: &VirtualMachineInstanceStatus,
    resource_version: Option<&str>,
) -> serde_json::Value {
    use kube::Resource;
    serde_json::json!({
        "apiVersion": crds::VirtualMachineInstance::api_version(&()),
        "kind": crds::VirtualMachineInstance::kind(&()),
        "metadata": {"name": name, "resourceVersion": resource_version},
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    fn spec() -> VirtualMachineInstanceSpec {
        serde_json::from_value(serde_json::json!({
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}, "macAddress": "DE-AD-00-00-BE-AF"}]}},
            "networks": [{"name": "default", "pod": {}}]
        }))
        .unwrap()
    }

    /// The status after the launcher reported the domain running, at t(1).
    fn running() -> VirtualMachineInstanceStatus {
        let obs = Observation::Running {
            virtualization: None,
            interfaces: None,
        };
        next(&scheduled(), &spec(), "u", "n", &obs, t(1)).unwrap()
    }

    fn scheduled() -> VirtualMachineInstanceStatus {
        VirtualMachineInstanceStatus {
            phase: Some(VmiPhase::Scheduled),
            conditions: vec![condition("PodScheduled", true, None, None, &t(0))],
            phase_transition_timestamps: vec![PhaseTransitionTimestamp {
                phase: Some(VmiPhase::Scheduled),
                phase_transition_timestamp: Some(t(0)),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn running_sets_node_ready_interfaces_and_timestamps() {
        let obs = Observation::Running {
            virtualization: Some(Virtualization::Emulation),
            interfaces: None,
        };
        let s = next(&scheduled(), &spec(), "u", "node1", &obs, t(5)).unwrap();
        assert_eq!(s.phase, Some(VmiPhase::Running));
        assert_eq!(s.node_name.as_deref(), Some("node1"));
        assert_eq!(s.virtualization.as_deref(), Some("Emulation"));
        assert_eq!(s.interfaces[0].mac.as_deref(), Some("de:ad:00:00:be:af"));
        assert_eq!(s.phase_transition_timestamps.len(), 2);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert!(
            s.conditions.iter().any(|c| c.type_ == "PodScheduled"),
            "others' conditions stay"
        );
        // Same observation again: nothing to write.
        assert_eq!(next(&s, &spec(), "u", "node1", &obs, t(9)), None);
    }

    #[test]
    fn with_a_readiness_probe_ready_waits_for_virt_controller() {
        let mut probed = spec();
        probed.readiness_probe = Some(serde_json::from_str(r#"{"guestAgentPing": {}}"#).unwrap());
        let obs = Observation::Running {
            virtualization: None,
            interfaces: None,
        };
        let s = next(&scheduled(), &probed, "u", "n", &obs, t(5)).unwrap();
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some(READINESS_PROBE_PENDING))
        );
        // virt-controller set it from the pod: the handler's next writes keep it.
        let mut passed = s.clone();
        crds::condition::set(
            &mut passed.conditions,
            condition("Ready", true, None, None, &t(7)),
        );
        assert_eq!(next(&passed, &probed, "u", "n", &obs, t(9)), None);
    }

    #[test]
    fn a_pod_networks_interfaces_carry_the_pods_address() {
        let planned = vec![VirtualMachineInstanceNetworkInterface {
            name: Some("default".into()),
            ip_address: Some("10.244.0.5".into()),
            ip_addresses: vec!["10.244.0.5".into()],
            mac: Some("de:ad:00:00:be:af".into()),
            interface_name: None,
            info_source: Some("domain".into()),
        }];
        let obs = Observation::Running {
            virtualization: None,
            interfaces: Some(planned.clone()),
        };
        let s = next(&scheduled(), &spec(), "u", "n", &obs, t(5)).unwrap();
        assert_eq!(
            s.interfaces, planned,
            "the IP printer column reads ipAddress"
        );
        // A later change of the interfaces alone (lease, guest agent) leaves the rest.
        let mut merged = planned.clone();
        merged[0].interface_name = Some("eth0".into());
        merged[0].info_source = Some("domain, guest-agent".into());
        let after = next(
            &s,
            &spec(),
            "u",
            "n",
            &Observation::Interfaces(merged.clone()),
            t(6),
        )
        .unwrap();
        assert_eq!(after.interfaces, merged);
        assert_eq!((after.phase, &after.conditions), (s.phase, &s.conditions));
    }

    #[test]
    fn stops_map_to_final_phases_with_reasons() {
        let running = running();
        let stop = |reason, deleting| {
            next(
                &running,
                &spec(),
                "u",
                "n",
                &Observation::Stopped { reason, deleting },
                t(2),
            )
            .unwrap()
        };
        assert_eq!(
            stop(StopReason::Shutdown, false).phase,
            Some(VmiPhase::Succeeded)
        );
        assert_eq!(
            stop(StopReason::Destroyed, true).phase,
            Some(VmiPhase::Succeeded)
        );
        let crashed = stop(StopReason::Crashed, false);
        assert_eq!(
            (crashed.phase, crashed.reason.as_deref()),
            (Some(VmiPhase::Failed), Some("GuestCrashed"))
        );
        assert_eq!(
            stop(StopReason::Destroyed, false).reason.as_deref(),
            Some("GuestDestroyed")
        );
        let ready = crashed
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("GuestCrashed"))
        );
        // Final phases never change.
        assert_eq!(
            next(
                &crashed,
                &spec(),
                "u",
                "n",
                &Observation::Running {
                    virtualization: None,
                    interfaces: None,
                },
                t(3)
            ),
            None
        );
    }

    #[test]
    fn failures_carry_reason_and_message() {
        let obs = Observation::Failed {
            reason: "KVMUnavailable".into(),
            message: "set useEmulation".into(),
        };
        let s = next(&scheduled(), &spec(), "u", "n", &obs, t(1)).unwrap();
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (Some(VmiPhase::Failed), Some("KVMUnavailable"))
        );
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.message.as_deref(), Some("set useEmulation"));
        let p = apply("g", &s, Some("42"));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(
            (&p["apiVersion"], &p["kind"], &p["metadata"]["name"]),
            (
                &serde_json::json!("kubevirt.io/v1"),
                &serde_json::json!("VirtualMachineInstance"),
                &serde_json::json!("g")
            ),
            "server-side apply needs the object's type and name"
        );
        assert_eq!(p["status"]["phase"], "Failed");
    }

    #[test]
    fn pause_keeps_running_with_a_paused_condition() {
        let running = running();
        let paused = next(&running, &spec(), "u", "n", &Observation::Paused, t(2)).unwrap();
        assert_eq!(paused.phase, Some(VmiPhase::Running));
        let cond = paused
            .conditions
            .iter()
            .find(|c| c.type_ == "Paused")
            .unwrap();
        // KubeVirt's condition, as `virtctl pause` users see it.
        assert_eq!(
            (
                cond.status.as_str(),
                cond.reason.as_deref(),
                cond.message.as_deref()
            ),
            ("True", Some("PausedByUser"), Some("VMI was paused by user"))
        );
        let resumed = next(
            &paused,
            &spec(),
            "u",
            "n",
            &Observation::Running {
                virtualization: None,
                interfaces: None,
            },
            t(3),
        )
        .unwrap();
        assert!(!resumed.conditions.iter().any(|c| c.type_ == "Paused"));
    }

    #[test]
    fn a_reset_loop_shows_in_a_condition_and_unreadies_the_vmi() {
        let obs = |total, recent, looping| Observation::GuestResets {
            total,
            recent,
            looping,
        };
        let once = next(&running(), &spec(), "u", "n", &obs(1, 1, false), t(2)).unwrap();
        let cond = |s: &VirtualMachineInstanceStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(once.phase, Some(VmiPhase::Running));
        assert_eq!(cond(&once, RESET_LOOP_CONDITION).status, "False");
        assert!(
            cond(&once, RESET_LOOP_CONDITION)
                .message
                .unwrap()
                .contains("1 time since it started")
        );
        assert_eq!(cond(&once, "Ready").status, "True");

        let looping = next(&once, &spec(), "u", "n", &obs(5, 3, true), t(8)).unwrap();
        let c = cond(&looping, RESET_LOOP_CONDITION);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("GuestResetLoop"))
        );
        assert!(
            c.message
                .unwrap()
                .contains("5 times since it started, 3 in the last 60 s")
        );
        let ready = cond(&looping, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("GuestResetLoop"))
        );

        let quiet = next(&looping, &spec(), "u", "n", &obs(5, 0, false), t(70)).unwrap();
        assert_eq!(cond(&quiet, RESET_LOOP_CONDITION).status, "False");
        assert_eq!(cond(&quiet, "Ready").status, "True");
    }
}
