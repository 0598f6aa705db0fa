//! A VM's instancetype and preference, as KubeVirt's VM controller handles them
//! (`pkg/instancetype/controller/vm`, `revision`, `find`): the version in use is kept in
//! a ControllerRevision owned by the VM (`status.instancetypeRef` / `preferenceRef` name
//! it; `spec.instancetype.revisionName` pins one), so later edits of the instancetype do
//! not change the VM; the VMI is built from that version ([`crds::expand`]).
//!
//! API reads are plain GETs, only for VMs that reference an instancetype or preference:
//! ControllerRevisions and instancetypes are not watched.

use std::collections::BTreeMap;

use crds::instancetype::{GROUP, VERSION, is_cluster_kind};
use crds::{
    ControllerRevisionRef, InstancetypeSpec, InstancetypeStatusRef, PreferenceSpec, VirtualMachine,
    VirtualMachineClusterInstancetype, VirtualMachineClusterPreference, VirtualMachineInstance,
    VirtualMachineInstancetype, VirtualMachinePreference,
};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{api_message, is_already_exists};
use crate::{Context, Error, Result, writes};

/// The VMI annotations naming the instancetype and preference it was built from
/// (KubeVirt's `kubevirt.io/instancetype-name` and the others).
pub const INSTANCETYPE_ANNOTATION: &str = "kubevirt.io/instancetype-name";
pub const CLUSTER_INSTANCETYPE_ANNOTATION: &str = "kubevirt.io/cluster-instancetype-name";
pub const PREFERENCE_ANNOTATION: &str = "kubevirt.io/preference-name";
pub const CLUSTER_PREFERENCE_ANNOTATION: &str = "kubevirt.io/cluster-preference-name";

/// KubeVirt's labels on a ControllerRevision of an instancetype or preference.
const LABEL_GENERATION: &str = "instancetype.kubevirt.io/object-generation";
const LABEL_KIND: &str = "instancetype.kubevirt.io/object-kind";
const LABEL_NAME: &str = "instancetype.kubevirt.io/object-name";
const LABEL_UID: &str = "instancetype.kubevirt.io/object-uid";
const LABEL_VERSION: &str = "instancetype.kubevirt.io/object-version";

/// The instancetype and preference versions a VM uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub instancetype: Option<(InstancetypeStatusRef, InstancetypeSpec)>,
    pub preference: Option<(InstancetypeStatusRef, PreferenceSpec)>,
}

impl Resolved {
    /// `status.instancetypeRef` as it should be.
    pub fn instancetype_ref(&self) -> Option<InstancetypeStatusRef> {
        self.instancetype.as_ref().map(|(r, _)| r.clone())
    }

    /// `status.preferenceRef` as it should be.
    pub fn preference_ref(&self) -> Option<InstancetypeStatusRef> {
        self.preference.as_ref().map(|(r, _)| r.clone())
    }
}

/// What a VM's matcher points at, read the same way for instancetypes and preferences.
struct Target<'a> {
    name: &'a str,
    kind: Option<&'a str>,
    revision_name: Option<&'a str>,
    status: Option<&'a InstancetypeStatusRef>,
}

impl Target<'_> {
    /// The revision to read: the pinned one, else the one in status if it was taken from
    /// the same object.
    fn revision(&self) -> Option<String> {
        if let Some(r) = self.revision_name.filter(|r| !r.is_empty()) {
            return Some(r.to_string());
        }
        let status = self.status?;
        (status.name.as_deref() == Some(self.name) && status.kind.as_deref() == self.kind)
            .then(|| status.controller_revision_ref.as_ref()?.name.clone())
            .flatten()
    }

    fn status_ref(&self, revision: String) -> InstancetypeStatusRef {
        InstancetypeStatusRef {
            name: Some(self.name.to_string()),
            kind: self.kind.map(str::to_string),
            controller_revision_ref: Some(ControllerRevisionRef {
                name: Some(revision),
            }),
        }
    }
}

