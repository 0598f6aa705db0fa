//! A VM's instancetype and preference in admission, as KubeVirt's VM webhooks handle them
//! (`pkg/instancetype/webhooks/vm`): the preferred machine type is set before the default
//! one; a template that sets what its instancetype sets is refused with the fields named;
//! the template is validated as the instance will be, with the instancetype and preference
//! applied ([`crds::expand`]). A VM whose instancetype does not exist (yet) is accepted:
//! virt-controller names it in the VM's Failure condition until it exists.

use std::collections::BTreeMap;

use crds::instancetype::is_cluster_kind;
use crds::{
    InstancetypeSpec, PreferenceSpec, VirtualMachineClusterInstancetype,
    VirtualMachineClusterPreference, VirtualMachineInstanceSpec, VirtualMachineInstancetype,
    VirtualMachinePreference,
};
use kube::Api;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::review::{Cause, Request};

/// The instancetype and preference a VM names, as found (None: not named, or not found),
/// and what `inferFromVolume` resolved to when the VM is created.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    pub instancetype: Option<InstancetypeSpec>,
    pub preference: Option<PreferenceSpec>,
    /// Matchers inferred from a volume: `spec.<field>` becomes the value (`null`: the
    /// matcher goes, KubeVirt's `Ignore` policy).
    pub inferred: Vec<(&'static str, Value)>,
    /// KubeVirt's `Ignore` policy with an inferred instancetype: the template's memory goes.
    pub clear_memory: bool,
    /// Why the inference refuses the VM (`Reject`, the default policy), naming the field.
    pub infer_error: Option<String>,
    /// What the API server says about the DataVolumes the object uses (CDI).
    pub cdi: super::datavolume::Cdi,
}

/// Puts the inferred matchers into `vm` (KubeVirt's inference in the VM mutator).
pub fn apply_inferred(found: &Found, vm: &mut Value) {
    for (field, matcher) in &found.inferred {
        if let Some(spec) = vm.get_mut("spec").and_then(Value::as_object_mut) {
            if matcher.is_null() {
                spec.remove(*field);
            } else {
                spec.insert((*field).to_string(), matcher.clone());
            }
        }
    }
    if found.clear_memory
        && let Some(domain) = vm
            .pointer_mut("/spec/template/spec/domain")
            .and_then(Value::as_object_mut)
    {
        domain.remove("memory");
    }
}

/// Why a volume names no default: ignorable ones give way to the `Ignore` policy.
struct InferError {
    message: String,
    ignorable: bool,
}

/// The `(name, kind)` the labels of the volume `volume` of the VM name (KubeVirt's
/// `fromVolumes`, for `persistentVolumeClaim` volumes; inferring from a `dataVolume` volume
/// is not implemented and says so, as KubeVirt does for a type it cannot infer from).
async fn infer_from(
    client: &kube::Client,
    ns: &str,
    vm: &Value,
    volume: &str,
    labels: (&str, &str),
) -> Result<(String, Option<String>), InferError> {
    let volumes = vm["spec"]["template"]["spec"]["volumes"].as_array();
    let Some(v) = volumes.into_iter().flatten().find(|v| v["name"] == volume) else {
        return Err(InferError {
            message: format!("unable to find volume {volume} to infer defaults"),
            ignorable: false,
        });
    };
    let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() else {
        return Err(InferError {
            message: format!(
                "unable to infer defaults from volume {volume} as type is not supported"
            ),
            ignorable: true,
        });
    };
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    let pvc = api.get(claim).await.map_err(|e| InferError {
        message: match &e {
            kube::Error::Api(s) => s.message.clone(),
            e => e.to_string(),
        },
        ignorable: false,
    })?;
    let pvc_labels = pvc.metadata.labels.unwrap_or_default();
    let Some(name) = pvc_labels.get(labels.0) else {
        return Err(InferError {
            message: format!("unable to find required {} label on the volume", labels.0),
            ignorable: true,
        });
    };
    let kind = pvc_labels.get(labels.1).filter(|k| !k.is_empty()).cloned();
    Ok((name.clone(), kind))
}

