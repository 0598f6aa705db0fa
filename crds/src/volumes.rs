//! `spec.volumes` and `spec.networks`: what backs the guest's disks and interfaces.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A volume: the storage behind the disk of the same name. Exactly one source must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.containerDisk), has(self.cloudInitNoCloud), has(self.emptyDisk), has(self.hostDisk), has(self.persistentVolumeClaim), has(self.configMap), has(self.secret), has(self.serviceAccount), has(self.downwardAPI), has(self.dataVolume), has(self.downwardMetrics)].filter(x, x).size() == 1",
    "message": "set exactly one volume source: containerDisk, cloudInitNoCloud, emptyDisk, hostDisk, persistentVolumeClaim, dataVolume, configMap, secret, serviceAccount, downwardAPI or downwardMetrics"
}]))]
pub struct Volume {
    /// The volume's name; the disk of the same name uses it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// A disk image shipped in a container image (`/disk/<file>`). The image is never
    /// written: the guest writes to an ephemeral overlay that is discarded when the VMI ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDiskSource>,
    /// A cloud-init NoCloud data source, attached as a disk labelled `cidata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitNoCloudSource>,
    /// A blank, sparse disk that lives as long as the VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_disk: Option<EmptyDiskSource>,
    /// A disk image at a path on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_disk: Option<HostDisk>,
    /// A PersistentVolumeClaim; a filesystem volume holds the disk as `disk.img`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A DataVolume of CDI (cdi.kubevirt.io, which must be installed): the guest uses the
    /// PersistentVolumeClaim of the same name, as a `persistentVolumeClaim` volume, once
    /// the DataVolume has succeeded; the VMI waits until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeSource>,
    /// A ConfigMap of the VMI's namespace, given to the guest as an ISO 9660 disk with a
    /// file per key (as KubeVirt: label `cfgdata` unless `volumeLabel` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret of the VMI's namespace, given to the guest as `configMap` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// A ServiceAccount's credentials (`token`, `ca.crt`, `namespace`) as an ISO 9660 disk
    /// labelled `cfgdata`; the launcher pod runs as that ServiceAccount. At most one per
    /// VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountVolumeSource>,
    /// Fields of the launcher pod (the VMI's labels and annotations, its name, ...) as
    /// files of an ISO 9660 disk, as a Kubernetes downwardAPI volume projects them.
    #[serde(
        default,
        rename = "downwardAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub downward_api: Option<DownwardApiVolumeSource>,
    /// KubeVirt's downward metrics: a small raw disk (virtio, read-only) holding host and
    /// VM metrics in vhostmd's XML, rewritten every 5 seconds. Needs the `DownwardMetrics`
    /// feature gate; at most one per VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<DownwardMetricsVolumeSource>,
}

/// The downward metrics disk; it has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct DownwardMetricsVolumeSource {}

/// A ConfigMap presented to the guest as a disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolumeSource {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Start the VMI even when the ConfigMap does not exist (the disk is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The volume label of the disk in the guest (ISO 9660's volume id, at most 32
    /// characters); `cfgdata` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub volume_label: Option<String>,
}

/// A Secret presented to the guest as a disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolumeSource {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Start the VMI even when the Secret does not exist (the disk is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The volume label of the disk in the guest (ISO 9660's volume id, at most 32
    /// characters); `cfgdata` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub volume_label: Option<String>,
}

/// A ServiceAccount whose token the guest gets on a disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountVolumeSource {
    /// The ServiceAccount's name, in the VMI's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: String,
}

/// Pod fields presented to the guest as a disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiVolumeSource {
    /// The files: each a path and the pod field (`fieldRef`) or resource
    /// (`resourceFieldRef`) it holds, as in a Kubernetes downwardAPI volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<k8s_openapi::api::core::v1::DownwardAPIVolumeFile>,
    /// The volume label of the disk in the guest (ISO 9660's volume id, at most 32
    /// characters); `cfgdata` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub volume_label: Option<String>,
}

