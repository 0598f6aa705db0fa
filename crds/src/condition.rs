//! Conditions, shared by VMs and VMIs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A condition of a VM or VMI, shaped like Kubernetes conditions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, for example Ready, Failure or PodScheduled.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A machine-readable reason for the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the condition was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub last_probe_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub last_transition_time: Option<Time>,
}

/// Carries the times of `old`'s condition of the same type into `new`, by Kubernetes' rule
/// (apimachinery's `meta.SetStatusCondition`): `lastTransitionTime` moves only when the
/// status changes; a new reason or message keeps it. When nothing but the times differs,
/// the probe time is kept too, so an unchanged condition compares equal and is not written.
/// A condition with no previous one, or a new status, keeps `new`'s time, or gets `now`.
pub fn carry_times(old: &[Condition], new: &mut Condition, now: &Time) {
    match old.iter().find(|o| o.type_ == new.type_) {
        Some(prev) if prev.status == new.status => {
            new.last_transition_time = prev.last_transition_time.clone();
            if prev.reason == new.reason && prev.message == new.message {
                new.last_probe_time = prev.last_probe_time.clone();
            }
        }
        _ => {}
    }
    if new.last_transition_time.is_none() {
        new.last_transition_time = Some(now.clone());
    }
}

/// Sets `new` in `conditions` (replacing the one of its type) with [`carry_times`].
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    carry_times(conditions, &mut new, &now);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// Removes the condition of `type_`, if any.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn c(status: &str, reason: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let epoch = Time(Timestamp::UNIX_EPOCH);
        let mut cs = vec![Condition {
            last_transition_time: Some(epoch.clone()),
            last_probe_time: Some(epoch.clone()),
            ..c("False", "A")
        }];
        set(&mut cs, c("False", "A"));
        assert_eq!(cs[0].last_transition_time, Some(epoch.clone()));
        assert_eq!(
            cs[0].last_probe_time,
            Some(epoch.clone()),
            "unchanged: equal"
        );

        set(&mut cs, c("False", "B"));
        assert_eq!(cs[0].reason.as_deref(), Some("B"));
        assert_eq!(
            cs[0].last_transition_time,
            Some(epoch.clone()),
            "same status"
        );
        assert_eq!(cs[0].last_probe_time, None, "a new reason is a new probe");

        set(&mut cs, c("True", "B"));
        assert_ne!(
            cs[0].last_transition_time,
            Some(epoch),
            "the status changed"
        );
        assert_eq!(cs.len(), 1);

        remove(&mut cs, "Ready");
        assert!(cs.is_empty());
    }
}