/// Finds (and on first use stores) the versions of the VM's instancetype and preference.
/// A missing one is an error naming it (reasons FailedFindInstancetype /
/// FailedFindPreference, as KubeVirt's).
pub async fn resolve(vm: &VirtualMachine, ctx: &Context) -> Result<Resolved> {
    let status = vm.status.as_ref();
    let mut resolved = Resolved::default();
    if let Some(m) = &vm.spec.instancetype {
        let target = Target {
            name: m
                .name
                .as_deref()
                .ok_or_else(|| Error::FailedFindInstancetype(not_inferred("instancetype")))?,
            kind: m.kind.as_deref(),
            revision_name: m.revision_name.as_deref(),
            status: status.and_then(|s| s.instancetype_ref.as_ref()),
        };
        let found = resolve_one::<
            InstancetypeSpec,
            VirtualMachineClusterInstancetype,
            VirtualMachineInstancetype,
        >(
            vm,
            &target,
            ctx,
            Error::FailedFindInstancetype,
            [
                "virtualmachineclusterinstancetypes",
                "virtualmachineinstancetypes",
            ],
        )
        .await?;
        // As KubeVirt does before storing: the template must not set what it sets.
        let mut template = vm.spec.template.spec.clone();
        let mut annotations = BTreeMap::new();
        crds::expand::apply(
            "spec.template.spec",
            Some(&found.1),
            None,
            &mut template,
            &mut annotations,
        )
        .map_err(Error::InstancetypeConflict)?;
        resolved.instancetype = Some(found);
    }
    if let Some(m) = &vm.spec.preference {
        let target = Target {
            name: m
                .name
                .as_deref()
                .ok_or_else(|| Error::FailedFindPreference(not_inferred("preference")))?,
            kind: m.kind.as_deref(),
            revision_name: m.revision_name.as_deref(),
            status: status.and_then(|s| s.preference_ref.as_ref()),
        };
        resolved.preference =
            Some(
                resolve_one::<
                    PreferenceSpec,
                    VirtualMachineClusterPreference,
                    VirtualMachinePreference,
                >(
                    vm,
                    &target,
                    ctx,
                    Error::FailedFindPreference,
                    [
                        "virtualmachineclusterpreferences",
                        "virtualmachinepreferences",
                    ],
                )
                .await?,
            );
    }
    Ok(resolved)
}

/// Why a matcher with `inferFromVolume` and no name cannot be used: virt-api's mutating
/// webhook resolves it when the VM is created, and did not.
fn not_inferred(field: &str) -> String {
    format!(
        "spec.{field}.inferFromVolume was not resolved to a name: virt-api's mutating webhook \
         does that when the VM is created (is it registered?)"
    )
}

/// One target's status reference and spec: `C` is its cluster-wide kind, `N` its
/// namespaced kind, `resources` their plural names (for the request metrics).
async fn resolve_one<T, C, N>(
    vm: &VirtualMachine,
    target: &Target<'_>,
    ctx: &Context,
    missing: impl Fn(String) -> Error,
    resources: [&'static str; 2],
) -> Result<(InstancetypeStatusRef, T)>
where
    T: DeserializeOwned,
    C: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    N: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let ns = vm.namespace().unwrap_or_default();
    let (revision, spec) = version::<T, _, _>(vm, &ns, target, ctx, missing, || async {
        if is_cluster_kind(target.kind) {
            fetch(
                &Api::<C>::all(ctx.client.clone()),
                target,
                ctx,
                resources[0],
            )
            .await
        } else {
            fetch(
                &Api::<N>::namespaced(ctx.client.clone(), &ns),
                target,
                ctx,
                resources[1],
            )
            .await
        }
    })
    .await?;
    Ok((target.status_ref(revision), spec))
}

/// The object a matcher names, as JSON with apiVersion and kind; `Err` names what is
/// missing.
async fn fetch<K>(
    api: &Api<K>,
    target: &Target<'_>,
    ctx: &Context,
    resource: &'static str,
) -> std::result::Result<Value, String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    ctx.metrics.request("get", resource);
    match api.get_opt(target.name).await {
        Ok(Some(obj)) => {
            let mut value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
            value["apiVersion"] = Value::String(format!("{GROUP}/{VERSION}"));
            value["kind"] = Value::String(K::kind(&()).into_owned());
            Ok(value)
        }
        Ok(None) => Err(format!(
            "{}.{GROUP} \"{}\" not found",
            K::kind(&()),
            target.name
        )),
        Err(e) => Err(format!(
            "reading {} {}: {}",
            K::kind(&()),
            target.name,
            api_message(&e)
        )),
    }
}