/// The label KubeVirt gives a config volume's disk when it has no `volumeLabel`.
pub const DEFAULT_CONFIG_VOLUME_LABEL: &str = "cfgdata";

/// The source of a configMap, secret, serviceAccount or downwardAPI volume: the volumes
/// that reach the guest as an ISO 9660 disk of their files.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConfigVolumeSource<'a> {
    ConfigMap(&'a ConfigMapVolumeSource),
    Secret(&'a SecretVolumeSource),
    ServiceAccount(&'a ServiceAccountVolumeSource),
    DownwardApi(&'a DownwardApiVolumeSource),
}

impl ConfigVolumeSource<'_> {
    /// The volume label of its disk: its `volumeLabel`, else
    /// [`DEFAULT_CONFIG_VOLUME_LABEL`] (always, for a serviceAccount).
    pub fn label(&self) -> &str {
        let label = match self {
            ConfigVolumeSource::ConfigMap(c) => c.volume_label.as_deref(),
            ConfigVolumeSource::Secret(s) => s.volume_label.as_deref(),
            ConfigVolumeSource::DownwardApi(d) => d.volume_label.as_deref(),
            ConfigVolumeSource::ServiceAccount(_) => None,
        };
        label
            .filter(|l| !l.is_empty())
            .unwrap_or(DEFAULT_CONFIG_VOLUME_LABEL)
    }
}

impl Volume {
    /// The PersistentVolumeClaim it uses: a `persistentVolumeClaim`'s `claimName`, or a
    /// `dataVolume`'s name (CDI names the claim after its DataVolume).
    pub fn claim_name(&self) -> Option<&str> {
        self.persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str())
            .or(self.data_volume.as_ref().map(|d| d.name.as_str()))
    }

    /// Its source if it is a configMap, secret, serviceAccount or downwardAPI volume.
    pub fn config_source(&self) -> Option<ConfigVolumeSource<'_>> {
        if let Some(c) = &self.config_map {
            Some(ConfigVolumeSource::ConfigMap(c))
        } else if let Some(s) = &self.secret {
            Some(ConfigVolumeSource::Secret(s))
        } else if let Some(sa) = &self.service_account {
            Some(ConfigVolumeSource::ServiceAccount(sa))
        } else {
            self.downward_api
                .as_ref()
                .map(ConfigVolumeSource::DownwardApi)
        }
    }
}

/// A disk image in a container image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDiskSource {
    /// The container image that holds the disk image under `/disk/`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The path of the disk image inside the container image. Defaults to the one file
    /// under `/disk/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When to pull the image: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<crate::PullPolicy>,
}

/// Cloud-init NoCloud user data and network data. Set at most one of `userData`,
/// `userDataBase64` and `userDataSecretRef`, and at most one of `networkData`,
/// `networkDataBase64` and `networkDataSecretRef`. Inline data is limited to 2048 bytes
/// (virt-api's webhook, as KubeVirt): larger data goes in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.userData), has(self.userDataBase64), has(self.userDataSecretRef)].filter(x, x).size() <= 1",
     "message": "set at most one of userData, userDataBase64 and userDataSecretRef"},
    {"rule": "[has(self.networkData), has(self.networkDataBase64), has(self.networkDataSecretRef)].filter(x, x).size() <= 1",
     "message": "set at most one of networkData, networkDataBase64 and networkDataSecretRef"}
]))]
pub struct CloudInitNoCloudSource {
    /// Cloud-init user data, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Cloud-init user data, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_base64: Option<String>,
    /// A Secret in the VMI's namespace whose key `userdata` (or `userData`) holds the user
    /// data. The Secret is mounted into the launcher pod, which does not start until it
    /// exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<LocalObjectReference>,
    /// Cloud-init network configuration (version 1 or 2), as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
    /// Cloud-init network configuration, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_base64: Option<String>,
    /// A Secret in the VMI's namespace whose key `networkdata` (or `networkData`) holds
    /// the network configuration, mounted as `userDataSecretRef` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<LocalObjectReference>,
}

