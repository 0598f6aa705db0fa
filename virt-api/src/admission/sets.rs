//! VirtualMachineInstanceReplicaSet and VirtualMachinePool, validated where KubeVirt
//! validates them (its `vmirs-admitter.go` and `vmpool-admitter.go`): the template as a
//! VMI's spec (a replica set) or as a VM (a pool, with its instancetype, preference and
//! DataVolumes, through [`super::Vm`]), and the selector, which must select the template's
//! labels. A pool's selector and template cannot change: KubeVirt rolls a changed
//! template out with update strategies Ferrovirt does not have.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

use super::{Admit, Cause, Found, Operation, Request, Vm, validate};

/// VirtualMachineInstanceReplicaSet: its template's spec as a VMI's, its selector.
pub struct ReplicaSet;

impl Admit for ReplicaSet {
    fn default(&self, _op: Operation, _object: &mut Value, _found: &Found) {}

    fn validate(
        &self,
        op: Operation,
        object: &Value,
        _old: Option<&Value>,
        _found: &Found,
    ) -> Vec<Cause> {
        if !matches!(op, Operation::Create | Operation::Update) {
            return Vec::new();
        }
        let template = &object["spec"]["template"];
        let mut causes = validate::spec("spec.template.spec", &template["spec"]);
        causes.extend(selector_selects(&object["spec"]["selector"], template));
        causes
    }
}

/// VirtualMachinePool: its template as a VM, its selector; on update, the same selector
/// and template.
pub struct Pool;

/// Where a pool holds what a VM has at `spec`.
const POOL_VM_SPEC: &str = "spec.virtualMachineTemplate.spec";

impl Admit for Pool {
    fn default(&self, _op: Operation, _object: &mut Value, _found: &Found) {}

    fn validate(
        &self,
        op: Operation,
        object: &Value,
        old: Option<&Value>,
        found: &Found,
    ) -> Vec<Cause> {
        if !matches!(op, Operation::Create | Operation::Update) {
            return Vec::new();
        }
        let template = &object["spec"]["virtualMachineTemplate"];
        let mut causes = selector_selects(&object["spec"]["selector"], template);
        if let Some(old) = old {
            if old["spec"]["selector"] != object["spec"]["selector"] {
                causes.push(Cause::invalid(
                    "spec.selector",
                    "spec.selector cannot change once the pool exists",
                ));
            }
            if old["spec"]["virtualMachineTemplate"] != *template {
                causes.push(Cause::invalid(
                    "spec.virtualMachineTemplate",
                    "spec.virtualMachineTemplate cannot change once the pool exists: \
                     Ferrovirt does not implement KubeVirt's update strategies for pools \
                     (delete and create the pool again)",
                ));
            }
            return causes;
        }
        let vm = as_vm(object);
        causes.extend(
            Vm.validate(op, &vm, None, found)
                .into_iter()
                .map(in_pool_template),
        );
        causes
    }
}

/// The VirtualMachine a pool's template describes (for the lookups and the validation of
/// a VM), in the pool's namespace.
pub fn as_vm(pool: &Value) -> Value {
    let template = &pool["spec"]["virtualMachineTemplate"];
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": pool["metadata"]["name"],
            "namespace": pool["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
        },
        "spec": template["spec"],
    })
}

/// A pool's request as the VM request whose instancetype, preference and DataVolumes
/// virt-api looks up; None for other kinds.
pub fn as_vm_request(req: &Request) -> Option<Request> {
    (req.kind == "VirtualMachinePool").then(|| Request {
        uid: req.uid.clone(),
        kind: "VirtualMachine".into(),
        operation: req.operation,
        object: as_vm(&req.object),
        old_object: req.old_object.as_ref().map(as_vm),
    })
}

/// A VM's cause, its field (and the field in its message) moved into a pool's template.
fn in_pool_template(mut cause: Cause) -> Cause {
    for f in [
        "template",
        "instancetype",
        "preference",
        "dataVolumeTemplates",
        "runStrategy",
        "running",
    ] {
        let (from, to) = (format!("spec.{f}"), format!("{POOL_VM_SPEC}.{f}"));
        cause.field = cause.field.replace(&from, &to);
        cause.message = cause.message.replace(&from, &to);
    }
    cause
}

