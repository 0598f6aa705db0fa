//! The VirtualMachinePool controller, after KubeVirt's (`pkg/virt-controller/watch/pool`):
//! keeps `spec.replicas` VirtualMachines made from `virtualMachineTemplate`, named
//! `<pool>-<index>` (the lowest indexes no VM of the namespace has), labelled with the
//! template's labels and `kubevirt.io/vm-pool-revision-name` (the ControllerRevision
//! `<pool>-<generation>` holding the pool spec they were made from), controlled by the
//! pool. Each VM's dataVolumeTemplates, and the volumes that use them, get `-<index>`
//! appended. The pool releases VMs it controls that its selector no longer selects, and
//! adopts none (as KubeVirt's). Scaling in deletes VMs that are not ready first, then the
//! highest indexes (KubeVirt's default order is random). Nothing is created or deleted
//! while `spec.paused`.
//!
//! [`plan`] decides from what the caches show (pure, table-tested); [`execute`] writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crds::pool::REVISION_LABEL;
use crds::{VirtualMachine, VirtualMachinePool, VirtualMachineSpec};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::Api;
use kube::core::SelectorExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use crate::error::api_message;
use crate::sets::{self, BURST, SetContext, condition_true, controller_uid};
use crate::{Error, Result, writes};

const CONTROLLER: &str = "pool";
const VMS: &str = "virtualmachines";
const POOLS: &str = "virtualmachinepools";

#[instrument(skip(sctx, pool), fields(vmpool = %format!("{}/{}", pool.namespace().unwrap_or_default(), pool.name_any())))]
pub async fn reconcile(pool: Arc<VirtualMachinePool>, sctx: Arc<SetContext>) -> Result<Action> {
    let key = format!(
        "{}/{}",
        pool.namespace().unwrap_or_default(),
        pool.name_any()
    );
    crate::context::measured(CONTROLLER, &key, &sctx.ctx, reconcile_pool(&pool, &sctx)).await
}

pub fn error_policy(pool: Arc<VirtualMachinePool>, e: &Error, sctx: Arc<SetContext>) -> Action {
    let key = format!(
        "{}/{}",
        pool.namespace().unwrap_or_default(),
        pool.name_any()
    );
    crate::context::retry_after(&sctx.ctx, CONTROLLER, &key, e)
}

/// What one reconcile of a pool sees.
pub(crate) struct Seen<'a> {
    pub pool: &'a VirtualMachinePool,
    /// Every cached VM of the pool's namespace.
    pub vms: Vec<&'a VirtualMachine>,
    /// The cache shows the pool's earlier creates and deletes.
    pub settled: bool,
}

/// The writes of one reconcile of a pool.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    /// The members counted, and whether the selector is usable.
    pub tally: sets::Tally,
    /// VMs it controls whose labels it no longer selects.
    pub release: Vec<&'a VirtualMachine>,
    /// The indexes of the VMs to create.
    pub create: Vec<u32>,
    /// VMs to delete, in this order.
    pub delete: Vec<&'a VirtualMachine>,
}