/// The revision name and spec of a target: read from its ControllerRevision, or taken
/// from the object and stored in a new ControllerRevision owned by the VM.
async fn version<T, F, Fut>(
    vm: &VirtualMachine,
    ns: &str,
    target: &Target<'_>,
    ctx: &Context,
    missing: impl Fn(String) -> Error,
    fetch_object: F,
) -> Result<(String, T)>
where
    T: DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Value, String>>,
{
    let revisions: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    let spec_of = |data: &Value, revision: &str| -> Result<T> {
        serde_json::from_value(data["spec"].clone()).map_err(|e| {
            missing(format!(
                "ControllerRevision {revision} does not hold a {}: {e}",
                target.name
            ))
        })
    };
    if let Some(name) = target.revision() {
        let found = writes::get(&revisions, &name, &ctx.metrics, "controllerrevisions").await?;
        let Some(rev) = found else {
            return Err(missing(format!(
                "ControllerRevision {name} of {} not found",
                target.name
            )));
        };
        let data = rev.data.map(|d| d.0).unwrap_or(Value::Null);
        return Ok((name.clone(), spec_of(&data, &name)?));
    }
    let object = fetch_object().await.map_err(&missing)?;
    let revision = revision_for(vm, &object);
    let name = revision.metadata.name.clone().unwrap_or_default();
    ctx.metrics.request("create", "controllerrevisions");
    let pp = kube::api::PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match revisions.create(&pp, &revision).await {
        Ok(_) => {}
        Err(e) if is_already_exists(&e) => {
            // Stored by an earlier reconcile (its status write may have been lost): it
            // must hold the same version.
            let existing =
                writes::get(&revisions, &name, &ctx.metrics, "controllerrevisions").await?;
            let same = existing
                .and_then(|r| r.data)
                .is_some_and(|d| d.0["spec"] == object["spec"]);
            if !same {
                return Err(Error::FailedCreateRevision(
                    name.clone(),
                    "a ControllerRevision of that name holds other data".into(),
                ));
            }
        }
        Err(e) => return Err(Error::FailedCreateRevision(name.clone(), api_message(&e))),
    }
    Ok((name.clone(), spec_of(&object, &name)?))
}

/// KubeVirt's ControllerRevision of an instancetype or preference: named
/// `<vm>-<object>-<version>-<object uid>-<object generation>`, the object without its
/// labels, annotations, finalizers, owners and managed fields, owned by the VM.
pub fn revision_for(vm: &VirtualMachine, object: &Value) -> ControllerRevision {
    let meta = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let name = text(&meta["name"]);
    let uid = text(&meta["uid"]);
    let generation = meta["generation"].as_i64().unwrap_or(0);
    let mut data = object.clone();
    if let Some(m) = data["metadata"].as_object_mut() {
        for key in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
        ] {
            m.remove(key);
        }
    }
    let labels = BTreeMap::from([
        (LABEL_GENERATION.to_string(), generation.to_string()),
        (LABEL_KIND.to_string(), text(&object["kind"])),
        (LABEL_NAME.to_string(), name.clone()),
        (LABEL_UID.to_string(), uid.clone()),
        (LABEL_VERSION.to_string(), VERSION.to_string()),
    ]);
    let owner = crate::instance::controller_ref(vm);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{name}-{VERSION}-{uid}-{generation}",
                vm.name_any()
            )),
            namespace: vm.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: 0,
    }
}

/// Builds the VMI's spec from the resolved versions, and names them in its annotations
/// (KubeVirt's `ApplyToVMI`).
pub fn expand(
    vm: &VirtualMachine,
    resolved: &Resolved,
    vmi: &mut VirtualMachineInstance,
) -> Result<()> {
    if resolved.instancetype.is_none() && resolved.preference.is_none() {
        return Ok(());
    }
    let annotations = vmi.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if let Some(m) = &vm.spec.instancetype {
        let key = if is_cluster_kind(m.kind.as_deref()) {
            CLUSTER_INSTANCETYPE_ANNOTATION
        } else {
            INSTANCETYPE_ANNOTATION
        };
        annotations.insert(key.into(), m.name.clone().unwrap_or_default());
    }
    if let Some(m) = &vm.spec.preference {
        let key = if is_cluster_kind(m.kind.as_deref()) {
            CLUSTER_PREFERENCE_ANNOTATION
        } else {
            PREFERENCE_ANNOTATION
        };
        annotations.insert(key.into(), m.name.clone().unwrap_or_default());
    }
    let instancetype = resolved.instancetype.as_ref().map(|(_, s)| s);
    let preference = resolved.preference.as_ref().map(|(_, s)| s);
    crds::expand::apply("spec", instancetype, preference, &mut vmi.spec, annotations)
        .map_err(Error::InstancetypeConflict)?;
    // virt-api refuses such a VM; this holds where it did not run (KubeVirt checks only
    // there), and for a preference changed since.
    crds::expand::check_requirements("spec.template.spec", instancetype, preference, &vmi.spec)
        .map_err(Error::PreferenceRequirements)
}

