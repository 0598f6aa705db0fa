//! `pool.kubevirt.io/v1beta1`: the VirtualMachinePool, a number of VirtualMachines made
//! from one template, named `<pool>-<index>`, as KubeVirt's pool controller makes them
//! (`pkg/virt-controller/watch/pool`).
//!
//! Only the part of KubeVirt's pool API Ferrovirt implements is in the schema: `replicas`,
//! `selector`, `virtualMachineTemplate` and `paused`. `nameGeneration`, `maxUnavailable`,
//! `updateStrategy`, `scaleInStrategy` and `autohealing` are not, so the API server refuses
//! a pool that sets one, naming it; virt-api refuses a change of the template of an
//! existing pool (KubeVirt rolls such a change out with its update strategies).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ReplicaSetStatus, TemplateMetadata, VirtualMachineSpec};

/// The API group of pools.
pub const GROUP: &str = "pool.kubevirt.io";
/// The version Ferrovirt serves.
pub const VERSION: &str = "v1beta1";
/// The label KubeVirt puts on a pool's VMs and their instances: the name of the
/// ControllerRevision holding the pool spec they were made from (`<pool>-<generation>`).
pub const REVISION_LABEL: &str = "kubevirt.io/vm-pool-revision-name";

/// The desired state of a VirtualMachinePool.
// Clippy reads the printer columns' repeated `type_ = "integer"` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pool.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachinePool",
    namespaced,
    status = "ReplicaSetStatus",
    shortname = "vmpool",
    shortname = "vmpools",
    category = "all",
    doc = "VirtualMachinePool keeps a number of VirtualMachines made from its template, named <pool>-<index>.",
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Number of desired VirtualMachines"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Number of managed VirtualMachines that are not being deleted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Number of managed VirtualMachines that are ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachinePoolSpec {
    /// How many VMs the pool has (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// The VMs this pool manages; it must select the template's labels, and cannot change.
    pub selector: LabelSelector,
    /// The VMs created; each one's dataVolumeTemplates (and the volumes that use them) get
    /// the VM's index appended to their names.
    pub virtual_machine_template: VirtualMachineTemplateSpec,
    /// While true, the pool creates and deletes no VM (condition ReplicaPaused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The template of a pool's VMs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineTemplateSpec {
    /// Labels and annotations of the VMs (the name is the pool's, with the index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The VMs' spec.
    pub spec: VirtualMachineSpec,
}
