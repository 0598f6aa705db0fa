//! Schema fragments that derive macros cannot express on their own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A Kubernetes quantity (`128Mi`, `1Gi`, `2`) that must be greater than zero.
pub(crate) fn positive_quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A quantity such as 128Mi or 1Gi; it must be greater than zero.",
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
            "message": "must be a quantity greater than zero, such as 128Mi"
        }]
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
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))",
                "message": "must be a quantity of zero or more"
            }]
        }
    })
}

/// A timestamp that may be null (`creationTimestamp: null` in generated manifests).
pub(crate) fn nullable_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time", "nullable": true})
}
