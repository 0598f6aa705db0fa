//! KubeVirt's backend storage (its `pkg/storage/backend-storage`), as virt-controller keeps
//! it: a VMI with a persistent TPM (`devices.tpm.persistent: true`) or a persistent EFI
//! variable store (`firmware.bootloader.efi.persistent: true`) keeps that state on a PVC of
//! its own, which its launcher pod mounts (`vm-state`, [`crate::pod`]) and virt-handler
//! points swtpm and the NVRAM at.
//! - The claim is found by its label `persistent-state-for: <VMI name>`; when there is
//!   none, one is made: `generateName: persistent-state-for-<name>-`, 10Mi, filesystem
//!   mode, owned by the VMI's owners (its VM: the claim outlives the VMI and goes with the
//!   VM, so the state survives stop and start) or, for a VMI of its own, by the VMI.
//! - Its storage class is `vmStateStorageClass` of the `kubevirt-config` ConfigMap, else
//!   the class annotated `storageclass.kubevirt.io/is-default-virt-class`, else the
//!   cluster's default class; with none, the VMI stays Pending with condition Synchronized
//!   False, reason `FailedBackendStorageCreate` ("no default storage class found"), which
//!   its VM shows too. The access mode: ReadWriteMany for a configured class,
//!   ReadWriteOnce for a default one, unless CDI's StorageProfile of the class says which.
//! - The launcher pod is made once the claim is Bound (or Pending in a
//!   `WaitForFirstConsumer` class); meanwhile Synchronized False says why
//!   (`BackendStorageNotReady`, or `FailedBackendStorageProbe` for a lost claim or a
//!   class that does not exist), looked at again every 2 s (the DataVolumes' poll).
//! - `status.volumeStatus` names the claim (`persistent-state-for-this-vm`).
//!
//! Not done: KubeVirt's adoption of claims named by its older scheme
//! (`persistent-state-for-<name>` without the label), and the delete of the claim when a
//! VM's new VMI no longer asks for persistence (KubeVirt reads its claims from a cache
//! for every VMI; here that would be a request more per VM start).

use std::collections::BTreeMap;

