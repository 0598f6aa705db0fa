//! The command socket's wire format: one JSON object per line, request then response.
//!
//! Requests are internally tagged by `command`, so a human can type them into
//! `socat - UNIX-CONNECT:<vmi-dir>/launcher.sock`:
//!
//! ```text
//! {"command":"ping"}                          -> {"pong":{"version":"0.1.0","pid":42}}
//! {"command":"define_and_start","domain_xml":"<domain ...>"} -> {"domain_info":{...}}
//! {"command":"shutdown"}                      -> "ok"
//! {"command":"domain_info"}                   -> {"domain_info":null} before any define
//! {"command":"watch_events"}                  -> "ok", then {"event":{...}} lines
//! {"command":"leases"}                        -> {"leases":[{"interface":..,"mac":..,"ip":..}]}
//! {"command":"watch_agent"}                   -> "ok", then {"agent":{"connected":..,..}} lines
//! {"command":"guest_agent_info"}              -> {"guest_agent_info":{..}} (KubeVirt's shape)
//! {"command":"guest_users"}                   -> {"guest_users":[..]}
//! {"command":"guest_filesystems"}             -> {"guest_filesystems":[..]}
//! {"command":"guest_ping","timeout_seconds":1} -> "ok" when the guest agent answers
//! {"command":"guest_exec","command_line":["cat","/x"],"timeout_seconds":1}
//!                                             -> {"guest_exec":{"exit_code":0}}
//! {"command":"downward_metrics","node_name":"n","disk":"/x/vhostmd0"} -> "ok"
//! anything that fails                         -> {"error":"message"}
//! ```
//!
//! `watch_events` first replays every event of this launcher's lifetime (one VM per
//! launcher, so the history is short), then follows live ones until the client closes
//! the connection or the launcher exits.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentState, GuestAgentInfo, GuestExecResult, GuestFilesystem, GuestUser};

/// A request from virt-handler (or a human) to the launcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Define the domain and start it. Idempotent: the same domain already running
    /// answers with its info. With `paused`, QEMU starts with its vCPUs stopped (it has
    /// opened its disks) until `unpause`; that pause and resume are not reported as events.
    DefineAndStart {
        domain_xml: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        paused: bool,
        /// The guest starts paused because the user asked (the VMI's `startStrategy:
        /// Paused`): the vCPUs run only after `unpause`, and this pause, unlike
        /// `paused`'s hold, is reported as an event like any pause. Wins over `paused`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        start_paused: bool,
        /// DHCP for the guest's pod-network interfaces, served by the launcher (it is in
        /// the pod's network namespace) on the bridges virt-handler created there. Started
        /// before the domain. Absent in older handlers' requests: no DHCP.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dhcp: Vec<DhcpInterface>,
        /// passt for the guest's interfaces with the passt binding, started by the
        /// launcher (in the pod's network namespace, as the launcher's user) before the
        /// domain, which joins each by its socket. Absent in older handlers' requests.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passt: Vec<PasstInterface>,
        /// virtiofsd for the VMI's filesystems, started by the launcher (as its user, in a
        /// user namespace of its own) before the domain, which connects to each socket.
        /// Absent in older handlers' requests.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        virtiofs: Vec<VirtiofsShare>,
    },
    /// The files QEMU holds open (device and inode of each), to check that it opened the
    /// files the handler checked.
    OpenFiles,
    /// Press the ACPI power button.
    Shutdown,
    /// Pull the plug.
    Destroy,
    Pause,
    Unpause,
    DomainInfo,
    /// Turn this connection into a stream of [`Event`]s.
    WatchEvents,
    /// The DHCP leases the launcher has handed out (answered with [`Response::Leases`]).
    Leases,
    /// Turn this connection into a stream of [`AgentState`]s: the current one, then each
    /// change. A launcher without agent support answers `bad request`.
    WatchAgent,
    /// Ask the guest agent now: KubeVirt's guest agent info (`guestosinfo`).
    GuestAgentInfo,
    /// Ask the guest agent now: the logged-in users (`userlist`).
    GuestUsers,
    /// Ask the guest agent now: the mounted filesystems (`filesystemlist`).
    GuestFilesystems,
    /// `guest-ping` to the guest agent, answered `ok` when it answers within the time (a
    /// `guestAgentPing` probe, `virt-launcher probe --guest-agent-ping`).
    GuestPing {
        timeout_seconds: u32,
    },
    /// Runs a command in the guest through the agent (`guest-exec`) and waits at most
    /// `timeout_seconds` for its exit (an `exec` probe, `virt-launcher probe --command`):
    /// answered with [`Response::GuestExec`]. A command still running then is left alone.
    GuestExec {
        command_line: Vec<String>,
        timeout_seconds: u32,
    },
    /// Keep KubeVirt's downward metrics coming for the guest ([`crate::downward_metrics`]):
    /// rewrite the metrics disk at `disk` every refresh period, and answer the guest on the
    /// virtio-serial channel whose socket QEMU binds at `channel` (paths as the launcher
    /// sees them). `node_name` is the metrics' `HostName`. Sent after `define_and_start`;
    /// answered `ok`; the launcher starts this once, a repeat changes nothing.
    DownwardMetrics {
        node_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
}

