//! What devnode knows about a pod's containers, and the PodStatus kubelet would report for
//! it: a pure function of that knowledge and the pod (tested without a cluster).

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::env::POD_IP;

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub pid: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: DateTime<Utc>,
        pid: i32,
    },
    Terminated(Terminated),
}

/// One container (init or regular) as devnode tracks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: i32,
    pub ready: bool,
    /// Its startup probe passed (or it has none), kubelet's `started`.
    pub started: bool,
}

impl Record {
    pub fn new(name: &str, image: &str) -> Self {
        Record {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restarts: 0,
            ready: false,
            started: false,
        }
    }
    pub fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
    /// Waiting only before its first run (a container in back-off has a last state).
    pub fn never_ran(&self) -> bool {
        matches!(self.state, State::Waiting { .. }) && self.last.is_none()
    }
}

/// How the container's exit reads in its status.
pub fn exit_reason(exit_code: i32) -> &'static str {
    if exit_code == 0 { "Completed" } else { "Error" }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    pub fn terminal(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Everything devnode knows about one pod.
#[derive(Clone, Debug, Default)]
pub struct PodState {
    pub init: Vec<Record>,
    pub main: Vec<Record>,
    pub restart_policy: String,
    /// Volumes are ready and containers may start (PodReadyToStartContainers).
    pub sandbox_ready: bool,
    pub start_time: Option<DateTime<Utc>>,
    /// Set when devnode rejects or gives up on the pod: phase Failed with this reason.
    pub failed: Option<(String, String)>,
}

impl PodState {
    pub fn initialized(&self) -> bool {
        self.init.iter().all(Record::succeeded)
    }

    /// The pod's phase, by the rules kubelet documents: a failed init container with
    /// restartPolicy Never fails the pod; containers that have not started keep it Pending;
    /// once all have stopped, the restart policy decides between Running (they will be
    /// restarted), Succeeded and Failed.
    pub fn phase(&self) -> Phase {
        if self.failed.is_some() {
            return Phase::Failed;
        }
        let never = self.restart_policy == "Never";
        if let Some(init) = self.init.iter().find(|r| !r.succeeded()) {
            return match &init.state {
                State::Terminated(_) if never => Phase::Failed,
                _ => Phase::Pending,
            };
        }
        if self.main.iter().any(Record::never_ran) {
            return Phase::Pending;
        }
        if self
            .main
            .iter()
            .any(|r| !matches!(r.state, State::Terminated(_)))
        {
            return Phase::Running;
        }
        let all_ok = self.main.iter().all(Record::succeeded);
        match self.restart_policy.as_str() {
            "Never" if all_ok => Phase::Succeeded,
            "Never" => Phase::Failed,
            "OnFailure" if all_ok => Phase::Succeeded,
            _ => Phase::Running,
        }
    }
}

fn time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: t.pid.map(container_id),
    }
}

pub fn container_id(pid: i32) -> String {
    format!("devnode://{pid}")
}

fn container_status(r: &Record) -> ContainerStatus {
    let (state, id) = match &r.state {
        State::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            r.last.as_ref().and_then(|t| t.pid),
        ),
        State::Running { started_at, pid } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started_at)),
                }),
                ..Default::default()
            },
            Some(*pid),
        ),
        State::Terminated(t) => (
            ContainerState {
                terminated: Some(terminated(t)),
                ..Default::default()
            },
            t.pid,
        ),
    };
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        container_id: id.map(container_id),
        ready: r.ready && r.running(),
        started: Some(r.running() && r.started),
        restart_count: r.restarts,
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: r.last.as_ref().map(terminated),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Conditions devnode owns; others (PodScheduled, DisruptionTarget, readiness gates) are
/// kept as the pod has them.
const OWNED: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

fn names(records: &[Record], pred: impl Fn(&Record) -> bool) -> String {
    let n: Vec<&str> = records
        .iter()
        .filter(|r| pred(r))
        .map(|r| r.name.as_str())
        .collect();
    format!("[{}]", n.join(" "))
}