/// Decides a pool's writes from what was seen. Pure.
pub(crate) fn plan<'a>(seen: &Seen<'a>) -> Plan<'a> {
    let pool = seen.pool;
    let uid = pool.uid().unwrap_or_default();
    let template = &pool.spec.virtual_machine_template;
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let selector = match sets::parse_selector(&pool.spec.selector, labels) {
        Ok(s) => s,
        Err(why) => {
            return Plan {
                tally: sets::Tally {
                    invalid: Some(why),
                    ..Default::default()
                },
                ..Default::default()
            };
        }
    };
    let mut plan = Plan::default();
    plan.tally.selector = Some(selector.to_string());
    let mut members = Vec::new();
    for vm in &seen.vms {
        if controller_uid(*vm) != Some(uid.as_str()) {
            continue;
        }
        let selected = selector.matches(vm.metadata.labels.as_ref().unwrap_or(&Default::default()));
        if selected || vm.metadata.deletion_timestamp.is_some() {
            members.push(*vm);
        } else {
            plan.release.push(*vm);
        }
    }
    let mut active: Vec<&VirtualMachine> = members
        .iter()
        .copied()
        .filter(|vm| vm.metadata.deletion_timestamp.is_none())
        .collect();
    plan.tally.active = active.len();
    plan.tally.ready = active.iter().filter(|vm| ready(vm)).count();
    if pool.spec.paused || pool.meta().deletion_timestamp.is_some() || !seen.settled {
        return plan;
    }
    let wanted = usize::try_from(pool.spec.replicas.unwrap_or(1)).unwrap_or(0);
    // As KubeVirt's: a VM being deleted still counts until it is gone (its name is taken).
    if members.len() < wanted {
        let taken: Vec<String> = seen.vms.iter().map(|vm| vm.name_any()).collect();
        let name = pool.name_any();
        plan.create = (0u32..)
            .filter(|i| !taken.contains(&format!("{name}-{i}")))
            .take((wanted - members.len()).min(BURST))
            .collect();
    } else if active.len() > wanted {
        active.sort_by_key(|vm| (ready(vm), std::cmp::Reverse(index_of(vm))));
        let excess = members.len() - wanted;
        let deleting = members.len() - active.len();
        plan.delete = active
            .into_iter()
            .take(excess.saturating_sub(deleting).min(BURST))
            .collect();
    }
    plan
}

fn ready(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .is_some_and(|s| condition_true(&s.conditions, "Ready"))
}

/// The index at the end of a pool VM's name.
fn index_of(vm: &VirtualMachine) -> Option<u32> {
    vm.name_any().rsplit('-').next()?.parse().ok()
}

/// The ControllerRevision name of the pool's current spec (KubeVirt's).
pub(crate) fn revision_name(pool: &VirtualMachinePool) -> String {
    format!(
        "{}-{}",
        pool.name_any(),
        pool.meta().generation.unwrap_or_default()
    )
}