use crds::{
    BACKEND_STORAGE_LABEL, BACKEND_STORAGE_VOLUME, Condition, PersistentVolumeClaimInfo,
    VirtualMachineInstance, VirtualMachineInstanceStatus, VmiPhase, VolumeStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use ferrovirt_node_contract::paths::BACKEND_STORAGE_DIR_IN_POD;

use crate::{Context, Result, writes};

/// KubeVirt's size of the claim.
pub(crate) const PVC_SIZE: &str = "10Mi";
/// The `kubevirt-config` key naming the class of the claims (KubeVirt's
/// `spec.configuration.vmStateStorageClass`).
pub const STORAGE_CLASS_KEY: &str = "vmStateStorageClass";
const CONFIG_MAP: &str = "kubevirt-config";
const KUBEVIRT_DEFAULT: &str = "storageclass.kubevirt.io/is-default-virt-class";
const KUBERNETES_DEFAULT: &str = "storageclass.kubernetes.io/is-default-class";
/// KubeVirt labels the claim for CDI's PVC-rendering webhook (a StorageProfile may raise
/// the size, for provisioners with a minimum).
const APPLY_STORAGE_PROFILE: &str = "cdi.kubevirt.io/applyStorageProfile";
/// The launcher pod's volume of the claim (KubeVirt's name).
const POD_VOLUME: &str = "vm-state";
/// KubeVirt's condition type of a VMI its controller could not act on.
pub(crate) const SYNCHRONIZED: &str = "Synchronized";

/// KubeVirt's reasons.
pub(crate) const FAILED_CREATE: &str = "FailedBackendStorageCreate";
pub(crate) const FAILED_PROBE: &str = "FailedBackendStorageProbe";
pub(crate) const NOT_READY: &str = "BackendStorageNotReady";

/// The launcher pod's volume of the claim `status.volumeStatus` names, and its mount at
/// [`BACKEND_STORAGE_DIR_IN_POD`] (KubeVirt's `vm-state` volume; it mounts the claim's
/// `swtpm` and `nvram` sub-paths where its libvirt keeps them, Ferrovirt mounts the claim
/// and virt-handler points libvirt into it). None for a VMI without backend storage.
pub(crate) fn pod_volume(vmi: &VirtualMachineInstance) -> Option<(Volume, VolumeMount)> {
    if !vmi.spec.needs_backend_storage() {
        return None;
    }
    let claim = vmi.status.as_ref()?.backend_storage_claim()?;
    let volume = Volume {
        name: POD_VOLUME.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: Some(false),
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: POD_VOLUME.into(),
        mount_path: BACKEND_STORAGE_DIR_IN_POD.into(),
        ..Default::default()
    };
    Some((volume, mount))
}

/// The claim's storage class: the configured one, else KubeVirt's default virt class, else
/// the cluster's default (KubeVirt's `getStorageClass`). Pure.
pub(crate) fn storage_class(
    configured: Option<&str>,
    classes: &[StorageClass],
) -> std::result::Result<String, String> {
    if let Some(c) = configured.filter(|c| !c.is_empty()) {
        return Ok(c.to_owned());
    }
    let annotated = |key: &str| {
        classes
            .iter()
            .filter(|c| c.annotations().get(key).map(String::as_str) == Some("true"))
            .map(ResourceExt::name_any)
            .next_back()
    };
    annotated(KUBEVIRT_DEFAULT)
        .or_else(|| annotated(KUBERNETES_DEFAULT))
        .ok_or_else(|| "no default storage class found".to_owned())
}

/// The claim's access mode (KubeVirt's `getAccessMode`): ReadWriteMany for a configured
/// class, ReadWriteOnce for a default one, unless the class's StorageProfile (`profile`,
/// CDI's `status.claimPropertySets`) offers ReadWriteMany or ReadWriteOnce for filesystem
/// claims. Pure.
pub(crate) fn access_mode(configured: bool, profile: Option<&serde_json::Value>) -> &'static str {
    let default = if configured {
        "ReadWriteMany"
    } else {
        "ReadWriteOnce"
    };
    let sets = profile
        .and_then(|p| p["status"]["claimPropertySets"].as_array())
        .cloned()
        .unwrap_or_default();
    let mut rwo = false;
    for set in sets
        .iter()
        .filter(|s| s["volumeMode"].as_str() == Some("Filesystem"))
    {
        for mode in set["accessModes"].as_array().into_iter().flatten() {
            match mode.as_str() {
                Some("ReadWriteMany") => return "ReadWriteMany",
                Some("ReadWriteOnce") => rwo = true,
                _ => {}
            }
        }
    }
    if rwo { "ReadWriteOnce" } else { default }
}

/// The claim of `vmi` in `class` with `mode` (KubeVirt's `createPVC`). Pure.
pub(crate) fn render(
    vmi: &VirtualMachineInstance,
    class: &str,
    mode: &str,
) -> PersistentVolumeClaim {
    let name = vmi.name_any();
    let mut owners = vmi.owner_references().to_vec();
    if owners.is_empty() {
        // A VMI of its own: the claim goes with it (KubeVirt's choice, against litter).
        owners = vmi.controller_owner_ref(&()).into_iter().collect();
    }
    let labels = BTreeMap::from([
        (BACKEND_STORAGE_LABEL.to_owned(), name.clone()),
        (APPLY_STORAGE_PROFILE.to_owned(), "true".to_owned()),
    ]);
    serde_json::from_value(json!({
        "metadata": {
            "generateName": format!("{BACKEND_STORAGE_LABEL}-{name}-"),
            "namespace": vmi.namespace(),
            "labels": labels,
            "ownerReferences": owners,
        },
        "spec": {
            "accessModes": [mode],
            "resources": {"requests": {"storage": PVC_SIZE}},
            "storageClassName": class,
            "volumeMode": "Filesystem",
        }
    }))
    .expect("a PersistentVolumeClaim")
}

