//! The node controller: watches VMIs and this node's launcher pods, runs one worker per
//! VMI on this node, and removes per-VMI directories whose VMI is gone and whose launcher
//! has exited.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crds::{VirtualMachineInstance, VmiPhase};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use ferrovirt_node_contract::pod::{
    CREATED_BY_LABEL, VIRT_HANDLER_FIELD_MANAGER as FIELD_MANAGER, launcher_selector,
};

use crate::args::RunArgs;
use crate::context::Context;
use crate::kvm;
use crate::metrics::Metrics;
use crate::vmi_dir::{self, RunDir, launcher_alive};
use crate::worker::{self, Worker};
use crate::{Error, Result, chain};

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
        cpu_manager_state: args.cpu_manager_state.clone().or_else(|| {
            let plugins = args.device_plugins.device_plugin_dir.as_ref()?;
            Some(plugins.parent()?.join("cpu_manager_state"))
        }),
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
