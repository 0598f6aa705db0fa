//! One pod's worker: admits it, sets up its volumes, runs its init containers in order and
//! then its containers, restarts them per restartPolicy with back-off, probes them, writes
//! the pod's status, and on deletion stops them (SIGTERM, grace period, SIGKILL) and
//! removes the pod object, as kubelet does.

mod adopt;
mod launch;

use crate::probe::{self, Tracker};
use crate::runtime::{self, Exit};
use crate::state::{PodDir, Started};
use crate::status::{self, PodState, Record, State, Terminated};
use crate::{Ctx, Error, chain, node::FIELD_MANAGER, sandbox, volumes};
use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long without failing has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Probes {
    startup: Option<Tracker>,
    readiness: Option<Tracker>,
    liveness: Option<Tracker>,
}

struct Backoff {
    delay: Duration,
    not_before: Instant,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    dir: PodDir,
    st: PodState,
    admitted: bool,
    volumes: Option<HashMap<String, PathBuf>>,
    running: HashMap<String, Started>,
    /// The pod's sandbox, holding its shared PID namespace (`shareProcessNamespace`).
    sandbox: Option<Started>,
    /// Shims started that have not reported yet (a failed start reports through its exit).
    starting: HashSet<String>,
    probes: HashMap<String, Probes>,
    backoff: HashMap<String, Backoff>,
    retry_at: Option<Instant>,
    exits_tx: mpsc::Sender<Exit>,
    exits_rx: mpsc::Receiver<Exit>,
    last_status: Option<serde_json::Value>,
    /// The last FailedMount Event posted, so a volume retried every few seconds is told
    /// once per message.
    last_mount_event: Option<String>,
}

fn containers(pod: &Pod) -> (Vec<Container>, Vec<Container>) {
    let spec = pod.spec.clone().unwrap_or_default();
    (spec.init_containers.unwrap_or_default(), spec.containers)
}

