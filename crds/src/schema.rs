//! Schema fragments that derive macros cannot express on their own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// The digits of a quantity with a suffix (`128Mi`, `1.5Gi`, `2e3`, `500m`), without a sign.
const QUANTITY_SUFFIX: &str = r"([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$";

/// A Kubernetes quantity (`128Mi`, `1Gi`, `2`) that must be greater than zero.
///
/// A regular expression rather than a CEL rule: CEL's cost estimate for an int-or-string
/// of unbounded length exceeds the API server's budget.
pub(crate) fn positive_quantity(_: &mut SchemaGenerator) -> Schema {
    let pattern = format!(r"^\+?(0*[1-9][0-9]*(\.[0-9]*)?|0*\.0*[1-9][0-9]*){QUANTITY_SUFFIX}");
    json_schema!({
        "description": "A quantity greater than zero, such as 128Mi or 1Gi.",
        "x-kubernetes-int-or-string": true,
        "pattern": pattern,
        "minimum": 1
    })
}

/// `Option` of [`positive_quantity`].
pub(crate) fn optional_positive_quantity(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = positive_quantity(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

/// A map of resource names to quantities, each zero or more.
pub(crate) fn resource_list(_: &mut SchemaGenerator) -> Schema {
    let pattern = format!(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+){QUANTITY_SUFFIX}");
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": pattern,
            "minimum": 0
        }
    })
}

/// A timestamp that may be null (`creationTimestamp: null` in generated manifests).
pub(crate) fn nullable_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time", "nullable": true})
}

/// A probe's `httpGet` (may be null), its `port` bounded as Kubernetes bounds a probe's
/// port number (1 to 65535; a name is kubelet's to resolve). Without the bound the API
/// server stored numbers past 32 bits, which no component can read (found by
/// virt-handler's tests/domain_props.rs).
pub(crate) fn optional_http_get(generator: &mut SchemaGenerator) -> Schema {
    with_port_range(generator.subschema_for::<Option<k8s_openapi::api::core::v1::HTTPGetAction>>())
}

/// A probe's `tcpSocket` (may be null), its `port` bounded as in [`optional_http_get`].
pub(crate) fn optional_tcp_socket(generator: &mut SchemaGenerator) -> Schema {
    with_port_range(
        generator.subschema_for::<Option<k8s_openapi::api::core::v1::TCPSocketAction>>(),
    )
}

fn with_port_range(mut schema: Schema) -> Schema {
    let port = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("port"))
        .and_then(|p| p.as_object_mut())
        .expect("a probe action's schema has a port");
    port.insert("minimum".into(), 1.into());
    port.insert("maximum".into(), 65535.into());
    schema
}

/// CDI's DataVolumeSpec in a VM's `dataVolumeTemplates`: an object whose fields are CDI's
/// to define (virt-api has the API server check them against CDI's own DataVolume schema).
pub(crate) fn cdi_data_volume_spec(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "CDI's DataVolumeSpec (cdi.kubevirt.io/v1beta1).",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A KubeVirt field that Ferrovirt refuses whole (a CEL rule beside it names the reason):
/// an object of any content, so that every shape KubeVirt allows reaches that rule rather
/// than being refused as an unknown field without the reason.
pub(crate) fn refused_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A list of [`refused_object`]s; a CEL rule on the list refuses it unless empty.
pub(crate) fn refused_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}
