//! A VMI's `readinessProbe` and `livenessProbe` on the launcher pod's compute container,
//! rendered as KubeVirt renders them (pkg/virt-controller/services/rendercontainer.go):
//! `httpGet` and `tcpSocket` unchanged (kubelet probes the pod's address, which the pod
//! network's binding forwards to the guest); `exec` and `guestAgentPing` become a command
//! in the compute container, `virt-launcher probe`, which asks the guest agent through
//! the launcher (KubeVirt's virt-probe), with one second more for kubelet's timeout; every
//! probe waits 10 seconds more before its first run (KubeVirt's `LibvirtStartupDelay`);
//! unset or non-positive timings get KubeVirt's defaults.
//!
//! Without a VMI readiness probe, the compute container's readiness probe is the
//! launcher's ready file. A VMI readiness probe takes its place, so the ready file becomes
//! the container's startup probe: the container is `started` once the launcher is up (its
//! liveness probe runs only from then), and ready once the guest passes the VMI's probe.
//! Neither decides when the VMI goes to the node: the compute container running does, as
//! in KubeVirt (vmi_controller's `ready_for_node`).

use crds::{Condition, Probe as VmiProbe, VirtualMachineInstance};
use ferrovirt_node_contract::pod::{LAUNCHER_COMMAND, PROBE_SUBCOMMAND};
use k8s_openapi::api::core::v1::{Container, ExecAction, Pod, Probe};

/// KubeVirt's `LibvirtStartupDelay`: seconds added to every VMI probe's initial delay.
pub const LIBVIRT_STARTUP_DELAY_SECONDS: i32 = 10;

/// How long the launcher may take to create its ready file when that is the startup
/// probe (one check a second); after that kubelet stops the container and the VMI fails.
pub const LAUNCHER_STARTUP_SECONDS: i32 = 300;

/// Puts the VMI's probes on the compute container, whose readiness probe is the
/// launcher's ready file.
pub fn apply(vmi: &VirtualMachineInstance, compute: &mut Container) {
    if let Some(probe) = &vmi.spec.readiness_probe {
        compute.startup_probe = compute.readiness_probe.take().map(|ready| Probe {
            failure_threshold: Some(LAUNCHER_STARTUP_SECONDS),
            ..ready
        });
        compute.readiness_probe = Some(render(probe));
    }
    compute.liveness_probe = vmi.spec.liveness_probe.as_ref().map(render);
}

/// The Ready condition of a running VMI with a readiness probe: the launcher pod's, as
/// KubeVirt's controller copies it (`syncReadyConditionFromPod`): the pod is ready when
/// the compute container passed the VMI's probe. `None` for a VMI without a readiness
/// probe (virt-handler sets Ready when the guest runs), and while virt-handler's own
/// Ready=False holds: the guest paused, or resetting in a loop.
pub fn ready_condition(
    vmi: &VirtualMachineInstance,
    conditions: &[Condition],
    pod: &Pod,
) -> Option<Condition> {
    vmi.spec.readiness_probe.as_ref()?;
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Paused") || holds("GuestResetLoop") {
        return None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("PodTerminating".into()),
            message: Some("virt-launcher pod is terminating".into()),
            ..Default::default()
        });
    }
    let pod_ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    Some(match pod_ready {
        Some(c) => Condition {
            type_: "Ready".into(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            ..Default::default()
        },
        None => Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("PodConditionMissing".into()),
            message: Some("virt-launcher pod is missing the Ready condition".into()),
            ..Default::default()
        },
    })
}

