//! virt-api's admission of VMs with an instancetype and a preference (pure: the specs are
//! given as found): conflicts refused with the field named in the cause and the message,
//! the template validated as expanded, the preferred machine type before the default.

use serde_json::{Value, json};
use virt_api::admission::{Admission, Found, Hook, Operation, Request, Response};

fn found(instancetype: Value, preference: Value) -> Found {
    Found {
        instancetype: serde_json::from_value(instancetype).ok(),
        preference: serde_json::from_value(preference).ok(),
        ..Found::default()
    }
}

fn clarge() -> Value {
    json!({"cpu": {"guest": 4}, "memory": {"guest": "2Gi"}})
}

fn vm(domain: Value) -> Value {
    json!({"metadata": {"name": "vm1", "namespace": "ns"}, "spec": {
        "runStrategy": "Halted",
        "instancetype": {"kind": "VirtualMachineInstancetype", "name": "clarge"},
        "preference": {"name": "p"},
        "template": {"spec": {"domain": domain}}}})
}

fn request(op: Operation, object: Value, old: Option<Value>) -> Request {
    Request {
        uid: "u".into(),
        kind: "VirtualMachine".into(),
        operation: op,
        object,
        old_object: old,
    }
}

fn causes(response: Response) -> Vec<(String, String)> {
    match response {
        Response::Deny(causes) => causes.into_iter().map(|c| (c.field, c.message)).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_template_that_sets_what_its_instancetype_sets_is_refused_by_name() {
    let f = found(clarge(), Value::Null);
    // vm-cirros-clarge.yaml's template sets memory.guest: KubeVirt refuses it so.
    let req = request(
        Operation::Create,
        vm(json!({"memory": {"guest": "128Mi"}})),
        None,
    );
    assert_eq!(
        causes(Admission::decide_with(Hook::Validate, &req, &f)),
        vec![(
            "spec.template.spec.domain.memory.guest".to_string(),
            "VM field(s) spec.template.spec.domain.memory.guest conflicts with selected instance type".to_string()
        )]
    );
    let req = request(
        Operation::Create,
        vm(json!({"cpu": {"sockets": 2}, "resources": {"requests": {"cpu": "1"}}})),
        None,
    );
    let fields: Vec<String> = causes(Admission::decide_with(Hook::Validate, &req, &f))
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.template.spec.domain.resources.requests.cpu",
            "spec.template.spec.domain.cpu.sockets"
        ]
    );
}

#[test]
fn the_expanded_template_is_validated() {
    // Memory only from the instancetype: accepted.
    let req = request(Operation::Create, vm(json!({})), None);
    assert_eq!(
        Admission::decide_with(Hook::Validate, &req, &found(clarge(), Value::Null)),
        Response::Allow { patch: None }
    );
    // The instancetype does not exist yet: accepted without memory (virt-controller names
    // it in the VM's status until it exists).
    assert_eq!(
        Admission::decide(Hook::Validate, &req),
        Response::Allow { patch: None }
    );
    // Without an instancetype the template still needs memory.
    let mut plain = vm(json!({}));
    plain["spec"]
        .as_object_mut()
        .unwrap()
        .remove("instancetype");
    let req = request(Operation::Create, plain, None);
    let refused = causes(Admission::decide(Hook::Validate, &req));
    assert_eq!(refused[0].0, "spec.template.spec.domain.memory.guest");
    // A preferred machine type the node cannot run is named at the template's field.
    let pref = json!({"machine": {"preferredMachineType": "pc-i440fx-7.2"}});
    let req = request(Operation::Create, vm(json!({})), None);
    let refused = causes(Admission::decide_with(
        Hook::Validate,
        &req,
        &found(clarge(), pref),
    ));
    assert_eq!(refused[0].0, "spec.template.spec.domain.machine.type");
    // A spread topology that does not divide the vCPUs.
    let spread = json!({"cpu": {"preferredCPUTopology": "spread"}});
    let three = json!({"cpu": {"guest": 3}, "memory": {"guest": "1Gi"}});
    let refused = causes(Admission::decide_with(
        Hook::Validate,
        &req,
        &found(three, spread),
    ));
    assert_eq!(refused[0].0, "spec.preference");
}