/// The hook of the VM controller: the versions in use, or the error that keeps the VM from
/// starting, told once per reconcile in a Warning Event on the VM. No API call for a VM
/// without instancetype and preference.
pub async fn sync(vm: &VirtualMachine, ctx: &Context) -> Result<Resolved> {
    if vm.spec.instancetype.is_none() && vm.spec.preference.is_none() {
        return Ok(Resolved::default());
    }
    resolve(vm, ctx).await.inspect_err(|e| {
        tracing::warn!(error = %ferrovirt_runtime::chain(e), "instancetype or preference");
        ctx.event(
            vm.object_ref(&()),
            kube::runtime::events::EventType::Warning,
            e.reason(),
            ferrovirt_runtime::chain(e),
        );
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vm(yaml: &str) -> VirtualMachine {
        serde_yaml::from_str(yaml).unwrap()
    }

    const VM: &str = r#"
metadata: {name: vm1, namespace: ns, uid: u-vm}
spec:
  instancetype: {kind: VirtualMachineInstancetype, name: clarge}
  preference: {name: p}
  template: {spec: {domain: {devices: {disks: [{name: root}]}}, volumes: [{name: root, containerDisk: {image: c}}]}}
"#;

    #[test]
    fn a_revision_is_kubevirts() {
        let object = json!({
            "apiVersion": "instancetype.kubevirt.io/v1beta1", "kind": "VirtualMachineInstancetype",
            "metadata": {"name": "clarge", "uid": "u-it", "generation": 3, "labels": {"a": "b"},
                         "managedFields": [{}], "resourceVersion": "7"},
            "spec": {"cpu": {"guest": 4}, "memory": {"guest": "2Gi"}}});
        let r = revision_for(&vm(VM), &object);
        assert_eq!(
            r.metadata.name.as_deref(),
            Some("vm1-clarge-v1beta1-u-it-3")
        );
        let labels = r.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_KIND], "VirtualMachineInstancetype");
        assert_eq!(labels[LABEL_GENERATION], "3");
        assert_eq!(labels[LABEL_NAME], "clarge");
        let owner = &r.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-vm", Some(true)));
        let data = r.data.unwrap().0;
        assert_eq!(data["spec"], object["spec"]);
        assert!(
            data["metadata"].get("labels").is_none()
                && data["metadata"].get("managedFields").is_none()
        );
    }

    #[test]
    fn the_instance_is_expanded_and_annotated() {
        let vm = vm(VM);
        let resolved = Resolved {
            instancetype: Some((
                InstancetypeStatusRef::default(),
                serde_yaml::from_str("{cpu: {guest: 2}, memory: {guest: 1Gi}}").unwrap(),
            )),
            preference: Some((
                InstancetypeStatusRef::default(),
                serde_yaml::from_str("{devices: {preferredDiskBus: sata}}").unwrap(),
            )),
        };
        let mut vmi = crate::instance::instance_for(&vm);
        expand(&vm, &resolved, &mut vmi).unwrap();
        assert_eq!(vmi.annotations()[INSTANCETYPE_ANNOTATION], "clarge");
        assert_eq!(vmi.annotations()[CLUSTER_PREFERENCE_ANNOTATION], "p");
        assert_eq!(vmi.spec.domain.cpu.as_ref().unwrap().sockets, Some(2));
        assert_eq!(
            vmi.spec
                .domain
                .memory
                .as_ref()
                .unwrap()
                .guest
                .as_ref()
                .unwrap()
                .0,
            "1Gi"
        );
        assert_eq!(
            vmi.spec.domain.devices.disks[0].disk.as_ref().unwrap().bus,
            Some(crds::DiskBus::Sata)
        );
    }

    #[test]
    fn the_revision_in_status_counts_only_for_the_same_object() {
        let status = InstancetypeStatusRef {
            name: Some("clarge".into()),
            kind: Some("VirtualMachineInstancetype".into()),
            controller_revision_ref: Some(ControllerRevisionRef {
                name: Some("r1".into()),
            }),
        };
        let target = |name, revision_name| Target {
            name,
            kind: Some("VirtualMachineInstancetype"),
            revision_name,
            status: Some(&status),
        };
        assert_eq!(target("clarge", None).revision().as_deref(), Some("r1"));
        assert_eq!(
            target("csmall", None).revision(),
            None,
            "renamed: a new revision"
        );
        assert_eq!(
            target("csmall", Some("pinned")).revision().as_deref(),
            Some("pinned")
        );
    }
}
