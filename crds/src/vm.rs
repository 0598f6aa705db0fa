//! The VirtualMachine: a guest that lives across starts and stops.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::VirtualMachineInstanceSpec;

/// The desired state of a VirtualMachine: whether it should run, and the
/// VirtualMachineInstance it runs as.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    namespaced,
    status = "VirtualMachineStatus",
    shortname = "vm",
    shortname = "vms",
    category = "all",
    category = "kubevirt",
    doc = "VirtualMachine is a guest that can be started and stopped; while it runs, a VirtualMachineInstance of the same name exists.",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.printableStatus", description = "Human readable status"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    validation = crate::rules::name_fits_a_label()
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.running) && has(self.runStrategy))",
    "message": "spec.running and spec.runStrategy are mutually exclusive: set only spec.runStrategy (spec.running is deprecated)"
}]))]
pub struct VirtualMachineSpec {
    /// When the VirtualMachineInstance runs. `Always`: a VMI always exists; a finished one
    /// is replaced. `RerunOnFailure`: replaced only after a failure; a guest shutdown is
    /// respected. `Once`: runs once and is not restarted. `Manual`: only start, stop and
    /// restart requests act. `Halted`: no VMI runs. Mutually exclusive with `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    /// Deprecated: use `runStrategy`. `true` is runStrategy Always, `false` is Halted.
    /// Mutually exclusive with `runStrategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// The VirtualMachineInstance created when the VM starts.
    pub template: VirtualMachineInstanceTemplateSpec,
    /// The instancetype that sets the instance's vCPUs and memory (and what else it
    /// sets); the template must not set those fields itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instancetype: Option<crate::InstancetypeMatcher>,
    /// The preference whose defaults apply where the template sets nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<crate::PreferenceMatcher>,
    /// DataVolumes (CDI's `cdi.kubevirt.io/v1beta1`, which must be installed) that the VM
    /// creates, owned by it, before its first start; a `dataVolume` volume of the template
    /// uses each by name, and the instance starts once they have succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_volume_templates: Vec<DataVolumeTemplateSpec>,
}

/// A DataVolume the VM creates: its metadata and CDI's DataVolume spec, passed to CDI as
/// written (CDI's schema checks it when virt-api dry-runs its creation).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeTemplateSpec {
    /// Accepted for manifests written for older KubeVirt; not used (KubeVirt's no-op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^cdi\\.kubevirt\\.io/"))]
    pub api_version: Option<String>,
    /// Accepted for manifests written for older KubeVirt; not used (KubeVirt's no-op).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^DataVolume$"))]
    pub kind: Option<String>,
    /// The DataVolume's name (required), labels and annotations.
    pub metadata: DataVolumeTemplateMetadata,
    /// CDI's DataVolumeSpec (`source` or `sourceRef`, and `storage` or `pvc`).
    #[schemars(schema_with = "crate::schema::cdi_data_volume_spec")]
    pub spec: serde_json::Value,
}

/// The metadata of a DataVolume the VM creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeTemplateMetadata {
    /// The DataVolume's name, which is also its PersistentVolumeClaim's.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Labels of the DataVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the DataVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Always null in a template; accepted because generated manifests carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub creation_timestamp: Option<Time>,
}

// When a VM's instance runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunStrategy {
    /// A VMI always exists; a finished one is replaced.
    Always,
    /// A VMI is replaced only after it fails.
    RerunOnFailure,
    /// The VMI runs once and is not replaced.
    Once,
    /// Only start, stop and restart requests start or stop the VMI.
    Manual,
    /// No VMI runs.
    Halted,
}

impl RunStrategy {
    /// The strategy as KubeVirt writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Once => "Once",
            RunStrategy::Manual => "Manual",
            RunStrategy::Halted => "Halted",
        }
    }
}

impl VirtualMachineSpec {
    /// The run strategy in effect: `runStrategy`, else `running` (true is Always, false is
    /// Halted), else Halted.
    pub fn effective_run_strategy(&self) -> RunStrategy {
        match (self.run_strategy, self.running) {
            (Some(strategy), _) => strategy,
            (None, Some(true)) => RunStrategy::Always,
            _ => RunStrategy::Halted,
        }
    }
}

/// The template of a VM's instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceTemplateSpec {
    /// Labels and annotations copied to the VirtualMachineInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The VirtualMachineInstance's spec.
    pub spec: VirtualMachineInstanceSpec,
}

/// The metadata a VM's template may carry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// A VM's instance takes the VM's name and a pool's VM the pool's, so this is not
    /// used there; a replica set's instances take it as the prefix of their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels copied to the VirtualMachineInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations copied to the VirtualMachineInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Always null in a template; accepted because generated manifests carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub creation_timestamp: Option<Time>,
}

/// The observed state of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// Whether the VM's instance exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// Whether the VM's instance runs and is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The VM's state for people: Stopped, Provisioning, Starting, Running, Paused,
    /// Stopping, Terminating, CrashLoopBackOff, Migrating, Unknown, ErrorUnschedulable,
    /// ErrImagePull, ImagePullBackOff, ErrorPvcNotFound, WaitingForVolumeBinding,
    /// DataVolumeError.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    /// Conditions: Ready, Failure, RestartRequired, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<VirtualMachineCondition>,
    /// The generation of the spec the controller acted on last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation of the spec the running instance was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_generation: Option<i64>,
    /// Pending start and stop requests, acted on in order and then removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_change_requests: Vec<VirtualMachineStateChangeRequest>,
    /// The run strategy in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    /// Why the last starts failed, and when the next start may be tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_failure: Option<VirtualMachineStartFailure>,
    /// The instancetype version the VM uses (a ControllerRevision of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instancetype_ref: Option<crate::InstancetypeStatusRef>,
    /// The preference version the VM uses (a ControllerRevision of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference_ref: Option<crate::InstancetypeStatusRef>,
}

/// A condition of a VM: Ready, Failure, RestartRequired or Paused.
pub type VirtualMachineCondition = crate::Condition;

/// A request to start or stop a VM's instance, as the start, stop and restart
/// subresources write it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStateChangeRequest {
    /// Start or Stop.
    pub action: StateChangeRequestAction,
    /// Extra data for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    /// For Stop: the UID of the instance to stop; a request for another instance is
    /// dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

// The action of a state change request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StateChangeRequestAction {
    #[default]
    Start,
    Stop,
}

/// Failed starts of a VM, for the crash-loop back-off.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStartFailure {
    /// The UID of the instance that failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "lastFailedVMIUID")]
    pub last_failed_vmi_uid: Option<String>,
    /// The next start is not tried before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::nullable_time")]
    pub retry_after_timestamp: Option<Time>,
    /// How many starts in a row have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_fail_count: Option<i32>,
}

/// The printable statuses of a VM, as KubeVirt names them.
pub mod printable_status {
    pub const STOPPED: &str = "Stopped";
    pub const PROVISIONING: &str = "Provisioning";
    pub const STARTING: &str = "Starting";
    pub const RUNNING: &str = "Running";
    pub const PAUSED: &str = "Paused";
    pub const STOPPING: &str = "Stopping";
    pub const TERMINATING: &str = "Terminating";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const MIGRATING: &str = "Migrating";
    pub const UNKNOWN: &str = "Unknown";
    pub const ERROR_UNSCHEDULABLE: &str = "ErrorUnschedulable";
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    pub const ERROR_PVC_NOT_FOUND: &str = "ErrorPvcNotFound";
    pub const WAITING_FOR_VOLUME_BINDING: &str = "WaitingForVolumeBinding";
    pub const DATA_VOLUME_ERROR: &str = "DataVolumeError";
}