/// An object of the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A blank disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDiskSource {
    /// The size of the disk, for example `2Gi`.
    #[schemars(schema_with = "crate::schema::positive_quantity")]
    pub capacity: Quantity,
}

/// A disk image on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.type != 'DiskOrCreate' || has(self.capacity)",
    "message": "capacity is required when type is DiskOrCreate"
}]))]
pub struct HostDisk {
    /// The absolute path of the disk image on the node.
    #[schemars(regex(pattern = "^/"))]
    pub path: String,
    /// `Disk`: the image must exist. `DiskOrCreate`: a sparse image of `capacity` is
    /// created when missing.
    #[serde(rename = "type")]
    pub disk_type: HostDiskType,
    /// The size of an image created by `DiskOrCreate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_positive_quantity")]
    pub capacity: Option<Quantity>,
}

// Whether a host disk must exist.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HostDiskType {
    #[default]
    Disk,
    DiskOrCreate,
}

/// A PersistentVolumeClaim in the VMI's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimVolumeSource {
    /// The claim's name.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Attach the disk read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A DataVolume of the VMI's namespace, by name: the claim of the same name backs the
/// disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    /// The name of both the DataVolume and its PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A network that an interface of the same name connects to. Exactly one source must be
/// set; Ferrovirt supports the pod network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.pod) || has(self.multus)",
    "message": "set the network source: pod"
}, {
    "rule": "!has(self.multus)",
    "fieldPath": ".multus",
    "message": "Multus is not supported: Ferrovirt has no secondary networks (no Multus NetworkAttachmentDefinitions); a guest connects to its pod network only"
}]))]
pub struct Network {
    /// The network's name; the interface of the same name uses it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The pod's own network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNetwork>,
    /// KubeVirt's Multus network (a NetworkAttachmentDefinition); refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::refused_object")]
    pub multus: Option<serde_json::Value>,
}

/// The pod network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// The guest's IPv4 network in CIDR form for masquerade (default 10.0.2.0/24).
    #[serde(
        default,
        rename = "vmNetworkCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_network_cidr: Option<String>,
}

/// KubeVirt's contract with CDI (the Containerized Data Importer): the DataVolume kind a
/// VM's `dataVolumeTemplates` create and a `dataVolume` volume names, and the words with
/// which Ferrovirt refuses them when the cluster serves no DataVolume.
pub mod cdi {
    /// CDI's API group.
    pub const GROUP: &str = "cdi.kubevirt.io";
    /// The version KubeVirt creates DataVolumes in.
    pub const VERSION: &str = "v1beta1";
    /// `GROUP/VERSION`.
    pub const API_VERSION: &str = "cdi.kubevirt.io/v1beta1";
    pub const KIND: &str = "DataVolume";
    pub const PLURAL: &str = "datavolumes";
    /// KubeVirt's annotation on the DataVolumes it creates: CDI may adopt a claim of the
    /// same name that exists already.
    pub const ALLOW_CLAIM_ADOPTION: &str = "cdi.kubevirt.io/allowClaimAdoption";

    /// The DataVolume resource, for clients of objects of it.
    pub fn api_resource() -> kube::api::ApiResource {
        kube::api::ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            plural: PLURAL.into(),
        }
    }

    /// DataVolume phases (CDI's `DataVolumePhase`) that KubeVirt treats as ready.
    pub fn phase_is_ready(phase: &str) -> bool {
        matches!(phase, "Succeeded" | "PendingPopulation")
    }

    /// Why `field` is refused in a cluster without CDI.
    pub fn needed(field: &str) -> String {
        format!(
            "{field} needs CDI (the Containerized Data Importer), which is not installed: the \
             cluster serves no {KIND} in {API_VERSION}; install CDI, then apply again"
        )
    }
}
