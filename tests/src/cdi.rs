//! A stand-in for CDI (the Containerized Data Importer, kubevirt.io/containerized-data-importer),
//! which is not on this machine: its Go module is not served by the module proxy, and it
//! would need images from outside. Ferrovirt's side of KubeVirt's contract with CDI is real;
//! this is the other side, as small as the contract allows:
//! - CDI's DataVolume CRD (`cdi.kubevirt.io/v1beta1`): its names, short names, category,
//!   status subresource and print columns, and the top-level fields of its DataVolumeSpec,
//!   as in CDI's API types (KubeVirt vendors them:
//!   `vendor/kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1/types.go`),
//!   so that an unknown field is refused by name as CDI's own schema refuses it; below the
//!   top level it keeps what it is given;
//! - [`import`]: what CDI's importer does for a DataVolume once it is created: the claim of
//!   its name, bound to a volume that holds the disk image converted to raw (`disk.img`,
//!   as CDI writes a filesystem volume), then the DataVolume's phase `Succeeded`;
//! - [`wait_for_first_consumer`]: a DataVolume whose class binds on first consumer: the
//!   claim unbound and the phase `WaitForFirstConsumer` until a pod consumes it; then the
//!   test imports as CDI does ([`fill`], [`succeed`]).

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Error, Result};

/// The stand-in's DataVolume CRD.
pub fn data_volume_crd() -> CustomResourceDefinition {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let spec = json!({
        "type": "object",
        "properties": {
            "source": open, "sourceRef": open, "pvc": open, "storage": open,
            "priorityClassName": {"type": "string"},
            "contentType": {"type": "string"},
            "checkpoints": {"type": "array", "items": open},
            "finalCheckpoint": {"type": "boolean"},
            "preallocation": {"type": "boolean"}
        }
    });
    let status = json!({
        "type": "object",
        "properties": {
            "claimName": {"type": "string"},
            "phase": {"type": "string"},
            "progress": {"type": "string"},
            "restartCount": {"type": "integer", "format": "int32"},
            "conditions": {"type": "array", "items": open}
        }
    });
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "datavolumes.cdi.kubevirt.io"},
        "spec": {
            "group": "cdi.kubevirt.io",
            "scope": "Namespaced",
            "names": {"kind": "DataVolume", "listKind": "DataVolumeList", "plural": "datavolumes",
                      "singular": "datavolume", "shortNames": ["dv", "dvs"], "categories": ["all"]},
            "versions": [{
                "name": "v1beta1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec, "status": status
                    }
                }}
            }]
        }
    }))
    .expect("a CRD")
}

/// Installs the stand-in's CRD and waits until the API server serves it.
pub async fn install(client: &Client) -> Result<()> {
    crate::control_plane::install_crds(client, vec![data_volume_crd()]).await
}

/// Imports `image` (any format `qemu-img` reads) for the DataVolume `name` of `ns`, as CDI's
/// importer does: converts it to `<dir>/disk.img` (raw), makes a hostPath volume of `dir`
/// bound to the claim `name`, and sets the DataVolume's status Succeeded (claim, progress,
/// CDI's Bound, Ready and Running conditions).
pub async fn import(client: &Client, ns: &str, name: &str, image: &Path, dir: &Path) -> Result<()> {
    fill(image, dir)?;
    let pv_name = format!("{ns}-{name}");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": dir.to_string_lossy(), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": name}
        }
    }))
    .expect("a PersistentVolume");
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))
    .expect("a PersistentVolumeClaim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    succeed(client, ns, name).await
}

/// What CDI does for the DataVolume `name` of `ns` in a `WaitForFirstConsumer` class: the
/// claim of its name in such a class of its own (`<ns>-<name>`), with a `local` volume of
/// `dir` on `node` for it ([`crate::manifests::local_claim`]), unbound; the DataVolume's phase `WaitForFirstConsumer` (CDI's
/// Bound condition False). Once a pod consumes the claim (the scheduler binds it), CDI
/// imports: [`fill`] the directory, then [`succeed`].
pub async fn wait_for_first_consumer(
    client: &Client,
    ns: &str,
    name: &str,
    dir: &Path,
    node: &str,
) -> Result<()> {
    let list = crate::manifests::local_claim(
        &format!("{ns}-{name}"),
        name,
        &dir.to_string_lossy(),
        node,
        ("1Gi", "1Gi"),
        false,
    );
    let item = |i: usize| list["items"][i].clone();
    let class: StorageClass = serde_json::from_value(item(0)).expect("a StorageClass");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await?;
    let pv: PersistentVolume = serde_json::from_value(item(1)).expect("a PersistentVolume");
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(item(2)).expect("a claim");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    set_status(
        client,
        ns,
        name,
        json!({
            "claimName": name,
            "phase": "WaitForFirstConsumer",
            "conditions": [
                {"type": "Bound", "status": "False", "reason": "WaitForFirstConsumer"},
                {"type": "Ready", "status": "False"}
            ]
        }),
    )
    .await
}

/// What CDI's importer writes: `image` (any format `qemu-img` reads) converted to
/// `<dir>/disk.img` (raw), as CDI writes a filesystem volume.
pub fn fill(image: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        context: format!("creating {}", dir.display()),
        source: e,
    })?;
    let disk = dir.join("disk.img");
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&disk)
        .output()
        .map_err(|e| Error::Io {
            context: "running qemu-img (Debian's qemu-utils)".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(Error::Io {
            context: format!(
                "qemu-img convert {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            source: std::io::Error::other("qemu-img failed"),
        });
    }
    Ok(())
}

/// The DataVolume `name` of `ns` Succeeded, its claim filled (claim, progress, CDI's Bound,
/// Ready and Running conditions).
pub async fn succeed(client: &Client, ns: &str, name: &str) -> Result<()> {
    set_status(
        client,
        ns,
        name,
        json!({
            "claimName": name,
            "phase": "Succeeded",
            "progress": "100.0%",
            "conditions": [
                {"type": "Bound", "status": "True", "reason": "Bound"},
                {"type": "Ready", "status": "True"},
                {"type": "Running", "status": "False", "reason": "Completed"}
            ]
        }),
    )
    .await
}

/// Sets the DataVolume's status (the status subresource), as CDI's controller does.
pub async fn set_status(client: &Client, ns: &str, name: &str, status: Value) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &crds::cdi::api_resource());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}
