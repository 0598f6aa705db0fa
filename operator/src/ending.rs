//! How a VM's instance ended, carried into the VM's status after the instance is gone: a
//! VMI that fails or stops lives about a second under runStrategy Always, and its reason
//! would otherwise be visible only in virt-handler's log. Pure.

use crds::{Condition, VirtualMachineInstance, VmiPhase};

/// How a finished VMI ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub uid: String,
    pub phase: VmiPhase,
    /// The VMI's reason (`status.reason`, else its Ready condition's), e.g.
    /// `VolumePreparationFailed` or `GuestShutdown`; else the phase.
    pub reason: String,
    /// The VMI's message for it (its Failure condition's, else its Ready condition's), else
    /// the reason.
    pub detail: String,
}

impl Ending {
    /// The ending of `vmi`, if it is in a final phase.
    pub fn of(vmi: &VirtualMachineInstance) -> Option<Self> {
        let status = vmi.status.as_ref()?;
        let phase = status.phase.filter(|p| p.is_final())?;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status != "True");
        let failure = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failure" && c.status == "True");
        let reason = status
            .reason
            .clone()
            .or_else(|| ready.and_then(|c| c.reason.clone()))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| phase.as_str().to_string());
        let detail = failure
            .filter(|c| c.reason.as_deref() == Some(reason.as_str()))
            .or(ready)
            .and_then(|c| c.message.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| reason.clone());
        Some(Self {
            uid: vmi.metadata.uid.clone().unwrap_or_default(),
            phase,
            reason,
            detail,
        })
    }

    /// `VirtualMachineInstance <uid> <phase>: <detail>`: the message of the VM's conditions
    /// and Events about it. It names the UID, so a later pass can tell whose ending a
    /// condition carries ([`carried`]).
    pub fn message(&self) -> String {
        format!(
            "VirtualMachineInstance {} {}: {}",
            self.uid,
            self.phase.as_str(),
            self.detail
        )
    }

    /// The condition `type_` (False for Ready, True for Failure) carrying this ending.
    pub fn condition(&self, type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(self.reason.clone()),
            message: Some(self.message()),
            ..Default::default()
        }
    }
}

/// The condition `type_` among `old` if it carries the ending of the instance `uid`.
pub fn carried<'a>(old: &'a [Condition], type_: &str, uid: &str) -> Option<&'a Condition> {
    let prefix = format!("VirtualMachineInstance {uid} ");
    old.iter()
        .find(|c| c.type_ == type_ && c.message.as_deref().is_some_and(|m| m.starts_with(&prefix)))
}

/// The UID of the instance whose ending the condition `type_` among `old` carries.
pub fn carried_uid(old: &[Condition], type_: &str) -> Option<String> {
    let c = old.iter().find(|c| c.type_ == type_)?;
    let rest = c
        .message
        .as_deref()?
        .strip_prefix("VirtualMachineInstance ")?;
    let uid = rest.split(' ').next()?;
    (!uid.is_empty()
        && c.reason
            .as_deref()
            .is_some_and(|r| !matches!(r, "VMINotExists" | "VMIConditionMissing")))
    .then(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(yaml: &str) -> VirtualMachineInstance {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_handler_failure_carries_its_reason_and_message() {
        let v = vmi(
            "metadata: {name: a, uid: u1}\nspec: {domain: {devices: {}}}\nstatus:\n  phase: Failed\n  reason: VolumePreparationFailed\n  conditions: [{type: Ready, status: 'False', reason: VolumePreparationFailed, message: 'image x:1 is not in the image store'}]\n",
        );
        let e = Ending::of(&v).unwrap();
        assert_eq!(e.reason, "VolumePreparationFailed");
        assert_eq!(
            e.message(),
            "VirtualMachineInstance u1 Failed: image x:1 is not in the image store"
        );
        let c = e.condition("Failure", "True");
        assert_eq!(carried(std::slice::from_ref(&c), "Failure", "u1"), Some(&c));
        assert_eq!(carried(std::slice::from_ref(&c), "Failure", "u2"), None);
        assert_eq!(carried_uid(&[c], "Failure").as_deref(), Some("u1"));
    }

    #[test]
    fn pod_failures_and_guest_shutdowns() {
        let pod = vmi(
            "metadata: {name: a, uid: u2}\nspec: {domain: {devices: {}}}\nstatus:\n  phase: Failed\n  reason: ErrImagePull\n  conditions: [{type: Failure, status: 'True', reason: ErrImagePull, message: 'no such image'}]\n",
        );
        assert_eq!(Ending::of(&pod).unwrap().detail, "no such image");
        let shutdown = vmi(
            "metadata: {name: a, uid: u3}\nspec: {domain: {devices: {}}}\nstatus:\n  phase: Succeeded\n  conditions: [{type: Ready, status: 'False', reason: GuestShutdown}]\n",
        );
        let e = Ending::of(&shutdown).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.message().as_str()),
            (
                "GuestShutdown",
                "VirtualMachineInstance u3 Succeeded: GuestShutdown"
            )
        );
        let running = vmi(
            "metadata: {name: a, uid: u4}\nspec: {domain: {devices: {}}}\nstatus: {phase: Running}\n",
        );
        assert_eq!(Ending::of(&running), None);
        let not_exists = Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("VMINotExists".into()),
            message: Some("VMI does not exist".into()),
            ..Default::default()
        };
        assert_eq!(carried_uid(&[not_exists], "Ready"), None);
    }
}