/// The VM of index `index` of a pool.
pub(crate) fn vm_for(pool: &VirtualMachinePool, index: u32) -> VirtualMachine {
    let template = &pool.spec.virtual_machine_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let revision = revision_name(pool);
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.clone());
    let mut spec = indexed_spec(&template.spec, index);
    spec.template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), revision);
    VirtualMachine {
        metadata: ObjectMeta {
            name: Some(format!("{}-{index}", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![sets::owner_ref(pool)]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// The template's spec with `-<index>` appended to each DataVolume template's name and to
/// the volumes that use one (each VM has its own disks).
fn indexed_spec(spec: &VirtualMachineSpec, index: u32) -> VirtualMachineSpec {
    let mut spec = spec.clone();
    let mut renamed = BTreeMap::new();
    for dv in &mut spec.data_volume_templates {
        let new = format!("{}-{index}", dv.metadata.name);
        renamed.insert(dv.metadata.name.clone(), new.clone());
        dv.metadata.name = new;
    }
    for volume in &mut spec.template.spec.volumes {
        if let Some(dv) = volume.data_volume.as_mut()
            && let Some(new) = renamed.get(&dv.name)
        {
            dv.name = new.clone();
        }
        if let Some(pvc) = volume.persistent_volume_claim.as_mut()
            && let Some(new) = renamed.get(&pvc.claim_name)
        {
            pvc.claim_name = new.clone();
        }
    }
    spec
}

const WORDS: sets::Words = sets::Words {
    resource: POOLS,
    paused_condition: ("SuccessfulPaused", "the pool is paused"),
    paused_event: ("SuccessfulPaused", "Paused: no VM is created or deleted"),
    resumed_event: (
        "SuccessfulResume",
        "Resumed: VMs are created and deleted again",
    ),
};

async fn reconcile_pool(pool: &VirtualMachinePool, sctx: &SetContext) -> Result<Action> {
    let ctx = &sctx.ctx;
    let Some((ns, uid)) = sets::identify(pool, ctx)? else {
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    };
    let cached = sctx.vms.state();
    let (vms, settled) = sets::candidates(&sctx.expectations, &uid, &ns, &cached);
    let seen = Seen { pool, vms, settled };
    let plan = plan(&seen);
    let failure = execute(pool, &plan, sctx).await?;
    let outcome = sets::Outcome {
        tally: &plan.tally,
        failure,
        settled,
        paused: pool.spec.paused,
    };
    let old = pool.status.clone().unwrap_or_default();
    sets::finish(pool, old, outcome, &WORDS, ctx).await
}

/// Stores the pool's spec in its ControllerRevision `<pool>-<generation>`, once.
async fn ensure_revision(pool: &VirtualMachinePool, sctx: &SetContext) -> Result<()> {
    let ctx = &sctx.ctx;
    let name = revision_name(pool);
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pool.namespace(),
            owner_references: Some(vec![sets::owner_ref(pool)]),
            ..Default::default()
        },
        data: Some(RawExtension(serde_json::to_value(&pool.spec)?)),
        revision: pool.meta().generation.unwrap_or_default(),
    };
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    writes::create(&api, &revision, &ctx.metrics, "controllerrevisions")
        .await
        .map_err(|e| Error::FailedCreateRevision(name, api_message(&e)))?;
    Ok(())
}

/// Carries out `plan`: releases, the revision and the creates, deletes; an Event for each
/// create and delete. A failed create or delete is kept for the status and the retry.
async fn execute(
    pool: &VirtualMachinePool,
    plan: &Plan<'_>,
    sctx: &SetContext,
) -> Result<Option<(&'static str, Error)>> {
    let ctx = &sctx.ctx;
    let ns = pool.namespace().unwrap_or_default();
    let uid = pool.uid().unwrap_or_default();
    let api: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &ns);
    let mut failure = None;
    for vm in &plan.release {
        sets::release(&api, *vm, &uid, ctx, VMS).await?;
    }
    let (mut created, mut deleted) = (Vec::new(), Vec::new());
    if !plan.create.is_empty()
        && let Err(e) = ensure_revision(pool, sctx).await
    {
        failure = Some(("FailedScaleOut", e));
    }
    for index in &plan.create {
        if failure.is_some() {
            break;
        }
        let vm = vm_for(pool, *index);
        let name = vm.name_any();
        match writes::create(&api, &vm, &ctx.metrics, VMS).await {
            Ok(Some(_)) => {
                tracing::info!(vm = %name, "created");
                ctx.event(
                    pool.object_ref(&()),
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created virtual machine {name}"),
                );
                created.push(name);
            }
            // Someone else's VM took the name since the cache was read: the next pass
            // picks another index.
            Ok(None) => {}
            Err(e) => {
                ctx.event(
                    pool.object_ref(&()),
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "Could not create virtual machine {name}: {}",
                        api_message(&e)
                    ),
                );
                failure = Some(("FailedScaleOut", Error::FailedCreateVirtualMachine(name, e)));
            }
        }
    }
    for vm in &plan.delete {
        let (name, vm_uid) = (vm.name_any(), vm.uid().unwrap_or_default());
        match writes::delete(&api, &name, &vm_uid, None, &ctx.metrics, VMS).await {
            Ok(_) => {
                tracing::info!(vm = %name, "deleted");
                ctx.event(
                    pool.object_ref(&()),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted virtual machine {name} from the pool"),
                );
                deleted.push(vm_uid);
            }
            Err(e) => {
                ctx.event(
                    pool.object_ref(&()),
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "Could not delete virtual machine {name}: {}",
                        api_message(&e)
                    ),
                );
                failure
                    .get_or_insert(("FailedScaleIn", Error::FailedDeleteVirtualMachine(name, e)));
            }
        }
    }
    sctx.expectations.expect(&uid, created, deleted);
    Ok(failure)
}

#[cfg(test)]
#[path = "pool_plan_tests.rs"]
mod plan_tests;
