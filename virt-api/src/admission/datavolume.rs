//! DataVolumes in admission (KubeVirt's contract with CDI): a VM's `dataVolumeTemplates`
//! as KubeVirt's `ValidateDataVolumeTemplate` checks them, and, beyond KubeVirt, a VM or
//! VMI that uses DataVolumes refused when the cluster serves no DataVolume (CDI is not
//! installed), naming the field; each template's DataVolume is dry-run created with strict
//! field validation, so that CDI's own schema refuses what it would drop, naming the field,
//! before the VM is stored.

use crds::cdi;
use kube::Client;
use serde_json::{Value, json};

use super::review::{Cause, Operation, Request};

/// What the API server says about the DataVolumes an object uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cdi {
    /// The cluster serves no DataVolume (None: not asked, the object uses none).
    pub missing: Option<bool>,
    /// The API server's refusals of the templates' DataVolumes (dry runs).
    pub refused: Vec<Cause>,
}

/// The fields of `object` (a VM, or a VMI) that use DataVolumes.
fn fields(object: &Value) -> Vec<String> {
    let (prefix, spec) = match object["spec"].get("template") {
        Some(t) => ("spec.template.spec", &t["spec"]),
        None => ("spec", &object["spec"]),
    };
    let mut out = Vec::new();
    if object["spec"]["dataVolumeTemplates"]
        .as_array()
        .is_some_and(|t| !t.is_empty())
    {
        out.push("spec.dataVolumeTemplates".to_string());
    }
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        if v.get("dataVolume").is_some() {
            out.push(format!("{prefix}.volumes[{i}].dataVolume"));
        }
    }
    out
}

/// Asks the API server (discovery, and a dry-run create of each template's DataVolume)
/// about a VM or VMI being validated that uses DataVolumes.
pub async fn find(client: &Client, req: &Request) -> Cdi {
    if fields(&req.object).is_empty() || !changed(req) {
        return Cdi::default();
    }
    let served = match client.list_api_group_resources(cdi::API_VERSION).await {
        Ok(list) => list.resources.iter().any(|r| r.name == cdi::PLURAL),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => {
            // Not known: the controller's condition is the backstop.
            tracing::warn!(error = %e, "discovery of CDI's DataVolume failed");
            return Cdi::default();
        }
    };
    let mut out = Cdi {
        missing: Some(!served),
        refused: Vec::new(),
    };
    if !served || req.operation == Operation::Delete {
        return out;
    }
    let ns = req.object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let templates = req.object["spec"]["dataVolumeTemplates"].as_array();
    for (i, t) in templates.into_iter().flatten().enumerate() {
        if let Some(message) = dry_run(client, ns, t).await {
            out.refused.push(Cause::invalid(
                format!("spec.dataVolumeTemplates[{i}]"),
                message,
            ));
        }
    }
    out
}

/// Whether the request brings DataVolume fields that were not there: a create, or an
/// update that changes the templates or the volumes (an update that leaves them alone, such
/// as a start, asks the API server nothing).
fn changed(req: &Request) -> bool {
    let Some(old) = req
        .old_object
        .as_ref()
        .filter(|_| req.operation == Operation::Update)
    else {
        return true;
    };
    let volumes = |o: &Value| {
        let spec = &o["spec"];
        match spec.get("template") {
            Some(t) => t["spec"]["volumes"].clone(),
            None => spec["volumes"].clone(),
        }
    };
    old["spec"]["dataVolumeTemplates"] != req.object["spec"]["dataVolumeTemplates"]
        || volumes(old) != volumes(&req.object)
}

/// A dry-run create of the template's DataVolume with strict field validation: the API
/// server's message when it refuses it (one that exists already is fine: the VM uses it).
async fn dry_run(client: &Client, ns: &str, template: &Value) -> Option<String> {
    let name = template["metadata"]["name"].as_str().unwrap_or_default();
    let body = json!({
        "apiVersion": cdi::API_VERSION,
        "kind": cdi::KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": template["spec"],
    });
    let uri = format!(
        "/apis/{}/namespaces/{ns}/{}?dryRun=All&fieldValidation=Strict",
        cdi::API_VERSION,
        cdi::PLURAL
    );
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default());
    let request = match request {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    match client.request::<Value>(request).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 409 => None,
        Err(kube::Error::Api(s)) => Some(s.message),
        Err(e) => {
            tracing::warn!(error = %e, datavolume = name, "dry run of a DataVolume failed");
            None
        }
    }
}