/// What the launcher's DHCP server offers on one bridge: one address, to one MAC. The DNS
/// servers and search domains are the launcher's own (the pod's `/etc/resolv.conf`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpInterface {
    /// The VMI's interface name (`spec.domain.devices.interfaces[].name`).
    pub interface: String,
    /// The bridge to serve on, e.g. `k6t-eth0`.
    pub bridge: String,
    /// The server's own address on that bridge (the DHCP server identifier).
    pub server_ip: String,
    /// The guest's MAC: only its requests are answered.
    pub mac: String,
    /// The address offered, and its prefix length.
    pub ip: String,
    pub prefix: u8,
    /// The default gateway offered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The guest's IPv6 address, offered by DHCPv6 on the same bridge (masquerade on a
    /// pod with an IPv6 address); the server answers from the bridge's link-local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// One passt process: it copies the pod interface's address, routes and DNS to the guest
/// (by its own DHCP) and forwards the pod's ports to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasstInterface {
    /// The VMI's interface name.
    pub interface: String,
    /// The socket QEMU connects to (`VmiDir::passt_socket` of the launcher's directory).
    pub socket: String,
    /// The pod's interface passt takes its addresses from (`eth0`).
    pub pod_interface: String,
    /// The ports forwarded to the guest; both empty: every port of both protocols.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp: Vec<u16>,
}

/// One virtiofsd process: it serves the directory `source` (as the launcher sees it) to
/// the guest on the vhost-user socket `socket`, under the tag `volume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtiofsShare {
    /// The VMI's volume (the guest mounts it by this name).
    pub volume: String,
    /// The socket QEMU connects to (`VmiDir::virtiofs_socket` of the launcher's directory).
    pub socket: String,
    /// The directory shared.
    pub source: String,
}

/// An address the launcher's DHCP server acknowledged (IPv4 by DHCP, IPv6 by DHCPv6: one
/// lease each, told apart by the address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub interface: String,
    pub mac: String,
    pub ip: String,
}

/// The launcher's answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Pong(Pong),
    Ok,
    /// `None` until a domain was defined.
    DomainInfo(Option<DomainInfo>),
    OpenFiles(Vec<OpenFile>),
    Leases(Vec<Lease>),
    Event(Event),
    Agent(AgentState),
    GuestAgentInfo(Box<GuestAgentInfo>),
    GuestUsers(Vec<GuestUser>),
    GuestFilesystems(Vec<GuestFilesystem>),
    GuestExec(GuestExecResult),
    /// The request failed: `{"error":{"kind":..,"message":..}}`.
    Error(Failure),
}

/// A failed request: what the caller should make of it, and the launcher's error chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// What a failure means for the caller (virt-handler retries the transient ones and fails
/// the VMI only on the permanent ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Asking again later may succeed: libvirt or the guest agent timed out or was busy,
    /// the launcher's own I/O or worker failed.
    Transient,
    /// Asking again cannot help: QEMU or libvirt refused the domain, the launcher runs or
    /// ran another one, the request was malformed. The VMI fails with the message.
    Permanent,
    /// The request needs a domain and none is defined (not yet, or no longer).
    NoDomain,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// A file a process holds open: its device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub version: String,
    /// The launcher's own pid (in its PID namespace).
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// libvirt's reason for the state, e.g. `booted`, `shutdown`, `destroyed`, `crashed`.
    pub reason: String,
    /// The QEMU process, when it runs and its pid is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    /// The guest is being shut down.
    ShuttingDown,
    Shutoff,
    Crashed,
    PmSuspended,
    Unknown,
}

/// A domain lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Started,
    Paused,
    Resumed,
    /// The guest reset itself inside the same QEMU (a reboot, a panic with `panic=N`, a
    /// triple fault; libvirt's reboot event). `count`: resets since the domain started.
    /// Consecutive resets are replayed as the last one only.
    Rebooted {
        count: u64,
    },
    Stopped {
        reason: StopReason,
    },
}

/// Why the domain stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The guest powered itself off (or answered the ACPI power button).
    Shutdown,
    /// Destroyed: by a `destroy` request, or by the launcher after the grace period.
    Destroyed,
    /// QEMU died on its own.
    Crashed,
    /// libvirt could not keep the domain up (e.g. QEMU failed at start).
    Failed,
    /// Migrated, saved, restored from a snapshot: not used by Ferrovirt yet.
    Other,
}