/// Resolves the `inferFromVolume` matchers of a VM being created into `found`.
async fn infer(client: &kube::Client, ns: &str, vm: &Value, found: &mut Found) {
    use crds::instancetype::{
        DEFAULT_INSTANCETYPE_KIND_LABEL, DEFAULT_INSTANCETYPE_LABEL, DEFAULT_PREFERENCE_KIND_LABEL,
        DEFAULT_PREFERENCE_LABEL,
    };
    for (field, labels) in [
        (
            "instancetype",
            (DEFAULT_INSTANCETYPE_LABEL, DEFAULT_INSTANCETYPE_KIND_LABEL),
        ),
        (
            "preference",
            (DEFAULT_PREFERENCE_LABEL, DEFAULT_PREFERENCE_KIND_LABEL),
        ),
    ] {
        let matcher = &vm["spec"][field];
        let Some(volume) = matcher["inferFromVolume"].as_str() else {
            continue;
        };
        // KubeVirt's mutator checks the matcher first (the CRD's rule would, after it).
        if let Some((key, what)) = [("name", "Name"), ("kind", "Kind")]
            .into_iter()
            .find(|(key, _)| matcher[*key].is_string())
        {
            found.infer_error.get_or_insert(format!(
                "spec.{field}.{key}: {what} already set, should be cleared before setting inferFromVolume"
            ));
            continue;
        }
        let ignore = matcher["inferFromVolumeFailurePolicy"] == "Ignore";
        match infer_from(client, ns, vm, volume, labels).await {
            Ok((name, kind)) => {
                let mut m = serde_json::json!({"name": name});
                if let Some(kind) = kind {
                    m["kind"] = Value::String(kind);
                }
                found.inferred.push((field, m));
                found.clear_memory |= ignore && field == "instancetype";
            }
            Err(e) if ignore && e.ignorable => found.inferred.push((field, Value::Null)),
            Err(e) => {
                found
                    .infer_error
                    .get_or_insert(format!("spec.{field}.inferFromVolume: {}", e.message));
            }
        }
    }
}

/// Reads the instancetype and preference the VM of `req` names. A read that fails is
/// treated as not found (logged), as KubeVirt's admitter does.
pub async fn find(client: &kube::Client, req: &Request) -> Found {
    if req.kind != "VirtualMachine" {
        return Found::default();
    }
    let mut vm = req.object.clone();
    let ns = vm["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let mut found = Found::default();
    if req.operation == super::Operation::Create {
        infer(client, &ns, &vm, &mut found).await;
        apply_inferred(&found, &mut vm);
    }
    let ns = ns.as_str();
    let matcher = &vm["spec"]["instancetype"];
    found.instancetype =
        spec_named::<VirtualMachineClusterInstancetype, VirtualMachineInstancetype, _>(
            client, ns, matcher,
        )
        .await;
    let matcher = &vm["spec"]["preference"];
    found.preference = spec_named::<VirtualMachineClusterPreference, VirtualMachinePreference, _>(
        client, ns, matcher,
    )
    .await;
    found
}

/// The spec of what `matcher` names: a `C` (cluster-wide, the default kind) or an `N` in
/// `ns`.
async fn spec_named<C, N, S>(client: &kube::Client, ns: &str, matcher: &Value) -> Option<S>
where
    C: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    N: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    S: DeserializeOwned,
{
    let name = matcher["name"].as_str()?;
    if is_cluster_kind(matcher["kind"].as_str()) {
        spec_of(Api::<C>::all(client.clone()), name).await
    } else {
        spec_of(Api::<N>::namespaced(client.clone(), ns), name).await
    }
}

async fn spec_of<K, S>(api: Api<K>, name: &str) -> Option<S>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    S: DeserializeOwned,
{
    match api.get_opt(name).await {
        Ok(found) => found
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| serde_json::from_value(v["spec"].clone()).ok()),
        Err(e) => {
            tracing::warn!(name, error = %e, "reading an instancetype or preference; admitting as not found");
            None
        }
    }
}

/// KubeVirt's early mutation: the preference's machine type when the template names none,
/// before the default machine type is set.
pub fn default_vm(found: &Found, vm: &mut Value) {
    let Some(preferred) = found
        .preference
        .as_ref()
        .and_then(|p| p.machine.as_ref())
        .and_then(|m| m.preferred_machine_type.as_ref())
    else {
        return;
    };
    let Some(domain) = vm
        .pointer_mut("/spec/template/spec/domain")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let machine = domain
        .entry("machine")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(m) = machine.as_object_mut()
        && m.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        m.insert("type".into(), Value::String(preferred.clone()));
    }
}

