//! Ferrovirt's operator: the VirtualMachine controller (runStrategy → the VM's instance,
//! VM status) and the VirtualMachineInstance controller (VMI → launcher pod, pod state →
//! VMI phase up to Scheduled), and the VirtualMachineInstanceReplicaSet and
//! VirtualMachinePool controllers (docs/replica-sets-and-pools.md), behind leader
//! election, with metrics and events.
//!
//! Writers: VM status is written by the VM controller only; VMI phases up to Scheduled
//! by the VMI controller only; every write names the field manager [`FIELD_MANAGER`].

mod args;
mod backend_storage;
mod claims;
mod context;
mod datavolume;
mod ending;
mod error;
mod instance;
pub mod instancetype;
pub mod leader;
pub mod metrics;
#[cfg(test)]
mod mock_api;
pub mod pod;
mod pool;
pub mod printable;
mod replicaset;
mod sets;
pub mod strategy;
mod vm_controller;
mod vmi_controller;
#[cfg(test)]
mod vmi_mock_tests;
mod volume_binding;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

pub use args::{Args, LauncherArgs, LeaderArgs, LogFormat};
pub use context::Context;
pub use error::{Error, Result};

use crds::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet, VirtualMachinePool,
};

/// The field manager of every write, and the Events' reporting controller (KubeVirt's
/// component name).
pub use ferrovirt_node_contract::pod::VIRT_CONTROLLER_FIELD_MANAGER as FIELD_MANAGER;

/// Operator settings that are not about the API connection.
#[derive(Clone, Debug)]
pub struct Settings {
    pub launcher: pod::LauncherConfig,
    pub concurrency: u16,
    /// The cap of the crash-loop back-off (KubeVirt: 300 s).
    pub max_crash_loop_backoff: Duration,
    /// The namespace of the `kubevirt-config` ConfigMap (the leader election's: where
    /// Ferrovirt is installed).
    pub config_namespace: String,
}

/// Runs the operator as the binary does: metrics endpoint, leader election, controllers.
/// Returns only on a signal or when it cannot start (metrics address, kubeconfig). A lost
/// lease stops the controllers and the replica campaigns again: it never acts next to a
/// new leader, and it leads again once it wins the lease back (an API server outage longer
/// than the lease duration is survived).
pub async fn run(args: Args) -> Result<()> {
    let client =
        ferrovirt_runtime::kube_client(args.kubeconfig.as_deref(), "ferrovirt-virt-controller")
            .await
            .map_err(Error::Runtime)?;
    let metrics = Arc::new(metrics::Metrics::default());
    ferrovirt_runtime::serve(args.metrics_addr, metrics.clone())
        .await
        .map_err(Error::Runtime)?;

    let identity = args.leader.identity();
    let elector = leader::LeaderElector::new(
        client.clone(),
        &args.leader.leader_election_namespace,
        &args.leader.lease_name,
        &identity,
        args.leader.lease_duration,
        args.leader.lease_retry,
    );
    let settings = Settings {
        launcher: pod::LauncherConfig {
            image: args.launcher.launcher_image.clone(),
            node_run_dir: args.launcher.node_run_dir.clone(),
        },
        concurrency: args.concurrency,
        max_crash_loop_backoff: args.crash_loop_max_backoff,
        config_namespace: args.leader.leader_election_namespace.clone(),
    };
    let shutdown = ferrovirt_runtime::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = elector.acquire() => r?,
            _ = &mut shutdown => return Ok(()),
        }
        metrics.set_leader(true);
        // Dropping the controllers' future stops them, their watches and every reconcile in
        // flight, before a standby can take the lease over.
        let led = tokio::select! {
            e = elector.keep_renewing() => Led::LostLease(e),
            r = run_controllers(client.clone(), settings.clone(), metrics.clone()) => Led::Stopped(r),
            _ = &mut shutdown => Led::Signal,
        };
        metrics.set_leader(false);
        metrics.stop_counting_vmis();
        match led {
            Led::LostLease(e) => {
                tracing::warn!(error = %e, "stopped the controllers; campaigning for the lease again");
            }
            Led::Stopped(r) => {
                elector.release().await;
                return r;
            }
            Led::Signal => {
                tracing::info!("shutting down, releasing the lease");
                elector.release().await;
                return Ok(());
            }
        }
    }
}