/// The causes to refuse a VM or VMI for: CDI missing (`cdi.missing`), the API server's
/// refusals of the templates' DataVolumes, and for a VM KubeVirt's template rules.
pub fn validate(object: &Value, cdi: &Cdi) -> Vec<Cause> {
    let mut causes = Vec::new();
    if cdi.missing == Some(true) {
        for field in fields(object) {
            causes.push(Cause::invalid(&field, cdi::needed(&field)));
        }
    }
    causes.extend(cdi.refused.iter().cloned());
    let spec = &object["spec"];
    let volumes = spec["template"]["spec"]["volumes"].as_array();
    for (i, t) in spec["dataVolumeTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        // KubeVirt's field path and words (`dataVolumeTemplate`, singular).
        let field = format!("spec.dataVolumeTemplate[{i}]");
        let (pvc, storage) = (t["spec"].get("pvc"), t["spec"].get("storage"));
        match (pvc, storage) {
            (None, None) => {
                causes.push(Cause::invalid(
                    format!("{field}.PVC.Storage"),
                    "Missing Data volume PVC or Storage",
                ));
                continue;
            }
            (Some(_), Some(_)) => {
                causes.push(Cause::invalid(
                    format!("{field}.PVC.Storage"),
                    "Duplicate storage definition, both target storage and target pvc defined",
                ));
                continue;
            }
            _ => {}
        }
        let name = &t["metadata"]["name"];
        let used = volumes.into_iter().flatten().any(|v| {
            v["dataVolume"]["name"] == *name || v["persistentVolumeClaim"]["claimName"] == *name
        });
        if !used {
            causes.push(Cause::required(
                &field,
                format!(
                    "DataVolumeTemplate entry {field} must be referenced in the VMI template's 'volumes' list"
                ),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(templates: Value, volumes: Value) -> Value {
        json!({"spec": {"dataVolumeTemplates": templates,
                        "template": {"spec": {"domain": {"devices": {}}, "volumes": volumes}}}})
    }

    #[test]
    fn without_cdi_each_field_is_named_with_the_reason() {
        let object = vm(
            json!([{"metadata": {"name": "d"}, "spec": {"storage": {}}}]),
            json!([{"name": "root", "dataVolume": {"name": "d"}}]),
        );
        let missing = Cdi {
            missing: Some(true),
            refused: vec![],
        };
        let causes = validate(&object, &missing);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.dataVolumeTemplates",
                "spec.template.spec.volumes[0].dataVolume"
            ]
        );
        assert!(
            causes[0].message.contains("needs CDI"),
            "{}",
            causes[0].message
        );
        // A VMI's volume.
        let vmi = json!({"spec": {"domain": {"devices": {}}, "volumes": [{"name": "r", "dataVolume": {"name": "d"}}]}});
        assert_eq!(
            validate(&vmi, &missing)[0].field,
            "spec.volumes[0].dataVolume"
        );
        // With CDI: accepted.
        assert!(
            validate(
                &object,
                &Cdi {
                    missing: Some(false),
                    refused: vec![]
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn only_new_data_volume_fields_are_asked_about() {
        let object = vm(
            json!([{"metadata": {"name": "d"}, "spec": {"storage": {}}}]),
            json!([{"name": "root", "dataVolume": {"name": "d"}}]),
        );
        let request = |operation, old: Option<Value>| Request {
            uid: "u".into(),
            kind: "VirtualMachine".into(),
            operation,
            object: object.clone(),
            old_object: old,
        };
        assert!(changed(&request(Operation::Create, None)));
        let mut started = object.clone();
        started["spec"]["runStrategy"] = json!("Always");
        assert!(!changed(&request(Operation::Update, Some(started))));
        let mut other = object.clone();
        other["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] = json!("e");
        assert!(changed(&request(Operation::Update, Some(other))));
    }

    #[test]
    fn templates_follow_kubevirts_rules() {
        let unused = vm(
            json!([{"metadata": {"name": "d"}, "spec": {"pvc": {}}}]),
            json!([{"name": "root", "dataVolume": {"name": "other"}}]),
        );
        let c = validate(&unused, &Cdi::default());
        assert_eq!(
            c[0].message,
            "DataVolumeTemplate entry spec.dataVolumeTemplate[0] must be referenced in the VMI template's 'volumes' list"
        );
        let neither = vm(json!([{"metadata": {"name": "d"}, "spec": {}}]), json!([]));
        assert_eq!(
            validate(&neither, &Cdi::default())[0].message,
            "Missing Data volume PVC or Storage"
        );
        let both = vm(
            json!([{"metadata": {"name": "d"}, "spec": {"pvc": {}, "storage": {}}}]),
            json!([{"name": "root", "dataVolume": {"name": "d"}}]),
        );
        assert!(
            validate(&both, &Cdi::default())[0]
                .message
                .starts_with("Duplicate storage")
        );
        // A claim of the template's name is a use too (KubeVirt's rule).
        let claim = vm(
            json!([{"metadata": {"name": "d"}, "spec": {"storage": {}}}]),
            json!([{"name": "root", "persistentVolumeClaim": {"claimName": "d"}}]),
        );
        assert!(validate(&claim, &Cdi::default()).is_empty());
    }
}