#[test]
fn the_preferred_machine_type_comes_before_the_default() {
    let pref = json!({"machine": {"preferredMachineType": "pc-q35-7.2"}});
    let object = vm(json!({}));
    let req = request(Operation::Create, object.clone(), None);
    let Response::Allow { patch: Some(patch) } =
        Admission::decide_with(Hook::Mutate, &req, &found(clarge(), pref))
    else {
        panic!("no patch")
    };
    let mut patched = object;
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched["spec"]["template"]["spec"]["domain"]["machine"]["type"],
        "pc-q35-7.2"
    );
}

#[test]
fn a_renamed_matcher_must_not_keep_its_revision() {
    let mut old = vm(json!({}));
    old["spec"]["instancetype"]["revisionName"] = json!("vm1-clarge-v1beta1-u-1");
    let mut new = old.clone();
    new["spec"]["instancetype"]["name"] = json!("csmall");
    let req = request(Operation::Update, new.clone(), Some(old.clone()));
    let refused = causes(Admission::decide_with(
        Hook::Validate,
        &req,
        &found(clarge(), Value::Null),
    ));
    assert_eq!(refused[0].0, "spec.instancetype.revisionName");
    assert!(
        refused[0].1.starts_with("spec.instancetype.revisionName: "),
        "{}",
        refused[0].1
    );
    new["spec"]["instancetype"]
        .as_object_mut()
        .unwrap()
        .remove("revisionName");
    let req = request(Operation::Update, new, Some(old));
    assert_eq!(
        Admission::decide_with(Hook::Validate, &req, &found(clarge(), Value::Null)),
        Response::Allow { patch: None }
    );
}

#[test]
fn an_inferred_matcher_is_put_into_the_vm_on_create() {
    let mut object = vm(json!({"memory": {"guest": "1Gi"}}));
    object["spec"]["instancetype"] =
        json!({"inferFromVolume": "root", "inferFromVolumeFailurePolicy": "Ignore"});
    object["spec"]["preference"] = json!({"inferFromVolume": "root"});
    let mut f = found(clarge(), Value::Null);
    f.inferred = vec![
        (
            "instancetype",
            json!({"name": "clarge", "kind": "VirtualMachineInstancetype"}),
        ),
        ("preference", Value::Null),
    ];
    f.clear_memory = true;
    let req = request(Operation::Create, object.clone(), None);
    let Response::Allow { patch: Some(patch) } = Admission::decide_with(Hook::Mutate, &req, &f)
    else {
        panic!("no patch")
    };
    let mut patched = object;
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched["spec"]["instancetype"],
        json!({"name": "clarge", "kind": "VirtualMachineInstancetype"})
    );
    assert!(
        patched["spec"].get("preference").is_none(),
        "Ignore: the matcher goes"
    );
    assert!(
        patched["spec"]["template"]["spec"]["domain"]
            .get("memory")
            .is_none()
    );
    // Reject: the VM is refused with the field named.
    let f = Found {
        infer_error: Some("spec.instancetype.inferFromVolume: unable to find required instancetype.kubevirt.io/default-instancetype label on the volume".into()),
        ..Found::default()
    };
    let Response::Error(message) = Admission::decide_with(Hook::Mutate, &req, &f) else {
        panic!("an inference that fails refuses the VM")
    };
    assert!(
        message.starts_with("spec.instancetype.inferFromVolume: "),
        "{message}"
    );
}

#[test]
fn an_update_cannot_bring_a_new_infer_from_volume() {
    let old = vm(json!({}));
    let mut new = old.clone();
    new["spec"]["instancetype"] = json!({"inferFromVolume": "root"});
    let req = request(Operation::Update, new, Some(old));
    let refused = causes(Admission::decide(Hook::Validate, &req));
    assert_eq!(refused[0].0, "spec.instancetype.inferFromVolume");
}