/// Refuses a selector that does not select the template's labels, naming `spec.selector`.
fn selector_selects(selector: &Value, template: &Value) -> Vec<Cause> {
    let parsed = serde_json::from_value::<LabelSelector>(selector.clone())
        .map_err(|e| e.to_string())
        .and_then(|s| Selector::try_from(s).map_err(|e| e.to_string()));
    let labels: BTreeMap<String, String> =
        serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
    match parsed {
        Err(why) => vec![Cause::invalid(
            "spec.selector",
            format!("spec.selector is not a valid label selector: {why}"),
        )],
        Ok(s) if !s.matches(&labels) => vec![Cause::invalid(
            "spec.selector",
            "spec.selector does not select the labels of the template's metadata.labels",
        )],
        Ok(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(selector: Value, labels: Value, memory: &str) -> Value {
        json!({"metadata": {"name": "rs", "namespace": "ns"}, "spec": {"replicas": 2,
            "selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"domain": {"memory": {"guest": memory}}}}}})
    }

    fn pool(selector: Value, labels: Value, machine: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"replicas": 2,
            "selector": selector, "virtualMachineTemplate": {"metadata": {"labels": labels},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {
                "machine": {"type": machine}, "memory": {"guest": "64Mi"}}}}}}}})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn a_selector_must_select_the_templates_labels() {
        let found = Found::default();
        let ok = rs(
            json!({"matchLabels": {"a": "1"}}),
            json!({"a": "1", "b": "2"}),
            "64Mi",
        );
        assert!(
            ReplicaSet
                .validate(Operation::Create, &ok, None, &found)
                .is_empty()
        );
        let bad = rs(
            json!({"matchLabels": {"a": "2"}}),
            json!({"a": "1"}),
            "64Mi",
        );
        let causes = ReplicaSet.validate(Operation::Create, &bad, None, &found);
        assert_eq!(fields(&causes), ["spec.selector"]);
        assert!(causes[0].message.starts_with("spec.selector "));
        let none = rs(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]}),
            Value::Null,
            "64Mi",
        );
        assert_eq!(
            fields(&ReplicaSet.validate(Operation::Create, &none, None, &found)),
            ["spec.selector"]
        );
        let bad_op = rs(
            json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
            json!({"a": "1"}),
            "64Mi",
        );
        assert_eq!(
            fields(&ReplicaSet.validate(Operation::Create, &bad_op, None, &found)),
            ["spec.selector"]
        );
    }

    #[test]
    fn a_replica_sets_template_is_validated_as_a_vmis_spec() {
        let small = rs(json!({"matchLabels": {"a": "1"}}), json!({"a": "1"}), "1Ki");
        let causes = ReplicaSet.validate(Operation::Create, &small, None, &Found::default());
        assert_eq!(fields(&causes), ["spec.template.spec.domain.memory.guest"]);
    }

    #[test]
    fn a_pools_template_is_validated_as_a_vm_with_its_fields_named_in_the_pool() {
        let sel = json!({"matchLabels": {"a": "1"}});
        let good = pool(sel.clone(), json!({"a": "1"}), "q35");
        assert!(
            Pool.validate(Operation::Create, &good, None, &Found::default())
                .is_empty()
        );
        let bad = pool(sel, json!({"a": "1"}), "pc");
        let causes = Pool.validate(Operation::Create, &bad, None, &Found::default());
        assert_eq!(
            fields(&causes),
            ["spec.virtualMachineTemplate.spec.template.spec.domain.machine.type"]
        );
        assert!(
            causes[0]
                .message
                .contains("spec.virtualMachineTemplate.spec.template.spec.domain.machine.type"),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn a_pools_selector_and_template_cannot_change() {
        let sel = json!({"matchLabels": {"a": "1"}});
        let old = pool(sel.clone(), json!({"a": "1"}), "q35");
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert!(
            Pool.validate(Operation::Update, &scaled, Some(&old), &Found::default())
                .is_empty()
        );
        let changed = pool(
            json!({"matchLabels": {"b": "1"}}),
            json!({"a": "1", "b": "1"}),
            "q35",
        );
        let causes = Pool.validate(Operation::Update, &changed, Some(&old), &Found::default());
        assert_eq!(
            fields(&causes),
            ["spec.selector", "spec.virtualMachineTemplate"]
        );
    }

    #[test]
    fn a_pool_request_is_looked_up_as_its_vm() {
        let req = Request {
            uid: "u".into(),
            kind: "VirtualMachinePool".into(),
            operation: Operation::Create,
            object: pool(json!({}), json!({"a": "1"}), "q35"),
            old_object: None,
        };
        let vm = as_vm_request(&req).unwrap();
        assert_eq!(vm.kind, "VirtualMachine");
        assert_eq!(vm.object["metadata"]["namespace"], "ns");
        assert_eq!(vm.object["spec"]["runStrategy"], "Always");
    }
}
