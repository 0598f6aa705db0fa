//! Property tests of what virt-api decodes from the network (issue 12): any AdmissionReview
//! body gets an AdmissionReview answer (allowed, refused with causes, or an error), never a
//! panic, and a refusal always names a field; any request path routes somewhere, and a
//! subresource path routes to exactly what it names.

use proptest::prelude::*;
use serde_json::{Value, json};
use virt_api::admission::{Admission, Hook};
use virt_api::route::{self, Route};

/// Any JSON value, nested a few levels, with keys that KubeVirt objects use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("64Mi"),
            Just("q35"),
            Just("virtio"),
            Just("-1"),
            Just("1e999")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("spec".to_string()),
            Just("domain".to_string()),
            Just("devices".to_string()),
            Just("disks".to_string()),
            Just("volumes".to_string()),
            Just("name".to_string()),
            Just("memory".to_string()),
            Just("resources".to_string()),
            Just("template".to_string()),
            Just("cloudInitNoCloud".to_string()),
            Just("userDataBase64".to_string()),
            "[a-zA-Z]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn review(kind: &str, operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": kind},
            "operation": operation,
            "object": object,
            "oldObject": old,
        }
    }))
    .unwrap()
}

/// The answer is an AdmissionReview for the request's uid; a refusal names its fields.
fn check_answer(answer: &Value) -> Result<(), TestCaseError> {
    let response = &answer["response"];
    prop_assert_eq!(&answer["kind"], "AdmissionReview");
    let allowed = response["allowed"].as_bool();
    prop_assert!(allowed.is_some(), "no response.allowed: {}", answer);
    if allowed == Some(false) {
        let status = &response["status"];
        prop_assert!(
            status["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            answer
        );
        if let Some(causes) = status["details"]["causes"].as_array() {
            for cause in causes {
                prop_assert!(
                    cause["field"].as_str().is_some_and(|f| !f.is_empty()),
                    "a cause without a field: {}",
                    answer
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn any_bytes_get_an_admission_answer(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for hook in [Hook::Mutate, Hook::Validate] {
            check_answer(&Admission::review(hook, &body))?;
        }
    }

    #[test]
    fn any_vm_or_vmi_shape_gets_an_admission_answer(
        kind in prop_oneof![Just("VirtualMachine"), Just("VirtualMachineInstance"), Just("Pod")],
        operation in prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE"), Just("PATCH")],
        spec in json_value(),
        old in proptest::option::of(json_value()),
    ) {
        let object = json!({"metadata": {"name": "x"}, "spec": spec});
        let old = old.map(|o| json!({"metadata": {"name": "x"}, "spec": o}));
        let body = review(kind, operation, &object, old.as_ref());
        for hook in [Hook::Mutate, Hook::Validate] {
            let answer = Admission::review(hook, &body);
            check_answer(&answer)?;
            prop_assert_eq!(&answer["response"]["uid"], if operation == "PATCH" { "" } else { "u-1" });
        }
    }

    #[test]
    fn any_path_routes_without_panic(path in "(/[a-z0-9.:%-]{0,12}){0,9}/?") {
        let _ = route::parse(&path);
    }

    #[test]
    fn a_subresource_path_routes_to_what_it_names(
        version in prop_oneof![Just("v1"), Just("v1alpha3")],
        namespace in "[a-z0-9-]{1,20}",
        resource in prop_oneof![Just("virtualmachines"), Just("virtualmachineinstances")],
        name in "[a-z0-9.-]{1,30}",
        subresource in prop_oneof![Just("start"), Just("stop"), Just("restart"), Just("console"), Just("vnc"), Just("pause"), Just("unpause")],
        slash in any::<bool>(),
    ) {
        let path = format!(
            "/apis/subresources.kubevirt.io/{version}/namespaces/{namespace}/{resource}/{name}/{subresource}{}",
            if slash { "/" } else { "" }
        );
        match route::parse(&path) {
            Route::Subresource(t) => {
                prop_assert_eq!(
                    (t.version.as_str(), t.namespace.as_str(), t.resource.as_str(), t.name.as_str(), t.subresource.as_str()),
                    (version, namespace.as_str(), resource, name.as_str(), subresource)
                );
            }
            other => prop_assert!(false, "{path} routed to {other:?}"),
        }
    }
}