impl Request {
    /// The request as one line, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

impl Response {
    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Serializing these plain enums cannot fail.
    let mut line = serde_json::to_string(value).expect("protocol types serialize");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_command() {
        assert_eq!(Request::Ping.to_line(), "{\"command\":\"ping\"}\n");
        let req: Request =
            serde_json::from_str(r#"{"command":"define_and_start","domain_xml":"<domain/>"}"#)
                .unwrap();
        assert_eq!(
            req,
            Request::DefineAndStart {
                domain_xml: "<domain/>".into(),
                paused: false,
                start_paused: false,
                dhcp: vec![],
                passt: vec![],
                virtiofs: vec![],
            }
        );
        let paused = Request::DefineAndStart {
            domain_xml: "<domain/>".into(),
            paused: true,
            start_paused: false,
            dhcp: vec![],
            passt: vec![],
            virtiofs: vec![],
        };
        assert!(paused.to_line().contains("\"paused\":true"));
        assert!(!paused.to_line().contains("start_paused"), "the old line");
        assert!(!paused.to_line().contains("dhcp"), "no DHCP: the old line");
    }

    #[test]
    fn dhcp_rides_on_define_and_start() {
        let req = Request::DefineAndStart {
            domain_xml: "<domain/>".into(),
            paused: false,
            start_paused: false,
            dhcp: vec![DhcpInterface {
                interface: "default".into(),
                bridge: "k6t-eth0".into(),
                server_ip: "10.0.2.1".into(),
                mac: "02:00:00:00:00:01".into(),
                ip: "10.0.2.2".into(),
                prefix: 24,
                router: Some("10.0.2.1".into()),
                mtu: Some(1500),
                hostname: None,
                ipv6: None,
            }],
            passt: vec![PasstInterface {
                interface: "default".into(),
                socket: "/var/run/kubevirt-private/vmi/passt-default.sock".into(),
                pod_interface: "eth0".into(),
                tcp: vec![80],
                udp: vec![],
            }],
            virtiofs: vec![VirtiofsShare {
                volume: "app-config".into(),
                socket: "/var/run/kubevirt-private/vmi/virtiofs-app-config.sock".into(),
                source: "/var/run/ferrovirt-private/config-map/1".into(),
            }],
        };
        assert!(!req.to_line().contains("udp"), "{}", req.to_line());
        let back: Request = serde_json::from_str(&req.to_line()).unwrap();
        assert_eq!(back, req);
        assert_eq!(Request::Leases.to_line(), "{\"command\":\"leases\"}\n");
    }

    #[test]
    fn probe_lines() {
        let exec = Request::GuestExec {
            command_line: vec!["cat".into(), "/x".into()],
            timeout_seconds: 2,
        };
        assert_eq!(
            exec.to_line(),
            "{\"command\":\"guest_exec\",\"command_line\":[\"cat\",\"/x\"],\"timeout_seconds\":2}\n"
        );
        let ping: Request =
            serde_json::from_str(r#"{"command":"guest_ping","timeout_seconds":1}"#).unwrap();
        assert_eq!(ping, Request::GuestPing { timeout_seconds: 1 });
        let done = Response::GuestExec(GuestExecResult {
            exit_code: Some(1),
            ..Default::default()
        });
        assert_eq!(done.to_line(), "{\"guest_exec\":{\"exit_code\":1}}\n");
    }

    #[test]
    fn agent_lines() {
        assert_eq!(
            Request::WatchAgent.to_line(),
            "{\"command\":\"watch_agent\"}\n"
        );
        let line = Response::Agent(AgentState {
            connected: true,
            ..Default::default()
        })
        .to_line();
        assert_eq!(line, "{\"agent\":{\"connected\":true}}\n");
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Response::Agent(s) if s.connected));
        assert_eq!(
            Response::GuestUsers(vec![]).to_line(),
            "{\"guest_users\":[]}\n"
        );
    }

    #[test]
    fn errors_are_an_error_field_with_their_kind() {
        let line =
            Response::Error(Failure::new(FailureKind::NoDomain, "no domain defined")).to_line();
        assert_eq!(
            line,
            "{\"error\":{\"kind\":\"no_domain\",\"message\":\"no domain defined\"}}\n"
        );
        for (kind, word) in [
            (FailureKind::Transient, "transient"),
            (FailureKind::Permanent, "permanent"),
        ] {
            let line = Response::Error(Failure::new(kind, "m")).to_line();
            assert!(line.contains(&format!("\"kind\":\"{word}\"")), "{line}");
            let back: Response = serde_json::from_str(&line).unwrap();
            assert_eq!(back, Response::Error(Failure::new(kind, "m")));
        }
        assert_eq!(Response::Ok.to_line(), "\"ok\"\n");
    }

    #[test]
    fn events_name_their_type_and_reason() {
        let line = Response::Event(Event::Stopped {
            reason: StopReason::Crashed,
        })
        .to_line();
        assert_eq!(
            line,
            "{\"event\":{\"type\":\"stopped\",\"reason\":\"crashed\"}}\n"
        );
    }
}
