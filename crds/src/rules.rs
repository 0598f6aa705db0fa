//! CEL rules on the root of a CRD: the object's name, and rules that compare an update
//! with the stored object. Each is refused by the API server with a message naming the
//! field, before any Ferrovirt component sees the object.

use kube::core::{Message, Reason, Rule};
use serde_json::Value;

use crate::VirtualMachineInstanceSpec;

/// The longest name a VM or VMI may have. Ferrovirt puts the VMI's name into the launcher
/// pod's label `vm.kubevirt.io/name` and uses it as the guest's default hostname; both are
/// limited to 63 characters (a label value, a DNS-1123 label).
pub const MAX_NAME_LENGTH: usize = 63;

/// `metadata.name` is at most [`MAX_NAME_LENGTH`] characters. KubeVirt accepts longer
/// names and derives shorter label values from them; Ferrovirt refuses them until its
/// launcher pods do the same.
pub fn name_fits_a_label() -> Rule {
    Rule::new(format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}"))
        .message(
            format!(
                "must be at most {MAX_NAME_LENGTH} characters: Ferrovirt uses the name as the value of the \
                 label vm.kubevirt.io/name of the launcher pod and as the hostname of the guest, which \
                 Kubernetes limits to {MAX_NAME_LENGTH} characters"
            )
            .as_str(),
        )
        .reason(Reason::FieldValueInvalid)
        .field_path(".metadata.name")
}

/// A VMI's `httpGet` and `tcpSocket` probes reach the guest through the pod's address, so
/// they need the pod network (KubeVirt's rule and words). On the VMI, not on a VM's
/// template: virt-api's mutating webhook gives a VMI without networks the pod network, as
/// KubeVirt's does, before this rule runs.
pub fn probe_needs_the_pod_network(probe: &str) -> Rule {
    Rule::new(format!(
        "!has(self.spec.{probe}) || !(has(self.spec.{probe}.httpGet) || has(self.spec.{probe}.tcpSocket)) \
         || (has(self.spec.networks) && self.spec.networks.exists(n, has(n.pod)))"
    ))
    .message(
        format!(
            "spec.{probe}.httpGet and spec.{probe}.tcpSocket are only allowed if the Pod Network is attached"
        )
        .as_str(),
    )
    .reason(Reason::FieldValueInvalid)
    .field_path(format!(".spec.{probe}"))
}

/// KubeVirt's message when a user changes a VMI's spec.
pub const VMI_UPDATE_RESTRICTED: &str = "update of VMI object is restricted";

/// The one field of a VMI's spec that may change, and only downwards: `virtctl stop
/// --force --grace-period` shortens the running instance's grace period before it stops it
/// (KubeVirt's `patchVMITerminationGracePeriod`).
pub const GRACE_PERIOD_FIELD: &str = "spec.terminationGracePeriodSeconds";

/// A VMI's spec never changes after creation, as in KubeVirt, where only KubeVirt's own
/// service accounts change it (for hotplug, which Ferrovirt does not implement, and for a
/// shorter grace period, which [`vmi_grace_period_only_lowered`] allows). Metadata and
/// status stay writable. The message names the fields that changed: each field of `spec`,
/// and each field of `spec.domain`.
pub fn vmi_spec_unchanged() -> Rule {
    let fields: Vec<Field> = spec_fields()
        .into_iter()
        .filter(|f| f.to_string() != GRACE_PERIOD_FIELD)
        .collect();
    // Plain concatenation: a list built, filtered and joined costs too much for the API
    // server's estimate.
    let changed: Vec<String> = fields
        .iter()
        .map(|path| format!("({} ? '' : ' {path}')", unchanged(path)))
        .collect();
    let message = format!(
        "'{VMI_UPDATE_RESTRICTED}: the spec of a VirtualMachineInstance cannot change after it is created; \
         changed:' + {} + ' (change spec.template of the VirtualMachine and restart it, or create a new \
         VirtualMachineInstance)'",
        changed.join(" + ")
    );
    // The whole spec compared first: every write of a VMI (each status write too) runs
    // this rule, and one comparison of the two specs walks only the fields they have, where
    // the comparison field by field wraps the spec's (wide) schema in the API server's CEL
    // values again for each field it names; it is the bulk of a VMI status write's CPU
    // there (bench/scale, kube-apiserver's profile). Field by field only when the spec
    // changed, which is a lowered grace period or a write to refuse.
    let rule: Vec<String> = fields.iter().map(unchanged).collect();
    Rule::new(format!(
        "self.spec == oldSelf.spec || ({})",
        rule.join(" && ")
    ))
    .message(Message::Expression(message))
    .reason(Reason::FieldValueForbidden)
    .field_path(".spec")
}

