//! The node controller: watches VMIs and this node's launcher pods, runs one worker per
//! VMI on this node, and removes per-VMI directories whose VMI is gone and whose launcher
//! has exited.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crds::{VirtualMachineInstance, VmiPhase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};

use ferrovirt_node_contract::pod::{
    CREATED_BY_LABEL, VIRT_HANDLER_FIELD_MANAGER as FIELD_MANAGER, launcher_selector,
};

use crate::args::RunArgs;
use crate::config::Virtualization;
use crate::kvm::{self, KvmStatus};
use crate::metrics::Metrics;
use crate::status::{self, Observation};
use crate::vmi_dir::{self, RunDir, launcher_alive};
use crate::volumes::hostdisk::FileId;
use crate::worker::{self, Worker};
use crate::{Error, Result, chain, domain, volumes};

/// How long the disk containers of a launcher pod may take to answer on their sockets once
/// the launcher is ready (they start with it; the VMI is Scheduled once they run).
const DISK_CONTAINER_WAIT: Duration = Duration::from_secs(60);

/// What every worker shares.
pub struct Context {
    pub client: kube::Client,
    pub node: String,
    pub run_dir: RunDir,
    /// The per-VMI directory as launchers see it; `None`: the host path.
    pub launcher_vmi_dir: Option<PathBuf>,
    pub namespace: String,
    pub use_emulation_default: bool,
    pub kvm: KvmStatus,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

impl Context {
    /// The per-VMI directory as the launcher of `uid` sees it.
    pub fn launcher_dir(&self, uid: &str) -> PathBuf {
        self.launcher_vmi_dir
            .clone()
            .unwrap_or_else(|| self.run_dir.vmi(uid).dir)
    }

    /// Resolves PVCs, prepares volumes and firmware, and converts the spec; also returns
    /// the host disks as checked (see [`volumes::prepare`]). `launcher_pid` (in this
    /// handler's PID namespace, from the launcher's socket) is where the launcher pod's
    /// cloud-init Secrets are read.
    pub async fn prepare_domain(
        &self,
        vmi: &VirtualMachineInstance,
        virtualization: Virtualization,
        host_disks: &volumes::HostDiskPolicy,
        network: &crate::network::Attachment,
        launcher_pid: Option<u32>,
    ) -> Result<(String, Vec<(usize, FileId)>)> {
        let ns = vmi.namespace().unwrap_or_default();
        let uid = vmi.uid().unwrap_or_default();
        let pvcs = self.pvc_dirs(&ns, vmi).await?;
        let launcher_dir = self.launcher_dir(&uid);
        let plans = volumes::plan(&vmi.spec, &launcher_dir, &pvcs, host_disks)?;
        // The launcher pod's disk containers: where their images are, here and for QEMU.
        let (spec, vmi_dir) = (vmi.spec.clone(), self.run_dir.vmi(&uid));
        let images = tokio::task::spawn_blocking(move || {
            volumes::containerdisk::locate_all(&spec, &vmi_dir, DISK_CONTAINER_WAIT)
        })
        .await??;
        let kernel_root = images
            .get(ferrovirt_node_contract::pod::KERNEL_BOOT_CONTAINER)
            .map_or_else(|| PathBuf::from("/"), |r| r.launcher.clone());
        let xml = domain::convert_with(
            &domain::Input {
                namespace: &ns,
                name: &vmi.name_any(),
                uid: &uid,
                spec: &vmi.spec,
                virtualization,
                vmi_dir: &launcher_dir,
                kernel_root: &kernel_root,
                volumes: &plans,
            },
            network,
        )?;
        let host_dir = self.run_dir.vmi(&uid).dir;
        let hostname = vmi.spec.hostname.clone().unwrap_or_else(|| vmi.name_any());
        let domain_spec = vmi.spec.domain.clone();
        let host_disks = tokio::task::spawn_blocking(move || {
            volumes::prepare_firmware(&domain_spec, &host_dir, &images)?;
            let launcher_root = launcher_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/root")));
            volumes::prepare(
                &plans,
                &host_dir,
                &images,
                launcher_root.as_deref(),
                &uid,
                &hostname,
            )
        })
        .await??;
        Ok((xml, host_disks))
    }

