//! virt-api's admission webhooks: KubeVirt's defaults (mutating) and validation for
//! VirtualMachines and VirtualMachineInstances, served on virt-api's HTTPS port.
//!
//! As in linkerd2's policy-controller, [`Admission`] is a `tower::Service` that takes a
//! request and dispatches by the object's kind to the kind's [`Admit`] implementation
//! (its defaults and its validation). The decisions are pure functions
//! ([`mutate`], [`validate`]); this module turns them into AdmissionReview answers.

pub mod datavolume;
pub mod instancetype;
pub mod mutate;
pub mod quantity;
pub mod register;
pub mod review;
pub mod sets;
pub mod validate;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use serde_json::Value;

pub use instancetype::Found;
pub use review::{Cause, Operation, Request, Response};

/// Which webhook a request came to, from its path. The paths are KubeVirt's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Mutate,
    Validate,
}

impl Hook {
    pub const VMI_MUTATE: &str = "/virtualmachineinstances-mutate";
    pub const VM_MUTATE: &str = "/virtualmachines-mutate";
    pub const VMI_VALIDATE: &str = "/virtualmachineinstances-validate-create";
    pub const VM_VALIDATE: &str = "/virtualmachines-validate";
    pub const VMIRS_VALIDATE: &str = "/virtualmachinereplicaset-validate";
    pub const POOL_VALIDATE: &str = "/virtualmachinepool-validate";

    pub fn from_path(path: &str) -> Option<Hook> {
        match path {
            Self::VMI_MUTATE | Self::VM_MUTATE => Some(Hook::Mutate),
            Self::VMI_VALIDATE | Self::VM_VALIDATE | Self::VMIRS_VALIDATE | Self::POOL_VALIDATE => {
                Some(Hook::Validate)
            }
            _ => None,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Hook::Mutate => "admission/mutate",
            Hook::Validate => "admission/validate",
        }
    }
}

/// What a kind's admission does: its defaults and its validation.
pub trait Admit {
    /// Sets the defaults on `object` (a create or update). `found`: the instancetype and
    /// preference a VM names.
    fn default(&self, op: Operation, object: &mut Value, found: &Found);
    /// The causes to refuse `object` for (empty: accepted).
    fn validate(
        &self,
        op: Operation,
        object: &Value,
        old: Option<&Value>,
        found: &Found,
    ) -> Vec<Cause>;
}

/// VirtualMachineInstance: all of KubeVirt's defaults on create; validation of the spec
/// on create (the CRD rule refuses every later change of the spec).
pub struct Vmi;

impl Admit for Vmi {
    fn default(&self, op: Operation, object: &mut Value, _found: &Found) {
        if op == Operation::Create {
            mutate::vmi(object);
        }
    }

    fn validate(
        &self,
        op: Operation,
        object: &Value,
        _old: Option<&Value>,
        found: &Found,
    ) -> Vec<Cause> {
        if op != Operation::Create {
            return Vec::new();
        }
        let mut causes = validate::spec("spec", &object["spec"]);
        causes.extend(datavolume::validate(object, &found.cdi));
        causes
    }
}

/// VirtualMachine: the preferred machine type, else the default one, and the firmware
/// UUID on create; validation of the template, with its instancetype and preference
/// applied ([`instancetype`]), on create and on each update that changes the template or
/// the matchers (updates that leave them alone, such as a start or stop, are never refused
/// for a template stored earlier).
pub struct Vm;

impl Admit for Vm {
    fn default(&self, op: Operation, object: &mut Value, found: &Found) {
        if op == Operation::Create {
            instancetype::apply_inferred(found, object);
            instancetype::default_vm(found, object);
            mutate::vm(object);
        }
    }

    fn validate(
        &self,
        op: Operation,
        object: &Value,
        old: Option<&Value>,
        found: &Found,
    ) -> Vec<Cause> {
        let spec = &object["spec"];
        let changed = match (op, old) {
            (Operation::Create, _) | (Operation::Update, None) => true,
            (Operation::Update, Some(old)) => [
                "template",
                "instancetype",
                "preference",
                "dataVolumeTemplates",
            ]
            .iter()
            .any(|f| old["spec"][f] != spec[*f]),
            _ => false,
        };
        if !changed {
            return Vec::new();
        }
        let template = match instancetype::expanded_template(object, old, found) {
            Ok(t) => t,
            Err(causes) => return causes,
        };
        let mut causes = validate::spec("spec.template.spec", &template);
        if instancetype::instancetype_missing(object, found) {
            // The memory comes from the instancetype once it exists.
            causes.retain(|c| {
                c.field != "spec.template.spec.domain.memory.guest"
                    || c.reason != "FieldValueRequired"
            });
        }
        causes.extend(datavolume::validate(object, &found.cdi));
        causes
    }
}

/// The admitter of a kind, if Ferrovirt admits that kind.
pub fn admitter(kind: &str) -> Option<&'static dyn Admit> {
    match kind {
        "VirtualMachineInstance" => Some(&Vmi),
        "VirtualMachine" => Some(&Vm),
        "VirtualMachineInstanceReplicaSet" => Some(&sets::ReplicaSet),
        "VirtualMachinePool" => Some(&sets::Pool),
        _ => None,
    }
}

/// The admission service: a request to one of the webhooks in, the answer out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Admission;

impl Admission {
    /// Decides one request (what [`tower_service::Service::call`] runs), as if the
    /// instancetype and preference a VM names did not exist.
    pub fn decide(hook: Hook, req: &Request) -> Response {
        Self::decide_with(hook, req, &Found::default())
    }