/// The grace period of a VMI that sets none (KubeVirt's `DefaultGracePeriodSeconds`).
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// A VMI's grace period may be lowered (what `virtctl stop --force --grace-period` does to
/// a running instance), never raised; a VMI without one has the default.
pub fn vmi_grace_period_only_lowered() -> Rule {
    let effective = |object: &str| {
        let field = format!("{object}.{GRACE_PERIOD_FIELD}");
        format!("(has({field}) ? {field} : {DEFAULT_GRACE_PERIOD_SECONDS})")
    };
    Rule::new(format!("{} <= {}", effective("self"), effective("oldSelf")))
        .message(
            format!(
                "{VMI_UPDATE_RESTRICTED}: {GRACE_PERIOD_FIELD} of a VirtualMachineInstance can only be \
                 lowered (virtctl stop --force --grace-period)"
            )
            .as_str(),
        )
        .reason(Reason::FieldValueForbidden)
        .field_path(".spec.terminationGracePeriodSeconds")
}

/// A field's path below the VMI (`spec.domain.memory`) and whether it is required.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    path: Vec<String>,
    required: bool,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

/// The fields of `spec` (and of `spec.domain`, one level deeper), from the spec's schema.
fn spec_fields() -> Vec<Field> {
    let mut settings = schemars::generate::SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    let schema = settings
        .into_generator()
        .into_root_schema_for::<VirtualMachineInstanceSpec>();
    let schema = schema.as_value();
    let mut out = Vec::new();
    for (name, required) in properties(schema) {
        let path = vec!["spec".to_string(), name.clone()];
        if name == "domain" {
            for (child, child_required) in properties(&schema["properties"][&name]) {
                let mut child_path = path.clone();
                child_path.push(child);
                out.push(Field {
                    path: child_path,
                    required: child_required,
                });
            }
        } else {
            out.push(Field { path, required });
        }
    }
    out
}

/// A schema's property names, each with whether it is required.
fn properties(schema: &Value) -> Vec<(String, bool)> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| (name.clone(), required.contains(&name.as_str())))
        .collect()
}

/// A CEL expression that holds when the field is the same in `self` and `oldSelf`.
fn unchanged(field: &Field) -> String {
    let new = format!("self.{field}");
    let old = format!("oldSelf.{field}");
    if field.required {
        format!("{new} == {old}")
    } else {
        format!("(has({new}) ? has({old}) && {new} == {old} : !has({old}))")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_fields_cover_the_spec_and_the_domain() {
        let fields: Vec<String> = spec_fields().iter().map(ToString::to_string).collect();
        for wanted in [
            "spec.domain.memory",
            "spec.domain.devices",
            "spec.volumes",
            "spec.networks",
            "spec.hostname",
        ] {
            assert!(
                fields.contains(&wanted.to_string()),
                "{wanted} missing in {fields:?}"
            );
        }
        assert!(
            !fields.contains(&"spec.domain".to_string()),
            "domain is split into its fields: {fields:?}"
        );
    }

    #[test]
    fn optional_fields_compare_presence_first() {
        let field = Field {
            path: vec!["spec".into(), "hostname".into()],
            required: false,
        };
        assert_eq!(
            unchanged(&field),
            "(has(self.spec.hostname) ? has(oldSelf.spec.hostname) && self.spec.hostname == oldSelf.spec.hostname : !has(oldSelf.spec.hostname))"
        );
    }
}