fn condition(
    old: &[PodCondition],
    kind: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The PodStatus for the pod as devnode knows it. `now` stamps conditions that change.
pub fn render(pod: &Pod, st: &PodState, now: DateTime<Utc>) -> PodStatus {
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let phase = st.phase();
    let mut conditions: Vec<PodCondition> = old
        .iter()
        .filter(|c| !OWNED.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let gates_ok = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .all(|g| {
            old.iter()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        });
    let initialized = st.initialized();
    let all_ready = st.main.iter().all(|r| r.ready && r.running());
    let (ready_reason, ready_msg) = if phase.terminal() {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: {}",
                names(&st.main, |r| !(r.ready && r.running()))
            )),
        )
    };
    conditions.push(condition(
        &old,
        "PodReadyToStartContainers",
        st.sandbox_ready && !phase.terminal(),
        None,
        None,
        now,
    ));
    conditions.push(condition(
        &old,
        "Initialized",
        initialized,
        Some("ContainersNotInitialized".into()),
        Some(format!(
            "containers with incomplete status: {}",
            names(&st.init, |r| !r.succeeded())
        )),
        now,
    ));
    let ready = all_ready && !phase.terminal();
    conditions.push(condition(
        &old,
        "ContainersReady",
        ready,
        ready_reason.clone(),
        ready_msg.clone(),
        now,
    ));
    let (gate_reason, gate_msg) = if ready && !gates_ok {
        (
            Some("ReadinessGatesNotReady".to_string()),
            Some("the pod's readiness gates are not all True".to_string()),
        )
    } else {
        (ready_reason, ready_msg)
    };
    conditions.push(condition(
        &old,
        "Ready",
        ready && gates_ok,
        gate_reason,
        gate_msg,
        now,
    ));

    let (reason, message) = match &st.failed {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    let with_ip = st.sandbox_ready;
    PodStatus {
        phase: Some(phase.as_str().into()),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: Some(POD_IP.into()),
        host_ips: Some(vec![HostIP { ip: POD_IP.into() }]),
        pod_ip: with_ip.then(|| POD_IP.into()),
        pod_ips: with_ip.then(|| vec![PodIP { ip: POD_IP.into() }]),
        start_time: st.start_time.map(time),
        init_container_statuses: (!st.init.is_empty())
            .then(|| st.init.iter().map(container_status).collect()),
        container_statuses: Some(st.main.iter().map(container_status).collect()),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        observed_generation: pod.metadata.generation,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "generation": 1},
            "spec": {"containers": [{"name": "c", "image": "ferrovirt/x"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}], "qosClass": "BestEffort"}
        }))
        .unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .into()
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: exit_reason(code).into(),
            message: None,
            started_at: Some(t0()),
            finished_at: t0(),
            pid: Some(42),
        })
    }

    fn state(policy: &str, main: Vec<State>) -> PodState {
        PodState {
            main: main
                .into_iter()
                .map(|s| Record {
                    state: s,
                    ..Record::new("c", "ferrovirt/x")
                })
                .collect(),
            restart_policy: policy.into(),
            sandbox_ready: true,
            start_time: Some(t0()),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_restart_policy() {
        let running = State::Running {
            started_at: t0(),
            pid: 7,
        };
        assert_eq!(
            state(
                "Always",
                vec![State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None
                }]
            )
            .phase(),
            Phase::Pending
        );
        assert_eq!(
            state("Always", vec![running.clone()]).phase(),
            Phase::Running
        );
        assert_eq!(state("Never", vec![exited(0)]).phase(), Phase::Succeeded);
        assert_eq!(state("Never", vec![exited(3)]).phase(), Phase::Failed);
        assert_eq!(
            state("Never", vec![exited(0), running]).phase(),
            Phase::Running
        );
        assert_eq!(
            state("OnFailure", vec![exited(0)]).phase(),
            Phase::Succeeded
        );
        assert_eq!(state("OnFailure", vec![exited(1)]).phase(), Phase::Running);
        assert_eq!(state("Always", vec![exited(0)]).phase(), Phase::Running);
    }

    #[test]
    fn failed_init_container_fails_the_pod_only_with_never() {
        let mut st = state(
            "Never",
            vec![State::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            }],
        );
        st.init = vec![Record {
            state: exited(1),
            ..Record::new("init", "ferrovirt/x")
        }];
        assert_eq!(st.phase(), Phase::Failed);
        st.restart_policy = "Always".into();
        assert_eq!(st.phase(), Phase::Pending);
    }

    #[test]
    fn running_ready_pod_renders_like_kubelet() {
        let mut st = state(
            "Always",
            vec![State::Running {
                started_at: t0(),
                pid: 7,
            }],
        );
        st.main[0].ready = true;
        st.main[0].started = true;
        let s = render(&pod(), &st, t0());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIP"], "127.0.0.1");
        assert_eq!(v["hostIP"], "127.0.0.1");
        assert_eq!(v["qosClass"], "BestEffort");
        let cs = &v["containerStatuses"][0];
        assert_eq!(cs["containerID"], "devnode://7");
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["started"], true);
        assert_eq!(cs["restartCount"], 0);
        assert_eq!(cs["state"]["running"]["startedAt"], "2025-01-01T00:00:00Z");
        let conds: Vec<(String, String)> = s
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        for kind in [
            "PodScheduled",
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
        ] {
            assert!(
                conds.contains(&(kind.to_string(), "True".to_string())),
                "{kind} in {conds:?}"
            );
        }
    }

    #[test]
    fn failed_container_renders_exit_code_and_reason() {
        let s = render(&pod(), &state("Never", vec![exited(3)]), t0());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Failed");
        let t = &v["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 3);
        assert_eq!(t["reason"], "Error");
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
    }

    #[test]
    fn image_pull_waiting_is_kept() {
        let st = state(
            "Always",
            vec![State::Waiting {
                reason: "ErrImagePull".into(),
                message: Some("only ferrovirt/".into()),
            }],
        );
        let v = serde_json::to_value(render(&pod(), &st, t0())).unwrap();
        assert_eq!(v["phase"], "Pending");
        assert_eq!(
            v["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
    }
}
