//! The VirtualMachineInstanceReplicaSet controller, after KubeVirt's
//! (`pkg/virt-controller/watch/replicaset`): keeps `spec.replicas` instances made from the
//! template, named `<prefix><random>` (generateName: the template's name, else its
//! generateName, else the set's name) and controlled by the set; adopts instances without a
//! controller that its selector selects and releases those it controls that the selector no
//! longer selects; replaces finished (Succeeded, Failed) instances by deleting them; does
//! nothing while `spec.paused`. Scaling down deletes instances that are not ready first,
//! then the least advanced (Pending before Scheduling, Scheduled, Running), then the
//! newest.
//!
//! [`plan`] decides from what the caches show (pure, table-tested); [`execute`] writes.

use std::sync::Arc;

use crds::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet, VmiPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::SelectorExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::error::api_message;
use crate::sets::{self, BURST, SetContext, condition_true, controller_uid};
use crate::{Error, Result, writes};

const CONTROLLER: &str = "replicaset";
const VMIS: &str = "virtualmachineinstances";
const SETS: &str = "virtualmachineinstancereplicasets";

#[instrument(skip(sctx, rs), fields(vmirs = %format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())))]
pub async fn reconcile(
    rs: Arc<VirtualMachineInstanceReplicaSet>,
    sctx: Arc<SetContext>,
) -> Result<Action> {
    let key = format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any());
    crate::context::measured(CONTROLLER, &key, &sctx.ctx, reconcile_rs(&rs, &sctx)).await
}

pub fn error_policy(
    rs: Arc<VirtualMachineInstanceReplicaSet>,
    e: &Error,
    sctx: Arc<SetContext>,
) -> Action {
    let key = format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any());
    crate::context::retry_after(&sctx.ctx, CONTROLLER, &key, e)
}

/// What one reconcile of a replica set sees.
pub(crate) struct Seen<'a> {
    pub rs: &'a VirtualMachineInstanceReplicaSet,
    /// Every cached VMI of the set's namespace.
    pub vmis: Vec<&'a VirtualMachineInstance>,
    /// The cache shows the set's earlier creates and deletes.
    pub settled: bool,
}

/// The writes of one reconcile of a replica set.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    /// The members counted, and whether the selector is usable.
    pub tally: sets::Tally,
    /// Instances without a controller to adopt.
    pub adopt: Vec<&'a VirtualMachineInstance>,
    /// Instances it controls whose labels it no longer selects.
    pub release: Vec<&'a VirtualMachineInstance>,
    /// How many instances to create.
    pub create: usize,
    /// Instances to delete because there are too many, in this order.
    pub delete: Vec<&'a VirtualMachineInstance>,
    /// Finished instances to delete (they are replaced).
    pub finished: Vec<&'a VirtualMachineInstance>,
}

/// Decides a replica set's writes from what was seen. Pure.
pub(crate) fn plan<'a>(seen: &Seen<'a>) -> Plan<'a> {
    let rs = seen.rs;
    let uid = rs.uid().unwrap_or_default();
    let selector = match sets::parse_selector(
        &rs.spec.selector,
        rs.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()),
    ) {
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
    let deleting_set = rs.meta().deletion_timestamp.is_some();
    let mut plan = Plan::default();
    plan.tally.selector = Some(selector.to_string());
    let mut members = Vec::new();
    for vmi in &seen.vmis {
        let selected =
            selector.matches(vmi.metadata.labels.as_ref().unwrap_or(&Default::default()));
        let alive = vmi.metadata.deletion_timestamp.is_none();
        match controller_uid(*vmi) {
            Some(owner) if owner == uid => {
                if selected || !alive {
                    members.push(*vmi);
                } else {
                    plan.release.push(*vmi);
                }
            }
            None if selected && alive && !deleting_set => {
                plan.adopt.push(*vmi);
                members.push(*vmi);
            }
            _ => {}
        }
    }
    let finished = |v: &VirtualMachineInstance| {
        matches!(phase(v), Some(VmiPhase::Succeeded | VmiPhase::Failed))
    };
    let mut active: Vec<&VirtualMachineInstance> = members
        .iter()
        .copied()
        .filter(|v| v.metadata.deletion_timestamp.is_none() && !finished(v))
        .collect();
    plan.tally.active = active.len();
    plan.tally.ready = active.iter().filter(|v| ready(v)).count();
    if rs.spec.paused || deleting_set || !seen.settled {
        return plan;
    }
    let wanted = usize::try_from(rs.spec.replicas.unwrap_or(1)).unwrap_or(0);
    if active.len() < wanted {
        plan.create = (wanted - active.len()).min(BURST);
    } else if active.len() > wanted {
        active.sort_by_key(|v| removal_rank(v));
        plan.delete = active
            .into_iter()
            .take(plan.tally.active - wanted)
            .take(BURST)
            .collect();
    }
    plan.finished = members
        .into_iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none() && finished(v))
        .take(BURST)
        .collect();
    plan
}

fn phase(vmi: &VirtualMachineInstance) -> Option<VmiPhase> {
    vmi.status.as_ref().and_then(|s| s.phase)
}

fn ready(vmi: &VirtualMachineInstance) -> bool {
    vmi.status
        .as_ref()
        .is_some_and(|s| condition_true(&s.conditions, "Ready"))
}

