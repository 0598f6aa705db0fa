//! The VirtualMachineInstanceReplicaSet (`kubevirt.io/v1`): keeps a number of
//! VirtualMachineInstances made from one template running, as KubeVirt's replica set
//! controller does (`pkg/virt-controller/watch/replicaset`).
//!
//! Its instances are named after the set (`generateName`), carry the template's labels and
//! are controlled by the set (so deleting the set deletes them); finished ones are replaced.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, VirtualMachineInstanceTemplateSpec};

/// The desired state of a VirtualMachineInstanceReplicaSet.
// Clippy reads the printer columns' repeated `type_ = "integer"` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstanceReplicaSet",
    namespaced,
    status = "ReplicaSetStatus",
    shortname = "vmirs",
    shortname = "vmirss",
    category = "all",
    doc = "VirtualMachineInstanceReplicaSet keeps a number of VirtualMachineInstances made from its template running.",
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Number of desired VirtualMachineInstances"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Number of managed VirtualMachineInstances that are neither finished nor being deleted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Number of managed VirtualMachineInstances that are ready"
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
pub struct VirtualMachineInstanceReplicaSetSpec {
    /// How many instances should run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// The instances this set manages; it must select the template's labels. Instances
    /// without a controller that it selects are adopted; an instance it controls whose
    /// labels it no longer selects is released.
    pub selector: LabelSelector,
    /// The instances created. `metadata.name` (else `metadata.generateName`, else the
    /// set's name) is the prefix of their generated names.
    pub template: VirtualMachineInstanceTemplateSpec,
    /// While true, the set creates and deletes no instance (condition ReplicaPaused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The observed state of a replica set or a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    /// How many of its members exist and are neither finished nor being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// How many of them are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// ReplicaFailure (a create or delete failed) and ReplicaPaused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The selector in its string form, for the scale subresource (`kubectl scale`, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// A replica set's or a pool's condition types.
pub mod condition_types {
    /// Creating or deleting a member failed.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// `spec.paused` is set: no member is created or deleted.
    pub const REPLICA_PAUSED: &str = "ReplicaPaused";
}