/// Whether the launcher pod may be made with `pvc` (KubeVirt's `IsPVCReady`): Ok(true)
/// once it is Bound, or Pending in a `WaitForFirstConsumer` class (`class`: the claim's
/// class as found, None when it does not exist); Ok(false) while it is Pending; Err with
/// the reason and message otherwise. Pure.
pub(crate) fn readiness(
    pvc: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
) -> std::result::Result<bool, (&'static str, String)> {
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    match phase {
        Some("Bound") => Ok(true),
        Some("Lost") => Err((FAILED_PROBE, "backend storage PVC lost".into())),
        _ => {
            let Some(name) = pvc
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
            else {
                return Err((FAILED_PROBE, "no storage class name".into()));
            };
            let Some(class) = class else {
                return Err((FAILED_PROBE, format!("storage class {name} not found")));
            };
            Ok(class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
        }
    }
}

/// `status` with the claim in `volumeStatus` (KubeVirt's `UpdateVolumeStatus`). Pure.
pub(crate) fn show_claim(status: &mut VirtualMachineInstanceStatus, pvc: &PersistentVolumeClaim) {
    let info = PersistentVolumeClaimInfo {
        claim_name: pvc.metadata.name.clone(),
        access_modes: pvc
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    match status
        .volume_status
        .iter_mut()
        .find(|v| v.name == BACKEND_STORAGE_VOLUME)
    {
        Some(v) => v.persistent_volume_claim_info = Some(info),
        None => status.volume_status.push(VolumeStatus {
            name: BACKEND_STORAGE_VOLUME.into(),
            target: String::new(),
            persistent_volume_claim_info: Some(info),
        }),
    }
}

/// `status` Pending with condition Synchronized False, `reason` and `message`. Pure.
pub(crate) fn not_synchronized(
    status: &mut VirtualMachineInstanceStatus,
    reason: &str,
    message: String,
) {
    status.phase = Some(VmiPhase::Pending);
    crds::condition::set(
        &mut status.conditions,
        Condition {
            type_: SYNCHRONIZED.into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(message),
            ..Default::default()
        },
    );
}

/// A VMI's backend storage before its launcher pod exists: the status to write while the
/// claim is not ready (Pending, Synchronized False saying why) or once it is first shown
/// in `volumeStatus`, and whether the pod may be made. `None`: the VMI needs no backend
/// storage, or is past Pending, or the claim is ready and already shown.
pub(crate) async fn gate_vmi(
    vmi: &VirtualMachineInstance,
    ctx: &Context,
) -> Result<Option<(VirtualMachineInstanceStatus, bool)>> {
    let old = vmi.status.clone().unwrap_or_default();
    if !vmi.spec.needs_backend_storage() || !matches!(old.phase, None | Some(VmiPhase::Pending)) {
        return Ok(None);
    }
    let ns = vmi.namespace().unwrap_or_default();
    let name = vmi.name_any();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut status = old.clone();

    ctx.metrics.request("list", "persistentvolumeclaims");
    let selector = format!("{BACKEND_STORAGE_LABEL}={name}");
    let found = pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none());
    let pvc = match found {
        Some(p) => p,
        None => match create(vmi, ctx, &pvcs, &classes).await? {
            Ok(p) => {
                tracing::info!(claim = %p.name_any(), "created the backend-storage claim");
                p
            }
            Err(message) => {
                not_synchronized(&mut status, FAILED_CREATE, message);
                return Ok(Some((status, false)));
            }
        },
    };
    show_claim(&mut status, &pvc);
    let class = match pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) {
        Some(c) if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") => {
            ctx.metrics.request("get", "storageclasses");
            classes.get_opt(&c).await?
        }
        _ => None,
    };
    match readiness(&pvc, class.as_ref()) {
        Ok(true) => {
            if status.conditions.iter().any(|c| {
                c.type_ == SYNCHRONIZED
                    && matches!(
                        c.reason.as_deref(),
                        Some(FAILED_CREATE | FAILED_PROBE | NOT_READY)
                    )
            }) {
                status.conditions.retain(|c| c.type_ != SYNCHRONIZED);
            }
            Ok((status != old).then_some((status, true)))
        }
        Ok(false) => {
            let claim = pvc.name_any();
            not_synchronized(&mut status, NOT_READY, format!("PVC {claim} pending"));
            Ok(Some((status, false)))
        }
        Err((reason, message)) => {
            not_synchronized(&mut status, reason, message);
            Ok(Some((status, false)))
        }
    }
}