/// What the VM's template spec is validated as: with its instancetype and preference
/// applied. `Err`: the causes to refuse the VM for (conflicts, a preference's requirements
/// the VM does not meet, a spread topology that does not divide the vCPUs, a revisionName
/// left behind by a renamed matcher).
pub fn expanded_template(
    vm: &Value,
    old: Option<&Value>,
    found: &Found,
) -> Result<Value, Vec<Cause>> {
    let mut causes = matcher_updates(vm, old);
    let template = &vm["spec"]["template"];
    if found.instancetype.is_none() && found.preference.is_none() {
        return if causes.is_empty() {
            Ok(template["spec"].clone())
        } else {
            Err(causes)
        };
    }
    if let Some(message) = found
        .instancetype
        .as_ref()
        .and_then(|it| crds::expand::spread_mismatch(it.cpu.guest, found.preference.as_ref()))
    {
        causes.push(Cause::invalid(
            "spec.preference",
            format!("spec.preference: {message}"),
        ));
    }
    // The schema has checked the template: it reads as a spec.
    let Ok(mut spec) =
        serde_json::from_value::<VirtualMachineInstanceSpec>(template["spec"].clone())
    else {
        return Ok(template["spec"].clone());
    };
    let mut annotations: BTreeMap<String, String> =
        serde_json::from_value(template["metadata"]["annotations"].clone()).unwrap_or_default();
    if let Err(conflicts) = crds::expand::apply(
        "spec.template.spec",
        found.instancetype.as_ref(),
        found.preference.as_ref(),
        &mut spec,
        &mut annotations,
    ) {
        let message = conflicts.to_string();
        causes.extend(conflicts.0.iter().map(|f| {
            Cause::invalid(
                f.clone(),
                format!("VM field(s) {f} conflicts with selected instance type"),
            )
        }));
        tracing::debug!(%message, "instancetype conflicts");
    } else if let Some(arch) = spec
        .architecture
        .as_deref()
        .filter(|a| *a != crds::expand::DEFAULT_ARCHITECTURE)
    {
        // A preference's architecture (the template's own the schema has refused).
        causes.push(Cause::invalid(
            "spec.template.spec.architecture",
            format!(
                "spec.template.spec.architecture: Unsupported value: {arch:?}: {}",
                crds::expand::ARCHITECTURE_REFUSED
            ),
        ));
    } else if let Err(unmet) = crds::expand::check_requirements(
        "spec.template.spec",
        found.instancetype.as_ref(),
        found.preference.as_ref(),
        &spec,
    ) {
        // As KubeVirt: checked on the template with the instancetype applied.
        causes.push(Cause::not_found(unmet.fields.join(", "), unmet.to_string()));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    Ok(serde_json::to_value(spec).unwrap_or(Value::Null))
}

/// Rules for updates: `inferFromVolume` is resolved only on create (the mutating webhook
/// runs on create), so an update may not bring a new one; and KubeVirt's: a matcher renamed
/// while it keeps a revisionName would keep the old version, so the revisionName must
/// change (or go) with the name.
fn matcher_updates(vm: &Value, old: Option<&Value>) -> Vec<Cause> {
    let Some(old) = old else {
        return Vec::new();
    };
    let inferred_later = ["instancetype", "preference"].into_iter().filter_map(|field| {
        let (new, old) = (&vm["spec"][field], &old["spec"][field]);
        (new["inferFromVolume"].is_string() && new != old).then(|| {
            let f = format!("spec.{field}.inferFromVolume");
            Cause::invalid(
                &f,
                format!("{f}: is resolved only when the VM is created; set spec.{field}.name instead"),
            )
        })
    });
    let mut causes: Vec<Cause> = inferred_later.collect();
    causes.extend(
        ["instancetype", "preference"]
            .into_iter()
            .filter_map(|field| {
                let (new, old) = (&vm["spec"][field], &old["spec"][field]);
                let old_revision = old["revisionName"].as_str().filter(|r| !r.is_empty())?;
                (new.is_object()
                && new["name"] != old["name"]
                && new["revisionName"].as_str() == Some(old_revision))
            .then(|| {
                let f = format!("spec.{field}.revisionName");
                Cause::invalid(
                    &f,
                    format!(
                        "{f}: the Matcher Name has been updated without updating the RevisionName"
                    ),
                )
            })
            }),
    );
    causes
}

/// Whether the VM names an instancetype that was not found: its template may then leave
/// the memory to the instancetype.
pub fn instancetype_missing(vm: &Value, found: &Found) -> bool {
    vm["spec"]["instancetype"].is_object() && found.instancetype.is_none()
}