/// The order of removal: not ready first, then the least advanced phase, then the newest.
fn removal_rank(vmi: &VirtualMachineInstance) -> (bool, u8, std::cmp::Reverse<Option<String>>) {
    let advanced = match phase(vmi) {
        None | Some(VmiPhase::Pending) => 0,
        Some(VmiPhase::Scheduling) => 1,
        Some(VmiPhase::Scheduled) => 2,
        Some(VmiPhase::Unknown) => 3,
        _ => 4,
    };
    let created = vmi
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    (ready(vmi), advanced, std::cmp::Reverse(created))
}

/// The instance a replica set creates: the template's labels, annotations and spec, a
/// generated name, controlled by the set.
pub(crate) fn instance_for(rs: &VirtualMachineInstanceReplicaSet) -> VirtualMachineInstance {
    let meta = rs.spec.template.metadata.clone().unwrap_or_default();
    let prefix = meta
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| rs.name_any());
    VirtualMachineInstance {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![sets::owner_ref(rs)]),
            ..Default::default()
        },
        spec: rs.spec.template.spec.clone(),
        status: None,
    }
}

const WORDS: sets::Words = sets::Words {
    resource: SETS,
    paused_condition: ("Paused", "the replica set is paused"),
    paused_event: (
        "SuccessfulPaused",
        "Paused: no instance is created or deleted",
    ),
    resumed_event: (
        "SuccessfulResumed",
        "Resumed: instances are created and deleted again",
    ),
};

async fn reconcile_rs(rs: &VirtualMachineInstanceReplicaSet, sctx: &SetContext) -> Result<Action> {
    let ctx = &sctx.ctx;
    let Some((ns, uid)) = sets::identify(rs, ctx)? else {
        return Ok(Action::requeue(crate::context::STALE_CACHE_RETRY));
    };
    let cached = ctx.vmis.state();
    let (vmis, settled) = sets::candidates(&sctx.expectations, &uid, &ns, &cached);
    let seen = Seen { rs, vmis, settled };
    let plan = plan(&seen);
    let failure = execute(rs, &plan, sctx).await?;
    let outcome = sets::Outcome {
        tally: &plan.tally,
        failure,
        settled,
        paused: rs.spec.paused,
    };
    sets::finish(
        rs,
        rs.status.clone().unwrap_or_default(),
        outcome,
        &WORDS,
        ctx,
    )
    .await
}

/// Carries out `plan`: adoptions and releases, creates, deletes; an Event for each create
/// and delete. A failed create or delete is kept for the status and the retry, and the
/// rest goes on.
async fn execute(
    rs: &VirtualMachineInstanceReplicaSet,
    plan: &Plan<'_>,
    sctx: &SetContext,
) -> Result<Option<(&'static str, Error)>> {
    let ctx = &sctx.ctx;
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let api: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let mut failure = None;
    for vmi in &plan.adopt {
        let op = match vmi.metadata.owner_references {
            None => {
                json!({"op": "add", "path": "/metadata/ownerReferences", "value": [sets::owner_ref(rs)]})
            }
            Some(_) => {
                json!({"op": "add", "path": "/metadata/ownerReferences/-", "value": sets::owner_ref(rs)})
            }
        };
        writes::json_patch(
            &api,
            *vmi,
            writes::guarded(*vmi, vec![op]),
            false,
            &ctx.metrics,
            VMIS,
        )
        .await?;
        tracing::info!(vmi = %vmi.name_any(), "adopted");
    }
    for vmi in &plan.release {
        sets::release(&api, *vmi, &uid, ctx, VMIS).await?;
    }
    let (mut created, mut deleted) = (Vec::new(), Vec::new());
    let template = instance_for(rs);
    for _ in 0..plan.create {
        match writes::create(&api, &template, &ctx.metrics, VMIS).await {
            Ok(Some(vmi)) => {
                let name = vmi.name_any();
                tracing::info!(vmi = %name, "created");
                ctx.event(
                    rs.object_ref(&()),
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created virtual machine instance {name}"),
                );
                created.push(name);
            }
            Ok(None) => {}
            Err(e) => {
                ctx.event(
                    rs.object_ref(&()),
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "Could not create a virtual machine instance: {}",
                        api_message(&e)
                    ),
                );
                let prefix = template.metadata.generate_name.clone().unwrap_or_default();
                failure = Some(("FailedCreate", Error::FailedCreate(prefix, e)));
                break;
            }
        }
    }
    let deletes = plan
        .delete
        .iter()
        .map(|v| (*v, "Deleted virtual machine instance"))
        .chain(
            plan.finished
                .iter()
                .map(|v| (*v, "Deleted finished virtual machine instance")),
        );
    for (vmi, what) in deletes {
        let (name, vmi_uid) = (vmi.name_any(), vmi.uid().unwrap_or_default());
        match writes::delete(&api, &name, &vmi_uid, None, &ctx.metrics, VMIS).await {
            Ok(_) => {
                tracing::info!(vmi = %name, "deleted");
                ctx.event(
                    rs.object_ref(&()),
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("{what} {name}"),
                );
                deleted.push(vmi_uid);
            }
            Err(e) => {
                ctx.event(
                    rs.object_ref(&()),
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "Could not delete virtual machine instance {name}: {}",
                        api_message(&e)
                    ),
                );
                failure.get_or_insert(("FailedDelete", Error::FailedDelete(name, e)));
            }
        }
    }
    sctx.expectations.expect(&uid, created, deleted);
    Ok(failure)
}

#[cfg(test)]
#[path = "replicaset_plan_tests.rs"]
mod plan_tests;
