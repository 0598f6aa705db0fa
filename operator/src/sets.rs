//! What the replica set controller ([`crate::replicaset`]) and the pool controller
//! ([`crate::pool`]) share: their context (the VM cache besides the operator's), the
//! record of the creates and deletes the caches do not show yet (KubeVirt's
//! "expectations"), selectors, ownership, the order members are removed in, and status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crds::{Condition, ReplicaSetStatus, condition_types};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::{CACHE_LAG_BOUND, STALE_CACHE_RETRY};
use crate::error::api_message;
use crate::{Context, Error, Result, writes};

/// How many members one reconcile creates or deletes at most (KubeVirt's burstReplicas).
pub const BURST: usize = 250;
/// A set is looked at again this often without a change (as the VM controller does).
const RESYNC: Duration = Duration::from_secs(300);

/// The context of the replica set and pool controllers.
pub struct SetContext {
    pub ctx: Arc<Context>,
    /// Every VirtualMachine (a pool's members).
    pub vms: Store<crds::VirtualMachine>,
    pub expectations: Expectations,
}

/// The creates (by name) and deletes (by UID) of a set's members that the cache does not
/// show yet, by the set's UID. While any is pending the set does not scale again (it would
/// count its members wrong and create or delete twice); a record the cache never catches
/// up with is dropped after [`CACHE_LAG_BOUND`].
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

struct Pending {
    creates: BTreeSet<String>,
    deletes: BTreeSet<String>,
    since: Instant,
}

impl Expectations {
    /// The set `owner` created the members `created` and deleted those of UIDs `deleted`.
    pub fn expect(&self, owner: &str, created: Vec<String>, deleted: Vec<String>) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.entry(owner.to_string()).or_insert_with(|| Pending {
            creates: BTreeSet::new(),
            deletes: BTreeSet::new(),
            since: Instant::now(),
        });
        p.creates.extend(created);
        p.deletes.extend(deleted);
        p.since = Instant::now();
    }

    /// Whether the cache shows every create and delete of `owner`: `shows_created(name)`
    /// and `shows_deleted(uid)` (gone, or being deleted).
    pub fn satisfied(
        &self,
        owner: &str,
        shows_created: impl Fn(&str) -> bool,
        shows_deleted: impl Fn(&str) -> bool,
    ) -> bool {
        self.satisfied_at(owner, shows_created, shows_deleted, Instant::now())
    }

    fn satisfied_at(
        &self,
        owner: &str,
        shows_created: impl Fn(&str) -> bool,
        shows_deleted: impl Fn(&str) -> bool,
        now: Instant,
    ) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = map.get_mut(owner) else {
            return true;
        };
        p.creates.retain(|n| !shows_created(n));
        p.deletes.retain(|u| !shows_deleted(u));
        let done = (p.creates.is_empty() && p.deletes.is_empty())
            || now.duration_since(p.since) > CACHE_LAG_BOUND;
        if done {
            map.remove(owner);
        }
        done
    }
}

/// The namespace and UID of a set; None while the cache does not show the set's status as
/// this controller last wrote it (its watch event brings it, and the reconcile is retried).
pub fn identify<K: Resource>(set: &K, ctx: &Context) -> Result<Option<(String, String)>> {
    let (Some(ns), Some(uid)) = (set.namespace(), set.uid()) else {
        return Err(Error::InvalidObject("set without namespace or UID".into()));
    };
    let stale = ctx
        .own_writes
        .is_stale(&uid, &set.resource_version().unwrap_or_default());
    Ok((!stale).then_some((ns, uid)))
}

/// The cached objects of namespace `ns` (a set's candidates), and whether they show the
/// creates and deletes the set `uid` made earlier ([`Expectations`]).
pub fn candidates<'a, M: Resource>(
    expectations: &Expectations,
    uid: &str,
    ns: &str,
    cached: &'a [Arc<M>],
) -> (Vec<&'a M>, bool) {
    let in_ns: Vec<&M> = cached
        .iter()
        .filter(|m| m.namespace().as_deref() == Some(ns))
        .map(|m| m.as_ref())
        .collect();
    let settled = expectations.satisfied(
        uid,
        |name| in_ns.iter().any(|m| m.name_any() == name),
        |gone| {
            !in_ns
                .iter()
                .any(|m| m.uid().as_deref() == Some(gone) && m.meta().deletion_timestamp.is_none())
        },
    );
    (in_ns, settled)
}