/// Makes the claim (KubeVirt's `createPVC`): Ok(Err(message)) when no storage class can
/// be chosen or the API server refuses it.
async fn create(
    vmi: &VirtualMachineInstance,
    ctx: &Context,
    pvcs: &Api<PersistentVolumeClaim>,
    classes: &Api<StorageClass>,
) -> Result<std::result::Result<PersistentVolumeClaim, String>> {
    let configs: Api<ConfigMap> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.config_namespace);
    let config = writes::get(&configs, CONFIG_MAP, &ctx.metrics, "configmaps").await?;
    let configured = config
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(STORAGE_CLASS_KEY))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let listed = match configured {
        Some(_) => Vec::new(),
        None => {
            ctx.metrics.request("list", "storageclasses");
            classes.list(&ListParams::default()).await?.items
        }
    };
    let class = match storage_class(configured.as_deref(), &listed) {
        Ok(c) => c,
        Err(message) => return Ok(Err(message)),
    };
    let profile = storage_profile(ctx, &class).await;
    let mode = access_mode(configured.is_some(), profile.as_ref());
    let pvc = render(vmi, &class, mode);
    ctx.metrics.request("create", "persistentvolumeclaims");
    let pp = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match pvcs.create(&pp, &pvc).await {
        Ok(p) => Ok(Ok(p)),
        Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 409 => Ok(Err(
            format!("creating the backend-storage PVC: {}", s.message),
        )),
        Err(e) => Err(e.into()),
    }
}

