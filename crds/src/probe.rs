//! Liveness and readiness probes of a VMI (KubeVirt's `Probe`): kubelet runs them against
//! the launcher pod's compute container. `httpGet` and `tcpSocket` reach the guest through
//! the pod's address (the pod network's binding forwards to the guest); `exec` and
//! `guestAgentPing` go through the guest agent (`virt-launcher probe` in the compute
//! container asks the launcher). Kubernetes' `grpc` probe is not KubeVirt's and is not
//! in the schema, so it is refused by name.

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A health check of the guest: exactly one of `exec`, `guestAgentPing`, `httpGet` and
/// `tcpSocket`, with kubelet's timing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.exec) ? 1 : 0) + (has(self.guestAgentPing) ? 1 : 0) + (has(self.httpGet) ? 1 : 0) + (has(self.tcpSocket) ? 1 : 0) <= 1",
     "message": "must have exactly one probe type set"},
    {"rule": "has(self.exec) || has(self.guestAgentPing) || has(self.httpGet) || has(self.tcpSocket)",
     "message": "either tcpSocket, exec, guestAgentPing or httpGet must be set"},
    {"rule": "!has(self.exec) || (has(self.exec.command) && size(self.exec.command) > 0)",
     "message": "exec needs a command to run in the guest"}
]))]
pub struct Probe {
    /// A command run in the guest through the QEMU guest agent (`guest-exec`); exit code
    /// 0 is success. Fails while the guest agent is not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Asks the QEMU guest agent for an answer (`guest-ping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_agent_ping: Option<GuestAgentPing>,
    /// An HTTP GET to the launcher pod's address, which the pod network forwards to the
    /// guest. Needs a pod network in `networks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_http_get")]
    pub http_get: Option<HTTPGetAction>,
    /// A TCP connection to the launcher pod's address, which the pod network forwards to
    /// the guest. Needs a pod network in `networks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_tcp_socket")]
    pub tcp_socket: Option<TCPSocketAction>,
    /// Seconds after the compute container started before the first probe (the launcher
    /// pod's probe waits 10 seconds more, as KubeVirt's does, for libvirt to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds after which the probe fails. For `exec` the command in the guest is not
    /// stopped. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub timeout_seconds: Option<i32>,
    /// How often to probe. Defaults to 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub period_seconds: Option<i32>,
    /// Consecutive successes after a failure for success. Defaults to 1; must be 1 for a
    /// liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub success_threshold: Option<i32>,
    /// Consecutive failures after a success for failure. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failure_threshold: Option<i32>,
}

/// Contact the guest agent; no settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GuestAgentPing {}

impl Probe {
    /// `timeoutSeconds` with KubeVirt's default (1, also for values below 1).
    pub fn timeout(&self) -> i32 {
        self.timeout_seconds.filter(|t| *t >= 1).unwrap_or(1)
    }

    /// `periodSeconds` with KubeVirt's default (10, also for values below 1).
    pub fn period(&self) -> i32 {
        self.period_seconds.filter(|t| *t >= 1).unwrap_or(10)
    }

    /// `successThreshold` with KubeVirt's default (1, also for values below 1).
    pub fn successes(&self) -> i32 {
        self.success_threshold.filter(|t| *t >= 1).unwrap_or(1)
    }

    /// `failureThreshold` with KubeVirt's default (3, also for values below 1).
    pub fn failures(&self) -> i32 {
        self.failure_threshold.filter(|t| *t >= 1).unwrap_or(3)
    }

    /// Probes the pod's address (`httpGet`, `tcpSocket`), which needs the pod network.
    pub fn uses_the_pod_network(&self) -> bool {
        self.http_get.is_some() || self.tcp_socket.is_some()
    }
}