/// How a kind of set words its status and Events.
pub struct Words {
    /// The status subresource's resource, for the request metrics.
    pub resource: &'static str,
    /// ReplicaPaused's reason and message.
    pub paused_condition: (&'static str, &'static str),
    /// The Events' reasons and notes when the set is paused and resumed.
    pub paused_event: (&'static str, &'static str),
    pub resumed_event: (&'static str, &'static str),
}

/// What a set's plan counted of its members.
#[derive(Debug, Default)]
pub struct Tally {
    /// Why the set does nothing (its selector), if so.
    pub invalid: Option<String>,
    /// Members neither finished nor being deleted, and how many of them are ready.
    pub active: usize,
    pub ready: usize,
    /// The selector's string form (None when it is invalid).
    pub selector: Option<String>,
}

/// What one reconcile of a set observed and did.
pub struct Outcome<'a> {
    pub tally: &'a Tally,
    /// The first failed write, by ReplicaFailure's reason.
    pub failure: Option<(&'static str, Error)>,
    /// The cache showed the set's earlier writes.
    pub settled: bool,
    pub paused: bool,
}

/// Ends a set's reconcile: writes its status when it changed (telling a pause or resume
/// in an Event), and turns the outcome into the result: the failure for a retry, a short
/// requeue while the cache lags, else the resync.
pub async fn finish<K>(
    set: &K,
    old: ReplicaSetStatus,
    outcome: Outcome<'_>,
    words: &Words,
    ctx: &Context,
) -> Result<Action>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    if let Some(why) = &outcome.tally.invalid {
        tracing::warn!(reason = %why, "set not acted on");
    }
    let failure = match (&outcome.tally.invalid, &outcome.failure) {
        (Some(why), _) => Some(("InvalidSelector", why.clone())),
        (None, Some((reason, e))) => Some((*reason, failure_message(e))),
        (None, None) => None,
    };
    let next = status(
        &old,
        Observed {
            replicas: outcome.tally.active,
            ready: outcome.tally.ready,
            selector: outcome.tally.selector.clone(),
            failure,
            paused: outcome.paused.then_some(words.paused_condition),
        },
    );
    if next != old {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
        let written =
            writes::replace_status(&api, set, &next, &ctx.metrics, words.resource).await?;
        ctx.own_writes.wrote_over(set, &written);
        if shows_paused(&next) != shows_paused(&old) {
            let (reason, note) = if outcome.paused {
                words.paused_event
            } else {
                words.resumed_event
            };
            ctx.event(set.object_ref(&()), EventType::Normal, reason, note.into());
        }
    }
    match outcome.failure {
        Some((_, e)) => Err(e),
        None if !outcome.settled => Ok(Action::requeue(STALE_CACHE_RETRY)),
        None => Ok(Action::requeue(RESYNC)),
    }
}

/// Releases `member`, which the set `uid` controls and no longer selects: removes the
/// set's owner reference (guarded by the version read).
pub async fn release<M>(
    api: &Api<M>,
    member: &M,
    uid: &str,
    ctx: &Context,
    resource: &'static str,
) -> Result<()>
where
    M: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let Some(i) = member.owner_references().iter().position(|o| o.uid == uid) else {
        return Ok(());
    };
    let op = serde_json::json!({"op": "remove", "path": format!("/metadata/ownerReferences/{i}")});
    writes::json_patch(
        api,
        member,
        writes::guarded(member, vec![op]),
        false,
        &ctx.metrics,
        resource,
    )
    .await?;
    tracing::info!(member = %member.name_any(), "released: the selector no longer selects it");
    Ok(())
}