/// CDI's StorageProfile of `class`, where CDI is installed (best effort: any failure
/// reads as none, as KubeVirt falls back to its default).
async fn storage_profile(ctx: &Context, class: &str) -> Option<serde_json::Value> {
    let resource = ApiResource {
        group: "cdi.kubevirt.io".into(),
        version: "v1beta1".into(),
        api_version: "cdi.kubevirt.io/v1beta1".into(),
        kind: "StorageProfile".into(),
        plural: "storageprofiles".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    ctx.metrics.request("get", "storageprofiles");
    match api.get_opt(class).await {
        Ok(p) => p.map(|p| p.data),
        Err(e) => {
            tracing::debug!(error = %e, class, "no StorageProfile read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, annotation: Option<&str>, wffc: bool) -> StorageClass {
        let mut c: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": "p",
        }))
        .unwrap();
        if let Some(a) = annotation {
            c.metadata.annotations = Some(BTreeMap::from([(a.to_owned(), "true".to_owned())]));
        }
        if wffc {
            c.volume_binding_mode = Some("WaitForFirstConsumer".into());
        }
        c
    }

    #[test]
    fn the_class_is_the_configured_then_kubevirts_default_then_the_clusters() {
        let classes = [
            class("plain", None, false),
            class("k8s", Some(KUBERNETES_DEFAULT), false),
            class("virt", Some(KUBEVIRT_DEFAULT), false),
        ];
        assert_eq!(storage_class(Some("mine"), &classes).unwrap(), "mine");
        assert_eq!(storage_class(None, &classes).unwrap(), "virt");
        assert_eq!(storage_class(Some(""), &classes[..2]).unwrap(), "k8s");
        assert_eq!(
            storage_class(None, &classes[..1]).unwrap_err(),
            "no default storage class found"
        );
    }

    #[test]
    fn the_access_mode_follows_kubevirt() {
        assert_eq!(access_mode(true, None), "ReadWriteMany");
        assert_eq!(access_mode(false, None), "ReadWriteOnce");
        let profile = |modes: serde_json::Value| {
            json!({"status": {"claimPropertySets": [
                {"volumeMode": "Block", "accessModes": ["ReadWriteMany"]},
                {"volumeMode": "Filesystem", "accessModes": modes}]}})
        };
        assert_eq!(
            access_mode(true, Some(&profile(json!(["ReadWriteOnce"])))),
            "ReadWriteOnce"
        );
        assert_eq!(
            access_mode(
                false,
                Some(&profile(json!(["ReadWriteOnce", "ReadWriteMany"])))
            ),
            "ReadWriteMany"
        );
    }

    fn vmi(owned: bool) -> VirtualMachineInstance {
        let mut v: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm1", "namespace": "ns", "uid": "u-vmi"},
            "spec": {"domain": {"memory": {"guest": "128Mi"}, "devices": {"tpm": {"persistent": true}}}}
        }))
        .unwrap();
        if owned {
            v.metadata.owner_references = Some(vec![
                serde_json::from_value(
                    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "name": "vm1", "uid": "u-vm", "controller": true, "blockOwnerDeletion": true}),
                )
                .unwrap(),
            ]);
        }
        v
    }

    #[test]
    fn the_claim_is_kubevirts_and_belongs_to_the_vm() {
        let pvc = render(&vmi(true), "local", "ReadWriteOnce");
        let wire = serde_json::to_value(&pvc).unwrap();
        assert_eq!(
            wire["metadata"]["generateName"],
            "persistent-state-for-vm1-"
        );
        assert_eq!(wire["metadata"]["labels"]["persistent-state-for"], "vm1");
        assert_eq!(wire["metadata"]["labels"][APPLY_STORAGE_PROFILE], "true");
        assert_eq!(
            wire["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachine"
        );
        assert_eq!(wire["spec"]["resources"]["requests"]["storage"], "10Mi");
        assert_eq!(wire["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(wire["spec"]["volumeMode"], "Filesystem");
        assert_eq!(wire["spec"]["storageClassName"], "local");
        // A VMI of its own owns its claim.
        let own = serde_json::to_value(render(&vmi(false), "local", "ReadWriteOnce")).unwrap();
        assert_eq!(
            own["metadata"]["ownerReferences"][0]["kind"],
            "VirtualMachineInstance"
        );
        assert_eq!(own["metadata"]["ownerReferences"][0]["uid"], "u-vmi");
    }

    #[test]
    fn the_launcher_pod_mounts_the_claim_status_names() {
        let mut v = vmi(true);
        assert!(pod_volume(&v).is_none(), "no claim named yet");
        let mut pvc = render(&v, "local", "ReadWriteOnce");
        pvc.metadata.name = Some("persistent-state-for-vm1-abcde".into());
        show_claim(v.status.get_or_insert_default(), &pvc);
        let (volume, mount) = pod_volume(&v).unwrap();
        assert_eq!(volume.name, "vm-state");
        assert_eq!(
            volume.persistent_volume_claim.unwrap().claim_name,
            "persistent-state-for-vm1-abcde"
        );
        assert_eq!(mount.mount_path, BACKEND_STORAGE_DIR_IN_POD);
        let pod = crate::pod::render(
            &v,
            &crate::pod::LauncherConfig {
                image: "launcher".into(),
                node_run_dir: "/var/run/ferrovirt".into(),
            },
            &Default::default(),
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        assert!(spec.volumes.unwrap().iter().any(|v| v.name == "vm-state"));
        assert!(
            spec.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "vm-state")
        );
        // A VMI whose TPM is not persistent mounts none.
        v.spec.domain.devices.tpm = Some(crds::Tpm::default());
        assert!(pod_volume(&v).is_none());
    }

    #[test]
    fn readiness_and_volume_status() {
        let mut pvc = render(&vmi(true), "local", "ReadWriteOnce");
        pvc.metadata.name = Some("persistent-state-for-vm1-abcde".into());
        assert_eq!(
            readiness(&pvc, None).unwrap_err(),
            (FAILED_PROBE, "storage class local not found".to_owned())
        );
        assert_eq!(
            readiness(&pvc, Some(&class("local", None, false))),
            Ok(false)
        );
        assert_eq!(readiness(&pvc, Some(&class("local", None, true))), Ok(true));
        pvc.status = Some(serde_json::from_value(json!({"phase": "Bound"})).unwrap());
        assert_eq!(readiness(&pvc, None), Ok(true));
        pvc.status = Some(serde_json::from_value(json!({"phase": "Lost"})).unwrap());
        assert_eq!(readiness(&pvc, None).unwrap_err().0, FAILED_PROBE);

        let mut status = VirtualMachineInstanceStatus::default();
        show_claim(&mut status, &pvc);
        show_claim(&mut status, &pvc);
        assert_eq!(
            serde_json::to_value(&status.volume_status).unwrap(),
            json!([{"name": "persistent-state-for-this-vm", "target": "",
                    "persistentVolumeClaimInfo": {"claimName": "persistent-state-for-vm1-abcde",
                                                  "accessModes": ["ReadWriteOnce"]}}])
        );
        assert_eq!(
            status.backend_storage_claim(),
            Some("persistent-state-for-vm1-abcde")
        );
    }
}