    /// Claim name -> the directory of its bound hostPath or local PersistentVolume.
    async fn pvc_dirs(
        &self,
        ns: &str,
        vmi: &VirtualMachineInstance,
    ) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        for v in &vmi.spec.volumes {
            let Some(claim) = v.persistent_volume_claim.as_ref().map(|p| &p.claim_name) else {
                continue;
            };
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            let fail = |m: String| Error::volume(&v.name, format!("claim {claim:?}: {m}"));
            let pvc = pvcs
                .get_opt(claim)
                .await?
                .ok_or_else(|| fail("not found".into()))?;
            let pv_name = pvc
                .spec
                .and_then(|s| s.volume_name)
                .ok_or_else(|| fail("not bound to a volume".into()))?;
            let pv = Api::<PersistentVolume>::all(self.client.clone())
                .get_opt(&pv_name)
                .await?
                .ok_or_else(|| fail(format!("volume {pv_name:?} not found")))?;
            let spec = pv.spec.unwrap_or_default();
            let dir = spec
                .host_path
                .map(|h| h.path)
                .or(spec.local.map(|l| l.path))
                .ok_or_else(|| {
                    fail(format!(
                        "volume {pv_name:?} is neither hostPath nor local; only those are supported"
                    ))
                })?;
            out.insert(claim.clone(), PathBuf::from(dir));
        }
        Ok(out)
    }

    /// Publishes a Warning Event on the VMI (best effort: a failure is only logged).
    pub async fn warn(&self, vmi: &VirtualMachineInstance, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Observe".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &vmi.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "publishing an Event failed");
        }
    }

    /// Publishes a Warning Event on this handler's Node (best effort, as [`Self::warn`]).
    pub async fn warn_node(&self, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Label".into(),
            secondary: None,
        };
        let node = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            ..Default::default()
        };
        if let Err(e) = self.recorder.publish(&event, &node).await {
            tracing::warn!(reason, error = %e, "publishing an Event failed");
        }
    }

    /// Writes the status after `obs` on the VMI (fresh from the API, guarded by its
    /// resourceVersion, retried on conflict). A VMI that is gone is fine.
    pub async fn write_status(
        &self,
        vmi: &VirtualMachineInstance,
        obs: &Observation,
    ) -> Result<()> {
        let api: Api<VirtualMachineInstance> =
            Api::namespaced(self.client.clone(), &vmi.namespace().unwrap_or_default());
        let name = vmi.name_any();
        let uid = vmi.uid().unwrap_or_default();
        for _ in 0..8 {
            let Some(current) = api.get_opt(&name).await? else {
                return Ok(());
            };
            if current.uid().as_deref() != Some(uid.as_str()) {
                return Ok(());
            }
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let old = current.status.clone().unwrap_or_default();
            let Some(new) = status::next(&old, &current.spec, &uid, &self.node, obs, now) else {
                return Ok(());
            };
            let patch = status::patch(&new, current.resource_version().as_deref());
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.metrics.status_written();
                    tracing::info!(phase = ?new.phase, reason = ?new.reason, "VMI status written");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!("status write kept conflicting; the next event retries");
        Ok(())
    }
}

/// The controller's view: VMIs, which uids have a launcher pod here, and the workers.
struct State {
    ctx: Arc<Context>,
    vmis: HashMap<String, Arc<VirtualMachineInstance>>,
    local_pods: HashSet<String>,
    workers: HashMap<String, Worker>,
    vmis_listed: bool,
}

