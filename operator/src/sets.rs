//! What the replica set controller ([`crate::replicaset`]) and the pool controller
//! ([`crate::pool`]) share: their context (the VM cache besides the operator's), the
//! record of the creates and deletes the caches do not show yet (KubeVirt's
//! "expectations"), selectors, ownership, the order members are removed in, and status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crds::{Condition, ReplicaSetStatus, condition_types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::Context;
use crate::context::CACHE_LAG_BOUND;

/// How many members one reconcile creates or deletes at most (KubeVirt's burstReplicas).
pub const BURST: usize = 250;

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
pub struct Observed<'a> {
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
pub fn status(old: &ReplicaSetStatus, o: Observed<'_>) -> ReplicaSetStatus {
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
pub fn shows_paused(status: &ReplicaSetStatus) -> bool {
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