fn pod_dir(ctx: &Ctx, pod: &Pod) -> PodDir {
    let m = &pod.metadata;
    PodDir::new(
        &ctx.state_dir,
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default(),
    )
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs a pod until it is deleted. `rx` carries the pod's latest version, None once it is gone.
pub async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let mut w = Worker::new(ctx, pod.clone());
    // A pod that ended before this devnode started only waits for its deletion.
    let finished = is_terminal(&pod);
    if !finished {
        w.adopt();
    }
    loop {
        let current = rx.borrow_and_update().clone();
        let gone = current.is_none();
        if let Some(p) = current {
            w.pod = p;
        }
        if gone || w.pod.metadata.deletion_timestamp.is_some() {
            w.terminate(gone).await;
            return;
        }
        if !finished {
            w.step().await;
            w.probe().await;
            w.publish().await;
        }
        let wake = w.next_wake();
        tokio::select! {
            r = rx.changed() => if r.is_err() { w.terminate(true).await; return; },
            Some(exit) = w.exits_rx.recv() => w.exited(exit),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl Worker {
    fn new(ctx: Arc<Ctx>, pod: Arc<Pod>) -> Self {
        let (init, main) = containers(&pod);
        let main_wait = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let record = |c: &Container, reason: &str| Record {
            state: State::Waiting {
                reason: reason.into(),
                message: None,
            },
            ..Record::new(&c.name, c.image.as_deref().unwrap_or_default())
        };
        let st = PodState {
            init: init.iter().map(|c| record(c, "PodInitializing")).collect(),
            main: main.iter().map(|c| record(c, main_wait)).collect(),
            restart_policy: pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into()),
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0)),
            ..Default::default()
        };
        let (exits_tx, exits_rx) = mpsc::channel(16);
        Worker {
            dir: pod_dir(&ctx, &pod),
            ctx,
            pod,
            st,
            admitted: false,
            volumes: None,
            running: HashMap::new(),
            sandbox: None,
            starting: HashSet::new(),
            probes: HashMap::new(),
            backoff: HashMap::new(),
            retry_at: None,
            exits_tx,
            exits_rx,
            last_status: None,
            last_mount_event: None,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn record(&mut self, name: &str) -> Option<&mut Record> {
        self.st
            .init
            .iter_mut()
            .chain(self.st.main.iter_mut())
            .find(|r| r.name == name)
    }

    fn container(&self, name: &str) -> Option<Container> {
        let (init, main) = containers(&self.pod);
        init.into_iter().chain(main).find(|c| c.name == name)
    }

    fn wait_all_unstarted(&mut self, reason: &str, message: &str) {
        for r in self.st.init.iter_mut().chain(self.st.main.iter_mut()) {
            if r.never_ran() {
                r.state = State::Waiting {
                    reason: reason.into(),
                    message: Some(message.into()),
                };
            }
        }
    }

    /// Moves the pod forward: admission, images, volumes, then the next containers to start.
    async fn step(&mut self) {
        if self.st.phase().terminal() {
            return;
        }
        self.st.start_time.get_or_insert_with(Utc::now);
        if !self.admitted {
            if let Err(e) = launch::admit(&self.pod) {
                tracing::warn!(pod = %self.name(), error = %chain(&e), "rejecting pod");
                self.st.failed = Some(("DevnodeUnsupported".into(), chain(&e)));
                return;
            }
            self.admitted = true;
        }
        let (init, main) = containers(&self.pod);
        let mut images_ok = true;
        for c in init.iter().chain(main.iter()) {
            if let Err(e) = crate::image::resolve(
                c.image.as_deref().unwrap_or_default(),
                &self.ctx.image_prefix,
                &self.ctx.image_store,
            ) && let Some(r) = self.record(&c.name)
                && r.never_ran()
            {
                r.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: Some(e.to_string()),
                };
                images_ok = false;
            }
        }
        if !images_ok {
            self.retry_at = Some(Instant::now() + RETRY * 2);
            return;
        }
        if self.volumes.is_none() {
            let prepared = match volumes::refs(&self.ctx, &self.pod).await {
                Ok(refs) => volumes::prepare(&self.ctx, &self.pod, &self.dir, &refs).await,
                Err(e) => Err(e),
            };
            match prepared {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.st.sandbox_ready = true;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %chain(&e), "cannot set up volumes");
                    self.wait_all_unstarted("ContainerCreating", &chain(&e));
                    // As kubelet: a Warning Event on the pod names the volume and why.
                    if let Some(m) = volumes::failed_mount_message(&e)
                        && self.last_mount_event.as_ref() != Some(&m)
                    {
                        match volumes::failed_mount_event(&self.ctx, &self.pod, &m).await {
                            Ok(()) => self.last_mount_event = Some(m),
                            Err(e) => {
                                tracing::warn!(pod = %self.name(), error = %chain(&e), "cannot post the FailedMount Event")
                            }
                        }
                    }
                    self.retry_at = Some(Instant::now() + RETRY);
                    return;
                }
            }
        }
        if sandbox::wanted(&self.pod) && self.sandbox.is_none() && !self.start_sandbox().await {
            self.retry_at = Some(Instant::now() + RETRY);
            return;
        }
        let policy = self.st.restart_policy.clone();
        for c in &init {
            let r = self.st.init.iter().find(|r| r.name == c.name).cloned();
            let Some(r) = r else { continue };
            if r.succeeded() {
                continue;
            }
            if r.running()
                || self.starting.contains(&c.name)
                || (matches!(r.state, State::Terminated(_)) && policy == "Never")
            {
                return;
            }
            self.try_start(c).await;
            return;
        }
        for c in &main {
            let Some(r) = self.st.main.iter().find(|r| r.name == c.name).cloned() else {
                continue;
            };
            if r.running() || self.starting.contains(&c.name) {
                continue;
            }
            let restart = match &r.state {
                State::Terminated(t) => {
                    policy == "Always" || (policy == "OnFailure" && t.exit_code != 0)
                }
                State::Waiting { .. } => true,
                State::Running { .. } => false,
            };
            if restart {
                self.try_start(c).await;
            }
        }
    }

    /// Starts the pod's sandbox; false when it could not be started (retried later).
    async fn start_sandbox(&mut self) -> bool {
        let spec = sandbox::spec(&self.ctx, &self.pod, &self.dir);
        let started = runtime::start(
            &self.ctx,
            sandbox::NAME,
            &spec,
            &self.dir.spec(sandbox::NAME),
            self.exits_tx.clone(),
        )
        .await;
        match started {
            Ok(Some(s)) => {
                tracing::info!(pod = %self.name(), pid = s.pid, "sandbox started (shared PID namespace)");
                self.sandbox = Some(s);
                true
            }
            Ok(None) => {
                tracing::warn!(pod = %self.name(), log = %spec.log.display(), "the sandbox did not start");
                false
            }
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %chain(&e), "cannot start the sandbox");
                false
            }
        }
    }

    async fn try_start(&mut self, c: &Container) {
        let now = Instant::now();
        let pod_name = self.name();
        let not_before = self
            .backoff
            .get(&c.name)
            .map(|b| b.not_before)
            .unwrap_or(now);
        let secs = self
            .backoff
            .get(&c.name)
            .map(|b| b.delay.as_secs() / 2)
            .unwrap_or(10)
            .max(10);
        let Some(r) = self.record(&c.name) else {
            return;
        };
        if let State::Terminated(t) = &r.state {
            r.last = Some(t.clone());
        }
        if r.last.is_some() && not_before > now {
            r.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {secs}s restarting failed container={} pod={pod_name}",
                    c.name
                )),
            };
            return;
        }
        let refs = match volumes::refs(&self.ctx, &self.pod).await {
            Ok(r) => r,
            Err(e) => return self.start_failed(&c.name, e),
        };
        let vols = self.volumes.clone().unwrap_or_default();
        let pid_ns = self.sandbox.as_ref().map(sandbox::pid_namespace);
        let spec = match launch::spec(&self.ctx, &self.pod, c, &self.dir, &vols, &refs, pid_ns) {
            Ok(s) => s,
            Err(e) => return self.start_failed(&c.name, e),
        };
        let started = runtime::start(
            &self.ctx,
            &c.name,
            &spec,
            &self.dir.spec(&c.name),
            self.exits_tx.clone(),
        )
        .await;
        let restarted = self.record(&c.name).is_some_and(|r| r.last.is_some());
        match started {
            Ok(started) => {
                if let Some(r) = self.record(&c.name) {
                    r.image_id = format!("devnode://{}", spec.path.display());
                    if restarted {
                        r.restarts += 1;
                    }
                }
                match started {
                    Some(s) => {
                        tracing::info!(pod = %pod_name, container = %c.name, pid = s.pid, "container started");
                        self.set_running(c, s, &spec.mounts);
                    }
                    None => {
                        self.starting.insert(c.name.clone());
                    }
                }
            }
            Err(e) => self.start_failed(&c.name, e),
        }
    }

    fn set_running(&mut self, c: &Container, s: Started, mounts: &[crate::state::Mount]) {
        let now = Instant::now();
        let tracker = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().and_then(|p| {
                probe::plan(p, c, mounts)
                    .ok()
                    .map(|check| Tracker::new(p, check, now))
            })
        };
        let probes = Probes {
            startup: tracker(&c.startup_probe),
            readiness: tracker(&c.readiness_probe),
            liveness: tracker(&c.liveness_probe),
        };
        let plain = probes.startup.is_none() && probes.readiness.is_none();
        self.probes.insert(c.name.clone(), probes);
        if let Some(r) = self.record(&c.name) {
            r.state = State::Running {
                started_at: s.started_at,
                pid: s.pid,
            };
            r.ready = plain;
            r.started = c.startup_probe.is_none();
        }
        self.running.insert(c.name.clone(), s);
    }

    fn start_failed(&mut self, name: &str, e: Error) {
        tracing::warn!(pod = %self.name(), container = name, error = %chain(&e), "cannot start container");
        let reason = match &e {
            Error::Image(_) => "ErrImagePull",
            Error::ContainerConfig(_) => "CreateContainerConfigError",
            Error::Unsupported(_) => {
                self.st.failed = Some(("DevnodeUnsupported".into(), chain(&e)));
                return;
            }
            _ => "RunContainerError",
        };
        if let Some(r) = self.record(name) {
            r.state = State::Waiting {
                reason: reason.into(),
                message: Some(chain(&e)),
            };
        }
        self.retry_at = Some(Instant::now() + RETRY);
    }

    /// Records a container's end and arms its restart back-off.
    fn exited(&mut self, exit: Exit) {
        let name = exit.container;
        if name == sandbox::NAME {
            // The kernel ended every process of the pod's PID namespace with it; their
            // own exits follow. A pod still running gets a new sandbox.
            tracing::info!(pod = %self.name(), "sandbox ended");
            self.sandbox = None;
            return;
        }
        let started = self.running.remove(&name);
        self.starting.remove(&name);
        self.probes.remove(&name);
        let e = exit.exited;
        tracing::info!(pod = %self.name(), container = %name, exit_code = e.exit_code, "container ended");
        let t = Terminated {
            exit_code: e.exit_code,
            signal: e.signal,
            reason: e
                .reason
                .unwrap_or_else(|| status::exit_reason(e.exit_code).into()),
            message: e.message,
            started_at: started.as_ref().map(|s| s.started_at),
            finished_at: e.finished_at,
            pid: started.as_ref().map(|s| s.pid),
        };
        let ran = started
            .map(|s| (Utc::now() - s.started_at).to_std().unwrap_or_default())
            .unwrap_or_default();
        let b = self.backoff.entry(name.clone()).or_insert(Backoff {
            delay: BACKOFF_START,
            not_before: Instant::now(),
        });
        if ran >= BACKOFF_RESET {
            b.delay = BACKOFF_START;
        }
        b.not_before = Instant::now() + b.delay;
        b.delay = (b.delay * 2).min(BACKOFF_MAX);
        if let Some(r) = self.record(&name) {
            r.state = State::Terminated(t);
            r.ready = false;
        }
    }

    async fn probe(&mut self) {
        let names: Vec<String> = self.probes.keys().cloned().collect();
        for name in names {
            let Some(s) = self.running.get(&name).cloned() else {
                continue;
            };
            let exe = self.ctx.self_exe.clone();
            let Some(p) = self.probes.get_mut(&name) else {
                continue;
            };
            let mut kill = false;
            let started = match &mut p.startup {
                Some(t) if !t.ok => {
                    kill |= t.probe(&exe, s.pid).await;
                    t.ok
                }
                _ => true,
            };
            let mut ready = p.readiness.is_none();
            if started {
                if let Some(t) = &mut p.readiness {
                    t.probe(&exe, s.pid).await;
                    ready = t.ok;
                }
                if let Some(t) = &mut p.liveness {
                    kill |= t.probe(&exe, s.pid).await;
                }
            }
            if kill {
                tracing::info!(pod = %self.name(), container = %name, "probe failed: killing the container");
                runtime::signal(&s, Signal::SIGKILL);
            }
            if let Some(r) = self.record(&name) {
                r.ready = started && ready;
                r.started = started;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + IDLE;
        let mut consider = |t: Instant| {
            if t < wake {
                wake = t.max(now + Duration::from_millis(50));
            }
        };
        if let Some(t) = self.retry_at {
            consider(t);
        }
        for r in self.st.init.iter().chain(self.st.main.iter()) {
            if !r.running()
                && let Some(b) = self.backoff.get(&r.name)
            {
                consider(b.not_before);
            }
        }
        for p in self.probes.values() {
            for t in [&p.startup, &p.readiness, &p.liveness]
                .into_iter()
                .flatten()
            {
                consider(t.due(now).unwrap_or(now + Duration::from_secs(1)));
            }
        }
        wake
    }

    /// Writes the status when it changed (a status patch, field manager devnode).
    async fn publish(&mut self) {
        let status = status::render(&self.pod, &self.st, Utc::now());
        let body = serde_json::json!({ "status": status });
        if self.last_status.as_ref() == Some(&body) {
            return;
        }
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match api.patch_status(&name, &pp, &Patch::Merge(&body)).await {
            Ok(p) => {
                self.pod = Arc::new(p);
                self.last_status = Some(body);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %chain(&e), "cannot write pod status")
            }
        }
    }

    /// Stops every container (SIGTERM, grace period, SIGKILL), then deletes the pod object.
    async fn terminate(&mut self, gone: bool) {
        let grace = if gone {
            0
        } else {
            self.pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64
        };
        let sig = if grace == 0 {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        if !self.running.is_empty() {
            tracing::info!(pod = %self.name(), grace, "stopping containers");
        }
        for s in self.running.values() {
            runtime::signal(s, sig);
        }
        let mut deadline = Instant::now() + Duration::from_secs(grace);
        let mut killed = grace == 0;
        while !self.running.is_empty() || !self.starting.is_empty() {
            tokio::select! {
                Some(exit) = self.exits_rx.recv() => self.exited(exit),
                _ = tokio::time::sleep_until(deadline) => {
                    if killed {
                        tracing::warn!(pod = %self.name(), "containers did not report their end 10 s after SIGKILL");
                        break;
                    }
                    for s in self.running.values() {
                        runtime::signal(s, Signal::SIGKILL);
                    }
                    killed = true;
                    deadline = Instant::now() + Duration::from_secs(10);
                }
            }
        }
        if let Some(s) = self.sandbox.take() {
            runtime::signal(&s, Signal::SIGKILL);
        }
        if !gone {
            // A pod being deleted is not restarted: its phase follows from its exit codes.
            self.st.restart_policy = "Never".into();
            self.publish().await;
            let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: self.pod.metadata.uid.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match api
                .delete(self.pod.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) => tracing::info!(pod = %self.name(), "pod deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %chain(&e), "cannot delete pod")
                }
            }
        }
        self.cleanup();
    }

    /// Removes the pod's state directory, logs included, as kubelet removes a deleted pod's
    /// directories and logs. Kept while a container may still run, so `devnode stop-all`
    /// still finds it.
    fn cleanup(&self) {
        if !self.running.is_empty() || !self.starting.is_empty() {
            tracing::warn!(pod = %self.name(), dir = %self.dir.path().display(), "containers may still run: keeping the pod's state dir");
            return;
        }
        match std::fs::remove_dir_all(self.dir.path()) {
            Ok(()) => tracing::debug!(pod = %self.name(), "pod state dir removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pod = %self.name(), dir = %self.dir.path().display(), error = %e, "cannot remove the pod's state dir")
            }
        }
    }
}