impl State {
    fn on_this_node(&self, vmi: &VirtualMachineInstance, uid: &str) -> bool {
        match vmi.status.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => node == self.ctx.node,
            // The operator may not write nodeName: its launcher pod's node says it.
            None => self.local_pods.contains(uid),
        }
    }

    /// Starts, updates or forgets the worker of `uid`.
    fn reconcile(&mut self, uid: &str) {
        if self.workers.get(uid).is_some_and(|w| w.task.is_finished()) {
            self.workers.remove(uid);
            // A finished worker is not restarted for the same VMI unless it still needs one.
        }
        let vmi = self.vmis.get(uid).cloned();
        if let Some(w) = self.workers.get(uid) {
            let _ = w.tx.send(vmi);
            return;
        }
        let Some(vmi) = vmi else { return };
        if !self.on_this_node(&vmi, uid) {
            return;
        }
        let phase = vmi.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(VmiPhase::Scheduled | VmiPhase::Running)) {
            tracing::info!(ns = %vmi.namespace().unwrap_or_default(), name = %vmi.name_any(), %uid, ?phase, "following VMI");
            self.workers
                .insert(uid.to_owned(), worker::spawn(self.ctx.clone(), vmi));
        }
    }

    /// Removes directories of VMIs that are gone whose launcher has exited.
    async fn collect_garbage(&mut self) {
        if !self.vmis_listed {
            return;
        }
        self.workers.retain(|_, w| !w.task.is_finished());
        for uid in vmi_dir::uids(&self.ctx.run_dir) {
            if self.vmis.contains_key(&uid) || self.workers.contains_key(&uid) {
                continue;
            }
            if launcher_alive(&self.ctx.run_dir.vmi(&uid).socket()).await {
                continue;
            }
            match vmi_dir::remove(&self.ctx.run_dir, &uid) {
                Ok(()) => tracing::info!(%uid, "removed the directory of a gone VMI"),
                Err(e) => tracing::warn!(%uid, error = %chain(&e), "cleanup failed"),
            }
        }
    }
}