/// A failed write as ReplicaFailure's message: the API server's words.
fn failure_message(e: &Error) -> String {
    match e {
        Error::FailedCreate(_, k)
        | Error::FailedDelete(_, k)
        | Error::FailedCreateVirtualMachine(_, k)
        | Error::FailedDeleteVirtualMachine(_, k) => api_message(k),
        e => ferrovirt_runtime::chain(e),
    }
}

/// A set's selector, parsed; Err names what is wrong with it or that it does not select
/// the template's `labels` (virt-api refuses both; the controller does nothing then).
pub fn parse_selector(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<Selector, String> {
    let parsed = Selector::try_from(selector.clone())
        .map_err(|e| format!("spec.selector is not a valid label selector: {e}"))?;
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if labels.is_empty() || !parsed.matches(labels) {
        return Err("spec.selector does not select the labels of the template".into());
    }
    Ok(parsed)
}

/// The owner reference a set puts on its members: it controls them, and blocks their
/// owner's deletion in the foreground until they are gone.
pub fn owner_ref<K: Resource<DynamicType = ()>>(set: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The UID of the controller of `obj`, if any.
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether `conditions` has `type_` with status True.
pub fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// What a set's status says, as one reconcile observed it.
struct Observed<'a> {
    /// Members neither finished nor being deleted.
    pub replicas: usize,
    pub ready: usize,
    /// The selector's string form (None: keep the old one).
    pub selector: Option<String>,
    /// ReplicaFailure's reason and message, if a create or delete failed.
    pub failure: Option<(&'a str, String)>,
    /// ReplicaPaused's reason and message, while the set is paused.
    pub paused: Option<(&'a str, &'a str)>,
}

/// The status a set writes: its members counted, the selector in its string form, and the
/// ReplicaFailure and ReplicaPaused conditions set or removed.
fn status(old: &ReplicaSetStatus, o: Observed<'_>) -> ReplicaSetStatus {
    let mut conditions = old.conditions.clone();
    match o.failure {
        Some((reason, message)) => crds::condition::set(
            &mut conditions,
            Condition {
                type_: condition_types::REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                ..Default::default()
            },
        ),
        None => crds::condition::remove(&mut conditions, condition_types::REPLICA_FAILURE),
    }
    if let Some((reason, message)) = o.paused {
        crds::condition::set(
            &mut conditions,
            Condition {
                type_: condition_types::REPLICA_PAUSED.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                ..Default::default()
            },
        );
    } else {
        crds::condition::remove(&mut conditions, condition_types::REPLICA_PAUSED);
    }
    ReplicaSetStatus {
        replicas: Some(i32::try_from(o.replicas).unwrap_or(i32::MAX)),
        ready_replicas: Some(i32::try_from(o.ready).unwrap_or(i32::MAX)),
        conditions,
        label_selector: o.selector.or_else(|| old.label_selector.clone()),
    }
}

/// Whether the ReplicaPaused condition is in `status`.
fn shows_paused(status: &ReplicaSetStatus) -> bool {
    condition_true(&status.conditions, condition_types::REPLICA_PAUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_until_the_cache_shows_the_writes() {
        let e = Expectations::default();
        assert!(e.satisfied("rs", |_| false, |_| false));
        e.expect("rs", vec!["a".into(), "b".into()], vec!["u1".into()]);
        assert!(!e.satisfied("rs", |n| n == "a", |_| true));
        assert!(
            !e.satisfied("rs", |_| false, |_| false),
            "b is still unseen"
        );
        assert!(e.satisfied("rs", |n| n == "b", |_| false));
        e.expect("rs", vec!["c".into()], vec![]);
        let later = Instant::now() + CACHE_LAG_BOUND + std::time::Duration::from_secs(1);
        assert!(
            e.satisfied_at("rs", |_| false, |_| false, later),
            "dropped after the bound"
        );
    }

    #[test]
    fn a_selector_must_select_the_template() {
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"a": "1"}})).unwrap();
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert!(parse_selector(&sel, Some(&labels)).is_ok());
        assert!(parse_selector(&sel, None).is_err());
        let other = BTreeMap::from([("a".to_string(), "2".to_string())]);
        assert!(parse_selector(&sel, Some(&other)).is_err());
    }
}