/// One VMI probe as the compute container's probe.
pub fn render(p: &VmiProbe) -> Probe {
    let timeout = p.timeout();
    let wrapped = |check: Vec<String>| {
        let mut command = vec![
            LAUNCHER_COMMAND.to_string(),
            PROBE_SUBCOMMAND.into(),
            "--timeout-seconds".into(),
            timeout.to_string(),
        ];
        command.extend(check);
        Some(ExecAction {
            command: Some(command),
        })
    };
    let exec = if p.guest_agent_ping.is_some() {
        wrapped(vec!["--guest-agent-ping".into()])
    } else {
        p.exec.as_ref().and_then(|e| {
            let (first, rest) = e.command.as_deref()?.split_first()?;
            let mut check = vec!["--command".into(), first.clone(), "--".into()];
            check.extend(rest.iter().cloned());
            wrapped(check)
        })
    };
    Probe {
        // The probe command's own work (the socket, the agent) gets one second.
        timeout_seconds: Some(if exec.is_some() { timeout + 1 } else { timeout }),
        exec,
        http_get: p.http_get.clone(),
        tcp_socket: p.tcp_socket.clone(),
        initial_delay_seconds: Some(
            p.initial_delay_seconds.unwrap_or(0).max(0) + LIBVIRT_STARTUP_DELAY_SECONDS,
        ),
        period_seconds: Some(p.period()),
        success_threshold: Some(p.successes()),
        failure_threshold: Some(p.failures()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> VmiProbe {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn exec_and_ping_become_the_launchers_probe_command() {
        let exec = render(&probe(
            "{exec: {command: [cat, /tmp/healthy]}, timeoutSeconds: 2, initialDelaySeconds: 5}",
        ));
        assert_eq!(
            exec.exec.unwrap().command.unwrap(),
            [
                "virt-launcher",
                "probe",
                "--timeout-seconds",
                "2",
                "--command",
                "cat",
                "--",
                "/tmp/healthy"
            ]
        );
        assert_eq!(exec.timeout_seconds, Some(3));
        assert_eq!(exec.initial_delay_seconds, Some(15));
        assert_eq!(
            (
                exec.period_seconds,
                exec.success_threshold,
                exec.failure_threshold
            ),
            (Some(10), Some(1), Some(3)),
            "KubeVirt's defaults"
        );
        let ping = render(&probe("{guestAgentPing: {}, periodSeconds: 0}"));
        assert_eq!(
            ping.exec.unwrap().command.unwrap().join(" "),
            "virt-launcher probe --timeout-seconds 1 --guest-agent-ping"
        );
        assert_eq!(ping.timeout_seconds, Some(2));
        assert_eq!(ping.period_seconds, Some(10));
    }

    #[test]
    fn http_and_tcp_go_to_the_pod_unchanged() {
        let http = render(&probe(
            "{httpGet: {port: 1500, path: /healthz}, periodSeconds: 20, failureThreshold: 1}",
        ));
        assert!(http.exec.is_none());
        let get = http.http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(http.timeout_seconds, Some(1));
        assert_eq!(http.initial_delay_seconds, Some(10));
        assert_eq!(http.failure_threshold, Some(1));
        let tcp = render(&probe("{tcpSocket: {port: 22}}"));
        assert!(tcp.tcp_socket.is_some() && tcp.exec.is_none());
    }

    #[test]
    fn a_readiness_probe_moves_the_ready_file_to_the_startup_probe() {
        let ready_file = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["test".into(), "-e".into(), "/r".into()]),
            }),
            period_seconds: Some(1),
            ..Default::default()
        };
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        let mut plain = Container {
            readiness_probe: Some(ready_file.clone()),
            ..Default::default()
        };
        apply(&vmi, &mut plain);
        assert_eq!(plain.readiness_probe.as_ref(), Some(&ready_file));
        assert!(plain.startup_probe.is_none() && plain.liveness_probe.is_none());

        vmi.spec.readiness_probe = Some(probe("{guestAgentPing: {}}"));
        vmi.spec.liveness_probe = Some(probe("{tcpSocket: {port: 1}}"));
        let mut probed = Container {
            readiness_probe: Some(ready_file.clone()),
            ..Default::default()
        };
        apply(&vmi, &mut probed);
        let startup = probed.startup_probe.as_ref().unwrap();
        assert_eq!(startup.exec, ready_file.exec);
        assert_eq!(startup.failure_threshold, Some(LAUNCHER_STARTUP_SECONDS));
        assert!(probed.readiness_probe.unwrap().exec.is_some());
        assert!(probed.liveness_probe.unwrap().tcp_socket.is_some());
    }

    #[test]
    fn ready_follows_the_pod_as_in_kubevirt() {
        let pod = |ready: &str| -> Pod {
            serde_yaml::from_str(&format!(
                "metadata: {{name: p}}\nstatus: {{conditions: [{{type: Ready, status: '{ready}', reason: ContainersNotReady, message: 'containers with unready status: [compute]'}}]}}"
            ))
            .unwrap()
        };
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        assert_eq!(ready_condition(&vmi, &[], &pod("True")), None, "no probe");
        vmi.spec.readiness_probe = Some(probe("{guestAgentPing: {}}"));
        let not_yet = ready_condition(&vmi, &[], &pod("False")).unwrap();
        assert_eq!(
            (not_yet.status.as_str(), not_yet.reason.as_deref()),
            ("False", Some("ContainersNotReady"))
        );
        assert_eq!(
            ready_condition(&vmi, &[], &pod("True")).unwrap().status,
            "True"
        );
        let paused = Condition {
            type_: "Paused".into(),
            status: "True".into(),
            ..Default::default()
        };
        assert_eq!(ready_condition(&vmi, &[paused], &pod("True")), None);
        let mut going = pod("True");
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(
            ready_condition(&vmi, &[], &going)
                .unwrap()
                .reason
                .as_deref(),
            Some("PodTerminating")
        );
    }
}