    /// Decides one request, given the instancetype and preference the VM names.
    pub fn decide_with(hook: Hook, req: &Request, found: &Found) -> Response {
        let Some(admit) = admitter(&req.kind) else {
            return Response::Error(format!("Ferrovirt does not admit kind {:?}", req.kind));
        };
        match hook {
            Hook::Mutate => {
                if let Some(why) = &found.infer_error {
                    return Response::Error(why.clone());
                }
                let mut object = req.object.clone();
                admit.default(req.operation, &mut object, found);
                let patch = json_patch::diff(&req.object, &object);
                Response::Allow {
                    patch: (!patch.0.is_empty()).then_some(patch),
                }
            }
            Hook::Validate => {
                let causes =
                    admit.validate(req.operation, &req.object, req.old_object.as_ref(), found);
                if causes.is_empty() {
                    Response::Allow { patch: None }
                } else {
                    Response::Deny(causes)
                }
            }
        }
    }

    /// The AdmissionReview answering `body` sent to `hook`, reading the instancetype and
    /// preference a VM names, and whether CDI serves the DataVolumes it uses, through
    /// `client` (none read without one).
    pub async fn review_reading(hook: Hook, body: &[u8], client: Option<&kube::Client>) -> Value {
        let found = match (review::parse(body), client) {
            // Read only where they are used: a VM's defaults on create, its validation.
            (Ok(req), Some(client))
                if hook == Hook::Validate || req.operation == Operation::Create =>
            {
                // A pool's template is looked up as the VM it describes.
                let req = sets::as_vm_request(&req).unwrap_or(req);
                let mut found = instancetype::find(client, &req).await;
                if hook == Hook::Validate {
                    found.cdi = datavolume::find(client, &req).await;
                }
                found
            }
            _ => Found::default(),
        };
        Self::review_with(hook, body, &found)
    }

    /// The AdmissionReview answering `body` sent to `hook`.
    pub fn review(hook: Hook, body: &[u8]) -> Value {
        Self::review_with(hook, body, &Found::default())
    }

    fn review_with(hook: Hook, body: &[u8], found: &Found) -> Value {
        match review::parse(body) {
            Ok(req) => {
                let response = Self::decide_with(hook, &req, found);
                if let Response::Deny(causes) = &response {
                    tracing::info!(kind = %req.kind, operation = ?req.operation,
                        message = %Response::message(causes), "admission refused");
                }
                response.into_review(&req.uid)
            }
            Err(review::Malformed(why)) => Response::Error(why).into_review(""),
        }
    }
}

impl tower_service::Service<(Hook, bytes::Bytes)> for Admission {
    type Response = Value;
    type Error = Infallible;
    type Future = Ready<Result<Value, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (hook, body): (Hook, bytes::Bytes)) -> Self::Future {
        ready(Ok(Self::review(hook, &body)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(kind: &str, op: Operation, object: Value, old: Option<Value>) -> Request {
        Request {
            uid: "u".into(),
            kind: kind.into(),
            operation: op,
            object,
            old_object: old,
        }
    }

    fn vm(machine: &str) -> Value {
        json!({"metadata": {"name": "vm1"}, "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {"machine": {"type": machine}, "resources": {"requests": {"memory": "64Mi"}}}}}}})
    }

    #[test]
    fn the_mutating_hook_answers_with_a_patch_that_applies() {
        let object = json!({"metadata": {"name": "v"}, "spec": {"domain": {}}});
        let req = request(
            "VirtualMachineInstance",
            Operation::Create,
            object.clone(),
            None,
        );
        let Response::Allow { patch: Some(patch) } = Admission::decide(Hook::Mutate, &req) else {
            panic!("no patch")
        };
        let mut patched = object;
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["domain"]["machine"]["type"], "q35");
        // No defaults on update: the VMI's spec is frozen.
        let upd = request(
            "VirtualMachineInstance",
            Operation::Update,
            patched.clone(),
            Some(patched),
        );
        assert_eq!(
            Admission::decide(Hook::Mutate, &upd),
            Response::Allow { patch: None }
        );
    }

    #[test]
    fn a_vm_update_is_validated_only_when_its_template_changes() {
        let bad = vm("pc");
        let mut started = bad.clone();
        started["spec"]["runStrategy"] = json!("Always");
        let keep = request(
            "VirtualMachine",
            Operation::Update,
            started,
            Some(bad.clone()),
        );
        assert_eq!(
            Admission::decide(Hook::Validate, &keep),
            Response::Allow { patch: None }
        );
        let change = request("VirtualMachine", Operation::Update, bad, Some(vm("q35")));
        let Response::Deny(causes) = Admission::decide(Hook::Validate, &change) else {
            panic!("a changed template is validated")
        };
        assert_eq!(causes[0].field, "spec.template.spec.domain.machine.type");
    }

    #[test]
    fn dispatch_by_kind() {
        assert!(admitter("VirtualMachine").is_some());
        assert!(admitter("VirtualMachineInstance").is_some());
        let req = request("Pod", Operation::Create, json!({}), None);
        assert!(matches!(
            Admission::decide(Hook::Validate, &req),
            Response::Error(_)
        ));
        assert_eq!(Hook::from_path(Hook::VM_VALIDATE), Some(Hook::Validate));
        assert_eq!(Hook::from_path("/apis"), None);
    }
}
