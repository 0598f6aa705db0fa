//! The `kubevirt.io/v1` API that Ferrovirt serves: a strict subset of KubeVirt's types.
//!
//! Field names, meanings and status values follow KubeVirt's API
//! (`staging/src/kubevirt.io/api/core/v1/types.go`). A field that is not here is not in the
//! CRD schema, so the API server rejects a manifest that sets it, naming the field.
//!
//! The CRD YAML in `crds/yaml/` is generated from these types by `cargo run -p
//! ferrovirt-crds --bin crdgen` and checked against the committed copy by a test.
//!
//! Enums carry plain `//` comments, not doc comments: a doc comment on an enum would
//! replace the description of every field of that type in the CRD schema.

pub mod clock;
pub mod condition;
pub mod domain;
pub mod expand;
pub mod instancetype;
pub mod pool;
pub mod probe;
pub mod quantity;
pub mod replicaset;
pub mod rules;
mod schema;
pub mod vm;
pub mod vmi;
pub mod volumes;

pub use clock::*;
pub use condition::*;
pub use domain::*;
pub use instancetype::{
    ControllerRevisionRef, InstancetypeMatcher, InstancetypeSpec, InstancetypeStatusRef,
    PreferenceMatcher, PreferenceSpec, VirtualMachineClusterInstancetype,
    VirtualMachineClusterPreference, VirtualMachineInstancetype, VirtualMachinePreference,
};
pub use pool::{VirtualMachinePool, VirtualMachinePoolSpec, VirtualMachineTemplateSpec};
pub use probe::*;
pub use replicaset::*;
pub use vm::*;
pub use vmi::*;
pub use volumes::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of the core KubeVirt resources.
pub const GROUP: &str = "kubevirt.io";
/// The version Ferrovirt serves.
pub const VERSION: &str = "v1";

/// Every CRD Ferrovirt installs, in the order they should be applied.
pub fn all() -> Vec<CustomResourceDefinition> {
    let core = [
        without_status_subresource(VirtualMachineInstance::crd()),
        VirtualMachine::crd(),
    ]
    .into_iter()
    .map(declare_metadata_name);
    let instancetypes = [
        VirtualMachineInstancetype::crd(),
        VirtualMachineClusterInstancetype::crd(),
        VirtualMachinePreference::crd(),
        VirtualMachineClusterPreference::crd(),
    ];
    let sets = [
        VirtualMachineInstanceReplicaSet::crd(),
        VirtualMachinePool::crd(),
    ];
    core.chain(instancetypes)
        .chain(sets)
        .map(finish_schemas)
        .collect()
}

/// The VMI CRD serves its status in the object itself, as KubeVirt's does (its
/// `NewVirtualMachineInstanceCrd` has no subresources): the components write the node label
/// and the status in one request (the VMI controller's Scheduled write). Who may change the
/// status is still who may write `virtualmachineinstances/status`: the admission policy in
/// `deploy/policies/vmi-status.yaml` asks the authorizer. The VM keeps its status
/// subresource, as KubeVirt's VM CRD does.
fn without_status_subresource(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(sub) = version.subresources.as_mut() {
            sub.status = None;
            if sub.scale.is_none() {
                version.subresources = None;
            }
        }
    }
    crd
}

/// Declares `metadata.name` in each root schema (the one part of metadata a CRD schema may
/// describe), so the root rule on the name ([`rules::name_fits_a_label`]) can report its
/// error at `metadata.name`.
fn declare_metadata_name(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            ..Default::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_string(), name)].into()),
            ..Default::default()
        };
        root.properties
            .get_or_insert_with(Default::default)
            .insert("metadata".into(), metadata);
    }
    crd
}

/// Two passes over every schema:
/// - joins the lines of each paragraph of every description: doc comments wrap at 90
///   columns, and `kubectl explain` wraps again, which would leave ragged lines;
/// - bounds every 32-bit integer by its type: the API server does not check `format:
///   uint32`, so `bootOrder: 5000000000` was stored and then no component could read the
///   object (found by virt-handler's tests/domain_props.rs).
fn finish_schemas(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let range = match map.get("format").and_then(|f| f.as_str()) {
                    Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
                    Some("uint32") => Some((0.0, f64::from(u32::MAX))),
                    _ => None,
                };
                if let Some((min, max)) = range
                    && map.get("type").and_then(|t| t.as_str()) == Some("integer")
                {
                    map.entry("minimum").or_insert(min.into());
                    map.entry("maximum").or_insert(max.into());
                }
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = text
                                .split("\n\n")
                                .map(|paragraph| {
                                    paragraph
                                        .split('\n')
                                        .map(str::trim)
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                })
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD always serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("unwrapping descriptions keeps a valid CRD")
}

/// The committed file name of a CRD in `crds/yaml/`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD rendered as the YAML document committed in `crds/yaml/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_yaml::to_string(crd).expect("a CRD always serializes");
    format!("# Generated by `cargo run -p ferrovirt-crds --bin crdgen`; do not edit.\n---\n{body}")
}

/// An enum value's name as it is on the wire (serde's, e.g. `catchup` for
/// `HpetTickPolicy::Catchup`), for the node side that passes such values on to libvirt.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