/// Runs the handler until SIGTERM/SIGINT. Guests keep running when it exits.
pub async fn run(args: RunArgs) -> Result<()> {
    let node = args.node_name();
    let run_dir = RunDir::new(&args.run_dir);
    std::fs::create_dir_all(run_dir.vmis()).map_err(Error::io("creating", run_dir.vmis()))?;
    // Launchers run as a non-root user: hand each VMI's directory to it as it appears.
    let watched = run_dir.clone();
    std::thread::Builder::new()
        .name("vmi-dir-owner".into())
        .spawn(move || vmi_dir::hand_over_forever(watched))
        .map_err(Error::io("starting", "the VMI directory owner thread"))?;
    let exe = std::env::current_exe().map_err(Error::io("finding", "/proc/self/exe"))?;
    let (device, timeout) = (
        args.kvm_device.clone(),
        Duration::from_millis(args.kvm_probe_timeout_ms),
    );
    let kvm = tokio::task::spawn_blocking(move || kvm::probe(&exe, &device, timeout)).await?;
    tracing::info!(%node, ?kvm, run_dir = %args.run_dir.display(), "virt-handler starting");

    let metrics = Arc::new(Metrics::default());
    metrics.set_kvm_usable(kvm.usable());
    let launcher_vmi_dir =
        (args.launcher_vmi_dir != "host").then(|| PathBuf::from(&args.launcher_vmi_dir));
    let client =
        ferrovirt_runtime::kube_client(args.kubeconfig.as_deref(), "ferrovirt-virt-handler")
            .await
            .map_err(Error::Runtime)?;
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(node.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node: node.clone(),
        run_dir,
        launcher_vmi_dir,
        namespace: args.namespace.clone(),
        use_emulation_default: args.use_emulation,
        kvm,
        metrics: metrics.clone(),
    });
    if let Some(addr) = args.metrics_addr() {
        ferrovirt_runtime::serve(addr, metrics.clone())
            .await
            .map_err(Error::Runtime)?;
    }
    tokio::spawn(crate::node::keep_labelled(ctx.clone()));
    // The kubelet device plugins (a real node; devnode has no kubelet): launcher pods get
    // /dev/kvm, /dev/net/tun and /dev/vhost-net by asking for devices.kubevirt.io/*.
    let (stop_plugins, plugins_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut plugins = match args.device_plugins.config() {
        Some(config) => {
            tracing::info!(dir = %config.plugin_dir.display(), "serving the kubelet device plugins");
            let shutdown = async {
                let _ = plugins_stopped.await;
            };
            Some(tokio::spawn(ferrovirt_device_plugin::DevicePlugins::run(
                config, shutdown,
            )))
        }
        None => None,
    };

    let vmi_api: Api<VirtualMachineInstance> = Api::all(ctx.client.clone());
    let mut vmi_events = crate::watch::events(vmi_api, watcher::Config::default(), "VMIs");
    let pod_api: Api<Pod> = Api::all(ctx.client.clone());
    let pod_config = watcher::Config::default()
        .labels(&launcher_selector())
        .fields(&format!("spec.nodeName={node}"));
    let mut pod_events = crate::watch::events(pod_api, pod_config, "launcher pods");

    let mut state = State {
        ctx,
        vmis: HashMap::new(),
        local_pods: HashSet::new(),
        workers: HashMap::new(),
        vmis_listed: false,
    };
    let mut listing: Option<HashMap<String, Arc<VirtualMachineInstance>>> = None;
    let mut gc = tokio::time::interval(Duration::from_secs(10));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("handling", "SIGTERM"))?;
    loop {
        tokio::select! {
            Some(event) = vmi_events.next() => match event {
                Event::Apply(v) | Event::InitApply(v) if listing.is_some() => {
                    let uid = v.uid().unwrap_or_default();
                    listing.as_mut().expect("listing").insert(uid, Arc::new(v));
                }
                Event::Apply(v) | Event::InitApply(v) => {
                    let uid = v.uid().unwrap_or_default();
                    state.vmis.insert(uid.clone(), Arc::new(v));
                    state.reconcile(&uid);
                }
                Event::Delete(v) => {
                    let uid = v.uid().unwrap_or_default();
                    state.vmis.remove(&uid);
                    state.reconcile(&uid);
                }
                Event::Init => listing = Some(HashMap::new()),
                Event::InitDone => {
                    let listed = listing.take().unwrap_or_default();
                    let old: Vec<String> = state.vmis.keys().cloned().collect();
                    state.vmis = listed;
                    state.vmis_listed = true;
                    let uids: HashSet<String> = old.into_iter().chain(state.vmis.keys().cloned()).collect();
                    for uid in uids {
                        state.reconcile(&uid);
                    }
                }
            },
            Some(event) = pod_events.next() => match event {
                Event::Apply(p) | Event::InitApply(p) => {
                    if let Some(uid) = p.labels().get(CREATED_BY_LABEL).cloned() {
                        state.local_pods.insert(uid.clone());
                        state.reconcile(&uid);
                    }
                }
                Event::Delete(p) => {
                    if let Some(uid) = p.labels().get(CREATED_BY_LABEL).cloned() {
                        state.local_pods.remove(&uid);
                    }
                }
                Event::Init | Event::InitDone => {}
            },
            _ = gc.tick() => {
                let uids: Vec<String> = state.workers.keys().cloned().collect();
                for uid in uids {
                    state.reconcile(&uid);
                }
                state.collect_garbage().await;
            }
            ended = async { plugins.as_mut().expect("guarded").await }, if plugins.is_some() => {
                // They only end early when they cannot serve (a bad setting, no directory).
                return match ended {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Error::DevicePlugins(e)),
                    Err(e) => Err(Error::Join(e)),
                };
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = stop_plugins.send(());
    if let Some(plugins) = plugins {
        let _ = plugins.await;
    }
    tracing::info!(
        workers = state.workers.len(),
        "virt-handler stopping; guests keep running"
    );
    Ok(())
}