/// How a term as leader ended.
enum Led {
    LostLease(Error),
    Stopped(Result<()>),
    Signal,
}

/// Runs the controllers with `client` until a watch fails for good. One VMI watch and one
/// launcher-pod watch fill the caches of the VM and VMI controllers and wake them: a VMI
/// change wakes its own reconcile and its VM's, or its replica set's (a VMI without a
/// controller wakes the replica sets of its namespace, which may adopt it); a pod change
/// wakes its VMI's. A VM change wakes its pool's. (kube-runtime's
/// shared streams are not used: their subscriber stalls once an object is deleted before
/// it is read, and they drop deletions.)
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    metrics: Arc<metrics::Metrics>,
) -> Result<()> {
    let vms: Api<VirtualMachine> = Api::all(client.clone());
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());

    let (vmi_store, vmi_writer) = reflector::store::<VirtualMachineInstance>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (vm_wakeups, vm_wakeup_stream) =
        futures::channel::mpsc::unbounded::<ObjectRef<VirtualMachine>>();
    let (vmi_wakeups, vmi_wakeup_stream) =
        futures::channel::mpsc::unbounded::<ObjectRef<VirtualMachineInstance>>();

    let (rs_store, rs_writer) = reflector::store::<VirtualMachineInstanceReplicaSet>();
    let (rs_wakeups, rs_wakeup_stream) =
        futures::channel::mpsc::unbounded::<ObjectRef<VirtualMachineInstanceReplicaSet>>();
    let (pool_wakeups, pool_wakeup_stream) =
        futures::channel::mpsc::unbounded::<ObjectRef<VirtualMachinePool>>();

    let vmi_wakeups_from_pods = vmi_wakeups.clone();
    let rs_cache = rs_store.clone();
    let vmi_watch = reflector::reflector(
        vmi_writer,
        watcher(vmis, watcher::Config::default())
            .default_backoff()
            .modify(trim),
    )
    .for_each(move |event| {
        for vmi in changed(event) {
            if let Some(owner) = controller_of(&vmi, "VirtualMachine") {
                let _ = vm_wakeups.unbounded_send(owner);
            } else if let Some(owner) = controller_of(&vmi, "VirtualMachineInstanceReplicaSet") {
                let _ = rs_wakeups.unbounded_send(owner);
            } else if !vmi
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true))
            {
                for rs in rs_cache.state() {
                    if rs.namespace() == vmi.namespace() {
                        let _ = rs_wakeups.unbounded_send(ObjectRef::from_obj(rs.as_ref()));
                    }
                }
            }
            let _ = vmi_wakeups.unbounded_send(ObjectRef::from_obj(&vmi));
        }
        futures::future::ready(())
    });
    let launcher_pods =
        watcher::Config::default().labels(&ferrovirt_node_contract::pod::launcher_selector());
    let pod_watch = reflector::reflector(
        pod_writer,
        watcher(pods, launcher_pods)
            .default_backoff()
            .modify(trim_pod),
    )
    .for_each(move |event| {
        for pod in changed(event) {
            if let Some(owner) = controller_of(&pod, "VirtualMachineInstance") {
                let _ = vmi_wakeups_from_pods.unbounded_send(owner);
            }
        }
        futures::future::ready(())
    });

    metrics.count_vmis_from(vmi_store.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        metrics,
        vmi_store.clone(),
        pod_store,
    ));
    let config = kube::runtime::controller::Config::default().concurrency(settings.concurrency);

    // The VMs' own watch, trimmed like the others (Controller::new would keep whole VMs).
    let (vm_store, vm_writer) = reflector::store::<VirtualMachine>();
    let vm_changes = reflector::reflector(
        vm_writer,
        watcher(vms, watcher::Config::default())
            .default_backoff()
            .modify(trim),
    )
    .inspect(move |event| {
        if let Ok(
            watcher::Event::Apply(vm) | watcher::Event::InitApply(vm) | watcher::Event::Delete(vm),
        ) = event
            && let Some(owner) = controller_of(vm, "VirtualMachinePool")
        {
            let _ = pool_wakeups.unbounded_send(owner);
        }
    })
    .applied_objects();
    let vm_store_for_pools = vm_store.clone();
    let vm_controller = Controller::for_stream(vm_changes, vm_store)
        .reconcile_on(vm_wakeup_stream)
        .with_config(config.clone())
        .run(
            vm_controller::reconcile,
            vm_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let no_direct_trigger =
        futures::stream::pending::<Result<VirtualMachineInstance, watcher::Error>>();
    let vmi_controller = Controller::for_stream(no_direct_trigger, vmi_store)
        .reconcile_on(vmi_wakeup_stream)
        .with_config(config.clone())
        .run(
            vmi_controller::reconcile,
            vmi_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    // The replica sets and pools, each with its own watch.
    let set_ctx = Arc::new(sets::SetContext {
        ctx,
        vms: vm_store_for_pools,
        expectations: Default::default(),
    });
    let rs_changes = reflector::reflector(
        rs_writer,
        watcher(Api::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(trim),
    )
    .applied_objects();
    let rs_controller = Controller::for_stream(rs_changes, rs_store)
        .reconcile_on(rs_wakeup_stream)
        .with_config(config.clone())
        .run(
            replicaset::reconcile,
            replicaset::error_policy,
            set_ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let (pool_store, pool_writer) = reflector::store::<VirtualMachinePool>();
    let pool_changes = reflector::reflector(
        pool_writer,
        watcher(Api::all(client), watcher::Config::default())
            .default_backoff()
            .modify(trim),
    )
    .applied_objects();
    let pool_controller = Controller::for_stream(pool_changes, pool_store)
        .reconcile_on(pool_wakeup_stream)
        .with_config(config)
        .run(pool::reconcile, pool::error_policy, set_ctx)
        .for_each(|_| futures::future::ready(()));

    tracing::info!("controllers started");
    tokio::join!(
        vmi_watch,
        pod_watch,
        vm_controller,
        vmi_controller,
        rs_controller,
        pool_controller
    );
    Ok(())
}

/// What the caches never need: the managed fields (often the largest part of an object)
/// and kubectl's copy of the last applied manifest. Cuts what each cached VMI and pod
/// costs (bench/scale).
fn trim<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A launcher pod as the VMI controller reads it: metadata without annotations, the node
/// and the containers' names of its spec (their number tells whether all run), its whole
/// status. The rest of the spec (containers' commands, mounts, resources; volumes,
/// affinity) is most of a launcher pod and is never read from the cache.
fn trim_pod(pod: &mut Pod) {
    trim(pod);
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
}

/// The objects an event is about (applied, listed or deleted).
fn changed<K>(event: std::result::Result<watcher::Event<K>, watcher::Error>) -> Vec<K> {
    match event {
        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o)) => {
            vec![o]
        }
        Ok(watcher::Event::Init | watcher::Event::InitDone) => vec![],
        Err(e) => {
            tracing::warn!(error = %ferrovirt_runtime::chain(&e), "watch failed, retrying");
            vec![]
        }
    }
}

/// The object that controls `obj`, if it is of `kind` (kubevirt.io).
fn controller_of<K, O>(obj: &O, kind: &str) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
    O: Resource,
{
    let ns = obj.namespace()?;
    let owner = obj
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind)?;
    Some(ObjectRef::new(&owner.name).within(&ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_pod_keeps_what_the_vmi_controller_reads() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "virt-launcher-a", "uid": "p1",
                "labels": {"kubevirt.io/created-by": "u1"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "a": "b"},
                "managedFields": [{"manager": "virt-controller"}],
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "name": "a", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "node1", "volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [{"name": "compute", "image": "i", "command": ["x"]}, {"name": "volumeroot", "image": "d"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "compute", "ready": true,
                "restartCount": 0, "image": "i", "imageID": "", "state": {"running": {}}}]}
        }))
        .unwrap();
        let status = pod.status.clone();
        trim_pod(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["compute", "volumeroot"]);
        assert!(spec.containers[0].image.is_none() && spec.volumes.is_none());
        assert!(pod.metadata.annotations.is_none() && pod.managed_fields().is_empty());
        assert_eq!(pod.labels()["kubevirt.io/created-by"], "u1");
        assert_eq!(pod.owner_references().len(), 1);
        assert_eq!(pod.status, status, "the status is kept whole");
    }
}
